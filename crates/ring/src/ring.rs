//! The ring client: an up-to-date view of one ring and replica lookup.
//!
//! [`Ring::start`] opens a watch on the ring's key prefix, lists it, and
//! keeps a [`RingSnapshot`] current from the watch events in a background
//! task (re-opening and re-listing with backoff when the watch breaks).
//! Snapshots are immutable and shared (`Arc`); a heartbeat-only change
//! swaps one instance without rebuilding the token table.
//!
//! **Lookup** ([`RingSnapshot::get`]): find the first token ≥ the key,
//! walk clockwise collecting distinct instances (in distinct zones when
//! zone awareness is on and zones are set) until the replication factor is
//! reached. As in Cortex/Mimir:
//!
//! - An instance whose *state* is not right for the operation (JOINING or
//!   LEAVING for writes) extends the walk by one more instance, so writes
//!   still reach RF ACTIVE instances while one is handing over.
//! - An instance whose heartbeat is older than `heartbeat_timeout`
//!   (crashed, hung, partitioned) does **not** extend the walk: it is left
//!   out of the returned set and counts as a failure against the quorum.
//!   Extending would spread a series over more ingesters every time one
//!   stalls, and a hung ingester that comes back would hold a stale part
//!   of it; with RF 3 the quorum of 2 already tolerates one such instance.
//! - The quorum is `max(set size, RF)/2 + 1`; `max_errors` is how many of
//!   the returned instances may fail. Fewer healthy instances than the
//!   quorum is [`Error::TooFewReplicas`].
//! - A ring with fewer instances (or zones) than RF uses all of them and
//!   needs a majority of them, so a one-ingester dev cluster works at RF 3.
//!
//! Token conflicts (two instances claiming one token) resolve to the
//! instance with the smaller id, the same in every process.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::desc::{InstanceDesc, InstanceState, now_ms, ring_prefix, validate_name};
use crate::error::{Error, Result};
use crate::kv::{CasOutcome, Kv, Precondition, WatchEvent, WatchStream};

/// Client-side settings of a ring.
#[derive(Debug, Clone)]
pub struct RingConfig {
    /// Ring name (key segment), e.g. `ingester`.
    pub name: String,
    /// Replicas per key (default 3).
    pub replication_factor: usize,
    /// An instance whose last heartbeat is older than this is unhealthy
    /// (default 1m).
    pub heartbeat_timeout: Duration,
    /// Place replicas in distinct zones when instances have zones
    /// (default true).
    pub zone_awareness: bool,
}

impl RingConfig {
    /// Defaults for ring `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            replication_factor: 3,
            heartbeat_timeout: Duration::from_secs(60),
            zone_awareness: true,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        validate_name("ring name", &self.name)?;
        if self.replication_factor == 0 {
            return Err(Error::Config {
                message: "replication_factor must be at least 1".into(),
            });
        }
        if self.heartbeat_timeout.is_zero() {
            return Err(Error::Config {
                message: "heartbeat_timeout must be positive".into(),
            });
        }
        Ok(())
    }
}

/// What a replica set is for; decides which states are healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Writes: only ACTIVE instances take them; other states extend the set.
    Write,
    /// Reads: ACTIVE and LEAVING instances answer; other states extend the set.
    Read,
}

impl Operation {
    /// Whether an instance in `state` serves this operation.
    pub fn healthy_state(self, state: InstanceState) -> bool {
        match self {
            Operation::Write => state == InstanceState::Active,
            Operation::Read => matches!(state, InstanceState::Active | InstanceState::Leaving),
        }
    }

    /// Whether meeting an instance in `state` extends the replica walk.
    pub fn extends(self, state: InstanceState) -> bool {
        state != InstanceState::Active
    }
}

/// The instances to send one request to, and how many may fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationSet {
    /// Healthy instances to contact.
    pub instances: Vec<Arc<InstanceDesc>>,
    /// How many of `instances` may fail with the request still succeeding.
    pub max_errors: usize,
}

impl ReplicationSet {
    /// How many of `instances` must succeed.
    pub fn min_success(&self) -> usize {
        self.instances.len().saturating_sub(self.max_errors)
    }

    /// The instance ids, in walk order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.instances.iter().map(|i| i.id.as_str())
    }
}

/// An immutable view of a ring at one moment.
#[derive(Debug, Clone)]
pub struct RingSnapshot {
    cfg: Arc<RingConfig>,
    /// Instances sorted by id.
    instances: Vec<Arc<InstanceDesc>>,
    /// Sorted unique tokens.
    tokens: Arc<[u32]>,
    /// Owner (index into `instances`) of each token.
    owners: Arc<[u32]>,
    /// Distinct non-empty zones.
    zones: usize,
}

impl RingSnapshot {
    /// Builds a snapshot from instance descriptions.
    pub fn new(cfg: Arc<RingConfig>, mut instances: Vec<Arc<InstanceDesc>>) -> Self {
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        instances.dedup_by(|a, b| a.id == b.id);
        let mut all: Vec<(u32, u32)> = Vec::new();
        for (i, inst) in instances.iter().enumerate() {
            all.extend(inst.tokens.iter().map(|&t| (t, i as u32)));
        }
        // Instances are sorted by id, so the smaller index wins a conflict.
        all.sort_unstable();
        all.dedup_by_key(|e| e.0);
        let tokens: Arc<[u32]> = all.iter().map(|e| e.0).collect();
        let owners: Arc<[u32]> = all.iter().map(|e| e.1).collect();
        let mut zones: Vec<&str> = instances
            .iter()
            .map(|i| i.zone.as_str())
            .filter(|z| !z.is_empty())
            .collect();
        zones.sort_unstable();
        zones.dedup();
        let zones = zones.len();
        Self {
            cfg,
            instances,
            tokens,
            owners,
            zones,
        }
    }

    /// The same snapshot with `desc` replacing the instance of the same id,
    /// if only fields that do not affect the token table changed.
    fn with_heartbeat(&self, desc: &Arc<InstanceDesc>) -> Option<Self> {
        let i = self
            .instances
            .binary_search_by(|x| x.id.as_str().cmp(&desc.id))
            .ok()?;
        let old = &self.instances[i];
        if old.tokens != desc.tokens || old.zone != desc.zone {
            return None;
        }
        let mut s = self.clone();
        s.instances[i] = Arc::clone(desc);
        Some(s)
    }

    /// The ring configuration.
    pub fn config(&self) -> &RingConfig {
        &self.cfg
    }

    /// All instances, sorted by id.
    pub fn instances(&self) -> &[Arc<InstanceDesc>] {
        &self.instances
    }

    /// One instance by id.
    pub fn instance(&self, id: &str) -> Option<&Arc<InstanceDesc>> {
        self.instances
            .binary_search_by(|x| x.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.instances[i])
    }

    /// Number of tokens in the table.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    fn zone_aware(&self) -> bool {
        self.cfg.zone_awareness && self.zones > 0
    }

    /// Whether `inst` serves `op` at `now_ms`: right state and a fresh heartbeat.
    pub fn is_healthy(&self, inst: &InstanceDesc, op: Operation, now_ms: u64) -> bool {
        op.healthy_state(inst.state) && inst.heartbeat_fresh(now_ms, self.cfg.heartbeat_timeout)
    }

    /// The replica set for ring key `key` (see the module docs).
    pub fn get(&self, key: u32, op: Operation) -> Result<ReplicationSet> {
        self.get_at(key, op, now_ms())
    }

    /// [`RingSnapshot::get`] at an explicit time (Unix ms).
    pub fn get_at(&self, key: u32, op: Operation, now_ms: u64) -> Result<ReplicationSet> {
        let len = self.tokens.len();
        if len == 0 {
            return Err(Error::EmptyRing {
                ring: self.cfg.name.clone(),
            });
        }
        let zone_aware = self.zone_aware();
        let distinct = if zone_aware {
            self.zones
        } else {
            self.instances.iter().filter(|i| !i.tokens.is_empty()).count()
        };
        let rf = self.cfg.replication_factor.min(distinct).max(1);
        let mut want = rf;
        let start = self.tokens.partition_point(|&t| t < key);
        let mut picked: Vec<u32> = Vec::with_capacity(rf + 1);
        let mut used_zones: Vec<&str> = Vec::with_capacity(rf);
        for step in 0..len {
            if picked.len() >= want {
                break;
            }
            let owner = self.owners[(start + step) % len];
            if picked.contains(&owner) {
                continue;
            }
            let inst = &self.instances[owner as usize];
            if zone_aware && used_zones.contains(&inst.zone.as_str()) {
                continue;
            }
            picked.push(owner);
            if op.extends(inst.state) {
                want += 1;
            } else if zone_aware {
                used_zones.push(inst.zone.as_str());
            }
        }
        let quorum = picked.len().max(rf) / 2 + 1;
        let mut healthy = Vec::with_capacity(picked.len());
        let mut unhealthy: Vec<&str> = Vec::new();
        for &o in &picked {
            let inst = &self.instances[o as usize];
            if self.is_healthy(inst, op, now_ms) {
                healthy.push(Arc::clone(inst));
            } else {
                unhealthy.push(&inst.id);
            }
        }
        if healthy.len() < quorum {
            return Err(Error::TooFewReplicas {
                ring: self.cfg.name.clone(),
                needed: quorum,
                found: healthy.len(),
                unhealthy: unhealthy.join(","),
            });
        }
        let max_errors = healthy.len() - quorum;
        Ok(ReplicationSet {
            instances: healthy,
            max_errors,
        })
    }

    /// Every instance healthy for `op` (queriers ask all ingesters), with
    /// the number that may fail: with RF replicas per series, up to RF/2
    /// instances may be missing in total (unhealthy ones count).
    pub fn all_healthy(&self, op: Operation) -> Result<ReplicationSet> {
        self.all_healthy_at(op, now_ms())
    }

    /// [`RingSnapshot::all_healthy`] at an explicit time (Unix ms).
    pub fn all_healthy_at(&self, op: Operation, now_ms: u64) -> Result<ReplicationSet> {
        let members: Vec<&Arc<InstanceDesc>> = self
            .instances
            .iter()
            .filter(|i| !i.tokens.is_empty())
            .collect();
        if members.is_empty() {
            return Err(Error::EmptyRing {
                ring: self.cfg.name.clone(),
            });
        }
        let rf = self.cfg.replication_factor.min(members.len());
        let required = members.len().max(rf) - rf / 2;
        let mut healthy = Vec::new();
        let mut unhealthy: Vec<&str> = Vec::new();
        for inst in members {
            if self.is_healthy(inst, op, now_ms) {
                healthy.push(Arc::clone(inst));
            } else {
                unhealthy.push(&inst.id);
            }
        }
        if healthy.len() < required {
            return Err(Error::TooFewReplicas {
                ring: self.cfg.name.clone(),
                needed: required,
                found: healthy.len(),
                unhealthy: unhealthy.join(","),
            });
        }
        let max_errors = healthy.len() - required;
        Ok(ReplicationSet {
            instances: healthy,
            max_errors,
        })
    }

    /// Fraction of the ring each instance owns as primary (first replica),
    /// by instance id order (same order as [`RingSnapshot::instances`]).
    pub fn ownership(&self) -> Vec<f64> {
        let mut owned = vec![0u64; self.instances.len()];
        let len = self.tokens.len();
        for i in 0..len {
            let range = if len == 1 {
                1u64 << 32
            } else {
                let prev = self.tokens[(i + len - 1) % len];
                u64::from(self.tokens[i].wrapping_sub(prev))
            };
            owned[self.owners[i] as usize] += range;
        }
        owned
            .into_iter()
            .map(|o| o as f64 / (1u64 << 32) as f64)
            .collect()
    }
}

/// Stops the background task when the last [`Ring`] handle is dropped.
#[derive(Debug)]
struct TaskGuard(JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A live, shared view of one ring (cheap to clone).
#[derive(Debug, Clone)]
pub struct Ring {
    kv: Arc<dyn Kv>,
    cfg: Arc<RingConfig>,
    rx: watch::Receiver<Arc<RingSnapshot>>,
    _task: Arc<TaskGuard>,
}

/// Keyed state of the watch loop: instance id → (desc, version).
type Entries = BTreeMap<String, (Arc<InstanceDesc>, i64)>;

impl Ring {
    /// Reads the ring and starts following it. Returns once the first
    /// listing is in (an error if the store cannot be reached now).
    pub async fn start(kv: Arc<dyn Kv>, cfg: RingConfig) -> Result<Ring> {
        cfg.validate()?;
        let cfg = Arc::new(cfg);
        let prefix = ring_prefix(&cfg.name);
        let stream = kv.watch(&prefix).await?;
        let (entries, revision) = list_entries(kv.as_ref(), &prefix).await?;
        let snap = Arc::new(build(&cfg, &entries));
        let (tx, rx) = watch::channel(snap);
        let task = tokio::spawn(follow(
            Arc::clone(&kv),
            Arc::clone(&cfg),
            prefix,
            tx,
            entries,
            revision,
            stream,
        ));
        Ok(Ring {
            kv,
            cfg,
            rx,
            _task: Arc::new(TaskGuard(task)),
        })
    }

    /// The ring name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The ring configuration.
    pub fn config(&self) -> &RingConfig {
        &self.cfg
    }

    /// The current snapshot. Take one per request and look up every
    /// series in it.
    pub fn snapshot(&self) -> Arc<RingSnapshot> {
        Arc::clone(&self.rx.borrow())
    }

    /// Replica set for ring key `key` in the current snapshot.
    pub fn get(&self, key: u32, op: Operation) -> Result<ReplicationSet> {
        self.snapshot().get(key, op)
    }

    /// Every instance healthy for `op` in the current snapshot.
    pub fn all_healthy(&self, op: Operation) -> Result<ReplicationSet> {
        self.snapshot().all_healthy(op)
    }

    /// A receiver that is notified on every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<RingSnapshot>> {
        self.rx.clone()
    }

    /// Waits (at most `timeout`) until `pred` holds for the current
    /// snapshot; returns whether it did.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&RingSnapshot) -> bool,
    ) -> bool {
        let mut rx = self.rx.clone();
        tokio::time::timeout(timeout, async {
            loop {
                if pred(&rx.borrow_and_update()) {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await
        .unwrap_or(false)
    }

    /// Removes an unhealthy instance from the ring (the status page's
    /// "forget"). Reads the entry from the store, refuses if it is healthy
    /// for writes by its stored heartbeat, then deletes it by
    /// compare-and-swap so a concurrent heartbeat wins.
    pub async fn forget(&self, id: &str) -> Result<()> {
        let key = crate::desc::instance_key(&self.cfg.name, id);
        let not_found = || Error::InstanceNotFound {
            ring: self.cfg.name.clone(),
            id: id.to_string(),
        };
        let Some(v) = self.kv.get(&key).await? else {
            return Err(not_found());
        };
        // An undecodable entry is garbage and may always be removed.
        if let Ok(desc) = InstanceDesc::decode(&key, &v.value)
            && desc.heartbeat_fresh(now_ms(), self.cfg.heartbeat_timeout)
        {
            return Err(Error::ForgetHealthy {
                ring: self.cfg.name.clone(),
                id: id.to_string(),
            });
        }
        match self.kv.delete(&key, Precondition::Version(v.version)).await? {
            CasOutcome::Done { .. } => Ok(()),
            // It heartbeated (or changed) meanwhile: it is alive.
            CasOutcome::Conflict { current: Some(_) } => Err(Error::ForgetHealthy {
                ring: self.cfg.name.clone(),
                id: id.to_string(),
            }),
            CasOutcome::Conflict { current: None } => Err(not_found()),
        }
    }
}

async fn list_entries(kv: &dyn Kv, prefix: &str) -> Result<(Entries, i64)> {
    let listing = kv.list(prefix).await?;
    let mut entries = Entries::new();
    for (key, v) in listing.entries {
        match InstanceDesc::decode(&key, &v.value) {
            Ok(d) => {
                entries.insert(d.id.clone(), (Arc::new(d), v.version));
            }
            Err(e) => tracing::warn!(error = %e, "skipping undecodable ring entry"),
        }
    }
    Ok((entries, listing.revision))
}

fn build(cfg: &Arc<RingConfig>, entries: &Entries) -> RingSnapshot {
    RingSnapshot::new(
        Arc::clone(cfg),
        entries.values().map(|(d, _)| Arc::clone(d)).collect(),
    )
}

/// Applies one event; returns the changed desc for a heartbeat-style
/// update, or `None` when the token table must be rebuilt (or nothing changed).
fn apply(
    prefix: &str,
    entries: &mut Entries,
    ev: WatchEvent,
    changed: &mut bool,
) -> Option<Arc<InstanceDesc>> {
    let id = ev.key().strip_prefix(prefix)?.to_string();
    match ev {
        WatchEvent::Put { key, value } => {
            let desc = match InstanceDesc::decode(&key, &value.value) {
                Ok(d) if d.id == id => d,
                Ok(d) => {
                    tracing::warn!(key, id = d.id, "ring entry id does not match its key");
                    return None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring undecodable ring entry");
                    return None;
                }
            };
            if let Some((_, ver)) = entries.get(&id)
                && *ver >= value.version
            {
                return None;
            }
            let desc = Arc::new(desc);
            *changed = true;
            entries.insert(id, (Arc::clone(&desc), value.version));
            Some(desc)
        }
        WatchEvent::Delete { revision, .. } => {
            if entries.get(&id).is_some_and(|(_, ver)| *ver < revision) {
                entries.remove(&id);
                *changed = true;
            }
            None
        }
    }
}

async fn follow(
    kv: Arc<dyn Kv>,
    cfg: Arc<RingConfig>,
    prefix: String,
    tx: watch::Sender<Arc<RingSnapshot>>,
    mut entries: Entries,
    mut revision: i64,
    stream: WatchStream,
) {
    let mut stream = Some(stream);
    let mut backoff = Duration::from_millis(100);
    loop {
        if let Some(mut s) = stream.take() {
            backoff = Duration::from_millis(100);
            while let Some(item) = s.next().await {
                let ev = match item {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::warn!(ring = %cfg.name, error = %e, "ring watch broke; re-listing");
                        break;
                    }
                };
                if ev.revision() <= revision {
                    continue;
                }
                // Apply this event and any already queued, then publish once.
                let mut changed = false;
                let mut single: Option<Arc<InstanceDesc>> = None;
                let mut count = 0usize;
                let mut next = Some(ev);
                let mut broken = false;
                while let Some(ev) = next.take() {
                    count += 1;
                    if ev.revision() > revision {
                        single = apply(&prefix, &mut entries, ev, &mut changed);
                    }
                    match s.next().now_or_never() {
                        Some(Some(Ok(more))) => next = Some(more),
                        Some(Some(Err(e))) => {
                            tracing::warn!(ring = %cfg.name, error = %e, "ring watch broke; re-listing");
                            broken = true;
                        }
                        Some(None) => broken = true,
                        None => {}
                    }
                }
                if !changed {
                    if broken {
                        break;
                    }
                    continue;
                }
                let current = tx.borrow().clone();
                let snap = match (count, single) {
                    (1, Some(desc)) => current
                        .with_heartbeat(&desc)
                        .unwrap_or_else(|| build(&cfg, &entries)),
                    _ => build(&cfg, &entries),
                };
                tx.send_replace(Arc::new(snap));
                if broken {
                    break;
                }
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        let s = match kv.watch(&prefix).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(ring = %cfg.name, error = %e, "ring watch failed");
                continue;
            }
        };
        match list_entries(kv.as_ref(), &prefix).await {
            Ok((e, rev)) => {
                entries = e;
                revision = rev;
                tx.send_replace(Arc::new(build(&cfg, &entries)));
                stream = Some(s);
            }
            Err(e) => tracing::warn!(ring = %cfg.name, error = %e, "ring list failed"),
        }
    }
}
