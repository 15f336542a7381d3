//! The Stratus HTTP service: the Prometheus-compatible front door.
//!
//! This crate turns HTTP requests into calls on the storage engine
//! ([`stratus_tsdb::Tenants`]) and back:
//!
//! - remote write 1.0 and 2.0 (`/api/v1/push` and aliases): decoding and
//!   validation are pure functions ([`decode_v1`], [`decode_v2`],
//!   [`decompress_snappy`]) that the fuzz targets call too;
//! - the PromQL endpoints `/api/v1/query` and `/api/v1/query_range`
//!   (evaluated by `stratus-promql` on the blocking pool, answered in
//!   Prometheus' exact JSON encoding, see [`format_value`]);
//! - the metadata read endpoints of the Prometheus HTTP API v1 (series,
//!   label names, label values, build info) at the root and under
//!   `/prometheus` and `/api/prom`;
//! - `/ready`, `/health` and `/metrics` (the service's own metrics).
//!
//! The tenant of a request comes from the auth mode ([`AuthMode`]): one
//! `default` tenant, or the `X-Scope-OrgID` header. [`serve`] runs it all on
//! a given listener until a shutdown future resolves, so tests run the real
//! server in-process on port 0.

mod admin;
mod auth;
mod config;
mod error;
mod limits;
mod metrics;
mod query;
mod read;
mod remote_write;
mod server;

pub use config::{AuthMode, ServerConfig};
pub use error::{Error, Result};
pub use query::{format_value, parse_duration};
pub use read::{parse_selector, parse_time, unescape_label_name};
pub use remote_write::{
    BatchSeries, DEFAULT_MAX_COMPRESSED_BYTES, DEFAULT_MAX_DECOMPRESSED_BYTES, DecodeError,
    RwVersion, WriteBatch, decode, decode_v1, decode_v2, decompress_snappy, fuzz_remote_write_v1,
    fuzz_remote_write_v2,
};
pub use server::serve;
