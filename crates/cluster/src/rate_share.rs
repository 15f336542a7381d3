//! [`DistributorShare`]: how many distributors share the per-tenant
//! ingestion rate limits, read from the `distributor` ring (every
//! distributor registers there with a `stratus_ring::Lifecycler` and
//! heartbeats). Each distributor then enforces `ingestion_rate / n` for
//! the `n` healthy (ACTIVE, fresh heartbeat) distributors, so the
//! cluster as a whole admits about the configured rate when the load
//! balancer spreads a tenant's pushes evenly (Mimir's "global" strategy).

use stratus_ring::{Operation, Ring};

/// Healthy distributors in the distributor ring (at least 1).
#[derive(Debug, Clone)]
pub struct DistributorShare {
    ring: Ring,
}

impl DistributorShare {
    /// Counts the members of `ring` (the `distributor` ring).
    pub fn new(ring: Ring) -> Self {
        Self { ring }
    }
}

impl stratus_api::RateLimitShare for DistributorShare {
    fn distributors(&self) -> usize {
        let snap = self.ring.snapshot();
        let now = stratus_ring::desc::now_ms();
        snap.instances()
            .iter()
            .filter(|i| snap.is_healthy(i, Operation::Write, now))
            .count()
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use stratus_api::RateLimitShare as _;
    use stratus_ring::{Kv, Lifecycler, LifecyclerConfig, MemKv, RingConfig};

    use super::*;

    #[tokio::test]
    async fn counts_healthy_distributors() {
        let kv: Arc<dyn Kv> = Arc::new(MemKv::new());
        let ring = Ring::start(kv.clone(), RingConfig::new("distributor"))
            .await
            .unwrap();
        let share = DistributorShare::new(ring.clone());
        assert_eq!(share.distributors(), 1, "never below one");
        let mut lcs = Vec::new();
        for id in ["d1", "d2", "d3"] {
            let mut cfg = LifecyclerConfig::new("distributor", id, format!("{id}:9009"));
            cfg.num_tokens = 1;
            let lc = Lifecycler::start(kv.clone(), cfg).await.unwrap();
            lcs.push(lc);
        }
        assert!(
            ring.wait_for(Duration::from_secs(5), |s| s.instances().len() == 3)
                .await
        );
        assert_eq!(share.distributors(), 3);
        let lc = lcs.pop().unwrap();
        lc.shutdown().await.unwrap();
        assert!(
            ring.wait_for(Duration::from_secs(5), |s| s.instances().len() == 2)
                .await
        );
        assert_eq!(share.distributors(), 2);
    }
}
