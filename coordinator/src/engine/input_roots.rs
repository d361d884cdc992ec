//! Where a query's tables list their files, and a digest of what is there now: how a
//! results-cache shortcut (`results_shortcut.rs`) sees that a repeat's inputs have not
//! changed without planning it again.

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::ViewTable;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::source_as_provider;
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::LogicalPlan;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use ring::digest::{Context, SHA256};

use crate::access::auth::hex;
use crate::datasets::delta::DeltaTable;

/// A place a query's inputs are listed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Root {
    store: ObjectStoreUrl,
    prefix: Path,
    /// A folder (listed) rather than one file (looked up).
    folder: bool,
}

/// Where the tables `plan` reads list their files, or None when it reads anything a
/// listing does not show (a system table, a table in memory).
pub(crate) fn roots_of(plan: &LogicalPlan) -> Option<Vec<Root>> {
    let mut roots = Vec::new();
    collect_roots(plan, &mut roots).then_some(roots)
}

fn collect_roots(plan: &LogicalPlan, roots: &mut Vec<Root>) -> bool {
    let mut complete = true;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let known = source_as_provider(&scan.source).is_ok_and(|provider| {
                if let Some(listing) = provider.downcast_ref::<ListingTable>() {
                    roots.extend(listing.table_paths().iter().map(|url| Root {
                        store: url.object_store(),
                        prefix: url.prefix().clone(),
                        folder: url.is_collection(),
                    }));
                    true
                } else if let Some(delta) = provider.downcast_ref::<DeltaTable>() {
                    delta.log_folder().is_ok_and(|(store, prefix)| {
                        roots.push(Root {
                            store,
                            prefix,
                            folder: true,
                        });
                        true
                    })
                } else if let Some(view) = provider.downcast_ref::<ViewTable>() {
                    // Views nest no deeper than they could be planned.
                    collect_roots(view.logical_plan(), roots)
                } else {
                    false
                }
            });
            if !known {
                complete = false;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    complete
}

/// A digest of every object under `roots`: path, size, modification time, ETag and
/// version. DataFusion's own listing (`ListingTableUrl::list_all_files`) needs a whole
/// planning session; this lists the same places, without its extension and glob
/// filters, so it sees at least every file a plan could read.
pub(super) async fn listing(
    runtime: &RuntimeEnv,
    roots: &[Root],
) -> Result<String, DataFusionError> {
    let mut lines = Vec::new();
    for root in roots {
        let store = runtime.object_store(&root.store)?;
        let found: Vec<ObjectMeta> = if root.folder {
            store.list(Some(&root.prefix)).try_collect().await?
        } else {
            match store.head(&root.prefix).await {
                Ok(meta) => vec![meta],
                // As DataFusion does: a missing file is tried as a folder.
                Err(object_store::Error::NotFound { .. }) => {
                    store.list(Some(&root.prefix)).try_collect().await?
                }
                Err(e) => return Err(e.into()),
            }
        };
        lines.extend(found.into_iter().map(|meta| {
            format!(
                "{}\0{}\0{}\0{}\0{:?}\0{:?}\n",
                root.store.as_str(),
                meta.location,
                meta.size,
                meta.last_modified.timestamp_nanos_opt().unwrap_or_default(),
                meta.e_tag,
                meta.version,
            )
        }));
    }
    lines.sort_unstable();
    let mut digest = Context::new(&SHA256);
    for line in &lines {
        digest.update(line.as_bytes());
    }
    Ok(hex(digest.finish().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listing_changes_with_a_new_or_rewritten_file() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("a.parquet"), b"one").expect("write");
        let runtime = RuntimeEnv::default();
        let url = datafusion::datasource::listing::ListingTableUrl::parse(
            format!("{}/", dir.path().display()).as_str(),
        )
        .expect("url");
        let roots = [Root {
            store: url.object_store(),
            prefix: url.prefix().clone(),
            folder: true,
        }];
        let first = listing(&runtime, &roots).await.expect("listing");
        assert_eq!(first, listing(&runtime, &roots).await.expect("listing"));
        std::fs::write(dir.path().join("b.parquet"), b"two").expect("write");
        let second = listing(&runtime, &roots).await.expect("listing");
        assert_ne!(first, second);
        std::fs::write(dir.path().join("b.parquet"), b"three").expect("write");
        assert_ne!(second, listing(&runtime, &roots).await.expect("listing"));
    }
}
