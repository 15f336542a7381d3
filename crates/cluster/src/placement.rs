//! Which ingesters hold a series: the [`Placement`] trait and a static
//! consistent-hash implementation over a fixed address list.
//!
//! The distributor asks [`Placement::place`] for all series of a request
//! at once (each by a stable hash of tenant and labels, [`series_hash`]) and the querier asks
//! [`Placement::read_set`] whom to read from. [`RingPlacement`](crate::RingPlacement) follows
//! the hash ring (`stratus_ring`: tokens, heartbeats, states, zones, in
//! etcd); [`StaticPlacement`] is the fixed-list alternative: every instance owns
//! [`TOKENS_PER_INSTANCE`] pseudo-random tokens on a 32-bit ring and a
//! series goes to the owners of the first tokens at or after its hash,
//! skipping instances already chosen, until it has the replication factor.

use std::sync::Arc;

use stratus_model::{Labels, TenantId};
use xxhash_rust::xxh3::xxh3_64;

/// One ingester.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Instance {
    /// Stable identity (the ring's instance id; the address for static
    /// lists). Shared, so a replica set per series copies no strings.
    pub id: Arc<str>,
    /// gRPC address, `host:port`.
    pub addr: Arc<str>,
}

/// The replicas of one series and how many must acknowledge a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSet {
    /// Distinct instances, in ring order.
    pub instances: Vec<Instance>,
    /// Acknowledgements needed (a quorum: `rf / 2 + 1`).
    pub min_success: usize,
}

impl ReplicaSet {
    /// Failures tolerated before the write (or read) cannot succeed.
    pub fn max_failures(&self) -> usize {
        self.instances.len().saturating_sub(self.min_success)
    }
}

/// The replicas of every series of one request, placed against one view
/// of the membership ([`Placement::place`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placed {
    /// The distinct instances used, in order of first use.
    pub instances: Vec<Instance>,
    /// Replica indices (into `instances`) of all series, back to back.
    members: Vec<u32>,
    /// Per series: end of its replicas in `members`, acknowledgements
    /// needed.
    series: Vec<(u32, u32)>,
}

impl Placed {
    /// Places series one after the other: `instances` are the replicas
    /// of the next series, deduplicated by id into [`Placed::instances`].
    pub fn push(&mut self, instances: impl IntoIterator<Item = Instance>, min_success: usize) {
        for inst in instances {
            // A handful of instances per request: a scan beats hashing.
            let k = match self.instances.iter().position(|x| x.id == inst.id) {
                Some(k) => k,
                None => {
                    self.instances.push(inst);
                    self.instances.len() - 1
                }
            };
            self.members.push(k as u32);
        }
        self.series
            .push((self.members.len() as u32, min_success as u32));
    }

    /// Adds the next series' replicas as indices into
    /// [`Placed::instances`] (already added with
    /// [`Placed::add_instance`]).
    pub fn push_indices(&mut self, idxs: impl IntoIterator<Item = u32>, min_success: usize) {
        self.members.extend(idxs);
        self.series
            .push((self.members.len() as u32, min_success as u32));
    }

    /// Adds an instance without a series; returns its index.
    pub fn add_instance(&mut self, inst: Instance) -> u32 {
        self.instances.push(inst);
        (self.instances.len() - 1) as u32
    }

    /// Number of series placed.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether no series was placed.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The replicas of series `i` (indices into [`Placed::instances`];
    /// empty when it has none or `i` is out of range).
    pub fn replicas(&self, i: usize) -> &[u32] {
        let end = self.series.get(i).map_or(0, |s| s.0 as usize);
        let start = match i.checked_sub(1) {
            Some(p) => self.series.get(p).map_or(0, |s| s.0 as usize),
            None => 0,
        };
        self.members.get(start..end).unwrap_or(&[])
    }

    /// Acknowledgements series `i` needs.
    pub fn min_success(&self, i: usize) -> usize {
        self.series.get(i).map_or(1, |s| s.1 as usize)
    }
}

/// Where series live. Implementations must be cheap to call per series.
pub trait Placement: Send + Sync + std::fmt::Debug {
    /// The replicas of a series of `tenant` whose hash is `series_hash`
    /// ([`series_hash`]).
    fn replicas(&self, tenant: &TenantId, series_hash: u32) -> ReplicaSet;

    /// The replicas of many series of `tenant` (by [`series_hash`]), all
    /// from one view of the membership: what the distributor asks once
    /// per request. The default asks [`Placement::replicas`] per series.
    fn place(&self, tenant: &TenantId, series_hashes: &[u32]) -> Placed {
        let mut p = Placed::default();
        for &h in series_hashes {
            let rs = self.replicas(tenant, h);
            p.push(rs.instances, rs.min_success);
        }
        p
    }

    /// Every instance that may hold data (the querier reads from all).
    fn all(&self) -> Vec<Instance>;

    /// How many of [`Placement::all`] may fail while a read still sees
    /// every acknowledged sample (replication factor minus quorum).
    fn read_max_failures(&self) -> usize;

    /// The instances a read asks and how many must answer, from one view
    /// of the membership (an empty set: nobody can answer). The default
    /// combines [`Placement::all`] and [`Placement::read_max_failures`];
    /// a changing membership should answer from one snapshot.
    fn read_set(&self) -> ReplicaSet {
        let instances = self.all();
        let n = instances.len();
        let fail = self.read_max_failures().min(n.saturating_sub(1));
        ReplicaSet {
            min_success: n - fail,
            instances,
        }
    }
}

/// The ring key of a series: exactly the ring's
/// [`shard_key`](stratus_ring::shard_key) (xxh3 of the tenant and the
/// labels' stable hash, folded to 32 bits), so the distributor places
/// series where the ring expects them whichever [`Placement`] is used.
pub fn series_hash(tenant: &TenantId, labels: &Labels) -> u32 {
    stratus_ring::shard_key(tenant.as_str(), labels)
}

/// Tokens each instance owns on the static ring.
pub const TOKENS_PER_INSTANCE: usize = 128;

/// The default replication factor (capped by the number of instances).
pub const DEFAULT_REPLICATION_FACTOR: usize = 3;

/// A fixed list of ingesters on a consistent-hash ring.
#[derive(Debug, Clone)]
pub struct StaticPlacement {
    instances: Vec<Instance>,
    /// (token, index into `instances`), sorted by token.
    ring: Vec<(u32, usize)>,
    rf: usize,
}

impl StaticPlacement {
    /// A ring over `addrs` (duplicates removed; each address is also its
    /// id) with replication factor `min(rf, n)`.
    pub fn new(addrs: &[String], rf: usize) -> Self {
        let mut instances: Vec<Instance> = addrs
            .iter()
            .map(|a| Instance {
                id: a.as_str().into(),
                addr: a.as_str().into(),
            })
            .collect();
        instances.sort();
        instances.dedup();
        let mut ring = Vec::with_capacity(instances.len() * TOKENS_PER_INSTANCE);
        for (i, inst) in instances.iter().enumerate() {
            for t in 0..TOKENS_PER_INSTANCE {
                let key = format!("{}/{t}", inst.id);
                ring.push(((xxh3_64(key.as_bytes()) >> 32) as u32, i));
            }
        }
        ring.sort_unstable();
        let rf = rf.clamp(1, instances.len().max(1));
        Self {
            instances,
            ring,
            rf,
        }
    }

    /// The replication factor in force.
    pub fn replication_factor(&self) -> usize {
        self.rf
    }

    fn quorum(&self) -> usize {
        self.rf / 2 + 1
    }
}

impl Placement for StaticPlacement {
    fn replicas(&self, _tenant: &TenantId, series_hash: u32) -> ReplicaSet {
        let mut chosen: Vec<usize> = Vec::with_capacity(self.rf);
        let start = self.ring.partition_point(|(t, _)| *t < series_hash);
        let n = self.ring.len();
        for k in 0..n {
            if chosen.len() >= self.rf {
                break;
            }
            let Some(&(_, idx)) = self.ring.get((start + k) % n) else {
                break;
            };
            if !chosen.contains(&idx) {
                chosen.push(idx);
            }
        }
        ReplicaSet {
            instances: chosen
                .into_iter()
                .filter_map(|i| self.instances.get(i).cloned())
                .collect(),
            min_success: self.quorum(),
        }
    }

    fn all(&self) -> Vec<Instance> {
        self.instances.clone()
    }

    fn read_max_failures(&self) -> usize {
        self.rf - self.quorum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("127.0.0.1:{}", 9100 + i)).collect()
    }

    #[test]
    fn replicas_are_distinct_and_stable() {
        let p = StaticPlacement::new(&addrs(5), 3);
        let t = TenantId::new("t").unwrap();
        for i in 0..1000u32 {
            let l = Labels::from_pairs([("__name__", "m"), ("i", &i.to_string())]);
            let h = series_hash(&t, &l);
            let r = p.replicas(&t, h);
            assert_eq!(r.instances.len(), 3);
            assert_eq!(r.min_success, 2);
            let mut ids: Vec<_> = r.instances.iter().map(|x| &x.id).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), 3);
            assert_eq!(p.replicas(&t, h), r);
        }
        assert_eq!(p.read_max_failures(), 1);
    }

    #[test]
    fn place_agrees_with_replicas() {
        let p = StaticPlacement::new(&addrs(4), 3);
        let t = TenantId::new("t").unwrap();
        let hashes: Vec<u32> = (0..200u32)
            .map(|i| {
                series_hash(
                    &t,
                    &Labels::from_pairs([("__name__", "m"), ("i", &i.to_string())]),
                )
            })
            .collect();
        let placed = p.place(&t, &hashes);
        assert_eq!(placed.len(), hashes.len());
        assert_eq!(placed.instances.len(), 4);
        for (i, &h) in hashes.iter().enumerate() {
            let rs = p.replicas(&t, h);
            let got: Vec<&Instance> = placed
                .replicas(i)
                .iter()
                .map(|&k| &placed.instances[k as usize])
                .collect();
            assert_eq!(got, rs.instances.iter().collect::<Vec<_>>());
            assert_eq!(placed.min_success(i), rs.min_success);
        }
        assert!(placed.replicas(hashes.len()).is_empty());
    }

    #[test]
    fn small_lists_cap_the_factor() {
        let t = TenantId::new("t").unwrap();
        let p = StaticPlacement::new(&addrs(1), 3);
        let r = p.replicas(&t, 42);
        assert_eq!((r.instances.len(), r.min_success), (1, 1));
        assert_eq!(p.read_max_failures(), 0);
        let p = StaticPlacement::new(&addrs(2), 3);
        let r = p.replicas(&t, 42);
        assert_eq!((r.instances.len(), r.min_success), (2, 2));
        let p = StaticPlacement::new(&[], 3);
        assert!(p.replicas(&t, 42).instances.is_empty());
    }

    #[test]
    fn balance_over_three() {
        let p = StaticPlacement::new(&addrs(3), 1);
        let t = TenantId::new("t").unwrap();
        let mut count = std::collections::HashMap::new();
        for i in 0..30_000u32 {
            let l = Labels::from_pairs([("__name__", "m"), ("i", &i.to_string())]);
            let r = p.replicas(&t, series_hash(&t, &l));
            *count.entry(r.instances[0].id.clone()).or_insert(0u32) += 1;
        }
        let max = *count.values().max().unwrap() as f64;
        let min = *count.values().min().unwrap() as f64;
        assert!(max / min < 1.3, "{count:?}");
    }
}
