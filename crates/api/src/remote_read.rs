//! Prometheus remote read (`POST /api/v1/read`): a snappy-compressed
//! `prometheus.ReadRequest` in, one of two response types out.
//!
//! - **SAMPLES**: one snappy-compressed `ReadResponse` with a
//!   `QueryResult` per query (series sorted by labels, samples in time
//!   order), bounded by `remote_read_sample_limit` (400 `exceeded sample
//!   limit (N)` as Prometheus answers).
//!   Native histograms go in each `TimeSeries`' `histograms` (as
//!   Prometheus 2.42+ answers), counted by the sample limit too.
//! - **STREAMED_XOR_CHUNKS**: a stream of frames, each `uvarint(len)` +
//!   CRC-32C (big-endian) of the message + a `ChunkedReadResponse` holding
//!   chunks of one series; a series spans several frames when its chunks
//!   exceed `remote_read_max_frame_bytes`. Chunks are XOR (floats),
//!   HISTOGRAM or FLOAT_HISTOGRAM (native histograms, tsdb encodings 2/3).
//!   Clients only understand Prometheus chunk encodings, so stored chunks
//!   pass through untouched only when all of a series' chunks are
//!   Prometheus chunks of at most [`MAX_CHUNK_SAMPLES`] samples that lie
//!   inside the range and do not overlap; anything else (Stratus' compact
//!   encoding, overlapping or out-of-order data, tombstones, chunks
//!   straddling the range) is decoded, merged and re-encoded into chunks
//!   of at most [`MAX_CHUNK_SAMPLES`] samples, cut where the sample type
//!   changes.
//!
//! The response type is the first one of `accepted_response_types` this
//! server implements (an empty list means SAMPLES), as Prometheus
//! negotiates. Query hints narrow the time range (`start_ms`/`end_ms`
//! inside the query's range, as Prometheus' TSDB trims to them) and
//! `func: "series"` reads labels only. The whole request runs under one
//! PromQL query slot; selection happens before the answer starts, so
//! limit and storage errors get proper status codes; a storage error
//! while streaming aborts the body.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use prost::Message;
use stratus_model::{BucketSpan, Labels, MatchType, Matcher};
use stratus_proto::prometheus as pb;
use stratus_tsdb::{
    Db, Encoding, Part, Queryable, SelectHints, Series, Value, XorAppender, encode_histogram_chunks,
};

use crate::metrics::ResponseTypeLabels;
use crate::remote_write::{DecodeError, decompress_snappy};
use crate::server::AppState;

/// Most samples in one XOR chunk of a streamed response (Prometheus' own
/// head chunk size, which clients expect).
pub(crate) const MAX_CHUNK_SAMPLES: usize = 120;

/// Content type of a streamed response.
pub(crate) const STREAMED_CONTENT_TYPE: &str =
    "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse";

/// Bytes gathered before a piece of a streamed body is handed to the
/// connection.
const STREAM_BUFFER: usize = 64 << 10;

/// A failed remote-read request: a plain-text answer.
#[derive(Debug)]
pub(crate) enum ReadError {
    BadRequest(String),
    TooLarge(String),
    Unavailable(String),
    Internal(String),
}

impl IntoResponse for ReadError {
    fn into_response(self) -> Response {
        let (status, msg) = match self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            Self::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m),
            Self::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            Self::Internal(m) => {
                tracing::error!(error = %m, "remote read failed");
                (StatusCode::INTERNAL_SERVER_ERROR, m)
            }
        };
        (status, format!("{msg}\n")).into_response()
    }
}

/// The two response types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResponseType {
    Samples,
    StreamedXorChunks,
}

/// The first accepted type this server implements (SAMPLES if none is
/// listed).
pub(crate) fn negotiate(accepted: &[i32]) -> Result<ResponseType, String> {
    if accepted.is_empty() {
        return Ok(ResponseType::Samples);
    }
    for &t in accepted {
        match pb::read_request::ResponseType::try_from(t) {
            Ok(pb::read_request::ResponseType::Samples) => return Ok(ResponseType::Samples),
            Ok(pb::read_request::ResponseType::StreamedXorChunks) => {
                return Ok(ResponseType::StreamedXorChunks);
            }
            Err(_) => {}
        }
    }
    Err(format!(
        "none of the requested response types {accepted:?} is implemented; this server answers SAMPLES (0) and STREAMED_XOR_CHUNKS (1)"
    ))
}

/// One query of a request, ready for [`Queryable::select`].
#[derive(Debug, Clone)]
pub(crate) struct ReadQuery {
    pub(crate) matchers: Vec<Matcher>,
    pub(crate) hints: SelectHints,
}

/// Converts a protobuf query: matchers of all four types (regexes fully
/// anchored), the time range narrowed by the hints.
pub(crate) fn convert_query(q: &pb::Query) -> Result<ReadQuery, String> {
    let mut matchers = Vec::with_capacity(q.matchers.len());
    for m in &q.matchers {
        let kind = match pb::label_matcher::Type::try_from(m.r#type) {
            Ok(pb::label_matcher::Type::Eq) => MatchType::Equal,
            Ok(pb::label_matcher::Type::Neq) => MatchType::NotEqual,
            Ok(pb::label_matcher::Type::Re) => MatchType::RegexMatch,
            Ok(pb::label_matcher::Type::Nre) => MatchType::RegexNoMatch,
            Err(_) => return Err(format!("unknown label matcher type {}", m.r#type)),
        };
        let matcher = Matcher::new(kind, m.name.as_str(), m.value.as_str()).map_err(|e| {
            format!(
                "invalid matcher {}{}{:?}: {e}",
                m.name,
                kind.as_str(),
                m.value
            )
        })?;
        matchers.push(matcher);
    }
    let (mut start, mut end) = (q.start_timestamp_ms, q.end_timestamp_ms);
    let mut hints = SelectHints::default();
    if let Some(h) = &q.hints {
        // Hints inside the query's range narrow it (a zero pair means unset).
        if (h.start_ms, h.end_ms) != (0, 0) && h.start_ms <= h.end_ms {
            if h.start_ms > start && h.start_ms <= end {
                start = h.start_ms;
            }
            if h.end_ms < end && h.end_ms >= start {
                end = h.end_ms;
            }
        }
        hints.step = h.step_ms;
        hints.range = h.range_ms;
        hints.func = (!h.func.is_empty()).then(|| h.func.clone());
        hints.labels_only = h.func == "series";
    }
    hints.start = start;
    hints.end = end;
    Ok(ReadQuery { matchers, hints })
}

fn labels_pb(l: &Labels) -> Vec<pb::Label> {
    l.iter()
        .map(|l| pb::Label {
            name: l.name.to_string(),
            value: l.value.to_string(),
        })
        .collect()
}

/// Selects every query's series, enforcing the series limit.
fn select_all(
    db: Option<&Db>,
    queries: &[ReadQuery],
    series_limit: usize,
) -> Result<Vec<Vec<Series>>, ReadError> {
    let mut out = Vec::with_capacity(queries.len());
    for q in queries {
        let Some(db) = db else {
            out.push(Vec::new());
            continue;
        };
        if q.hints.start > q.hints.end {
            out.push(Vec::new());
            continue;
        }
        let series = db
            .select(&q.matchers, &q.hints)
            .map_err(|e| ReadError::Internal(format!("reading series: {e}")))?;
        if series_limit > 0 && series.len() > series_limit {
            return Err(ReadError::BadRequest(format!(
                "exceeded series limit ({series_limit}): the query selects {} series; narrow the matchers or raise remote_read_series_limit",
                series.len()
            )));
        }
        out.push(series);
    }
    Ok(out)
}

fn spans_pb(spans: &[BucketSpan]) -> Vec<pb::BucketSpan> {
    spans
        .iter()
        .map(|s| pb::BucketSpan {
            offset: s.offset,
            length: s.length,
        })
        .collect()
}

/// A native histogram sample as its remote-read message, as Prometheus
/// writes it (integer histograms with delta-encoded buckets, float
/// histograms with absolute counts); `None` for a float.
pub(crate) fn histogram_pb(t: i64, v: &Value) -> Option<pb::Histogram> {
    match v {
        Value::Float(_) => None,
        Value::Histogram(h) => Some(pb::Histogram {
            count: Some(pb::histogram::Count::CountInt(h.count)),
            sum: h.sum,
            schema: h.schema,
            zero_threshold: h.zero_threshold,
            zero_count: Some(pb::histogram::ZeroCount::ZeroCountInt(h.zero_count)),
            negative_spans: spans_pb(&h.negative_spans),
            negative_deltas: h.negative_deltas.clone(),
            negative_counts: Vec::new(),
            positive_spans: spans_pb(&h.positive_spans),
            positive_deltas: h.positive_deltas.clone(),
            positive_counts: Vec::new(),
            reset_hint: i32::from(h.reset_hint),
            timestamp: t,
            custom_values: h.custom_values.clone(),
        }),
        Value::FloatHistogram(h) => Some(pb::Histogram {
            count: Some(pb::histogram::Count::CountFloat(h.count)),
            sum: h.sum,
            schema: h.schema,
            zero_threshold: h.zero_threshold,
            zero_count: Some(pb::histogram::ZeroCount::ZeroCountFloat(h.zero_count)),
            negative_spans: spans_pb(&h.negative_spans),
            negative_deltas: Vec::new(),
            negative_counts: h.negative_buckets.clone(),
            positive_spans: spans_pb(&h.positive_spans),
            positive_deltas: Vec::new(),
            positive_counts: h.positive_buckets.clone(),
            reset_hint: i32::from(h.reset_hint),
            timestamp: t,
            custom_values: h.custom_values.clone(),
        }),
    }
}

/// Builds the SAMPLES answer (protobuf, not yet compressed): float
/// samples in `samples`, native histograms in `histograms` (a series
/// that holds both has both, each in time order). The sample limit
/// counts both.
pub(crate) fn samples_response(
    queries: &[ReadQuery],
    selected: &[Vec<Series>],
    sample_limit: usize,
) -> Result<pb::ReadResponse, ReadError> {
    let mut total = 0usize;
    let mut count = |n: usize| -> Result<(), ReadError> {
        total += n;
        if sample_limit > 0 && total > sample_limit {
            return Err(ReadError::BadRequest(format!(
                "exceeded sample limit ({sample_limit})"
            )));
        }
        Ok(())
    };
    let mut results = Vec::with_capacity(queries.len());
    for (q, series) in queries.iter().zip(selected) {
        let mut ts = Vec::with_capacity(series.len());
        for s in series {
            let mut samples = Vec::new();
            let mut histograms = Vec::new();
            if !q.hints.labels_only {
                if s.has_histograms() {
                    let typed = s.typed_samples(q.hints.start, q.hints.end).map_err(|e| {
                        ReadError::Internal(format!("reading series {}: {e}", s.labels))
                    })?;
                    count(typed.len())?;
                    for (t, v) in &typed {
                        match v {
                            Value::Float(val) => samples.push(pb::Sample {
                                value: *val,
                                timestamp: *t,
                            }),
                            _ => histograms.extend(histogram_pb(*t, v)),
                        }
                    }
                } else {
                    for (t, val) in s.iter(q.hints.start, q.hints.end) {
                        count(1)?;
                        samples.push(pb::Sample {
                            value: val,
                            timestamp: t,
                        });
                    }
                }
                if samples.is_empty() && histograms.is_empty() {
                    continue;
                }
            }
            ts.push(pb::TimeSeries {
                labels: labels_pb(&s.labels),
                samples,
                histograms,
                ..Default::default()
            });
        }
        results.push(pb::QueryResult { timeseries: ts });
    }
    Ok(pb::ReadResponse { results })
}

/// The remote-read chunk type of a Prometheus chunk encoding byte (`None`
/// for encodings clients do not know).
fn chunk_type(encoding: u8) -> Option<pb::chunk::Encoding> {
    match Encoding::from_u8(encoding)? {
        Encoding::Xor => Some(pb::chunk::Encoding::Xor),
        Encoding::Histogram => Some(pb::chunk::Encoding::Histogram),
        Encoding::FloatHistogram => Some(pb::chunk::Encoding::FloatHistogram),
        // Stratus-only encodings: converted (start timestamps dropped).
        Encoding::Compact
        | Encoding::XorSt
        | Encoding::HistogramSt
        | Encoding::FloatHistogramSt => None,
    }
}

/// The stored chunks as they are, when every part is a Prometheus chunk
/// (XOR, histogram or float histogram) of 1 to `max_samples` samples
/// inside `[mint, maxt]` and the chunks are time-ordered without overlap.
fn passthrough_chunks(
    parts: &[Part],
    mint: i64,
    maxt: i64,
    max_samples: usize,
) -> Option<Vec<pb::Chunk>> {
    if parts.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(parts.len());
    let mut prev_max = i64::MIN;
    for p in parts {
        let Part::Chunk {
            mint: lo,
            maxt: hi,
            encoding,
            data,
        } = p
        else {
            return None;
        };
        let kind = chunk_type(*encoding)?;
        let n = stratus_tsdb::chunk_num_samples_any(*encoding, data).ok()?;
        let fits = *lo >= mint
            && *hi <= maxt
            && (prev_max == i64::MIN || *lo > prev_max)
            && n > 0
            && n <= max_samples;
        if !fits {
            return None;
        }
        prev_max = *hi;
        out.push(pb::Chunk {
            min_time_ms: *lo,
            max_time_ms: *hi,
            r#type: kind as i32,
            data: data.to_vec(),
        });
    }
    Some(out)
}

/// Encodes float samples (sorted, unique timestamps) into XOR chunks of
/// at most `max_samples` samples, appending them to `out`.
fn encode_xor(
    samples: impl Iterator<Item = (i64, f64)>,
    max_samples: usize,
    out: &mut Vec<pb::Chunk>,
) {
    let mut app = XorAppender::new();
    let mut first = i64::MIN;
    let mut last = i64::MIN;
    let flush = |app: XorAppender, first: i64, last: i64, out: &mut Vec<pb::Chunk>| {
        out.push(pb::Chunk {
            min_time_ms: first,
            max_time_ms: last,
            r#type: pb::chunk::Encoding::Xor as i32,
            data: app.into_bytes(),
        });
    };
    for (t, v) in samples {
        if app.num_samples() >= max_samples.max(1) {
            let full = std::mem::take(&mut app);
            flush(full, first, last, out);
        }
        if app.num_samples() == 0 {
            first = t;
        }
        app.append(t, v);
        last = t;
    }
    if app.num_samples() > 0 {
        flush(app, first, last, out);
    }
}

/// The series' float data in `[mint, maxt]` as Prometheus XOR chunks of
/// at most `max_samples` samples, time-ordered and non-overlapping
/// (native histograms are left out; see [`series_chunks`]).
pub(crate) fn xor_chunks(s: &Series, mint: i64, maxt: i64, max_samples: usize) -> Vec<pb::Chunk> {
    if !s.has_histograms()
        && let Some(c) = passthrough_chunks(&s.parts, mint, maxt, max_samples)
    {
        return c;
    }
    let mut out = Vec::new();
    encode_xor(s.iter(mint, maxt), max_samples, &mut out);
    out
}

/// The series' data in `[mint, maxt]` as Prometheus chunks of at most
/// `max_samples` samples, time-ordered and non-overlapping: XOR chunks
/// for floats, HISTOGRAM / FLOAT_HISTOGRAM chunks (tsdb encodings 2/3)
/// for native histograms. Stored chunks pass through byte for byte when
/// they all qualify ([`passthrough_chunks`]); otherwise the series is
/// merged and re-encoded, a new chunk starting wherever the sample type
/// changes (and where the histogram layout or a counter reset needs it).
pub(crate) fn series_chunks(
    s: &Series,
    mint: i64,
    maxt: i64,
    max_samples: usize,
) -> Result<Vec<pb::Chunk>, String> {
    if !s.has_histograms() {
        return Ok(xor_chunks(s, mint, maxt, max_samples));
    }
    if let Some(c) = passthrough_chunks(&s.parts, mint, maxt, max_samples) {
        return Ok(c);
    }
    let typed = s
        .typed_samples(mint, maxt)
        .map_err(|e| format!("reading series {}: {e}", s.labels))?;
    let mut out = Vec::new();
    let mut rest = typed.as_slice();
    while let Some(first) = rest.first() {
        let hist = first.1.is_histogram();
        let n = rest
            .iter()
            .position(|x| x.1.is_histogram() != hist)
            .unwrap_or(rest.len());
        let (run, tail) = rest.split_at(n);
        if hist {
            for (lo, hi, encoding, data) in encode_histogram_chunks(run, max_samples) {
                let kind = chunk_type(encoding).unwrap_or(pb::chunk::Encoding::Histogram);
                out.push(pb::Chunk {
                    min_time_ms: lo,
                    max_time_ms: hi,
                    r#type: kind as i32,
                    data,
                });
            }
        } else {
            let floats = run.iter().filter_map(|(t, v)| match v {
                Value::Float(f) => Some((*t, *f)),
                _ => None,
            });
            encode_xor(floats, max_samples, &mut out);
        }
        rest = tail;
    }
    Ok(out)
}

/// Appends one frame: `uvarint(len)`, CRC-32C (big-endian) of the
/// message, the message.
pub(crate) fn write_frame(out: &mut Vec<u8>, msg: &pb::ChunkedReadResponse) {
    let body = msg.encode_to_vec();
    prost::encoding::encode_varint(body.len() as u64, out);
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
}

/// Encodes the frames of one series (at least one; more when its chunks
/// exceed `max_frame` bytes), calling `emit` with each.
pub(crate) fn series_frames(
    labels: &Labels,
    chunks: Vec<pb::Chunk>,
    query_index: i64,
    max_frame: usize,
    emit: &mut dyn FnMut(&pb::ChunkedReadResponse),
) {
    let labels = labels_pb(labels);
    let base: usize = labels.iter().map(|l| l.encoded_len() + 4).sum::<usize>() + 16;
    let mut frame = pb::ChunkedReadResponse {
        chunked_series: vec![pb::ChunkedSeries {
            labels: labels.clone(),
            chunks: Vec::new(),
        }],
        query_index,
    };
    let mut size = base;
    let mut sent_any = false;
    for c in chunks {
        let n = c.encoded_len() + 4;
        let current = &mut frame.chunked_series[0].chunks;
        if !current.is_empty() && size + n > max_frame {
            emit(&frame);
            sent_any = true;
            frame.chunked_series[0].chunks.clear();
            size = base;
        }
        frame.chunked_series[0].chunks.push(c);
        size += n;
    }
    if !frame.chunked_series[0].chunks.is_empty() || !sent_any {
        emit(&frame);
    }
}

/// Writes a streamed answer into `tx` piece by piece (blocking). Stops
/// when the client goes away.
fn stream_body(
    queries: &[ReadQuery],
    selected: Vec<Vec<Series>>,
    max_frame: usize,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut buf = Vec::with_capacity(STREAM_BUFFER);
    let mut gone = false;
    for (qi, (q, series)) in queries.iter().zip(selected).enumerate() {
        for s in series {
            let chunks = if q.hints.labels_only {
                Vec::new()
            } else {
                let c = match series_chunks(&s, q.hints.start, q.hints.end, MAX_CHUNK_SAMPLES) {
                    Ok(c) => c,
                    Err(e) => {
                        // Headers are gone: abort the body so the client
                        // sees a broken stream, not a short answer.
                        tracing::error!(error = %e, "remote read stream aborted");
                        let _ = tx.blocking_send(Err(std::io::Error::other(e)));
                        return;
                    }
                };
                if c.is_empty() {
                    continue;
                }
                c
            };
            series_frames(&s.labels, chunks, qi as i64, max_frame, &mut |f| {
                write_frame(&mut buf, f);
            });
            if buf.len() >= STREAM_BUFFER {
                let piece = Bytes::from(std::mem::take(&mut buf));
                if tx.blocking_send(Ok(piece)).is_err() {
                    gone = true;
                    break;
                }
            }
        }
        if gone {
            return;
        }
    }
    if !buf.is_empty() {
        let _ = tx.blocking_send(Ok(Bytes::from(buf)));
    }
}

async fn run(st: &Arc<AppState>, headers: &HeaderMap, body: Bytes) -> Result<Response, ReadError> {
    let tenant = match st.tenant(headers) {
        Ok(t) => t,
        Err(e) => return Ok(e.into_response()),
    };
    if let Some(enc) = headers.get(header::CONTENT_ENCODING) {
        let ok = enc
            .to_str()
            .is_ok_and(|s| s.trim().is_empty() || s.trim().eq_ignore_ascii_case("snappy"));
        if !ok {
            return Err(ReadError::BadRequest(format!(
                "unsupported Content-Encoding {enc:?}: remote read requests are snappy (block format) compressed"
            )));
        }
    }
    let max = st.cfg.max_decompressed_bytes;
    let raw = decompress_snappy(&body, max).map_err(|e| match e {
        DecodeError::TooLarge { .. } => ReadError::TooLarge(e.to_string()),
        _ => ReadError::BadRequest(e.to_string()),
    })?;
    let req = pb::ReadRequest::decode(raw.as_slice()).map_err(|e| {
        ReadError::BadRequest(format!(
            "protobuf decoding of prometheus.ReadRequest failed: {e}"
        ))
    })?;
    let rtype = negotiate(&req.accepted_response_types).map_err(ReadError::BadRequest)?;
    st.metrics
        .remote_reads
        .get_or_create(&ResponseTypeLabels {
            response_type: match rtype {
                ResponseType::Samples => "samples",
                ResponseType::StreamedXorChunks => "streamed_xor_chunks",
            },
        })
        .inc();
    let queries: Vec<ReadQuery> = req
        .queries
        .iter()
        .map(convert_query)
        .collect::<Result<_, _>>()
        .map_err(ReadError::BadRequest)?;
    let db = st
        .db_for_read(&tenant)
        .await
        .map_err(|e| ReadError::Internal(format!("opening the tenant database: {e}")))?;
    let permit = st
        .query_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ReadError::Unavailable("the server is shutting down".into()))?;
    let series_limit = st.cfg.remote_read_series_limit;
    let sample_limit = st.cfg.remote_read_sample_limit;
    let max_frame = st.cfg.remote_read_max_frame_bytes.max(1024);
    let (queries, selected) = tokio::task::spawn_blocking(move || {
        let sel = select_all(db.as_deref(), &queries, series_limit)?;
        Ok::<_, ReadError>((queries, sel))
    })
    .await
    .map_err(|e| ReadError::Internal(format!("read task failed: {e}")))??;
    match rtype {
        ResponseType::Samples => {
            let body = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let resp = samples_response(&queries, &selected, sample_limit)?;
                snap::raw::Encoder::new()
                    .compress_vec(&resp.encode_to_vec())
                    .map_err(|e| ReadError::Internal(format!("snappy compression failed: {e}")))
            })
            .await
            .map_err(|e| ReadError::Internal(format!("read task failed: {e}")))??;
            Ok((
                [
                    (header::CONTENT_TYPE, "application/x-protobuf"),
                    (header::CONTENT_ENCODING, "snappy"),
                ],
                body,
            )
                .into_response())
        }
        ResponseType::StreamedXorChunks => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                stream_body(&queries, selected, max_frame, &tx);
            });
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            Ok((
                [(header::CONTENT_TYPE, STREAMED_CONTENT_TYPE)],
                Body::from_stream(stream),
            )
                .into_response())
        }
    }
}

/// `POST /api/v1/read` (and under the read prefixes).
pub(crate) async fn read(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&st, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn series(parts: Vec<Part>) -> Series {
        Series {
            labels: Labels::from_pairs([("__name__", "m")]),
            parts,
        }
    }

    fn xor_part(samples: &[(i64, f64)]) -> Part {
        let mut a = XorAppender::new();
        for &(t, v) in samples {
            a.append(t, v);
        }
        Part::Chunk {
            mint: samples[0].0,
            maxt: samples[samples.len() - 1].0,
            encoding: Encoding::Xor.as_u8(),
            data: Arc::from(a.into_bytes()),
        }
    }

    fn decode(chunks: &[pb::Chunk]) -> Vec<(i64, f64)> {
        let mut out = Vec::new();
        for c in chunks {
            assert_eq!(c.r#type, 1);
            let s = stratus_tsdb::decode_xor(&c.data).unwrap();
            assert!(s.len() <= MAX_CHUNK_SAMPLES);
            assert_eq!(s.first().unwrap().0, c.min_time_ms);
            assert_eq!(s.last().unwrap().0, c.max_time_ms);
            out.extend(s);
        }
        out
    }

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(&[]), Ok(ResponseType::Samples));
        assert_eq!(negotiate(&[1, 0]), Ok(ResponseType::StreamedXorChunks));
        assert_eq!(negotiate(&[0, 1]), Ok(ResponseType::Samples));
        assert_eq!(negotiate(&[7, 1]), Ok(ResponseType::StreamedXorChunks));
        assert!(negotiate(&[7]).is_err());
    }

    #[test]
    fn passthrough_and_reencode() {
        let a: Vec<(i64, f64)> = (0..100).map(|i| (i * 10, i as f64)).collect();
        let b: Vec<(i64, f64)> = (100..200).map(|i| (i * 10, i as f64)).collect();
        let s = series(vec![xor_part(&a), xor_part(&b)]);
        let c = xor_chunks(&s, 0, 10_000, MAX_CHUNK_SAMPLES);
        assert_eq!(c.len(), 2);
        let want: Vec<(i64, f64)> = a.iter().chain(&b).copied().collect();
        assert_eq!(decode(&c), want);
        // Trimmed to a range: re-encoded, bounded.
        let c = xor_chunks(&s, 55, 1_505, MAX_CHUNK_SAMPLES);
        let got = decode(&c);
        assert_eq!(got.first().unwrap().0, 60);
        assert_eq!(got.last().unwrap().0, 1500);
        assert_eq!(got.len(), 145);
        // Big chunk and floats: re-encoded in chunks of at most 120.
        let big: Vec<(i64, f64)> = (0..300).map(|i| (i, -(i as f64))).collect();
        let s = series(vec![
            xor_part(&big),
            Part::Floats(Arc::from(vec![(5000, 1.5)])),
        ]);
        let c = xor_chunks(&s, i64::MIN, i64::MAX, MAX_CHUNK_SAMPLES);
        assert_eq!(c.len(), 3);
        let mut want = big.clone();
        want.push((5000, 1.5));
        assert_eq!(decode(&c), want);
    }

    fn int_hist(k: u64) -> stratus_model::Histogram {
        stratus_model::Histogram {
            count: 2 * k,
            sum: k as f64,
            schema: 1,
            positive_spans: vec![BucketSpan {
                offset: 0,
                length: 2,
            }],
            positive_deltas: vec![k as i64, 0],
            ..Default::default()
        }
    }

    fn hist_part(from: u64, to: u64) -> Part {
        let mut a = stratus_tsdb::HistogramAppender::new(stratus_tsdb::CounterResetHeader::Unknown);
        for k in from..to {
            a.append(k as i64 * 10, &int_hist(k));
        }
        Part::Chunk {
            mint: from as i64 * 10,
            maxt: (to as i64 - 1) * 10,
            encoding: Encoding::Histogram.as_u8(),
            data: Arc::from(a.into_bytes()),
        }
    }

    #[test]
    fn histogram_chunks_pass_through_or_reencode() {
        let s = series(vec![hist_part(1, 50), hist_part(50, 100)]);
        let Part::Chunk { data, .. } = &s.parts[0] else {
            unreachable!()
        };
        // Inside the range: the stored bytes.
        let c = series_chunks(&s, 0, 10_000, MAX_CHUNK_SAMPLES).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].data, data.to_vec());
        assert_eq!(c[0].r#type, pb::chunk::Encoding::Histogram as i32);
        // Trimmed: re-encoded, decodes to the window.
        let c = series_chunks(&s, 105, 505, MAX_CHUNK_SAMPLES).unwrap();
        let got: Vec<(i64, stratus_model::Histogram)> = c
            .iter()
            .flat_map(|c| stratus_tsdb::decode_histogram(&c.data).unwrap())
            .collect();
        assert_eq!(got.len(), 40);
        assert_eq!(got[0].0, 110);
        assert_eq!(got[0].1.positive_deltas, vec![11, 0]);
        assert_eq!(got[39].0, 500);
        // Floats then histograms: an XOR chunk, then histogram chunks.
        let s = series(vec![
            Part::Floats(Arc::from(vec![(0, 1.0), (5, 2.0)])),
            hist_part(1, 10),
        ]);
        let c = series_chunks(&s, i64::MIN, i64::MAX, MAX_CHUNK_SAMPLES).unwrap();
        let types: Vec<i32> = c.iter().map(|c| c.r#type).collect();
        assert_eq!(types, vec![1, 2]);
        assert_eq!(decode(&c[..1]), vec![(0, 1.0), (5, 2.0)]);
        // SAMPLES: the histograms as messages.
        let q = ReadQuery {
            matchers: Vec::new(),
            hints: SelectHints::range(0, 30),
        };
        let r = samples_response(std::slice::from_ref(&q), &[vec![s]], 0).unwrap();
        let t = &r.results[0].timeseries[0];
        assert_eq!(t.samples.len(), 2);
        assert_eq!(t.histograms.len(), 3);
        assert_eq!(t.histograms[2].timestamp, 30);
        assert_eq!(
            t.histograms[2].count,
            Some(pb::histogram::Count::CountInt(6))
        );
        assert_eq!(t.histograms[2].positive_deltas, vec![3, 0]);
    }

    #[test]
    fn compact_chunks_become_xor() {
        let samples: Vec<(i64, f64)> = (0..500)
            .map(|i| (i * 15_000, (i % 7) as f64 * 0.1))
            .collect();
        let s = series(vec![Part::Chunk {
            mint: 0,
            maxt: 499 * 15_000,
            encoding: Encoding::Compact.as_u8(),
            data: Arc::from(stratus_tsdb::encode_compact(&samples)),
        }]);
        let c = xor_chunks(&s, i64::MIN, i64::MAX, MAX_CHUNK_SAMPLES);
        assert_eq!(c.len(), 5);
        assert_eq!(decode(&c), samples);
    }

    #[test]
    fn frames_split_and_checksum() {
        let samples: Vec<(i64, f64)> = (0..1200).map(|i| (i * 1000, i as f64 * 0.5)).collect();
        let s = series(vec![Part::Floats(Arc::from(samples.clone()))]);
        let chunks = xor_chunks(&s, i64::MIN, i64::MAX, MAX_CHUNK_SAMPLES);
        assert_eq!(chunks.len(), 10);
        let mut frames = Vec::new();
        series_frames(&s.labels, chunks, 3, 600, &mut |f| frames.push(f.clone()));
        assert!(frames.len() > 1);
        let mut buf = Vec::new();
        for f in &frames {
            write_frame(&mut buf, f);
        }
        // Decode the byte stream back.
        let mut rest = &buf[..];
        let mut got = Vec::new();
        let mut n = 0;
        while !rest.is_empty() {
            let len = prost::encoding::decode_varint(&mut rest).unwrap() as usize;
            let crc = u32::from_be_bytes(rest[..4].try_into().unwrap());
            let msg = &rest[4..4 + len];
            assert_eq!(crc, crc32c::crc32c(msg));
            let f = pb::ChunkedReadResponse::decode(msg).unwrap();
            assert_eq!(f.query_index, 3);
            assert_eq!(f.chunked_series.len(), 1);
            got.extend(decode(&f.chunked_series[0].chunks));
            rest = &rest[4 + len..];
            n += 1;
        }
        assert_eq!(n, frames.len());
        assert_eq!(got, samples);
    }

    #[test]
    fn queries_convert() {
        let q = pb::Query {
            start_timestamp_ms: 1000,
            end_timestamp_ms: 9000,
            matchers: vec![
                pb::LabelMatcher {
                    r#type: 0,
                    name: "__name__".into(),
                    value: "up".into(),
                },
                pb::LabelMatcher {
                    r#type: 3,
                    name: "job".into(),
                    value: "a|b".into(),
                },
            ],
            hints: Some(pb::ReadHints {
                start_ms: 2000,
                end_ms: 8000,
                step_ms: 15,
                func: "series".into(),
                ..Default::default()
            }),
        };
        let r = convert_query(&q).unwrap();
        assert_eq!(r.matchers.len(), 2);
        assert_eq!(r.matchers[1].kind, MatchType::RegexNoMatch);
        assert!(!r.matchers[1].matches("a") && r.matchers[1].matches("ab"));
        assert_eq!((r.hints.start, r.hints.end, r.hints.step), (2000, 8000, 15));
        assert!(r.hints.labels_only);
        let mut bad = q.clone();
        bad.matchers[1].value = "(".into();
        assert!(convert_query(&bad).is_err());
        bad.matchers[1].r#type = 9;
        assert!(convert_query(&bad).is_err());
    }
}
