//! Serving and compacting the blocks of a shared bucket (cluster mode).
//!
//! - [`BucketStore`] (the `store` component): for every tenant prefix of
//!   the bucket, the live blocks of the merged bucket indexes
//!   ([`crate::bucket_index::read_all`] + [`crate::bucket_index::merge`]),
//!   downloaded once into a local cache directory and memory-mapped;
//!   [`BucketStore::sync`] refreshes the set (new blocks are fetched,
//!   deleted or marked ones dropped). Each tenant's blocks are a
//!   [`Queryable`] ([`StoreTenant`]).
//! - [`compact_tenant`] (the `compactor` component): merges every group of
//!   time-overlapping blocks of a tenant — the replicas the ingesters
//!   uploaded at RF3 — into one block (vertical compaction through the
//!   engine's own merge, identical samples deduplicated), uploads it
//!   (`meta.json` last, `thanos.source: compactor`), marks the inputs
//!   deleted in the tenant index `bucket-index.json`, deletes their
//!   objects and keeps the marks while an ingester's index still lists
//!   the inputs.
//!
//! A block listed in an index whose `meta.json` is missing is an upload in
//! progress (or a deletion): the store skips it and the compactor leaves
//! its group alone until the next run.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use stratus_model::{Matcher, TenantId};
use stratus_objstore::Bucket;
use tracing::{info, warn};
use ulid::Ulid;

use crate::block::{BlockReader, ThanosMeta};
use crate::bucket_index::{self, BucketIndex, INDEX_KEY};
use crate::db::{now_ms, select_block};
use crate::error::Result;
use crate::querier::{Queryable, SelectHints, Series, merge_series};

/// The blocks of every tenant of a bucket, cached locally.
#[derive(Debug)]
pub struct BucketStore {
    bucket: Bucket,
    cache: PathBuf,
    tenants: RwLock<HashMap<TenantId, Arc<StoreTenant>>>,
}

/// What a [`BucketStore::sync`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Tenants with blocks.
    pub tenants: usize,
    /// Blocks served after the sync.
    pub blocks: usize,
    /// Blocks downloaded by this sync.
    pub downloaded: usize,
    /// Blocks dropped by this sync.
    pub dropped: usize,
}

/// One tenant's blocks in a [`BucketStore`].
#[derive(Debug, Default)]
pub struct StoreTenant {
    blocks: RwLock<Vec<Arc<BlockReader>>>,
}

impl BucketStore {
    /// Serves the blocks of `bucket` (its root holds one prefix per
    /// tenant), caching them under `cache`.
    pub fn new(bucket: Bucket, cache: &Path) -> Self {
        Self {
            bucket,
            cache: cache.to_path_buf(),
            tenants: RwLock::new(HashMap::new()),
        }
    }

    /// The blocks of `tenant`, `None` when it has none.
    pub fn tenant(&self, tenant: &TenantId) -> Option<Arc<StoreTenant>> {
        self.tenants.read().get(tenant).cloned()
    }

    /// Refreshes every tenant's block set from the bucket indexes: one
    /// LIST of tenants, per tenant one LIST and a GET per index file, and
    /// downloads of new blocks. A block that fails to download is skipped
    /// (and retried next time); a tenant whose indexes cannot be read
    /// keeps its current blocks.
    pub async fn sync(&self) -> Result<SyncStats> {
        let mut stats = SyncStats::default();
        let names = self.bucket.list_dirs("").await?;
        let mut seen = HashSet::new();
        for name in names {
            let Ok(tenant) = TenantId::new(&name) else {
                continue;
            };
            let b = self.bucket.with_prefix(tenant.as_str());
            let merged = match bucket_index::read_all(&b).await {
                Ok(all) => bucket_index::merge(all.iter().map(|(_, ix)| ix)),
                Err(e) => {
                    warn!(tenant = %tenant, error = %e, "reading bucket indexes; keeping the blocks served");
                    seen.insert(tenant);
                    continue;
                }
            };
            let Some(merged) = merged else {
                continue;
            };
            let want: Vec<String> = merged.live_blocks().map(|e| e.ulid.clone()).collect();
            let entry = self
                .tenants
                .read()
                .get(&tenant)
                .cloned()
                .unwrap_or_default();
            let have: Vec<Arc<BlockReader>> = entry.blocks.read().clone();
            let dir = self.cache.join(tenant.as_str());
            let mut next = Vec::new();
            for ulid in &want {
                if ulid.parse::<Ulid>().is_err() {
                    continue;
                }
                if let Some(r) = have.iter().find(|r| r.meta().ulid.to_string() == *ulid) {
                    next.push(r.clone());
                    continue;
                }
                match fetch_block(&b, &dir, ulid).await {
                    Ok(Some(r)) => {
                        stats.downloaded += 1;
                        next.push(r);
                    }
                    Ok(None) => {}
                    Err(e) => warn!(tenant = %tenant, block = %ulid, error = %e, "fetching block"),
                }
            }
            for r in &have {
                if !next.iter().any(|n| Arc::ptr_eq(n, r)) {
                    stats.dropped += 1;
                    let _ = std::fs::remove_dir_all(r.dir());
                }
            }
            next.sort_by_key(|b| (b.meta().min_time, b.meta().max_time, b.meta().ulid));
            stats.tenants += 1;
            stats.blocks += next.len();
            *entry.blocks.write() = next;
            self.tenants.write().insert(tenant.clone(), entry);
            seen.insert(tenant);
        }
        self.tenants.write().retain(|t, _| seen.contains(t));
        Ok(stats)
    }
}

/// Opens block `ulid` from the local cache under `dir`, downloading it
/// first when missing. `None` when the bucket has no complete block (no
/// `meta.json`: an upload in progress or a deletion).
async fn fetch_block(b: &Bucket, dir: &Path, ulid: &str) -> Result<Option<Arc<BlockReader>>> {
    let d = dir.join(ulid);
    if !d.join(crate::block::META_FILENAME).exists() {
        if b.get(&format!("{ulid}/meta.json")).await?.is_none() {
            return Ok(None);
        }
        let tmp = dir.join(format!("{ulid}.download"));
        let _ = std::fs::remove_dir_all(&tmp);
        b.download_dir(ulid, &tmp).await?;
        if !tmp.join(crate::block::META_FILENAME).exists() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Ok(None);
        }
        let _ = std::fs::remove_dir_all(&d);
        std::fs::rename(&tmp, &d).map_err(|source| crate::Error::Io {
            path: d.clone(),
            source,
        })?;
    }
    Ok(Some(Arc::new(BlockReader::open(&d)?)))
}

impl StoreTenant {
    fn blocks_in(&self, mint: i64, maxt: i64) -> Vec<Arc<BlockReader>> {
        self.blocks
            .read()
            .iter()
            .filter(|b| b.meta().max_time > mint && b.meta().min_time <= maxt)
            .cloned()
            .collect()
    }

    /// The blocks served (oldest first).
    pub fn block_ulids(&self) -> Vec<Ulid> {
        self.blocks.read().iter().map(|b| b.meta().ulid).collect()
    }
}

impl Queryable for StoreTenant {
    fn select(&self, matchers: &[Matcher], hints: &SelectHints) -> Result<Vec<Series>> {
        if matchers.is_empty() {
            return Ok(Vec::new());
        }
        let mut sources = Vec::new();
        for b in self.blocks_in(hints.start, hints.end).iter().rev() {
            sources.push(select_block(
                b,
                matchers,
                hints.start,
                hints.end,
                hints.labels_only,
            )?);
        }
        Ok(merge_series(sources))
    }

    fn label_names(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<String>> {
        let mut all = std::collections::BTreeSet::new();
        for b in self.blocks_in(mint, maxt) {
            if matchers.is_empty() {
                all.extend(b.label_names()?);
            } else {
                for s in select_block(&b, matchers, mint, maxt, true)? {
                    all.extend(s.labels.iter().map(|l| l.name.to_string()));
                }
            }
        }
        Ok(all.into_iter().collect())
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>> {
        let mut all = std::collections::BTreeSet::new();
        for b in self.blocks_in(mint, maxt) {
            if matchers.is_empty() {
                all.extend(b.label_values(name)?);
            } else {
                for s in select_block(&b, matchers, mint, maxt, true)? {
                    if let Some(v) = s.labels.get(name) {
                        all.insert(v.to_string());
                    }
                }
            }
        }
        Ok(all.into_iter().collect())
    }
}

/// What a [`compact_tenant`] run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Groups of overlapping blocks merged.
    pub groups: usize,
    /// Input blocks deleted.
    pub deleted: usize,
}

/// Groups of time-overlapping entries (two or more each).
fn overlap_groups(ix: &BucketIndex) -> Vec<Vec<String>> {
    let mut live: Vec<_> = ix.live_blocks().collect();
    live.sort_by_key(|b| (b.min_time, b.max_time));
    let mut out = Vec::new();
    let mut i = 0;
    while i < live.len() {
        let mut end = live[i].max_time;
        let mut j = i + 1;
        while j < live.len() && live[j].min_time < end {
            end = end.max(live[j].max_time);
            j += 1;
        }
        if j - i > 1 {
            out.push(live[i..j].iter().map(|b| b.ulid.clone()).collect());
        }
        i = j;
    }
    out
}

/// Merges every group of overlapping blocks of one tenant (`bucket` is
/// the tenant's prefix) into one block; `work` is a scratch directory.
/// Only one compactor may run per tenant (no leader election yet).
pub async fn compact_tenant(bucket: &Bucket, work: &Path) -> Result<CompactStats> {
    let mut stats = CompactStats::default();
    let all = bucket_index::read_all(bucket).await?;
    let Some(merged) = bucket_index::merge(all.iter().map(|(_, ix)| ix)) else {
        return Ok(stats);
    };
    let mut tenant_ix = all
        .iter()
        .find(|(k, _)| k == INDEX_KEY)
        .map(|(_, ix)| ix.clone())
        .unwrap_or_default();
    for group in overlap_groups(&merged) {
        let _ = std::fs::remove_dir_all(work);
        let mut inputs = Vec::new();
        for ulid in &group {
            match fetch_block(bucket, work, ulid).await? {
                Some(r) => inputs.push(r),
                None => break,
            }
        }
        if inputs.len() != group.len() {
            // An input is still uploading or going away: next run.
            continue;
        }
        let id = Ulid::new();
        let out_dir = work.join("out").join(id.to_string());
        let ins = inputs.clone();
        let d2 = out_dir.clone();
        let mut meta = tokio::task::spawn_blocking(move || {
            crate::compact::merge_blocks(&ins, &d2, id, crate::chunks::COMPACT_CHUNK_SAMPLES)
        })
        .await
        .map_err(|e| crate::Error::Task {
            message: e.to_string(),
        })??;
        let name = id.to_string();
        if meta.stats.num_series > 0 {
            meta.thanos = Some(ThanosMeta {
                labels: Default::default(),
                source: "compactor".to_string(),
            });
            meta.write(&out_dir)?;
            // Data, then the index entry, then meta.json (as a database
            // publishes a block).
            bucket
                .upload_dir_except(&name, &out_dir, &["meta.json"])
                .await?;
            tenant_ix.add(&meta);
            bucket_index::write(bucket, &tenant_ix, now_ms()).await?;
            bucket
                .upload_file(&format!("{name}/meta.json"), &out_dir.join("meta.json"))
                .await?;
        }
        let now = now_ms();
        for u in &group {
            tenant_ix.mark_deleted(u, now);
        }
        bucket_index::write(bucket, &tenant_ix, now_ms()).await?;
        for u in &group {
            bucket.delete_prefix(u).await?;
            stats.deleted += 1;
        }
        stats.groups += 1;
        info!(block = %meta.ulid, inputs = group.len(), min_time = meta.min_time,
            max_time = meta.max_time, samples = meta.stats.num_samples,
            "compacted overlapping blocks in the bucket");
    }
    let _ = std::fs::remove_dir_all(work);
    // Deleted blocks leave the tenant index; their marks stay while an
    // ingester's index still lists them (readers merge all indexes).
    let listed: HashSet<String> = bucket_index::read_all(bucket)
        .await?
        .iter()
        .filter(|(k, _)| k != INDEX_KEY)
        .flat_map(|(_, ix)| ix.blocks.iter().map(|b| b.ulid.clone()))
        .collect();
    let before = tenant_ix.clone();
    let marked: Vec<String> = tenant_ix
        .deletion_marks
        .iter()
        .map(|d| d.ulid.clone())
        .collect();
    for u in &marked {
        tenant_ix.blocks.retain(|b| &b.ulid != u);
    }
    tenant_ix
        .deletion_marks
        .retain(|d| listed.contains(&d.ulid));
    if !before.same_content(&tenant_ix) {
        bucket_index::write(bucket, &tenant_ix, now_ms()).await?;
    }
    Ok(stats)
}
