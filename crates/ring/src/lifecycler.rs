//! The lifecycler: one instance's membership in a ring.
//!
//! [`Lifecycler::join`] registers the instance as JOINING with its tokens,
//! taken in this order: the token file (a restart, also after `kill -9`),
//! the tokens of an entry with the same id still in the store, or freshly
//! generated ones ([`generate_tokens`],
//! balanced within the instance's zone). Tokens are written to the token
//! file before the store, so they never change once others could see them.
//! A background task then heartbeats every `heartbeat_period`.
//!
//! Every write of the entry (heartbeat or state change) is a
//! compare-and-swap on the version the lifecycler last wrote. On a
//! conflict it takes the current version and writes again: the instance
//! is the authority on its own entry, so a foreign change (an operator
//! edit) is overwritten, and an entry "forgotten" while the instance is
//! alive is re-created at the next heartbeat.
//!
//! Graceful shutdown: [`Lifecycler::leave`] (LEAVING: no new writes, still
//! readable), then the caller flushes or hands over, then
//! [`Lifecycler::unregister`] deletes the entry; [`Lifecycler::shutdown`]
//! does both. Dropping a `Lifecycler` without that stops heartbeats and
//! leaves the entry, exactly like a crash: the ring marks it unhealthy
//! after the heartbeat timeout.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex as SyncMutex;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::desc::{InstanceDesc, InstanceState, instance_key, now_ms, ring_prefix, validate_name};
use crate::error::{Error, Result};
use crate::kv::{CasOutcome, Kv, Precondition};
use crate::tokens::{generate_tokens, load_tokens, store_tokens};

/// How many conflicting writes one update tolerates before giving up.
const CAS_ATTEMPTS: usize = 5;

/// Settings of one ring member.
#[derive(Debug, Clone)]
pub struct LifecyclerConfig {
    /// Ring name, e.g. `ingester`.
    pub ring: String,
    /// Instance id, unique in the ring (e.g. the hostname).
    pub id: String,
    /// gRPC address others use, `host:port`.
    pub addr: String,
    /// HTTP address, `host:port` (may be empty).
    pub http_addr: String,
    /// Availability zone (empty: none).
    pub zone: String,
    /// Tokens to generate for a new instance (default 128).
    pub num_tokens: usize,
    /// Where tokens persist across restarts (recommended; default none).
    pub tokens_file: Option<PathBuf>,
    /// Heartbeat period (default 5s); keep well under the ring's
    /// heartbeat timeout.
    pub heartbeat_period: Duration,
}

impl LifecyclerConfig {
    /// Defaults for instance `id` at `addr` in ring `ring`.
    pub fn new(ring: impl Into<String>, id: impl Into<String>, addr: impl Into<String>) -> Self {
        Self {
            ring: ring.into(),
            id: id.into(),
            addr: addr.into(),
            http_addr: String::new(),
            zone: String::new(),
            num_tokens: 128,
            tokens_file: None,
            heartbeat_period: Duration::from_secs(5),
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        validate_name("ring name", &self.ring)?;
        validate_name("instance id", &self.id)?;
        if self.num_tokens == 0 || self.num_tokens > 4096 {
            return Err(Error::Config {
                message: format!("num_tokens must be 1..=4096, not {}", self.num_tokens),
            });
        }
        if self.heartbeat_period.is_zero() {
            return Err(Error::Config {
                message: "heartbeat_period must be positive".into(),
            });
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Current {
    desc: InstanceDesc,
    /// Version of the entry as last written or seen; `None`: absent.
    version: Option<i64>,
    /// Set by `unregister`: no more writes.
    gone: bool,
}

#[derive(Debug)]
struct Shared {
    kv: Arc<dyn Kv>,
    key: String,
    cur: Mutex<Current>,
    /// Copy of the state for synchronous readers.
    state: SyncMutex<InstanceState>,
}

impl Shared {
    /// Writes `cur.desc` (with a fresh heartbeat) by compare-and-swap.
    async fn write(&self, cur: &mut Current) -> Result<()> {
        if cur.gone {
            return Ok(());
        }
        for _ in 0..CAS_ATTEMPTS {
            cur.desc.heartbeat_ms = now_ms();
            let cond = match cur.version {
                Some(v) => Precondition::Version(v),
                None => Precondition::Absent,
            };
            match self.kv.put(&self.key, cur.desc.encode(), cond).await? {
                CasOutcome::Done { version } => {
                    cur.version = Some(version);
                    *self.state.lock() = cur.desc.state;
                    return Ok(());
                }
                CasOutcome::Conflict { current } => {
                    if current.is_none() {
                        tracing::warn!(key = %self.key, "ring entry vanished (forgotten?); re-registering");
                    }
                    cur.version = current.map(|c| c.version);
                }
            }
        }
        Err(Error::CasRetries {
            key: self.key.clone(),
            attempts: CAS_ATTEMPTS,
        })
    }

    async fn set_state(&self, state: InstanceState) -> Result<()> {
        let mut cur = self.cur.lock().await;
        let old = cur.desc.state;
        cur.desc.state = state;
        let r = self.write(&mut cur).await;
        if r.is_err() {
            // Keep reporting what the store has.
            cur.desc.state = old;
        }
        r
    }
}

/// One instance's membership in a ring; see the module docs.
#[derive(Debug)]
pub struct Lifecycler {
    shared: Arc<Shared>,
    tokens: Arc<[u32]>,
    id: String,
    heartbeat: JoinHandle<()>,
}

impl Drop for Lifecycler {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl Lifecycler {
    /// Registers the instance as JOINING and starts heartbeating.
    pub async fn join(kv: Arc<dyn Kv>, cfg: LifecyclerConfig) -> Result<Lifecycler> {
        cfg.validate()?;
        let key = instance_key(&cfg.ring, &cfg.id);
        let existing = kv.get(&key).await?;
        let existing_desc = existing
            .as_ref()
            .and_then(|v| InstanceDesc::decode(&key, &v.value).ok());

        let from_file = match &cfg.tokens_file {
            Some(p) => match load_tokens(p) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring unusable token file");
                    None
                }
            },
            None => None,
        };
        let tokens = match (from_file, &existing_desc) {
            (Some(t), _) => t,
            (None, Some(d)) if !d.tokens.is_empty() => d.tokens.clone(),
            _ => {
                let listing = kv.list(&ring_prefix(&cfg.ring)).await?;
                let peers: Vec<InstanceDesc> = listing
                    .entries
                    .iter()
                    .filter_map(|(k, v)| InstanceDesc::decode(k, &v.value).ok())
                    .filter(|d| d.id != cfg.id && d.zone == cfg.zone)
                    .collect();
                let refs: Vec<&[u32]> = peers.iter().map(|d| d.tokens.as_slice()).collect();
                generate_tokens(cfg.num_tokens, &refs)?
            }
        };
        if let Some(p) = &cfg.tokens_file {
            store_tokens(p, &tokens)?;
        }

        let now = now_ms();
        let desc = InstanceDesc {
            id: cfg.id.clone(),
            addr: cfg.addr.clone(),
            http_addr: cfg.http_addr.clone(),
            zone: cfg.zone.clone(),
            state: InstanceState::Joining,
            tokens: tokens.clone(),
            registered_at_ms: existing_desc
                .as_ref()
                .map(|d| d.registered_at_ms)
                .filter(|&t| t > 0)
                .unwrap_or(now),
            heartbeat_ms: now,
        };
        let shared = Arc::new(Shared {
            kv,
            key,
            cur: Mutex::new(Current {
                desc,
                version: existing.map(|v| v.version),
                gone: false,
            }),
            state: SyncMutex::new(InstanceState::Joining),
        });
        {
            let mut cur = shared.cur.lock().await;
            shared.write(&mut cur).await?;
        }
        let hb = Arc::clone(&shared);
        let period = cfg.heartbeat_period;
        let heartbeat = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let mut cur = hb.cur.lock().await;
                if cur.gone {
                    return;
                }
                if let Err(e) = hb.write(&mut cur).await {
                    tracing::warn!(key = %hb.key, error = %e, "ring heartbeat failed");
                }
            }
        });
        Ok(Lifecycler {
            shared,
            tokens: tokens.into(),
            id: cfg.id,
            heartbeat,
        })
    }

    /// [`Lifecycler::join`] then [`Lifecycler::activate`].
    pub async fn start(kv: Arc<dyn Kv>, cfg: LifecyclerConfig) -> Result<Lifecycler> {
        let lc = Self::join(kv, cfg).await?;
        lc.activate().await?;
        Ok(lc)
    }

    /// The instance id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The instance's tokens (sorted).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The state last written to the store.
    pub fn state(&self) -> InstanceState {
        *self.shared.state.lock()
    }

    /// Marks the instance ACTIVE (ready for writes).
    pub async fn activate(&self) -> Result<()> {
        self.shared.set_state(InstanceState::Active).await
    }

    /// Marks the instance LEAVING (no new writes; still readable).
    pub async fn leave(&self) -> Result<()> {
        self.shared.set_state(InstanceState::Leaving).await
    }

    /// Writes a heartbeat now (the background task does this every period).
    pub async fn heartbeat(&self) -> Result<()> {
        let mut cur = self.shared.cur.lock().await;
        self.shared.write(&mut cur).await
    }

    /// Stops heartbeating and deletes the instance's entry.
    pub async fn unregister(&self) -> Result<()> {
        self.heartbeat.abort();
        let mut cur = self.shared.cur.lock().await;
        cur.gone = true;
        self.shared
            .kv
            .delete(&self.shared.key, Precondition::Any)
            .await?;
        cur.version = None;
        Ok(())
    }

    /// Graceful shutdown: [`Lifecycler::leave`] then
    /// [`Lifecycler::unregister`]. Flush or hand over data between the two
    /// by calling them yourself.
    pub async fn shutdown(self) -> Result<()> {
        self.leave().await?;
        self.unregister().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::mem::MemKv;

    fn cfg(id: &str, dir: &std::path::Path) -> LifecyclerConfig {
        let mut c = LifecyclerConfig::new("ingester", id, format!("{id}:9095"));
        c.tokens_file = Some(dir.join(format!("{id}.tokens")));
        c.num_tokens = 32;
        c.heartbeat_period = Duration::from_millis(20);
        c
    }

    #[tokio::test]
    async fn tokens_survive_restart_and_crash() {
        let dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn Kv> = Arc::new(MemKv::new());
        let a = Lifecycler::start(Arc::clone(&kv), cfg("a", dir.path()))
            .await
            .unwrap();
        assert_eq!(a.state(), InstanceState::Active);
        let toks = a.tokens().to_vec();
        assert_eq!(toks.len(), 32);
        // Crash: the entry stays; restart with the token file.
        drop(a);
        let a2 = Lifecycler::start(Arc::clone(&kv), cfg("a", dir.path()))
            .await
            .unwrap();
        assert_eq!(a2.tokens(), toks.as_slice());
        a2.shutdown().await.unwrap();
        assert!(kv.get("/stratus/rings/ingester/a").await.unwrap().is_none());
        // Token file lost, but the entry is still in the store after a crash.
        let a3 = Lifecycler::start(Arc::clone(&kv), cfg("a", dir.path()))
            .await
            .unwrap();
        drop(a3);
        std::fs::remove_file(dir.path().join("a.tokens")).unwrap();
        let mut c = cfg("a", dir.path());
        c.tokens_file = None;
        let a4 = Lifecycler::start(Arc::clone(&kv), c).await.unwrap();
        assert_eq!(a4.tokens(), toks.as_slice());
    }

    #[tokio::test]
    async fn heartbeat_overwrites_foreign_change_and_recreates() {
        let dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn Kv> = Arc::new(MemKv::new());
        let a = Lifecycler::start(Arc::clone(&kv), cfg("a", dir.path()))
            .await
            .unwrap();
        let key = "/stratus/rings/ingester/a";
        // A foreign writer changes the entry: the next heartbeat wins it back.
        let mut d = InstanceDesc::decode(key, &kv.get(key).await.unwrap().unwrap().value).unwrap();
        d.state = InstanceState::Leaving;
        kv.put(key, d.encode(), Precondition::Any).await.unwrap();
        a.heartbeat().await.unwrap();
        let d = InstanceDesc::decode(key, &kv.get(key).await.unwrap().unwrap().value).unwrap();
        assert_eq!(d.state, InstanceState::Active);
        // Forgotten while alive: re-created.
        kv.delete(key, Precondition::Any).await.unwrap();
        a.heartbeat().await.unwrap();
        assert!(kv.get(key).await.unwrap().is_some());
    }
}
