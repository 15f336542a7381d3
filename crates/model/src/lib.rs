//! Core data types shared by every Stratus crate.
//!
//! This crate owns the vocabulary of the system and nothing else: label sets
//! ([`Labels`]), samples ([`Sample`], native histograms, exemplars), label
//! matchers with Prometheus' fully anchored regex semantics ([`Matcher`]) and
//! validated tenant ids ([`TenantId`]). It has no I/O and no async code, so
//! that the storage engine, the PromQL engine and the API layer can all depend
//! on it without pulling each other in.

mod error;
mod labels;
mod matcher;
mod sample;
mod tenant;

pub use error::{Error, Result};
pub use labels::{Label, Labels, LabelsBuilder, METRIC_NAME, hash_pairs};
pub use matcher::{MatchType, Matcher};
pub use sample::{
    BucketSpan, CUSTOM_BUCKETS_SCHEMA, EXPONENTIAL_SCHEMA_MAX, EXPONENTIAL_SCHEMA_MIN, Exemplar,
    FloatHistogram, Histogram, STALE_NAN_BITS, Sample, SeriesRef, Timestamp, format_float,
    is_known_schema, is_stale_nan, reset_hint, stale_nan,
};
pub use tenant::{MAX_TENANT_ID_LEN, TenantId};
