//! Start timestamps over real HTTP: remote write 2.0 `start_timestamp`
//! and OTLP `start_time_unix_nano` stored per sample (with
//! `start_timestamp_storage`), kept across a restart (WAL), and used by
//! PromQL (`start_timestamp()`, `increase`/`rate`/`resets`) with
//! `promql_use_start_timestamps`; without storage the answer is the
//! extrapolated one.

use prost::Message;
use reqwest::StatusCode;
use serde_json::Value;
use stratus_api::{AuthMode, ServerConfig};
use stratus_proto::otlp_collector::ExportMetricsServiceRequest;
use stratus_proto::otlp_metrics as pb;
use stratus_proto::write_v2;

mod common;
use common::{Server, now_ms, snappy, start_with};

const CT_V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

fn config(dir: &std::path::Path, store: bool, use_sts: bool) -> ServerConfig {
    ServerConfig {
        data_dir: dir.to_path_buf(),
        auth: AuthMode::None,
        start_timestamp_storage: store,
        promql_use_start_timestamps: use_sts,
        ..ServerConfig::default()
    }
}

/// The single value of an instant query at `t_ms` (`None`: empty result).
async fn value(srv: &Server, q: &str, t_ms: i64) -> Option<f64> {
    let t = format!("{}.{:03}", t_ms / 1000, t_ms % 1000);
    let r = srv
        .client
        .get(format!("{}/api/v1/query", srv.base))
        .query(&[("query", q), ("time", t.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{q}");
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let res = v["data"]["result"].as_array().unwrap();
    assert!(res.len() <= 1, "{q}: {v}");
    res.first()
        .map(|s| s["value"][1].as_str().unwrap().parse().unwrap())
}

/// `got` is `want` up to rounding.
#[track_caller]
fn approx(got: Option<f64>, want: f64) {
    let g = got.unwrap_or(f64::NAN);
    assert!((g - want).abs() < 1e-9, "got {got:?}, want {want}");
}

async fn push_v2(srv: &Server, req: &write_v2::Request) {
    let r = srv
        .client
        .post(format!("{}/api/v1/write", srv.base))
        .header("Content-Type", CT_V2)
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "2.0.0")
        .body(snappy(&req.encode_to_vec()))
        .send()
        .await
        .unwrap();
    let st = r.status();
    assert_eq!(st, StatusCode::NO_CONTENT, "{}", r.text().await.unwrap());
}

/// A counter `name` sampled every 10 s from `t0 + 10 s` to `t0 + 60 s`
/// (values 10..60, +1/s since its start at `t0`).
fn rw2_counter(name: &str, t0: i64) -> write_v2::Request {
    write_v2::Request {
        symbols: ["", "__name__", name]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        timeseries: vec![write_v2::TimeSeries {
            labels_refs: vec![1, 2],
            samples: (1..=6)
                .map(|i| write_v2::Sample {
                    value: 10.0 * i as f64,
                    timestamp: t0 + 10_000 * i,
                    start_timestamp: t0,
                })
                .collect(),
            ..Default::default()
        }],
    }
}

/// `t0` on a whole second, two minutes ago.
fn t0() -> i64 {
    (now_ms() - 120_000) / 1000 * 1000
}

// Without start timestamps, increase over [t0+60s-5m, t0+60s] of the
// counter extrapolates half a sample interval to the left: 50 * 55 / 50.
const EXTRAPOLATED: f64 = 55.0;
// With them, the counter started at t0 from zero: 60.
const FROM_START: f64 = 60.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rw2_start_timestamps_are_stored_and_used_by_promql() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = t0();
    let end = t0 + 60_000;

    let srv = start_with(config(dir.path(), true, true)).await;
    push_v2(&srv, &rw2_counter("a_total", t0)).await;
    // A restart of the counter that only the start timestamp reveals:
    // the value keeps growing, but it started again after the previous
    // sample.
    let mut r = rw2_counter("b_total", t0);
    let s = &mut r.timeseries[0].samples;
    s[3].start_timestamp = t0 + 35_000;
    s[3].value = 35.0;
    for x in &mut s[4..] {
        x.start_timestamp = t0 + 35_000;
    }
    push_v2(&srv, &r).await;

    assert_eq!(
        value(&srv, "start_timestamp(a_total)", end).await,
        Some(t0 as f64 / 1000.0)
    );
    approx(value(&srv, "increase(a_total[5m])", end).await, FROM_START);
    approx(
        value(&srv, "rate(a_total[5m])", end).await,
        FROM_START / 300.0,
    );
    assert_eq!(value(&srv, "resets(b_total[5m])", end).await, Some(1.0));
    srv.stop().await;

    // Restarted (WAL replay) with the query option off: the stored
    // starts are ignored, the answer is the extrapolated one.
    let srv = start_with(config(dir.path(), true, false)).await;
    approx(
        value(&srv, "increase(a_total[5m])", end).await,
        EXTRAPOLATED,
    );
    assert_eq!(value(&srv, "resets(b_total[5m])", end).await, Some(0.0));
    srv.stop().await;

    // Query option on, storage off: what was stored before still counts
    // (replayed from the WAL), a new push keeps no start timestamps.
    let srv = start_with(config(dir.path(), false, true)).await;
    approx(value(&srv, "increase(a_total[5m])", end).await, FROM_START);
    push_v2(&srv, &rw2_counter("c_total", t0)).await;
    approx(
        value(&srv, "increase(c_total[5m])", end).await,
        EXTRAPOLATED,
    );
    // Unknown start: 0.
    assert_eq!(
        value(&srv, "start_timestamp(c_total)", end).await,
        Some(0.0)
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_start_times_are_stored_and_used_by_promql() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = t0();
    let end = t0 + 60_000;
    let ns = |ms: i64| ms as u64 * 1_000_000;
    let request = |name: &str| ExportMetricsServiceRequest {
        resource_metrics: vec![pb::ResourceMetrics {
            scope_metrics: vec![pb::ScopeMetrics {
                metrics: vec![pb::Metric {
                    name: name.into(),
                    data: Some(pb::metric::Data::Sum(pb::Sum {
                        data_points: (1..=6)
                            .map(|i| pb::NumberDataPoint {
                                start_time_unix_nano: ns(t0),
                                time_unix_nano: ns(t0 + 10_000 * i),
                                value: Some(pb::number_data_point::Value::AsDouble(
                                    10.0 * i as f64,
                                )),
                                ..Default::default()
                            })
                            .collect(),
                        aggregation_temporality: pb::AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let post = |srv: &Server, req: ExportMetricsServiceRequest| {
        srv.client
            .post(format!("{}/otlp/v1/metrics", srv.base))
            .header("Content-Type", "application/x-protobuf")
            .body(req.encode_to_vec())
            .send()
    };

    let srv = start_with(config(dir.path(), true, true)).await;
    let r = post(&srv, request("reqs")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        value(&srv, "start_timestamp(reqs_total)", end).await,
        Some(t0 as f64 / 1000.0)
    );
    approx(
        value(&srv, "increase(reqs_total[5m])", end).await,
        FROM_START,
    );
    srv.stop().await;

    // Without storage the same export gives the extrapolated answer.
    let srv = start_with(config(dir.path(), false, true)).await;
    let r = post(&srv, request("other")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    approx(
        value(&srv, "increase(other_total[5m])", end).await,
        EXTRAPOLATED,
    );
    srv.stop().await;
}
