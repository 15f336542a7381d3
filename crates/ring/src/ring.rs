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
        let mut idx = Vec::with_capacity(self.cfg.replication_factor + 1);
        let max_errors = self.get_indices_at(key, op, now_ms, &mut idx)?;
        Ok(ReplicationSet {
            instances: idx
                .iter()
                .map(|&i| Arc::clone(&self.instances[i as usize]))
                .collect(),
            max_errors,
        })
    }

    /// [`RingSnapshot::get_at`] without allocating: the healthy replicas
    /// of `key` as indices into [`RingSnapshot::instances`], in walk
    /// order, written to `out` (cleared first); returns how many may fail
    /// (the set's `max_errors`). For callers placing many keys against
    /// one snapshot (a distributor's whole request).
    pub fn get_indices_at(
        &self,
        key: u32,
        op: Operation,
        now_ms: u64,
        out: &mut Vec<u32>,
    ) -> Result<usize> {
        out.clear();
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
            self.instances
                .iter()
                .filter(|i| !i.tokens.is_empty())
                .count()
        };
        let rf = self.cfg.replication_factor.min(distinct).max(1);
        let mut want = rf;
        let start = self.tokens.partition_point(|&t| t < key);
        for step in 0..len {
            if out.len() >= want {
                break;
            }
            let owner = self.owners[(start + step) % len];
            if out.contains(&owner) {
                continue;
            }
            let inst = &self.instances[owner as usize];
            // A zone is used once an instance that counts towards the
            // factor (one not extending the set) was picked in it.
            if zone_aware
                && out.iter().any(|&p| {
                    let x = &self.instances[p as usize];
                    !op.extends(x.state) && x.zone == inst.zone
                })
            {
                continue;
            }
            out.push(owner);
            if op.extends(inst.state) {
                want += 1;
            }
        }
        let quorum = out.len().max(rf) / 2 + 1;
        let healthy = |o: &u32| self.is_healthy(&self.instances[*o as usize], op, now_ms);
        let found = out.iter().filter(|o| healthy(o)).count();
        if found < quorum {
            let unhealthy: Vec<&str> = out
                .iter()
                .filter(|o| !healthy(o))
                .map(|&o| self.instances[o as usize].id.as_str())
                .collect();
            let e = Error::TooFewReplicas {
                ring: self.cfg.name.clone(),
                needed: quorum,
                found,
                unhealthy: unhealthy.join(","),
            };
            out.clear();
            return Err(e);
        }
        out.retain(healthy);
        Ok(out.len() - quorum)
    }

    /// Every instance healthy for `op` (queriers ask all ingesters), with
    /// the number that may fail: with RF replicas per series, up to RF/2
    /// instances may be missing in total (unhealthy ones count): the
    /// instances required are `min(max(members, RF) − RF/2, members)`
    /// (Mimir's rule, capped so that a one-instance ring still reads).
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
        // Data was replicated at the configured factor while the ring may
        // have been larger, so a ring that shrank below RF (an instance
        // left) needs all its members: a sample on {gone, x} is only on x.
        // Capped at the member count so a one-instance ring still reads.
        let rf = self.cfg.replication_factor;
        let required = (members.len().max(rf) - rf / 2).min(members.len());
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

    /// The single owner of `key` for work that one instance does alone
    /// (the compactor's tenants): the first instance clockwise from the
    /// key that is ACTIVE with a fresh heartbeat at `now_ms`. Unlike
    /// [`RingSnapshot::get`], an instance that stopped heartbeating is
    /// skipped, so its keys move to the next instance after the timeout.
    /// `None` when no instance is healthy.
    pub fn owner_at(&self, key: u32, now_ms: u64) -> Option<&Arc<InstanceDesc>> {
        let len = self.tokens.len();
        let start = self.tokens.partition_point(|&t| t < key);
        let mut seen: Vec<u32> = Vec::new();
        for step in 0..len {
            let owner = self.owners[(start + step) % len];
            if seen.contains(&owner) {
                continue;
            }
            seen.push(owner);
            let inst = &self.instances[owner as usize];
            if self.is_healthy(inst, Operation::Write, now_ms) {
                return Some(inst);
            }
            if seen.len() == self.instances.len() {
                break;
            }
        }
        None
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
        match self
            .kv
            .delete(&key, Precondition::Version(v.version))
            .await?
        {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::mem::MemKv;
    use crate::lifecycler::{Lifecycler, LifecyclerConfig};
    use crate::shard::shard_key;
    use crate::tokens::generate_tokens_seeded;
    use stratus_model::Labels;

    const NOW: u64 = 1_000_000_000;

    fn inst(id: &str, zone: &str, state: InstanceState, tokens: Vec<u32>) -> Arc<InstanceDesc> {
        Arc::new(InstanceDesc {
            id: id.into(),
            addr: format!("{id}:9095"),
            http_addr: String::new(),
            zone: zone.into(),
            state,
            tokens,
            registered_at_ms: NOW,
            heartbeat_ms: NOW,
        })
    }

    /// `k` instances with balanced tokens, zones `zones[i % len]`.
    fn ring(k: usize, zones: &[&str], rf: usize) -> RingSnapshot {
        let mut toks: Vec<(String, Vec<u32>)> = Vec::new();
        for i in 0..k {
            let zone = zones.get(i % zones.len().max(1)).copied().unwrap_or("");
            let peers: Vec<&[u32]> = toks
                .iter()
                .filter(|(z, _)| z == zone)
                .map(|(_, t)| t.as_slice())
                .collect();
            let t = generate_tokens_seeded(128, &peers, i as u64).unwrap();
            toks.push((zone.to_string(), t));
        }
        let mut cfg = RingConfig::new("ingester");
        cfg.replication_factor = rf;
        let instances = toks
            .into_iter()
            .enumerate()
            .map(|(i, (z, t))| inst(&format!("i{i}"), &z, InstanceState::Active, t))
            .collect();
        RingSnapshot::new(Arc::new(cfg), instances)
    }

    fn series_spread(snap: &RingSnapshot, n: usize) -> Vec<usize> {
        let mut counts = vec![0usize; snap.instances().len()];
        for s in 0..n {
            let l = Labels::from_pairs([
                ("__name__", "node_cpu_seconds_total".to_string()),
                ("instance", format!("host-{}", s / 100)),
                ("cpu", format!("{}", s % 100)),
            ]);
            let set = snap
                .get_at(shard_key("tenant-1", &l), Operation::Write, NOW)
                .unwrap();
            for id in set.ids() {
                let i = snap.instances().iter().position(|x| x.id == id).unwrap();
                counts[i] += 1;
            }
        }
        counts
    }

    #[test]
    fn owner_skips_stale_and_non_active_instances() {
        let mut cfg = RingConfig::new("compactor");
        cfg.replication_factor = 1;
        cfg.heartbeat_timeout = Duration::from_secs(10);
        let cfg = Arc::new(cfg);
        let a = inst("a", "", InstanceState::Active, vec![100, 300]);
        let b = inst("b", "", InstanceState::Active, vec![200, 400]);
        let snap = RingSnapshot::new(cfg.clone(), vec![a.clone(), b.clone()]);
        assert_eq!(snap.owner_at(150, NOW).unwrap().id, "b");
        assert_eq!(snap.owner_at(50, NOW).unwrap().id, "a");
        assert_eq!(snap.owner_at(450, NOW).unwrap().id, "a", "wraps around");
        // b stops heartbeating: after the timeout its keys go to a.
        assert_eq!(snap.owner_at(150, NOW + 9_000).unwrap().id, "b");
        let stale = Arc::new(InstanceDesc {
            heartbeat_ms: NOW - 20_000,
            ..(*b).clone()
        });
        let snap = RingSnapshot::new(cfg.clone(), vec![a.clone(), stale]);
        assert_eq!(snap.owner_at(150, NOW).unwrap().id, "a");
        // JOINING and LEAVING instances own nothing.
        let joining = inst("b", "", InstanceState::Joining, vec![200, 400]);
        let snap = RingSnapshot::new(cfg.clone(), vec![a, joining]);
        assert_eq!(snap.owner_at(150, NOW).unwrap().id, "a");
        let leaving = inst("a", "", InstanceState::Leaving, vec![100]);
        let snap = RingSnapshot::new(cfg.clone(), vec![leaving]);
        assert!(snap.owner_at(150, NOW).is_none());
        assert!(RingSnapshot::new(cfg, vec![]).owner_at(1, NOW).is_none());
    }

    #[test]
    fn spread_3_ingesters_100k_series() {
        // RF 1: primary ownership alone must be balanced.
        let snap = ring(3, &[""], 1);
        let c = series_spread(&snap, 100_000);
        let (max, min) = (*c.iter().max().unwrap(), *c.iter().min().unwrap());
        assert!(max as f64 / min as f64 <= 1.1, "{c:?}");
        // RF 3 on 6 ingesters: each series on 3, spread still even.
        let snap = ring(6, &[""], 3);
        let c = series_spread(&snap, 100_000);
        assert_eq!(c.iter().sum::<usize>(), 300_000);
        let (max, min) = (*c.iter().max().unwrap(), *c.iter().min().unwrap());
        assert!(max as f64 / min as f64 <= 1.1, "{c:?}");
        let own = snap.ownership();
        assert!((own.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn replicas_in_distinct_zones() {
        let snap = ring(6, &["a", "b", "c"], 3);
        for key in (0..1000u32).map(|i| i.wrapping_mul(4_294_967)) {
            let set = snap.get_at(key, Operation::Write, NOW).unwrap();
            assert_eq!(set.instances.len(), 3);
            assert_eq!(set.max_errors, 1);
            assert_eq!(set.min_success(), 2);
            let mut zones: Vec<&str> = set.instances.iter().map(|i| i.zone.as_str()).collect();
            zones.sort_unstable();
            assert_eq!(zones, ["a", "b", "c"]);
        }
        // Explicit layout: zone awareness skips a second instance of zone a.
        let insts = vec![
            inst("a1", "a", InstanceState::Active, vec![10]),
            inst("a2", "a", InstanceState::Active, vec![20]),
            inst("b1", "b", InstanceState::Active, vec![30]),
            inst("c1", "c", InstanceState::Active, vec![40]),
        ];
        let aware = RingSnapshot::new(Arc::new(RingConfig::new("x")), insts.clone());
        let set = aware.get_at(5, Operation::Write, NOW).unwrap();
        assert_eq!(set.ids().collect::<Vec<_>>(), ["a1", "b1", "c1"]);
        let mut cfg = RingConfig::new("x");
        cfg.zone_awareness = false;
        let plain = RingSnapshot::new(Arc::new(cfg), insts);
        let set = plain.get_at(5, Operation::Write, NOW).unwrap();
        assert_eq!(set.ids().collect::<Vec<_>>(), ["a1", "a2", "b1"]);
    }

    #[test]
    fn unhealthy_counts_as_error_and_leaving_extends() {
        let snap = ring(4, &[""], 3);
        let key = 12345u32;
        let set = snap.get_at(key, Operation::Write, NOW).unwrap();
        let ids: Vec<String> = set.ids().map(String::from).collect();
        assert_eq!(ids.len(), 3);

        // Heartbeat timeout on the first replica: left out, not replaced.
        let stale = {
            let mut d = (*snap.instance(&ids[0]).unwrap().as_ref()).clone();
            d.heartbeat_ms = NOW - 120_000;
            Arc::new(d)
        };
        let s2 = snap.with_heartbeat(&stale).unwrap();
        let set2 = s2.get_at(key, Operation::Write, NOW).unwrap();
        assert_eq!(set2.ids().collect::<Vec<_>>(), ids[1..].to_vec());
        assert_eq!(set2.max_errors, 0);
        assert_eq!(set2.min_success(), 2);
        // all_healthy for queriers: 3 of 4 healthy, RF 3 tolerates 1 missing.
        let all = s2.all_healthy_at(Operation::Read, NOW).unwrap();
        assert_eq!((all.instances.len(), all.max_errors), (3, 0));
        assert_eq!(
            snap.all_healthy_at(Operation::Read, NOW)
                .unwrap()
                .max_errors,
            1
        );

        // A ring that shrank below RF (one of three left) needs both.
        let two: Vec<Arc<InstanceDesc>> = snap.instances()[..2].to_vec();
        let small = RingSnapshot::new(Arc::new(snap.config().clone()), two);
        let all = small.all_healthy_at(Operation::Read, NOW).unwrap();
        assert_eq!((all.instances.len(), all.max_errors), (2, 0));
        let one = RingSnapshot::new(
            Arc::new(snap.config().clone()),
            snap.instances()[..1].to_vec(),
        );
        let all = one.all_healthy_at(Operation::Read, NOW).unwrap();
        assert_eq!((all.instances.len(), all.max_errors), (1, 0));

        // Two stale replicas: no quorum.
        let stale2 = {
            let mut d = (*snap.instance(&ids[1]).unwrap().as_ref()).clone();
            d.heartbeat_ms = 0;
            Arc::new(d)
        };
        let s3 = s2.with_heartbeat(&stale2).unwrap();
        assert!(matches!(
            s3.get_at(key, Operation::Write, NOW),
            Err(Error::TooFewReplicas {
                needed: 2,
                found: 1,
                ..
            })
        ));

        // LEAVING first replica: writes extend to the 4th instance; reads keep it.
        let leaving = {
            let mut d = (*snap.instance(&ids[0]).unwrap().as_ref()).clone();
            d.state = InstanceState::Leaving;
            Arc::new(d)
        };
        let s4 = snap.with_heartbeat(&leaving).unwrap();
        let w = s4.get_at(key, Operation::Write, NOW).unwrap();
        assert_eq!(w.instances.len(), 3);
        assert!(!w.ids().any(|i| i == ids[0]));
        assert_eq!(w.min_success(), 3); // quorum of 4 walked
        let r = s4.get_at(key, Operation::Read, NOW).unwrap();
        assert!(r.ids().any(|i| i == ids[0]));
    }

    #[test]
    fn small_ring_and_empty_ring() {
        let snap = ring(1, &[""], 3);
        let set = snap.get_at(7, Operation::Write, NOW).unwrap();
        assert_eq!((set.instances.len(), set.max_errors), (1, 0));
        let empty = RingSnapshot::new(Arc::new(RingConfig::new("x")), vec![]);
        assert!(matches!(
            empty.get_at(1, Operation::Write, NOW),
            Err(Error::EmptyRing { .. })
        ));
        // Conflicting token: smaller id wins.
        let a = inst("a", "", InstanceState::Active, vec![10]);
        let b = inst("b", "", InstanceState::Active, vec![10, 20]);
        let s = RingSnapshot::new(Arc::new(RingConfig::new("x")), vec![b, a]);
        assert_eq!(s.token_count(), 2);
        let set = s.get_at(5, Operation::Write, NOW).unwrap();
        assert_eq!(set.ids().next(), Some("a"));
    }

    #[tokio::test]
    async fn ring_follows_lifecyclers_and_forget() {
        let kv: Arc<dyn Kv> = Arc::new(MemKv::new());
        let mut rc = RingConfig::new("ingester");
        rc.heartbeat_timeout = Duration::from_millis(300);
        let ring = Ring::start(Arc::clone(&kv), rc).await.unwrap();
        let mut lcs = Vec::new();
        for id in ["a", "b", "c"] {
            let mut c = LifecyclerConfig::new("ingester", id, format!("{id}:1"));
            c.heartbeat_period = Duration::from_millis(50);
            lcs.push(Lifecycler::start(Arc::clone(&kv), c).await.unwrap());
        }
        let wait = Duration::from_secs(5);
        assert!(
            ring.wait_for(wait, |s| s.instances().len() == 3
                && s.instances()
                    .iter()
                    .all(|i| i.state == InstanceState::Active))
                .await
        );
        let own = ring.snapshot().ownership();
        assert!(own.iter().all(|o| (o - 1.0 / 3.0).abs() < 0.02), "{own:?}");
        // Healthy instances cannot be forgotten.
        assert!(matches!(
            ring.forget("a").await,
            Err(Error::ForgetHealthy { .. })
        ));
        assert!(matches!(
            ring.forget("zz").await,
            Err(Error::InstanceNotFound { .. })
        ));
        // Crash c: unhealthy after the timeout, then forgettable.
        let c = lcs.pop().unwrap();
        drop(c);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let snap = ring.snapshot();
        let ci = snap.instance("c").unwrap();
        assert!(!snap.is_healthy(ci, Operation::Write, now_ms()));
        ring.forget("c").await.unwrap();
        assert!(ring.wait_for(wait, |s| s.instance("c").is_none()).await);
        // Graceful leave of b removes it.
        let b = lcs.pop().unwrap();
        b.shutdown().await.unwrap();
        assert!(ring.wait_for(wait, |s| s.instances().len() == 1).await);
    }
}
