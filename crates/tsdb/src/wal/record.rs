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
use super::{Record, RefSample, RefSeries, RefTombstone};

/// Size of a frame header: length (4), type (1), CRC-32C (4).
pub(crate) const FRAME_HEADER_LEN: usize = 9;

/// Record type: series definitions.
pub(crate) const TYPE_SERIES: u8 = 1;
/// Record type: float samples.
pub(crate) const TYPE_SAMPLES: u8 = 2;
/// Record type: tombstones.
pub(crate) const TYPE_TOMBSTONES: u8 = 3;
/// Record type: metric family metadata (format version 2).
pub(crate) const TYPE_METADATA: u8 = 7;

/// Human name of a reserved or unknown record type, for error messages.
pub(crate) fn type_name(t: u8) -> &'static str {
    match t {
        0 => "invalid record type 0",
        TYPE_SERIES => "series",
        TYPE_SAMPLES => "samples",
        TYPE_TOMBSTONES => "tombstones",
        4 => "reserved record type 4 (histogram samples)",
        5 => "reserved record type 5 (float histogram samples)",
        6 => "reserved record type 6 (exemplars)",
        TYPE_METADATA => "metadata",
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

/// Appends the frame of any record.
pub(crate) fn encode_record(buf: &mut Vec<u8>, rec: &Record) -> Result<(), Error> {
    match rec {
        Record::Series(s) => encode_series(buf, s),
        Record::Samples(s) => encode_samples(buf, s),
        Record::Tombstones(t) => encode_tombstones(buf, t),
        Record::Metadata(m) => encode_metadata(buf, m),
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
        t => Err(format!(
            "{} (type {t}) is not supported by WAL format version {}",
            type_name(t),
            super::segment::VERSION
        )),
    }
}

#[inline]
pub(crate) fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

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
