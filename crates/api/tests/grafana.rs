//! What Grafana's Prometheus data source sends (PROTOCOLS.md §8), against
//! the default token mode with the data source URL `…/api/prom` and basic
//! auth: the health check, buildinfo probe, label/series/metadata
//! resource calls with float-second times, POST-form queries with float
//! steps, exemplars, and the alerting endpoints.

use std::time::Duration;

use prost::Message;
use reqwest::StatusCode;
use serde_json::Value;
use stratus_api::ServerConfig;
use stratus_proto::prometheus as pb;

mod common;
use common::{Server, now_ms, snappy, start_with, ts};

const BASE: &str = "/api/prom";

struct Grafana<'a> {
    srv: &'a Server,
    token: String,
}

impl Grafana<'_> {
    async fn send(&self, rb: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let r = rb
            .basic_auth("grafana", Some(&self.token))
            .send()
            .await
            .unwrap();
        let st = r.status();
        let text = r.text().await.unwrap();
        (
            st,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str, q: &[(&str, &str)]) -> (StatusCode, Value) {
        let url = format!("{}{BASE}{path}", self.srv.base);
        self.send(self.srv.client.get(url).query(q)).await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let url = format!("{}{BASE}{path}", self.srv.base);
        self.send(self.srv.client.post(url).form(form)).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_request_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with(ServerConfig {
        data_dir: dir.path().to_path_buf(),
        ..ServerConfig::default()
    })
    .await;
    let mut token = None;
    for _ in 0..100 {
        if let Ok(t) = std::fs::read_to_string(dir.path().join("tokens/default.token")) {
            token = Some(t.trim().to_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let g = Grafana {
        srv: &srv,
        token: token.expect("default token written on first start"),
    };

    // Data: two series with metadata and an exemplar, one UTF-8 label.
    let now = now_ms() / 1000 * 1000;
    let mut s1 = ts(
        &[
            ("__name__", "http_requests_total"),
            ("job", "api"),
            ("my.label", "x"),
        ],
        &[(now - 120_000, 1.0), (now - 60_000, 5.0), (now, 9.0)],
    );
    s1.exemplars.push(pb::Exemplar {
        labels: vec![pb::Label {
            name: "trace_id".into(),
            value: "abc".into(),
        }],
        value: 9.0,
        timestamp: now,
    });
    let s2 = ts(
        &[("__name__", "http_requests_total"), ("job", "web")],
        &[(now - 120_000, 2.0), (now - 60_000, 4.0), (now, 6.0)],
    );
    let body = snappy(
        &pb::WriteRequest {
            timeseries: vec![s1, s2],
            metadata: vec![pb::MetricMetadata {
                r#type: pb::metric_metadata::MetricType::Counter as i32,
                metric_family_name: "http_requests_total".into(),
                help: "Requests.".into(),
                unit: String::new(),
            }],
        }
        .encode_to_vec(),
    );
    let r = srv
        .client
        .post(format!("{}{BASE}/push", srv.base))
        .basic_auth("grafana", Some(&g.token))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // Health check: `1+1` at time 4, POST form (the default method).
    let (st, v) = g
        .post("/api/v1/query", &[("query", "1+1"), ("time", "4")])
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["resultType"], "scalar");
    assert_eq!(v["data"]["result"], serde_json::json!([4, "2"]));

    // buildinfo: a version, and no `features` map (or Grafana takes the
    // server for Mimir and enables its ruler APIs).
    let (st, v) = g.get("/api/v1/status/buildinfo", &[]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(
        v["data"]["version"].as_str().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    assert!(
        v["data"]["features"].is_null()
            || v["data"]["features"]
                .as_object()
                .is_some_and(|m| m.is_empty()),
        "{v}"
    );

    let start = format!("{:.3}", (now - 3_600_000) as f64 / 1000.0);
    let end = format!("{:.3}", (now + 1000) as f64 / 1000.0);
    // Label names with start/end, POST then GET.
    for (st, v) in [
        g.post("/api/v1/labels", &[("start", &start), ("end", &end)])
            .await,
        g.get("/api/v1/labels", &[("start", &start), ("end", &end)])
            .await,
    ] {
        assert_eq!(st, StatusCode::OK, "{v}");
        let names: Vec<&str> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(names, ["__name__", "job", "my.label"], "{v}");
    }
    // Labels with match[].
    let (_, v) = g
        .get(
            "/api/v1/labels",
            &[
                ("match[]", "http_requests_total{job=\"web\"}"),
                ("start", &start),
                ("end", &end),
            ],
        )
        .await;
    assert_eq!(v["data"], serde_json::json!(["__name__", "job"]));
    // Metric names, with limit.
    let (st, v) = g
        .get(
            "/api/v1/label/__name__/values",
            &[("start", &start), ("end", &end), ("limit", "40000")],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"], serde_json::json!(["http_requests_total"]));
    // Label values; limit truncates; a U__-escaped UTF-8 name.
    let (_, v) = g
        .get(
            "/api/v1/label/job/values",
            &[("start", &start), ("end", &end), ("limit", "1")],
        )
        .await;
    assert_eq!(v["data"], serde_json::json!(["api"]), "{v}");
    let (_, v) = g
        .get(
            "/api/v1/label/U__my_2e_label/values",
            &[("start", &start), ("end", &end)],
        )
        .await;
    assert_eq!(v["data"], serde_json::json!(["x"]), "{v}");
    // Series (metrics browser), POST form with match[].
    let (st, v) = g
        .post(
            "/api/v1/series",
            &[
                ("match[]", "{__name__=\"http_requests_total\"}"),
                ("start", &start),
                ("end", &end),
            ],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "{v}");
    // Metadata for the editor (GET only).
    let (st, v) = g
        .get("/api/v1/metadata", &[("metric", "http_requests_total")])
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["data"]["http_requests_total"][0]["type"], "counter",
        "{v}"
    );

    // A panel: query_range, POST form, float seconds aligned to the step,
    // a float step and a timeout.
    let step = 60.0;
    let end_al = ((now / 1000) as f64 / step).floor() * step;
    let (st, v) = g
        .post(
            "/api/v1/query_range",
            &[
                ("query", "sum by (job) (rate(http_requests_total[2m]))"),
                ("start", &format!("{}", end_al - 120.0)),
                ("end", &format!("{end_al}")),
                ("step", "60.0"),
                ("timeout", "30s"),
            ],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["resultType"], "matrix");
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 2, "{v}");
    // Instant query of a variable (`query_result()`), GET.
    let (_, v) = g
        .get(
            "/api/v1/query",
            &[("query", "count(http_requests_total)"), ("time", &end)],
        )
        .await;
    assert_eq!(v["data"]["result"][0]["value"][1], "2", "{v}");
    // A bad query: errorType and error for the panel.
    let (st, v) = g.post("/api/v1/query", &[("query", "sum(")]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["errorType"], "bad_data");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("parse error")),
        "{v}"
    );

    // Exemplars toggle.
    let (st, v) = g
        .post(
            "/api/v1/query_exemplars",
            &[
                ("query", "http_requests_total"),
                ("start", &start),
                ("end", &end),
            ],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["data"][0]["exemplars"][0]["labels"]["trace_id"], "abc",
        "{v}"
    );

    // Alerting and status pages answer empty but valid.
    for p in [
        "/api/v1/rules",
        "/api/v1/alerts",
        "/api/v1/status/runtimeinfo",
    ] {
        let (st, v) = g.get(p, &[]).await;
        assert_eq!(st, StatusCode::OK, "{p}: {v}");
        assert_eq!(v["status"], "success", "{p}: {v}");
    }
    srv.stop().await;
}
