//! Remote write 1.0 and 2.0: request decoding and validation.
//!
//! A body goes through three steps, each with a limit checked before any
//! large allocation:
//!
//! 1. [`decompress_snappy`]: snappy *block* format; the decompressed length
//!    declared in the block header is checked against the limit first.
//! 2. protobuf decoding with the generated `stratus_proto` types
//!    ([`decode_v1`] for `prometheus.WriteRequest`, [`decode_v2`] for
//!    `io.prometheus.write.v2.Request`);
//! 3. validation of every series into a [`WriteBatch`]: label sets must be
//!    sorted by name with unique, non-empty names and a non-empty metric
//!    name (names may be any UTF-8, as Prometheus 3 allows; strings that
//!    are not UTF-8 fail protobuf decoding, so the whole request is
//!    refused). Labels with empty values are dropped (an empty value means
//!    "absent"). An invalid series is reported and skipped; the rest of
//!    the request is still written, as upstream does.
//!
//! Samples of all series go into one flat vector (no allocation per
//! sample); float values are copied bit for bit, so stale markers and any
//! other NaN payload survive. Native histograms (integer and float counts,
//! exponential and custom-bucket schemas) are converted to the model types
//! and validated (spans, bucket counts, negative counts, schema); an
//! invalid one is reported naming its series and refused. Exemplars of valid series (label
//! sets sorted, names unique and non-empty) and metric metadata (1.0: the
//! `metadata` list; 2.0: per series, keyed by the metric name) are carried
//! in the batch for the tenant's in-memory stores. For 2.0, the
//! `start_timestamp` of samples and histograms (when the counter began)
//! is kept per sample ([`WriteBatch::sample_sts`],
//! [`BatchHistSeries::histogram_sts`]; 0 = unknown, a start after its
//! sample's timestamp is dropped as unknown), and the first sample's,
//! when older than the sample, per series ([`WriteBatch::created`]) so
//! the server can inject a zero sample there. Per-sample start
//! timestamps cost nothing when no sample has one: the lists stay empty.

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;

use prost::Message;
use snafu::{ResultExt, Snafu};
use stratus_model::{
    BucketSpan, Exemplar, FloatHistogram, Histogram, Label, Labels, METRIC_NAME, Sample,
};
use stratus_proto::{prometheus, write_v2};
use stratus_tsdb::{MetricMetadata, MetricType};

/// Default limit of a compressed request body (64 MiB).
pub const DEFAULT_MAX_COMPRESSED_BYTES: usize = 64 << 20;
/// Default limit of a decompressed request body (512 MiB).
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 512 << 20;

/// Validation messages kept per request (the rest are only counted).
const MAX_MESSAGES: usize = 32;

/// Why a remote-write body could not be decoded at all.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum DecodeError {
    #[snafu(display("snappy decompression failed: {source}"))]
    Snappy { source: snap::Error },

    #[snafu(display(
        "decompressed body would be {len} bytes, more than the limit of {limit} bytes"
    ))]
    TooLarge { len: usize, limit: usize },

    #[snafu(display("protobuf decoding of {message} failed: {source}"))]
    Protobuf {
        message: &'static str,
        source: prost::DecodeError,
    },

    #[snafu(display("remote write 2.0: symbols[0] must be the empty string, got {first:?}"))]
    FirstSymbol { first: String },
}

/// Which remote-write protocol a body uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RwVersion {
    /// `prometheus.WriteRequest`.
    V1,
    /// `io.prometheus.write.v2.Request`.
    V2,
}

/// One valid series of a request: its labels' place in the batch's
/// label arena (read them with [`WriteBatch::labels_of`]) and its
/// samples' place in [`WriteBatch::samples`].
#[derive(Debug, Clone)]
pub struct BatchSeries {
    labels: Range<u32>,
    pub samples: Range<usize>,
}

/// Where one label pair's strings are in a batch's label text. The value
/// follows the name directly when the pair was copied on its own; when a
/// request's whole label region was copied at once
/// ([`WriteBatch::push_region`]), the protobuf key and length bytes lie
/// between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PairSpan {
    name: u32,
    value: u32,
    name_len: u32,
    value_len: u32,
}

impl PairSpan {
    fn name<'a>(&self, text: &'a str) -> &'a str {
        let s = self.name as usize;
        text.get(s..s + self.name_len as usize).unwrap_or("")
    }

    fn value<'a>(&self, text: &'a str) -> &'a str {
        let s = self.value as usize;
        text.get(s..s + self.value_len as usize).unwrap_or("")
    }
}

/// The labels of a batch's float series, borrowed from the batch (valid:
/// sorted, unique non-empty names, no empty values, a metric name).
/// Appended as they are: the storage engine builds an owned [`Labels`]
/// only for a new series ([`stratus_tsdb::SeriesLabels`]).
#[derive(Clone, Copy)]
pub struct BatchLabels<'a> {
    text: &'a str,
    pairs: &'a [PairSpan],
}

impl<'a> BatchLabels<'a> {
    /// The (name, value) pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + Clone + use<'a> {
        let text = self.text;
        self.pairs
            .iter()
            .map(move |p| (p.name(text), p.value(text)))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The metric name.
    pub fn metric_name(&self) -> Option<&'a str> {
        self.get(METRIC_NAME)
    }

    /// The labels as an owned [`Labels`].
    pub fn to_labels(&self) -> Labels {
        Labels::from_sorted_unchecked(
            self.iter()
                .map(|(n, v)| Label::new(Arc::<str>::from(n), Arc::<str>::from(v)))
                .collect(),
        )
    }

    /// [`Labels::stable_hash`] of these labels, without building them.
    pub fn stable_hash(&self) -> u64 {
        stratus_model::hash_pairs(self.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }
}

impl stratus_tsdb::SeriesLabels for BatchLabels<'_> {
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.iter()
    }

    fn len(&self) -> usize {
        self.pairs.len()
    }
}

impl PartialEq for BatchLabels<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl PartialEq<Labels> for BatchLabels<'_> {
    fn eq(&self, other: &Labels) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter().map(|l| (&*l.name, &*l.value)))
    }
}

impl std::fmt::Display for BatchLabels<'_> {
    /// Prometheus' notation, as [`Labels`] shows it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.to_labels(), f)
    }
}

impl std::fmt::Debug for BatchLabels<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// An exemplar of a valid series.
#[derive(Debug, Clone)]
pub struct BatchExemplar {
    /// Labels of the series it belongs to.
    pub series: Labels,
    pub exemplar: Exemplar,
}

/// A created timestamp of a series (remote write 2.0 `start_timestamp`,
/// OTLP `start_time_unix_nano`), older than the series' first sample in
/// the request.
#[derive(Debug, Clone)]
pub struct CreatedTimestamp {
    pub series: Labels,
    /// The created timestamp (ms).
    pub ct: i64,
}

/// Native histogram samples of one valid series.
#[derive(Debug, Clone, Default)]
pub struct BatchHistSeries {
    pub labels: Labels,
    /// Integer-count histograms, in request order.
    pub histograms: Vec<(i64, Histogram)>,
    /// Float-count histograms, in request order.
    pub float_histograms: Vec<(i64, FloatHistogram)>,
    /// Start timestamps of `histograms` (ms, 0 = unknown): empty when
    /// none has one, else parallel to it.
    pub histogram_sts: Vec<i64>,
    /// Start timestamps of `float_histograms`, as `histogram_sts`.
    pub float_histogram_sts: Vec<i64>,
}

/// A converted native histogram sample.
#[derive(Debug, Clone)]
pub(crate) enum HistIn {
    Int(Histogram),
    Float(FloatHistogram),
}

/// Converts a remote-write histogram message (1.0 and 2.0 have the same
/// fields) into `(timestamp, histogram)`, or the reason it is invalid.
macro_rules! convert_histogram {
    ($h:expr, $m:ident) => {{
        let h = $h;
        let spans = |v: &[$m::BucketSpan]| -> Vec<BucketSpan> {
            v.iter()
                .map(|s| BucketSpan {
                    offset: s.offset,
                    length: s.length,
                })
                .collect()
        };
        let hint = u8::try_from(h.reset_hint)
            .ok()
            .filter(|x| *x <= 3)
            .unwrap_or(0);
        let out = match (&h.count, &h.zero_count) {
            (
                Some($m::histogram::Count::CountFloat(c)),
                Some($m::histogram::ZeroCount::ZeroCountFloat(z)),
            ) => {
                if !h.positive_deltas.is_empty() || !h.negative_deltas.is_empty() {
                    Err("float histogram with integer bucket deltas".to_string())
                } else {
                    let fh = FloatHistogram {
                        reset_hint: hint,
                        schema: h.schema,
                        zero_threshold: h.zero_threshold,
                        zero_count: *z,
                        count: *c,
                        sum: h.sum,
                        positive_spans: spans(&h.positive_spans),
                        positive_buckets: h.positive_counts.clone(),
                        negative_spans: spans(&h.negative_spans),
                        negative_buckets: h.negative_counts.clone(),
                        custom_values: h.custom_values.clone(),
                    };
                    fh.validate().map(|()| HistIn::Float(fh))
                }
            }
            (
                None | Some($m::histogram::Count::CountInt(_)),
                None | Some($m::histogram::ZeroCount::ZeroCountInt(_)),
            ) => {
                if !h.positive_counts.is_empty() || !h.negative_counts.is_empty() {
                    Err("integer histogram with float bucket counts".to_string())
                } else {
                    let c = match h.count {
                        Some($m::histogram::Count::CountInt(c)) => c,
                        _ => 0,
                    };
                    let z = match h.zero_count {
                        Some($m::histogram::ZeroCount::ZeroCountInt(z)) => z,
                        _ => 0,
                    };
                    let ih = Histogram {
                        reset_hint: hint,
                        schema: h.schema,
                        zero_threshold: h.zero_threshold,
                        zero_count: z,
                        count: c,
                        sum: h.sum,
                        positive_spans: spans(&h.positive_spans),
                        positive_deltas: h.positive_deltas.clone(),
                        negative_spans: spans(&h.negative_spans),
                        negative_deltas: h.negative_deltas.clone(),
                        custom_values: h.custom_values.clone(),
                    };
                    ih.validate().map(|()| HistIn::Int(ih))
                }
            }
            _ => Err("histogram mixes integer and float counts".to_string()),
        };
        (h.timestamp, out)
    }};
}

/// A decoded and validated remote-write request.
#[derive(Debug, Default)]
pub struct WriteBatch {
    /// Valid series with samples, in request order.
    pub series: Vec<BatchSeries>,
    /// The samples of every valid series, back to back.
    pub samples: Vec<Sample>,
    /// Validation problems (the first 32), each naming its
    /// series.
    pub errors: Vec<String>,
    /// Number of validation problems (all of them).
    pub num_errors: u64,
    /// Float samples refused because their series was invalid.
    pub invalid_samples: u64,
    /// Native histogram samples refused (invalid histogram or series).
    pub histograms_refused: u64,
    /// Valid series with native histogram samples, in request order.
    pub hist_series: Vec<BatchHistSeries>,
    /// Exemplars of valid series.
    pub exemplars: Vec<BatchExemplar>,
    /// Exemplars refused (invalid series or invalid exemplar labels).
    pub exemplars_refused: u64,
    /// Metric family metadata, in request order.
    pub metadata: Vec<(String, MetricMetadata)>,
    /// Created timestamps of series, for zero-sample injection.
    pub created: Vec<CreatedTimestamp>,
    /// Label arena of `series`.
    labels: LabelArena,
    /// Start timestamps of `samples` (ms, 0 = unknown; never after the
    /// sample's timestamp): empty when no sample of the batch has one,
    /// else parallel to `samples`.
    pub sample_sts: Vec<i64>,
}

/// The labels of a batch's float series: names and values back to back
/// in `text`, one [`PairSpan`] per label in `pairs` (each series a range
/// of it).
///
/// A request of a few thousand series fills a few hundred KiB, so an
/// arena is taken from a small shared pool when a batch is created and
/// given back, emptied, when the batch is dropped: allocating and freeing
/// that much per request leaves the allocator holding the freed pages on
/// every thread that decoded or appended a request (hundreds of MiB of
/// resident memory under steady ingestion). The pool keeps at most
/// [`ARENA_POOL_MAX`] arenas of at most [`ARENA_KEEP_BYTES`] each; others
/// are freed as usual.
struct LabelArena {
    text: String,
    pairs: Vec<PairSpan>,
}

/// The pairs' strings, not the text's layout: arenas with the same labels
/// copied pair by pair or region by region print alike.
impl std::fmt::Debug for LabelArena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.pairs
                    .iter()
                    .map(|p| (p.name(&self.text), p.value(&self.text))),
            )
            .finish()
    }
}

/// Most arenas kept for reuse.
const ARENA_POOL_MAX: usize = 8;
/// Largest arena (text plus pair bytes of capacity) kept for reuse.
const ARENA_KEEP_BYTES: usize = 2 << 20;

/// Emptied arenas of dropped batches.
static ARENA_POOL: std::sync::Mutex<Vec<LabelArena>> = std::sync::Mutex::new(Vec::new());

impl LabelArena {
    /// Capacity in bytes.
    fn capacity_bytes(&self) -> usize {
        self.text
            .capacity()
            .saturating_add(self.pairs.capacity() * std::mem::size_of::<PairSpan>())
    }
}

impl Default for LabelArena {
    fn default() -> Self {
        let pooled = ARENA_POOL.lock().ok().and_then(|mut p| p.pop());
        pooled.unwrap_or(Self {
            text: String::new(),
            pairs: Vec::new(),
        })
    }
}

impl Drop for LabelArena {
    fn drop(&mut self) {
        if self.pairs.capacity() == 0 || self.capacity_bytes() > ARENA_KEEP_BYTES {
            return;
        }
        let Ok(mut pool) = ARENA_POOL.lock() else {
            return;
        };
        if pool.len() < ARENA_POOL_MAX {
            let mut text = std::mem::take(&mut self.text);
            let mut pairs = std::mem::take(&mut self.pairs);
            text.clear();
            pairs.clear();
            pool.push(Self { text, pairs });
        }
    }
}

impl WriteBatch {
    /// The labels of a series of this batch.
    pub fn labels_of(&self, s: &BatchSeries) -> BatchLabels<'_> {
        self.labels_at(&s.labels)
    }

    /// The labels at `pairs` of the label arena.
    fn labels_at(&self, pairs: &Range<u32>) -> BatchLabels<'_> {
        BatchLabels {
            text: &self.labels.text,
            pairs: self
                .labels
                .pairs
                .get(pairs.start as usize..pairs.end as usize)
                .unwrap_or(&[]),
        }
    }

    /// Adds a float series with already valid `labels` (sorted, unique,
    /// no empty values, a metric name) and its samples' range in
    /// [`WriteBatch::samples`]. `None` when the batch's label text would
    /// pass 4 GiB.
    pub fn push_series(&mut self, labels: &Labels, samples: Range<usize>) -> Option<()> {
        let labels = self.push_labels(labels.iter().map(|l| (&*l.name, &*l.value)))?;
        self.series.push(BatchSeries { labels, samples });
        Some(())
    }

    /// Copies label pairs into the arena; their range of the pair spans.
    fn push_labels<'a>(
        &mut self,
        pairs: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Option<Range<u32>> {
        let first = u32::try_from(self.labels.pairs.len()).ok()?;
        for (n, v) in pairs {
            self.push_pair(n, v)?;
        }
        Some(first..u32::try_from(self.labels.pairs.len()).ok()?)
    }

    fn push_pair(&mut self, n: &str, v: &str) -> Option<()> {
        let start = u32::try_from(self.labels.text.len()).ok()?;
        let name_len = u32::try_from(n.len()).ok()?;
        let value_len = u32::try_from(v.len()).ok()?;
        let value = start.checked_add(name_len)?;
        value.checked_add(value_len)?;
        self.labels.text.push_str(n);
        self.labels.text.push_str(v);
        self.labels.pairs.push(PairSpan {
            name: start,
            value,
            name_len,
            value_len,
        });
        Some(())
    }

    /// Copies `region` (text holding several label strings) into the
    /// arena in one piece; its offset there. `None` when the arena would
    /// pass 4 GiB.
    fn push_region(&mut self, region: &str) -> Option<u32> {
        let start = u32::try_from(self.labels.text.len()).ok()?;
        start.checked_add(u32::try_from(region.len()).ok()?)?;
        self.labels.text.push_str(region);
        Some(start)
    }

    /// Adds a pair whose strings lie inside a region copied at `base` by
    /// [`WriteBatch::push_region`]; `None` when one of them does not.
    fn push_pair_in(&mut self, region: &str, base: u32, n: &str, v: &str) -> Option<()> {
        let offset = |s: &str| -> Option<u32> {
            let at = (s.as_ptr() as usize).checked_sub(region.as_ptr() as usize)?;
            (at.checked_add(s.len())? <= region.len()).then_some(())?;
            base.checked_add(u32::try_from(at).ok()?)
        };
        let span = PairSpan {
            name: offset(n)?,
            value: offset(v)?,
            name_len: u32::try_from(n.len()).ok()?,
            value_len: u32::try_from(v.len()).ok()?,
        };
        self.labels.pairs.push(span);
        Some(())
    }

    /// Keeps the float series for which `keep` returns true.
    pub fn retain_series(&mut self, mut keep: impl FnMut(BatchLabels<'_>, &BatchSeries) -> bool) {
        let (text, pairs) = (&self.labels.text, &self.labels.pairs);
        self.series.retain(|s| {
            let l = BatchLabels {
                text,
                pairs: pairs
                    .get(s.labels.start as usize..s.labels.end as usize)
                    .unwrap_or(&[]),
            };
            keep(l, s)
        });
    }

    /// Removes label `name` from every float series that has it.
    pub fn remove_series_label(&mut self, name: &str) {
        let has = |b: &Self, s: &BatchSeries| b.labels_of(s).get(name).is_some();
        if !self.series.iter().any(|s| has(self, s)) {
            return;
        }
        let old = std::mem::take(&mut self.labels.pairs);
        let text = &self.labels.text;
        let mut pairs = Vec::with_capacity(old.len());
        for s in &mut self.series {
            let first = pairs.len() as u32;
            for p in old
                .get(s.labels.start as usize..s.labels.end as usize)
                .unwrap_or(&[])
            {
                if p.name(text) != name {
                    pairs.push(*p);
                }
            }
            s.labels = first..pairs.len() as u32;
        }
        self.labels.pairs = pairs;
    }

    /// Samples of a valid series.
    pub fn samples_of(&self, s: &BatchSeries) -> &[Sample] {
        self.samples.get(s.samples.clone()).unwrap_or(&[])
    }

    /// Start timestamps of a valid series' samples (empty: none known).
    pub fn sts_of(&self, s: &BatchSeries) -> &[i64] {
        self.sample_sts.get(s.samples.clone()).unwrap_or(&[])
    }

    /// Whether any sample or histogram of the batch has a start timestamp.
    pub fn has_start_timestamps(&self) -> bool {
        !self.sample_sts.is_empty()
            || self
                .hist_series
                .iter()
                .any(|h| !h.histogram_sts.is_empty() || !h.float_histogram_sts.is_empty())
    }

    /// Forgets every per-sample start timestamp (start timestamp storage
    /// off); the created timestamps for zero injection stay.
    pub fn clear_start_timestamps(&mut self) {
        self.sample_sts = Vec::new();
        for h in &mut self.hist_series {
            h.histogram_sts = Vec::new();
            h.float_histogram_sts = Vec::new();
        }
    }

    /// Float samples received (valid or not).
    pub fn samples_received(&self) -> u64 {
        self.samples.len() as u64 + self.invalid_samples
    }

    /// Valid native histogram samples.
    pub fn histograms_valid(&self) -> u64 {
        self.hist_series
            .iter()
            .map(|s| (s.histograms.len() + s.float_histograms.len()) as u64)
            .sum()
    }

    fn error(&mut self, msg: impl FnOnce() -> String) {
        self.num_errors += 1;
        if self.errors.len() < MAX_MESSAGES {
            self.errors.push(msg());
        }
    }
}

/// Decompresses a snappy block-format body, refusing bodies that would
/// decompress to more than `max_len` bytes before allocating.
pub fn decompress_snappy(body: &[u8], max_len: usize) -> Result<Vec<u8>, DecodeError> {
    let len = snap::raw::decompress_len(body).context(SnappySnafu)?;
    if len > max_len {
        return TooLargeSnafu {
            len,
            limit: max_len,
        }
        .fail();
    }
    let mut out = vec![0u8; len];
    let n = snap::raw::Decoder::new()
        .decompress(body, &mut out)
        .context(SnappySnafu)?;
    out.truncate(n);
    Ok(out)
}

/// Decodes and validates an uncompressed remote write 1.0 body.
pub fn decode_v1(buf: &[u8]) -> Result<WriteBatch, DecodeError> {
    // The borrowing decoder takes the common shape; anything else (and
    // every error) goes through prost.
    if let Some(b) = crate::rw_fast::decode_v1_fast(buf) {
        return Ok(b);
    }
    decode_v1_prost(buf)
}

/// [`decode_v1`] through the generated prost types only.
fn decode_v1_prost(buf: &[u8]) -> Result<WriteBatch, DecodeError> {
    let req = prometheus::WriteRequest::decode(buf).context(ProtobufSnafu {
        message: "prometheus.WriteRequest",
    })?;
    Ok(batch_from_v1(&req.timeseries, &req.metadata))
}

/// Validates remote write 1.0 series and metadata (already decoded, e.g.
/// from an ingester's gRPC push) into a [`WriteBatch`], as [`decode_v1`].
pub fn batch_from_v1(
    timeseries: &[prometheus::TimeSeries],
    metadata: &[prometheus::MetricMetadata],
) -> WriteBatch {
    let mut batch = WriteBatch {
        samples: Vec::with_capacity(timeseries.iter().map(|t| t.samples.len()).sum()),
        ..Default::default()
    };
    for ts in timeseries {
        add_v1_series(&mut batch, ts, &[], &[]);
    }
    add_v1_metadata(&mut batch, metadata);
    batch
}

/// Validates remote write 1.0 series given as encoded
/// `prometheus.TimeSeries` messages (an ingester's gRPC push, whose
/// series stay in the received bytes) and metadata into a [`WriteBatch`],
/// as [`batch_from_v1`] does with decoded ones. A series that is not a
/// valid message is a decoding error.
pub fn batch_from_v1_encoded<'a>(
    timeseries: impl IntoIterator<Item = &'a [u8]> + Clone,
    metadata: &[prometheus::MetricMetadata],
) -> Result<WriteBatch, DecodeError> {
    if let Some(b) = crate::rw_fast::batch_from_encoded(timeseries.clone(), metadata) {
        return Ok(b);
    }
    let mut decoded = Vec::new();
    for s in timeseries {
        decoded.push(prometheus::TimeSeries::decode(s).context(ProtobufSnafu {
            message: "prometheus.TimeSeries",
        })?);
    }
    Ok(batch_from_v1(&decoded, metadata))
}

/// Validates one decoded remote write 1.0 series into `batch`, with the
/// start timestamps of its samples and histograms (`sts`, `hist_sts`:
/// parallel to them, or empty; see [`add_series_with`]).
pub(crate) fn add_v1_series(
    batch: &mut WriteBatch,
    ts: &prometheus::TimeSeries,
    sts: &[i64],
    hist_sts: &[i64],
) {
    let pairs = || ts.labels.iter().map(|l| (&*l.name, &*l.value));
    let samples = ts.samples.iter().map(|s| Sample::new(s.timestamp, s.value));
    let hists: Vec<_> = ts
        .histograms
        .iter()
        .map(|h| convert_histogram!(h, prometheus))
        .collect();
    let labels = add_series(
        batch,
        RawLabels {
            pairs,
            region: None,
        },
        hists,
        ts.exemplars.len(),
        samples,
        sts,
        hist_sts,
    );
    let labels = labels
        .filter(|_| !ts.exemplars.is_empty())
        .map(|l| l.owned(batch));
    for e in &ts.exemplars {
        let pairs = e.labels.iter().map(|l| (&*l.name, &*l.value));
        add_exemplar(batch, labels.as_ref(), pairs, e.value, e.timestamp);
    }
}

/// Validates a series of label pairs and float samples only (the
/// borrowing decoder's common case) into `batch`; `sts` are the
/// samples' start timestamps (or empty).
pub(crate) fn add_v1_series_parts<'a, F, I>(
    batch: &mut WriteBatch,
    labels: RawLabels<'a, F>,
    samples: impl ExactSizeIterator<Item = Sample>,
    sts: &[i64],
) where
    F: Fn() -> I,
    I: Iterator<Item = (&'a str, &'a str)>,
{
    add_series(batch, labels, Vec::new(), 0, samples, sts, &[]);
}

/// Validates remote write 1.0 metadata into `batch`.
pub(crate) fn add_v1_metadata(batch: &mut WriteBatch, metadata: &[prometheus::MetricMetadata]) {
    for m in metadata {
        if m.metric_family_name.is_empty() {
            batch.error(|| "metadata without a metric family name".to_string());
            continue;
        }
        batch.metadata.push((
            m.metric_family_name.clone(),
            MetricMetadata {
                kind: MetricType::from_proto(m.r#type),
                help: m.help.clone(),
                unit: m.unit.clone(),
            },
        ));
    }
}

/// Decodes and validates an uncompressed remote write 2.0 body.
pub fn decode_v2(buf: &[u8]) -> Result<WriteBatch, DecodeError> {
    let req = write_v2::Request::decode(buf).context(ProtobufSnafu {
        message: "io.prometheus.write.v2.Request",
    })?;
    if let Some(first) = req.symbols.first()
        && !first.is_empty()
    {
        return FirstSymbolSnafu {
            first: first.chars().take(64).collect::<String>(),
        }
        .fail();
    }
    let mut batch = WriteBatch {
        samples: Vec::with_capacity(req.timeseries.iter().map(|t| t.samples.len()).sum()),
        ..Default::default()
    };
    let syms = &req.symbols;
    for (i, ts) in req.timeseries.iter().enumerate() {
        let refs = &ts.labels_refs;
        if refs.len() % 2 != 0 {
            batch.invalid_samples += ts.samples.len() as u64;
            batch.histograms_refused += ts.histograms.len() as u64;
            batch.exemplars_refused += ts.exemplars.len() as u64;
            batch.error(|| {
                format!(
                    "series #{i}: labels_refs has odd length {} (must be name/value pairs)",
                    refs.len()
                )
            });
            continue;
        }
        if let Some(&bad) = refs.iter().find(|&&r| r as usize >= syms.len()) {
            batch.invalid_samples += ts.samples.len() as u64;
            batch.histograms_refused += ts.histograms.len() as u64;
            batch.exemplars_refused += ts.exemplars.len() as u64;
            batch.error(|| {
                format!(
                    "series #{i}: label symbol reference {bad} out of range (symbols table has {} entries)",
                    syms.len()
                )
            });
            continue;
        }
        let sym = |r: u32| syms.get(r as usize).map_or("", String::as_str);
        let pairs = || refs.chunks_exact(2).map(|p| (sym(p[0]), sym(p[1])));
        let samples = ts.samples.iter().map(|s| Sample::new(s.timestamp, s.value));
        let hists: Vec<_> = ts
            .histograms
            .iter()
            .map(|h| convert_histogram!(h, write_v2))
            .collect();
        // Start timestamps only when one is set (the lists stay empty,
        // unallocated, otherwise).
        let sts: Vec<i64> = if ts.samples.iter().any(|s| s.start_timestamp != 0) {
            ts.samples.iter().map(|s| s.start_timestamp).collect()
        } else {
            Vec::new()
        };
        let hist_sts: Vec<i64> = if ts.histograms.iter().any(|h| h.start_timestamp != 0) {
            ts.histograms.iter().map(|h| h.start_timestamp).collect()
        } else {
            Vec::new()
        };
        // An owned label set only for what needs one (exemplars, a
        // created timestamp, metadata); the samples append from the arena.
        let needs_owned = !ts.exemplars.is_empty()
            || ts.metadata.is_some()
            || ts
                .samples
                .first()
                .is_some_and(|f| f.start_timestamp != 0 && f.start_timestamp < f.timestamp);
        let labels = add_series(
            &mut batch,
            RawLabels {
                pairs,
                region: None,
            },
            hists,
            ts.exemplars.len(),
            samples,
            &sts,
            &hist_sts,
        )
        .filter(|_| needs_owned)
        .map(|l| l.owned(&batch));
        for e in &ts.exemplars {
            if e.labels_refs.len() % 2 != 0
                || e.labels_refs.iter().any(|&r| r as usize >= syms.len())
            {
                // Counted only, as invalid exemplar labels below.
                batch.exemplars_refused += 1;
                continue;
            }
            let pairs = e
                .labels_refs
                .chunks_exact(2)
                .map(|p| (sym(p[0]), sym(p[1])));
            add_exemplar(&mut batch, labels.as_ref(), pairs, e.value, e.timestamp);
        }
        let Some(labels) = labels else { continue };
        if let Some(first) = ts.samples.first()
            && first.start_timestamp != 0
            && first.start_timestamp < first.timestamp
        {
            batch.created.push(CreatedTimestamp {
                series: labels.clone(),
                ct: first.start_timestamp,
            });
        }
        if let Some(md) = &ts.metadata {
            if md.help_ref as usize >= syms.len() || md.unit_ref as usize >= syms.len() {
                batch.error(|| format!("series #{i}: metadata symbol reference out of range"));
            } else if md.r#type != 0 || md.help_ref != 0 || md.unit_ref != 0 {
                let name = labels.metric_name().unwrap_or_default().to_string();
                batch.metadata.push((
                    name,
                    MetricMetadata {
                        kind: MetricType::from_proto(md.r#type),
                        help: sym(md.help_ref).to_string(),
                        unit: sym(md.unit_ref).to_string(),
                    },
                ));
            }
        }
    }
    Ok(batch)
}

/// Decodes a body of either version.
pub fn decode(version: RwVersion, buf: &[u8]) -> Result<WriteBatch, DecodeError> {
    match version {
        RwVersion::V1 => decode_v1(buf),
        RwVersion::V2 => decode_v2(buf),
    }
}

/// Validates an exemplar of a series (`None`: the series was invalid)
/// and appends it to the batch.
fn add_exemplar<'a>(
    batch: &mut WriteBatch,
    series: Option<&Labels>,
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
    value: f64,
    t: i64,
) {
    let Some(series) = series else {
        batch.exemplars_refused += 1;
        return;
    };
    let mut v: Vec<(&str, &str)> = pairs.collect();
    v.sort_unstable();
    let bad = v.iter().any(|(n, _)| n.is_empty()) || v.windows(2).any(|w| w[0].0 == w[1].0);
    if bad {
        // Counted only: exemplar problems never fail the request (upstream
        // only logs them).
        batch.exemplars_refused += 1;
        return;
    }
    let labels = Labels::from_sorted_unchecked(
        v.into_iter()
            .filter(|(_, val)| !val.is_empty())
            .map(|(n, val)| Label::new(Arc::<str>::from(n), Arc::<str>::from(val)))
            .collect(),
    );
    batch.exemplars.push(BatchExemplar {
        series: series.clone(),
        exemplar: Exemplar { labels, value, t },
    });
}

/// A start timestamp as stored: one after its sample's timestamp is
/// meaningless and dropped (0 = unknown).
#[inline]
pub(crate) fn checked_st(st: i64, t: i64) -> i64 {
    if st <= t { st } else { 0 }
}

/// Appends the start timestamps of `samples[start..]` (just added) to
/// `out`, keeping it empty while no sample has one and parallel to
/// `samples` once one has.
fn push_sample_sts(out: &mut Vec<i64>, samples: &[Sample], start: usize, sts: &[i64]) {
    let end = samples.len();
    if sts.iter().all(|&st| st == 0) {
        if !out.is_empty() {
            out.resize(end, 0);
        }
        return;
    }
    out.resize(start, 0);
    let added = samples.get(start..).unwrap_or(&[]);
    out.extend(
        added
            .iter()
            .zip(sts.iter().copied().chain(std::iter::repeat(0)))
            .map(|(s, st)| checked_st(st, s.t)),
    );
}

/// The labels of a valid series just added by [`add_series`]: its range
/// of the label arena, with the owned label set if one was built.
pub(crate) struct Added {
    pairs: Range<u32>,
    owned: Option<Labels>,
}

impl Added {
    /// The owned label set (built now unless histograms needed it).
    pub(crate) fn owned(self, batch: &WriteBatch) -> Labels {
        self.owned
            .unwrap_or_else(|| batch.labels_at(&self.pairs).to_labels())
    }
}

/// A series' label pairs as a decoder read them.
pub(crate) struct RawLabels<'a, F> {
    /// The pairs; called again only to render an error message.
    pub(crate) pairs: F,
    /// Text that all the pairs' strings lie in (the request's label
    /// fields, found valid UTF-8 as a whole), copied into the arena in one
    /// piece instead of two copies per label. A pair outside it is copied
    /// on its own.
    pub(crate) region: Option<&'a str>,
}

/// Validates one series and appends it to the batch (its labels copied
/// into the batch's label arena, no owned [`Labels`] unless it has native
/// histograms); returns where its labels are when valid.
fn add_series<'a, F, I>(
    batch: &mut WriteBatch,
    labels: RawLabels<'a, F>,
    histograms: Vec<(i64, Result<HistIn, String>)>,
    exemplars: usize,
    samples: impl ExactSizeIterator<Item = Sample>,
    sts: &[i64],
    hist_sts: &[i64],
) -> Option<Added>
where
    F: Fn() -> I,
    I: Iterator<Item = (&'a str, &'a str)>,
{
    let n = samples.len();
    if n == 0 && histograms.is_empty() && exemplars == 0 {
        return None;
    }
    let pairs = labels.pairs;
    let range = match push_valid_labels(batch, pairs(), labels.region) {
        Ok(r) => r,
        Err(why) => {
            batch.invalid_samples += n as u64;
            batch.histograms_refused += histograms.len() as u64;
            batch.error(|| format!("invalid series {}: {why}", render_pairs(pairs())));
            return None;
        }
    };
    let mut added = Added {
        pairs: range.clone(),
        owned: None,
    };
    if !histograms.is_empty() {
        let labels = Added {
            pairs: range.clone(),
            owned: None,
        }
        .owned(batch);
        let mut hs = BatchHistSeries {
            labels: labels.clone(),
            ..Default::default()
        };
        let with_sts = hist_sts.iter().any(|&st| st != 0);
        for (i, (t, h)) in histograms.into_iter().enumerate() {
            let st = checked_st(hist_sts.get(i).copied().unwrap_or(0), t);
            match h {
                Ok(HistIn::Int(h)) => {
                    hs.histograms.push((t, h));
                    if with_sts {
                        hs.histogram_sts.push(st);
                    }
                }
                Ok(HistIn::Float(h)) => {
                    hs.float_histograms.push((t, h));
                    if with_sts {
                        hs.float_histogram_sts.push(st);
                    }
                }
                Err(why) => {
                    batch.histograms_refused += 1;
                    batch.error(|| {
                        format!(
                            "invalid native histogram at timestamp {t} of series {labels}: {why}"
                        )
                    });
                }
            }
        }
        for v in [&mut hs.histogram_sts, &mut hs.float_histogram_sts] {
            if v.iter().all(|&st| st == 0) {
                *v = Vec::new();
            }
        }
        if !hs.histograms.is_empty() || !hs.float_histograms.is_empty() {
            batch.hist_series.push(hs);
        }
        added.owned = Some(labels);
    }
    if n > 0 {
        let start = batch.samples.len();
        batch.samples.extend(samples);
        if !sts.is_empty() || !batch.sample_sts.is_empty() {
            push_sample_sts(&mut batch.sample_sts, &batch.samples, start, sts);
        }
        batch.series.push(BatchSeries {
            labels: range,
            samples: start..batch.samples.len(),
        });
    }
    Some(added)
}

/// Renders raw label pairs for error messages: `{a="1", b="2"}`, cut at
/// a reasonable length.
fn render_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut s = String::from("{");
    for (i, (n, v)) in pairs.enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{n}={v:?}");
        if s.len() > 512 {
            s.push_str(", ...");
            break;
        }
    }
    s.push('}');
    s
}

/// Checks raw pairs against the remote-write rules and copies the pairs
/// with non-empty values into the batch's label arena (with `region`, see
/// [`RawLabels`]); their range of it. On an error the arena is left as it
/// was.
fn push_valid_labels<'a>(
    batch: &mut WriteBatch,
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
    region: Option<&str>,
) -> Result<Range<u32>, String> {
    let (text_len, pairs_len) = (batch.labels.text.len(), batch.labels.pairs.len());
    let res = check_and_push(batch, pairs, region);
    if res.is_err() {
        batch.labels.text.truncate(text_len);
        batch.labels.pairs.truncate(pairs_len);
    }
    res
}

fn check_and_push<'a>(
    batch: &mut WriteBatch,
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
    region: Option<&str>,
) -> Result<Range<u32>, String> {
    const TOO_LARGE: &str = "request labels pass 4 GiB";
    let first = u32::try_from(batch.labels.pairs.len()).map_err(|_| TOO_LARGE.to_string())?;
    let region = region
        .map(|r| {
            batch
                .push_region(r)
                .map(|base| (r, base))
                .ok_or_else(|| TOO_LARGE.to_string())
        })
        .transpose()?;
    let mut prev: Option<&str> = None;
    let mut has_name = false;
    for (n, v) in pairs {
        if n.is_empty() {
            return Err("label with an empty name".into());
        }
        if let Some(p) = prev {
            // Names nearly always differ in their first byte: no `memcmp`
            // call then.
            let order = match (n.as_bytes().first(), p.as_bytes().first()) {
                (Some(a), Some(b)) if a != b => a.cmp(b),
                _ => n.cmp(p),
            };
            match order {
                std::cmp::Ordering::Greater => {}
                std::cmp::Ordering::Equal => return Err(format!("duplicate label name {n:?}")),
                std::cmp::Ordering::Less => {
                    return Err(format!("labels not sorted by name ({n:?} after {p:?})"));
                }
            }
        }
        prev = Some(n);
        if !v.is_empty() {
            has_name |= n == METRIC_NAME;
            let copied = match region {
                Some((r, base)) => batch.push_pair_in(r, base, n, v),
                None => None,
            };
            if copied.is_none() {
                batch.push_pair(n, v).ok_or_else(|| TOO_LARGE.to_string())?;
            }
        }
    }
    if !has_name {
        return Err("missing metric name (__name__ label)".into());
    }
    let end = u32::try_from(batch.labels.pairs.len()).map_err(|_| TOO_LARGE.to_string())?;
    Ok(first..end)
}

/// Fuzz entry point for remote write 1.0: decodes `data` as an
/// uncompressed body and as a snappy-compressed one. Never panics.
pub fn fuzz_remote_write_v1(data: &[u8]) {
    fuzz(RwVersion::V1, data);
}

/// Fuzz entry point for remote write 2.0 (see [`fuzz_remote_write_v1`]).
pub fn fuzz_remote_write_v2(data: &[u8]) {
    fuzz(RwVersion::V2, data);
}

/// Differential fuzz entry point of the borrowing remote write 1.0
/// decoder: [`decode_v1`] must give exactly what the prost decoder gives
/// (the same batch, or the same error). Panics on a difference.
pub fn fuzz_remote_write_v1_fast(data: &[u8]) {
    let fast = decode_v1(data);
    let slow = decode_v1_prost(data);
    match (&fast, &slow) {
        (Ok(a), Ok(b)) => {
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "batches differ");
            check_batch(a);
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("fast {fast:?} vs prost {slow:?}"),
    }
}

/// Differential fuzz entry point of an ingester's series decoding
/// ([`batch_from_v1_encoded`], which also reads the start-timestamp
/// extension fields of `stratus_proto::push`): `data` is one encoded
/// series; the batch must keep the invariants and, start timestamps
/// aside, equal what prost decodes. Panics on a difference.
pub fn fuzz_ingester_series(data: &[u8]) {
    let got = batch_from_v1_encoded([data], &[]);
    let want = prometheus::TimeSeries::decode(data);
    match (got, want) {
        (Ok(mut a), Ok(ts)) => {
            check_batch(&a);
            a.clear_start_timestamps();
            let b = batch_from_v1(std::slice::from_ref(&ts), &[]);
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "batches differ");
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!("ingester decoder {a:?} vs prost {b:?}"),
    }
}

fn fuzz(version: RwVersion, data: &[u8]) {
    if let Ok(b) = decode(version, data) {
        check_batch(&b);
    }
    if let Ok(raw) = decompress_snappy(data, 1 << 20)
        && let Ok(b) = decode(version, &raw)
    {
        check_batch(&b);
    }
}

/// Invariants every decoded batch keeps (checked while fuzzing).
fn check_batch(b: &WriteBatch) {
    let mut end = 0;
    for s in &b.series {
        assert_eq!(s.samples.start, end, "series sample ranges are contiguous");
        assert!(s.samples.end > s.samples.start, "series has samples");
        end = s.samples.end;
        let labels = b.labels_of(s).to_labels();
        assert!(Labels::is_sorted_unique(labels.as_slice()));
        assert!(
            labels
                .iter()
                .all(|l| !l.name.is_empty() && !l.value.is_empty())
        );
        assert!(labels.metric_name().is_some());
    }
    assert_eq!(end, b.samples.len());
    assert!(b.sample_sts.is_empty() || b.sample_sts.len() == b.samples.len());
    for (s, st) in b.samples.iter().zip(&b.sample_sts) {
        assert!(*st <= s.t, "start timestamp after its sample");
    }
    for h in &b.hist_series {
        assert!(h.histogram_sts.is_empty() || h.histogram_sts.len() == h.histograms.len());
        assert!(
            h.float_histogram_sts.is_empty()
                || h.float_histogram_sts.len() == h.float_histograms.len()
        );
    }
    assert!(b.errors.len() as u64 <= b.num_errors);
    for e in &b.exemplars {
        assert!(e.series.metric_name().is_some());
        assert!(Labels::is_sorted_unique(e.exemplar.labels.as_slice()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use stratus_model::{STALE_NAN_BITS, stale_nan};

    #[test]
    fn fast_decoder_copies_a_series_labels_in_one_piece() {
        let body = prometheus::WriteRequest {
            timeseries: vec![
                v1_series(&[("__name__", "up"), ("job", "a"), ("z", "")], &[(1, 1.0)]),
                v1_series(&[("__name__", "up"), ("job", "b")], &[(1, 2.0)]),
                // A label value of 128 bytes: the labels' bytes are not
                // UTF-8 as a whole, so each string is copied on its own.
                v1_series(
                    &[("__name__", "up"), ("job", &"c".repeat(128))],
                    &[(1, 3.0)],
                ),
            ],
            ..Default::default()
        }
        .encode_to_vec();
        let batch = crate::rw_fast::decode_v1_fast(&body).expect("common shape");
        let labels: Vec<String> = batch
            .series
            .iter()
            .map(|s| batch.labels_of(s).to_labels().to_string())
            .collect();
        let long = format!("up{{job=\"{}\"}}", "c".repeat(128));
        assert_eq!(labels, [r#"up{job="a"}"#, r#"up{job="b"}"#, &long]);
        // Region copies keep the protobuf bytes between name and value;
        // pair copies put the value right after the name.
        let adjacent: Vec<bool> = batch
            .labels
            .pairs
            .iter()
            .map(|p| p.value == p.name + p.name_len)
            .collect();
        assert_eq!(adjacent, [false, false, false, false, true, true]);
        // Validation errors leave no trace in the arena.
        let bad = prometheus::WriteRequest {
            timeseries: vec![
                v1_series(&[("job", "a"), ("__name__", "up")], &[(1, 1.0)]),
                v1_series(&[("__name__", "up")], &[(1, 1.0)]),
            ],
            ..Default::default()
        }
        .encode_to_vec();
        let batch = crate::rw_fast::decode_v1_fast(&bad).expect("common shape");
        assert_eq!(batch.series.len(), 1);
        assert_eq!(batch.labels.pairs.len(), 1);
        assert_eq!(
            batch.labels.text.len(),
            "\n\x0e\n\x08__name__\x12\x02up".len()
        );
    }

    fn v1_series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> prometheus::TimeSeries {
        prometheus::TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| prometheus::Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|&(t, v)| prometheus::Sample {
                    value: v,
                    timestamp: t,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn v1_body(series: Vec<prometheus::TimeSeries>) -> Vec<u8> {
        prometheus::WriteRequest {
            timeseries: series,
            metadata: Vec::new(),
        }
        .encode_to_vec()
    }

    #[test]
    fn v1_roundtrip_keeps_nan_bits() {
        let weird_nan = f64::from_bits(0x7ff8_dead_beef_0001);
        let body = v1_body(vec![
            v1_series(
                &[("__name__", "up"), ("job", "a")],
                &[(1, 1.0), (2, stale_nan()), (3, weird_nan)],
            ),
            v1_series(
                &[("__name__", "up"), ("job", "b")],
                &[(5, f64::NEG_INFINITY)],
            ),
        ]);
        let b = decode_v1(&body).unwrap();
        assert_eq!(b.num_errors, 0);
        assert_eq!(b.series.len(), 2);
        let s = b.samples_of(&b.series[0]);
        assert_eq!(s[1].v.to_bits(), STALE_NAN_BITS);
        assert_eq!(s[2].v.to_bits(), weird_nan.to_bits());
        assert_eq!(b.samples_of(&b.series[1])[0].v, f64::NEG_INFINITY);
        assert_eq!(b.labels_of(&b.series[1]).get("job"), Some("b"));
    }

    #[test]
    fn v1_validation() {
        let body = v1_body(vec![
            v1_series(&[("job", "a")], &[(1, 1.0)]), // no name
            v1_series(&[("__name__", ""), ("job", "a")], &[(1, 1.0)]), // empty name value
            v1_series(&[("__name__", "x"), ("", "a")], &[(1, 1.0)]), // empty label name
            v1_series(&[("b", "1"), ("a", "1"), ("__name__", "x")], &[(1, 1.0)]), // unsorted
            v1_series(&[("__name__", "x"), ("a", "1"), ("a", "2")], &[(1, 1.0)]), // duplicate
            v1_series(&[("__name__", "ok"), ("empty", "")], &[(1, 1.0)]), // empty value dropped
            v1_series(&[("__name__", "nosamples")], &[]), // skipped
            v1_series(&[("__name__", "utf8.name"), ("ünï", "✓")], &[(1, 1.0)]),
        ]);
        let b = decode_v1(&body).unwrap();
        assert_eq!(b.num_errors, 5, "{:?}", b.errors);
        assert_eq!(b.invalid_samples, 5);
        assert_eq!(b.series.len(), 2);
        assert_eq!(b.labels_of(&b.series[0]).len(), 1);
        assert_eq!(b.labels_of(&b.series[1]).get("ünï"), Some("✓"));
        assert!(
            b.errors[0].contains("missing metric name"),
            "{}",
            b.errors[0]
        );
        assert!(b.errors[3].contains("not sorted"), "{}", b.errors[3]);
        assert!(
            b.errors[4].contains("duplicate label name"),
            "{}",
            b.errors[4]
        );
    }

    #[test]
    fn v1_histograms_are_converted_and_validated() {
        let mut ts = v1_series(&[("__name__", "h")], &[(1, 1.0)]);
        ts.histograms.push(prometheus::Histogram {
            timestamp: 5,
            count: Some(prometheus::histogram::Count::CountFloat(3.0)),
            zero_count: Some(prometheus::histogram::ZeroCount::ZeroCountFloat(1.0)),
            schema: -53,
            positive_spans: vec![prometheus::BucketSpan {
                offset: 0,
                length: 2,
            }],
            positive_counts: vec![1.0, 1.0],
            custom_values: vec![0.5, 1.0],
            reset_hint: 3,
            ..Default::default()
        });
        // Invalid: a negative bucket count.
        ts.histograms.push(prometheus::Histogram {
            timestamp: 6,
            positive_spans: vec![prometheus::BucketSpan {
                offset: 0,
                length: 1,
            }],
            positive_deltas: vec![-1],
            ..Default::default()
        });
        let b = decode_v1(&v1_body(vec![ts])).unwrap();
        assert_eq!(b.histograms_refused, 1);
        assert_eq!(b.series.len(), 1);
        assert_eq!(b.hist_series.len(), 1);
        let fh = &b.hist_series[0].float_histograms[0];
        assert_eq!(fh.0, 5);
        assert_eq!(fh.1.custom_values, vec![0.5, 1.0]);
        assert_eq!(fh.1.reset_hint, 3);
        assert!(
            b.errors[0].contains("invalid native histogram at timestamp 6")
                && b.errors[0].contains("negative count"),
            "{}",
            b.errors[0]
        );
    }

    #[test]
    fn v2_decode_and_validation() {
        let req = write_v2::Request {
            symbols: ["", "__name__", "up", "job", "a", "zzz"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            timeseries: vec![
                write_v2::TimeSeries {
                    labels_refs: vec![1, 2, 3, 4],
                    samples: vec![write_v2::Sample {
                        value: stale_nan(),
                        timestamp: 7,
                        start_timestamp: 0,
                    }],
                    ..Default::default()
                },
                write_v2::TimeSeries {
                    labels_refs: vec![1, 2, 3],
                    samples: vec![write_v2::Sample::default()],
                    ..Default::default()
                },
                write_v2::TimeSeries {
                    labels_refs: vec![1, 2, 3, 99],
                    samples: vec![write_v2::Sample::default()],
                    ..Default::default()
                },
                write_v2::TimeSeries {
                    labels_refs: vec![3, 4, 1, 2],
                    samples: vec![write_v2::Sample::default()],
                    ..Default::default()
                },
                write_v2::TimeSeries {
                    labels_refs: vec![0, 2, 1, 2],
                    samples: vec![write_v2::Sample::default()],
                    ..Default::default()
                },
            ],
        };
        let b = decode_v2(&req.encode_to_vec()).unwrap();
        assert_eq!(b.series.len(), 1);
        assert_eq!(b.num_errors, 4, "{:?}", b.errors);
        assert_eq!(b.samples[0].v.to_bits(), STALE_NAN_BITS);
        assert_eq!(b.samples[0].t, 7);
        assert_eq!(
            b.labels_of(&b.series[0]),
            Labels::from_pairs([("__name__", "up"), ("job", "a")])
        );
    }

    #[test]
    fn v2_start_timestamps_are_kept_per_sample() {
        let sample = |t: i64, st: i64| write_v2::Sample {
            value: 1.0,
            timestamp: t,
            start_timestamp: st,
        };
        let hist = |t: i64, st: i64, float: bool| write_v2::Histogram {
            timestamp: t,
            start_timestamp: st,
            count: Some(if float {
                write_v2::histogram::Count::CountFloat(1.0)
            } else {
                write_v2::histogram::Count::CountInt(1)
            }),
            zero_count: Some(if float {
                write_v2::histogram::ZeroCount::ZeroCountFloat(1.0)
            } else {
                write_v2::histogram::ZeroCount::ZeroCountInt(1)
            }),
            ..Default::default()
        };
        let req = write_v2::Request {
            symbols: ["", "__name__", "a", "b", "c", "h"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            timeseries: vec![
                // No start timestamps: nothing allocated.
                write_v2::TimeSeries {
                    labels_refs: vec![1, 2],
                    samples: vec![sample(10, 0), sample(20, 0)],
                    ..Default::default()
                },
                // Starts; one after its sample is dropped as unknown.
                write_v2::TimeSeries {
                    labels_refs: vec![1, 3],
                    samples: vec![sample(30, 5), sample(40, 5), sample(50, 60)],
                    ..Default::default()
                },
                write_v2::TimeSeries {
                    labels_refs: vec![1, 4],
                    samples: vec![sample(70, 0)],
                    ..Default::default()
                },
                write_v2::TimeSeries {
                    labels_refs: vec![1, 5],
                    histograms: vec![
                        hist(100, 90, false),
                        hist(110, 0, true),
                        hist(120, 90, false),
                    ],
                    ..Default::default()
                },
            ],
        };
        let b = decode_v2(&req.encode_to_vec()).unwrap();
        assert_eq!(b.num_errors, 0, "{:?}", b.errors);
        assert_eq!(b.sample_sts, vec![0, 0, 5, 5, 0, 0]);
        assert!(b.sts_of(&b.series[0]).iter().all(|&st| st == 0));
        assert_eq!(b.sts_of(&b.series[1]), &[5, 5, 0]);
        let h = &b.hist_series[0];
        assert_eq!(h.histogram_sts, vec![90, 90]);
        assert!(h.float_histogram_sts.is_empty());
        assert!(b.has_start_timestamps());
        check_batch(&b);
        // The zero-injection hint is unchanged: the first sample's start.
        assert_eq!(b.created.len(), 1);
        assert_eq!(b.created[0].ct, 5);

        // A batch without any start timestamp allocates no list.
        let plain = write_v2::Request {
            symbols: req.symbols.clone(),
            timeseries: vec![req.timeseries[0].clone()],
        };
        let b = decode_v2(&plain.encode_to_vec()).unwrap();
        assert!(b.sample_sts.is_empty() && b.sample_sts.capacity() == 0);
        assert!(!b.has_start_timestamps());
        let mut b = decode_v2(&req.encode_to_vec()).unwrap();
        b.clear_start_timestamps();
        assert!(!b.has_start_timestamps());
    }

    #[test]
    fn exemplars_and_metadata_are_carried() {
        let ex = |pairs: &[(&str, &str)], t: i64| prometheus::Exemplar {
            labels: pairs
                .iter()
                .map(|(n, v)| prometheus::Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            value: 1.0,
            timestamp: t,
        };
        let mut ok = v1_series(&[("__name__", "up")], &[(1, 1.0)]);
        ok.exemplars = vec![
            ex(&[("trace_id", "a"), ("span_id", "b")], 1),
            ex(&[("x", "1"), ("x", "2")], 2),
        ];
        let mut bad = v1_series(&[("job", "nameless")], &[(1, 1.0)]);
        bad.exemplars = vec![ex(&[], 1)];
        let body = prometheus::WriteRequest {
            timeseries: vec![ok, bad],
            metadata: vec![prometheus::MetricMetadata {
                r#type: 2,
                metric_family_name: "up".into(),
                help: "h".into(),
                unit: String::new(),
            }],
        }
        .encode_to_vec();
        let b = decode_v1(&body).unwrap();
        assert_eq!(b.exemplars.len(), 1);
        assert_eq!(b.exemplars[0].exemplar.labels.get("span_id"), Some("b"));
        assert_eq!(b.exemplars_refused, 2);
        assert_eq!(b.num_errors, 1, "only the nameless series: {:?}", b.errors);
        assert_eq!(b.metadata[0].1.kind, MetricType::Gauge);
    }

    #[test]
    fn v2_first_symbol_must_be_empty() {
        let req = write_v2::Request {
            symbols: vec!["x".into()],
            timeseries: Vec::new(),
        };
        assert!(matches!(
            decode_v2(&req.encode_to_vec()),
            Err(DecodeError::FirstSymbol { .. })
        ));
    }

    #[test]
    fn v1_body_decodes_as_empty_v2_and_back() {
        let body = v1_body(vec![v1_series(&[("__name__", "up")], &[(1, 1.0)])]);
        let b = decode_v2(&body).unwrap();
        assert!(b.series.is_empty());
    }

    #[test]
    fn fuzz_ingester_series_with_start_timestamps() {
        use stratus_proto::push;
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x57);
        let mut seed = v1_series(&[("__name__", "up")], &[(10, 1.0), (20, 2.0)]).encode_to_vec();
        push::encode_start_timestamps(
            push::SAMPLE_START_TIMESTAMPS_FIELD,
            [5i64, 25].into_iter(),
            &mut seed,
        );
        let b = batch_from_v1_encoded([&seed[..]], &[]).unwrap();
        assert_eq!(b.sample_sts, [5, 0], "a start after its sample is unknown");
        let mut with_hist = v1_series(&[("__name__", "h")], &[]);
        with_hist.histograms.push(prometheus::Histogram {
            timestamp: 7,
            count: Some(prometheus::histogram::Count::CountInt(1)),
            zero_count: Some(prometheus::histogram::ZeroCount::ZeroCountInt(1)),
            ..Default::default()
        });
        let mut hseed = with_hist.encode_to_vec();
        push::encode_start_timestamps(
            push::HISTOGRAM_START_TIMESTAMPS_FIELD,
            [3i64].into_iter(),
            &mut hseed,
        );
        let b = batch_from_v1_encoded([&hseed[..]], &[]).unwrap();
        assert_eq!(b.hist_series[0].histogram_sts, [3]);
        for i in 0..3000 {
            let mut d = if i % 2 == 0 {
                seed.clone()
            } else {
                hseed.clone()
            };
            for _ in 0..rng.random_range(0..4) {
                let p = rng.random_range(0..d.len());
                d[p] = rng.random();
            }
            if i % 5 == 0 {
                d.truncate(rng.random_range(0..d.len()));
            }
            fuzz_ingester_series(&d);
        }
    }

    #[test]
    fn snappy_limits() {
        let raw = vec![7u8; 10_000];
        let comp = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        assert_eq!(decompress_snappy(&comp, 10_000).unwrap(), raw);
        assert!(matches!(
            decompress_snappy(&comp, 9_999),
            Err(DecodeError::TooLarge { len: 10_000, .. })
        ));
        assert!(matches!(
            decompress_snappy(b"\xff\xff\xff\xff\xff\xff", 1 << 20),
            Err(DecodeError::Snappy { .. })
        ));
    }

    #[test]
    fn fuzz_random_and_mutated_bodies() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let seed_v1 = v1_body(vec![
            v1_series(&[("__name__", "up"), ("job", "a")], &[(1, 1.0), (2, 2.0)]),
            v1_series(&[("__name__", "x")], &[(3, f64::NAN)]),
        ]);
        let seed_v2 = write_v2::Request {
            symbols: vec!["".into(), "__name__".into(), "up".into()],
            timeseries: vec![write_v2::TimeSeries {
                labels_refs: vec![1, 2],
                samples: vec![write_v2::Sample::default()],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        for i in 0..4000 {
            let data: Vec<u8> = if i % 2 == 0 {
                let len = rng.random_range(0..256);
                (0..len).map(|_| rng.random()).collect()
            } else {
                let mut d = if i % 4 == 1 {
                    seed_v1.clone()
                } else {
                    seed_v2.clone()
                };
                for _ in 0..rng.random_range(1..4) {
                    let p = rng.random_range(0..d.len());
                    d[p] = rng.random();
                }
                if i % 8 == 3 {
                    d = snap::raw::Encoder::new().compress_vec(&d).unwrap();
                }
                d
            };
            fuzz_remote_write_v1(&data);
            fuzz_remote_write_v2(&data);
        }
    }
}
