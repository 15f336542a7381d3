//! Settings of the HTTP service.

use std::path::PathBuf;
use std::time::Duration;

use crate::remote_write::{DEFAULT_MAX_COMPRESSED_BYTES, DEFAULT_MAX_DECOMPRESSED_BYTES};

/// How the tenant of a request is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// No authentication: every request belongs to the tenant `default`.
    None,
    /// The tenant id is taken from the `X-Scope-OrgID` header (behind a
    /// trusted gateway); a request without it gets 401.
    Header,
    /// Tokens mapped to tenants by the registry (`<data>/registry.json`);
    /// the token is the basic-auth password or a bearer token. The
    /// default.
    #[default]
    Token,
}

/// Settings of [`crate::serve`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Root of all data: tenant WALs under `tenants/`, blocks under
    /// `blocks/` (default `./data`).
    pub data_dir: PathBuf,
    /// How tenants are identified (default: tokens).
    pub auth: AuthMode,
    /// How far behind a series' newest sample an older one is still
    /// accepted (default 1h).
    pub out_of_order_window: Duration,
    /// Blocks older than this are deleted; `None` keeps data forever
    /// (the default).
    pub retention: Option<Duration>,
    /// Period of the maintenance loop (block cuts, compaction, retention,
    /// closing idle tenants; default 5s).
    pub maintain_interval: Duration,
    /// A tenant database unused for this long is closed (default 1h).
    pub idle_close: Duration,
    /// Largest accepted compressed remote-write body (default 64 MiB).
    pub max_compressed_bytes: usize,
    /// Largest accepted decompressed remote-write body (default 512 MiB).
    pub max_decompressed_bytes: usize,
    /// Largest accepted form body of read endpoints (default 8 MiB).
    pub max_form_bytes: usize,
    /// Longest a PromQL query may run; a request's `timeout` parameter
    /// can only shorten it (default 2m).
    pub query_timeout: Duration,
    /// Most samples one PromQL query may hold in memory (default 50M).
    pub query_max_samples: usize,
    /// Default lookback of instant selectors; a request's
    /// `lookback_delta` overrides it (default 5m).
    pub lookback_delta: Duration,
    /// Most PromQL queries evaluated at once; more wait for a slot (the
    /// wait counts against their timeout). Default 20, as Prometheus.
    pub max_concurrent_queries: usize,
    /// Default per-tenant limits; a tenant's plan and own overrides in the
    /// registry take precedence. Unset fields fall back to the settings
    /// above (out-of-order window, retention, query timeout and samples)
    /// or mean unlimited.
    pub limits: stratus_tenancy::Limits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            auth: AuthMode::Token,
            out_of_order_window: Duration::from_secs(3600),
            retention: None,
            maintain_interval: Duration::from_secs(5),
            idle_close: Duration::from_secs(3600),
            max_compressed_bytes: DEFAULT_MAX_COMPRESSED_BYTES,
            max_decompressed_bytes: DEFAULT_MAX_DECOMPRESSED_BYTES,
            max_form_bytes: 8 << 20,
            query_timeout: Duration::from_secs(120),
            query_max_samples: 50_000_000,
            lookback_delta: Duration::from_secs(300),
            max_concurrent_queries: 20,
            limits: stratus_tenancy::Limits::default(),
        }
    }
}
