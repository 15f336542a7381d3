//! Kill -9 the real `stratus` process while remote-write pushes are in
//! flight, restart it on the same data dir, and check that every sample
//! whose push was acknowledged (HTTP 204) is queryable with its value.
//!
//! Trials: 3 by default; `STRATUS_KILL9_TRIALS=N` for a longer run.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prost::Message;
use rand::Rng;
use stratus_proto::prometheus as pb;

mod common;
use common::{now_ms, spawn_stratus};

fn spawn(dir: &std::path::Path) -> common::Proc {
    spawn_stratus(dir, &["--auth=none"])
}

const WRITERS: usize = 2;
const SERIES_PER_PUSH: usize = 20;
const SAMPLES_PER_SERIES: i64 = 5;

/// One push: series `kill9{writer,s}` with `SAMPLES_PER_SERIES` samples
/// starting at `t0`, one ms apart; the value encodes (seq, sample).
fn payload(writer: usize, seq: u64, t0: i64) -> (Vec<u8>, Vec<(String, i64, f64)>) {
    let mut series = Vec::new();
    let mut expect = Vec::new();
    for s in 0..SERIES_PER_PUSH {
        let key = format!("{writer}/{s}");
        let samples: Vec<pb::Sample> = (0..SAMPLES_PER_SERIES)
            .map(|k| {
                let t = t0 + k;
                let v = (seq * 100 + k as u64) as f64;
                expect.push((key.clone(), t, v));
                pb::Sample {
                    value: v,
                    timestamp: t,
                }
            })
            .collect();
        series.push(pb::TimeSeries {
            labels: vec![
                pb::Label {
                    name: "__name__".into(),
                    value: "kill9".into(),
                },
                pb::Label {
                    name: "s".into(),
                    value: s.to_string(),
                },
                pb::Label {
                    name: "writer".into(),
                    value: writer.to_string(),
                },
            ],
            samples,
            ..Default::default()
        });
    }
    let body = pb::WriteRequest {
        timeseries: series,
        ..Default::default()
    }
    .encode_to_vec();
    let body = snap::raw::Encoder::new().compress_vec(&body).unwrap();
    (body, expect)
}

/// Pushes until the server dies; returns the acknowledged samples.
async fn pusher(
    base: String,
    writer: usize,
    t_start: i64,
    acks: Arc<AtomicUsize>,
) -> Vec<(String, i64, f64)> {
    let client = common::http_client();
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seq = 0u64;
    while Instant::now() < deadline {
        // Each push has its own 10-ms slot per writer: timestamps never
        // collide across pushes, so every sample is distinct.
        let t0 = t_start + seq as i64 * 10;
        let (body, expect) = payload(writer, seq, t0);
        seq += 1;
        let r = client
            .post(format!("{base}/api/v1/push"))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body)
            .send()
            .await;
        match r {
            Ok(r) if r.status().as_u16() == 204 => {
                acked.extend(expect);
                acks.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => panic!("push answered {}", r.status()),
            Err(_) => break, // the server is gone
        }
    }
    acked
}

/// All stored `kill9` samples: key "writer/s" → (t → v).
async fn stored(base: &str) -> HashMap<String, HashMap<i64, f64>> {
    let client = common::http_client();
    let body = client
        .get(format!("{base}/api/v1/query"))
        .query(&[
            ("query", "kill9[1d]"),
            ("time", &(now_ms() / 1000 + 60).to_string()),
        ])
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], "success", "{v}");
    let mut out: HashMap<String, HashMap<i64, f64>> = HashMap::new();
    for s in v["data"]["result"].as_array().unwrap() {
        let key = format!(
            "{}/{}",
            s["metric"]["writer"].as_str().unwrap(),
            s["metric"]["s"].as_str().unwrap()
        );
        let m = out.entry(key).or_default();
        for p in s["values"].as_array().unwrap() {
            let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
            let val: f64 = p[1].as_str().unwrap().parse().unwrap();
            m.insert(t, val);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_pushes_survive_kill_9() {
    let trials: usize = std::env::var("STRATUS_KILL9_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let mut all_acked: Vec<(String, i64, f64)> = Vec::new();
    let mut rng = rand::rng();
    let t_start = now_ms() - 30 * 60 * 1000;
    for trial in 0..trials {
        let mut proc = spawn(dir.path());
        let base = proc.base.clone();
        // Writers of each trial have their own series.
        let acks = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let writer = trial * WRITERS + w;
                tokio::spawn(pusher(base.clone(), writer, t_start, acks.clone()))
            })
            .collect();
        // Kill at a random moment after pushes started to succeed (the
        // first push waits for the tenant's WAL replay).
        let waited = Instant::now();
        while acks.load(Ordering::Relaxed) == 0 && waited.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let delay = rng.random_range(20..800);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        proc.child.kill().unwrap(); // SIGKILL
        proc.child.wait().unwrap();
        let mut acked_now = 0;
        for t in tasks {
            let a = t.await.unwrap();
            acked_now += a.len();
            all_acked.extend(a);
        }
        assert!(
            acked_now > 0,
            "trial {trial}: nothing was acknowledged in {delay} ms"
        );

        let mut p = spawn(dir.path());
        let got = stored(&p.base).await;
        let mut missing = 0;
        for (key, t, v) in &all_acked {
            match got.get(key).and_then(|m| m.get(t)) {
                Some(x) if x == v => {}
                Some(x) => panic!("trial {trial}: {key}@{t} is {x}, acknowledged {v}"),
                None => missing += 1,
            }
        }
        assert_eq!(
            missing,
            0,
            "trial {trial}: {missing} of {} acknowledged samples lost after kill -9 at {delay} ms",
            all_acked.len()
        );
        eprintln!(
            "trial {trial}: killed after {delay} ms, {acked_now} samples acknowledged, all {} present",
            all_acked.len()
        );
        p.child.kill().unwrap();
        p.child.wait().unwrap();
    }
}

/// Exemplars of an acknowledged push survive kill -9 (they are in the WAL
/// before the push is acknowledged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_exemplars_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms() - 60_000;
    let mut p = spawn(dir.path());
    let client = common::http_client();
    let series: Vec<pb::TimeSeries> = (0..3)
        .map(|s| pb::TimeSeries {
            labels: vec![
                pb::Label {
                    name: "__name__".into(),
                    value: "kill9_ex".into(),
                },
                pb::Label {
                    name: "s".into(),
                    value: s.to_string(),
                },
            ],
            samples: vec![pb::Sample {
                value: 1.0,
                timestamp: t0,
            }],
            exemplars: (0..4)
                .map(|i| pb::Exemplar {
                    labels: vec![pb::Label {
                        name: "trace_id".into(),
                        value: format!("{s}-{i}"),
                    }],
                    value: f64::from(i) * 0.25,
                    timestamp: t0 + i64::from(i),
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
    let r = client
        .post(format!("{}/api/v1/push", p.base))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .body(snap::raw::Encoder::new().compress_vec(&body).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let query = |base: String| {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("{base}/api/v1/query_exemplars"))
                .query(&[("query", "kill9_ex")])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.text().await.unwrap()
        }
    };
    let before = query(p.base.clone()).await;
    assert_eq!(before.matches("trace_id").count(), 12, "{before}");
    p.child.kill().unwrap(); // SIGKILL
    p.child.wait().unwrap();
    let mut p = spawn(dir.path());
    assert_eq!(query(p.base.clone()).await, before);
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}
