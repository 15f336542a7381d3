//! A real Prometheus (`/usr/bin/prometheus`, Debian's `prometheus`
//! package) on a free loopback port, for the tests that compare Stratus
//! with it. Killed on drop.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The configuration of a Prometheus that scrapes nothing.
pub(crate) const NO_SCRAPES: &str = "global:\n  scrape_interval: 1h\nscrape_configs: []\n";

/// A running Prometheus and its base URL.
pub(crate) struct Prometheus {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Prometheus with `config` (written to `dir`) and `flags`, data
/// in `dir`, and waits (at most 10 s) until it is ready.
pub(crate) async fn start_prometheus(dir: &Path, config: &str, flags: &[&str]) -> Prometheus {
    let bin = "/usr/bin/prometheus";
    assert!(
        Path::new(bin).exists(),
        "{bin} is missing: scripts/test installs it (Debian package prometheus, see scripts/apt-packages.txt)"
    );
    let port = stratus_testkit::loopback_port();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, config).unwrap();
    let child = Command::new(bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = Prometheus {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = super::http_client();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{}/-/ready", p.base)).send().await
            && r.status().is_success()
        {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("Prometheus did not become ready");
}
