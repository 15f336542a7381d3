//! The byte encoding of one queued [`Batch`] (a record's payload) and the
//! record frame around it. See `docs/format/agent-queue.md`.
//!
//! A payload carries its own symbol table, so every record decodes on its
//! own: dropping or skipping a segment never breaks the records after it.

use std::collections::HashMap;
use std::sync::Arc;

use stratus_model::{Label, Labels, Sample};

use crate::sink::{Batch, Metadata, MetricType, SeriesSamples};

/// Bytes of a record frame header: payload length and CRC-32C, both u32 LE.
pub(crate) const FRAME_HEADER: usize = 8;

/// Largest payload accepted (a longer length field is corruption).
pub(crate) const MAX_PAYLOAD: usize = 64 << 20;

/// Payload kind byte of a batch record.
const KIND_BATCH: u8 = 1;

/// A decoded payload with the facts the queue needs about it.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) append_ms: i64,
    pub(crate) samples: u64,
    pub(crate) batch: Batch,
}

/// Why a payload did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError(pub(crate) &'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Total samples of a batch.
pub(crate) fn sample_count(batch: &Batch) -> u64 {
    batch.series.iter().map(|s| s.samples.len() as u64).sum()
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn kind_byte(k: MetricType) -> u8 {
    match k {
        MetricType::Unknown => 0,
        MetricType::Counter => 1,
        MetricType::Gauge => 2,
        MetricType::Histogram => 3,
        MetricType::GaugeHistogram => 4,
        MetricType::Summary => 5,
        MetricType::Info => 6,
        MetricType::StateSet => 7,
    }
}

fn kind_from_byte(b: u8) -> MetricType {
    match b {
        1 => MetricType::Counter,
        2 => MetricType::Gauge,
        3 => MetricType::Histogram,
        4 => MetricType::GaugeHistogram,
        5 => MetricType::Summary,
        6 => MetricType::Info,
        7 => MetricType::StateSet,
        _ => MetricType::Unknown,
    }
}

/// xxh3 over the symbol's bytes (SipHash here was a visible share of
/// the agent's CPU time).
#[derive(Default)]
struct SymHasher(u64);

impl std::hash::Hasher for SymHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0 ^ u64::from(i)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Hashes a (pointer, length) key: one multiply, no string bytes.
#[derive(Default)]
struct PtrHasher(u64);

impl std::hash::Hasher for PtrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u8(b);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

struct Symbols<'a> {
    index: HashMap<&'a str, u64, std::hash::BuildHasherDefault<SymHasher>>,
    /// The same ids by the string's address and length: label strings are
    /// shared `Arc<str>`s (the scrape loop interns them per target), so
    /// most lookups need neither hashing nor comparing their bytes. Equal
    /// (address, length) of borrowed strings means equal bytes; different
    /// addresses fall back to `index`, so ids are the same as by content.
    by_ptr: HashMap<(usize, usize), u64, std::hash::BuildHasherDefault<PtrHasher>>,
    list: Vec<&'a str>,
}

impl<'a> Symbols<'a> {
    fn get(&mut self, s: &'a str) -> u64 {
        let key = (s.as_ptr() as usize, s.len());
        if let Some(&i) = self.by_ptr.get(&key) {
            return i;
        }
        let i = match self.index.get(s) {
            Some(&i) => i,
            None => {
                let i = self.list.len() as u64;
                self.list.push(s);
                self.index.insert(s, i);
                i
            }
        };
        self.by_ptr.insert(key, i);
        i
    }
}

/// Encodes `batch` as a complete framed record (frame header included).
pub(crate) fn encode_record(batch: &Batch, append_ms: i64) -> Vec<u8> {
    let mut syms = Symbols {
        index: HashMap::with_capacity_and_hasher(256, Default::default()),
        by_ptr: HashMap::with_capacity_and_hasher(256, Default::default()),
        list: Vec::new(),
    };
    // Body first (it assigns symbol ids), then the head with the table.
    let mut body = Vec::with_capacity(batch.series.len() * 48);
    put_uvarint(&mut body, batch.series.len() as u64);
    for s in &batch.series {
        put_uvarint(&mut body, s.labels.len() as u64);
        for l in s.labels.iter() {
            let n = syms.get(&l.name);
            let v = syms.get(&l.value);
            put_uvarint(&mut body, n);
            put_uvarint(&mut body, v);
        }
        put_uvarint(&mut body, s.samples.len() as u64);
        let mut prev = 0i64;
        for (i, smp) in s.samples.iter().enumerate() {
            let d = if i == 0 {
                smp.t
            } else {
                smp.t.wrapping_sub(prev)
            };
            put_varint(&mut body, d);
            body.extend_from_slice(&smp.v.to_bits().to_le_bytes());
            prev = smp.t;
        }
    }
    put_uvarint(&mut body, batch.metadata.len() as u64);
    for m in &batch.metadata {
        let f = syms.get(&m.family);
        put_uvarint(&mut body, f);
        body.push(kind_byte(m.kind));
        let h = syms.get(&m.help);
        put_uvarint(&mut body, h);
        let u = syms.get(&m.unit);
        put_uvarint(&mut body, u);
    }
    let sym_bytes: usize = syms.list.iter().map(|s| s.len() + 2).sum();
    let mut out = Vec::with_capacity(FRAME_HEADER + 24 + sym_bytes + body.len());
    out.extend_from_slice(&[0u8; FRAME_HEADER]);
    out.push(KIND_BATCH);
    put_varint(&mut out, append_ms);
    put_uvarint(&mut out, sample_count(batch));
    put_uvarint(&mut out, syms.list.len() as u64);
    for s in &syms.list {
        put_uvarint(&mut out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    out.extend_from_slice(&body);
    let len = (out.len() - FRAME_HEADER) as u32;
    let crc = crc32c::crc32c(&out[FRAME_HEADER..]);
    out[0..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Parses a frame header: payload length and expected CRC.
pub(crate) fn frame_header(b: [u8; FRAME_HEADER]) -> (usize, u32) {
    let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let crc = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    (len, crc)
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

const TRUNCATED: DecodeError = DecodeError("payload truncated");

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let v = *self.b.get(self.i).ok_or(TRUNCATED)?;
        self.i += 1;
        Ok(v)
    }

    fn uvarint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError("varint too long"))
    }

    fn varint(&mut self) -> Result<i64, DecodeError> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    fn count(&mut self, min_bytes_each: usize) -> Result<usize, DecodeError> {
        let n = self.uvarint()?;
        let left = (self.b.len() - self.i) as u64;
        // Every element takes at least `min_bytes_each` bytes, so a count
        // larger than that bound is corruption (and must not allocate).
        if n.saturating_mul(min_bytes_each as u64) > left {
            return Err(DecodeError("element count exceeds payload"));
        }
        Ok(n as usize)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.i.checked_add(n).ok_or(TRUNCATED)?;
        let s = self.b.get(self.i..end).ok_or(TRUNCATED)?;
        self.i = end;
        Ok(s)
    }

    fn f64(&mut self) -> Result<f64, DecodeError> {
        let s = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(f64::from_bits(u64::from_le_bytes(a)))
    }
}

/// Reads only the head of a payload: append time and sample count.
pub(crate) fn decode_head(payload: &[u8]) -> Result<(i64, u64), DecodeError> {
    let mut c = Cursor { b: payload, i: 0 };
    if c.byte()? != KIND_BATCH {
        return Err(DecodeError("unknown record kind"));
    }
    let append_ms = c.varint()?;
    let samples = c.uvarint()?;
    Ok((append_ms, samples))
}

/// What [`walk_payload`] returns besides the series it visits.
#[derive(Debug)]
pub(crate) struct Walked {
    pub(crate) append_ms: i64,
    pub(crate) samples: u64,
    pub(crate) metadata: Vec<Metadata>,
}

/// Walks a payload (the bytes after the frame header, CRC checked)
/// without building label sets: `series` is called once per series with
/// the record's symbol table, the series' labels as (name, value) symbol
/// indexes (checked: in range, sorted by name, names unique, values
/// non-empty) and its samples. The slices are scratch space re-used from
/// one series to the next. A payload that does not decode is an error
/// (after some series may have been visited).
pub(crate) fn walk_payload<'p>(
    payload: &'p [u8],
    mut series: impl FnMut(&[&'p str], &[(usize, usize)], &[Sample]),
) -> Result<Walked, DecodeError> {
    let mut c = Cursor { b: payload, i: 0 };
    if c.byte()? != KIND_BATCH {
        return Err(DecodeError("unknown record kind"));
    }
    let append_ms = c.varint()?;
    let samples = c.uvarint()?;
    let nsym = c.count(1)?;
    let mut table: Vec<&'p str> = Vec::with_capacity(nsym);
    for _ in 0..nsym {
        let n = c.uvarint()?;
        let n = usize::try_from(n).map_err(|_| TRUNCATED)?;
        let s = std::str::from_utf8(c.bytes(n)?).map_err(|_| DecodeError("symbol not UTF-8"))?;
        table.push(s);
    }
    let sym = |r: u64| -> Result<usize, DecodeError> {
        usize::try_from(r)
            .ok()
            .filter(|&i| i < table.len())
            .ok_or(DecodeError("symbol reference out of range"))
    };
    let nseries = c.count(2)?;
    let mut refs: Vec<(usize, usize)> = Vec::new();
    let mut smp: Vec<Sample> = Vec::new();
    let mut total = 0u64;
    for _ in 0..nseries {
        let nl = c.count(2)?;
        refs.clear();
        for _ in 0..nl {
            let n = sym(c.uvarint()?)?;
            let v = sym(c.uvarint()?)?;
            if table[v].is_empty() || refs.last().is_some_and(|&(p, _)| table[p] >= table[n]) {
                return Err(DecodeError("labels not sorted and unique"));
            }
            refs.push((n, v));
        }
        let ns = c.count(9)?;
        smp.clear();
        let mut prev = 0i64;
        for i in 0..ns {
            let d = c.varint()?;
            let t = if i == 0 { d } else { prev.wrapping_add(d) };
            let v = c.f64()?;
            smp.push(Sample::new(t, v));
            prev = t;
        }
        total += ns as u64;
        series(&table, &refs, &smp);
    }
    let nmeta = c.count(4)?;
    let mut metadata = Vec::with_capacity(nmeta);
    for _ in 0..nmeta {
        let family = table[sym(c.uvarint()?)?];
        let kind = kind_from_byte(c.byte()?);
        let help = table[sym(c.uvarint()?)?];
        let unit = table[sym(c.uvarint()?)?];
        metadata.push(Metadata {
            family: family.to_string(),
            kind,
            help: help.to_string(),
            unit: unit.to_string(),
        });
    }
    if c.i != payload.len() {
        return Err(DecodeError("trailing bytes after payload"));
    }
    if total != samples {
        return Err(DecodeError("sample count mismatch"));
    }
    Ok(Walked {
        append_ms,
        samples,
        metadata,
    })
}

/// Decodes a payload (the bytes after the frame header, CRC checked) into
/// a [`Batch`] (one shared string per symbol).
pub(crate) fn decode_payload(payload: &[u8]) -> Result<Decoded, DecodeError> {
    let mut arcs: Vec<Arc<str>> = Vec::new();
    let mut series = Vec::new();
    let w = walk_payload(payload, |table, refs, smp| {
        if arcs.len() != table.len() {
            arcs = table.iter().map(|s| Arc::from(*s)).collect();
        }
        // `walk_payload` checked the indexes and the order.
        let labels = refs
            .iter()
            .map(|&(n, v)| Label {
                name: arcs[n].clone(),
                value: arcs[v].clone(),
            })
            .collect();
        series.push(SeriesSamples {
            labels: Labels::from_sorted_unchecked(labels),
            samples: smp.to_vec(),
        });
    })?;
    Ok(Decoded {
        append_ms: w.append_ms,
        samples: w.samples,
        batch: Batch {
            series,
            metadata: w.metadata,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_model::stale_nan;

    fn batch() -> Batch {
        Batch {
            series: vec![
                SeriesSamples {
                    labels: Labels::from_pairs([("__name__", "up"), ("job", "a")]),
                    samples: vec![Sample::new(1000, 1.0), Sample::new(900, stale_nan())],
                },
                SeriesSamples {
                    labels: Labels::from_pairs([("__name__", "x_total"), ("job", "a")]),
                    samples: vec![Sample::new(-5, f64::INFINITY)],
                },
            ],
            metadata: vec![Metadata {
                family: "x".into(),
                kind: MetricType::Counter,
                help: "An x.".into(),
                unit: String::new(),
            }],
        }
    }

    #[test]
    fn round_trip_is_bit_exact() {
        let b = batch();
        let rec = encode_record(&b, 1_700_000_000_000);
        let (len, crc) = frame_header(rec[..8].try_into().unwrap());
        assert_eq!(len, rec.len() - 8);
        assert_eq!(crc, crc32c::crc32c(&rec[8..]));
        let d = decode_payload(&rec[8..]).unwrap();
        assert_eq!(d.append_ms, 1_700_000_000_000);
        assert_eq!(d.samples, 3);
        assert_eq!(d.batch, b);
        assert_eq!(decode_head(&rec[8..]).unwrap(), (1_700_000_000_000, 3));
    }

    #[test]
    fn walk_rejects_unsorted_and_empty_labels() {
        // Symbols: 0 "a", 1 "b", 2 "1", 3 "".
        let payload = |labels: &[(u64, u64)]| {
            let mut p = vec![KIND_BATCH];
            put_varint(&mut p, 0);
            put_uvarint(&mut p, 1);
            put_uvarint(&mut p, 4);
            for s in ["a", "b", "1", ""] {
                put_uvarint(&mut p, s.len() as u64);
                p.extend_from_slice(s.as_bytes());
            }
            put_uvarint(&mut p, 1);
            put_uvarint(&mut p, labels.len() as u64);
            for &(n, v) in labels {
                put_uvarint(&mut p, n);
                put_uvarint(&mut p, v);
            }
            put_uvarint(&mut p, 1);
            put_varint(&mut p, 5);
            p.extend_from_slice(&1.0f64.to_bits().to_le_bytes());
            put_uvarint(&mut p, 0);
            p
        };
        let mut seen = Vec::new();
        let good = payload(&[(0, 2), (1, 2)]);
        let w = walk_payload(&good, |t, refs, smp| {
            seen.push((
                refs.iter().map(|&(n, v)| (t[n], t[v])).collect::<Vec<_>>(),
                smp.to_vec(),
            ));
        })
        .unwrap();
        assert_eq!(w.samples, 1);
        assert_eq!(
            seen,
            vec![(vec![("a", "1"), ("b", "1")], vec![Sample::new(5, 1.0)])]
        );
        for bad in [&[(1, 2), (0, 2)][..], &[(0, 2), (0, 2)], &[(0, 3)]] {
            let e = walk_payload(&payload(bad), |_, _, _| panic!("visited")).unwrap_err();
            assert_eq!(e, DecodeError("labels not sorted and unique"), "{bad:?}");
        }
        let e = walk_payload(&payload(&[(0, 4)]), |_, _, _| {}).unwrap_err();
        assert_eq!(e, DecodeError("symbol reference out of range"));
    }

    #[test]
    fn every_truncation_and_garbage_is_an_error_not_a_panic() {
        let rec = encode_record(&batch(), 7);
        let p = &rec[8..];
        for n in 0..p.len() {
            assert!(decode_payload(&p[..n]).is_err(), "prefix {n}");
        }
        let mut x = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut q = p.to_vec();
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let i = (x as usize) % q.len();
            q[i] ^= (x >> 8) as u8 | 1;
            let _ = decode_payload(&q);
        }
    }
}
