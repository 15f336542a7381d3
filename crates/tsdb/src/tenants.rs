//! One database per tenant, opened lazily and closed when idle.
//!
//! Layout: `<root>/tenants/<tenant>/` holds a tenant's WAL (and, for remote
//! buckets, its block cache); blocks live in the bucket under `<tenant>/`.
//! Tenant ids are validated by [`TenantId`], so a hostile id cannot escape
//! its directory. Databases share nothing, so one tenant's load or
//! corruption cannot touch another's data.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use stratus_model::TenantId;
use stratus_objstore::Bucket;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::db::{Db, DbConfig, DbStats};
use crate::error::Result;

/// The set of tenant databases of one process.
#[derive(Debug)]
pub struct Tenants {
    root: PathBuf,
    bucket: Bucket,
    cfg: DbConfig,
    dbs: Mutex<HashMap<TenantId, Arc<Db>>>,
    overrides: parking_lot::RwLock<HashMap<TenantId, TenantOverrides>>,
}

/// Per-tenant settings that differ from the process defaults. They apply
/// at once to an open database and at every later open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantOverrides {
    /// Retention (`Some(None)` = keep forever).
    pub retention: Option<Option<Duration>>,
    /// Out-of-order window in ms.
    pub ooo_window: Option<i64>,
    /// Limits on new series: (max series, max series per metric name),
    /// 0 = unlimited.
    pub series_limits: Option<(u64, u64)>,
}

impl TenantOverrides {
    fn apply(&self, db: &Db) {
        if let Some(r) = self.retention {
            db.set_retention(r);
        }
        if let Some(w) = self.ooo_window {
            db.set_ooo_window(w);
        }
        if let Some((max, per_metric)) = self.series_limits {
            db.set_series_limits(max, per_metric);
        }
    }
}

impl Tenants {
    /// Manages tenant databases under `root` with blocks in `bucket`.
    pub fn new(root: &Path, bucket: Bucket, cfg: DbConfig) -> Self {
        Self {
            root: root.to_path_buf(),
            bucket,
            cfg,
            dbs: Mutex::new(HashMap::new()),
            overrides: parking_lot::RwLock::new(HashMap::new()),
        }
    }

    fn tenant_dir(&self, t: &TenantId) -> PathBuf {
        self.root.join("tenants").join(t.as_str())
    }

    /// The database of `tenant`, opening it (and replaying its WAL) on
    /// first use.
    pub async fn get(&self, tenant: &TenantId) -> Result<Arc<Db>> {
        let mut dbs = self.dbs.lock().await;
        if let Some(db) = dbs.get(tenant) {
            return Ok(db.clone());
        }
        let db = Arc::new(
            Db::open(
                &self.tenant_dir(tenant),
                self.bucket.with_prefix(tenant.as_str()),
                self.cfg.clone(),
            )
            .await?,
        );
        if let Some(o) = self.overrides.read().get(tenant) {
            o.apply(&db);
        }
        dbs.insert(tenant.clone(), db.clone());
        Ok(db)
    }

    /// Sets a tenant's overrides (replacing earlier ones); applied to the
    /// open database at once.
    pub async fn set_overrides(&self, tenant: &TenantId, o: TenantOverrides) {
        if let Some(db) = self.dbs.lock().await.get(tenant) {
            o.apply(db);
        }
        self.overrides.write().insert(tenant.clone(), o);
    }

    /// The database of `tenant` if it is open.
    pub async fn get_open(&self, tenant: &TenantId) -> Option<Arc<Db>> {
        self.dbs.lock().await.get(tenant).cloned()
    }

    /// Whether `tenant` has data: its database is open, it has a local
    /// directory, or (remote bucket) blocks or a bucket index under its
    /// prefix, so a fresh node on a shared bucket serves its history.
    pub async fn exists(&self, tenant: &TenantId) -> Result<bool> {
        if self.dbs.lock().await.contains_key(tenant) || self.tenant_dir(tenant).exists() {
            return Ok(true);
        }
        if self.bucket.is_local() {
            return Ok(false);
        }
        let b = self.bucket.with_prefix(tenant.as_str());
        if b.get(crate::bucket_index::INDEX_KEY).await?.is_some() {
            return Ok(true);
        }
        Ok(!b.list_dirs("").await?.is_empty())
    }

    /// Tenants with data on disk or open.
    pub async fn list(&self) -> Result<Vec<TenantId>> {
        let mut out: Vec<TenantId> = self.dbs.lock().await.keys().cloned().collect();
        let dir = self.root.join("tenants");
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if let Some(id) = e.file_name().to_str().and_then(|n| TenantId::new(n).ok()) {
                    out.push(id);
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Runs maintenance on every open database and closes those idle for
    /// longer than `idle` (their WAL is synced; the next use replays it).
    pub async fn maintain(&self, idle: Duration) {
        let open: Vec<(TenantId, Arc<Db>)> = self
            .dbs
            .lock()
            .await
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (t, db) in open {
            if let Err(e) = db.maintain().await {
                warn!(tenant = %t, error = %e, "tenant database maintenance failed");
            }
            if db.idle_for() > idle {
                let mut dbs = self.dbs.lock().await;
                // Only close if nobody else holds it.
                if Arc::strong_count(&db) <= 2 {
                    if let Err(e) = db.close() {
                        warn!(tenant = %t, error = %e, "closing idle tenant database");
                    }
                    dbs.remove(&t);
                    info!(tenant = %t, "closed idle tenant database");
                }
            }
        }
    }

    /// Statistics of every open tenant database.
    pub async fn stats(&self) -> Vec<(TenantId, DbStats)> {
        let dbs = self.dbs.lock().await;
        let mut v: Vec<_> = dbs.iter().map(|(t, d)| (t.clone(), d.stats())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Syncs every open database (graceful shutdown).
    pub async fn close_all(&self) -> Result<()> {
        let dbs = self.dbs.lock().await;
        for db in dbs.values() {
            db.close()?;
        }
        Ok(())
    }
}
