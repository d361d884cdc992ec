//! Sources: where a table's files are, checked before anything is written to the catalog.
//!
//! A local source is a directory; a table path inside it must stay inside it, through
//! `..` and through symlinks. An S3 source is a bucket (and optional prefix) with its
//! endpoint and credentials; the coordinator and executors build the same client from
//! the same [`ObjectStoreSpec`].

use std::path::{Path, PathBuf};

use futures::TryStreamExt;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use quarry_catalog::{S3Config, SourceConfig};
use quarry_common::QuarryError;
use quarry_common::object_stores::{
    S3_ACCESS_KEY_ID, S3_ALLOW_HTTP, S3_ENDPOINT, S3_PATH_STYLE, S3_REGION, S3_SECRET_ACCESS_KEY,
    build_object_store, s3_spec,
};
use quarry_common::protocol::CLUSTER_FILES_URL;
use quarry_common::protocol::ObjectStoreSpec;

/// A resolved data location.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Location {
    /// URL DataFusion lists (`file:///...`, `s3://bucket/...`); folders end with `/`.
    pub url: String,
    pub is_folder: bool,
    /// The object store the URL needs registered, for object-store URLs.
    pub store: Option<ObjectStoreSpec>,
    /// A name of one data file (the file itself, or one in the folder), for format inference.
    pub sample_file: Option<String>,
}

/// The object store spec of an S3 source.
pub(crate) fn s3_store_spec(source: &str, config: &S3Config) -> ObjectStoreSpec {
    s3_spec_keyed(Some(source), config)
}

/// The object store of an S3 bucket; keyed by a name, or (None) by the bare bucket.
pub(crate) fn s3_spec_keyed(key: Option<&str>, config: &S3Config) -> ObjectStoreSpec {
    let path_style = config.path_style.to_string();
    let allow_http = config.allow_http.to_string();
    s3_spec(
        &config.bucket,
        key,
        &[
            (S3_REGION, Some(config.region.as_str())),
            (S3_ENDPOINT, config.endpoint.as_deref()),
            (S3_ACCESS_KEY_ID, config.access_key_id.as_deref()),
            (S3_SECRET_ACCESS_KEY, config.secret_access_key.as_deref()),
            (S3_PATH_STYLE, Some(path_style.as_str())),
            (S3_ALLOW_HTTP, Some(allow_http.as_str())),
        ],
    )
}

/// Cloud metadata services hand out the machine's own credentials: no source may point
/// at one (link-local addresses, and the names clouds give them), whoever asks.
pub(crate) fn refuse_metadata_endpoint(name: &str, endpoint: &str) -> Result<(), QuarryError> {
    let refused = || {
        QuarryError::new(
            quarry_common::ErrorCode::PermissionDenied,
            format!(
                "source '{name}': endpoint {endpoint} is a link-local or cloud metadata address, which sources may not use"
            ),
        )
    };
    let url = url::Url::parse(endpoint).map_err(|e| {
        QuarryError::invalid(format!("source '{name}': bad endpoint {endpoint}: {e}"))
    })?;
    match url.host() {
        Some(url::Host::Ipv4(ip)) if ip.is_link_local() => Err(refused()),
        Some(url::Host::Ipv6(ip))
            if (ip.segments()[0] & 0xffc0) == 0xfe80
                || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local()) =>
        {
            Err(refused())
        }
        Some(url::Host::Domain(host))
            if ["metadata.google.internal", "metadata", "instance-data"]
                .contains(&host.trim_end_matches('.').to_ascii_lowercase().as_str()) =>
        {
            Err(refused())
        }
        _ => Ok(()),
    }
}

/// Check a new source's configuration before it is stored.
pub(crate) async fn validate_source(
    name: &str,
    config: &SourceConfig,
) -> Result<SourceConfig, QuarryError> {
    match config {
        SourceConfig::Local { root, writable } => {
            let path = Path::new(root);
            if !path.is_absolute() {
                return Err(QuarryError::invalid(format!(
                    "the root of local source '{name}' must be an absolute path, not '{root}'"
                )));
            }
            let canonical = path.canonicalize().map_err(|e| {
                QuarryError::not_found(format!(
                    "the root '{root}' of local source '{name}' is not readable: {e}"
                ))
            })?;
            if !canonical.is_dir() {
                return Err(QuarryError::invalid(format!(
                    "the root '{root}' of local source '{name}' is not a directory"
                )));
            }
            Ok(SourceConfig::Local {
                root: canonical.display().to_string(),
                writable: *writable,
            })
        }
        SourceConfig::Cluster {} => Ok(SourceConfig::Cluster {}),
        SourceConfig::S3(s3) => {
            if let Some(endpoint) = &s3.endpoint {
                refuse_metadata_endpoint(name, endpoint)?;
            }
            if s3.bucket.is_empty() {
                return Err(QuarryError::invalid(format!(
                    "S3 source '{name}' needs a bucket"
                )));
            }
            if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
                return Err(QuarryError::invalid(format!(
                    "S3 source '{name}' needs both access_key_id and secret_access_key, or neither"
                )));
            }
            // Reach the bucket now, so a wrong endpoint or credential is reported at
            // CREATE SOURCE rather than at the first query.
            let store = build_object_store(&s3_store_spec(name, s3))?;
            let prefix = ObjectPath::from(s3.prefix.trim_matches('/'));
            store
                .list_with_delimiter(Some(&prefix))
                .await
                .map_err(|e| store_error(&format!("S3 source '{name}'"), e))?;
            Ok(config.clone())
        }
    }
}

/// Resolve `path` inside a source to a location DataFusion can list. `cluster_files` is
/// the store of files in executors' data directories.
pub(crate) async fn resolve_in_source(
    source_name: &str,
    config: &SourceConfig,
    path: &str,
    cluster_files: &dyn ObjectStore,
) -> Result<Location, QuarryError> {
    match config {
        SourceConfig::Local { root, .. } => resolve_local(source_name, Path::new(root), path),
        SourceConfig::S3(s3) => {
            let key = join_key(&s3.prefix, path);
            resolve_s3(&s3.bucket, &key, s3_store_spec(source_name, s3)).await
        }
        SourceConfig::Cluster {} => resolve_cluster(source_name, path, cluster_files).await,
    }
}

/// A file or folder in the executors' data directories.
async fn resolve_cluster(
    source_name: &str,
    path: &str,
    store: &dyn ObjectStore,
) -> Result<Location, QuarryError> {
    let key = path.trim_matches('/');
    if key.split('/').any(|part| part == "..") {
        return Err(QuarryError::invalid(format!(
            "path '{path}' leaves the data directories of source '{source_name}'"
        )));
    }
    let base = CLUSTER_FILES_URL.trim_end_matches('/');
    let prefix = ObjectPath::from(key);
    let files: Vec<object_store::ObjectMeta> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| store_error(&format!("{base}/{key}"), e))?;
    let mut names: Vec<String> = files
        .iter()
        .map(|o| o.location.to_string())
        .filter(|name| name.rsplit('/').next().is_some_and(|f| !is_hidden(f)))
        .collect();
    names.sort();
    let Some(sample) = names.first().cloned() else {
        return Err(QuarryError::not_found(format!(
            "path '{path}' does not exist in the data directory of any active executor"
        )));
    };
    let is_folder = !(names.len() == 1 && sample == key);
    Ok(Location {
        url: if is_folder {
            format!("{base}/{key}/")
        } else {
            format!("{base}/{key}")
        },
        is_folder,
        store: None,
        sample_file: Some(sample),
    })
}

fn join_key(prefix: &str, path: &str) -> String {
    let prefix = prefix.trim_matches('/');
    let path = path.trim_matches('/');
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}/{path}"),
    }
}

/// A path under a local root, refusing anything that leaves the root.
pub(crate) fn resolve_local(
    source_name: &str,
    root: &Path,
    path: &str,
) -> Result<Location, QuarryError> {
    let root = root.canonicalize().map_err(|e| {
        QuarryError::not_found(format!(
            "the root {} of source '{source_name}' is not readable: {e}",
            root.display()
        ))
    })?;
    let candidate = root.join(path.trim_start_matches('/'));
    let resolved = candidate.canonicalize().map_err(|_| {
        QuarryError::not_found(format!(
            "path '{path}' does not exist in source '{source_name}'"
        ))
    })?;
    if !resolved.starts_with(&root) {
        return Err(QuarryError::invalid(format!(
            "path '{path}' leaves the root of source '{source_name}'"
        )));
    }
    let is_folder = resolved.is_dir();
    let sample_file = if is_folder {
        let mut files = Vec::new();
        walk_inside(&root, &resolved, path, source_name, &mut files)?;
        files.sort();
        files.into_iter().next()
    } else {
        Some(resolved.display().to_string())
    };
    Ok(Location {
        url: local_url(&resolved, is_folder)?,
        is_folder,
        store: None,
        sample_file,
    })
}

/// The folder a managed table gets at `path` inside a writable source. The path is
/// relative and may not climb (`..`): a table can be written only inside the source.
pub(crate) fn writable_folder(
    source_name: &str,
    config: &SourceConfig,
    path: &str,
) -> Result<url::Url, QuarryError> {
    if !config.writable() {
        return Err(QuarryError::invalid(format!(
            "source '{source_name}' is read-only: tables can be written only in sources \
             created WITH (writable = true)"
        )));
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.iter().any(|p| *p == ".." || p.contains('\\')) {
        return Err(QuarryError::invalid(format!(
            "path '{path}' leaves the root of source '{source_name}'"
        )));
    }
    let relative = format!("{}/", parts.join("/"));
    let base = match config {
        SourceConfig::Local { root, .. } => {
            let root = Path::new(root).canonicalize().map_err(|e| {
                QuarryError::not_found(format!(
                    "the root {root} of source '{source_name}' is not readable: {e}"
                ))
            })?;
            local_url(&root, true)?
        }
        SourceConfig::S3(s3) => {
            let store = s3_store_spec(source_name, s3).url;
            let prefix = s3.prefix.trim_matches('/');
            if prefix.is_empty() {
                format!("{store}/")
            } else {
                format!("{store}/{prefix}/")
            }
        }
        SourceConfig::Cluster {} => {
            return Err(QuarryError::invalid(format!(
                "source '{source_name}' is the executors' data directories; tables cannot be written there"
            )));
        }
    };
    let base = url::Url::parse(&base)
        .map_err(|e| QuarryError::invalid(format!("source '{source_name}' location: {e}")))?;
    base.join(&relative)
        .map_err(|e| QuarryError::invalid(format!("path '{path}' in '{source_name}': {e}")))
}

/// The `file://` URL of a local path.
pub(crate) fn local_url(path: &Path, is_folder: bool) -> Result<String, QuarryError> {
    let url = if is_folder {
        url::Url::from_directory_path(path)
    } else {
        url::Url::from_file_path(path)
    };
    url.map(|u| u.to_string())
        .map_err(|_| QuarryError::invalid(format!("cannot make a URL of {}", path.display())))
}

/// Visit files under a folder, refusing symlinks that point outside the root.
///
/// Iterative over a queue of folders, each visited once by its canonical path: a symlink that
/// points back up the tree (a loop) is seen once and cannot recurse without end.
fn walk_inside(
    root: &Path,
    dir: &Path,
    path: &str,
    source_name: &str,
    files: &mut Vec<String>,
) -> Result<(), QuarryError> {
    let mut seen = std::collections::HashSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        if !seen.insert(dir.clone()) {
            continue;
        }
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            QuarryError::invalid(format!(
                "cannot read folder '{path}' of source '{source_name}': {e}"
            ))
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| QuarryError::invalid(e.to_string()))?;
            let entry_path = entry.path();
            let target: PathBuf = entry_path
                .canonicalize()
                .map_err(|e| QuarryError::invalid(format!("{}: {e}", entry_path.display())))?;
            if !target.starts_with(root) {
                return Err(QuarryError::invalid(format!(
                    "folder '{path}' of source '{source_name}' links outside the source: {}",
                    entry_path.display()
                )));
            }
            if target.is_dir() {
                pending.push(target);
            } else if !is_hidden(&entry.file_name().to_string_lossy()) {
                files.push(target.display().to_string());
            }
        }
    }
    files.sort();
    files.dedup();
    Ok(())
}

/// Files like `_SUCCESS` and `.crc` that writers leave next to data.
pub(crate) fn is_hidden(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

/// An S3 key that is either an object or a prefix of objects.
pub(crate) async fn resolve_s3(
    bucket: &str,
    key: &str,
    spec: ObjectStoreSpec,
) -> Result<Location, QuarryError> {
    let store = build_object_store(&spec)?;
    let what = format!("s3://{bucket}/{key}");
    if !key.is_empty() && !key.ends_with('/') {
        match store.head(&ObjectPath::from(key)).await {
            Ok(_) => {
                return Ok(Location {
                    url: format!("{}/{key}", spec.url),
                    is_folder: false,
                    store: Some(spec),
                    sample_file: Some(key.to_string()),
                });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store_error(&what, e)),
        }
    }
    let prefix = ObjectPath::from(key.trim_end_matches('/'));
    let objects: Vec<object_store::ObjectMeta> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| store_error(&what, e))?;
    let mut names: Vec<String> = objects
        .iter()
        .map(|o| o.location.to_string())
        .filter(|name| {
            name.rsplit('/')
                .next()
                .map(|file| !is_hidden(file))
                .unwrap_or(true)
        })
        .collect();
    names.sort();
    let Some(sample) = names.into_iter().next() else {
        return Err(QuarryError::not_found(format!("no files found at {what}")));
    };
    let folder = key.trim_end_matches('/');
    Ok(Location {
        url: if folder.is_empty() {
            format!("{}/", spec.url)
        } else {
            format!("{}/{folder}/", spec.url)
        },
        is_folder: true,
        store: Some(spec),
        sample_file: Some(sample),
    })
}

/// An object store failure, told the way a user can act on it.
pub(crate) fn store_error(what: &str, e: object_store::Error) -> QuarryError {
    use quarry_common::ErrorCode;
    let code = match &e {
        object_store::Error::NotFound { .. } => ErrorCode::NotFound,
        object_store::Error::PermissionDenied { .. } => ErrorCode::PermissionDenied,
        object_store::Error::Unauthenticated { .. } => ErrorCode::Unauthenticated,
        _ => ErrorCode::InvalidArgument,
    };
    QuarryError::new(code, format!("cannot read {what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_endpoints_are_refused() {
        for endpoint in [
            "http://169.254.169.254",
            "http://[fe80::1]:80",
            "http://metadata.google.internal/",
            "http://[::ffff:169.254.169.254]",
        ] {
            let e = refuse_metadata_endpoint("s", endpoint).expect_err(endpoint);
            assert_eq!(
                e.code,
                quarry_common::ErrorCode::PermissionDenied,
                "{endpoint}"
            );
        }
        for endpoint in [
            "http://127.0.0.1:9000",
            "https://s3.eu-west-1.amazonaws.com",
        ] {
            assert!(
                refuse_metadata_endpoint("s", endpoint).is_ok(),
                "{endpoint}"
            );
        }
    }

    #[test]
    fn local_paths_stay_inside_the_root() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub"))?;
        std::fs::write(root.join("sub/a.csv"), "x\n1\n")?;
        std::fs::write(dir.path().join("secret.csv"), "x\n1\n")?;

        let ok = resolve_local("files", &root, "sub/a.csv")?;
        assert!(!ok.is_folder);
        assert!(ok.url.starts_with("file://"));
        let folder = resolve_local("files", &root, "sub")?;
        assert!(folder.is_folder && folder.url.ends_with('/'));

        let up = resolve_local("files", &root, "../secret.csv").unwrap_err();
        assert!(up.message.contains("leaves the root"), "{up}");
        let missing = resolve_local("files", &root, "nope.csv").unwrap_err();
        assert_eq!(missing.code, quarry_common::ErrorCode::NotFound);

        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret.csv"), root.join("link.csv"))?;
            let linked = resolve_local("files", &root, "link.csv").unwrap_err();
            assert!(linked.message.contains("leaves the root"), "{linked}");
            std::os::unix::fs::symlink(dir.path(), root.join("sub/escape"))?;
            let inside = resolve_local("files", &root, "sub").unwrap_err();
            assert!(inside.message.contains("links outside"), "{inside}");
        }
        Ok(())
    }

    /// A symlink back up the tree is a loop a recursive walk would follow until the stack ran
    /// out; each folder is visited once instead.
    #[cfg(unix)]
    #[test]
    fn symlink_loops_are_walked_once() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("data/deeper"))?;
        std::fs::write(root.join("data/a.csv"), "x\n1\n")?;
        std::fs::write(root.join("data/deeper/b.csv"), "x\n2\n")?;
        std::os::unix::fs::symlink(root.join("data"), root.join("data/deeper/loop"))?;
        let folder = resolve_local("files", &root, "data")?;
        assert!(folder.is_folder);
        let sample = folder.sample_file.unwrap_or_default();
        assert!(sample.ends_with("a.csv"), "{sample}");
        Ok(())
    }
}
