//! The XOR float chunk (encoding 1): appender, lazy iterator and strict
//! decoder. Byte layout: `docs/format/chunks.md`.
//!
//! Timestamp arithmetic wraps (two's complement), exactly like Prometheus'
//! `uint64`/`int64` conversions, so any strictly increasing `i64` series
//! round-trips, including gaps wider than `i64::MAX`.

use super::bstream::{BitReader, write_bits};
use super::{
    Error, InvalidXorWindowSnafu, MAX_SAMPLES_PER_CHUNK, MissingHeaderSnafu, TrailingDataSnafu,
    TruncatedSnafu, VarintOverflowSnafu,
};

/// `leading` value meaning "no XOR window chosen yet".
const NO_WINDOW: u8 = 0xff;

/// Room one appended sample may need in the buffer: at most 20 bytes
/// (a 4-bit prefix and 64-bit delta-of-delta, then a 13-bit window header
/// and 64 value bits) plus the 8 bytes `write_bits` may touch beyond them.
pub const XOR_SAMPLE_ROOM: usize = 32;

/// Size of the sample count header.
const HEADER_LEN: usize = 2;

/// Most zero padding bits accepted after the last sample: up to 7 to reach a
/// byte boundary, or one whole zero byte (Prometheus before v3.0 sometimes
/// appended an unused byte, see prometheus/prometheus#14854).
const MAX_PADDING_BITS: u64 = 8;

/// Appends float samples to an XOR chunk. See the module docs of
/// [`crate::chunks`] for the memory layout rationale.
#[derive(Debug, Clone)]
pub struct XorAppender {
    /// The chunk: count header and bit stream, always complete.
    buf: Vec<u8>,
    /// Last timestamp.
    t: i64,
    /// Bits of the last value.
    v: u64,
    /// Last timestamp delta (wrapping).
    t_delta: u64,
    /// Number of samples (mirrors the header).
    num: u16,
    /// Current XOR window; `leading == NO_WINDOW` until the first one.
    leading: u8,
    trailing: u8,
    /// Unused low bits of the last byte of `buf` (0..=7).
    free: u8,
}

impl Default for XorAppender {
    fn default() -> Self {
        Self::new()
    }
}

impl XorAppender {
    /// An empty chunk (only the zero sample count is written).
    pub fn new() -> Self {
        Self::with_capacity(64)
    }

    /// An empty chunk whose buffer starts with room for `cap` bytes (the
    /// head allocates its open chunks once, at their final size: see
    /// [`XorAppender::has_room`]).
    pub fn with_capacity(cap: usize) -> Self {
        let mut buf = Vec::with_capacity(cap.max(HEADER_LEN));
        buf.extend_from_slice(&[0, 0]);
        XorAppender {
            buf,
            t: 0,
            v: 0,
            t_delta: 0,
            num: 0,
            leading: NO_WINDOW,
            trailing: 0,
            free: 0,
        }
    }

    /// Appends a sample. The caller guarantees `t` is greater than the last
    /// timestamp and that the chunk holds fewer than
    /// [`MAX_SAMPLES_PER_CHUNK`] samples. `v` is stored bit-exactly.
    pub fn append(&mut self, t: i64, v: f64) {
        debug_assert!((self.num as usize) < MAX_SAMPLES_PER_CHUNK);
        debug_assert!(self.num == 0 || t > self.t);
        let vbits = v.to_bits();
        // Grow by an eighth (at least 32 bytes) instead of doubling: the
        // head keeps one open chunk per series, so doubling's slack (a
        // quarter of the buffer on average) is paid a million times.
        // One sample needs at most 20 bytes plus `write_bits`' 8-byte
        // overshoot.
        if !self.has_room() {
            self.buf.reserve_exact((self.buf.len() / 8).max(32));
        }
        match self.num {
            0 => {
                let mut tmp = [0u8; 10];
                let n = put_uvarint(&mut tmp, zigzag(t));
                self.buf.extend_from_slice(&tmp[..n]);
                self.buf.extend_from_slice(&vbits.to_be_bytes());
                // free stays 0: both fields are whole bytes.
            }
            1 => {
                let t_delta = t.wrapping_sub(self.t) as u64;
                let mut tmp = [0u8; 10];
                let n = put_uvarint(&mut tmp, t_delta);
                for &b in &tmp[..n] {
                    self.bits(u64::from(b), 8);
                }
                self.write_value(vbits);
                self.t_delta = t_delta;
            }
            _ => {
                let t_delta = t.wrapping_sub(self.t) as u64;
                let dod = t_delta.wrapping_sub(self.t_delta) as i64;
                if dod == 0 {
                    self.bits(0, 1);
                } else if fits(dod, 14) {
                    self.bits((0b10 << 14) | (dod as u64 & mask(14)), 16);
                } else if fits(dod, 17) {
                    self.bits((0b110 << 17) | (dod as u64 & mask(17)), 20);
                } else if fits(dod, 20) {
                    self.bits((0b1110 << 20) | (dod as u64 & mask(20)), 24);
                } else {
                    self.bits(0b1111, 4);
                    self.bits(dod as u64, 64);
                }
                self.write_value(vbits);
                self.t_delta = t_delta;
            }
        }
        self.t = t;
        self.v = vbits;
        self.num = self.num.wrapping_add(1);
        let [hi, lo] = self.num.to_be_bytes();
        if let [h, l, ..] = self.buf.as_mut_slice() {
            *h = hi;
            *l = lo;
        }
    }

    #[inline]
    fn bits(&mut self, value: u64, n: u32) {
        write_bits(&mut self.buf, &mut self.free, value, n);
    }

    /// Writes the XOR of `vbits` with the previous value, choosing the
    /// control bits and window exactly like Prometheus.
    #[inline]
    fn write_value(&mut self, vbits: u64) {
        let delta = vbits ^ self.v;
        if delta == 0 {
            self.bits(0, 1);
            return;
        }
        // Leading zeros are stored in 5 bits: clamp to 31.
        let leading = (delta.leading_zeros() as u8).min(31);
        let trailing = delta.trailing_zeros() as u8;
        if self.leading != NO_WINDOW && leading >= self.leading && trailing >= self.trailing {
            // '10': the meaningful bits fit the previous window.
            let sig = 64 - u32::from(self.leading) - u32::from(self.trailing);
            let payload = delta >> self.trailing;
            if sig <= 62 {
                self.bits((0b10 << sig) | payload, sig + 2);
            } else {
                self.bits(0b10, 2);
                self.bits(payload, sig);
            }
        } else {
            // '11' + 5 bits leading + 6 bits significant count (64 -> 0).
            self.leading = leading;
            self.trailing = trailing;
            let sig = 64 - u32::from(leading) - u32::from(trailing);
            let head = (0b11 << 11) | (u64::from(leading) << 6) | (u64::from(sig) & 0x3f);
            let payload = delta >> trailing;
            if sig <= 51 {
                self.bits((head << sig) | payload, 13 + sig);
            } else {
                self.bits(head, 13);
                self.bits(payload, sig);
            }
        }
    }

    /// Number of samples in the chunk.
    pub fn num_samples(&self) -> usize {
        usize::from(self.num)
    }

    /// Timestamp of the first sample.
    pub fn first_t(&self) -> Option<i64> {
        if self.num == 0 {
            return None;
        }
        let (u, _) = get_uvarint(self.buf.get(HEADER_LEN..)?)?;
        Some(unzigzag(u))
    }

    /// Timestamp of the last sample.
    pub fn last_t(&self) -> Option<i64> {
        (self.num > 0).then_some(self.t)
    }

    /// Value of the last sample.
    pub fn last_v(&self) -> Option<f64> {
        (self.num > 0).then_some(f64::from_bits(self.v))
    }

    /// The chunk bytes; a complete, decodable chunk at any moment.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Whether the next sample fits the buffer without growing it (one
    /// sample needs at most [`XOR_SAMPLE_ROOM`] bytes).
    pub fn has_room(&self) -> bool {
        self.buf.capacity() - self.buf.len() >= XOR_SAMPLE_ROOM
    }

    /// Bytes allocated for the chunk buffer (its capacity).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The chunk bytes, with the buffer shrunk to fit.
    pub fn into_bytes(mut self) -> Vec<u8> {
        self.buf.shrink_to_fit();
        self.buf
    }

    /// Resumes appending to an existing chunk. Decodes every sample to
    /// restore the encoder state, so the result of further appends is
    /// byte-identical to appending all samples to one appender. Fails on
    /// the errors of [`decode_xor`].
    pub fn from_bytes(mut data: Vec<u8>) -> Result<Self, Error> {
        let mut it = XorIterator::new(data.as_slice());
        while it.next().is_some() {}
        if let Some(e) = it.err {
            return Err(e);
        }
        let rest = it.check_trailing()?;
        let state = it.state();
        // Drop a whole unused padding byte (older Prometheus versions).
        let free = if rest >= 8 {
            data.truncate(data.len() - 1);
            rest - 8
        } else {
            rest
        };
        Ok(XorAppender {
            buf: data,
            t: state.t,
            v: state.v,
            t_delta: state.t_delta,
            num: state.num,
            leading: state.leading,
            trailing: state.trailing,
            free: free as u8,
        })
    }
}

/// Whether `x` is in the range Prometheus stores in an `nbits` bucket:
/// `-(2^(nbits-1) - 1) ..= 2^(nbits-1)`.
#[inline]
fn fits(x: i64, nbits: u32) -> bool {
    let half = 1i64 << (nbits - 1);
    -(half - 1) <= x && x <= half
}

#[inline]
fn mask(n: u32) -> u64 {
    (1u64 << n) - 1
}

#[inline]
fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

#[inline]
fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Go's `binary.PutUvarint`; returns the length written.
fn put_uvarint(out: &mut [u8; 10], mut x: u64) -> usize {
    let mut i = 0;
    while x >= 0x80 {
        out[i] = (x as u8) | 0x80;
        x >>= 7;
        i += 1;
    }
    out[i] = x as u8;
    i + 1
}

/// Go's `binary.Uvarint` on a byte slice: value and length, `None` when
/// truncated or overflowing.
fn get_uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut x = 0u64;
    let mut shift = 0u32;
    for (i, &b) in data.iter().enumerate().take(10) {
        if b < 0x80 {
            if i == 9 && b > 1 {
                return None;
            }
            return Some((x | (u64::from(b) << shift), i + 1));
        }
        x |= u64::from(b & 0x7f) << shift;
        shift += 7;
    }
    None
}

#[cold]
fn truncated(r: &BitReader, sample: u16, total: u16) -> Error {
    TruncatedSnafu {
        sample,
        total,
        bit_offset: r.bit_offset(),
    }
    .build()
}

/// Decoder state after the last decoded sample.
struct State {
    t: i64,
    v: u64,
    t_delta: u64,
    num: u16,
    leading: u8,
    trailing: u8,
}

/// Lazily decodes an XOR chunk. Yields `(timestamp, value)`; stops at the
/// end or at the first corrupt sample, after which [`XorIterator::error`]
/// tells why. Never allocates.
#[derive(Debug, Clone)]
pub struct XorIterator<B: AsRef<[u8]>> {
    data: B,
    r: BitReader,
    total: u16,
    read: u16,
    t: i64,
    v: u64,
    t_delta: u64,
    leading: u8,
    trailing: u8,
    err: Option<Error>,
}

impl<B: AsRef<[u8]>> XorIterator<B> {
    /// An iterator over the chunk in `data` (count header included).
    pub fn new(data: B) -> Self {
        let bytes = data.as_ref();
        let (total, err) = match bytes {
            [hi, lo, ..] => (u16::from_be_bytes([*hi, *lo]), None),
            _ => (0, Some(MissingHeaderSnafu { len: bytes.len() }.build())),
        };
        XorIterator {
            data,
            r: BitReader::new(HEADER_LEN),
            total,
            read: 0,
            t: 0,
            v: 0,
            t_delta: 0,
            leading: NO_WINDOW,
            trailing: 0,
            err,
        }
    }

    /// Advances to the first sample with timestamp `>= t` and returns it.
    /// The sample last returned (by `next` or `seek`) counts: if its
    /// timestamp is already `>= t` it is returned again, so the iterator
    /// never moves backwards. A later `next` returns the sample after the
    /// one returned here. `None` when no such sample remains.
    pub fn seek(&mut self, t: i64) -> Option<(i64, f64)> {
        if self.err.is_some() {
            return None;
        }
        if self.read > 0 && self.t >= t {
            return Some((self.t, f64::from_bits(self.v)));
        }
        for (ts, v) in self.by_ref() {
            if ts >= t {
                return Some((ts, v));
            }
        }
        None
    }

    /// Why iteration stopped early, if the data is corrupt or truncated.
    pub fn error(&self) -> Option<&Error> {
        self.err.as_ref()
    }

    /// Number of samples announced by the header.
    pub fn num_samples(&self) -> usize {
        usize::from(self.total)
    }

    fn state(&self) -> State {
        State {
            t: self.t,
            v: self.v,
            t_delta: self.t_delta,
            num: self.read,
            leading: self.leading,
            trailing: self.trailing,
        }
    }

    /// After the last sample: checks that only zero padding follows and
    /// returns the number of padding bits.
    fn check_trailing(&self) -> Result<u64, Error> {
        let data = self.data.as_ref();
        let rest = self.r.remaining_bits(data);
        if rest > MAX_PADDING_BITS || !self.r.rest_is_zero(data) {
            return TrailingDataSnafu {
                bits: rest,
                total: self.total,
            }
            .fail();
        }
        Ok(rest)
    }

    fn truncated(&self) -> Error {
        truncated(&self.r, self.read, self.total)
    }

    /// Reads a Go varint byte by byte from the bit stream.
    fn read_uvarint(&mut self) -> Result<u64, Error> {
        let start = self.r.bit_offset();
        let mut x = 0u64;
        let mut shift = 0u32;
        for i in 0..10 {
            let b = self
                .r
                .read_bits(self.data.as_ref(), 8)
                .ok_or_else(|| self.truncated())?;
            if b < 0x80 {
                if i == 9 && b > 1 {
                    break;
                }
                return Ok(x | (b << shift));
            }
            x |= (b & 0x7f) << shift;
            shift += 7;
        }
        VarintOverflowSnafu {
            sample: self.read,
            bit_offset: start,
        }
        .fail()
    }

    /// Decodes the next sample into `self.t` / `self.v`.
    #[inline]
    fn decode_next(&mut self) -> Result<(), Error> {
        match self.read {
            0 => {
                self.t = unzigzag(self.read_uvarint()?);
                self.v = self
                    .r
                    .read_bits(self.data.as_ref(), 64)
                    .ok_or_else(|| self.truncated())?;
            }
            1 => {
                self.t_delta = self.read_uvarint()?;
                self.t = self.t.wrapping_add(self.t_delta as i64);
                self.read_value()?;
            }
            _ => {
                let (read, total) = (self.read, self.total);
                let data = self.data.as_ref();
                let r = &mut self.r;
                r.ensure(data, 4);
                // Fast path: same delta, same value ('0' '0').
                if r.peek() >> 62 == 0 && r.available() >= 2 {
                    r.consume(2);
                    self.t = self.t.wrapping_add(self.t_delta as i64);
                    return Ok(());
                }
                // Count the prefix: up to four 1 bits, ended by a 0 unless 4.
                let ones = (!r.peek()).leading_zeros().min(4);
                let prefix = if ones == 4 { 4 } else { ones + 1 };
                if prefix > r.available() {
                    return Err(truncated(r, read, total));
                }
                r.consume(prefix);
                let dod = match ones {
                    0 => 0,
                    4 => r
                        .read_bits(data, 64)
                        .ok_or_else(|| truncated(r, read, total))? as i64,
                    _ => {
                        let sz = [14, 17, 20][ones as usize - 1];
                        let bits = r
                            .read_bits(data, sz)
                            .ok_or_else(|| truncated(r, read, total))?;
                        // Values above 2^(sz-1) are negative.
                        if bits > 1 << (sz - 1) {
                            bits.wrapping_sub(1 << sz) as i64
                        } else {
                            bits as i64
                        }
                    }
                };
                self.t_delta = self.t_delta.wrapping_add(dod as u64);
                self.t = self.t.wrapping_add(self.t_delta as i64);
                self.read_value()?;
            }
        }
        Ok(())
    }

    #[inline]
    fn read_value(&mut self) -> Result<(), Error> {
        let (read, total) = (self.read, self.total);
        let data = self.data.as_ref();
        let r = &mut self.r;
        r.ensure(data, 2);
        let top = r.peek();
        if top >> 63 == 0 {
            if r.available() < 1 {
                return Err(truncated(r, read, total));
            }
            r.consume(1);
            return Ok(());
        }
        if r.available() < 2 {
            return Err(truncated(r, read, total));
        }
        r.consume(2);
        if top >> 62 == 0b11 {
            let start = r.bit_offset();
            let head = r
                .read_bits(data, 11)
                .ok_or_else(|| truncated(r, read, total))?;
            let leading = (head >> 6) as u8;
            let sig = match (head & 0x3f) as u8 {
                0 => 64,
                s => s,
            };
            if u32::from(leading) + u32::from(sig) > 64 {
                return InvalidXorWindowSnafu {
                    sample: read,
                    bit_offset: start,
                    leading,
                    significant: sig,
                }
                .fail();
            }
            self.leading = leading;
            self.trailing = 64 - leading - sig;
        } else if self.leading == NO_WINDOW {
            // '10' before any window: Prometheus' decoder starts with a
            // zero window, i.e. 64 significant bits.
            self.leading = 0;
            self.trailing = 0;
        }
        let sig = 64 - u32::from(self.leading) - u32::from(self.trailing);
        let bits = r
            .read_bits(data, sig)
            .ok_or_else(|| truncated(r, read, total))?;
        self.v ^= bits << self.trailing;
        Ok(())
    }
}

impl<B: AsRef<[u8]>> Iterator for XorIterator<B> {
    type Item = (i64, f64);

    #[inline]
    fn next(&mut self) -> Option<(i64, f64)> {
        if self.read >= self.total || self.err.is_some() {
            return None;
        }
        match self.decode_next() {
            Ok(()) => {
                self.read += 1;
                Some((self.t, f64::from_bits(self.v)))
            }
            Err(e) => {
                self.err = Some(e);
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.err.is_some() {
            return (0, Some(0));
        }
        (0, Some(usize::from(self.total - self.read)))
    }
}

/// Decodes a whole chunk strictly: fails on a short header, truncation,
/// invalid encodings and on anything after the last sample but zero
/// padding (to the byte boundary, or one whole zero byte).
pub fn decode_xor(data: &[u8]) -> Result<Vec<(i64, f64)>, Error> {
    let mut it = XorIterator::new(data);
    let mut out = Vec::with_capacity(it.num_samples());
    out.extend(&mut it);
    if let Some(e) = it.err {
        return Err(e);
    }
    it.check_trailing()?;
    Ok(out)
}

/// The sample count stored in a chunk's header.
pub fn chunk_num_samples(data: &[u8]) -> Result<u16, Error> {
    match data {
        [hi, lo, ..] => Ok(u16::from_be_bytes([*hi, *lo])),
        _ => MissingHeaderSnafu { len: data.len() }.fail(),
    }
}

/// Fuzz entry point: decodes arbitrary bytes every way this module can and
/// checks the invariants that must hold for any input. Never panics unless
/// an invariant is broken.
pub fn fuzz_xor_decode(data: &[u8]) {
    let strict = decode_xor(data);

    // The lazy iterator yields the same prefix and fails iff decoding does
    // (apart from the trailing-data check).
    let mut it = XorIterator::new(data);
    let lazy: Vec<(i64, f64)> = it.by_ref().collect();
    match &strict {
        Ok(samples) => {
            assert!(it.error().is_none());
            assert!(same_bits(samples, &lazy));
        }
        Err(Error::TrailingData { .. }) => assert!(it.error().is_none()),
        Err(_) => assert!(it.error().is_some()),
    }

    // Seeking to every other decoded timestamp finds it (when the decoded
    // timestamps increase; corrupt data may decode to any order).
    let increasing = lazy.windows(2).all(|w| w[0].0 < w[1].0);
    let mut seeker = XorIterator::new(data);
    for &(t, v) in lazy.iter().step_by(2) {
        let got = seeker.seek(t);
        if increasing {
            assert_eq!(got.map(|(t, v)| (t, v.to_bits())), Some((t, v.to_bits())));
        }
    }

    let Ok(samples) = strict else { return };
    let Ok(mut app) = XorAppender::from_bytes(data.to_vec()) else {
        panic!("from_bytes rejected a chunk decode_xor accepted");
    };
    assert_eq!(app.num_samples(), samples.len());

    // Re-encoding the samples decodes to the same bits.
    let mut fresh = XorAppender::new();
    if increasing {
        for &(t, v) in &samples {
            fresh.append(t, v);
        }
        let again = decode_xor(fresh.bytes()).unwrap_or_default();
        assert!(same_bits(&samples, &again));
    }

    // Resuming and appending one more sample keeps everything decodable.
    let last = app.last_t().unwrap_or(0);
    if last < i64::MAX && app.num_samples() < MAX_SAMPLES_PER_CHUNK {
        app.append(last + 1, 42.0);
        let more = decode_xor(app.bytes()).unwrap_or_default();
        assert_eq!(more.len(), samples.len() + 1);
        assert!(same_bits(&samples, &more[..samples.len()]));
    }
}

fn same_bits(a: &[(i64, f64)], b: &[(i64, f64)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
}
