//! Errors of the cluster components.

use snafu::Snafu;

/// Errors of the cluster components.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    /// A label matcher from the wire is unusable.
    #[snafu(display("bad label matcher: {message}"))]
    BadMatcher { message: String },

    /// An ingester address cannot be used.
    #[snafu(display("invalid ingester address {addr:?}: {message}"))]
    BadAddress { addr: String, message: String },

    /// The gRPC server failed.
    #[snafu(display("gRPC server on {addr}: {source}"))]
    Serve {
        addr: String,
        source: tonic::transport::Error,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
