//! The history side of cluster mode with real processes on 127.0.0.1 and
//! a real S3 server (`s3s-fs`): three ingesters (RF3, each with its own
//! `--ingester.id`) ship their blocks to one bucket, a store serves them,
//! a querier reads them through the store after every ingester is gone
//! (each acknowledged sample exactly once), and the compactor merges the
//! three replicas into one block per range without changing any answer.
//! One ingester ships its head by `--ingester.flush-on-shutdown` when it
//! is stopped, the others on `POST /ingester/flush`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message;
use stratus_proto::prometheus as pb;

mod common;
use common::{Proc, free_port, http_client, spawn_stratus};

#[path = "../../objstore/tests/common/s3server.rs"]
mod s3server;
use s3server::{ACCESS_KEY, S3Server, SECRET_KEY};

const SERIES: usize = 8;
const HOUR: i64 = 3_600_000;
/// One sample a minute over two hours, crossing one 2h block boundary.
const STEP: i64 = 60_000;
const SAMPLES: i64 = 120;

fn s3_args(srv: &S3Server) -> Vec<String> {
    vec![
        "--storage.backend=s3".into(),
        format!("--s3.endpoint={}", srv.endpoint),
        "--s3.bucket=stratus".into(),
        "--s3.allow-http".into(),
        format!("--s3.access-key-id={ACCESS_KEY}"),
        format!("--s3.secret-access-key={SECRET_KEY}"),
        "--s3.prefix=c1".into(),
    ]
}

fn spawn(dir: &std::path::Path, args: Vec<String>) -> Proc {
    let mut all = vec!["--auth=none".to_string()];
    all.extend(args);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    spawn_stratus(dir, &refs)
}

/// One push: samples `k0..k1` of every series. Returns body and samples.
fn payload(t0: i64, k0: i64, k1: i64) -> (Vec<u8>, Vec<(String, i64, f64)>) {
    let mut series = Vec::new();
    let mut expect = Vec::new();
    for s in 0..SERIES {
        let samples: Vec<pb::Sample> = (k0..k1)
            .map(|k| {
                let (t, v) = (t0 + k * STEP, (s as i64 * 1000 + k) as f64);
                expect.push((s.to_string(), t, v));
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
                    value: "hist".into(),
                },
                pb::Label {
                    name: "s".into(),
                    value: s.to_string(),
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
    (
        snap::raw::Encoder::new().compress_vec(&body).unwrap(),
        expect,
    )
}

/// Every raw sample of `hist` in the 3h before `at` (seconds), by series.
async fn raw(c: &reqwest::Client, base: &str, at: i64) -> BTreeMap<String, Vec<(i64, f64)>> {
    let r = c
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", "hist[3h]".to_string()), ("time", at.to_string())])
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], "success", "{text}");
    let mut out = BTreeMap::new();
    for s in body["data"]["result"].as_array().unwrap() {
        let name = s["metric"]["s"].as_str().unwrap().to_string();
        let vals: Vec<(i64, f64)> = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                let v: f64 = p[1].as_str().unwrap().parse().unwrap();
                (t, v)
            })
            .collect();
        out.insert(name, vals);
    }
    out
}

fn block_metas(srv: &S3Server) -> Vec<String> {
    srv.keys("stratus")
        .into_iter()
        .filter(|k| k.starts_with("c1/default/") && k.ends_with("/meta.json"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingester_blocks_are_served_by_store_and_compacted_once() {
    let srv = S3Server::start(&["stratus"]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // A day ago, starting mid-window so the data spans two 2h ranges.
    let t0 = (now - 24 * HOUR) / (2 * HOUR) * (2 * HOUR) + HOUR;
    let dirs: Vec<tempfile::TempDir> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut ingesters: Vec<Proc> = (0..3)
        .map(|i| {
            let mut a = vec![
                "--target=ingester".to_string(),
                format!("--grpc-listen={}", addrs[i]),
                format!("--ingester.id=ing-{i}"),
            ];
            if i == 0 {
                // This one ships its head when it is stopped (SIGTERM).
                a.push("--ingester.flush-on-shutdown".into());
            }
            a.extend(s3_args(&srv));
            spawn(dirs[i].path(), a)
        })
        .collect();
    let dist = spawn(
        dirs[3].path(),
        vec![
            "--target=distributor".into(),
            format!("--ingester.addrs={}", addrs.join(",")),
        ],
    );
    let c = http_client();
    let mut acked: Vec<(String, i64, f64)> = Vec::new();
    for k0 in (0..SAMPLES).step_by(30) {
        let (body, expect) = payload(t0, k0, k0 + 30);
        let r = c
            .post(format!("{}/api/v1/push", dist.base))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .timeout(Duration::from_secs(10))
            .body(body)
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        assert_eq!(st, 204, "{}", r.text().await.unwrap_or_default());
        acked.extend(expect);
    }
    let mut want: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for (s, t, v) in acked {
        want.entry(s).or_default().push((t, v));
    }
    let mut leaving = ingesters.remove(0);
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &leaving.child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while leaving.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "ingester did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(leaving.child.try_wait().unwrap().unwrap().success());
    for p in &ingesters {
        let r = c
            .post(format!("{}/ingester/flush", p.base))
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(st, 200, "{text}");
        assert!(text.contains("flushed 1 tenants"), "{text}");
    }
    ingesters.clear(); // every ingester is gone (killed)
    drop(dist);

    // Each ingester shipped its two blocks under its own index.
    let keys = srv.keys("stratus");
    for i in 0..3 {
        let k = format!("c1/default/bucket-index.ingester-ing-{i}.json");
        assert!(keys.contains(&k), "{keys:?}");
    }
    let metas = block_metas(&srv);
    assert_eq!(metas.len(), 6, "{metas:?}");
    let meta0 = std::fs::read_to_string(srv.root.path().join("stratus").join(&metas[0])).unwrap();
    assert!(meta0.contains("__ingester_id__"), "{meta0}");

    let store_addr = format!("127.0.0.1:{}", free_port());
    let mut a = vec![
        "--target=store".to_string(),
        format!("--grpc-listen={store_addr}"),
        "--store.sync-interval=200ms".into(),
    ];
    a.extend(s3_args(&srv));
    let _store = spawn(dirs[4].path(), a);
    let querier = spawn(
        dirs[5].path(),
        vec![
            "--target=querier".into(),
            format!("--ingester.addrs={}", addrs.join(",")),
            format!("--store.addrs={store_addr}"),
            "--querier.query-ingesters-within=1h".into(),
        ],
    );
    let at = (t0 + SAMPLES * STEP) / 1000;
    let got = raw(&c, &querier.base, at).await;
    assert_eq!(got, want, "store answers differ from what was acknowledged");

    // The compactor merges the three replicas: one block per range.
    let cdir = tempfile::tempdir().unwrap();
    let mut a = vec![
        "--target=compactor".to_string(),
        "--compactor.interval=200ms".into(),
        // Replicas only (no level windows), inputs deleted at once.
        "--compactor.block-ranges=2h".into(),
        "--compactor.deletion-delay=0s".into(),
    ];
    a.extend(s3_args(&srv));
    let compactor = spawn(cdir.path(), a);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metas = block_metas(&srv);
        if metas.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "compaction not done: {metas:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for m in block_metas(&srv) {
        let text = std::fs::read_to_string(srv.root.path().join("stratus").join(&m)).unwrap();
        assert!(text.contains("\"compactor\""), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["stats"]["numSamples"].as_u64().unwrap(),
            (SERIES as u64) * (SAMPLES as u64) / 2,
            "{text}"
        );
    }
    let ix = std::fs::read_to_string(
        srv.root
            .path()
            .join("stratus")
            .join("c1/default/bucket-index.json"),
    )
    .unwrap();
    let ix: serde_json::Value = serde_json::from_str(&ix).unwrap();
    assert_eq!(ix["blocks"].as_array().unwrap().len(), 2, "{ix}");
    // The store picks the change up; answers stay exactly the same.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cache = dirs[4].path().join("store-cache").join("default");
        let dropped = std::fs::read_dir(&cache).map_or(0, |d| d.count()) == 2;
        if dropped {
            break;
        }
        assert!(Instant::now() < deadline, "store did not resync");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(raw(&c, &querier.base, at).await, want);
    drop(compactor);
}
