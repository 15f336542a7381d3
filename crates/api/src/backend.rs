//! The seam between the HTTP API and where data lives.
//!
//! By default the API writes to and reads from the local storage engine
//! ([`stratus_tsdb::Tenants`]). In cluster mode another component stands in:
//! a [`WriteBackend`] (the distributor: shards, replicates and waits for a
//! quorum of ingesters) takes decoded, validated and limited writes, and a
//! [`ReadBackend`] (the querier) hands out a [`Queryable`] per tenant that
//! PromQL and the metadata endpoints read through. [`Backends`] bundles the
//! choices for [`crate::serve_with`]; [`apply_batch`] is the local write
//! path an ingester runs, the same one the single process uses.

use std::fmt::Debug;
use std::sync::Arc;

use futures::future::BoxFuture;
use stratus_model::TenantId;
use stratus_tsdb::{AppendReport, Db, ExemplarReport, Queryable, Tenants};

use crate::remote_write::WriteBatch;

/// What a write stored and refused.
#[derive(Debug, Default)]
pub struct WriteOutcome {
    /// Samples stored and refused (refusals name their series).
    pub report: AppendReport,
    /// Exemplars stored and refused.
    pub exemplars: ExemplarReport,
}

/// Why a write failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailure {
    /// HTTP status to answer: 4xx for the client's fault (do not retry),
    /// 5xx when the sender should retry (e.g. no quorum of ingesters).
    pub status: u16,
    /// The answer's body (one line or more).
    pub message: String,
}

/// Takes decoded writes instead of the local storage engine.
pub trait WriteBackend: Send + Sync + Debug {
    /// Stores `batch` for `tenant`; resolves once it is durable (for a
    /// distributor: once a quorum of each series' replicas acknowledged).
    /// Created-timestamp zero injection is not applied by backends.
    fn write<'a>(
        &'a self,
        tenant: &'a TenantId,
        batch: &'a WriteBatch,
    ) -> BoxFuture<'a, Result<WriteOutcome, WriteFailure>>;
}

/// Serves reads instead of the local storage engine.
pub trait ReadBackend: Send + Sync + Debug {
    /// A view of `tenant`'s data. Its methods block (they are called on
    /// the blocking pool) and must be bounded in time.
    fn queryable(&self, tenant: &TenantId) -> Arc<dyn Queryable>;
}

/// Where [`crate::serve_with`] writes and reads; `None` = the local
/// storage engine.
#[derive(Debug, Default, Clone)]
pub struct Backends {
    /// The write path (remote write, OTLP).
    pub write: Option<Arc<dyn WriteBackend>>,
    /// The read path (PromQL, series, labels).
    pub read: Option<Arc<dyn ReadBackend>>,
    /// The local tenant databases to use instead of opening new ones (an
    /// ingester shares them with its gRPC server).
    pub tenants: Option<Arc<Tenants>>,
    /// Extra operator routes (e.g. the `/ring` page), served behind the
    /// same check as `/ingester/flush` (the admin token in token mode).
    pub operator_routes: Option<axum::Router>,
    /// A cluster component's own metrics, appended to `/metrics`.
    pub extra_metrics: Option<Arc<dyn ExtraMetrics>>,
    /// The KV store the HA tracker keeps elected replicas in (a cluster's
    /// distributors share etcd); `None`: an in-process store.
    pub ha_kv: Option<Arc<dyn stratus_ring::Kv>>,
    /// The tenant registry to use instead of `<data_dir>/registry.json`
    /// (a cluster's shared registry; bootstrapped by its owner).
    pub registry: Option<Arc<dyn stratus_tenancy::Registry>>,
    /// How many distributors share the ingestion rate limit now (Mimir's
    /// "global" strategy: each enforces `ingestion_rate / n`); `None`:
    /// this process enforces the whole limit.
    pub rate_limit_share: Option<Arc<dyn RateLimitShare>>,
}

/// Metrics a cluster component adds to `/metrics` (e.g. the compactor's).
pub trait ExtraMetrics: Send + Sync + Debug {
    /// OpenMetrics text of the metric families, without the `# EOF` line.
    fn encode(&self) -> String;
}

/// The number of distributors sharing per-tenant ingestion rate limits:
/// each enforces `ingestion_rate / n` (the burst size is not divided, as
/// in Cortex/Mimir: it must still admit the largest request).
pub trait RateLimitShare: Send + Sync + std::fmt::Debug {
    /// Healthy distributors now, this one included (at least 1).
    fn distributors(&self) -> usize;
}

/// Appends a decoded batch to a tenant database (blocking): the local
/// write path of the HTTP API — created-timestamp zeros (when `ct_zero`),
/// samples and histograms (WAL before return), exemplars, metadata.
pub fn apply_batch(
    db: &Db,
    batch: &WriteBatch,
    ct_zero: bool,
) -> stratus_tsdb::Result<WriteOutcome> {
    let a = crate::server::apply_batch(db, batch, ct_zero)?;
    Ok(WriteOutcome {
        report: a.report,
        exemplars: a.exemplars,
    })
}
