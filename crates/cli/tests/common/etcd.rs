//! A throwaway single-node etcd (`/usr/bin/etcd`, Debian `etcd-server`)
//! on free loopback ports, for tests of the hash ring in etcd. Killed on
//! drop.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running etcd and its client URL.
pub(crate) struct Etcd {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub(crate) url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Etcd {
    /// Starts etcd and waits (at most 10 s) until `/health` answers.
    pub(crate) async fn start(client: &reqwest::Client) -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let child = Command::new("/usr/bin/etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("etcd").display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn /usr/bin/etcd (Debian package etcd-server)");
        let etcd = Etcd {
            child,
            url,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = client
                .get(format!("{}/health", etcd.url))
                .timeout(Duration::from_millis(500))
                .send()
                .await;
            if let Ok(r) = r
                && r.status().is_success()
            {
                return etcd;
            }
            assert!(Instant::now() < deadline, "etcd did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
