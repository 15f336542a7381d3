//! Errors of the tenant registry.

use std::path::PathBuf;

use snafu::Snafu;

/// Registry errors.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    /// The registry file could not be read or written.
    #[snafu(display("{}: {source}", path.display()))]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The registry file is not valid.
    #[snafu(display("{}: invalid registry file: {message}", path.display()))]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The OS random source failed.
    #[snafu(display("random source: {message}"))]
    Random {
        /// The cause.
        message: String,
    },
    /// No such tenant, token or plan.
    #[snafu(display("{what} not found"))]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The tenant or plan exists already.
    #[snafu(display("{what} already exists"))]
    Exists {
        /// What exists.
        what: String,
    },
    /// The shared store (etcd) did not accept or answer a change in time,
    /// or kept conflicting with concurrent writers; nothing was changed
    /// unless said otherwise. Retrying is safe.
    #[snafu(display("registry store: {message}"))]
    Store {
        /// What failed.
        message: String,
    },
    /// A request that cannot be carried out as given.
    #[snafu(display("{message}"))]
    Invalid {
        /// Why.
        message: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
