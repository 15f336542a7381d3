//! Builds remote-write request bodies (protobuf, then snappy) from the
//! series a shard collected: `prometheus.WriteRequest` (1.0) or
//! `io.prometheus.write.v2.Request` (2.0, with its symbol table and
//! inline metadata).

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;
use stratus_model::{Labels, Sample};
use stratus_proto::{prometheus as v1, write_v2 as v2};

use crate::sink::{Metadata, MetricType};

/// One series' samples of one queued record, ready to send.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    /// Final labels (external labels added, write relabeling applied).
    pub(crate) labels: Labels,
    pub(crate) samples: Vec<Sample>,
    /// Metadata of the series' family (sent inline by 2.0 only).
    pub(crate) meta: Option<Arc<Metadata>>,
    /// The queue record it came from (for acknowledgement).
    pub(crate) record: u64,
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

/// A remote write 1.0 body (snappy-compressed). The protobuf is written
/// directly from the labels (no intermediate message with a `String` per
/// label name and value): `WriteRequest.timeseries` (1) of `TimeSeries`
/// with `labels` (1: `name` 1, `value` 2) and `samples` (2: `value` 1 as
/// fixed64, `timestamp` 2 as varint).
pub(crate) fn encode_v1(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.len() * 160);
    for it in items {
        let mut ts_len = 0usize;
        for l in it.labels.iter() {
            let ll = str_field_len(&l.name) + str_field_len(&l.value);
            ts_len += 1 + uvarint_len(ll as u64) + ll;
        }
        for s in &it.samples {
            let sl = 9 + 1 + uvarint_len(s.t as u64);
            ts_len += 1 + uvarint_len(sl as u64) + sl;
        }
        out.push(0x0a); // WriteRequest.timeseries
        put_uvarint(&mut out, ts_len as u64);
        for l in it.labels.iter() {
            let ll = str_field_len(&l.name) + str_field_len(&l.value);
            out.push(0x0a); // TimeSeries.labels
            put_uvarint(&mut out, ll as u64);
            put_str(&mut out, 0x0a, &l.name);
            put_str(&mut out, 0x12, &l.value);
        }
        for s in &it.samples {
            let sl = 9 + 1 + uvarint_len(s.t as u64);
            out.push(0x12); // TimeSeries.samples
            put_uvarint(&mut out, sl as u64);
            out.push(0x09); // Sample.value, fixed64
            out.extend_from_slice(&s.v.to_bits().to_le_bytes());
            out.push(0x10); // Sample.timestamp, varint (int64: two's complement)
            put_uvarint(&mut out, s.t as u64);
        }
    }
    snappy(&out)
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
        let mut refs = Vec::with_capacity(it.labels.len() * 2);
        for l in it.labels.iter() {
            refs.push(syms.get(&l.name));
            refs.push(syms.get(&l.value));
        }
        let metadata = it.meta.as_ref().map(|m| v2::Metadata {
            r#type: type_number(m.kind),
            help_ref: syms.get(&m.help),
            unit_ref: syms.get(&m.unit),
        });
        timeseries.push(v2::TimeSeries {
            labels_refs: refs,
            samples: it
                .samples
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

    #[test]
    fn v2_symbols_start_empty_and_are_shared() {
        let items = vec![
            Item {
                labels: Labels::from_pairs([("__name__", "a"), ("job", "j")]),
                samples: vec![Sample::new(1, 2.0)],
                meta: Some(Arc::new(Metadata {
                    family: "a".into(),
                    kind: MetricType::Gauge,
                    help: "h".into(),
                    unit: String::new(),
                })),
                record: 0,
            },
            Item {
                labels: Labels::from_pairs([("__name__", "b"), ("job", "j")]),
                samples: vec![Sample::new(1, 3.0)],
                meta: None,
                record: 0,
            },
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
            Item {
                labels: Labels::from_pairs([("__name__", "a"), ("job", &*"j".repeat(200))]),
                samples: vec![Sample::new(1_700_000_000_123, 2.5), Sample::new(-5, 0.0)],
                meta: None,
                record: 0,
            },
            Item {
                labels: Labels::from_pairs([("__name__", "b")]),
                samples: vec![Sample::new(0, f64::NAN)],
                meta: None,
                record: 0,
            },
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
    fn family_lookup_strips_suffixes() {
        let c: Vec<&str> = family_candidates("x_bucket").collect();
        assert_eq!(c, vec!["x_bucket", "x"]);
        let c: Vec<&str> = family_candidates("up").collect();
        assert_eq!(c, vec!["up"]);
    }
}
