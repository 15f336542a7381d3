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

    /// Writing or reading an on-disk block failed.
    #[snafu(display("block: {source}"), context(false))]
    Block { source: crate::block::Error },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
