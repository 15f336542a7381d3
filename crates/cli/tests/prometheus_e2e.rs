//! The product as a user meets it: the real `stratus` binary in its default
//! token mode, the real Prometheus 2.42 scraping Stratus' own `/metrics`
//! and remote-writing them with the `default` tenant's token, `promtool`
//! reading them back with the token in the URL (the Frankenstein form
//! `http://user:TOKEN@host:port`), and a second Prometheus reading them
//! through `remote_read` with the token.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{free_port, spawn_stratus};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_prometheus(dir: &Path, config: &str) -> (Killed, String) {
    std::fs::create_dir_all(dir).unwrap();
    let port = free_port();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, config).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus (Debian package `prometheus`; scripts/test installs it)");
    (Killed(child), format!("http://127.0.0.1:{port}"))
}

fn promtool(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("run promtool (Debian package `prometheus`)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Retries `f` until it returns Some, for at most `secs` seconds.
fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn prometheus_writes_with_token_promtool_and_remote_read_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("stratus");
    let stratus = spawn_stratus(&data, &[]); // default: --auth=token
    let token_file = data.join("tokens/default.token");
    let token = std::fs::read_to_string(&token_file)
        .expect("first start writes tokens/default.token")
        .trim()
        .to_string();
    let addr = &stratus.addr;

    // Prometheus scrapes Stratus and remote-writes to it with the token.
    let (_writer, _) = start_prometheus(
        &dir.path().join("writer"),
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: stratus\n    static_configs:\n      - targets: ['{addr}']\nremote_write:\n  - url: http://{addr}/api/v1/push\n    basic_auth:\n      username: prometheus\n      password_file: {}\n    queue_config:\n      batch_send_deadline: 1s\n",
            token_file.display()
        ),
    );
    let with_token = format!("http://tenant:{token}@{addr}");
    eventually(60, "up{job=\"stratus\"} through promtool", || {
        let (ok, out, _) = promtool(&["query", "instant", &with_token, "up{job=\"stratus\"}"]);
        (ok && out.contains("=> 1 @")).then_some(())
    });

    // Range, series and labels with the token in the URL.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (ok, out, err) = promtool(&[
        "query",
        "range",
        "--start",
        &(now - 120).to_string(),
        "--end",
        // A little ahead: the only sample may be newer than `now` floored.
        &(now + 5).to_string(),
        "--step",
        "1s",
        &with_token,
        "up{job=\"stratus\"}",
    ]);
    assert!(
        ok && out.contains("job=\"stratus\"") && out.contains("1 @["),
        "{out}{err}"
    );
    let (ok, out, err) = promtool(&["query", "series", "--match", "up", &with_token]);
    assert!(ok && out.contains("job=\"stratus\""), "{out}{err}");
    let (ok, out, err) = promtool(&["query", "labels", &with_token, "job"]);
    assert!(
        ok && out.lines().any(|l| l.trim() == "stratus"),
        "{out}{err}"
    );

    // A wrong token is refused.
    let (ok, out, err) = promtool(&[
        "query",
        "instant",
        &format!("http://tenant:stratus_wrong@{addr}"),
        "up",
    ]);
    assert!(!ok, "wrong token accepted: {out}");
    assert!(err.contains("401") || out.contains("401"), "{out}{err}");

    // A second Prometheus, scraping nothing, reads it by remote_read.
    let (_reader, reader) = start_prometheus(
        &dir.path().join("reader"),
        &format!(
            "global:\n  scrape_interval: 1h\nscrape_configs: []\nremote_read:\n  - url: http://{addr}/api/v1/read\n    read_recent: true\n    basic_auth:\n      username: prometheus\n      password: {token}\n"
        ),
    );
    eventually(60, "up{job=\"stratus\"} through remote_read", || {
        let (ok, out, _) = promtool(&["query", "instant", &reader, "up{job=\"stratus\"}"]);
        (ok && out.contains("=> 1 @")).then_some(())
    });
}
