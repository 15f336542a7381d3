//! The compact float chunk (encoding `0x81`): the chunk format of blocks
//! written by compaction. Byte layout: `docs/format/chunks.md`, section 3.
//!
//! Design choices:
//! - Columnar body: all timestamps (first value, first delta, then zigzag
//!   delta-of-delta varints), then all values, then exceptions. Keeping the
//!   columns apart lets zstd model each one (mostly-zero timestamp bytes,
//!   small value deltas) instead of an interleaved mix.
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
//!   `compact` bench: higher levels gain little on this data and cost encode
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
    CompactBodyLengthSnafu, CompactDecompressSnafu, CompactExceptionSnafu, CompactExponentSnafu,
    CompactFlagsSnafu, CompactMantissaSnafu, CompactTooManySamplesSnafu, CompactTrailingSnafu,
    CompactTruncatedSnafu, CompactVarintSnafu, CompactVersionSnafu, Error, UnorderedSnafu,
};

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
pub const COMPACT_ZSTD_LEVEL: i32 = 9;

/// Flag: the body is a zstd frame.
const FLAG_ZSTD: u8 = 0x01;
/// Value mode bits.
const MODE_MASK: u8 = 0x06;
const MODE_DECIMAL: u8 = 0x00;
const MODE_XOR: u8 = 0x02;
/// Flag (decimal mode): mantissas are delta-of-delta encoded.
const FLAG_DOD: u8 = 0x08;
const KNOWN_FLAGS: u8 = FLAG_ZSTD | MODE_MASK | FLAG_DOD;

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

#[inline]
fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

#[inline]
fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

#[inline]
fn put_uvarint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

#[inline]
fn put_varint(out: &mut Vec<u8>, x: i64) {
    put_uvarint(out, zigzag(x));
}

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
    let n = samples.len();
    assert!(
        n <= MAX_COMPACT_SAMPLES,
        "compact chunk of {n} samples exceeds {MAX_COMPACT_SAMPLES}"
    );
    let mut body = Vec::with_capacity(n * 3 + 16);
    encode_timestamps(&mut body, samples);
    let ts_len = body.len();
    match encode_decimal(&mut body, samples) {
        Some((flags, 0)) => finish(flags, n, &body),
        Some((flags, exceptions)) if exceptions * 8 < n => finish(flags, n, &body),
        Some((flags, _)) => {
            // Many exceptions: the raw mode may be smaller; keep the better.
            let mut alt = body[..ts_len].to_vec();
            encode_xor_planes(&mut alt, samples);
            let a = finish(flags, n, &body);
            let b = finish(MODE_XOR, n, &alt);
            if b.len() < a.len() { b } else { a }
        }
        None => {
            body.truncate(ts_len);
            encode_xor_planes(&mut body, samples);
            finish(MODE_XOR, n, &body)
        }
    }
}

/// Header plus (compressed if smaller) body.
fn finish(mut flags: u8, n: usize, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() / 2 + 16);
    if n == 0 {
        out.extend_from_slice(&[COMPACT_VERSION, 0, 0]);
        return out;
    }
    if let Some(z) = compress(body) {
        let mut len = Vec::with_capacity(4);
        put_uvarint(&mut len, body.len() as u64);
        if z.len() + len.len() < body.len() {
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
    out.extend_from_slice(body);
    out
}

thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// zstd frame of `body` (no content size, no checksum: the header carries
/// the size and the segment record a CRC). `None` if zstd fails.
fn compress(body: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.try_borrow_mut().ok()?;
        if c.is_none() {
            let mut z = zstd::bulk::Compressor::new(COMPACT_ZSTD_LEVEL).ok()?;
            z.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false))
                .ok()?;
            *c = Some(z);
        }
        c.as_mut()?.compress(body).ok()
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

fn encode_timestamps(out: &mut Vec<u8>, samples: &[(i64, f64)]) {
    let mut prev_t = 0i64;
    let mut prev_d = 0i64;
    for (i, &(t, _)) in samples.iter().enumerate() {
        match i {
            0 => put_varint(out, t),
            1 => {
                prev_d = t.wrapping_sub(prev_t);
                put_uvarint(out, prev_d as u64);
            }
            _ => {
                let d = t.wrapping_sub(prev_t);
                put_varint(out, d.wrapping_sub(prev_d));
                prev_d = d;
            }
        }
        prev_t = t;
    }
}

/// Appends the decimal value section; returns the mode flags and the
/// number of exceptions, or `None` (and writes nothing) when no value
/// converts.
fn encode_decimal(out: &mut Vec<u8>, samples: &[(i64, f64)]) -> Option<(u8, usize)> {
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
    // Delta or delta-of-delta, by estimated size.
    let (mut c_delta, mut c_dod) = (0u64, 0u64);
    for i in 1..stream.len() {
        let d = stream[i] - stream[i - 1];
        c_delta += cost(d);
        c_dod += if i == 1 {
            cost(d)
        } else {
            cost(d - (stream[i - 1] - stream[i - 2]))
        };
    }
    let dod = c_dod < c_delta;
    out.push(exp as i8 as u8);
    let mut prev_m = 0i64;
    let mut prev_d = 0i64;
    for (i, &m) in stream.iter().enumerate() {
        if i == 0 {
            put_varint(out, m);
        } else {
            let d = m - prev_m;
            if dod && i >= 2 {
                put_varint(out, d - prev_d);
            } else {
                put_varint(out, d);
            }
            prev_d = d;
        }
        prev_m = m;
    }
    // Exceptions.
    let exc: Vec<usize> = ms
        .iter()
        .enumerate()
        .filter(|(_, m)| m.is_none())
        .map(|(i, _)| i)
        .collect();
    put_uvarint(out, exc.len() as u64);
    let mut next = 0usize;
    for &i in &exc {
        put_uvarint(out, (i - next) as u64);
        out.extend_from_slice(&samples[i].1.to_bits().to_be_bytes());
        next = i + 1;
    }
    Some((MODE_DECIMAL | if dod { FLAG_DOD } else { 0 }, exc.len()))
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
        || (mode == MODE_XOR && flags & FLAG_DOD != 0)
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
    Ok((flags, count as usize, r.pos))
}

/// The sample count of a compact chunk (header only, no decompression).
pub(crate) fn compact_num_samples(data: &[u8]) -> Result<usize, Error> {
    read_header(data).map(|h| h.1)
}

/// Bounds of a body for `n > 0` samples: smallest possible (one byte per
/// timestamp and per mantissa, exponent, exception count) and largest
/// (10-byte varints everywhere, every value an exception).
fn body_bounds(n: usize) -> (u64, u64) {
    let n = n as u64;
    (2 * n + 2, 31 * n + 16)
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
    decode_timestamps(&mut r, n, &mut out)?;
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
        decode_decimal(&mut r, flags & FLAG_DOD != 0, &mut out)?;
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

fn decode_timestamps(r: &mut Reader<'_>, n: usize, out: &mut Vec<(i64, f64)>) -> Result<(), Error> {
    let mut t = 0i64;
    let mut d = 0i64;
    for i in 0..n {
        match i {
            0 => t = r.varint()?,
            1 => {
                d = r.uvarint()? as i64;
                t = t.wrapping_add(d);
            }
            _ => {
                d = d.wrapping_add(r.varint()?);
                t = t.wrapping_add(d);
            }
        }
        if out.last().is_some_and(|p| p.0 >= t) {
            return UnorderedSnafu { sample: i }.fail();
        }
        out.push((t, 0.0));
    }
    Ok(())
}

fn decode_decimal(r: &mut Reader<'_>, dod: bool, out: &mut [(i64, f64)]) -> Result<(), Error> {
    r.section = "values";
    let exp = i32::from(r.byte()? as i8);
    if !(-MAX_EXP..=MAX_EXP).contains(&exp) {
        return CompactExponentSnafu { exponent: exp }.fail();
    }
    let mut m = 0i64;
    let mut d = 0i64;
    for (i, s) in out.iter_mut().enumerate() {
        let x = r.varint()?;
        let next = match i {
            0 => Some(x),
            1 => {
                d = x;
                m.checked_add(d)
            }
            _ => {
                d = if dod { d.checked_add(x) } else { Some(x) }.ok_or_else(|| {
                    CompactMantissaSnafu {
                        sample: i,
                        offset: r.pos,
                    }
                    .build()
                })?;
                m.checked_add(d)
            }
        };
        m = match next {
            Some(v) if v > -M_LIMIT && v < M_LIMIT => v,
            _ => {
                return CompactMantissaSnafu {
                    sample: i,
                    offset: r.pos,
                }
                .fail();
            }
        };
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
