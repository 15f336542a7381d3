//! [`RingPlacement`]: the [`Placement`] of a cluster whose ingesters
//! register in the hash ring (`stratus_ring`, etcd).
//!
//! Writes: a series' replicas are the ring's write replication set for
//! its key ([`series_hash`](crate::series_hash), which is the ring's own
//! `shard_key`): the healthy ACTIVE instances among its RF owners, and the
//! acknowledgements needed are those the ring requires (its quorum, with
//! unhealthy owners counted as failures). Reads: every healthy ACTIVE or
//! LEAVING ingester, tolerating the ring's `max_errors`, both from one
//! snapshot. When the ring cannot form a quorum the set is empty, so the
//! distributor answers 503 and the querier fails the read.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use stratus_model::TenantId;
use stratus_ring::{InstanceDesc, Operation, ReplicationSet, Ring, RingSnapshot};

use crate::placement::{Instance, Placed, Placement, ReplicaSet};

/// Placement over a live [`Ring`].
#[derive(Debug, Clone)]
pub struct RingPlacement {
    ring: Ring,
    /// The [`Instance`]s of the newest snapshot seen, built once per
    /// snapshot so a lookup per series copies no strings.
    cache: Arc<Mutex<InstanceCache>>,
}

#[derive(Debug, Default)]
struct InstanceCache {
    snapshot: Option<Arc<RingSnapshot>>,
    instances: Vec<(Arc<InstanceDesc>, Instance)>,
}

impl RingPlacement {
    /// Placement following `ring` (started with `Ring::start`).
    pub fn new(ring: Ring) -> Self {
        Self {
            ring,
            cache: Arc::default(),
        }
    }

    /// The write replica set of `key` with shared [`Instance`]s.
    fn write_set(&self, key: u32) -> ReplicaSet {
        let snap = self.ring.snapshot();
        let set = match snap.get(key, Operation::Write) {
            Ok(set) => set,
            Err(e) => {
                tracing::debug!(error = %e, "no write replica set");
                return ReplicaSet {
                    instances: Vec::new(),
                    min_success: 1,
                };
            }
        };
        let mut cache = self.lock_cache(&snap);
        let instances = set.instances.iter().map(|d| cache.instance(d)).collect();
        ReplicaSet {
            instances,
            min_success: set.min_success(),
        }
    }

    /// The instance cache, emptied first when `snap` is newer than it.
    fn lock_cache(&self, snap: &Arc<RingSnapshot>) -> MutexGuard<'_, InstanceCache> {
        let mut cache = match self.cache.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !cache
            .snapshot
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, snap))
        {
            cache.snapshot = Some(snap.clone());
            cache.instances.clear();
        }
        cache
    }

    /// The ring followed.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }
}

impl InstanceCache {
    /// The shared [`Instance`] of `d`, built on first use.
    fn instance(&mut self, d: &Arc<InstanceDesc>) -> Instance {
        if let Some((_, i)) = self.instances.iter().find(|(x, _)| Arc::ptr_eq(x, d)) {
            return i.clone();
        }
        let i = instance(d);
        self.instances.push((d.clone(), i.clone()));
        i
    }
}

fn instance(d: &Arc<InstanceDesc>) -> Instance {
    Instance {
        id: d.id.as_str().into(),
        addr: d.addr.as_str().into(),
    }
}

fn convert(set: stratus_ring::Result<ReplicationSet>, what: &str) -> ReplicaSet {
    match set {
        Ok(set) => {
            let min_success = set.min_success();
            ReplicaSet {
                instances: set.instances.iter().map(instance).collect(),
                min_success,
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "no {what} replica set");
            ReplicaSet {
                instances: Vec::new(),
                min_success: 1,
            }
        }
    }
}

impl Placement for RingPlacement {
    fn replicas(&self, _tenant: &TenantId, series_hash: u32) -> ReplicaSet {
        self.write_set(series_hash)
    }

    fn place(&self, _tenant: &TenantId, series_hashes: &[u32]) -> Placed {
        let snap = self.ring.snapshot();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut placed = Placed::default();
        // Snapshot instance index -> index in `placed.instances`.
        let mut local: Vec<Option<u32>> = vec![None; snap.instances().len()];
        let mut idxs: Vec<u32> = Vec::with_capacity(8);
        let mut cache = self.lock_cache(&snap);
        let mut logged = false;
        for &h in series_hashes {
            match snap.get_indices_at(h, Operation::Write, now, &mut idxs) {
                Ok(max_errors) => {
                    let min_success = idxs.len().saturating_sub(max_errors);
                    for &o in &idxs {
                        let o = o as usize;
                        if matches!(local.get(o), Some(None))
                            && let Some(d) = snap.instances().get(o)
                        {
                            let k = placed.add_instance(cache.instance(d));
                            local[o] = Some(k);
                        }
                    }
                    placed.push_indices(
                        idxs.iter()
                            .filter_map(|&o| local.get(o as usize).copied().flatten()),
                        min_success,
                    );
                }
                Err(e) => {
                    if !logged {
                        tracing::debug!(error = %e, "no write replica set");
                        logged = true;
                    }
                    placed.push_indices([], 1);
                }
            }
        }
        placed
    }

    fn all(&self) -> Vec<Instance> {
        self.read_set().instances
    }

    fn read_max_failures(&self) -> usize {
        self.read_set().max_failures()
    }

    fn read_set(&self) -> ReplicaSet {
        convert(self.ring.all_healthy(Operation::Read), "read")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use stratus_model::Labels;
    use stratus_ring::{Kv, Lifecycler, LifecyclerConfig, MemKv, RingConfig};

    use super::*;
    use crate::series_hash;

    #[tokio::test]
    async fn follows_the_ring() {
        let kv: Arc<dyn Kv> = Arc::new(MemKv::new());
        let mut lcs = Vec::new();
        for i in 0..3 {
            let mut c = LifecyclerConfig::new("ingester", format!("i{i}"), format!("h{i}:9095"));
            c.num_tokens = 64;
            lcs.push(Lifecycler::start(kv.clone(), c).await.unwrap());
        }
        let ring = Ring::start(kv.clone(), RingConfig::new("ingester"))
            .await
            .unwrap();
        let p = RingPlacement::new(ring.clone());
        let t = TenantId::new("t").unwrap();
        let h = series_hash(&t, &Labels::from_pairs([("__name__", "up")]));
        let rs = p.replicas(&t, h);
        assert_eq!((rs.instances.len(), rs.min_success), (3, 2));
        let placed = p.place(&t, &[h, h.wrapping_add(1)]);
        let ids: Vec<&str> = placed
            .replicas(0)
            .iter()
            .map(|&k| &*placed.instances[k as usize].id)
            .collect();
        let want: Vec<&str> = rs.instances.iter().map(|i| &*i.id).collect();
        assert_eq!((ids, placed.min_success(0)), (want, 2));
        assert_eq!(placed.replicas(1).len(), 3);
        let rd = p.read_set();
        assert_eq!((rd.instances.len(), rd.min_success), (3, 2));

        // One leaves: writes go to the two ACTIVE owners (both needed),
        // reads still ask the LEAVING one.
        lcs[0].leave().await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while ring.snapshot().instance("i0").map(|d| d.state)
            != Some(stratus_ring::InstanceState::Leaving)
        {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let rs = p.replicas(&t, h);
        assert_eq!((rs.instances.len(), rs.min_success), (2, 2));
        let placed = p.place(&t, &[h]);
        assert_eq!((placed.replicas(0).len(), placed.min_success(0)), (2, 2));
        assert!(rs.instances.iter().all(|i| &*i.id != "i0"));
        assert_eq!(p.read_set().instances.len(), 3);

        // Gone from the ring: the two left are both needed for reads.
        lcs[0].unregister().await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while ring.snapshot().instances().len() != 2 {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let rd = p.read_set();
        assert_eq!((rd.instances.len(), rd.min_success), (2, 2));
    }
}
