//! Serving and compacting the blocks of a shared bucket (cluster mode).
//!
//! - [`BucketStore`] (the `store` component): for every tenant prefix of
//!   the bucket, the live blocks of the merged bucket indexes
//!   ([`crate::bucket_index::read_all`] + [`crate::bucket_index::merge`]),
//!   opened lazily: only `meta.json`, the `index` and `tombstones` are
//!   downloaded into a local cache directory (`<cache>/<tenant>/<ulid>/`)
//!   and memory-mapped; chunk segments stay in the bucket and a select
//!   reads the chunks it needs with ranged GETs, nearby ranges merged,
//!   through an in-memory LRU chunk cache of bounded size (module
//!   `lazy`). [`BucketStore::sync`] refreshes the set (new blocks are
//!   opened, deleted or marked ones dropped with their cache files, and
//!   anything else in the cache directory removed, so it holds the live
//!   blocks' indexes only). Each tenant's blocks are a [`Queryable`]
//!   ([`StoreTenant`]).
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

mod lazy;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use stratus_model::{Matcher, TenantId};
use stratus_objstore::Bucket;
use tracing::{info, warn};
use ulid::Ulid;

use crate::block::{
    BlockReader, CHUNKS_DIRNAME, INDEX_FILENAME, INDEX_HEADER_FILENAME, META_FILENAME,
    TOMBSTONES_FILENAME, ThanosMeta, segment_name,
};
use crate::bucket_index::{self, BucketIndex, INDEX_KEY};
use crate::db::{now_ms, select_block};
use crate::error::Result;
use crate::querier::{Queryable, SelectHints, Series, merge_series};

/// Default byte budget of a store's in-memory chunk cache (256 MiB).
pub const DEFAULT_CHUNK_CACHE_BYTES: u64 = 256 << 20;
/// Default byte budget of a store's in-memory cache of series entries and
/// postings lists read from block indexes in the bucket (128 MiB).
pub const DEFAULT_INDEX_CACHE_BYTES: u64 = 128 << 20;

/// The blocks of every tenant of a bucket: indexes cached locally, chunks
/// read from the bucket on demand.
#[derive(Debug)]
pub struct BucketStore {
    bucket: Bucket,
    cache: PathBuf,
    chunk_cache_bytes: u64,
    index_cache_bytes: u64,
    /// Set by the first sync (it needs the runtime).
    ctx: OnceLock<Arc<lazy::FetchCtx>>,
    tenants: RwLock<HashMap<TenantId, Arc<StoreTenant>>>,
}

/// Counters and gauges of a [`BucketStore`], for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreMetrics {
    /// Bytes of chunk segments read from the bucket with ranged GETs.
    pub chunk_bytes_fetched: u64,
    /// Ranged GETs of chunk segments.
    pub chunk_gets: u64,
    /// Chunks served from the in-memory cache.
    pub chunk_cache_hits: u64,
    /// Chunks read from the bucket.
    pub chunk_cache_misses: u64,
    /// Chunk fetches that failed (bucket error, short or corrupt read).
    pub chunk_fetch_failures: u64,
    /// Bytes downloaded to open blocks: `meta.json`, `tombstones` and
    /// the parts of `index` an index header holds (TOC, symbols, label
    /// index).
    pub index_bytes_downloaded: u64,
    /// Index headers built (a block's first use, or a damaged file).
    pub index_header_builds: u64,
    /// Ranged GETs of index objects (header builds, series entries,
    /// postings lists; nearby ranges merged).
    pub index_gets: u64,
    /// Bytes of index objects read with ranged GETs.
    pub index_bytes_fetched: u64,
    /// Series entries and postings lists served from the index cache.
    pub index_cache_hits: u64,
    /// Series entries and postings lists read from the bucket.
    pub index_cache_misses: u64,
    /// Index reads that failed (bucket error, object gone, short read).
    pub index_fetch_failures: u64,
    /// Bytes the index cache holds now.
    pub index_cache_used_bytes: u64,
    /// Entries the index cache holds now.
    pub index_cache_items: u64,
    /// The index cache's byte budget.
    pub index_cache_budget: u64,
    /// Bytes the chunk cache holds now.
    pub chunk_cache_bytes: u64,
    /// Chunks the chunk cache holds now.
    pub chunk_cache_items: u64,
    /// The chunk cache's byte budget.
    pub chunk_cache_budget: u64,
    /// Bytes of the index headers of the served blocks (the local cache).
    pub index_cache_bytes: u64,
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
            chunk_cache_bytes: DEFAULT_CHUNK_CACHE_BYTES,
            index_cache_bytes: DEFAULT_INDEX_CACHE_BYTES,
            ctx: OnceLock::new(),
            tenants: RwLock::new(HashMap::new()),
        }
    }

    /// Sets the byte budget of the in-memory chunk cache (default
    /// [`DEFAULT_CHUNK_CACHE_BYTES`]; 0 turns it off). Before the first
    /// sync.
    pub fn with_chunk_cache_bytes(mut self, bytes: u64) -> Self {
        self.chunk_cache_bytes = bytes;
        self
    }

    /// Sets the byte budget of the in-memory cache of series entries and
    /// postings lists read from the bucket (default
    /// [`DEFAULT_INDEX_CACHE_BYTES`]; 0 turns it off). Before the first
    /// sync.
    pub fn with_index_cache_bytes(mut self, bytes: u64) -> Self {
        self.index_cache_bytes = bytes;
        self
    }

    fn ctx(&self) -> Arc<lazy::FetchCtx> {
        self.ctx
            .get_or_init(|| {
                Arc::new(lazy::FetchCtx::new(
                    self.chunk_cache_bytes,
                    self.index_cache_bytes,
                    tokio::runtime::Handle::current(),
                ))
            })
            .clone()
    }

    /// The store's counters and gauges now.
    pub fn metrics(&self) -> StoreMetrics {
        let mut m = StoreMetrics {
            chunk_cache_budget: self.chunk_cache_bytes,
            index_cache_budget: self.index_cache_bytes,
            ..StoreMetrics::default()
        };
        if let Some(ctx) = self.ctx.get() {
            let c = &ctx.counters;
            let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            m.chunk_bytes_fetched = g(&c.chunk_bytes_fetched);
            m.chunk_gets = g(&c.chunk_gets);
            m.chunk_cache_hits = g(&c.cache_hits);
            m.chunk_cache_misses = g(&c.cache_misses);
            m.chunk_fetch_failures = g(&c.fetch_failures);
            m.index_bytes_downloaded = g(&c.index_bytes_downloaded);
            m.chunk_cache_bytes = ctx.cache.bytes();
            m.chunk_cache_items = ctx.cache.len() as u64;
            m.chunk_cache_budget = ctx.cache.budget();
            m.index_header_builds = g(&c.header_builds);
            m.index_gets = g(&c.index_gets);
            m.index_bytes_fetched = g(&c.index_bytes_fetched);
            m.index_cache_hits = g(&c.index_cache_hits);
            m.index_cache_misses = g(&c.index_cache_misses);
            m.index_fetch_failures = g(&c.index_fetch_failures);
            m.index_cache_used_bytes = ctx.index_cache.bytes();
            m.index_cache_items = ctx.index_cache.len() as u64;
            m.index_cache_budget = ctx.index_cache.budget();
        }
        for t in self.tenants.read().values() {
            for b in t.blocks.read().iter() {
                m.index_cache_bytes += b.index_size();
            }
        }
        m
    }

    /// The blocks of `tenant`, `None` when it has none.
    pub fn tenant(&self, tenant: &TenantId) -> Option<Arc<StoreTenant>> {
        self.tenants.read().get(tenant).cloned()
    }

    /// Refreshes every tenant's block set from the bucket indexes: one
    /// LIST of tenants, per tenant one LIST and a GET per index file, and
    /// per new block GETs of `meta.json`, `index` and `tombstones` and one
    /// LIST of its chunk segments. A block that fails to open is skipped
    /// (and retried next time); a tenant whose indexes cannot be read
    /// keeps its current blocks. Cache files of blocks no longer served,
    /// and of tenants gone from the bucket, are removed.
    pub async fn sync(&self) -> Result<SyncStats> {
        let ctx = self.ctx();
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
                match open_lazy_block(&b, &ctx, &tenant, &dir, ulid).await {
                    Ok(Some(r)) => {
                        stats.downloaded += 1;
                        next.push(r);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(tenant = %tenant, block = %ulid, error = %e, "opening block lazily")
                    }
                }
            }
            for r in &have {
                if !next.iter().any(|n| Arc::ptr_eq(n, r)) {
                    stats.dropped += 1;
                    ctx.cache.drop_block(r.meta().ulid);
                    ctx.index_cache.drop_block(r.meta().ulid);
                    let _ = std::fs::remove_dir_all(r.dir());
                }
            }
            // Whatever else is in the tenant's cache directory (blocks
            // dropped while the store was down, interrupted downloads).
            let keep: HashSet<String> = next.iter().map(|r| r.meta().ulid.to_string()).collect();
            remove_others(&dir, &keep);
            next.sort_by_key(|b| (b.meta().min_time, b.meta().max_time, b.meta().ulid));
            stats.tenants += 1;
            stats.blocks += next.len();
            *entry.blocks.write() = next;
            self.tenants.write().insert(tenant.clone(), entry);
            seen.insert(tenant);
        }
        self.tenants.write().retain(|t, _| seen.contains(t));
        let keep: HashSet<String> = seen.iter().map(|t| t.as_str().to_string()).collect();
        remove_others(&self.cache, &keep);
        Ok(stats)
    }
}

/// Removes every entry of directory `dir` whose name is not in `keep`.
fn remove_others(dir: &Path, keep: &HashSet<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        if keep.contains(name.to_string_lossy().as_ref()) {
            continue;
        }
        let p = e.path();
        let _ = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
            _ => std::fs::remove_file(&p),
        };
    }
}

/// Builds the index header of the block's index object (`index_len`
/// bytes) at `path`: one ranged GET of the TOC, then one round for the
/// symbols and the label index. Returns the header's size.
async fn build_header(
    b: &Bucket,
    ctx: &lazy::FetchCtx,
    name: &Path,
    ulid: &str,
    index_len: u64,
    path: &Path,
) -> Result<u64> {
    let key = format!("{ulid}/{INDEX_FILENAME}");
    let toc_r = crate::block::toc_range(name, index_len)?;
    let toc = lazy::LazyIndex::read_async(b, ctx, name, &key, &[toc_r]).await?;
    let toc = toc.first().cloned().unwrap_or_default();
    let plan = crate::block::index_header_plan(name, &toc, index_len)?;
    let parts = lazy::LazyIndex::read_async(
        b,
        ctx,
        name,
        &key,
        &[plan.head_and_symbols.clone(), plan.labels.clone()],
    )
    .await?;
    let (Some(head), Some(labels)) = (parts.first(), parts.get(1)) else {
        return Err(crate::Error::Remote {
            message: format!("{}: index header parts not read", name.display()),
        });
    };
    let c = &ctx.counters;
    c.header_builds.fetch_add(1, Ordering::Relaxed);
    c.index_bytes_downloaded.fetch_add(
        (toc.len() + head.len() + labels.len()) as u64,
        Ordering::Relaxed,
    );
    Ok(crate::block::write_header(
        path, index_len, &toc, head, labels,
    )?)
}

/// Opens block `ulid` lazily: `meta.json`, `tombstones` and the index
/// header from the local cache under `dir`, downloaded (built) first when
/// missing; one LIST of the block's objects (the index's size) and one of
/// its chunk segments. A header that fails its checks is rebuilt once.
/// `None` when the bucket has no complete block (no `meta.json` or no
/// `index`: an upload in progress or a deletion).
async fn open_lazy_block(
    b: &Bucket,
    ctx: &Arc<lazy::FetchCtx>,
    tenant: &TenantId,
    dir: &Path,
    ulid: &str,
) -> Result<Option<Arc<BlockReader>>> {
    let d = dir.join(ulid);
    let io = |path: &Path, source| crate::Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let objects = b.list_sizes(ulid).await?;
    let Some(index_len) = objects
        .iter()
        .find(|(n, _)| n == INDEX_FILENAME)
        .map(|o| o.1)
    else {
        return Ok(None);
    };
    let name = PathBuf::from(format!("{tenant}/{ulid}/{INDEX_FILENAME}"));
    let mut built = false;
    if !d.join(META_FILENAME).exists() || !d.join(INDEX_HEADER_FILENAME).exists() {
        let tmp = dir.join(format!("{ulid}.download"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        for (name, needed) in [(META_FILENAME, true), (TOMBSTONES_FILENAME, false)] {
            let path = tmp.join(name);
            let there = b.download_file(&format!("{ulid}/{name}"), &path).await?;
            if there {
                let n = std::fs::metadata(&path).map_or(0, |m| m.len());
                ctx.counters
                    .index_bytes_downloaded
                    .fetch_add(n, Ordering::Relaxed);
            } else if needed {
                let _ = std::fs::remove_dir_all(&tmp);
                return Ok(None);
            }
        }
        let built_at = tmp.join(INDEX_HEADER_FILENAME);
        if let Err(e) = build_header(b, ctx, &name, ulid, index_len, &built_at).await {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        built = true;
        let _ = std::fs::remove_dir_all(&d);
        std::fs::rename(&tmp, &d).map_err(|e| io(&d, e))?;
    }
    // A cache written by a store that downloaded whole indexes or blocks.
    let _ = std::fs::remove_file(d.join(INDEX_FILENAME));
    let _ = std::fs::remove_dir_all(d.join(CHUNKS_DIRNAME));
    let listed = b.list_sizes(&format!("{ulid}/{CHUNKS_DIRNAME}")).await?;
    let mut sizes = Vec::new();
    for (name, size) in listed {
        if name.len() != 6 || !name.bytes().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if name != segment_name(sizes.len() as u32) {
            return Err(crate::Error::Index {
                message: format!(
                    "block {tenant}/{ulid}: chunk segment {name} in the bucket is out of sequence"
                ),
            });
        }
        sizes.push(size);
    }
    let id = ulid.parse::<Ulid>().map_err(|e| crate::Error::Index {
        message: format!("block {tenant}/{ulid}: {e}"),
    })?;
    let chunks: Arc<dyn crate::block::RemoteChunks> = Arc::new(lazy::LazyChunks::new(
        b.clone(),
        format!("{tenant}/{ulid}"),
        id,
        sizes,
        ctx.clone(),
    ));
    let index: Arc<dyn crate::block::RemoteIndex> = Arc::new(lazy::LazyIndex::new(
        b.clone(),
        format!("{tenant}/{ulid}"),
        id,
        index_len,
        ctx.clone(),
    ));
    match BlockReader::open_with_header(&d, index.clone(), chunks.clone()) {
        Ok(r) => Ok(Some(Arc::new(r))),
        Err(e) if !built => {
            // A damaged or truncated header on local disk: build it anew.
            warn!(tenant = %tenant, block = %ulid, error = %e, "index header unusable; rebuilding it");
            let h = d.join(INDEX_HEADER_FILENAME);
            let _ = std::fs::remove_file(&h);
            build_header(b, ctx, &name, ulid, index_len, &h).await?;
            Ok(Some(Arc::new(BlockReader::open_with_header(
                &d, index, chunks,
            )?)))
        }
        Err(e) => {
            let _ = std::fs::remove_file(d.join(INDEX_HEADER_FILENAME));
            Err(e.into())
        }
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

    /// Adds every series (labels in index order, samples cut into XOR
    /// chunks of `per_chunk`) to `w` and finishes it as a level-1 block.
    fn finish_xor_block<L: std::borrow::Borrow<Labels>>(
        mut w: BlockWriter,
        id: Ulid,
        series: impl IntoIterator<Item = (L, Vec<(i64, f64)>)>,
        per_chunk: usize,
    ) -> crate::block::BlockMeta {
        for (l, samples) in series {
            let chunks = crate::db::encode_chunks(samples.into_iter(), per_chunk);
            let inputs: Vec<ChunkInput<'_>> = chunks
                .iter()
                .map(|(mint, maxt, data)| {
                    ChunkInput::counted(*mint, *maxt, Encoding::Xor as u8, data)
                })
                .collect();
            w.add_series(l.borrow(), &inputs).unwrap();
        }
        w.finish(BlockCompaction {
            level: 1,
            sources: vec![id],
            parents: vec![],
            deletable: false,
        })
        .unwrap()
    }

    /// Tombstones the `(s label, from, to)` ranges in the block at `dir`,
    /// uploads it under tenant prefix `b` and lists it in the tenant index.
    async fn publish_tombstoned(
        b: &Bucket,
        dir: &Path,
        meta: &crate::block::BlockMeta,
        deleted: &[(&str, i64, i64)],
    ) {
        let r = BlockReader::open(dir).unwrap();
        let mut ts = crate::block::Tombstones::new();
        for &(s, lo, hi) in deleted {
            let ids = crate::index::select_postings(&r, &[Matcher::eq("s", s)]).unwrap();
            ts.add(ids[0], lo, hi);
        }
        crate::block::write_tombstones(dir, &ts).unwrap();
        b.upload_dir(&meta.ulid.to_string(), dir, &["meta.json"])
            .await
            .unwrap();
        let mut ix = bucket_index::read(b).await.unwrap().unwrap_or_default();
        ix.add(meta);
        bucket_index::write(b, &ix, BASE).await.unwrap();
    }

    /// Writes a level-1 block of `series` series with one sample a minute
    /// in `[min, max)` (value = series * 1e6 + t / STEP), uploads it under
    /// the tenant prefix and lists it in ingester `ing`'s index.
    async fn ingester_block(b: &Bucket, tmp: &Path, ing: &str, min: i64, max: i64, series: usize) {
        let id = Ulid::new();
        let dir = tmp.join(id.to_string());
        let w = BlockWriter::create(&dir, id, min, max).unwrap();
        let all = (0..series).map(|s| {
            let l = Labels::from_pairs([("__name__", "m".to_string()), ("s", format!("{s:03}"))]);
            let samples = (min / STEP..max / STEP)
                .map(|k| (k * STEP, (s as i64 * 1_000_000 + k) as f64))
                .collect();
            (l, samples)
        });
        let meta = finish_xor_block(w, id, all, 120);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

    /// Writes a block of `series` series (one sample a minute over
    /// `[BASE, BASE + 2h)`, chunks of 30 samples, segments of at most
    /// 4 KiB) with tombstones on a few series, uploads it under tenant
    /// prefix `b`, lists it in the tenant index; returns the local dir.
    async fn tombstoned_block(b: &Bucket, tmp: &Path, series: usize) -> PathBuf {
        let id = Ulid::new();
        let dir = tmp.join(id.to_string());
        let (min, max) = (BASE, BASE + 2 * H);
        let w = BlockWriter::create(&dir, id, min, max)
            .unwrap()
            .with_segment_size(4096);
        let all = (0..series).map(|s| {
            let l = Labels::from_pairs([
                ("__name__", "m".to_string()),
                ("s", format!("{s:03}")),
                ("x_odd", (s % 2).to_string()),
            ]);
            let samples = (min / STEP..max / STEP)
                .map(|k| {
                    (
                        k * STEP,
                        ((s as i64 * 7919 + k * 104_729) % 1_000_003) as f64 / 7.0,
                    )
                })
                .collect();
            (l, samples)
        });
        let meta = finish_xor_block(w, id, all, 30);
        // Delete a middle stretch of series 1 and all of series 2.
        publish_tombstoned(
            b,
            &dir,
            &meta,
            &[
                ("001", BASE + 20 * STEP, BASE + 50 * STEP),
                ("002", i64::MIN, i64::MAX),
            ],
        )
        .await;
        dir
    }

    type Dump = Vec<(String, Vec<(i64, f64)>)>;

    fn dump(series: Vec<Series>, mint: i64, maxt: i64) -> Dump {
        series
            .into_iter()
            .map(|s| (s.labels.to_string(), s.iter(mint, maxt).collect()))
            .collect()
    }

    fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                files_under(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lazy_blocks_answer_like_local_ones_without_chunk_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Bucket::local(&tmp.path().join("bucket")).unwrap();
        let t = TenantId::new("lazy").unwrap();
        let b = root.with_prefix(t.as_str());
        let dir = tombstoned_block(&b, &tmp.path().join("src"), 40).await;
        let local = BlockReader::open(&dir).unwrap();
        assert!(local.num_segments() > 3, "{}", local.num_segments());
        let cache = tmp.path().join("cache");
        let store = BucketStore::new(root.clone(), &cache).with_chunk_cache_bytes(1 << 20);
        let s = store.sync().await.unwrap();
        assert_eq!((s.blocks, s.downloaded), (1, 1));
        let st = store.tenant(&t).unwrap();
        let m0 = store.metrics();
        assert_eq!(m0.chunk_bytes_fetched, 0, "opening reads no chunk");
        assert_eq!(m0.index_header_builds, 1);
        assert!(m0.index_bytes_downloaded > 0);

        // Only meta.json, the index header and tombstones are on disk.
        let mut files = Vec::new();
        files_under(&cache, &mut files);
        let mut names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["index-header", "meta.json", "tombstones"],
            "{files:?}"
        );

        let ranges = [
            (i64::MIN, i64::MAX),
            (BASE, BASE + 2 * H),
            (BASE + 25 * STEP, BASE + 26 * STEP),
            (BASE + 59 * STEP, BASE + 61 * STEP),
            (BASE + 2 * H - 1, BASE + 3 * H),
            (BASE + 3 * H, BASE + 4 * H),
        ];
        let matchers = [
            vec![Matcher::eq("__name__", "m")],
            vec![Matcher::eq("s", "001")],
            vec![Matcher::eq("s", "002")],
            vec![
                Matcher::eq("x_odd", "1"),
                Matcher::new(stratus_model::MatchType::RegexMatch, "s", "00.").unwrap(),
            ],
            vec![Matcher::new(stratus_model::MatchType::NotEqual, "x_odd", "1").unwrap()],
            vec![Matcher::eq("s", "nope")],
        ];
        for (mint, maxt) in ranges {
            for ms in &matchers {
                let want = dump(
                    merge_series(vec![select_block(&local, ms, mint, maxt, false).unwrap()]),
                    mint,
                    maxt,
                );
                let got = dump(
                    st.select(ms, &SelectHints::range(mint, maxt)).unwrap(),
                    mint,
                    maxt,
                );
                assert_eq!(got, want, "{ms:?} [{mint}, {maxt}]");
                let labels =
                    |v: &[Series]| v.iter().map(|s| s.labels.to_string()).collect::<Vec<_>>();
                let hints = SelectHints {
                    labels_only: true,
                    ..SelectHints::range(mint, maxt)
                };
                assert_eq!(
                    labels(&st.select(ms, &hints).unwrap()),
                    labels(&merge_series(vec![
                        select_block(&local, ms, mint, maxt, true).unwrap()
                    ])),
                );
            }
        }
        // Tombstones applied: series 002 is gone, 001 has a hole.
        let all = dump(
            st.select(
                &[Matcher::eq("__name__", "m")],
                &SelectHints::range(i64::MIN, i64::MAX),
            )
            .unwrap(),
            i64::MIN,
            i64::MAX,
        );
        assert_eq!(all.len(), 39);
        assert_eq!(all[1].1.len(), 120 - 31);

        // One narrow series: a few small GETs, far below the segments.
        let seg_bytes: u64 = std::fs::read_dir(dir.join("chunks"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        let before = store.metrics();
        let fresh = BucketStore::new(root.clone(), &tmp.path().join("cache2"));
        fresh.sync().await.unwrap();
        let ft = fresh.tenant(&t).unwrap();
        let got = ft
            .select(
                &[Matcher::eq("s", "007")],
                &SelectHints::range(i64::MIN, i64::MAX),
            )
            .unwrap();
        assert_eq!(dump(got, i64::MIN, i64::MAX)[0].1.len(), 120);
        let m = fresh.metrics();
        assert!(
            m.chunk_bytes_fetched > 0 && m.chunk_bytes_fetched * 4 < seg_bytes,
            "{m:?} of {seg_bytes}"
        );
        // The series' 4 chunks in one coalesced GET per segment it spans.
        assert!(m.chunk_gets <= 2, "{m:?}");
        assert_eq!((m.chunk_cache_misses, m.chunk_cache_hits), (4, 0));
        // Again: all from the cache.
        let _ = ft
            .select(
                &[Matcher::eq("s", "007")],
                &SelectHints::range(i64::MIN, i64::MAX),
            )
            .unwrap();
        let m2 = fresh.metrics();
        assert_eq!(
            (m2.chunk_bytes_fetched, m2.chunk_cache_hits),
            (m.chunk_bytes_fetched, 4)
        );
        // The production path: select on the blocking pool.
        let ft2 = ft.clone();
        let via_pool = tokio::task::spawn_blocking(move || {
            ft2.select(
                &[Matcher::eq("s", "007")],
                &SelectHints::range(i64::MIN, i64::MAX),
            )
            .map(|v| v.len())
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(via_pool, 1);
        // The first store's cache stayed within its budget.
        assert!(
            before.chunk_cache_bytes <= 1 << 20 && before.chunk_cache_items > 0,
            "{before:?}"
        );
        println!(
            "block: index {} B, chunk segments {seg_bytes} B; one series read {} B in {} GET(s); \
             the whole block (every select above) read {} B",
            local.index_size(),
            m.chunk_bytes_fetched,
            m.chunk_gets,
            before.chunk_bytes_fetched
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_chunk_cache_stays_within_budget() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Bucket::memory();
        let t = TenantId::new("small").unwrap();
        let b = root.with_prefix(t.as_str());
        let dir = tombstoned_block(&b, &tmp.path().join("src"), 30).await;
        let local = BlockReader::open(&dir).unwrap();
        let budget = 2_000;
        let store =
            BucketStore::new(root, &tmp.path().join("cache")).with_chunk_cache_bytes(budget);
        store.sync().await.unwrap();
        let st = store.tenant(&t).unwrap();
        for s in 0..30 {
            let ms = [Matcher::eq("s", format!("{s:03}"))];
            let h = SelectHints::range(i64::MIN, i64::MAX);
            let want = dump(
                merge_series(vec![
                    select_block(&local, &ms, i64::MIN, i64::MAX, false).unwrap(),
                ]),
                i64::MIN,
                i64::MAX,
            );
            assert_eq!(dump(st.select(&ms, &h).unwrap(), i64::MIN, i64::MAX), want);
            let m = store.metrics();
            assert!(m.chunk_cache_bytes <= budget, "{m:?}");
        }
        assert!(store.metrics().chunk_cache_items > 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corrupt_short_or_missing_chunks_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let broot = tmp.path().join("bucket");
        let root = Bucket::local(&broot).unwrap();
        let t = TenantId::new("bad").unwrap();
        let b = root.with_prefix(t.as_str());
        let dir = tombstoned_block(&b, &tmp.path().join("src"), 10).await;
        let ulid = dir.file_name().unwrap().to_string_lossy().into_owned();
        let store =
            BucketStore::new(root.clone(), &tmp.path().join("cache")).with_chunk_cache_bytes(0);
        store.sync().await.unwrap();
        let st = store.tenant(&t).unwrap();
        let all = [Matcher::eq("__name__", "m")];
        let h = SelectHints::range(i64::MIN, i64::MAX);
        assert_eq!(st.select(&all, &h).unwrap().len(), 9);
        let seg = broot.join("bad").join(&ulid).join("chunks/000001");
        let good = std::fs::read(&seg).unwrap();
        // A flipped byte: CRC mismatch.
        let mut bad = good.clone();
        bad[40] ^= 0xff;
        std::fs::write(&seg, &bad).unwrap();
        let e = st.select(&all, &h).unwrap_err().to_string();
        assert!(e.contains("checksum") || e.contains("corrupt"), "{e}");
        assert!(e.contains("chunks/000001"), "{e}");
        // Truncated after the listing: the ranged read fails or is short.
        std::fs::write(&seg, &good[..good.len() / 2]).unwrap();
        assert!(st.select(&all, &h).is_err());
        // Gone (a bucket error).
        std::fs::remove_file(&seg).unwrap();
        let e = st.select(&all, &h).unwrap_err().to_string();
        assert!(e.contains("object store"), "{e}");
        assert!(store.metrics().chunk_fetch_failures >= 3);
        // Back: answers again.
        std::fs::write(&seg, &good).unwrap();
        assert_eq!(st.select(&all, &h).unwrap().len(), 9);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_blocks_and_strays_leave_the_cache_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Bucket::memory();
        let t = TenantId::new("drop").unwrap();
        let b = root.with_prefix(t.as_str());
        let d1 = tombstoned_block(&b, &tmp.path().join("src"), 5).await;
        let d2 = tombstoned_block(&b, &tmp.path().join("src"), 6).await;
        let cache = tmp.path().join("cache");
        std::fs::create_dir_all(cache.join("gone-tenant/01ARZ3NDEKTSV4RRFFQ69G5FAV")).unwrap();
        std::fs::create_dir_all(cache.join("drop/01ARZ3NDEKTSV4RRFFQ69G5FAV.download")).unwrap();
        std::fs::write(cache.join("drop/stray"), b"x").unwrap();
        let store = BucketStore::new(root.clone(), &cache);
        store.sync().await.unwrap();
        let listing = |p: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let name = |d: &Path| d.file_name().unwrap().to_string_lossy().into_owned();
        let mut want = vec![name(&d1), name(&d2)];
        want.sort();
        assert_eq!(listing(&cache), ["drop"]);
        assert_eq!(listing(&cache.join("drop")), want);
        let m = store.metrics();
        let header = |d: &Path| {
            std::fs::metadata(cache.join("drop").join(name(d)).join(INDEX_HEADER_FILENAME))
                .unwrap()
                .len()
        };
        assert_eq!(m.index_cache_bytes, header(&d1) + header(&d2));
        assert!(header(&d1) < BlockReader::open(&d1).unwrap().index_size());
        // Mark d1 deleted: its cache files go at the next sync.
        let mut index = bucket_index::read(&b).await.unwrap().unwrap();
        index.mark_deleted(&name(&d1), BASE);
        bucket_index::write(&b, &index, BASE).await.unwrap();
        let s = store.sync().await.unwrap();
        assert_eq!((s.blocks, s.dropped), (1, 1));
        assert_eq!(listing(&cache.join("drop")), [name(&d2)]);
        // A restart reuses the cached index (nothing downloaded).
        let again = BucketStore::new(root, &cache);
        again.sync().await.unwrap();
        assert_eq!(again.metrics().index_bytes_downloaded, 0);
        assert_eq!(
            again
                .tenant(&t)
                .unwrap()
                .select(
                    &[Matcher::eq("__name__", "m")],
                    &SelectHints::range(i64::MIN, i64::MAX)
                )
                .unwrap()
                .len(),
            5
        );
    }

    /// Writes a block of `series` series with many label values (a unique
    /// `s`, `pod` shared by three, `job` of 7, `opt` on a third of them;
    /// one sample every 10 minutes over `[BASE, BASE + 2h)`) and
    /// tombstones on a few, uploads it under tenant prefix `b` and lists
    /// it in the tenant index; returns the local dir.
    async fn rich_block(b: &Bucket, tmp: &Path, series: usize) -> PathBuf {
        let id = Ulid::new();
        let dir = tmp.join(id.to_string());
        let (min, max) = (BASE, BASE + 2 * H);
        let w = BlockWriter::create(&dir, id, min, max).unwrap();
        let mut all: Vec<Labels> = (0..series)
            .map(|s| {
                let mut p = vec![
                    ("__name__", format!("metric_{}", s % 5)),
                    ("s", format!("{s:06}")),
                    ("job", format!("job-{}", s % 7)),
                    ("pod", format!("pod-{:05}", s / 3)),
                ];
                if s % 3 == 0 {
                    p.push(("opt", format!("o{}", s % 11)));
                }
                Labels::from_pairs(p)
            })
            .collect();
        all.sort();
        let with_samples = all.into_iter().enumerate().map(|(k, l)| {
            let samples = (0..12)
                .map(|i| (min + i * 10 * STEP, (k as i64 * 31 + i) as f64))
                .collect();
            (l, samples)
        });
        let meta = finish_xor_block(w, id, with_samples, 6);
        publish_tombstoned(
            b,
            &dir,
            &meta,
            &[
                ("000010", BASE + 20 * STEP, BASE + 50 * STEP),
                ("000011", i64::MIN, i64::MAX),
                ("000100", BASE, BASE + 30 * STEP),
            ],
        )
        .await;
        dir
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn index_header_answers_equal_the_whole_index() {
        use stratus_model::MatchType::{Equal, NotEqual, RegexMatch, RegexNoMatch};
        let tmp = tempfile::tempdir().unwrap();
        let root = Bucket::memory();
        let t = TenantId::new("hdr").unwrap();
        let b = root.with_prefix(t.as_str());
        let dir = rich_block(&b, &tmp.path().join("src"), 3000).await;
        let local = BlockReader::open(&dir).unwrap();
        // A small index cache: entries come and go while queries run.
        let store = BucketStore::new(root.clone(), &tmp.path().join("cache"))
            .with_index_cache_bytes(64 << 10);
        store.sync().await.unwrap();
        let st = store.tenant(&t).unwrap();
        let m = |t, n: &str, v: &str| Matcher::new(t, n, v).unwrap();
        let sets = [
            vec![m(Equal, "__name__", "metric_1")],
            vec![m(Equal, "s", "000011")],
            vec![m(Equal, "s", "000010")],
            vec![m(Equal, "job", "job-3"), m(NotEqual, "opt", "o3")],
            vec![m(NotEqual, "job", "job-3")],
            vec![m(Equal, "opt", ""), m(Equal, "__name__", "metric_2")],
            vec![m(RegexMatch, "pod", "pod-0(0|1).*")],
            vec![
                m(RegexMatch, "s", "0001.."),
                m(RegexNoMatch, "job", "job-[0-3]"),
            ],
            vec![
                m(RegexNoMatch, "opt", "o1.*"),
                m(RegexMatch, "job", "job-1|job-5"),
            ],
            vec![
                m(RegexMatch, "opt", ".+"),
                m(NotEqual, "__name__", "metric_0"),
            ],
            vec![m(RegexMatch, "__name__", ".*")],
            vec![m(Equal, "job", "nope")],
            vec![m(RegexMatch, "nope", ".+")],
        ];
        let ranges = [
            (i64::MIN, i64::MAX),
            (BASE + 25 * STEP, BASE + 45 * STEP),
            (BASE + 3 * H, BASE + 4 * H),
        ];
        let labels = |v: &[Series]| v.iter().map(|s| s.labels.to_string()).collect::<Vec<_>>();
        for (mint, maxt) in ranges {
            for ms in &sets {
                let want = merge_series(vec![select_block(&local, ms, mint, maxt, false).unwrap()]);
                let got = st.select(ms, &SelectHints::range(mint, maxt)).unwrap();
                assert_eq!(dump(got, mint, maxt), dump(want, mint, maxt), "{ms:?}");
                let hints = SelectHints {
                    labels_only: true,
                    ..SelectHints::range(mint, maxt)
                };
                assert_eq!(
                    labels(&st.select(ms, &hints).unwrap()),
                    labels(&select_block(&local, ms, mint, maxt, true).unwrap()),
                    "{ms:?}"
                );
                let lv = st.label_values("pod", ms, mint, maxt).unwrap();
                let mut want: Vec<String> = select_block(&local, ms, mint, maxt, true)
                    .unwrap()
                    .iter()
                    .filter_map(|s| s.labels.get("pod").map(str::to_string))
                    .collect();
                want.sort();
                want.dedup();
                assert_eq!(lv, want, "{ms:?}");
            }
        }
        let (a, z) = (i64::MIN, i64::MAX);
        assert_eq!(
            st.label_names(&[], a, z).unwrap(),
            local.label_names().unwrap()
        );
        assert_eq!(
            st.label_values("s", &[], a, z).unwrap(),
            local.label_values("s").unwrap()
        );
        let mt = store.metrics();
        assert!(mt.index_cache_used_bytes <= 64 << 10, "{mt:?}");
        assert!(
            mt.index_cache_hits > 0 && mt.index_cache_misses > 0,
            "{mt:?}"
        );
        assert_eq!(mt.index_header_builds, 1);
        assert_eq!(mt.index_fetch_failures, 0);
        // The header on disk is a fraction of the index.
        assert!(mt.index_cache_bytes * 3 < local.index_size(), "{mt:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn damaged_headers_are_rebuilt_and_deleted_blocks_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let broot = tmp.path().join("bucket");
        let root = Bucket::local(&broot).unwrap();
        let t = TenantId::new("dmg").unwrap();
        let b = root.with_prefix(t.as_str());
        let dir = rich_block(&b, &tmp.path().join("src"), 300).await;
        let ulid = dir.file_name().unwrap().to_string_lossy().into_owned();
        let cache = tmp.path().join("cache");
        let header = cache.join("dmg").join(&ulid).join(INDEX_HEADER_FILENAME);
        let all = [Matcher::eq("job", "job-2")];
        let h = SelectHints::range(i64::MIN, i64::MAX);
        let count = |store: &BucketStore| store.tenant(&t).unwrap().select(&all, &h).unwrap().len();
        let store = BucketStore::new(root.clone(), &cache);
        store.sync().await.unwrap();
        let want = count(&store);
        assert!(want > 30, "{want}");
        let good = std::fs::read(&header).unwrap();
        // A flipped byte, then a truncation: the next start rebuilds.
        let mut bad = good.clone();
        bad[good.len() / 2] ^= 1;
        for damaged in [bad, good[..good.len() - 7].to_vec()] {
            std::fs::write(&header, &damaged).unwrap();
            let again = BucketStore::new(root.clone(), &cache);
            let s = again.sync().await.unwrap();
            assert_eq!(s.blocks, 1);
            assert_eq!(again.metrics().index_header_builds, 1);
            assert_eq!(std::fs::read(&header).unwrap(), good);
            assert_eq!(count(&again), want);
        }
        // An intact header is reused.
        let again = BucketStore::new(root.clone(), &cache).with_index_cache_bytes(0);
        again.sync().await.unwrap();
        assert_eq!(again.metrics().index_header_builds, 0);
        // The block deleted from the bucket under a running store: a clear
        // error naming the object, no panic.
        std::fs::remove_dir_all(broot.join("dmg").join(&ulid)).unwrap();
        let e = again
            .tenant(&t)
            .unwrap()
            .select(&[Matcher::eq("job", "job-4")], &h)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("gone from the bucket") && e.contains(&ulid),
            "{e}"
        );
        assert!(again.metrics().index_fetch_failures >= 1);
        // A store starting now skips it (no index object: not complete).
        let fresh = BucketStore::new(root, &tmp.path().join("cache2"));
        assert_eq!(fresh.sync().await.unwrap().blocks, 0);
    }

    /// Figures for BENCHMARKS.md: a block of ~100k series (override with
    /// `STRATUS_BENCH_SERIES`) in a local-filesystem bucket; first query
    /// through an index header vs. through the whole downloaded index.
    /// `cargo test -p stratus-tsdb --lib index_header_figures -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "benchmark: prints figures"]
    async fn index_header_figures() {
        use std::time::Instant;
        let n: usize = std::env::var("STRATUS_BENCH_SERIES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        let tmp = tempfile::tempdir().unwrap();
        let root = Bucket::local(&tmp.path().join("bucket")).unwrap();
        let t = TenantId::new("bench").unwrap();
        let b = root.with_prefix(t.as_str());
        let id = Ulid::new();
        let dir = tmp.path().join("src").join(id.to_string());
        let (min, max) = (BASE, BASE + 2 * H);
        let w = BlockWriter::create(&dir, id, min, max).unwrap();
        let mut all: Vec<Labels> = (0..n)
            .map(|i| {
                Labels::from_pairs([
                    ("__name__", format!("metric_{:03}", i % 100)),
                    ("instance", format!("host-{:04}:9100", i % 1000)),
                    ("job", format!("job-{:02}", i % 20)),
                    ("pod", format!("pod-{:06}", i / 2)),
                ])
            })
            .collect();
        all.sort();
        let with_samples = all.into_iter().enumerate().map(|(k, l)| {
            let samples = (0..12)
                .map(|i| (min + i * 10 * STEP, (k as i64 + i) as f64))
                .collect();
            (l, samples)
        });
        let meta = finish_xor_block(w, id, with_samples, 120);
        b.upload_dir(&id.to_string(), &dir, &["meta.json"])
            .await
            .unwrap();
        let mut ix = BucketIndex::default();
        ix.add(&meta);
        bucket_index::write(&b, &ix, BASE).await.unwrap();
        let index_size = std::fs::metadata(dir.join(INDEX_FILENAME)).unwrap().len();
        let queries: [(&str, Vec<Matcher>); 2] = [
            (
                "{__name__=\"metric_007\", job=\"job-07\"} (1000 series)",
                vec![
                    Matcher::eq("__name__", "metric_007"),
                    Matcher::eq("job", "job-07"),
                ],
            ),
            (
                "{pod=~\"pod-0123.*\"} (200 series)",
                vec![
                    Matcher::new(stratus_model::MatchType::RegexMatch, "pod", "pod-0123.*")
                        .unwrap(),
                ],
            ),
        ];
        let disk = |d: &Path| {
            let mut f = Vec::new();
            files_under(d, &mut f);
            f.iter()
                .map(|p| std::fs::metadata(p).unwrap().len())
                .sum::<u64>()
        };
        println!("block: {n} series, index {index_size} B");
        for (q, ms) in &queries {
            // Index header.
            let cache = tmp.path().join("cache-hdr");
            let _ = std::fs::remove_dir_all(&cache);
            let store = BucketStore::new(root.clone(), &cache);
            let t0 = Instant::now();
            store.sync().await.unwrap();
            let open = t0.elapsed();
            let st = store.tenant(&t).unwrap();
            let t1 = Instant::now();
            let got = st
                .select(ms, &SelectHints::range(i64::MIN, i64::MAX))
                .unwrap();
            let first = t1.elapsed();
            let m = store.metrics();
            let hdr = (
                got.len(),
                open,
                first,
                m.index_bytes_fetched,
                m.index_gets,
                m.chunk_bytes_fetched,
                disk(&cache),
            );
            // The whole index downloaded (the store before index headers).
            let cache = tmp.path().join("cache-full");
            let _ = std::fs::remove_dir_all(&cache);
            // Its own chunk cache, as cold as the header store's was.
            let ctx = Arc::new(lazy::FetchCtx::new(
                DEFAULT_CHUNK_CACHE_BYTES,
                0,
                tokio::runtime::Handle::current(),
            ));
            let t0 = Instant::now();
            let d = cache.join(id.to_string());
            std::fs::create_dir_all(&d).unwrap();
            for f in [META_FILENAME, INDEX_FILENAME] {
                b.download_file(&format!("{id}/{f}"), &d.join(f))
                    .await
                    .unwrap();
            }
            let sizes: Vec<u64> = b
                .list_sizes(&format!("{id}/{CHUNKS_DIRNAME}"))
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.1)
                .collect();
            let chunks =
                lazy::LazyChunks::new(b.clone(), format!("bench/{id}"), id, sizes, ctx.clone());
            let r = BlockReader::open_lazy(&d, Arc::new(chunks)).unwrap();
            let open_full = t0.elapsed();
            let t1 = Instant::now();
            let want = select_block(&r, ms, i64::MIN, i64::MAX, false).unwrap();
            let first_full = t1.elapsed();
            let chunk_full = ctx.counters.chunk_bytes_fetched.load(Ordering::Relaxed);
            assert_eq!(
                dump(got, i64::MIN, i64::MAX),
                dump(want, i64::MIN, i64::MAX)
            );
            println!("query {q}: {} series", hdr.0);
            println!(
                "  index header: open {:?}, first query {:?}; index bytes read {} in {} GETs \
                 (header build included), chunk bytes {}; local disk {} B",
                hdr.1, hdr.2, hdr.3, hdr.4, hdr.5, hdr.6
            );
            println!(
                "  whole index:  open {open_full:?}, first query {first_full:?}; index bytes \
                 downloaded {index_size}, chunk bytes {chunk_full}; local disk {} B",
                disk(&cache)
            );
        }
    }
}
