//! The shared tenant registry against a real etcd (`/usr/bin/etcd`,
//! Debian `etcd-server`): two registries with their own etcd clients, as
//! two nodes would have; tokens, revocations and limits made on one are
//! seen by the other within a bounded wait; the bootstrap runs once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_cluster::KvRegistry;
use stratus_model::TenantId;
use stratus_ring::{EtcdServer, Kv};
use stratus_tenancy::{Limits, Principal, Registry, TenantUpdate, TokenScope};

const WAIT: Duration = Duration::from_secs(5);

/// A throwaway etcd.
async fn start_etcd() -> EtcdServer {
    EtcdServer::start().await.expect("etcd")
}

/// A new client of `etcd`.
async fn client(etcd: &EtcdServer) -> Arc<dyn Kv> {
    Arc::new(etcd.client().await.expect("etcd client"))
}

fn tid(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_tokens_revocations_and_limits() {
    let etcd = start_etcd().await;
    let a = KvRegistry::start(client(&etcd).await).await.unwrap();
    let b = KvRegistry::start(client(&etcd).await).await.unwrap();

    // Bootstrap races: exactly one node wins.
    let dir = tempfile::tempdir().unwrap();
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    let (ba, bb) = tokio::join!(a.bootstrap("a", &da, false), b.bootstrap("b", &db, false));
    let won: Vec<_> = [ba.unwrap(), bb.unwrap()].into_iter().flatten().collect();
    assert_eq!(won.len(), 1);
    let admin = std::fs::read_to_string(won[0].admin_file.as_ref().unwrap()).unwrap();
    for r in [&a, &b] {
        assert!(
            r.wait_for(WAIT, |r| matches!(
                r.authenticate(admin.trim()),
                Some(Principal::Admin { .. })
            ))
            .await
        );
    }

    // A tenant and a token made through A authenticate on B.
    a.create_tenant(&tid("acme"), None, Limits::default())
        .unwrap();
    let tok = a
        .create_token(TokenScope::Tenant(tid("acme")), "ci")
        .unwrap();
    let started = Instant::now();
    assert!(
        a.authenticate(&tok.token).is_some(),
        "read-your-writes on A"
    );
    assert!(
        b.wait_for(WAIT, |r| r.authenticate(&tok.token).is_some())
            .await,
        "token not seen on B within {WAIT:?}"
    );
    eprintln!(
        "token visible on B {:?} after A's write returned",
        started.elapsed()
    );

    // Limits set through B apply on A.
    b.update_tenant(
        &tid("acme"),
        TenantUpdate {
            limits: Some(Limits {
                ingestion_rate: Some(123.0),
                ..Limits::default()
            }),
            ..TenantUpdate::default()
        },
    )
    .unwrap();
    assert!(
        a.wait_for(WAIT, |r| r.limits(&tid("acme")).ingestion_rate
            == Some(123.0))
            .await
    );

    // Revocation through B propagates to A.
    b.revoke_token(&tok.info.id).unwrap();
    assert!(b.authenticate(&tok.token).is_none());
    assert!(
        a.wait_for(WAIT, |r| r.authenticate(&tok.token).is_none())
            .await,
        "revocation not seen on A within {WAIT:?}"
    );

    // Deleting the tenant on A kills its other tokens on B.
    let t2 = b
        .create_token(TokenScope::Tenant(tid("acme")), "two")
        .unwrap();
    a.delete_tenant(&tid("acme")).unwrap();
    assert!(
        b.wait_for(WAIT, |r| r.authenticate(&t2.token).is_none()
            && r.tenant(&tid("acme")).is_none())
            .await
    );

    // A third node starting later reads everything from the listing.
    let c = KvRegistry::start(client(&etcd).await).await.unwrap();
    assert!(c.authenticate(admin.trim()).is_some());
    assert_eq!(c.tenants().len(), 1, "only 'default' is left");
}
