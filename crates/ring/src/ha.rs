//! The HA tracker: which replica of a Prometheus HA pair a tenant's
//! samples are taken from (Cortex/Mimir's HA tracker).
//!
//! Two Prometheus replicas scraping the same targets push the same series,
//! told apart only by a replica label. Per `(tenant, cluster)` the tracker
//! keeps one *elected* replica and when it was last seen. A request from
//! the elected replica is accepted; one from any other replica is not,
//! until the elected one has not been seen for the failover timeout — then
//! the next request from another replica takes over.
//!
//! # Store
//!
//! The elections live in the [`Kv`] store so that every distributor
//! agrees: one key per cluster, `/stratus/ha/<tenant>/<cluster>` (tenant
//! ids never contain `/`; the cluster is the rest of the key), holding a
//! small JSON [`ReplicaDesc`] (`replica`, `received_at` and `elected_at`
//! in ms since the epoch). Every change is a compare-and-swap on the key's
//! version, so two distributors can never elect different replicas: the
//! loser of a race gets the winner's entry back and decides on it.
//!
//! # Cache
//!
//! Each tracker keeps the entries in memory and follows the prefix with a
//! watch (listing after opening it, re-listing when it breaks), learning
//! elections made elsewhere. The elected replica's `received_at` is
//! written through at most every `update_timeout` plus a per-tracker
//! random jitter (below `update_timeout_jitter_max`), so a steady HA pair
//! costs one KV write per cluster and period, not one per request. Entries
//! not refreshed for `cleanup_after` are deleted (compare-and-swap on
//! their version, so a concurrent refresh wins), which frees their slot
//! under `ha_max_clusters`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::error::{CasRetriesSnafu, Error, Result};
use crate::kv::{CasOutcome, Kv, Precondition, Versioned, WatchEvent};

/// Prefix of every HA tracker key.
pub const HA_PREFIX: &str = "/stratus/ha/";

/// Compare-and-swap attempts per check before giving up.
const CAS_ATTEMPTS: usize = 10;

/// The KV key of a tenant's cluster.
pub fn ha_key(tenant: &str, cluster: &str) -> String {
    format!("{HA_PREFIX}{tenant}/{cluster}")
}

/// `(tenant, cluster)` of a key under [`HA_PREFIX`].
fn parse_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(HA_PREFIX)?
        .split_once('/')
        .filter(|(t, c)| !t.is_empty() && !c.is_empty())
}

/// The elected replica of one cluster, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaDesc {
    /// The elected replica (value of the replica label).
    pub replica: String,
    /// When a request of the elected replica was last written through
    /// (ms since the epoch).
    pub received_at: i64,
    /// When this replica was elected (ms since the epoch).
    pub elected_at: i64,
}

/// Timing of the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaTrackerConfig {
    /// Least time between two write-throughs of the elected replica's
    /// `received_at` (default 15s).
    pub update_timeout: Duration,
    /// Upper bound of the random jitter added to `update_timeout` per
    /// tracker, so distributors do not write at the same moment (default 5s).
    pub update_timeout_jitter_max: Duration,
    /// The elected replica unseen for this long loses its election to the
    /// next other replica (default 30s). Must be longer than
    /// `update_timeout + update_timeout_jitter_max`.
    pub failover_timeout: Duration,
    /// Entries not refreshed for this long are deleted (default 30m).
    pub cleanup_after: Duration,
}

impl Default for HaTrackerConfig {
    fn default() -> Self {
        Self {
            update_timeout: Duration::from_secs(15),
            update_timeout_jitter_max: Duration::from_secs(5),
            failover_timeout: Duration::from_secs(30),
            cleanup_after: Duration::from_secs(30 * 60),
        }
    }
}

impl HaTrackerConfig {
    /// Checks the timeouts fit together.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| Err(Error::Config { message });
        if self.update_timeout.is_zero() || self.failover_timeout.is_zero() {
            return bad(
                "ha_tracker.update_timeout and ha_tracker.failover_timeout must be positive".into(),
            );
        }
        if self.failover_timeout <= self.update_timeout + self.update_timeout_jitter_max {
            return bad(format!(
                "ha_tracker.failover_timeout ({:?}) must be longer than ha_tracker.update_timeout ({:?}) + ha_tracker.update_timeout_jitter_max ({:?}), \
                 or a live elected replica could lose its election",
                self.failover_timeout, self.update_timeout, self.update_timeout_jitter_max
            ));
        }
        if self.cleanup_after <= self.failover_timeout {
            return bad(format!(
                "ha_tracker cleanup_after ({:?}) must be longer than failover_timeout ({:?})",
                self.cleanup_after, self.failover_timeout
            ));
        }
        Ok(())
    }
}

/// Where the tracker takes the time from (ms since the epoch).
pub trait Clock: Send + Sync + Debug + 'static {
    /// Now, in ms since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        i64::try_from(crate::desc::now_ms()).unwrap_or(i64::MAX)
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `ms`.
    pub fn new(ms: i64) -> Self {
        Self(AtomicI64::new(ms))
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(ms(d), Ordering::SeqCst);
    }

    /// Sets the clock to `ms`.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// What to do with a request of an HA pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaOutcome {
    /// The request's replica is the elected one: accept (and strip the
    /// replica label).
    Accepted,
    /// The request's replica was elected by this request (first request of
    /// the cluster, or failover from `previous`): accept.
    Elected {
        /// The replica it took over from, if any.
        previous: Option<String>,
    },
    /// Another replica is elected and still alive: drop the request.
    NotElected {
        /// The elected replica.
        elected: String,
    },
    /// The cluster is new and the tenant already has `limit` clusters.
    TooManyClusters {
        /// The tenant's `ha_max_clusters`.
        limit: u64,
        /// Clusters the tenant has.
        current: usize,
    },
}

impl HaOutcome {
    /// Whether the request is to be stored.
    pub fn accepted(&self) -> bool {
        matches!(self, HaOutcome::Accepted | HaOutcome::Elected { .. })
    }
}

#[derive(Debug, Clone)]
struct Cached {
    desc: ReplicaDesc,
    version: i64,
}

/// tenant → cluster → entry.
type Cache = HashMap<String, HashMap<String, Cached>>;

#[derive(Debug)]
struct Inner {
    kv: Arc<dyn Kv>,
    cfg: HaTrackerConfig,
    clock: Arc<dyn Clock>,
    /// `update_timeout` + this tracker's jitter, in ms.
    update_ms: i64,
    failover_ms: i64,
    cache: Mutex<Cache>,
}

/// Stops the background task when the last [`HaTracker`] is dropped.
#[derive(Debug)]
struct TaskGuard(JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The HA tracker of one distributor (cheap to clone). See the module
/// docs.
#[derive(Debug, Clone)]
pub struct HaTracker {
    inner: Arc<Inner>,
    _task: Arc<TaskGuard>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Age of a timestamp at `now` (0 when it is in the future).
fn age(now: i64, at: i64) -> i64 {
    now.saturating_sub(at).max(0)
}

fn decode(v: &Versioned) -> Option<ReplicaDesc> {
    serde_json::from_slice(&v.value).ok()
}

impl HaTracker {
    /// A tracker on `kv` with the system clock. Reads the current
    /// elections before it returns when the store answers (else it starts
    /// empty and keeps retrying in the background); validate `cfg` first
    /// ([`HaTrackerConfig::validate`]).
    pub async fn start(kv: Arc<dyn Kv>, cfg: HaTrackerConfig) -> HaTracker {
        Self::start_with_clock(kv, cfg, Arc::new(SystemClock)).await
    }

    /// [`Self::start`] with a given clock (tests).
    pub async fn start_with_clock(
        kv: Arc<dyn Kv>,
        cfg: HaTrackerConfig,
        clock: Arc<dyn Clock>,
    ) -> HaTracker {
        let jitter_max = ms(cfg.update_timeout_jitter_max);
        let jitter = if jitter_max > 0 {
            let r = getrandom::u64().unwrap_or(0);
            i64::try_from(r % jitter_max.unsigned_abs()).unwrap_or(0)
        } else {
            0
        };
        let inner = Arc::new(Inner {
            kv,
            update_ms: ms(cfg.update_timeout).saturating_add(jitter),
            failover_ms: ms(cfg.failover_timeout),
            cfg,
            clock,
            cache: Mutex::new(Cache::new()),
        });
        let first = inner.resync().await;
        let stream = match first {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "HA tracker: cannot read elections yet; retrying");
                None
            }
        };
        let task = tokio::spawn(follow(Arc::downgrade(&inner), stream));
        HaTracker {
            inner,
            _task: Arc::new(TaskGuard(task)),
        }
    }

    /// Decides on a request of `replica` of `cluster` for `tenant`
    /// (`max_clusters`: the tenant's `ha_max_clusters`, 0 = unlimited).
    /// `Err` only when the store fails or keeps conflicting.
    pub async fn check(
        &self,
        tenant: &str,
        cluster: &str,
        replica: &str,
        max_clusters: u64,
    ) -> Result<HaOutcome> {
        self.inner
            .check(tenant, cluster, replica, max_clusters)
            .await
    }

    /// The cached election of a cluster.
    pub fn elected(&self, tenant: &str, cluster: &str) -> Option<ReplicaDesc> {
        self.inner
            .cache
            .lock()
            .get(tenant)
            .and_then(|m| m.get(cluster))
            .map(|c| c.desc.clone())
    }

    /// How many clusters of `tenant` the tracker knows.
    pub fn clusters(&self, tenant: &str) -> usize {
        self.inner.cache.lock().get(tenant).map_or(0, HashMap::len)
    }

    /// Deletes entries not refreshed for `cleanup_after` (the background
    /// task runs this periodically); returns how many this call deleted.
    pub async fn cleanup(&self) -> Result<usize> {
        self.inner.cleanup().await
    }
}

impl Inner {
    /// Opens the watch, then replaces the cache with a listing.
    async fn resync(&self) -> Result<crate::kv::WatchStream> {
        let stream = self.kv.watch(HA_PREFIX).await?;
        let listing = self.kv.list(HA_PREFIX).await?;
        let mut cache = Cache::new();
        for (key, v) in &listing.entries {
            if let (Some((t, c)), Some(desc)) = (parse_key(key), decode(v)) {
                cache.entry(t.to_string()).or_default().insert(
                    c.to_string(),
                    Cached {
                        desc,
                        version: v.version,
                    },
                );
            }
        }
        // Entries written by this tracker after the listing are newer;
        // keep them (older ones not listed were deleted).
        let mut mine = self.cache.lock();
        for (t, m) in mine.drain() {
            for (c, e) in m {
                if e.version <= listing.revision {
                    continue;
                }
                let slot = cache.entry(t.clone()).or_default();
                if slot.get(&c).is_none_or(|o| o.version < e.version) {
                    slot.insert(c, e);
                }
            }
        }
        *mine = cache;
        Ok(stream)
    }

    /// Stores an entry unless the cache has a newer one.
    fn remember(&self, tenant: &str, cluster: &str, desc: ReplicaDesc, version: i64) {
        let mut cache = self.cache.lock();
        let m = cache.entry(tenant.to_string()).or_default();
        match m.get_mut(cluster) {
            Some(e) if e.version >= version => {}
            Some(e) => *e = Cached { desc, version },
            None => {
                m.insert(cluster.to_string(), Cached { desc, version });
            }
        }
    }

    fn apply(&self, ev: WatchEvent) {
        match ev {
            WatchEvent::Put { key, value } => {
                if let (Some((t, c)), Some(desc)) = (parse_key(&key), decode(&value)) {
                    self.remember(t, c, desc, value.version);
                }
            }
            WatchEvent::Delete { key, revision } => {
                if let Some((t, c)) = parse_key(&key) {
                    let mut cache = self.cache.lock();
                    if let Some(m) = cache.get_mut(t) {
                        if m.get(c).is_some_and(|e| e.version < revision) {
                            m.remove(c);
                        }
                        if m.is_empty() {
                            cache.remove(t);
                        }
                    }
                }
            }
        }
    }

    async fn check(
        &self,
        tenant: &str,
        cluster: &str,
        replica: &str,
        max_clusters: u64,
    ) -> Result<HaOutcome> {
        let now = self.clock.now_ms();
        // The fast path: decide on the cache without touching the store.
        let mut current: Option<(Option<ReplicaDesc>, i64)> = {
            let cache = self.cache.lock();
            let known = cache.get(tenant);
            match known.and_then(|m| m.get(cluster)) {
                Some(e) if e.desc.replica == replica => {
                    if age(now, e.desc.received_at) < self.update_ms {
                        return Ok(HaOutcome::Accepted);
                    }
                    Some((Some(e.desc.clone()), e.version))
                }
                Some(e) => {
                    if age(now, e.desc.received_at) < self.failover_ms {
                        return Ok(HaOutcome::NotElected {
                            elected: e.desc.replica.clone(),
                        });
                    }
                    Some((Some(e.desc.clone()), e.version))
                }
                None => {
                    let n = known.map_or(0, HashMap::len);
                    if max_clusters > 0 && n as u64 >= max_clusters {
                        return Ok(HaOutcome::TooManyClusters {
                            limit: max_clusters,
                            current: n,
                        });
                    }
                    None
                }
            }
        };
        let key = ha_key(tenant, cluster);
        for _ in 0..CAS_ATTEMPTS {
            let (desc, cond, outcome) = match &current {
                None => (
                    ReplicaDesc {
                        replica: replica.to_string(),
                        received_at: now,
                        elected_at: now,
                    },
                    Precondition::Absent,
                    HaOutcome::Elected { previous: None },
                ),
                Some((Some(d), v)) if d.replica == replica => {
                    if age(now, d.received_at) < self.update_ms {
                        // Refreshed by another distributor meanwhile.
                        self.remember(tenant, cluster, d.clone(), *v);
                        return Ok(HaOutcome::Accepted);
                    }
                    (
                        ReplicaDesc {
                            replica: replica.to_string(),
                            received_at: now,
                            elected_at: d.elected_at,
                        },
                        Precondition::Version(*v),
                        HaOutcome::Accepted,
                    )
                }
                Some((Some(d), v)) => {
                    if age(now, d.received_at) < self.failover_ms {
                        self.remember(tenant, cluster, d.clone(), *v);
                        return Ok(HaOutcome::NotElected {
                            elected: d.replica.clone(),
                        });
                    }
                    (
                        ReplicaDesc {
                            replica: replica.to_string(),
                            received_at: now,
                            elected_at: now,
                        },
                        Precondition::Version(*v),
                        HaOutcome::Elected {
                            previous: Some(d.replica.clone()),
                        },
                    )
                }
                // An entry that does not decode is replaced.
                Some((None, v)) => (
                    ReplicaDesc {
                        replica: replica.to_string(),
                        received_at: now,
                        elected_at: now,
                    },
                    Precondition::Version(*v),
                    HaOutcome::Elected { previous: None },
                ),
            };
            let body = serde_json::to_vec(&desc).map_err(|source| Error::Codec {
                key: key.clone(),
                source,
            })?;
            match self.kv.put(&key, body, cond).await? {
                CasOutcome::Done { version } => {
                    if !matches!(outcome, HaOutcome::Accepted) {
                        tracing::info!(
                            tenant,
                            cluster,
                            replica,
                            ?outcome,
                            "HA tracker: elected replica"
                        );
                    }
                    self.remember(tenant, cluster, desc, version);
                    return Ok(outcome);
                }
                CasOutcome::Conflict { current: c } => {
                    current = c.map(|v| (decode(&v), v.version));
                }
            }
        }
        CasRetriesSnafu {
            key,
            attempts: CAS_ATTEMPTS,
        }
        .fail()
    }

    async fn cleanup(&self) -> Result<usize> {
        let now = self.clock.now_ms();
        let limit = ms(self.cfg.cleanup_after);
        let stale: Vec<(String, String, i64)> = {
            let cache = self.cache.lock();
            cache
                .iter()
                .flat_map(|(t, m)| {
                    m.iter()
                        .filter(|(_, e)| age(now, e.desc.received_at) > limit)
                        .map(move |(c, e)| (t.clone(), c.clone(), e.version))
                })
                .collect()
        };
        let mut deleted = 0;
        for (t, c, v) in stale {
            let key = ha_key(&t, &c);
            if let CasOutcome::Done { .. } = self.kv.delete(&key, Precondition::Version(v)).await? {
                deleted += 1;
            }
            // Either way the entry is gone or newer: forget this version.
            let mut cache = self.cache.lock();
            if let Some(m) = cache.get_mut(&t) {
                if m.get(&c).is_some_and(|e| e.version == v) {
                    m.remove(&c);
                }
                if m.is_empty() {
                    cache.remove(&t);
                }
            }
        }
        Ok(deleted)
    }
}

/// Follows the prefix (re-listing when the watch breaks) and runs the
/// cleanup now and then, until the tracker is dropped.
async fn follow(inner: std::sync::Weak<Inner>, stream: Option<crate::kv::WatchStream>) {
    let mut stream = stream;
    let mut backoff = Duration::from_millis(100);
    let cleanup_every = match inner.upgrade() {
        Some(i) => (i.cfg.cleanup_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(60)),
        None => return,
    };
    let mut tick = tokio::time::interval(cleanup_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        if let Some(mut s) = stream.take() {
            backoff = Duration::from_millis(100);
            loop {
                tokio::select! {
                    item = s.next() => {
                        let Some(inner) = inner.upgrade() else { return };
                        match item {
                            Some(Ok(ev)) => inner.apply(ev),
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "HA tracker watch broke; re-listing");
                                break;
                            }
                            None => break,
                        }
                    }
                    _ = tick.tick() => {
                        let Some(inner) = inner.upgrade() else { return };
                        if let Err(e) = inner.cleanup().await {
                            tracing::warn!(error = %e, "HA tracker cleanup failed");
                        }
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        let Some(i) = inner.upgrade() else { return };
        match i.resync().await {
            Ok(s) => stream = Some(s),
            Err(e) => tracing::warn!(error = %e, "HA tracker cannot re-read elections"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::mem::MemKv;

    fn cfg() -> HaTrackerConfig {
        HaTrackerConfig {
            update_timeout: Duration::from_secs(15),
            update_timeout_jitter_max: Duration::ZERO,
            failover_timeout: Duration::from_secs(30),
            cleanup_after: Duration::from_secs(1800),
        }
    }

    async fn tracker(kv: &MemKv, clock: &Arc<ManualClock>) -> HaTracker {
        HaTracker::start_with_clock(Arc::new(kv.clone()), cfg(), clock.clone()).await
    }

    async fn stored(kv: &MemKv, t: &str, c: &str) -> (ReplicaDesc, i64) {
        let v = kv.get(&ha_key(t, c)).await.unwrap().unwrap();
        (decode(&v).unwrap(), v.version)
    }

    #[test]
    fn keys_round_trip_and_config_is_checked() {
        assert_eq!(ha_key("t1", "eu/west"), "/stratus/ha/t1/eu/west");
        assert_eq!(parse_key("/stratus/ha/t1/eu/west"), Some(("t1", "eu/west")));
        assert_eq!(parse_key("/stratus/ha/t1"), None);
        assert_eq!(parse_key("/stratus/rings/x/y"), None);
        assert!(HaTrackerConfig::default().validate().is_ok());
        let c = HaTrackerConfig {
            failover_timeout: Duration::from_secs(20),
            ..HaTrackerConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("failover_timeout"), "{e}");
    }

    #[tokio::test]
    async fn elects_first_replica_and_drops_the_other() {
        let kv = MemKv::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let t = tracker(&kv, &clock).await;
        assert_eq!(
            t.check("t", "c", "a", 0).await.unwrap(),
            HaOutcome::Elected { previous: None }
        );
        assert_eq!(
            t.check("t", "c", "b", 0).await.unwrap(),
            HaOutcome::NotElected {
                elected: "a".into()
            }
        );
        assert_eq!(
            t.check("t", "c", "a", 0).await.unwrap(),
            HaOutcome::Accepted
        );
        let (d, _) = stored(&kv, "t", "c").await;
        assert_eq!(
            d,
            ReplicaDesc {
                replica: "a".into(),
                received_at: 1_000_000,
                elected_at: 1_000_000
            }
        );
        // Other tenants and clusters are independent.
        assert!(t.check("t2", "c", "b", 0).await.unwrap().accepted());
        assert!(t.check("t", "c2", "b", 0).await.unwrap().accepted());
    }

    #[tokio::test]
    async fn refresh_is_written_through_at_most_every_update_timeout() {
        let kv = MemKv::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let t = tracker(&kv, &clock).await;
        t.check("t", "c", "a", 0).await.unwrap();
        let (_, v0) = stored(&kv, "t", "c").await;
        for _ in 0..14 {
            clock.advance(Duration::from_secs(1));
            assert_eq!(
                t.check("t", "c", "a", 0).await.unwrap(),
                HaOutcome::Accepted
            );
        }
        let (d, v) = stored(&kv, "t", "c").await;
        assert_eq!(v, v0, "no KV write within update_timeout");
        assert_eq!(d.received_at, 1_000_000);
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            t.check("t", "c", "a", 0).await.unwrap(),
            HaOutcome::Accepted
        );
        let (d, v) = stored(&kv, "t", "c").await;
        assert!(v > v0, "refreshed after update_timeout");
        assert_eq!(d.received_at, 1_015_000);
        assert_eq!(d.elected_at, 1_000_000, "election time kept");
    }

    #[tokio::test]
    async fn failover_after_timeout() {
        let kv = MemKv::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let t = tracker(&kv, &clock).await;
        t.check("t", "c", "a", 0).await.unwrap();
        clock.advance(Duration::from_secs(29));
        assert!(!t.check("t", "c", "b", 0).await.unwrap().accepted());
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            t.check("t", "c", "b", 0).await.unwrap(),
            HaOutcome::Elected {
                previous: Some("a".into())
            }
        );
        assert_eq!(
            t.check("t", "c", "a", 0).await.unwrap(),
            HaOutcome::NotElected {
                elected: "b".into()
            }
        );
        let (d, _) = stored(&kv, "t", "c").await;
        assert_eq!((d.replica.as_str(), d.elected_at), ("b", 1_030_000));
    }

    #[tokio::test]
    async fn refreshes_keep_the_election() {
        let kv = MemKv::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let t = tracker(&kv, &clock).await;
        t.check("t", "c", "a", 0).await.unwrap();
        // "a" pushes every 10s for 2 minutes; "b" never gets in.
        for _ in 0..12 {
            clock.advance(Duration::from_secs(10));
            assert!(t.check("t", "c", "a", 0).await.unwrap().accepted());
            assert!(!t.check("t", "c", "b", 0).await.unwrap().accepted());
        }
    }

    #[tokio::test]
    async fn cas_race_between_two_trackers_elects_one_replica() {
        let kv = MemKv::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let t1 = tracker(&kv, &clock).await;
        let t2 = tracker(&kv, &clock).await;
        for round in 0..20 {
            let cluster = format!("c{round}");
            let (a, b) = tokio::join!(
                t1.check("t", &cluster, "a", 0),
                t2.check("t", &cluster, "b", 0)
            );
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_ne!(a.accepted(), b.accepted(), "{a:?} {b:?}");
            let winner = if a.accepted() { "a" } else { "b" };
            let (d, _) = stored(&kv, "t", &cluster).await;
            assert_eq!(d.replica, winner);
            // Both now agree, whatever their caches held.
            assert!(t1.check("t", &cluster, winner, 0).await.unwrap().accepted());
            assert!(t2.check("t", &cluster, winner, 0).await.unwrap().accepted());
        }
        // Failover races too: both non-elected replicas try at once.
        clock.advance(Duration::from_secs(31));
        let (x, y) = tokio::join!(t1.check("t", "c0", "x", 0), t2.check("t", "c0", "y", 0));
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_ne!(x.accepted(), y.accepted(), "{x:?} {y:?}");
    }

    #[tokio::test]
    async fn watch_teaches_elections_made_elsewhere() {
        let kv = MemKv::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let t1 = tracker(&kv, &clock).await;
        let t2 = tracker(&kv, &clock).await;
        t1.check("t", "c", "a", 0).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while t2.elected("t", "c").is_none() {
            assert!(std::time::Instant::now() < deadline, "watch event");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(t2.elected("t", "c").unwrap().replica, "a");
        // A tracker started later lists it.
        let t3 = tracker(&kv, &clock).await;
        assert_eq!(t3.elected("t", "c").unwrap().replica, "a");
        assert_eq!(t3.clusters("t"), 1);
    }

    #[tokio::test]
    async fn max_clusters_refuses_new_clusters_only() {
        let kv = MemKv::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let t = tracker(&kv, &clock).await;
        assert!(t.check("t", "c1", "a", 2).await.unwrap().accepted());
        assert!(t.check("t", "c2", "a", 2).await.unwrap().accepted());
        assert_eq!(
            t.check("t", "c3", "a", 2).await.unwrap(),
            HaOutcome::TooManyClusters {
                limit: 2,
                current: 2
            }
        );
        assert!(t.check("t", "c1", "a", 2).await.unwrap().accepted());
        assert!(t.check("other", "c3", "a", 2).await.unwrap().accepted());
        assert!(
            t.check("t", "c3", "a", 0).await.unwrap().accepted(),
            "0 = unlimited"
        );
    }

    #[tokio::test]
    async fn cleanup_deletes_stale_entries_and_frees_slots() {
        let kv = MemKv::new();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let t = tracker(&kv, &clock).await;
        t.check("t", "old", "a", 0).await.unwrap();
        clock.advance(Duration::from_secs(1700));
        t.check("t", "fresh", "a", 0).await.unwrap();
        clock.advance(Duration::from_secs(200));
        assert_eq!(t.cleanup().await.unwrap(), 1);
        assert!(kv.get(&ha_key("t", "old")).await.unwrap().is_none());
        assert!(kv.get(&ha_key("t", "fresh")).await.unwrap().is_some());
        assert_eq!(t.clusters("t"), 1);
        assert!(t.check("t", "new", "a", 2).await.unwrap().accepted());
    }

    #[tokio::test]
    async fn undecodable_entry_is_replaced() {
        let kv = MemKv::new();
        kv.put(&ha_key("t", "c"), b"junk".to_vec(), Precondition::Any)
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let t = tracker(&kv, &clock).await;
        assert!(t.check("t", "c", "a", 0).await.unwrap().accepted());
        assert_eq!(stored(&kv, "t", "c").await.0.replica, "a");
    }
}
