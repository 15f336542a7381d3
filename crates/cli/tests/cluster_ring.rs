//! Cluster mode on the hash ring in a real etcd (`/usr/bin/etcd`), with
//! real processes on 127.0.0.1: three ingesters join the ring through
//! etcd (`--etcd.endpoints`), a distributor and a querier follow it.
//! `/ring` shows three ACTIVE ingesters; under remote-write load one
//! ingester is killed with SIGKILL (writes and queries keep succeeding)
//! and restarted (same tokens, ACTIVE again); then all three are
//! restarted one at a time with SIGTERM (LEAVING → WAL flushed →
//! unregistered → rejoined) while the load runs, and one is hung with
//! SIGSTOP past the heartbeat timeout, then resumed. Afterwards every
//! acknowledged sample is queryable exactly once through the querier, and
//! the series spread over the live ring's tokens is checked.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use stratus_ring::{EtcdConfig, EtcdKv, InstanceDesc, InstanceState, Kv, Operation, Ring};

mod common;
use common::{Proc, free_port, http_client, now_ms, numbered_push, query_now, spawn_stratus};

const SERIES: usize = 20;
const SAMPLES_PER_PUSH: i64 = 5;
const WAIT: Duration = Duration::from_secs(10);

fn ring_args(etcd: &str) -> Vec<String> {
    vec![
        "--auth=none".into(),
        format!("--etcd.endpoints={etcd}"),
        "--ring.heartbeat-period=200ms".into(),
        "--ring.heartbeat-timeout=2s".into(),
        "--ingester.client-timeout=2s".into(),
    ]
}

fn ingester(dir: &std::path::Path, etcd: &str, i: usize, port: u16) -> Proc {
    let mut a = ring_args(etcd);
    a.push("--target=ingester".into());
    a.push(format!("--grpc-listen=127.0.0.1:{port}"));
    a.push(format!("--ring.instance-id=ing-{i}"));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    spawn_stratus(dir, &a)
}

/// Remote-write load: sequential pushes, each acknowledged (204) or not.
#[derive(Default)]
struct Load {
    seq: i64,
    acked: Vec<(usize, i64, f64)>,
    ok: usize,
    failed: Vec<String>,
}

impl Load {
    /// Pushes until `stop` is set (at most 4000 pushes or 30 s).
    async fn run(
        mut self,
        client: reqwest::Client,
        url: String,
        t0: i64,
        stop: Arc<AtomicBool>,
    ) -> Load {
        let end = Instant::now() + Duration::from_secs(30);
        for _ in 0..4000 {
            if stop.load(Ordering::Relaxed) || Instant::now() > end {
                break;
            }
            let (body, expect) = numbered_push("rl", SERIES, SAMPLES_PER_PUSH, self.seq, t0);
            self.seq += 1;
            let r = client
                .post(&url)
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .timeout(Duration::from_secs(10))
                .body(body)
                .send()
                .await;
            match r {
                Ok(r) if r.status().as_u16() == 204 => {
                    self.acked.extend(expect);
                    self.ok += 1;
                }
                Ok(r) => {
                    let st = r.status();
                    self.failed
                        .push(format!("{st}: {}", r.text().await.unwrap_or_default()));
                }
                Err(e) => self.failed.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self
    }
}

/// Load running in the background until [`Background::finish`].
struct Background {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Load>,
}

impl Background {
    fn start(client: &reqwest::Client, url: &str, t0: i64, load: Load) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(load.run(client.clone(), url.to_string(), t0, stop.clone()));
        Background { stop, task }
    }

    async fn finish(self) -> Load {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// `(id, state, healthy)` of every instance on a component's `/ring` page.
async fn ring_page(c: &reqwest::Client, base: &str) -> Vec<(String, String, bool)> {
    let r = c
        .get(format!("{base}/ring?format=json"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    b["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["state"].as_str().unwrap().to_string(),
                i["healthy"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Waits until the ring (as the test's own client sees it) satisfies `f`.
async fn wait_ring(ring: &Ring, what: &str, f: impl Fn(&[Arc<InstanceDesc>]) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f(ring.snapshot().instances()) {
        assert!(Instant::now() < deadline, "ring never reached: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn state_of(insts: &[Arc<InstanceDesc>], id: &str) -> Option<InstanceState> {
    insts.iter().find(|d| d.id == id).map(|d| d.state)
}

fn all_active(insts: &[Arc<InstanceDesc>]) -> bool {
    insts.len() == 3 && insts.iter().all(|d| d.state == InstanceState::Active)
}

/// SIGTERM, then waits (bounded) for a clean exit.
fn terminate(p: &mut Proc) {
    let pid = p.child.id().to_string();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            assert!(st.success(), "ingester exited with {st}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ingester did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_cluster_survives_kill9_and_rolling_restart() {
    let started = Instant::now();
    let client = http_client();
    let etcd = stratus_ring::EtcdServer::start().await.expect("etcd");
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut ings: Vec<Option<Proc>> = (0..3)
        .map(|i| Some(ingester(dirs[i].path(), etcd.url(), i, ports[i])))
        .collect();
    let spawn_comp = |target: &str, dir: &std::path::Path| {
        let mut a = ring_args(etcd.url());
        a.push(format!("--target={target}"));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        spawn_stratus(dir, &a)
    };
    let dist = spawn_comp("distributor", dirs[3].path());
    let querier = spawn_comp("querier", dirs[4].path());

    // The test follows the ring itself too (to wait for states).
    let kv: Arc<dyn Kv> = Arc::new(
        EtcdKv::connect(&EtcdConfig::new([etcd.url().to_string()]))
            .await
            .unwrap(),
    );
    let mut rcfg = stratus_ring::RingConfig::new("ingester");
    rcfg.heartbeat_timeout = Duration::from_secs(2);
    let ring = Ring::start(kv, rcfg).await.unwrap();
    wait_ring(&ring, "3 ACTIVE", all_active).await;
    // Every component's /ring page shows the three ACTIVE and healthy.
    for base in [&dist.base, &querier.base, &ings[0].as_ref().unwrap().base] {
        let deadline = Instant::now() + WAIT;
        loop {
            let page = ring_page(&client, base).await;
            if page.len() == 3 && page.iter().all(|(_, st, h)| st == "ACTIVE" && *h) {
                break;
            }
            assert!(Instant::now() < deadline, "{base}/ring: {page:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let html = client
        .get(format!("{}/ring", dist.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("ing-0") && html.contains("ACTIVE"), "{html}");
    let tokens_before: HashMap<String, Vec<u32>> = ring
        .snapshot()
        .instances()
        .iter()
        .map(|d| (d.id.clone(), d.tokens.clone()))
        .collect();

    let push_url = format!("{}/api/v1/push", dist.base);
    let t0 = now_ms() - 600_000;
    let bg = Background::start(&client, &push_url, t0, Load::default());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // kill -9 one ingester: writes and queries keep succeeding.
    ings[0].take();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let b = query_now(&client, &querier.base, "count(last_over_time(rl[1h]))").await;
    assert_eq!(b["data"]["result"][0]["value"][1], "20", "{b}");
    // Past the heartbeat timeout it is unhealthy on /ring.
    wait_ring(&ring, "ing-0 unhealthy", |insts| {
        insts.iter().any(|d| {
            d.id == "ing-0"
                && !ring
                    .snapshot()
                    .is_healthy(d, Operation::Read, stratus_ring::desc::now_ms())
        })
    })
    .await;
    let b = query_now(&client, &querier.base, "count(last_over_time(rl[1h]))").await;
    assert_eq!(b["data"]["result"][0]["value"][1], "20", "{b}");

    // Restart it on its data dir: WAL replay, same tokens, ACTIVE again.
    ings[0] = Some(ingester(dirs[0].path(), etcd.url(), 0, ports[0]));
    wait_ring(&ring, "ing-0 back", |insts| {
        all_active(insts)
            && insts.iter().all(|d| {
                ring.snapshot()
                    .is_healthy(d, Operation::Write, stratus_ring::desc::now_ms())
            })
    })
    .await;
    assert_eq!(
        ring.snapshot().instance("ing-0").unwrap().tokens,
        tokens_before["ing-0"],
        "tokens changed across kill -9"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Rolling restart under load: SIGTERM one at a time, wait for ACTIVE.
    for i in 0..3 {
        let id = format!("ing-{i}");
        let mut p = ings[i].take().unwrap();
        terminate(&mut p);
        drop(p);
        // Graceful shutdown unregistered it.
        wait_ring(&ring, "unregistered", |insts| {
            state_of(insts, &id).is_none()
        })
        .await;
        ings[i] = Some(ingester(dirs[i].path(), etcd.url(), i, ports[i]));
        wait_ring(&ring, "rejoined ACTIVE", all_active).await;
        assert_eq!(
            ring.snapshot().instance(&id).unwrap().tokens,
            tokens_before[&id],
            "{id}: tokens changed across a graceful restart"
        );
        let b = query_now(&client, &querier.base, "count(last_over_time(rl[1h]))").await;
        assert_eq!(b["data"]["result"][0]["value"][1], "20", "{b}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A hung ingester (SIGSTOP), past the heartbeat timeout: writes and
    // queries keep succeeding without waiting for it; the ring marks it
    // unhealthy; after SIGCONT it heartbeats and is healthy again.
    let pid = ings[1].as_ref().unwrap().child.id().to_string();
    let sig = |s: &str| {
        let st = std::process::Command::new("kill")
            .args([s, &pid])
            .status()
            .unwrap();
        assert!(st.success());
    };
    sig("-STOP");
    let hung = Instant::now();
    let q = Instant::now();
    let b = query_now(&client, &querier.base, "count(last_over_time(rl[1h]))").await;
    assert_eq!(b["data"]["result"][0]["value"][1], "20", "{b}");
    assert!(
        q.elapsed() < Duration::from_millis(1800),
        "a hung ingester slowed a query: {:?}",
        q.elapsed()
    );
    wait_ring(&ring, "ing-1 unhealthy while stopped", |insts| {
        insts.iter().any(|d| {
            d.id == "ing-1"
                && !ring
                    .snapshot()
                    .is_healthy(d, Operation::Read, stratus_ring::desc::now_ms())
        })
    })
    .await;
    let b = query_now(&client, &querier.base, "count(last_over_time(rl[1h]))").await;
    assert_eq!(b["data"]["result"][0]["value"][1], "20", "{b}");
    if let Some(left) = Duration::from_secs(3).checked_sub(hung.elapsed()) {
        tokio::time::sleep(left).await;
    }
    sig("-CONT");
    wait_ring(&ring, "ing-1 healthy after SIGCONT", |insts| {
        insts.iter().all(|d| {
            ring.snapshot()
                .is_healthy(d, Operation::Write, stratus_ring::desc::now_ms())
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let load = bg.finish().await;
    println!(
        "load: {} pushes acknowledged ({} samples), {} failed",
        load.ok,
        load.acked.len(),
        load.failed.len()
    );
    assert!(load.ok > 20, "too little load: {} pushes", load.ok);
    assert!(
        load.failed.is_empty(),
        "{} of {} pushes failed: {:?}",
        load.failed.len(),
        load.ok + load.failed.len(),
        &load.failed[..load.failed.len().min(5)]
    );

    // Every acknowledged sample exactly once through the querier.
    let mut want: HashMap<usize, BTreeMap<i64, f64>> = HashMap::new();
    for (s, t, v) in &load.acked {
        want.entry(*s).or_default().insert(*t, *v);
    }
    let b = query_now(&client, &querier.base, "rl[1h]").await;
    let result = b["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), SERIES, "{b}");
    for r in result {
        let s: usize = r["metric"]["s"].as_str().unwrap().parse().unwrap();
        let got: Vec<(i64, f64)> = r["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                (t, p[1].as_str().unwrap().parse().unwrap())
            })
            .collect();
        let mut ts: Vec<i64> = got.iter().map(|x| x.0).collect();
        ts.dedup();
        assert_eq!(ts.len(), got.len(), "series {s}: duplicate timestamps");
        let w = &want[&s];
        let got: BTreeMap<i64, f64> = got.into_iter().collect();
        for (t, v) in w {
            assert_eq!(
                got.get(t),
                Some(v),
                "series {s}: acknowledged sample at {t} missing"
            );
        }
        assert_eq!(
            got.len(),
            w.len(),
            "series {s}: unacknowledged extra samples"
        );
    }
    let b = query_now(&client, &querier.base, "sum(count_over_time(rl[1h]))").await;
    assert_eq!(
        b["data"]["result"][0]["value"][1],
        load.acked.len().to_string(),
        "{b}"
    );

    // Series spread over the live ring's tokens (first replica), 100k
    // series of tenant `default` keyed exactly as the distributor does.
    let snap = ring.snapshot();
    let mut per: HashMap<String, u32> = HashMap::new();
    for i in 0..100_000u32 {
        let v = i.to_string();
        let key =
            stratus_ring::shard_key_pairs("default", [("__name__", "spread"), ("i", v.as_str())]);
        let set = snap.get(key, Operation::Write).unwrap();
        assert_eq!(set.instances.len(), 3);
        *per.entry(set.instances[0].id.clone()).or_default() += 1;
    }
    let max = f64::from(*per.values().max().unwrap());
    let min = f64::from(*per.values().min().unwrap());
    println!(
        "series spread (primary replica, 100k series): {per:?}, max/min {:.3}",
        max / min
    );
    assert_eq!(per.len(), 3);
    assert!(max / min <= 1.1, "spread {per:?}");

    println!("ring cluster test took {:?}", started.elapsed());
    drop(ings);
    drop(etcd);
}
