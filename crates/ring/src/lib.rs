//! Stratus hash ring: which instances own which series.
//!
//! Every ingester (later also store and compactor) is a member of a named
//! ring. A member holds a set of `u32` *tokens*; a token owns the range of
//! the 32-bit key space from the previous token (exclusive) up to itself.
//! A series' key is [`shard_key`]`(tenant, labels)`; its replicas are the
//! owner of the first token at or after the key and the next distinct
//! instances clockwise (in distinct zones when zones are set), up to the
//! replication factor (default 3).
//!
//! # Pieces
//!
//! - [`Kv`] — the consistent store the ring lives in: versioned `get`,
//!   compare-and-swap `put`/`delete` ([`Precondition`], [`CasOutcome`]),
//!   `list` by prefix and `watch` by prefix. [`MemKv`] for one process and
//!   tests, [`EtcdKv`] for a cluster.
//! - [`InstanceDesc`] — one member as stored: id, gRPC and HTTP address,
//!   zone, [`InstanceState`] (JOINING → ACTIVE → LEAVING), tokens,
//!   registration time and last heartbeat. One key per instance,
//!   `/stratus/rings/<ring>/<id>`, JSON with a format version (see
//!   [`desc`]).
//! - [`Lifecycler`] — a member's side: registers with balanced tokens
//!   (persisted in a token file so restarts keep them), heartbeats by
//!   compare-and-swap, leaves and unregisters on graceful shutdown.
//! - [`Ring`] — a client's side: follows the ring through a watch and
//!   answers [`RingSnapshot::get`]`(key, op)` with a [`ReplicationSet`]
//!   (healthy instances plus how many may fail) and
//!   [`RingSnapshot::all_healthy`] for queriers.
//! - [`http::router`] — the `/ring` status page (HTML or JSON, "forget").
//! - [`HaTracker`] — the elected replica of each Prometheus HA pair per
//!   tenant, kept in the same store (`/stratus/ha/<tenant>/<cluster>`,
//!   see [`ha`]).
//!
//! # Use
//!
//! ```no_run
//! # async fn demo() -> stratus_ring::Result<()> {
//! use std::sync::Arc;
//! use stratus_ring::*;
//!
//! let kv: Arc<dyn Kv> = Arc::new(EtcdKv::connect(&EtcdConfig::new(["http://127.0.0.1:2379"])).await?);
//! // On an ingester:
//! let mut cfg = LifecyclerConfig::new("ingester", "ingester-1", "10.0.0.1:9095");
//! cfg.tokens_file = Some("/data/ring-tokens.json".into());
//! let lc = Lifecycler::join(kv.clone(), cfg).await?; // JOINING
//! // ... replay the WAL ...
//! lc.activate().await?; // ACTIVE
//! // On a distributor:
//! let ring = Ring::start(kv, RingConfig::new("ingester")).await?;
//! let snap = ring.snapshot(); // once per request
//! let labels = stratus_model::Labels::from_pairs([("__name__", "up")]);
//! let set = snap.get(shard_key("tenant-1", &labels), Operation::Write)?;
//! // send to set.instances; succeed when set.min_success() of them did.
//! // Graceful shutdown of the ingester:
//! lc.leave().await?; /* flush */ lc.unregister().await?;
//! # Ok(()) }
//! ```
//!
//! Health and quorum rules are those of Cortex/Mimir; see [`ring`](mod@ring).

pub mod desc;
pub mod error;
pub mod ha;
pub mod http;
pub mod kv;
pub mod lifecycler;
pub mod ring;
pub mod shard;
pub mod tokens;

pub use desc::{InstanceDesc, InstanceState, instance_key, ring_prefix};
pub use error::{Error, Result};
pub use ha::{HaOutcome, HaTracker, HaTrackerConfig, ReplicaDesc, ha_key};
#[cfg(feature = "etcd")]
pub use kv::etcd::{EtcdConfig, EtcdKv};
#[cfg(feature = "etcd")]
pub use kv::etcd_server::EtcdServer;
pub use kv::mem::MemKv;
pub use kv::{CasOutcome, Kv, Listing, Precondition, Versioned, WatchEvent, WatchStream};
pub use lifecycler::{Lifecycler, LifecyclerConfig};
pub use ring::{Operation, ReplicationSet, Ring, RingConfig, RingSnapshot};
pub use shard::{shard_key, shard_key_from_hash, shard_key_pairs};
