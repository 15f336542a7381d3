//! Metric metadata (`/api/v1/metadata`) and exemplars
//! (`/api/v1/query_exemplars`) after remote write 1.0 and 2.0 pushes, the
//! exemplar store's bounds, and created-timestamp zero injection.

use prost::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};
use stratus_api::{AuthMode, ServerConfig};
use stratus_proto::{prometheus as pb, write_v2};

mod common;
use common::{Server, now_ms, snappy, start, start_with, ts};

const CT_V1: &str = "application/x-protobuf";
const CT_V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

async fn push(srv: &Server, ct: &str, body: Vec<u8>) -> reqwest::Response {
    srv.client
        .post(format!("{}/api/v1/push", srv.base))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", ct)
        .body(snappy(&body))
        .send()
        .await
        .unwrap()
}

async fn get(srv: &Server, pq: &str) -> (StatusCode, String) {
    let r = srv
        .client
        .get(format!("{}{pq}", srv.base))
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

async fn get_json(srv: &Server, pq: &str) -> Value {
    let (st, body) = get(srv, pq).await;
    assert_eq!(st, StatusCode::OK, "{pq}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn v1_exemplar(trace: &str, v: f64, t: i64) -> pb::Exemplar {
    pb::Exemplar {
        labels: vec![pb::Label {
            name: "trace_id".into(),
            value: trace.into(),
        }],
        value: v,
        timestamp: t,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_exemplars_from_rw1_and_rw2() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    let t0 = (now_ms() - 60_000) / 1000 * 1000;

    // Remote write 1.0: samples with exemplars, and a metadata list.
    let mut s = ts(&[("__name__", "req_total"), ("job", "a")], &[(t0, 1.0)]);
    s.exemplars = vec![
        v1_exemplar("abc", 1.0, t0),
        v1_exemplar("old", 0.5, t0 - 5000),
    ];
    let body = pb::WriteRequest {
        timeseries: vec![s],
        metadata: vec![pb::MetricMetadata {
            r#type: 1,
            metric_family_name: "req_total".into(),
            help: "Requests <served>.".into(),
            unit: String::new(),
        }],
    }
    .encode_to_vec();
    let r = push(&srv, CT_V1, body).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // Remote write 2.0: per-series metadata and exemplars.
    let symbols: Vec<String> = [
        "",
        "__name__",
        "lat_seconds",
        "job",
        "b",
        "Latency.",
        "seconds",
        "trace_id",
        "xyz",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let req = write_v2::Request {
        symbols,
        timeseries: vec![write_v2::TimeSeries {
            labels_refs: vec![1, 2, 3, 4],
            samples: vec![write_v2::Sample {
                value: 0.25,
                timestamp: t0 + 1500,
                start_timestamp: 0,
            }],
            exemplars: vec![
                write_v2::Exemplar {
                    labels_refs: vec![7, 8],
                    value: 0.25,
                    timestamp: t0 + 1500,
                },
                // Duplicate of the newest: a no-op that counts as written.
                write_v2::Exemplar {
                    labels_refs: vec![7, 8],
                    value: 0.25,
                    timestamp: t0 + 1500,
                },
            ],
            metadata: Some(write_v2::Metadata {
                r#type: 2,
                help_ref: 5,
                unit_ref: 6,
            }),
            ..Default::default()
        }],
    };
    let r = push(&srv, CT_V2, req.encode_to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        r.headers()["x-prometheus-remote-write-samples-written"],
        "1"
    );
    assert_eq!(
        r.headers()["x-prometheus-remote-write-exemplars-written"],
        "2"
    );

    // Metadata: exactly Prometheus' encoding (Go's HTML-safe escaping).
    let (st, body) = get(&srv, "/api/v1/metadata").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        body,
        r#"{"status":"success","data":{"lat_seconds":[{"type":"gauge","help":"Latency.","unit":"seconds"}],"req_total":[{"type":"counter","help":"Requests \u003cserved\u003e.","unit":""}]}}"#
    );
    let v = get_json(&srv, "/prometheus/api/v1/metadata?metric=lat_seconds").await;
    assert_eq!(v["data"].as_object().unwrap().len(), 1);
    let v = get_json(&srv, "/api/v1/metadata?limit=1&limit_per_metric=1").await;
    assert_eq!(v["data"].as_object().unwrap().len(), 1);
    let v = get_json(&srv, "/api/v1/metadata?limit=0").await;
    assert_eq!(v["data"], json!({}));
    let v = get_json(&srv, "/api/v1/metadata?metric=nope").await;
    assert_eq!(v["data"], json!({}));
    let (st, body) = get(&srv, "/api/v1/metadata?limit=x").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");

    // Exemplars: the out-of-order one (older than the newest) was dropped.
    let q = format!(
        "/api/v1/query_exemplars?query=rate(req_total[5m])%20%2B%20lat_seconds&start={}&end={}",
        t0 / 1000 - 60,
        t0 / 1000 + 60
    );
    let (st, body) = get(&srv, &q).await;
    assert_eq!(st, StatusCode::OK);
    let expect = format!(
        r#"{{"status":"success","data":[{{"seriesLabels":{{"__name__":"lat_seconds","job":"b"}},"exemplars":[{{"labels":{{"trace_id":"xyz"}},"value":"0.25","timestamp":{}.500}}]}},{{"seriesLabels":{{"__name__":"req_total","job":"a"}},"exemplars":[{{"labels":{{"trace_id":"abc"}},"value":"1","timestamp":{}}}]}}]}}"#,
        (t0 + 1500) / 1000,
        t0 / 1000
    );
    assert_eq!(body, expect);
    // Out of range, no selector, bad query.
    let q = format!(
        "/api/v1/query_exemplars?query=req_total&end={}",
        t0 / 1000 - 1
    );
    assert_eq!(get_json(&srv, &q).await["data"], json!([]));
    assert_eq!(
        get_json(&srv, "/api/v1/query_exemplars?query=1%2B1").await["data"],
        Value::Null
    );
    let (st, body) = get(&srv, "/api/v1/query_exemplars?query=sum(").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("bad_data"), "{body}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exemplar_storage_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with(ServerConfig {
        data_dir: dir.path().to_path_buf(),
        max_exemplars: 10,
        auth: AuthMode::None,
        ..ServerConfig::default()
    })
    .await;
    let t0 = now_ms() - 60_000;
    let mut series = Vec::new();
    for k in 0..4 {
        let mut s = ts(&[("__name__", "m"), ("k", &k.to_string())], &[(t0, 1.0)]);
        s.exemplars = (0..5)
            .map(|i| v1_exemplar(&format!("t{i}"), f64::from(i), t0 + i64::from(i)))
            .collect();
        series.push(s);
    }
    let body = pb::WriteRequest {
        timeseries: series,
        metadata: Vec::new(),
    }
    .encode_to_vec();
    assert_eq!(
        push(&srv, CT_V1, body).await.status(),
        StatusCode::NO_CONTENT
    );
    let v = get_json(&srv, "/api/v1/query_exemplars?query=m").await;
    let data = v["data"].as_array().unwrap();
    let total: usize = data
        .iter()
        .map(|s| s["exemplars"].as_array().unwrap().len())
        .sum();
    assert_eq!(total, 10, "{v}");
    // The newest 10 survive: series k=2 and k=3.
    let ks: Vec<&str> = data
        .iter()
        .map(|s| s["seriesLabels"]["k"].as_str().unwrap())
        .collect();
    assert_eq!(ks, ["2", "3"]);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_timestamp_zero_injection() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = (now_ms() - 120_000) / 1000 * 1000;
    let req = |ct: i64, t: i64, v: f64| {
        write_v2::Request {
            symbols: ["", "__name__", "c_total"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            timeseries: vec![write_v2::TimeSeries {
                labels_refs: vec![1, 2],
                samples: vec![write_v2::Sample {
                    value: v,
                    timestamp: t,
                    start_timestamp: ct,
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    };
    let range = format!(
        "/api/v1/query?query=c_total[10m]&time={}",
        (t0 + 100_000) / 1000
    );
    for enabled in [false, true] {
        let sub = dir.path().join(enabled.to_string());
        let srv = start_with(ServerConfig {
            data_dir: sub,
            created_timestamp_zero_ingestion: enabled,
            auth: AuthMode::None,
            ..ServerConfig::default()
        })
        .await;
        let r = push(&srv, CT_V2, req(t0, t0 + 10_000, 5.0)).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            r.headers()["x-prometheus-remote-write-samples-written"],
            "1"
        );
        // A later sample with the same created timestamp adds no zero.
        let r = push(&srv, CT_V2, req(t0, t0 + 20_000, 7.0)).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let v = get_json(&srv, &range).await;
        let values: Vec<&str> = v["data"]["result"][0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_str().unwrap())
            .collect();
        if enabled {
            assert_eq!(values, ["0", "5", "7"], "{v}");
        } else {
            assert_eq!(values, ["5", "7"], "{v}");
        }
        srv.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_survives_restart_through_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let md = |help: &str| pb::MetricMetadata {
        r#type: 3,
        metric_family_name: "lat".into(),
        help: help.into(),
        unit: "seconds".into(),
    };
    let srv = start(dir.path(), AuthMode::None).await;
    for help in ["old", "new", "new"] {
        let body = pb::WriteRequest {
            timeseries: Vec::new(),
            metadata: vec![md(help)],
        }
        .encode_to_vec();
        assert_eq!(
            push(&srv, CT_V1, body).await.status(),
            StatusCode::NO_CONTENT
        );
    }
    srv.stop().await;
    let srv = start(dir.path(), AuthMode::None).await;
    let (_, body) = get(&srv, "/api/v1/metadata").await;
    assert_eq!(
        body,
        r#"{"status":"success","data":{"lat":[{"type":"histogram","help":"new","unit":"seconds"}]}}"#
    );
    srv.stop().await;
}

/// Exemplars are logged to the WAL: `/api/v1/query_exemplars` answers the
/// same after a restart (bounded ring included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exemplars_survive_restart_through_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || ServerConfig {
        data_dir: dir.path().to_path_buf(),
        max_exemplars: 6,
        auth: AuthMode::None,
        ..ServerConfig::default()
    };
    let srv = start_with(cfg()).await;
    let t0 = now_ms() - 60_000;
    for round in 0..2i64 {
        let mut series = Vec::new();
        for k in 0..2 {
            let mut s = ts(
                &[("__name__", "req_total"), ("k", &k.to_string())],
                &[(t0 + round, 1.0)],
            );
            s.exemplars = (0..3)
                .map(|i| {
                    let n = round * 3 + i;
                    v1_exemplar(&format!("t{k}-{n}"), n as f64 * 0.5, t0 + n * 10)
                })
                .collect();
            series.push(s);
        }
        let body = pb::WriteRequest {
            timeseries: series,
            metadata: Vec::new(),
        }
        .encode_to_vec();
        assert_eq!(
            push(&srv, CT_V1, body).await.status(),
            StatusCode::NO_CONTENT
        );
    }
    let q = "/api/v1/query_exemplars?query=req_total";
    let (st, before) = get(&srv, q).await;
    assert_eq!(st, StatusCode::OK);
    let v: Value = serde_json::from_str(&before).unwrap();
    let total: usize = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["exemplars"].as_array().unwrap().len())
        .sum();
    assert_eq!(total, 6, "{v}");
    assert!(
        before.contains("t1-5") && !before.contains("t0-0"),
        "{before}"
    );
    srv.stop().await;
    let srv = start_with(cfg()).await;
    let (st, after) = get(&srv, q).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(after, before);
    srv.stop().await;
}
