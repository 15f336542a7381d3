//! Single-node `stratus --storage.backend=s3` against a real S3-compatible
//! server (`s3s-fs` on 127.0.0.1): pushed samples are flushed into blocks in
//! the bucket (with the tenant's bucket index); a second server with an
//! empty data directory on the same bucket answers queries for that
//! history after the first is gone. Wrong credentials stop the start with
//! a clear message; the secret is never shown.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message;
use stratus_proto::prometheus as pb;

mod common;
use common::{http_client, spawn_stratus};

#[path = "../../objstore/tests/common/s3server.rs"]
mod s3server;
use s3server::{ACCESS_KEY, S3Server, SECRET_KEY};

fn s3_args(srv: &S3Server, bucket: &str, secret: &str) -> Vec<String> {
    vec![
        "--auth=none".into(),
        "--storage.backend=s3".into(),
        format!("--s3.endpoint={}", srv.endpoint),
        format!("--s3.bucket={bucket}"),
        "--s3.allow-http".into(),
        format!("--s3.access-key-id={ACCESS_KEY}"),
        format!("--s3.secret-access-key={secret}"),
        "--s3.prefix=cluster-1".into(),
    ]
}

fn push_body(t0: i64) -> Vec<u8> {
    let series = (0..5)
        .map(|s| pb::TimeSeries {
            labels: vec![
                pb::Label {
                    name: "__name__".into(),
                    value: "s3_e2e".into(),
                },
                pb::Label {
                    name: "s".into(),
                    value: s.to_string(),
                },
            ],
            samples: (0..10)
                .map(|k| pb::Sample {
                    value: (s * 100 + k) as f64,
                    timestamp: t0 + k * 15_000,
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

/// `sum(s3_e2e)` and the number of series at `t` (seconds).
async fn query(base: &str, t: i64) -> (f64, usize) {
    let c = http_client();
    let mut out = (0.0, 0);
    for (q, slot) in [("sum(s3_e2e)", 0), ("count(s3_e2e)", 1)] {
        let body = c
            .get(format!("{base}/api/v1/query"))
            .query(&[("query", q), ("time", &t.to_string())])
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], "success", "{v}");
        let x: f64 = v["data"]["result"][0]["value"][1]
            .as_str()
            .unwrap_or_else(|| panic!("no result for {q}: {v}"))
            .parse()
            .unwrap();
        if slot == 0 {
            out.0 = x;
        } else {
            out.1 = x as usize;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_in_s3_survive_the_server() {
    let srv = S3Server::start(&["stratus"]);
    let t0 = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 600_000)
        / 1000
        * 1000;
    let at = t0 / 1000 + 9 * 15; // the last sample, in seconds
    let want = (0..5).map(|s| (s * 100 + 9) as f64).sum::<f64>();
    let dir1 = tempfile::tempdir().unwrap();
    let args = s3_args(&srv, "stratus", SECRET_KEY);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p1 = spawn_stratus(dir1.path(), &args);
    let c = http_client();
    let r = c
        .post(format!("{}/api/v1/push", p1.base))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(push_body(t0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    // /config shows the S3 settings but not the secret.
    let cfg = c
        .get(format!("{}/config", p1.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(cfg.contains("backend: s3"), "{cfg}");
    assert!(!cfg.contains(SECRET_KEY), "{cfg}");
    assert!(cfg.contains("secret_access_key: <secret>"), "{cfg}");
    let dbg = c
        .get(format!("{}/api/v1/query", p1.base))
        .query(&[("query", "sum(s3_e2e)"), ("time", &at.to_string())])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    eprintln!("DBG at={at} {dbg}");
    assert_eq!(query(&p1.base, at).await, (want, 5));
    let r = c
        .post(format!("{}/ingester/flush", p1.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("flushed 1 tenants"), "{text}");
    assert_eq!(query(&p1.base, at).await, (want, 5));
    drop(p1); // the first server is gone (killed)

    let keys = srv.keys("stratus");
    assert!(
        keys.contains(&"cluster-1/default/bucket-index.json".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .any(|k| k.starts_with("cluster-1/default/") && k.ends_with("/meta.json")),
        "{keys:?}"
    );
    // Nothing of the blocks on the first server's local disk.
    assert!(!dir1.path().join("blocks").join("default").exists());

    // A fresh server, empty data directory, same bucket.
    let dir2 = tempfile::tempdir().unwrap();
    let p2 = spawn_stratus(dir2.path(), &args);
    assert_eq!(query(&p2.base, at).await, (want, 5));
}

#[test]
fn wrong_credentials_stop_the_start_with_a_clear_error() {
    let srv = S3Server::start(&["stratus"]);
    let dir = tempfile::tempdir().unwrap();
    let secret = "definitely-wrong-secret";
    let mut child = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args(s3_args(&srv, "stratus", secret))
        .arg("--listen=127.0.0.1:0")
        .arg(format!("--data-dir={}", dir.path().display()))
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("stratus kept running with wrong S3 credentials");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("s3://stratus/cluster-1") && text.contains("not usable"),
        "{text}"
    );
    assert!(!text.contains(secret), "{text}");
    assert!(!text.contains("panicked"), "{text}");

    // A missing bucket setting is refused before any request.
    let out = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args(["--storage.backend=s3", "--print-config"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("s3.bucket"), "{err}");
}
