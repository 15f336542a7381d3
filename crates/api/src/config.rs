//! Settings of the HTTP service.
//!
//! [`ServerConfig`] is the one description of a running server: the CLI
//! builds it from defaults, the YAML config file, environment variables
//! and flags (in that order of precedence, last wins), `--print-config`
//! prints it, and `/config` serves it. Its serde names are the YAML keys;
//! durations are written the humantime way (`1h`, `15d`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::remote_write::{DEFAULT_MAX_COMPRESSED_BYTES, DEFAULT_MAX_DECOMPRESSED_BYTES};

/// How the tenant of a request is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

/// Where blocks are kept (the `storage` section).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `filesystem` (blocks under `<data_dir>/blocks`, the default) or
    /// `s3` (blocks in the bucket of the `s3` section; the head, WAL and
    /// a block cache stay under `data_dir`).
    pub backend: stratus_objstore::StorageBackend,
}

/// The KV store holding the hash ring (`ring.store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RingStore {
    /// etcd at `etcd.endpoints` (a cluster of processes).
    Etcd,
    /// In memory (one process only).
    Memory,
}

/// The hash ring of ingesters (the `ring` section; cluster targets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RingSettings {
    /// Where the ring lives; unset: `memory` for `--target=all`, else
    /// `etcd` when `etcd.endpoints` is set (or the static
    /// `ingester_addrs` list when it is not).
    pub store: Option<RingStore>,
    /// This instance's id in the ring (default `<hostname>-<gRPC port>`).
    pub instance_id: String,
    /// The gRPC address (host:port) advertised to distributors and
    /// queriers (default: `grpc_listen`, with the hostname for an
    /// unspecified host).
    pub instance_addr: String,
    /// Availability zone (empty: none); replicas go to distinct zones.
    pub zone: String,
    /// Replicas per series (default 3).
    pub replication_factor: usize,
    /// How often an ingester heartbeats (default 5s).
    #[serde(with = "humantime_serde")]
    pub heartbeat_period: Duration,
    /// An instance without a heartbeat for this long is unhealthy
    /// (default 1m).
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// Where an ingester keeps its tokens across restarts (default
    /// `<data_dir>/ring-tokens.json`).
    pub tokens_file: Option<PathBuf>,
}

impl Default for RingSettings {
    fn default() -> Self {
        Self {
            store: None,
            instance_id: String::new(),
            instance_addr: String::new(),
            zone: String::new(),
            replication_factor: 3,
            heartbeat_period: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(60),
            tokens_file: None,
        }
    }
}

/// The etcd cluster (the `etcd` section).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdSettings {
    /// Client URLs, e.g. `http://10.0.0.1:2379`.
    pub endpoints: Vec<String>,
}

/// The query-frontend (the `frontend` section; `--target=query-frontend`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrontendSettings {
    /// Base URLs of the queriers (or any Prometheus-compatible API) the
    /// frontend forwards to, e.g. `http://10.0.0.5:9009`; `host:port`
    /// means `http://host:port`. Used round-robin.
    pub downstream_urls: Vec<String>,
    /// Range queries are split at multiples of this (UTC; default 24h;
    /// 0 disables splitting and the results cache).
    #[serde(with = "humantime_serde")]
    pub split_interval: Duration,
    /// Round start and end down to multiples of the step, as Mimir's
    /// `align_queries_with_step` (default off: exact times).
    pub align_to_step: bool,
    /// Results newer than this before now are never cached (default 10m).
    #[serde(with = "humantime_serde")]
    pub max_cache_freshness: Duration,
    /// Memory budget of the results cache in bytes (0 disables; default
    /// 256 MiB).
    pub cache_max_bytes: usize,
    /// Most downstream requests queued per tenant; more get 429
    /// (default 100).
    pub max_outstanding_per_tenant: usize,
    /// Most downstream requests in flight at once: the worker pool
    /// serving the per-tenant queues round-robin (default 16).
    pub max_concurrent: usize,
    /// Most sub-queries of one split query queued or running at once
    /// (default 8).
    pub split_concurrency: usize,
    /// Retries of a downstream request after a connection error or a 5xx,
    /// each to the next downstream (default 2).
    pub max_retries: usize,
    /// Longest one downstream request may take (default 2m5s).
    #[serde(with = "humantime_serde")]
    pub downstream_timeout: Duration,
}

impl Default for FrontendSettings {
    fn default() -> Self {
        Self {
            downstream_urls: Vec::new(),
            split_interval: Duration::from_secs(86_400),
            align_to_step: false,
            max_cache_freshness: Duration::from_secs(600),
            cache_max_bytes: 256 << 20,
            max_outstanding_per_tenant: 100,
            max_concurrent: 16,
            split_concurrency: 8,
            max_retries: 2,
            downstream_timeout: Duration::from_secs(125),
        }
    }
}

/// The HA tracker (the `ha_tracker` section): deduplication of
/// Prometheus HA pairs for tenants with `accept_ha_samples`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HaTrackerSettings {
    /// Least time between two writes of the elected replica's last-seen
    /// time to the KV store (default 15s).
    #[serde(with = "humantime_serde")]
    pub update_timeout: Duration,
    /// Upper bound of the random jitter added to `update_timeout` per
    /// process (default 5s).
    #[serde(with = "humantime_serde")]
    pub update_timeout_jitter_max: Duration,
    /// The elected replica unseen for this long is replaced by the next
    /// other replica that pushes (default 30s; must be longer than
    /// `update_timeout + update_timeout_jitter_max`).
    #[serde(with = "humantime_serde")]
    pub failover_timeout: Duration,
}

impl Default for HaTrackerSettings {
    fn default() -> Self {
        let d = stratus_ring::HaTrackerConfig::default();
        Self {
            update_timeout: d.update_timeout,
            update_timeout_jitter_max: d.update_timeout_jitter_max,
            failover_timeout: d.failover_timeout,
        }
    }
}

impl HaTrackerSettings {
    /// The tracker's configuration.
    pub fn tracker_config(&self) -> stratus_ring::HaTrackerConfig {
        let d = stratus_ring::HaTrackerConfig::default();
        stratus_ring::HaTrackerConfig {
            update_timeout: self.update_timeout,
            update_timeout_jitter_max: self.update_timeout_jitter_max,
            failover_timeout: self.failover_timeout,
            cleanup_after: d.cleanup_after.max(self.failover_timeout * 2),
        }
    }
}

/// Where the tenant registry lives (`registry.store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryStore {
    /// `<data_dir>/registry.json`: this process only.
    File,
    /// etcd at `etcd.endpoints`, shared by every node of a cluster.
    Etcd,
}

/// The tenant registry (the `registry` section).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySettings {
    /// Where tenants, plans, limits and token digests live; unset: `etcd`
    /// for cluster targets with `etcd.endpoints`, else `file`.
    pub store: Option<RegistryStore>,
    /// A file holding an admin token the operator made (e.g. a
    /// Kubernetes Secret); its digest is registered at start. With the
    /// etcd registry, the first node then creates no admin token of its
    /// own.
    pub admin_token_file: Option<PathBuf>,
}

/// Settings of [`crate::serve`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address (host:port) the CLI binds the HTTP listener to (default
    /// `0.0.0.0:9009`); [`crate::serve`] is handed a bound listener and
    /// only reports it.
    pub listen: String,
    /// Root of all data: tenant WALs under `tenants/`, blocks under
    /// `blocks/` (default `./data`).
    pub data_dir: PathBuf,
    /// How tenants are identified (default: tokens).
    pub auth: AuthMode,
    /// How far behind a series' newest sample an older one is still
    /// accepted (default 1h).
    #[serde(with = "humantime_serde")]
    pub out_of_order_window: Duration,
    /// Blocks older than this are deleted; `None` keeps data forever
    /// (the default).
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// Period of the maintenance loop (block cuts, compaction, retention,
    /// closing idle tenants; default 5s).
    #[serde(with = "humantime_serde")]
    pub maintain_interval: Duration,
    /// A tenant database unused for this long is closed (default 1h).
    #[serde(with = "humantime_serde")]
    pub idle_close: Duration,
    /// Largest accepted compressed remote-write body (default 64 MiB).
    pub max_compressed_bytes: usize,
    /// Largest accepted decompressed remote-write body (default 512 MiB).
    pub max_decompressed_bytes: usize,
    /// Largest accepted form body of read endpoints (default 8 MiB).
    pub max_form_bytes: usize,
    /// Longest a PromQL query may run; a request's `timeout` parameter
    /// can only shorten it (default 2m).
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Most samples one PromQL query may hold in memory (default 50M).
    pub query_max_samples: usize,
    /// Threads one PromQL query may use to evaluate large selections (range
    /// functions and instant selectors over many series) in chunks of
    /// series; 0 = the available cores, at most 4 (the default); 1 = one
    /// thread. Results do not depend on it.
    pub query_parallelism: usize,
    /// Default lookback of instant selectors; a request's
    /// `lookback_delta` overrides it (default 5m).
    #[serde(with = "humantime_serde")]
    pub lookback_delta: Duration,
    /// Step of subqueries written without one (`x[10m:]`), as Prometheus'
    /// `global.evaluation_interval` (default 1m).
    #[serde(with = "humantime_serde")]
    pub evaluation_interval: Duration,
    /// Evaluate Prometheus' experimental PromQL features (`info()`,
    /// `anchored`/`smoothed` selectors), as Prometheus'
    /// `--enable-feature=promql-experimental-functions` (default off).
    pub promql_experimental: bool,
    /// Use the samples' start timestamps in `rate`/`increase`/`irate`/
    /// `resets` and `start_timestamp()`, as Prometheus'
    /// `--enable-feature=use-start-timestamps` (default off).
    pub promql_use_start_timestamps: bool,
    /// Most PromQL queries evaluated at once; more wait for a slot (the
    /// wait counts against their timeout). Default 20, as Prometheus.
    pub max_concurrent_queries: usize,
    /// Most writes (remote write, OTLP) handled at once; more are answered
    /// 503 with `Retry-After` (overload; senders retry). Default 512.
    pub max_inflight_writes: usize,
    /// Most samples one remote-read request may return in a SAMPLES
    /// response (0 = no limit; default 50M, as Prometheus'
    /// `--storage.remote.read-sample-limit`).
    pub remote_read_sample_limit: usize,
    /// Most series one remote-read query may select (0 = no limit, the
    /// default).
    pub remote_read_series_limit: usize,
    /// Upper bound of one frame of a streamed remote-read response
    /// (default 1 MiB, as Prometheus'
    /// `--storage.remote.read-max-bytes-in-frame`).
    pub remote_read_max_frame_bytes: usize,
    /// Serve the admin endpoints (`/api/v1/admin/tsdb/...`); off by
    /// default, as Prometheus' `--web.enable-admin-api`.
    pub enable_admin_api: bool,
    /// Inject a zero sample at a series' created timestamp (remote write
    /// 2.0 `start_timestamp`, OTLP `start_time_unix_nano`) when the series
    /// has no sample at or after it yet, as Prometheus'
    /// `created-timestamp-zero-ingestion` feature. Costs one index lookup
    /// per series that carries a created timestamp. Default off.
    pub created_timestamp_zero_ingestion: bool,
    /// Store the samples' start timestamps (remote write 2.0
    /// `start_timestamp`, OTLP `start_time_unix_nano`) with them, for
    /// `promql_use_start_timestamps`, as Prometheus' `st-storage`
    /// feature. Independent of `created_timestamp_zero_ingestion`. Series
    /// given start timestamps use chunks with a start-timestamp column;
    /// the others pay nothing. Default off.
    pub start_timestamp_storage: bool,
    /// Exemplars kept in memory per tenant (0 disables; default 100k).
    pub max_exemplars: usize,
    /// Default per-tenant limits; a tenant's plan and own overrides in the
    /// registry take precedence. Unset fields fall back to the settings
    /// above (out-of-order window, retention, query timeout and samples)
    /// or mean unlimited.
    pub limits: stratus_tenancy::Limits,
    /// Which components this process runs: `all` (the default: one
    /// process, local storage, no gRPC), `distributor`, `ingester`,
    /// `querier`, or the groups `write` (distributor + ingester) and `read`
    /// (querier).
    pub target: String,
    /// Address (host:port) of the ingester's gRPC server (targets
    /// `ingester` and `write`; default `0.0.0.0:9095`).
    pub grpc_listen: String,
    /// gRPC addresses (host:port) of every ingester, the static cluster
    /// membership of distributors and queriers (empty by default).
    pub ingester_addrs: Vec<String>,
    /// Longest one gRPC call to an ingester may take (default 5s).
    #[serde(with = "humantime_serde")]
    pub ingester_client_timeout: Duration,
    /// The hash ring of ingesters.
    pub ring: RingSettings,
    /// The etcd cluster the ring lives in.
    pub etcd: EtcdSettings,
    /// The tenant registry.
    pub registry: RegistrySettings,
    /// Where blocks are kept.
    pub storage: StorageConfig,
    /// The S3-compatible bucket used when `storage.backend` is `s3`
    /// (its secret is shown as `<secret>`).
    pub s3: stratus_objstore::S3Config,
    /// This ingester's id in the shared bucket (targets `ingester` and
    /// `write` with `storage.backend: s3`): stamped into its blocks'
    /// `meta.json` and naming its own bucket index. Distinct per ingester
    /// and stable across restarts; letters, digits, `.`, `_`, `-`.
    pub ingester_id: String,
    /// On graceful shutdown, cut every tenant's head into blocks and
    /// upload them before closing (for an ingester leaving for good;
    /// Mimir's flush on shutdown). Off: the head stays in the WAL on the
    /// data volume for the next start.
    pub flush_on_shutdown: bool,
    /// gRPC addresses (host:port) of the stores the querier reads
    /// history from (empty by default).
    pub store_addrs: Vec<String>,
    /// The querier asks ingesters only for ranges ending within this of
    /// now when stores are configured (Mimir's
    /// `querier.query-ingesters-within`; 0 = always; default 13h).
    #[serde(with = "humantime_serde")]
    pub query_ingesters_within: Duration,
    /// How often a store refreshes its block list from the bucket index
    /// (default 1m).
    #[serde(with = "humantime_serde")]
    pub store_sync_interval: Duration,
    /// A store's in-memory chunk cache budget in bytes (0 = off;
    /// default 256 MiB). Chunks are read from the bucket on demand.
    pub store_chunk_cache_bytes: u64,
    /// A store's in-memory cache of series entries and postings lists read
    /// from block indexes in the bucket, bytes (0 = off; default 128 MiB).
    pub store_index_cache_bytes: u64,
    /// How often the compactor looks for blocks to merge (default 1m).
    #[serde(with = "humantime_serde")]
    pub compactor_interval: Duration,
    /// The compactor's level ranges, ascending, each a multiple of the
    /// one before (default 2h, 12h, 24h; the first is the ingesters'
    /// block range; one range turns level compaction off).
    #[serde(with = "duration_list")]
    pub compactor_block_ranges: Vec<Duration>,
    /// The compactor merges a level window only once it ended this long
    /// ago (default 4h).
    #[serde(with = "humantime_serde")]
    pub compactor_compaction_delay: Duration,
    /// The compactor marks blocks that ended more than this long ago for
    /// deletion (0 = keep forever, the default); a tenant's `retention`
    /// limit in the compactor's registry overrides it.
    #[serde(with = "humantime_serde")]
    pub compactor_retention: Duration,
    /// The compactor deletes a marked block's objects this long after
    /// marking it (default 12h).
    #[serde(with = "humantime_serde")]
    pub compactor_deletion_delay: Duration,
    /// The query-frontend (`--target=query-frontend`).
    pub frontend: FrontendSettings,
    /// Deduplication of Prometheus HA pairs.
    pub ha_tracker: HaTrackerSettings,
}

/// A list of durations as human-readable strings (`["2h", "12h"]`).
mod duration_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            v.iter()
                .map(|d| humantime_serde::re::humantime::format_duration(*d).to_string()),
        )
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let v: Vec<humantime_serde::Serde<Duration>> = Vec::deserialize(d)?;
        Ok(v.into_iter()
            .map(humantime_serde::Serde::into_inner)
            .collect())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9009".to_string(),
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
            query_parallelism: 0,
            lookback_delta: Duration::from_secs(300),
            evaluation_interval: Duration::from_secs(60),
            promql_experimental: false,
            promql_use_start_timestamps: false,
            max_concurrent_queries: 20,
            max_inflight_writes: 512,
            remote_read_sample_limit: 50_000_000,
            remote_read_series_limit: 0,
            remote_read_max_frame_bytes: 1 << 20,
            enable_admin_api: false,
            created_timestamp_zero_ingestion: false,
            start_timestamp_storage: false,
            max_exemplars: stratus_tsdb::exemplars::DEFAULT_MAX_EXEMPLARS,
            limits: stratus_tenancy::Limits::default(),
            target: "all".to_string(),
            grpc_listen: "0.0.0.0:9095".to_string(),
            ingester_addrs: Vec::new(),
            ingester_client_timeout: Duration::from_secs(5),
            ring: RingSettings::default(),
            etcd: EtcdSettings::default(),
            registry: RegistrySettings::default(),
            storage: StorageConfig::default(),
            s3: stratus_objstore::S3Config::default(),
            ingester_id: String::new(),
            flush_on_shutdown: false,
            store_addrs: Vec::new(),
            query_ingesters_within: Duration::from_secs(13 * 3600),
            store_sync_interval: Duration::from_secs(60),
            store_chunk_cache_bytes: stratus_tsdb::DEFAULT_CHUNK_CACHE_BYTES,
            store_index_cache_bytes: stratus_tsdb::DEFAULT_INDEX_CACHE_BYTES,
            compactor_interval: Duration::from_secs(60),
            compactor_block_ranges: [2, 12, 24]
                .iter()
                .map(|h| Duration::from_secs(h * 3600))
                .collect(),
            compactor_compaction_delay: Duration::from_secs(4 * 3600),
            compactor_retention: Duration::ZERO,
            compactor_deletion_delay: Duration::from_secs(12 * 3600),
            frontend: FrontendSettings::default(),
            ha_tracker: HaTrackerSettings::default(),
        }
    }
}

impl ServerConfig {
    /// Parses a YAML config file's text. Keys left out keep their
    /// defaults; an unknown key or a bad value is an error naming the line.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
    }

    /// The config as YAML, as `--print-config` and `/config` show it.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_round_trip_and_errors() {
        let c = ServerConfig::default();
        let y = c.to_yaml();
        assert!(y.contains("out_of_order_window: 1h"), "{y}");
        let back = ServerConfig::from_yaml(&y).unwrap();
        assert_eq!(back.to_yaml(), y);
        let c = ServerConfig::from_yaml("auth: header\nretention: 15d\n").unwrap();
        assert_eq!(c.auth, AuthMode::Header);
        assert_eq!(c.retention, Some(Duration::from_secs(15 * 86400)));
        assert_eq!(c.query_timeout, Duration::from_secs(120));
        let e = ServerConfig::from_yaml("auth: header\nretension: 15d\n").unwrap_err();
        assert!(e.contains("retension") && e.contains("line 2"), "{e}");
        let e = ServerConfig::from_yaml("query_timeout: soon\n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        assert!(ServerConfig::from_yaml("").is_ok());
    }

    #[test]
    fn s3_section_and_redacted_secret() {
        let c = ServerConfig::from_yaml(
            "storage:\n  backend: s3\ns3:\n  bucket: blocks\n  endpoint: http://127.0.0.1:9000\n  allow_http: true\n  bucket_lookup: virtual-hosted\n  secret_access_key: hunter2\n",
        )
        .unwrap();
        assert_eq!(c.storage.backend, stratus_objstore::StorageBackend::S3);
        assert_eq!(c.s3.bucket, "blocks");
        assert_eq!(c.s3.secret_access_key.expose(), "hunter2");
        assert_eq!(
            c.s3.bucket_lookup,
            stratus_objstore::BucketLookup::VirtualHosted
        );
        let y = c.to_yaml();
        assert!(!y.contains("hunter2"), "{y}");
        assert!(y.contains("secret_access_key: <secret>"), "{y}");
        assert!(!format!("{c:?}").contains("hunter2"));
        let e = ServerConfig::from_yaml("s3:\n  bukket: x\n").unwrap_err();
        assert!(e.contains("bukket"), "{e}");
    }
}
