//! Stratus cluster mode: the components of the write and read paths as
//! separate processes talking gRPC (`stratus.ingester.v1`, see
//! `crates/proto/proto/stratus/ingester.proto`).
//!
//! - [`placement`]: which ingesters hold a series — the [`Placement`]
//!   trait, [`RingPlacement`] over the hash ring (`stratus_ring`, etcd)
//!   and [`StaticPlacement`], a
//!   consistent-hash ring over a fixed address list (RF = min(3, n),
//!   quorum `rf / 2 + 1`);
//! - [`IngesterService`]: the ingester's gRPC server over the local
//!   [`stratus_tsdb::Tenants`], acknowledging a push only once its WAL
//!   holds it (the HTTP write path's own validation and append code);
//! - [`Distributor`]: shards each series by a stable hash of tenant and
//!   labels, pushes every ingester its subset concurrently and succeeds on
//!   a quorum per series (the HTTP API's [`stratus_api::WriteBackend`]);
//! - [`Querier`]: a [`stratus_tsdb::Queryable`] over all ingesters with
//!   per-call timeouts, replicas merged and deduplicated (the HTTP API's
//!   [`stratus_api::ReadBackend`]); with store addresses it also reads
//!   the history in the bucket from the stores
//!   ([`IngesterService::store`] over a [`stratus_tsdb::BucketStore`]).
//!
//! - [`KvRegistry`]: the tenant registry (tenants, plans, limits, token
//!   digests) shared by every node through the ring's KV store (etcd),
//!   served from a watched in-memory copy; [`DistributorShare`]: how
//!   many distributors split the ingestion rate limits.
//!
//! The single-process mode does not use this crate: it keeps the direct
//! path from the HTTP API to the local engine.

mod client;
mod convert;
mod distributor;
mod error;
mod ingester;
mod metrics;
pub mod placement;
mod querier;
mod rate_share;
pub mod registry;
mod ring_placement;

pub use client::ClientConfig;
pub use distributor::Distributor;
pub use error::{Error, Result};
pub use ingester::IngesterService;
pub use metrics::GrpcMetrics;
pub use placement::{Instance, Placement, ReplicaSet, StaticPlacement, series_hash};
pub use querier::{Querier, TenantQuerier};
pub use rate_share::DistributorShare;
pub use registry::{KvBootstrapped, KvRegistry, REGISTRY_PREFIX};
pub use ring_placement::RingPlacement;
