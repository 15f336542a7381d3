//! Errors that stop the server (start-up and shutdown). Errors of single
//! requests never end up here: they become HTTP responses where they occur.

use std::path::PathBuf;

use snafu::Snafu;

/// Errors of [`crate::serve`].
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    #[snafu(display("opening the block bucket at {}: {source}", path.display()))]
    OpenBucket {
        path: PathBuf,
        source: stratus_objstore::Error,
    },

    #[snafu(display("block storage: {source}"))]
    ObjectStore { source: stratus_objstore::Error },

    #[snafu(display("tenant registry: {source}"))]
    Registry { source: stratus_tenancy::Error },

    #[snafu(display("invalid configuration: {message}"))]
    Config { message: String },

    #[snafu(display("HTTP server failed: {source}"))]
    Serve { source: std::io::Error },

    #[snafu(display("closing tenant databases: {source}"))]
    Close { source: stratus_tsdb::Error },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
