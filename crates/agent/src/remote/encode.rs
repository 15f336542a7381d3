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

/// A remote write 1.0 body (snappy-compressed).
pub(crate) fn encode_v1(items: &[Item]) -> Vec<u8> {
    let req = v1::WriteRequest {
        timeseries: items
            .iter()
            .map(|it| v1::TimeSeries {
                labels: it
                    .labels
                    .iter()
                    .map(|l| v1::Label {
                        name: l.name.to_string(),
                        value: l.value.to_string(),
                    })
                    .collect(),
                samples: it
                    .samples
                    .iter()
                    .map(|s| v1::Sample {
                        value: s.v,
                        timestamp: s.t,
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    };
    snappy(&req.encode_to_vec())
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
    fn family_lookup_strips_suffixes() {
        let c: Vec<&str> = family_candidates("x_bucket").collect();
        assert_eq!(c, vec!["x_bucket", "x"]);
        let c: Vec<&str> = family_candidates("up").collect();
        assert_eq!(c, vec!["up"]);
    }
}
