//! gRPC clients of ingesters: one lazily connected channel per address,
//! with per-call timeouts, shared by the distributor and the querier.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use stratus_proto::ingester::ingester_client::IngesterClient;
use tonic::transport::{Channel, Endpoint};

/// Settings of ingester clients.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Longest a call (push, query) may take before it counts as failed
    /// (default 5s).
    pub timeout: Duration,
    /// Longest a connection attempt may take (default 1s).
    pub connect_timeout: Duration,
    /// Largest message sent or received, bytes (default 256 MiB).
    pub max_message_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            max_message_bytes: 256 << 20,
        }
    }
}

/// The clients of every ingester seen so far.
#[derive(Debug)]
pub(crate) struct Clients {
    cfg: ClientConfig,
    map: Mutex<HashMap<String, IngesterClient<Channel>>>,
}

impl Clients {
    pub(crate) fn new(cfg: ClientConfig) -> Self {
        Self {
            cfg,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.cfg.timeout
    }

    /// The client of `addr` (`host:port`), connecting lazily: a dead
    /// ingester fails calls quickly and is reconnected when it is back.
    /// Must be called inside the Tokio runtime.
    pub(crate) fn get(&self, addr: &str) -> Result<IngesterClient<Channel>, tonic::Status> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let ep = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| {
                tonic::Status::invalid_argument(format!("ingester address {addr:?}: {e}"))
            })?
            .connect_timeout(self.cfg.connect_timeout)
            .timeout(self.cfg.timeout)
            .tcp_nodelay(true);
        let c = IngesterClient::new(ep.connect_lazy())
            .max_decoding_message_size(self.cfg.max_message_bytes)
            .max_encoding_message_size(self.cfg.max_message_bytes);
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}
