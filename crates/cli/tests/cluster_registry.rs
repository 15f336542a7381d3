//! Token auth across a cluster: two `stratus --target=distributor`
//! processes share the tenant registry in a real etcd (`/usr/bin/etcd`).
//! The first one bootstraps (its `<data>/tokens/admin.token`); a tenant
//! and a token created through A's admin API authenticate on B, a
//! revocation through B is refused on A, and both distributors are in the
//! `distributor` ring that splits the ingestion rate.

use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{http_client, spawn_stratus};

const WAIT: Duration = Duration::from_secs(5);

/// Status of a push of an empty remote-write body with `token` (no
/// ingesters exist, so an accepted token gets a server error, never 401).
async fn push_status(c: &reqwest::Client, base: &str, token: &str) -> u16 {
    c.post(format!("{base}/api/v1/push"))
        .bearer_auth(token)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .body(Vec::<u8>::new())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls (every 20 ms, at most `WAIT`) until `f` holds.
async fn eventually<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_made_on_one_distributor_works_on_another() {
    let c = http_client();
    let etcd = stratus_ring::EtcdServer::start().await.expect("etcd");
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let args = |etcd: &str| {
        vec![
            "--target=distributor".to_string(),
            format!("--etcd.endpoints={etcd}"),
            "--ring.heartbeat-period=200ms".into(),
            "--ring.heartbeat-timeout=2s".into(),
        ]
    };
    let a_args = args(etcd.url());
    let a = spawn_stratus(
        da.path(),
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let admin = std::fs::read_to_string(da.path().join("tokens/admin.token")).unwrap();
    let admin = admin.trim().to_string();
    let b = spawn_stratus(
        db.path(),
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        !db.path().join("tokens/admin.token").exists(),
        "only the first node bootstraps"
    );

    // Create a tenant and a token through A's admin API.
    let r = c
        .post(format!("{}/api/v1/admin/tenants", a.base))
        .bearer_auth(&admin)
        .body(r#"{"id": "acme"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let r = c
        .post(format!("{}/api/v1/admin/tenants/acme/tokens", a.base))
        .bearer_auth(&admin)
        .body(r#"{"name": "ci"}"#)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let token = v["data"]["token"].as_str().unwrap().to_string();
    let token_id = v["data"]["id"].as_str().unwrap().to_string();

    assert_eq!(push_status(&c, &b.base, "stratus_unknown").await, 401);
    assert!(
        eventually(|| async { push_status(&c, &b.base, &token).await != 401 }).await,
        "token made on A not accepted by B"
    );
    // B's admin API lists the tenant (the admin token works there too).
    let text = c
        .get(format!("{}/api/v1/admin/tenants/acme", b.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["data"]["id"], "acme", "{v}");

    // Revoke through B: A refuses the token.
    let r = c
        .delete(format!("{}/api/v1/admin/tokens/{token_id}", b.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    assert!(
        eventually(|| async { push_status(&c, &a.base, &token).await == 401 }).await,
        "revocation through B not seen on A"
    );

    // Both distributors are in the distributor ring.
    let kv =
        stratus_ring::EtcdKv::connect(&stratus_ring::EtcdConfig::new([etcd.url().to_string()]))
            .await
            .unwrap();
    use stratus_ring::Kv as _;
    let l = kv.list("/stratus/rings/distributor/").await.unwrap();
    assert_eq!(l.entries.len(), 2, "{:?}", l.entries);
    drop((a, b));
}
