//! End-to-end tests of the PromQL endpoints: the real server on 127.0.0.1
//! (port 0) in-process, data pushed through remote write, queries through
//! a real HTTP client, the Debian `promtool`, and a byte-for-byte
//! comparison with a real Prometheus server (the last two only when the
//! binaries are installed; `scripts/apt-packages.txt` lists `prometheus`).

use std::path::Path;
use std::process::Command;

use prost::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};
use stratus_api::{AuthMode, ServerConfig};
use stratus_proto::prometheus as pb;

mod common;
use common::prometheus::{NO_SCRAPES, start_prometheus};
use common::{Server, now_ms, start, ts};

impl Server {
    async fn push(&self, tenant: Option<&str>, series: Vec<pb::TimeSeries>) {
        let body = pb::WriteRequest {
            timeseries: series,
            metadata: Vec::new(),
        }
        .encode_to_vec();
        let body = snap::raw::Encoder::new().compress_vec(&body).unwrap();
        let mut rb = self
            .client
            .post(format!("{}/api/v1/push", self.base))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .body(body);
        if let Some(t) = tenant {
            rb = rb.header("X-Scope-OrgID", t);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }

    /// GET `path` with `params`; the status and the raw body.
    async fn get_raw(
        &self,
        path: &str,
        params: &[(&str, &str)],
        tenant: Option<&str>,
    ) -> (StatusCode, String) {
        let mut rb = self
            .client
            .get(format!("{}{path}", self.base))
            .query(params);
        if let Some(t) = tenant {
            rb = rb.header("X-Scope-OrgID", t);
        }
        let r = rb.send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> (StatusCode, Value) {
        self.get_tenant(path, params, None).await
    }

    async fn get_tenant(
        &self,
        path: &str,
        params: &[(&str, &str)],
        tenant: Option<&str>,
    ) -> (StatusCode, Value) {
        let (st, body) = self.get_raw(path, params, tenant).await;
        let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (st, v)
    }

    async fn post(&self, path: &str, params: &[(&str, &str)]) -> (StatusCode, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .form(params)
            .send()
            .await
            .unwrap();
        let st = r.status();
        (
            st,
            serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
        )
    }
}

/// Seconds as the API takes them.
fn secs(ms: i64) -> String {
    format!("{}", ms as f64 / 1000.0)
}

/// A minute-aligned time 20 minutes ago; test data starts there.
fn base_ms() -> i64 {
    (now_ms() / 60_000) * 60_000 - 20 * 60_000
}

/// `up` (1 for job a, 0 for job b) and `reqs_total` (+10 and +30 per
/// step) every 15 s for 5 minutes from `base`.
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
            &pts(&|k| (k * 10) as f64),
        ),
        ts(
            &[("__name__", "reqs_total"), ("instance", "i2"), ("job", "b")],
            &pts(&|k| (k * 30) as f64),
        ),
    ]
}

fn value_f64(v: &Value) -> f64 {
    v.as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_queries() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    let base = base_ms();
    srv.push(None, test_data(base)).await;
    let t = base + 120_000;
    let at = secs(t);

    // A selector: both series, exact encoding of a sample.
    let (st, v) = srv
        .get("/api/v1/query", &[("query", "up"), ("time", &at)])
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["resultType"], "vector");
    let mut res = v["data"]["result"].as_array().unwrap().clone();
    res.sort_by_key(|s| s["metric"]["job"].as_str().unwrap().to_string());
    assert_eq!(
        res[0],
        json!({"metric": {"__name__": "up", "instance": "i1", "job": "a"},
               "value": [t / 1000, "1"]})
    );
    assert_eq!(res[1]["value"][1], "0");
    assert!(v.get("warnings").is_none() && v.get("infos").is_none());

    // rate + sum by.
    let (st, v) = srv
        .get(
            "/api/v1/query",
            &[
                ("query", "sum by (job) (rate(reqs_total[1m]))"),
                ("time", &at),
            ],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let mut res = v["data"]["result"].as_array().unwrap().clone();
    res.sort_by_key(|s| s["metric"]["job"].as_str().unwrap().to_string());
    assert_eq!(res.len(), 2);
    assert_eq!(res[0]["metric"], json!({"job": "a"}));
    assert!((value_f64(&res[0]["value"][1]) - 10.0 / 15.0).abs() < 1e-9);
    assert!((value_f64(&res[1]["value"][1]) - 2.0).abs() < 1e-9);

    // A scalar and a string literal; a fractional time.
    let (st, v) = srv
        .get(
            "/api/v1/query",
            &[("query", "scalar(sum(up))"), ("time", &secs(t + 500))],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["data"],
        json!({"resultType": "scalar", "result": [(t + 500) as f64 / 1000.0, "1"]})
    );
    let (_, body) = srv
        .get_raw(
            "/api/v1/query",
            &[("query", "\"hello\""), ("time", "1435781451.781")],
            None,
        )
        .await;
    assert_eq!(
        body,
        r#"{"status":"success","data":{"resultType":"string","result":[1435781451.781,"hello"]}}"#
    );

    // A range selector in an instant query is a matrix.
    let (_, v) = srv
        .get(
            "/api/v1/query",
            &[("query", "up{job=\"a\"}[1m]"), ("time", &at)],
        )
        .await;
    assert_eq!(v["data"]["resultType"], "matrix");
    assert_eq!(
        v["data"]["result"][0]["values"].as_array().unwrap().len(),
        4
    );

    // Vector values use the codec: timestamps with a 3-digit fraction.
    let (_, body) = srv
        .get_raw(
            "/api/v1/query",
            &[("query", "vector(1.5e-7)"), ("time", "1.5")],
            None,
        )
        .await;
    assert_eq!(
        body,
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.500,"1.5e-07"]}]}}"#
    );

    // limit cuts the result with a warning.
    let (_, v) = srv
        .get(
            "/api/v1/query",
            &[("query", "up"), ("time", &at), ("limit", "1")],
        )
        .await;
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 1);
    assert_eq!(v["warnings"], json!(["results truncated due to limit"]));

    // lookback_delta: 10s back from a time 20s after the last sample
    // finds nothing; the default 5m does.
    let late = secs(base + 320_000);
    let (_, v) = srv
        .get(
            "/api/v1/query",
            &[("query", "up"), ("time", &late), ("lookback_delta", "10s")],
        )
        .await;
    assert_eq!(v["data"]["result"], json!([]));
    let (_, v) = srv
        .get("/api/v1/query", &[("query", "up"), ("time", &late)])
        .await;
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 2);

    // Without `time` the query runs at now.
    let (st, v) = srv.get("/api/v1/query", &[("query", "time()")]).await;
    assert_eq!(st, StatusCode::OK);
    let now = v["data"]["result"][0].as_f64().unwrap();
    assert!((now - now_ms() as f64 / 1000.0).abs() < 60.0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_queries() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    let base = base_ms();
    srv.push(None, test_data(base)).await;
    let (start, end) = (secs(base + 60_000), secs(base + 120_000));

    let (st, v) = srv
        .get(
            "/api/v1/query_range",
            &[
                ("query", "up"),
                ("start", &start),
                ("end", &end),
                ("step", "15"),
            ],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["resultType"], "matrix");
    let res = v["data"]["result"].as_array().unwrap();
    // Sorted by label set: job a (instance i1) first.
    assert_eq!(res.len(), 2);
    assert_eq!(
        res[0]["metric"],
        json!({"__name__": "up", "instance": "i1", "job": "a"})
    );
    assert_eq!(res[1]["metric"]["job"], "b");
    let vals = res[0]["values"].as_array().unwrap();
    assert_eq!(vals.len(), 5);
    assert_eq!(vals[0], json!([(base + 60_000) / 1000, "1"]));
    assert_eq!(vals[4], json!([(base + 120_000) / 1000, "1"]));

    // rate, step as a duration string, sum by.
    let (st, v) = srv
        .get(
            "/api/v1/query_range",
            &[
                ("query", "sum by (job) (rate(reqs_total[1m]))"),
                ("start", &start),
                ("end", &end),
                ("step", "30s"),
            ],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let res = v["data"]["result"].as_array().unwrap();
    assert_eq!(res.len(), 2);
    assert_eq!(res[1]["metric"], json!({"job": "b"}));
    for p in res[1]["values"].as_array().unwrap() {
        assert!((value_f64(&p[1]) - 2.0).abs() < 1e-9, "{p}");
    }
    assert_eq!(res[1]["values"].as_array().unwrap().len(), 3);

    // A scalar expression is a matrix with one unnamed series; fractional
    // steps and timestamps keep their milliseconds.
    let (_, body) = srv
        .get_raw(
            "/api/v1/query_range",
            &[
                ("query", "1+1"),
                ("start", "1.5"),
                ("end", "3"),
                ("step", "0.5"),
            ],
            None,
        )
        .await;
    assert_eq!(
        body,
        r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1.500,"2"],[2,"2"],[2.500,"2"],[3,"2"]]}]}}"#
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_health_check_post_forms_and_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    // Before any data exists (the tenant has no database yet).
    for prefix in ["", "/prometheus", "/api/prom"] {
        let (st, body) = srv
            .get_raw(
                &format!("{prefix}/api/v1/query"),
                &[("query", "1+1"), ("time", "4")],
                None,
            )
            .await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(
            body,
            r#"{"status":"success","data":{"resultType":"scalar","result":[4,"2"]}}"#
        );
    }
    assert!(!dir.path().join("tenants").join("default").exists());

    let base = base_ms();
    srv.push(None, test_data(base)).await;
    let at = secs(base + 120_000);
    for prefix in ["", "/prometheus", "/api/prom"] {
        // POST form, as Grafana sends by default.
        let (st, v) = srv
            .post(
                &format!("{prefix}/api/v1/query"),
                &[("query", "count(up)"), ("time", &at)],
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["data"]["result"][0]["value"][1], "2");
        let (st, v) = srv
            .post(
                &format!("{prefix}/api/v1/query_range"),
                &[
                    ("query", "count(up)"),
                    ("start", &secs(base + 60_000)),
                    ("end", &at),
                    ("step", "60"),
                ],
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(
            v["data"]["result"][0]["values"].as_array().unwrap().len(),
            2
        );
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    let base = base_ms();
    srv.push(None, test_data(base)).await;
    let at = secs(base + 120_000);

    let check = |st: StatusCode, v: &Value, want: StatusCode, kind: &str| {
        assert_eq!(st, want, "{v}");
        assert_eq!(v["status"], "error", "{v}");
        assert_eq!(v["errorType"], kind, "{v}");
        assert!(!v["error"].as_str().unwrap().is_empty());
    };
    // Parse errors and bad parameters: 400 bad_data.
    let (st, v) = srv
        .get("/api/v1/query", &[("query", "sum(up"), ("time", &at)])
        .await;
    check(st, &v, StatusCode::BAD_REQUEST, "bad_data");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid parameter \"query\": ")
    );
    let (st, v) = srv.get("/api/v1/query", &[("time", &at)]).await;
    check(st, &v, StatusCode::BAD_REQUEST, "bad_data");
    let (st, v) = srv
        .get("/api/v1/query", &[("query", "up"), ("time", "yesterday")])
        .await;
    check(st, &v, StatusCode::BAD_REQUEST, "bad_data");
    let (st, v) = srv
        .get("/api/v1/query", &[("query", "up"), ("timeout", "soon")])
        .await;
    check(st, &v, StatusCode::BAD_REQUEST, "bad_data");
    let (st, v) = srv
        .get("/api/v1/query", &[("query", "up"), ("limit", "-1")])
        .await;
    check(st, &v, StatusCode::BAD_REQUEST, "bad_data");

    let range = |q: &'static str, start: &'static str, end: &'static str, step: &'static str| {
        [("query", q), ("start", start), ("end", end), ("step", step)]
    };
    let (st, v) = srv
        .get("/api/v1/query_range", &range("up", "0", "110010", "10"))
        .await;
    check(st, &v, StatusCode::BAD_REQUEST, "bad_data");
    assert_eq!(
        v["error"],
        "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
    );
    let (st, v) = srv
        .get("/api/v1/query_range", &range("up", "0", "110009.999", "10"))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = srv
        .get("/api/v1/query_range", &range("up", "100", "50", "10"))
        .await;
    check(st, &v, StatusCode::BAD_REQUEST, "bad_data");
    assert_eq!(
        v["error"],
        "invalid parameter \"end\": end timestamp must not be before start time"
    );
    for step in ["0", "-5", "abc"] {
        let (st, v) = srv
            .get(
                "/api/v1/query_range",
                &[
                    ("query", "up"),
                    ("start", "0"),
                    ("end", "100"),
                    ("step", step),
                ],
            )
            .await;
        check(st, &v, StatusCode::BAD_REQUEST, "bad_data");
    }
    let (st, v) = srv
        .get("/api/v1/query_range", &[("query", "up"), ("start", "0")])
        .await;
    check(st, &v, StatusCode::BAD_REQUEST, "bad_data");
    let (st, v) = srv
        .get("/api/v1/query_range", &range("up[5m]", "0", "100", "10"))
        .await;
    check(st, &v, StatusCode::BAD_REQUEST, "bad_data");
    let (st, v) = srv
        .get("/api/v1/query_range", &range("\"s\"", "0", "100", "10"))
        .await;
    check(st, &v, StatusCode::BAD_REQUEST, "bad_data");

    // Evaluation errors: 422 execution.
    let (st, v) = srv
        .get("/api/v1/query", &[("query", "up + on() up"), ("time", &at)])
        .await;
    check(st, &v, StatusCode::UNPROCESSABLE_ENTITY, "execution");
    assert!(v["error"].as_str().unwrap().contains("many-to-many"), "{v}");
    let (st, v) = srv
        .get(
            "/api/v1/query",
            &[
                (
                    "query",
                    r#"label_replace(label_replace(up, "job", "x", "", ""), "instance", "x", "", "") * 1"#,
                ),
                ("time", &at),
            ],
        )
        .await;
    check(st, &v, StatusCode::UNPROCESSABLE_ENTITY, "execution");
    assert!(
        v["error"].as_str().unwrap().contains("same labelset"),
        "{v}"
    );

    // Extreme times (Prometheus' own minimum and maximum) do not crash.
    for t in [
        "-292273086-05-16T16:47:06Z",
        "292277025-08-18T07:12:54.999999999Z",
        "-9000000000000",
        "9000000000000",
    ] {
        for q in ["up", "rate(up[5m] offset 1h)", "time()"] {
            let (st, v) = srv.get("/api/v1/query", &[("query", q), ("time", t)]).await;
            assert_eq!(st, StatusCode::OK, "{t} {q}: {v}");
        }
    }

    // Past its timeout: 503 timeout.
    let (st, v) = srv
        .get(
            "/api/v1/query_range",
            &[
                ("query", "sum(rate(reqs_total[1m]))"),
                ("start", &secs(base - 10_000_000)),
                ("end", &at),
                ("step", "1"),
                ("timeout", "0.000000001"),
            ],
        )
        .await;
    check(st, &v, StatusCode::SERVICE_UNAVAILABLE, "timeout");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_isolated_by_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::Header).await;
    let base = base_ms();
    srv.push(
        Some("team-a"),
        vec![ts(&[("__name__", "m"), ("who", "a")], &[(base, 1.0)])],
    )
    .await;
    srv.push(
        Some("team-b"),
        vec![ts(&[("__name__", "m"), ("who", "b")], &[(base, 2.0)])],
    )
    .await;
    let at = secs(base + 1000);
    let q = [("query", "m"), ("time", at.as_str())];
    let (st, v) = srv.get_tenant("/api/v1/query", &q, Some("team-a")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        v["data"]["result"],
        json!([{"metric": {"__name__": "m", "who": "a"}, "value": [(base + 1000) / 1000, "1"]}])
    );
    let (_, v) = srv.get_tenant("/api/v1/query", &q, Some("team-b")).await;
    assert_eq!(v["data"]["result"][0]["metric"]["who"], "b");
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 1);
    // A tenant without data gets an empty answer and no directory.
    let (st, v) = srv.get_tenant("/api/v1/query", &q, Some("nobody")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["data"]["result"], json!([]));
    assert!(!dir.path().join("tenants").join("nobody").exists());
    let (st, v) = srv
        .get_tenant(
            "/prometheus/api/v1/query_range",
            &[
                ("query", "m"),
                ("start", &secs(base)),
                ("end", &at),
                ("step", "1"),
            ],
            Some("team-b"),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["data"]["result"][0]["values"][0][1], "2");
    // No header: 401.
    let (st, _) = srv.get_tenant("/api/v1/query", &q, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    srv.stop().await;
}

/// Runs a program on the blocking pool (the server shares this runtime).
async fn run_cmd(prog: &str, args: Vec<String>) -> (bool, String, String) {
    let prog = prog.to_string();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(&prog).args(&args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_queries() {
    let promtool = "/usr/bin/promtool";
    assert!(
        Path::new(promtool).exists(),
        "{promtool} is missing: scripts/test installs it (Debian package prometheus, see scripts/apt-packages.txt)"
    );
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    let base = base_ms();
    srv.push(None, test_data(base)).await;
    let url = srv.base.clone();
    let at = secs(base + 120_000);
    let s = |v: &str| v.to_string();

    let (ok, out, err) = run_cmd(
        promtool,
        vec![
            s("query"),
            s("instant"),
            format!("--time={at}"),
            url.clone(),
            s("up"),
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains(r#"up{instance="i1", job="a"} => 1 @["#),
        "{out}"
    );
    assert!(
        out.contains(r#"up{instance="i2", job="b"} => 0 @["#),
        "{out}"
    );

    let (ok, out, err) = run_cmd(
        promtool,
        vec![
            s("query"),
            s("instant"),
            s("-o"),
            s("json"),
            format!("--time={at}"),
            url.clone(),
            s("sum(up) + 41"),
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("\"42\""), "{out}");

    let (ok, out, err) = run_cmd(
        promtool,
        vec![
            s("query"),
            s("range"),
            format!("--start={}", secs(base + 60_000)),
            format!("--end={at}"),
            s("--step=15s"),
            url.clone(),
            s("rate(reqs_total{job=\"b\"}[1m])"),
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains(r#"{instance="i2", job="b"} =>"#), "{out}");
    let vals: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split_once(" @[").map(|(v, _)| v.trim().parse().unwrap()))
        .collect();
    assert_eq!(vals.len(), 5, "{out}");
    assert!(vals.iter().all(|v| (v - 2.0).abs() < 1e-9), "{out}");

    let (ok, out, err) = run_cmd(
        promtool,
        vec![
            s("query"),
            s("series"),
            s("--match=up"),
            format!("--start={}", secs(base - 60_000)),
            format!("--end={at}"),
            url.clone(),
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains(r#"{__name__="up", instance="i1", job="a"}"#),
        "{out}"
    );
    assert!(
        out.contains(r#"{__name__="up", instance="i2", job="b"}"#),
        "{out}"
    );

    let (ok, out, err) = run_cmd(
        promtool,
        vec![
            s("query"),
            s("labels"),
            format!("--start={}", secs(base - 60_000)),
            format!("--end={at}"),
            url.clone(),
            s("job"),
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["a", "b"],
        "{out}"
    );

    // A bad query fails with the server's message.
    let (ok, _, err) = run_cmd(
        promtool,
        vec![s("query"), s("instant"), url.clone(), s("sum(up")],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("bad_data"), "{err}");
    srv.stop().await;
}

/// The encoding of every result type matches a real Prometheus byte for
/// byte (on data-free expressions, so both sides compute the same).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoding_matches_real_prometheus() {
    let pdir = tempfile::tempdir().unwrap();
    let prom = start_prometheus(pdir.path(), NO_SCRAPES, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    let client = common::http_client();
    let values = [
        "0",
        "-0",
        "1",
        "-1",
        "0.1",
        "1/3",
        "2/3",
        "1e21",
        "-1e21",
        "1e20",
        "123456789012345680000",
        "1.2345678901234568e21",
        "1e-6",
        "9.99e-7",
        "1e-7",
        "-1.5e-7",
        "5e-324",
        "1e100",
        "1.7976931348623157e308",
        "0.30000000000000004",
        "NaN",
        "Inf",
        "-Inf",
        "12345.678",
        "1e15+0.3",
        "1e15+0.25",
        "-1e15-0.25",
        "1e15+0.75",
        "2e15+0.25",
        "2e15+0.75",
        "1e15+0.125",
        "0.1+0.2",
        "1/7e20",
        "1/7e-20",
    ];
    let times = [
        "0",
        "4",
        "1.5",
        "1.005",
        "1435781451.781",
        "-1.5",
        "1700000000",
    ];
    let mut cases: Vec<(&str, Vec<(&str, String)>)> = Vec::new();
    for v in values {
        for t in ["1.5", "4"] {
            cases.push((
                "/api/v1/query",
                vec![("query", format!("vector({v})")), ("time", t.into())],
            ));
            cases.push((
                "/api/v1/query",
                vec![("query", v.into()), ("time", t.into())],
            ));
        }
    }
    for t in times {
        cases.push((
            "/api/v1/query",
            vec![("query", "time()".into()), ("time", t.into())],
        ));
        cases.push((
            "/api/v1/query",
            vec![("query", "vector(time())".into()), ("time", t.into())],
        ));
        cases.push((
            "/api/v1/query",
            vec![("query", r#""a<b>&\"c\"\n""#.into()), ("time", t.into())],
        ));
    }
    cases.push((
        "/api/v1/query",
        vec![
            (
                "query",
                r#"label_replace(vector(1), "l", "<é☃&>", "", "")"#.into(),
            ),
            ("time", "10".into()),
        ],
    ));
    cases.push((
        "/api/v1/query",
        vec![
            ("query", r#"label_replace(vector(1), "a", "x", "", "") or label_replace(vector(2), "b", "y", "", "")"#.into()),
            ("time", "10".into()),
        ],
    ));
    for (q, start, end, step) in [
        ("time() / 7", "1.5", "5", "0.25"),
        ("vector(time() * 1e-9)", "0", "120", "15"),
        ("1+1", "1435781451.781", "1435781511.781", "7.5"),
        (
            r#"label_replace(vector(time()), "a", "x", "", "") or label_replace(vector(-time()), "b", "y", "", "")"#,
            "-30",
            "30",
            "10",
        ),
    ] {
        cases.push((
            "/api/v1/query_range",
            vec![
                ("query", q.into()),
                ("start", start.into()),
                ("end", end.into()),
                ("step", step.into()),
            ],
        ));
    }
    let mut compared = 0;
    for (path, params) in &cases {
        let get = |base: String| {
            let client = client.clone();
            let params = params.clone();
            async move {
                let r = client
                    .get(format!("{base}{path}"))
                    .query(&params)
                    .send()
                    .await
                    .unwrap();
                (r.status(), r.text().await.unwrap())
            }
        };
        let (pst, pbody) = get(prom.base.clone()).await;
        let (st, body) = get(srv.base.clone()).await;
        assert_eq!(pst, StatusCode::OK, "{path} {params:?}: {pbody}");
        assert_eq!(st, pst, "{path} {params:?}: {body}");
        assert_eq!(body, pbody, "{path} {params:?}");
        compared += 1;
    }
    assert!(compared > 100);
    drop(prom);
    srv.stop().await;
}

/// `info()` and `anchored`/`smoothed` are experimental: a 400 unless the
/// server enables them (`promql_experimental`), as in Prometheus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experimental_promql_is_gated_by_the_server() {
    let base = base_ms();
    let at = secs(base + 120_000);
    for enabled in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let srv = common::start_with(ServerConfig {
            data_dir: dir.path().to_path_buf(),
            auth: AuthMode::None,
            promql_experimental: enabled,
            ..ServerConfig::default()
        })
        .await;
        srv.push(None, test_data(base)).await;
        for q in ["increase(reqs_total[1m] anchored)", "info(up)"] {
            let (st, v) = srv
                .get("/api/v1/query", &[("query", q), ("time", &at)])
                .await;
            if enabled {
                assert_eq!(st, StatusCode::OK, "{q}: {v}");
            } else {
                assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {v}");
                assert_eq!(v["errorType"], "bad_data", "{q}: {v}");
            }
        }
        let (st, v) = srv
            .get(
                "/api/v1/query",
                &[
                    ("query", "increase(reqs_total[1m] anchored)"),
                    ("time", &at),
                ],
            )
            .await;
        if enabled {
            assert_eq!(st, StatusCode::OK);
            assert_eq!(v["data"]["result"].as_array().unwrap().len(), 2, "{v}");
        }
        srv.stop().await;
    }
}
