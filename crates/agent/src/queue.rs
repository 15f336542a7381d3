//! The durable on-disk queue between scraping and sending: one per
//! remote-write endpoint.
//!
//! A queue is a directory of numbered, append-only segment files holding
//! CRC-32C-framed records (one encoded [`Batch`] each) and a `cursor` file
//! with the position up to which the endpoint acknowledged everything. The
//! byte format is in `docs/format/agent-queue.md`.
//!
//! Guarantees:
//!
//! - [`Queue::append_batch`] (and the [`Sink`] impl) returns after the
//!   record is written to the segment file, so a killed process (kill -9)
//!   loses nothing appended. With [`FsyncPolicy::Interval`] (the default)
//!   segment data is fsynced at most once per interval (1 s) by a
//!   background thread, plus on every segment roll and on close: an
//!   operating-system crash or power loss can lose up to that interval.
//!   [`FsyncPolicy::Always`] fsyncs before every append returns.
//! - Reading is at-least-once: the consumer (the endpoint's sender) reads
//!   records in order with a [`QueueReader`] and calls [`Queue::commit`]
//!   once a prefix is acknowledged. The cursor file holds two slots
//!   overwritten in place in turn (the newer valid one wins on open); the
//!   cursor is written at most every 100 ms when it moved and on close,
//!   and fsynced on close and otherwise at the segment data's cadence (at
//!   most once per interval when it moved, or every write with
//!   [`FsyncPolicy::Always`]). After a restart reading resumes at the
//!   cursor, so only what was sent but not yet acknowledged, plus what
//!   was acknowledged in the last ≤ 100 ms, is sent again.
//! - Kill -9 vs. power loss: a killed process loses nothing appended and
//!   its last cursor write (in the page cache) survives: it re-sends at
//!   most ~100 ms of acknowledged data. After an operating-system crash or
//!   power loss the segments may lose up to the fsync interval of
//!   appended data, and the cursor found is at least the one of the write
//!   before the last fsync (a slot torn mid-write fails its CRC and the
//!   other slot is used): at most about the fsync interval plus 100 ms of
//!   acknowledged data is re-sent (remote write accepts duplicates), and
//!   nothing acknowledged is lost because of the cursor.
//! - A disk budget bounds the segment files; past it the oldest segments
//!   are deleted (even if unsent), counted in
//!   `stratus_agent_queue_dropped_samples_total` and logged.
//! - A torn tail (a partial last record after a crash) is truncated with a
//!   warning on open; a corrupt record elsewhere makes the reader skip the
//!   rest of its segment with an error log. Nothing on disk can panic.
//!
//! One queue owns its directory at a time (an exclusive `flock` on
//! `<dir>/lock`; a second open fails with [`QueueError::Locked`]).

mod codec;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use snafu::{ResultExt, Snafu};
use tracing::{error, warn};

use crate::remote::metrics::{PushMetrics, QueueHandles};
use crate::sink::{Batch, Metadata, Sink, SinkError};
use stratus_model::Sample;

/// Bytes of a segment file header (`STRQ`, version, 3 zero bytes).
pub const SEGMENT_HEADER: u64 = 8;
const SEGMENT_MAGIC: &[u8; 4] = b"STRQ";
const CURSOR_MAGIC: &[u8; 4] = b"STRC";
const FORMAT_VERSION: u8 = 1;
const CURSOR_FILE: &str = "cursor";
/// The cursor file of versions before the two-slot cursor; deleted on open.
const CURSOR_TMP: &str = "cursor.tmp";
const CURSOR_LEN: usize = 28;
/// Offset of the cursor file's second slot (the first is at 0): another
/// disk sector, so a write torn at a sector boundary spoils one slot only.
const CURSOR_SLOT_2: u64 = 512;
/// How often the background thread looks for work (cursor, fsync).
const TICK: Duration = Duration::from_millis(100);

/// Errors of the queue.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum QueueError {
    /// The queue directory could not be created or listed.
    #[snafu(display("queue directory {}: {source}", path.display()))]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A segment file could not be opened, read, written or synced.
    #[snafu(display("queue segment {}: {source}", path.display()))]
    Segment {
        /// The segment file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// One batch encodes larger than a record may be.
    #[snafu(display("batch of {bytes} bytes exceeds the queue's record limit of 64 MiB"))]
    RecordTooLarge {
        /// Encoded size.
        bytes: usize,
    },
    /// Another process (or queue in this process) has the directory open.
    #[snafu(display("queue directory {} is in use by another agent", path.display()))]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// A second reader was requested.
    #[snafu(display("queue {name} already has a reader"))]
    ReaderTaken {
        /// The queue's name.
        name: String,
    },
}

/// Result alias of the queue.
pub type Result<T, E = QueueError> = std::result::Result<T, E>;

/// A position in a queue: segment number and byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// Segment number (the file name).
    pub segment: u64,
    /// Byte offset in the segment.
    pub offset: u64,
}

/// When segment data is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// At most once per this interval, from a background thread (and on
    /// every segment roll and on close). Default: 1 s.
    Interval(Duration),
    /// Before every append returns.
    Always,
}

/// Settings of one queue.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The directory (created if missing). One per endpoint.
    pub dir: PathBuf,
    /// Target segment size in bytes (default 16 MiB). Clamped to a quarter
    /// of `max_bytes` so the budget can drop whole segments.
    pub segment_bytes: u64,
    /// Disk budget in bytes for all segments (default 1 GiB).
    pub max_bytes: u64,
    /// Fsync policy (default every second).
    pub fsync: FsyncPolicy,
}

impl QueueConfig {
    /// Defaults for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 16 << 20,
            max_bytes: 1 << 30,
            fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
        }
    }
}

/// One record read back from a queue.
#[derive(Debug)]
pub struct QueuedBatch {
    /// The batch as appended.
    pub batch: Batch,
    /// Where the record starts.
    pub start: Position,
    /// Where the next record starts: commit this once the batch is sent.
    pub end: Position,
    /// Wall-clock time of the append (ms since the epoch).
    pub append_ms: i64,
    /// Samples in the batch.
    pub samples: u64,
}

/// One record read back from a queue, not decoded: its payload walks with
/// [`QueuedRecord::walk`] (it was checked to decode when read).
#[derive(Debug)]
pub struct QueuedRecord {
    payload: Vec<u8>,
    /// Where the record starts.
    pub start: Position,
    /// Where the next record starts: commit this once the batch is sent.
    pub end: Position,
    /// Wall-clock time of the append (ms since the epoch).
    pub append_ms: i64,
    /// Samples in the batch.
    pub samples: u64,
}

impl QueuedRecord {
    /// Visits every series of the record with the record's symbol table,
    /// the series' labels as (name, value) indexes into it (sorted by
    /// name) and its samples, without building label sets; returns the
    /// record's metadata.
    pub fn walk<'p>(
        &'p self,
        series: impl FnMut(&[&'p str], &[(usize, usize)], &[Sample]),
    ) -> std::result::Result<Vec<Metadata>, String> {
        codec::walk_payload(&self.payload, series)
            .map(|w| w.metadata)
            .map_err(|e| e.to_string())
    }
}

/// A record's payload lent to the closure of
/// [`QueueReader::next_record_with`]: walk it there, once.
#[derive(Debug, Clone, Copy)]
pub struct RecordPayload<'p>(&'p [u8]);

impl<'p> RecordPayload<'p> {
    /// As [`QueuedRecord::walk`]: visits every series with the record's
    /// symbol table, its labels as (name, value) indexes (sorted by name)
    /// and its samples; returns the metadata. An error means the record
    /// does not decode (the reader then treats it as corrupt).
    pub fn walk(
        self,
        series: impl FnMut(&[&'p str], &[(usize, usize)], &[Sample]),
    ) -> std::result::Result<Vec<Metadata>, String> {
        codec::walk_payload(self.0, series)
            .map(|w| w.metadata)
            .map_err(|e| e.to_string())
    }

    /// Bytes of the payload (a size hint for the caller's buffers).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty payload (never the case for a record read).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Where a record read by [`QueueReader::next_record_with`] sits, and
/// its head.
#[derive(Debug, Clone, Copy)]
pub struct RecordInfo {
    /// Where the record starts.
    pub start: Position,
    /// Where the next record starts: commit this once the batch is sent.
    pub end: Position,
    /// Wall-clock time of the append (ms since the epoch).
    pub append_ms: i64,
    /// Samples in the batch.
    pub samples: u64,
}

/// Sizes and positions of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    /// Bytes of segment files.
    pub bytes: u64,
    /// Number of segment files.
    pub segments: u64,
    /// Bytes between the reader and the end.
    pub unread_bytes: u64,
    /// End of the last record.
    pub write: Position,
    /// The reader's next position.
    pub read: Position,
    /// Everything before this is acknowledged.
    pub committed: Position,
}

struct State {
    active: Arc<File>,
    write: Position,
    /// Segment number → size in bytes (the active one included).
    segments: BTreeMap<u64, u64>,
    total_bytes: u64,
    read: Position,
    committed: Position,
    cursor_dirty: bool,
    /// The cursor file was last written without fsync.
    cursor_unsynced: bool,
    last_cursor_sync: Instant,
    data_dirty: bool,
    last_data_sync: Instant,
    force_roll: bool,
    reader_taken: bool,
}

struct Shared {
    name: String,
    dir: PathBuf,
    segment_bytes: u64,
    max_bytes: u64,
    fsync: FsyncPolicy,
    state: Mutex<State>,
    /// The cursor file, held while it is written.
    cursor: Mutex<CursorFile>,
    notify: tokio::sync::Notify,
    metrics: QueueHandles,
    /// Holds the directory's `flock` for the queue's lifetime.
    _lock: File,
}

/// The open cursor file and the slot its next write goes to.
struct CursorFile {
    file: File,
    /// Offset of the slot not holding the newest cursor.
    next_slot: u64,
}

struct Handle {
    shared: Arc<Shared>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// A durable queue; cheap to clone (all clones share it). Closed when the
/// last clone (readers included) is dropped: data is fsynced and the
/// cursor written then.
#[derive(Clone)]
pub struct Queue(Arc<Handle>);

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.0.shared.name)
            .field("dir", &self.0.shared.dir)
            .finish()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:010}.seg"))
}

/// The file of segment `id` in queue directory `dir` (tools, tests).
pub fn segment_file(dir: &Path, id: u64) -> PathBuf {
    segment_path(dir, id)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half
        // updated in a way that breaks the file format; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, id: u64) -> PathBuf {
        segment_path(&self.dir, id)
    }

    fn update_gauges(&self, st: &State) {
        self.metrics.bytes.set(st.total_bytes as i64);
        self.metrics.segments.set(st.segments.len() as i64);
    }

    /// Starts segment `write.segment + 1` (fsyncing the current one).
    fn roll(&self, st: &mut State) -> Result<()> {
        let old = self.path(st.write.segment);
        st.active.sync_data().context(SegmentSnafu { path: old })?;
        let id = st.write.segment + 1;
        let file = create_segment(&self.dir, id)?;
        st.active = Arc::new(file);
        st.write = Position {
            segment: id,
            offset: SEGMENT_HEADER,
        };
        st.segments.insert(id, SEGMENT_HEADER);
        st.total_bytes += SEGMENT_HEADER;
        st.force_roll = false;
        st.data_dirty = false;
        st.last_data_sync = Instant::now();
        Ok(())
    }

    fn append_record(&self, rec: &[u8], samples: u64) -> Result<()> {
        if rec.len() > codec::MAX_PAYLOAD + codec::FRAME_HEADER {
            return RecordTooLargeSnafu { bytes: rec.len() }.fail();
        }
        let len = rec.len() as u64;
        let mut st = self.lock();
        if st.force_roll
            || (st.write.offset > SEGMENT_HEADER && st.write.offset + len > self.segment_bytes)
        {
            self.roll(&mut st)?;
        }
        let off = st.write.offset;
        if let Err(e) = st.active.write_all_at(rec, off) {
            // Leave no partial record behind.
            let _ = st.active.set_len(off);
            return Err(e).context(SegmentSnafu {
                path: self.path(st.write.segment),
            });
        }
        st.write.offset += len;
        let (seg, end) = (st.write.segment, st.write.offset);
        st.segments.insert(seg, end);
        st.total_bytes += len;
        st.data_dirty = true;
        if self.fsync == FsyncPolicy::Always {
            st.active.sync_data().context(SegmentSnafu {
                path: self.path(seg),
            })?;
            st.data_dirty = false;
        }
        self.metrics.appended_samples.inc_by(samples);
        self.metrics.appended_bytes.inc_by(len);
        let dropped = self.enforce_budget(&mut st);
        self.update_gauges(&st);
        drop(st);
        for d in dropped {
            self.drop_segment(d);
        }
        self.notify.notify_one();
        Ok(())
    }

    /// Takes the oldest segments out of the state while over budget.
    fn enforce_budget(&self, st: &mut State) -> Vec<Dropped> {
        let mut out = Vec::new();
        while st.total_bytes > self.max_bytes {
            let Some((&id, &size)) = st.segments.iter().next() else {
                break;
            };
            if id == st.write.segment {
                break;
            }
            st.segments.remove(&id);
            st.total_bytes = st.total_bytes.saturating_sub(size);
            let unread_from = if st.read.segment == id {
                Some(st.read.offset)
            } else if st.read.segment < id {
                Some(SEGMENT_HEADER)
            } else {
                None
            };
            out.push(Dropped {
                id,
                size,
                unread_from,
            });
        }
        out
    }

    /// Counts the unsent samples of a segment taken out by the budget,
    /// deletes it and reports it.
    fn drop_segment(&self, d: Dropped) {
        let path = self.path(d.id);
        let samples = match d.unread_from {
            Some(from) => count_samples(&path, from),
            None => 0,
        };
        if let Err(e) = fs::remove_file(&path) {
            warn!(queue = %self.name, path = %path.display(), error = %e, "could not delete dropped queue segment");
        }
        self.metrics.dropped_samples.inc_by(samples);
        warn!(
            queue = %self.name,
            segment = d.id,
            bytes = d.size,
            samples,
            max_bytes = self.max_bytes,
            "queue over its disk budget: dropped the oldest segment ({samples} unsent samples, {} bytes)",
            d.size
        );
    }

    fn sync_data_if_due(&self, force: bool) {
        let (file, seg) = {
            let mut st = self.lock();
            let due = match self.fsync {
                FsyncPolicy::Interval(iv) => st.last_data_sync.elapsed() >= iv,
                FsyncPolicy::Always => true,
            };
            if !st.data_dirty || !(due || force) {
                return;
            }
            st.data_dirty = false;
            st.last_data_sync = Instant::now();
            (st.active.clone(), st.write.segment)
        };
        if let Err(e) = file.sync_data() {
            error!(queue = %self.name, segment = seg, error = %e, "fsync of queue segment failed");
            self.lock().data_dirty = true;
        }
    }

    /// Writes the cursor (in place, into the older slot) when it moved;
    /// fsyncs the file when `force`, with [`FsyncPolicy::Always`], or once
    /// the fsync interval passed since the last fsync (also when nothing
    /// moved since an unsynced write). Between fsyncs a write only reaches
    /// the page cache: a killed process loses none of it; after a power
    /// loss the cursor found is at least the one of the write before the
    /// last fsync (see the module docs), so acknowledged data may be sent
    /// again, never lost.
    fn write_cursor_if_dirty(&self, force: bool) {
        // One writer at a time, so positions reach the file in order.
        let mut cf = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        let (pos, dirty, durable) = {
            let mut st = self.lock();
            let due = force
                || match self.fsync {
                    FsyncPolicy::Interval(iv) => st.last_cursor_sync.elapsed() >= iv,
                    FsyncPolicy::Always => true,
                };
            if !(st.cursor_dirty || st.cursor_unsynced && due) {
                return;
            }
            let dirty = std::mem::take(&mut st.cursor_dirty);
            (st.committed, dirty, due)
        };
        let mut res = Ok(());
        if dirty {
            res = cf.file.write_all_at(&encode_cursor(pos), cf.next_slot);
            if res.is_ok() {
                cf.next_slot = CURSOR_SLOT_2 - cf.next_slot;
            }
        }
        if durable && res.is_ok() {
            res = cf.file.sync_data();
        }
        let mut st = self.lock();
        match res {
            Ok(()) if durable => {
                st.cursor_unsynced = false;
                st.last_cursor_sync = Instant::now();
            }
            Ok(()) => st.cursor_unsynced = true,
            Err(e) => {
                drop(st);
                warn!(queue = %self.name, error = %e, "could not write the queue cursor; will retry");
                let mut st = self.lock();
                st.cursor_dirty = true;
                st.cursor_unsynced = true;
            }
        }
    }
}

struct Dropped {
    id: u64,
    size: u64,
    unread_from: Option<u64>,
}

/// Sums the sample counts of the valid records of a segment from `from`.
fn count_samples(path: &Path, from: u64) -> u64 {
    let Ok(file) = File::open(path) else {
        return 0;
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut off = from.max(SEGMENT_HEADER);
    let mut total = 0u64;
    let mut head = [0u8; 64];
    while off + codec::FRAME_HEADER as u64 <= size {
        let mut h = [0u8; codec::FRAME_HEADER];
        if file.read_exact_at(&mut h, off).is_err() {
            break;
        }
        let (len, _) = codec::frame_header(h);
        if len == 0 || len > codec::MAX_PAYLOAD {
            break;
        }
        let n = len.min(head.len());
        if file
            .read_exact_at(&mut head[..n], off + codec::FRAME_HEADER as u64)
            .is_err()
        {
            break;
        }
        match codec::decode_head(&head[..n]) {
            Ok((_, s)) => total += s,
            Err(_) => break,
        }
        off += (codec::FRAME_HEADER + len) as u64;
    }
    total
}

fn create_segment(dir: &Path, id: u64) -> Result<File> {
    let path = segment_path(dir, id);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .context(SegmentSnafu { path: &path })?;
    let mut h = [0u8; SEGMENT_HEADER as usize];
    h[..4].copy_from_slice(SEGMENT_MAGIC);
    h[4] = FORMAT_VERSION;
    file.write_all_at(&h, 0)
        .context(SegmentSnafu { path: &path })?;
    sync_dir(dir).context(DirSnafu { path: dir })?;
    Ok(file)
}

/// Takes an exclusive `flock` on `<dir>/lock` (released when the file
/// closes, also when the process dies).
fn lock_dir(dir: &Path) -> Result<File> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .context(DirSnafu { path: dir })?;
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return LockedSnafu { path: dir }.fail();
        }
        return Err(e).context(DirSnafu { path: dir });
    }
    Ok(f)
}

fn encode_cursor(pos: Position) -> [u8; CURSOR_LEN] {
    let mut b = [0u8; CURSOR_LEN];
    b[..4].copy_from_slice(CURSOR_MAGIC);
    b[4] = FORMAT_VERSION;
    b[8..16].copy_from_slice(&pos.segment.to_le_bytes());
    b[16..24].copy_from_slice(&pos.offset.to_le_bytes());
    let crc = crc32c::crc32c(&b[..24]);
    b[24..28].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_cursor(b: &[u8]) -> Option<Position> {
    if b.len() != CURSOR_LEN || &b[..4] != CURSOR_MAGIC || b[4] != FORMAT_VERSION {
        return None;
    }
    let crc = u32::from_le_bytes(b[24..28].try_into().ok()?);
    if crc != crc32c::crc32c(&b[..24]) {
        return None;
    }
    Some(Position {
        segment: u64::from_le_bytes(b[8..16].try_into().ok()?),
        offset: u64::from_le_bytes(b[16..24].try_into().ok()?),
    })
}

/// The newer valid cursor of a cursor file's two slots (bytes
/// `0..28` and `512..540`; a file of an older version has only the first)
/// and the offset of its slot; `None` when neither slot is valid.
fn read_cursor(b: &[u8]) -> Option<(Position, u64)> {
    let slot = |at: u64| {
        let at_us = usize::try_from(at).ok()?;
        b.get(at_us..at_us.checked_add(CURSOR_LEN)?)
            .and_then(decode_cursor)
            .map(|p| (p, at))
    };
    // The cursor only moves forward: the further position is the newer.
    match (slot(0), slot(CURSOR_SLOT_2)) {
        (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Creates or opens the cursor file; a new one gets `pos` in its first
/// slot and is made durable (file and directory fsynced) before use.
fn open_cursor(dir: &Path, existing: Option<(Position, u64)>, pos: Position) -> Result<CursorFile> {
    let path = dir.join(CURSOR_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .context(DirSnafu { path: &path })?;
    match existing {
        Some((_, slot)) => Ok(CursorFile {
            file,
            next_slot: CURSOR_SLOT_2 - slot,
        }),
        None => {
            file.write_all_at(&encode_cursor(pos), 0)
                .and_then(|()| file.sync_data())
                .and_then(|()| sync_dir(dir))
                .context(DirSnafu { path: &path })?;
            Ok(CursorFile {
                file,
                next_slot: CURSOR_SLOT_2,
            })
        }
    }
}

/// What the open-time check of the last segment decided.
enum Tail {
    /// Keep appending to it at this offset.
    Append(u64),
    /// Leave it as it is (corrupt in the middle) and start a new segment.
    StartNew,
}

/// Checks the last segment's records; truncates a torn tail.
fn repair_last(name: &str, path: &Path) -> Result<Tail> {
    let data = fs::read(path).context(SegmentSnafu { path })?;
    let header_ok = data.len() >= SEGMENT_HEADER as usize
        && &data[..4] == SEGMENT_MAGIC
        && data[4] == FORMAT_VERSION;
    if !header_ok {
        if data.len() < SEGMENT_HEADER as usize {
            // Torn while being created: nothing in it yet.
            warn!(queue = %name, path = %path.display(), "queue segment with a torn header: rewriting it empty");
            let dir = path.parent().unwrap_or(Path::new("."));
            let id = segment_id(path).unwrap_or(0);
            create_segment(dir, id)?;
            return Ok(Tail::Append(SEGMENT_HEADER));
        }
        error!(queue = %name, path = %path.display(), "queue segment has a bad header: leaving it, starting a new segment");
        return Ok(Tail::StartNew);
    }
    let mut off = SEGMENT_HEADER as usize;
    let fh = codec::FRAME_HEADER;
    loop {
        if off == data.len() {
            return Ok(Tail::Append(off as u64));
        }
        let rest = &data[off..];
        let torn = if rest.len() < fh {
            true
        } else {
            let mut h = [0u8; 8];
            h.copy_from_slice(&rest[..fh]);
            let (len, crc) = codec::frame_header(h);
            if len == 0 || len > codec::MAX_PAYLOAD {
                // Zero-filled blocks past the real end are a torn tail;
                // anything else is corruption.
                if rest.iter().all(|&b| b == 0) {
                    true
                } else {
                    error!(queue = %name, path = %path.display(), offset = off, "corrupt record length in the last queue segment: leaving it, starting a new segment");
                    return Ok(Tail::StartNew);
                }
            } else if rest.len() < fh + len {
                true
            } else if crc32c::crc32c(&rest[fh..fh + len]) != crc {
                if rest.len() == fh + len {
                    true
                } else {
                    error!(queue = %name, path = %path.display(), offset = off, "corrupt record (CRC mismatch) in the last queue segment: leaving it, starting a new segment");
                    return Ok(Tail::StartNew);
                }
            } else {
                off += fh + len;
                continue;
            }
        };
        if torn {
            let cut = data.len() - off;
            warn!(queue = %name, path = %path.display(), offset = off, bytes = cut, "torn record at the end of the queue (crash while appending): truncating {cut} bytes");
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .context(SegmentSnafu { path })?;
            f.set_len(off as u64).context(SegmentSnafu { path })?;
            f.sync_all().context(SegmentSnafu { path })?;
            return Ok(Tail::Append(off as u64));
        }
    }
}

fn segment_id(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(".seg")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl Queue {
    /// Opens (or creates) the queue in `cfg.dir`. `name` labels its
    /// metrics and log lines (use the endpoint's name).
    pub fn open(cfg: QueueConfig, name: &str, metrics: &Arc<PushMetrics>) -> Result<Queue> {
        let dir = cfg.dir.clone();
        fs::create_dir_all(&dir).context(DirSnafu { path: &dir })?;
        let lock = lock_dir(&dir)?;
        let _ = fs::remove_file(dir.join(CURSOR_TMP));
        let mut ids: Vec<u64> = Vec::new();
        for entry in fs::read_dir(&dir).context(DirSnafu { path: &dir })? {
            let entry = entry.context(DirSnafu { path: &dir })?;
            if let Some(id) = segment_id(&entry.path()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let found = match fs::read(dir.join(CURSOR_FILE)) {
            Ok(b) => match read_cursor(&b) {
                Some(p) => Some(p),
                None if b.iter().all(|&x| x == 0) => None,
                None => {
                    warn!(queue = %name, "queue cursor file is corrupt: resending from the oldest segment");
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).context(DirSnafu { path: &dir }),
        };
        let cursor = found.map(|(p, _)| p);
        // Segments wholly before the cursor were acknowledged.
        if let Some(c) = cursor {
            ids.retain(|&id| {
                if id < c.segment {
                    let _ = fs::remove_file(segment_path(&dir, id));
                    false
                } else {
                    true
                }
            });
        }
        let mut segments = BTreeMap::new();
        for &id in &ids {
            let path = segment_path(&dir, id);
            let len = fs::metadata(&path)
                .context(SegmentSnafu { path: &path })?
                .len();
            segments.insert(id, len);
        }
        let (active, write) = match ids.last().copied() {
            Some(last) => match repair_last(name, &segment_path(&dir, last))? {
                Tail::Append(off) => {
                    let path = segment_path(&dir, last);
                    let f = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&path)
                        .context(SegmentSnafu { path: &path })?;
                    segments.insert(last, off);
                    (
                        f,
                        Position {
                            segment: last,
                            offset: off,
                        },
                    )
                }
                Tail::StartNew => {
                    let id = last + 1;
                    segments.insert(id, SEGMENT_HEADER);
                    (
                        create_segment(&dir, id)?,
                        Position {
                            segment: id,
                            offset: SEGMENT_HEADER,
                        },
                    )
                }
            },
            None => {
                let id = cursor.map_or(1, |c| c.segment + 1);
                segments.insert(id, SEGMENT_HEADER);
                (
                    create_segment(&dir, id)?,
                    Position {
                        segment: id,
                        offset: SEGMENT_HEADER,
                    },
                )
            }
        };
        // Start reading at the cursor, clamped into the existing data.
        let mut start = cursor.unwrap_or_default();
        if let Some(&size) = segments.get(&start.segment) {
            start.offset = start.offset.clamp(SEGMENT_HEADER, size);
        } else {
            start = match segments.range(start.segment..).next() {
                Some((&id, _)) => Position {
                    segment: id,
                    offset: SEGMENT_HEADER,
                },
                None => write,
            };
        }
        let total_bytes = segments.values().sum();
        let max_bytes = cfg.max_bytes.max(4 * SEGMENT_HEADER);
        let segment_bytes = cfg.segment_bytes.min(max_bytes / 4).max(64 << 10);
        let shared = Arc::new(Shared {
            name: name.to_string(),
            dir: dir.clone(),
            segment_bytes,
            max_bytes,
            fsync: cfg.fsync,
            state: Mutex::new(State {
                active: Arc::new(active),
                write,
                segments,
                total_bytes,
                read: start,
                committed: start,
                cursor_dirty: cursor != Some(start),
                cursor_unsynced: false,
                last_cursor_sync: Instant::now(),
                data_dirty: false,
                last_data_sync: Instant::now(),
                force_roll: false,
                reader_taken: false,
            }),
            cursor: Mutex::new(open_cursor(&dir, found, start)?),
            notify: tokio::sync::Notify::new(),
            metrics: QueueHandles::new(metrics, name),
            _lock: lock,
        });
        shared.update_gauges(&shared.lock());
        let (tx, rx) = mpsc::channel::<()>();
        let bg = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("queue-{name}"))
            .spawn(move || {
                loop {
                    match rx.recv_timeout(TICK) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    bg.write_cursor_if_dirty(false);
                    bg.sync_data_if_due(false);
                }
            })
            .context(DirSnafu { path: &dir })?;
        Ok(Queue(Arc::new(Handle {
            shared,
            stop: Some(tx),
            thread: Some(thread),
        })))
    }

    fn shared(&self) -> &Shared {
        &self.0.shared
    }

    /// The queue's name (as given to [`Queue::open`]).
    pub fn name(&self) -> &str {
        &self.shared().name
    }

    /// Appends one batch; returns once it is written to the segment file
    /// (and fsynced, with [`FsyncPolicy::Always`]).
    pub fn append_batch(&self, batch: &Batch) -> Result<()> {
        let rec = codec::encode_record(batch, now_ms());
        self.shared()
            .append_record(&rec, codec::sample_count(batch))
    }

    /// The reader (one per queue), starting at the persisted cursor.
    pub fn reader(&self) -> Result<QueueReader> {
        let mut st = self.shared().lock();
        if st.reader_taken {
            return ReaderTakenSnafu {
                name: self.name().to_string(),
            }
            .fail();
        }
        st.reader_taken = true;
        st.read = st.committed;
        Ok(QueueReader {
            queue: self.clone(),
            pos: st.committed,
            file: None,
            buf: Vec::new(),
        })
    }

    /// Marks everything before `pos` acknowledged: segments wholly before
    /// it are deleted and the cursor is persisted shortly (at most 100 ms).
    pub fn commit(&self, pos: Position) {
        let sh = self.shared();
        let mut st = sh.lock();
        if pos <= st.committed {
            return;
        }
        st.committed = pos;
        st.cursor_dirty = true;
        let done: Vec<(u64, u64)> = st
            .segments
            .range(..pos.segment)
            .map(|(&k, &v)| (k, v))
            .collect();
        for (id, size) in &done {
            st.segments.remove(id);
            st.total_bytes = st.total_bytes.saturating_sub(*size);
        }
        sh.update_gauges(&st);
        drop(st);
        for (id, _) in done {
            let path = sh.path(id);
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(queue = %sh.name, path = %path.display(), error = %e, "could not delete a sent queue segment");
                }
            }
        }
    }

    /// Fsyncs segment data and writes the cursor now.
    pub fn sync(&self) {
        self.shared().sync_data_if_due(true);
        self.shared().write_cursor_if_dirty(true);
    }

    /// Sizes and positions.
    pub fn stats(&self) -> QueueStats {
        let st = self.shared().lock();
        let mut unread = 0u64;
        for (&id, &size) in st.segments.range(st.read.segment..) {
            unread += if id == st.read.segment {
                size.saturating_sub(st.read.offset)
            } else {
                size.saturating_sub(SEGMENT_HEADER)
            };
        }
        QueueStats {
            bytes: st.total_bytes,
            segments: st.segments.len() as u64,
            unread_bytes: unread,
            write: st.write,
            read: st.read,
            committed: st.committed,
        }
    }

    /// Samples appended (the `stratus_agent_queue_appended_samples_total`
    /// counter of this queue's name).
    pub fn appended_samples(&self) -> u64 {
        self.shared().metrics.appended_samples.get()
    }

    /// Bytes appended (the `stratus_agent_queue_appended_bytes_total`
    /// counter of this queue's name).
    pub fn appended_bytes(&self) -> u64 {
        self.shared().metrics.appended_bytes.get()
    }

    /// Waits until something is appended (or returns at once if something
    /// was appended since the last wait).
    pub async fn appended(&self) {
        self.shared().notify.notified().await;
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.shared.sync_data_if_due(true);
        self.shared.write_cursor_if_dirty(true);
    }
}

impl Sink for Queue {
    fn append(&self, batch: Batch) -> Result<(), SinkError> {
        self.append_batch(&batch)
            .map_err(|e| SinkError(e.to_string()))
    }
}

/// A sink appending every batch to several queues (one per endpoint),
/// encoding it once.
#[derive(Debug, Clone)]
pub struct FanOut {
    queues: Vec<Queue>,
}

impl FanOut {
    /// Fans out to `queues`.
    pub fn new(queues: Vec<Queue>) -> Self {
        Self { queues }
    }

    /// The queues.
    pub fn queues(&self) -> &[Queue] {
        &self.queues
    }
}

impl Sink for FanOut {
    fn append(&self, batch: Batch) -> Result<(), SinkError> {
        let rec = codec::encode_record(&batch, now_ms());
        let samples = codec::sample_count(&batch);
        let mut errs = Vec::new();
        for q in &self.queues {
            if let Err(e) = q.shared().append_record(&rec, samples) {
                errs.push(format!("{}: {e}", q.name()));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(SinkError(errs.join("; ")))
        }
    }
}

/// Reads a queue's records in order, from the persisted cursor on.
#[derive(Debug)]
pub struct QueueReader {
    queue: Queue,
    pos: Position,
    file: Option<(u64, File)>,
    buf: Vec<u8>,
}

enum Fault {
    Io(std::io::Error),
    Corrupt(String),
    Gone,
}

impl QueueReader {
    /// The queue read.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The position of the next record.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// The next record, or `None` when caught up with the writer. Corrupt
    /// records make it skip to the next segment (logged, counted); I/O
    /// errors are returned and the same record is tried again next call.
    pub fn next_batch(&mut self) -> Result<Option<QueuedBatch>> {
        let r = self.next_with(|p| codec::decode_payload(p).map_err(|e| e.to_string()))?;
        Ok(r.map(|(start, end, d)| QueuedBatch {
            batch: d.batch,
            start,
            end,
            append_ms: d.append_ms,
            samples: d.samples,
        }))
    }

    /// As [`QueueReader::next_batch`], without decoding the record into a
    /// [`Batch`] (it is checked to decode): the sender walks it.
    pub fn next_record(&mut self) -> Result<Option<QueuedRecord>> {
        let r = self.next_with(|p| {
            let w = codec::walk_payload(p, |_, _, _| {}).map_err(|e| e.to_string())?;
            Ok((w.append_ms, w.samples, p.to_vec()))
        })?;
        Ok(
            r.map(|(start, end, (append_ms, samples, payload))| QueuedRecord {
                payload,
                start,
                end,
                append_ms,
                samples,
            }),
        )
    }

    /// The next record, or `None` when caught up with the writer, handed
    /// to `f` in place (no copy): `f` walks it once (with
    /// [`RecordPayload::walk`]), turning it into whatever the caller
    /// sends. An error from `f` means the record does not decode: it is
    /// treated as a corrupt record, as [`QueueReader::next_batch`] does
    /// (logged, counted, the rest of its segment skipped). `f` may run for
    /// a record that is then dropped by the disk budget before it is
    /// returned; its result is discarded and the next record read.
    pub fn next_record_with<T>(
        &mut self,
        mut f: impl FnMut(RecordPayload<'_>) -> std::result::Result<T, String>,
    ) -> Result<Option<(RecordInfo, T)>> {
        let r = self.next_with(|p| {
            let (append_ms, samples) = codec::decode_head(p).map_err(|e| e.to_string())?;
            let t = f(RecordPayload(p))?;
            Ok((append_ms, samples, t))
        })?;
        Ok(r.map(|(start, end, (append_ms, samples, t))| {
            (
                RecordInfo {
                    start,
                    end,
                    append_ms,
                    samples,
                },
                t,
            )
        }))
    }

    fn next_with<T>(
        &mut self,
        mut decode: impl FnMut(&[u8]) -> std::result::Result<T, String>,
    ) -> Result<Option<(Position, Position, T)>> {
        let sh = self.queue.0.shared.clone();
        loop {
            let limit = {
                let st = sh.lock();
                if !st.segments.contains_key(&self.pos.segment) {
                    match st.segments.range(self.pos.segment..).next() {
                        Some((&id, _)) => {
                            self.pos = Position {
                                segment: id,
                                offset: SEGMENT_HEADER,
                            };
                            self.file = None;
                        }
                        None => return Ok(None),
                    }
                }
                if self.pos >= st.write {
                    return Ok(None);
                }
                let size = st.segments.get(&self.pos.segment).copied().unwrap_or(0);
                if self.pos.offset >= size {
                    // Finished a segment the writer has left.
                    self.pos = Position {
                        segment: self.pos.segment + 1,
                        offset: SEGMENT_HEADER,
                    };
                    self.file = None;
                    continue;
                }
                size
            };
            match self.read_at(&sh, limit, &mut decode) {
                Ok((len, d)) => {
                    let start = self.pos;
                    let end = Position {
                        segment: start.segment,
                        offset: start.offset + len,
                    };
                    let mut st = sh.lock();
                    if !st.segments.contains_key(&start.segment) {
                        // Dropped by the budget meanwhile (and counted).
                        continue;
                    }
                    st.read = end;
                    drop(st);
                    self.pos = end;
                    return Ok(Some((start, end, d)));
                }
                Err(Fault::Gone) => continue,
                Err(Fault::Io(e)) => {
                    return Err(e).context(SegmentSnafu {
                        path: sh.path(self.pos.segment),
                    });
                }
                Err(Fault::Corrupt(why)) => {
                    error!(
                        queue = %sh.name,
                        segment = self.pos.segment,
                        offset = self.pos.offset,
                        reason = %why,
                        "corrupt queue record: skipping the rest of the segment"
                    );
                    sh.metrics.corruptions.inc();
                    let mut st = sh.lock();
                    if self.pos.segment == st.write.segment {
                        st.force_roll = true;
                    }
                    self.pos = Position {
                        segment: self.pos.segment + 1,
                        offset: SEGMENT_HEADER,
                    };
                    st.read = self.pos;
                    self.file = None;
                }
            }
        }
    }

    /// Reads and decodes the record at `self.pos` (below `limit`).
    fn read_at<T>(
        &mut self,
        sh: &Shared,
        limit: u64,
        decode: &mut impl FnMut(&[u8]) -> std::result::Result<T, String>,
    ) -> Result<(u64, T), Fault> {
        let seg = self.pos.segment;
        if self.file.as_ref().map(|(id, _)| *id) != Some(seg) {
            match File::open(sh.path(seg)) {
                Ok(f) => self.file = Some((seg, f)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return if sh.lock().segments.contains_key(&seg) {
                        Err(Fault::Corrupt("segment file missing".into()))
                    } else {
                        Err(Fault::Gone)
                    };
                }
                Err(e) => return Err(Fault::Io(e)),
            }
        }
        let Some((_, file)) = self.file.as_ref() else {
            return Err(Fault::Gone);
        };
        let off = self.pos.offset;
        let avail = limit.saturating_sub(off);
        let fh = codec::FRAME_HEADER as u64;
        if avail < fh {
            return Err(Fault::Corrupt(format!(
                "{avail} bytes left, too few for a record"
            )));
        }
        let mut h = [0u8; codec::FRAME_HEADER];
        file.read_exact_at(&mut h, off).map_err(Fault::Io)?;
        let (len, crc) = codec::frame_header(h);
        if len == 0 || len > codec::MAX_PAYLOAD || len as u64 > avail - fh {
            return Err(Fault::Corrupt(format!("bad record length {len}")));
        }
        self.buf.resize(len, 0);
        file.read_exact_at(&mut self.buf, off + fh)
            .map_err(Fault::Io)?;
        if crc32c::crc32c(&self.buf) != crc {
            return Err(Fault::Corrupt("CRC mismatch".into()));
        }
        let d = decode(&self.buf).map_err(Fault::Corrupt)?;
        Ok((fh + len as u64, d))
    }
}

impl Drop for QueueReader {
    fn drop(&mut self) {
        self.queue.shared().lock().reader_taken = false;
    }
}

#[cfg(test)]
mod tests;
