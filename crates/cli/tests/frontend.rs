//! The query-frontend with real processes on 127.0.0.1: a single-node
//! `stratus` holding 3.5 days of backfilled samples and a
//! `stratus --target=query-frontend` in front of it. Range queries over
//! three days (split into day pieces) answer exactly what the node
//! answers directly, byte for byte; the repeated query is served from the
//! results cache; queries that must not be split and instant queries
//! pass through.

use std::time::Duration;

use prost::Message;
use stratus_proto::prometheus as pb;

mod common;
use common::{http_client, now_ms, spawn_stratus};

const DAY_MS: i64 = 86_400_000;

/// Three series with one sample a minute from `from` to `to`.
fn backfill(from: i64, to: i64) -> Vec<u8> {
    let series = (0..3)
        .map(|s| pb::TimeSeries {
            labels: vec![
                pb::Label {
                    name: "__name__".into(),
                    value: "fe_metric".into(),
                },
                pb::Label {
                    name: "s".into(),
                    value: s.to_string(),
                },
            ],
            samples: (0..)
                .map(|k| from + k * 60_000)
                .take_while(|t| *t <= to)
                .map(|t| pb::Sample {
                    value: ((t / 60_000) % 97) as f64 * (s + 1) as f64 + 0.25,
                    timestamp: t,
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    let body = pb::WriteRequest {
        timeseries: series,
        ..Default::default()
    }
    .encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&body).unwrap()
}

async fn get(c: &reqwest::Client, url: &str, params: &[(&str, String)]) -> (u16, String) {
    let r = c
        .get(url)
        .query(params)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The value of an unlabeled counter in a `/metrics` text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend_splits_caches_and_matches_direct_queries() {
    let node_dir = tempfile::tempdir().unwrap();
    let fe_dir = tempfile::tempdir().unwrap();
    // One push holds 3.5 days per series, series after series: the
    // out-of-order window (behind the tenant's newest sample) must span it.
    let node = spawn_stratus(
        node_dir.path(),
        &["--auth=none", "--out-of-order-window=5d"],
    );
    let fe = spawn_stratus(
        fe_dir.path(),
        &[
            "--auth=none",
            "--target=query-frontend",
            &format!("--frontend.downstream-url={}", node.addr),
            "--frontend.split-concurrency=3",
        ],
    );
    let c = http_client();
    let now = now_ms();
    let r = c
        .post(format!("{}/api/v1/push", node.base))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .body(backfill(now - 3 * DAY_MS - DAY_MS / 2, now - 60_000))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "{}", r.text().await.unwrap());

    // Three days, not day-aligned, step not dividing the day edges evenly
    // from the start.
    let start = (now - 3 * DAY_MS) as f64 / 1000.0 + 0.123;
    let end = now as f64 / 1000.0;
    let range = |q: &str| {
        vec![
            ("query", q.to_string()),
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
            ("step", "420".to_string()),
        ]
    };
    let queries = [
        "fe_metric",
        "rate(fe_metric[5m])",
        "sum by (s) (max_over_time(fe_metric[1h:5m] offset 1h))",
        "fe_metric @ start()",
        "avg_over_time(fe_metric[10m]) > 50",
    ];
    for q in queries {
        let (st_d, direct) = get(&c, &format!("{}/api/v1/query_range", node.base), &range(q)).await;
        let (st_f, front) = get(&c, &format!("{}/api/v1/query_range", fe.base), &range(q)).await;
        assert_eq!((st_d, st_f), (200, 200), "{q}: {direct} / {front}");
        let d: serde_json::Value = serde_json::from_str(&direct).unwrap();
        let f: serde_json::Value = serde_json::from_str(&front).unwrap();
        assert!(
            d["data"]["result"]
                .as_array()
                .is_some_and(|a| !a.is_empty()),
            "{q}: {direct}"
        );
        assert_eq!(d, f, "{q}");
        assert_eq!(direct, front, "{q}: not byte-identical");
    }
    let m = c
        .get(format!("{}/metrics", fe.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (hits0, misses0) = (
        metric(&m, "stratus_frontend_cache_hits_total"),
        metric(&m, "stratus_frontend_cache_misses_total"),
    );
    // 4 splittable queries x 4 days, all misses the first time.
    assert!(misses0 >= 16.0, "{m}");
    assert!(
        metric(&m, "stratus_frontend_split_queries_total") >= 16.0,
        "{m}"
    );

    // The same dashboard query again: old days from the cache, only the
    // newest (too fresh to cache) steps fetched; same answer.
    let q = "rate(fe_metric[5m])";
    let (_, direct) = get(&c, &format!("{}/api/v1/query_range", node.base), &range(q)).await;
    let (st_f, front) = get(&c, &format!("{}/api/v1/query_range", fe.base), &range(q)).await;
    assert_eq!(st_f, 200);
    assert_eq!(direct, front);
    let m = c
        .get(format!("{}/metrics", fe.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let hits = metric(&m, "stratus_frontend_cache_hits_total");
    let partial = metric(&m, "stratus_frontend_cache_partial_hits_total");
    assert!(hits - hits0 >= 3.0, "{m}");
    assert!(partial >= 1.0, "{m}");
    assert_eq!(
        metric(&m, "stratus_frontend_cache_misses_total"),
        misses0,
        "{m}"
    );

    // Instant queries and the metadata endpoints pass through.
    let t = format!("{:.3}", (now - DAY_MS) as f64 / 1000.0);
    for (path, params) in [
        (
            "/api/v1/query",
            vec![("query", "sum(fe_metric)".to_string()), ("time", t.clone())],
        ),
        ("/api/v1/labels", vec![]),
        ("/api/v1/label/s/values", vec![]),
        ("/api/v1/series", vec![("match[]", "fe_metric".to_string())]),
        (
            "/api/v1/format_query",
            vec![("query", "sum(x)by(a)".to_string())],
        ),
    ] {
        let (st_d, direct) = get(&c, &format!("{}{path}", node.base), &params).await;
        let (st_f, front) = get(&c, &format!("{}{path}", fe.base), &params).await;
        assert_eq!((st_d, st_f), (200, 200), "{path}: {direct} / {front}");
        assert_eq!(direct, front, "{path}");
    }
    // Errors: a bad query passes the querier's 400 through; a write path
    // is not served.
    let (st_f, body) = get(
        &c,
        &format!("{}/api/v1/query_range", fe.base),
        &range("rate(fe_metric[5m]"),
    )
    .await;
    assert_eq!(st_f, 400, "{body}");
    assert!(body.contains("\"errorType\":\"bad_data\""), "{body}");
    let r = c
        .post(format!("{}/api/v1/push", fe.base))
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend_answers_503_when_no_querier_is_up() {
    let fe_dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let fe = spawn_stratus(
        fe_dir.path(),
        &[
            "--auth=none",
            "--target=query-frontend",
            &format!("--frontend.downstream-url=http://127.0.0.1:{port}"),
            "--frontend.max-retries=1",
        ],
    );
    let c = http_client();
    let (st, body) = get(
        &c,
        &format!("{}/api/v1/query", fe.base),
        &[("query", "1".to_string())],
    )
    .await;
    assert_eq!(st, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "error");
    assert_eq!(v["errorType"], "unavailable");
    let m = c
        .get(format!("{}/metrics", fe.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&m, "stratus_frontend_downstream_retries_total"),
        1.0,
        "{m}"
    );
}
