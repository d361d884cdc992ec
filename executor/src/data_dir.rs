//! The executor's data directory: the files it advertises, and reads of them by others.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use quarry_common::protocol::{LocalFile, ReadFile};
use tonic::Status;

/// Largest piece of a file sent in one action result.
const CHUNK: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn open(root: &Path) -> std::io::Result<Self> {
        Ok(DataDir {
            root: root.canonicalize()?,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every file under the directory (hidden ones left out), sorted by path.
    pub fn files(&self) -> Vec<LocalFile> {
        let mut files = Vec::new();
        walk(&self.root, &self.root, &mut files);
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }

    /// The bytes `request` names, in chunks; refuses paths outside the directory.
    pub fn read(&self, request: &ReadFile) -> Result<Vec<Bytes>, Status> {
        let path = self
            .root
            .join(request.path.trim_start_matches('/'))
            .canonicalize()
            .map_err(|_| Status::not_found(format!("no file {} here", request.path)))?;
        if !path.starts_with(&self.root) {
            return Err(Status::permission_denied(format!(
                "{} is outside the data directory",
                request.path
            )));
        }
        let mut file = std::fs::File::open(&path)
            .map_err(|e| Status::not_found(format!("{}: {e}", request.path)))?;
        let size = file
            .metadata()
            .map_err(|e| Status::internal(e.to_string()))?
            .len();
        let end = if request.end == 0 {
            size
        } else {
            request.end.min(size)
        };
        if request.start > end {
            return Err(Status::out_of_range(format!(
                "{}: range {}..{} of a {size}-byte file",
                request.path, request.start, request.end
            )));
        }
        file.seek(SeekFrom::Start(request.start))
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut chunks = Vec::new();
        let mut left = end - request.start;
        while left > 0 {
            let n = left.min(CHUNK);
            let mut buf = vec![0u8; n as usize];
            file.read_exact(&mut buf)
                .map_err(|e| Status::internal(format!("{}: {e}", request.path)))?;
            chunks.push(Bytes::from(buf));
            left -= n;
        }
        Ok(chunks)
    }
}

fn walk(root: &Path, dir: &Path, files: &mut Vec<LocalFile>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let path = entry.path();
        // Symlinks leading out of the directory are not served.
        let Ok(target) = path.canonicalize() else {
            continue;
        };
        if !target.starts_with(root) {
            continue;
        }
        if target.is_dir() {
            walk(root, &path, files);
        } else if let (Ok(meta), Ok(relative)) = (target.metadata(), path.strip_prefix(root)) {
            files.push(LocalFile {
                path: relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/"),
                size: meta.len(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_reads_inside_only() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("data/t"))?;
        std::fs::write(dir.path().join("data/t/a.csv"), "0123456789")?;
        std::fs::write(dir.path().join("data/t/_SUCCESS"), "")?;
        std::fs::write(dir.path().join("secret"), "x")?;
        let data = DataDir::open(&dir.path().join("data"))?;
        let files = data.files();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "t/a.csv");
        assert_eq!(files[0].size, 10);
        let bytes = data.read(&ReadFile {
            path: "t/a.csv".into(),
            start: 2,
            end: 5,
        })?;
        assert_eq!(bytes.concat(), b"234");
        let outside = data
            .read(&ReadFile {
                path: "../secret".into(),
                start: 0,
                end: 0,
            })
            .unwrap_err();
        assert_eq!(outside.code(), tonic::Code::PermissionDenied);
        Ok(())
    }
}
