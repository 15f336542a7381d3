//! Shared by the `stratus` binary's integration tests: starting the real
//! server process on a free loopback port.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `stratus` process and its base URL.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) base: String,
    /// host:port it listens on.
    pub(crate) addr: String,
    /// Its log lines (stdout) so far.
    pub(crate) log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `stratus` with `args` on 127.0.0.1 and a free port, data in
/// `dir`, and waits until it reports its listen address.
pub(crate) fn spawn_stratus(dir: &Path, args: &[&str]) -> Proc {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.push("--listen=127.0.0.1:0".into());
    all.push(format!("--data-dir={}", dir.display()));
    spawn_listening(&all)
}

/// Runs the `stratus` binary with `args` (which must make it listen on a
/// port it chooses) and waits for the `listen=` field of its log.
pub(crate) fn spawn_listening(args: &[String]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start stratus");
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut l) = log2.lock() {
                l.push(line.clone());
            }
            if !sent && let Some(i) = line.find("listen=") {
                let addr: String = line[i + 7..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                    .collect();
                let _ = tx.send(addr);
                sent = true;
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("stratus did not report its listen address");
    Proc {
        child,
        base: format!("http://{addr}"),
        addr,
        log,
    }
}

/// A reqwest client (installs rustls' `ring` provider first: reqwest is
/// built with the agent's `rustls-no-provider` feature).
pub(crate) fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A free TCP port on 127.0.0.1 for a child process to listen on, outside
/// the kernel's ephemeral range (see `stratus_testkit`).
pub(crate) fn free_port() -> u16 {
    stratus_testkit::loopback_port()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One push of a numbered load: `series` series `{__name__=name, s="<i>"}`
/// with `per_push` samples each at `t0 + seq * per_push + k`, value
/// `seq * 100 + k`. Returns the snappy remote-write 1.0 body and the
/// `(series, t, v)` it carries.
pub(crate) fn numbered_push(
    name: &str,
    series: usize,
    per_push: i64,
    seq: i64,
    t0: i64,
) -> (Vec<u8>, Vec<(usize, i64, f64)>) {
    use prost::Message;
    use stratus_proto::prometheus as pb;
    let mut out = Vec::with_capacity(series);
    let mut expect = Vec::new();
    for s in 0..series {
        let samples = (0..per_push)
            .map(|k| {
                let (timestamp, value) = (t0 + seq * per_push + k, (seq * 100 + k) as f64);
                expect.push((s, timestamp, value));
                pb::Sample { value, timestamp }
            })
            .collect();
        let label = |name: &str, value: String| pb::Label {
            name: name.into(),
            value,
        };
        out.push(pb::TimeSeries {
            labels: vec![label("__name__", name.into()), label("s", s.to_string())],
            samples,
            ..Default::default()
        });
    }
    let body = pb::WriteRequest {
        timeseries: out,
        ..Default::default()
    }
    .encode_to_vec();
    let body = snap::raw::Encoder::new().compress_vec(&body).unwrap();
    (body, expect)
}

/// An instant query at the current time; asserts a 200 answer.
pub(crate) async fn query_now(c: &reqwest::Client, base: &str, q: &str) -> serde_json::Value {
    let r = c
        .get(format!("{base}/api/v1/query"))
        .query(&[
            ("query", q),
            ("time", &(now_ms() as f64 / 1000.0).to_string()),
        ])
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let st = r.status();
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(st, 200, "{q}: {body}");
    body
}
