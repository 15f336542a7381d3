//! Serving and compacting the blocks of a shared bucket (cluster mode).
//!
//! - [`BucketStore`] (the `store` component): for every tenant prefix of
//!   the bucket, the live blocks of the merged bucket indexes
//!   ([`crate::bucket_index::read_all`] + [`crate::bucket_index::merge`]),
//!   downloaded once into a local cache directory and memory-mapped;
//!   [`BucketStore::sync`] refreshes the set (new blocks are fetched,
//!   deleted or marked ones dropped). Each tenant's blocks are a
//!   [`Queryable`] ([`StoreTenant`]).
//! - [`compact_tenant`] (the `compactor` component, [`CompactorConfig`]):
//!   marks blocks past the retention, merges every group of
//!   time-overlapping blocks of a tenant — the replicas the ingesters
//!   uploaded at RF3 — into one block (vertical compaction through the
//!   engine's own merge, identical samples deduplicated), then merges
//!   settled level windows (2h → 12h → 24h, the engine's planner),
//!   uploads each output (`meta.json` last, `thanos.source: compactor`)
//!   and marks the inputs deleted in the tenant index
//!   `bucket-index.json`. Marked blocks' objects are deleted only after
//!   `deletion_delay`; the marks stay while an ingester's index still
//!   lists the blocks.
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

/// Settings of the cluster compactor ([`compact_tenant`]). Times in ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactorConfig {
    /// Level ranges, ascending (default 2h, 12h, 24h): the first is the
    /// ingesters' block range; blocks of a window of each later range are
    /// merged into one. One range (or none) turns level compaction off.
    pub block_ranges: Vec<i64>,
    /// A level window is merged only once it ended this long ago, so the
    /// ingesters' late blocks (cut lag, out-of-order data) are in it
    /// (default 4h). A block that arrives later still overlaps the merged
    /// block and is merged into it vertically.
    pub compaction_delay: i64,
    /// Blocks that ended more than this long ago are marked for deletion
    /// (`None`: keep forever, the default).
    pub retention: Option<i64>,
    /// The objects of a marked block are deleted this long after the mark
    /// (default 12h, Mimir's `compactor.deletion-delay`), so a store that
    /// has not re-read the index yet, or a download in flight, still
    /// finds them.
    pub deletion_delay: i64,
}

impl Default for CompactorConfig {
    fn default() -> Self {
        let h = 3_600_000;
        Self {
            block_ranges: vec![2 * h, 12 * h, 24 * h],
            compaction_delay: 4 * h,
            retention: None,
            deletion_delay: 12 * h,
        }
    }
}

/// What a [`compact_tenant`] run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Groups of overlapping blocks (replicas) merged.
    pub groups: usize,
    /// Level windows merged into one block.
    pub level_groups: usize,
    /// Blocks marked for deletion (merged inputs, past retention,
    /// abandoned partial uploads).
    pub marked: usize,
    /// Of `marked`: blocks past the retention.
    pub retention_marked: usize,
    /// Blocks whose objects were deleted (their deletion delay passed).
    pub deleted: usize,
    /// Live blocks after the run.
    pub blocks: usize,
}

/// An entry of the compactor's own index without `meta.json` whose ULID
/// is older than this is an abandoned upload (a crash between data and
/// `meta.json`): it is marked for deletion.
const PARTIAL_GRACE_MS: i64 = 3_600_000;

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

/// One tenant's compaction state during a run: the tenant index (only
/// the compactor writes it) and the merged view of every index.
struct Run<'a> {
    bucket: &'a Bucket,
    work: &'a Path,
    tenant_ix: BucketIndex,
    merged: BucketIndex,
    now: i64,
    stats: CompactStats,
}

impl Run<'_> {
    /// Marks `ulid` deleted in the tenant index and the merged view.
    fn mark(&mut self, ulid: &str) {
        if !self.tenant_ix.is_marked(ulid) {
            self.tenant_ix.mark_deleted(ulid, self.now);
            self.stats.marked += 1;
        }
        self.merged.mark_deleted(ulid, self.now);
    }

    async fn write_index(&self) -> Result<()> {
        bucket_index::write(self.bucket, &self.tenant_ix, now_ms()).await
    }

    /// Merges `group` into one block: downloads the inputs, merges them
    /// (duplicates dropped), publishes the output (data, index entry,
    /// `meta.json`) and marks the inputs deleted. `None` when an input is
    /// not complete (an upload in progress, or one of our own abandoned
    /// uploads, which is then marked for deletion).
    async fn merge_group(&mut self, group: &[String]) -> Result<Option<crate::block::BlockMeta>> {
        let _ = std::fs::remove_dir_all(self.work);
        let mut inputs = Vec::new();
        for ulid in group {
            match fetch_block(self.bucket, self.work, ulid).await? {
                Some(r) => inputs.push(r),
                None => {
                    let ours = self.tenant_ix.blocks.iter().any(|b| &b.ulid == ulid);
                    let age = ulid
                        .parse::<Ulid>()
                        .map(|u| self.now.saturating_sub(u.timestamp_ms() as i64))
                        .unwrap_or(0);
                    if ours && age > PARTIAL_GRACE_MS {
                        warn!(block = %ulid, "abandoned partial compactor upload: marked for deletion");
                        self.mark(ulid);
                        self.write_index().await?;
                    }
                    let _ = std::fs::remove_dir_all(self.work);
                    return Ok(None);
                }
            }
        }
        let id = Ulid::new();
        let out_dir = self.work.join("out").join(id.to_string());
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
            self.bucket
                .upload_dir_except(&name, &out_dir, &["meta.json"])
                .await?;
            self.tenant_ix.add(&meta);
            self.write_index().await?;
            self.bucket
                .upload_file(&format!("{name}/meta.json"), &out_dir.join("meta.json"))
                .await?;
            self.merged.add(&meta);
        }
        for u in group {
            self.mark(u);
        }
        self.write_index().await?;
        let _ = std::fs::remove_dir_all(self.work);
        Ok(Some(meta))
    }
}

/// [`compact_tenant_at`] now.
pub async fn compact_tenant(
    bucket: &Bucket,
    work: &Path,
    cfg: &CompactorConfig,
) -> Result<CompactStats> {
    compact_tenant_at(bucket, work, cfg, now_ms()).await
}

/// One compactor run over one tenant (`bucket` is the tenant's prefix;
/// `work` a scratch directory) at time `now` (Unix ms):
///
/// 1. retention: live blocks that ended before `now - retention` are
///    marked for deletion;
/// 2. vertical: every group of time-overlapping blocks (the replicas) is
///    merged into one block;
/// 3. levels: blocks of one aligned window of each later range are merged
///    once the window ended `compaction_delay` ago (`compact::plan_level`,
///    the engine's planner);
/// 4. deletion: the objects of blocks marked `deletion_delay` ago or more
///    are deleted (`meta.json` first) and the mark records it; the entry
///    leaves the tenant index, the mark stays while an ingester's index
///    still lists the block.
///
/// Merged inputs are only marked (readers skip marked blocks), never
/// deleted at once. The caller makes sure one compactor works on a tenant
/// at a time (the compactor ring).
pub async fn compact_tenant_at(
    bucket: &Bucket,
    work: &Path,
    cfg: &CompactorConfig,
    now: i64,
) -> Result<CompactStats> {
    let all = bucket_index::read_all(bucket).await?;
    let Some(merged) = bucket_index::merge(all.iter().map(|(_, ix)| ix)) else {
        return Ok(CompactStats::default());
    };
    let tenant_ix = all
        .iter()
        .find(|(k, _)| k == INDEX_KEY)
        .map(|(_, ix)| ix.clone())
        .unwrap_or_default();
    let mut run = Run {
        bucket,
        work,
        tenant_ix,
        merged,
        now,
        stats: CompactStats::default(),
    };
    // 1. Retention.
    if let Some(ret) = cfg.retention.filter(|r| *r > 0) {
        let cutoff = now.saturating_sub(ret);
        let old: Vec<String> = run
            .merged
            .live_blocks()
            .filter(|b| b.max_time <= cutoff)
            .map(|b| b.ulid.clone())
            .collect();
        for u in &old {
            info!(block = %u, "block past retention: marked for deletion");
            run.mark(u);
            run.stats.retention_marked += 1;
        }
        if !old.is_empty() {
            run.write_index().await?;
        }
    }
    // 2. Vertical: the replicas.
    for group in overlap_groups(&run.merged) {
        if let Some(meta) = run.merge_group(&group).await? {
            run.stats.groups += 1;
            info!(block = %meta.ulid, inputs = group.len(), min_time = meta.min_time,
                max_time = meta.max_time, samples = meta.stats.num_samples,
                "compacted overlapping blocks in the bucket");
        }
    }
    // 3. Levels. Each merge removes at least one live block, so the loop
    // ends; groups that could not be merged now are left for next time.
    let settled = now.saturating_sub(cfg.compaction_delay);
    let mut skip: HashSet<Ulid> = HashSet::new();
    let rounds = run.merged.blocks.len() + 1;
    for _ in 0..rounds {
        let mut spans: Vec<(i64, i64, Ulid)> = run
            .merged
            .live_blocks()
            .filter_map(|b| Some((b.min_time, b.max_time, b.ulid.parse::<Ulid>().ok()?)))
            .filter(|s| !skip.contains(&s.2))
            .collect();
        spans.sort_by_key(|s| (s.0, s.1));
        let Some(group) = crate::compact::plan_level(&spans, &cfg.block_ranges, settled) else {
            break;
        };
        let names: Vec<String> = group.iter().map(Ulid::to_string).collect();
        match run.merge_group(&names).await? {
            Some(meta) => {
                run.stats.level_groups += 1;
                info!(block = %meta.ulid, inputs = group.len(), min_time = meta.min_time,
                    max_time = meta.max_time, level = meta.compaction.level,
                    "merged a level window in the bucket");
            }
            None => skip.extend(group),
        }
    }
    // 4. Deletion after the delay.
    let due: Vec<String> = run
        .tenant_ix
        .deletion_marks
        .iter()
        .filter(|d| !d.objects_deleted && d.deletion_time.saturating_add(cfg.deletion_delay) <= now)
        .map(|d| d.ulid.clone())
        .collect();
    for u in &due {
        if u.parse::<Ulid>().is_err() {
            // Never delete a prefix that is not a block.
            continue;
        }
        bucket.delete_prefix(u).await?;
        if let Some(d) = run
            .tenant_ix
            .deletion_marks
            .iter_mut()
            .find(|d| &d.ulid == u)
        {
            d.objects_deleted = true;
        }
        run.stats.deleted += 1;
    }
    // Deleted blocks leave the tenant index; their marks stay while an
    // ingester's index still lists them (readers merge all indexes).
    let listed: HashSet<String> = bucket_index::read_all(bucket)
        .await?
        .iter()
        .filter(|(k, _)| k != INDEX_KEY)
        .flat_map(|(_, ix)| ix.blocks.iter().map(|b| b.ulid.clone()))
        .collect();
    let before = run.tenant_ix.clone();
    let gone: Vec<String> = run
        .tenant_ix
        .deletion_marks
        .iter()
        .filter(|d| d.objects_deleted)
        .map(|d| d.ulid.clone())
        .collect();
    for u in &gone {
        run.tenant_ix.blocks.retain(|b| &b.ulid != u);
    }
    run.tenant_ix
        .deletion_marks
        .retain(|d| !d.objects_deleted || listed.contains(&d.ulid));
    if !before.same_content(&run.tenant_ix) || !due.is_empty() {
        run.write_index().await?;
    }
    let _ = std::fs::remove_dir_all(work);
    run.stats.blocks = run.merged.live_blocks().count();
    Ok(run.stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{BlockCompaction, BlockWriter, ChunkInput};
    use crate::chunks::Encoding;
    use stratus_model::Labels;

    const H: i64 = 3_600_000;
    const STEP: i64 = 60_000;
    /// A day boundary long ago.
    const BASE: i64 = 1_700_006_400_000 / (24 * H) * (24 * H);

    /// Writes a level-1 block of `series` series with one sample a minute
    /// in `[min, max)` (value = series * 1e6 + t / STEP), uploads it under
    /// the tenant prefix and lists it in ingester `ing`'s index.
    async fn ingester_block(b: &Bucket, tmp: &Path, ing: &str, min: i64, max: i64, series: usize) {
        let id = Ulid::new();
        let dir = tmp.join(id.to_string());
        let mut w = BlockWriter::create(&dir, id, min, max).unwrap();
        for s in 0..series {
            let l = Labels::from_pairs([("__name__", "m".to_string()), ("s", format!("{s:03}"))]);
            let samples =
                (min / STEP..max / STEP).map(|k| (k * STEP, (s as i64 * 1_000_000 + k) as f64));
            let chunks = crate::db::encode_chunks(samples, 120);
            let inputs: Vec<ChunkInput<'_>> = chunks
                .iter()
                .map(|(mint, maxt, data)| ChunkInput {
                    mint: *mint,
                    maxt: *maxt,
                    encoding: Encoding::Xor as u8,
                    data,
                    num_samples: crate::chunks::chunk_num_samples(data).unwrap().into(),
                })
                .collect();
            w.add_series(&l, &inputs).unwrap();
        }
        let meta = w
            .finish(BlockCompaction {
                level: 1,
                sources: vec![id],
                parents: vec![],
                deletable: false,
            })
            .unwrap();
        b.upload_dir(&id.to_string(), &dir, &["meta.json"])
            .await
            .unwrap();
        let key = bucket_index::key_for(Some(ing));
        let mut ix = bucket_index::read_key(b, &key)
            .await
            .unwrap()
            .unwrap_or_default();
        ix.add(&meta);
        bucket_index::write_key(b, &ix, &key, BASE).await.unwrap();
    }

    fn cfg(deletion_delay: i64) -> CompactorConfig {
        CompactorConfig {
            block_ranges: vec![2 * H, 12 * H, 24 * H],
            compaction_delay: 4 * H,
            retention: None,
            deletion_delay,
        }
    }

    async fn has_meta(b: &Bucket, ulid: &str) -> bool {
        b.get(&format!("{ulid}/meta.json")).await.unwrap().is_some()
    }

    /// Every sample of every series the store serves for tenant `t`.
    fn store_samples(store: &BucketStore, t: &TenantId) -> Vec<(String, i64, f64)> {
        let st = store.tenant(t).unwrap();
        let hints = SelectHints {
            start: i64::MIN,
            end: i64::MAX,
            ..SelectHints::default()
        };
        let mut out = Vec::new();
        for s in st.select(&[Matcher::eq("__name__", "m")], &hints).unwrap() {
            let name = s.labels.get("s").unwrap().to_string();
            out.extend(
                s.iter(i64::MIN, i64::MAX)
                    .map(|(t, v)| (name.clone(), t, v)),
            );
        }
        out
    }

    #[tokio::test]
    async fn replicas_then_levels_merged_and_inputs_deleted_after_the_delay() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Bucket::local(&tmp.path().join("bucket")).unwrap();
        let t = TenantId::new("t1").unwrap();
        let b = root.with_prefix(t.as_str());
        let src = tmp.path().join("src");
        // Two ingesters (RF 2) uploaded the same three 2h windows; the
        // third window starts the next 12h range.
        for ing in ["i0", "i1"] {
            for w in [0, 1, 6] {
                let min = BASE + w * 2 * H;
                ingester_block(&b, &src, ing, min, min + 2 * H, 3).await;
            }
        }
        let store = BucketStore::new(root.clone(), &tmp.path().join("cache"));
        store.sync().await.unwrap();
        let want = store_samples(&store, &t);
        assert_eq!(want.len(), 3 * 3 * 120, "store dedups the replicas");

        // The 12h window [BASE, BASE+12h) ended 3h ago: not settled yet
        // with a 4h delay; only the replicas are merged.
        let work = tmp.path().join("work");
        let now = BASE + 15 * H;
        let s = compact_tenant_at(&b, &work, &cfg(2 * H), now)
            .await
            .unwrap();
        assert_eq!(
            (s.groups, s.level_groups, s.marked, s.deleted),
            (3, 0, 6, 0),
            "{s:?}"
        );
        assert_eq!(s.blocks, 3);
        // Now settled: the two merged 2h blocks of the first 12h window
        // become one; the lone block of the second window stays.
        let now = BASE + 16 * H;
        let s = compact_tenant_at(&b, &work, &cfg(2 * H), now)
            .await
            .unwrap();
        assert_eq!(
            (s.groups, s.level_groups, s.marked, s.deleted),
            (0, 1, 2, 0),
            "{s:?}"
        );
        assert_eq!(s.blocks, 2);
        let ix = bucket_index::read(&b).await.unwrap().unwrap();
        let live: Vec<_> = ix.live_blocks().collect();
        assert_eq!(live.len(), 2, "{ix:?}");
        assert_eq!((live[0].min_time, live[0].max_time), (BASE, BASE + 4 * H));
        assert_eq!(live[0].num_samples, 3 * 2 * 120, "deduplicated");
        assert_eq!(live[0].compaction_level, 3);
        assert_eq!(live[0].sources.len(), 4);
        // Every marked block is still in the bucket (deletion delay), and
        // readers no longer use it.
        let marked: Vec<String> = ix.deletion_marks.iter().map(|d| d.ulid.clone()).collect();
        assert_eq!(marked.len(), 8);
        for u in &marked {
            assert!(has_meta(&b, u).await, "{u} deleted before its delay");
        }
        store.sync().await.unwrap();
        let served: Vec<String> = store
            .tenant(&t)
            .unwrap()
            .block_ulids()
            .iter()
            .map(Ulid::to_string)
            .collect();
        assert_eq!(served.len(), 2);
        assert!(served.iter().all(|u| !marked.contains(u)));
        assert_eq!(store_samples(&store, &t), want, "answers unchanged");

        // Two hours after the first marks, the first six go; the rest two
        // hours after theirs.
        let s = compact_tenant_at(&b, &work, &cfg(2 * H), BASE + 17 * H)
            .await
            .unwrap();
        assert_eq!((s.marked, s.deleted), (0, 6), "{s:?}");
        let s = compact_tenant_at(&b, &work, &cfg(2 * H), BASE + 18 * H)
            .await
            .unwrap();
        assert_eq!((s.marked, s.deleted), (0, 2), "{s:?}");
        for u in &marked {
            assert!(!has_meta(&b, u).await, "{u} not deleted");
        }
        let ix = bucket_index::read(&b).await.unwrap().unwrap();
        // The compactor's own intermediate blocks left the index; the
        // ingesters' blocks keep their marks while the ingesters list them.
        assert_eq!(ix.blocks.len(), 2, "{ix:?}");
        assert_eq!(ix.deletion_marks.len(), 6);
        assert!(ix.deletion_marks.iter().all(|d| d.objects_deleted));
        let s = compact_tenant_at(&b, &work, &cfg(2 * H), BASE + 19 * H)
            .await
            .unwrap();
        assert_eq!(
            (s.groups, s.level_groups, s.marked, s.deleted),
            (0, 0, 0, 0)
        );
        store.sync().await.unwrap();
        assert_eq!(store_samples(&store, &t), want);
    }

    #[tokio::test]
    async fn retention_marks_old_blocks_and_deletes_them_later() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Bucket::memory();
        let t = TenantId::new("t2").unwrap();
        let b = root.with_prefix(t.as_str());
        let src = tmp.path().join("src");
        ingester_block(&b, &src, "i0", BASE, BASE + 2 * H, 2).await;
        ingester_block(
            &b,
            &src,
            "i0",
            BASE + 10 * 24 * H,
            BASE + 10 * 24 * H + 2 * H,
            2,
        )
        .await;
        let work = tmp.path().join("work");
        let mut c = cfg(0);
        c.block_ranges = vec![2 * H];
        let now = BASE + 12 * 24 * H;
        // Forever by default.
        let s = compact_tenant_at(&b, &work, &c, now).await.unwrap();
        assert_eq!((s.marked, s.blocks), (0, 2));
        // 7 days: the old block is marked and (delay 0) deleted at once;
        // the ingester still lists it, so the mark stays.
        c.retention = Some(7 * 24 * H);
        c.deletion_delay = H;
        let s = compact_tenant_at(&b, &work, &c, now).await.unwrap();
        assert_eq!(
            (s.retention_marked, s.marked, s.deleted, s.blocks),
            (1, 1, 0, 1)
        );
        let store = BucketStore::new(root.clone(), &tmp.path().join("cache"));
        store.sync().await.unwrap();
        let served = store.tenant(&t).unwrap().block_ulids();
        assert_eq!(served.len(), 1);
        assert_eq!(store_samples(&store, &t).len(), 2 * 120);
        assert!(
            store_samples(&store, &t)
                .iter()
                .all(|s| s.1 >= BASE + 10 * 24 * H)
        );
        let s = compact_tenant_at(&b, &work, &c, now + H).await.unwrap();
        assert_eq!((s.marked, s.deleted), (0, 1));
        let ix = bucket_index::read(&b).await.unwrap().unwrap();
        assert_eq!(ix.deletion_marks.len(), 1);
        assert!(!has_meta(&b, &ix.deletion_marks[0].ulid).await);
        // Once the ingester stops listing the block, the mark goes too.
        let key = bucket_index::key_for(Some("i0"));
        let mut own = bucket_index::read_key(&b, &key).await.unwrap().unwrap();
        own.remove(&ix.deletion_marks[0].ulid);
        bucket_index::write_key(&b, &own, &key, now).await.unwrap();
        compact_tenant_at(&b, &work, &c, now + 2 * H).await.unwrap();
        let ix = bucket_index::read(&b).await.unwrap().unwrap();
        assert!(ix.deletion_marks.is_empty(), "{ix:?}");
    }
}
