//! The hash ring settings of cluster targets: which membership a process
//! uses (the etcd ring or the static `--ingester.addrs` list), connecting
//! to the ring's store, and the lifecycler/ring client configurations
//! built from `ring.*` and `etcd.*`.

use std::sync::Arc;

use anyhow::Context as _;
use stratus_api::{RingStore, ServerConfig};
use stratus_ring::{EtcdConfig, EtcdKv, Kv, LifecyclerConfig, MemKv, RingConfig};

/// The ring every Stratus ingester registers in.
pub(crate) const RING_NAME: &str = "ingester";

/// Where a cluster target's ring lives, if it uses one: an explicit
/// `ring.store`, else etcd when `etcd.endpoints` is set.
pub(crate) fn store(c: &ServerConfig) -> Option<RingStore> {
    match c.ring.store {
        Some(s) => Some(s),
        None if !c.etcd.endpoints.is_empty() => Some(RingStore::Etcd),
        None => None,
    }
}

/// Where the tenant registry lives: an explicit `registry.store`, else
/// etcd for cluster targets with `etcd.endpoints`, else the file.
pub(crate) fn registry_store(c: &ServerConfig) -> stratus_api::RegistryStore {
    use stratus_api::RegistryStore as R;
    match c.registry.store {
        Some(s) => s,
        None if c.target != "all" && !c.etcd.endpoints.is_empty() => R::Etcd,
        None => R::File,
    }
}

/// Checks the registry settings.
pub(crate) fn validate_registry(c: &ServerConfig) -> anyhow::Result<()> {
    if registry_store(c) == stratus_api::RegistryStore::Etcd {
        if c.target == "all" {
            anyhow::bail!(
                "registry.store=etcd is for cluster targets (--target=distributor, querier, ...); \
                 the single process keeps <data-dir>/registry.json"
            );
        }
        if c.etcd.endpoints.is_empty() {
            anyhow::bail!("registry.store=etcd needs --etcd.endpoints");
        }
    } else if c.registry.admin_token_file.is_some() {
        anyhow::bail!(
            "--auth.admin-token-file is supported with the etcd registry (cluster targets with \
             --etcd.endpoints); the file registry writes <data-dir>/tokens/admin.token"
        );
    }
    Ok(())
}

/// The distributors' ring (heartbeats only: how many share the rate
/// limits).
pub(crate) const DISTRIBUTOR_RING: &str = "distributor";

/// This process' id in the distributor ring: `ring.instance_id`, else
/// `<hostname>-<HTTP port>`.
pub(crate) fn distributor_id(c: &ServerConfig, http_addr: &str) -> String {
    if c.ring.instance_id.is_empty() {
        format!("{}-{}", hostname(), split_addr(http_addr).1)
    } else {
        c.ring.instance_id.clone()
    }
}

/// The distributor's lifecycler settings (one token; its tokens are not
/// used for placement).
pub(crate) fn distributor_lifecycler(c: &ServerConfig, http_addr: &str) -> LifecyclerConfig {
    let mut l = LifecyclerConfig::new(DISTRIBUTOR_RING, distributor_id(c, http_addr), http_addr);
    l.http_addr = http_addr.to_string();
    l.zone = c.ring.zone.clone();
    l.num_tokens = 1;
    l.heartbeat_period = c.ring.heartbeat_period;
    l
}

/// The distributor ring client's settings.
pub(crate) fn distributor_ring_config(c: &ServerConfig) -> RingConfig {
    let mut r = RingConfig::new(DISTRIBUTOR_RING);
    r.replication_factor = 1;
    r.heartbeat_timeout = c.ring.heartbeat_timeout;
    r
}

/// Checks the ring settings of a cluster target (`needs_members`: it
/// runs a distributor or querier, which must know the ingesters).
pub(crate) fn validate(c: &ServerConfig, needs_members: bool) -> anyhow::Result<()> {
    match store(c) {
        Some(RingStore::Memory) => anyhow::bail!(
            "ring.store=memory keeps the ring inside one process (--target=all); \
             target {} needs --etcd.endpoints (or the static --ingester.addrs)",
            c.target
        ),
        Some(RingStore::Etcd) if c.etcd.endpoints.is_empty() => {
            anyhow::bail!("ring.store=etcd needs --etcd.endpoints")
        }
        Some(RingStore::Etcd) => {}
        None if needs_members && c.ingester_addrs.is_empty() => anyhow::bail!(
            "target {} needs to find the ingesters: set --etcd.endpoints (hash ring in etcd) \
             or --ingester.addrs (static list)",
            c.target
        ),
        None => {}
    }
    let r = &c.ring;
    if r.replication_factor == 0 {
        anyhow::bail!("ring.replication_factor must be at least 1");
    }
    if r.heartbeat_period.is_zero() || r.heartbeat_timeout.is_zero() {
        anyhow::bail!("ring.heartbeat_period and ring.heartbeat_timeout must be positive");
    }
    if r.heartbeat_period >= r.heartbeat_timeout {
        anyhow::bail!(
            "ring.heartbeat_period ({:?}) must be shorter than ring.heartbeat_timeout ({:?})",
            r.heartbeat_period,
            r.heartbeat_timeout
        );
    }
    if !r.instance_id.is_empty() {
        stratus_ring::desc::validate_name("ring.instance_id", &r.instance_id)?;
    }
    validate_registry(c)
}

/// Connects to the ring's store, or `None` for static membership.
pub(crate) async fn connect(c: &ServerConfig) -> anyhow::Result<Option<Arc<dyn Kv>>> {
    Ok(match store(c) {
        None => None,
        Some(RingStore::Memory) => Some(Arc::new(MemKv::new())),
        Some(RingStore::Etcd) => {
            let kv = EtcdKv::connect(&EtcdConfig::new(c.etcd.endpoints.iter().cloned()))
                .await
                .with_context(|| format!("cannot reach etcd at {}", c.etcd.endpoints.join(",")))?;
            Some(Arc::new(kv))
        }
    })
}

/// The ring client's settings.
pub(crate) fn ring_config(c: &ServerConfig) -> RingConfig {
    let mut r = RingConfig::new(RING_NAME);
    r.replication_factor = c.ring.replication_factor;
    r.heartbeat_timeout = c.ring.heartbeat_timeout;
    r
}

pub(crate) fn hostname() -> String {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let h: String = h
        .trim()
        .chars()
        .filter(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'))
        .collect();
    if h.is_empty() { "localhost".into() } else { h }
}

/// `(host, port)` of a `host:port` address (IPv6 in brackets).
fn split_addr(addr: &str) -> (&str, &str) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (h, p),
        None => (addr, ""),
    }
}

/// The ingester's lifecycler settings: id `<hostname>-<gRPC port>` and
/// the gRPC listen address (hostname for an unspecified host) unless set.
pub(crate) fn lifecycler_config(c: &ServerConfig, http_addr: String) -> LifecyclerConfig {
    let (host, port) = split_addr(&c.grpc_listen);
    let id = if c.ring.instance_id.is_empty() {
        format!("{}-{port}", hostname())
    } else {
        c.ring.instance_id.clone()
    };
    let addr = if !c.ring.instance_addr.is_empty() {
        c.ring.instance_addr.clone()
    } else if matches!(host, "" | "0.0.0.0" | "[::]" | "::") {
        format!("{}:{port}", hostname())
    } else {
        c.grpc_listen.clone()
    };
    let mut l = LifecyclerConfig::new(RING_NAME, id, addr);
    l.http_addr = http_addr;
    l.zone = c.ring.zone.clone();
    l.heartbeat_period = c.ring.heartbeat_period;
    l.tokens_file = Some(
        c.ring
            .tokens_file
            .clone()
            .unwrap_or_else(|| c.data_dir.join("ring-tokens.json")),
    );
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_rules() {
        let mut c = ServerConfig {
            target: "distributor".into(),
            ..ServerConfig::default()
        };
        assert!(validate(&c, true).is_err());
        c.etcd.endpoints = vec!["http://127.0.0.1:2379".into()];
        assert_eq!(store(&c), Some(RingStore::Etcd));
        validate(&c, true).unwrap();
        c.ring.store = Some(RingStore::Memory);
        assert!(validate(&c, true).is_err());
        c.ring.store = None;
        c.ring.heartbeat_period = c.ring.heartbeat_timeout;
        assert!(validate(&c, true).is_err());
        c.ring.heartbeat_period = std::time::Duration::from_secs(1);
        c.ring.instance_id = "bad id".into();
        assert!(validate(&c, true).is_err());
    }

    #[test]
    fn lifecycler_defaults() {
        let c = ServerConfig {
            grpc_listen: "127.0.0.1:9123".into(),
            ..ServerConfig::default()
        };
        let l = lifecycler_config(&c, String::new());
        assert!(l.id.ends_with("-9123"), "{}", l.id);
        assert_eq!(l.addr, "127.0.0.1:9123");
        assert_eq!(
            l.tokens_file.as_deref(),
            Some(c.data_dir.join("ring-tokens.json").as_path())
        );
        l.validate().unwrap();
    }
}
