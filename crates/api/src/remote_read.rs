//! Prometheus remote read (`POST /api/v1/read`): a snappy-compressed
//! `prometheus.ReadRequest` in, one of two response types out.
//!
//! - **SAMPLES**: one snappy-compressed `ReadResponse` with a
//!   `QueryResult` per query (series sorted by labels, samples in time
//!   order), bounded by `remote_read_sample_limit` (400 `exceeded sample
//!   limit (N)` as Prometheus answers).
//! - **STREAMED_XOR_CHUNKS**: a stream of frames, each `uvarint(len)` +
//!   CRC-32C (big-endian) of the message + a `ChunkedReadResponse` holding
//!   chunks of one series; a series spans several frames when its chunks
//!   exceed `remote_read_max_frame_bytes`. Clients only understand
//!   Prometheus chunk encodings, so stored chunks pass through untouched
//!   only when they are XOR chunks of at most [`MAX_CHUNK_SAMPLES`]
//!   samples that lie inside the range and do not overlap; anything else
//!   (Stratus' compact encoding, overlapping or out-of-order data,
//!   tombstones, chunks straddling the range) is decoded, merged and
//!   re-encoded into XOR chunks of at most [`MAX_CHUNK_SAMPLES`] samples.
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
use stratus_model::{Labels, MatchType, Matcher};
use stratus_proto::prometheus as pb;
use stratus_tsdb::{Db, Encoding, Part, Queryable, SelectHints, Series, XorAppender};

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
enum ReadError {
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

/// Builds the SAMPLES answer (protobuf, not yet compressed).
pub(crate) fn samples_response(
    queries: &[ReadQuery],
    selected: &[Vec<Series>],
    sample_limit: usize,
) -> Result<pb::ReadResponse, String> {
    let mut total = 0usize;
    let mut results = Vec::with_capacity(queries.len());
    for (q, series) in queries.iter().zip(selected) {
        let mut ts = Vec::with_capacity(series.len());
        for s in series {
            let samples: Vec<pb::Sample> = if q.hints.labels_only {
                Vec::new()
            } else {
                let mut v = Vec::new();
                for (t, val) in s.iter(q.hints.start, q.hints.end) {
                    total += 1;
                    if sample_limit > 0 && total > sample_limit {
                        return Err(format!("exceeded sample limit ({sample_limit})"));
                    }
                    v.push(pb::Sample {
                        value: val,
                        timestamp: t,
                    });
                }
                if v.is_empty() {
                    continue;
                }
                v
            };
            ts.push(pb::TimeSeries {
                labels: labels_pb(&s.labels),
                samples,
                ..Default::default()
            });
        }
        results.push(pb::QueryResult { timeseries: ts });
    }
    Ok(pb::ReadResponse { results })
}

/// The series' data in `[mint, maxt]` as Prometheus XOR chunks of at most
/// `max_samples` samples, time-ordered and non-overlapping.
pub(crate) fn xor_chunks(s: &Series, mint: i64, maxt: i64, max_samples: usize) -> Vec<pb::Chunk> {
    let xor = Encoding::Xor.as_u8();
    let mut passthrough = Vec::with_capacity(s.parts.len());
    let mut prev_max = i64::MIN;
    let mut ok = !s.parts.is_empty();
    for p in &s.parts {
        match p {
            Part::Chunk {
                mint: lo,
                maxt: hi,
                encoding,
                data,
            } if *encoding == xor
                && *lo >= mint
                && *hi <= maxt
                && (prev_max == i64::MIN || *lo > prev_max)
                && stratus_tsdb::chunk_num_samples(data)
                    .is_ok_and(|n| n > 0 && usize::from(n) <= max_samples) =>
            {
                prev_max = *hi;
                passthrough.push(pb::Chunk {
                    min_time_ms: *lo,
                    max_time_ms: *hi,
                    r#type: pb::chunk::Encoding::Xor as i32,
                    data: data.to_vec(),
                });
            }
            _ => {
                ok = false;
                break;
            }
        }
    }
    if ok {
        return passthrough;
    }
    let mut out = Vec::new();
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
    for (t, v) in s.iter(mint, maxt) {
        if app.num_samples() >= max_samples.max(1) {
            let full = std::mem::take(&mut app);
            flush(full, first, last, &mut out);
        }
        if app.num_samples() == 0 {
            first = t;
        }
        app.append(t, v);
        last = t;
    }
    if app.num_samples() > 0 {
        flush(app, first, last, &mut out);
    }
    out
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
                let c = xor_chunks(&s, q.hints.start, q.hints.end, MAX_CHUNK_SAMPLES);
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
                let resp = samples_response(&queries, &selected, sample_limit)
                    .map_err(ReadError::BadRequest)?;
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
