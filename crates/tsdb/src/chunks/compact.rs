//! The compact float chunk (encoding `0x81`): the chunk format of blocks
//! written by compaction. Byte layout: `docs/format/chunks.md`, section 3.
//!
//! Design choices:
//! - Columnar body: all timestamps, then all values, then exceptions. Each
//!   column ends a zstd block (the frame is flushed between columns), so
//!   each gets its own entropy tables instead of one table for a mix of
//!   mostly-zero timestamp bytes and value deltas.
//! - Timestamps: either zigzag delta-of-delta varints, or residuals
//!   against a regular grid (interval = the most common delta); the grid
//!   fits scrape jitter (which does not accumulate) better, since one
//!   late scrape gives one non-zero residual instead of two delta-of-deltas.
//!   The encoder picks the mode with the smaller summed varint bit length.
//! - Sparse columns: a column of integers that is mostly zero (idle
//!   counters, constant gauges, on-time scrapes) is stored as a bitmap of
//!   its non-zero entries plus those entries. zstd's byte-wise Huffman
//!   coder cannot go below one bit per byte, and its match coding is poor
//!   on short random runs of zeros; the bitmap packs 8 entries per byte.
//! - Decimal values: when the values convert exactly to `m × 10^E` with one
//!   exponent `E` for the whole chunk and `|m| < 2^53`, the chunk stores the
//!   integers `m` as delta (gauges) or delta-of-delta (steady counters)
//!   zigzag varints, whichever is estimated smaller. Decoding is a single
//!   correctly rounded IEEE multiplication or division (`m × 10^E` or
//!   `m / 10^-E`, both operands exact), so the conversion back is
//!   bit-identical by construction; the encoder still verifies every value.
//! - Values that do not convert (NaN payloads including the staleness
//!   marker, ±Inf, -0.0, binary fractions with too many digits) are stored
//!   out of line as exceptions (index + raw 64 bits); the mantissa stream
//!   repeats the previous mantissa at their position so deltas stay small.
//!   When exceptions are many, the encoder also tries the raw mode (XOR of
//!   consecutive value bits, split into 8 byte planes) and keeps the smaller
//!   result.
//! - zstd over the body at [`COMPACT_ZSTD_LEVEL`] (level chosen by the
//!   `compact` bench: on this columnar data level 1 is as small as levels
//!   3-15 and the fastest; only 19 is smaller, by 2 %, at a quarter of the
//!   speed; decoding speed does not depend on the level). A body that does
//!   not shrink is stored uncompressed.
//! - Strict, bounded decoder: the sample count is limited to
//!   [`MAX_COMPACT_SAMPLES`], the declared decompressed size must lie in a
//!   range derived from the count, every byte of the body must be consumed
//!   and timestamps must strictly increase. Allocation is therefore bounded
//!   (a few MiB) whatever the input, and corrupt input is an [`Error`],
//!   never a panic.

use std::cell::RefCell;

use super::{
    CompactBitmapSnafu, CompactBodyLengthSnafu, CompactDecompressSnafu, CompactExceptionSnafu,
    CompactExponentSnafu, CompactFlagsSnafu, CompactMantissaSnafu, CompactTooManySamplesSnafu,
    CompactTrailingSnafu, CompactTruncatedSnafu, CompactVarintSnafu, CompactVersionSnafu, Error,
    UnorderedSnafu,
};
use crate::varint::{put_uvarint, put_varint, unzigzag, zigzag};

/// Format version, the first byte of every compact chunk.
pub const COMPACT_VERSION: u8 = 1;

/// Most samples one compact chunk may hold.
pub const MAX_COMPACT_SAMPLES: usize = 65_535;

/// Samples per chunk written by compaction: a trade-off between size (the
/// per-chunk overhead of the zstd frame, the index entry and the segment
/// record amortised over more samples) and query cost (a query decodes
/// whole chunks). See the `compact` bench for the figures.
pub const COMPACT_CHUNK_SAMPLES: usize = 2048;

/// zstd level used for the body.
pub const COMPACT_ZSTD_LEVEL: i32 = 1;

/// Flag: the body is a zstd frame.
const FLAG_ZSTD: u8 = 0x01;
/// Value mode bits.
const MODE_MASK: u8 = 0x06;
const MODE_DECIMAL: u8 = 0x00;
const MODE_XOR: u8 = 0x02;
/// Flag (decimal mode): mantissas are delta-of-delta encoded.
const FLAG_DOD: u8 = 0x08;
/// Flag: timestamps are residuals against a regular grid.
const FLAG_GRID: u8 = 0x10;
/// Flag: the timestamp entries are stored sparse.
const FLAG_TS_SPARSE: u8 = 0x20;
/// Flag (decimal mode): the mantissa entries are stored sparse.
const FLAG_VAL_SPARSE: u8 = 0x40;
const KNOWN_FLAGS: u8 =
    FLAG_ZSTD | MODE_MASK | FLAG_DOD | FLAG_GRID | FLAG_TS_SPARSE | FLAG_VAL_SPARSE;

/// Exclusive bound of a mantissa's magnitude (2^53).
const M_LIMIT: i64 = 1 << 53;
/// Largest `|E|`: 10^22 is the largest power of ten exact in an f64.
const MAX_EXP: i32 = 22;

const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The value `m × 10^e` (correctly rounded). `e` must be in `-22..=22`.
#[inline]
fn from_decimal(m: i64, e: i32) -> f64 {
    let p = POW10[e.unsigned_abs() as usize];
    if e >= 0 { m as f64 * p } else { m as f64 / p }
}

/// The decimal form `(m, e)` of `v` with the largest `e` (no trailing zero
/// digits in `m`), if `v == from_decimal(m, e)` bit for bit with
/// `|m| < 2^53` and `|e| <= 22`.
fn to_decimal(v: f64) -> Option<(i64, i32)> {
    let bits = v.to_bits();
    if !v.is_finite() {
        return None;
    }
    if v == 0.0 {
        // -0.0 has no decimal form (m = 0 decodes to +0.0).
        return (bits == 0).then_some((0, 0));
    }
    let limit = M_LIMIT as f64;
    if v.abs() >= limit {
        // Large integers: only with enough trailing decimal zeros.
        for e in 1..=MAX_EXP {
            let m = (v / POW10[e as usize]).round();
            if m.abs() < limit && from_decimal(m as i64, e).to_bits() == bits {
                return Some(strip_zeros(m as i64, e));
            }
        }
        return None;
    }
    for k in 0..=MAX_EXP {
        let s = v * POW10[k as usize];
        if s.abs() >= limit {
            return None;
        }
        let m = s.round() as i64;
        if from_decimal(m, -k).to_bits() == bits {
            return Some(strip_zeros(m, -k));
        }
    }
    None
}

/// Moves trailing decimal zeros of `m` into the exponent. The rational
/// value is unchanged, so the decoded f64 is too.
fn strip_zeros(mut m: i64, mut e: i32) -> (i64, i32) {
    while m != 0 && m % 10 == 0 && e < MAX_EXP {
        m /= 10;
        e += 1;
    }
    (m, e)
}

const I64_POW10: [i64; 19] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
    100_000_000_000,
    1_000_000_000_000,
    10_000_000_000_000,
    100_000_000_000_000,
    1_000_000_000_000_000,
    10_000_000_000_000_000,
    100_000_000_000_000_000,
    1_000_000_000_000_000_000,
];

/// Bit length of `zigzag(x)`, the size estimate used to pick delta or
/// delta-of-delta.
#[inline]
fn cost(x: i64) -> u64 {
    u64::from(64 - zigzag(x).leading_zeros())
}

/// Encodes samples (sorted by strictly increasing timestamp) into a compact
/// chunk.
///
/// # Panics
/// If `samples` holds more than [`MAX_COMPACT_SAMPLES`] samples (a caller
/// bug: chunk sizes are chosen by the caller).
pub fn encode_compact(samples: &[(i64, f64)]) -> Vec<u8> {
    encode_compact_with_level(samples, COMPACT_ZSTD_LEVEL)
}

/// [`encode_compact`] with another zstd level (for tuning and benchmarks;
/// the decoder does not depend on the level).
///
/// # Panics
/// Like [`encode_compact`].
pub fn encode_compact_with_level(samples: &[(i64, f64)], level: i32) -> Vec<u8> {
    let n = samples.len();
    assert!(
        n <= MAX_COMPACT_SAMPLES,
        "compact chunk of {n} samples exceeds {MAX_COMPACT_SAMPLES}"
    );
    let (ts_flags, ts_head, ts_entries) = encode_timestamps(samples);
    let ts_col = Entries::new(&ts_entries);
    let ts_flags = ts_flags | if ts_col.sparse { FLAG_TS_SPARSE } else { 0 };
    let ts_segs = [&ts_head[..], &ts_col.bitmap, &ts_col.values];
    let xor = |ts_flags: u8| {
        let mut planes = Vec::new();
        encode_xor_planes(&mut planes, samples);
        let segs = [ts_segs[0], ts_segs[1], ts_segs[2], &planes[..]];
        finish(ts_flags | MODE_XOR, n, &segs, level)
    };
    let Some(dec) = encode_decimal(samples) else {
        return xor(ts_flags);
    };
    let v_col = Entries::new(&dec.entries);
    let flags = ts_flags | dec.flags | if v_col.sparse { FLAG_VAL_SPARSE } else { 0 };
    let segs = [
        ts_segs[0],
        ts_segs[1],
        ts_segs[2],
        &dec.head[..],
        &v_col.bitmap,
        &v_col.values,
        &dec.exceptions,
    ];
    let a = finish(flags, n, &segs, level);
    if dec.num_exceptions * 8 < n {
        return a;
    }
    // Many exceptions: the raw mode may be smaller; keep the better.
    let b = xor(ts_flags);
    if b.len() < a.len() { b } else { a }
}

/// Shortest column stored sparse.
const SPARSE_MIN_ENTRIES: usize = 8;

/// A column of integer entries, plain (zigzag varints) or, when it has at
/// least [`SPARSE_MIN_ENTRIES`] entries and more than half of them are
/// zero, sparse (a bitmap of the non-zero entries, then
/// their varints).
struct Entries {
    sparse: bool,
    bitmap: Vec<u8>,
    values: Vec<u8>,
}

impl Entries {
    fn new(entries: &[i64]) -> Self {
        let zeros = entries.iter().filter(|&&x| x == 0).count();
        let sparse = entries.len() >= SPARSE_MIN_ENTRIES && zeros * 2 > entries.len();
        let mut bitmap = Vec::new();
        let mut values = Vec::with_capacity(entries.len() - if sparse { zeros } else { 0 });
        if sparse {
            bitmap.resize(entries.len().div_ceil(8), 0);
            for (i, &x) in entries.iter().enumerate() {
                if x != 0 {
                    bitmap[i / 8] |= 1 << (i % 8);
                    put_varint(&mut values, x);
                }
            }
        } else {
            for &x in entries {
                put_varint(&mut values, x);
            }
        }
        Entries {
            sparse,
            bitmap,
            values,
        }
    }
}

/// Header plus body (the concatenated `segments`), zstd-compressed if that
/// is smaller.
fn finish(mut flags: u8, n: usize, segments: &[&[u8]], level: i32) -> Vec<u8> {
    let raw_len: usize = segments.iter().map(|s| s.len()).sum();
    let mut out = Vec::with_capacity(raw_len / 2 + 16);
    if n == 0 {
        out.extend_from_slice(&[COMPACT_VERSION, 0, 0]);
        return out;
    }
    if let Some(z) = compress(segments, level) {
        let mut len = Vec::with_capacity(4);
        put_uvarint(&mut len, raw_len as u64);
        if z.len() + len.len() < raw_len {
            flags |= FLAG_ZSTD;
            out.push(COMPACT_VERSION);
            out.push(flags);
            put_uvarint(&mut out, n as u64);
            out.extend_from_slice(&len);
            out.extend_from_slice(&z);
            return out;
        }
    }
    out.push(COMPACT_VERSION);
    out.push(flags);
    put_uvarint(&mut out, n as u64);
    for seg in segments {
        out.extend_from_slice(seg);
    }
    out
}

thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::zstd_safe::CCtx<'static>>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// One zstd frame of the concatenated `segments` (no content size, no
/// checksum: the header carries the size and the segment record a CRC).
/// The frame is flushed after each segment, which ends a zstd block, so
/// every column gets its own entropy tables. `None` if zstd fails.
fn compress(segments: &[&[u8]], level: i32) -> Option<Vec<u8>> {
    use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective;
    use zstd::zstd_safe::{CCtx, CParameter, InBuffer, OutBuffer, ResetDirective};
    COMPRESSOR.with(|c| {
        let mut c = c.try_borrow_mut().ok()?;
        let cctx = c.get_or_insert_with(CCtx::create);
        cctx.reset(ResetDirective::SessionAndParameters).ok()?;
        cctx.set_parameter(CParameter::CompressionLevel(level))
            .ok()?;
        cctx.set_parameter(CParameter::ContentSizeFlag(false))
            .ok()?;
        let total: usize = segments.iter().map(|s| s.len()).sum();
        let mut out: Vec<u8> =
            Vec::with_capacity(zstd::zstd_safe::compress_bound(total) + 16 * segments.len());
        let segs: Vec<&[u8]> = segments.iter().copied().filter(|s| !s.is_empty()).collect();
        for (i, seg) in segs.iter().enumerate() {
            let end = if i + 1 == segs.len() {
                ZSTD_EndDirective::ZSTD_e_end
            } else {
                ZSTD_EndDirective::ZSTD_e_flush
            };
            let mut input = InBuffer::around(seg);
            loop {
                if out.capacity() - out.len() < 64 {
                    out.reserve(1024);
                }
                let pos = out.len();
                let mut output = OutBuffer::around_pos(&mut out, pos);
                let left = cctx.compress_stream2(&mut output, &mut input, end).ok()?;
                if left == 0 && input.pos() == seg.len() {
                    break;
                }
            }
        }
        Some(out)
    })
}

fn decompress(frame: &[u8], len: usize) -> Result<Vec<u8>, Error> {
    let res = DECOMPRESSOR.with(|d| {
        let mut d = d
            .try_borrow_mut()
            .map_err(|_| std::io::Error::other("decompressor busy"))?;
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        match d.as_mut() {
            Some(d) => d.decompress(frame, len),
            None => Err(std::io::Error::other("no decompressor")),
        }
    });
    match res {
        Ok(out) if out.len() == len => Ok(out),
        Ok(out) => CompactBodyLengthSnafu {
            declared: len as u64,
            actual: out.len() as u64,
        }
        .fail(),
        Err(e) => CompactDecompressSnafu {
            message: e.to_string(),
        }
        .fail(),
    }
}

/// The timestamp column in the cheaper of the two modes (by the summed
/// bit lengths of the entries): `(flag, head bytes, entries)`.
fn encode_timestamps(samples: &[(i64, f64)]) -> (u8, Vec<u8>, Vec<i64>) {
    let n = samples.len();
    let mut dods = Vec::with_capacity(n);
    let mut prev_d = 0i64;
    for w in samples.windows(2) {
        let d = w[1].0.wrapping_sub(w[0].0);
        dods.push(d.wrapping_sub(prev_d));
        prev_d = d;
    }
    let dod_cost: u64 = dods.iter().skip(1).map(|&x| cost(x)).sum();
    let mut head = Vec::with_capacity(24);
    put_varint(&mut head, samples.first().map_or(0, |s| s.0));
    if n >= 2 {
        let (delta, origin) = grid_params(samples);
        let mut res = Vec::with_capacity(n - 1);
        grid_residuals(samples, delta, origin, |r| res.push(r));
        let grid_cost = cost(origin) + res.iter().map(|&x| cost(x)).sum::<u64>();
        if grid_cost < dod_cost {
            put_uvarint(&mut head, delta as u64);
            put_varint(&mut head, origin);
            return (FLAG_GRID, head, res);
        }
    }
    if let Some(d1) = dods.first() {
        put_uvarint(&mut head, *d1 as u64);
    }
    dods.drain(..dods.len().min(1));
    (0, head, dods)
}

/// Grid parameters: the most common delta as the interval, and the most
/// common offset of the timestamps from the grid through `t[0]` (among the
/// first 256) as the grid origin.
fn grid_params(samples: &[(i64, f64)]) -> (i64, i64) {
    let mut deltas: Vec<i64> = samples
        .windows(2)
        .map(|w| w[1].0.wrapping_sub(w[0].0))
        .collect();
    let delta = mode(&mut deltas);
    let t0 = samples.first().map_or(0, |s| s.0);
    let mut offs: Vec<i64> = samples
        .iter()
        .take(256)
        .map(|s| centered_rem(s.0.wrapping_sub(t0), delta))
        .collect();
    (delta, mode(&mut offs))
}

/// The most common value (the smallest among equally common ones).
fn mode(v: &mut [i64]) -> i64 {
    v.sort_unstable();
    let (mut best, mut best_n) = (0i64, 0usize);
    let mut i = 0;
    while let Some(&x) = v.get(i) {
        let run = v[i..].iter().take_while(|&&y| y == x).count();
        if run > best_n {
            (best, best_n) = (x, run);
        }
        i += run;
    }
    best
}

/// `x` modulo `delta`, moved into `(-delta/2, delta/2]` (as i64, wrapping).
fn centered_rem(x: i64, delta: i64) -> i64 {
    let d = i128::from(delta as u64);
    if d == 0 {
        return x;
    }
    let x = i128::from(x);
    let r = x.rem_euclid(d);
    (if r > d / 2 { r - d } else { r }) as i64
}

/// Grid anchor step shared by encoder and decoder: after residual `r`
/// against the prediction `p`, the next anchor is `p` moved by the whole
/// number of intervals nearest to `r` (so a missed scrape re-aligns to the
/// grid instead of carrying the jump).
#[inline]
fn next_anchor(p: i64, r: i64, delta: i64) -> i64 {
    let d = i128::from(delta as u64);
    if d == 0 {
        return p;
    }
    let k = (i128::from(r) + d / 2).div_euclid(d);
    p.wrapping_add(k.wrapping_mul(d) as i64)
}

/// Calls `f` with the residual of every timestamp after the first against
/// the grid prediction.
fn grid_residuals(samples: &[(i64, f64)], delta: i64, origin: i64, mut f: impl FnMut(i64)) {
    let Some(first) = samples.first() else { return };
    let mut anchor = first.0.wrapping_add(origin);
    for s in samples.iter().skip(1) {
        let p = anchor.wrapping_add(delta);
        let r = s.0.wrapping_sub(p);
        f(r);
        anchor = next_anchor(p, r, delta);
    }
}

/// The decimal value column.
struct Decimal {
    /// `FLAG_DOD` or 0 (mode decimal).
    flags: u8,
    /// Exponent byte and first mantissa.
    head: Vec<u8>,
    /// Mantissa deltas (or first delta, then delta-of-deltas).
    entries: Vec<i64>,
    /// Exception list (count, then index gap + raw bits each).
    exceptions: Vec<u8>,
    num_exceptions: usize,
}

/// The decimal value column, or `None` when no value converts.
fn encode_decimal(samples: &[(i64, f64)]) -> Option<Decimal> {
    let dec: Vec<Option<(i64, i32)>> = samples.iter().map(|s| to_decimal(s.1)).collect();
    let exp = dec.iter().flatten().map(|d| d.1).min()?;
    // Mantissas at the common exponent; `None` marks an exception.
    let mut ms: Vec<Option<i64>> = Vec::with_capacity(samples.len());
    for (d, s) in dec.iter().zip(samples) {
        let m = d.and_then(|(m, e)| {
            let scale = usize::try_from(e - exp).ok()?;
            let m = m.checked_mul(*I64_POW10.get(scale)?)?;
            (m.abs() < M_LIMIT && from_decimal(m, exp).to_bits() == s.1.to_bits()).then_some(m)
        });
        ms.push(m);
    }
    if ms.iter().all(Option::is_none) {
        return None;
    }
    // Mantissa stream: exceptions repeat the previous mantissa.
    let mut stream = Vec::with_capacity(ms.len());
    let mut prev = 0i64;
    for m in &ms {
        let m = m.unwrap_or(prev);
        stream.push(m);
        prev = m;
    }
    // |m| < 2^53: deltas and delta-of-deltas cannot overflow.
    let deltas: Vec<i64> = stream.windows(2).map(|w| w[1] - w[0]).collect();
    let mut dods = Vec::with_capacity(deltas.len());
    dods.extend(deltas.first().copied());
    dods.extend(deltas.windows(2).map(|w| w[1] - w[0]));
    // Delta or delta-of-delta, by estimated size.
    let c_delta: u64 = deltas.iter().map(|&x| cost(x)).sum();
    let c_dod: u64 = dods.iter().map(|&x| cost(x)).sum();
    let dod = c_dod < c_delta;
    let mut head = Vec::with_capacity(11);
    head.push(exp as i8 as u8);
    put_varint(&mut head, stream.first().copied().unwrap_or(0));
    let exc: Vec<usize> = ms
        .iter()
        .enumerate()
        .filter(|(_, m)| m.is_none())
        .map(|(i, _)| i)
        .collect();
    let mut exceptions = Vec::with_capacity(1 + exc.len() * 10);
    put_uvarint(&mut exceptions, exc.len() as u64);
    let mut next = 0usize;
    for &i in &exc {
        put_uvarint(&mut exceptions, (i - next) as u64);
        exceptions.extend_from_slice(&samples[i].1.to_bits().to_be_bytes());
        next = i + 1;
    }
    Some(Decimal {
        flags: MODE_DECIMAL | if dod { FLAG_DOD } else { 0 },
        head,
        entries: if dod { dods } else { deltas },
        exceptions,
        num_exceptions: exc.len(),
    })
}

/// Raw mode: XOR of consecutive value bits (the first with 0), as 8 byte
/// planes, most significant byte first.
fn encode_xor_planes(out: &mut Vec<u8>, samples: &[(i64, f64)]) {
    let n = samples.len();
    let base = out.len();
    out.resize(base + 8 * n, 0);
    let planes = &mut out[base..];
    let mut prev = 0u64;
    for (i, s) in samples.iter().enumerate() {
        let bits = s.1.to_bits();
        let x = (bits ^ prev).to_be_bytes();
        for (p, b) in x.iter().enumerate() {
            planes[p * n + i] = *b;
        }
        prev = bits;
    }
}

/// Reads a compact chunk's header: `(flags, sample count, header length)`.
fn read_header(data: &[u8]) -> Result<(u8, usize, usize), Error> {
    let mut r = Reader {
        buf: data,
        pos: 0,
        section: "header",
    };
    let version = r.byte()?;
    if version != COMPACT_VERSION {
        return CompactVersionSnafu { version }.fail();
    }
    let flags = r.byte()?;
    let mode = flags & MODE_MASK;
    if flags & !KNOWN_FLAGS != 0
        || (mode != MODE_DECIMAL && mode != MODE_XOR)
        || (mode == MODE_XOR && flags & (FLAG_DOD | FLAG_VAL_SPARSE) != 0)
    {
        return CompactFlagsSnafu { flags }.fail();
    }
    let count = r.uvarint()?;
    if count > MAX_COMPACT_SAMPLES as u64 {
        return CompactTooManySamplesSnafu {
            count,
            max: MAX_COMPACT_SAMPLES,
        }
        .fail();
    }
    if (count == 0 && flags != 0) || (count < 2 && flags & FLAG_GRID != 0) {
        return CompactFlagsSnafu { flags }.fail();
    }
    Ok((flags, count as usize, r.pos))
}

/// The sample count of a compact chunk (header only, no decompression).
pub(crate) fn compact_num_samples(data: &[u8]) -> Result<usize, Error> {
    read_header(data).map(|h| h.1)
}

/// Bounds of a body for `n > 0` samples: smallest possible (sparse
/// columns of zeros: a bitmap bit per entry, plus at least 4 bytes of
/// column heads and exception count) and largest (10-byte varints
/// everywhere, every value an exception).
fn body_bounds(n: usize) -> (u64, u64) {
    let n = n as u64;
    (n / 4 + 3, 32 * n + 64)
}

/// Decodes a compact chunk strictly: any malformed header, truncated or
/// over-long body, out-of-range mantissa or exponent, misplaced exception
/// or non-increasing timestamp is an error.
pub fn decode_compact(data: &[u8]) -> Result<Vec<(i64, f64)>, Error> {
    let (flags, n, hlen) = read_header(data)?;
    let rest = data.get(hlen..).unwrap_or_default();
    if n == 0 {
        if !rest.is_empty() {
            return CompactTrailingSnafu {
                bytes: rest.len(),
                section: "header",
            }
            .fail();
        }
        return Ok(Vec::new());
    }
    let (min, max) = body_bounds(n);
    let owned;
    let body: &[u8] = if flags & FLAG_ZSTD != 0 {
        let mut r = Reader {
            buf: rest,
            pos: 0,
            section: "header",
        };
        let len = r.uvarint()?;
        if len < min || len > max {
            return CompactBodyLengthSnafu {
                declared: len,
                actual: 0u64,
            }
            .fail();
        }
        owned = decompress(rest.get(r.pos..).unwrap_or_default(), len as usize)?;
        &owned
    } else {
        let len = rest.len() as u64;
        if len < min || len > max {
            return CompactBodyLengthSnafu {
                declared: len,
                actual: len,
            }
            .fail();
        }
        rest
    };
    let mut out: Vec<(i64, f64)> = Vec::with_capacity(n);
    let mut r = Reader {
        buf: body,
        pos: 0,
        section: "timestamps",
    };
    decode_timestamps(&mut r, n, flags, &mut out)?;
    if flags & MODE_MASK == MODE_XOR {
        r.section = "values";
        let planes = r.take(8 * n)?;
        let mut prev = 0u64;
        for (i, s) in out.iter_mut().enumerate() {
            let mut x = 0u64;
            for p in 0..8 {
                x = (x << 8) | u64::from(planes.get(p * n + i).copied().unwrap_or(0));
            }
            prev ^= x;
            s.1 = f64::from_bits(prev);
        }
    } else {
        decode_decimal(&mut r, flags, &mut out)?;
    }
    if r.pos != body.len() {
        return CompactTrailingSnafu {
            bytes: body.len() - r.pos,
            section: "body",
        }
        .fail();
    }
    Ok(out)
}

/// Reads a column of `m` entries, plain or sparse.
fn read_entries(r: &mut Reader<'_>, m: usize, sparse: bool) -> Result<Vec<i64>, Error> {
    let mut out = Vec::with_capacity(m);
    if !sparse {
        for _ in 0..m {
            out.push(r.varint()?);
        }
        return Ok(out);
    }
    let start = r.pos;
    let bitmap = r.take(m.div_ceil(8))?;
    let pad_ok = match bitmap.last() {
        Some(&b) if m % 8 != 0 => b >> (m % 8) == 0,
        _ => true,
    };
    if !pad_ok {
        return CompactBitmapSnafu {
            section: r.section,
            offset: start,
        }
        .fail();
    }
    for i in 0..m {
        let set = bitmap.get(i / 8).is_some_and(|b| b >> (i % 8) & 1 == 1);
        if set {
            let at = r.pos;
            let x = r.varint()?;
            if x == 0 {
                return CompactBitmapSnafu {
                    section: r.section,
                    offset: at,
                }
                .fail();
            }
            out.push(x);
        } else {
            out.push(0);
        }
    }
    Ok(out)
}

fn decode_timestamps(
    r: &mut Reader<'_>,
    n: usize,
    flags: u8,
    out: &mut Vec<(i64, f64)>,
) -> Result<(), Error> {
    let t0 = r.varint()?;
    out.push((t0, 0.0));
    if n < 2 {
        return Ok(());
    }
    let sparse = flags & FLAG_TS_SPARSE != 0;
    let mut t = t0;
    if flags & FLAG_GRID != 0 {
        let delta = r.uvarint()? as i64;
        let mut anchor = t0.wrapping_add(r.varint()?);
        let res = read_entries(r, n - 1, sparse)?;
        for (i, &x) in res.iter().enumerate() {
            let p = anchor.wrapping_add(delta);
            let next = p.wrapping_add(x);
            if next <= t {
                return UnorderedSnafu { sample: i + 1 }.fail();
            }
            t = next;
            out.push((t, 0.0));
            anchor = next_anchor(p, x, delta);
        }
        return Ok(());
    }
    let mut d = r.uvarint()? as i64;
    let dods = read_entries(r, n - 2, sparse)?;
    for i in 1..n {
        if i >= 2 {
            d = d.wrapping_add(dods.get(i - 2).copied().unwrap_or(0));
        }
        let next = t.wrapping_add(d);
        if next <= t {
            return UnorderedSnafu { sample: i }.fail();
        }
        t = next;
        out.push((t, 0.0));
    }
    Ok(())
}

fn decode_decimal(r: &mut Reader<'_>, flags: u8, out: &mut [(i64, f64)]) -> Result<(), Error> {
    r.section = "values";
    let exp = i32::from(r.byte()? as i8);
    if !(-MAX_EXP..=MAX_EXP).contains(&exp) {
        return CompactExponentSnafu { exponent: exp }.fail();
    }
    let dod = flags & FLAG_DOD != 0;
    let mut m = r.varint()?;
    let entries = read_entries(r, out.len().saturating_sub(1), flags & FLAG_VAL_SPARSE != 0)?;
    let mut d = 0i64;
    for (i, s) in out.iter_mut().enumerate() {
        if i > 0 {
            let x = entries.get(i - 1).copied().unwrap_or(0);
            let next = if dod && i >= 2 {
                d.checked_add(x)
            } else {
                Some(x)
            };
            let next = next.and_then(|nd| {
                d = nd;
                m.checked_add(nd)
            });
            m = match next {
                Some(v) => v,
                None => {
                    return CompactMantissaSnafu {
                        sample: i,
                        offset: r.pos,
                    }
                    .fail();
                }
            };
        }
        if m <= -M_LIMIT || m >= M_LIMIT {
            return CompactMantissaSnafu {
                sample: i,
                offset: r.pos,
            }
            .fail();
        }
        s.1 = from_decimal(m, exp);
    }
    r.section = "exceptions";
    let k = r.uvarint()?;
    if k > out.len() as u64 {
        return CompactExceptionSnafu {
            index: k,
            offset: r.pos,
        }
        .fail();
    }
    let mut next = 0u64;
    for _ in 0..k {
        let idx = next.saturating_add(r.uvarint()?);
        let Some(s) = usize::try_from(idx).ok().and_then(|i| out.get_mut(i)) else {
            return CompactExceptionSnafu {
                index: idx,
                offset: r.pos,
            }
            .fail();
        };
        let b = r.take(8)?;
        let mut bits = [0u8; 8];
        bits.copy_from_slice(b);
        s.1 = f64::from_bits(u64::from_be_bytes(bits));
        next = idx + 1;
    }
    Ok(())
}

/// Byte cursor over a header or body, with the section name for errors.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    section: &'static str,
}

impl<'a> Reader<'a> {
    fn truncated(&self) -> Error {
        CompactTruncatedSnafu {
            section: self.section,
            offset: self.pos,
        }
        .build()
    }

    #[inline]
    fn byte(&mut self) -> Result<u8, Error> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.truncated())?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.truncated())?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| self.truncated())?;
        self.pos = end;
        Ok(s)
    }

    #[inline]
    fn uvarint(&mut self) -> Result<u64, Error> {
        // Fast path: one byte.
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        let start = self.pos;
        let mut x = 0u64;
        let mut shift = 0u32;
        for i in 0..10 {
            let b = self.byte()?;
            if b < 0x80 {
                if i == 9 && b > 1 {
                    break;
                }
                return Ok(x | (u64::from(b) << shift));
            }
            x |= u64::from(b & 0x7f) << shift;
            shift += 7;
        }
        CompactVarintSnafu {
            section: self.section,
            offset: start,
        }
        .fail()
    }

    #[inline]
    fn varint(&mut self) -> Result<i64, Error> {
        self.uvarint().map(unzigzag)
    }
}

/// Fuzz entry point: decodes arbitrary bytes as a compact chunk every way
/// the crate can and checks the invariants that must hold for any input.
/// Never panics unless an invariant is broken.
pub fn fuzz_compact_decode(data: &[u8]) {
    use super::Encoding;
    use super::any::{ChunkIter, chunk_num_samples_any, to_xor_chunks};
    let enc = Encoding::Compact as u8;
    let strict = decode_compact(data);
    let mut it = ChunkIter::new(enc, data);
    let lazy: Vec<(i64, f64)> = it.by_ref().collect();
    let Ok(samples) = strict else {
        assert!(it.error().is_some() && lazy.is_empty());
        return;
    };
    assert!(it.error().is_none());
    assert!(same_bits(&samples, &lazy));
    assert!(samples.len() <= MAX_COMPACT_SAMPLES);
    assert!(samples.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(chunk_num_samples_any(enc, data).ok(), Some(samples.len()));
    // Re-encoding decodes to the same bits.
    let again = decode_compact(&encode_compact(&samples));
    assert!(again.is_ok_and(|a| same_bits(&a, &samples)));
    // Seeking to every other timestamp finds it.
    let mut seeker = ChunkIter::new(enc, data);
    for &(t, v) in samples.iter().step_by(2) {
        let got = seeker.seek(t).map(|(t, v)| (t, v.to_bits()));
        assert_eq!(got, Some((t, v.to_bits())));
    }
    // Conversion to XOR chunks keeps every sample.
    let xor = to_xor_chunks(enc, data, 120);
    let Ok(xor) = xor else {
        panic!("to_xor_chunks rejected a chunk decode_compact accepted");
    };
    let mut back = Vec::new();
    for (mint, maxt, c) in &xor {
        let part = super::decode_xor(c).unwrap_or_default();
        assert!(part.len() <= 120);
        assert_eq!(part.first().map(|s| s.0), Some(*mint));
        assert_eq!(part.last().map(|s| s.0), Some(*maxt));
        back.extend(part);
    }
    assert!(same_bits(&samples, &back));
}

fn same_bits(a: &[(i64, f64)], b: &[(i64, f64)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
}

#[cfg(test)]
pub(super) fn decimal_of(v: f64) -> Option<(i64, i32)> {
    to_decimal(v)
}
