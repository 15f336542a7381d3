//! Record framing and payload encoding (see `docs/format/wal.md`).
//!
//! A frame is `u32 LE payload length | u8 type | u32 LE CRC-32C | payload`,
//! the checksum covering the length, the type and the payload, so a flipped
//! bit anywhere in a frame is caught. Payloads are built straight into the
//! caller's reused buffer: encoding never allocates per sample. Decoding is
//! bounds-checked everywhere and reports a reason instead of panicking.

use std::sync::Arc;

use stratus_model::{Label, Labels};

use super::error::{Error, RecordTooLargeSnafu};
use stratus_model::{BucketSpan, FloatHistogram, Histogram};

use super::{
    Record, RefFloatHistogram, RefHistogram, RefSample, RefSeries, RefStartTimestamp, RefTombstone,
};

/// Size of a frame header: length (4), type (1), CRC-32C (4).
pub(crate) const FRAME_HEADER_LEN: usize = 9;

/// Record type: series definitions.
pub(crate) const TYPE_SERIES: u8 = 1;
/// Record type: float samples.
pub(crate) const TYPE_SAMPLES: u8 = 2;
/// Record type: tombstones.
pub(crate) const TYPE_TOMBSTONES: u8 = 3;
/// Record type: integer native histogram samples (format version 3).
pub(crate) const TYPE_HISTOGRAMS: u8 = 4;
/// Record type: float native histogram samples (format version 3).
pub(crate) const TYPE_FLOAT_HISTOGRAMS: u8 = 5;
/// Record type: start timestamps of the samples in the records that
/// follow it in the same write (format version 5).
pub(crate) const TYPE_START_TIMESTAMPS: u8 = 8;
/// Record type: exemplars (format version 4).
pub(crate) const TYPE_EXEMPLARS: u8 = 6;
/// Record type: metric family metadata (format version 2).
pub(crate) const TYPE_METADATA: u8 = 7;

/// Human name of a reserved or unknown record type, for error messages.
pub(crate) fn type_name(t: u8) -> &'static str {
    match t {
        0 => "invalid record type 0",
        TYPE_SERIES => "series",
        TYPE_SAMPLES => "samples",
        TYPE_TOMBSTONES => "tombstones",
        TYPE_HISTOGRAMS => "histogram samples",
        TYPE_FLOAT_HISTOGRAMS => "float histogram samples",
        TYPE_EXEMPLARS => "exemplars",
        TYPE_METADATA => "metadata",
        TYPE_START_TIMESTAMPS => "start timestamps",
        _ => "unknown record type",
    }
}

/// Appends a series record frame to `buf`.
pub(crate) fn encode_series(buf: &mut Vec<u8>, series: &[RefSeries]) -> Result<(), Error> {
    let start = begin_frame(buf);
    for s in series {
        debug_assert!(Labels::is_sorted_unique(s.labels.as_slice()));
        put_uvarint(buf, s.sref);
        put_uvarint(buf, s.labels.len() as u64);
        for l in s.labels.iter() {
            put_uvarint(buf, l.name.len() as u64);
            buf.extend_from_slice(l.name.as_bytes());
            put_uvarint(buf, l.value.len() as u64);
            buf.extend_from_slice(l.value.as_bytes());
        }
    }
    finish_frame(buf, start, TYPE_SERIES)
}

/// Appends a samples record frame to `buf`: base ref and base timestamp of
/// the first sample, then per sample the zigzag deltas against that base and
/// the raw value bits.
pub(crate) fn encode_samples(buf: &mut Vec<u8>, samples: &[RefSample]) -> Result<(), Error> {
    let start = begin_frame(buf);
    if let Some(first) = samples.first() {
        // Worst case per sample: two 10-byte varints and 8 value bytes.
        buf.reserve(20 + samples.len() * 28);
        put_uvarint(buf, first.sref);
        put_uvarint(buf, zigzag(first.t));
        for s in samples {
            put_uvarint(buf, zigzag(s.sref.wrapping_sub(first.sref) as i64));
            put_uvarint(buf, zigzag(s.t.wrapping_sub(first.t)));
            buf.extend_from_slice(&s.v.to_bits().to_le_bytes());
        }
    }
    finish_frame(buf, start, TYPE_SAMPLES)
}

/// Appends a start-timestamps record frame to `buf`: base ref and base
/// timestamp of the first entry, then per entry the zigzag deltas of ref
/// and timestamp against that base and `t - st` zigzagged.
pub(crate) fn encode_start_timestamps(
    buf: &mut Vec<u8>,
    sts: &[RefStartTimestamp],
) -> Result<(), Error> {
    let start = begin_frame(buf);
    if let Some(first) = sts.first() {
        buf.reserve(20 + sts.len() * 6);
        put_uvarint(buf, first.sref);
        put_uvarint(buf, zigzag(first.t));
        for s in sts {
            put_uvarint(buf, zigzag(s.sref.wrapping_sub(first.sref) as i64));
            put_uvarint(buf, zigzag(s.t.wrapping_sub(first.t)));
            put_uvarint(buf, zigzag(s.t.wrapping_sub(s.st)));
        }
    }
    finish_frame(buf, start, TYPE_START_TIMESTAMPS)
}

fn put_varint(buf: &mut Vec<u8>, v: i64) {
    put_uvarint(buf, zigzag(v));
}

fn put_f64(buf: &mut Vec<u8>, v: f64) {
    buf.extend_from_slice(&v.to_bits().to_le_bytes());
}

fn put_spans(buf: &mut Vec<u8>, spans: &[BucketSpan]) {
    put_uvarint(buf, spans.len() as u64);
    for s in spans {
        put_varint(buf, i64::from(s.offset));
        put_uvarint(buf, u64::from(s.length));
    }
}

/// The fields every histogram record entry starts with.
fn put_hist_head(buf: &mut Vec<u8>, hint: u8, schema: i32, zt: f64) {
    buf.push(hint);
    put_varint(buf, i64::from(schema));
    put_f64(buf, zt);
}

/// Appends an integer histogram samples record frame to `buf`.
pub(crate) fn encode_histograms(buf: &mut Vec<u8>, hs: &[RefHistogram]) -> Result<(), Error> {
    let start = begin_frame(buf);
    if let Some(first) = hs.first() {
        put_uvarint(buf, first.sref);
        put_varint(buf, first.t);
        for s in hs {
            put_varint(buf, s.sref.wrapping_sub(first.sref) as i64);
            put_varint(buf, s.t.wrapping_sub(first.t));
            let h = &s.h;
            put_hist_head(buf, h.reset_hint, h.schema, h.zero_threshold);
            put_uvarint(buf, h.zero_count);
            put_uvarint(buf, h.count);
            put_f64(buf, h.sum);
            for (spans, deltas) in [
                (&h.positive_spans, &h.positive_deltas),
                (&h.negative_spans, &h.negative_deltas),
            ] {
                put_spans(buf, spans);
                put_uvarint(buf, deltas.len() as u64);
                for &d in deltas.iter() {
                    put_varint(buf, d);
                }
            }
            put_uvarint(buf, h.custom_values.len() as u64);
            for &c in &h.custom_values {
                put_f64(buf, c);
            }
        }
    }
    finish_frame(buf, start, TYPE_HISTOGRAMS)
}

/// Appends a float histogram samples record frame to `buf`.
pub(crate) fn encode_float_histograms(
    buf: &mut Vec<u8>,
    hs: &[RefFloatHistogram],
) -> Result<(), Error> {
    let start = begin_frame(buf);
    if let Some(first) = hs.first() {
        put_uvarint(buf, first.sref);
        put_varint(buf, first.t);
        for s in hs {
            put_varint(buf, s.sref.wrapping_sub(first.sref) as i64);
            put_varint(buf, s.t.wrapping_sub(first.t));
            let h = &s.h;
            put_hist_head(buf, h.reset_hint, h.schema, h.zero_threshold);
            put_f64(buf, h.zero_count);
            put_f64(buf, h.count);
            put_f64(buf, h.sum);
            for (spans, counts) in [
                (&h.positive_spans, &h.positive_buckets),
                (&h.negative_spans, &h.negative_buckets),
            ] {
                put_spans(buf, spans);
                put_uvarint(buf, counts.len() as u64);
                for &c in counts.iter() {
                    put_f64(buf, c);
                }
            }
            put_uvarint(buf, h.custom_values.len() as u64);
            for &c in &h.custom_values {
                put_f64(buf, c);
            }
        }
    }
    finish_frame(buf, start, TYPE_FLOAT_HISTOGRAMS)
}

/// Appends a tombstones record frame to `buf`.
pub(crate) fn encode_tombstones(buf: &mut Vec<u8>, ts: &[RefTombstone]) -> Result<(), Error> {
    let start = begin_frame(buf);
    for t in ts {
        put_uvarint(buf, t.sref);
        put_uvarint(buf, zigzag(t.mint));
        put_uvarint(buf, zigzag(t.maxt));
    }
    finish_frame(buf, start, TYPE_TOMBSTONES)
}

/// Appends a metadata record frame to `buf`.
pub(crate) fn encode_metadata(
    buf: &mut Vec<u8>,
    m: &[(String, crate::metadata::MetricMetadata)],
) -> Result<(), Error> {
    let start = begin_frame(buf);
    for (name, md) in m {
        for s in [name.as_str(), md.help.as_str(), md.unit.as_str()] {
            put_uvarint(buf, s.len() as u64);
            buf.extend_from_slice(s.as_bytes());
        }
        put_uvarint(buf, u64::from(md.kind.to_proto()));
    }
    finish_frame(buf, start, TYPE_METADATA)
}

fn put_labels(buf: &mut Vec<u8>, labels: &Labels) {
    debug_assert!(Labels::is_sorted_unique(labels.as_slice()));
    put_uvarint(buf, labels.len() as u64);
    for l in labels.iter() {
        put_uvarint(buf, l.name.len() as u64);
        buf.extend_from_slice(l.name.as_bytes());
        put_uvarint(buf, l.value.len() as u64);
        buf.extend_from_slice(l.value.as_bytes());
    }
}

/// Appends an exemplars record frame to `buf`: per exemplar the series'
/// labels, the timestamp, the value bits and the exemplar's labels
/// (self-contained: no series reference, so an exemplar outlives its
/// series' head entry).
pub(crate) fn encode_exemplars(
    buf: &mut Vec<u8>,
    exs: &[(Labels, stratus_model::Exemplar)],
) -> Result<(), Error> {
    let start = begin_frame(buf);
    for (series, ex) in exs {
        put_labels(buf, series);
        put_varint(buf, ex.t);
        put_f64(buf, ex.value);
        put_labels(buf, &ex.labels);
    }
    finish_frame(buf, start, TYPE_EXEMPLARS)
}

/// Appends the frame of any record.
pub(crate) fn encode_record(buf: &mut Vec<u8>, rec: &Record) -> Result<(), Error> {
    match rec {
        Record::Series(s) => encode_series(buf, s),
        Record::Samples(s) => encode_samples(buf, s),
        Record::Tombstones(t) => encode_tombstones(buf, t),
        Record::Metadata(m) => encode_metadata(buf, m),
        Record::Exemplars(e) => encode_exemplars(buf, e),
        Record::Histograms(h) => encode_histograms(buf, h),
        Record::FloatHistograms(h) => encode_float_histograms(buf, h),
        Record::StartTimestamps(s) => encode_start_timestamps(buf, s),
    }
}

fn begin_frame(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    start
}

fn finish_frame(buf: &mut Vec<u8>, start: usize, typ: u8) -> Result<(), Error> {
    let len = buf.len() - start - FRAME_HEADER_LEN;
    let Ok(len32) = u32::try_from(len) else {
        buf.truncate(start);
        return RecordTooLargeSnafu { len }.fail();
    };
    let hdr = &mut buf[start..start + FRAME_HEADER_LEN];
    hdr[0..4].copy_from_slice(&len32.to_le_bytes());
    hdr[4] = typ;
    let crc = frame_crc(&buf[start..start + 5], &buf[start + FRAME_HEADER_LEN..]);
    buf[start + 5..start + FRAME_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// CRC-32C (Castagnoli) over the 5 leading header bytes (length and type)
/// followed by the payload.
pub(crate) fn frame_crc(len_and_type: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len_and_type), payload)
}

/// Decodes a payload whose frame checksum was verified. Fails with a reason
/// on malformed content or on a type this format version does not know.
pub(crate) fn decode(typ: u8, p: &[u8]) -> Result<Record, String> {
    let mut d = Dec { b: p, pos: 0 };
    match typ {
        TYPE_SERIES => {
            let mut out = Vec::new();
            while !d.done() {
                let sref = d.uvarint()?;
                let n = d.uvarint()?;
                // Each label takes at least two bytes: bound the reservation.
                let cap = usize::try_from(n).unwrap_or(usize::MAX).min(d.left() / 2);
                let mut labels = Vec::with_capacity(cap);
                for _ in 0..n {
                    let name = d.str()?;
                    let value = d.str()?;
                    labels.push(Label::new(name, value));
                }
                if !Labels::is_sorted_unique(&labels) {
                    return Err(format!("labels of series {sref} are not sorted and unique"));
                }
                out.push(RefSeries {
                    sref,
                    labels: Labels::from_sorted_unchecked(labels),
                });
            }
            Ok(Record::Series(out))
        }
        TYPE_SAMPLES => {
            // Each sample takes at least 10 bytes.
            let mut out = Vec::with_capacity(p.len() / 10);
            if !d.done() {
                let base_ref = d.uvarint()?;
                let base_t = unzigzag(d.uvarint()?);
                while !d.done() {
                    let dref = unzigzag(d.uvarint()?);
                    let dt = unzigzag(d.uvarint()?);
                    let bits = d.u64_le()?;
                    out.push(RefSample {
                        sref: base_ref.wrapping_add(dref as u64),
                        t: base_t.wrapping_add(dt),
                        v: f64::from_bits(bits),
                    });
                }
            }
            Ok(Record::Samples(out))
        }
        TYPE_START_TIMESTAMPS => {
            // Each entry takes at least 3 bytes.
            let mut out = Vec::with_capacity(p.len() / 3);
            if !d.done() {
                let base_ref = d.uvarint()?;
                let base_t = unzigzag(d.uvarint()?);
                while !d.done() {
                    let dref = unzigzag(d.uvarint()?);
                    let t = base_t.wrapping_add(unzigzag(d.uvarint()?));
                    let back = unzigzag(d.uvarint()?);
                    out.push(RefStartTimestamp {
                        sref: base_ref.wrapping_add(dref as u64),
                        t,
                        st: t.wrapping_sub(back),
                    });
                }
            }
            Ok(Record::StartTimestamps(out))
        }
        TYPE_TOMBSTONES => {
            let mut out = Vec::with_capacity(p.len() / 3);
            while !d.done() {
                let sref = d.uvarint()?;
                let mint = unzigzag(d.uvarint()?);
                let maxt = unzigzag(d.uvarint()?);
                out.push(RefTombstone { sref, mint, maxt });
            }
            Ok(Record::Tombstones(out))
        }
        TYPE_EXEMPLARS => {
            let mut out = Vec::new();
            while !d.done() {
                let series = d.labels("exemplar series")?;
                let t = d.varint()?;
                let value = d.f64()?;
                let labels = d.labels("exemplar")?;
                out.push((series, stratus_model::Exemplar { labels, value, t }));
            }
            Ok(Record::Exemplars(out))
        }
        TYPE_METADATA => {
            let mut out = Vec::new();
            while !d.done() {
                let name = d.str()?.to_string();
                let help = d.str()?.to_string();
                let unit = d.str()?.to_string();
                let kind = d.uvarint()?;
                let kind = u8::try_from(kind)
                    .ok()
                    .and_then(crate::metadata::MetricType::from_u8)
                    .ok_or_else(|| format!("metadata of {name:?}: unknown metric type {kind}"))?;
                out.push((name, crate::metadata::MetricMetadata { kind, help, unit }));
            }
            Ok(Record::Metadata(out))
        }
        TYPE_HISTOGRAMS => {
            let mut out = Vec::new();
            if !d.done() {
                let base_ref = d.uvarint()?;
                let base_t = d.varint()?;
                while !d.done() {
                    let sref = base_ref.wrapping_add(d.varint()? as u64);
                    let t = base_t.wrapping_add(d.varint()?);
                    let (reset_hint, schema, zero_threshold) = d.hist_head()?;
                    let zero_count = d.uvarint()?;
                    let count = d.uvarint()?;
                    let sum = d.f64()?;
                    let positive_spans = d.spans()?;
                    let positive_deltas = d.varints()?;
                    let negative_spans = d.spans()?;
                    let negative_deltas = d.varints()?;
                    let custom_values = d.f64s()?;
                    out.push(RefHistogram {
                        sref,
                        t,
                        h: Histogram {
                            reset_hint,
                            schema,
                            zero_threshold,
                            zero_count,
                            count,
                            sum,
                            positive_spans,
                            positive_deltas,
                            negative_spans,
                            negative_deltas,
                            custom_values,
                        },
                    });
                }
            }
            Ok(Record::Histograms(out))
        }
        TYPE_FLOAT_HISTOGRAMS => {
            let mut out = Vec::new();
            if !d.done() {
                let base_ref = d.uvarint()?;
                let base_t = d.varint()?;
                while !d.done() {
                    let sref = base_ref.wrapping_add(d.varint()? as u64);
                    let t = base_t.wrapping_add(d.varint()?);
                    let (reset_hint, schema, zero_threshold) = d.hist_head()?;
                    let zero_count = d.f64()?;
                    let count = d.f64()?;
                    let sum = d.f64()?;
                    let positive_spans = d.spans()?;
                    let positive_buckets = d.f64s()?;
                    let negative_spans = d.spans()?;
                    let negative_buckets = d.f64s()?;
                    let custom_values = d.f64s()?;
                    out.push(RefFloatHistogram {
                        sref,
                        t,
                        h: FloatHistogram {
                            reset_hint,
                            schema,
                            zero_threshold,
                            zero_count,
                            count,
                            sum,
                            positive_spans,
                            positive_buckets,
                            negative_spans,
                            negative_buckets,
                            custom_values,
                        },
                    });
                }
            }
            Ok(Record::FloatHistograms(out))
        }
        t => Err(format!(
            "{} (type {t}) is not supported by WAL format version {}",
            type_name(t),
            super::segment::VERSION
        )),
    }
}

pub(crate) use crate::varint::{put_uvarint, unzigzag, zigzag};

/// A bounds-checked cursor over a payload.
struct Dec<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    fn done(&self) -> bool {
        self.pos >= self.b.len()
    }

    fn left(&self) -> usize {
        self.b.len().saturating_sub(self.pos)
    }

    #[inline]
    fn uvarint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&byte) = self.b.get(self.pos) else {
                return Err(format!("truncated varint at payload byte {}", self.pos));
            };
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return Err(format!(
                    "varint overflows 64 bits at payload byte {}",
                    self.pos - 1
                ));
            }
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    #[inline]
    fn u64_le(&mut self) -> Result<u64, String> {
        let end = self.pos + 8;
        match self.b.get(self.pos..end) {
            Some(s) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(s);
                self.pos = end;
                Ok(u64::from_le_bytes(a))
            }
            None => Err(format!(
                "truncated sample value at payload byte {}",
                self.pos
            )),
        }
    }

    fn varint(&mut self) -> Result<i64, String> {
        Ok(unzigzag(self.uvarint()?))
    }

    fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_bits(self.u64_le()?))
    }

    /// A count of items each taking at least `min_bytes`, bounded by the
    /// bytes left (so a corrupt count cannot allocate much).
    fn count(&mut self, min_bytes: usize) -> Result<usize, String> {
        let at = self.pos;
        let n = self.uvarint()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.left() / min_bytes => Ok(n),
            _ => Err(format!(
                "count {n} at payload byte {at} overruns the record"
            )),
        }
    }

    fn hist_head(&mut self) -> Result<(u8, i32, f64), String> {
        let Some(&hint) = self.b.get(self.pos) else {
            return Err(format!("truncated histogram at payload byte {}", self.pos));
        };
        self.pos += 1;
        if hint > 3 {
            return Err(format!("invalid counter reset hint {hint}"));
        }
        let schema = self.varint()?;
        let schema = i32::try_from(schema).map_err(|_| format!("schema {schema} out of range"))?;
        Ok((hint, schema, self.f64()?))
    }

    fn spans(&mut self) -> Result<Vec<BucketSpan>, String> {
        let n = self.count(2)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let offset = self.varint()?;
            let length = self.uvarint()?;
            out.push(BucketSpan {
                offset: i32::try_from(offset)
                    .map_err(|_| format!("span offset {offset} out of range"))?,
                length: u32::try_from(length)
                    .map_err(|_| format!("span length {length} out of range"))?,
            });
        }
        Ok(out)
    }

    fn varints(&mut self) -> Result<Vec<i64>, String> {
        let n = self.count(1)?;
        (0..n).map(|_| self.varint()).collect()
    }

    fn f64s(&mut self) -> Result<Vec<f64>, String> {
        let n = self.count(8)?;
        (0..n).map(|_| self.f64()).collect()
    }

    /// A label set: count, then (name, value) strings; sorted, names
    /// unique.
    fn labels(&mut self, what: &str) -> Result<Labels, String> {
        let n = self.count(2)?;
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.str()?;
            let value = self.str()?;
            labels.push(Label::new(name, value));
        }
        if !Labels::is_sorted_unique(&labels) {
            return Err(format!("{what} labels are not sorted and unique"));
        }
        Ok(Labels::from_sorted_unchecked(labels))
    }

    fn str(&mut self) -> Result<Arc<str>, String> {
        let at = self.pos;
        let n = self.uvarint()?;
        let n = usize::try_from(n).map_err(|_| format!("string length {n} too large"))?;
        if n > self.left() {
            return Err(format!(
                "string of {n} bytes at payload byte {at} overruns the record"
            ));
        }
        let s = &self.b[self.pos..self.pos + n];
        let s = std::str::from_utf8(s)
            .map_err(|_| format!("label at payload byte {at} is not UTF-8"))?;
        self.pos += n;
        Ok(Arc::from(s))
    }
}
