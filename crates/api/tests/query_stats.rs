//! The `stats` parameter of `/api/v1/query` and `/api/v1/query_range`:
//! the JSON shape on the in-process server, and the sample counts against
//! a real Prometheus 2.42 (Debian package `prometheus`) holding the same
//! data, pushed to both through remote write.

use prost::Message;
use reqwest::StatusCode;
use serde_json::Value;
use stratus_api::AuthMode;
use stratus_proto::prometheus as pb;

mod common;
use common::prometheus::{NO_SCRAPES, start_prometheus};
use common::{Server, now_ms, snappy, start, ts};

/// A minute-aligned time 20 minutes ago; the data starts there.
fn base_ms() -> i64 {
    (now_ms() / 60_000) * 60_000 - 20 * 60_000
}

/// Seconds as the API takes them.
fn secs(ms: i64) -> String {
    format!("{}", ms as f64 / 1000.0)
}

/// `a{i="1"}` = k and `a{i="2"}` = 2k every 15 s, `b{i="1"}` every 30 s,
/// for 10 minutes from `base`.
fn data(base: i64) -> Vec<pb::TimeSeries> {
    let pts = |every: usize, mul: f64| -> Vec<(i64, f64)> {
        (0..=40i64)
            .step_by(every)
            .map(|k| (base + k * 15_000, k as f64 * mul))
            .collect()
    };
    vec![
        ts(&[("__name__", "a"), ("i", "1")], &pts(1, 1.0)),
        ts(&[("__name__", "a"), ("i", "2")], &pts(1, 2.0)),
        ts(&[("__name__", "b"), ("i", "1")], &pts(2, 1.0)),
    ]
}

/// Remote-writes `series` to `url`.
async fn push(client: &reqwest::Client, url: &str, series: Vec<pb::TimeSeries>) {
    let body = pb::WriteRequest {
        timeseries: series,
        metadata: Vec::new(),
    }
    .encode_to_vec();
    let r = client
        .post(url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(snappy(&body))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
}

async fn get(
    client: &reqwest::Client,
    url: &str,
    params: &[(&str, String)],
) -> (StatusCode, Value) {
    let (st, body) = get_raw(client, url, params).await;
    (
        st,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

async fn get_raw(
    client: &reqwest::Client,
    url: &str,
    params: &[(&str, String)],
) -> (StatusCode, String) {
    let r = client.get(url).query(params).send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

/// The keys of a JSON object (sorted: serde_json's map).
fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// The object keys of the raw body's `stats` member, in written order.
fn stats_key_order(body: &str) -> Vec<String> {
    let Some(at) = body.find("\"stats\":") else {
        return Vec::new();
    };
    let mut rest = &body[at..];
    // Up to the end of the `stats` object (no braces inside its strings).
    let mut depth = 0;
    for (i, ch) in rest.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' if depth == 1 => {
                rest = &rest[..=i];
                break;
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
    let mut out = Vec::new();
    let mut parts = rest.split('"');
    let _ = parts.next();
    while let (Some(k), Some(after)) = (parts.next(), parts.next()) {
        if after.starts_with(':') {
            out.push(k.to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_parameter_shapes_the_response() {
    let dir = tempfile::tempdir().unwrap();
    let srv: Server = start(dir.path(), AuthMode::None).await;
    let base = base_ms();
    push(
        &srv.client,
        &format!("{}/api/v1/push", srv.base),
        data(base),
    )
    .await;
    let t = secs(base + 300_500);
    let q = format!("{}/api/v1/query", srv.base);
    let qr = format!("{}/api/v1/query_range", srv.base);

    // Without the parameter (or empty): no stats.
    for extra in [vec![], vec![("stats", String::new())]] {
        let mut p = vec![("query", "rate(a[1m])".to_string()), ("time", t.clone())];
        p.extend(extra);
        let (st, body) = get_raw(&srv.client, &q, &p).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        assert!(!body.contains("\"stats\""), "{body}");
    }

    // Any value: timings and totals, no per-step list.
    let p = [
        ("query", "rate(a[1m])".to_string()),
        ("time", t.clone()),
        ("stats", "true".to_string()),
    ];
    let (st, body) = get_raw(&srv.client, &q, &p).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(keys(&v["data"]), ["result", "resultType", "stats"]);
    assert!(
        body.starts_with(
            "{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":["
        )
    );
    let stats = &v["data"]["stats"];
    assert_eq!(
        stats_key_order(&body),
        [
            "stats",
            "timings",
            "evalTotalTime",
            "resultSortTime",
            "queryPreparationTime",
            "innerEvalTime",
            "execQueueTime",
            "execTotalTime",
            "samples",
            "totalQueryableSamples",
            "peakSamples"
        ]
    );
    for (k, x) in stats["timings"].as_object().unwrap() {
        assert!(x.as_f64().is_some_and(|f| f >= 0.0), "{k}: {x}");
    }
    assert!(stats["timings"]["evalTotalTime"].as_f64().unwrap() > 0.0);
    assert_eq!(stats["samples"]["totalQueryableSamples"], 8);
    assert_eq!(stats["samples"]["peakSamples"], 6);

    // `all`, by POST form: per step too, first.
    let r = srv
        .client
        .post(&qr)
        .form(&[
            ("query", "a + b".to_string()),
            ("start", secs(base + 200_500)),
            ("end", secs(base + 400_500)),
            ("step", "50".to_string()),
            ("stats", "all".to_string()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    let samples = &v["data"]["stats"]["samples"];
    assert!(
        body.contains("\"samples\":{\"totalQueryableSamplesPerStep\":[["),
        "{body}"
    );
    let per_step = samples["totalQueryableSamplesPerStep"].as_array().unwrap();
    assert_eq!(per_step.len(), 5);
    for (i, p) in per_step.iter().enumerate() {
        let want_t = (base + 200_500 + i as i64 * 50_000) as f64 / 1000.0;
        assert_eq!(p[0].as_f64().unwrap(), want_t, "{p}");
        assert_eq!(p[1], 3, "{p}");
    }
    assert_eq!(samples["totalQueryableSamples"], 15);
    assert_eq!(samples["peakSamples"], 23);

    // Errors stay errors.
    let (st, v) = get(
        &srv.client,
        &q,
        &[("query", "a +".to_string()), ("stats", "all".to_string())],
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    srv.stop().await;
}

/// Whether to compare `peakSamples` (the sample counts are compared always).
#[derive(Clone, Copy, PartialEq)]
enum Peak {
    Same,
    /// 2.42 evaluated aggregations like binary operators (their inputs,
    /// the gathered step and the output so far); 3.x, which Stratus
    /// follows, holds only inputs and output.
    Aggregation,
    /// 2.42 ran `label_replace` per step like other functions (input,
    /// gathered step, output); 3.x relabels its input in place.
    Relabel,
    /// Prometheus evaluates a subtree pinned by `@` once and copies it to
    /// every step; Stratus evaluates it per step, so a range function
    /// under `@` in a range query peaks higher here.
    StepInvariant,
}

/// A path, its parameters, and whether peaks are compared.
type Case<'a> = (&'a str, Vec<(&'a str, String)>, Peak);

/// Same data, same queries with `stats=all`: the sample counts (total and
/// per step) and, where 2.42 and 3.x agree, the peak match Prometheus 2.42.
/// Evaluation times are off the 15 s sample grid, so 2.42's left-closed
/// windows (a sample on a window's left edge counts) and 3.x's left-open
/// ones hold the same samples. No native histograms: 2.42 counts each as
/// 1, 3.x by size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_counts_match_prometheus() {
    let pdir = tempfile::tempdir().unwrap();
    let prom = start_prometheus(
        pdir.path(),
        NO_SCRAPES,
        // Without the feature Prometheus ignores `stats=all`'s per-step list.
        &[
            "--web.enable-remote-write-receiver",
            "--enable-feature=promql-per-step-stats",
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), AuthMode::None).await;
    let client = common::http_client();
    let base = base_ms();
    push(&client, &format!("{}/api/v1/write", prom.base), data(base)).await;
    push(&client, &format!("{}/api/v1/push", srv.base), data(base)).await;

    let at = secs(base + 100_500);
    let t = secs(base + 300_500);
    let instant: Vec<(String, Peak)> = [
        ("a", Peak::Same),
        ("b", Peak::Same),
        ("a + b", Peak::Same),
        ("b * on(i) a", Peak::Same),
        ("a * 2", Peak::Same),
        ("abs(a)", Peak::Same),
        ("1", Peak::Same),
        ("vector(1)", Peak::Same),
        ("scalar(b)", Peak::Same),
        ("a offset 1m", Peak::Same),
        ("a[1m]", Peak::Same),
        ("rate(a[1m])", Peak::Same),
        ("sum_over_time(a[2m])", Peak::Same),
        ("max_over_time(a[1m:20s])", Peak::Same),
        ("rate(a[1m:15s])", Peak::Same),
        ("a[1m:20s]", Peak::Same),
        ("sum(a)", Peak::Aggregation),
        ("sum by (i) (rate(a[1m]))", Peak::Aggregation),
        ("max_over_time(sum(a)[2m:30s])", Peak::Aggregation),
        ("a @ AT", Peak::Same),
        ("rate(a[1m] @ AT)", Peak::Same),
        ("-a", Peak::Same),
        ("a > 3", Peak::Same),
        ("a and b", Peak::Same),
        ("a or b", Peak::Same),
        ("label_replace(a, \"x\", \"y\", \"\", \"\")", Peak::Relabel),
        ("timestamp(a)", Peak::Same),
        ("changes(a[2m])", Peak::Same),
        ("quantile_over_time(0.5, a[2m])", Peak::Same),
        ("sum_over_time(a[1m] offset 1m)", Peak::Same),
        ("deriv(a[1m:15s])", Peak::Same),
        ("topk(1, a)", Peak::Aggregation),
    ]
    .iter()
    .map(|(q, p)| (q.replace("AT", &at), *p))
    .collect();
    let range: Vec<(String, Peak)> = [
        ("a", Peak::Same),
        ("a + b", Peak::Same),
        ("a * 2", Peak::Same),
        ("abs(a)", Peak::Same),
        ("scalar(b)", Peak::Same),
        ("time()", Peak::Same),
        ("a offset 1m", Peak::Same),
        ("rate(a[1m])", Peak::Same),
        ("sum_over_time(a[2m])", Peak::Same),
        ("max_over_time(a[1m:20s])", Peak::Same),
        ("rate(a[1m:15s])", Peak::Same),
        ("count(a > 5)", Peak::Aggregation),
        ("max_over_time(sum(a)[2m:30s])", Peak::Aggregation),
        ("a @ AT", Peak::Same),
        ("rate(a[1m] @ AT)", Peak::StepInvariant),
        ("-a", Peak::Same),
        ("a or b", Peak::Same),
        ("timestamp(a)", Peak::Same),
        ("quantile_over_time(0.5, a[2m])", Peak::Same),
        ("deriv(a[1m:15s])", Peak::Same),
    ]
    .iter()
    .map(|(q, p)| (q.replace("AT", &at), *p))
    .collect();

    let mut cases: Vec<Case<'_>> = Vec::new();
    for (q, peak) in &instant {
        cases.push((
            "/api/v1/query",
            vec![("query", q.clone()), ("time", t.clone())],
            *peak,
        ));
    }
    for (q, peak) in &range {
        cases.push((
            "/api/v1/query_range",
            vec![
                ("query", q.clone()),
                ("start", secs(base + 200_500)),
                ("end", secs(base + 400_500)),
                ("step", "50".into()),
            ],
            *peak,
        ));
    }
    let mut peaks = 0;
    for (path, mut params, peak) in cases {
        params.push(("stats", "all".into()));
        let (pst, pbody) = get_raw(&client, &format!("{}{path}", prom.base), &params).await;
        let (st, body) = get_raw(&client, &format!("{}{path}", srv.base), &params).await;
        // Same members in the same order.
        assert_eq!(
            stats_key_order(&body),
            stats_key_order(&pbody),
            "{params:?}"
        );
        let pv: Value = serde_json::from_str(&pbody).unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(pst, StatusCode::OK, "{params:?}: {pv}");
        assert_eq!(st, StatusCode::OK, "{params:?}: {v}");
        // The same data answered.
        assert_eq!(
            v["data"]["result"].as_array().map(Vec::len),
            pv["data"]["result"].as_array().map(Vec::len),
            "{params:?}"
        );
        let (s, ps) = (
            &v["data"]["stats"]["samples"],
            &pv["data"]["stats"]["samples"],
        );
        assert_eq!(keys(s), keys(ps), "{params:?}");
        assert_eq!(
            keys(&v["data"]["stats"]["timings"]),
            keys(&pv["data"]["stats"]["timings"])
        );
        assert_eq!(
            s["totalQueryableSamples"], ps["totalQueryableSamples"],
            "{params:?}: {s} vs {ps}"
        );
        assert_eq!(
            s["totalQueryableSamplesPerStep"], ps["totalQueryableSamplesPerStep"],
            "{params:?}: {s} vs {ps}"
        );
        if peak == Peak::Same {
            assert_eq!(
                s["peakSamples"], ps["peakSamples"],
                "{params:?}: {s} vs {ps}"
            );
            peaks += 1;
        }
    }
    assert!(peaks >= 25);
    drop(prom);
    srv.stop().await;
}
