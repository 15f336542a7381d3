//! Conversions between model types and the wire messages of
//! `stratus.ingester.v1`: validated series of a [`WriteBatch`] joined
//! per label set and encoded once as remote write 1.0 `TimeSeries` bytes
//! (histograms keep their integer or float kind bit for bit; start
//! timestamps, when known, in the extension fields of
//! `stratus_proto::push`), matchers, label sets, chunks and refusal reasons.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use prost::bytes::Bytes;
use prost::encoding::{self as prost_encoding, encode_varint, encoded_len_varint};
use stratus_api::{BatchExemplar, BatchHistSeries, BatchLabels, WriteBatch};
use stratus_model::{BucketSpan, FloatHistogram, Histogram, Labels, MatchType, Matcher, Sample};
use stratus_proto::ingester as pb;
use stratus_proto::prometheus as prom;
use stratus_proto::push;
use stratus_tsdb::{Part, RejectReason, Series};

use crate::error::{BadMatcherSnafu, Result};

/// Label pairs for the wire.
pub(crate) fn labels_to_proto(l: &Labels) -> Vec<prom::Label> {
    l.iter()
        .map(|l| prom::Label {
            name: l.name.to_string(),
            value: l.value.to_string(),
        })
        .collect()
}

/// A label set from the wire (sorted; malformed sets are the sender's
/// problem and are kept as they come, only sorted).
pub(crate) fn labels_from_proto(v: &[prom::Label]) -> Labels {
    Labels::from_pairs(v.iter().map(|l| (l.name.as_str(), l.value.as_str())))
}

fn spans(v: &[BucketSpan]) -> Vec<prom::BucketSpan> {
    v.iter()
        .map(|s| prom::BucketSpan {
            offset: s.offset,
            length: s.length,
        })
        .collect()
}

/// An integer-count histogram in remote write shape.
pub(crate) fn histogram_to_proto(t: i64, h: &Histogram) -> prom::Histogram {
    prom::Histogram {
        count: Some(prom::histogram::Count::CountInt(h.count)),
        sum: h.sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: Some(prom::histogram::ZeroCount::ZeroCountInt(h.zero_count)),
        negative_spans: spans(&h.negative_spans),
        negative_deltas: h.negative_deltas.clone(),
        negative_counts: Vec::new(),
        positive_spans: spans(&h.positive_spans),
        positive_deltas: h.positive_deltas.clone(),
        positive_counts: Vec::new(),
        reset_hint: i32::from(h.reset_hint),
        timestamp: t,
        custom_values: h.custom_values.clone(),
    }
}

/// A float-count histogram in remote write shape.
pub(crate) fn float_histogram_to_proto(t: i64, h: &FloatHistogram) -> prom::Histogram {
    prom::Histogram {
        count: Some(prom::histogram::Count::CountFloat(h.count)),
        sum: h.sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: Some(prom::histogram::ZeroCount::ZeroCountFloat(h.zero_count)),
        negative_spans: spans(&h.negative_spans),
        negative_deltas: Vec::new(),
        negative_counts: h.negative_buckets.clone(),
        positive_spans: spans(&h.positive_spans),
        positive_deltas: Vec::new(),
        positive_counts: h.positive_buckets.clone(),
        reset_hint: i32::from(h.reset_hint),
        timestamp: t,
        custom_values: h.custom_values.clone(),
    }
}

/// The label set of a joined series: borrowed from the batch's label
/// arena (float series) or an owned set (histogram and exemplar series).
#[derive(Debug, Clone, Copy)]
pub(crate) enum JoinedLabels<'b> {
    Batch(BatchLabels<'b>),
    Owned(&'b Labels),
}

impl JoinedLabels<'_> {
    /// [`Labels::stable_hash`], equal for equal sets in either form.
    fn stable_hash(&self) -> u64 {
        match self {
            Self::Batch(b) => b.stable_hash(),
            Self::Owned(l) => l.stable_hash(),
        }
    }

    /// Whether these are the labels `l`.
    pub(crate) fn is(&self, l: &Labels) -> bool {
        match self {
            Self::Batch(b) => b == l,
            Self::Owned(o) => *o == l,
        }
    }

    fn same(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Batch(a), Self::Batch(b)) => a == b,
            (Self::Batch(a), Self::Owned(b)) | (Self::Owned(b), Self::Batch(a)) => a == *b,
            (Self::Owned(a), Self::Owned(b)) => a == b,
        }
    }

    /// Appends the labels as `TimeSeries.labels` fields.
    fn encode(&self, buf: &mut Vec<u8>) {
        // TimeSeries.labels = 1, Label.name = 1, Label.value = 2.
        let mut put = |name: &str, value: &str| {
            let inner = str_field_len(name.len()) + str_field_len(value.len());
            buf.push(0x0a);
            encode_varint(inner as u64, buf);
            put_str_field(0x0a, name, buf);
            put_str_field(0x12, value, buf);
        };
        match self {
            Self::Batch(b) => b.iter().for_each(|(n, v)| put(n, v)),
            Self::Owned(l) => l.iter().for_each(|l| put(&l.name, &l.value)),
        }
    }
}

/// One series of a batch with everything it carries (floats, native
/// histograms, exemplars), joined by label set.
#[derive(Debug)]
pub(crate) struct Joined<'b> {
    pub(crate) labels: JoinedLabels<'b>,
    /// The labels' [`Labels::stable_hash`].
    pub(crate) hash: u64,
    /// Float samples (one slice per occurrence of the label set).
    samples: Vec<&'b [Sample]>,
    /// Start timestamps of `samples`, run by run (empty: unknown).
    sts: Vec<&'b [i64]>,
    hists: Vec<&'b BatchHistSeries>,
    pub(crate) exemplars: Vec<&'b BatchExemplar>,
}

impl Joined<'_> {
    pub(crate) fn samples_len(&self) -> usize {
        self.samples.iter().map(|s| s.len()).sum()
    }

    pub(crate) fn histograms_len(&self) -> usize {
        self.hists
            .iter()
            .map(|h| h.histograms.len() + h.float_histograms.len())
            .sum()
    }
}

/// Every series of a batch (floats, histograms and exemplars joined per
/// label set), in the batch's order, float series first.
pub(crate) fn join_series(batch: &WriteBatch) -> Vec<Joined<'_>> {
    let mut out: Vec<Joined<'_>> = Vec::with_capacity(batch.series.len());
    // Series by the label set's xxh3 hash (computed once per series, no
    // SipHash over every label string); equal hashes are checked for
    // equal labels, a collision chains to the next free key.
    let mut index: HashMap<u64, usize, BuildHasherDefault<IdentityHasher>> =
        HashMap::with_capacity_and_hasher(batch.series.len(), BuildHasherDefault::default());
    fn slot<'b>(
        index: &mut HashMap<u64, usize, BuildHasherDefault<IdentityHasher>>,
        out: &mut Vec<Joined<'b>>,
        l: JoinedLabels<'b>,
    ) -> usize {
        let hash = l.stable_hash();
        let mut key = hash;
        loop {
            match index.get(&key) {
                Some(&i) if out.get(i).is_some_and(|x| x.labels.same(&l)) => return i,
                Some(_) => key = key.wrapping_add(0x9e37_79b9_7f4a_7c15),
                None => break,
            }
        }
        out.push(Joined {
            labels: l,
            hash,
            samples: Vec::new(),
            sts: Vec::new(),
            hists: Vec::new(),
            exemplars: Vec::new(),
        });
        index.insert(key, out.len() - 1);
        out.len() - 1
    }
    for s in &batch.series {
        let i = slot(
            &mut index,
            &mut out,
            JoinedLabels::Batch(batch.labels_of(s)),
        );
        if let Some(j) = out.get_mut(i) {
            j.samples.push(batch.samples_of(s));
            j.sts.push(batch.sts_of(s));
        }
    }
    for s in &batch.hist_series {
        let i = slot(&mut index, &mut out, JoinedLabels::Owned(&s.labels));
        if let Some(j) = out.get_mut(i) {
            j.hists.push(s);
        }
    }
    for e in &batch.exemplars {
        let i = slot(&mut index, &mut out, JoinedLabels::Owned(&e.series));
        if let Some(j) = out.get_mut(i) {
            j.exemplars.push(e);
        }
    }
    out
}

/// Bytes of a length-delimited field with a one-byte key (0 when empty:
/// proto3 leaves empty strings out).
fn str_field_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        1 + encoded_len_varint(n as u64) + n
    }
}

fn put_str_field(key: u8, s: &str, buf: &mut Vec<u8>) {
    if !s.is_empty() {
        buf.push(key);
        encode_varint(s.len() as u64, buf);
        buf.extend_from_slice(s.as_bytes());
    }
}

/// Appends one series as an encoded `prometheus.TimeSeries`: labels and
/// float samples written directly (a sample always carries both fields,
/// so -0.0 keeps its sign), exemplars and histograms through prost, then
/// the start timestamps of samples and histograms (in the order they were
/// written) when any is known.
fn encode_joined(s: &Joined<'_>, buf: &mut Vec<u8>) {
    s.labels.encode(buf);
    // TimeSeries.samples = 2, Sample.value = 1 (fixed64),
    // Sample.timestamp = 2 (varint).
    for run in &s.samples {
        for x in run.iter() {
            let t = x.t as u64;
            buf.push(0x12);
            encode_varint((10 + encoded_len_varint(t)) as u64, buf);
            buf.push(0x09);
            buf.extend_from_slice(&x.v.to_bits().to_le_bytes());
            buf.push(0x10);
            encode_varint(t, buf);
        }
    }
    for e in &s.exemplars {
        let ex = prom::Exemplar {
            labels: labels_to_proto(&e.exemplar.labels),
            value: e.exemplar.value,
            timestamp: e.exemplar.t,
        };
        prost_encoding::message::encode(3, &ex, buf);
    }
    for h in &s.hists {
        for (t, x) in &h.histograms {
            prost_encoding::message::encode(4, &histogram_to_proto(*t, x), buf);
        }
        for (t, x) in &h.float_histograms {
            prost_encoding::message::encode(4, &float_histogram_to_proto(*t, x), buf);
        }
    }
    // Start timestamps: the known ones, 0 for the rest.
    if s.sts.iter().any(|v| v.iter().any(|&st| st != 0)) {
        let all = s
            .samples
            .iter()
            .zip(&s.sts)
            .flat_map(|(run, sts)| padded(sts, run.len()));
        push::encode_start_timestamps(push::SAMPLE_START_TIMESTAMPS_FIELD, all, buf);
    }
    if s.hists
        .iter()
        .any(|h| !h.histogram_sts.is_empty() || !h.float_histogram_sts.is_empty())
    {
        let all = s.hists.iter().flat_map(|h| {
            padded(&h.histogram_sts, h.histograms.len())
                .chain(padded(&h.float_histogram_sts, h.float_histograms.len()))
        });
        push::encode_start_timestamps(push::HISTOGRAM_START_TIMESTAMPS_FIELD, all, buf);
    }
}

/// Every joined series encoded as a `prometheus.TimeSeries`, all in one
/// buffer: element `i` is series `i`'s slice of it (shared, not copied,
/// by every replica's request).
pub(crate) fn encode_series(joined: &[Joined<'_>]) -> Vec<Bytes> {
    let mut buf: Vec<u8> = Vec::with_capacity(joined.len() * 256);
    let mut ends = Vec::with_capacity(joined.len());
    for s in joined {
        encode_joined(s, &mut buf);
        ends.push(buf.len());
    }
    let all = Bytes::from(buf);
    let mut start = 0;
    ends.into_iter()
        .map(|end| {
            let b = all.slice(start..end);
            start = end;
            b
        })
        .collect()
}

/// `n` start timestamps from `sts`, 0 where it has none.
fn padded(sts: &[i64], n: usize) -> impl Iterator<Item = i64> + Clone + '_ {
    (0..n).map(move |k| sts.get(k).copied().unwrap_or(0))
}

/// A hasher for keys that already are good 64-bit hashes.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Metadata of a batch in remote write shape.
pub(crate) fn batch_metadata(batch: &WriteBatch) -> Vec<prom::MetricMetadata> {
    batch
        .metadata
        .iter()
        .map(|(name, m)| prom::MetricMetadata {
            r#type: i32::from(m.kind.to_proto()),
            metric_family_name: name.clone(),
            help: m.help.clone(),
            unit: m.unit.clone(),
        })
        .collect()
}

/// Matchers for the wire.
pub(crate) fn matchers_to_proto(ms: &[Matcher]) -> Vec<prom::LabelMatcher> {
    ms.iter()
        .map(|m| prom::LabelMatcher {
            r#type: match m.kind {
                MatchType::Equal => prom::label_matcher::Type::Eq,
                MatchType::NotEqual => prom::label_matcher::Type::Neq,
                MatchType::RegexMatch => prom::label_matcher::Type::Re,
                MatchType::RegexNoMatch => prom::label_matcher::Type::Nre,
            } as i32,
            name: m.name.to_string(),
            value: m.value.to_string(),
        })
        .collect()
}

/// Matchers from the wire; an unknown type or a bad regex is an error.
pub(crate) fn matchers_from_proto(v: &[prom::LabelMatcher]) -> Result<Vec<Matcher>> {
    v.iter()
        .map(|m| {
            let kind = match prom::label_matcher::Type::try_from(m.r#type) {
                Ok(prom::label_matcher::Type::Eq) => MatchType::Equal,
                Ok(prom::label_matcher::Type::Neq) => MatchType::NotEqual,
                Ok(prom::label_matcher::Type::Re) => MatchType::RegexMatch,
                Ok(prom::label_matcher::Type::Nre) => MatchType::RegexNoMatch,
                Err(_) => {
                    return BadMatcherSnafu {
                        message: format!("unknown matcher type {}", m.r#type),
                    }
                    .fail();
                }
            };
            Matcher::new(kind, m.name.as_str(), m.value.as_str()).map_err(|e| {
                BadMatcherSnafu {
                    message: e.to_string(),
                }
                .build()
            })
        })
        .collect()
}

/// Most samples in a chunk encoded for the wire.
const WIRE_CHUNK_SAMPLES: usize = 120;

/// A series' parts as wire chunks: stored chunks pass through byte for
/// byte, decoded floats become XOR chunks and decoded histograms
/// histogram chunks. Undecodable data is an error.
pub(crate) fn series_to_proto(s: &Series) -> Result<pb::StreamSeries, stratus_tsdb::chunks::Error> {
    let mut chunks = Vec::with_capacity(s.parts.len());
    for p in &s.parts {
        match p {
            Part::Chunk {
                mint,
                maxt,
                encoding,
                data,
            } => chunks.push(pb::Chunk {
                min_time_ms: *mint,
                max_time_ms: *maxt,
                encoding: u32::from(*encoding),
                data: data.to_vec(),
            }),
            Part::Floats(f) => {
                for run in f.chunks(WIRE_CHUNK_SAMPLES) {
                    let (Some(first), Some(last)) = (run.first(), run.last()) else {
                        continue;
                    };
                    let mut app = stratus_tsdb::XorAppender::new();
                    for &(t, v) in run {
                        app.append(t, v);
                    }
                    chunks.push(pb::Chunk {
                        min_time_ms: first.0,
                        max_time_ms: last.0,
                        encoding: u32::from(stratus_tsdb::Encoding::Xor as u8),
                        data: app.into_bytes(),
                    });
                }
            }
            Part::Histograms(h) => {
                for (mint, maxt, encoding, data) in
                    stratus_tsdb::encode_histogram_chunks(h, WIRE_CHUNK_SAMPLES)
                {
                    chunks.push(pb::Chunk {
                        min_time_ms: mint,
                        max_time_ms: maxt,
                        encoding: u32::from(encoding),
                        data,
                    });
                }
            }
        }
    }
    Ok(pb::StreamSeries {
        labels: labels_to_proto(&s.labels),
        chunks,
    })
}

/// A wire series as a [`Series`] of chunk parts (chunks with an encoding
/// that does not fit a byte are dropped; their decoding fails later
/// anyway).
pub(crate) fn series_from_proto(s: pb::StreamSeries) -> Series {
    Series {
        labels: labels_from_proto(&s.labels),
        parts: s
            .chunks
            .into_iter()
            .filter_map(|c| {
                Some(Part::Chunk {
                    mint: c.min_time_ms,
                    maxt: c.max_time_ms,
                    encoding: u8::try_from(c.encoding).ok()?,
                    data: Arc::from(c.data),
                })
            })
            .collect(),
    }
}

/// A refusal reason for the wire.
pub(crate) fn reason_to_proto(r: RejectReason) -> pb::RejectReason {
    match r {
        RejectReason::TooOld => pb::RejectReason::TooOld,
        RejectReason::OutOfOrder => pb::RejectReason::OutOfOrder,
        RejectReason::Duplicate => pb::RejectReason::Duplicate,
        RejectReason::TooFarInFuture => pb::RejectReason::TooFarInFuture,
        RejectReason::MaxSeries => pb::RejectReason::MaxSeries,
        RejectReason::MaxSeriesPerMetric => pb::RejectReason::MaxSeriesPerMetric,
        RejectReason::OutOfOrderHistogram => pb::RejectReason::OutOfOrderHistogram,
        RejectReason::InvalidHistogram => pb::RejectReason::InvalidHistogram,
    }
}

/// A refusal reason from the wire (`None` for `INVALID` and unknown
/// values, which travel as messages).
pub(crate) fn reason_from_proto(v: i32) -> Option<RejectReason> {
    Some(match pb::RejectReason::try_from(v).ok()? {
        pb::RejectReason::TooOld => RejectReason::TooOld,
        pb::RejectReason::OutOfOrder => RejectReason::OutOfOrder,
        pb::RejectReason::Duplicate => RejectReason::Duplicate,
        pb::RejectReason::TooFarInFuture => RejectReason::TooFarInFuture,
        pb::RejectReason::MaxSeries => RejectReason::MaxSeries,
        pb::RejectReason::MaxSeriesPerMetric => RejectReason::MaxSeriesPerMetric,
        pb::RejectReason::OutOfOrderHistogram => RejectReason::OutOfOrderHistogram,
        pb::RejectReason::InvalidHistogram => RejectReason::InvalidHistogram,
        pb::RejectReason::Invalid | pb::RejectReason::Unspecified => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_proto::Message;
    use stratus_proto::write_v2;

    /// A remote write 2.0 request: series `a` with start timestamps on
    /// its samples, `b` without, `h` with integer and float histograms
    /// (only the integer ones with starts).
    fn request() -> write_v2::Request {
        let sample = |t: i64, st: i64| write_v2::Sample {
            value: t as f64,
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
        write_v2::Request {
            symbols: ["", "__name__", "a", "b", "h"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            timeseries: vec![
                write_v2::TimeSeries {
                    labels_refs: vec![1, 2],
                    samples: vec![sample(10, 5), sample(20, 5), sample(30, 25)],
                    ..Default::default()
                },
                write_v2::TimeSeries {
                    labels_refs: vec![1, 3],
                    samples: vec![sample(10, 0)],
                    ..Default::default()
                },
                // `a` again: joined with its first occurrence.
                write_v2::TimeSeries {
                    labels_refs: vec![1, 2],
                    samples: vec![sample(40, 0)],
                    ..Default::default()
                },
                write_v2::TimeSeries {
                    labels_refs: vec![1, 4],
                    histograms: vec![hist(10, 1, false), hist(20, 0, true), hist(30, 1, false)],
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn start_timestamps_survive_the_push_encoding() {
        let batch = stratus_api::decode_v2(&request().encode_to_vec()).unwrap();
        assert!(batch.has_start_timestamps());
        let joined = join_series(&batch);
        let encoded = encode_series(&joined);
        let got = stratus_api::batch_from_v1_encoded(encoded.iter().map(|b| &b[..]), &[]).unwrap();
        let sts = |n: &str| {
            let s = got
                .series
                .iter()
                .find(|s| got.labels_of(s).metric_name() == Some(n))
                .unwrap();
            got.sts_of(s).to_vec()
        };
        assert_eq!(sts("a"), [5, 5, 25, 0]);
        assert!(sts("b").iter().all(|&st| st == 0));
        let h = &got.hist_series[0];
        assert_eq!(h.histograms.len(), 2);
        assert_eq!(h.histogram_sts, [1, 1]);
        assert!(h.float_histogram_sts.is_empty());
        assert_eq!(h.float_histograms.len(), 1);
        // The series bytes stay valid remote write 1.0 messages.
        for b in &encoded {
            prom::TimeSeries::decode(&b[..]).unwrap();
        }

        // Without start timestamps the encoding is unchanged: no
        // extension field, the fast decoder's plain shape.
        let mut plain = batch;
        plain.clear_start_timestamps();
        let joined = join_series(&plain);
        let encoded = encode_series(&joined);
        let got = stratus_api::batch_from_v1_encoded(encoded.iter().map(|b| &b[..]), &[]).unwrap();
        assert!(!got.has_start_timestamps());
        let a = &encoded[0];
        let reencoded = prom::TimeSeries::decode(&a[..]).unwrap().encode_to_vec();
        assert_eq!(a.len(), reencoded.len());
    }
}
