//! Errors of the storage engine.
//!
//! Each subsystem owns a detailed error enum (`chunks::Error`,
//! `wal::Error`, `block::Error`, ...); this crate-level error wraps them and
//! adds the errors a caller of the database sees (append rejections,
//! limits). Append rejections are the caller's fault and map to HTTP 400;
//! everything else is a storage fault (HTTP 500).

use snafu::Snafu;

/// Errors of the storage engine.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    /// An index lookup failed (e.g. a corrupt block index).
    #[snafu(display("index: {message}"))]
    Index { message: String },

    #[snafu(display("I/O on {}: {source}", path.display()))]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },

    #[snafu(display("object store: {source}"), context(false))]
    ObjStore { source: stratus_objstore::Error },

    #[snafu(display("background task failed: {message}"))]
    Task { message: String },

    #[snafu(display("failpoint {name} triggered"))]
    Failpoint { name: String },

    #[snafu(display("invalid configuration: {message}"))]
    Config { message: String },

    /// A remote source (ingesters, in cluster mode) could not answer.
    #[snafu(display("remote read: {message}"))]
    Remote { message: String },

    /// The write-ahead log failed.
    #[snafu(display("WAL: {source}"), context(false))]
    Wal { source: crate::wal::Error },
    /// Chunk data could not be decoded.
    #[snafu(display("chunk: {source}"), context(false))]
    Chunk { source: crate::chunks::Error },
    /// Writing or reading an on-disk block failed.
    #[snafu(display("block: {source}"), context(false))]
    Block { source: crate::block::Error },

    /// A sealed head chunk could not be read back from its head chunk
    /// file (`chunks_head/`; e.g. the file was truncated).
    #[snafu(display("head chunk file {} at offset {offset}: {source}", path.display()))]
    HeadChunkRead {
        path: std::path::PathBuf,
        offset: u64,
        source: std::io::Error,
    },

    /// A head chunk file holds a damaged record (checksum or header
    /// mismatch).
    #[snafu(display("head chunk file {} at offset {offset}: {reason}", path.display()))]
    HeadChunkCorrupt {
        path: std::path::PathBuf,
        offset: u64,
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a sample was refused. These are the client's fault (HTTP 400): the
/// same request can never succeed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Older than the out-of-order window allows.
    TooOld,
    /// Older than the series' newest sample while out-of-order ingestion
    /// is disabled (window 0).
    OutOfOrder,
    /// Same timestamp as a stored sample with a different value.
    Duplicate,
    /// Too far in the future.
    TooFarInFuture,
    /// Would create a series beyond the tenant's active series limit.
    /// (Answered 400 like Mimir's per-user series limit, although it can
    /// succeed once series go idle; see the API's remote-write handler.)
    MaxSeries,
    /// Would create a series beyond the tenant's per-metric-name limit.
    MaxSeriesPerMetric,
    /// A native histogram older than its series' newest sample: native
    /// histograms are accepted in time order only.
    OutOfOrderHistogram,
    /// A malformed native histogram (bad spans, negative counts, bucket
    /// count not matching the spans, unknown schema).
    InvalidHistogram,
}

impl RejectReason {
    /// A short, stable description.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooOld => {
                "sample is too old (older than the out-of-order window behind the newest sample); raise out_of_order_window"
            }
            Self::OutOfOrder => {
                "out-of-order sample (out-of-order ingestion is disabled: out_of_order_window is 0)"
            }
            Self::Duplicate => "duplicate sample for timestamp with a different value",
            Self::TooFarInFuture => "sample timestamp is too far in the future",
            Self::MaxSeries => {
                "per-tenant series limit (max_series) exceeded: this series would be new; raise the tenant's max_series limit"
            }
            Self::OutOfOrderHistogram => {
                "out-of-order native histogram sample (native histograms are accepted in time order only)"
            }
            Self::InvalidHistogram => "invalid native histogram",
            Self::MaxSeriesPerMetric => {
                "per-metric series limit (max_series_per_metric) exceeded: this series would be new; raise the tenant's max_series_per_metric limit"
            }
        }
    }
}
