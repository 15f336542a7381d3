//! Builds remote-write request bodies (protobuf, then snappy) from the
//! series a shard collected: `prometheus.WriteRequest` (1.0) or
//! `io.prometheus.write.v2.Request` (2.0, with its symbol table and
//! inline metadata).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use stratus_model::{Labels, Sample};
use stratus_proto::{prometheus as v1, write_v2 as v2};

use crate::sink::{Metadata, MetricType};

/// One series' samples of one queued record, ready to send.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) series: ItemSeries,
    /// The queue record it came from (for acknowledgement).
    pub(crate) record: u64,
}

/// The series of an [`Item`], in the form its protocol sends.
#[derive(Debug, Clone)]
pub(crate) enum ItemSeries {
    /// For 2.0 (symbols are per request): the final labels (external
    /// labels added, write relabeling applied) and the samples.
    Labels {
        labels: Labels,
        samples: Vec<Sample>,
        /// Metadata of the series' family (sent inline by 2.0).
        meta: Option<Arc<Metadata>>,
    },
    /// For 1.0: the `TimeSeries` message's bytes (final labels, then the
    /// samples), written once when staged and copied into the request.
    /// The bytes are a slice of one buffer shared by the record's series
    /// of a shard, so staging allocates per record, not per series.
    V1 {
        bytes: Bytes,
        samples: u32,
        /// Newest sample timestamp.
        newest: i64,
    },
}

impl Item {
    /// Samples carried.
    pub(crate) fn samples(&self) -> usize {
        match &self.series {
            ItemSeries::Labels { samples, .. } => samples.len(),
            ItemSeries::V1 { samples, .. } => *samples as usize,
        }
    }

    /// The newest sample timestamp, if any.
    pub(crate) fn newest(&self) -> Option<i64> {
        match &self.series {
            ItemSeries::Labels { samples, .. } => samples.iter().map(|s| s.t).max(),
            ItemSeries::V1 {
                samples, newest, ..
            } => (*samples > 0).then_some(*newest),
        }
    }
}

fn type_number(k: MetricType) -> i32 {
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

fn snappy(b: &[u8]) -> Vec<u8> {
    // Snappy fails only on inputs over ~4 GiB, which a request bounded by
    // max_samples_per_send never reaches; an empty body (rejected by the
    // receiver with 400, so dropped and counted) is the fallback.
    snap::raw::Encoder::new()
        .compress_vec(b)
        .unwrap_or_default()
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn uvarint_len(v: u64) -> usize {
    // 1 byte per started group of 7 bits, at least 1.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A length-delimited string field (wire type 2).
fn put_str(out: &mut Vec<u8>, tag: u8, s: &str) {
    out.push(tag);
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn str_field_len(s: &str) -> usize {
    1 + uvarint_len(s.len() as u64) + s.len()
}

/// Appends one `TimeSeries.labels` field (a `Label` with `name` 1 and
/// `value` 2) to a `TimeSeries` message being written.
pub(crate) fn put_v1_label(out: &mut Vec<u8>, name: &str, value: &str) {
    let ll = str_field_len(name) + str_field_len(value);
    out.push(0x0a); // TimeSeries.labels
    put_uvarint(out, ll as u64);
    put_str(out, 0x0a, name);
    put_str(out, 0x12, value);
}

/// Appends the `TimeSeries.samples` fields (a `Sample` with `value` 1 as
/// fixed64, `timestamp` 2 as varint) to a `TimeSeries` message being
/// written.
pub(crate) fn put_v1_samples(out: &mut Vec<u8>, samples: &[Sample]) {
    for s in samples {
        let sl = 9 + 1 + uvarint_len(s.t as u64);
        out.push(0x12); // TimeSeries.samples
        put_uvarint(out, sl as u64);
        out.push(0x09); // Sample.value, fixed64
        out.extend_from_slice(&s.v.to_bits().to_le_bytes());
        out.push(0x10); // Sample.timestamp, varint (int64: two's complement)
        put_uvarint(out, s.t as u64);
    }
}

/// A shard's buffers for building request bodies, kept from one request
/// to the next (a fresh zeroed snappy output buffer per request was a
/// visible share of the agent's CPU in page faults).
#[derive(Debug)]
pub(crate) struct BodyBufs {
    raw: Vec<u8>,
    compressed: Vec<u8>,
    encoder: snap::raw::Encoder,
}

impl Default for BodyBufs {
    fn default() -> Self {
        Self {
            raw: Vec::new(),
            compressed: Vec::new(),
            encoder: snap::raw::Encoder::new(),
        }
    }
}

/// A remote write 1.0 body (snappy-compressed): `WriteRequest.timeseries`
/// (1) of `TimeSeries` messages. Staged 1.0 items carry their message's
/// bytes, copied as they are; items with labels (tests) are written here.
#[cfg(test)]
pub(crate) fn encode_v1(items: &[Item]) -> Vec<u8> {
    encode_v1_with(items, &mut BodyBufs::default()).to_vec()
}

/// [`encode_v1`] with a shard's reused buffers.
pub(crate) fn encode_v1_with(items: &[Item], bufs: &mut BodyBufs) -> Bytes {
    let len: usize = items
        .iter()
        .map(|it| match &it.series {
            ItemSeries::V1 { bytes, .. } => bytes.len() + 6,
            ItemSeries::Labels { samples, .. } => 128 + samples.len() * 24,
        })
        .sum();
    let out = &mut bufs.raw;
    out.clear();
    out.reserve(len);
    let mut scratch = Vec::new();
    for it in items {
        let msg: &[u8] = match &it.series {
            ItemSeries::V1 { bytes, .. } => bytes,
            ItemSeries::Labels {
                labels, samples, ..
            } => {
                scratch.clear();
                for l in labels.iter() {
                    put_v1_label(&mut scratch, &l.name, &l.value);
                }
                put_v1_samples(&mut scratch, samples);
                &scratch
            }
        };
        out.push(0x0a); // WriteRequest.timeseries
        put_uvarint(out, msg.len() as u64);
        out.extend_from_slice(msg);
    }
    // Zero-filled only where the buffer grows past its longest length.
    let need = snap::raw::max_compress_len(out.len());
    if bufs.compressed.len() < need {
        bufs.compressed.resize(need, 0);
    }
    // As `snappy`: compression fails only past ~4 GiB; empty fallback.
    match bufs.encoder.compress(out, &mut bufs.compressed) {
        Ok(n) => Bytes::copy_from_slice(bufs.compressed.get(..n).unwrap_or_default()),
        Err(_) => Bytes::new(),
    }
}

/// A remote write 1.0 metadata-only body (snappy-compressed).
pub(crate) fn encode_v1_metadata(meta: &[Arc<Metadata>]) -> Vec<u8> {
    let req = v1::WriteRequest {
        timeseries: vec![],
        metadata: meta
            .iter()
            .map(|m| v1::MetricMetadata {
                r#type: type_number(m.kind),
                metric_family_name: m.family.clone(),
                help: m.help.clone(),
                unit: m.unit.clone(),
            })
            .collect(),
    };
    snappy(&req.encode_to_vec())
}

struct SymbolTable<'a> {
    index: HashMap<&'a str, u32>,
    symbols: Vec<String>,
}

impl<'a> SymbolTable<'a> {
    fn new() -> Self {
        let mut index = HashMap::new();
        index.insert("", 0);
        Self {
            index,
            symbols: vec![String::new()],
        }
    }

    fn get(&mut self, s: &'a str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.symbols.len() as u32;
        self.symbols.push(s.to_string());
        self.index.insert(s, i);
        i
    }
}

/// A remote write 2.0 body (snappy-compressed).
pub(crate) fn encode_v2(items: &[Item]) -> Vec<u8> {
    let mut syms = SymbolTable::new();
    let mut timeseries = Vec::with_capacity(items.len());
    for it in items {
        // The dispatcher stages 2.0 series with labels only.
        let ItemSeries::Labels {
            labels,
            samples,
            meta,
        } = &it.series
        else {
            continue;
        };
        let mut refs = Vec::with_capacity(labels.len() * 2);
        for l in labels.iter() {
            refs.push(syms.get(&l.name));
            refs.push(syms.get(&l.value));
        }
        let metadata = meta.as_ref().map(|m| v2::Metadata {
            r#type: type_number(m.kind),
            help_ref: syms.get(&m.help),
            unit_ref: syms.get(&m.unit),
        });
        timeseries.push(v2::TimeSeries {
            labels_refs: refs,
            samples: samples
                .iter()
                .map(|s| v2::Sample {
                    value: s.v,
                    timestamp: s.t,
                    start_timestamp: 0,
                })
                .collect(),
            metadata,
            ..Default::default()
        });
    }
    let req = v2::Request {
        symbols: syms.symbols,
        timeseries,
    };
    snappy(&req.encode_to_vec())
}

/// The family a series belongs to, for metadata lookup: the metric name,
/// then the name without a histogram/summary/counter suffix.
pub(crate) fn family_candidates(name: &str) -> impl Iterator<Item = &str> {
    const SUFFIXES: [&str; 8] = [
        "_bucket", "_count", "_sum", "_total", "_created", "_gcount", "_gsum", "_info",
    ];
    std::iter::once(name).chain(SUFFIXES.iter().filter_map(move |s| name.strip_suffix(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels_item(labels: Labels, samples: Vec<Sample>, meta: Option<Arc<Metadata>>) -> Item {
        Item {
            series: ItemSeries::Labels {
                labels,
                samples,
                meta,
            },
            record: 0,
        }
    }

    #[test]
    fn v2_symbols_start_empty_and_are_shared() {
        let items = vec![
            labels_item(
                Labels::from_pairs([("__name__", "a"), ("job", "j")]),
                vec![Sample::new(1, 2.0)],
                Some(Arc::new(Metadata {
                    family: "a".into(),
                    kind: MetricType::Gauge,
                    help: "h".into(),
                    unit: String::new(),
                })),
            ),
            labels_item(
                Labels::from_pairs([("__name__", "b"), ("job", "j")]),
                vec![Sample::new(1, 3.0)],
                None,
            ),
        ];
        let body = snap::raw::Decoder::new()
            .decompress_vec(&encode_v2(&items))
            .unwrap();
        let req = v2::Request::decode(body.as_slice()).unwrap();
        assert_eq!(req.symbols, vec!["", "__name__", "a", "job", "j", "h", "b"]);
        assert_eq!(req.timeseries[0].labels_refs, vec![1, 2, 3, 4]);
        let m = req.timeseries[0].metadata.unwrap();
        assert_eq!((m.r#type, m.help_ref, m.unit_ref), (2, 5, 0));
        assert_eq!(req.timeseries[1].labels_refs, vec![1, 6, 3, 4]);
    }

    #[test]
    fn v1_hand_encoding_decodes_as_prost() {
        let items = vec![
            labels_item(
                Labels::from_pairs([("__name__", "a"), ("job", &*"j".repeat(200))]),
                vec![Sample::new(1_700_000_000_123, 2.5), Sample::new(-5, 0.0)],
                None,
            ),
            labels_item(
                Labels::from_pairs([("__name__", "b")]),
                vec![Sample::new(0, f64::NAN)],
                None,
            ),
        ];
        let body = snap::raw::Decoder::new()
            .decompress_vec(&encode_v1(&items))
            .unwrap();
        let req = v1::WriteRequest::decode(body.as_slice()).unwrap();
        assert_eq!(req.timeseries.len(), 2);
        let t = &req.timeseries[0];
        assert_eq!(t.labels[1].name, "job");
        assert_eq!(t.labels[1].value.len(), 200);
        assert_eq!(t.samples[0].timestamp, 1_700_000_000_123);
        assert_eq!(t.samples[0].value, 2.5);
        assert_eq!(t.samples[1].timestamp, -5);
        assert!(req.timeseries[1].samples[0].value.is_nan());
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u64::MAX] {
            let mut b = Vec::new();
            put_uvarint(&mut b, v);
            assert_eq!(b.len(), uvarint_len(v), "{v}");
        }
    }

    #[test]
    fn reused_body_buffers_give_the_same_bodies() {
        let big: Vec<Item> = (0..300)
            .map(|i| {
                labels_item(
                    Labels::from_pairs([("__name__", "m"), ("i", &*i.to_string())]),
                    vec![Sample::new(i, i as f64)],
                    None,
                )
            })
            .collect();
        let small = &big[..2];
        let mut bufs = BodyBufs::default();
        for items in [&big[..], small, &big[..]] {
            let reused = encode_v1_with(items, &mut bufs);
            assert_eq!(&reused[..], &encode_v1(items)[..]);
            let body = snap::raw::Decoder::new().decompress_vec(&reused).unwrap();
            let req = v1::WriteRequest::decode(body.as_slice()).unwrap();
            assert_eq!(req.timeseries.len(), items.len());
        }
    }

    #[test]
    fn family_lookup_strips_suffixes() {
        let c: Vec<&str> = family_candidates("x_bucket").collect();
        assert_eq!(c, vec!["x_bucket", "x"]);
        let c: Vec<&str> = family_candidates("up").collect();
        assert_eq!(c, vec!["up"]);
    }
}
