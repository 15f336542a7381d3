//! The head: the in-memory, mutable part of a tenant's database.
//!
//! Series live in striped hash maps (by label hash for lookups on append,
//! by id for reads), each behind its own mutex, so appends to different
//! series never contend on one lock. Label sets are stored as interned
//! symbol ids ([`symbols`]); the inverted index is a
//! [`MemPostings`](crate::index::MemPostings). The database logs to the
//! WAL around calls into the head and writes blocks from what
//! [`Head::extract`] hands out. The head's only I/O is its chunk files
//! ([`chunk_files`]): [`Head::compact_chunks`] moves sealed chunks out of
//! the heap into them, and readers fetch them back with positional reads.

pub(crate) mod chunk_files;
mod label_hash;
mod series;
mod series_table;
pub(crate) mod symbols;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};

use parking_lot::RwLock;
use stratus_model::{Labels, Matcher};

use crate::chunks::{COMPACT_CHUNK_SAMPLES, Encoding};
use crate::error::{RejectReason, Result};
use crate::index::{MemPostings, select_postings};
use crate::querier::Part;
use crate::series_labels::SeriesLabels;
pub(crate) use label_hash::series_hash;
pub(crate) use series::{
    Appended, HeadChunk, HistRef, MemSeries, Reject, SERIES_ALLOC_BYTES, SeriesArc, window_start,
};
use series_table::{SeriesTable, SlotsHint};
use symbols::Symbols;

const STRIPES: usize = 512;

type IdStripe = HashMap<u64, SeriesArc>;

/// Head settings (all times in milliseconds).
#[derive(Debug, Clone)]
pub struct HeadConfig {
    /// Length of a block; head chunks never cross a multiple of it.
    pub block_range: i64,
    /// Samples per head chunk before a new chunk is started.
    pub chunk_samples: usize,
    /// How far behind the newest sample an older sample is still accepted.
    pub ooo_window: i64,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            block_range: 2 * 3600 * 1000,
            chunk_samples: 120,
            ooo_window: 3600 * 1000,
        }
    }
}

/// One stripe of the hash → series lookup: the table under its lock. A
/// stripe has its cache line to itself: every lookup writes the lock's
/// word, and a neighbour on the same line would have its lookups wait for
/// that line too.
#[derive(Debug, Default)]
#[repr(align(64))]
struct HashStripe {
    table: RwLock<SeriesTable>,
}

/// Handle returned by [`Head::get_or_create`].
#[derive(Debug)]
pub(crate) struct SeriesHandle {
    pub(crate) series: SeriesArc,
    /// The WAL may not yet hold this series' definition: the caller must
    /// log it with its samples.
    pub(crate) needs_record: bool,
    /// The owned label set built when this call created the series (for
    /// the WAL record), so the caller does not build it again.
    pub(crate) created: Option<Labels>,
}

/// A sealed chunk's bytes in memory, as a block cut takes them.
#[derive(Debug, Clone)]
pub(crate) struct LoadedChunk {
    pub(crate) mint: i64,
    pub(crate) maxt: i64,
    pub(crate) encoding: u8,
    pub(crate) data: Arc<[u8]>,
}

/// What a block cut takes out of one series.
#[derive(Debug)]
pub(crate) struct Extracted {
    pub(crate) labels: Labels,
    pub(crate) chunks: Vec<LoadedChunk>,
    pub(crate) ooo: Vec<(i64, f64)>,
    pub(crate) tombstones: Vec<(i64, i64)>,
}

/// The in-memory head of one tenant database.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) cfg: HeadConfig,
    pub(crate) symbols: Symbols,
    postings: MemPostings,
    by_hash: Box<[HashStripe]>,
    /// Where each stripe's slots are, for lock-free prefetching; apart
    /// from the stripes, whose lines the other appending threads keep
    /// writing, so that reading a hint is a cache hit.
    slot_hints: Box<[SlotsHint]>,
    by_id: Box<[RwLock<IdStripe>]>,
    /// Series definitions logged to the WAL (by id); absent = logged.
    unlogged: RwLock<HashMap<u64, Arc<AtomicBool>>>,
    /// `unlogged.len()`, readable without taking the lock.
    unlogged_len: AtomicUsize,
    /// WAL refs that name an existing series under another id (replay).
    aliases: RwLock<HashMap<u64, u64>>,
    next_id: AtomicU64,
    min_t: AtomicI64,
    max_t: AtomicI64,
    /// Everything below this time has been cut into blocks.
    min_valid: AtomicI64,
    tombstones: RwLock<HashMap<u64, Vec<(i64, i64)>>>,
    num_series: AtomicU64,
    /// Series limits (0 = none) and live series per metric name, kept on
    /// series creation and removal (see [`Head::series_limit_hit`]).
    series_limits: SeriesLimits,
    /// Where [`Head::compact_chunks`] moves sealed chunks out of the heap
    /// (`None`: they stay in memory).
    files: Option<chunk_files::ChunkFiles>,
}

/// Per-tenant limits on new series, with the per-metric-name counts.
#[derive(Debug, Default)]
struct SeriesLimits {
    max_series: AtomicU64,
    max_per_metric: AtomicU64,
    per_metric: parking_lot::Mutex<HashMap<Box<str>, u64>>,
}

impl SeriesLimits {
    fn name_of(labels: &(impl SeriesLabels + ?Sized)) -> &str {
        labels.metric_name().unwrap_or("")
    }

    fn count(&self, labels: &Labels, delta: i64) {
        let name = labels.metric_name().unwrap_or("");
        let mut m = self.per_metric.lock();
        if let Some(n) = m.get_mut(name) {
            *n = n.saturating_add_signed(delta);
            if *n == 0 {
                m.remove(name);
            }
        } else if delta > 0 {
            m.insert(name.into(), delta.unsigned_abs());
        }
    }
}

impl Head {
    pub(crate) fn new(cfg: HeadConfig) -> Self {
        Self {
            cfg,
            symbols: Symbols::default(),
            postings: MemPostings::new(),
            by_hash: (0..STRIPES).map(|_| HashStripe::default()).collect(),
            slot_hints: (0..STRIPES).map(|_| SlotsHint::default()).collect(),
            by_id: (0..STRIPES).map(|_| RwLock::default()).collect(),
            unlogged: RwLock::default(),
            unlogged_len: AtomicUsize::new(0),
            aliases: RwLock::default(),
            next_id: AtomicU64::new(1),
            min_t: AtomicI64::new(i64::MAX),
            max_t: AtomicI64::new(i64::MIN),
            min_valid: AtomicI64::new(i64::MIN),
            tombstones: RwLock::default(),
            num_series: AtomicU64::new(0),
            series_limits: SeriesLimits::default(),
            files: None,
        }
    }

    /// A head that moves sealed chunks into head chunk files in `files`.
    pub(crate) fn with_chunk_files(cfg: HeadConfig, files: chunk_files::ChunkFiles) -> Self {
        Self {
            files: Some(files),
            ..Self::new(cfg)
        }
    }

    /// Sets the series limits (0 = unlimited).
    pub(crate) fn set_series_limits(&self, max_series: u64, max_per_metric: u64) {
        let l = &self.series_limits;
        l.max_series.store(max_series, Ordering::Relaxed);
        l.max_per_metric.store(max_per_metric, Ordering::Relaxed);
    }

    /// Whether appending to `labels` would create a series over a limit.
    /// Existing series are never refused. Only looks the series up when a
    /// count is at its limit, so the cost below the limits is two atomic
    /// loads (and a map probe when a per-metric limit is set). Concurrent
    /// creations may overshoot a limit by the number of racing appenders.
    pub(crate) fn series_limit_hit(
        &self,
        labels: &(impl SeriesLabels + ?Sized),
    ) -> Option<RejectReason> {
        let l = &self.series_limits;
        let max = l.max_series.load(Ordering::Relaxed);
        let per = l.max_per_metric.load(Ordering::Relaxed);
        if max == 0 && per == 0 {
            return None;
        }
        let reason = if max > 0 && self.num_series() >= max {
            RejectReason::MaxSeries
        } else if per > 0
            && l.per_metric
                .lock()
                .get(SeriesLimits::name_of(labels))
                .is_some_and(|&n| n >= per)
        {
            RejectReason::MaxSeriesPerMetric
        } else {
            return None;
        };
        let hash = series_hash(labels);
        let exists = self
            .find_in(&self.hash_stripe(hash).table.read(), hash, labels)
            .is_some();
        (!exists).then_some(reason)
    }

    fn hash_stripe(&self, hash: u64) -> &HashStripe {
        &self.by_hash[(hash as usize) % STRIPES]
    }

    fn slot_hint(&self, hash: u64) -> &SlotsHint {
        &self.slot_hints[(hash as usize) % STRIPES]
    }

    fn id_stripe(&self, id: u64) -> &RwLock<IdStripe> {
        &self.by_id[(id as usize) % STRIPES]
    }

    /// Finds the series with exactly `labels` in a hash stripe. Compares
    /// symbol by symbol (no `Labels` is built: this runs once per appended
    /// series).
    fn find_in(
        &self,
        table: &SeriesTable,
        hash: u64,
        labels: &(impl SeriesLabels + ?Sized),
    ) -> Option<SeriesArc> {
        table
            .find(hash, |s| self.symbols.matches(&s.syms, labels))
            .cloned()
    }

    /// The newest in-order sample's timestamp of the series with
    /// `labels`, when the head holds that series and it has a sample.
    /// Out-of-order samples are older by definition.
    pub(crate) fn newest_timestamp(&self, labels: &(impl SeriesLabels + ?Sized)) -> Option<i64> {
        let hash = series_hash(labels);
        let s = {
            let stripe = self.hash_stripe(hash).table.read();
            self.find_in(&stripe, hash, labels)?
        };
        let d = s.data.lock();
        let last_t = d.last_t();
        (!d.removed() && last_t != i64::MIN).then_some(last_t)
    }

    /// The series with `labels`, created if new. Labels must be valid
    /// (sorted, unique names, no empty values). Borrowed labels are hashed
    /// and compared in place; an owned [`Labels`] is built only for a new
    /// series (and handed back in [`SeriesHandle::created`]).
    pub(crate) fn get_or_create(&self, labels: &(impl SeriesLabels + ?Sized)) -> SeriesHandle {
        self.get_or_create_hashed(series_hash(labels), labels)
    }

    /// [`Head::get_or_create`] with `hash` = [`series_hash`]`(labels)`
    /// computed by the caller (which prefetched with it).
    pub(crate) fn get_or_create_hashed(
        &self,
        hash: u64,
        labels: &(impl SeriesLabels + ?Sized),
    ) -> SeriesHandle {
        let stripe = self.hash_stripe(hash);
        {
            let table = stripe.table.read();
            if let Some(s) = self.find_in(&table, hash, labels) {
                drop(table);
                return self.handle(s);
            }
        }
        let mut table = stripe.table.write();
        if let Some(s) = self.find_in(&table, hash, labels) {
            drop(table);
            return self.handle(s);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let owned = labels.to_labels();
        let s = self.insert_locked(&mut table, id, hash, &owned);
        {
            let mut u = self.unlogged.write();
            u.insert(id, Arc::new(AtomicBool::new(false)));
            // Published before the stripe lock is released, so whoever
            // finds this series sees a non-zero count.
            self.unlogged_len.store(u.len(), Ordering::Release);
        }
        drop(table);
        SeriesHandle {
            series: s,
            needs_record: true,
            created: Some(owned),
        }
    }

    /// Append prefetching, first stage: the table slot where a lookup of
    /// `hash` starts (no lock; see [`series_table`]).
    #[inline]
    pub(crate) fn prefetch_slot(&self, hash: u64) {
        self.slot_hint(hash).prefetch(hash);
    }

    /// Append prefetching, second stage, once the slot has had time to
    /// arrive: the series it points to (the first with `hash`; labels are
    /// not compared), i.e. its reference count, id, symbol pointer and
    /// lock, and its open chunk's state.
    #[inline]
    pub(crate) fn prefetch_series(&self, hash: u64) {
        let table = self.hash_stripe(hash).table.read();
        if let Some(s) = table.first_with(hash) {
            // The allocation starts with the reference count.
            let start = (SeriesArc::as_ptr(s) as usize).wrapping_sub(8);
            let end = start + SERIES_ALLOC_BYTES;
            for line in (start & !63..end).step_by(64) {
                series_table::prefetch(line);
            }
        }
    }

    /// Append prefetching, third stage, once the series has had time to
    /// arrive: its label set's symbol ids, which the append compares, and
    /// the two places of its open XOR chunk that an append writes, the
    /// sample count at the start and the last byte, where the series
    /// noted them ([`MemSeries::note_chunk`]). Without this stage, the
    /// buffer is a cache miss on every append once the head outgrows the
    /// caches. (Fetching every line of the buffer instead costs more
    /// than it saves: the extra requests hold up the lookups' own.)
    ///
    /// Returns the series (the first with `hash`, labels not compared)
    /// for [`Head::handle_if_same`], so that the append itself need not
    /// take the stripe lock and probe the table again.
    #[inline]
    pub(crate) fn prefetch_chunk(&self, hash: u64) -> Option<SeriesArc> {
        let table = self.hash_stripe(hash).table.read();
        let s = table.first_with(hash)?;
        series_table::prefetch(s.syms.as_ptr() as usize);
        if let Some((start, last)) = s.chunk_hint() {
            series_table::prefetch(start);
            if last / 64 != start / 64 {
                series_table::prefetch(last);
            }
        }
        Some(s.clone())
    }

    /// A handle on `s`, a series [`Head::prefetch_chunk`] found by hash,
    /// when its labels are `labels` (`None`: look it up). It may have been
    /// removed since: the caller checks that under its lock, as for any
    /// handle.
    #[inline]
    pub(crate) fn handle_if_same(
        &self,
        s: SeriesArc,
        labels: &(impl SeriesLabels + ?Sized),
    ) -> Option<SeriesHandle> {
        self.symbols
            .matches(&s.syms, labels)
            .then(|| self.handle(s))
    }

    fn handle(&self, s: SeriesArc) -> SeriesHandle {
        // Fast path: nothing is waiting to be logged (the steady state), so
        // the shared `unlogged` lock is not touched on every sample.
        let needs_record = self.unlogged_len.load(Ordering::Acquire) != 0 && {
            let u = self.unlogged.read();
            u.get(&s.id).is_some_and(|f| !f.load(Ordering::Acquire))
        };
        SeriesHandle {
            series: s,
            needs_record,
            created: None,
        }
    }

    fn insert_locked(
        &self,
        table: &mut SeriesTable,
        id: u64,
        hash: u64,
        labels: &Labels,
    ) -> SeriesArc {
        let syms = self.symbols.intern_labels(labels);
        let s = SeriesArc::new(MemSeries::new(id, syms));
        table.insert(hash, s.clone(), self.slot_hint(hash));
        self.id_stripe(id).write().insert(id, s.clone());
        self.postings.add(id, &self.symbols.labels(&s.syms));
        self.num_series.fetch_add(1, Ordering::Relaxed);
        self.series_limits.count(labels, 1);
        s
    }

    /// Marks series definitions as durably logged.
    pub(crate) fn mark_logged(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let mut u = self.unlogged.write();
        for id in ids {
            if let Some(f) = u.remove(id) {
                f.store(true, Ordering::Release);
            }
        }
        self.unlogged_len.store(u.len(), Ordering::Release);
        if u.is_empty() && u.capacity() > 1024 {
            // A burst of new series (startup) left a large empty table.
            u.shrink_to_fit();
        }
    }

    /// Replay: (re)creates series `id` with `labels`. If the labels already
    /// exist under another id, `id` becomes an alias of it.
    pub(crate) fn replay_series(&self, id: u64, labels: &Labels) {
        self.next_id.fetch_max(id + 1, Ordering::Relaxed);
        if self.id_stripe(id).read().contains_key(&id) {
            return;
        }
        let hash = series_hash(labels);
        let stripe = self.hash_stripe(hash);
        let mut table = stripe.table.write();
        if let Some(s) = self.find_in(&table, hash, labels) {
            if s.id != id {
                self.aliases.write().insert(id, s.id);
            }
            return;
        }
        self.insert_locked(&mut table, id, hash, labels);
    }

    /// The series with WAL ref `id` (following aliases).
    pub(crate) fn series_by_ref(&self, id: u64) -> Option<SeriesArc> {
        if let Some(s) = self.id_stripe(id).read().get(&id) {
            return Some(s.clone());
        }
        let canon = *self.aliases.read().get(&id)?;
        self.id_stripe(canon).read().get(&canon).cloned()
    }

    /// Whether WAL ref `id` still names a live series (for checkpoints).
    pub(crate) fn has_ref(&self, id: u64) -> bool {
        self.id_stripe(id).read().contains_key(&id) || self.aliases.read().contains_key(&id)
    }

    /// The newest timestamp in the head (`i64::MIN` when empty).
    pub(crate) fn max_t(&self) -> i64 {
        self.max_t.load(Ordering::Acquire)
    }

    /// The oldest timestamp in the head (`i64::MAX` when empty).
    pub(crate) fn min_t(&self) -> i64 {
        self.min_t.load(Ordering::Acquire)
    }

    /// End of the time range already cut into blocks.
    pub(crate) fn min_valid(&self) -> i64 {
        self.min_valid.load(Ordering::Acquire)
    }

    pub(crate) fn set_min_valid(&self, t: i64) {
        self.min_valid.fetch_max(t, Ordering::AcqRel);
    }

    /// Records that samples in `[mint, maxt]` were appended.
    pub(crate) fn observe_times(&self, mint: i64, maxt: i64) {
        if mint <= maxt {
            self.min_t.fetch_min(mint, Ordering::AcqRel);
            self.max_t.fetch_max(maxt, Ordering::AcqRel);
        }
    }

    /// Appends one float sample with its start timestamp (0 = unknown)
    /// to `series`, whose locked state is `data`.
    pub(crate) fn append_locked_st(
        &self,
        series: &MemSeries,
        data: &mut series::SeriesData,
        t: i64,
        v: f64,
        st: i64,
    ) -> Result<Appended, Reject> {
        let sealed = data.chunks.len();
        let r = data.append_st(
            t,
            v,
            st,
            self.min_valid(),
            self.cfg.chunk_samples,
            self.cfg.block_range,
        );
        if data.chunks.len() > sealed {
            self.spill_sealed(series.id, data, sealed);
        }
        series.note_chunk(data);
        r
    }

    /// Appends one native histogram with its start timestamp (0 =
    /// unknown) to a locked series.
    pub(crate) fn append_histogram_locked_st(
        &self,
        id: u64,
        data: &mut series::SeriesData,
        t: i64,
        h: HistRef<'_>,
        st: i64,
    ) -> Result<Appended, Reject> {
        let sealed = data.chunks.len();
        let r = data.append_histogram_st(
            t,
            h,
            st,
            self.min_valid(),
            self.cfg.chunk_samples,
            self.cfg.block_range,
        );
        if data.chunks.len() > sealed {
            self.spill_sealed(id, data, sealed);
        }
        r
    }

    /// Moves the chunks an append just sealed (`data.chunks[from..]`) into
    /// the head chunk files, when the head has them. A chunk the files
    /// refuse stays in memory for [`Head::compact_chunks`].
    fn spill_sealed(&self, id: u64, data: &mut series::SeriesData, from: usize) {
        let Some(files) = &self.files else {
            return;
        };
        for c in data.chunks.iter_mut().skip(from) {
            let Some(bytes) = c.mem_data() else {
                continue;
            };
            if let Ok(at) = files.append(id, c.mint, c.maxt, c.encoding(), bytes) {
                *c = HeadChunk::file(c.mint, c.maxt, c.encoding(), at);
            }
        }
    }

    /// Writes out the head chunk files' buffered records (each
    /// maintenance tick).
    pub(crate) fn flush_chunk_files(&self) -> Result<()> {
        match &self.files {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }

    /// The head's inverted index (read-only use: statistics).
    pub(crate) fn postings(&self) -> &MemPostings {
        &self.postings
    }

    pub(crate) fn num_series(&self) -> u64 {
        self.num_series.load(Ordering::Relaxed)
    }

    /// All series, in no particular order.
    fn all_series(&self) -> Vec<SeriesArc> {
        let mut out = Vec::with_capacity(self.num_series() as usize);
        for st in self.by_id.iter() {
            out.extend(st.read().values().cloned());
        }
        out
    }

    /// Series ids matching `matchers` (all series when empty).
    fn matching(&self, matchers: &[Matcher]) -> Result<Vec<SeriesArc>> {
        if matchers.is_empty() {
            let mut v = self.all_series();
            v.sort_by_key(|s| s.id);
            return Ok(v);
        }
        let ids = select_postings(&self.postings, matchers)?;
        Ok(ids
            .into_iter()
            .filter_map(|id| self.id_stripe(id).read().get(&id).cloned())
            .collect())
    }

    fn tombstones_of(&self, id: u64) -> Vec<(i64, i64)> {
        self.tombstones.read().get(&id).cloned().unwrap_or_default()
    }

    /// Records deletions of `[mint, maxt]` for the given series ids.
    pub(crate) fn add_tombstones(&self, ids: &[u64], mint: i64, maxt: i64) {
        let mut t = self.tombstones.write();
        for &id in ids {
            let canon = self.series_by_ref(id).map_or(id, |s| s.id);
            let iv = t.entry(canon).or_default();
            iv.push((mint, maxt));
            merge_intervals(iv);
        }
    }

    /// Ids of series matching `matchers` with data overlapping `[mint, maxt]`.
    pub(crate) fn ids_for_delete(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<u64>> {
        Ok(self
            .matching(matchers)?
            .into_iter()
            .filter(|s| {
                s.data
                    .lock()
                    .time_range()
                    .is_some_and(|(lo, hi)| hi >= mint && lo <= maxt)
            })
            .map(|s| s.id)
            .collect())
    }

    /// Selects series with data in `[mint, maxt]`, sorted by labels.
    pub(crate) fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        labels_only: bool,
    ) -> Result<Vec<crate::querier::Series>> {
        // Series found, with their sealed chunks in the range (read after
        // the walk, all at once) and their other parts.
        let mut found = Vec::new();
        for s in self.matching(matchers)? {
            let mut sealed: Vec<HeadChunk> = Vec::new();
            let mut rest = Vec::new();
            {
                let d = s.data.lock();
                if d.removed() {
                    continue;
                }
                let Some((lo, hi)) = d.time_range() else {
                    continue;
                };
                if hi < mint || lo > maxt {
                    continue;
                }
                if !labels_only {
                    sealed.extend(
                        d.chunks
                            .iter()
                            .filter(|c| c.maxt >= mint && c.mint <= maxt)
                            .cloned(),
                    );
                    if let Some(c) = d.open_st_chunk() {
                        if c.maxt >= mint && c.mint <= maxt {
                            rest.push(c.to_part()?);
                        }
                    } else if let Some(a) = d.app() {
                        if let (Some(f), Some(l)) = (a.first_t(), a.last_t()) {
                            if l >= mint && f <= maxt {
                                rest.push(Part::Chunk {
                                    mint: f,
                                    maxt: l,
                                    encoding: Encoding::Xor as u8,
                                    data: Arc::from(a.bytes()),
                                });
                            }
                        }
                    }
                    if let Some(a) = d.happ().filter(|_| !d.has_open_st()) {
                        if let (Some(f), Some(l)) = (a.first_t(), a.last_t()) {
                            if l >= mint && f <= maxt {
                                rest.push(Part::Chunk {
                                    mint: f,
                                    maxt: l,
                                    encoding: a.encoding() as u8,
                                    data: Arc::from(a.bytes()),
                                });
                            }
                        }
                    }
                    let lo_i = d.ooo.partition_point(|x| x.0 < mint);
                    let hi_i = d.ooo.partition_point(|x| x.0 <= maxt);
                    if lo_i < hi_i {
                        rest.push(Part::Floats(Arc::from(&d.ooo[lo_i..hi_i])));
                    }
                }
            }
            found.push((s, sealed, rest));
        }
        // Chunks in head chunk files are read here, outside the series
        // locks (the handles keep their files readable), nearby records
        // with one read.
        let want: Vec<chunk_files::Want<'_>> = found
            .iter()
            .flat_map(|f| &f.1)
            .filter_map(|c| Some((c.file_chunk()?, c.mint, c.maxt, c.encoding())))
            .collect();
        let mut loaded = chunk_files::read_many(&want)?.into_iter();
        drop(want);
        let mut out = Vec::with_capacity(found.len());
        for (s, sealed, rest) in found {
            let mut parts = Vec::with_capacity(sealed.len() + rest.len());
            for c in &sealed {
                let data = match c.mem_data() {
                    Some(d) => d.clone(),
                    // `read_many` answered every file chunk, in order.
                    None => match loaded.next() {
                        Some(d) => d,
                        None => c.load()?,
                    },
                };
                parts.push(Part::Chunk {
                    mint: c.mint,
                    maxt: c.maxt,
                    encoding: c.encoding(),
                    data,
                });
            }
            parts.extend(rest);
            if parts.is_empty() && !labels_only {
                // The series spans the range but no chunk overlaps it.
                continue;
            }
            let ts = self.tombstones_of(s.id);
            if !ts.is_empty() && !labels_only {
                parts = apply_tombstones(parts, &ts, mint, maxt);
                if parts.is_empty() {
                    continue;
                }
            }
            out.push(crate::querier::Series {
                labels: self.symbols.labels(&s.syms),
                parts,
            });
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// Sorted label names (of matching series with data in the range).
    pub(crate) fn label_names(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>> {
        if matchers.is_empty()
            && self.overlaps(mint, maxt)
            && mint <= self.min_t()
            && maxt >= self.max_t()
        {
            return Ok(self.postings.label_names());
        }
        let mut names = std::collections::BTreeSet::new();
        for s in self.matching(matchers)? {
            if self.series_overlaps(&s, mint, maxt) {
                self.symbols.names_into(&s.syms, &mut names);
            }
        }
        Ok(names.into_iter().collect())
    }

    /// Sorted values of `name` (of matching series with data in the range).
    pub(crate) fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>> {
        if matchers.is_empty() && mint <= self.min_t() && maxt >= self.max_t() {
            return Ok(self.postings.label_values(name));
        }
        let mut vals = std::collections::BTreeSet::new();
        let ms: Vec<Matcher>;
        let sel = if matchers.is_empty() {
            ms = vec![
                Matcher::new(stratus_model::MatchType::RegexMatch, name, ".+").map_err(|e| {
                    crate::Error::Index {
                        message: e.to_string(),
                    }
                })?,
            ];
            &ms[..]
        } else {
            matchers
        };
        for s in self.matching(sel)? {
            if self.series_overlaps(&s, mint, maxt) {
                if let Some(v) = self.symbols.value_of(&s.syms, name) {
                    vals.insert(v.to_string());
                }
            }
        }
        Ok(vals.into_iter().collect())
    }

    fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.max_t() >= mint && self.min_t() <= maxt
    }

    fn series_overlaps(&self, s: &MemSeries, mint: i64, maxt: i64) -> bool {
        let d = s.data.lock();
        !d.removed()
            && d.time_range()
                .is_some_and(|(lo, hi)| hi >= mint && lo <= maxt)
    }

    /// Where the next block cut should end, if one is due: once the head
    /// spans more than 1.5 block ranges, everything before the last
    /// complete range boundary at least half a range behind the newest
    /// sample is cut. Also due when out-of-order samples sit below the
    /// last cut.
    pub(crate) fn cut_due(&self) -> Option<i64> {
        let max_t = self.max_t();
        let min_t = self.min_t();
        if max_t == i64::MIN || min_t == i64::MAX {
            return None;
        }
        let range = self.cfg.block_range;
        let end = window_start(max_t.saturating_sub(range / 2), range);
        (end > min_t).then_some(end)
    }

    /// Series sorted by label set (for writing a block).
    pub(crate) fn sorted_series(&self) -> Vec<SeriesArc> {
        let mut v = self.all_series();
        v.sort_by(|a, b| self.symbols.cmp_labels(&a.syms, &b.syms));
        v
    }

    /// Takes a copy of everything `s` holds before `cut_end` (sealing an
    /// open chunk that ends before it), chunks in memory (those in head
    /// chunk files are read, outside the series lock). Nothing is removed:
    /// see [`Head::truncate`].
    pub(crate) fn extract(&self, s: &MemSeries, cut_end: i64) -> Result<Option<Extracted>> {
        let mut d = s.data.lock();
        if d.removed() {
            return Ok(None);
        }
        let open_last = d
            .app()
            .and_then(|a| a.last_t())
            .or_else(|| d.happ().and_then(|a| a.last_t()));
        if open_last.is_some_and(|l| l < cut_end) {
            d.seal_open_chunk();
        }
        let chunks: Vec<HeadChunk> = d
            .chunks
            .iter()
            .filter(|c| c.maxt < cut_end)
            .cloned()
            .collect();
        let n = d.ooo.partition_point(|x| x.0 < cut_end);
        let ooo = d.ooo[..n].to_vec();
        drop(d);
        if chunks.is_empty() && ooo.is_empty() {
            return Ok(None);
        }
        let chunks = chunks
            .iter()
            .map(|c| {
                Ok(LoadedChunk {
                    mint: c.mint,
                    maxt: c.maxt,
                    encoding: c.encoding(),
                    data: c.load()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Extracted {
            labels: self.symbols.labels(&s.syms),
            chunks,
            ooo,
            tombstones: self.tombstones_of(s.id),
        }))
    }

    /// Drops what a block cut persisted: sealed chunks before `cut_end`, the
    /// out-of-order samples listed in `taken` (by series id), tombstones
    /// wholly before `cut_end`, and series left empty.
    pub(crate) fn truncate(&self, cut_end: i64, taken: &HashMap<u64, Vec<i64>>) {
        self.set_min_valid(cut_end);
        let mut min_t = i64::MAX;
        let mut max_t = i64::MIN;
        let mut removed = Vec::new();
        for s in self.all_series() {
            let mut d = s.data.lock();
            d.retain_chunks(|c| c.maxt >= cut_end);
            if let Some(ts) = taken.get(&s.id) {
                d.ooo.retain(|x| ts.binary_search(&x.0).is_err());
            }
            match d.time_range() {
                Some((lo, hi)) => {
                    min_t = min_t.min(lo);
                    max_t = max_t.max(hi);
                }
                None if d.is_empty() && d.last_t() < cut_end => {
                    d.remove();
                    removed.push(s.clone());
                }
                None => {}
            }
        }
        for s in &removed {
            // The label hash is not stored per series: recompute it.
            let hash = series_hash(&self.symbols.labels(&s.syms));
            self.hash_stripe(hash).table.write().remove(hash, s.id);
            self.id_stripe(s.id).write().remove(&s.id);
            self.num_series.fetch_sub(1, Ordering::Relaxed);
            self.series_limits.count(&self.symbols.labels(&s.syms), -1);
        }
        if !removed.is_empty() {
            let gone: Vec<(u64, Labels)> = removed
                .iter()
                .map(|s| (s.id, self.symbols.labels(&s.syms)))
                .collect();
            self.postings.delete_series(&gone);
        }
        if !removed.is_empty() {
            let gone: std::collections::HashSet<u64> = removed.iter().map(|s| s.id).collect();
            self.aliases
                .write()
                .retain(|_, canon| !gone.contains(canon));
            self.tombstones.write().retain(|id, _| !gone.contains(id));
        }
        {
            let mut t = self.tombstones.write();
            for iv in t.values_mut() {
                iv.retain(|&(_, hi)| hi >= cut_end);
            }
            t.retain(|_, iv| !iv.is_empty());
        }
        self.min_t.store(min_t, Ordering::Release);
        if max_t != i64::MIN {
            self.max_t.fetch_max(max_t, Ordering::AcqRel);
        }
    }

    /// Re-encodes sealed XOR chunks into compact chunks (one per
    /// block-range window, split at [`COMPACT_CHUNK_SAMPLES`]), which take a
    /// third or less of the memory, and, with head chunk files, moves them
    /// and every other sealed chunk still in memory (histogram chunks,
    /// chunks with start timestamps) into the files. Runs beside appends:
    /// chunks are copied out under the series lock, re-encoded without it,
    /// and swapped in only if the series still holds exactly those chunks.
    /// File writes are batched ([`SPILL_BATCH_BYTES`] per write) and a
    /// batch's chunks are swapped in only after its write. A failed write
    /// leaves the chunks in memory (logged; the next pass tries again).
    /// Returns the number of chunks replaced by re-encoding.
    pub(crate) fn compact_chunks(&self) -> usize {
        let range = self.cfg.block_range;
        let xor = Encoding::Xor as u8;
        if let Some(f) = &self.files {
            f.release_idle();
        }
        let mut replaced = 0;
        let mut batch = SpillBatch::default();
        for s in self.all_series() {
            let snap: Vec<HeadChunk> = {
                let d = s.data.lock();
                let todo = if self.files.is_some() {
                    d.chunks
                        .iter()
                        .any(|c| c.mem_data().is_some() || c.encoding() == xor)
                } else {
                    d.chunks.iter().any(|c| c.encoding() == xor)
                };
                if d.removed() || !todo {
                    continue;
                }
                d.chunks.to_vec()
            };
            let mut i = 0;
            while i < snap.len() {
                let w = window_start(snap[i].mint, range);
                let mut j = i;
                while j < snap.len() && window_start(snap[j].mint, range) == w {
                    j += 1;
                }
                let group = &snap[i..j];
                i = j;
                let fresh = reencode(group);
                match (fresh, &self.files) {
                    (Some(fresh), None) => {
                        let fresh = fresh.into_iter().map(|(mint, maxt, data)| {
                            HeadChunk::mem(mint, maxt, Encoding::Compact as u8, data.into())
                        });
                        if swap_chunks(&s, group, fresh) {
                            replaced += group.len();
                        }
                    }
                    (Some(fresh), Some(_)) => {
                        let recs = fresh
                            .iter()
                            .map(|(mint, maxt, data)| {
                                batch.add(s.id, *mint, *maxt, Encoding::Compact as u8, data)
                            })
                            .collect();
                        batch.swaps.push(Swap {
                            series: s.clone(),
                            old: group.to_vec(),
                            fresh: recs,
                            reencoded: true,
                        });
                    }
                    (None, Some(_)) => {
                        // Kept as they are: moved to the file one by one.
                        for c in group {
                            let Some(data) = c.mem_data() else {
                                continue;
                            };
                            let rec = batch.add(s.id, c.mint, c.maxt, c.encoding(), data);
                            batch.swaps.push(Swap {
                                series: s.clone(),
                                old: vec![c.clone()],
                                fresh: vec![rec],
                                reencoded: false,
                            });
                        }
                    }
                    (None, None) => {}
                }
                if batch.buf.len() >= SPILL_BATCH_BYTES {
                    replaced += self.flush_spill(&mut batch);
                }
            }
        }
        replaced += self.flush_spill(&mut batch);
        replaced
    }

    /// Writes a batch of chunk records to the head chunk files and swaps
    /// the written chunks into their series. Returns the chunks replaced
    /// by re-encoding.
    fn flush_spill(&self, batch: &mut SpillBatch) -> usize {
        let Some(files) = &self.files else {
            return 0;
        };
        if batch.swaps.is_empty() {
            return 0;
        }
        let written = files.write(&batch.buf);
        batch.buf.clear();
        let swaps = std::mem::take(&mut batch.swaps);
        let (seg, base) = match written {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "could not write head chunk file; sealed chunks stay in memory");
                return 0;
            }
        };
        let mut replaced = 0;
        for sw in swaps {
            let fresh = sw.fresh.iter().map(|r| {
                HeadChunk::file(
                    r.mint,
                    r.maxt,
                    r.encoding,
                    chunk_files::FileChunk {
                        seg: seg.clone(),
                        // `write` keeps every record of a segment below 4 GiB.
                        off: (base + r.off as u64) as u32,
                        len: r.len,
                    },
                )
            });
            if swap_chunks(&sw.series, &sw.old, fresh) && sw.reencoded {
                replaced += sw.old.len();
            }
        }
        replaced
    }

    /// Bytes in the head chunk files (live segments, dead records
    /// included); 0 without files.
    pub(crate) fn chunk_file_bytes(&self) -> u64 {
        self.files
            .as_ref()
            .map_or(0, chunk_files::ChunkFiles::disk_bytes)
    }

    /// Approximate bytes held by series data, index and symbols.
    pub(crate) fn approx_bytes(&self) -> usize {
        self.memory().total() as usize
    }

    /// Where the head's memory goes, estimated from capacities (see
    /// [`HeadMemory`]).
    pub(crate) fn memory(&self) -> HeadMemory {
        let mut m = HeadMemory::default();
        for s in self.all_series() {
            m.series += 1;
            // Arc header + struct.
            m.series_structs += SERIES_ALLOC_BYTES as u64;
            m.labels += s.syms.len() as u64;
            let d = s.data.lock();
            let (sealed, open, ooo) = d.heap_bytes();
            m.chunk_files += d.chunks.iter().map(|c| c.file_len() as u64).sum::<u64>();
            m.sealed_chunks += sealed as u64;
            m.open_chunks += open as u64;
            m.ooo += ooo as u64;
        }
        let map = |cap: usize, entry: usize| (cap * 8 / 7 * (entry + 1)) as u64;
        for st in self.by_hash.iter() {
            m.series_maps += (st.table.read().capacity() * 16) as u64;
        }
        for st in self.by_id.iter() {
            m.series_maps += map(st.read().capacity(), 16);
        }
        m.series_maps += map(self.unlogged.read().capacity(), 16);
        m.symbols = self.symbols.stats().1 as u64;
        m.postings = self.postings.approx_bytes() as u64;
        m
    }
}

/// Bytes of chunk records gathered before one write to a head chunk file.
const SPILL_BATCH_BYTES: usize = 4 << 20;

/// A chunk record placed in a [`SpillBatch`] buffer.
#[derive(Debug)]
struct SpillRec {
    mint: i64,
    maxt: i64,
    encoding: u8,
    /// Offset of the record in the batch buffer.
    off: usize,
    /// Data length.
    len: u32,
}

/// A run of a series' sealed chunks (`old`, as snapshotted) to replace by
/// chunks written to a head chunk file.
#[derive(Debug)]
struct Swap {
    series: SeriesArc,
    old: Vec<HeadChunk>,
    fresh: Vec<SpillRec>,
    reencoded: bool,
}

/// Chunk records waiting for one write, and where they go.
#[derive(Debug, Default)]
struct SpillBatch {
    buf: Vec<u8>,
    swaps: Vec<Swap>,
}

impl SpillBatch {
    fn add(&mut self, series: u64, mint: i64, maxt: i64, encoding: u8, data: &[u8]) -> SpillRec {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(SPILL_BATCH_BYTES + (64 << 10));
        }
        let off = chunk_files::encode_record(&mut self.buf, series, mint, maxt, encoding, data);
        SpillRec {
            mint,
            maxt,
            encoding,
            off,
            len: data.len() as u32,
        }
    }
}

/// The compact chunks replacing a window's sealed chunks `group`, when
/// it has XOR chunks to re-encode (and no start timestamps: the compact
/// encoding has no start-timestamp column, and no histograms). `None`
/// leaves the group's chunks as they are.
fn reencode(group: &[HeadChunk]) -> Option<Vec<(i64, i64, Vec<u8>)>> {
    let xor = Encoding::Xor as u8;
    if group.iter().all(|c| c.encoding() != xor)
        || group
            .iter()
            .any(|c| crate::chunks::is_st_encoding(c.encoding()))
    {
        return None;
    }
    let mut samples = Vec::new();
    for c in group {
        let data = match c.load() {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "head chunk unreadable; not re-encoding its window");
                return None;
            }
        };
        samples.extend(crate::chunks::decode_any(c.encoding(), &data).ok()?);
    }
    if samples.windows(2).any(|p| p[0].0 >= p[1].0) {
        return None;
    }
    Some(
        crate::compact::encode_compact_chunks(&samples, COMPACT_CHUNK_SAMPLES)
            .into_iter()
            .map(|(mint, maxt, _, data)| (mint, maxt, data))
            .collect(),
    )
}

/// Replaces the run `old` of `s`'s sealed chunks by `fresh` if the
/// series still holds exactly those chunks (a block cut or an append may
/// have changed them since they were copied). Returns whether it did.
fn swap_chunks(
    s: &MemSeries,
    old: &[HeadChunk],
    fresh: impl IntoIterator<Item = HeadChunk>,
) -> bool {
    let Some(first) = old.first() else {
        return false;
    };
    let mut d = s.data.lock();
    let Some(pos) = d.chunks.iter().position(|c| c.same(first)) else {
        return false;
    };
    let still = d.chunks.len() >= pos + old.len()
        && d.chunks[pos..pos + old.len()]
            .iter()
            .zip(old)
            .all(|(a, b)| a.same(b));
    if still {
        d.replace_chunks(pos..pos + old.len(), fresh);
    }
    still
}

/// Estimated heap bytes of a head, by part (from capacities, not counting
/// allocator rounding). Totals divided by [`HeadMemory::series`] give the
/// per-series breakdown of the engine benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadMemory {
    /// Series in the head.
    pub series: u64,
    /// Fixed-size series records (ids, hash, locks, chunk list headers).
    pub series_structs: u64,
    /// Label sets as symbol ids.
    pub labels: u64,
    /// Sealed chunks: encoded bytes held in memory plus per-chunk
    /// headers (every sealed chunk has one, in memory or in a file).
    pub sealed_chunks: u64,
    /// Data bytes of sealed chunks held in head chunk files (page cache,
    /// not heap; not part of [`HeadMemory::total`]).
    pub chunk_files: u64,
    /// Open (appendable) chunks: buffer capacity plus appender state.
    pub open_chunks: u64,
    /// Out-of-order sample buffers.
    pub ooo: u64,
    /// Hash maps finding series by label hash and by id.
    pub series_maps: u64,
    /// Distinct label strings.
    pub symbols: u64,
    /// The inverted index (postings lists and per-value entries).
    pub postings: u64,
}

impl HeadMemory {
    /// Sum of all parts.
    pub fn total(&self) -> u64 {
        self.series_structs
            + self.labels
            + self.sealed_chunks
            + self.open_chunks
            + self.ooo
            + self.series_maps
            + self.symbols
            + self.postings
    }
}

/// Sorts and merges overlapping/adjacent closed intervals in place.
pub(crate) fn merge_intervals(iv: &mut Vec<(i64, i64)>) {
    iv.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(iv.len());
    for &(lo, hi) in iv.iter() {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    *iv = out;
}

/// Whether `t` falls in one of the sorted, merged intervals.
pub(crate) fn is_deleted(t: i64, iv: &[(i64, i64)]) -> bool {
    let i = iv.partition_point(|&(_, hi)| hi < t);
    iv.get(i).is_some_and(|&(lo, _)| lo <= t)
}

/// Decodes `parts` and drops samples in deleted intervals (and outside
/// `[mint, maxt]`), returning one decoded part.
pub(crate) fn apply_tombstones(
    parts: Vec<Part>,
    iv: &[(i64, i64)],
    mint: i64,
    maxt: i64,
) -> Vec<Part> {
    let has_hist = parts.iter().any(Part::is_histogram);
    let s = crate::querier::Series {
        labels: Labels::empty(),
        parts,
    };
    let kept: Vec<(i64, f64)> = s
        .iter(mint, maxt)
        .filter(|x| !is_deleted(x.0, iv))
        .collect();
    let mut out = Vec::new();
    if !kept.is_empty() {
        out.push(Part::Floats(kept.into()));
    }
    if has_hist {
        // Histograms survive as decoded samples (an undecodable chunk
        // reads as empty here, as it would fail to read anyway).
        let hs: Vec<_> = crate::querier::merge_typed(&s.parts, mint, maxt)
            .unwrap_or_default()
            .into_iter()
            .filter(|x| x.1.is_histogram() && !is_deleted(x.0, iv))
            .collect();
        if !hs.is_empty() {
            out.push(Part::Histograms(hs.into()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fresh(pairs: &[(&str, &str)]) -> Labels {
        // New string allocations each time, as a decoded request has.
        Labels::from_pairs(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())))
    }

    #[test]
    fn get_or_create_finds_equal_labels_built_separately() {
        let head = Head::new(HeadConfig::default());
        let a = fresh(&[("__name__", "up"), ("job", "node"), ("instance", "a")]);
        let b = fresh(&[("__name__", "up"), ("job", "node"), ("instance", "b")]);
        let ha = head.get_or_create(&a);
        let hb = head.get_or_create(&b);
        assert_ne!(ha.series.id, hb.series.id);
        let again = head.get_or_create(&fresh(&[
            ("__name__", "up"),
            ("job", "node"),
            ("instance", "a"),
        ]));
        assert_eq!(again.series.id, ha.series.id);
        // A prefix or an extension of a label set is another series.
        let shorter = head.get_or_create(&fresh(&[("__name__", "up"), ("job", "node")]));
        let longer = head.get_or_create(&fresh(&[
            ("__name__", "up"),
            ("job", "node"),
            ("instance", "a"),
            ("zone", "z"),
        ]));
        let ids = [
            ha.series.id,
            hb.series.id,
            shorter.series.id,
            longer.series.id,
        ];
        let mut dedup = ids.to_vec();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(dedup.len(), 4, "{ids:?}");
        assert_eq!(head.num_series(), 4);
    }

    #[test]
    fn a_prefetched_series_is_used_only_when_its_labels_match() {
        let head = Head::new(HeadConfig::default());
        let a = fresh(&[("__name__", "x"), ("i", "1")]);
        let b = fresh(&[("__name__", "x"), ("i", "2")]);
        let ha = head.get_or_create(&a);
        let hash = series_hash(&a);
        let found = head.prefetch_chunk(hash).expect("series a is in the table");
        assert_eq!(found.id, ha.series.id);
        assert!(head.handle_if_same(found.clone(), &b).is_none());
        let h = head.handle_if_same(found, &a).expect("same labels");
        assert_eq!(h.series.id, ha.series.id);
        assert!(head.prefetch_chunk(series_hash(&b)).is_none());
    }

    #[test]
    fn find_in_resolves_hash_collisions_by_label_comparison() {
        let head = Head::new(HeadConfig::default());
        let a = fresh(&[("__name__", "x"), ("i", "1")]);
        let b = fresh(&[("__name__", "x"), ("i", "2")]);
        let c = fresh(&[("__name__", "x"), ("i", "3")]);
        let fake = 42u64;
        let stripe = head.hash_stripe(fake);
        let mut table = stripe.table.write();
        let sa = head.insert_locked(&mut table, 1, fake, &a);
        let sb = head.insert_locked(&mut table, 2, fake, &b);
        assert_eq!(table.len(), 2);
        assert_eq!(head.find_in(&table, fake, &a).map(|s| s.id), Some(sa.id));
        assert_eq!(head.find_in(&table, fake, &b).map(|s| s.id), Some(sb.id));
        assert!(head.find_in(&table, fake, &c).is_none());
        assert!(head.find_in(&table, fake + 1, &a).is_none());
    }

    #[test]
    fn symbols_match_compares_names_values_and_length() {
        let head = Head::new(HeadConfig::default());
        let l = fresh(&[("__name__", "m"), ("a", "1"), ("b", "2")]);
        let syms = head.symbols.intern_labels(&l);
        assert!(head.symbols.matches(&syms, &l));
        assert!(
            head.symbols
                .matches(&syms, &fresh(&[("__name__", "m"), ("a", "1"), ("b", "2")]))
        );
        for other in [
            fresh(&[("__name__", "m"), ("a", "1"), ("b", "3")]),
            fresh(&[("__name__", "m"), ("a", "1"), ("c", "2")]),
            fresh(&[("__name__", "m"), ("a", "1")]),
            fresh(&[("__name__", "m"), ("a", "1"), ("b", "2"), ("c", "3")]),
            Labels::empty(),
        ] {
            assert!(!head.symbols.matches(&syms, &other), "{other}");
        }
        // Unknown symbol ids never match.
        assert!(
            !head
                .symbols
                .matches(&symbols::encode(&[9999, 9998]), &fresh(&[("a", "b")]))
        );
    }

    #[test]
    fn series_hash_spreads_similar_label_sets() {
        // node_exporter-like sets differing in one short value: no
        // collisions, and the stripe index (low bits) is well spread.
        let mut seen = std::collections::HashSet::new();
        let mut stripes = vec![0u32; STRIPES];
        for i in 0..20_000 {
            let l = Labels::from_pairs([
                ("__name__", "node_cpu_seconds_total".to_string()),
                ("cpu", (i % 64).to_string()),
                ("instance", format!("host-{:05}:9100", i / 64)),
                ("job", "node".to_string()),
            ]);
            let h = series_hash(&l);
            assert!(seen.insert(h));
            stripes[(h as usize) % STRIPES] += 1;
        }
        let max = *stripes.iter().max().unwrap();
        assert!(max < 3 * 20_000 / STRIPES as u32, "max per stripe {max}");
    }

    #[test]
    fn borrowed_and_owned_labels_hash_and_find_alike() {
        let head = Head::new(HeadConfig::default());
        let sets: [&[(&str, &str)]; 4] = [
            &[("__name__", "up"), ("job", "node")],
            &[("__name__", "up"), ("job", "nod"), ("x", "e")],
            &[
                ("__name__", "node_cpu_seconds_total"),
                ("cpu", "12345678901"),
            ],
            &[("__name__", "a".repeat(100).leak())],
        ];
        for pairs in sets {
            let owned = fresh(pairs);
            assert_eq!(series_hash(pairs), series_hash(&owned), "{owned}");
            assert_eq!(series_hash(&pairs), series_hash(&&owned));
        }
        // Created from borrowed pairs: the handle carries the owned set,
        // and the owned form finds the same series (and vice versa).
        let pairs: &[(&str, &str)] = &[("__name__", "up"), ("job", "node")];
        let h = head.get_or_create(pairs);
        assert_eq!(h.created, Some(fresh(pairs)));
        let again = head.get_or_create(&fresh(pairs));
        assert_eq!(again.series.id, h.series.id);
        assert!(again.created.is_none());
        let owned = fresh(&[("__name__", "up"), ("job", "other")]);
        let o = head.get_or_create(&owned);
        let b = head.get_or_create(&[("__name__", "up"), ("job", "other")][..]);
        assert_eq!(o.series.id, b.series.id);
        assert!(b.created.is_none());
        // A prefix or an extension is another series.
        let short = head.get_or_create(&[("__name__", "up")][..]);
        assert_ne!(short.series.id, h.series.id);
        let long = head.get_or_create(&[("__name__", "up"), ("job", "node"), ("z", "1")][..]);
        assert_ne!(long.series.id, h.series.id);
    }

    #[test]
    fn per_metric_series_counts_follow_creation_and_gc() {
        let head = Head::new(HeadConfig::default());
        head.set_series_limits(0, 2);
        let a1 = fresh(&[("__name__", "a"), ("i", "1")]);
        let a2 = fresh(&[("__name__", "a"), ("i", "2")]);
        let a3 = fresh(&[("__name__", "a"), ("i", "3")]);
        head.get_or_create(&a1);
        head.get_or_create(&a2);
        assert_eq!(
            head.series_limit_hit(&a3),
            Some(RejectReason::MaxSeriesPerMetric)
        );
        assert_eq!(head.series_limit_hit(&a1), None, "existing series");
        // Empty series are dropped by a cut: the counts follow.
        head.truncate(1000, &HashMap::new());
        assert_eq!(head.num_series(), 0);
        assert!(head.series_limits.per_metric.lock().is_empty());
        assert_eq!(head.series_limit_hit(&a3), None);
    }

    #[test]
    fn needs_record_until_logged() {
        let head = Head::new(HeadConfig::default());
        let l = fresh(&[("__name__", "m")]);
        let h = head.get_or_create(&l);
        assert!(h.needs_record);
        // A second appender racing the first also logs the definition.
        assert!(head.get_or_create(&l).needs_record);
        let other = head.get_or_create(&fresh(&[("__name__", "n")]));
        head.mark_logged(&[h.series.id]);
        assert!(!head.get_or_create(&l).needs_record);
        assert!(
            head.get_or_create(&fresh(&[("__name__", "n")]))
                .needs_record
        );
        head.mark_logged(&[other.series.id]);
        assert!(
            !head
                .get_or_create(&fresh(&[("__name__", "n")]))
                .needs_record
        );
        // Replayed series are already in the WAL.
        head.replay_series(77, &fresh(&[("__name__", "r")]));
        let r = head.get_or_create(&fresh(&[("__name__", "r")]));
        assert_eq!(r.series.id, 77);
        assert!(!r.needs_record);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn series_hash_is_a_function_of_the_labels(
            pairs in proptest::collection::btree_map("[a-z_]{1,12}", ".{1,40}", 1..12)
        ) {
            let a = Labels::from_pairs(pairs.clone());
            let b = Labels::from_pairs(pairs.iter().map(|(n, v)| (n.clone(), v.clone())));
            prop_assert_eq!(series_hash(&a), series_hash(&b));
            // Moving a byte across a name/value boundary changes the hash.
            let (n, v) = pairs.iter().next().unwrap();
            let shifted = Labels::from_pairs(
                pairs.iter().map(|(k, x)| if k == n {
                    (format!("{k}{}", x.chars().next().unwrap()), x.chars().skip(1).collect::<String>())
                } else {
                    (k.clone(), x.clone())
                }),
            );
            if shifted.len() == a.len() && shifted.get(&format!("{n}{}", v.chars().next().unwrap())).is_some() {
                prop_assert_ne!(series_hash(&shifted), series_hash(&a));
            }
        }
    }
}
