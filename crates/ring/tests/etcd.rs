//! Integration tests of the ring against a real etcd (`/usr/bin/etcd`,
//! Debian `etcd-server`): joining, convergence, CAS conflicts, heartbeat
//! timeout, graceful leave, and the `/ring` page over real HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_ring::{
    CasOutcome, EtcdKv, EtcdServer, InstanceState, Kv, Lifecycler, LifecyclerConfig, Operation,
    Precondition, Ring, RingConfig,
};

const WAIT: Duration = Duration::from_secs(10);

use stratus_testkit::loopback_port as free_port;

/// A throwaway etcd and a client of it.
async fn start_etcd() -> (EtcdServer, EtcdKv) {
    let server = EtcdServer::start().await.expect("etcd");
    let kv = server.client().await.expect("etcd client");
    (server, kv)
}

fn lc_cfg(id: &str, zone: &str, dir: &std::path::Path) -> LifecyclerConfig {
    let mut c = LifecyclerConfig::new("ingester", id, format!("127.0.0.1:{}", free_port()));
    c.zone = zone.into();
    c.num_tokens = 64;
    c.heartbeat_period = Duration::from_millis(100);
    c.tokens_file = Some(dir.join(format!("{id}.tokens")));
    c
}

fn ring_cfg() -> RingConfig {
    let mut c = RingConfig::new("ingester");
    c.heartbeat_timeout = Duration::from_millis(800);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_cas_and_watch() {
    let (_etcd, kv) = start_etcd().await;
    let key = "/stratus/test/k";
    let CasOutcome::Done { version: v1 } = kv
        .put(key, b"a".to_vec(), Precondition::Absent)
        .await
        .unwrap()
    else {
        panic!("create");
    };
    assert!(matches!(
        kv.put(key, b"b".to_vec(), Precondition::Absent).await.unwrap(),
        CasOutcome::Conflict { current: Some(c) } if c.version == v1 && c.value == b"a"
    ));
    // Two writers read the same version; exactly one CAS wins.
    let kv2 = kv.clone();
    let (r1, r2) = tokio::join!(
        kv.put(key, b"w1".to_vec(), Precondition::Version(v1)),
        kv2.put(key, b"w2".to_vec(), Precondition::Version(v1)),
    );
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    let wins = [&r1, &r2]
        .iter()
        .filter(|r| matches!(r, CasOutcome::Done { .. }))
        .count();
    assert_eq!(wins, 1, "{r1:?} {r2:?}");
    let cur = kv.get(key).await.unwrap().unwrap();
    assert!(cur.value == b"w1" || cur.value == b"w2");
    assert!(cur.version > v1);

    let mut w = kv.watch("/stratus/test/").await.unwrap();
    kv.put("/stratus/other", vec![1], Precondition::Any)
        .await
        .unwrap();
    kv.delete(key, Precondition::Version(cur.version))
        .await
        .unwrap();
    let ev = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut w))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev.key(), key);
    assert!(matches!(ev, stratus_ring::WatchEvent::Delete { .. }));
    let l = kv.list("/stratus/").await.unwrap();
    assert_eq!(l.entries.len(), 1);
    assert!(l.revision >= ev.revision());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecyclers_join_converge_timeout_and_leave() {
    let (_etcd, kv) = start_etcd().await;
    let dir = tempfile::tempdir().unwrap();
    let kv: Arc<dyn Kv> = Arc::new(kv);
    // Two clients, each with its own view.
    let ring1 = Ring::start(Arc::clone(&kv), ring_cfg()).await.unwrap();
    let ring2 = Ring::start(Arc::clone(&kv), ring_cfg()).await.unwrap();

    let a = Lifecycler::join(Arc::clone(&kv), lc_cfg("a", "z1", dir.path()))
        .await
        .unwrap();
    let b = Lifecycler::start(Arc::clone(&kv), lc_cfg("b", "z2", dir.path()))
        .await
        .unwrap();
    assert_eq!(a.state(), InstanceState::Joining);
    a.activate().await.unwrap();
    for r in [&ring1, &ring2] {
        assert!(
            r.wait_for(WAIT, |s| s.instances().len() == 2
                && s.instances()
                    .iter()
                    .all(|i| i.state == InstanceState::Active))
                .await,
            "ring view did not converge"
        );
    }
    // Both views agree on every key.
    let (s1, s2) = (ring1.snapshot(), ring2.snapshot());
    for k in (0..200u32).map(|i| i.wrapping_mul(21_474_837)) {
        let x: Vec<String> = s1
            .get(k, Operation::Write)
            .unwrap()
            .ids()
            .map(String::from)
            .collect();
        let y: Vec<String> = s2
            .get(k, Operation::Write)
            .unwrap()
            .ids()
            .map(String::from)
            .collect();
        assert_eq!(x, y);
        assert_eq!(x.len(), 2); // RF 3 capped by two zones
    }
    // Heartbeats advance in the view.
    let hb = s1.instance("a").unwrap().heartbeat_ms;
    assert!(
        ring1
            .wait_for(WAIT, |s| s
                .instance("a")
                .is_some_and(|i| i.heartbeat_ms > hb))
            .await
    );

    // kill -9 of b (simulated: heartbeats stop, entry stays) → unhealthy.
    let b_tokens = b.tokens().to_vec();
    drop(b);
    let deadline = Instant::now() + WAIT;
    loop {
        let s = ring1.snapshot();
        let bi = s.instance("b").expect("b still registered");
        if !s.is_healthy(bi, Operation::Write, stratus_ring::desc::now_ms()) {
            break;
        }
        assert!(Instant::now() < deadline, "b never became unhealthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // RF capped to 2 zones: quorum 2 of 2 fails with one unhealthy.
    assert!(ring1.get(1, Operation::Write).is_err());
    // b restarts: same tokens (token file), healthy again.
    let b = Lifecycler::start(Arc::clone(&kv), lc_cfg("b", "z2", dir.path()))
        .await
        .unwrap();
    assert_eq!(b.tokens(), b_tokens.as_slice());
    assert!(
        ring1
            .wait_for(WAIT, |s| s.instance("b").is_some_and(|i| s.is_healthy(
                i,
                Operation::Write,
                stratus_ring::desc::now_ms()
            )))
            .await
    );
    assert!(ring1.get(1, Operation::Write).is_ok());

    // Graceful leave: LEAVING, then gone from every view.
    b.leave().await.unwrap();
    assert!(
        ring2
            .wait_for(WAIT, |s| s
                .instance("b")
                .is_some_and(|i| i.state == InstanceState::Leaving))
            .await
    );
    b.unregister().await.unwrap();
    for r in [&ring1, &ring2] {
        assert!(r.wait_for(WAIT, |s| s.instance("b").is_none()).await);
    }
    a.shutdown().await.unwrap();
    assert!(ring1.wait_for(WAIT, |s| s.instances().is_empty()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_and_forget_over_http() {
    let (_etcd, kv) = start_etcd().await;
    let dir = tempfile::tempdir().unwrap();
    let kv: Arc<dyn Kv> = Arc::new(kv);
    let ring = Ring::start(Arc::clone(&kv), ring_cfg()).await.unwrap();
    let a = Lifecycler::start(Arc::clone(&kv), lc_cfg("a", "", dir.path()))
        .await
        .unwrap();
    let dead = Lifecycler::start(Arc::clone(&kv), lc_cfg("dead<x>", "", dir.path())).await;
    // '<' is not allowed in ids.
    assert!(dead.is_err());
    let dead = Lifecycler::start(Arc::clone(&kv), lc_cfg("dead", "", dir.path()))
        .await
        .unwrap();
    assert!(ring.wait_for(WAIT, |s| s.instances().len() == 2).await);
    drop(dead);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = stratus_ring::http::router(ring.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    // The workspace builds reqwest without a default TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(WAIT)
        .build()
        .unwrap();
    let base = format!("http://{addr}/ring");

    let html = client.get(&base).send().await.unwrap();
    assert_eq!(html.status(), 200);
    let body = html.text().await.unwrap();
    assert!(
        body.contains("<table") && body.contains(">a<") && body.contains("ACTIVE"),
        "{body}"
    );

    let j: serde_json::Value = serde_json::from_str(
        &client
            .get(&base)
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(j["ring"], "ingester");
    assert_eq!(j["instances"].as_array().unwrap().len(), 2);
    let own: f64 = j["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ownership"].as_f64().unwrap())
        .sum();
    assert!((own - 100.0).abs() < 1e-6);

    // Healthy instance: refused.
    let r = client
        .post(format!("{base}?format=json"))
        .form(&[("forget", "a")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    // Wait until `dead` misses its heartbeats, then forget it from the page.
    let deadline = Instant::now() + WAIT;
    loop {
        let j: serde_json::Value = serde_json::from_str(
            &client
                .get(format!("{base}?format=json"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
        .unwrap();
        let healthy = j["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == "dead")
            .map(|i| i["healthy"].as_bool().unwrap());
        if healthy == Some(false) {
            break;
        }
        assert!(Instant::now() < deadline, "dead never became unhealthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = client
        .get(&base)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("UNHEALTHY") && page.contains("name=\"forget\" value=\"dead\""));
    let r = client
        .post(&base)
        .form(&[("forget", "dead")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ring");
    assert!(ring.wait_for(WAIT, |s| s.instance("dead").is_none()).await);
    let r = client
        .post(&base)
        .form(&[("forget", "dead")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client.post(&base).body("").send().await.unwrap();
    assert_eq!(r.status(), 400);
    server.abort();
    a.shutdown().await.unwrap();
}

/// Two HA trackers (two distributors) on one etcd agree on the elected
/// replica of every cluster, learn each other's elections through the
/// watch, and fail over together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_trackers_agree_through_etcd() {
    use stratus_ring::ha::{HaTracker, HaTrackerConfig, ManualClock, ReplicaDesc, ha_key};
    let (_etcd, kv) = start_etcd().await;
    let kv: Arc<dyn Kv> = Arc::new(kv);
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let cfg = HaTrackerConfig {
        update_timeout_jitter_max: Duration::ZERO,
        ..HaTrackerConfig::default()
    };
    let t1 = HaTracker::start_with_clock(kv.clone(), cfg.clone(), clock.clone()).await;
    let t2 = HaTracker::start_with_clock(kv.clone(), cfg, clock.clone()).await;
    let mut winners = Vec::new();
    for i in 0..8 {
        let cluster = format!("prom-{i}");
        let (a, b) = tokio::join!(
            t1.check("tenant-1", &cluster, "a", 0),
            t2.check("tenant-1", &cluster, "b", 0)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_ne!(a.accepted(), b.accepted(), "{a:?} {b:?}");
        let winner = if a.accepted() { "a" } else { "b" };
        let stored = kv
            .get(&ha_key("tenant-1", &cluster))
            .await
            .unwrap()
            .unwrap();
        let desc: ReplicaDesc = serde_json::from_slice(&stored.value).unwrap();
        assert_eq!(desc.replica, winner);
        winners.push((cluster, winner));
    }
    // Each learns the other's elections through the watch.
    let deadline = Instant::now() + WAIT;
    for (cluster, winner) in &winners {
        for t in [&t1, &t2] {
            while t.elected("tenant-1", cluster).map(|d| d.replica) != Some(winner.to_string()) {
                assert!(Instant::now() < deadline, "watch did not deliver {cluster}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let other = if *winner == "a" { "b" } else { "a" };
        assert!(
            !t1.check("tenant-1", cluster, other, 0)
                .await
                .unwrap()
                .accepted()
        );
        assert!(
            !t2.check("tenant-1", cluster, other, 0)
                .await
                .unwrap()
                .accepted()
        );
    }
    // The elected replicas go quiet past the failover timeout: the other
    // replica takes over on one tracker, and the old one is refused on both.
    clock.advance(Duration::from_secs(31));
    let (cluster, winner) = &winners[0];
    let other = if *winner == "a" { "b" } else { "a" };
    assert!(
        t2.check("tenant-1", cluster, other, 0)
            .await
            .unwrap()
            .accepted()
    );
    assert!(
        !t1.check("tenant-1", cluster, winner, 0)
            .await
            .unwrap()
            .accepted()
    );
    assert!(
        !t2.check("tenant-1", cluster, winner, 0)
            .await
            .unwrap()
            .accepted()
    );
    assert!(
        t1.check("tenant-1", cluster, other, 0)
            .await
            .unwrap()
            .accepted()
    );
}
