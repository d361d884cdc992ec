//! Backups of the catalog: every keyspace's entries as of one moment, in a file that says
//! what it is, which format it has and whether it arrived whole.
//!
//! ```text
//!   "QUARRYBK" | format u32 | created_ms u64 | entries... | 0u8 | count u64 | sha256 (32 bytes)
//!   entry: 1u8 | keyspace name (u8 length) | key (u32 length) | value (u32 length)
//! ```
//!
//! The entries are the store's own bytes (each record carries its own format version, read
//! as usual after a restore), so a backup needs no knowledge of the records. A framing of a
//! few lines instead of an archive format: it is all the file needs, and a reader checks the
//! checksum before it writes anything. Managed tables' data and reflections' materializations
//! are not in it: they stay where they are (the warehouse, the reflection store).

use std::io::Write;
use std::path::Path;

use ring::digest::SHA256;

use crate::catalog::now_ms;
use crate::error::CatalogError;
use crate::store::{Entries, Keyspace, KvStore, SledStore};

const MAGIC: &[u8; 8] = b"QUARRYBK";

/// The backup format this build writes and the newest it reads.
pub const BACKUP_FORMAT: u32 = 1;

/// A backup read back and checked: its entries by keyspace.
#[derive(Debug)]
pub struct Backup {
    pub created_ms: u64,
    pub spaces: Vec<(Keyspace, Entries)>,
}

impl Backup {
    /// How many entries it holds.
    pub fn entries(&self) -> usize {
        self.spaces.iter().map(|(_, e)| e.len()).sum()
    }

    /// Entries of one keyspace.
    pub fn count(&self, space: Keyspace) -> usize {
        self.spaces
            .iter()
            .filter(|(s, _)| *s == space)
            .map(|(_, e)| e.len())
            .sum()
    }
}

/// The keyspaces a backup holds: all of them, or all but the job history.
pub fn backup_spaces(with_jobs: bool) -> Vec<Keyspace> {
    Keyspace::ALL
        .into_iter()
        .filter(|s| with_jobs || !matches!(s, Keyspace::Jobs | Keyspace::JobsByTime))
        .collect()
}

/// A backup of `store` as of one moment, as the bytes of a backup file.
pub fn write_backup(store: &dyn KvStore, with_jobs: bool) -> Result<Vec<u8>, CatalogError> {
    let spaces = store.snapshot(&backup_spaces(with_jobs))?;
    let mut out = Vec::with_capacity(
        spaces
            .iter()
            .flat_map(|(_, e)| e)
            .map(|(k, v)| k.len() + v.len() + 32)
            .sum::<usize>()
            + 64,
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&BACKUP_FORMAT.to_le_bytes());
    out.extend_from_slice(&now_ms().to_le_bytes());
    let mut count = 0u64;
    for (space, entries) in &spaces {
        let name = space.tree_name().as_bytes();
        for (key, value) in entries {
            out.push(1);
            out.push(name.len() as u8);
            out.extend_from_slice(name);
            for part in [key, value] {
                let len = u32::try_from(part.len()).map_err(|_| {
                    CatalogError::Backup("a catalog entry over 4 GiB cannot be backed up".into())
                })?;
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(part);
            }
            count += 1;
        }
    }
    out.push(0);
    out.extend_from_slice(&count.to_le_bytes());
    let digest = sha256(&out);
    out.extend_from_slice(&digest);
    Ok(out)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut digest = [0u8; 32];
    digest.copy_from_slice(ring::digest::digest(&SHA256, bytes).as_ref());
    digest
}

fn bad(why: impl Into<String>) -> CatalogError {
    CatalogError::Backup(why.into())
}

/// Read and check a backup file's bytes: its kind, its format, its checksum, every entry.
pub fn read_backup(bytes: &[u8]) -> Result<Backup, CatalogError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(bad("this is not a Quarry catalog backup"));
    }
    let mut reader = Reader {
        bytes,
        at: MAGIC.len(),
    };
    let format = reader.u32()?;
    if format > BACKUP_FORMAT {
        return Err(bad(format!(
            "this backup has format {format}, written by a newer Quarry; this one reads up to format {BACKUP_FORMAT}"
        )));
    }
    if format == 0 {
        return Err(bad("this backup is damaged: format 0"));
    }
    let created_ms = reader.u64()?;
    let mut spaces: Vec<(Keyspace, Entries)> = Vec::new();
    let mut count = 0u64;
    loop {
        match reader.u8()? {
            0 => break,
            1 => {}
            other => return Err(bad(format!("this backup is damaged: entry kind {other}"))),
        }
        let name_len = usize::from(reader.u8()?);
        let name = reader.take(name_len)?;
        let space = Keyspace::ALL
            .into_iter()
            .find(|s| s.tree_name().as_bytes() == name)
            .ok_or_else(|| {
                bad(format!(
                    "this backup is damaged or from a newer Quarry: unknown keyspace '{}'",
                    String::from_utf8_lossy(name)
                ))
            })?;
        let key_len = reader.u32()? as usize;
        let key = reader.take(key_len)?.to_vec();
        let value_len = reader.u32()? as usize;
        let value = reader.take(value_len)?.to_vec();
        match spaces.last_mut() {
            Some((last, entries)) if *last == space => entries.push((key, value)),
            _ => spaces.push((space, vec![(key, value)])),
        }
        count += 1;
    }
    let written = reader.u64()?;
    let body_end = reader.at;
    let digest = reader.take(32)?;
    if reader.at != bytes.len() {
        return Err(bad("this backup is damaged: bytes after its end"));
    }
    if digest != sha256(&bytes[..body_end]) {
        return Err(bad(
            "this backup is damaged: its checksum does not match its contents",
        ));
    }
    if written != count {
        return Err(bad(format!(
            "this backup is damaged: it says {written} entries, holds {count}"
        )));
    }
    Ok(Backup { created_ms, spaces })
}

/// Cursor over a backup's bytes; running out is a truncated file.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CatalogError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| bad("this backup is truncated: it ends before its last entry"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, CatalogError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, CatalogError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, CatalogError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
}

/// Write a checked backup into a new catalog at `catalog_dir`. The catalog is built beside
/// it and moved into place only when complete and on disk; an existing catalog there is
/// refused unless `force`, and then replaced.
pub fn restore_backup(
    backup: &Backup,
    catalog_dir: &Path,
    force: bool,
) -> Result<(), CatalogError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source: std::io::Error| CatalogError::Io { path, source }
    };
    let occupied = std::fs::read_dir(catalog_dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if occupied && !force {
        return Err(bad(format!(
            "{} already holds a catalog; restore into a new directory, or pass --force to replace it",
            catalog_dir.display()
        )));
    }
    let parent = catalog_dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let building = catalog_dir.with_extension("restoring");
    if building.exists() {
        std::fs::remove_dir_all(&building).map_err(io(&building))?;
    }
    {
        let store = SledStore::open(&building)?;
        for (space, entries) in &backup.spaces {
            for (key, value) in entries {
                store.put(*space, key, value.clone(), false)?;
            }
        }
        store.flush()?;
    }
    if occupied {
        std::fs::remove_dir_all(catalog_dir).map_err(io(catalog_dir))?;
    } else if catalog_dir.exists() {
        std::fs::remove_dir(catalog_dir).map_err(io(catalog_dir))?;
    }
    // sled lets go of its files a moment after the drop; the rename waits for nothing
    // but the directory entry.
    std::fs::rename(&building, catalog_dir).map_err(io(catalog_dir))?;
    sync_dir(parent)?;
    Ok(())
}

/// Make a directory's entries (a rename into it) durable.
fn sync_dir(dir: &Path) -> Result<(), CatalogError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|source| CatalogError::Io {
            path: dir.display().to_string(),
            source,
        })
}

/// Write `bytes` to `path` whole or not at all: to a temporary name, synced, then renamed.
pub fn write_backup_file(path: &Path, bytes: &[u8]) -> Result<(), CatalogError> {
    let io = |source| CatalogError::Io {
        path: path.display().to_string(),
        source,
    };
    let partial = path.with_extension("partial");
    let mut file = std::fs::File::create(&partial).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&partial, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::records::SchemaRecord;
    use std::sync::Arc;

    fn catalog_with_things(dir: &Path) -> Arc<dyn KvStore> {
        let store: Arc<dyn KvStore> = Arc::new(SledStore::open(dir).expect("open"));
        let catalog = Catalog::with_store(Arc::clone(&store)).expect("catalog");
        for i in 0..20 {
            catalog
                .create_schema(SchemaRecord {
                    name: format!("s{i}"),
                })
                .expect("schema");
        }
        store
            .put(Keyspace::Jobs, b"job-1", b"{}".to_vec(), true)
            .expect("job");
        store
    }

    #[test]
    fn a_backup_restores_what_it_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = catalog_with_things(&dir.path().join("a"));
        let bytes = write_backup(store.as_ref(), false).expect("backup");
        let backup = read_backup(&bytes).expect("read back");
        assert_eq!(backup.count(Keyspace::Schemas), 21);
        assert_eq!(backup.count(Keyspace::Jobs), 0, "jobs only when asked");
        let with_jobs =
            read_backup(&write_backup(store.as_ref(), true).expect("backup")).expect("read back");
        assert_eq!(with_jobs.count(Keyspace::Jobs), 1);

        let target = dir.path().join("b").join("catalog");
        restore_backup(&backup, &target, false).expect("restore");
        let restored = Catalog::open(&target).expect("open restored");
        assert_eq!(restored.list_schemas().expect("schemas").len(), 21);
        drop(restored);
        // Into a catalog that is there: refused, unless forced.
        let refused = restore_backup(&with_jobs, &target, false).expect_err("occupied");
        assert!(refused.to_string().contains("--force"), "{refused}");
        std::thread::sleep(std::time::Duration::from_millis(200));
        restore_backup(&with_jobs, &target, true).expect("forced");
        let store = SledStore::open(&target).expect("open");
        assert!(store.get(Keyspace::Jobs, b"job-1").expect("get").is_some());
    }

    #[test]
    fn damaged_truncated_foreign_and_future_backups_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = catalog_with_things(&dir.path().join("a"));
        let bytes = write_backup(store.as_ref(), true).expect("backup");
        let refused = |bytes: &[u8]| read_backup(bytes).expect_err("refused").to_string();

        assert!(refused(b"PK\x03\x04 a zip").contains("not a Quarry catalog backup"));
        assert!(refused(&[]).contains("not a Quarry catalog backup"));
        for cut in [12, 30, bytes.len() / 2, bytes.len() - 1] {
            let why = refused(&bytes[..cut]);
            assert!(
                why.contains("truncated") || why.contains("damaged"),
                "{cut}: {why}"
            );
        }
        let mut flipped = bytes.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x40;
        let why = refused(&flipped);
        assert!(
            why.contains("damaged") || why.contains("truncated"),
            "{why}"
        );
        let mut future = bytes.clone();
        future[8..12].copy_from_slice(&(BACKUP_FORMAT + 1).to_le_bytes());
        assert!(refused(&future).contains("newer Quarry"));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(refused(&longer).contains("damaged"));
    }
}
