//! Files in the executors' data directories, as one read-only object store (`cluster://data/`).
//!
//! Listing comes from what executors advertise when they register; reads (the coordinator
//! only reads footers and samples, to infer schemas and statistics) go to an executor that
//! holds the file. Executors themselves read these files from their own disk.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use arrow_flight::Action;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use prost::Message;
use quarry_common::flight_channels::FlightChannels;
use quarry_common::protocol::{ACTION_READ_FILE, ReadFile};

use super::{Cluster, ExecutorInfo};

const STORE: &str = "cluster files";

#[derive(Debug)]
pub(crate) struct ClusterFileStore {
    cluster: Arc<Cluster>,
    channels: Arc<FlightChannels>,
}

impl fmt::Display for ClusterFileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterFileStore")
    }
}

fn not_supported(what: &str) -> object_store::Error {
    object_store::Error::NotSupported {
        source: format!("files in executors' data directories are read-only ({what})").into(),
    }
}

/// One advertised file: its metadata and who holds it.
struct Held {
    meta: ObjectMeta,
    holders: Vec<ExecutorInfo>,
}

impl ClusterFileStore {
    pub(crate) fn new(cluster: Arc<Cluster>, channels: Arc<FlightChannels>) -> Self {
        ClusterFileStore { cluster, channels }
    }

    /// Every advertised file, by path.
    fn files(&self) -> BTreeMap<String, Held> {
        let mut files: BTreeMap<String, Held> = BTreeMap::new();
        for executor in self.cluster.active() {
            let registered =
                DateTime::<Utc>::from_timestamp_millis(executor.registered_at_ms as i64)
                    .unwrap_or_default();
            for file in executor.local_files.iter() {
                let entry = files.entry(file.path.clone()).or_insert_with(|| Held {
                    meta: ObjectMeta {
                        location: Path::from(file.path.as_str()),
                        last_modified: registered,
                        size: file.size,
                        e_tag: None,
                        version: None,
                    },
                    holders: Vec::new(),
                });
                entry.holders.push(executor.clone());
            }
        }
        files
    }

    fn find(&self, location: &Path) -> object_store::Result<Held> {
        self.files()
            .remove(location.as_ref())
            .ok_or_else(|| object_store::Error::NotFound {
                path: location.to_string(),
                source: "no active executor holds this file".into(),
            })
    }

    /// Read a byte range from the first holder that answers.
    async fn read(&self, held: &Held, range: Range<u64>) -> object_store::Result<Bytes> {
        let request = ReadFile {
            path: held.meta.location.to_string(),
            start: range.start,
            end: range.end,
        };
        let mut last_error = None;
        for holder in &held.holders {
            let attempt = async {
                let mut client = self
                    .channels
                    .client(&holder.endpoint)
                    .map_err(|e| e.message)?;
                let chunks: Vec<Bytes> = client
                    .do_action(Action::new(ACTION_READ_FILE, request.encode_to_vec()))
                    .await
                    .map_err(|e| e.to_string())?
                    .try_collect()
                    .await
                    .map_err(|e| e.to_string())?;
                let mut bytes = BytesMut::with_capacity((range.end - range.start) as usize);
                for chunk in chunks {
                    bytes.extend_from_slice(&chunk);
                }
                Ok::<Bytes, String>(bytes.freeze())
            };
            match attempt.await {
                Ok(bytes) => return Ok(bytes),
                Err(e) => last_error = Some(format!("{}: {e}", holder.executor_id)),
            }
        }
        Err(object_store::Error::Generic {
            store: STORE,
            source: format!(
                "cannot read {}: {}",
                held.meta.location,
                last_error.unwrap_or_else(|| "no holder".to_string())
            )
            .into(),
        })
    }
}

#[async_trait]
impl ObjectStore for ClusterFileStore {
    async fn put_opts(
        &self,
        _location: &Path,
        _payload: PutPayload,
        _opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        Err(not_supported("put"))
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(not_supported("multipart put"))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let held = self.find(location)?;
        let meta = held.meta.clone();
        if options.head {
            return Ok(GetResult {
                payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
                meta,
                range: 0..0,
                attributes: Default::default(),
            });
        }
        let range = match &options.range {
            Some(range) => range
                .as_range(meta.size)
                .map_err(|e| object_store::Error::Generic {
                    store: STORE,
                    source: Box::new(e),
                })?,
            None => 0..meta.size,
        };
        let bytes = self.read(&held, range.clone()).await?;
        Ok(GetResult {
            payload: GetResultPayload::Stream(
                futures::stream::once(async move { Ok(bytes) }).boxed(),
            ),
            meta,
            range,
            attributes: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        locations.map(|_| Err(not_supported("delete"))).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let prefix = prefix.map(|p| p.to_string()).unwrap_or_default();
        let metas: Vec<object_store::Result<ObjectMeta>> = self
            .files()
            .into_values()
            .filter(|held| under(held.meta.location.as_ref(), &prefix))
            .map(|held| Ok(held.meta))
            .collect();
        futures::stream::iter(metas).boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let prefix = prefix.map(|p| p.to_string()).unwrap_or_default();
        let mut common: BTreeSet<String> = BTreeSet::new();
        let mut objects = Vec::new();
        for held in self.files().into_values() {
            let path = held.meta.location.to_string();
            if !under(&path, &prefix) {
                continue;
            }
            let rest = path[prefix.len()..].trim_start_matches('/');
            match rest.split_once('/') {
                Some((dir, _)) => {
                    let base = if prefix.is_empty() {
                        String::new()
                    } else {
                        format!("{prefix}/")
                    };
                    common.insert(format!("{base}{dir}"));
                }
                None => objects.push(held.meta),
            }
        }
        Ok(ListResult {
            common_prefixes: common.into_iter().map(|p| Path::from(p.as_str())).collect(),
            objects,
        })
    }

    async fn copy_opts(
        &self,
        _from: &Path,
        _to: &Path,
        _options: CopyOptions,
    ) -> object_store::Result<()> {
        Err(not_supported("copy"))
    }
}

/// Whether `path` is `prefix` or inside it (object store prefixes match whole segments).
fn under(path: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::under;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(under("events/a.parquet", "events"));
        assert!(under("events/a.parquet", ""));
        assert!(!under("events2/a.parquet", "events"));
        assert!(under("events", "events"));
    }
}
