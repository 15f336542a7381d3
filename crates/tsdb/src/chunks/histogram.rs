//! Native histogram chunks: Prometheus' integer histogram (encoding 2) and
//! float histogram (encoding 3) chunk formats, appenders and strict
//! decoders. Byte layout: `docs/format/chunks.md` section 4.
//!
//! Both encodings share a 3-byte header (sample count, counter-reset
//! flags) and a *layout* written once before the first sample (zero
//! threshold, schema, positive and negative spans, custom bounds). Every
//! sample of a chunk uses the chunk's layout, so the appender refuses a
//! histogram whose schema, zero threshold, spans or custom bounds differ
//! ([`Appendable::Cut`]): Stratus cuts a new chunk where Prometheus would
//! re-encode the chunk with merged spans. Both choices produce valid
//! chunks; cutting keeps every appended histogram's spans unchanged, so a
//! decoded histogram is bit for bit the one appended (except the
//! counter-reset hint, which a chunk stores once in its header, and stale
//! markers, whose buckets are dropped as Prometheus does).
//!
//! Decoding is whole-chunk and defensive: corrupt data gives an [`Error`],
//! never a panic, and allocation is bounded by the data length.

use stratus_model::{
    BucketSpan, CUSTOM_BUCKETS_SCHEMA, FloatHistogram, Histogram, is_known_schema, is_stale_nan,
    reset_hint,
};

use super::bstream::{BitReader, write_bits};
use super::{Error, HistogramSnafu, MAX_SAMPLES_PER_CHUNK, MissingHeaderSnafu, TrailingDataSnafu};

/// Header size: sample count (2) and flags (1).
pub const HISTOGRAM_HEADER_LEN: usize = 3;

/// Counter-reset information of a histogram chunk: the top two bits of
/// header byte 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterResetHeader {
    /// Not known whether the chunk starts with a counter reset.
    Unknown,
    /// The chunk was cut because of a counter reset.
    Reset,
    /// The chunk was cut without a counter reset.
    NotReset,
    /// The chunk holds gauge histograms.
    Gauge,
}

impl CounterResetHeader {
    /// The flag byte bits.
    pub fn bits(self) -> u8 {
        match self {
            CounterResetHeader::Unknown => 0,
            CounterResetHeader::Reset => 0b1000_0000,
            CounterResetHeader::NotReset => 0b0100_0000,
            CounterResetHeader::Gauge => 0b1100_0000,
        }
    }

    /// The header of a flag byte (low bits ignored).
    pub fn from_byte(b: u8) -> Self {
        match b & 0b1100_0000 {
            0b1000_0000 => CounterResetHeader::Reset,
            0b0100_0000 => CounterResetHeader::NotReset,
            0b1100_0000 => CounterResetHeader::Gauge,
            _ => CounterResetHeader::Unknown,
        }
    }

    /// The header for the first chunk of a series given the first
    /// histogram's hint.
    pub fn for_hint(hint: u8) -> Self {
        match hint {
            reset_hint::RESET => CounterResetHeader::Reset,
            reset_hint::GAUGE => CounterResetHeader::Gauge,
            _ => CounterResetHeader::Unknown,
        }
    }

    /// The hint a decoded sample gets: gauge chunks give gauge; after the
    /// first sample, no reset; the first sample of a chunk cut for a reset
    /// gives reset, otherwise unknown (the previous chunk may be gone).
    fn hint(self, index: usize) -> u8 {
        match self {
            CounterResetHeader::Gauge => reset_hint::GAUGE,
            _ if index > 0 => reset_hint::NOT_RESET,
            CounterResetHeader::Reset => reset_hint::RESET,
            _ => reset_hint::UNKNOWN,
        }
    }
}

/// Whether a histogram fits the open chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appendable {
    /// Append it to this chunk.
    Yes,
    /// Start a new chunk with this header.
    Cut(CounterResetHeader),
}

// ---------------------------------------------------------------------
// Bit-level primitives.

/// Prometheus' `putVarbitInt` bucket widths, in prefix order.
const VARBIT_WIDTHS: [u32; 7] = [3, 6, 9, 12, 18, 25, 56];

fn fits_signed(x: i64, nbits: u32) -> bool {
    let half = 1i64 << (nbits - 1);
    -(half - 1) <= x && x <= half
}

/// Writes `v` with Prometheus' signed varbit encoding: `0` for zero, else a
/// prefix of `k` one bits and a zero (k = 1..=7) followed by a `w`-bit two's
/// complement payload, or eight one bits and 64 raw bits.
pub(crate) fn put_varbit_int(buf: &mut Vec<u8>, free: &mut u8, v: i64) {
    if v == 0 {
        write_bits(buf, free, 0, 1);
        return;
    }
    for (k, &w) in VARBIT_WIDTHS.iter().enumerate() {
        if fits_signed(v, w) {
            let k = k as u32 + 1;
            let prefix = ((1u64 << k) - 1) << 1; // k ones then a zero
            write_bits(buf, free, prefix, k + 1);
            write_bits(buf, free, v as u64, w);
            return;
        }
    }
    write_bits(buf, free, 0xff, 8);
    write_bits(buf, free, v as u64, 64);
}

/// Unsigned variant of [`put_varbit_int`]: a `w`-bit bucket holds
/// `0..2^w`.
pub(crate) fn put_varbit_uint(buf: &mut Vec<u8>, free: &mut u8, v: u64) {
    if v == 0 {
        write_bits(buf, free, 0, 1);
        return;
    }
    for (k, &w) in VARBIT_WIDTHS.iter().enumerate() {
        if v >> w == 0 {
            let k = k as u32 + 1;
            let prefix = ((1u64 << k) - 1) << 1;
            write_bits(buf, free, prefix, k + 1);
            write_bits(buf, free, v, w);
            return;
        }
    }
    write_bits(buf, free, 0xff, 8);
    write_bits(buf, free, v, 64);
}

/// A bit reader over one chunk, with the sample index for errors.
struct Rd<'a> {
    data: &'a [u8],
    r: BitReader,
    sample: u16,
}

impl<'a> Rd<'a> {
    fn new(data: &'a [u8]) -> Self {
        Rd {
            data,
            r: BitReader::new(HISTOGRAM_HEADER_LEN),
            sample: 0,
        }
    }

    fn err(&self, reason: &'static str) -> Error {
        HistogramSnafu {
            sample: self.sample,
            reason,
            bit_offset: self.r.bit_offset(),
        }
        .build()
    }

    fn bits(&mut self, n: u32) -> Result<u64, Error> {
        self.r
            .read_bits(self.data, n)
            .ok_or_else(|| self.err("data ends early"))
    }

    fn remaining(&self) -> u64 {
        self.r.remaining_bits(self.data)
    }

    /// The varbit prefix: the number of leading one bits (0..=8).
    fn prefix(&mut self) -> Result<usize, Error> {
        let mut k = 0;
        while k < 8 {
            if self.bits(1)? == 0 {
                break;
            }
            k += 1;
        }
        Ok(k)
    }

    fn varbit_int(&mut self) -> Result<i64, Error> {
        match self.prefix()? {
            0 => Ok(0),
            8 => Ok(self.bits(64)? as i64),
            k => {
                let w = VARBIT_WIDTHS[k - 1];
                let mut v = self.bits(w)?;
                if v > 1u64 << (w - 1) {
                    v = v.wrapping_sub(1u64 << w);
                }
                Ok(v as i64)
            }
        }
    }

    fn varbit_uint(&mut self) -> Result<u64, Error> {
        match self.prefix()? {
            0 => Ok(0),
            8 => self.bits(64),
            k => self.bits(VARBIT_WIDTHS[k - 1]),
        }
    }

    /// Prometheus' `xorRead`: updates `v` (bits), `leading`, `trailing`.
    fn xor(&mut self, v: &mut u64, leading: &mut u8, trailing: &mut u8) -> Result<(), Error> {
        if self.bits(1)? == 0 {
            return Ok(());
        }
        if self.bits(1)? == 1 {
            let l = self.bits(5)? as u8;
            let mut sig = self.bits(6)? as u8;
            if sig == 0 {
                sig = 64;
            }
            if u32::from(l) + u32::from(sig) > 64 {
                return Err(self.err("XOR window wider than 64 bits"));
            }
            *leading = l;
            *trailing = 64 - l - sig;
        }
        let sig = 64 - u32::from(*leading) - u32::from(*trailing);
        if sig == 0 {
            return Err(self.err("empty XOR window"));
        }
        let x = self.bits(sig)?;
        *v ^= x << *trailing;
        Ok(())
    }
}

/// Value bits and XOR window of one XOR-encoded field.
#[derive(Debug, Clone, Copy)]
struct XorField {
    bits: u64,
    leading: u8,
    trailing: u8,
}

impl XorField {
    /// Appender side: no window yet.
    const NEW: XorField = XorField {
        bits: 0,
        leading: 0xff,
        trailing: 0,
    };
}

/// Prometheus' `xorWrite`: the XOR float field of encoding 1 (section 1.4
/// of the format document) with its own window.
fn xor_write(buf: &mut Vec<u8>, free: &mut u8, f: &mut XorField, new_bits: u64) {
    let delta = new_bits ^ f.bits;
    f.bits = new_bits;
    if delta == 0 {
        write_bits(buf, free, 0, 1);
        return;
    }
    let leading = (delta.leading_zeros() as u8).min(31);
    let trailing = delta.trailing_zeros() as u8;
    if f.leading != 0xff && leading >= f.leading && trailing >= f.trailing {
        let sig = 64 - u32::from(f.leading) - u32::from(f.trailing);
        write_bits(buf, free, 0b10, 2);
        write_bits(buf, free, delta >> f.trailing, sig);
        return;
    }
    f.leading = leading;
    f.trailing = trailing;
    let sig = 64 - u32::from(leading) - u32::from(trailing);
    write_bits(buf, free, 0b11, 2);
    write_bits(buf, free, u64::from(leading), 5);
    write_bits(buf, free, u64::from(sig) & 0x3f, 6);
    write_bits(buf, free, delta >> trailing, sig);
}

// ---------------------------------------------------------------------
// Layout.

/// The part of a histogram shared by every sample of a chunk.
#[derive(Debug, Clone, PartialEq, Default)]
struct Layout {
    schema: i32,
    zero_threshold: f64,
    positive: Vec<BucketSpan>,
    negative: Vec<BucketSpan>,
    custom: Vec<f64>,
}

impl Layout {
    fn same(
        &self,
        schema: i32,
        zt: f64,
        p: &[BucketSpan],
        n: &[BucketSpan],
        custom: &[f64],
    ) -> bool {
        self.schema == schema
            && self.zero_threshold.to_bits() == zt.to_bits()
            && self.positive == p
            && self.negative == n
            && self.custom.len() == custom.len()
            && self
                .custom
                .iter()
                .zip(custom)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }

    fn write(&self, buf: &mut Vec<u8>, free: &mut u8) {
        put_zero_threshold(buf, free, self.zero_threshold);
        put_varbit_int(buf, free, i64::from(self.schema));
        for spans in [&self.positive, &self.negative] {
            put_varbit_uint(buf, free, spans.len() as u64);
            for s in spans.iter() {
                put_varbit_uint(buf, free, u64::from(s.length));
                put_varbit_int(buf, free, i64::from(s.offset));
            }
        }
        if self.schema == CUSTOM_BUCKETS_SCHEMA {
            put_varbit_uint(buf, free, self.custom.len() as u64);
            for &b in &self.custom {
                put_custom_bound(buf, free, b);
            }
        }
    }

    fn read(rd: &mut Rd<'_>) -> Result<Layout, Error> {
        let zero_threshold = read_zero_threshold(rd)?;
        let schema = rd.varbit_int()?;
        let schema = i32::try_from(schema).map_err(|_| rd.err("schema out of range"))?;
        let mut sides = [Vec::new(), Vec::new()];
        for side in &mut sides {
            let n = rd.varbit_uint()?;
            // A span takes at least 2 bits.
            if n > rd.remaining() / 2 {
                return Err(rd.err("more spans than the data can hold"));
            }
            side.reserve(n as usize);
            for _ in 0..n {
                let length = rd.varbit_uint()?;
                let offset = rd.varbit_int()?;
                let length = u32::try_from(length).map_err(|_| rd.err("span length too large"))?;
                let offset = i32::try_from(offset).map_err(|_| rd.err("span offset too large"))?;
                side.push(BucketSpan { offset, length });
            }
        }
        let [positive, negative] = sides;
        let mut custom = Vec::new();
        if schema == CUSTOM_BUCKETS_SCHEMA {
            let n = rd.varbit_uint()?;
            if n > rd.remaining() {
                return Err(rd.err("more custom bounds than the data can hold"));
            }
            custom.reserve(n as usize);
            for _ in 0..n {
                custom.push(read_custom_bound(rd)?);
            }
        }
        if !is_known_schema(schema) {
            return Err(rd.err("unknown histogram schema"));
        }
        Ok(Layout {
            schema,
            zero_threshold,
            positive,
            negative,
            custom,
        })
    }

    fn bucket_counts(&self) -> (u64, u64) {
        let c = |s: &[BucketSpan]| s.iter().map(|x| u64::from(x.length)).sum::<u64>();
        (c(&self.positive), c(&self.negative))
    }
}

/// Zero threshold: `00` for 0, one byte `e + 243` for a power of two
/// `0.5 * 2^e` with `-242 <= e <= 11`, else `FF` and the 64 raw bits.
fn put_zero_threshold(buf: &mut Vec<u8>, free: &mut u8, zt: f64) {
    if zt == 0.0 && zt.to_bits() == 0 {
        write_bits(buf, free, 0, 8);
        return;
    }
    if let Some(e) = frexp_half_exponent(zt) {
        if (-242..=11).contains(&e) {
            write_bits(buf, free, (e + 243) as u64, 8);
            return;
        }
    }
    write_bits(buf, free, 0xff, 8);
    write_bits(buf, free, zt.to_bits(), 64);
}

/// `Some(e)` when `x == 0.5 * 2^e` exactly (a positive power of two,
/// normal or subnormal).
fn frexp_half_exponent(x: f64) -> Option<i32> {
    if x.is_nan() || x <= 0.0 || !x.is_finite() {
        return None;
    }
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let mant = bits & ((1u64 << 52) - 1);
    if exp == 0 {
        // Subnormal: a power of two iff one mantissa bit is set.
        if mant.count_ones() != 1 {
            return None;
        }
        let p = mant.trailing_zeros() as i32; // x = 2^(p - 1074)
        return Some(p - 1074 + 1);
    }
    if mant != 0 {
        return None;
    }
    // x = 2^(exp - 1023) = 0.5 * 2^(exp - 1022)
    Some(exp - 1022)
}

fn read_zero_threshold(rd: &mut Rd<'_>) -> Result<f64, Error> {
    match rd.bits(8)? {
        0 => Ok(0.0),
        255 => Ok(f64::from_bits(rd.bits(64)?)),
        b => Ok(ldexp_half(b as i32 - 243)),
    }
}

/// `0.5 * 2^e` for `-242 <= e <= 11`, exactly.
fn ldexp_half(e: i32) -> f64 {
    let p = e - 1; // 2^p
    if p >= -1022 {
        f64::from_bits(((p + 1023) as u64) << 52)
    } else {
        f64::from_bits(1u64 << (p + 1074))
    }
}

/// Custom bound: a multiple of 0.001 in `[0, 33554.430]` is stored as the
/// unsigned varbit of `round(b * 1000) + 1`; anything else as a `0` bit and
/// the 64 raw bits.
fn put_custom_bound(buf: &mut Vec<u8>, free: &mut u8, b: f64) {
    let tf = b * 1000.0;
    let whole = {
        let i = (b * 1000.0).round();
        // Go: uint(math.Round(in*1000)) / 1000 == in
        i >= 0.0 && (i as u64 as f64) / 1000.0 == b
    };
    // -0.0 goes raw too (Prometheus would store it as 0.0): bit exactness.
    if !(0.0..=33_554_430.0).contains(&tf) || !whole || b.is_sign_negative() {
        write_bits(buf, free, 0, 1);
        write_bits(buf, free, b.to_bits(), 64);
        return;
    }
    put_varbit_uint(buf, free, tf.round() as u64 + 1);
}

fn read_custom_bound(rd: &mut Rd<'_>) -> Result<f64, Error> {
    match rd.varbit_uint()? {
        0 => Ok(f64::from_bits(rd.bits(64)?)),
        v => Ok((v - 1) as f64 / 1000.0),
    }
}

fn header(data: &[u8]) -> Result<(u16, CounterResetHeader), Error> {
    match data {
        [a, b, f, ..] => Ok((
            u16::from_be_bytes([*a, *b]),
            CounterResetHeader::from_byte(*f),
        )),
        _ => MissingHeaderSnafu { len: data.len() }.fail(),
    }
}

/// After the last sample only zero padding up to the byte boundary may
/// follow (one whole zero byte is tolerated, as for XOR chunks).
fn check_trailing(rd: &Rd<'_>, total: u16) -> Result<(), Error> {
    let rest = rd.remaining();
    if rest > 8 || !rd.r.rest_is_zero(rd.data) {
        return TrailingDataSnafu { bits: rest, total }.fail();
    }
    Ok(())
}

/// Exactly `n` values: `v` cut or padded with zeros.
fn fit<T: Copy + Default>(v: &[T], n: u64) -> impl Iterator<Item = T> + '_ {
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    v.iter()
        .copied()
        .chain(std::iter::repeat(T::default()))
        .take(n)
}

/// Bucket indexes of a span list, in order.
fn bucket_indexes(spans: &[BucketSpan]) -> Vec<i64> {
    let mut out = Vec::new();
    let mut idx: i64 = 0;
    for s in spans {
        // The first offset is the first bucket's index; later offsets are
        // gaps after the previous span.
        idx += i64::from(s.offset);
        for _ in 0..s.length {
            out.push(idx);
            idx += 1;
        }
    }
    out
}

/// Whether any bucket of `old` (indexes `oi`, counts `oc`) has a larger
/// count than the same bucket of `new` (a missing bucket counts 0).
fn buckets_decrease<T: PartialOrd + Default + Copy>(
    oi: &[i64],
    oc: &[T],
    ni: &[i64],
    nc: &[T],
) -> bool {
    let zero = T::default();
    let mut j = 0;
    for (i, &idx) in oi.iter().enumerate() {
        while j < ni.len() && ni[j] < idx {
            j += 1;
        }
        let old = oc.get(i).copied().unwrap_or(zero);
        let new = if j < ni.len() && ni[j] == idx {
            nc.get(j).copied().unwrap_or(zero)
        } else {
            zero
        };
        if old > new {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------
// Integer histograms (encoding 2).

/// Appends integer histograms to a chunk of encoding 2. Byte-compatible
/// with Prometheus' `HistogramAppender` for histograms of one layout.
#[derive(Debug, Clone)]
pub struct HistogramAppender {
    buf: Vec<u8>,
    free: u8,
    num: u16,
    layout: Layout,
    t: i64,
    t_delta: i64,
    cnt: u64,
    cnt_delta: i64,
    zcnt: u64,
    zcnt_delta: i64,
    buckets: Vec<i64>,
    bucket_deltas: Vec<i64>,
    sum: XorField,
    first_t: i64,
    last: Option<Histogram>,
}

impl HistogramAppender {
    /// An empty chunk with the given counter-reset header.
    pub fn new(header: CounterResetHeader) -> Self {
        HistogramAppender {
            buf: vec![0, 0, header.bits()],
            free: 0,
            num: 0,
            layout: Layout::default(),
            t: 0,
            t_delta: 0,
            cnt: 0,
            cnt_delta: 0,
            zcnt: 0,
            zcnt_delta: 0,
            buckets: Vec::new(),
            bucket_deltas: Vec::new(),
            sum: XorField::NEW,
            first_t: 0,
            last: None,
        }
    }

    /// The chunk's counter-reset header.
    pub fn header(&self) -> CounterResetHeader {
        CounterResetHeader::from_byte(self.buf.get(2).copied().unwrap_or(0))
    }

    /// Whether `h` can go into this chunk, or which header a new chunk for
    /// it gets. A full chunk is the caller's business.
    pub fn appendable(&self, h: &Histogram) -> Appendable {
        let Some(last) = &self.last else {
            return Appendable::Yes;
        };
        if h.is_stale() {
            return Appendable::Yes;
        }
        let gauge = h.reset_hint == reset_hint::GAUGE;
        let chunk_gauge = self.header() == CounterResetHeader::Gauge;
        if gauge {
            let same = !last.is_stale()
                && chunk_gauge
                && self.layout.same(
                    h.schema,
                    h.zero_threshold,
                    &h.positive_spans,
                    &h.negative_spans,
                    &h.custom_values,
                );
            return if same {
                Appendable::Yes
            } else {
                Appendable::Cut(CounterResetHeader::Gauge)
            };
        }
        if chunk_gauge || last.is_stale() {
            return Appendable::Cut(CounterResetHeader::Unknown);
        }
        if h.reset_hint == reset_hint::RESET {
            return Appendable::Cut(CounterResetHeader::Reset);
        }
        if h.schema != last.schema || h.zero_threshold.to_bits() != last.zero_threshold.to_bits() {
            return Appendable::Cut(CounterResetHeader::Unknown);
        }
        if h.schema == CUSTOM_BUCKETS_SCHEMA
            && !self.layout.same(
                h.schema,
                h.zero_threshold,
                &self.layout.positive,
                &self.layout.negative,
                &h.custom_values,
            )
        {
            // Changed custom bounds: PromQL reconciles them to find resets.
            return Appendable::Cut(CounterResetHeader::Unknown);
        }
        if h.count < last.count || h.zero_count < last.zero_count {
            return Appendable::Cut(CounterResetHeader::Reset);
        }
        let (lp, ln) = last.absolute_buckets();
        let (hp, hn) = h.absolute_buckets();
        let reset = buckets_decrease(
            &bucket_indexes(&last.positive_spans),
            &lp,
            &bucket_indexes(&h.positive_spans),
            &hp,
        ) || buckets_decrease(
            &bucket_indexes(&last.negative_spans),
            &ln,
            &bucket_indexes(&h.negative_spans),
            &hn,
        );
        if reset {
            return Appendable::Cut(CounterResetHeader::Reset);
        }
        if self.layout.positive != h.positive_spans || self.layout.negative != h.negative_spans {
            return Appendable::Cut(CounterResetHeader::NotReset);
        }
        Appendable::Yes
    }

    /// Appends `h` at `t`. The caller checked [`Self::appendable`], that
    /// `t` is newer than the last sample, that the chunk is not full and
    /// that `h` is valid (its bucket counts match its spans). A stale
    /// marker is stored with its sum only.
    pub fn append(&mut self, t: i64, h: &Histogram) {
        debug_assert!((self.num as usize) < MAX_SAMPLES_PER_CHUNK);
        let stale_h;
        let h = if h.is_stale() {
            stale_h = Histogram::stale();
            &stale_h
        } else {
            h
        };
        let (buf, free) = (&mut self.buf, &mut self.free);
        if self.num == 0 {
            self.layout = Layout {
                schema: h.schema,
                zero_threshold: h.zero_threshold,
                positive: h.positive_spans.clone(),
                negative: h.negative_spans.clone(),
                custom: h.custom_values.clone(),
            };
            self.layout.write(buf, free);
            put_varbit_int(buf, free, t);
            put_varbit_uint(buf, free, h.count);
            put_varbit_uint(buf, free, h.zero_count);
            write_bits(buf, free, h.sum.to_bits(), 64);
            self.sum.bits = h.sum.to_bits();
            // Exactly as many buckets as the layout announces (a histogram
            // that does not match its spans is refused before this; pad or
            // cut anyway so the chunk always stays decodable).
            let (np, nn) = self.layout.bucket_counts();
            self.buckets.clear();
            self.buckets.extend(fit(&h.positive_deltas, np));
            self.buckets.extend(fit(&h.negative_deltas, nn));
            for &b in &self.buckets {
                put_varbit_int(buf, free, b);
            }
            self.bucket_deltas = vec![0; self.buckets.len()];
            self.t_delta = 0;
            self.cnt_delta = 0;
            self.zcnt_delta = 0;
            self.first_t = t;
        } else {
            let t_delta = t.wrapping_sub(self.t);
            let cnt_delta = (h.count as i64).wrapping_sub(self.cnt as i64);
            let zcnt_delta = (h.zero_count as i64).wrapping_sub(self.zcnt as i64);
            let (mut cnt_dod, mut zcnt_dod) = (
                cnt_delta.wrapping_sub(self.cnt_delta),
                zcnt_delta.wrapping_sub(self.zcnt_delta),
            );
            if h.is_stale() {
                cnt_dod = 0;
                zcnt_dod = 0;
            }
            put_varbit_int(buf, free, t_delta.wrapping_sub(self.t_delta));
            put_varbit_int(buf, free, cnt_dod);
            put_varbit_int(buf, free, zcnt_dod);
            xor_write(buf, free, &mut self.sum, h.sum.to_bits());
            if !h.is_stale() {
                let (np, nn) = self.layout.bucket_counts();
                let vals = fit(&h.positive_deltas, np).chain(fit(&h.negative_deltas, nn));
                for ((old, od), b) in self
                    .buckets
                    .iter_mut()
                    .zip(&mut self.bucket_deltas)
                    .zip(vals)
                {
                    let delta = b.wrapping_sub(*old);
                    put_varbit_int(buf, free, delta.wrapping_sub(*od));
                    *od = delta;
                    *old = b;
                }
            }
            self.t_delta = t_delta;
            self.cnt_delta = cnt_delta;
            self.zcnt_delta = zcnt_delta;
        }
        self.t = t;
        self.cnt = h.count;
        self.zcnt = h.zero_count;
        self.num = self.num.wrapping_add(1);
        let [hi, lo] = self.num.to_be_bytes();
        self.buf[0] = hi;
        self.buf[1] = lo;
        self.last = Some(h.clone());
    }

    /// Number of samples.
    pub fn num_samples(&self) -> usize {
        usize::from(self.num)
    }

    /// First timestamp.
    pub fn first_t(&self) -> Option<i64> {
        (self.num > 0).then_some(self.first_t)
    }

    /// Last timestamp.
    pub fn last_t(&self) -> Option<i64> {
        (self.num > 0).then_some(self.t)
    }

    /// The last histogram appended (stale markers normalized).
    pub fn last(&self) -> Option<&Histogram> {
        self.last.as_ref()
    }

    /// The chunk bytes (complete after every append).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The chunk bytes, shrunk to fit.
    pub fn into_bytes(mut self) -> Vec<u8> {
        self.buf.shrink_to_fit();
        self.buf
    }
}

/// Decodes a whole integer histogram chunk (encoding 2) strictly.
pub fn decode_histogram(data: &[u8]) -> Result<Vec<(i64, Histogram)>, Error> {
    let (total, hdr) = header(data)?;
    let mut rd = Rd::new(data);
    let mut out = Vec::new();
    if total == 0 {
        check_trailing(&rd, total)?;
        return Ok(out);
    }
    let layout = Layout::read(&mut rd)?;
    let (np, nn) = layout.bucket_counts();
    // Every bucket takes at least one bit in the first sample.
    if np.saturating_add(nn) > rd.remaining() {
        return Err(rd.err("more buckets than the data can hold"));
    }
    let (np, nn) = (np as usize, nn as usize);
    let mut buckets = vec![0i64; np + nn];
    let mut bdeltas = vec![0i64; np + nn];
    let (mut t, mut t_delta) = (0i64, 0i64);
    let (mut cnt, mut cnt_delta, mut zcnt, mut zcnt_delta) = (0u64, 0i64, 0u64, 0i64);
    let (mut sum, mut leading, mut trailing) = (0u64, 0u8, 0u8);
    out.reserve(usize::from(total).min(data.len()));
    for i in 0..total {
        rd.sample = i;
        if i == 0 {
            t = rd.varbit_int()?;
            cnt = rd.varbit_uint()?;
            zcnt = rd.varbit_uint()?;
            sum = rd.bits(64)?;
            for b in &mut buckets {
                *b = rd.varbit_int()?;
            }
        } else {
            t_delta = t_delta.wrapping_add(rd.varbit_int()?);
            t = t.wrapping_add(t_delta);
            cnt_delta = cnt_delta.wrapping_add(rd.varbit_int()?);
            cnt = (cnt as i64).wrapping_add(cnt_delta) as u64;
            zcnt_delta = zcnt_delta.wrapping_add(rd.varbit_int()?);
            zcnt = (zcnt as i64).wrapping_add(zcnt_delta) as u64;
            rd.xor(&mut sum, &mut leading, &mut trailing)?;
            if !is_stale_nan(f64::from_bits(sum)) {
                for (b, d) in buckets.iter_mut().zip(bdeltas.iter_mut()) {
                    *d = d.wrapping_add(rd.varbit_int()?);
                    *b = b.wrapping_add(*d);
                }
            }
        }
        if let Some(&(prev, _)) = out.last() {
            if t <= prev {
                return Err(rd.err("timestamps do not increase"));
            }
        }
        let h = if is_stale_nan(f64::from_bits(sum)) {
            Histogram {
                reset_hint: hdr.hint(usize::from(i)),
                ..Histogram::stale()
            }
        } else {
            Histogram {
                reset_hint: hdr.hint(usize::from(i)),
                schema: layout.schema,
                zero_threshold: layout.zero_threshold,
                zero_count: zcnt,
                count: cnt,
                sum: f64::from_bits(sum),
                positive_spans: layout.positive.clone(),
                positive_deltas: buckets[..np].to_vec(),
                negative_spans: layout.negative.clone(),
                negative_deltas: buckets[np..].to_vec(),
                custom_values: layout.custom.clone(),
            }
        };
        out.push((t, h));
    }
    check_trailing(&rd, total)?;
    Ok(out)
}

// ---------------------------------------------------------------------
// Float histograms (encoding 3).

/// Appends float histograms to a chunk of encoding 3. Byte-compatible
/// with Prometheus' `FloatHistogramAppender` for histograms of one layout.
#[derive(Debug, Clone)]
pub struct FloatHistogramAppender {
    buf: Vec<u8>,
    free: u8,
    num: u16,
    layout: Layout,
    t: i64,
    t_delta: i64,
    cnt: XorField,
    zcnt: XorField,
    sum: XorField,
    buckets: Vec<XorField>,
    first_t: i64,
    last: Option<FloatHistogram>,
}

impl FloatHistogramAppender {
    /// An empty chunk with the given counter-reset header.
    pub fn new(header: CounterResetHeader) -> Self {
        FloatHistogramAppender {
            buf: vec![0, 0, header.bits()],
            free: 0,
            num: 0,
            layout: Layout::default(),
            t: 0,
            t_delta: 0,
            cnt: XorField::NEW,
            zcnt: XorField::NEW,
            sum: XorField::NEW,
            buckets: Vec::new(),
            first_t: 0,
            last: None,
        }
    }

    /// The chunk's counter-reset header.
    pub fn header(&self) -> CounterResetHeader {
        CounterResetHeader::from_byte(self.buf.get(2).copied().unwrap_or(0))
    }

    /// Whether `h` can go into this chunk (see
    /// [`HistogramAppender::appendable`]).
    pub fn appendable(&self, h: &FloatHistogram) -> Appendable {
        let Some(last) = &self.last else {
            return Appendable::Yes;
        };
        if h.is_stale() {
            return Appendable::Yes;
        }
        let gauge = h.reset_hint == reset_hint::GAUGE;
        let chunk_gauge = self.header() == CounterResetHeader::Gauge;
        let same_layout = self.layout.same(
            h.schema,
            h.zero_threshold,
            &h.positive_spans,
            &h.negative_spans,
            &h.custom_values,
        );
        if gauge {
            return if !last.is_stale() && chunk_gauge && same_layout {
                Appendable::Yes
            } else {
                Appendable::Cut(CounterResetHeader::Gauge)
            };
        }
        if chunk_gauge || last.is_stale() {
            return Appendable::Cut(CounterResetHeader::Unknown);
        }
        if h.reset_hint == reset_hint::RESET {
            return Appendable::Cut(CounterResetHeader::Reset);
        }
        if h.schema != last.schema || h.zero_threshold.to_bits() != last.zero_threshold.to_bits() {
            return Appendable::Cut(CounterResetHeader::Unknown);
        }
        if h.schema == CUSTOM_BUCKETS_SCHEMA
            && !self.layout.same(
                h.schema,
                h.zero_threshold,
                &self.layout.positive,
                &self.layout.negative,
                &h.custom_values,
            )
        {
            // Changed custom bounds: PromQL reconciles them to find resets.
            return Appendable::Cut(CounterResetHeader::Unknown);
        }
        if h.count < last.count || h.zero_count < last.zero_count {
            return Appendable::Cut(CounterResetHeader::Reset);
        }
        let reset = buckets_decrease(
            &bucket_indexes(&last.positive_spans),
            &last.positive_buckets,
            &bucket_indexes(&h.positive_spans),
            &h.positive_buckets,
        ) || buckets_decrease(
            &bucket_indexes(&last.negative_spans),
            &last.negative_buckets,
            &bucket_indexes(&h.negative_spans),
            &h.negative_buckets,
        );
        if reset {
            return Appendable::Cut(CounterResetHeader::Reset);
        }
        if !same_layout {
            return Appendable::Cut(CounterResetHeader::NotReset);
        }
        Appendable::Yes
    }

    /// Appends `h` at `t` (same contract as [`HistogramAppender::append`]).
    pub fn append(&mut self, t: i64, h: &FloatHistogram) {
        debug_assert!((self.num as usize) < MAX_SAMPLES_PER_CHUNK);
        let stale_h;
        let h = if h.is_stale() {
            stale_h = FloatHistogram::stale();
            &stale_h
        } else {
            h
        };
        let (buf, free) = (&mut self.buf, &mut self.free);
        if self.num == 0 {
            self.layout = Layout {
                schema: h.schema,
                zero_threshold: h.zero_threshold,
                positive: h.positive_spans.clone(),
                negative: h.negative_spans.clone(),
                custom: h.custom_values.clone(),
            };
            self.layout.write(buf, free);
            put_varbit_int(buf, free, t);
            for (f, v) in [
                (&mut self.cnt, h.count),
                (&mut self.zcnt, h.zero_count),
                (&mut self.sum, h.sum),
            ] {
                write_bits(buf, free, v.to_bits(), 64);
                f.bits = v.to_bits();
            }
            self.buckets.clear();
            let (np, nn) = self.layout.bucket_counts();
            for b in fit(&h.positive_buckets, np).chain(fit(&h.negative_buckets, nn)) {
                write_bits(buf, free, b.to_bits(), 64);
                self.buckets.push(XorField {
                    bits: b.to_bits(),
                    ..XorField::NEW
                });
            }
            self.t_delta = 0;
            self.first_t = t;
        } else {
            let t_delta = t.wrapping_sub(self.t);
            put_varbit_int(buf, free, t_delta.wrapping_sub(self.t_delta));
            xor_write(buf, free, &mut self.cnt, h.count.to_bits());
            xor_write(buf, free, &mut self.zcnt, h.zero_count.to_bits());
            xor_write(buf, free, &mut self.sum, h.sum.to_bits());
            let (np, nn) = self.layout.bucket_counts();
            let vals = fit(&h.positive_buckets, np).chain(fit(&h.negative_buckets, nn));
            let vals: Vec<f64> = if h.is_stale() {
                Vec::new()
            } else {
                vals.collect()
            };
            for (f, &b) in self.buckets.iter_mut().zip(&vals) {
                xor_write(buf, free, f, b.to_bits());
            }
            self.t_delta = t_delta;
        }
        self.t = t;
        self.num = self.num.wrapping_add(1);
        let [hi, lo] = self.num.to_be_bytes();
        self.buf[0] = hi;
        self.buf[1] = lo;
        self.last = Some(h.clone());
    }

    /// Number of samples.
    pub fn num_samples(&self) -> usize {
        usize::from(self.num)
    }

    /// First timestamp.
    pub fn first_t(&self) -> Option<i64> {
        (self.num > 0).then_some(self.first_t)
    }

    /// Last timestamp.
    pub fn last_t(&self) -> Option<i64> {
        (self.num > 0).then_some(self.t)
    }

    /// The last histogram appended (stale markers normalized).
    pub fn last(&self) -> Option<&FloatHistogram> {
        self.last.as_ref()
    }

    /// The chunk bytes (complete after every append).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The chunk bytes, shrunk to fit.
    pub fn into_bytes(mut self) -> Vec<u8> {
        self.buf.shrink_to_fit();
        self.buf
    }
}

/// Decodes a whole float histogram chunk (encoding 3) strictly.
pub fn decode_float_histogram(data: &[u8]) -> Result<Vec<(i64, FloatHistogram)>, Error> {
    let (total, hdr) = header(data)?;
    let mut rd = Rd::new(data);
    let mut out = Vec::new();
    if total == 0 {
        check_trailing(&rd, total)?;
        return Ok(out);
    }
    let layout = Layout::read(&mut rd)?;
    let (np, nn) = layout.bucket_counts();
    // Every bucket takes 64 bits in the first sample.
    if np.saturating_add(nn) > rd.remaining() / 64 {
        return Err(rd.err("more buckets than the data can hold"));
    }
    let (np, nn) = (np as usize, nn as usize);
    let zero = XorField {
        bits: 0,
        leading: 0,
        trailing: 0,
    };
    let mut buckets = vec![zero; np + nn];
    let (mut cnt, mut zcnt, mut sum) = (zero, zero, zero);
    let (mut t, mut t_delta) = (0i64, 0i64);
    out.reserve(usize::from(total).min(data.len()));
    for i in 0..total {
        rd.sample = i;
        if i == 0 {
            t = rd.varbit_int()?;
            cnt.bits = rd.bits(64)?;
            zcnt.bits = rd.bits(64)?;
            sum.bits = rd.bits(64)?;
            for b in &mut buckets {
                b.bits = rd.bits(64)?;
            }
        } else {
            t_delta = t_delta.wrapping_add(rd.varbit_int()?);
            t = t.wrapping_add(t_delta);
            for f in [&mut cnt, &mut zcnt, &mut sum] {
                rd.xor(&mut f.bits, &mut f.leading, &mut f.trailing)?;
            }
            if !is_stale_nan(f64::from_bits(sum.bits)) {
                for f in &mut buckets {
                    rd.xor(&mut f.bits, &mut f.leading, &mut f.trailing)?;
                }
            }
        }
        if let Some(&(prev, _)) = out.last() {
            if t <= prev {
                return Err(rd.err("timestamps do not increase"));
            }
        }
        let h = if is_stale_nan(f64::from_bits(sum.bits)) {
            FloatHistogram {
                reset_hint: hdr.hint(usize::from(i)),
                ..FloatHistogram::stale()
            }
        } else {
            let v = |f: &XorField| f64::from_bits(f.bits);
            FloatHistogram {
                reset_hint: hdr.hint(usize::from(i)),
                schema: layout.schema,
                zero_threshold: layout.zero_threshold,
                zero_count: v(&zcnt),
                count: v(&cnt),
                sum: v(&sum),
                positive_spans: layout.positive.clone(),
                positive_buckets: buckets[..np].iter().map(v).collect(),
                negative_spans: layout.negative.clone(),
                negative_buckets: buckets[np..].iter().map(v).collect(),
                custom_values: layout.custom.clone(),
            }
        };
        out.push((t, h));
    }
    check_trailing(&rd, total)?;
    Ok(out)
}

/// Number of samples a histogram chunk announces.
pub(crate) fn histogram_num_samples(data: &[u8]) -> Result<usize, Error> {
    header(data).map(|(n, _)| usize::from(n))
}

/// Fuzz entry point: decodes `data` as both histogram encodings; whatever
/// decodes must re-encode (with the chunk's header) to a chunk that
/// decodes to the same histograms. Panics only on a bug.
pub fn fuzz_histogram_decode(data: &[u8]) {
    if let Ok(hs) = decode_histogram(data) {
        let hdr = CounterResetHeader::from_byte(data.get(2).copied().unwrap_or(0));
        let mut app = HistogramAppender::new(hdr);
        let mut ok = true;
        for (t, h) in &hs {
            // Decoded data may be internally inconsistent (e.g. bucket
            // deltas of a chunk Prometheus would not write); skip the
            // re-encode check when the layout would not be appendable.
            if app.appendable(h) != Appendable::Yes && app.num_samples() > 0 {
                ok = false;
                break;
            }
            app.append(*t, h);
        }
        if ok {
            let again = decode_histogram(app.bytes()).expect("re-encoded histogram chunk decodes");
            assert_eq!(again.len(), hs.len());
            for ((t1, a), (t2, b)) in again.iter().zip(&hs) {
                assert_eq!(t1, t2);
                assert!(
                    a.bit_eq(b),
                    "histogram changed in re-encoding: {a:?} vs {b:?}"
                );
            }
        }
    }
    if let Ok(hs) = decode_float_histogram(data) {
        let hdr = CounterResetHeader::from_byte(data.get(2).copied().unwrap_or(0));
        let mut app = FloatHistogramAppender::new(hdr);
        let mut ok = true;
        for (t, h) in &hs {
            if app.appendable(h) != Appendable::Yes && app.num_samples() > 0 {
                ok = false;
                break;
            }
            app.append(*t, h);
        }
        if ok {
            let again =
                decode_float_histogram(app.bytes()).expect("re-encoded float histogram decodes");
            assert_eq!(again.len(), hs.len());
            for ((t1, a), (t2, b)) in again.iter().zip(&hs) {
                assert_eq!(t1, t2);
                assert!(a.bit_eq(b), "float histogram changed: {a:?} vs {b:?}");
            }
        }
    }
}

#[cfg(test)]
#[path = "histogram_tests.rs"]
mod tests;
