//! Per-tenant compaction leases in the ring's KV store (etcd).
//!
//! Ring ownership decides which compactor should compact a tenant, but
//! during a ring change (a compactor joins, leaves or misses heartbeats)
//! two compactors can each see themselves as the owner for a moment. The
//! vertical merge keeps the result correct either way; the lease keeps
//! the work from being done twice: before compacting a tenant a compactor
//! takes `/stratus/compactor-leases/<tenant>` with a compare-and-swap,
//! renews it while the pass runs, and deletes it afterwards. A lease held
//! by another compactor and not yet expired makes the tenant wait for the
//! next pass; an expired one (its holder died) is taken over.
//!
//! The value is JSON `{"holder": "<instance id>", "expires_ms": <unix ms>}`.
//! Expiry uses wall clocks, as ring heartbeats do.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stratus_ring::{CasOutcome, Kv, Precondition, Versioned};
use tracing::warn;

/// Prefix of the lease keys (one key per tenant).
pub(crate) const LEASE_PREFIX: &str = "/stratus/compactor-leases/";

#[derive(Debug, Serialize, Deserialize)]
struct LeaseValue {
    holder: String,
    expires_ms: u64,
}

/// What [`acquire`] found.
#[derive(Debug)]
pub(crate) enum Acquired {
    /// The lease is ours until released (or until it expires unrenewed).
    Held(Lease),
    /// Another live compactor holds it.
    Busy {
        /// That compactor's instance id.
        holder: String,
    },
}

/// A held lease; renewed by a background task until [`Lease::release`].
#[derive(Debug)]
pub(crate) struct Lease {
    kv: Arc<dyn Kv>,
    key: String,
    holder: String,
    version: Arc<std::sync::atomic::AtomicI64>,
    renew: tokio::task::JoinHandle<()>,
}

fn now_ms() -> u64 {
    stratus_ring::desc::now_ms()
}

fn encode(holder: &str, ttl: Duration) -> Vec<u8> {
    let v = LeaseValue {
        holder: holder.to_string(),
        expires_ms: now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Whether the stored lease lets `holder` take it: ours, expired or
/// unreadable (a value no compactor wrote is not a reason to stall).
fn takeable(cur: &Versioned, holder: &str) -> Result<(), String> {
    match serde_json::from_slice::<LeaseValue>(&cur.value) {
        Ok(v) if v.holder != holder && v.expires_ms > now_ms() => Err(v.holder),
        _ => Ok(()),
    }
}

/// Takes the lease on `tenant` for `holder` for `ttl`, renewed every
/// third of `ttl` while held. KV errors are returned (the caller skips
/// the tenant this pass).
pub(crate) async fn acquire(
    kv: Arc<dyn Kv>,
    tenant: &str,
    holder: &str,
    ttl: Duration,
) -> stratus_ring::Result<Acquired> {
    let key = format!("{LEASE_PREFIX}{tenant}");
    let mut cond = match kv.get(&key).await? {
        None => Precondition::Absent,
        Some(cur) => match takeable(&cur, holder) {
            Ok(()) => Precondition::Version(cur.version),
            Err(holder) => return Ok(Acquired::Busy { holder }),
        },
    };
    // Two rounds: a conflict means someone wrote in between; look once
    // more at what they wrote.
    for _ in 0..2 {
        match kv.put(&key, encode(holder, ttl), cond).await? {
            CasOutcome::Done { version } => {
                let version = Arc::new(std::sync::atomic::AtomicI64::new(version));
                let renew = tokio::spawn(renew_loop(
                    kv.clone(),
                    key.clone(),
                    holder.to_string(),
                    ttl,
                    version.clone(),
                ));
                return Ok(Acquired::Held(Lease {
                    kv,
                    key,
                    holder: holder.to_string(),
                    version,
                    renew,
                }));
            }
            CasOutcome::Conflict { current: None } => cond = Precondition::Absent,
            CasOutcome::Conflict { current: Some(cur) } => match takeable(&cur, holder) {
                Ok(()) => cond = Precondition::Version(cur.version),
                Err(holder) => return Ok(Acquired::Busy { holder }),
            },
        }
    }
    Ok(Acquired::Busy {
        holder: "(contended)".to_string(),
    })
}

async fn renew_loop(
    kv: Arc<dyn Kv>,
    key: String,
    holder: String,
    ttl: Duration,
    version: Arc<std::sync::atomic::AtomicI64>,
) {
    use std::sync::atomic::Ordering;
    let every = (ttl / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let v = version.load(Ordering::Acquire);
        match kv
            .put(&key, encode(&holder, ttl), Precondition::Version(v))
            .await
        {
            Ok(CasOutcome::Done { version: nv }) => version.store(nv, Ordering::Release),
            Ok(CasOutcome::Conflict { .. }) => {
                warn!(
                    key,
                    "compactor: lease taken over by another compactor while compacting"
                );
                return;
            }
            Err(e) => warn!(key, error = %e, "compactor: lease renewal failed; retrying"),
        }
    }
}

impl Lease {
    /// Stops renewing and deletes the lease (if it is still ours).
    pub(crate) async fn release(self) {
        self.renew.abort();
        let _ = self.renew.await;
        let v = self.version.load(std::sync::atomic::Ordering::Acquire);
        if let Err(e) = self.kv.delete(&self.key, Precondition::Version(v)).await {
            warn!(key = self.key, holder = self.holder, error = %e,
                "compactor: cannot release the lease; it expires on its own");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_ring::MemKv;

    fn kv() -> Arc<dyn Kv> {
        Arc::new(MemKv::new())
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_release_frees_it() {
        let kv = kv();
        let ttl = Duration::from_secs(60);
        let Acquired::Held(a) = acquire(kv.clone(), "t1", "a", ttl).await.unwrap() else {
            panic!("free lease not taken");
        };
        match acquire(kv.clone(), "t1", "b", ttl).await.unwrap() {
            Acquired::Busy { holder } => assert_eq!(holder, "a"),
            Acquired::Held(_) => panic!("two holders"),
        }
        // Another tenant is independent.
        let Acquired::Held(c) = acquire(kv.clone(), "t2", "b", ttl).await.unwrap() else {
            panic!("other tenant busy");
        };
        a.release().await;
        assert!(
            kv.get("/stratus/compactor-leases/t1")
                .await
                .unwrap()
                .is_none()
        );
        let Acquired::Held(b) = acquire(kv.clone(), "t1", "b", ttl).await.unwrap() else {
            panic!("released lease not taken");
        };
        b.release().await;
        c.release().await;
        assert!(kv.list(LEASE_PREFIX).await.unwrap().entries.is_empty());
    }

    #[tokio::test]
    async fn expired_or_own_or_garbage_lease_is_taken() {
        let kv = kv();
        let key = format!("{LEASE_PREFIX}t");
        let dead = serde_json::to_vec(&LeaseValue {
            holder: "dead".into(),
            expires_ms: now_ms() - 1,
        })
        .unwrap();
        kv.put(&key, dead, Precondition::Any).await.unwrap();
        let Acquired::Held(l) = acquire(kv.clone(), "t", "a", Duration::from_secs(60))
            .await
            .unwrap()
        else {
            panic!("expired lease not taken");
        };
        // Left behind by a crash of this same instance: still ours.
        std::mem::forget(l);
        assert!(matches!(
            acquire(kv.clone(), "t", "a", Duration::from_secs(60))
                .await
                .unwrap(),
            Acquired::Held(_)
        ));
        kv.put(&key, b"not json".to_vec(), Precondition::Any)
            .await
            .unwrap();
        assert!(matches!(
            acquire(kv.clone(), "t", "b", Duration::from_secs(60))
                .await
                .unwrap(),
            Acquired::Held(_)
        ));
    }

    #[tokio::test]
    async fn renewal_keeps_the_lease_past_its_ttl() {
        let kv = kv();
        let ttl = Duration::from_millis(300);
        let Acquired::Held(a) = acquire(kv.clone(), "t", "a", ttl).await.unwrap() else {
            panic!("not taken");
        };
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(matches!(
            acquire(kv.clone(), "t", "b", ttl).await.unwrap(),
            Acquired::Busy { .. }
        ));
        a.release().await;
        assert!(matches!(
            acquire(kv.clone(), "t", "b", ttl).await.unwrap(),
            Acquired::Held(_)
        ));
    }
}
