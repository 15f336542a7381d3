//! HA-pair deduplication over real HTTP: two "replicas" of a Prometheus HA
//! pair push the same series; only the elected replica's samples are
//! stored (replica label removed, cluster label kept), the other's
//! requests get 202 and are counted on `/metrics`; after the (shortened)
//! failover timeout the other replica takes over; new clusters over
//! `ha_max_clusters` get 400; requests with only one of the labels are
//! stored unchanged; tenants without `accept_ha_samples` are untouched;
//! remote write 2.0 and OTLP (labels from data point attributes) go
//! through the same election.

use std::time::Duration;

use prost::Message;
use reqwest::StatusCode;
use serde_json::Value;
use stratus_api::{AuthMode, HaTrackerSettings, ServerConfig};
use stratus_proto::prometheus as pb;

mod common;
use common::{Server, now_ms, snappy, start_with, ts};

async fn push(srv: &Server, tenant: &str, series: Vec<pb::TimeSeries>) -> (StatusCode, String) {
    let body = pb::WriteRequest {
        timeseries: series,
        ..Default::default()
    }
    .encode_to_vec();
    let r = srv
        .client
        .post(format!("{}/api/v1/push", srv.base))
        .header("X-Scope-OrgID", tenant)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(snappy(&body))
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.text().await.unwrap())
}

/// `up` from replica `replica` of cluster `cluster` (either may be empty:
/// label left out).
fn up(cluster: &str, replica: &str, t: i64, v: f64) -> pb::TimeSeries {
    let mut labels = vec![("__name__", "up")];
    if !replica.is_empty() {
        labels.push(("__replica__", replica));
    }
    if !cluster.is_empty() {
        labels.push(("cluster", cluster));
    }
    labels.push(("job", "node"));
    ts(&labels, &[(t, v)])
}

/// `up[1m]` at `at` for `tenant`: each series' labels and samples.
async fn raw(srv: &Server, tenant: &str, at: i64) -> Vec<(Value, Vec<(i64, String)>)> {
    let r = srv
        .client
        .get(format!("{}/api/v1/query", srv.base))
        .header("X-Scope-OrgID", tenant)
        .query(&[
            ("query", "up[1m]".to_string()),
            ("time", format!("{}", at as f64 / 1000.0)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let mut out = Vec::new();
    for s in v["data"]["result"].as_array().unwrap() {
        let samples = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    (p[0].as_f64().unwrap() * 1000.0).round() as i64,
                    p[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        out.push((s["metric"].clone(), samples));
    }
    out
}

async fn metrics(srv: &Server) -> String {
    srv.client
        .get(format!("{}/metrics", srv.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn cfg(dir: &std::path::Path, ha: bool) -> ServerConfig {
    let mut c = ServerConfig {
        data_dir: dir.to_path_buf(),
        auth: AuthMode::Header,
        ha_tracker: HaTrackerSettings {
            update_timeout: Duration::from_millis(100),
            update_timeout_jitter_max: Duration::ZERO,
            failover_timeout: Duration::from_millis(700),
        },
        ..ServerConfig::default()
    };
    if ha {
        c.limits.accept_ha_samples = Some(true);
        c.limits.ha_max_clusters = Some(2);
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_pair_is_deduplicated_with_failover() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with(cfg(dir.path(), true)).await;
    let t0 = now_ms() - 10_000;

    // The first replica to push is elected; the other is dropped with 202.
    let (s, b) = push(&srv, "t", vec![up("c", "a", t0, 1.0)]).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (s, b) = push(&srv, "t", vec![up("c", "b", t0, 2.0)]).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert!(
        b.contains("not the elected replica") && b.contains("\"a\""),
        "{b}"
    );
    let (s, _) = push(&srv, "t", vec![up("c", "a", t0 + 1000, 1.0)]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let got = raw(&srv, "t", t0 + 5000).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].0,
        serde_json::json!({"__name__": "up", "cluster": "c", "job": "node"}),
        "replica label stripped, cluster label kept"
    );
    assert_eq!(
        got[0].1,
        vec![(t0, "1".to_string()), (t0 + 1000, "1".to_string())]
    );
    let m = metrics(&srv).await;
    assert!(
        m.contains(r#"stratus_ha_dropped_samples_total{tenant="t",cluster="c"} 1"#),
        "{m}"
    );

    // "a" goes quiet past the failover timeout: "b" takes over, "a" is
    // dropped from then on.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (s, b) = push(&srv, "t", vec![up("c", "b", t0 + 2000, 2.0)]).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (s, b) = push(&srv, "t", vec![up("c", "a", t0 + 3000, 1.0)]).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert!(b.contains("\"b\""), "{b}");
    let got = raw(&srv, "t", t0 + 5000).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].1,
        vec![
            (t0, "1".to_string()),
            (t0 + 1000, "1".to_string()),
            (t0 + 2000, "2".to_string())
        ]
    );
    let m = metrics(&srv).await;
    assert!(
        m.contains(r#"stratus_ha_elected_replica_changes_total{tenant="t",cluster="c"} 2"#),
        "{m}"
    );

    // ha_max_clusters = 2: a second cluster is fine, a third is refused.
    let (s, _) = push(&srv, "t", vec![up("c2", "a", t0, 1.0)]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = push(&srv, "t", vec![up("c3", "a", t0, 1.0)]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b.contains("ha_max_clusters=2") && b.contains("c3"), "{b}");

    // Other tenants have their own elections.
    let (s, _) = push(&srv, "u", vec![up("c", "b", t0, 5.0)]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_label_only_or_feature_off_is_stored_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with(cfg(dir.path(), true)).await;
    let t0 = now_ms() - 10_000;
    // Cluster label only, then replica label only: both stored unchanged.
    let (s, _) = push(&srv, "t", vec![up("c", "", t0, 1.0)]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = push(&srv, "t", vec![up("", "a", t0, 2.0)]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // The decision is the first series': the whole request follows it,
    // and the replica label goes from every series.
    let (s, _) = push(
        &srv,
        "t",
        vec![up("k", "a", t0, 3.0), up("", "b", t0 + 1, 4.0)],
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let mut got: Vec<Value> = raw(&srv, "t", t0 + 5000)
        .await
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    got.sort_by_key(|v| v.to_string());
    assert_eq!(
        got,
        vec![
            serde_json::json!({"__name__": "up", "__replica__": "a", "job": "node"}),
            serde_json::json!({"__name__": "up", "cluster": "c", "job": "node"}),
            serde_json::json!({"__name__": "up", "cluster": "k", "job": "node"}),
            serde_json::json!({"__name__": "up", "job": "node"}),
        ]
    );
    srv.stop().await;

    // Off (the default): both replicas are stored, labels untouched.
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with(cfg(dir.path(), false)).await;
    let (s, _) = push(&srv, "t", vec![up("c", "a", t0, 1.0)]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = push(&srv, "t", vec![up("c", "b", t0, 2.0)]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(raw(&srv, "t", t0 + 5000).await.len(), 2);
    srv.stop().await;
}

/// Posts `body` as `content_type` (snappy for remote write, plain for
/// OTLP) for `tenant`.
async fn post(
    srv: &Server,
    path: &str,
    tenant: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, String) {
    let mut rb = srv
        .client
        .post(format!("{}{path}", srv.base))
        .header("X-Scope-OrgID", tenant)
        .header("Content-Type", content_type);
    if path != "/otlp/v1/metrics" {
        rb = rb
            .header("Content-Encoding", "snappy")
            .header("X-Prometheus-Remote-Write-Version", "2.0.0");
    }
    let r = rb.body(body).send().await.unwrap();
    let status = r.status();
    (status, r.text().await.unwrap())
}

/// `up{cluster, __replica__, job="node"}` as a remote write 2.0 request.
fn up_v2(cluster: &str, replica: &str, t: i64, v: f64) -> Vec<u8> {
    use stratus_proto::write_v2;
    let symbols = [
        "",
        "__name__",
        "up",
        "__replica__",
        replica,
        "cluster",
        cluster,
        "job",
        "node",
    ];
    let req = write_v2::Request {
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        timeseries: vec![write_v2::TimeSeries {
            labels_refs: vec![1, 2, 3, 4, 5, 6, 7, 8],
            samples: vec![write_v2::Sample {
                value: v,
                timestamp: t,
                start_timestamp: 0,
            }],
            ..Default::default()
        }],
    };
    snappy(&req.encode_to_vec())
}

/// The same `up` as an OTLP gauge whose data point carries the labels.
fn up_otlp(cluster: &str, replica: &str, t: i64, v: f64) -> Vec<u8> {
    use stratus_proto::otlp_collector::ExportMetricsServiceRequest;
    use stratus_proto::otlp_metrics as om;
    let kv = |k: &str, v: &str| om::KeyValue {
        key: k.into(),
        value: Some(om::AnyValue {
            value: Some(om::any_value::Value::StringValue(v.into())),
        }),
    };
    let point = om::NumberDataPoint {
        attributes: vec![
            kv("__replica__", replica),
            kv("cluster", cluster),
            kv("job", "node"),
        ],
        time_unix_nano: (t as u64) * 1_000_000,
        value: Some(om::number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![om::ResourceMetrics {
            scope_metrics: vec![om::ScopeMetrics {
                metrics: vec![om::Metric {
                    name: "up".into(),
                    data: Some(om::metric::Data::Gauge(om::Gauge {
                        data_points: vec![point],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_pairs_over_remote_write_2_and_otlp_are_deduplicated() {
    const CT_V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
    const OTLP: &str = "/otlp/v1/metrics";
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with(cfg(dir.path(), true)).await;
    let t0 = now_ms() - 10_000;

    // Remote write 2.0: "a" elected, "b" answered 202 and not stored.
    let (s, b) = post(&srv, "/api/v1/write", "t", CT_V2, up_v2("c", "a", t0, 1.0)).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (s, b) = post(
        &srv,
        "/api/v1/write",
        "t",
        CT_V2,
        up_v2("c", "b", t0 + 1, 2.0),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert!(b.contains("not the elected replica"), "{b}");

    // OTLP, another tenant: the same election from data point attributes;
    // the dropped replica's request is a 202 partial success.
    let (s, b) = post(
        &srv,
        OTLP,
        "o",
        "application/x-protobuf",
        up_otlp("c", "x", t0, 3.0),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = post(
        &srv,
        OTLP,
        "o",
        "application/x-protobuf",
        up_otlp("c", "y", t0 + 1, 4.0),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    // And the elected one keeps being stored.
    let (s, b) = post(
        &srv,
        OTLP,
        "o",
        "application/x-protobuf",
        up_otlp("c", "x", t0 + 1000, 5.0),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let want = serde_json::json!({"__name__": "up", "cluster": "c", "job": "node"});
    let got = raw(&srv, "t", t0 + 5000).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, want, "replica label stripped (rw2)");
    assert_eq!(got[0].1, vec![(t0, "1".to_string())]);
    let got = raw(&srv, "o", t0 + 5000).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, want, "replica label stripped (otlp)");
    assert_eq!(
        got[0].1,
        vec![(t0, "3".to_string()), (t0 + 1000, "5".to_string())]
    );
    let m = metrics(&srv).await;
    for tenant in ["t", "o"] {
        let line =
            format!(r#"stratus_ha_dropped_samples_total{{tenant="{tenant}",cluster="c"}} 1"#);
        assert!(m.contains(&line), "{line} in {m}");
    }
    srv.stop().await;
}
