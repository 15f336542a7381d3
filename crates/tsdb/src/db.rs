//! One tenant's database: WAL + head + blocks in an object store.
//!
//! Write path: [`Db::append`] validates each sample against its series
//! (out-of-order window, duplicates, future timestamps), applies accepted
//! samples to the head and then logs them to the WAL in one write; it
//! returns only after that write, per the WAL's fsync policy, so an
//! acknowledged sample survives a crash. Series definitions reach the WAL
//! before or with the first samples that reference them.
//!
//! Maintenance ([`Db::maintain`]): when the head spans more than 1.5 block
//! ranges, the oldest whole range is cut into a block (one per range that
//! holds data, so late out-of-order samples land in their own, overlapping
//! block), uploaded through the object store (`meta.json` last), opened
//! for queries, and only then removed from the head; the WAL is then
//! checkpointed so replay time stays bounded. Compaction and retention run
//! in the same loop (see [`crate::compact`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use snafu::ResultExt;
use stratus_model::{Exemplar, FloatHistogram, Histogram, Labels, Matcher, Sample};
use stratus_objstore::Bucket;
use tracing::{info, warn};
use ulid::Ulid;

use crate::block::{BlockCompaction, BlockMeta, BlockReader, BlockWriter, ChunkInput, Tombstones};
use crate::bucket_index::BucketIndex;
use crate::chunks::XorAppender;
use crate::error::{RejectReason, Result};
use crate::head::{
    Appended, Extracted, Head, HeadConfig, HeadMemory, HistRef, Reject, SeriesArc, is_deleted,
    series_hash, window_start,
};
use crate::index::select_postings;
use crate::querier::{Part, Queryable, SelectHints, Series, merge_series};
use crate::series_labels::SeriesLabels;
use crate::wal::{
    RefFloatHistogram, RefHistogram, RefSample, RefSeries, RefTombstone, ReplayOptions, Wal,
    WalConfig,
};

/// How many series ahead of the one being appended [`Db::append`] has
/// the CPU fetch the lookup's table slot, then (the slot having arrived)
/// the series itself, then (the series having arrived) its open chunk's
/// buffer; the last stage hands the series it found to the append.
/// Memory latency is some hundred ns and one series' append a few
/// hundred, so a few positions cover it. Fewer are better than more: each
/// series in flight holds several of the core's few line fill buffers,
/// and at 1 M series 12/6/3 cost 5–7 % less CPU than 16/8/4 and 24/12/6
/// (BENCHMARKS.md).
const PREFETCH_SLOT_AHEAD: usize = 12;
const PREFETCH_SERIES_AHEAD: usize = 6;
const PREFETCH_CHUNK_AHEAD: usize = 3;
/// Series found by the last prefetch stage and not yet appended to.
const AHEAD_SLOTS: usize = PREFETCH_CHUNK_AHEAD + 1;

/// Settings of one tenant database.
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub head: HeadConfig,
    pub wal: WalConfig,
    /// Repair a WAL corrupted in the middle (drop the damaged part) instead
    /// of refusing to open. Default false.
    pub wal_repair: bool,
    /// Samples more than this far ahead of the wall clock are rejected.
    pub max_future: Duration,
    /// Blocks entirely older than this (by wall clock) are deleted.
    /// `None` keeps data forever.
    pub retention: Option<Duration>,
    /// Compaction levels: block ranges in ms, each a multiple of the
    /// previous (default 2h, 12h, 24h, 7d... capped by retention).
    pub compaction_ranges: Vec<i64>,
    /// How often sealed head chunks are re-encoded in the compact encoding
    /// to save memory (default 2 minutes).
    pub head_chunk_compaction_interval: Duration,
    /// Move sealed head chunks out of the heap into head chunk files
    /// (`<dir>/chunks_head/`) at each head chunk compaction; they are read
    /// back with positional reads and live in the page cache. Default
    /// true; false keeps them in memory.
    pub head_chunk_files: bool,
    /// Size at which a new head chunk file is started (default 64 MiB;
    /// 4 KiB to 1 GiB).
    pub head_chunk_segment_bytes: u64,
    /// Exemplars kept in memory (all series together; 0 disables
    /// exemplar storage). Default 100k.
    pub max_exemplars: usize,
    /// Metric families whose metadata is kept in memory. Default 100k.
    pub max_metadata: usize,
    /// Cluster ingester mode on a shared bucket: this uploader's id.
    /// Blocks carry it in `meta.json` (`thanos.labels.__ingester_id__`),
    /// the database keeps its own index
    /// (`bucket-index.ingester-<id>.json`), does not compact and never
    /// deletes objects in the bucket (the compactor owns that). `None`
    /// (default): the database is the only writer of its prefix.
    pub uploader: Option<String>,
}

impl Default for DbConfig {
    fn default() -> Self {
        let h = 3600 * 1000;
        Self {
            head: HeadConfig::default(),
            wal: WalConfig::default(),
            wal_repair: false,
            max_future: Duration::from_secs(600),
            retention: None,
            compaction_ranges: vec![2 * h, 12 * h, 24 * h, 7 * 24 * h],
            head_chunk_compaction_interval: Duration::from_secs(120),
            head_chunk_files: true,
            head_chunk_segment_bytes: crate::head::chunk_files::DEFAULT_SEGMENT_BYTES,
            max_exemplars: crate::exemplars::DEFAULT_MAX_EXEMPLARS,
            max_metadata: crate::metadata::DEFAULT_MAX_METADATA,
            uploader: None,
        }
    }
}

/// Samples of one series to append. The labels are a `&Labels` by
/// default, or any [`SeriesLabels`] (e.g. pairs borrowed from a request):
/// the head looks the series up without building an owned label set.
#[derive(Debug, Clone, Copy)]
pub struct SeriesSamples<'a, L = &'a Labels> {
    /// Valid label set (sorted, unique names, no empty values, has a name).
    pub labels: L,
    /// Samples, normally in time order.
    pub samples: &'a [Sample],
}

/// Native histogram samples of one series to append (integer and float
/// histograms may both be given; each list in time order).
#[derive(Debug, Clone, Copy)]
pub struct SeriesHistograms<'a> {
    /// Valid label set (as for [`SeriesSamples`]).
    pub labels: &'a Labels,
    /// Integer-count histograms.
    pub histograms: &'a [(i64, Histogram)],
    /// Float-count histograms.
    pub float_histograms: &'a [(i64, FloatHistogram)],
}

/// Start ("created") timestamps of the samples of an append, parallel to
/// its lists: `samples[i][j]` belongs to `batch[i].samples[j]`,
/// `histograms[i][j]` to `hists[i].histograms[j]` and
/// `float_histograms[i][j]` to `hists[i].float_histograms[j]`. Missing
/// entries and 0 mean unknown. Series given start timestamps store them
/// in chunks with a start-timestamp column (see `docs/format/chunks.md`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StartTimestamps<'a> {
    pub samples: &'a [&'a [i64]],
    pub histograms: &'a [&'a [i64]],
    pub float_histograms: &'a [&'a [i64]],
}

fn st_at(list: &[&[i64]], i: usize, j: usize) -> i64 {
    list.get(i).and_then(|v| v.get(j)).copied().unwrap_or(0)
}

/// A sample that was refused.
#[derive(Debug, Clone)]
pub struct SampleError {
    pub labels: Labels,
    pub t: i64,
    pub reason: RejectReason,
}

impl std::fmt::Display for SampleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} for series {} at timestamp {}",
            self.reason.as_str(),
            self.labels,
            self.t
        )
    }
}

/// Outcome of [`Db::append`]: what was stored and what was refused.
#[derive(Debug, Default)]
pub struct AppendReport {
    /// Float samples stored (exact duplicates count as stored).
    pub accepted: u64,
    /// Native histogram samples stored (exact duplicates count as stored).
    pub histograms_accepted: u64,
    /// Refused samples (capped at [`AppendReport::MAX_ERRORS`] entries).
    pub errors: Vec<SampleError>,
    /// Number of refused samples (all of them).
    pub rejected: u64,
    /// Series created by this append.
    pub new_series: u64,
    /// Refused samples that would have created a series over a series
    /// limit (included in `rejected`).
    pub series_limited: u64,
}

impl AppendReport {
    /// Refusals kept with details.
    pub const MAX_ERRORS: usize = 32;

    fn reject(&mut self, labels: &(impl SeriesLabels + ?Sized), t: i64, reason: RejectReason) {
        self.rejected += 1;
        if matches!(
            reason,
            RejectReason::MaxSeries | RejectReason::MaxSeriesPerMetric
        ) {
            self.series_limited += 1;
        }
        if self.errors.len() < Self::MAX_ERRORS {
            self.errors.push(SampleError {
                labels: labels.to_labels(),
                t,
                reason,
            });
        }
    }
}

/// Counters of a database (cumulative since open).
#[derive(Debug, Default)]
struct Counters {
    samples_appended: AtomicU64,
    samples_rejected: AtomicU64,
    blocks_cut: AtomicU64,
    compactions: AtomicU64,
}

/// A point-in-time view of a database's size.
#[derive(Debug, Clone, Default)]
pub struct DbStats {
    pub head_series: u64,
    pub head_min_time: i64,
    pub head_max_time: i64,
    pub head_bytes: u64,
    /// Bytes in the head chunk files (page cache, not heap).
    pub head_chunk_file_bytes: u64,
    pub blocks: usize,
    pub block_samples: u64,
    pub block_bytes: u64,
    pub wal_bytes: u64,
    pub samples_appended: u64,
    pub samples_rejected: u64,
    pub blocks_cut: u64,
    pub compactions: u64,
}

/// One tenant's time-series database.
#[derive(Debug)]
pub struct Db {
    dir: PathBuf,
    cfg: DbConfig,
    pub(crate) head: Head,
    wal: Wal,
    pub(crate) bucket: Bucket,
    pub(crate) blocks: RwLock<Vec<Arc<BlockReader>>>,
    /// The bucket index as last written (changed under `maint`).
    bucket_index: Mutex<BucketIndex>,
    /// Its key under the tenant prefix.
    index_key: String,
    /// Serialises block cuts, compactions, retention and deletions.
    pub(crate) maint: tokio::sync::Mutex<()>,
    counters: Counters,
    last_used: Mutex<std::time::Instant>,
    last_chunk_compaction: Mutex<std::time::Instant>,
    /// Runtime-adjustable limits (per-tenant overrides).
    ooo_window: AtomicI64,
    /// Retention in ms; negative = keep forever.
    retention_ms: AtomicI64,
    /// Exemplars (memory only).
    exemplars: crate::exemplars::ExemplarStore,
    /// Metric family metadata (memory only).
    metadata: crate::metadata::MetadataStore,
}

fn retention_to_ms(r: Option<Duration>) -> i64 {
    r.map_or(-1, |d| d.as_millis().min(i64::MAX as u128) as i64)
}

/// Current wall-clock time in ms.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Db {
    /// Opens (or creates) the database in `dir` with blocks in `bucket`:
    /// loads blocks, replays the WAL, starts a new WAL segment.
    pub async fn open(dir: &Path, bucket: Bucket, cfg: DbConfig) -> Result<Db> {
        std::fs::create_dir_all(dir).context(crate::error::IoSnafu { path: dir })?;
        let cache = dir.join("blocks");
        let wip = dir.join("wip");
        if wip.exists() {
            std::fs::remove_dir_all(&wip).context(crate::error::IoSnafu { path: &wip })?;
        }
        let (blocks, bucket_index) = load_blocks(&bucket, &cache, cfg.uploader.as_deref()).await?;
        let chunks_dir = dir.join("chunks_head");
        let head = if cfg.head_chunk_files {
            let files = crate::head::chunk_files::ChunkFiles::open(
                &chunks_dir,
                cfg.head_chunk_segment_bytes,
            )?;
            Head::with_chunk_files(cfg.head.clone(), files)
        } else {
            crate::head::chunk_files::remove_leftovers(&chunks_dir)?;
            Head::new(cfg.head.clone())
        };
        if let Some(maxt) = blocks.iter().map(|b| b.meta().max_time).max() {
            head.set_min_valid(maxt);
        }
        let wal_dir = dir.join("wal");
        let started = std::time::Instant::now();
        let metadata = crate::metadata::MetadataStore::new(cfg.max_metadata);
        let exemplars = crate::exemplars::ExemplarStore::new(cfg.max_exemplars);
        let stats = {
            let head = &head;
            let metadata = &metadata;
            let exemplars = &exemplars;
            let mut pending_sts = std::collections::HashMap::new();
            crate::wal::replay(
                &wal_dir,
                &ReplayOptions {
                    repair: cfg.wal_repair,
                },
                &mut |rec| {
                    match rec {
                        crate::wal::Record::Metadata(m) => {
                            metadata.set_all(m.iter().map(|(n, md)| (n.as_str(), md)));
                        }
                        crate::wal::Record::Exemplars(e) => {
                            exemplars.add_all(e.iter().map(|(s, ex)| (s, ex.clone())));
                        }
                        rec => replay_record(head, rec, &mut pending_sts),
                    }
                    Ok(())
                },
            )?
        };
        if stats.records > 0 {
            info!(
                dir = %dir.display(),
                samples = stats.samples,
                series = stats.series,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "replayed WAL"
            );
        }
        let wal = Wal::open(&wal_dir, cfg.wal.clone())?;
        let ooo_window = AtomicI64::new(cfg.head.ooo_window);
        let retention_ms = AtomicI64::new(retention_to_ms(cfg.retention));
        let index_key = crate::bucket_index::key_for(cfg.uploader.as_deref());
        Ok(Db {
            exemplars,
            metadata,
            last_chunk_compaction: Mutex::new(std::time::Instant::now()),
            ooo_window,
            retention_ms,
            dir: dir.to_path_buf(),
            cfg,
            head,
            wal,
            bucket,
            blocks: RwLock::new(blocks),
            bucket_index: Mutex::new(bucket_index),
            index_key,
            maint: tokio::sync::Mutex::new(()),
            counters: Counters::default(),
            last_used: Mutex::new(std::time::Instant::now()),
        })
    }

    /// Changes the out-of-order window (ms) at runtime.
    pub fn set_ooo_window(&self, ms: i64) {
        self.ooo_window.store(ms.max(0), Ordering::Relaxed);
    }

    /// Sets the limits on new series (0 = unlimited): a sample that would
    /// create a series beyond them is refused with
    /// [`RejectReason::MaxSeries`] or [`RejectReason::MaxSeriesPerMetric`];
    /// existing series keep accepting samples.
    pub fn set_series_limits(&self, max_series: u64, max_per_metric: u64) {
        self.head.set_series_limits(max_series, max_per_metric);
    }

    /// Changes the retention at runtime (`None` keeps data forever).
    pub fn set_retention(&self, retention: Option<Duration>) {
        self.retention_ms
            .store(retention_to_ms(retention), Ordering::Relaxed);
    }

    /// The directory holding the WAL and block cache.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration.
    pub fn config(&self) -> &DbConfig {
        &self.cfg
    }

    /// The tenant's exemplar store (in memory; read it here, add through
    /// [`Db::add_exemplars`] so additions are logged).
    pub fn exemplars(&self) -> &crate::exemplars::ExemplarStore {
        &self.exemplars
    }

    /// Stores exemplars: the ones the store takes are logged to the WAL
    /// first (record type 6), so they survive a restart.
    pub fn add_exemplars<'a>(
        &self,
        items: impl IntoIterator<Item = (&'a Labels, Exemplar)>,
    ) -> Result<crate::exemplars::ExemplarReport> {
        Ok(self
            .exemplars
            .add_all_logged(items, |e| self.wal.log_exemplars(e))?)
    }

    /// The tenant's metric metadata (in memory).
    pub fn metadata(&self) -> &crate::metadata::MetadataStore {
        &self.metadata
    }

    /// Records metric family metadata: entries that are new or changed
    /// are logged to the WAL (so they survive a restart), then stored.
    pub fn set_metadata(&self, items: &[(String, crate::metadata::MetricMetadata)]) -> Result<()> {
        let changed = self.metadata.changed(items);
        if changed.is_empty() {
            return Ok(());
        }
        self.wal.log_metadata(&changed)?;
        self.metadata
            .set_all(changed.iter().map(|(n, md)| (n.as_str(), md)));
        Ok(())
    }

    pub(crate) fn touch(&self) {
        *self.last_used.lock() = std::time::Instant::now();
    }

    /// Time since the last append or query.
    pub fn idle_for(&self) -> Duration {
        self.last_used.lock().elapsed()
    }

    /// The newest in-order sample's timestamp of the series with
    /// `labels` in the head, if it is there and has one (blocks are not
    /// consulted: what an appender checks against, as in Prometheus).
    pub fn head_newest_timestamp(&self, labels: &(impl SeriesLabels + ?Sized)) -> Option<i64> {
        self.head.newest_timestamp(labels)
    }

    /// Appends samples. Returns after the accepted samples are in the WAL.
    /// Refused samples are reported, not fatal: the rest is stored. An
    /// `Err` means a storage fault; nothing is acknowledged then.
    ///
    /// The labels may be borrowed ([`SeriesLabels`]): an owned `Labels`
    /// is built only for a new series and for a refused sample's report.
    pub fn append<L: SeriesLabels>(&self, batch: &[SeriesSamples<'_, L>]) -> Result<AppendReport> {
        self.append_batch(batch, &[])
    }

    /// [`Db::append`] with native histograms too: floats and histograms
    /// of the request reach the WAL in one write. Histograms are accepted
    /// in time order only ([`RejectReason::OutOfOrderHistogram`]); an
    /// identical histogram at a stored timestamp is a no-op, a different
    /// one a [`RejectReason::Duplicate`]; a malformed one is
    /// [`RejectReason::InvalidHistogram`].
    pub fn append_with_histograms(
        &self,
        batch: &[SeriesSamples<'_>],
        hists: &[SeriesHistograms<'_>],
    ) -> Result<AppendReport> {
        self.append_with_start_timestamps(batch, hists, &StartTimestamps::default())
    }

    /// [`Db::append_with_histograms`] with the float series' labels in any
    /// [`SeriesLabels`] form (borrowed pairs are looked up in place).
    pub fn append_batch<L: SeriesLabels>(
        &self,
        batch: &[SeriesSamples<'_, L>],
        hists: &[SeriesHistograms<'_>],
    ) -> Result<AppendReport> {
        self.append_labels_with_start_timestamps(batch, hists, &StartTimestamps::default())
    }

    /// [`Db::append_batch`] with the samples' start timestamps
    /// (`sts`, parallel to `batch` and `hists`). In-order samples keep
    /// them (queries read them through [`Series::st_samples`](crate::Series));
    /// out-of-order samples are stored without.
    pub fn append_with_start_timestamps(
        &self,
        batch: &[SeriesSamples<'_>],
        hists: &[SeriesHistograms<'_>],
        sts: &StartTimestamps<'_>,
    ) -> Result<AppendReport> {
        self.append_labels_with_start_timestamps(batch, hists, sts)
    }

    /// [`Db::append_with_start_timestamps`] with the float series' labels
    /// in any [`SeriesLabels`] form.
    pub fn append_labels_with_start_timestamps<L: SeriesLabels>(
        &self,
        batch: &[SeriesSamples<'_, L>],
        hists: &[SeriesHistograms<'_>],
        sts: &StartTimestamps<'_>,
    ) -> Result<AppendReport> {
        self.touch();
        let mut rec_sts: Vec<crate::wal::RefStartTimestamp> = Vec::new();
        let max_future = now_ms().saturating_add(self.cfg.max_future.as_millis() as i64);
        let window = self.ooo_window.load(Ordering::Relaxed);
        let inorder_window = window.max(self.cfg.head.block_range / 2);
        let mut report = AppendReport::default();
        let mut rec_series = Vec::new();
        let mut new_ids = Vec::new();
        let mut rec_samples = Vec::with_capacity(batch.iter().map(|s| s.samples.len()).sum());
        let (mut bmin, mut bmax) = (i64::MAX, i64::MIN);
        // Every series is hashed first, so that the loop can have the
        // lookups of the series a few positions ahead fetched from memory
        // while it works on this one (see `head::series_table`).
        let hashes: Vec<u64> = batch.iter().map(|ss| series_hash(&ss.labels)).collect();
        // The series the last stage found, by batch position.
        let mut ahead: [Option<SeriesArc>; AHEAD_SLOTS] = Default::default();
        for (bi, ss) in batch.iter().enumerate() {
            if let Some(&h) = hashes.get(bi + PREFETCH_SLOT_AHEAD) {
                self.head.prefetch_slot(h);
            }
            if let Some(&h) = hashes.get(bi + PREFETCH_SERIES_AHEAD) {
                self.head.prefetch_series(h);
            }
            if let Some(&h) = hashes.get(bi + PREFETCH_CHUNK_AHEAD) {
                ahead[(bi + PREFETCH_CHUNK_AHEAD) % AHEAD_SLOTS] = self.head.prefetch_chunk(h);
            }
            let mut found = ahead[bi % AHEAD_SLOTS].take();
            if ss.samples.is_empty() {
                continue;
            }
            let labels = &ss.labels;
            if let Some(reason) = self.head.series_limit_hit(labels) {
                for s in ss.samples {
                    report.reject(labels, s.t, reason);
                }
                continue;
            }
            loop {
                let h = match found
                    .take()
                    .and_then(|s| self.head.handle_if_same(s, labels))
                {
                    Some(h) => h,
                    None => self.head.get_or_create_hashed(hashes[bi], labels),
                };
                let mut d = h.series.data.lock();
                if d.removed() {
                    continue;
                }
                if h.needs_record {
                    rec_series.push(RefSeries {
                        sref: h.series.id,
                        labels: h.created.unwrap_or_else(|| labels.to_labels()),
                    });
                    new_ids.push(h.series.id);
                    if d.is_empty() && d.last_t() == i64::MIN {
                        report.new_series += 1;
                    }
                }
                let min_valid = self.head.min_valid();
                for (j, s) in ss.samples.iter().enumerate() {
                    let st = st_at(sts.samples, bi, j);
                    if s.t > max_future {
                        report.reject(labels, s.t, RejectReason::TooFarInFuture);
                        continue;
                    }
                    let head_max = self.head.max_t().max(bmax);
                    let last_t = d.last_t();
                    let ooo = s.t < last_t || (s.t > last_t && s.t < min_valid);
                    if ooo && window == 0 {
                        report.reject(labels, s.t, RejectReason::OutOfOrder);
                        continue;
                    }
                    let limit = head_max.saturating_sub(if ooo { window } else { inorder_window });
                    if head_max != i64::MIN && s.t < limit {
                        report.reject(labels, s.t, RejectReason::TooOld);
                        continue;
                    }
                    match self.head.append_locked_st(&h.series, &mut d, s.t, s.v, st) {
                        Ok(Appended::Noop) => report.accepted += 1,
                        Ok(Appended::InOrder | Appended::OutOfOrder) => {
                            report.accepted += 1;
                            if st != 0 {
                                rec_sts.push(crate::wal::RefStartTimestamp {
                                    sref: h.series.id,
                                    t: s.t,
                                    st,
                                });
                            }
                            bmin = bmin.min(s.t);
                            bmax = bmax.max(s.t);
                            rec_samples.push(RefSample {
                                sref: h.series.id,
                                t: s.t,
                                v: s.v,
                            });
                        }
                        Err(r) => report.reject(labels, s.t, reject_reason(r)),
                    }
                }
                break;
            }
        }
        let mut rec_hists = Vec::new();
        let mut rec_fhists = Vec::new();
        for (bi, sh) in hists.iter().enumerate() {
            let n = sh.histograms.len() + sh.float_histograms.len();
            if n == 0 {
                continue;
            }
            let times = sh
                .histograms
                .iter()
                .map(|x| x.0)
                .chain(sh.float_histograms.iter().map(|x| x.0));
            if let Some(reason) = self.head.series_limit_hit(sh.labels) {
                for t in times {
                    report.reject(sh.labels, t, reason);
                }
                continue;
            }
            loop {
                let h = self.head.get_or_create(sh.labels);
                let mut d = h.series.data.lock();
                if d.removed() {
                    continue;
                }
                if h.needs_record {
                    rec_series.push(RefSeries {
                        sref: h.series.id,
                        labels: h.created.unwrap_or_else(|| sh.labels.clone()),
                    });
                    new_ids.push(h.series.id);
                    if d.is_empty() && d.last_t() == i64::MIN {
                        report.new_series += 1;
                    }
                }
                // Both lists merged by time, integer first on a tie.
                let (mut i, mut j) = (0, 0);
                loop {
                    let next = match (sh.histograms.get(i), sh.float_histograms.get(j)) {
                        (Some(a), Some(b)) if a.0 <= b.0 => HistRef::Int(&a.1),
                        (Some(_), Some(b)) => HistRef::Float(&b.1),
                        (Some(a), None) => HistRef::Int(&a.1),
                        (None, Some(b)) => HistRef::Float(&b.1),
                        (None, None) => break,
                    };
                    let (t, st) = match next {
                        HistRef::Int(_) => {
                            i += 1;
                            (sh.histograms[i - 1].0, st_at(sts.histograms, bi, i - 1))
                        }
                        HistRef::Float(_) => {
                            j += 1;
                            (
                                sh.float_histograms[j - 1].0,
                                st_at(sts.float_histograms, bi, j - 1),
                            )
                        }
                    };
                    if t > max_future {
                        report.reject(sh.labels, t, RejectReason::TooFarInFuture);
                        continue;
                    }
                    let valid = match next {
                        HistRef::Int(x) => x.validate(),
                        HistRef::Float(x) => x.validate(),
                    };
                    if valid.is_err() {
                        report.reject(sh.labels, t, RejectReason::InvalidHistogram);
                        continue;
                    }
                    let head_max = self.head.max_t().max(bmax);
                    if head_max != i64::MIN && t < head_max.saturating_sub(inorder_window) {
                        report.reject(sh.labels, t, RejectReason::TooOld);
                        continue;
                    }
                    match self
                        .head
                        .append_histogram_locked_st(h.series.id, &mut d, t, next, st)
                    {
                        Ok(Appended::Noop) => report.histograms_accepted += 1,
                        Ok(Appended::InOrder | Appended::OutOfOrder) => {
                            report.histograms_accepted += 1;
                            if st != 0 {
                                rec_sts.push(crate::wal::RefStartTimestamp {
                                    sref: h.series.id,
                                    t,
                                    st,
                                });
                            }
                            bmin = bmin.min(t);
                            bmax = bmax.max(t);
                            match next {
                                HistRef::Int(x) => rec_hists.push(RefHistogram {
                                    sref: h.series.id,
                                    t,
                                    h: x.clone(),
                                }),
                                HistRef::Float(x) => rec_fhists.push(RefFloatHistogram {
                                    sref: h.series.id,
                                    t,
                                    h: x.clone(),
                                }),
                            }
                        }
                        Err(r) => report.reject(sh.labels, t, reject_reason(r)),
                    }
                }
                break;
            }
        }
        if !rec_series.is_empty()
            || !rec_samples.is_empty()
            || !rec_hists.is_empty()
            || !rec_fhists.is_empty()
        {
            self.wal.log_with_start_timestamps(
                &rec_series,
                &rec_sts,
                &rec_samples,
                &rec_hists,
                &rec_fhists,
            )?;
        }
        self.head.mark_logged(&new_ids);
        self.head.observe_times(bmin, bmax);
        self.counters.samples_appended.fetch_add(
            (rec_samples.len() + rec_hists.len() + rec_fhists.len()) as u64,
            Ordering::Relaxed,
        );
        self.counters
            .samples_rejected
            .fetch_add(report.rejected, Ordering::Relaxed);
        Ok(report)
    }

    /// Deletes the samples in `[mint, maxt]` of every series matching
    /// `matchers`: logged and applied at once to the head, recorded as
    /// tombstones on blocks (hidden from reads at once, removed from disk
    /// by the next compaction of each block).
    pub async fn delete(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<()> {
        let _g = self.maint.lock().await;
        let ids = self.head.ids_for_delete(matchers, mint, maxt)?;
        if !ids.is_empty() {
            let recs: Vec<RefTombstone> = ids
                .iter()
                .map(|&sref| RefTombstone { sref, mint, maxt })
                .collect();
            self.wal.log_tombstones(&recs)?;
            self.head.add_tombstones(&ids, mint, maxt);
        }
        let blocks = self.blocks.read().clone();
        let mut changed = Vec::new();
        for b in blocks {
            let m = b.meta();
            if m.max_time <= mint || m.min_time > maxt {
                continue;
            }
            let ids = select_postings(&*b, matchers)?;
            if ids.is_empty() {
                continue;
            }
            let mut t = Tombstones::new();
            for (id, ivs) in b.tombstones().iter() {
                for &(lo, hi) in ivs {
                    t.add(id, lo, hi);
                }
            }
            for id in ids {
                t.add(id, mint, maxt);
            }
            changed.push((b, t));
        }
        for (b, t) in changed {
            let dir = b.dir().to_path_buf();
            crate::block::write_tombstones(&dir, &t)?;
            let ulid = b.meta().ulid.to_string();
            if !self.bucket.is_local() {
                self.bucket
                    .upload_file(&format!("{ulid}/tombstones"), &dir.join("tombstones"))
                    .await?;
            }
            let reopened = Arc::new(BlockReader::open(&dir)?);
            let mut bl = self.blocks.write();
            for x in bl.iter_mut() {
                if x.meta().ulid == reopened.meta().ulid {
                    *x = reopened.clone();
                }
            }
        }
        Ok(())
    }

    /// Runs due background work: WAL fsync, block cut, compaction,
    /// retention. Call periodically (e.g. every few seconds).
    pub async fn maintain(self: &Arc<Self>) -> Result<()> {
        self.wal.sync_if_due()?;
        if let Err(e) = self.head.flush_chunk_files() {
            // The records stay in memory, readable; the next tick retries.
            warn!(error = %e, "could not write head chunk file");
        }
        let due = {
            let mut last = self.last_chunk_compaction.lock();
            let due = last.elapsed() >= self.cfg.head_chunk_compaction_interval;
            if due {
                *last = std::time::Instant::now();
            }
            due
        };
        if due {
            self.compact_head_chunks().await?;
        }
        self.cut_blocks().await?;
        if self.cfg.uploader.is_none() {
            crate::compact::compact(self).await?;
        }
        self.apply_retention().await?;
        Ok(())
    }

    /// Re-encodes the head's sealed chunks into the compact encoding now
    /// (normally done by [`Db::maintain`] every
    /// `head_chunk_compaction_interval`). Returns chunks replaced.
    pub async fn compact_head_chunks(self: &Arc<Self>) -> Result<usize> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.head.compact_chunks())
            .await
            .map_err(|e| crate::Error::Task {
                message: e.to_string(),
            })
    }

    /// Cuts every due block range out of the head. Returns the new blocks.
    pub async fn cut_blocks(self: &Arc<Self>) -> Result<Vec<BlockMeta>> {
        let Some(cut_end) = self.head.cut_due() else {
            return Ok(Vec::new());
        };
        let _g = self.maint.lock().await;
        self.cut_now(cut_end).await
    }

    /// Cuts everything before `cut_end` (a multiple of the block range)
    /// into blocks. Callers hold the maintenance lock.
    pub(crate) async fn cut_now(self: &Arc<Self>, cut_end: i64) -> Result<Vec<BlockMeta>> {
        // Every sample logged to segments before this one is in the head
        // now (samples reach the head before the WAL).
        let seg = self.wal.rotate()?;
        let db = self.clone();
        let (written, taken) = tokio::task::spawn_blocking(move || db.write_head_blocks(cut_end))
            .await
            .map_err(|e| crate::Error::Task {
                message: e.to_string(),
            })??;
        let mut metas = Vec::new();
        for (meta, wip_dir) in written {
            let reader = self.publish_block(&meta, &wip_dir).await?;
            self.blocks.write().push(reader);
            metas.push(meta);
        }
        self.sort_blocks();
        self.head.truncate(cut_end, &taken);
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            db.wal.checkpoint_with_exemplars(
                seg.saturating_sub(1),
                &|r| db.head.has_ref(r),
                cut_end,
                db.cfg.max_exemplars,
            )
        })
        .await
        .map_err(|e| crate::Error::Task {
            message: e.to_string(),
        })??;
        self.counters
            .blocks_cut
            .fetch_add(metas.len() as u64, Ordering::Relaxed);
        for m in &metas {
            info!(block = %m.ulid, min_time = m.min_time, max_time = m.max_time,
                  series = m.stats.num_series, samples = m.stats.num_samples, "cut block from head");
        }
        Ok(metas)
    }

    pub(crate) fn sort_blocks(&self) {
        self.blocks
            .write()
            .sort_by_key(|b| (b.meta().min_time, b.meta().max_time, b.meta().ulid));
    }

    /// Writes the head's data before `cut_end` into one local block per
    /// block range. Returns the blocks and, per series, the out-of-order
    /// timestamps that were persisted.
    #[allow(clippy::type_complexity)]
    fn write_head_blocks(
        &self,
        cut_end: i64,
    ) -> Result<(Vec<(BlockMeta, PathBuf)>, HashMap<u64, Vec<i64>>)> {
        let range = self.cfg.head.block_range;
        let chunk_samples = self.cfg.head.chunk_samples;
        let mut writers: BTreeMap<i64, (Ulid, PathBuf, BlockWriter)> = BTreeMap::new();
        let mut taken: HashMap<u64, Vec<i64>> = HashMap::new();
        let wip = self.dir.join("wip");
        for s in self.head.sorted_series() {
            let Some(x) = self.head.extract(&s, cut_end)? else {
                continue;
            };
            if !x.ooo.is_empty() {
                taken.insert(s.id, x.ooo.iter().map(|p| p.0).collect());
            }
            for (w, chunks) in split_by_window(&x, range, chunk_samples) {
                if chunks.is_empty() {
                    continue;
                }
                if let std::collections::btree_map::Entry::Vacant(e) = writers.entry(w) {
                    let id = Ulid::new();
                    let dir = wip.join(id.to_string());
                    std::fs::create_dir_all(&wip).context(crate::error::IoSnafu { path: &wip })?;
                    let bw = BlockWriter::create(&dir, id, w, w + range)?;
                    e.insert((id, dir, bw));
                }
                if let Some((_, _, bw)) = writers.get_mut(&w) {
                    let inputs: Vec<ChunkInput<'_>> = chunks
                        .iter()
                        .map(|c| ChunkInput::counted(c.0, c.1, c.2, &c.3))
                        .collect();
                    bw.add_series(&x.labels, &inputs)?;
                }
            }
        }
        let mut out = Vec::new();
        for (_, (id, dir, bw)) in writers {
            let meta = bw.finish(BlockCompaction {
                level: 1,
                sources: vec![id],
                parents: Vec::new(),
                deletable: false,
            })?;
            if meta.stats.num_series == 0 {
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            }
            out.push((meta, dir));
        }
        Ok((out, taken))
    }

    /// Uploads a locally written block, moves it to its final local place
    /// and opens it.
    pub(crate) async fn publish_block(
        &self,
        meta: &BlockMeta,
        wip_dir: &Path,
    ) -> Result<Arc<BlockReader>> {
        let name = meta.ulid.to_string();
        let shipped;
        let meta = match &self.cfg.uploader {
            Some(id) => {
                // Stamp the uploader into meta.json before it leaves.
                let mut m = meta.clone();
                m.thanos = Some(crate::block::ThanosMeta {
                    labels: [(crate::block::INGESTER_ID_LABEL.to_string(), id.clone())].into(),
                    source: "ingester".to_string(),
                });
                m.write(wip_dir)?;
                shipped = m;
                &shipped
            }
            None => meta,
        };
        crate::failpoint::hit("block.upload.before")?;
        // Data files, then the index entry, then meta.json: every block
        // with a meta.json is in the index; an entry whose meta.json is
        // missing is an unfinished upload that readers skip.
        self.bucket
            .upload_dir_except(&name, wip_dir, &["meta.json"])
            .await?;
        self.update_index(|ix| ix.add(meta)).await?;
        crate::failpoint::hit("block.upload.indexed")?;
        self.bucket
            .upload_file(&format!("{name}/meta.json"), &wip_dir.join("meta.json"))
            .await?;
        crate::failpoint::hit("block.upload.after")?;
        let final_dir = match self.bucket.local_path(&name) {
            Some(p) => {
                let _ = std::fs::remove_dir_all(wip_dir);
                p
            }
            None => {
                let cache = self.dir.join("blocks").join(&name);
                std::fs::create_dir_all(self.dir.join("blocks")).context(
                    crate::error::IoSnafu {
                        path: self.dir.join("blocks"),
                    },
                )?;
                std::fs::rename(wip_dir, &cache).context(crate::error::IoSnafu { path: &cache })?;
                cache
            }
        };
        Ok(Arc::new(BlockReader::open(&final_dir)?))
    }

    /// Changes the bucket index and writes it. Callers hold `maint`.
    async fn update_index(&self, f: impl FnOnce(&mut BucketIndex)) -> Result<()> {
        let ix = {
            let mut ix = self.bucket_index.lock();
            f(&mut ix);
            ix.clone()
        };
        crate::bucket_index::write_key(&self.bucket, &ix, self.index_key(), now_ms()).await
    }

    /// The key of the bucket index this database writes.
    fn index_key(&self) -> &str {
        &self.index_key
    }

    /// The bucket index as this database last wrote it.
    pub fn bucket_index(&self) -> BucketIndex {
        self.bucket_index.lock().clone()
    }

    /// Removes a block from the query set, the bucket and the local cache.
    pub(crate) async fn drop_block(&self, ulid: Ulid) -> Result<()> {
        self.blocks.write().retain(|b| b.meta().ulid != ulid);
        let name = ulid.to_string();
        let now = now_ms();
        self.update_index(|ix| ix.mark_deleted(&name, now)).await?;
        crate::failpoint::hit("block.delete.marked")?;
        // In a shared bucket the compactor deletes objects; an ingester
        // only stops listing the block.
        if self.cfg.uploader.is_none() {
            self.bucket.delete_prefix(&name).await?;
        }
        self.update_index(|ix| ix.remove(&name)).await?;
        let cache = self.dir.join("blocks").join(&name);
        if cache.exists() {
            let _ = std::fs::remove_dir_all(&cache);
        }
        Ok(())
    }

    /// Deletes blocks that ended before `now - retention`.
    pub async fn apply_retention(&self) -> Result<()> {
        let ret = self.retention_ms.load(Ordering::Relaxed);
        if ret < 0 {
            return Ok(());
        }
        let cutoff = now_ms().saturating_sub(ret);
        let _g = self.maint.lock().await;
        let old: Vec<Ulid> = self
            .blocks
            .read()
            .iter()
            .filter(|b| b.meta().max_time <= cutoff)
            .map(|b| b.meta().ulid)
            .collect();
        for u in old {
            info!(block = %u, "deleting block past retention");
            self.drop_block(u).await?;
        }
        Ok(())
    }

    /// Flushes and fsyncs the WAL (graceful shutdown).
    pub fn close(&self) -> Result<()> {
        self.wal.sync()?;
        Ok(())
    }

    /// A point-in-time view of sizes and counters.
    pub fn stats(&self) -> DbStats {
        let blocks = self.blocks.read();
        DbStats {
            head_series: self.head.num_series(),
            head_min_time: self.head.min_t(),
            head_max_time: self.head.max_t(),
            head_bytes: self.head.approx_bytes() as u64,
            head_chunk_file_bytes: self.head.chunk_file_bytes(),
            blocks: blocks.len(),
            block_samples: blocks.iter().map(|b| b.meta().stats.num_samples).sum(),
            block_bytes: blocks.iter().map(|b| b.meta().stats.num_bytes).sum(),
            wal_bytes: self.wal.size_bytes(),
            samples_appended: self.counters.samples_appended.load(Ordering::Relaxed),
            samples_rejected: self.counters.samples_rejected.load(Ordering::Relaxed),
            blocks_cut: self.counters.blocks_cut.load(Ordering::Relaxed),
            compactions: self.counters.compactions.load(Ordering::Relaxed),
        }
    }

    /// Where the head's memory goes (estimated; see [`HeadMemory`]).
    pub fn head_memory(&self) -> HeadMemory {
        self.head.memory()
    }

    pub(crate) fn count_compaction(&self) {
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
    }

    /// The blocks currently queryable (oldest first).
    pub fn block_metas(&self) -> Vec<BlockMeta> {
        self.blocks
            .read()
            .iter()
            .map(|b| b.meta().clone())
            .collect()
    }

    /// Rewrites every level-1 block into the compact encoding now (see
    /// `compact::force_compact`); returns how many blocks were rewritten.
    pub async fn force_compact(self: &Arc<Self>) -> Result<usize> {
        crate::compact::force_compact(self).await
    }

    /// Cuts the whole head into blocks now, regardless of time (for tests
    /// and tools; normal operation cuts on schedule).
    pub async fn flush_head(self: &Arc<Self>) -> Result<Vec<BlockMeta>> {
        let max_t = self.head.max_t();
        if max_t == i64::MIN {
            return Ok(Vec::new());
        }
        let range = self.cfg.head.block_range;
        let end = window_start(max_t, range).saturating_add(range);
        let _g = self.maint.lock().await;
        self.cut_now(end).await
    }
}

/// `(mint, maxt, encoding, data)` of a chunk ready for a block writer.
type EncodedChunk = (i64, i64, u8, Vec<u8>);

/// Splits a series' extracted data into per-window chunk lists ready for a
/// block, merging out-of-order samples and dropping deleted ones.
fn split_by_window(
    x: &Extracted,
    range: i64,
    chunk_samples: usize,
) -> BTreeMap<i64, Vec<EncodedChunk>> {
    type Window<'a> = (Vec<&'a crate::head::LoadedChunk>, Vec<(i64, f64)>);
    let mut wins: BTreeMap<i64, Window<'_>> = BTreeMap::new();
    for c in &x.chunks {
        wins.entry(window_start(c.mint, range))
            .or_default()
            .0
            .push(c);
    }
    for &s in &x.ooo {
        wins.entry(window_start(s.0, range)).or_default().1.push(s);
    }
    let mut out = BTreeMap::new();
    for (w, (chunks, ooo)) in wins {
        let end = w + range;
        let deleted = x.tombstones.iter().any(|&(lo, hi)| hi >= w && lo < end);
        if ooo.is_empty() && !deleted {
            out.insert(
                w,
                chunks
                    .iter()
                    .map(|c| (c.mint, c.maxt, c.encoding, c.data.to_vec()))
                    .collect(),
            );
            continue;
        }
        if chunks
            .iter()
            .any(|c| crate::chunks::is_st_encoding(c.encoding))
        {
            // Start timestamps: merge typed samples with them and
            // re-encode (out-of-order floats have none).
            let mut parts: Vec<Part> = chunks
                .iter()
                .map(|c| Part::Chunk {
                    mint: c.mint,
                    maxt: c.maxt,
                    encoding: c.encoding,
                    data: c.data.clone(),
                })
                .collect();
            parts.push(Part::Floats(ooo.into()));
            let samples: Vec<_> = crate::querier::merge_typed_st(&parts, w, end - 1)
                .unwrap_or_default()
                .into_iter()
                .filter(|s| !is_deleted(s.0, &x.tombstones))
                .collect();
            out.insert(w, crate::querier::encode_st_chunks(&samples, chunk_samples));
            continue;
        }
        // Histogram chunks are kept as they are (filtered when deleted
        // data overlaps them); float chunks and out-of-order floats are
        // merged and re-encoded.
        let is_hist = |c: &crate::head::LoadedChunk| {
            crate::chunks::Encoding::from_u8(c.encoding).is_some_and(|e| e.is_histogram())
        };
        let mut kept: Vec<EncodedChunk> = Vec::new();
        for c in chunks.iter().copied().filter(|c| is_hist(c)) {
            let hit = x
                .tombstones
                .iter()
                .any(|&(lo, hi)| hi >= c.mint && lo <= c.maxt);
            if !hit {
                kept.push((c.mint, c.maxt, c.encoding, c.data.to_vec()));
            } else {
                kept.extend(crate::querier::filter_histogram_chunk(
                    c.encoding,
                    &c.data,
                    &x.tombstones,
                ));
            }
        }
        let chunks: Vec<&crate::head::LoadedChunk> =
            chunks.into_iter().filter(|c| !is_hist(c)).collect();
        let mut parts: Vec<Part> = chunks
            .iter()
            .map(|c| Part::Chunk {
                mint: c.mint,
                maxt: c.maxt,
                encoding: c.encoding,
                data: c.data.clone(),
            })
            .collect();
        parts.push(Part::Floats(ooo.into()));
        let series = Series {
            labels: Labels::empty(),
            parts,
        };
        let samples = series
            .iter(w, end - 1)
            .filter(|s| !is_deleted(s.0, &x.tombstones));
        let xor = crate::chunks::Encoding::Xor as u8;
        let mut all: Vec<EncodedChunk> = encode_chunks(samples, chunk_samples)
            .into_iter()
            .map(|(a, b, d)| (a, b, xor, d))
            .collect();
        all.extend(kept);
        all.sort_by_key(|c| (c.0, c.1));
        out.insert(w, all);
    }
    out
}

/// Encodes samples (sorted, unique timestamps) into XOR chunks.
pub(crate) fn encode_chunks(
    samples: impl Iterator<Item = (i64, f64)>,
    chunk_samples: usize,
) -> Vec<(i64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut app = XorAppender::new();
    for (t, v) in samples {
        if app.num_samples() >= chunk_samples {
            let full = std::mem::take(&mut app);
            if let (Some(a), Some(b)) = (full.first_t(), full.last_t()) {
                out.push((a, b, full.into_bytes()));
            }
        }
        app.append(t, v);
    }
    if let (Some(a), Some(b)) = (app.first_t(), app.last_t()) {
        out.push((a, b, app.into_bytes()));
    }
    out
}

fn reject_reason(r: Reject) -> RejectReason {
    match r {
        Reject::Duplicate => RejectReason::Duplicate,
        Reject::OutOfOrderHistogram => RejectReason::OutOfOrderHistogram,
        // No reason of its own (the reasons are part of the cluster's
        // wire format): the nearest, a sample that may collide with a
        // stored one. The cause is logged where it happens.
        Reject::Unverifiable => RejectReason::Duplicate,
    }
}

/// Applies one WAL record to the head during replay.
///
/// `pending` holds the start timestamps of the last start-timestamps
/// record, keyed by series ref and time, until the samples they belong to
/// (logged after it in the same write) are replayed.
fn replay_record(head: &Head, rec: crate::wal::Record, pending: &mut HashMap<(u64, i64), i64>) {
    match rec {
        crate::wal::Record::StartTimestamps(v) => {
            pending.clear();
            pending.extend(v.into_iter().map(|x| ((x.sref, x.t), x.st)));
        }
        crate::wal::Record::Series(v) => {
            for s in v {
                head.replay_series(s.sref, &s.labels);
            }
        }
        crate::wal::Record::Samples(v) => {
            let (mut lo, mut hi) = (i64::MAX, i64::MIN);
            let mut unknown = 0u64;
            for s in v {
                let Some(series) = head.series_by_ref(s.sref) else {
                    unknown += 1;
                    continue;
                };
                let mut d = series.data.lock();
                let st = if pending.is_empty() {
                    0
                } else {
                    pending.remove(&(s.sref, s.t)).unwrap_or(0)
                };
                if head.append_locked_st(&series, &mut d, s.t, s.v, st).is_ok() {
                    lo = lo.min(s.t);
                    hi = hi.max(s.t);
                }
            }
            if unknown > 0 {
                warn!(
                    samples = unknown,
                    "WAL replay: samples for unknown series skipped"
                );
            }
            head.observe_times(lo, hi);
        }
        crate::wal::Record::Tombstones(v) => {
            for t in v {
                head.add_tombstones(&[t.sref], t.mint, t.maxt);
            }
        }
        // Handled by the caller (the metadata and exemplar stores).
        crate::wal::Record::Metadata(_) | crate::wal::Record::Exemplars(_) => {}
        crate::wal::Record::Histograms(v) => {
            let it = v.iter().map(|x| (x.sref, x.t, HistRef::Int(&x.h)));
            replay_histograms(head, it, pending);
        }
        crate::wal::Record::FloatHistograms(v) => {
            let it = v.iter().map(|x| (x.sref, x.t, HistRef::Float(&x.h)));
            replay_histograms(head, it, pending);
        }
    }
}

fn replay_histograms<'a>(
    head: &Head,
    it: impl Iterator<Item = (u64, i64, HistRef<'a>)>,
    pending: &mut HashMap<(u64, i64), i64>,
) {
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    let mut unknown = 0u64;
    for (sref, t, h) in it {
        let Some(series) = head.series_by_ref(sref) else {
            unknown += 1;
            continue;
        };
        let mut d = series.data.lock();
        let st = if pending.is_empty() {
            0
        } else {
            pending.remove(&(sref, t)).unwrap_or(0)
        };
        if head
            .append_histogram_locked_st(series.id, &mut d, t, h, st)
            .is_ok()
        {
            lo = lo.min(t);
            hi = hi.max(t);
        }
    }
    if unknown > 0 {
        warn!(
            samples = unknown,
            "WAL replay: histogram samples for unknown series skipped"
        );
    }
    head.observe_times(lo, hi);
}

/// Finds the tenant's complete blocks (from the bucket index when there
/// is a valid one, else by listing the bucket), fetches remote ones into
/// the local cache and opens them. Unfinished uploads (no `meta.json`),
/// blocks whose deletion had started and blocks replaced by a compaction
/// that finished are deleted. Returns the blocks and the index, rewritten
/// when it was missing or differs from what was found.
async fn load_blocks(
    bucket: &Bucket,
    cache: &Path,
    uploader: Option<&str>,
) -> Result<(Vec<Arc<BlockReader>>, BucketIndex)> {
    let key = crate::bucket_index::key_for(uploader);
    let shared = uploader.is_some();
    let stored = crate::bucket_index::read_key(bucket, &key).await?;
    let (names, marked): (Vec<String>, Vec<String>) = match &stored {
        Some(ix) => (
            ix.live_blocks().map(|b| b.ulid.clone()).collect(),
            ix.deletion_marks.iter().map(|d| d.ulid.clone()).collect(),
        ),
        // An uploader's blocks are exactly those of its own index: the
        // prefix holds other uploaders' blocks too.
        None if shared => (Vec::new(), Vec::new()),
        None => (bucket.list_dirs("").await?, Vec::new()),
    };
    for name in &marked {
        info!(block = %name, "finishing a block deletion marked in the bucket index");
        if !shared {
            bucket.delete_prefix(name).await?;
        }
        let _ = std::fs::remove_dir_all(cache.join(name));
    }
    let mut out = Vec::new();
    for name in names {
        let Ok(_) = name.parse::<Ulid>() else {
            continue;
        };
        let dir = match bucket.local_path(&name) {
            Some(p) => p,
            None => {
                let d = cache.join(&name);
                if !d.join("meta.json").exists() {
                    let tmp = cache.join(format!("{name}.download"));
                    let _ = std::fs::remove_dir_all(&tmp);
                    if bucket.get(&format!("{name}/meta.json")).await?.is_some() {
                        bucket.download_dir(&name, &tmp).await?;
                    }
                    if !tmp.join("meta.json").exists() {
                        let _ = std::fs::remove_dir_all(&tmp);
                        warn!(block = %name, "deleting incomplete block upload (no meta.json)");
                        bucket.delete_prefix(&name).await?;
                        continue;
                    }
                    let _ = std::fs::remove_dir_all(&d);
                    std::fs::rename(&tmp, &d).context(crate::error::IoSnafu { path: &d })?;
                }
                d
            }
        };
        if !dir.join("meta.json").exists() {
            warn!(block = %name, "deleting incomplete block upload (no meta.json)");
            bucket.delete_prefix(&name).await?;
            continue;
        }
        out.push(Arc::new(BlockReader::open(&dir)?));
    }
    // A compaction that crashed after uploading its output but before
    // deleting its inputs leaves blocks whose sources are all covered by
    // a newer block: drop those.
    let mut covered = Vec::new();
    for b in &out {
        for o in &out {
            if o.meta().ulid != b.meta().ulid
                && o.meta().compaction.level > b.meta().compaction.level
                && b.meta()
                    .compaction
                    .sources
                    .iter()
                    .all(|s| o.meta().compaction.sources.contains(s))
            {
                covered.push(b.meta().ulid);
                break;
            }
        }
    }
    for u in &covered {
        warn!(block = %u, "deleting block already merged by a finished compaction");
        let name = u.to_string();
        if !shared {
            bucket.delete_prefix(&name).await?;
        }
        let _ = std::fs::remove_dir_all(cache.join(&name));
    }
    out.retain(|b| !covered.contains(&b.meta().ulid));
    out.sort_by_key(|b| (b.meta().min_time, b.meta().max_time, b.meta().ulid));
    let index = BucketIndex::from_metas(out.iter().map(|b| b.meta()));
    let unchanged = stored.as_ref().is_some_and(|s| s.same_content(&index));
    // An uploader that never shipped a block writes no index yet.
    let nothing = shared && out.is_empty() && stored.is_none();
    if !unchanged && !nothing {
        crate::bucket_index::write_key(bucket, &index, &key, now_ms()).await?;
    }
    Ok((out, index))
}

/// Reads the series of one block for a select. The chunks of all
/// matching series are read in one batch ([`BlockReader::chunks`]), so a
/// lazily opened block fetches them from the bucket together.
pub(crate) fn select_block(
    b: &BlockReader,
    matchers: &[Matcher],
    mint: i64,
    maxt: i64,
    labels_only: bool,
) -> Result<Vec<Series>> {
    let ids = select_postings(b, matchers)?;
    let mut found = Vec::with_capacity(ids.len());
    b.for_each_series(&ids, |id, labels, metas| {
        let keep: Vec<crate::block::ChunkMeta> = metas
            .iter()
            .filter(|m| m.maxt >= mint && m.mint <= maxt)
            .copied()
            .collect();
        if !keep.is_empty() {
            found.push((labels, id, keep));
        }
        Ok::<_, crate::Error>(())
    })?;
    let mut data = if labels_only {
        Vec::new()
    } else {
        let refs: Vec<u64> = found
            .iter()
            .flat_map(|(_, _, keep)| keep.iter().map(|m| m.chunk_ref))
            .collect();
        b.chunks(&refs)?
    }
    .into_iter();
    let mut out = Vec::with_capacity(found.len());
    for (labels, id, keep) in found {
        let mut parts = Vec::with_capacity(keep.len());
        if labels_only {
            parts.push(Part::Floats(Arc::from(&[][..])));
        } else {
            for m in &keep {
                let Some((encoding, data)) = data.next() else {
                    return Err(crate::Error::Index {
                        message: format!("block {}: chunk batch too short", b.meta().ulid),
                    });
                };
                parts.push(Part::Chunk {
                    mint: m.mint,
                    maxt: m.maxt,
                    encoding,
                    data,
                });
            }
        }
        let ts = b.tombstones().get(id);
        if !ts.is_empty() && !labels_only {
            parts = crate::head::apply_tombstones(parts, ts, mint, maxt);
            if parts.is_empty() {
                continue;
            }
        }
        out.push(Series { labels, parts });
    }
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(out)
}

impl Db {
    fn blocks_in(&self, mint: i64, maxt: i64) -> Vec<Arc<BlockReader>> {
        self.blocks
            .read()
            .iter()
            .filter(|b| b.meta().max_time > mint && b.meta().min_time <= maxt)
            .cloned()
            .collect()
    }
}

impl Queryable for Db {
    fn select(&self, matchers: &[Matcher], hints: &SelectHints) -> Result<Vec<Series>> {
        self.touch();
        if matchers.is_empty() {
            return Ok(Vec::new());
        }
        let (mint, maxt) = (hints.start, hints.end);
        let mut sources = vec![self.head.select(matchers, mint, maxt, hints.labels_only)?];
        for b in self.blocks_in(mint, maxt).iter().rev() {
            sources.push(select_block(b, matchers, mint, maxt, hints.labels_only)?);
        }
        Ok(merge_series(sources))
    }

    fn label_names(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<String>> {
        self.touch();
        let mut all = std::collections::BTreeSet::new();
        all.extend(self.head.label_names(matchers, mint, maxt)?);
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
        self.touch();
        let mut all = std::collections::BTreeSet::new();
        all.extend(self.head.label_values(name, matchers, mint, maxt)?);
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

#[cfg(test)]
mod tests {
    #[test]
    fn db_is_send_and_sync() {
        fn f<T: Send + Sync>() {}
        f::<super::Db>();
    }
}
