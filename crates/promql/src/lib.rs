//! Stratus PromQL engine.
//!
//! A hand-written evaluator with Prometheus 3.x semantics (lookback,
//! left-open range windows, `@`/offset, subqueries at absolute step
//! multiples, extrapolated rates, delayed `__name__` removal) over a
//! [`stratus_tsdb::Queryable`], plus a runner for Prometheus' `promqltest`
//! scripts ([`promqltest`]). [`parser`] is Stratus' own PromQL 3.x lexer and
//! parser producing the engine's [`ast`] (and printing it back in canonical
//! form). Native histograms are evaluated as float histograms (module
//! `histogram`); the trim operators `</` and `>/` are not supported yet.

mod aggregate;
pub mod ast;
mod binop;
mod engine;
mod error;
mod extended;
mod functions;
mod histogram;
mod info;
mod par;
pub mod parser;
mod prepare;
pub mod promqltest;
mod stats;
mod value;

pub use engine::{Engine, EngineOptions};
pub use error::PromqlError;
pub use parser::parse;
pub use stats::{QueryStats, QueryTimings, StatsMode};
pub use value::{QueryResult, RangeSeries, Sample, Value, histogram_buckets, labels_string};
