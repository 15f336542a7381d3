//! End-to-end tests of the remaining read endpoints: remote read (both
//! response types, decoded here: frames, CRC-32C, XOR chunks), remote read
//! from a real Prometheus 2.42 (`remote_read` pointing at Stratus),
//! `format_query`/`parse_query`, the status endpoints, `/status/tsdb`
//! counts and the admin endpoints. The real server runs in-process on
//! 127.0.0.1 (port 0).

use prost::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};
use stratus_api::{AuthMode, ServerConfig};
use stratus_proto::prometheus as pb;

mod common;
use common::prometheus::{NO_SCRAPES, start_prometheus};
use common::{Server, now_ms, snappy, start, start_with, ts};

impl Server {
    async fn push(&self, tenant: Option<&str>, series: Vec<pb::TimeSeries>) {
        let body = pb::WriteRequest {
            timeseries: series,
            metadata: Vec::new(),
        }
        .encode_to_vec();
        let mut rb = self
            .client
            .post(format!("{}/api/v1/push", self.base))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .body(snappy(&body));
        if let Some(t) = tenant {
            rb = rb.header("X-Scope-OrgID", t);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }

    /// POSTs a remote-read request; status, headers, raw body.
    async fn remote_read(
        &self,
        path: &str,
        req: &pb::ReadRequest,
        tenant: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
        let mut rb = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Read-Version", "0.1.0")
            .body(snappy(&req.encode_to_vec()));
        if let Some(t) = tenant {
            rb = rb.header("X-Scope-OrgID", t);
        }
        let r = rb.send().await.unwrap();
        let st = r.status();
        let h = r.headers().clone();
        (st, h, r.bytes().await.unwrap().to_vec())
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> (StatusCode, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .query(params)
            .send()
            .await
            .unwrap();
        let st = r.status();
        let body = r.text().await.unwrap();
        (
            st,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    async fn get_owned(&self, path: String) -> (StatusCode, Value) {
        self.get(&path, &[]).await
    }

    async fn post(&self, path: &str, params: &[(&str, &str)]) -> (StatusCode, String) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .form(params)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }
}

/// A minute-aligned time 20 minutes ago; test data starts there.
fn base_ms() -> i64 {
    (now_ms() / 60_000) * 60_000 - 20 * 60_000
}

/// `up` for jobs a and b, and `reqs_total`, every 15 s for 5 minutes.
fn test_data(base: i64) -> Vec<pb::TimeSeries> {
    let pts = |f: &dyn Fn(i64) -> f64| -> Vec<(i64, f64)> {
        (0..=20).map(|k| (base + k * 15_000, f(k))).collect()
    };
    vec![
        ts(
            &[("__name__", "up"), ("instance", "i1"), ("job", "a")],
            &pts(&|_| 1.0),
        ),
        ts(
            &[("__name__", "up"), ("instance", "i2"), ("job", "b")],
            &pts(&|_| 0.0),
        ),
        ts(
            &[("__name__", "reqs_total"), ("instance", "i1"), ("job", "a")],
            &pts(&|k| (k * 10) as f64 + 0.5),
        ),
    ]
}

fn matcher(t: i32, name: &str, value: &str) -> pb::LabelMatcher {
    pb::LabelMatcher {
        r#type: t,
        name: name.into(),
        value: value.into(),
    }
}

fn query(start: i64, end: i64, matchers: Vec<pb::LabelMatcher>) -> pb::Query {
    pb::Query {
        start_timestamp_ms: start,
        end_timestamp_ms: end,
        matchers,
        hints: None,
    }
}

fn labels_of(l: &[pb::Label]) -> Vec<(String, String)> {
    l.iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

/// Decodes a streamed body: checks every frame's CRC, decodes its XOR
/// chunks; per query index, `(labels, samples)` in arrival order (frames
/// of one series joined).
/// One decoded series of a streamed answer: query index, labels, samples.
type StreamedSeries = (i64, Vec<(String, String)>, Vec<(i64, f64)>);

fn decode_stream(mut body: &[u8]) -> Vec<StreamedSeries> {
    let mut out: Vec<StreamedSeries> = Vec::new();
    let mut frames = 0;
    while !body.is_empty() {
        let len = prost::encoding::decode_varint(&mut body).unwrap() as usize;
        assert!(body.len() >= 4 + len, "truncated frame");
        let crc = u32::from_be_bytes(body[..4].try_into().unwrap());
        let msg = &body[4..4 + len];
        assert_eq!(crc, crc32c::crc32c(msg), "frame CRC");
        let f = pb::ChunkedReadResponse::decode(msg).unwrap();
        assert_eq!(f.chunked_series.len(), 1, "one series per frame");
        let s = &f.chunked_series[0];
        let labels = labels_of(&s.labels);
        let mut samples = Vec::new();
        let mut prev_max = i64::MIN;
        for c in &s.chunks {
            assert_eq!(c.r#type, pb::chunk::Encoding::Xor as i32);
            assert!(c.min_time_ms > prev_max, "chunks ordered, non-overlapping");
            prev_max = c.max_time_ms;
            let d = stratus_tsdb::decode_xor(&c.data).unwrap();
            assert!(!d.is_empty() && d.len() <= 120, "{} samples", d.len());
            assert_eq!(d.first().unwrap().0, c.min_time_ms);
            assert_eq!(d.last().unwrap().0, c.max_time_ms);
            samples.extend(d);
        }
        match out.last_mut() {
            Some(last) if last.0 == f.query_index && last.1 == labels => last.2.extend(samples),
            _ => out.push((f.query_index, labels, samples)),
        }
        body = &body[4 + len..];
        frames += 1;
    }
    assert!(frames > 0 || out.is_empty());
    out
}

fn decode_samples(body: &[u8]) -> pb::ReadResponse {
    let raw = snap::raw::Decoder::new().decompress_vec(body).unwrap();
    pb::ReadResponse::decode(raw.as_slice()).unwrap()
}

fn pairs(l: &[(&str, &str)]) -> Vec<(String, String)> {
    l.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_read_samples_and_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    let base = base_ms();
    srv.push(None, test_data(base)).await;
    // A long series: 1000 samples, 1 s apart (several 120-sample chunks).
    let long: Vec<(i64, f64)> = (0..1000)
        .map(|i| (base + i * 1000, i as f64 * 1.25))
        .collect();
    srv.push(None, vec![ts(&[("__name__", "long")], &long)])
        .await;
    let end = base + 300_000;

    // SAMPLES (no accepted types): two queries, all matcher types.
    let req = pb::ReadRequest {
        queries: vec![
            query(base, end, vec![matcher(0, "__name__", "up")]),
            query(
                base + 30_000,
                base + 60_000,
                vec![
                    matcher(2, "__name__", "up|reqs_total"),
                    matcher(1, "job", "b"),
                    matcher(3, "instance", "i9.*"),
                ],
            ),
        ],
        accepted_response_types: vec![],
    };
    for prefix in ["", "/prometheus", "/api/prom"] {
        let (st, h, body) = srv
            .remote_read(&format!("{prefix}/api/v1/read"), &req, None)
            .await;
        assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert_eq!(h["content-type"], "application/x-protobuf");
        assert_eq!(h["content-encoding"], "snappy");
        let resp = decode_samples(&body);
        assert_eq!(resp.results.len(), 2);
        let r0 = &resp.results[0].timeseries;
        assert_eq!(r0.len(), 2);
        assert_eq!(
            labels_of(&r0[0].labels),
            pairs(&[("__name__", "up"), ("instance", "i1"), ("job", "a")])
        );
        assert_eq!(r0[0].samples.len(), 21);
        assert!(r0[0].samples.iter().all(|s| s.value == 1.0));
        assert_eq!(r0[1].samples[3].timestamp, base + 45_000);
        let r1 = &resp.results[1].timeseries;
        assert_eq!(r1.len(), 2, "{r1:?}");
        assert_eq!(r1[0].labels[0].value, "reqs_total");
        let got: Vec<(i64, f64)> = r1[0]
            .samples
            .iter()
            .map(|s| (s.timestamp, s.value))
            .collect();
        assert_eq!(
            got,
            vec![
                (base + 30_000, 20.5),
                (base + 45_000, 30.5),
                (base + 60_000, 40.5)
            ]
        );
    }

    // STREAMED_XOR_CHUNKS first, as Prometheus 3 asks.
    let req = pb::ReadRequest {
        queries: vec![
            query(
                base,
                end + 1_000_000,
                vec![matcher(2, "__name__", "long|up")],
            ),
            query(
                base + 100_500,
                base + 700_000,
                vec![matcher(0, "__name__", "long")],
            ),
        ],
        accepted_response_types: vec![1, 0],
    };
    let (st, h, body) = srv.remote_read("/api/v1/read", &req, None).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        h["content-type"],
        "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"
    );
    assert!(h.get("content-encoding").is_none());
    let got = decode_stream(&body);
    let names: Vec<(i64, &str)> = got.iter().map(|s| (s.0, s.1[0].1.as_str())).collect();
    assert_eq!(names, [(0, "long"), (0, "up"), (0, "up"), (1, "long")]);
    assert_eq!(got[0].2, long);
    assert_eq!(got[1].2.len(), 21);
    let want: Vec<(i64, f64)> = long
        .iter()
        .copied()
        .filter(|s| s.0 >= base + 100_500 && s.0 <= base + 700_000)
        .collect();
    assert_eq!(got[3].2, want);

    // Small frames: one series spans several frames, still decodes whole.
    srv.stop().await;
    let srv = start_with(ServerConfig {
        data_dir: dir.path().to_path_buf(),
        remote_read_max_frame_bytes: 2048,
        auth: AuthMode::None,
        ..ServerConfig::default()
    })
    .await;
    let req = pb::ReadRequest {
        queries: vec![query(
            base,
            end + 1_000_000,
            vec![matcher(0, "__name__", "long")],
        )],
        accepted_response_types: vec![1],
    };
    let (st, _, body) = srv.remote_read("/api/v1/read", &req, None).await;
    assert_eq!(st, StatusCode::OK);
    let got = decode_stream(&body);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2, long);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_read_errors_limits_and_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with(ServerConfig {
        data_dir: dir.path().to_path_buf(),
        auth: AuthMode::Header,
        remote_read_sample_limit: 30,
        remote_read_series_limit: 2,
        ..ServerConfig::default()
    })
    .await;
    let base = base_ms();
    srv.push(Some("t1"), test_data(base)).await;
    let up = |types: Vec<i32>| pb::ReadRequest {
        queries: vec![query(
            base,
            base + 300_000,
            vec![matcher(0, "__name__", "up")],
        )],
        accepted_response_types: types,
    };
    // Tenant isolation: t2 sees nothing; no header is 401.
    let (st, _, body) = srv
        .remote_read("/api/v1/read", &up(vec![]), Some("t2"))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(decode_samples(&body).results[0].timeseries.is_empty());
    let (st, _, _) = srv.remote_read("/api/v1/read", &up(vec![]), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // Sample limit (42 samples > 30): 400 as Prometheus says it.
    let (st, _, body) = srv
        .remote_read("/api/v1/read", &up(vec![0]), Some("t1"))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("exceeded sample limit (30)"));
    // Streamed answers are bounded by frames, not by the sample limit.
    let (st, _, body) = srv
        .remote_read("/api/v1/read", &up(vec![1]), Some("t1"))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(decode_stream(&body).len(), 2);
    // Series limit (3 > 2).
    let all = pb::ReadRequest {
        queries: vec![query(
            base,
            base + 300_000,
            vec![matcher(2, "__name__", ".+")],
        )],
        accepted_response_types: vec![1],
    };
    let (st, _, body) = srv.remote_read("/api/v1/read", &all, Some("t1")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("exceeded series limit (2)"));
    // `func: series` hints: labels only, no samples counted.
    let mut q = up(vec![0]);
    q.queries[0].hints = Some(pb::ReadHints {
        func: "series".into(),
        start_ms: base,
        end_ms: base + 300_000,
        ..Default::default()
    });
    let (st, _, body) = srv.remote_read("/api/v1/read", &q, Some("t1")).await;
    assert_eq!(st, StatusCode::OK);
    let r = decode_samples(&body);
    assert_eq!(r.results[0].timeseries.len(), 2);
    assert!(r.results[0].timeseries[0].samples.is_empty());
    // Bad input.
    let post = |body: Vec<u8>| {
        srv.client
            .post(format!("{}/api/v1/read", srv.base))
            .header("X-Scope-OrgID", "t1")
            .body(body)
            .send()
    };
    let r = post(b"not snappy".to_vec()).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = post(snappy(b"\xff\xff\xff")).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let mut bad = up(vec![]);
    bad.queries[0].matchers.push(matcher(2, "job", "(unclosed"));
    let (st, _, body) = srv.remote_read("/api/v1/read", &bad, Some("t1")).await;
    assert_eq!(
        st,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (st, _, body) = srv
        .remote_read("/api/v1/read", &up(vec![5]), Some("t1"))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("response types"));
    // A body that decompresses beyond the limit: 413.
    // (A snappy block starts with the uvarint of its decompressed length.)
    let mut huge = Vec::new();
    prost::encoding::encode_varint(600 << 20, &mut huge);
    huge.extend_from_slice(b"\x00\x00");
    let r = post(huge).await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    srv.stop().await;
}

async fn prom_get(client: &reqwest::Client, url: &str, params: &[(&str, &str)]) -> Value {
    let r = client.get(url).query(params).send().await.unwrap();
    let st = r.status();
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

/// A real Prometheus 2.42 reads Stratus' data through `remote_read`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_remote_read() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    let base = base_ms();
    srv.push(None, test_data(base)).await;
    let pdir = tempfile::tempdir().unwrap();
    let prom = start_prometheus(
        pdir.path(),
        &format!(
            "global:\n  scrape_interval: 1h\nscrape_configs: []\nremote_read:\n  - url: {}/api/v1/read\n    read_recent: true\n",
            srv.base
        ),
        &[],
    )
    .await;
    let client = common::http_client();
    let secs = |ms: i64| format!("{}", ms as f64 / 1000.0);

    // An instant query over remote data.
    let v = prom_get(
        &client,
        &format!("{}/api/v1/query", prom.base),
        &[
            ("query", "sum by (job) (up)"),
            ("time", &secs(base + 60_000)),
        ],
    )
    .await;
    let mut res = v["data"]["result"].as_array().unwrap().clone();
    res.sort_by_key(|s| s["metric"]["job"].as_str().unwrap().to_string());
    assert_eq!(res.len(), 2, "{v}");
    assert_eq!(res[0]["metric"], json!({"job": "a"}));
    assert_eq!(res[0]["value"][1], "1");
    assert_eq!(res[1]["value"][1], "0");

    // A range query: Prometheus' answer equals Stratus' own.
    let params = [
        ("query", "rate(reqs_total[1m])"),
        ("start", &secs(base + 60_000) as &str),
        ("end", &secs(base + 240_000)),
        ("step", "30"),
    ];
    let pv = prom_get(
        &client,
        &format!("{}/api/v1/query_range", prom.base),
        &params,
    )
    .await;
    let (st, sv) = srv.get("/api/v1/query_range", &params).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(pv["data"], sv["data"]);
    assert_eq!(
        pv["data"]["result"][0]["values"].as_array().unwrap().len(),
        7
    );

    // Raw samples through a range selector.
    let v = prom_get(
        &client,
        &format!("{}/api/v1/query", prom.base),
        &[("query", "reqs_total[1m]"), ("time", &secs(base + 60_000))],
    )
    .await;
    let vals = v["data"]["result"][0]["values"].as_array().unwrap();
    // Prometheus 2.x range selectors include the left boundary.
    assert_eq!(vals.len(), 5, "{v}");
    assert_eq!(vals[0][1], "0.5");
    assert_eq!(vals[4][1], "40.5");

    // Series metadata (Prometheus sends `func: series` hints).
    let v = prom_get(
        &client,
        &format!("{}/api/v1/series", prom.base),
        &[
            ("match[]", "up"),
            ("start", &secs(base)),
            ("end", &secs(base + 300_000)),
        ],
    )
    .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "{v}");

    // What Prometheus asked for, from Stratus' own metrics.
    let metrics = srv
        .client
        .get(format!("{}/metrics", srv.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let asked: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("stratus_api_remote_read_requests_total{"))
        .collect();
    // Prometheus 2.42's client asks for SAMPLES only (streamed chunks are
    // requested by newer clients; that path is checked by the direct
    // client test above).
    assert_eq!(asked.len(), 1, "{metrics}");
    assert!(asked[0].contains("response_type=\"samples\""), "{asked:?}");
    drop(prom);
    srv.stop().await;
}

/// `format_query` answers what a real Prometheus answers, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_query_matches_real_prometheus() {
    let pdir = tempfile::tempdir().unwrap();
    let prom = start_prometheus(pdir.path(), NO_SCRAPES, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    let client = common::http_client();
    let queries = [
        "up",
        r#"sum by(job)(rate(http_requests_total{job="a",code=~"5.."}[5m])) / on(job) group_left(x) sum by(job)(rate(http_requests_total[5m]))"#,
        "foo offset 5m",
        "foo offset -5m",
        "1+2*3",
        "(1 + 2) * 3",
        "topk(5, x) > bool 3",
        r#"histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket{job="api-server",handler!="/metrics",instance=~"10.0.0.1:9090|10.0.0.2:9090"}[5m])))"#,
        "a[5m:1m]",
        "-x",
        "x and y",
        "x unless on(a) y",
        r#""str""#,
        "1e21",
        "Inf",
        r#"{__name__="bar"}"#,
        "sum without (a, b) (x)",
        r#"count_values("v", x)"#,
        r#"label_replace(up, "a", "$1", "b", "(.*)")"#,
        "max_over_time(deriv(rate(x[5m])[10m:1m])[1h:])",
        // Long enough to be split over lines.
        r#"sum by (job) (rate(http_requests_total{job="aaaaaaaaaaaaaaaaaaaa",code=~"5.."}[5m])) / on (job) group_left (x) sum by (job) (rate(http_requests_total[5m]))"#,
        r#"max_over_time(deriv(rate(some_really_long_metric_name_here_for_testing_total{job="aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}[5m])[10m:1m])[1h:])"#,
        r#"-(sum(rate(some_really_long_metric_name_here_for_testing_total{job="aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}[5m])) + 1e21)"#,
        r#"topk(5, sum without (instance) (rate(some_really_long_metric_name_here_for_testing_total{job="aaaaaaaaaaaaaaaaaaaa"}[5m]))) > bool 3"#,
        r#"(some_really_long_metric_name_here_for_testing_total{job="aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"} offset 5m + other_long_metric_name)"#,
        r#"label_replace(some_really_long_metric_name_here_for_testing_total{job="aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}, "a", "$1", "b", "(.*)")"#,
        r#"sum(avg_over_time((some_really_long_metric_name_here_for_testing_total{job="aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"} * 2)[5m:]))"#,
        r#"count_values("value", some_really_long_metric_name_here_for_testing_total{job="aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"})"#,
    ];
    let mut compared = 0;
    for q in queries {
        let get = |base: String| {
            let client = client.clone();
            async move {
                let r = client
                    .get(format!("{base}/api/v1/format_query"))
                    .query(&[("query", q)])
                    .send()
                    .await
                    .unwrap();
                (r.status(), r.text().await.unwrap())
            }
        };
        let (pst, pbody) = get(prom.base.clone()).await;
        let (st, body) = get(srv.base.clone()).await;
        assert_eq!(pst, StatusCode::OK, "{q}: {pbody}");
        assert_eq!(st, pst, "{q}: {body}");
        let pv: Value = serde_json::from_str(&pbody).unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v, pv, "{q}");
        compared += 1;
    }
    assert_eq!(compared, queries.len());
    // POST and prefixes; a parse error is 400 bad_data.
    let (st, body) = srv
        .post(
            "/prometheus/api/v1/format_query",
            &[("query", "sum(x)by(a)")],
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body, r#"{"status":"success","data":"sum by (a) (x)"}"#);
    let (st, v) = srv
        .get("/api/prom/api/v1/format_query", &[("query", "sum(")])
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["errorType"], "bad_data");
    drop(prom);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_query_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    let (st, v) = srv
        .get("/api/v1/parse_query", &[("query", r#"up{job!="a"}"#)])
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"status": "success", "data": {
            "type": "vectorSelector", "name": "up", "offset": 0,
            "matchers": [{"name": "job", "type": "!=", "value": "a"},
                         {"name": "__name__", "type": "=", "value": "up"}],
            "timestamp": null, "startOrEnd": null, "anchored": false, "smoothed": false}})
    );
    let (st, body) = srv
        .post(
            "/prometheus/api/v1/parse_query",
            &[("query", "sum by (job) (rate(x[5m])) > 1")],
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    let d = &v["data"];
    assert_eq!(d["type"], "binaryExpr");
    assert_eq!(d["op"], ">");
    assert_eq!(d["matching"], Value::Null);
    assert_eq!(d["bool"], false);
    assert_eq!(d["rhs"], json!({"type": "numberLiteral", "val": "1"}));
    let agg = &d["lhs"];
    assert_eq!(
        (
            agg["type"].clone(),
            agg["op"].clone(),
            agg["grouping"].clone(),
            agg["without"].clone(),
            agg["param"].clone()
        ),
        (
            json!("aggregation"),
            json!("sum"),
            json!(["job"]),
            json!(false),
            Value::Null
        )
    );
    let call = &agg["expr"];
    assert_eq!(
        call["func"],
        json!({"name": "rate", "argTypes": ["matrix"], "variadic": 0, "returnType": "vector"})
    );
    assert_eq!(call["args"][0]["range"], 300000);
    let (st, v) = srv
        .get("/api/v1/parse_query", &[("query", "rate(x)")])
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["errorType"], "bad_data");
    let (st, _) = srv.get("/api/v1/parse_query", &[]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_stub_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    for prefix in ["", "/prometheus", "/api/prom"] {
        let get = |p: &str| srv.get_owned(format!("{prefix}/api/v1/{p}"));
        let (st, v) = get("status/config").await;
        assert_eq!(st, StatusCode::OK);
        let yaml = v["data"]["yaml"].as_str().unwrap();
        assert!(
            yaml.contains("data_dir:") && yaml.contains("remote_read_sample_limit:"),
            "{yaml}"
        );
        let (_, v) = get("status/flags").await;
        assert_eq!(v["data"]["enable-admin-api"], "false");
        assert!(
            v["data"]
                .as_object()
                .unwrap()
                .values()
                .all(Value::is_string)
        );
        let (_, v) = get("status/runtimeinfo").await;
        let d = &v["data"];
        for k in [
            "startTime",
            "CWD",
            "lastConfigTime",
            "storageRetention",
            "GOGC",
            "GODEBUG",
        ] {
            assert!(d[k].is_string(), "{k}: {v}");
        }
        assert_eq!(d["reloadConfigSuccess"], true);
        assert_eq!(d["corruptionCount"], 0);
        assert!(d["goroutineCount"].as_u64().unwrap() > 0);
        assert!(d["GOMAXPROCS"].as_u64().unwrap() >= 1);
        assert_eq!(d["storageRetention"], "forever");
        assert!(d["startTime"].as_str().unwrap().ends_with('Z'));
        let (_, v) = get("status/walreplay").await;
        assert_eq!(v["data"], json!({"min": 0, "max": 0, "current": 0}));
        let (_, v) = get("status/buildinfo").await;
        assert!(v["data"]["version"].is_string());
        let (_, v) = get("targets").await;
        assert_eq!(v["data"]["activeTargets"], json!([]));
        assert_eq!(v["data"]["droppedTargets"], json!([]));
        let (_, v) = get("targets/metadata").await;
        assert_eq!(v, json!({"status": "success", "data": []}));
        let (_, v) = get("rules").await;
        assert_eq!(v, json!({"status": "success", "data": {"groups": []}}));
        let (_, v) = get("alerts").await;
        assert_eq!(v, json!({"status": "success", "data": {"alerts": []}}));
        let (_, v) = get("alertmanagers").await;
        assert_eq!(
            v["data"],
            json!({"activeAlertmanagers": [], "droppedAlertmanagers": []})
        );
        // An empty tenant: empty cardinality, Prometheus' empty-head times.
        let (st, v) = get("status/tsdb").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v["data"]["headStats"]["numSeries"], 0);
        assert_eq!(v["data"]["headStats"]["minTime"], i64::MAX);
    }
    // Admin endpoints are off by default (503 as Prometheus).
    let (st, body) = srv
        .post("/api/v1/admin/tsdb/delete_series", &[("match[]", "up")])
        .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("admin APIs disabled"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsdb_status_counts_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::Header).await;
    let base = base_ms();
    srv.push(Some("t1"), test_data(base)).await;
    let many: Vec<pb::TimeSeries> = (0..5)
        .map(|i| {
            ts(
                &[("__name__", "m"), ("pod", &format!("p{i}"))],
                &[(base, 1.0)],
            )
        })
        .collect();
    srv.push(Some("t1"), many).await;
    srv.push(
        Some("t2"),
        vec![ts(&[("__name__", "other")], &[(base, 1.0)])],
    )
    .await;
    let get = |params: Vec<(&'static str, &'static str)>, tenant: &'static str| {
        srv.client
            .get(format!("{}/prometheus/api/v1/status/tsdb", srv.base))
            .query(&params)
            .header("X-Scope-OrgID", tenant)
            .send()
    };
    let r = get(vec![], "t1").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let d = &v["data"];
    let h = &d["headStats"];
    assert_eq!(h["numSeries"], 8, "{v}");
    // __name__: up, reqs_total, m (3); instance: i1, i2; job: a, b; pod: p0..p4.
    assert_eq!(h["numLabelPairs"], 12, "{v}");
    assert!(h["chunkCount"].as_u64().unwrap() >= 8);
    assert_eq!(h["minTime"], base);
    assert_eq!(h["maxTime"], base + 300_000);
    assert_eq!(
        d["seriesCountByMetricName"],
        json!([{"name": "m", "value": 5}, {"name": "up", "value": 2},
               {"name": "reqs_total", "value": 1}])
    );
    assert_eq!(
        d["labelValueCountByLabelName"][0],
        json!({"name": "pod", "value": 5})
    );
    assert_eq!(
        d["seriesCountByLabelValuePair"][0],
        json!({"name": "__name__=m", "value": 5})
    );
    // __name__ bytes: 5×"m" + 2×"up" + 1×"reqs_total" = 5 + 4 + 10.
    let mem = d["memoryInBytesByLabelName"].as_array().unwrap();
    assert!(
        mem.contains(&json!({"name": "__name__", "value": 19})),
        "{mem:?}"
    );
    // limit.
    let r = get(vec![("limit", "1")], "t1").await.unwrap();
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(
        v["data"]["seriesCountByMetricName"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    for bad in ["0", "-1", "x", "10001"] {
        let r = get(vec![("limit", bad)], "t1").await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    // Per tenant.
    let r = get(vec![], "t2").await.unwrap();
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["data"]["headStats"]["numSeries"], 1);
    assert_eq!(
        v["data"]["seriesCountByMetricName"],
        json!([{"name": "other", "value": 1}])
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_delete_series() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_with(ServerConfig {
        data_dir: dir.path().to_path_buf(),
        enable_admin_api: true,
        auth: AuthMode::None,
        ..ServerConfig::default()
    })
    .await;
    let base = base_ms();
    srv.push(None, test_data(base)).await;
    let secs = |ms: i64| format!("{}", ms as f64 / 1000.0);
    let count = |v: &Value| -> Vec<usize> {
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["values"].as_array().unwrap().len())
            .collect()
    };
    let range = [
        ("query", "up"),
        ("start", &secs(base) as &str),
        ("end", &secs(base + 300_000)),
        ("step", "15"),
    ];
    let (_, v) = srv.get("/api/v1/query_range", &range).await;
    assert_eq!(count(&v), [21, 21]);
    // Missing match[]: 400.
    let (st, _) = srv.post("/api/v1/admin/tsdb/delete_series", &[]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // Delete job a's first two minutes.
    let (st, body) = srv
        .post(
            "/prometheus/api/v1/admin/tsdb/delete_series",
            &[
                ("match[]", r#"up{job="a"}"#),
                ("start", &secs(base)),
                ("end", &secs(base + 119_000)),
            ],
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{body}");
    let (_, v) = srv.get("/api/v1/query_range", &range).await;
    let res = v["data"]["result"].as_array().unwrap();
    assert_eq!(res[0]["metric"]["job"], "a");
    // Samples at base+120s.. remain; lookback (5m) fills the steps before
    // from nothing: the first 8 steps are gone.
    assert_eq!(res[0]["values"][0][0], (base + 120_000) / 1000, "{v}");
    assert_eq!(count(&v), [13, 21]);
    // Delete all of job b via PUT, then clean tombstones.
    let r = srv
        .client
        .put(format!("{}/api/v1/admin/tsdb/delete_series", srv.base))
        .query(&[("match[]", r#"{job="b"}"#)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, v) = srv.get("/api/v1/query_range", &range).await;
    assert_eq!(count(&v), [13]);
    let (st, _) = srv.post("/api/v1/admin/tsdb/clean_tombstones", &[]).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, body) = srv.post("/api/v1/admin/tsdb/snapshot", &[]).await;
    assert_eq!(st, StatusCode::NOT_IMPLEMENTED);
    assert!(body.contains("snapshots are not supported"), "{body}");
    srv.stop().await;
}
