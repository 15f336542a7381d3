//! The `Kv` trait: the small consistent key-value store the ring lives in,
//! with versioned reads, compare-and-swap writes and prefix watches.
//!
//! Versions follow etcd: the store has one revision counter that every
//! change increments; a key's *version* is the revision of its last change
//! (etcd's `mod_revision`). A key that does not exist has no version; a
//! write conditioned on [`Precondition::Absent`] creates it only if it is
//! still absent, one conditioned on [`Precondition::Version`] replaces it only
//! if nobody changed it since it was read.
//!
//! Watching: [`Kv::watch`] returns a stream of [`WatchEvent`]s for every key
//! under a prefix, each carrying the revision of its change. A consumer
//! that needs a complete view opens the watch first, then calls
//! [`Kv::list`], and applies only events newer than the listing's
//! revision: nothing is missed and nothing is applied twice. A stream that
//! yields an error (or ends) has lost events; the consumer re-opens and
//! re-lists. [`Ring`](crate::Ring) does exactly this.

#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "etcd")]
pub mod etcd_server;
pub mod mem;

use std::fmt::Debug;

use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::error::Result;

/// A value with the revision of its last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// Revision of the key's last change (etcd `mod_revision`), > 0.
    pub version: i64,
}

/// The condition a conditional write checks atomically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Write unconditionally.
    Any,
    /// The key must not exist.
    Absent,
    /// The key must exist with exactly this version.
    Version(i64),
}

/// Outcome of a conditional write or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The change was applied; the key's new version (the store revision
    /// of the change).
    Done {
        /// New version (for a delete: the revision of the delete).
        version: i64,
    },
    /// The precondition failed; the key's current value, if any.
    Conflict {
        /// What the key holds now (`None`: absent).
        current: Option<Versioned>,
    },
}

/// All keys under a prefix at one store revision.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The store revision the listing reflects.
    pub revision: i64,
    /// `(key, value)` pairs sorted by key.
    pub entries: Vec<(String, Versioned)>,
}

/// One change under a watched prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or replaced.
    Put {
        /// The key.
        key: String,
        /// Its new value and version.
        value: Versioned,
    },
    /// The key was deleted.
    Delete {
        /// The key.
        key: String,
        /// Revision of the delete.
        revision: i64,
    },
}

impl WatchEvent {
    /// The key the event is about.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put { key, .. } | WatchEvent::Delete { key, .. } => key,
        }
    }

    /// The store revision of the change.
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put { value, .. } => value.version,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// A stream of changes; an `Err` item means events were lost (re-list).
pub type WatchStream = BoxStream<'static, Result<WatchEvent>>;

/// A consistent key-value store with compare-and-swap and prefix watches.
///
/// Implementations: [`MemKv`](mem::MemKv) (one process) and
/// [`EtcdKv`](etcd::EtcdKv). Methods return boxed futures so the trait can
/// be used as `Arc<dyn Kv>`.
pub trait Kv: Send + Sync + Debug + 'static {
    /// Reads one key.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>>>;

    /// Writes `value` at `key` if `cond` holds.
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        cond: Precondition,
    ) -> BoxFuture<'a, Result<CasOutcome>>;

    /// Deletes `key` if `cond` holds. Deleting an absent key with
    /// [`Precondition::Any`] is `Done` (idempotent).
    fn delete<'a>(&'a self, key: &'a str, cond: Precondition) -> BoxFuture<'a, Result<CasOutcome>>;

    /// Every key starting with `prefix`, at one revision.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Listing>>;

    /// Changes under `prefix` from now on (see the module docs for how to
    /// combine it with [`Kv::list`]).
    fn watch<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<WatchStream>>;
}
