//! The write-ahead log of one tenant's database.
//!
//! Samples are acknowledged to clients only after [`Wal::log`] returned, so
//! this module is the durability core: every acknowledged sample is in a
//! segment file (at least in the page cache, which survives a process kill;
//! on disk too, depending on the [`FsyncPolicy`]) before `log` returns.
//!
//! Layout (byte format in `docs/format/wal.md`): a directory of segment
//! files named by zero-padded index (`00000001`, ...), each a header followed
//! by checksummed record frames, rotated at [`WalConfig::segment_size`];
//! plus at most one live `checkpoint.<N>` directory (same segment format)
//! that replaces segments `<= N`.
//!
//! Design choices:
//! - One `write(2)` per [`Wal::log`] call, encoded into a buffer reused
//!   under the WAL's mutex; no per-sample allocation.
//! - [`Wal::open`] never appends to an existing segment: it cuts off a torn
//!   tail of the newest one and starts a fresh segment, so a segment written
//!   by an earlier process is never extended and corruption stays local.
//! - Replay truncates a torn tail of the last segment by itself and refuses
//!   any other corruption unless repair is requested ([`replay`]).
//! - Checkpoints are built in a `.tmp` directory and renamed into place, and
//!   read only closed segments, so appends continue meanwhile.

mod checkpoint;
mod error;
mod reader;
mod record;
mod segment;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use snafu::ResultExt;
use stratus_model::Labels;

pub use error::Error;
pub use reader::{fuzz_wal_read, replay};

use error::{CheckpointOpenSegmentSnafu, CreateDirSnafu, RemoveSnafu};
use segment::{HEADER_LEN, SegmentWriter};

/// When the WAL fsyncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before [`Wal::log`] returns, under the WAL's lock, so an
    /// acknowledged sample survives power loss. Concurrent writers queue on
    /// the lock; each pays one fsync.
    Always,
    /// `write(2)` before `log` returns (survives a process kill) and fsync at
    /// most once per interval, triggered by `log` or by
    /// [`Wal::sync_if_due`] from a background ticker during idle periods. A
    /// power loss can lose up to one interval of acknowledged samples.
    Interval(Duration),
    /// `write(2)` only; the OS decides when data reaches the disk. Segments
    /// are still fsynced when closed.
    Never,
}

impl Default for FsyncPolicy {
    /// `Interval(1s)`.
    fn default() -> Self {
        Self::Interval(Duration::from_secs(1))
    }
}

/// Configuration of a [`Wal`].
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// A segment is closed and the next one started when a write would
    /// take it past this many bytes (default 128 MiB). A single record
    /// larger than this gets a segment of its own.
    pub segment_size: u64,
    /// When to fsync (default `Interval(1s)`).
    pub fsync: FsyncPolicy,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            segment_size: 128 << 20,
            fsync: FsyncPolicy::default(),
        }
    }
}

/// A series definition: the reference samples use, and its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct RefSeries {
    pub sref: u64,
    pub labels: Labels,
}

/// A float sample of a series. Values are stored bit-exactly (NaN payloads,
/// the staleness marker).
#[derive(Clone, Copy, Debug)]
pub struct RefSample {
    pub sref: u64,
    pub t: i64,
    pub v: f64,
}

/// The start ("created") timestamp `st` of the sample of series `sref`
/// at `t` (a float or histogram sample logged after it in the same write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefStartTimestamp {
    pub sref: u64,
    pub t: i64,
    pub st: i64,
}

/// An integer native histogram sample of a series.
#[derive(Clone, Debug, PartialEq)]
pub struct RefHistogram {
    pub sref: u64,
    pub t: i64,
    pub h: stratus_model::Histogram,
}

/// A float native histogram sample of a series.
#[derive(Clone, Debug, PartialEq)]
pub struct RefFloatHistogram {
    pub sref: u64,
    pub t: i64,
    pub h: stratus_model::FloatHistogram,
}

/// A deletion of a series' samples in `[mint, maxt]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefTombstone {
    pub sref: u64,
    pub mint: i64,
    pub maxt: i64,
}

/// One WAL record.
#[derive(Debug, Clone)]
pub enum Record {
    Series(Vec<RefSeries>),
    Samples(Vec<RefSample>),
    Tombstones(Vec<RefTombstone>),
    /// Metric family metadata (name, latest type/help/unit); format
    /// version 2.
    Metadata(Vec<(String, crate::metadata::MetricMetadata)>),
    /// Integer native histogram samples; format version 3.
    Histograms(Vec<RefHistogram>),
    /// Float native histogram samples; format version 3.
    FloatHistograms(Vec<RefFloatHistogram>),
    /// Exemplars with their series' labels, in the order they were
    /// stored; format version 4.
    Exemplars(Vec<(stratus_model::Labels, stratus_model::Exemplar)>),
    /// Start timestamps of samples logged by the records that follow in
    /// the same write; format version 5.
    StartTimestamps(Vec<RefStartTimestamp>),
}

/// Options of [`replay`].
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Truncate segments at corruption and continue instead of failing
    /// (data after the corruption in that segment is lost). Default false.
    pub repair: bool,
}

/// What [`replay`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// WAL segments read (after the checkpoint).
    pub segments: usize,
    /// Segment files read inside the checkpoint.
    pub checkpoint_segments: usize,
    pub records: u64,
    pub samples: u64,
    pub series: u64,
    pub tombstones: u64,
    /// Bytes cut off by tail truncation or repair.
    pub truncated_bytes: u64,
    /// Index of the checkpoint replayed first, if any.
    pub checkpoint: Option<u64>,
    /// Corruptions repaired (only with `repair`).
    pub repaired: usize,
}

/// What [`Wal::checkpoint`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// The checkpoint's index: it covers segments `<= through`.
    pub through: u64,
    /// WAL segments read (besides the previous checkpoint).
    pub segments_read: usize,
    pub series_kept: u64,
    pub series_dropped: u64,
    pub samples_kept: u64,
    pub samples_dropped: u64,
    pub tombstones_kept: u64,
    pub tombstones_dropped: u64,
    /// Exemplars kept (the newest `max_exemplars` of the input).
    pub exemplars_kept: u64,
    pub exemplars_dropped: u64,
    /// Size of the new checkpoint.
    pub bytes_written: u64,
    pub segments_deleted: usize,
    pub checkpoints_deleted: usize,
}

/// The write-ahead log. `Send + Sync`: share it behind an `Arc`.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    cfg: WalConfig,
    inner: Mutex<Inner>,
    /// Mirror of the current segment index, readable without the lock.
    current: AtomicU64,
    /// Serializes checkpoints.
    checkpointing: Mutex<()>,
}

#[derive(Debug)]
struct Inner {
    seg: SegmentWriter,
    /// Reused encode buffer.
    buf: Vec<u8>,
    last_sync: Instant,
    /// Data written since the last fsync.
    dirty: bool,
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir`. Removes leftover
    /// temporary checkpoints, cuts a torn tail off the newest segment and
    /// always starts a new segment after the highest existing segment or
    /// checkpoint; fsyncs the directory.
    pub fn open(dir: &Path, cfg: WalConfig) -> Result<Wal, Error> {
        if !dir.is_dir() {
            std::fs::create_dir_all(dir).context(CreateDirSnafu { path: dir })?;
            // Make the new directory's entry durable too.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                segment::sync_dir(parent)?;
            }
        }
        let listing = segment::list_dir(dir)?;
        for tmp in &listing.tmp {
            tracing::warn!(path = %tmp.display(), "WAL: removing leftover temporary checkpoint");
            std::fs::remove_dir_all(tmp).context(RemoveSnafu { path: tmp })?;
        }
        let last_cp = listing.checkpoints.last().map(|c| c.0);
        let last_seg = listing.segments.last();
        if let Some((index, path)) = last_seg {
            if last_cp.is_none_or(|c| *index > c) {
                repair_tail(path)?;
            }
        }
        let next = last_seg.map(|s| s.0).max(last_cp).map_or(1, |i| i + 1);
        let seg = SegmentWriter::create(dir, next)?;
        segment::sync_dir(dir)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            cfg,
            inner: Mutex::new(Inner {
                seg,
                buf: Vec::with_capacity(64 << 10),
                last_sync: Instant::now(),
                dirty: false,
            }),
            current: AtomicU64::new(next),
            checkpointing: Mutex::new(()),
        })
    }

    /// Logs series definitions and samples (series first) with one write;
    /// empty slices are skipped. When this returns `Ok` the data survives a
    /// process kill (and, with [`FsyncPolicy::Always`], power loss).
    /// Thread-safe.
    pub fn log(&self, series: &[RefSeries], samples: &[RefSample]) -> Result<(), Error> {
        self.log_with_histograms(series, samples, &[], &[])
    }

    /// [`Wal::log`] with native histogram samples too (records: series,
    /// float samples, histograms, float histograms), still one write.
    pub fn log_with_histograms(
        &self,
        series: &[RefSeries],
        samples: &[RefSample],
        histograms: &[RefHistogram],
        float_histograms: &[RefFloatHistogram],
    ) -> Result<(), Error> {
        if series.is_empty()
            && samples.is_empty()
            && histograms.is_empty()
            && float_histograms.is_empty()
        {
            return Ok(());
        }
        self.append(|buf| {
            if !series.is_empty() {
                record::encode_series(buf, series)?;
            }
            if !samples.is_empty() {
                record::encode_samples(buf, samples)?;
            }
            if !histograms.is_empty() {
                record::encode_histograms(buf, histograms)?;
            }
            if !float_histograms.is_empty() {
                record::encode_float_histograms(buf, float_histograms)?;
            }
            Ok(())
        })
    }

    /// [`Wal::log_with_histograms`] with the start timestamps of some of
    /// the samples, logged first in the same write (replay applies them
    /// to the samples that follow).
    pub fn log_with_start_timestamps(
        &self,
        series: &[RefSeries],
        sts: &[RefStartTimestamp],
        samples: &[RefSample],
        histograms: &[RefHistogram],
        float_histograms: &[RefFloatHistogram],
    ) -> Result<(), Error> {
        if sts.is_empty() {
            return self.log_with_histograms(series, samples, histograms, float_histograms);
        }
        self.append(|buf| {
            if !series.is_empty() {
                record::encode_series(buf, series)?;
            }
            record::encode_start_timestamps(buf, sts)?;
            if !samples.is_empty() {
                record::encode_samples(buf, samples)?;
            }
            if !histograms.is_empty() {
                record::encode_histograms(buf, histograms)?;
            }
            if !float_histograms.is_empty() {
                record::encode_float_histograms(buf, float_histograms)?;
            }
            Ok(())
        })
    }

    /// Logs tombstones.
    pub fn log_tombstones(&self, t: &[RefTombstone]) -> Result<(), Error> {
        if t.is_empty() {
            return Ok(());
        }
        self.append(|buf| record::encode_tombstones(buf, t))
    }

    /// Logs metric family metadata.
    pub fn log_metadata(
        &self,
        m: &[(String, crate::metadata::MetricMetadata)],
    ) -> Result<(), Error> {
        if m.is_empty() {
            return Ok(());
        }
        self.append(|buf| record::encode_metadata(buf, m))
    }

    /// Logs exemplars (with their series' labels).
    pub fn log_exemplars(
        &self,
        e: &[(stratus_model::Labels, stratus_model::Exemplar)],
    ) -> Result<(), Error> {
        if e.is_empty() {
            return Ok(());
        }
        self.append(|buf| record::encode_exemplars(buf, e))
    }

    fn append(&self, encode: impl FnOnce(&mut Vec<u8>) -> Result<(), Error>) -> Result<(), Error> {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        inner.buf.clear();
        encode(&mut inner.buf)?;
        let seg = &inner.seg;
        if seg.broken
            || (seg.size > HEADER_LEN && seg.size + inner.buf.len() as u64 > self.cfg.segment_size)
        {
            self.rotate_locked(inner)?;
        }
        inner.seg.write(&inner.buf)?;
        inner.dirty = true;
        if inner.buf.capacity() > (4 << 20) {
            // Do not keep a huge one-off batch's buffer around.
            inner.buf = Vec::with_capacity(64 << 10);
        }
        match self.cfg.fsync {
            FsyncPolicy::Always => {
                let res = inner.seg.sync();
                Self::after_sync(inner, res)
            }
            FsyncPolicy::Interval(d) if inner.last_sync.elapsed() >= d => self.sync_unlocked(g),
            _ => Ok(()),
        }
    }

    fn after_sync(inner: &mut Inner, res: Result<(), Error>) -> Result<(), Error> {
        match res {
            Ok(()) => {
                inner.dirty = false;
                inner.last_sync = Instant::now();
                Ok(())
            }
            Err(e) => {
                // After a failed fsync the page cache state is unknown:
                // never write to this segment again.
                inner.seg.broken = true;
                Err(e)
            }
        }
    }

    /// Marks the current segment synced, releases the lock and fsyncs it,
    /// so appends proceed during the fsync.
    fn sync_unlocked(&self, mut g: parking_lot::MutexGuard<'_, Inner>) -> Result<(), Error> {
        let file = Arc::clone(&g.seg.file);
        let path = g.seg.path.clone();
        g.dirty = false;
        g.last_sync = Instant::now();
        drop(g);
        let res = file
            .sync_data()
            .context(error::SyncFileSnafu { path: &path });
        if res.is_err() {
            let mut g = self.inner.lock();
            if g.seg.path == path {
                g.seg.broken = true;
            }
            g.dirty = true;
        }
        res
    }

    /// fsyncs the current segment now.
    pub fn sync(&self) -> Result<(), Error> {
        let g = self.inner.lock();
        self.sync_unlocked(g)
    }

    /// With [`FsyncPolicy::Interval`], fsyncs if data was written and the
    /// interval has passed since the last fsync; otherwise does nothing.
    /// Meant for a background ticker, so idle periods do not leave
    /// acknowledged data unsynced.
    pub fn sync_if_due(&self) -> Result<(), Error> {
        let FsyncPolicy::Interval(d) = self.cfg.fsync else {
            return Ok(());
        };
        let g = self.inner.lock();
        if g.dirty && g.last_sync.elapsed() >= d {
            self.sync_unlocked(g)
        } else {
            Ok(())
        }
    }

    /// Closes (fsyncs) the current segment and starts the next; returns the
    /// new segment's index.
    pub fn rotate(&self) -> Result<u64, Error> {
        let mut g = self.inner.lock();
        self.rotate_locked(&mut g)?;
        Ok(g.seg.index)
    }

    fn rotate_locked(&self, inner: &mut Inner) -> Result<(), Error> {
        if let Err(e) = inner.seg.sync() {
            if !inner.seg.broken {
                return Err(e);
            }
            tracing::warn!(error = %e, "WAL: fsync of a broken segment failed while rotating");
        }
        let next = inner.seg.index + 1;
        let seg = SegmentWriter::create(&self.dir, next)?;
        segment::sync_dir(&self.dir)?;
        inner.seg = seg;
        inner.dirty = false;
        inner.last_sync = Instant::now();
        self.current.store(next, Ordering::Release);
        Ok(())
    }

    /// Index of the segment being written.
    pub fn current_segment(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }

    /// Compacts the log: writes `checkpoint.<through>` containing the
    /// previous checkpoint plus all segments `<= through`, keeping only
    /// series records for which `keep_series(sref)` is true, samples with
    /// `t >= min_t` whose series are kept, and tombstones of kept series.
    /// Crash-safe (built in `checkpoint.<through>.tmp`, files fsynced,
    /// renamed, directory fsynced); then deletes segments `<= through` and
    /// older checkpoints. Reads only closed segments and does not hold the
    /// append lock, so concurrent [`Wal::log`] calls proceed. `through` must
    /// be below [`Wal::current_segment`] and above any existing checkpoint.
    /// Exemplar records are all kept; see
    /// [`Wal::checkpoint_with_exemplars`].
    pub fn checkpoint(
        &self,
        through: u64,
        keep_series: &dyn Fn(u64) -> bool,
        min_t: i64,
    ) -> Result<CheckpointStats, Error> {
        self.checkpoint_with_exemplars(through, keep_series, min_t, usize::MAX)
    }

    /// [`Wal::checkpoint`] keeping only the newest `max_exemplars`
    /// exemplars of its input (the ones an exemplar ring of that capacity
    /// still holds), written after all other records in their original
    /// order.
    pub fn checkpoint_with_exemplars(
        &self,
        through: u64,
        keep_series: &dyn Fn(u64) -> bool,
        min_t: i64,
        max_exemplars: usize,
    ) -> Result<CheckpointStats, Error> {
        let _serial = self.checkpointing.lock();
        let current = self.current_segment();
        if through >= current {
            return CheckpointOpenSegmentSnafu { through, current }.fail();
        }
        checkpoint::checkpoint(
            &self.dir,
            self.cfg.segment_size,
            through,
            keep_series,
            min_t,
            max_exemplars,
        )
    }

    /// The WAL directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Total bytes on disk (segments and checkpoints), best effort.
    pub fn size_bytes(&self) -> u64 {
        let Ok(listing) = segment::list_dir(&self.dir) else {
            return 0;
        };
        let segs: u64 = listing
            .segments
            .iter()
            .filter_map(|(_, p)| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        let cps: u64 = listing
            .checkpoints
            .iter()
            .map(|(_, p)| checkpoint::dir_bytes(p))
            .sum();
        segs + cps
    }
}

impl Drop for Wal {
    /// Best-effort fsync of unsynced data on a clean shutdown (not with
    /// [`FsyncPolicy::Never`]).
    fn drop(&mut self) {
        let inner = self.inner.get_mut();
        if inner.dirty && self.cfg.fsync != FsyncPolicy::Never {
            if let Err(e) = inner.seg.sync() {
                tracing::warn!(error = %e, "WAL: fsync on close failed");
            }
        }
    }
}

/// Cuts a torn tail (interrupted write) off `path` so that the segment can
/// safely sit before a new one. Checks framing and checksums only; a hard
/// corruption is left in place for [`replay`] to report.
fn repair_tail(path: &Path) -> Result<(), Error> {
    let (file, len) = reader::open_segment(path)?;
    let mut ok = |_: reader::Item, _: u64| Ok(());
    if let Some(stop) = reader::read_segment(file, len, path, false, &mut ok)? {
        if stop.torn {
            tracing::warn!(
                path = %path.display(),
                offset = stop.offset,
                bytes_dropped = len - stop.offset,
                reason = %stop.reason,
                "WAL: truncating torn tail of the newest segment"
            );
            reader::truncate(path, stop.offset)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
