//! The server's command line: every [`ServerConfig`] option as a flag and
//! an environment variable, plus the YAML config file they override.
//!
//! Naming rule, so no table is needed: the YAML key `query_timeout` is the
//! flag `--query-timeout` and the variable `STRATUS_QUERY_TIMEOUT`.
//! Precedence, last wins: built-in defaults, the config file
//! (`--config.file`), environment variables, flags. Flags left unset do not
//! override the file, which is why every field here is an `Option`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::ValueEnum;
use stratus_api::{AuthMode, RingStore, ServerConfig};
use stratus_objstore::{BucketLookup, Secret, StorageBackend};

/// How requests are assigned to tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Auth {
    /// No authentication: everything goes to the tenant `default`.
    None,
    /// Tenant id from the `X-Scope-OrgID` header (behind a trusted gateway).
    Header,
    /// Tokens mapped to tenants.
    Token,
}

impl From<Auth> for AuthMode {
    fn from(a: Auth) -> Self {
        match a {
            Auth::None => AuthMode::None,
            Auth::Header => AuthMode::Header,
            Auth::Token => AuthMode::Token,
        }
    }
}

/// Where blocks are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Backend {
    /// `<data-dir>/blocks` on local disk.
    Filesystem,
    /// An S3-compatible bucket (the `--s3.*` settings).
    S3,
}

impl From<Backend> for StorageBackend {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Filesystem => StorageBackend::Filesystem,
            Backend::S3 => StorageBackend::S3,
        }
    }
}

/// How the S3 bucket is addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Lookup {
    /// `endpoint/bucket/key`.
    Path,
    /// `bucket.endpoint/key`.
    VirtualHosted,
}

impl From<Lookup> for BucketLookup {
    fn from(l: Lookup) -> Self {
        match l {
            Lookup::Path => BucketLookup::Path,
            Lookup::VirtualHosted => BucketLookup::VirtualHosted,
        }
    }
}

/// Where the tenant registry lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RegistryStoreArg {
    /// <data-dir>/registry.json (this process only).
    File,
    /// etcd at --etcd.endpoints (shared by the cluster).
    Etcd,
}

impl From<RegistryStoreArg> for stratus_api::RegistryStore {
    fn from(s: RegistryStoreArg) -> Self {
        match s {
            RegistryStoreArg::File => stratus_api::RegistryStore::File,
            RegistryStoreArg::Etcd => stratus_api::RegistryStore::Etcd,
        }
    }
}

/// Where the hash ring lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RingStoreArg {
    /// etcd at --etcd.endpoints.
    Etcd,
    /// In memory (one process).
    Memory,
}

impl From<RingStoreArg> for RingStore {
    fn from(s: RingStoreArg) -> Self {
        match s {
            RingStoreArg::Etcd => RingStore::Etcd,
            RingStoreArg::Memory => RingStore::Memory,
        }
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_limits(s: &str) -> Result<stratus_tenancy::Limits, String> {
    let l: stratus_tenancy::Limits = serde_json::from_str(s).map_err(|e| e.to_string())?;
    l.validate()?;
    Ok(l)
}

/// Like [`duration`], but `0` or `off` means "keep forever".
fn retention(s: &str) -> Result<Duration, String> {
    if s == "0" || s.eq_ignore_ascii_case("off") {
        return Ok(Duration::ZERO);
    }
    duration(s)
}

#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ServerArgs {
    /// YAML config file (keys as printed by --print-config); environment
    /// variables and flags override it.
    #[arg(long = "config.file", env = "STRATUS_CONFIG_FILE")]
    pub(crate) config_file: Option<PathBuf>,

    /// Print the effective config as YAML and exit.
    #[arg(long)]
    pub(crate) print_config: bool,

    /// Directory for all data (WALs and blocks) [default: ./data].
    #[arg(long, env = "STRATUS_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// Address (host:port) to listen on for HTTP [default: 0.0.0.0:9009].
    #[arg(long, env = "STRATUS_LISTEN")]
    pub(crate) listen: Option<String>,

    /// How requests are assigned to tenants.
    #[arg(long, env = "STRATUS_AUTH", value_enum)]
    pub(crate) auth: Option<Auth>,

    /// Samples up to this far behind a series' newest sample are still
    /// accepted (out of order) [default: 1h].
    #[arg(long, alias = "ingester.out-of-order-window", env = "STRATUS_OUT_OF_ORDER_WINDOW", value_parser = duration)]
    pub(crate) out_of_order_window: Option<Duration>,

    /// Delete blocks older than this (e.g. 15d); 0 keeps data forever
    /// [default: forever].
    #[arg(long, env = "STRATUS_RETENTION", value_parser = retention)]
    pub(crate) retention: Option<Duration>,

    /// Period of the maintenance loop: block cuts, compaction, retention
    /// [default: 5s].
    #[arg(long, env = "STRATUS_MAINTAIN_INTERVAL", value_parser = duration)]
    pub(crate) maintain_interval: Option<Duration>,

    /// Close a tenant's database after this long unused [default: 1h].
    #[arg(long, env = "STRATUS_IDLE_CLOSE", value_parser = duration)]
    pub(crate) idle_close: Option<Duration>,

    /// Largest accepted compressed remote-write body, bytes [default: 64 MiB].
    #[arg(long, env = "STRATUS_MAX_COMPRESSED_BYTES")]
    pub(crate) max_compressed_bytes: Option<usize>,

    /// Largest accepted decompressed remote-write body, bytes
    /// [default: 512 MiB].
    #[arg(long, env = "STRATUS_MAX_DECOMPRESSED_BYTES")]
    pub(crate) max_decompressed_bytes: Option<usize>,

    /// Largest accepted form body of read endpoints, bytes [default: 8 MiB].
    #[arg(long, env = "STRATUS_MAX_FORM_BYTES")]
    pub(crate) max_form_bytes: Option<usize>,

    /// Longest a PromQL query may run [default: 2m].
    #[arg(long, env = "STRATUS_QUERY_TIMEOUT", value_parser = duration)]
    pub(crate) query_timeout: Option<Duration>,

    /// Most samples one PromQL query may hold in memory [default: 50000000].
    #[arg(long, env = "STRATUS_QUERY_MAX_SAMPLES")]
    pub(crate) query_max_samples: Option<usize>,

    /// Threads one PromQL query may use for large selections; 0 = the
    /// available cores, at most 4; 1 = one thread [default: 0].
    #[arg(long, env = "STRATUS_QUERY_PARALLELISM")]
    pub(crate) query_parallelism: Option<usize>,

    /// Default lookback of instant selectors [default: 5m].
    #[arg(long, env = "STRATUS_LOOKBACK_DELTA", value_parser = duration)]
    pub(crate) lookback_delta: Option<Duration>,

    /// Step of subqueries written without one, as Prometheus'
    /// evaluation_interval [default: 1m].
    #[arg(long, env = "STRATUS_EVALUATION_INTERVAL", value_parser = duration)]
    pub(crate) evaluation_interval: Option<Duration>,

    /// Evaluate the experimental PromQL features (`info()`,
    /// `anchored`/`smoothed`), as Prometheus'
    /// `--enable-feature=promql-experimental-functions` [default: off].
    #[arg(long = "query.promql-experimental", env = "STRATUS_PROMQL_EXPERIMENTAL", num_args = 0..=1, default_missing_value = "true")]
    pub(crate) promql_experimental: Option<bool>,
    /// Use samples' start timestamps in `rate`/`increase`/`irate`/`resets`
    /// and `start_timestamp()`, as Prometheus'
    /// `--enable-feature=use-start-timestamps` [default: off].
    #[arg(long = "query.use-start-timestamps", env = "STRATUS_USE_START_TIMESTAMPS", num_args = 0..=1, default_missing_value = "true")]
    pub(crate) promql_use_start_timestamps: Option<bool>,

    /// Serve the admin endpoints (`/api/v1/admin/tsdb/delete_series`,
    /// `clean_tombstones`, `snapshot`), as Prometheus'
    /// `--web.enable-admin-api` [default: off].
    #[arg(long, alias = "web.enable-admin-api", env = "STRATUS_ENABLE_ADMIN_API", num_args = 0..=1, default_missing_value = "true")]
    pub(crate) enable_admin_api: Option<bool>,

    /// Most samples a remote-read request may return [default: 50000000].
    #[arg(long, env = "STRATUS_REMOTE_READ_SAMPLE_LIMIT")]
    pub(crate) remote_read_sample_limit: Option<usize>,

    /// Most series a remote-read request may return; 0 = no limit
    /// [default: 0].
    #[arg(long, env = "STRATUS_REMOTE_READ_SERIES_LIMIT")]
    pub(crate) remote_read_series_limit: Option<usize>,

    /// Largest frame of a streamed remote-read response, bytes
    /// [default: 1 MiB].
    #[arg(long, env = "STRATUS_REMOTE_READ_MAX_FRAME_BYTES")]
    pub(crate) remote_read_max_frame_bytes: Option<usize>,

    /// Inject a zero sample at a series' created timestamp (remote write
    /// 2.0 start timestamp, OTLP start time) when the series has no sample
    /// at or after it, as Prometheus' created-timestamp-zero-ingestion
    /// [default: off].
    #[arg(long, env = "STRATUS_CREATED_TIMESTAMP_ZERO_INGESTION", num_args = 0..=1, default_missing_value = "true")]
    pub(crate) created_timestamp_zero_ingestion: Option<bool>,

    /// Store samples' start timestamps (remote write 2.0, OTLP) for
    /// `--query.use-start-timestamps`, as Prometheus' `st-storage`
    /// feature [default: off].
    #[arg(long = "storage.start-timestamps", env = "STRATUS_STORE_START_TIMESTAMPS", num_args = 0..=1, default_missing_value = "true")]
    pub(crate) start_timestamp_storage: Option<bool>,

    /// Exemplars kept in memory per tenant; 0 disables exemplar storage
    /// [default: 100000].
    #[arg(long, env = "STRATUS_MAX_EXEMPLARS")]
    pub(crate) max_exemplars: Option<usize>,

    /// Default per-tenant limits as JSON, e.g.
    /// '{"ingestion_rate": 10000, "ingestion_burst_size": 200000,
    /// "max_series": 150000}' (a tenant's plan and overrides win; in the
    /// config file: the `limits` key).
    #[arg(long, env = "STRATUS_DEFAULT_LIMITS", value_parser = parse_limits)]
    pub(crate) default_limits: Option<stratus_tenancy::Limits>,

    /// Most writes handled at once; more get 503 + Retry-After
    /// [default: 512].
    #[arg(long, env = "STRATUS_MAX_INFLIGHT_WRITES")]
    pub(crate) max_inflight_writes: Option<usize>,

    /// Most PromQL queries evaluated at once [default: 20].
    #[arg(long, env = "STRATUS_MAX_CONCURRENT_QUERIES")]
    pub(crate) max_concurrent_queries: Option<usize>,

    /// Components to run: all (one process), distributor, ingester,
    /// querier, write (distributor + ingester), read (querier),
    /// store, compactor, query-frontend [default: all].
    #[arg(long, env = "STRATUS_TARGET")]
    pub(crate) target: Option<String>,

    /// Address (host:port) of the ingester's gRPC server
    /// [default: 0.0.0.0:9095].
    #[arg(long, env = "STRATUS_GRPC_LISTEN")]
    pub(crate) grpc_listen: Option<String>,

    /// gRPC addresses of all ingesters, comma-separated (static cluster
    /// membership of distributors and queriers).
    #[arg(
        long = "ingester.addrs",
        alias = "ingester-addrs",
        env = "STRATUS_INGESTER_ADDRS",
        value_delimiter = ','
    )]
    pub(crate) ingester_addrs: Option<Vec<String>>,

    /// Longest one gRPC call to an ingester may take [default: 5s].
    #[arg(long = "ingester.client-timeout", alias = "ingester-client-timeout", env = "STRATUS_INGESTER_CLIENT_TIMEOUT", value_parser = duration)]
    pub(crate) ingester_client_timeout: Option<Duration>,

    /// Where the hash ring of ingesters lives: etcd (--etcd.endpoints) or
    /// memory (one process) [default: memory for --target=all, etcd when
    /// --etcd.endpoints is set].
    #[arg(long = "ring.store", env = "STRATUS_RING_STORE", value_enum)]
    pub(crate) ring_store: Option<RingStoreArg>,

    /// etcd client URLs, comma-separated (e.g. http://10.0.0.1:2379).
    #[arg(
        long = "etcd.endpoints",
        env = "STRATUS_ETCD_ENDPOINTS",
        value_delimiter = ','
    )]
    pub(crate) etcd_endpoints: Option<Vec<String>>,

    /// Where tenants, plans, limits and token digests live: file
    /// (<data-dir>/registry.json) or etcd (--etcd.endpoints, shared by
    /// every node) [default: etcd for cluster targets with
    /// --etcd.endpoints, else file].
    #[arg(long = "registry.store", env = "STRATUS_REGISTRY_STORE", value_enum)]
    pub(crate) registry_store: Option<RegistryStoreArg>,

    /// File holding an admin token made by the operator (e.g. mounted from
    /// a Kubernetes Secret); its SHA-256 is registered at start.
    #[arg(long = "auth.admin-token-file", env = "STRATUS_AUTH_ADMIN_TOKEN_FILE")]
    pub(crate) admin_token_file: Option<PathBuf>,

    /// This ingester's id in the ring [default: <hostname>-<gRPC port>].
    #[arg(long = "ring.instance-id", env = "STRATUS_RING_INSTANCE_ID")]
    pub(crate) ring_instance_id: Option<String>,

    /// gRPC address (host:port) this ingester advertises in the ring
    /// [default: --grpc-listen, the hostname for 0.0.0.0].
    #[arg(long = "ring.instance-addr", env = "STRATUS_RING_INSTANCE_ADDR")]
    pub(crate) ring_instance_addr: Option<String>,

    /// Availability zone of this ingester; replicas go to distinct zones
    /// [default: none].
    #[arg(long = "ring.zone", env = "STRATUS_RING_ZONE")]
    pub(crate) ring_zone: Option<String>,

    /// Replicas per series [default: 3].
    #[arg(
        long = "ring.replication-factor",
        env = "STRATUS_RING_REPLICATION_FACTOR"
    )]
    pub(crate) ring_replication_factor: Option<usize>,

    /// How often an ingester heartbeats into the ring [default: 5s].
    #[arg(long = "ring.heartbeat-period", env = "STRATUS_RING_HEARTBEAT_PERIOD", value_parser = duration)]
    pub(crate) ring_heartbeat_period: Option<Duration>,

    /// An ingester without a heartbeat for this long is unhealthy
    /// [default: 1m].
    #[arg(long = "ring.heartbeat-timeout", env = "STRATUS_RING_HEARTBEAT_TIMEOUT", value_parser = duration)]
    pub(crate) ring_heartbeat_timeout: Option<Duration>,

    /// File keeping this ingester's ring tokens across restarts
    /// [default: <data-dir>/ring-tokens.json].
    #[arg(long = "ring.tokens-file", env = "STRATUS_RING_TOKENS_FILE")]
    pub(crate) ring_tokens_file: Option<PathBuf>,

    /// This ingester's id in the shared bucket: distinct per ingester,
    /// stable across restarts (required with --storage.backend=s3).
    #[arg(long = "ingester.id", env = "STRATUS_INGESTER_ID")]
    pub(crate) ingester_id: Option<String>,

    /// On graceful shutdown, cut every tenant's head into blocks and
    /// upload them before exiting (an ingester removed for good)
    /// [default: off].
    #[arg(long = "ingester.flush-on-shutdown", env = "STRATUS_INGESTER_FLUSH_ON_SHUTDOWN", num_args = 0..=1, default_missing_value = "true")]
    pub(crate) flush_on_shutdown: Option<bool>,

    /// gRPC addresses of the stores (history from the bucket) the querier
    /// reads, comma-separated.
    #[arg(
        long = "store.addrs",
        env = "STRATUS_STORE_ADDRS",
        value_delimiter = ','
    )]
    pub(crate) store_addrs: Option<Vec<String>>,

    /// With stores, ask ingesters only for ranges ending within this of
    /// now (0 = always) [default: 13h].
    #[arg(long = "querier.query-ingesters-within", env = "STRATUS_QUERY_INGESTERS_WITHIN", value_parser = duration)]
    pub(crate) query_ingesters_within: Option<Duration>,

    /// How often a store refreshes its block list from the bucket index
    /// [default: 1m].
    #[arg(long = "store.sync-interval", env = "STRATUS_STORE_SYNC_INTERVAL", value_parser = duration)]
    pub(crate) store_sync_interval: Option<Duration>,

    /// A store's in-memory cache of chunks read from the bucket, bytes;
    /// 0 disables [default: 256 MiB].
    #[arg(
        long = "store.chunk-cache-bytes",
        env = "STRATUS_STORE_CHUNK_CACHE_BYTES"
    )]
    pub(crate) store_chunk_cache_bytes: Option<u64>,

    /// A store's in-memory cache of series entries and postings lists read
    /// from block indexes in the bucket (next to each block's local index
    /// header), bytes; 0 disables [default: 128 MiB].
    #[arg(
        long = "store.index-cache-bytes",
        env = "STRATUS_STORE_INDEX_CACHE_BYTES"
    )]
    pub(crate) store_index_cache_bytes: Option<u64>,

    /// How often the compactor looks for blocks to merge [default: 1m].
    #[arg(long = "compactor.interval", env = "STRATUS_COMPACTOR_INTERVAL", value_parser = duration)]
    pub(crate) compactor_interval: Option<Duration>,

    /// The compactor's level ranges, ascending, comma-separated; each a
    /// multiple of the one before [default: 2h,12h,24h].
    #[arg(
        long = "compactor.block-ranges",
        env = "STRATUS_COMPACTOR_BLOCK_RANGES",
        value_delimiter = ',',
        value_parser = duration
    )]
    pub(crate) compactor_block_ranges: Option<Vec<Duration>>,

    /// The compactor merges a level window only once it ended this long
    /// ago [default: 4h].
    #[arg(long = "compactor.compaction-delay", env = "STRATUS_COMPACTOR_COMPACTION_DELAY", value_parser = duration)]
    pub(crate) compactor_compaction_delay: Option<Duration>,

    /// Blocks that ended more than this long ago are marked for deletion
    /// by the compactor (0 = keep forever; a tenant's retention limit in
    /// the registry overrides it) [default: 0].
    #[arg(long = "compactor.retention", env = "STRATUS_COMPACTOR_RETENTION", value_parser = retention)]
    pub(crate) compactor_retention: Option<Duration>,

    /// The compactor deletes a marked block's objects this long after
    /// marking it [default: 12h].
    #[arg(long = "compactor.deletion-delay", env = "STRATUS_COMPACTOR_DELETION_DELAY", value_parser = duration)]
    pub(crate) compactor_deletion_delay: Option<Duration>,

    /// HA tracker: least time between two writes of an elected replica's
    /// last-seen time to the KV store [default: 15s].
    #[arg(long = "ha-tracker.update-timeout", env = "STRATUS_HA_TRACKER_UPDATE_TIMEOUT", value_parser = duration)]
    pub(crate) ha_update_timeout: Option<Duration>,

    /// HA tracker: upper bound of the random jitter added to the update
    /// timeout [default: 5s].
    #[arg(long = "ha-tracker.update-timeout-jitter-max", env = "STRATUS_HA_TRACKER_UPDATE_TIMEOUT_JITTER_MAX", value_parser = duration)]
    pub(crate) ha_update_timeout_jitter_max: Option<Duration>,

    /// HA tracker: an elected replica unseen for this long is replaced by
    /// the next other replica that pushes [default: 30s].
    #[arg(long = "ha-tracker.failover-timeout", env = "STRATUS_HA_TRACKER_FAILOVER_TIMEOUT", value_parser = duration)]
    pub(crate) ha_failover_timeout: Option<Duration>,
    /// Where blocks are kept: filesystem (<data-dir>/blocks) or s3 (the
    /// --s3.* bucket; head and WAL stay in --data-dir)
    /// [default: filesystem].
    #[arg(long = "storage.backend", env = "STRATUS_STORAGE_BACKEND", value_enum)]
    pub(crate) storage_backend: Option<Backend>,

    /// S3 bucket name (required with --storage.backend=s3).
    #[arg(long = "s3.bucket", env = "STRATUS_S3_BUCKET")]
    pub(crate) s3_bucket: Option<String>,

    /// S3 endpoint URL, e.g. http://127.0.0.1:9000 [default: AWS].
    #[arg(long = "s3.endpoint", env = "STRATUS_S3_ENDPOINT")]
    pub(crate) s3_endpoint: Option<String>,

    /// S3 region used for signing [default: us-east-1].
    #[arg(long = "s3.region", env = "STRATUS_S3_REGION")]
    pub(crate) s3_region: Option<String>,

    /// S3 access key id [default: $AWS_ACCESS_KEY_ID].
    #[arg(long = "s3.access-key-id", env = "STRATUS_S3_ACCESS_KEY_ID")]
    pub(crate) s3_access_key_id: Option<String>,

    /// S3 secret access key (prefer the variable or the config file; never
    /// printed) [default: $AWS_SECRET_ACCESS_KEY].
    #[arg(
        long = "s3.secret-access-key",
        env = "STRATUS_S3_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub(crate) s3_secret_access_key: Option<String>,

    /// Path-style (endpoint/bucket) or virtual-hosted-style
    /// (bucket.endpoint) requests [default: path].
    #[arg(
        long = "s3.bucket-lookup",
        env = "STRATUS_S3_BUCKET_LOOKUP",
        value_enum
    )]
    pub(crate) s3_bucket_lookup: Option<Lookup>,

    /// Allow a plain http:// S3 endpoint [default: off].
    #[arg(long = "s3.allow-http", env = "STRATUS_S3_ALLOW_HTTP", num_args = 0..=1, default_missing_value = "true")]
    pub(crate) s3_allow_http: Option<bool>,

    /// Key prefix inside the bucket for everything Stratus stores
    /// [default: none].
    #[arg(long = "s3.prefix", env = "STRATUS_S3_PREFIX")]
    pub(crate) s3_prefix: Option<String>,

    /// Query-frontend: HTTP base URLs (or host:port) of the queriers to
    /// forward to, comma-separated; used round-robin.
    #[arg(
        long = "frontend.downstream-url",
        env = "STRATUS_FRONTEND_DOWNSTREAM_URL",
        value_delimiter = ','
    )]
    pub(crate) frontend_downstream_urls: Option<Vec<String>>,

    /// Query-frontend: split range queries at multiples of this (UTC);
    /// 0 disables splitting and caching [default: 24h].
    #[arg(long = "frontend.split-interval", env = "STRATUS_FRONTEND_SPLIT_INTERVAL", value_parser = duration)]
    pub(crate) frontend_split_interval: Option<Duration>,

    /// Query-frontend: round range query start/end down to the step
    /// [default: off].
    #[arg(long = "frontend.align-to-step", env = "STRATUS_FRONTEND_ALIGN_TO_STEP", num_args = 0..=1, default_missing_value = "true")]
    pub(crate) frontend_align_to_step: Option<bool>,

    /// Query-frontend: never cache results newer than this before now
    /// [default: 10m].
    #[arg(long = "frontend.max-cache-freshness", env = "STRATUS_FRONTEND_MAX_CACHE_FRESHNESS", value_parser = duration)]
    pub(crate) frontend_max_cache_freshness: Option<Duration>,

    /// Query-frontend: results cache budget in bytes; 0 disables
    /// [default: 256 MiB].
    #[arg(
        long = "frontend.cache-max-bytes",
        env = "STRATUS_FRONTEND_CACHE_MAX_BYTES"
    )]
    pub(crate) frontend_cache_max_bytes: Option<usize>,

    /// Query-frontend: most downstream requests queued per tenant (more
    /// get 429) [default: 100].
    #[arg(
        long = "frontend.max-outstanding-per-tenant",
        env = "STRATUS_FRONTEND_MAX_OUTSTANDING_PER_TENANT"
    )]
    pub(crate) frontend_max_outstanding_per_tenant: Option<usize>,

    /// Query-frontend: most downstream requests in flight (worker pool)
    /// [default: 16].
    #[arg(
        long = "frontend.max-concurrent",
        env = "STRATUS_FRONTEND_MAX_CONCURRENT"
    )]
    pub(crate) frontend_max_concurrent: Option<usize>,

    /// Query-frontend: most sub-queries of one query at once [default: 8].
    #[arg(
        long = "frontend.split-concurrency",
        env = "STRATUS_FRONTEND_SPLIT_CONCURRENCY"
    )]
    pub(crate) frontend_split_concurrency: Option<usize>,

    /// Query-frontend: retries after a connection error or 5xx, each to
    /// the next downstream [default: 2].
    #[arg(long = "frontend.max-retries", env = "STRATUS_FRONTEND_MAX_RETRIES")]
    pub(crate) frontend_max_retries: Option<usize>,

    /// Query-frontend: longest one downstream request may take
    /// [default: 2m5s].
    #[arg(long = "frontend.downstream-timeout", env = "STRATUS_FRONTEND_DOWNSTREAM_TIMEOUT", value_parser = duration)]
    pub(crate) frontend_downstream_timeout: Option<Duration>,
}

impl ServerArgs {
    /// The effective config: defaults, then the file, then env and flags.
    pub(crate) fn resolve(&self) -> anyhow::Result<ServerConfig> {
        let mut c = match &self.config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                ServerConfig::from_yaml(&text)
                    .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))?
            }
            None => ServerConfig::default(),
        };
        fn set<T: Clone>(slot: &mut T, v: &Option<T>) {
            if let Some(v) = v {
                *slot = v.clone();
            }
        }
        set(&mut c.data_dir, &self.data_dir);
        set(&mut c.listen, &self.listen);
        if let Some(a) = self.auth {
            c.auth = a.into();
        }
        set(&mut c.out_of_order_window, &self.out_of_order_window);
        if let Some(r) = self.retention {
            c.retention = (!r.is_zero()).then_some(r);
        }
        set(&mut c.maintain_interval, &self.maintain_interval);
        set(&mut c.idle_close, &self.idle_close);
        set(&mut c.max_compressed_bytes, &self.max_compressed_bytes);
        set(&mut c.max_decompressed_bytes, &self.max_decompressed_bytes);
        set(&mut c.max_form_bytes, &self.max_form_bytes);
        set(&mut c.query_timeout, &self.query_timeout);
        set(&mut c.query_max_samples, &self.query_max_samples);
        set(&mut c.query_parallelism, &self.query_parallelism);
        set(&mut c.lookback_delta, &self.lookback_delta);
        set(&mut c.max_concurrent_queries, &self.max_concurrent_queries);
        set(&mut c.evaluation_interval, &self.evaluation_interval);
        set(&mut c.promql_experimental, &self.promql_experimental);
        set(
            &mut c.promql_use_start_timestamps,
            &self.promql_use_start_timestamps,
        );
        set(&mut c.enable_admin_api, &self.enable_admin_api);
        set(
            &mut c.created_timestamp_zero_ingestion,
            &self.created_timestamp_zero_ingestion,
        );
        set(
            &mut c.start_timestamp_storage,
            &self.start_timestamp_storage,
        );
        set(&mut c.max_exemplars, &self.max_exemplars);
        set(&mut c.flush_on_shutdown, &self.flush_on_shutdown);
        set(&mut c.max_inflight_writes, &self.max_inflight_writes);
        set(&mut c.limits, &self.default_limits);
        c.limits
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid limits: {e}"))?;
        set(
            &mut c.remote_read_sample_limit,
            &self.remote_read_sample_limit,
        );
        set(
            &mut c.remote_read_series_limit,
            &self.remote_read_series_limit,
        );
        set(
            &mut c.remote_read_max_frame_bytes,
            &self.remote_read_max_frame_bytes,
        );
        set(&mut c.target, &self.target);
        set(&mut c.grpc_listen, &self.grpc_listen);
        set(&mut c.ingester_addrs, &self.ingester_addrs);
        set(
            &mut c.ingester_client_timeout,
            &self.ingester_client_timeout,
        );
        if let Some(st) = self.ring_store {
            c.ring.store = Some(st.into());
        }
        set(&mut c.etcd.endpoints, &self.etcd_endpoints);
        if let Some(st) = self.registry_store {
            c.registry.store = Some(st.into());
        }
        if let Some(f) = &self.admin_token_file {
            c.registry.admin_token_file = Some(f.clone());
        }
        set(&mut c.ring.instance_id, &self.ring_instance_id);
        set(&mut c.ring.instance_addr, &self.ring_instance_addr);
        set(&mut c.ring.zone, &self.ring_zone);
        set(
            &mut c.ring.replication_factor,
            &self.ring_replication_factor,
        );
        set(&mut c.ring.heartbeat_period, &self.ring_heartbeat_period);
        set(&mut c.ring.heartbeat_timeout, &self.ring_heartbeat_timeout);
        if let Some(f) = &self.ring_tokens_file {
            c.ring.tokens_file = Some(f.clone());
        }
        set(&mut c.ingester_id, &self.ingester_id);
        set(&mut c.store_addrs, &self.store_addrs);
        set(&mut c.query_ingesters_within, &self.query_ingesters_within);
        set(&mut c.store_sync_interval, &self.store_sync_interval);
        set(
            &mut c.store_chunk_cache_bytes,
            &self.store_chunk_cache_bytes,
        );
        set(
            &mut c.store_index_cache_bytes,
            &self.store_index_cache_bytes,
        );
        set(&mut c.compactor_interval, &self.compactor_interval);
        set(&mut c.compactor_block_ranges, &self.compactor_block_ranges);
        set(
            &mut c.compactor_compaction_delay,
            &self.compactor_compaction_delay,
        );
        set(&mut c.compactor_retention, &self.compactor_retention);
        set(
            &mut c.compactor_deletion_delay,
            &self.compactor_deletion_delay,
        );
        let f = &mut c.frontend;
        set(&mut f.downstream_urls, &self.frontend_downstream_urls);
        set(&mut f.split_interval, &self.frontend_split_interval);
        set(&mut f.align_to_step, &self.frontend_align_to_step);
        set(
            &mut f.max_cache_freshness,
            &self.frontend_max_cache_freshness,
        );
        set(&mut f.cache_max_bytes, &self.frontend_cache_max_bytes);
        set(
            &mut f.max_outstanding_per_tenant,
            &self.frontend_max_outstanding_per_tenant,
        );
        set(&mut f.max_concurrent, &self.frontend_max_concurrent);
        set(&mut f.split_concurrency, &self.frontend_split_concurrency);
        set(&mut f.max_retries, &self.frontend_max_retries);
        set(&mut f.downstream_timeout, &self.frontend_downstream_timeout);
        set(&mut c.ha_tracker.update_timeout, &self.ha_update_timeout);
        set(
            &mut c.ha_tracker.update_timeout_jitter_max,
            &self.ha_update_timeout_jitter_max,
        );
        set(
            &mut c.ha_tracker.failover_timeout,
            &self.ha_failover_timeout,
        );
        c.ha_tracker
            .tracker_config()
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        crate::cluster::validate(&c)?;
        if let Some(b) = self.storage_backend {
            c.storage.backend = b.into();
        }
        set(&mut c.s3.bucket, &self.s3_bucket);
        set(&mut c.s3.endpoint, &self.s3_endpoint);
        set(&mut c.s3.region, &self.s3_region);
        set(&mut c.s3.access_key_id, &self.s3_access_key_id);
        if let Some(k) = &self.s3_secret_access_key {
            c.s3.secret_access_key = Secret::new(k.clone());
        }
        if let Some(l) = self.s3_bucket_lookup {
            c.s3.bucket_lookup = l.into();
        }
        set(&mut c.s3.allow_http, &self.s3_allow_http);
        set(&mut c.s3.prefix, &self.s3_prefix);
        if c.storage.backend == StorageBackend::S3 {
            c.s3.validate()
                .map_err(|e| anyhow::anyhow!("invalid S3 settings: {e}"))?;
        }
        if c.maintain_interval.is_zero() {
            anyhow::bail!("maintain_interval must be positive");
        }
        if c.evaluation_interval.is_zero() {
            anyhow::bail!("evaluation_interval must be positive");
        }
        if c.max_inflight_writes == 0 {
            anyhow::bail!("max_inflight_writes must be at least 1");
        }
        if c.max_concurrent_queries == 0 {
            anyhow::bail!("max_concurrent_queries must be at least 1");
        }
        Ok(c)
    }
}
