//! Per-tenant query limits over real HTTP: `max_concurrent_queries` (a
//! tenant over its limit waits for a slot, within its timeout, then gets
//! Prometheus' 503 timeout error; another tenant is unaffected) and
//! `query_timeout` (a slow query of a tenant with a short timeout gets
//! `{"status":"error","errorType":"timeout",...}` with 503; a tenant with
//! a larger timeout gets the answer). The slow query is a subquery of
//! `vector(1)` at a 1 ms step: no data needed, CPU-bound, bounded.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use stratus_api::ServerConfig;

mod common;
use common::{Server, start_with};

/// Evaluates 3.6 M subquery steps: about 250 ms in a debug build.
const SLOW: &str = "count_over_time((vector(1) * 2 + time())[1h:1ms])";
/// Twice that: about 500 ms.
const BIG: &str = "count_over_time((vector(1) * 2 + time())[2h:1ms])";

fn admin_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("tokens").join("admin.token"))
        .unwrap()
        .trim()
        .to_string()
}

/// Creates tenant `id` with `limits` and a token for it; returns the token.
async fn tenant(srv: &Server, admin: &str, id: &str, limits: Value) -> String {
    let r = srv
        .client
        .post(format!("{}/api/v1/admin/tenants", srv.base))
        .bearer_auth(admin)
        .body(json!({"id": id, "limits": limits}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let r = srv
        .client
        .post(format!("{}/api/v1/admin/tenants/{id}/tokens", srv.base))
        .bearer_auth(admin)
        .body(json!({"name": "t"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    v["data"]["token"].as_str().unwrap().to_string()
}

/// An instant query as `token`: status, JSON body, elapsed time.
async fn query(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    q: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let mut params = vec![("query", q), ("time", "1700000000")];
    params.extend_from_slice(extra);
    let r = client
        .get(format!("{base}/api/v1/query"))
        .bearer_auth(token)
        .query(&params)
        .send()
        .await
        .unwrap();
    let st = r.status();
    let v = serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null);
    (st, v, started.elapsed())
}

/// A token-auth server, ready (its bootstrap tokens written).
async fn start_token(dir: &Path) -> Server {
    let srv = start_with(ServerConfig {
        data_dir: dir.to_path_buf(),
        ..ServerConfig::default()
    })
    .await;
    for _ in 0..100 {
        if let Ok(r) = srv.client.get(format!("{}/ready", srv.base)).send().await
            && r.status() == StatusCode::OK
        {
            return srv;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server not ready");
}

/// Prometheus' timeout answer: 503, `errorType` `timeout`.
fn assert_timeout(st: StatusCode, v: &Value) {
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["status"], "error", "{v}");
    assert_eq!(v["errorType"], "timeout", "{v}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
}

fn ok_value(st: StatusCode, v: &Value) -> String {
    assert_eq!(st, StatusCode::OK, "{v}");
    let r = &v["data"]["result"];
    // A vector's first sample, or a scalar.
    let x = if v["data"]["resultType"] == "scalar" {
        &r[1]
    } else {
        &r[0]["value"][1]
    };
    x.as_str().unwrap_or_else(|| panic!("{v}")).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_token(dir.path()).await;
    let admin = admin_token(dir.path());
    let short = tenant(&srv, &admin, "short", json!({"query_timeout": "20ms"})).await;
    let long = tenant(&srv, &admin, "long", json!({"query_timeout": "1m"})).await;
    let c = &srv.client;
    let (st, v, took) = query(c, &srv.base, &short, SLOW, &[]).await;
    assert_timeout(st, &v);
    assert!(took < Duration::from_secs(5), "{took:?}");
    let (st, v, _) = query(c, &srv.base, &long, SLOW, &[]).await;
    assert_eq!(ok_value(st, &v), "3600000");
    // A quick query of the short tenant still answers.
    let (st, v, _) = query(c, &srv.base, &short, "1+1", &[]).await;
    assert_eq!(ok_value(st, &v), "2");
    // The `timeout` parameter cannot raise the tenant's limit.
    let (st, v, _) = query(c, &srv.base, &short, SLOW, &[("timeout", "1m")]).await;
    assert_timeout(st, &v);
    // The limit changes at runtime (admin API), no restart.
    let r = c
        .put(format!("{}/api/v1/admin/tenants/short/limits", srv.base))
        .bearer_auth(&admin)
        .body(json!({"query_timeout": "1m"}).to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let (st, v, _) = query(c, &srv.base, &short, SLOW, &[]).await;
    assert_eq!(ok_value(st, &v), "3600000");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_queries_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start_token(dir.path()).await;
    let admin = admin_token(dir.path());
    let one = tenant(&srv, &admin, "one", json!({"max_concurrent_queries": 1})).await;
    let other = tenant(&srv, &admin, "other", json!({"max_concurrent_queries": 1})).await;
    let base = srv.base.clone();
    let c = srv.client.clone();

    // Tenant `one` runs a slow query in its only slot.
    let started = Instant::now();
    let slow = {
        let (c, base, one) = (c.clone(), base.clone(), one.clone());
        tokio::spawn(async move { query(&c, &base, &one, BIG, &[]).await })
    };
    tokio::time::sleep(Duration::from_millis(40)).await;
    // A second query of `one` with a short timeout waits for the slot,
    // then gets Prometheus' timeout error.
    let (st, v, took) = query(&c, &base, &one, "1+1", &[("timeout", "50ms")]).await;
    let slow_done_early = slow.is_finished();
    assert!(!slow_done_early, "the slow query finished too soon to test");
    assert_timeout(st, &v);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("max_concurrent_queries=1"),
        "{v}"
    );
    assert!(took >= Duration::from_millis(45), "{took:?}");
    // Another tenant is unaffected: answered while `one` is busy.
    let (st, v, _) = query(&c, &base, &other, "1+1", &[]).await;
    assert_eq!(ok_value(st, &v), "2");
    assert!(
        !slow.is_finished(),
        "other tenant answered while one was busy"
    );
    // A query of `one` with the default timeout waits and is answered
    // after the slow one.
    let (st, v, _) = query(&c, &base, &one, "1+1", &[]).await;
    assert_eq!(ok_value(st, &v), "2");
    let waited_until = started.elapsed();
    let (st, v, slow_took) = slow.await.unwrap();
    assert_eq!(ok_value(st, &v), "7200000");
    assert!(
        waited_until + Duration::from_millis(50) >= slow_took,
        "queued query answered at {waited_until:?}, slow one took {slow_took:?}"
    );
    // Concurrent queries of both tenants: all answered, `one` in turn.
    let mut tasks = Vec::new();
    for (tok, q) in [(&one, SLOW), (&one, SLOW), (&other, SLOW), (&other, "1+1")] {
        let (c, base, tok) = (c.clone(), base.clone(), tok.clone());
        tasks.push(tokio::spawn(
            async move { query(&c, &base, &tok, q, &[]).await },
        ));
    }
    for t in tasks {
        let (st, v, _) = t.await.unwrap();
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    srv.stop().await;
}
