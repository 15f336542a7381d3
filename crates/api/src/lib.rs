//! The Stratus HTTP service: the Prometheus-compatible front door.
//!
//! This crate turns HTTP requests into calls on the storage engine
//! ([`stratus_tsdb::Tenants`]) and back:
//!
//! - remote write 1.0 and 2.0 (`/api/v1/push` and aliases): decoding and
//!   validation are pure functions ([`decode_v1`], [`decode_v2`],
//!   [`decompress_snappy`]) that the fuzz targets call too;
//! - OTLP/HTTP metrics (`/otlp/v1/metrics`, protobuf or JSON, gzip):
//!   [`decode_otlp`] and [`translate_otlp`] (Prometheus' default
//!   translation), fuzzed through [`fuzz_otlp`];
//! - metric metadata and exemplars (`/api/v1/metadata`,
//!   `/api/v1/query_exemplars`) from the tenant's in-memory stores;
//! - the PromQL endpoints `/api/v1/query` and `/api/v1/query_range`
//!   (evaluated by `stratus-promql` on the blocking pool, answered in
//!   Prometheus' exact JSON encoding, see [`format_value`]);
//! - the metadata read endpoints of the Prometheus HTTP API v1 (series,
//!   label names, label values, build info) at the root and under
//!   `/prometheus` and `/api/prom`;
//! - remote read (`/api/v1/read`, SAMPLES and streamed XOR chunks),
//!   `format_query`/`parse_query`, the status endpoints (per-tenant
//!   `/status/tsdb` cardinality), Prometheus' empty answers for targets,
//!   rules, alerts and alertmanagers, and the admin delete endpoints;
//! - `/ready`, `/health` and `/metrics` (the service's own metrics).
//!
//! The tenant of a request comes from the auth mode ([`AuthMode`]): one
//! `default` tenant, or the `X-Scope-OrgID` header. [`serve`] runs it all on
//! a given listener until a shutdown future resolves, so tests run the real
//! server in-process on port 0. [`serve_with`] takes [`Backends`]: in
//! cluster mode a distributor ([`WriteBackend`]) and a querier
//! ([`ReadBackend`]) stand in for the local storage engine.

mod admin;
pub mod append_pool;
mod auth;
mod backend;
mod config;
mod error;
mod expr_api;
mod ha;
mod limits;
mod meta;
mod metrics;
mod otlp;
mod query;
mod read;
mod remote_read;
mod remote_write;
mod rw_fast;
mod server;
mod status;

pub use backend::{
    Backends, ExtraMetrics, RateLimitShare, ReadBackend, WriteBackend, WriteFailure, WriteOutcome,
    apply_batch,
};
pub use config::{
    AuthMode, EtcdSettings, FrontendSettings, HaTrackerSettings, RegistrySettings, RegistryStore,
    RingSettings, RingStore, ServerConfig, StorageConfig,
};
pub use error::{Error, Result};
pub use otlp::{
    OtlpBatch, OtlpDecodeError, OtlpEncoding, decode_otlp, decompress_gzip, encode_response,
    fuzz_otlp, translate as translate_otlp,
};
pub use query::{
    format_value, parse_duration, write_str as write_json_str, write_string_list, write_timestamp,
};
pub use read::{parse_selector, parse_time, unescape_label_name};
pub use remote_write::BatchLabels;
pub use remote_write::fuzz_ingester_series;
pub use remote_write::{
    BatchExemplar, BatchSeries, CreatedTimestamp, DEFAULT_MAX_COMPRESSED_BYTES,
    DEFAULT_MAX_DECOMPRESSED_BYTES, DecodeError, RwVersion, WriteBatch, batch_from_v1, decode,
    decode_v1, decode_v2, decompress_snappy, fuzz_remote_write_v1, fuzz_remote_write_v2,
};
pub use remote_write::{BatchHistSeries, batch_from_v1_encoded, fuzz_remote_write_v1_fast};
pub use server::{open_bucket, open_tenants, serve, serve_with};
