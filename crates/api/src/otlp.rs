//! OTLP/HTTP metrics ingestion: body decoding (protobuf or the OTLP JSON
//! mapping, optionally gzip-compressed) and translation of the OTLP data
//! model into Prometheus series, as Prometheus' OTLP receiver does by
//! default (`UnderscoreEscapingWithSuffixes`).
//!
//! Translation rules:
//! - metric names: split on characters outside `[a-zA-Z0-9:]`, unit
//!   suffixes appended (`s` → `_seconds`, `By` → `_bytes`, `x/y` →
//!   `_x_per_y`, `{...}` annotations dropped), `_total` for monotonic
//!   cumulative sums, `_ratio` for gauges of unit `1`, joined with `_`;
//! - label names: characters outside `[a-zA-Z0-9_]` become `_`, a leading
//!   digit gets `key_`; attributes whose names collide are joined with `;`;
//! - resource `service.namespace`/`service.name` → `job`,
//!   `service.instance.id` → `instance`; the other resource attributes go
//!   to one `target_info` series per resource; scope name/version →
//!   `otel_scope_name`/`otel_scope_version`;
//! - gauges and cumulative sums → float samples; explicit-bucket
//!   histograms → cumulative `_bucket{le}`, `_sum`, `_count`; summaries →
//!   `{quantile}`, `_sum`, `_count`; the no-recorded-value flag → stale
//!   marker; timestamps ns → ms;
//! - exponential histograms become native histograms (scale → schema,
//!   scales above 8 downscaled to 8, below -4 refused);
//! - delta (or unspecified) temporality is rejected point by point and reported
//!   in the response's `partial_success`.
//!
//! Exemplars (trace/span ids as hex labels) and metadata (type, help from
//! the description, unit) are carried in the [`WriteBatch`] like remote
//! write's. A point's `start_time_unix_nano` (sums, histograms' series,
//! summaries' `_sum`/`_count`, exponential histograms) becomes its
//! samples' start timestamp (ms; 0 or later than the point = unknown)
//! and, when older than the point, a created timestamp for zero
//! injection.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::sync::Arc;

use prost::Message;
use stratus_model::{
    BucketSpan, Exemplar, Histogram, Label, Labels, METRIC_NAME, Sample, stale_nan,
};
use stratus_proto::otlp_collector::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use stratus_proto::otlp_metrics as pb;
use stratus_tsdb::{MetricMetadata, MetricType};

use crate::query::format_value;
use crate::remote_write::checked_st;
use crate::remote_write::{BatchExemplar, BatchHistSeries, CreatedTimestamp, WriteBatch};

/// Error messages kept for `partial_success.error_message`.
const MAX_MESSAGES: usize = 8;

/// How an OTLP body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpEncoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (the OTLP JSON mapping).
    Json,
}

/// Why an OTLP body could not be decoded at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtlpDecodeError {
    /// Not valid gzip, or protobuf/JSON decoding failed.
    Malformed(String),
    /// The decompressed body is larger than the limit.
    TooLarge { limit: usize },
}

impl std::fmt::Display for OtlpDecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(m) => f.write_str(m),
            Self::TooLarge { limit } => {
                write!(
                    f,
                    "decompressed body is larger than the limit of {limit} bytes"
                )
            }
        }
    }
}

/// Decompresses a gzip body, refusing more than `max_len` bytes of output.
pub fn decompress_gzip(body: &[u8], max_len: usize) -> Result<Vec<u8>, OtlpDecodeError> {
    let mut out = Vec::new();
    let limit = u64::try_from(max_len).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::MultiGzDecoder::new(body)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| OtlpDecodeError::Malformed(format!("gzip decompression failed: {e}")))?;
    if out.len() > max_len {
        return Err(OtlpDecodeError::TooLarge { limit: max_len });
    }
    Ok(out)
}

/// Decodes an uncompressed export request.
pub fn decode_otlp(
    enc: OtlpEncoding,
    buf: &[u8],
) -> Result<ExportMetricsServiceRequest, OtlpDecodeError> {
    match enc {
        OtlpEncoding::Protobuf => ExportMetricsServiceRequest::decode(buf).map_err(|e| {
            OtlpDecodeError::Malformed(format!(
                "protobuf decoding of ExportMetricsServiceRequest failed: {e}"
            ))
        }),
        OtlpEncoding::Json => serde_json::from_slice::<json::Request>(buf)
            .map(json::Request::into_proto)
            .map_err(|e| {
                OtlpDecodeError::Malformed(format!("JSON decoding of the OTLP request failed: {e}"))
            }),
    }
}

/// Encodes the answer to an export request in the request's encoding.
pub fn encode_response(enc: OtlpEncoding, rejected: u64, message: &str) -> Vec<u8> {
    let partial = (rejected > 0 || !message.is_empty()).then(|| ExportMetricsPartialSuccess {
        rejected_data_points: i64::try_from(rejected).unwrap_or(i64::MAX),
        error_message: message.to_string(),
    });
    match enc {
        OtlpEncoding::Protobuf => ExportMetricsServiceResponse {
            partial_success: partial,
        }
        .encode_to_vec(),
        OtlpEncoding::Json => {
            let v = match partial {
                None => serde_json::json!({}),
                Some(p) => serde_json::json!({"partialSuccess": {
                    "rejectedDataPoints": p.rejected_data_points.to_string(),
                    "errorMessage": p.error_message,
                }}),
            };
            v.to_string().into_bytes()
        }
    }
}

/// A translated export request.
#[derive(Debug, Default)]
pub struct OtlpBatch {
    /// Series, samples, exemplars, metadata and created timestamps.
    pub batch: WriteBatch,
    /// OTLP data points rejected (delta temporality, exponential
    /// histograms, invalid names).
    pub rejected_points: u64,
    /// Why (the first few reasons).
    pub messages: Vec<String>,
}

impl OtlpBatch {
    fn reject(&mut self, points: usize, msg: impl FnOnce() -> String) {
        if points == 0 {
            return;
        }
        self.rejected_points += points as u64;
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(msg());
        }
    }
}

/// Collects samples before they are grouped into series.
#[derive(Debug, Default)]
struct Collector {
    /// Points with their start timestamps (0 = unknown).
    points: Vec<(Labels, Sample, i64)>,
    /// Native histograms (from exponential histograms): labels,
    /// timestamp, histogram, start timestamp (0 = unknown).
    hists: Vec<(Labels, i64, Histogram, i64)>,
    exemplars: Vec<BatchExemplar>,
    created: Vec<CreatedTimestamp>,
}

/// Converts a nanosecond timestamp to milliseconds.
fn ns_to_ms(ns: u64) -> i64 {
    i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (bytes attribute values).
fn base64(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// An attribute value as a string (as pdata's `AsString`).
fn value_string(v: Option<&pb::AnyValue>) -> String {
    use pb::any_value::Value;
    match v.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => format_value(*d),
        Some(Value::BytesValue(b)) => base64(b),
        Some(Value::ArrayValue(_) | Value::KvlistValue(_)) => {
            serde_json::to_string(&any_json(v)).unwrap_or_default()
        }
    }
}

fn any_json(v: Option<&pb::AnyValue>) -> serde_json::Value {
    use pb::any_value::Value;
    use serde_json::Value as J;
    match v.and_then(|v| v.value.as_ref()) {
        None => J::Null,
        Some(Value::StringValue(s)) => J::String(s.clone()),
        Some(Value::BoolValue(b)) => J::Bool(*b),
        Some(Value::IntValue(i)) => J::from(*i),
        Some(Value::DoubleValue(d)) => J::from(*d),
        Some(Value::BytesValue(b)) => J::String(base64(b)),
        Some(Value::ArrayValue(a)) => {
            J::Array(a.values.iter().map(|x| any_json(Some(x))).collect())
        }
        Some(Value::KvlistValue(kv)) => J::Object(
            kv.values
                .iter()
                .map(|x| (x.key.clone(), any_json(x.value.as_ref())))
                .collect(),
        ),
    }
}

/// A label name from an attribute key: characters outside
/// `[a-zA-Z0-9_]` become `_`, a leading digit gets `key_`.
pub(crate) fn sanitize_label_name(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert_str(0, "key_");
    }
    s
}

/// The Prometheus name of a unit (`None` for annotations and ratio `1`).
fn main_unit(u: &str) -> Option<String> {
    let u = u.trim();
    if u.is_empty() || u.contains(['{', '}']) {
        return None;
    }
    let m = match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    };
    clean_unit(m)
}

/// The Prometheus name of a "per" unit (`s` → `second`).
fn per_unit(u: &str) -> Option<String> {
    let u = u.trim();
    if u.is_empty() || u.contains(['{', '}']) {
        return None;
    }
    let m = match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    };
    clean_unit(m)
}

/// Invalid characters → `_`, runs of `_` collapsed, trimmed.
fn clean_unit(u: &str) -> Option<String> {
    let mut s = String::with_capacity(u.len());
    for c in u.chars() {
        let c = if c.is_ascii_alphanumeric() || c == ':' {
            c
        } else {
            '_'
        };
        if c == '_' && s.ends_with('_') {
            continue;
        }
        s.push(c);
    }
    let s = s.trim_matches('_');
    (!s.is_empty()).then(|| s.to_string())
}

/// How a metric's name is suffixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameKind {
    Gauge,
    Counter,
    Other,
}

fn build_name(name: &str, unit: &str, kind: NameKind) -> String {
    let mut tokens: Vec<String> = name
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    if tokens.is_empty() {
        return String::new();
    }
    let (main, per) = match unit.split_once('/') {
        Some((m, p)) => (main_unit(m), per_unit(p)),
        None => (main_unit(unit), None),
    };
    if let Some(m) = main
        && !tokens.contains(&m)
    {
        tokens.push(m);
    }
    if let Some(p) = per
        && !tokens.contains(&p)
    {
        tokens.push("per".into());
        tokens.push(p);
    }
    if kind == NameKind::Counter {
        tokens.retain(|t| t != "total");
        tokens.push("total".into());
    }
    if unit == "1" && kind == NameKind::Gauge {
        tokens.retain(|t| t != "ratio");
        tokens.push("ratio".into());
    }
    let mut s = tokens.join("_");
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// Labels shared by every point of a resource and scope.
#[derive(Debug, Clone, Default)]
struct BaseLabels(BTreeMap<String, String>);

/// Adds attributes as labels, sorted by original key; values of keys that
/// sanitize to the same name are joined with `;`.
fn add_attributes(m: &mut BTreeMap<String, String>, attrs: &[pb::KeyValue]) {
    let mut sorted: Vec<&pb::KeyValue> = attrs.iter().filter(|kv| !kv.key.is_empty()).collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut seen: BTreeMap<String, ()> = BTreeMap::new();
    for kv in sorted {
        let name = sanitize_label_name(&kv.key);
        let v = value_string(kv.value.as_ref());
        if seen.insert(name.clone(), ()).is_some() {
            if let Some(cur) = m.get_mut(&name) {
                cur.push(';');
                cur.push_str(&v);
            }
        } else {
            m.insert(name, v);
        }
    }
}

fn to_labels(m: BTreeMap<String, String>) -> Labels {
    Labels::from_sorted_unchecked(
        m.into_iter()
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .map(|(k, v)| Label::new(Arc::<str>::from(k), Arc::<str>::from(v)))
            .collect(),
    )
}

/// Labels of one point: attributes, then the base (scope, job, instance),
/// then the metric name and `extra`.
fn point_labels(
    base: &BaseLabels,
    attrs: &[pb::KeyValue],
    name: &str,
    extra: Option<(&str, &str)>,
) -> Labels {
    let mut m = BTreeMap::new();
    add_attributes(&mut m, attrs);
    for (k, v) in &base.0 {
        m.insert(k.clone(), v.clone());
    }
    m.insert(METRIC_NAME.to_string(), name.to_string());
    if let Some((k, v)) = extra {
        m.insert(k.to_string(), v.to_string());
    }
    to_labels(m)
}

fn exemplar_of(e: &pb::Exemplar) -> Exemplar {
    let mut m = BTreeMap::new();
    add_attributes(&mut m, &e.filtered_attributes);
    if !e.trace_id.is_empty() {
        m.insert("trace_id".to_string(), hex(&e.trace_id));
    }
    if !e.span_id.is_empty() {
        m.insert("span_id".to_string(), hex(&e.span_id));
    }
    let value = match e.value {
        Some(pb::exemplar::Value::AsDouble(d)) => d,
        Some(pb::exemplar::Value::AsInt(i)) => i as f64,
        None => 0.0,
    };
    Exemplar {
        labels: to_labels(m),
        value,
        t: ns_to_ms(e.time_unix_nano),
    }
}

const NO_RECORDED_VALUE: u32 = 1;

impl Collector {
    /// Adds a point; `ct` is its start time (ms), kept as the sample's
    /// start timestamp and, when older than the point, as a created
    /// timestamp for zero injection.
    fn push(&mut self, labels: Labels, t: i64, v: f64, ct: Option<i64>) {
        if let Some(ct) = ct
            && ct != 0
            && ct < t
        {
            self.created.push(CreatedTimestamp {
                series: labels.clone(),
                ct,
            });
        }
        let st = checked_st(ct.unwrap_or(0), t);
        self.points.push((labels, Sample::new(t, v), st));
    }
}

/// Translates a decoded export request into a write batch.
pub fn translate(req: &ExportMetricsServiceRequest) -> OtlpBatch {
    let mut out = OtlpBatch::default();
    let mut col = Collector::default();
    let mut meta: BTreeMap<String, MetricMetadata> = BTreeMap::new();
    for rm in &req.resource_metrics {
        let attrs: &[pb::KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes);
        let get = |k: &str| {
            attrs
                .iter()
                .find(|kv| kv.key == k)
                .map(|kv| value_string(kv.value.as_ref()))
                .filter(|v| !v.is_empty())
        };
        let job = match (get("service.namespace"), get("service.name")) {
            (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
            (None, Some(n)) => Some(n),
            _ => None,
        };
        let instance = get("service.instance.id");
        let mut newest = i64::MIN;
        for sm in &rm.scope_metrics {
            let mut base = BaseLabels::default();
            if let Some(scope) = &sm.scope {
                if !scope.name.is_empty() {
                    base.0.insert("otel_scope_name".into(), scope.name.clone());
                }
                if !scope.version.is_empty() {
                    base.0
                        .insert("otel_scope_version".into(), scope.version.clone());
                }
            }
            if let Some(j) = &job {
                base.0.insert("job".into(), j.clone());
            }
            if let Some(i) = &instance {
                base.0.insert("instance".into(), i.clone());
            }
            for m in &sm.metrics {
                if let Some(t) = translate_metric(m, &base, &mut col, &mut out, &mut meta) {
                    newest = newest.max(t);
                }
            }
        }
        let identifying = ["service.name", "service.namespace", "service.instance.id"];
        let others: Vec<pb::KeyValue> = attrs
            .iter()
            .filter(|kv| !identifying.contains(&kv.key.as_str()))
            .cloned()
            .collect();
        if !others.is_empty() && newest != i64::MIN {
            let mut m = BTreeMap::new();
            add_attributes(&mut m, &others);
            if let Some(j) = &job {
                m.insert("job".into(), j.clone());
            }
            if let Some(i) = &instance {
                m.insert("instance".into(), i.clone());
            }
            m.insert(METRIC_NAME.into(), "target_info".into());
            col.push(to_labels(m), newest, 1.0, None);
            meta.insert(
                "target_info".into(),
                MetricMetadata {
                    kind: MetricType::Gauge,
                    help: "Target metadata".into(),
                    unit: String::new(),
                },
            );
        }
    }
    finish(&mut out, col, meta);
    out
}

/// Groups collected points into series (sorted by labels, then time).
fn finish(out: &mut OtlpBatch, col: Collector, meta: BTreeMap<String, MetricMetadata>) {
    let mut points = col.points;
    points.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.t.cmp(&b.1.t)));
    let b = &mut out.batch;
    b.samples.reserve(points.len());
    let with_sts = points.iter().any(|p| p.2 != 0);
    if with_sts {
        b.sample_sts.reserve(points.len());
    }
    let mut prev: Option<Labels> = None;
    for (labels, s, st) in points {
        match b.series.last_mut() {
            Some(last) if prev.as_ref() == Some(&labels) => {
                b.samples.push(s);
                if with_sts {
                    b.sample_sts.push(st);
                }
                last.samples.end = b.samples.len();
            }
            _ => {
                let start = b.samples.len();
                b.samples.push(s);
                if b.push_series(&labels, start..start + 1).is_none() {
                    // Over 4 GiB of label text: cannot happen within the
                    // body limits; the point is dropped.
                    b.samples.pop();
                    continue;
                }
                if with_sts {
                    b.sample_sts.push(st);
                }
                prev = Some(labels);
            }
        }
    }
    let mut hists = col.hists;
    hists.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    for (labels, t, h, st) in hists {
        match b.hist_series.last_mut() {
            Some(last) if last.labels == labels => {
                last.histograms.push((t, h));
                last.histogram_sts.push(st);
            }
            _ => b.hist_series.push(BatchHistSeries {
                labels,
                histograms: vec![(t, h)],
                histogram_sts: vec![st],
                ..Default::default()
            }),
        }
    }
    for h in &mut b.hist_series {
        if h.histogram_sts.iter().all(|&st| st == 0) {
            h.histogram_sts = Vec::new();
        }
    }
    b.exemplars = col.exemplars;
    b.created = col.created;
    b.metadata = meta.into_iter().collect();
}

/// Largest schema of a native histogram; finer OTLP scales are
/// downscaled to it.
const MAX_SCHEMA: i32 = 8;

/// Converts one OTLP bucket range into native histogram spans and bucket
/// deltas, merging `2^scale_down` adjacent buckets. OTLP bucket `i`
/// covers `(base^i, base^(i+1)]`, a native bucket `j` covers
/// `(base^(j-1), base^j]`, so indexes shift by one. Gaps of up to two
/// empty buckets are filled with zeros inside one span (as Prometheus'
/// receiver does); larger gaps start a new span.
fn otlp_buckets(offset: i32, counts: &[u64], scale_down: u32) -> (Vec<BucketSpan>, Vec<i64>) {
    let mut merged: Vec<(i64, u64)> = Vec::new();
    for (i, &c) in counts.iter().enumerate() {
        let idx = ((i64::from(offset) + i as i64) >> scale_down) + 1;
        match merged.last_mut() {
            Some(last) if last.0 == idx => last.1 = last.1.saturating_add(c),
            _ => merged.push((idx, c)),
        }
    }
    let mut spans: Vec<BucketSpan> = Vec::new();
    let mut abs: Vec<u64> = Vec::new();
    let mut prev: Option<i64> = None;
    for (idx, c) in merged {
        match prev {
            None => {
                spans.push(BucketSpan {
                    offset: idx.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
                    length: 1,
                });
            }
            Some(p) => {
                let gap = idx - p - 1;
                if gap <= 2 {
                    if let Some(sp) = spans.last_mut() {
                        sp.length += gap as u32 + 1;
                    }
                    abs.extend(std::iter::repeat_n(0, gap as usize));
                } else {
                    spans.push(BucketSpan {
                        offset: gap.min(i64::from(i32::MAX)) as i32,
                        length: 1,
                    });
                }
            }
        }
        abs.push(c);
        prev = Some(idx);
    }
    let mut deltas = Vec::with_capacity(abs.len());
    let mut last = 0i64;
    for c in abs {
        let c = c as i64;
        deltas.push(c.wrapping_sub(last));
        last = c;
    }
    (spans, deltas)
}

/// Converts an OTLP exponential histogram point into a native histogram
/// (Prometheus' receiver: scale → schema, scales above 8 downscaled to 8,
/// below -4 refused; zero bucket; positive/negative offset + counts →
/// spans and deltas).
fn exponential_to_native(p: &pb::ExponentialHistogramDataPoint) -> Result<Histogram, String> {
    if p.scale < stratus_model::EXPONENTIAL_SCHEMA_MIN {
        return Err(format!(
            "scale {} is below the smallest native histogram schema -4",
            p.scale
        ));
    }
    let scale_down = (p.scale - MAX_SCHEMA).clamp(0, 63) as u32;
    let side = |b: &Option<pb::exponential_histogram_data_point::Buckets>| match b {
        Some(b) => otlp_buckets(b.offset, &b.bucket_counts, scale_down),
        None => (Vec::new(), Vec::new()),
    };
    let (positive_spans, positive_deltas) = side(&p.positive);
    let (negative_spans, negative_deltas) = side(&p.negative);
    let h = Histogram {
        reset_hint: 0,
        schema: p.scale.min(MAX_SCHEMA),
        zero_threshold: p.zero_threshold,
        zero_count: p.zero_count,
        count: p.count,
        sum: if p.flags & NO_RECORDED_VALUE != 0 {
            stale_nan()
        } else {
            p.sum.unwrap_or(0.0)
        },
        positive_spans,
        positive_deltas,
        negative_spans,
        negative_deltas,
        custom_values: Vec::new(),
    };
    h.validate()?;
    Ok(h)
}

/// Translates one metric; returns its newest point's timestamp.
fn translate_metric(
    m: &pb::Metric,
    base: &BaseLabels,
    col: &mut Collector,
    out: &mut OtlpBatch,
    meta: &mut BTreeMap<String, MetricMetadata>,
) -> Option<i64> {
    use pb::metric::Data;
    let Some(data) = &m.data else {
        return None;
    };
    let points = match data {
        Data::Gauge(g) => g.data_points.len(),
        Data::Sum(s) => s.data_points.len(),
        Data::Histogram(h) => h.data_points.len(),
        Data::ExponentialHistogram(h) => h.data_points.len(),
        Data::Summary(s) => s.data_points.len(),
    };
    let cumulative = |t: i32| t == pb::AggregationTemporality::Cumulative as i32;
    let (kind, mtype) = match data {
        Data::Gauge(_) => (NameKind::Gauge, MetricType::Gauge),
        Data::Sum(s) if !cumulative(s.aggregation_temporality) => {
            out.reject(points, || {
                format!(
                    "invalid temporality and type combination for metric {:?}: only cumulative sums are supported, {points} point(s) rejected",
                    m.name
                )
            });
            return None;
        }
        Data::Sum(s) if s.is_monotonic => (NameKind::Counter, MetricType::Counter),
        Data::Sum(_) => (NameKind::Other, MetricType::Gauge),
        Data::Histogram(h) if !cumulative(h.aggregation_temporality) => {
            out.reject(points, || {
                format!(
                    "invalid temporality and type combination for metric {:?}: only cumulative histograms are supported, {points} point(s) rejected",
                    m.name
                )
            });
            return None;
        }
        Data::Histogram(_) => (NameKind::Other, MetricType::Histogram),
        Data::ExponentialHistogram(h) if !cumulative(h.aggregation_temporality) => {
            out.reject(points, || {
                format!(
                    "invalid temporality and type combination for metric {:?}: only cumulative exponential histograms are supported, {points} point(s) rejected",
                    m.name
                )
            });
            return None;
        }
        Data::ExponentialHistogram(_) => (NameKind::Other, MetricType::Histogram),
        Data::Summary(_) => (NameKind::Other, MetricType::Summary),
    };
    let name = build_name(&m.name, &m.unit, kind);
    if name.is_empty() {
        out.reject(points, || {
            format!(
                "invalid metric name {:?}: no valid characters, {points} point(s) rejected",
                m.name
            )
        });
        return None;
    }
    if points > 0 {
        let unit = match m.unit.split_once('/') {
            Some((a, b)) => match (main_unit(a), per_unit(b)) {
                (Some(a), Some(b)) => format!("{a}_per_{b}"),
                (None, Some(b)) => format!("per_{b}"),
                (a, None) => a.unwrap_or_default(),
            },
            None => main_unit(&m.unit).unwrap_or_default(),
        };
        meta.insert(
            name.clone(),
            MetricMetadata {
                kind: mtype,
                help: m.description.clone(),
                unit,
            },
        );
    }
    let mut newest = None::<i64>;
    let mut see = |t: i64| newest = Some(newest.map_or(t, |n: i64| n.max(t)));
    let ct_of = |ns: u64| (ns != 0).then(|| ns_to_ms(ns));
    match data {
        Data::Gauge(g) => {
            for p in &g.data_points {
                number_point(p, base, &name, None, col);
                see(ns_to_ms(p.time_unix_nano));
            }
        }
        Data::Sum(s) => {
            for p in &s.data_points {
                number_point(p, base, &name, ct_of(p.start_time_unix_nano), col);
                see(ns_to_ms(p.time_unix_nano));
            }
        }
        Data::Histogram(h) => {
            for p in &h.data_points {
                let t = ns_to_ms(p.time_unix_nano);
                see(t);
                let stale = p.flags & NO_RECORDED_VALUE != 0;
                let val = |v: f64| if stale { stale_nan() } else { v };
                let ct = ct_of(p.start_time_unix_nano);
                let bucket = format!("{name}_bucket");
                let mut cum = 0u64;
                let mut bounds: Vec<(f64, Labels)> = Vec::new();
                for (b, c) in p.explicit_bounds.iter().zip(&p.bucket_counts) {
                    cum = cum.saturating_add(*c);
                    let l = point_labels(
                        base,
                        &p.attributes,
                        &bucket,
                        Some(("le", &stratus_model::format_float(*b))),
                    );
                    col.push(l.clone(), t, val(cum as f64), ct);
                    bounds.push((*b, l));
                }
                let inf = point_labels(base, &p.attributes, &bucket, Some(("le", "+Inf")));
                col.push(inf.clone(), t, val(p.count as f64), ct);
                if let Some(sum) = p.sum {
                    let l = point_labels(base, &p.attributes, &format!("{name}_sum"), None);
                    col.push(l, t, val(sum), ct);
                }
                let l = point_labels(base, &p.attributes, &format!("{name}_count"), None);
                col.push(l, t, val(p.count as f64), ct);
                for e in &p.exemplars {
                    let ex = exemplar_of(e);
                    let series = bounds
                        .iter()
                        .find(|(b, _)| ex.value <= *b)
                        .map_or(&inf, |(_, l)| l)
                        .clone();
                    col.exemplars.push(BatchExemplar {
                        series,
                        exemplar: ex,
                    });
                }
            }
        }
        Data::Summary(s) => {
            for p in &s.data_points {
                let t = ns_to_ms(p.time_unix_nano);
                see(t);
                let stale = p.flags & NO_RECORDED_VALUE != 0;
                let val = |v: f64| if stale { stale_nan() } else { v };
                let ct = ct_of(p.start_time_unix_nano);
                for q in &p.quantile_values {
                    let l = point_labels(
                        base,
                        &p.attributes,
                        &name,
                        Some(("quantile", &stratus_model::format_float(q.quantile))),
                    );
                    col.push(l, t, val(q.value), None);
                }
                let l = point_labels(base, &p.attributes, &format!("{name}_sum"), None);
                col.push(l, t, val(p.sum), ct);
                let l = point_labels(base, &p.attributes, &format!("{name}_count"), None);
                col.push(l, t, val(p.count as f64), ct);
            }
        }
        Data::ExponentialHistogram(eh) => {
            for p in &eh.data_points {
                let t = ns_to_ms(p.time_unix_nano);
                match exponential_to_native(p) {
                    Ok(h) => {
                        see(t);
                        let l = point_labels(base, &p.attributes, &name, None);
                        let st = checked_st(ct_of(p.start_time_unix_nano).unwrap_or(0), t);
                        col.hists.push((l, t, h, st));
                    }
                    Err(why) => out.reject(1, || {
                        format!(
                            "exponential histogram point of {:?} at {t} rejected: {why}",
                            m.name
                        )
                    }),
                }
            }
        }
    }
    newest
}

fn number_point(
    p: &pb::NumberDataPoint,
    base: &BaseLabels,
    name: &str,
    ct: Option<i64>,
    col: &mut Collector,
) {
    let t = ns_to_ms(p.time_unix_nano);
    let v = if p.flags & NO_RECORDED_VALUE != 0 {
        stale_nan()
    } else {
        match p.value {
            Some(pb::number_data_point::Value::AsDouble(d)) => d,
            Some(pb::number_data_point::Value::AsInt(i)) => i as f64,
            None => 0.0,
        }
    };
    let labels = point_labels(base, &p.attributes, name, None);
    for e in &p.exemplars {
        col.exemplars.push(BatchExemplar {
            series: labels.clone(),
            exemplar: exemplar_of(e),
        });
    }
    col.push(labels, t, v, ct);
}

/// Fuzz entry point: decodes `data` as protobuf and as JSON (raw and
/// gunzipped), translates what decodes and checks the batch invariants.
/// Never panics.
pub fn fuzz_otlp(data: &[u8]) {
    let run = |buf: &[u8]| {
        for enc in [OtlpEncoding::Protobuf, OtlpEncoding::Json] {
            if let Ok(req) = decode_otlp(enc, buf) {
                let b = translate(&req);
                check(&b);
                let _ = encode_response(enc, b.rejected_points, &b.messages.join("; "));
            }
        }
    };
    run(data);
    if let Ok(raw) = decompress_gzip(data, 1 << 20) {
        run(&raw);
    }
}

fn check(b: &OtlpBatch) {
    let mut end = 0;
    for s in &b.batch.series {
        assert_eq!(s.samples.start, end);
        assert!(s.samples.end > s.samples.start);
        end = s.samples.end;
        let labels = b.batch.labels_of(s).to_labels();
        assert!(Labels::is_sorted_unique(labels.as_slice()));
        assert!(
            labels
                .iter()
                .all(|l| !l.name.is_empty() && !l.value.is_empty())
        );
        let name = labels.metric_name().unwrap_or("");
        assert!(!name.is_empty());
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        );
        assert!(!name.starts_with(|c: char| c.is_ascii_digit()));
    }
    assert_eq!(end, b.batch.samples.len());
    assert!(b.messages.len() as u64 <= b.rejected_points);
}

/// The OTLP JSON mapping: lowerCamelCase field names, 64-bit integers as
/// strings or numbers, enums as numbers or names, trace and span ids as
/// hex, other bytes as base64. Converted into the protobuf types.
mod json {
    use super::pb;
    use serde::Deserialize;
    use serde::de::{self, Deserializer, Visitor};

    /// A 64-bit unsigned integer given as a number or a string.
    #[derive(Debug, Default, Clone, Copy)]
    pub(super) struct U64(pub(super) u64);
    /// A 64-bit signed integer given as a number or a string.
    #[derive(Debug, Default, Clone, Copy)]
    pub(super) struct I64(pub(super) i64);
    /// A double given as a number or a string (`NaN`, `Infinity`, ...).
    #[derive(Debug, Default, Clone, Copy)]
    pub(super) struct F64(pub(super) f64);
    /// An enum given as a number or its name.
    #[derive(Debug, Default, Clone)]
    pub(super) struct Enum(pub(super) EnumVal);
    #[derive(Debug, Default, Clone)]
    pub(super) enum EnumVal {
        #[default]
        Zero,
        Num(i64),
        Name(String),
    }

    struct NumVisitor;
    #[derive(Debug)]
    enum Num {
        U(u64),
        I(i64),
        F(f64),
        S(String),
    }
    impl Visitor<'_> for NumVisitor {
        type Value = Num;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a number or a string")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
            Ok(Num::U(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
            Ok(Num::I(v))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
            Ok(Num::F(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Num, E> {
            Ok(Num::S(v.to_string()))
        }
    }

    fn exact_int(f: f64) -> Option<i128> {
        (f.is_finite() && f.fract() == 0.0 && f.abs() < 1.9e19).then_some(f as i128)
    }

    impl<'de> Deserialize<'de> for U64 {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let n = match d.deserialize_any(NumVisitor)? {
                Num::U(v) => Some(v),
                Num::I(v) => u64::try_from(v).ok(),
                Num::F(v) => exact_int(v).and_then(|v| u64::try_from(v).ok()),
                Num::S(s) => s.trim().parse().ok(),
            };
            n.map(U64)
                .ok_or_else(|| de::Error::custom("invalid unsigned 64-bit integer"))
        }
    }

    impl<'de> Deserialize<'de> for I64 {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let n = match d.deserialize_any(NumVisitor)? {
                Num::U(v) => i64::try_from(v).ok(),
                Num::I(v) => Some(v),
                Num::F(v) => exact_int(v).and_then(|v| i64::try_from(v).ok()),
                Num::S(s) => s.trim().parse().ok(),
            };
            n.map(I64)
                .ok_or_else(|| de::Error::custom("invalid 64-bit integer"))
        }
    }

    impl<'de> Deserialize<'de> for F64 {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let n = match d.deserialize_any(NumVisitor)? {
                Num::U(v) => Some(v as f64),
                Num::I(v) => Some(v as f64),
                Num::F(v) => Some(v),
                Num::S(s) => match s.as_str() {
                    "NaN" => Some(f64::NAN),
                    "Infinity" => Some(f64::INFINITY),
                    "-Infinity" => Some(f64::NEG_INFINITY),
                    other => other.trim().parse().ok(),
                },
            };
            n.map(F64)
                .ok_or_else(|| de::Error::custom("invalid double"))
        }
    }

    impl<'de> Deserialize<'de> for Enum {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            Ok(Enum(match d.deserialize_any(NumVisitor)? {
                Num::U(v) => EnumVal::Num(i64::try_from(v).unwrap_or(-1)),
                Num::I(v) => EnumVal::Num(v),
                Num::F(v) => EnumVal::Num(
                    exact_int(v)
                        .and_then(|v| i64::try_from(v).ok())
                        .unwrap_or(-1),
                ),
                Num::S(s) => EnumVal::Name(s),
            }))
        }
    }

    impl Enum {
        fn temporality(&self) -> i32 {
            match &self.0 {
                EnumVal::Zero => 0,
                EnumVal::Num(n) => i32::try_from(*n).unwrap_or(-1),
                EnumVal::Name(s) => {
                    pb::AggregationTemporality::from_str_name(s).map_or(-1, |t| t as i32)
                }
            }
        }
    }

    fn unhex(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        if b.len() % 2 != 0 {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(b.len() / 2);
        for pair in b.chunks_exact(2) {
            let d = |c: u8| (c as char).to_digit(16);
            match (d(pair[0]), d(pair[1])) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => return Vec::new(),
            }
        }
        out
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    pub(super) struct Request {
        resource_metrics: Vec<ResourceMetrics>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct ResourceMetrics {
        resource: Option<Resource>,
        scope_metrics: Vec<ScopeMetrics>,
        schema_url: String,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct Resource {
        attributes: Vec<KeyValue>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct ScopeMetrics {
        scope: Option<Scope>,
        metrics: Vec<Metric>,
        schema_url: String,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct Scope {
        name: String,
        version: String,
        attributes: Vec<KeyValue>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct KeyValue {
        key: String,
        value: Option<AnyValue>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct AnyValue {
        string_value: Option<String>,
        bool_value: Option<bool>,
        int_value: Option<I64>,
        double_value: Option<F64>,
        array_value: Option<ArrayValue>,
        kvlist_value: Option<KvList>,
        /// Base64, kept as the string value.
        bytes_value: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct ArrayValue {
        values: Vec<AnyValue>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct KvList {
        values: Vec<KeyValue>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct Metric {
        name: String,
        description: String,
        unit: String,
        gauge: Option<Gauge>,
        sum: Option<Sum>,
        histogram: Option<Histogram>,
        exponential_histogram: Option<ExpHistogram>,
        summary: Option<Summary>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct Gauge {
        data_points: Vec<NumberDataPoint>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct Sum {
        data_points: Vec<NumberDataPoint>,
        aggregation_temporality: Enum,
        is_monotonic: bool,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct Histogram {
        data_points: Vec<HistogramDataPoint>,
        aggregation_temporality: Enum,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct ExpHistogram {
        data_points: Vec<ExpHistogramDataPoint>,
        aggregation_temporality: Enum,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct Summary {
        data_points: Vec<SummaryDataPoint>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct NumberDataPoint {
        attributes: Vec<KeyValue>,
        start_time_unix_nano: U64,
        time_unix_nano: U64,
        as_double: Option<F64>,
        as_int: Option<I64>,
        exemplars: Vec<Exemplar>,
        flags: u32,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct HistogramDataPoint {
        attributes: Vec<KeyValue>,
        start_time_unix_nano: U64,
        time_unix_nano: U64,
        count: U64,
        sum: Option<F64>,
        bucket_counts: Vec<U64>,
        explicit_bounds: Vec<F64>,
        exemplars: Vec<Exemplar>,
        flags: u32,
        min: Option<F64>,
        max: Option<F64>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct ExpHistogramDataPoint {
        attributes: Vec<KeyValue>,
        start_time_unix_nano: U64,
        time_unix_nano: U64,
        count: U64,
        sum: Option<F64>,
        scale: i32,
        zero_count: U64,
        flags: u32,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct SummaryDataPoint {
        attributes: Vec<KeyValue>,
        start_time_unix_nano: U64,
        time_unix_nano: U64,
        count: U64,
        sum: F64,
        quantile_values: Vec<ValueAtQuantile>,
        flags: u32,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct ValueAtQuantile {
        quantile: F64,
        value: F64,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct Exemplar {
        filtered_attributes: Vec<KeyValue>,
        time_unix_nano: U64,
        as_double: Option<F64>,
        as_int: Option<I64>,
        span_id: String,
        trace_id: String,
    }

    fn kvs(v: Vec<KeyValue>) -> Vec<pb::KeyValue> {
        v.into_iter()
            .map(|kv| pb::KeyValue {
                key: kv.key,
                value: kv.value.map(any),
            })
            .collect()
    }

    fn any(v: AnyValue) -> pb::AnyValue {
        use pb::any_value::Value as V;
        let value = if let Some(s) = v.string_value {
            Some(V::StringValue(s))
        } else if let Some(b) = v.bool_value {
            Some(V::BoolValue(b))
        } else if let Some(i) = v.int_value {
            Some(V::IntValue(i.0))
        } else if let Some(d) = v.double_value {
            Some(V::DoubleValue(d.0))
        } else if let Some(a) = v.array_value {
            Some(V::ArrayValue(pb::ArrayValue {
                values: a.values.into_iter().map(any).collect(),
            }))
        } else if let Some(kv) = v.kvlist_value {
            Some(V::KvlistValue(pb::KeyValueList {
                values: kvs(kv.values),
            }))
        } else {
            v.bytes_value.map(V::StringValue)
        };
        pb::AnyValue { value }
    }

    fn exemplars(v: Vec<Exemplar>) -> Vec<pb::Exemplar> {
        v.into_iter()
            .map(|e| pb::Exemplar {
                filtered_attributes: kvs(e.filtered_attributes),
                time_unix_nano: e.time_unix_nano.0,
                value: match (e.as_double, e.as_int) {
                    (Some(d), _) => Some(pb::exemplar::Value::AsDouble(d.0)),
                    (None, Some(i)) => Some(pb::exemplar::Value::AsInt(i.0)),
                    (None, None) => None,
                },
                span_id: unhex(&e.span_id),
                trace_id: unhex(&e.trace_id),
            })
            .collect()
    }

    fn number_points(v: Vec<NumberDataPoint>) -> Vec<pb::NumberDataPoint> {
        v.into_iter()
            .map(|p| pb::NumberDataPoint {
                attributes: kvs(p.attributes),
                start_time_unix_nano: p.start_time_unix_nano.0,
                time_unix_nano: p.time_unix_nano.0,
                value: match (p.as_double, p.as_int) {
                    (Some(d), _) => Some(pb::number_data_point::Value::AsDouble(d.0)),
                    (None, Some(i)) => Some(pb::number_data_point::Value::AsInt(i.0)),
                    (None, None) => None,
                },
                exemplars: exemplars(p.exemplars),
                flags: p.flags,
            })
            .collect()
    }

    fn metric(m: Metric) -> pb::Metric {
        use pb::metric::Data;
        let data = if let Some(g) = m.gauge {
            Some(Data::Gauge(pb::Gauge {
                data_points: number_points(g.data_points),
            }))
        } else if let Some(s) = m.sum {
            Some(Data::Sum(pb::Sum {
                aggregation_temporality: s.aggregation_temporality.temporality(),
                is_monotonic: s.is_monotonic,
                data_points: number_points(s.data_points),
            }))
        } else if let Some(h) = m.histogram {
            Some(Data::Histogram(pb::Histogram {
                aggregation_temporality: h.aggregation_temporality.temporality(),
                data_points: h
                    .data_points
                    .into_iter()
                    .map(|p| pb::HistogramDataPoint {
                        attributes: kvs(p.attributes),
                        start_time_unix_nano: p.start_time_unix_nano.0,
                        time_unix_nano: p.time_unix_nano.0,
                        count: p.count.0,
                        sum: p.sum.map(|s| s.0),
                        bucket_counts: p.bucket_counts.into_iter().map(|c| c.0).collect(),
                        explicit_bounds: p.explicit_bounds.into_iter().map(|b| b.0).collect(),
                        exemplars: exemplars(p.exemplars),
                        flags: p.flags,
                        min: p.min.map(|v| v.0),
                        max: p.max.map(|v| v.0),
                    })
                    .collect(),
            }))
        } else if let Some(h) = m.exponential_histogram {
            Some(Data::ExponentialHistogram(pb::ExponentialHistogram {
                aggregation_temporality: h.aggregation_temporality.temporality(),
                data_points: h
                    .data_points
                    .into_iter()
                    .map(|p| pb::ExponentialHistogramDataPoint {
                        attributes: kvs(p.attributes),
                        start_time_unix_nano: p.start_time_unix_nano.0,
                        time_unix_nano: p.time_unix_nano.0,
                        count: p.count.0,
                        sum: p.sum.map(|s| s.0),
                        scale: p.scale,
                        zero_count: p.zero_count.0,
                        flags: p.flags,
                        ..Default::default()
                    })
                    .collect(),
            }))
        } else {
            m.summary.map(|s| {
                Data::Summary(pb::Summary {
                    data_points: s
                        .data_points
                        .into_iter()
                        .map(|p| pb::SummaryDataPoint {
                            attributes: kvs(p.attributes),
                            start_time_unix_nano: p.start_time_unix_nano.0,
                            time_unix_nano: p.time_unix_nano.0,
                            count: p.count.0,
                            sum: p.sum.0,
                            quantile_values: p
                                .quantile_values
                                .into_iter()
                                .map(|q| pb::summary_data_point::ValueAtQuantile {
                                    quantile: q.quantile.0,
                                    value: q.value.0,
                                })
                                .collect(),
                            flags: p.flags,
                        })
                        .collect(),
                })
            })
        };
        pb::Metric {
            name: m.name,
            description: m.description,
            unit: m.unit,
            data,
            metadata: Vec::new(),
        }
    }

    impl Request {
        pub(super) fn into_proto(self) -> super::ExportMetricsServiceRequest {
            super::ExportMetricsServiceRequest {
                resource_metrics: self
                    .resource_metrics
                    .into_iter()
                    .map(|rm| pb::ResourceMetrics {
                        resource: rm.resource.map(|r| pb::Resource {
                            attributes: kvs(r.attributes),
                            dropped_attributes_count: 0,
                        }),
                        scope_metrics: rm
                            .scope_metrics
                            .into_iter()
                            .map(|sm| pb::ScopeMetrics {
                                scope: sm.scope.map(|s| pb::InstrumentationScope {
                                    name: s.name,
                                    version: s.version,
                                    attributes: kvs(s.attributes),
                                    dropped_attributes_count: 0,
                                }),
                                metrics: sm.metrics.into_iter().map(metric).collect(),
                                schema_url: sm.schema_url,
                            })
                            .collect(),
                        schema_url: rm.schema_url,
                    })
                    .collect(),
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn otlp_buckets_to_spans() {
        let sp = |o: i32, l: u32| BucketSpan {
            offset: o,
            length: l,
        };
        // Shift by one; a gap of two filled with zeros; a gap of three
        // starts a new span.
        let (s, d) = otlp_buckets(-2, &[1, 0, 0, 2, 0, 0, 0, 0, 5], 0);
        assert_eq!(s, vec![sp(-1, 9)]);
        assert_eq!(d, vec![1, -1, 0, 2, -2, 0, 0, 0, 5]);
        let (s, d) = otlp_buckets(0, &[4], 0);
        assert_eq!((s, d), (vec![sp(1, 1)], vec![4]));
        let (s, _) = otlp_buckets(0, &[1, 0, 0, 0, 0, 0, 0], 0);
        assert_eq!(s, vec![sp(1, 7)]);
        // Downscale by 1: pairs merge ((i >> 1) + 1).
        let (s, d) = otlp_buckets(-1, &[1, 2, 3, 4], 1);
        assert_eq!(s, vec![sp(0, 3)]);
        assert_eq!(d, vec![1, 4, -1]);
        let (s, d) = otlp_buckets(0, &[], 0);
        assert!(s.is_empty() && d.is_empty());
        let p = pb::ExponentialHistogramDataPoint {
            scale: i32::MAX,
            count: 3,
            positive: Some(pb::exponential_histogram_data_point::Buckets {
                offset: i32::MIN,
                bucket_counts: vec![1, 2],
            }),
            ..Default::default()
        };
        let h = exponential_to_native(&p).unwrap();
        assert_eq!(h.schema, 8);
        assert_eq!(h.positive_deltas.iter().sum::<i64>(), 3);
        let bad = pb::ExponentialHistogramDataPoint {
            count: 0,
            zero_count: 5,
            ..Default::default()
        };
        assert!(exponential_to_native(&bad).is_err());
    }
    use super::*;

    #[test]
    fn start_times_become_start_timestamps() {
        use pb::metric::Data;
        let ms = 1_000_000u64;
        let point = |start: u64, t: u64, v: f64| pb::NumberDataPoint {
            start_time_unix_nano: start * ms,
            time_unix_nano: t * ms,
            value: Some(pb::number_data_point::Value::AsDouble(v)),
            ..Default::default()
        };
        let cumulative = pb::AggregationTemporality::Cumulative as i32;
        let metric = |name: &str, data| pb::Metric {
            name: name.into(),
            data: Some(data),
            ..Default::default()
        };
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![pb::ResourceMetrics {
                scope_metrics: vec![pb::ScopeMetrics {
                    metrics: vec![
                        metric(
                            "reqs",
                            Data::Sum(pb::Sum {
                                data_points: vec![
                                    point(1000, 2000, 1.0),
                                    point(1000, 3000, 2.0),
                                    // A start after the point is unknown.
                                    point(5000, 4000, 3.0),
                                ],
                                aggregation_temporality: cumulative,
                                is_monotonic: true,
                            }),
                        ),
                        metric(
                            "temp",
                            Data::Gauge(pb::Gauge {
                                data_points: vec![point(1000, 2000, 20.0)],
                            }),
                        ),
                        metric(
                            "lat",
                            Data::ExponentialHistogram(pb::ExponentialHistogram {
                                data_points: vec![pb::ExponentialHistogramDataPoint {
                                    start_time_unix_nano: 1500 * ms,
                                    time_unix_nano: 2000 * ms,
                                    count: 1,
                                    zero_count: 1,
                                    ..Default::default()
                                }],
                                aggregation_temporality: cumulative,
                            }),
                        ),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let b = translate(&req).batch;
        let by_name = |n: &str| {
            b.series
                .iter()
                .find(|s| b.labels_of(s).metric_name() == Some(n))
                .unwrap()
        };
        assert_eq!(b.sts_of(by_name("reqs_total")), &[1000, 1000, 0]);
        // Gauges have no start time: zeros in the parallel list.
        assert_eq!(b.sts_of(by_name("temp")), &[0]);
        assert_eq!(b.hist_series[0].histogram_sts, vec![1500]);
        // Zero injection still sees the first point's start.
        assert!(b.created.iter().any(|c| c.ct == 1000));

        // Without start times nothing is allocated.
        let mut plain = req.clone();
        plain.resource_metrics[0].scope_metrics[0]
            .metrics
            .truncate(2);
        if let Some(Data::Sum(s)) = &mut plain.resource_metrics[0].scope_metrics[0].metrics[0].data
        {
            for p in &mut s.data_points {
                p.start_time_unix_nano = 0;
            }
        }
        let b = translate(&plain).batch;
        assert!(!b.has_start_timestamps());
    }

    #[test]
    fn names_like_prometheus() {
        let n = |name, unit, k| build_name(name, unit, k);
        assert_eq!(
            n("http.server.duration", "s", NameKind::Other),
            "http_server_duration_seconds"
        );
        assert_eq!(
            n("system.memory.usage", "By", NameKind::Other),
            "system_memory_usage_bytes"
        );
        assert_eq!(n("requests", "1", NameKind::Gauge), "requests_ratio");
        assert_eq!(n("requests", "1", NameKind::Counter), "requests_total");
        assert_eq!(
            n("http.requests", "{request}", NameKind::Counter),
            "http_requests_total"
        );
        assert_eq!(n("total.requests", "", NameKind::Counter), "requests_total");
        assert_eq!(
            n("throughput", "By/s", NameKind::Gauge),
            "throughput_bytes_per_second"
        );
        assert_eq!(n("rate", "{req}/s", NameKind::Gauge), "rate_per_second");
        assert_eq!(n("x", "m/y", NameKind::Gauge), "x_meters_per_year");
        assert_eq!(
            n("duration_seconds", "s", NameKind::Other),
            "duration_seconds"
        );
        assert_eq!(n("2xx", "", NameKind::Other), "_2xx");
        assert_eq!(n("a__b..c", "", NameKind::Other), "a_b_c");
        assert_eq!(n("ns:metric", "", NameKind::Other), "ns:metric");
        assert_eq!(n("...", "s", NameKind::Other), "");
        assert_eq!(n("x", "foo bar", NameKind::Other), "x_foo_bar");
    }

    #[test]
    fn label_names_like_prometheus() {
        assert_eq!(sanitize_label_name("http.method"), "http_method");
        assert_eq!(sanitize_label_name("0abc"), "key_0abc");
        assert_eq!(sanitize_label_name("a-b/c"), "a_b_c");
        assert_eq!(sanitize_label_name("ünï"), "_n_");
    }

    #[test]
    fn formats() {
        assert_eq!(stratus_model::format_float(0.1), "0.1");
        assert_eq!(stratus_model::format_float(1e21), "1000000000000000000000");
        assert_eq!(stratus_model::format_float(f64::INFINITY), "+Inf");
        assert_eq!(stratus_model::format_float(5.0), "5");
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(base64(b"hi!"), "aGkh");
        assert_eq!(hex(&[0, 0xab]), "00ab");
    }

    #[test]
    fn json_numbers_and_enums() {
        let body = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"c","sum":{
            "aggregationTemporality":"AGGREGATION_TEMPORALITY_CUMULATIVE","isMonotonic":true,
            "dataPoints":[{"timeUnixNano":"1000000000","asInt":"7"},{"timeUnixNano":2000000000,"asDouble":"NaN"}]}}]}]}]}"#;
        let req = decode_otlp(OtlpEncoding::Json, body.as_bytes()).unwrap();
        let b = translate(&req);
        assert_eq!(b.rejected_points, 0, "{:?}", b.messages);
        assert_eq!(b.batch.series.len(), 1);
        assert_eq!(
            b.batch.labels_of(&b.batch.series[0]).metric_name(),
            Some("c_total")
        );
        assert_eq!(b.batch.samples[0], Sample::new(1000, 7.0));
        assert!(b.batch.samples[1].v.is_nan());
        assert!(decode_otlp(OtlpEncoding::Json, b"{\"resourceMetrics\":7}").is_err());
    }

    #[test]
    fn gzip_limits() {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&[1u8; 1000]).unwrap();
        let gz = e.finish().unwrap();
        assert_eq!(decompress_gzip(&gz, 1000).unwrap().len(), 1000);
        assert!(matches!(
            decompress_gzip(&gz, 999),
            Err(OtlpDecodeError::TooLarge { .. })
        ));
        assert!(decompress_gzip(b"not gzip", 1000).is_err());
    }

    fn seed() -> Vec<u8> {
        let kv = |k: &str, v: &str| pb::KeyValue {
            key: k.into(),
            value: Some(pb::AnyValue {
                value: Some(pb::any_value::Value::StringValue(v.into())),
            }),
        };
        ExportMetricsServiceRequest {
            resource_metrics: vec![pb::ResourceMetrics {
                resource: Some(pb::Resource {
                    attributes: vec![kv("service.name", "svc"), kv("host.name", "h")],
                    dropped_attributes_count: 0,
                }),
                scope_metrics: vec![pb::ScopeMetrics {
                    scope: None,
                    metrics: vec![
                        pb::Metric {
                            name: "h".into(),
                            unit: "s".into(),
                            data: Some(pb::metric::Data::Histogram(pb::Histogram {
                                aggregation_temporality: 2,
                                data_points: vec![pb::HistogramDataPoint {
                                    attributes: vec![kv("a", "b")],
                                    time_unix_nano: 1_000_000_000,
                                    count: 3,
                                    sum: Some(1.5),
                                    bucket_counts: vec![1, 2],
                                    explicit_bounds: vec![0.5],
                                    ..Default::default()
                                }],
                            })),
                            ..Default::default()
                        },
                        pb::Metric {
                            name: "g".into(),
                            data: Some(pb::metric::Data::Gauge(pb::Gauge {
                                data_points: vec![pb::NumberDataPoint {
                                    time_unix_nano: 2_000_000_000,
                                    value: Some(pb::number_data_point::Value::AsInt(4)),
                                    ..Default::default()
                                }],
                            })),
                            ..Default::default()
                        },
                    ],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn histogram_and_target_info() {
        let req = decode_otlp(OtlpEncoding::Protobuf, &seed()).unwrap();
        let b = translate(&req);
        let names: Vec<String> = b
            .batch
            .series
            .iter()
            .map(|s| b.batch.labels_of(s).to_string())
            .collect();
        assert!(
            names
                .iter()
                .any(|n| n.contains("h_seconds_bucket") && n.contains("le=\"0.5\"")),
            "{names:?}"
        );
        assert!(
            names
                .iter()
                .any(|n| n.contains("target_info") && n.contains("host_name=\"h\"")),
            "{names:?}"
        );
        assert_eq!(b.batch.series.len(), 6, "{names:?}");
    }

    #[test]
    fn fuzz_mutated_bodies() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x07e1);
        let seed = seed();
        let json_seed = br#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"x"}}]},"scopeMetrics":[{"metrics":[{"name":"g","unit":"By","gauge":{"dataPoints":[{"timeUnixNano":"5","asDouble":1.5}]}}]}]}]}"#.to_vec();
        for i in 0..3000 {
            let mut d = match i % 3 {
                0 => seed.clone(),
                1 => json_seed.clone(),
                _ => (0..rng.random_range(0..200))
                    .map(|_| rng.random())
                    .collect(),
            };
            if !d.is_empty() {
                for _ in 0..rng.random_range(1..4) {
                    let p = rng.random_range(0..d.len());
                    d[p] = rng.random();
                }
            }
            fuzz_otlp(&d);
        }
    }
}
