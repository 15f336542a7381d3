//! `--target=compactor`: the cluster compactor's loop, its tenant
//! ownership and its metrics.
//!
//! Every `compactor.interval` the compactor lists the tenants of the
//! bucket and runs `stratus_tsdb::compact_tenant` (retention, vertical
//! merge of the replicas, level windows, delayed deletion) on each tenant
//! it owns. With a ring store (`--etcd.endpoints`) compactors register in
//! their own ring (`compactor`, RF 1): a tenant belongs to the first
//! ACTIVE instance with a fresh heartbeat clockwise from the tenant's
//! `shard_key` (tenant, no labels), checked again right before the tenant
//! is compacted; a compactor that dies stops heartbeating and its tenants
//! move to the next instances after `ring.heartbeat_timeout`, one that
//! shuts down goes LEAVING first so they move at once. Without a ring the
//! one compactor owns every tenant. With a ring, a tenant is compacted
//! under a lease in the KV store (`compactor_lease`), so that two
//! compactors that both think they own it during a ring change do not
//! compact it at the same time.
//!
//! Retention: `compactor.retention`, overridden per tenant by the
//! `retention` limit (plan < tenant) of the tenant registry: the one
//! shared through etcd (`registry.store=etcd`, the default with
//! `--etcd.endpoints`), read live, so a limit set on any node applies at
//! the next pass; else the compactor's own `<data-dir>/registry.json`,
//! re-read every pass (copy the distributors' file there, or manage it
//! through the compactor's admin API).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use stratus_api::{Backends, ExtraMetrics, ServerConfig};
use stratus_model::{Labels, TenantId};
use stratus_objstore::Bucket;
use stratus_ring::{Kv, Lifecycler, LifecyclerConfig, Ring, RingConfig};
use stratus_tenancy::{FileRegistry, Registry};
use stratus_tsdb::{CompactStats, CompactorConfig};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::compactor_lease::Acquired;

/// The ring compactors register in.
pub(crate) const RING_NAME: &str = "compactor";

/// Checks the compactor settings.
pub(crate) fn validate(c: &ServerConfig) -> anyhow::Result<()> {
    let r = &c.compactor_block_ranges;
    if r.is_empty() {
        anyhow::bail!("compactor.block_ranges needs at least one range (e.g. 2h,12h,24h)");
    }
    let ms: Vec<u128> = r.iter().map(Duration::as_millis).collect();
    if ms.contains(&0) {
        anyhow::bail!("compactor.block_ranges must be positive");
    }
    for w in ms.windows(2) {
        if let [a, b] = w
            && (b <= a || b % a != 0)
        {
            anyhow::bail!(
                "compactor.block_ranges must ascend, each a multiple of the one before: {}",
                r.iter()
                    .map(|d| humantime::format_duration(*d).to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
    }
    Ok(())
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The engine-side settings (retention: the server default).
pub(crate) fn tsdb_config(c: &ServerConfig) -> CompactorConfig {
    CompactorConfig {
        block_ranges: c.compactor_block_ranges.iter().map(|d| ms(*d)).collect(),
        compaction_delay: ms(c.compactor_compaction_delay),
        retention: (!c.compactor_retention.is_zero()).then(|| ms(c.compactor_retention)),
        deletion_delay: ms(c.compactor_deletion_delay),
    }
}

/// The compactor's lifecycler settings: id `<hostname>-<HTTP port>`
/// (`ring.instance_id` when set), address = its HTTP address, tokens in
/// `<data-dir>/compactor-ring-tokens.json` (`ring.tokens_file` when set).
fn lifecycler_config(c: &ServerConfig, http_addr: &str) -> LifecyclerConfig {
    let port = http_addr.rsplit_once(':').map_or("", |(_, p)| p);
    let id = if c.ring.instance_id.is_empty() {
        format!("{}-{port}", crate::cluster_ring::hostname())
    } else {
        c.ring.instance_id.clone()
    };
    let mut l = LifecyclerConfig::new(RING_NAME, id, http_addr.to_string());
    l.http_addr = http_addr.to_string();
    l.zone = c.ring.zone.clone();
    l.heartbeat_period = c.ring.heartbeat_period;
    l.tokens_file = Some(
        c.ring
            .tokens_file
            .clone()
            .unwrap_or_else(|| c.data_dir.join("compactor-ring-tokens.json")),
    );
    l
}

/// Counters of the compactor, exported on `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct CompactorMetrics {
    runs: AtomicU64,
    tenants_owned: AtomicU64,
    tenants_compacted: AtomicU64,
    tenant_failures: AtomicU64,
    /// Tenants skipped because another compactor held their lease.
    lease_busy: AtomicU64,
    vertical_groups: AtomicU64,
    level_groups: AtomicU64,
    marked_compacted: AtomicU64,
    marked_retention: AtomicU64,
    deleted: AtomicU64,
    last_success_s: AtomicU64,
}

impl CompactorMetrics {
    fn add(&self, s: &CompactStats) {
        let add = |c: &AtomicU64, n: usize| {
            c.fetch_add(n as u64, Ordering::Relaxed);
        };
        add(&self.tenants_compacted, 1);
        add(&self.vertical_groups, s.groups);
        add(&self.level_groups, s.level_groups);
        add(
            &self.marked_compacted,
            s.marked.saturating_sub(s.retention_marked),
        );
        add(&self.marked_retention, s.retention_marked);
        add(&self.deleted, s.deleted);
    }
}

impl ExtraMetrics for CompactorMetrics {
    fn encode(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut o = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            o.push_str(&format!("# TYPE {name} {kind}\n# HELP {name} {help}\n"));
            let suffix = if kind == "counter" { "_total" } else { "" };
            for (labels, v) in samples {
                o.push_str(&format!("{name}{suffix}{labels} {v}\n"));
            }
        };
        family(
            "stratus_compactor_runs",
            "counter",
            "Compactor passes over the bucket.",
            &[("", g(&self.runs))],
        );
        family(
            "stratus_compactor_tenants_owned",
            "gauge",
            "Tenants this compactor owned in its last pass.",
            &[("", g(&self.tenants_owned))],
        );
        family(
            "stratus_compactor_tenants_compacted",
            "counter",
            "Tenant compaction runs that succeeded.",
            &[("", g(&self.tenants_compacted))],
        );
        family(
            "stratus_compactor_tenant_failures",
            "counter",
            "Tenant compaction runs that failed.",
            &[("", g(&self.tenant_failures))],
        );
        family(
            "stratus_compactor_tenants_skipped_leased",
            "counter",
            "Tenants left for a later pass because another compactor held their lease.",
            &[("", g(&self.lease_busy))],
        );
        family(
            "stratus_compactor_groups_merged",
            "counter",
            "Groups of blocks merged into one.",
            &[
                ("{kind=\"vertical\"}", g(&self.vertical_groups)),
                ("{kind=\"level\"}", g(&self.level_groups)),
            ],
        );
        family(
            "stratus_compactor_blocks_marked_for_deletion",
            "counter",
            "Blocks marked for deletion in the bucket index.",
            &[
                ("{reason=\"compacted\"}", g(&self.marked_compacted)),
                ("{reason=\"retention\"}", g(&self.marked_retention)),
            ],
        );
        family(
            "stratus_compactor_blocks_deleted",
            "counter",
            "Marked blocks whose objects were deleted after the deletion delay.",
            &[("", g(&self.deleted))],
        );
        family(
            "stratus_compactor_last_successful_run_timestamp_seconds",
            "gauge",
            "When the last pass without a failed tenant ended.",
            &[("", g(&self.last_success_s))],
        );
        o
    }
}

/// This compactor's place in the compactor ring.
struct Ownership {
    lifecycler: Arc<Lifecycler>,
    ring: Ring,
    /// The ring's KV store, for the per-tenant leases.
    kv: Arc<dyn Kv>,
    /// How long a lease lasts unrenewed (the ring's heartbeat timeout: a
    /// dead compactor's tenants move and its leases lapse together).
    lease_ttl: Duration,
}

impl Ownership {
    fn owns(&self, tenant: &TenantId) -> bool {
        let key = stratus_ring::shard_key(tenant.as_str(), &Labels::empty());
        let snap = self.ring.snapshot();
        snap.owner_at(key, stratus_ring::desc::now_ms())
            .is_some_and(|i| i.id == self.lifecycler.id())
    }
}

struct Compactor {
    bucket: Bucket,
    work: PathBuf,
    cfg: CompactorConfig,
    registry: RetentionSource,
    owner: Option<Ownership>,
    metrics: Arc<CompactorMetrics>,
    /// The tenants owned in the previous pass (to log changes).
    last_owned: std::sync::Mutex<Vec<String>>,
}

/// Where per-tenant retention limits come from.
enum RetentionSource {
    /// The registry every node shares (etcd).
    Shared(Arc<dyn Registry>),
    /// A registry file of this process, re-read every pass.
    File(PathBuf),
}

/// Per-tenant retention from the registry: `Some(Some(ms))` or
/// `Some(None)` (forever) when the tenant's plan or overrides set it.
fn registry_retention(reg: Option<&dyn Registry>, t: &TenantId) -> Option<Option<i64>> {
    let r = reg?.limits(t).retention?;
    Some((!r.is_zero()).then(|| ms(r)))
}

fn open_registry(path: &Path) -> Option<FileRegistry> {
    if !path.exists() {
        return None;
    }
    match FileRegistry::open(path) {
        Ok(r) => Some(r),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "compactor: cannot read the registry; default retention for every tenant");
            None
        }
    }
}

impl Compactor {
    /// One pass over every tenant of the bucket.
    async fn pass(&self) {
        self.metrics.runs.fetch_add(1, Ordering::Relaxed);
        let tenants = match self.bucket.list_dirs("").await {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "compactor: listing tenants failed");
                return;
            }
        };
        let file;
        let reg: Option<&dyn Registry> = match &self.registry {
            RetentionSource::Shared(r) => Some(r.as_ref()),
            RetentionSource::File(path) => {
                file = open_registry(path);
                file.as_ref().map(|r| r as &dyn Registry)
            }
        };
        let mut owned = Vec::new();
        let mut failed = false;
        for t in tenants {
            let Ok(id) = TenantId::new(&t) else {
                continue;
            };
            if let Some(o) = &self.owner
                && !o.owns(&id)
            {
                continue;
            }
            owned.push(t);
            let lease = match &self.owner {
                None => None,
                Some(o) => match crate::compactor_lease::acquire(
                    o.kv.clone(),
                    id.as_str(),
                    o.lifecycler.id(),
                    o.lease_ttl,
                )
                .await
                {
                    Ok(Acquired::Held(l)) => Some(l),
                    Ok(Acquired::Busy { holder }) => {
                        self.metrics.lease_busy.fetch_add(1, Ordering::Relaxed);
                        info!(tenant = %id, holder, "compactor: tenant is being compacted by another compactor; next pass");
                        continue;
                    }
                    Err(e) => {
                        failed = true;
                        self.metrics.tenant_failures.fetch_add(1, Ordering::Relaxed);
                        warn!(tenant = %id, error = %e, "compactor: cannot take the tenant's lease; next pass");
                        continue;
                    }
                },
            };
            let mut cfg = self.cfg.clone();
            if let Some(r) = registry_retention(reg, &id) {
                cfg.retention = r;
            }
            let b = self.bucket.with_prefix(id.as_str());
            let work = self.work.join(id.as_str());
            match stratus_tsdb::compact_tenant(&b, &work, &cfg).await {
                Ok(s) => {
                    self.metrics.add(&s);
                    if s.groups + s.level_groups + s.marked + s.deleted > 0 {
                        info!(tenant = %id, groups = s.groups, level_groups = s.level_groups,
                            marked = s.marked, retention_marked = s.retention_marked,
                            deleted = s.deleted, blocks = s.blocks, "compactor: tenant compacted");
                    }
                }
                Err(e) => {
                    failed = true;
                    self.metrics.tenant_failures.fetch_add(1, Ordering::Relaxed);
                    warn!(tenant = %id, error = %e, "compactor: tenant failed");
                }
            }
            if let Some(l) = lease {
                l.release().await;
            }
        }
        self.metrics
            .tenants_owned
            .store(owned.len() as u64, Ordering::Relaxed);
        let changed = {
            let mut last = self
                .last_owned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let changed = *last != owned;
            if changed {
                last.clone_from(&owned);
            }
            changed
        };
        if changed {
            info!(
                count = owned.len(),
                owned = owned.join(","),
                "compactor: tenants owned"
            );
        }
        if !failed {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.metrics.last_success_s.store(now, Ordering::Relaxed);
        }
    }
}

/// Starts the compactor: joins the compactor ring when `kv` is set
/// (ACTIVE at once; `/compactor/ring` serves it), adds its metrics and
/// routes to `backends`, and runs a pass every `compactor.interval` until
/// `stop`. Returns the loop and the lifecycler (the caller marks it
/// LEAVING on shutdown and unregisters it).
pub(crate) async fn start(
    cfg: &ServerConfig,
    kv: Option<Arc<dyn Kv>>,
    http_addr: String,
    stop: tokio::sync::watch::Receiver<bool>,
    backends: &mut Backends,
) -> anyhow::Result<(JoinHandle<()>, Option<Arc<Lifecycler>>)> {
    let bucket = stratus_api::open_bucket(cfg).await?;
    let mut owner = None;
    if let Some(kv) = kv {
        let lc = Lifecycler::start(kv.clone(), lifecycler_config(cfg, &http_addr))
            .await
            .context("cannot join the compactor ring")?;
        let mut rc = RingConfig::new(RING_NAME);
        rc.replication_factor = 1;
        rc.heartbeat_timeout = cfg.ring.heartbeat_timeout;
        let ring = Ring::start(kv.clone(), rc)
            .await
            .context("cannot read the compactor ring")?;
        info!(id = lc.id(), "ACTIVE in the compactor ring");
        let routes = stratus_ring::http::router_at("/compactor/ring", ring.clone());
        backends.operator_routes = Some(match backends.operator_routes.take() {
            Some(r) => r.merge(routes),
            None => routes,
        });
        owner = Some(Ownership {
            lifecycler: Arc::new(lc),
            ring,
            kv,
            lease_ttl: cfg.ring.heartbeat_timeout,
        });
    }
    let metrics = Arc::new(CompactorMetrics::default());
    backends.extra_metrics = Some(metrics.clone());
    let lifecycler = owner.as_ref().map(|o| o.lifecycler.clone());
    let c = Arc::new(Compactor {
        bucket,
        work: cfg.data_dir.join("compactor"),
        cfg: tsdb_config(cfg),
        registry: match &backends.registry {
            Some(shared) => RetentionSource::Shared(shared.clone()),
            None => RetentionSource::File(cfg.data_dir.join("registry.json")),
        },
        owner,
        metrics,
        last_owned: Default::default(),
    });
    let every = cfg.compactor_interval;
    let task = tokio::spawn(crate::cluster::periodic(every, stop, move || {
        let c = c.clone();
        async move { c.pass().await }
    }));
    Ok((task, lifecycler))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ranges_rules() {
        let mut c = ServerConfig::default();
        validate(&c).unwrap();
        let h = |n: u64| Duration::from_secs(n * 3600);
        c.compactor_block_ranges = vec![h(2)];
        validate(&c).unwrap();
        c.compactor_block_ranges = vec![h(2), h(3)];
        assert!(validate(&c).is_err(), "not a multiple");
        c.compactor_block_ranges = vec![h(12), h(2)];
        assert!(validate(&c).is_err(), "descending");
        c.compactor_block_ranges = vec![];
        assert!(validate(&c).is_err());
        let t = tsdb_config(&ServerConfig::default());
        assert_eq!(t, CompactorConfig::default());
    }

    #[test]
    fn metrics_text() {
        let m = CompactorMetrics::default();
        m.add(&CompactStats {
            groups: 2,
            marked: 5,
            retention_marked: 1,
            ..CompactStats::default()
        });
        let t = m.encode();
        assert!(
            t.contains("stratus_compactor_groups_merged_total{kind=\"vertical\"} 2"),
            "{t}"
        );
        assert!(t.contains(
            "stratus_compactor_blocks_marked_for_deletion_total{reason=\"compacted\"} 4"
        ));
        assert!(t.contains("stratus_compactor_tenants_owned 0"));
    }
}
