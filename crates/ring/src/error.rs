//! Errors of the ring crate: KV store failures, undecodable ring entries,
//! token file problems and replication-set lookups that cannot be served.

use std::path::PathBuf;

use snafu::Snafu;

/// Ring errors.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    /// The etcd client failed (connection, request or watch).
    #[cfg(feature = "etcd")]
    #[snafu(display("etcd {op} failed: {source}"))]
    Etcd {
        /// The operation (`get`, `put`, `watch`, ...).
        op: &'static str,
        /// The cause.
        source: etcd_client::Error,
    },
    /// An etcd watch was cancelled by the server (e.g. compacted revision).
    #[snafu(display("etcd watch cancelled: {reason}"))]
    WatchCancelled {
        /// The reason the server gave.
        reason: String,
    },
    /// A watcher fell behind and missed events; the caller must re-list.
    #[snafu(display("watch fell behind by {missed} events; re-list needed"))]
    WatchLagged {
        /// How many events were missed.
        missed: u64,
    },
    /// A ring entry could not be encoded or decoded.
    #[snafu(display("ring entry {key}: {source}"))]
    Codec {
        /// The KV key.
        key: String,
        /// The cause.
        source: serde_json::Error,
    },
    /// A ring entry has an unsupported format version.
    #[snafu(display("ring entry {key}: unsupported format version {version}"))]
    CodecVersion {
        /// The KV key.
        key: String,
        /// The version found.
        version: u32,
    },
    /// The token file could not be read or written.
    #[snafu(display("token file {}: {source}", path.display()))]
    TokenFileIo {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The token file is not valid.
    #[snafu(display("token file {}: {message}", path.display()))]
    TokenFileCorrupt {
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
    /// A compare-and-swap update kept conflicting with other writers.
    #[snafu(display("ring entry {key}: gave up after {attempts} conflicting updates"))]
    CasRetries {
        /// The KV key.
        key: String,
        /// How many attempts were made.
        attempts: usize,
    },
    /// The ring has no instances (or none with tokens).
    #[snafu(display("ring {ring} is empty"))]
    EmptyRing {
        /// The ring name.
        ring: String,
    },
    /// Too few healthy instances to reach a quorum.
    #[snafu(display(
        "ring {ring}: at least {needed} live replicas required, could only find {found} (unhealthy: {unhealthy})"
    ))]
    TooFewReplicas {
        /// The ring name.
        ring: String,
        /// Replicas needed for a quorum.
        needed: usize,
        /// Healthy replicas found.
        found: usize,
        /// Instance ids left out as unhealthy, comma-separated.
        unhealthy: String,
    },
    /// The instance is not in the ring.
    #[snafu(display("ring {ring}: instance {id} not found"))]
    InstanceNotFound {
        /// The ring name.
        ring: String,
        /// The instance id.
        id: String,
    },
    /// The instance is healthy, so it cannot be forgotten.
    #[snafu(display(
        "ring {ring}: instance {id} is healthy; only unhealthy instances can be forgotten"
    ))]
    ForgetHealthy {
        /// The ring name.
        ring: String,
        /// The instance id.
        id: String,
    },
    /// A configuration value is invalid.
    #[snafu(display("invalid ring configuration: {message}"))]
    Config {
        /// What is wrong.
        message: String,
    },
}

/// Result with the ring [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
