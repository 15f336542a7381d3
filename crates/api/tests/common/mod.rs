//! Shared by the API integration tests: an in-process server on a loopback
//! port and builders for remote-write payloads.
#![allow(dead_code)]

pub(crate) mod prometheus;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use stratus_api::{AuthMode, ServerConfig, serve};
use stratus_proto::prometheus as pb;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A running server; each test file adds its own request helpers.
pub(crate) struct Server {
    pub(crate) base: String,
    pub(crate) stop: Option<oneshot::Sender<()>>,
    pub(crate) handle: tokio::task::JoinHandle<stratus_api::Result<()>>,
    pub(crate) client: reqwest::Client,
}

/// Starts a server with `cfg` on 127.0.0.1 and a free port.
pub(crate) async fn start_with(cfg: ServerConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(serve(cfg, listener, async move {
        let _ = rx.await;
    }));
    Server {
        base: format!("http://{addr}"),
        stop: Some(tx),
        handle,
        client: http_client(),
    }
}

/// Starts a server on `dir` with default settings and `auth`.
pub(crate) async fn start(dir: &Path, auth: AuthMode) -> Server {
    start_with(ServerConfig {
        data_dir: dir.to_path_buf(),
        auth,
        ..ServerConfig::default()
    })
    .await
}

impl Server {
    /// Graceful shutdown; fails the test if the server returned an error.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.handle.await.unwrap().unwrap();
    }
}

/// A reqwest client. In a workspace build reqwest carries the agent's
/// `rustls-no-provider` feature, so rustls' `ring` provider must be the
/// process default before any client is built.
pub(crate) fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Snappy block compression, as remote write uses.
pub(crate) fn snappy(b: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(b).unwrap()
}

/// Wall-clock time in ms.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A remote-write 1.0 series.
pub(crate) fn ts(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> pb::TimeSeries {
    pb::TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| pb::Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|&(t, v)| pb::Sample {
                value: v,
                timestamp: t,
            })
            .collect(),
        ..Default::default()
    }
}
