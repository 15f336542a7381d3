//! End-to-end tests of the HTTP service: the real server on 127.0.0.1
//! (port 0) in-process, a real HTTP client, a real data directory.

use std::path::Path;

use prost::Message;
use reqwest::StatusCode;
use serde_json::Value;
use stratus_api::{AuthMode, ServerConfig};
use stratus_model::{Labels, MatchType, Matcher, STALE_NAN_BITS, TenantId, stale_nan};
use stratus_objstore::Bucket;
use stratus_proto::{prometheus as pb, write_v2};

mod common;
use common::{Server, now_ms, snappy, start, start_with, ts};
use stratus_tsdb::{Db, DbConfig, Queryable, SelectHints};

const CT_V1: &str = "application/x-protobuf";
const CT_V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

impl Server {
    async fn push_raw(
        &self,
        path: &str,
        content_type: &str,
        tenant: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut rb = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", content_type)
            .body(body);
        if let Some(t) = tenant {
            rb = rb.header("X-Scope-OrgID", t);
        }
        rb.send().await.unwrap()
    }

    async fn push_v1(
        &self,
        tenant: Option<&str>,
        series: Vec<pb::TimeSeries>,
    ) -> reqwest::Response {
        let body = pb::WriteRequest {
            timeseries: series,
            metadata: Vec::new(),
        }
        .encode_to_vec();
        self.push_raw("/api/v1/push", CT_V1, tenant, snappy(&body))
            .await
    }

    async fn get_json(&self, path_and_query: &str, tenant: Option<&str>) -> (StatusCode, Value) {
        let mut rb = self.client.get(format!("{}{path_and_query}", self.base));
        if let Some(t) = tenant {
            rb = rb.header("X-Scope-OrgID", t);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let bytes = r.bytes().await.unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, v)
    }

    async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }
}

/// Series names (`__name__`, `job`) returned by /api/v1/series.
fn series_of(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["__name__"].as_str().unwrap_or("").to_string(),
                s["job"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn strings(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Reads every sample of a tenant straight from its database on disk
/// (the server must be stopped).
async fn samples_on_disk(dir: &Path, tenant: &str) -> Vec<(Labels, Vec<(i64, u64)>)> {
    let t = TenantId::new(tenant).unwrap();
    let bucket = Bucket::local(&dir.join("blocks"))
        .unwrap()
        .with_prefix(t.as_str());
    let db = Db::open(
        &dir.join("tenants").join(t.as_str()),
        bucket,
        DbConfig::default(),
    )
    .await
    .unwrap();
    let m = Matcher::new(MatchType::RegexMatch, "__name__", ".+").unwrap();
    db.select(&[m], &SelectHints::range(i64::MIN, i64::MAX))
        .unwrap()
        .into_iter()
        .map(|s| {
            let v = s
                .samples(i64::MIN, i64::MAX)
                .into_iter()
                .map(|(t, v)| (t, v.to_bits()))
                .collect();
            (s.labels, v)
        })
        .collect()
}

/// Every native histogram sample stored for a tenant (a test-only select
/// through `Queryable`: PromQL does not evaluate histograms yet).
async fn histograms_on_disk(
    dir: &Path,
    tenant: &str,
) -> Vec<(Labels, Vec<(i64, stratus_tsdb::Value)>)> {
    let t = TenantId::new(tenant).unwrap();
    let bucket = Bucket::local(&dir.join("blocks"))
        .unwrap()
        .with_prefix(t.as_str());
    let db = Db::open(
        &dir.join("tenants").join(t.as_str()),
        bucket,
        DbConfig::default(),
    )
    .await
    .unwrap();
    let m = Matcher::new(MatchType::RegexMatch, "__name__", ".+").unwrap();
    db.select(&[m], &SelectHints::range(i64::MIN, i64::MAX))
        .unwrap()
        .into_iter()
        .filter(|s| s.has_histograms())
        .map(|s| {
            let v: Vec<_> = s
                .typed_samples(i64::MIN, i64::MAX)
                .unwrap()
                .into_iter()
                .filter(|x| x.1.is_histogram())
                .collect();
            (s.labels, v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rw1_push_then_read_series_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    let t0 = now_ms() - 60_000;
    let weird_nan = f64::from_bits(0x7ff8_0000_0bad_f00d);
    let r = srv
        .push_v1(
            None,
            vec![
                ts(
                    &[("__name__", "up"), ("instance", "a:9100"), ("job", "node")],
                    &[
                        (t0, 1.0),
                        (t0 + 15_000, stale_nan()),
                        (t0 + 30_000, weird_nan),
                    ],
                ),
                ts(
                    &[("__name__", "up"), ("instance", "b:9090"), ("job", "prom")],
                    &[(t0, 1.0)],
                ),
                ts(
                    &[
                        ("__name__", "http_requests_total"),
                        ("code", "200"),
                        ("job", "api"),
                    ],
                    &[(t0, 10.0), (t0 + 15_000, 12.0)],
                ),
            ],
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "{}",
        r.text().await.unwrap()
    );

    // Series by name, at the root and under both prefixes, GET and POST.
    for prefix in ["", "/prometheus", "/api/prom"] {
        let (st, v) = srv
            .get_json(&format!("{prefix}/api/v1/series?match[]=up"), None)
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["status"], "success");
        assert_eq!(
            series_of(&v),
            vec![("up".into(), "node".into()), ("up".into(), "prom".into())]
        );
    }
    let r = srv
        .client
        .post(format!("{}/api/v1/series", srv.base))
        .form(&[
            ("match[]", r#"{__name__=~"http.+"}"#),
            ("match[]", r#"up{job="node"}"#),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(
        series_of(&v),
        vec![
            ("http_requests_total".into(), "api".into()),
            ("up".into(), "node".into())
        ]
    );
    // A series object lists every label in order.
    let (_, v) = srv
        .get_json("/api/v1/series?match[]=http_requests_total", None)
        .await;
    assert_eq!(
        v["data"][0],
        serde_json::json!({"__name__": "http_requests_total", "code": "200", "job": "api"})
    );

    // Label names and values, with and without matchers and a time range.
    let (_, v) = srv.get_json("/api/v1/labels", None).await;
    assert_eq!(strings(&v), ["__name__", "code", "instance", "job"]);
    let (_, v) = srv
        .get_json("/api/v1/labels?match[]=http_requests_total", None)
        .await;
    assert_eq!(strings(&v), ["__name__", "code", "job"]);
    let (_, v) = srv.get_json("/api/v1/label/job/values", None).await;
    assert_eq!(strings(&v), ["api", "node", "prom"]);
    let (_, v) = srv.get_json("/api/v1/label/__name__/values", None).await;
    assert_eq!(strings(&v), ["http_requests_total", "up"]);
    let (_, v) = srv
        .get_json("/prometheus/api/v1/label/job/values?match[]=up", None)
        .await;
    assert_eq!(strings(&v), ["node", "prom"]);
    let start = (t0 - 3_600_000) as f64 / 1000.0;
    let end = (t0 - 1_800_000) as f64 / 1000.0;
    let (_, v) = srv
        .get_json(
            &format!("/api/v1/label/job/values?start={start}&end={end}"),
            None,
        )
        .await;
    assert_eq!(strings(&v), Vec::<String>::new());
    let (_, v) = srv
        .get_json(
            &format!(
                "/api/v1/series?match[]=up&start={}",
                (t0 + 20_000) as f64 / 1000.0
            ),
            None,
        )
        .await;
    assert_eq!(series_of(&v), vec![("up".into(), "node".into())]);

    // limit truncates with a warning.
    let (_, v) = srv.get_json("/api/v1/label/job/values?limit=2", None).await;
    assert_eq!(strings(&v), ["api", "node"]);
    assert_eq!(v["warnings"][0], "results truncated due to limit");

    srv.stop().await;
    // Stale marker and NaN payloads are stored bit for bit.
    let got = samples_on_disk(dir.path(), "default").await;
    let node = got
        .iter()
        .find(|(l, _)| l.get("job") == Some("node"))
        .unwrap();
    assert_eq!(
        node.1,
        vec![
            (t0, 1.0f64.to_bits()),
            (t0 + 15_000, STALE_NAN_BITS),
            (t0 + 30_000, weird_nan.to_bits())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rw2_push_reports_written_counts() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    let t0 = now_ms() - 30_000;
    let symbols: Vec<String> = [
        "",
        "__name__",
        "cpu_seconds_total",
        "mode",
        "idle",
        "user",
        "job",
        "node",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let sample = |t: i64, v: f64| write_v2::Sample {
        value: v,
        timestamp: t,
        start_timestamp: 0,
    };
    let req = write_v2::Request {
        symbols,
        timeseries: vec![
            write_v2::TimeSeries {
                labels_refs: vec![1, 2, 6, 7, 3, 4],
                samples: vec![sample(t0, 1.0), sample(t0 + 1000, 2.0)],
                exemplars: vec![write_v2::Exemplar {
                    labels_refs: vec![],
                    value: 1.0,
                    timestamp: t0,
                }],
                ..Default::default()
            },
            write_v2::TimeSeries {
                labels_refs: vec![1, 2, 6, 7, 3, 5],
                samples: vec![sample(t0, 5.0), sample(t0 + 1000, stale_nan())],
                ..Default::default()
            },
        ],
    };
    let r = srv
        .push_raw("/api/v1/write", CT_V2, None, snappy(&req.encode_to_vec()))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let h = r.headers();
    assert_eq!(h["x-prometheus-remote-write-samples-written"], "4");
    assert_eq!(h["x-prometheus-remote-write-histograms-written"], "0");
    assert_eq!(h["x-prometheus-remote-write-exemplars-written"], "1");

    let (_, v) = srv
        .get_json("/api/v1/label/mode/values?match[]=cpu_seconds_total", None)
        .await;
    assert_eq!(strings(&v), ["idle", "user"]);

    // A native histogram is stored (with its partner float series); an
    // invalid one is refused naming its series, the rest still written.
    let hist = |t: i64, c: u64| write_v2::Histogram {
        timestamp: t,
        count: Some(write_v2::histogram::Count::CountInt(c)),
        zero_count: Some(write_v2::histogram::ZeroCount::ZeroCountInt(1)),
        sum: 2.5,
        schema: 3,
        zero_threshold: 1e-128,
        positive_spans: vec![write_v2::BucketSpan {
            offset: -2,
            length: 2,
        }],
        positive_deltas: vec![1, (c as i64) - 3],
        ..Default::default()
    };
    let req = write_v2::Request {
        symbols: ["", "__name__", "h", "f", "bad"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        timeseries: vec![
            write_v2::TimeSeries {
                labels_refs: vec![1, 2],
                histograms: vec![hist(t0, 4), hist(t0 + 15_000, 6)],
                ..Default::default()
            },
            write_v2::TimeSeries {
                labels_refs: vec![1, 3],
                samples: vec![sample(t0, 1.0)],
                ..Default::default()
            },
        ],
    };
    let r = srv
        .push_raw("/api/prom/push", CT_V2, None, snappy(&req.encode_to_vec()))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        r.headers()["x-prometheus-remote-write-samples-written"],
        "1"
    );
    assert_eq!(
        r.headers()["x-prometheus-remote-write-histograms-written"],
        "2"
    );
    let mut bad = hist(t0, 4);
    bad.positive_deltas.pop();
    let req = write_v2::Request {
        symbols: ["", "__name__", "bad", "f"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        timeseries: vec![
            write_v2::TimeSeries {
                labels_refs: vec![1, 2],
                histograms: vec![bad],
                ..Default::default()
            },
            write_v2::TimeSeries {
                labels_refs: vec![1, 3],
                samples: vec![sample(t0 + 1000, 1.0)],
                ..Default::default()
            },
        ],
    };
    let r = srv
        .push_raw("/api/prom/push", CT_V2, None, snappy(&req.encode_to_vec()))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.headers()["x-prometheus-remote-write-histograms-written"],
        "0"
    );
    let body = r.text().await.unwrap();
    assert!(
        body.contains("invalid native histogram")
            && body.contains("bad")
            && body.contains("spans announce 2 buckets"),
        "{body}"
    );
    let (_, v) = srv.get_json("/api/v1/series?match[]=f", None).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    srv.stop().await;

    // The histograms read back from storage, bit for bit.
    let hs = histograms_on_disk(dir.path(), "default").await;
    assert_eq!(hs.len(), 1);
    assert_eq!(hs[0].0.get("__name__"), Some("h"));
    let got = &hs[0].1;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, t0);
    let stratus_tsdb::Value::Histogram(h1) = &got[1].1 else {
        panic!("{:?}", got[1]);
    };
    assert_eq!(h1.count, 6);
    assert_eq!(h1.positive_deltas, vec![1, 3]);
    assert_eq!(h1.zero_threshold, 1e-128);

    let got = samples_on_disk(dir.path(), "default").await;
    let user = got
        .iter()
        .find(|(l, _)| l.get("mode") == Some("user"))
        .unwrap();
    assert_eq!(user.1[1], (t0 + 1000, STALE_NAN_BITS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_the_right_status() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    let now = now_ms();
    let good = pb::WriteRequest {
        timeseries: vec![ts(&[("__name__", "x")], &[(now, 1.0)])],
        metadata: Vec::new(),
    }
    .encode_to_vec();

    // Garbage body: not snappy; snappy but not protobuf.
    let r = srv
        .push_raw(
            "/api/v1/push",
            CT_V1,
            None,
            b"this is not snappy at all \xff\xff".to_vec(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = srv
        .push_raw(
            "/api/v1/push",
            CT_V1,
            None,
            snappy(b"\xff\xff\xff\xff\xff garbage"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("protobuf"));
    // Refused bodies never open (or create) the tenant's database.
    assert!(!dir.path().join("tenants").join("default").exists());

    // Wrong content type / proto / encoding.
    let r = srv
        .push_raw("/api/v1/push", "application/json", None, snappy(&good))
        .await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = srv
        .push_raw(
            "/api/v1/push",
            "application/x-protobuf;proto=io.prometheus.write.v9.Request",
            None,
            snappy(&good),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = srv
        .client
        .post(format!("{}/api/v1/push", srv.base))
        .header("Content-Encoding", "gzip")
        .header("Content-Type", CT_V1)
        .body(snappy(&good))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // The good request works (also without Content-Encoding, like
    // upstream's lenient receiver).
    let r = srv
        .client
        .post(format!("{}/api/v1/push", srv.base))
        .header("Content-Type", CT_V1)
        .body(snappy(&good))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // Out of the out-of-order window (default 1h): refused, series named.
    let r = srv
        .push_v1(
            None,
            vec![ts(&[("__name__", "x")], &[(now - 2 * 3_600_000, 1.0)])],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body = r.text().await.unwrap();
    assert!(body.contains("too old") && body.contains("x"), "{body}");

    // Duplicate timestamp with another value: refused; exact duplicate ok.
    let r = srv
        .push_v1(None, vec![ts(&[("__name__", "x")], &[(now, 2.0)])])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("duplicate sample"));
    let r = srv
        .push_v1(None, vec![ts(&[("__name__", "x")], &[(now, 1.0)])])
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // Partial success: invalid and out-of-window series are refused, the
    // good series in the same request is written.
    let r = srv
        .push_v1(
            None,
            vec![
                ts(&[("job", "no_name")], &[(now, 1.0)]),
                ts(&[("__name__", "y"), ("b", "1"), ("a", "2")], &[(now, 1.0)]),
                ts(&[("__name__", "good"), ("job", "j")], &[(now, 1.0)]),
                ts(&[("__name__", "x")], &[(now - 3 * 3_600_000, 1.0)]),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body = r.text().await.unwrap();
    assert!(body.contains("missing metric name"), "{body}");
    assert!(body.contains("not sorted"), "{body}");
    assert!(body.contains("too old"), "{body}");
    let (_, v) = srv.get_json("/api/v1/series?match[]=good", None).await;
    assert_eq!(series_of(&v), vec![("good".into(), "j".into())]);
    let (_, v) = srv.get_json("/api/v1/label/__name__/values", None).await;
    assert_eq!(strings(&v), ["good", "x"]);

    // Read API errors use the JSON envelope.
    let (st, v) = srv.get_json("/api/v1/series", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["status"], "error");
    assert_eq!(v["errorType"], "bad_data");
    let (st, v) = srv
        .get_json("/api/v1/series?match[]=rate(x[5m])", None)
        .await;
    assert_eq!(
        (st, v["errorType"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_data"))
    );
    let (st, v) = srv.get_json("/api/v1/labels?start=yesterday", None).await;
    assert_eq!(
        (st, v["errorType"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_data"))
    );
    let (st, _) = srv.get_json("/api/v1/labels?limit=-1", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Unknown paths are 404 (the PromQL endpoints are tested in query.rs).
    let (st, _) = srv
        .get_json("/api/v1/no_such_endpoint?query=up", None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = srv.get_json("/api/v1/query?query=up", None).await;
    assert_eq!(st, StatusCode::OK);
    // Push is POST only.
    let (st, _) = srv.get_text("/api/v1/push").await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limits() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with(ServerConfig {
        data_dir: dir.path().to_path_buf(),
        max_compressed_bytes: 16 * 1024,
        max_decompressed_bytes: 64 * 1024,
        auth: AuthMode::None,
        ..ServerConfig::default()
    })
    .await;
    let now = now_ms();
    // Compresses well: small on the wire, large once decompressed.
    let long = "a".repeat(100_000);
    let body = pb::WriteRequest {
        timeseries: vec![ts(&[("__name__", "x"), ("l", &long)], &[(now, 1.0)])],
        metadata: Vec::new(),
    }
    .encode_to_vec();
    let comp = snappy(&body);
    assert!(comp.len() < 16 * 1024, "{}", comp.len());
    let r = srv.push_raw("/api/v1/push", CT_V1, None, comp).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.text().await.unwrap().contains("decompressed"));
    // Incompressible and over the compressed limit.
    let noise: Vec<u8> = (0..40_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let r = srv.push_raw("/api/v1/push", CT_V1, None, noise).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_with_header_auth() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::Header).await;
    let now = now_ms();
    let r = srv
        .push_v1(
            Some("team-a"),
            vec![ts(&[("__name__", "a_metric")], &[(now, 1.0)])],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = srv
        .push_v1(
            Some("team-b"),
            vec![ts(&[("__name__", "b_metric")], &[(now, 1.0)])],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let (_, v) = srv
        .get_json("/api/v1/label/__name__/values", Some("team-a"))
        .await;
    assert_eq!(strings(&v), ["a_metric"]);
    let (_, v) = srv
        .get_json("/api/v1/label/__name__/values", Some("team-b"))
        .await;
    assert_eq!(strings(&v), ["b_metric"]);
    let (_, v) = srv
        .get_json("/api/v1/series?match[]=a_metric", Some("team-b"))
        .await;
    assert_eq!(series_of(&v), Vec::<(String, String)>::new());
    // A tenant that never wrote sees nothing (and gets no directory).
    let (st, v) = srv.get_json("/api/v1/labels", Some("nobody")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(strings(&v), Vec::<String>::new());
    assert!(!dir.path().join("tenants").join("nobody").exists());

    // Missing header → 401; invalid tenant id → 400.
    let r = srv
        .push_v1(None, vec![ts(&[("__name__", "a_metric")], &[(now, 1.0)])])
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (st, _) = srv.get_json("/api/v1/labels", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = srv.get_json("/api/v1/labels", Some("../etc")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Metrics count per tenant.
    let (st, text) = srv.get_text("/metrics").await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        text.contains(r#"stratus_api_samples_received_total{tenant="team-a"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"stratus_api_samples_written_total{tenant="team-b"} 1"#));
    assert!(
        text.contains(r#"route="/api/v1/push",method="POST",status="401""#),
        "{text}"
    );

    // The effective config, as YAML the config file accepts.
    let (st, text) = srv.get_text("/config").await;
    assert_eq!(st, StatusCode::OK);
    assert!(text.contains("auth: header"), "{text}");
    let parsed = ServerConfig::from_yaml(&text).unwrap();
    assert_eq!(parsed.auth, AuthMode::Header);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    let now = now_ms();
    let r = srv
        .push_v1(
            None,
            vec![ts(
                &[("__name__", "persist_me"), ("job", "j")],
                &[(now - 1000, 1.0), (now, stale_nan())],
            )],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    srv.stop().await;

    let srv = start(dir.path(), AuthMode::None).await;
    let (st, _) = srv.get_text("/ready").await;
    assert_eq!(st, StatusCode::OK);
    let (_, v) = srv
        .get_json("/api/v1/series?match[]=persist_me", None)
        .await;
    assert_eq!(series_of(&v), vec![("persist_me".into(), "j".into())]);
    // Appending continues where it left off (the old sample is a duplicate
    // with the same value: accepted).
    let r = srv
        .push_v1(
            None,
            vec![ts(
                &[("__name__", "persist_me"), ("job", "j")],
                &[(now, stale_nan())],
            )],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    srv.stop().await;
    let got = samples_on_disk(dir.path(), "default").await;
    assert_eq!(
        got[0].1,
        vec![(now - 1000, 1.0f64.to_bits()), (now, STALE_NAN_BITS)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_buildinfo_and_escaped_label_names() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    for p in ["/ready", "/health"] {
        let (st, _) = srv.get_text(p).await;
        assert_eq!(st, StatusCode::OK);
    }
    let (st, v) = srv.get_json("/api/v1/status/buildinfo", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["data"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["data"].get("features").is_none());
    let (st, _) = srv
        .get_json("/prometheus/api/v1/status/buildinfo", None)
        .await;
    assert_eq!(st, StatusCode::OK);

    let now = now_ms();
    let r = srv
        .push_v1(
            None,
            vec![ts(
                &[("__name__", "k8s.pod.cpu"), ("host.name", "h1")],
                &[(now, 1.0)],
            )],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, v) = srv
        .get_json("/api/v1/label/U__host_2e_name/values", None)
        .await;
    assert_eq!(strings(&v), ["h1"]);
    let (_, v) = srv
        .get_json("/api/v1/series?match[]=%7B%22k8s.pod.cpu%22%7D", None)
        .await;
    assert_eq!(v["data"][0]["host.name"], "h1", "{v}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_503_with_retry_after() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with(ServerConfig {
        data_dir: dir.path().to_path_buf(),
        auth: AuthMode::None,
        max_inflight_writes: 1,
        ..ServerConfig::default()
    })
    .await;
    // A write whose body never finishes holds the only slot.
    let addr = srv.base.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(
        b"POST /api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nContent-Length: 1000\r\n\r\nabc",
    )
    .await
    .unwrap();
    let mut status = None;
    for _ in 0..100 {
        let r = srv
            .push_v1(None, vec![ts(&[("__name__", "m")], &[(now_ms(), 1.0)])])
            .await;
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(r.headers()["retry-after"], "1");
            let body = r.text().await.unwrap();
            assert!(body.contains("max_inflight_writes"), "{body}");
            status = Some(503);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, Some(503), "a second write was not refused");
    // Once the slow writer goes away, writes succeed again.
    drop(slow);
    let mut ok = false;
    for _ in 0..100 {
        let r = srv
            .push_v1(None, vec![ts(&[("__name__", "m")], &[(now_ms(), 1.0)])])
            .await;
        if r.status() == StatusCode::NO_CONTENT {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok, "writes did not recover after the overload");
    srv.stop().await;
}
