//! Cluster mode with real processes on 127.0.0.1: three ingesters, one
//! distributor and one querier (`--target=...`), replication factor 3.
//! Under bounded remote-write load, one ingester is killed with SIGKILL:
//! writes keep succeeding and queries keep answering; it is restarted on
//! its data dir (WAL replay); afterwards every acknowledged sample is
//! queryable exactly once through the querier. A SIGSTOPped ingester
//! slows neither writes nor queries once a quorum answered.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

mod common;
use common::{Proc, free_port, http_client, now_ms, numbered_push, query_now, spawn_stratus};

const SERIES: usize = 20;
const SAMPLES_PER_PUSH: i64 = 5;

fn ingester(dir: &std::path::Path, port: u16) -> Proc {
    spawn_stratus(
        dir,
        &[
            "--auth=none",
            "--target=ingester",
            &format!("--grpc-listen=127.0.0.1:{port}"),
        ],
    )
}

struct Load {
    client: reqwest::Client,
    url: String,
    t0: i64,
    seq: i64,
    acked: Vec<(usize, i64, f64)>,
    failed: Vec<String>,
}

impl Load {
    /// Pushes for `dur`; returns (acknowledged, failed) pushes.
    async fn run(&mut self, dur: Duration) -> (usize, usize) {
        let end = Instant::now() + dur;
        let (mut ok, mut bad) = (0, 0);
        while Instant::now() < end {
            let (body, expect) = numbered_push("cl", SERIES, SAMPLES_PER_PUSH, self.seq, self.t0);
            self.seq += 1;
            let r = self
                .client
                .post(&self.url)
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .timeout(Duration::from_secs(10))
                .body(body)
                .send()
                .await;
            match r {
                Ok(r) if r.status().as_u16() == 204 => {
                    self.acked.extend(expect);
                    ok += 1;
                }
                Ok(r) => {
                    let st = r.status();
                    self.failed
                        .push(format!("{st}: {}", r.text().await.unwrap_or_default()));
                    bad += 1;
                }
                Err(e) => {
                    self.failed.push(e.to_string());
                    bad += 1;
                }
            }
        }
        (ok, bad)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_one_of_three_ingesters_loses_nothing() {
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut ings: Vec<Option<Proc>> = (0..3)
        .map(|i| Some(ingester(dirs[i].path(), ports[i])))
        .collect();
    let addrs = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let cluster_args = |target: &str| {
        vec![
            "--auth=none".to_string(),
            format!("--target={target}"),
            format!("--ingester.addrs={addrs}"),
            "--ingester.client-timeout=2s".to_string(),
        ]
    };
    let dargs = cluster_args("distributor");
    let dargs: Vec<&str> = dargs.iter().map(String::as_str).collect();
    let dist = spawn_stratus(dirs[3].path(), &dargs);
    let qargs = cluster_args("querier");
    let qargs: Vec<&str> = qargs.iter().map(String::as_str).collect();
    let querier = spawn_stratus(dirs[4].path(), &qargs);

    let client = http_client();
    let mut load = Load {
        client: client.clone(),
        url: format!("{}/api/v1/push", dist.base),
        t0: now_ms() - 600_000,
        seq: 0,
        acked: Vec::new(),
        failed: Vec::new(),
    };
    let (ok, bad) = load.run(Duration::from_secs(1)).await;
    assert!(ok > 0 && bad == 0, "healthy cluster: {:?}", load.failed);

    // Kill -9 one ingester: writes and queries keep working.
    ings[0].take();
    let (ok, bad) = load.run(Duration::from_secs(1)).await;
    assert!(ok > 0 && bad == 0, "one ingester down: {:?}", load.failed);
    let b = query_now(&client, &querier.base, "count(last_over_time(cl[1h]))").await;
    assert_eq!(b["data"]["result"][0]["value"][1], "20", "{b}");

    // Restart it on its data dir (WAL replay), keep writing.
    ings[0] = Some(ingester(dirs[0].path(), ports[0]));
    let (ok, bad) = load.run(Duration::from_secs(1)).await;
    assert!(ok > 0 && bad == 0, "after restart: {:?}", load.failed);

    // A hung (SIGSTOP) ingester: writes and queries answer without
    // waiting for it, well within the 2s client timeout.
    let pid = ings[1].as_ref().unwrap().child.id().to_string();
    let sig = |s: &str| {
        let st = std::process::Command::new("kill")
            .args([s, &pid])
            .status()
            .unwrap();
        assert!(st.success());
    };
    sig("-STOP");
    let started = Instant::now();
    let (ok, bad) = load.run(Duration::from_millis(500)).await;
    assert!(ok > 0 && bad == 0, "one ingester hung: {:?}", load.failed);
    let b = query_now(&client, &querier.base, "count(last_over_time(cl[1h]))").await;
    assert_eq!(b["data"]["result"][0]["value"][1], "20", "{b}");
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "hung ingester slowed the cluster: {:?}",
        started.elapsed()
    );
    sig("-CONT");

    // Every acknowledged sample exactly once.
    let mut want: HashMap<usize, BTreeMap<i64, f64>> = HashMap::new();
    for (s, t, v) in &load.acked {
        want.entry(*s).or_default().insert(*t, *v);
    }
    let b = query_now(&client, &querier.base, "cl[1h]").await;
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
    // Metadata endpoints through the querier, replicas deduplicated.
    let start = ((load.t0 / 1000) - 60).to_string();
    for (path, want) in [
        ("/api/v1/series?match[]=cl", SERIES),
        ("/api/v1/label/s/values", SERIES),
        ("/api/v1/labels", 2),
    ] {
        let r = client
            .get(format!("{}{path}", querier.base))
            .query(&[("start", start.as_str())])
            .send()
            .await
            .unwrap();
        let b: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(
            b["data"].as_array().map(Vec::len),
            Some(want),
            "{path}: {b}"
        );
    }
    // Each sample is on three replicas (RF 3) but counted once.
    let b = query_now(&client, &querier.base, "sum(count_over_time(cl[1h]))").await;
    assert_eq!(
        b["data"]["result"][0]["value"][1],
        load.acked.len().to_string(),
        "{b}"
    );

    // The gRPC hops on /metrics: the distributor counted its pushes to the
    // killed ingester that failed, the querier its streams, an ingester
    // the pushes it served.
    let metrics = |base: String| {
        let client = client.clone();
        async move {
            let r = client.get(format!("{base}/metrics")).send().await.unwrap();
            r.text().await.unwrap()
        }
    };
    let m = metrics(dist.base.clone()).await;
    let killed = format!("127.0.0.1:{}", ports[0]);
    assert!(
        m.contains(&format!(
            "stratus_distributor_ingester_append_failures_total{{ingester=\"{killed}\",code=\"Unavailable\"}}"
        )),
        "{m}"
    );
    assert!(
        m.contains(
            r#"stratus_ingester_client_request_duration_seconds_count{method="Push",code="OK"}"#
        ),
        "{m}"
    );
    let m = metrics(querier.base.clone()).await;
    assert!(
        m.contains(r#"stratus_ingester_client_request_duration_seconds_count{method="QueryStream",code="OK"}"#),
        "{m}"
    );
    let m = metrics(ings[2].as_ref().unwrap().base.clone()).await;
    assert!(
        m.contains(
            r#"stratus_ingester_grpc_request_duration_seconds_count{method="Push",code="OK"}"#
        ),
        "{m}"
    );
}
