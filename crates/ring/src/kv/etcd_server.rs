//! A throwaway single-node etcd server process (`/usr/bin/etcd`, Debian's
//! `etcd-server`) on free loopback ports, for the integration tests of the
//! crates that keep state in etcd (ring, cluster registry, the cli's
//! cluster tests). It lives here, next to [`EtcdKv`], so those tests share
//! one way to start and wait for etcd; it is not used by the service.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::etcd::{EtcdConfig, EtcdKv};

/// A running etcd; killed and its data directory removed on drop.
#[derive(Debug)]
pub struct EtcdServer {
    child: Child,
    url: String,
    data_dir: PathBuf,
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

impl EtcdServer {
    /// Starts etcd on 127.0.0.1 and waits (at most 10 s) until a client
    /// connects. The error says what failed (the binary missing: install
    /// the Debian package `etcd-server`).
    pub async fn start() -> Result<EtcdServer, String> {
        let port = stratus_testkit::loopback_port();
        let peer_port = stratus_testkit::loopback_port();
        let url = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let data_dir =
            std::env::temp_dir().join(format!("stratus-etcd-{}-{port}", std::process::id()));
        let child = Command::new("/usr/bin/etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("spawn /usr/bin/etcd (install the Debian package etcd-server): {e}")
            })?;
        let server = EtcdServer {
            child,
            url,
            data_dir,
        };
        server.client().await?;
        Ok(server)
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new client, retried for at most 10 s while etcd starts.
    pub async fn client(&self) -> Result<EtcdKv, String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut cfg = EtcdConfig::new([self.url.clone()]);
        cfg.dial_timeout = Duration::from_millis(500);
        cfg.request_timeout = Duration::from_millis(2000);
        loop {
            match EtcdKv::connect(&cfg).await {
                Ok(kv) => return Ok(kv),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("etcd at {} did not come up: {e}", self.url));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}
