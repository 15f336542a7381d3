//! Remote read of native histograms over real HTTP: integer and float
//! histograms (and a series switching from floats to histograms) pushed
//! with remote write 1.0 come back in SAMPLES answers (`histograms` of
//! each `TimeSeries`) and in streamed answers as HISTOGRAM /
//! FLOAT_HISTOGRAM chunks, decoded here with the tsdb chunk decoders; and
//! a real Prometheus 2.42 (`--enable-feature=native-histograms`) reads
//! them through `remote_read`.

use prost::Message;
use reqwest::StatusCode;
use serde_json::Value;
use stratus_api::AuthMode;
use stratus_proto::prometheus as pb;

mod common;
use common::prometheus::start_prometheus;
use common::{Server, now_ms, snappy, start, ts};

const STEP: i64 = 15_000;
const N: i64 = 40;

async fn push(srv: &Server, series: Vec<pb::TimeSeries>) {
    let body = pb::WriteRequest {
        timeseries: series,
        metadata: Vec::new(),
    }
    .encode_to_vec();
    let r = srv
        .client
        .post(format!("{}/api/v1/push", srv.base))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .body(snappy(&body))
        .send()
        .await
        .unwrap();
    let st = r.status();
    assert_eq!(st, StatusCode::NO_CONTENT, "{}", r.text().await.unwrap());
}

async fn remote_read(srv: &Server, req: &pb::ReadRequest) -> (StatusCode, Vec<u8>) {
    let r = srv
        .client
        .post(format!("{}/api/v1/read", srv.base))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Read-Version", "0.1.0")
        .body(snappy(&req.encode_to_vec()))
        .send()
        .await
        .unwrap();
    (r.status(), r.bytes().await.unwrap().to_vec())
}

fn base_ms() -> i64 {
    (now_ms() / 60_000) * 60_000 - 20 * 60_000
}

/// The k-th integer histogram: schema 0, buckets 1..=3 growing by k.
fn int_hist(t: i64, k: i64) -> pb::Histogram {
    let k = k as u64;
    pb::Histogram {
        count: Some(pb::histogram::Count::CountInt(3 * k + 1)),
        zero_count: Some(pb::histogram::ZeroCount::ZeroCountInt(1)),
        zero_threshold: 0.001,
        sum: 2.5 * k as f64,
        schema: 0,
        positive_spans: vec![pb::BucketSpan {
            offset: 0,
            length: 3,
        }],
        // Absolute counts k, k, k as deltas.
        positive_deltas: vec![k as i64, 0, 0],
        timestamp: t,
        ..Default::default()
    }
}

/// The k-th float histogram: a custom-bucket (schema -53) gauge.
fn float_hist(t: i64, k: i64) -> pb::Histogram {
    let a = (k % 5) as f64 + 0.5;
    pb::Histogram {
        count: Some(pb::histogram::Count::CountFloat(a + 2.0)),
        zero_count: Some(pb::histogram::ZeroCount::ZeroCountFloat(0.0)),
        sum: 10.0 * a,
        schema: -53,
        positive_spans: vec![pb::BucketSpan {
            offset: 0,
            length: 2,
        }],
        positive_counts: vec![a, 2.0],
        custom_values: vec![1.0, 5.0],
        reset_hint: 3,
        timestamp: t,
        ..Default::default()
    }
}

fn hseries(name: &str, hs: Vec<pb::Histogram>) -> pb::TimeSeries {
    pb::TimeSeries {
        labels: vec![pb::Label {
            name: "__name__".into(),
            value: name.into(),
        }],
        histograms: hs,
        ..Default::default()
    }
}

async fn push_data(srv: &Server, base: i64) {
    push(
        srv,
        vec![
            hseries(
                "h_int",
                (0..N).map(|k| int_hist(base + k * STEP, k)).collect(),
            ),
            hseries(
                "h_float",
                (0..N).map(|k| float_hist(base + k * STEP, k)).collect(),
            ),
        ],
    )
    .await;
    // A series that switches from floats to histograms.
    let floats: Vec<(i64, f64)> = (0..10).map(|k| (base + k * STEP, k as f64)).collect();
    push(srv, vec![ts(&[("__name__", "mixed")], &floats)]).await;
    push(
        srv,
        vec![hseries(
            "mixed",
            (10..20).map(|k| int_hist(base + k * STEP, k)).collect(),
        )],
    )
    .await;
}

fn query(start: i64, end: i64, name: &str) -> pb::Query {
    pb::Query {
        start_timestamp_ms: start,
        end_timestamp_ms: end,
        matchers: vec![pb::LabelMatcher {
            r#type: 0,
            name: "__name__".into(),
            value: name.into(),
        }],
        hints: None,
    }
}

/// The fields a histogram keeps through storage (the reset hint becomes
/// the chunk's counter-reset header, so it is compared separately).
fn key(h: &pb::Histogram) -> pb::Histogram {
    pb::Histogram {
        reset_hint: 0,
        ..h.clone()
    }
}

/// A decoded streamed series: its chunks' types and typed samples.
#[derive(Debug, Default)]
struct Decoded {
    types: Vec<i32>,
    floats: Vec<(i64, f64)>,
    hists: Vec<pb::Histogram>,
}

fn decode_stream(mut body: &[u8]) -> Vec<(i64, String, Decoded)> {
    let mut out: Vec<(i64, String, Decoded)> = Vec::new();
    while !body.is_empty() {
        let len = prost::encoding::decode_varint(&mut body).unwrap() as usize;
        let crc = u32::from_be_bytes(body[..4].try_into().unwrap());
        let msg = &body[4..4 + len];
        assert_eq!(crc, crc32c::crc32c(msg), "frame CRC");
        let f = pb::ChunkedReadResponse::decode(msg).unwrap();
        let s = &f.chunked_series[0];
        let name = s.labels[0].value.clone();
        if out
            .last()
            .is_none_or(|l| (l.0, &l.1) != (f.query_index, &name))
        {
            out.push((f.query_index, name, Decoded::default()));
        }
        let d = &mut out.last_mut().unwrap().2;
        let mut prev_max = i64::MIN;
        for c in &s.chunks {
            assert!(c.min_time_ms > prev_max, "chunks ordered, non-overlapping");
            prev_max = c.max_time_ms;
            d.types.push(c.r#type);
            let ts: Vec<i64> = match c.r#type {
                1 => {
                    let x = stratus_tsdb::decode_xor(&c.data).unwrap();
                    d.floats.extend(&x);
                    x.iter().map(|s| s.0).collect()
                }
                2 => {
                    let x = stratus_tsdb::decode_histogram(&c.data).unwrap();
                    for (t, h) in &x {
                        d.hists.push(pb::Histogram {
                            count: Some(pb::histogram::Count::CountInt(h.count)),
                            zero_count: Some(pb::histogram::ZeroCount::ZeroCountInt(h.zero_count)),
                            zero_threshold: h.zero_threshold,
                            sum: h.sum,
                            schema: h.schema,
                            positive_spans: h
                                .positive_spans
                                .iter()
                                .map(|s| pb::BucketSpan {
                                    offset: s.offset,
                                    length: s.length,
                                })
                                .collect(),
                            positive_deltas: h.positive_deltas.clone(),
                            custom_values: h.custom_values.clone(),
                            timestamp: *t,
                            ..Default::default()
                        });
                    }
                    x.iter().map(|s| s.0).collect()
                }
                3 => {
                    let x = stratus_tsdb::decode_float_histogram(&c.data).unwrap();
                    for (t, h) in &x {
                        d.hists.push(pb::Histogram {
                            count: Some(pb::histogram::Count::CountFloat(h.count)),
                            zero_count: Some(pb::histogram::ZeroCount::ZeroCountFloat(
                                h.zero_count,
                            )),
                            zero_threshold: h.zero_threshold,
                            sum: h.sum,
                            schema: h.schema,
                            positive_spans: h
                                .positive_spans
                                .iter()
                                .map(|s| pb::BucketSpan {
                                    offset: s.offset,
                                    length: s.length,
                                })
                                .collect(),
                            positive_counts: h.positive_buckets.clone(),
                            custom_values: h.custom_values.clone(),
                            timestamp: *t,
                            ..Default::default()
                        });
                    }
                    x.iter().map(|s| s.0).collect()
                }
                other => panic!("unexpected chunk type {other}"),
            };
            assert!(!ts.is_empty() && ts.len() <= 120);
            assert_eq!(ts[0], c.min_time_ms);
            assert_eq!(*ts.last().unwrap(), c.max_time_ms);
        }
        body = &body[4 + len..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_read_native_histograms() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    let base = base_ms();
    push_data(&srv, base).await;
    let end = base + N * STEP;
    let want_int: Vec<pb::Histogram> = (0..N).map(|k| int_hist(base + k * STEP, k)).collect();
    let want_float: Vec<pb::Histogram> = (0..N).map(|k| float_hist(base + k * STEP, k)).collect();
    let want_mixed_h: Vec<pb::Histogram> = (10..20).map(|k| int_hist(base + k * STEP, k)).collect();
    let want_mixed_f: Vec<(i64, f64)> = (0..10).map(|k| (base + k * STEP, k as f64)).collect();
    let keys = |v: &[pb::Histogram]| v.iter().map(key).collect::<Vec<_>>();

    // SAMPLES.
    let req = pb::ReadRequest {
        queries: vec![
            query(base, end, "h_int"),
            query(base, end, "h_float"),
            query(base, end, "mixed"),
            // A window inside the data.
            query(base + 5 * STEP, base + 7 * STEP, "h_int"),
        ],
        accepted_response_types: vec![0],
    };
    let (st, body) = remote_read(&srv, &req).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
    let resp = pb::ReadResponse::decode(raw.as_slice()).unwrap();
    let r = &resp.results;
    assert_eq!(r[0].timeseries.len(), 1);
    assert!(r[0].timeseries[0].samples.is_empty());
    assert_eq!(keys(&r[0].timeseries[0].histograms), keys(&want_int));
    assert_eq!(keys(&r[1].timeseries[0].histograms), keys(&want_float));
    assert!(
        r[1].timeseries[0]
            .histograms
            .iter()
            .all(|h| h.reset_hint == 3)
    );
    let m = &r[2].timeseries[0];
    let mf: Vec<(i64, f64)> = m.samples.iter().map(|s| (s.timestamp, s.value)).collect();
    assert_eq!(mf, want_mixed_f);
    assert_eq!(keys(&m.histograms), keys(&want_mixed_h));
    assert_eq!(keys(&r[3].timeseries[0].histograms), keys(&want_int[5..=7]));

    // The sample limit counts histograms.
    srv.stop().await;
    let srv = common::start_with(stratus_api::ServerConfig {
        data_dir: dir.path().to_path_buf(),
        auth: AuthMode::None,
        remote_read_sample_limit: 30,
        ..stratus_api::ServerConfig::default()
    })
    .await;
    let req1 = pb::ReadRequest {
        queries: vec![query(base, end, "h_int")],
        accepted_response_types: vec![0],
    };
    let (st, body) = remote_read(&srv, &req1).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("exceeded sample limit (30)"));

    // STREAMED_XOR_CHUNKS: histogram chunks, whole range (stored chunks
    // pass through) and a window (re-encoded).
    let req = pb::ReadRequest {
        queries: vec![
            query(base - 1, end, "h_int"),
            query(base - 1, end, "h_float"),
            query(base - 1, end, "mixed"),
            query(base + 5 * STEP, base + 7 * STEP, "h_int"),
        ],
        accepted_response_types: vec![1, 0],
    };
    let (st, body) = remote_read(&srv, &req).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let got = decode_stream(&body);
    let names: Vec<(i64, &str)> = got.iter().map(|s| (s.0, s.1.as_str())).collect();
    assert_eq!(
        names,
        [(0, "h_int"), (1, "h_float"), (2, "mixed"), (3, "h_int")]
    );
    assert!(
        got[0].2.types.iter().all(|t| *t == 2),
        "{:?}",
        got[0].2.types
    );
    assert_eq!(keys(&got[0].2.hists), keys(&want_int));
    assert!(got[1].2.types.iter().all(|t| *t == 3));
    assert_eq!(keys(&got[1].2.hists), keys(&want_float));
    assert_eq!(got[2].2.types.first(), Some(&1));
    assert_eq!(got[2].2.types.last(), Some(&2));
    assert_eq!(got[2].2.floats, want_mixed_f);
    assert_eq!(keys(&got[2].2.hists), keys(&want_mixed_h));
    assert_eq!(keys(&got[3].2.hists), keys(&want_int[5..=7]));
    srv.stop().await;
}

/// A real Prometheus 2.42 (`--enable-feature=native-histograms`) reads a
/// SAMPLES answer carrying histograms through `remote_read`: the floats of
/// the mixed series come through intact. Prometheus 2.42's remote-read
/// client decodes only the `samples` of each series (its series iterator
/// learned `histograms` in a later release), so the histograms are
/// checked only when the installed client returns them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_reads_series_with_histograms() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    let base = base_ms();
    push_data(&srv, base).await;
    let pdir = tempfile::tempdir().unwrap();
    let prom = start_prometheus(
        pdir.path(),
        &format!(
            "global:\n  scrape_interval: 1h\nscrape_configs: []\nremote_read:\n  - url: {}/api/v1/read\n    read_recent: true\n",
            srv.base
        ),
        &["--enable-feature=native-histograms"],
    )
    .await;
    let client = common::http_client();
    let get = |q: &'static str, at: i64| {
        let client = client.clone();
        let url = format!("{}/api/v1/query", prom.base);
        async move {
            let at = format!("{}", at as f64 / 1000.0);
            let r = client
                .get(url)
                .query(&[("query", q), ("time", at.as_str())])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap()
        }
    };
    // Floats of the series that later holds histograms.
    let v = get("mixed[1m]", base + 5 * STEP).await;
    let vals = v["data"]["result"][0]["values"].as_array().unwrap();
    assert_eq!(vals.len(), 5, "{v}");
    assert_eq!(vals[4][1], "5");
    // Histograms: checked when this Prometheus' client decodes them.
    let v = get("h_int", base + 20 * STEP).await;
    if let Some(res) = v["data"]["result"].as_array().and_then(|r| r.first()) {
        // k = 20: count 61, sum 50.
        assert_eq!(res["histogram"][1]["count"], "61", "{v}");
        assert_eq!(res["histogram"][1]["sum"], "50", "{v}");
    }
    drop(prom);
    srv.stop().await;
}
