//! One in-memory series: its chunks, its open appender and its
//! out-of-order buffer, and the rules for accepting a sample.
//!
//! In-order samples go to an open XOR chunk that is cut after
//! `chunk_samples` samples or at a block-range boundary, so that no chunk
//! ever straddles two blocks and cutting a block never splits a chunk.
//! Samples older than the series' newest sample (or older than the time
//! already persisted to blocks) go to a sorted out-of-order buffer that is
//! merged at read time and flushed at the next block cut.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use stratus_model::{FloatHistogram, Histogram};

use super::chunk_files::FileChunk;
use crate::chunks::{
    Appendable, ChunkIter, CounterResetHeader, Encoding, FloatHistogramAppender, HistogramAppender,
    XorAppender,
};

/// A native histogram sample to append.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HistRef<'a> {
    Int(&'a Histogram),
    Float(&'a FloatHistogram),
}

/// The open histogram chunk of a series.
#[derive(Debug)]
pub(crate) enum HistApp {
    Int(HistogramAppender),
    Float(FloatHistogramAppender),
}

/// Bytes allocated for a series' open XOR chunk, once, when the chunk is
/// started (a mimalloc size class: no rounding). The chunk is cut when
/// the next sample might not fit ([`XorAppender::has_room`]), so the
/// buffer never grows: with a million series, a doubling buffer's slack
/// and the blocks freed while it grows (in lockstep across series, which
/// leaves pages of every size class on the way partly used) cost more
/// than the extra chunks. Sealed chunks are re-encoded into one compact
/// chunk per block range by [`Head::compact_chunks`](crate::head::Head),
/// so more, smaller XOR chunks do not last. 192 bytes hold 50–110
/// samples of typical scrape data (1.4–3 bytes per sample).
pub(crate) const OPEN_CHUNK_BYTES: usize = 192;

/// A histogram chunk is cut at this many data bytes (Prometheus aims at
/// about 1 KiB per histogram chunk) or at `chunk_samples` samples.
const HIST_CHUNK_BYTES: usize = 1024;

impl HistApp {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            HistApp::Int(a) => a.bytes(),
            HistApp::Float(a) => a.bytes(),
        }
    }

    fn num_samples(&self) -> usize {
        match self {
            HistApp::Int(a) => a.num_samples(),
            HistApp::Float(a) => a.num_samples(),
        }
    }

    pub(crate) fn first_t(&self) -> Option<i64> {
        match self {
            HistApp::Int(a) => a.first_t(),
            HistApp::Float(a) => a.first_t(),
        }
    }

    pub(crate) fn last_t(&self) -> Option<i64> {
        match self {
            HistApp::Int(a) => a.last_t(),
            HistApp::Float(a) => a.last_t(),
        }
    }

    pub(crate) fn encoding(&self) -> Encoding {
        match self {
            HistApp::Int(_) => Encoding::Histogram,
            HistApp::Float(_) => Encoding::FloatHistogram,
        }
    }

    /// Whether `h` fits this chunk (same type, layout, no reset).
    fn appendable(&self, h: HistRef<'_>) -> Option<Appendable> {
        match (self, h) {
            (HistApp::Int(a), HistRef::Int(h)) => Some(a.appendable(h)),
            (HistApp::Float(a), HistRef::Float(h)) => Some(a.appendable(h)),
            _ => None,
        }
    }

    /// Whether the last histogram equals `h` (bit for bit, the
    /// counter-reset hint aside).
    fn last_equals(&self, h: HistRef<'_>) -> bool {
        match (self, h) {
            (HistApp::Int(a), HistRef::Int(h)) => a.last().is_some_and(|l| {
                let mut h = if h.is_stale() {
                    Histogram::stale()
                } else {
                    h.clone()
                };
                h.reset_hint = l.reset_hint;
                l.bit_eq(&h)
            }),
            (HistApp::Float(a), HistRef::Float(h)) => a.last().is_some_and(|l| {
                let mut h = if h.is_stale() {
                    FloatHistogram::stale()
                } else {
                    h.clone()
                };
                h.reset_hint = l.reset_hint;
                l.bit_eq(&h)
            }),
            _ => false,
        }
    }
}

/// A sealed head chunk: its time range and its bytes, in memory or in a
/// head chunk file ([`chunk_files`](super::chunk_files)). 40 bytes, as
/// when it held only an `Arc<[u8]>`: the encoding byte and the variant
/// tag share the padding of [`Body`].
#[derive(Debug, Clone)]
pub(crate) struct HeadChunk {
    pub(crate) mint: i64,
    pub(crate) maxt: i64,
    body: Body,
}

/// Where a sealed chunk's bytes are. The encoding is the
/// [`Encoding`] byte: XOR when sealed, compact once
/// [`Head::compact_chunks`](crate::head::Head) has re-encoded it.
#[derive(Debug, Clone)]
enum Body {
    Mem { encoding: u8, data: Arc<[u8]> },
    File { encoding: u8, at: FileChunk },
}

impl HeadChunk {
    /// A chunk held in memory.
    pub(crate) fn mem(mint: i64, maxt: i64, encoding: u8, data: Arc<[u8]>) -> Self {
        Self {
            mint,
            maxt,
            body: Body::Mem { encoding, data },
        }
    }

    /// A chunk stored in a head chunk file.
    pub(crate) fn file(mint: i64, maxt: i64, encoding: u8, at: FileChunk) -> Self {
        Self {
            mint,
            maxt,
            body: Body::File { encoding, at },
        }
    }

    pub(crate) fn encoding(&self) -> u8 {
        match &self.body {
            Body::Mem { encoding, .. } | Body::File { encoding, .. } => *encoding,
        }
    }

    /// The bytes, when held in memory.
    pub(crate) fn mem_data(&self) -> Option<&Arc<[u8]>> {
        match &self.body {
            Body::Mem { data, .. } => Some(data),
            Body::File { .. } => None,
        }
    }

    /// The file record, when stored in a head chunk file.
    pub(crate) fn file_chunk(&self) -> Option<&FileChunk> {
        match &self.body {
            Body::Mem { .. } => None,
            Body::File { at, .. } => Some(at),
        }
    }

    /// The bytes: shared when in memory, read (one `pread`, checksum
    /// checked) when in a file. Call outside the series lock where
    /// possible.
    pub(crate) fn load(&self) -> crate::Result<Arc<[u8]>> {
        match &self.body {
            Body::Mem { data, .. } => Ok(data.clone()),
            Body::File { encoding, at } => at.read(self.mint, self.maxt, *encoding),
        }
    }

    /// The chunk as a query part (reads it when in a file).
    pub(crate) fn to_part(&self) -> crate::Result<crate::querier::Part> {
        Ok(crate::querier::Part::Chunk {
            mint: self.mint,
            maxt: self.maxt,
            encoding: self.encoding(),
            data: self.load()?,
        })
    }

    /// Whether `o` is this very chunk (same allocation or same record),
    /// not merely equal bytes.
    pub(crate) fn same(&self, o: &HeadChunk) -> bool {
        match (&self.body, &o.body) {
            (Body::Mem { data: a, .. }, Body::Mem { data: b, .. }) => Arc::ptr_eq(a, b),
            (Body::File { at: a, .. }, Body::File { at: b, .. }) => a.same(b),
            _ => false,
        }
    }

    /// Data bytes held in memory (0 when in a file).
    pub(crate) fn mem_len(&self) -> usize {
        self.mem_data().map_or(0, |d| d.len())
    }

    /// Data bytes stored in a file (0 when in memory).
    pub(crate) fn file_len(&self) -> usize {
        self.file_chunk().map_or(0, |f| f.len as usize)
    }
}

/// Why a sample was not appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    /// Same timestamp as a stored sample, different value.
    Duplicate,
    /// A native histogram older than the series' newest sample.
    OutOfOrderHistogram,
    /// The sample could not be checked against the stored sample at its
    /// timestamp: the sealed chunk holding that time could not be read
    /// back from its head chunk file (logged). Refused rather than risk
    /// storing a second, different sample at one timestamp.
    Unverifiable,
}

/// A stored-sample lookup whose chunk could not be read: logged, and the
/// sample is refused ([`Reject::Unverifiable`]).
fn unverified<T>(r: crate::Result<T>) -> Result<T, Reject> {
    r.map_err(|e| {
        tracing::warn!(error = %e, "refusing a sample: the stored chunk at its timestamp is unreadable");
        Reject::Unverifiable
    })
}

/// What happened to an accepted sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Appended {
    InOrder,
    OutOfOrder,
    /// Exact duplicate of a stored sample: nothing stored.
    Noop,
}

/// Sorted, unique out-of-order samples of a series. Most series never
/// have any, so an empty buffer is one null pointer (8 bytes, not a
/// 24-byte `Vec`).
#[derive(Debug, Default)]
#[allow(clippy::box_collection)] // the point: 8 bytes when empty
pub(crate) struct Ooo(Option<Box<Vec<(i64, f64)>>>);

impl std::ops::Deref for Ooo {
    type Target = [(i64, f64)];

    fn deref(&self) -> &[(i64, f64)] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl Ooo {
    fn insert(&mut self, i: usize, x: (i64, f64)) {
        self.0.get_or_insert_with(Box::default).insert(i, x);
    }

    /// Keeps the samples `f` accepts; frees or shrinks the buffer when it
    /// became empty or mostly unused.
    pub(crate) fn retain(&mut self, f: impl FnMut(&(i64, f64)) -> bool) {
        if let Some(v) = &mut self.0 {
            v.retain(f);
            if v.is_empty() {
                self.0 = None;
            } else if v.capacity() > 2 * v.len() + 8 {
                v.shrink_to_fit();
            }
        }
    }

    /// Heap bytes held.
    fn heap_bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |v| 24 + v.capacity() * 16)
    }
}

/// The open chunk of a series. At most one chunk is open, of either kind,
/// so one field holds it (two `Option`s took a word more and moved every
/// series record up a size class); the histogram appender is boxed: most
/// series never have one.
///
/// It also knows the series' newest in-order sample ([`Open::last`]): the
/// open chunk's last sample when a chunk is open, else [`Open::None`]
/// keeps it. The series record does not repeat it (24 bytes that would
/// move every record up a size class).
#[derive(Debug)]
pub(crate) enum Open {
    /// No open chunk; the newest in-order sample, if any.
    None(Last),
    Xor(XorAppender),
    Hist(Box<HistApp>),
    /// The open chunk of a series that has start timestamps (boxed: most
    /// series never have any, and they keep the variants above).
    St(Box<StOpen>),
    /// The series was garbage-collected from the head: an appender
    /// holding a stale handle must look the series up again.
    Removed,
}

impl Default for Open {
    fn default() -> Self {
        Open::None(Last::NONE)
    }
}

impl Open {
    /// The newest in-order sample.
    fn last(&self) -> Last {
        match self {
            Open::None(l) => *l,
            Open::Xor(a) => Last {
                t: a.last_t().unwrap_or(i64::MIN),
                v: a.last_v().map_or(0, f64::to_bits),
                hist: false,
            },
            Open::Hist(a) => Last {
                t: a.last_t().unwrap_or(i64::MIN),
                v: 0,
                hist: true,
            },
            Open::St(b) => b.inner.last(),
            Open::Removed => Last::NONE,
        }
    }

    /// Whether a chunk is open.
    fn is_open(&self) -> bool {
        matches!(self, Open::Xor(_) | Open::Hist(_) | Open::St(_))
    }
}

/// A series' newest in-order sample: its time (`i64::MIN` when there is
/// none), value bits (floats) and whether it is a histogram.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Last {
    t: i64,
    v: u64,
    hist: bool,
}

impl Last {
    const NONE: Last = Last {
        t: i64::MIN,
        v: 0,
        hist: false,
    };
}

/// An open chunk with start timestamps: the chunk (never `St` itself)
/// and `(t, st)` of the samples appended in order to it.
#[derive(Debug)]
pub(crate) struct StOpen {
    pub(crate) inner: Open,
    pub(crate) sts: Vec<(i64, i64)>,
}

/// Wraps sealed chunk `c` with the start timestamps of its samples
/// (looked up by time in `sts`, 0 where missing).
fn wrap_st(c: &mut HeadChunk, sts: &[(i64, i64)]) {
    // Only chunks just sealed are wrapped: they are in memory.
    let Some(data) = c.mem_data().cloned() else {
        return;
    };
    let Some(enc) = Encoding::from_u8(c.encoding()).and_then(crate::chunks::with_st) else {
        return;
    };
    let part = crate::querier::Part::Chunk {
        mint: c.mint,
        maxt: c.maxt,
        encoding: c.encoding(),
        data: data.clone(),
    };
    let Ok(samples) = part.typed_samples() else {
        return;
    };
    let ts: Vec<i64> = samples.iter().map(|x| x.0).collect();
    let col: Vec<i64> = ts
        .iter()
        .map(|&t| {
            sts.binary_search_by_key(&t, |x| x.0)
                .map_or(0, |i| sts[i].1)
        })
        .collect();
    *c = HeadChunk::mem(
        c.mint,
        c.maxt,
        enc.as_u8(),
        crate::chunks::encode_st_chunk(&data, &ts, &col).into(),
    );
}

/// The mutable state of a series, behind its mutex.
#[derive(Debug)]
pub(crate) struct SeriesData {
    /// Sealed chunks, oldest first (a boxed slice: one word less than a
    /// `Vec`, and every change reallocates it at its exact size anyway).
    pub(crate) chunks: Box<[HeadChunk]>,
    /// The open chunk, float or histogram (see [`SeriesData::app`] and
    /// [`SeriesData::happ`]), or the newest sample when none is open, or
    /// the mark of a removed series.
    pub(crate) open: Open,
    /// Sorted, unique out-of-order samples.
    pub(crate) ooo: Ooo,
}

/// A shared series record. [`triomphe::Arc`] has no weak count: its
/// header is one word, which keeps the record with its header in
/// mimalloc's 128-byte size class (see [`SERIES_ALLOC_BYTES`]).
pub(crate) type SeriesArc = triomphe::Arc<MemSeries>;

/// Bytes of one series record's allocation: the `SeriesArc` header (the
/// reference count) and the record.
pub(crate) const SERIES_ALLOC_BYTES: usize = 8 + std::mem::size_of::<MemSeries>();

// One more word would move every series to the 160-byte class.
const _: () = assert!(
    SERIES_ALLOC_BYTES <= 128,
    "series record left the 128-byte class"
);

/// A series in the head.
#[derive(Debug)]
pub(crate) struct MemSeries {
    pub(crate) id: u64,
    /// Label set as varint symbol ids: name, value, name, value... (see
    /// [`symbols::encode`](super::symbols::encode)).
    pub(crate) syms: Box<[u8]>,
    /// Where the open XOR chunk's buffer starts and how long it is, as
    /// the last append left it ([`MemSeries::note_chunk`]; 0: not yet),
    /// readable without the lock so that the append path can prefetch
    /// the chunk a few series ahead
    /// ([`Head::prefetch_chunk`](crate::head::Head)). Only a hint: it
    /// may name a buffer since sealed and freed, and prefetching any
    /// address is harmless.
    chunk_hint: AtomicUsize,
    pub(crate) data: Mutex<SeriesData>,
}

impl MemSeries {
    pub(crate) fn new(id: u64, syms: Box<[u8]>) -> Self {
        Self {
            id,
            syms,
            chunk_hint: AtomicUsize::new(0),
            data: Mutex::new(SeriesData {
                chunks: Box::default(),
                open: Open::default(),
                ooo: Ooo::default(),
            }),
        }
    }

    /// Records where `data`'s open XOR chunk is and how long (`data` is
    /// this series' locked state), when that changed: the start address
    /// in the low 48 bits (where x86-64 and AArch64 user space addresses
    /// live; a wider one only makes the hint useless) and the length
    /// above them.
    #[inline]
    pub(crate) fn note_chunk(&self, data: &SeriesData) {
        if let Some(a) = data.app() {
            let b = a.bytes();
            let hint = (b.as_ptr() as usize & HINT_ADDR_MASK) | (b.len() << HINT_ADDR_BITS);
            if self.chunk_hint.load(Ordering::Relaxed) != hint {
                self.chunk_hint.store(hint, Ordering::Relaxed);
            }
        }
    }

    /// Where the open XOR chunk's buffer started and where its last byte
    /// was at the last append (`None`: never noted).
    #[inline]
    pub(crate) fn chunk_hint(&self) -> Option<(usize, usize)> {
        let hint = self.chunk_hint.load(Ordering::Relaxed);
        let start = hint & HINT_ADDR_MASK;
        (start != 0).then(|| (start, start + (hint >> HINT_ADDR_BITS).saturating_sub(1)))
    }
}

/// Bits of an address in [`MemSeries`]' chunk hint.
const HINT_ADDR_BITS: u32 = 48;
const HINT_ADDR_MASK: usize = (1 << HINT_ADDR_BITS) - 1;

/// Exclusive end of the block-range window containing `t`: an open
/// chunk takes samples up to the end of its last sample's window (all
/// its samples are in one window). Saturates at `i64::MAX` for the last
/// window.
fn window_end(t: i64, range: i64) -> i64 {
    t.div_euclid(range).saturating_add(1).saturating_mul(range)
}

/// Start of the block-range window containing `t`; `i64::MIN` for the
/// first window, which starts before `i64::MIN`.
pub(crate) fn window_start(t: i64, range: i64) -> i64 {
    t.div_euclid(range).saturating_mul(range)
}

impl SeriesData {
    /// Time of the newest in-order sample (`i64::MIN` when none).
    pub(crate) fn last_t(&self) -> i64 {
        self.open.last().t
    }

    /// Whether the series was garbage-collected from the head.
    pub(crate) fn removed(&self) -> bool {
        matches!(self.open, Open::Removed)
    }

    /// Marks the series removed (it holds no samples).
    pub(crate) fn remove(&mut self) {
        self.open = Open::Removed;
    }

    /// The open float chunk, if that is the open one (also inside a
    /// chunk with start timestamps).
    pub(crate) fn app(&self) -> Option<&XorAppender> {
        match &self.open {
            Open::Xor(a) => Some(a),
            Open::St(b) => match &b.inner {
                Open::Xor(a) => Some(a),
                _ => None,
            },
            _ => None,
        }
    }

    /// The open histogram chunk, if that is the open one (also inside a
    /// chunk with start timestamps).
    pub(crate) fn happ(&self) -> Option<&HistApp> {
        match &self.open {
            Open::Hist(a) => Some(a),
            Open::St(b) => match &b.inner {
                Open::Hist(a) => Some(a),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the open chunk records start timestamps.
    pub(crate) fn has_open_st(&self) -> bool {
        matches!(self.open, Open::St(_))
    }

    /// The open chunk as a sealed chunk with start timestamps, when the
    /// open chunk has them (encoded on each call: only series with start
    /// timestamps pay).
    pub(crate) fn open_st_chunk(&self) -> Option<HeadChunk> {
        let Open::St(b) = &self.open else {
            return None;
        };
        let (mint, maxt, encoding, data) = match &b.inner {
            Open::Xor(a) => (a.first_t()?, a.last_t()?, Encoding::Xor, a.bytes()),
            Open::Hist(a) => (a.first_t()?, a.last_t()?, a.encoding(), a.bytes()),
            _ => return None,
        };
        let mut c = HeadChunk::mem(mint, maxt, encoding as u8, Arc::from(data));
        wrap_st(&mut c, &b.sts);
        Some(c)
    }

    /// [`SeriesData::append`] with the sample's start timestamp `st`
    /// (0 = unknown). A series switches to chunks with start timestamps
    /// at its first in-order sample that has one; until then (and for
    /// `st == 0`) this is [`SeriesData::append`]. Out-of-order samples
    /// keep their value but lose the start timestamp.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn append_st(
        &mut self,
        t: i64,
        v: f64,
        st: i64,
        min_valid: i64,
        chunk_samples: usize,
        range: i64,
    ) -> Result<Appended, Reject> {
        if st == 0 && !matches!(self.open, Open::St(_)) {
            return self.append(t, v, min_valid, chunk_samples, range);
        }
        self.with_st(t, st, min_valid, |d| {
            d.append(t, v, min_valid, chunk_samples, range)
        })
    }

    /// [`SeriesData::append_histogram`] with a start timestamp, as
    /// [`SeriesData::append_st`].
    pub(crate) fn append_histogram_st(
        &mut self,
        t: i64,
        h: HistRef<'_>,
        st: i64,
        min_valid: i64,
        chunk_samples: usize,
        range: i64,
    ) -> Result<Appended, Reject> {
        if st == 0 && !matches!(self.open, Open::St(_)) {
            return self.append_histogram(t, h, min_valid, chunk_samples, range);
        }
        self.with_st(t, st, min_valid, |d| {
            d.append_histogram(t, h, min_valid, chunk_samples, range)
        })
    }

    /// Runs an append `f` on the chunk inside the start-timestamp state,
    /// wrapping the chunk it seals (if any) and recording `st`.
    fn with_st(
        &mut self,
        t: i64,
        st: i64,
        min_valid: i64,
        f: impl FnOnce(&mut Self) -> Result<Appended, Reject>,
    ) -> Result<Appended, Reject> {
        let mut sts = match std::mem::take(&mut self.open) {
            Open::St(b) => {
                self.open = b.inner;
                Some(b.sts)
            }
            other => {
                self.open = other;
                None
            }
        };
        if sts.is_none() && t > self.last_t() && t >= min_valid {
            // First start timestamp: the plain chunk ends here.
            self.seal_open_chunk();
            sts = Some(Vec::new());
        }
        let before = self.chunks.len();
        let r = f(self);
        if let Some(list) = sts.as_mut() {
            if self.chunks.len() > before && !list.is_empty() {
                // The append sealed the previous chunk: it takes the
                // start timestamps recorded so far.
                if let Some(c) = self.chunks.last_mut() {
                    wrap_st(c, list);
                }
                list.clear();
            }
            if r == Ok(Appended::InOrder) {
                list.push((t, st));
            }
        }
        if let Some(list) = sts {
            if self.open.is_open() {
                let inner = std::mem::take(&mut self.open);
                self.open = Open::St(Box::new(StOpen { inner, sts: list }));
            }
        }
        r
    }

    /// Appends a sample. `min_valid` is the end of the time already cut
    /// into blocks: samples below it always take the out-of-order path.
    /// The caller checks the out-of-order window before calling.
    pub(crate) fn append(
        &mut self,
        t: i64,
        v: f64,
        min_valid: i64,
        chunk_samples: usize,
        range: i64,
    ) -> Result<Appended, Reject> {
        let bits = v.to_bits();
        let last = self.open.last();
        if t > last.t && t >= min_valid {
            let cut = match self.app() {
                None => true,
                Some(a) => {
                    a.num_samples() >= chunk_samples
                        || !a.has_room()
                        || t >= window_end(last.t, range)
                }
            };
            if cut {
                self.seal_open_chunk();
                self.open = Open::Xor(XorAppender::with_capacity(OPEN_CHUNK_BYTES));
            }
            if let Open::Xor(a) = &mut self.open {
                a.append(t, v);
            }
            return Ok(Appended::InOrder);
        }
        if t == last.t {
            return if bits == last.v && !last.hist {
                Ok(Appended::Noop)
            } else {
                Err(Reject::Duplicate)
            };
        }
        // Out of order: refuse to overwrite a stored sample.
        if unverified(self.histogram_at(t))?.is_some() {
            return Err(Reject::Duplicate);
        }
        if let Some(existing) = unverified(self.find(t))? {
            return if existing.to_bits() == bits {
                Ok(Appended::Noop)
            } else {
                Err(Reject::Duplicate)
            };
        }
        match self.ooo.binary_search_by(|s| s.0.cmp(&t)) {
            Ok(_) => return Err(Reject::Duplicate), // unreachable: find() covers it
            Err(i) => self.ooo.insert(i, (t, v)),
        }
        Ok(Appended::OutOfOrder)
    }

    /// Appends a native histogram. Histograms are accepted in time order
    /// only (an older one is refused unless it equals the stored one).
    /// A series may switch between floats and histograms: the open chunk
    /// of the other kind is sealed first.
    pub(crate) fn append_histogram(
        &mut self,
        t: i64,
        h: HistRef<'_>,
        min_valid: i64,
        chunk_samples: usize,
        range: i64,
    ) -> Result<Appended, Reject> {
        let last = self.open.last();
        if t > last.t && t >= min_valid {
            let verdict = self.happ().and_then(|a| a.appendable(h));
            let header = match (self.happ(), verdict) {
                (Some(a), Some(Appendable::Yes))
                    if a.num_samples() < chunk_samples
                        && a.bytes().len() < HIST_CHUNK_BYTES
                        && t < window_end(last.t, range) =>
                {
                    None
                }
                // Full chunk or window end: continue, no reset.
                (Some(_), Some(Appendable::Yes)) => Some(match h {
                    HistRef::Int(x) if x.reset_hint == stratus_model::reset_hint::GAUGE => {
                        CounterResetHeader::Gauge
                    }
                    HistRef::Float(x) if x.reset_hint == stratus_model::reset_hint::GAUGE => {
                        CounterResetHeader::Gauge
                    }
                    _ => CounterResetHeader::NotReset,
                }),
                (Some(_), Some(Appendable::Cut(hdr))) => Some(hdr),
                _ => Some(CounterResetHeader::for_hint(match h {
                    HistRef::Int(x) => x.reset_hint,
                    HistRef::Float(x) => x.reset_hint,
                })),
            };
            if let Some(hdr) = header {
                self.seal_open_chunk();
                self.open = Open::Hist(Box::new(match h {
                    HistRef::Int(_) => HistApp::Int(HistogramAppender::new(hdr)),
                    HistRef::Float(_) => HistApp::Float(FloatHistogramAppender::new(hdr)),
                }));
            }
            if let Open::Hist(a) = &mut self.open {
                match (&mut **a, h) {
                    (HistApp::Int(a), HistRef::Int(h)) => a.append(t, h),
                    (HistApp::Float(a), HistRef::Float(h)) => a.append(t, h),
                    _ => {}
                }
            }
            return Ok(Appended::InOrder);
        }
        if let (true, Some(a)) = (t == last.t, self.happ()) {
            return if last.hist && a.last_equals(h) {
                Ok(Appended::Noop)
            } else {
                Err(Reject::Duplicate)
            };
        }
        // Older than the newest sample, or at its time with no chunk open
        // (sealed by a block cut): a no-op if the same histogram is stored
        // at `t`, else refused.
        match unverified(self.histogram_at(t))? {
            Some(stored) if stored.equals(h) => Ok(Appended::Noop),
            Some(_) => Err(Reject::Duplicate),
            None if unverified(self.find(t))?.is_some() => Err(Reject::Duplicate),
            None => Err(Reject::OutOfOrderHistogram),
        }
    }

    /// The histogram stored at exactly `t`, if any (slow path: decodes;
    /// reads a chunk stored in a head chunk file).
    fn histogram_at(&self, t: i64) -> crate::Result<Option<StoredHist>> {
        // In-order histogram chunks never overlap: at most one covers t.
        let sealed = self.chunks.iter().find(|c| {
            c.mint <= t
                && t <= c.maxt
                && Encoding::from_u8(c.encoding()).is_some_and(Encoding::is_histogram)
        });
        let loaded;
        let (enc, data) = match sealed {
            Some(c) => {
                loaded = c.load()?;
                (c.encoding(), &loaded[..])
            }
            None => {
                let open = self.happ().and_then(|a| {
                    let (f, l) = (a.first_t()?, a.last_t()?);
                    (f <= t && t <= l).then(|| (a.encoding() as u8, a.bytes()))
                });
                match open {
                    Some(x) => x,
                    None => return Ok(None),
                }
            }
        };
        if enc == Encoding::Histogram as u8 {
            let Ok(v) = crate::chunks::decode_histogram(data) else {
                return Ok(None);
            };
            return Ok(v
                .into_iter()
                .find(|x| x.0 == t)
                .map(|x| StoredHist::Int(x.1)));
        }
        let Ok(v) = crate::chunks::decode_float_histogram(data) else {
            return Ok(None);
        };
        Ok(v.into_iter()
            .find(|x| x.0 == t)
            .map(|x| StoredHist::Float(x.1)))
    }

    /// The stored value at exactly `t`, if any (slow path: decodes;
    /// reads a chunk stored in a head chunk file).
    fn find(&self, t: i64) -> crate::Result<Option<f64>> {
        if let Ok(i) = self.ooo.binary_search_by(|s| s.0.cmp(&t)) {
            return Ok(Some(self.ooo[i].1));
        }
        for c in self.chunks.iter() {
            if c.mint <= t && t <= c.maxt {
                return Ok(seek_exact(c.encoding(), &c.load()?, t));
            }
        }
        if let Some(a) = self.app() {
            if a.first_t().is_some_and(|f| f <= t) && a.last_t().is_some_and(|l| t <= l) {
                return Ok(seek_exact(Encoding::Xor as u8, a.bytes(), t));
            }
        }
        Ok(None)
    }

    /// Moves the open chunks (if any) to the sealed list.
    pub(crate) fn seal_open_chunk(&mut self) {
        if !self.open.is_open() {
            return;
        }
        let last = Open::None(self.open.last());
        match std::mem::replace(&mut self.open, last) {
            Open::None(_) | Open::Removed => {}
            Open::St(b) => {
                let StOpen { inner, sts } = *b;
                let before = self.chunks.len();
                self.open = inner;
                self.seal_open_chunk();
                debug_assert!(matches!(self.open, Open::None(_)));
                if self.chunks.len() > before {
                    if let Some(c) = self.chunks.last_mut() {
                        wrap_st(c, &sts);
                    }
                }
            }
            Open::Hist(a) => {
                if let (Some(mint), Some(maxt)) = (a.first_t(), a.last_t()) {
                    let encoding = a.encoding() as u8;
                    let data = match *a {
                        HistApp::Int(a) => a.into_bytes(),
                        HistApp::Float(a) => a.into_bytes(),
                    };
                    self.push_chunk(HeadChunk::mem(mint, maxt, encoding, data.into()));
                }
            }
            Open::Xor(a) => {
                if let (Some(mint), Some(maxt)) = (a.first_t(), a.last_t()) {
                    // One copy into the shared chunk, at its exact size.
                    self.push_chunk(HeadChunk::mem(
                        mint,
                        maxt,
                        Encoding::Xor as u8,
                        Arc::from(a.bytes()),
                    ));
                }
            }
        }
    }

    /// Appends a sealed chunk (the list is reallocated at its exact size:
    /// a series holds a few chunks for hours).
    fn push_chunk(&mut self, c: HeadChunk) {
        let mut v = std::mem::take(&mut self.chunks).into_vec();
        v.reserve_exact(1);
        v.push(c);
        self.chunks = v.into_boxed_slice();
    }

    /// Keeps the sealed chunks `f` accepts.
    pub(crate) fn retain_chunks(&mut self, f: impl FnMut(&HeadChunk) -> bool) {
        if !self.chunks.is_empty() {
            let mut v = std::mem::take(&mut self.chunks).into_vec();
            v.retain(f);
            self.chunks = v.into_boxed_slice();
        }
    }

    /// Replaces the sealed chunks `range` with `fresh`.
    pub(crate) fn replace_chunks(
        &mut self,
        range: std::ops::Range<usize>,
        fresh: impl IntoIterator<Item = HeadChunk>,
    ) {
        let mut v = std::mem::take(&mut self.chunks).into_vec();
        v.splice(range, fresh);
        self.chunks = v.into_boxed_slice();
    }

    /// Oldest and newest timestamps held, if any.
    pub(crate) fn time_range(&self) -> Option<(i64, i64)> {
        let mut min = i64::MAX;
        let mut max = i64::MIN;
        if let Some(c) = self.chunks.first() {
            min = min.min(c.mint);
        }
        if let Some(c) = self.chunks.last() {
            max = max.max(c.maxt);
        }
        if let Some(a) = self.app() {
            if let (Some(f), Some(l)) = (a.first_t(), a.last_t()) {
                min = min.min(f);
                max = max.max(l);
            }
        }
        if let Some(a) = self.happ() {
            if let (Some(f), Some(l)) = (a.first_t(), a.last_t()) {
                min = min.min(f);
                max = max.max(l);
            }
        }
        if let (Some(f), Some(l)) = (self.ooo.first(), self.ooo.last()) {
            min = min.min(f.0);
            max = max.max(l.0);
        }
        (min <= max).then_some((min, max))
    }

    /// Whether the series holds no samples at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty() && !self.open.is_open() && self.ooo.is_empty()
    }

    /// Approximate heap bytes held by the samples: (sealed chunks, open
    /// chunk, out-of-order buffer).
    pub(crate) fn heap_bytes(&self) -> (usize, usize, usize) {
        let sealed = self
            .chunks
            .iter()
            .filter(|c| c.mem_data().is_some())
            .map(|c| c.mem_len() + 16)
            .sum::<usize>()
            + self.chunks.len() * std::mem::size_of::<HeadChunk>();
        let open = self.app().map_or(0, |a| a.capacity())
            + self.happ().map_or(0, |a| a.bytes().len() + 256);
        (sealed, open, self.ooo.heap_bytes())
    }
}

/// A decoded stored histogram.
#[derive(Debug)]
pub(crate) enum StoredHist {
    Int(Histogram),
    Float(FloatHistogram),
}

impl StoredHist {
    /// Bit-exact equality with `h`, the counter-reset hint aside.
    fn equals(&self, h: HistRef<'_>) -> bool {
        match (self, h) {
            (StoredHist::Int(s), HistRef::Int(h)) => {
                let mut h = if h.is_stale() {
                    Histogram::stale()
                } else {
                    h.clone()
                };
                h.reset_hint = s.reset_hint;
                s.bit_eq(&h)
            }
            (StoredHist::Float(s), HistRef::Float(h)) => {
                let mut h = if h.is_stale() {
                    FloatHistogram::stale()
                } else {
                    h.clone()
                };
                h.reset_hint = s.reset_hint;
                s.bit_eq(&h)
            }
            _ => false,
        }
    }
}

fn seek_exact(encoding: u8, data: &[u8], t: i64) -> Option<f64> {
    let mut it = ChunkIter::new(encoding, data);
    match it.seek(t) {
        Some((st, v)) if st == t => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The series record with its `SeriesArc` header (one counter) fits
    /// mimalloc's 128-byte size class; one more word would move every
    /// series to the 160-byte class.
    #[test]
    fn series_record_fits_its_size_class() {
        // The header is the count alone: the record starts one word into
        // the allocation (what `Head::prefetch_series` assumes).
        let s = SeriesArc::new(MemSeries::new(1, Box::default()));
        assert_eq!(s.as_ptr() as usize - s.heap_ptr() as usize, 8);
        assert_eq!(std::mem::size_of::<Open>(), 56);
    }

    /// A sealed chunk's record stays 40 bytes whether its bytes are in
    /// memory or in a head chunk file (one per sealed chunk per series).
    #[test]
    fn head_chunk_stays_small() {
        assert_eq!(std::mem::size_of::<HeadChunk>(), 40);
    }

    /// The newest sample outlives its open chunk: after a seal (as a block
    /// cut does) the same sample is still a no-op and another value at
    /// its time is still refused, for floats, histograms and chunks with
    /// start timestamps; a removed series holds nothing.
    /// A small valid integer histogram: three observations in one bucket.
    fn one_bucket_histogram() -> Histogram {
        Histogram {
            schema: 1,
            count: 3,
            sum: 1.5,
            positive_spans: vec![stratus_model::BucketSpan {
                offset: 0,
                length: 1,
            }],
            positive_deltas: vec![3],
            ..Default::default()
        }
    }

    #[test]
    fn newest_sample_is_kept_when_no_chunk_is_open() {
        let h = one_bucket_histogram();
        let r = 2 * 3_600_000;
        let mut d = MemSeries::new(1, Box::default()).data.into_inner();
        assert_eq!(d.last_t(), i64::MIN);
        assert_eq!(d.append(1000, 1.5, 0, 120, r), Ok(Appended::InOrder));
        assert_eq!(d.append(2000, 2.5, 0, 120, r), Ok(Appended::InOrder));
        d.seal_open_chunk();
        assert!(matches!(d.open, Open::None(_)));
        assert_eq!(d.last_t(), 2000);
        assert_eq!(d.append(2000, 2.5, 0, 120, r), Ok(Appended::Noop));
        assert_eq!(d.append(2000, 3.5, 0, 120, r), Err(Reject::Duplicate));
        let hr = HistRef::Int(&h);
        assert_eq!(
            d.append_histogram(2000, hr, 0, 120, r),
            Err(Reject::Duplicate)
        );
        // A histogram is the newest sample: a float at its time is refused.
        assert_eq!(
            d.append_histogram(3000, hr, 0, 120, r),
            Ok(Appended::InOrder)
        );
        d.seal_open_chunk();
        assert_eq!(d.last_t(), 3000);
        assert_eq!(d.append(3000, 2.5, 0, 120, r), Err(Reject::Duplicate));
        assert_eq!(d.append_histogram(3000, hr, 0, 120, r), Ok(Appended::Noop));
        // With start timestamps the open chunk is wrapped; the same holds.
        assert_eq!(
            d.append_st(4000, 4.5, 3500, 0, 120, r),
            Ok(Appended::InOrder)
        );
        assert!(d.has_open_st());
        assert_eq!(d.last_t(), 4000);
        assert_eq!(d.append_st(4000, 4.5, 3500, 0, 120, r), Ok(Appended::Noop));
        d.seal_open_chunk();
        assert!(matches!(d.open, Open::None(_)));
        assert_eq!(d.append_st(4000, 4.5, 3500, 0, 120, r), Ok(Appended::Noop));
        assert_eq!(
            d.append_st(4000, 5.5, 3500, 0, 120, r),
            Err(Reject::Duplicate)
        );
        // In order again after the seal, into a fresh chunk.
        assert_eq!(d.append(5000, 6.5, 0, 120, r), Ok(Appended::InOrder));
        assert_eq!(d.last_t(), 5000);
        assert!(!d.is_empty());
        let mut e = MemSeries::new(2, Box::default()).data.into_inner();
        assert!(e.is_empty() && !e.removed());
        e.remove();
        assert!(e.is_empty() && e.removed());
        assert_eq!(e.last_t(), i64::MIN);
    }

    /// An open XOR chunk never grows past its first allocation.
    #[test]
    fn open_chunk_is_cut_before_it_grows() {
        let mut d = MemSeries::new(1, Box::default()).data.into_inner();
        let mut v = 1.0f64;
        for i in 0..2000i64 {
            // Noisy values: the widest XOR encoding, so byte cuts happen
            // long before `chunk_samples`.
            v = f64::from_bits(v.to_bits() ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 12);
            let r = d.append(i * 15_000 + (i % 7), v, i64::MIN, 120, 1 << 40);
            assert_eq!(r, Ok(Appended::InOrder));
            assert_eq!(d.app().map(XorAppender::capacity), Some(OPEN_CHUNK_BYTES));
        }
        assert!(d.chunks.len() > 2000 / 120, "{} chunks", d.chunks.len());
        let n: usize = d
            .chunks
            .iter()
            .map(|c| {
                crate::chunks::chunk_num_samples_any(c.encoding(), &c.load().unwrap()).unwrap_or(0)
            })
            .sum::<usize>()
            + d.app().map_or(0, XorAppender::num_samples);
        assert_eq!(n, 2000);
    }

    /// A chunk ends at the block-range window of its samples, for floats
    /// and histograms, at negative times too (windows are floored).
    #[test]
    fn chunks_never_straddle_a_window() {
        let range = 1000;
        let h = one_bucket_histogram();
        for hist in [false, true] {
            let mut d = MemSeries::new(1, Box::default()).data.into_inner();
            let times: Vec<i64> = (-2500..2500).step_by(7).collect();
            for &t in &times {
                let r = if hist {
                    d.append_histogram(t, HistRef::Int(&h), i64::MIN, 120, range)
                } else {
                    d.append(t, 1.0, i64::MIN, 120, range)
                };
                assert_eq!(r, Ok(Appended::InOrder));
            }
            d.seal_open_chunk();
            let mut seen = 0;
            for c in d.chunks.iter() {
                assert_eq!(
                    window_start(c.mint, range),
                    window_start(c.maxt, range),
                    "hist {hist}: chunk {}..={} straddles a window",
                    c.mint,
                    c.maxt
                );
                seen += crate::chunks::chunk_num_samples_any(c.encoding(), &c.load().unwrap())
                    .unwrap_or(0);
            }
            assert_eq!(seen, times.len());
            // Every window the samples touch starts a chunk.
            let windows: std::collections::BTreeSet<i64> =
                times.iter().map(|&t| window_start(t, range)).collect();
            assert!(d.chunks.len() >= windows.len());
        }
    }

    /// Windows at the ends of the timestamp range saturate instead of
    /// overflowing, and every time still lies in its window.
    #[test]
    fn windows_at_the_ends_of_time_saturate() {
        for range in [1, 7, 7_200_000] {
            for t in [
                i64::MIN,
                i64::MIN + 1,
                i64::MIN + range,
                -1,
                0,
                1,
                i64::MAX - range,
                i64::MAX - 1,
                i64::MAX,
            ] {
                let (s, e) = (window_start(t, range), window_end(t, range));
                assert!(s <= t && (t < e || e == i64::MAX), "{range}, {t}: {s}..{e}");
                assert!(e - s <= range, "{range}, {t}: {s}..{e}");
            }
        }
        let range = 7_200_000;
        assert_eq!(window_start(i64::MIN + 1, range), i64::MIN);
        assert_eq!(window_end(i64::MAX, range), i64::MAX);
        assert_eq!(window_end(i64::MIN, range), window_end(i64::MIN + 1, range));
        assert_eq!(window_start(-1, range), -range);
        assert_eq!(window_end(-1, range), 0);
    }

    /// The chunk hint follows the open XOR chunk: where it starts and
    /// where its last byte is after each append, across cuts.
    #[test]
    fn chunk_hint_follows_the_open_chunk() {
        let s = MemSeries::new(1, Box::default());
        assert_eq!(s.chunk_hint(), None);
        let mut v = 1.0f64;
        for i in 0..500i64 {
            v = f64::from_bits(v.to_bits() ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 12);
            let mut d = s.data.lock();
            assert_eq!(
                d.append(i * 15_000, v, i64::MIN, 120, 1 << 40),
                Ok(Appended::InOrder)
            );
            s.note_chunk(&d);
            let b = d.app().map(XorAppender::bytes).unwrap_or_default();
            let start = b.as_ptr() as usize & HINT_ADDR_MASK;
            assert_eq!(s.chunk_hint(), Some((start, start + b.len() - 1)));
        }
    }
}
