//! HA-pair deduplication across distributors, with real processes and a
//! real etcd (`/usr/bin/etcd`): one ingester and two distributors on the
//! ring in etcd, `accept_ha_samples` on by default. Replica `a` pushes
//! through distributor 1, replica `b` the same series through distributor
//! 2: the distributors agree (the election is in etcd), so only `a`'s
//! samples reach the ingester, without the replica label, and `b` gets
//! 202. When `a` goes quiet past the failover timeout, `b` takes over and
//! `a` is dropped by the other distributor.

use std::time::{Duration, Instant};

use prost::Message;
use stratus_proto::prometheus as pb;

mod common;
use common::{Proc, free_port, http_client, now_ms, spawn_stratus};

const WAIT: Duration = Duration::from_secs(15);

fn args(etcd: &str, target: &str) -> Vec<String> {
    vec![
        "--auth=none".into(),
        format!("--target={target}"),
        format!("--etcd.endpoints={etcd}"),
        "--ring.replication-factor=1".into(),
        "--ring.heartbeat-period=200ms".into(),
        "--ring.heartbeat-timeout=2s".into(),
        r#"--default-limits={"accept_ha_samples":true}"#.into(),
        "--ha-tracker.update-timeout=200ms".into(),
        "--ha-tracker.update-timeout-jitter-max=0s".into(),
        "--ha-tracker.failover-timeout=1s".into(),
    ]
}

fn spawn(dir: &std::path::Path, a: Vec<String>) -> Proc {
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    spawn_stratus(dir, &a)
}

fn body(replica: &str, t: i64, v: f64) -> Vec<u8> {
    let labels = [
        ("__name__", "up"),
        ("__replica__", replica),
        ("cluster", "prom-eu"),
        ("job", "node"),
    ];
    let req = pb::WriteRequest {
        timeseries: vec![pb::TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| pb::Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: vec![pb::Sample {
                value: v,
                timestamp: t,
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap()
}

async fn push(c: &reqwest::Client, base: &str, replica: &str, t: i64, v: f64) -> (u16, String) {
    let r = c
        .post(format!("{base}/api/v1/push"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body(replica, t, v))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.text().await.unwrap())
}

/// `up[1m]` on the ingester: (labels, values) of each series.
async fn stored(c: &reqwest::Client, base: &str, at: i64) -> Vec<(serde_json::Value, Vec<String>)> {
    let r = c
        .get(format!("{base}/api/v1/query"))
        .query(&[
            ("query", "up[1m]".to_string()),
            ("time", format!("{}", at as f64 / 1000.0)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let vals = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p[1].as_str().unwrap().to_string())
                .collect();
            (s["metric"].clone(), vals)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributors_agree_on_the_elected_replica() {
    let client = http_client();
    let etcd = stratus_ring::EtcdServer::start().await.expect("etcd");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut ia = args(etcd.url(), "ingester");
    ia.push(format!("--grpc-listen=127.0.0.1:{}", free_port()));
    ia.push("--ring.instance-id=ing-0".into());
    let ing = spawn(dirs[0].path(), ia);
    let d1 = spawn(dirs[1].path(), args(etcd.url(), "distributor"));
    let d2 = spawn(dirs[2].path(), args(etcd.url(), "distributor"));
    let t0 = now_ms() - 30_000;

    // Wait for the ingester to be ACTIVE in both distributors' rings: a
    // push without HA labels goes through once it is.
    for d in [&d1, &d2] {
        let deadline = Instant::now() + WAIT;
        loop {
            let r = client
                .post(format!("{}/api/v1/push", d.base))
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .body(
                    snap::raw::Encoder::new()
                        .compress_vec(&pb::WriteRequest::default().encode_to_vec())
                        .unwrap(),
                )
                .send()
                .await
                .unwrap();
            let ring = client
                .get(format!("{}/ring?format=json", d.base))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if r.status().as_u16() == 204 && ring.contains("ACTIVE") {
                break;
            }
            assert!(Instant::now() < deadline, "ring not ready: {ring}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let (st, b) = push(&client, &d1.base, "a", t0, 1.0).await;
    assert_eq!(st, 204, "{b}");
    let (st, b) = push(&client, &d2.base, "b", t0, 2.0).await;
    assert_eq!(st, 202, "{b}");
    let (st, b) = push(&client, &d2.base, "a", t0 + 1000, 1.0).await;
    assert_eq!(
        st, 204,
        "elected replica through the other distributor: {b}"
    );
    let got = stored(&client, &ing.base, t0 + 10_000).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].0,
        serde_json::json!({"__name__": "up", "cluster": "prom-eu", "job": "node"})
    );
    assert_eq!(got[0].1, vec!["1", "1"]);
    let m = client
        .get(format!("{}/metrics", d2.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains(r#"stratus_ha_dropped_samples_total{tenant="default",cluster="prom-eu"} 1"#),
        "{m}"
    );

    // "a" goes quiet: after the failover timeout "b" takes over through
    // distributor 2, and distributor 1 drops "a" from then on.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (st, b) = push(&client, &d2.base, "b", t0 + 2000, 2.0).await;
    assert_eq!(st, 204, "{b}");
    let (st, b) = push(&client, &d1.base, "a", t0 + 3000, 1.0).await;
    assert_eq!(st, 202, "{b}");
    let got = stored(&client, &ing.base, t0 + 10_000).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, vec!["1", "1", "2"]);
}
