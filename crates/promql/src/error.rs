//! Errors of the PromQL engine.
//!
//! The display texts follow Prometheus' wording, because clients and the
//! upstream conformance scripts match on them.

use snafu::Snafu;

/// Why a query failed.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum PromqlError {
    /// The query text does not parse (text from the parser, with positions).
    #[snafu(display("{msg}"))]
    Parse { msg: String },

    /// The storage failed while selecting series.
    #[snafu(display("{source}"))]
    Storage { source: stratus_tsdb::Error },

    /// The query would hold more samples than `max_samples`.
    #[snafu(display(
        "query processing would load too many samples into memory in query execution"
    ))]
    TooManySamples,

    /// The query selected more series than `max_series` (Mimir's text).
    #[snafu(display("the query exceeded the maximum number of series (limit: {limit})"))]
    TooManySeries { limit: usize },

    /// The query ran past its timeout.
    #[snafu(display("query timed out in query execution"))]
    Timeout,

    /// Two series of one result have the same label set.
    #[snafu(display("vector cannot contain metrics with the same labelset"))]
    DuplicateLabelset,

    /// Both sides of a one-to-one/many-to-one match have duplicates.
    #[snafu(display(
        "found duplicate series for the match group {group} on the {side} hand-side of the operation: [{a}, {b}];many-to-many matching not allowed: matching labels must be unique on one side"
    ))]
    ManyToMany {
        group: String,
        side: &'static str,
        a: String,
        b: String,
    },

    /// One-to-one matching found several matches.
    #[snafu(display(
        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
    ))]
    MultipleMatches,

    /// Many-to-one matching produced the same output series twice.
    #[snafu(display("multiple matches for labels: grouping labels must ensure unique label set"))]
    GroupingNotUnique,

    /// A `topk`/`bottomk`/`limitk` parameter is NaN.
    #[snafu(display("Parameter value is NaN"))]
    ParamNaN,

    /// A `limit_ratio` parameter is NaN.
    #[snafu(display("Ratio value is NaN"))]
    RatioNaN,

    /// An invalid label name was computed (`count_values`, `label_*`).
    #[snafu(display("{msg}"))]
    InvalidLabel { msg: String },

    /// A bad argument to a function (e.g. a smoothing factor out of range).
    #[snafu(display("{msg}"))]
    BadArgument { msg: String },

    /// The expression type cannot be the result of this kind of query.
    #[snafu(display(
        "invalid expression type {got:?} for range query, must be Scalar or instant Vector"
    ))]
    BadRangeQueryType { got: String },

    /// A feature this engine does not implement yet.
    #[snafu(display("unsupported: {what}"))]
    Unsupported { what: String },
}
