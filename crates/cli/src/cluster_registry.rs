//! The tenant registry and rate-limit sharing of cluster targets: with
//! `registry.store=etcd` (the default when `--etcd.endpoints` is set)
//! every node uses one `stratus_cluster::KvRegistry` in etcd instead of
//! its own `<data-dir>/registry.json`; distributors register in the
//! `distributor` ring so each enforces its share of the ingestion rate.
//!
//! Admin token: the first node to start on an empty store creates tenant
//! `default`, its token and an admin token, and writes the secrets to its
//! own `<data-dir>/tokens/{default,admin}.token` (logged). With
//! `--auth.admin-token-file` (e.g. a Kubernetes Secret mounted in every
//! pod) each node registers that token's digest at start and the first
//! node makes no admin token of its own.

use std::sync::Arc;

use anyhow::Context as _;
use stratus_api::{AuthMode, RateLimitShare, RegistryStore, ServerConfig};
use stratus_cluster::{DistributorShare, KvRegistry};
use stratus_ring::{Kv, Lifecycler, Ring};
use stratus_tenancy::Registry;
use tracing::info;

/// Reads an operator-provided admin token file.
fn read_admin_token(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
    Ok(text.trim().to_string())
}

/// Opens the shared registry when the config asks for it (`None`: the
/// node keeps its file registry), registers the operator's admin token
/// and runs the one-time bootstrap.
pub(crate) async fn open(
    cfg: &ServerConfig,
    kv: &Arc<dyn Kv>,
    http_addr: &str,
) -> anyhow::Result<Option<Arc<dyn Registry>>> {
    if crate::cluster_ring::registry_store(cfg) != RegistryStore::Etcd {
        return Ok(None);
    }
    let reg = KvRegistry::start(kv.clone())
        .await
        .context("cannot read the tenant registry from etcd")?;
    let provided = match &cfg.registry.admin_token_file {
        Some(path) => {
            let secret = read_admin_token(path)?;
            let info = reg
                .register_admin_token(&secret)
                .await
                .with_context(|| format!("admin token file {}", path.display()))?;
            info!(token_id = info.id, file = %path.display(), "admin token from file registered");
            true
        }
        None => false,
    };
    if cfg.auth == AuthMode::Token {
        let node = crate::cluster_ring::distributor_id(cfg, http_addr);
        let dir = cfg.data_dir.join("tokens");
        if let Some(b) = reg
            .bootstrap(&node, &dir, provided)
            .await
            .context("cannot bootstrap the tenant registry in etcd")?
        {
            info!(
                default_token_file = %b.default_file.display(),
                admin_token_file = ?b.admin_file.as_ref().map(|f| f.display().to_string()),
                "first node of the cluster: created tenant 'default' and its token{} in etcd (secrets only in these files, on this node)",
                if b.admin_file.is_some() { " and an admin token" } else { "" }
            );
        }
    }
    info!(
        tenants = reg.tenants().len(),
        "tenant registry shared through etcd"
    );
    Ok(Some(Arc::new(reg)))
}

/// Registers this distributor in the `distributor` ring (ACTIVE at once,
/// heartbeating) and follows the ring to count the healthy ones.
pub(crate) async fn join_distributors(
    cfg: &ServerConfig,
    kv: &Arc<dyn Kv>,
    http_addr: &str,
) -> anyhow::Result<(Lifecycler, Arc<dyn RateLimitShare>)> {
    let ring = Ring::start(
        kv.clone(),
        crate::cluster_ring::distributor_ring_config(cfg),
    )
    .await
    .context("cannot read the distributor ring")?;
    let lc = Lifecycler::start(
        kv.clone(),
        crate::cluster_ring::distributor_lifecycler(cfg, http_addr),
    )
    .await
    .context("cannot join the distributor ring")?;
    info!(
        id = lc.id(),
        "joined the distributor ring (ingestion rate limits are shared)"
    );
    Ok((lc, Arc::new(DistributorShare::new(ring))))
}
