//! The synthetic series set and its payload encoders.
//!
//! `series` series spread over `metrics` metric names, ~10 labels each
//! (job, instance, region, zone, cluster, namespace, pod, container,
//! series id). Metric 0 is a classic histogram family
//! (`bench_request_duration_seconds_bucket`, 12 `le` buckets per group,
//! cumulative and monotonic); odd metrics are counters
//! (`bench_counter_<m>_total`: a steady per-series rate with ±10 % noise,
//! integers or hundredths), even metrics gauges (`bench_gauge_<m>`: a
//! random walk in the last of 1–4 significant digits, unchanged on most
//! ticks) — the shape of node_exporter data. Values are a pure function of (seed, series,
//! tick), so two runs push identical data to two systems.
//!
//! Churn replaces series (their `pod` label gets a new generation) at a
//! steady rate per minute; jitter moves timestamps up to N ms past the
//! tick, as real scrapes do.
//!
//! Encoding is by hand: every series' labels are encoded once (remote
//! write 1.0 `Label` messages; for 2.0 a per-batch symbol table and packed
//! label references), so building a request only appends samples.

use std::time::Duration;

/// Remote-write protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `prometheus.WriteRequest`.
    V1,
    /// `io.prometheus.write.v2.Request`.
    V2,
}

impl Protocol {
    /// The Content-Type of a request body.
    pub fn content_type(self) -> &'static str {
        match self {
            Protocol::V1 => "application/x-protobuf",
            Protocol::V2 => "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        }
    }

    /// The `X-Prometheus-Remote-Write-Version` header value.
    pub fn version_header(self) -> &'static str {
        match self {
            Protocol::V1 => "0.1.0",
            Protocol::V2 => "2.0.0",
        }
    }
}

/// Shape of the series set.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Active series.
    pub series: usize,
    /// Metric names the series are spread over (at least 1).
    pub metrics: usize,
    /// Scrape interval: the step between a series' samples.
    pub interval: Duration,
    /// Series replaced per minute.
    pub churn_per_min: f64,
    /// Timestamps land up to this many ms after their tick.
    pub jitter_ms: u64,
    /// Seed of all values.
    pub seed: u64,
    /// Series per request.
    pub batch_series: usize,
    /// Payload encoding.
    pub protocol: Protocol,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            series: 10_000,
            metrics: 100,
            interval: Duration::from_secs(15),
            churn_per_min: 0.0,
            jitter_ms: 0,
            seed: 42,
            batch_series: 2_000,
            protocol: Protocol::V1,
        }
    }
}

/// Bucket bounds of the histogram family; the last is +Inf.
const LE: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];
/// Fraction of observations at or below each bound.
const LE_FRAC: [f64; 12] = [
    0.02, 0.05, 0.12, 0.25, 0.45, 0.7, 0.85, 0.93, 0.97, 0.99, 0.997, 1.0,
];
const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-south-1"];

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Counter growing by 0..max per tick.
    CounterInt { max: u64 },
    /// Counter growing by hundredths (CPU seconds).
    CounterFrac,
    /// Gauge around `base` with `digits` significant digits.
    Gauge { base: f64, digits: i32 },
    /// Bucket `le` index of a histogram group.
    Bucket { le: usize, group: u64 },
}

#[derive(Debug, Clone)]
struct Series {
    /// Global index (stable across churn).
    id: u64,
    metric: usize,
    /// Index of the series within its metric.
    k: u64,
    generation: u32,
    kind: Kind,
    value: f64,
}

#[derive(Debug, Clone, Default)]
struct Batch {
    first: usize,
    len: usize,
    dirty: bool,
    /// Remote write 1.0: per series, its encoded `Label` fields.
    v1_labels: Vec<Vec<u8>>,
    /// Remote write 2.0: the encoded `symbols` fields of the batch.
    v2_symbols: Vec<u8>,
    /// Remote write 2.0: per series, its encoded packed `labels_refs`.
    v2_refs: Vec<Vec<u8>>,
}

/// The series set, its state and encoders.
#[derive(Debug)]
pub struct Workload {
    cfg: WorkloadConfig,
    series: Vec<Series>,
    batches: Vec<Batch>,
    churn_due: f64,
    churn_cursor: usize,
}

/// splitmix64: a fast, well-mixed hash of a counter.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn rand3(seed: u64, a: u64, b: u64) -> u64 {
    mix(seed ^ mix(a ^ mix(b)))
}

fn metric_name(m: usize) -> String {
    if m == 0 {
        "bench_request_duration_seconds_bucket".into()
    } else if m % 2 == 1 {
        format!("bench_counter_{m}_total")
    } else {
        format!("bench_gauge_{m}")
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A length-delimited field.
fn put_bytes(out: &mut Vec<u8>, tag: u8, b: &[u8]) {
    out.push(tag);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Encoded length of a `Sample { value = 1; timestamp = 2 }`.
fn sample_len(ts: i64) -> usize {
    1 + 8 + 1 + varint_len(ts as u64)
}

fn put_sample(out: &mut Vec<u8>, v: f64, ts: i64) {
    out.push(0x12); // field 2 (samples), length-delimited
    put_varint(out, sample_len(ts) as u64);
    out.push(0x09); // value: fixed64
    out.extend_from_slice(&v.to_le_bytes());
    out.push(0x10); // timestamp: varint
    put_varint(out, ts as u64);
}

impl Workload {
    /// Builds the series set (generation 0 of every series).
    pub fn new(cfg: WorkloadConfig) -> Self {
        let metrics = cfg.metrics.max(1);
        let per_metric = cfg.series.div_ceil(metrics).max(1);
        let mut series = Vec::with_capacity(cfg.series);
        for id in 0..cfg.series as u64 {
            let metric = (id as usize) / per_metric;
            let k = id % per_metric as u64;
            let r = rand3(cfg.seed, id, u64::MAX);
            let kind = if metric == 0 {
                Kind::Bucket {
                    le: (k % LE.len() as u64) as usize,
                    group: k / LE.len() as u64,
                }
            } else if metric % 2 == 1 {
                if r % 3 == 0 {
                    Kind::CounterFrac
                } else {
                    Kind::CounterInt {
                        max: [1, 10, 1000, 600_000][(r % 4) as usize],
                    }
                }
            } else {
                Kind::Gauge {
                    base: [1.0, 42.0, 3.2e4, 8.1e9][(r % 4) as usize],
                    digits: 1 + (r % 4) as i32,
                }
            };
            series.push(Series {
                id,
                metric,
                k,
                generation: 0,
                kind,
                value: 0.0,
            });
        }
        let bs = cfg.batch_series.max(1);
        let batches = (0..cfg.series.div_ceil(bs))
            .map(|b| Batch {
                first: b * bs,
                len: bs.min(cfg.series - b * bs),
                dirty: true,
                ..Batch::default()
            })
            .collect();
        let mut w = Self {
            cfg,
            series,
            batches,
            churn_due: 0.0,
            churn_cursor: 0,
        };
        for b in 0..w.batches.len() {
            w.encode_labels(b);
        }
        w
    }

    /// The config it was built with.
    pub fn config(&self) -> &WorkloadConfig {
        &self.cfg
    }

    /// Requests per round (one per batch).
    pub fn batches(&self) -> usize {
        self.batches.len()
    }

    /// Series in batch `b`.
    pub fn batch_len(&self, b: usize) -> usize {
        self.batches.get(b).map_or(0, |x| x.len)
    }

    /// The label set of series `i` (sorted by name).
    pub fn labels(&self, i: usize) -> Vec<(String, String)> {
        let s = &self.series[i];
        let k = match s.kind {
            Kind::Bucket { group, .. } => group,
            _ => s.k,
        };
        let region = REGIONS[(k % 3) as usize];
        let mut l = vec![
            ("__name__".to_string(), metric_name(s.metric)),
            ("cluster".into(), format!("c{}", k % 5)),
            ("container".into(), "app".into()),
            ("instance".into(), format!("host-{}:9100", k / 4)),
            ("job".into(), "bench".into()),
            ("namespace".into(), format!("ns-{}", k % 20)),
            ("pod".into(), format!("pod-{k}-g{}", s.generation)),
            ("region".into(), region.into()),
            ("series".into(), k.to_string()),
            (
                "zone".into(),
                format!("{region}{}", ["a", "b"][(k % 2) as usize]),
            ),
        ];
        if let Kind::Bucket { le, .. } = s.kind {
            l.push(("le".into(), LE[le].into()));
            l.sort();
        }
        l
    }

    fn encode_labels(&mut self, b: usize) {
        let (first, len) = (self.batches[b].first, self.batches[b].len);
        let labels: Vec<Vec<(String, String)>> =
            (first..first + len).map(|i| self.labels(i)).collect();
        let batch = &mut self.batches[b];
        batch.dirty = false;
        match self.cfg.protocol {
            Protocol::V1 => {
                batch.v1_labels = labels
                    .iter()
                    .map(|ls| {
                        let mut out = Vec::new();
                        for (n, v) in ls {
                            let mut l = Vec::with_capacity(n.len() + v.len() + 4);
                            put_bytes(&mut l, 0x0A, n.as_bytes());
                            put_bytes(&mut l, 0x12, v.as_bytes());
                            put_bytes(&mut out, 0x0A, &l);
                        }
                        out
                    })
                    .collect();
            }
            Protocol::V2 => {
                let mut index: std::collections::HashMap<&str, u64> =
                    std::collections::HashMap::new();
                let mut symbols = Vec::new();
                put_bytes(&mut symbols, 0x22, b"");
                index.insert("", 0);
                let mut refs_all = Vec::with_capacity(labels.len());
                for ls in &labels {
                    let mut packed = Vec::new();
                    for (n, v) in ls {
                        for s in [n.as_str(), v.as_str()] {
                            let next = index.len() as u64;
                            let r = *index.entry(s).or_insert_with(|| {
                                put_bytes(&mut symbols, 0x22, s.as_bytes());
                                next
                            });
                            put_varint(&mut packed, r);
                        }
                    }
                    let mut field = Vec::with_capacity(packed.len() + 3);
                    put_bytes(&mut field, 0x0A, &packed);
                    refs_all.push(field);
                }
                batch.v2_symbols = symbols;
                batch.v2_refs = refs_all;
            }
        }
    }

    /// Advances series `i` to tick `tick` and returns its value.
    fn advance(&mut self, i: usize, tick: i64) -> f64 {
        let seed = self.cfg.seed;
        let s = &mut self.series[i];
        let r = rand3(seed, s.id ^ ((s.generation as u64) << 40), tick as u64);
        s.value = match s.kind {
            Kind::CounterInt { max } => {
                // A steady per-series rate with ±10 % noise, as real
                // counters (requests, bytes) grow.
                let rate = (rand3(seed, s.id, u64::MAX - 1) % (max + 1)) as f64;
                let noise = (r % 21) as f64 - 10.0;
                s.value + (rate * (1.0 + noise / 100.0)).round().max(0.0)
            }
            Kind::CounterFrac => {
                // CPU seconds: about 15 s per 15 s tick, in hundredths.
                ((s.value * 100.0).round() + 1400.0 + (r % 200) as f64) / 100.0
            }
            Kind::Gauge { base, digits } => {
                // A random walk in the last significant digit; most ticks
                // leave the value as it was.
                let mag = 10f64.powi(base.abs().log10().floor() as i32 + 1 - digits);
                let v = if s.value == 0.0 {
                    (base / mag).round() * mag
                } else {
                    s.value
                };
                let step = match r % 10 {
                    0 => -mag,
                    1 => mag,
                    _ => 0.0,
                };
                ((v + step) / mag).round() * mag
            }
            Kind::Bucket { le, group } => {
                // Every bucket of a group sees the same observations.
                let obs =
                    (rand3(seed, group ^ ((s.generation as u64) << 40), tick as u64) % 50) as f64;
                s.value + (obs * LE_FRAC[le]).floor()
            }
        };
        s.value
    }

    /// The timestamp of series `i` at tick `tick` (ms), with jitter.
    fn timestamp(&self, i: usize, tick_ms: i64) -> i64 {
        if self.cfg.jitter_ms == 0 {
            return tick_ms;
        }
        let r = rand3(self.cfg.seed ^ 0x6a17, i as u64, tick_ms as u64);
        tick_ms + (r % self.cfg.jitter_ms) as i64
    }

    /// Applies churn for `ticks` elapsed ticks: replaces the due number of
    /// series (round robin) with fresh ones.
    pub fn churn(&mut self, ticks: usize) {
        if self.cfg.churn_per_min <= 0.0 || self.series.is_empty() {
            return;
        }
        self.churn_due +=
            self.cfg.churn_per_min * self.cfg.interval.as_secs_f64() / 60.0 * ticks as f64;
        let bs = self.cfg.batch_series.max(1);
        while self.churn_due >= 1.0 {
            self.churn_due -= 1.0;
            let i = self.churn_cursor % self.series.len();
            self.churn_cursor += 1;
            let s = &mut self.series[i];
            s.generation += 1;
            s.value = 0.0;
            self.batches[i / bs].dirty = true;
        }
    }

    /// Encodes (uncompressed) the request for batch `b` with one sample per
    /// series at each of `ticks_ms`, advancing the series' values. Returns
    /// the body and its sample count.
    pub fn encode(&mut self, b: usize, ticks_ms: &[i64]) -> (Vec<u8>, u64) {
        if self.batches[b].dirty {
            self.encode_labels(b);
        }
        let (first, len) = (self.batches[b].first, self.batches[b].len);
        let interval = self.cfg.interval.as_millis().max(1) as i64;
        let mut out = Vec::with_capacity(len * (64 + 24 * ticks_ms.len()));
        if self.cfg.protocol == Protocol::V2 {
            out.extend_from_slice(&self.batches[b].v2_symbols);
        }
        let mut samples = Vec::with_capacity(ticks_ms.len());
        for i in first..first + len {
            samples.clear();
            for &t in ticks_ms {
                let v = self.advance(i, t / interval);
                samples.push((v, self.timestamp(i, t)));
            }
            let batch = &self.batches[b];
            let head: &[u8] = match self.cfg.protocol {
                Protocol::V1 => &batch.v1_labels[i - first],
                Protocol::V2 => &batch.v2_refs[i - first],
            };
            let body_len = head.len()
                + samples
                    .iter()
                    .map(|&(_, t)| 1 + varint_len(sample_len(t) as u64) + sample_len(t))
                    .sum::<usize>();
            out.push(match self.cfg.protocol {
                Protocol::V1 => 0x0A, // WriteRequest.timeseries = 1
                Protocol::V2 => 0x2A, // Request.timeseries = 5
            });
            put_varint(&mut out, body_len as u64);
            out.extend_from_slice(head);
            for &(v, t) in &samples {
                put_sample(&mut out, v, t);
            }
        }
        (out, (len * ticks_ms.len()) as u64)
    }

    /// [`Self::encode`], snappy-compressed as remote write sends it.
    pub fn encode_compressed(&mut self, b: usize, ticks_ms: &[i64]) -> (Vec<u8>, u64) {
        let (raw, n) = self.encode(b, ticks_ms);
        let body = snap::raw::Encoder::new()
            .compress_vec(&raw)
            .unwrap_or_default();
        (body, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use stratus_proto::{prometheus as pb, write_v2};

    fn cfg(protocol: Protocol) -> WorkloadConfig {
        WorkloadConfig {
            series: 250,
            metrics: 5,
            batch_series: 100,
            jitter_ms: 10,
            protocol,
            ..WorkloadConfig::default()
        }
    }

    #[test]
    fn v1_payload_decodes_with_prost() {
        let mut w = Workload::new(cfg(Protocol::V1));
        assert_eq!(w.batches(), 3);
        let (body, n) = w.encode(2, &[1_000_000, 1_015_000]);
        assert_eq!(n, 100);
        let req = pb::WriteRequest::decode(body.as_slice()).unwrap();
        assert_eq!(req.timeseries.len(), 50);
        let ts = &req.timeseries[0];
        assert_eq!(ts.labels.len(), 10);
        assert!(ts.labels.windows(2).all(|p| p[0].name < p[1].name));
        assert_eq!(ts.samples.len(), 2);
        assert!(ts.samples[0].timestamp >= 1_000_000 && ts.samples[0].timestamp < 1_000_010);
        assert!(
            ts.samples[1].value >= ts.samples[0].value
                || ts.labels[0].value.starts_with("bench_gauge")
        );
    }

    #[test]
    fn v2_payload_decodes_with_prost() {
        let mut w = Workload::new(cfg(Protocol::V2));
        let (body, n) = w.encode(0, &[1_000_000]);
        assert_eq!(n, 100);
        let req = write_v2::Request::decode(body.as_slice()).unwrap();
        assert_eq!(req.symbols[0], "");
        assert_eq!(req.timeseries.len(), 100);
        let names: Vec<&str> = req.timeseries[0]
            .labels_refs
            .chunks(2)
            .map(|p| req.symbols[p[0] as usize].as_str())
            .collect();
        assert_eq!(names[0], "__name__");
        assert!(
            names.contains(&"le"),
            "metric 0 is the histogram: {names:?}"
        );
        assert_eq!(req.timeseries[0].samples.len(), 1);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_counters_monotonic() {
        let mut w = Workload::new(cfg(Protocol::V1));
        let mut last = vec![0.0; 250];
        for tick in 0..20i64 {
            let t = tick * 15_000;
            let mut vals = Vec::new();
            for b in 0..w.batches() {
                let (body, _) = w.encode(b, &[t]);
                let req = pb::WriteRequest::decode(body.as_slice()).unwrap();
                vals.extend(req.timeseries.iter().map(|s| {
                    (
                        s.labels
                            .iter()
                            .find(|l| l.name == "__name__")
                            .unwrap()
                            .value
                            .clone(),
                        s.samples[0].value,
                    )
                }));
            }
            for (i, (name, v)) in vals.iter().enumerate() {
                if !name.starts_with("bench_gauge") {
                    assert!(*v >= last[i], "{name} went down");
                }
                last[i] = *v;
            }
            // Buckets of group 0: le order is the series order.
            let b: Vec<f64> = vals[..12].iter().map(|x| x.1).collect();
            assert!(b.windows(2).all(|p| p[0] <= p[1]), "{b:?}");
        }
    }

    #[test]
    fn churn_replaces_series() {
        let mut w = Workload::new(WorkloadConfig {
            churn_per_min: 40.0, // 10 per 15 s tick
            ..cfg(Protocol::V1)
        });
        let before = w.labels(3);
        w.churn(1);
        assert_ne!(w.labels(3), before);
        assert_eq!(w.labels(10), {
            let w2 = Workload::new(cfg(Protocol::V1));
            w2.labels(10)
        });
        let (body, _) = w.encode(0, &[0]);
        let req = pb::WriteRequest::decode(body.as_slice()).unwrap();
        let pod = &req.timeseries[3]
            .labels
            .iter()
            .find(|l| l.name == "pod")
            .unwrap()
            .value;
        assert!(pod.ends_with("-g1"), "{pod}");
    }
}
