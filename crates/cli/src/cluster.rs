//! `--target`: running one process as cluster components.
//!
//! `all` (the default) is the single process and does not come here. The
//! other targets run the same HTTP API (`stratus_api::serve_with`) with
//! cluster backends: `distributor` writes through a
//! `stratus_cluster::Distributor`, `querier` reads through a
//! `stratus_cluster::Querier`, `ingester` serves its local databases over
//! gRPC (`--grpc-listen`) besides HTTP; `write` = distributor + ingester,
//! `read` = querier. Membership is the hash ring in etcd
//! (`--etcd.endpoints`, `RingPlacement`; see `cluster_ring`): ingesters
//! join it (JOINING, ACTIVE after their WALs replayed, LEAVING then
//! unregistered on graceful shutdown), and every component with a ring
//! serves `/ring`. The static alternative is `--ingester.addrs`
//! (`StaticPlacement`, replication factor min(`ring.replication_factor`, n)).
//! Distributors with a ring keep the HA tracker's elections in the same
//! store (`Backends::ha_kv`), so they agree on each HA pair's replica.
//!
//! History: ingesters with `--ingester.id` ship their blocks to the shared
//! bucket under their own bucket index; `store` serves the bucket's blocks
//! over the same gRPC read RPCs (`--store.addrs` on the querier);
//! `compactor` (`crate::compactor`) merges the replicas' overlapping
//! blocks, level windows and applies retention, each tenant by the one
//! compactor owning it in the compactor ring.
//!
//! `query-frontend` runs `stratus_frontend::serve` alone (no storage, no
//! ring): it splits, caches and queues queries for the queriers at
//! `--frontend.downstream-url`. It is not part of `read`, which serves
//! the querier's API on the same port the frontend would need.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use stratus_api::{Backends, ServerConfig};
use stratus_cluster::{
    ClientConfig, Distributor, GrpcMetrics, IngesterService, Placement, Querier, RingPlacement,
    StaticPlacement,
};
use stratus_tsdb::BucketStore;
use tracing::info;

/// The targets `--target` accepts.
pub(crate) const TARGETS: &[&str] = &[
    "all",
    "distributor",
    "ingester",
    "querier",
    "write",
    "read",
    "store",
    "compactor",
    "query-frontend",
];

/// Which components a target runs: (distributor, ingester, querier).
fn components(target: &str) -> (bool, bool, bool) {
    match target {
        "distributor" => (true, false, false),
        "ingester" => (false, true, false),
        "querier" | "read" => (false, false, true),
        "write" => (true, true, false),
        "store" | "compactor" | "query-frontend" => (false, false, false),
        _ => (true, true, true),
    }
}

/// Checks the cluster settings of a resolved config.
pub(crate) fn validate(c: &ServerConfig) -> anyhow::Result<()> {
    if !TARGETS.contains(&c.target.as_str()) {
        anyhow::bail!(
            "unknown target {:?}: expected one of {}",
            c.target,
            TARGETS.join(", ")
        );
    }
    let (dist, _, quer) = components(&c.target);
    if c.target == "query-frontend" {
        stratus_frontend::validate(&c.frontend)?;
    } else if c.target != "all" {
        crate::cluster_ring::validate(c, dist || quer)?;
    } else {
        crate::cluster_ring::validate_registry(c)?;
    }
    let id_ok = c
        .ingester_id
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'));
    if !id_ok || c.ingester_id.len() > 128 {
        anyhow::bail!(
            "ingester id {:?}: use at most 128 letters, digits, '.', '_' or '-'",
            c.ingester_id
        );
    }
    if c.store_sync_interval.is_zero() || c.compactor_interval.is_zero() {
        anyhow::bail!("store_sync_interval and compactor_interval must be positive");
    }
    if c.ingester_client_timeout.is_zero() {
        anyhow::bail!("ingester_client_timeout must be positive");
    }
    crate::compactor::validate(c)?;
    Ok(())
}

/// Runs the components of `cfg.target` until `shutdown` resolves. The
/// ingester's gRPC server stops first, then the HTTP server, which syncs
/// the tenant databases.
pub(crate) async fn run(
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (dist, ing, quer) = components(&cfg.target);
    if cfg.target == "query-frontend" {
        let listener = tokio::net::TcpListener::bind(cfg.listen.as_str())
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        return Ok(stratus_frontend::serve(&cfg, listener, shutdown).await?);
    }
    if ing
        && cfg.ingester_id.is_empty()
        && cfg.storage.backend == stratus_objstore::StorageBackend::S3
    {
        anyhow::bail!(
            "target {} on a shared S3 bucket needs a distinct, stable --ingester.id per ingester",
            cfg.target
        );
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen.as_str())
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let grpc_metrics = Arc::new(GrpcMetrics::new());
    let client = ClientConfig {
        timeout: cfg.ingester_client_timeout,
        ..ClientConfig::default()
    };
    // Membership: the hash ring (etcd) when configured, else the static list.
    let kv = crate::cluster_ring::connect(&cfg).await?;
    let ring = match &kv {
        Some(kv) => Some(
            stratus_ring::Ring::start(kv.clone(), crate::cluster_ring::ring_config(&cfg))
                .await
                .context("cannot read the ingester ring")?,
        ),
        None => None,
    };
    let placement: Arc<dyn Placement> = match &ring {
        Some(r) => Arc::new(RingPlacement::new(r.clone())),
        None => Arc::new(StaticPlacement::new(
            &cfg.ingester_addrs,
            cfg.ring.replication_factor,
        )),
    };
    let mut backends = Backends {
        operator_routes: ring.clone().map(stratus_ring::http::router),
        ..Backends::default()
    };
    let http_addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    if let Some(kv) = &kv {
        backends.registry = crate::cluster_registry::open(&cfg, kv, &http_addr).await?;
    }
    let mut dist_lifecycler = None;
    if dist && let Some(kv) = &kv {
        let (lc, share) = crate::cluster_registry::join_distributors(&cfg, kv, &http_addr).await?;
        backends.rate_limit_share = Some(share);
        dist_lifecycler = Some(lc);
    }
    let mut grpc = None;
    let mut lifecycler = None;
    if ing && let Some(kv) = &kv {
        let http = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let lc = stratus_ring::Lifecycler::join(
            kv.clone(),
            crate::cluster_ring::lifecycler_config(&cfg, http),
        )
        .await
        .context("cannot join the ingester ring")?;
        info!(id = lc.id(), "joined the ingester ring (JOINING)");
        lifecycler = Some(Arc::new(lc));
    }
    if ing {
        let tenants = stratus_api::open_tenants(&cfg).await?;
        backends.tenants = Some(tenants.clone());
        let gl = tokio::net::TcpListener::bind(cfg.grpc_listen.as_str())
            .await
            .with_context(|| format!("cannot listen for gRPC on {}", cfg.grpc_listen))?;
        let svc = IngesterService::new(tenants.clone()).with_metrics(grpc_metrics.clone());
        let max = client.max_message_bytes;
        grpc = Some(tokio::spawn(svc.serve(gl, max, stopped(stop_rx.clone()))));
        if let Some(lc) = &lifecycler {
            // Replay every tenant's WAL before taking writes.
            for t in tenants.list().await? {
                tenants.get(&t).await?;
            }
            lc.activate()
                .await
                .context("cannot become ACTIVE in the ring")?;
            info!(id = lc.id(), "ACTIVE in the ingester ring");
        }
    }
    if dist {
        // Distributors agree on HA pairs' elected replicas through the
        // ring's store (etcd); with static membership each keeps its own.
        backends.ha_kv = kv.clone();
        backends.write = Some(Arc::new(
            Distributor::new(placement.clone(), client.clone()).with_metrics(grpc_metrics.clone()),
        ));
    }
    if quer {
        let q = Querier::new(placement.clone(), client.clone())
            .with_metrics(grpc_metrics.clone())
            .with_stores(cfg.store_addrs.clone(), cfg.query_ingesters_within);
        backends.read = Some(Arc::new(q));
    }
    let mut background = None;
    if cfg.target == "store" {
        let bucket = stratus_api::open_bucket(&cfg).await?;
        let store = Arc::new(
            BucketStore::new(bucket, &cfg.data_dir.join("store-cache"))
                .with_chunk_cache_bytes(cfg.store_chunk_cache_bytes)
                .with_index_cache_bytes(cfg.store_index_cache_bytes),
        );
        sync_store(&store).await;
        backends.extra_metrics = Some(Arc::new(StoreMetricsExport(store.clone())));
        let gl = tokio::net::TcpListener::bind(cfg.grpc_listen.as_str())
            .await
            .with_context(|| format!("cannot listen for gRPC on {}", cfg.grpc_listen))?;
        let svc = IngesterService::store(store.clone()).with_metrics(grpc_metrics.clone());
        let max = client.max_message_bytes;
        grpc = Some(tokio::spawn(svc.serve(gl, max, stopped(stop_rx.clone()))));
        let every = cfg.store_sync_interval;
        background = Some(tokio::spawn(periodic(every, stop_rx.clone(), move || {
            let store = store.clone();
            async move { sync_store(&store).await }
        })));
    }
    if cfg.target == "compactor" {
        let http = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let (task, lc) =
            crate::compactor::start(&cfg, kv.clone(), http, stop_rx.clone(), &mut backends).await?;
        lifecycler = lc;
        background = Some(task);
    }
    info!(
        target = %cfg.target,
        ingesters = cfg.ingester_addrs.len(),
        "running cluster components"
    );
    let http_stop = {
        let rx = stop_rx.clone();
        let lc = lifecycler.clone();
        async move {
            stopped(rx).await;
            if let Some(lc) = &lc {
                // No new writes from distributors; reads still served.
                if let Err(e) = lc.leave().await {
                    tracing::error!(error = %e, "cannot mark LEAVING in the ring");
                }
            }
            if let Some(g) = grpc {
                match g.await {
                    Ok(Err(e)) => tracing::error!(error = %e, "gRPC server failed"),
                    Err(e) => tracing::error!(error = %e, "gRPC server task failed"),
                    Ok(Ok(())) => {}
                }
            }
        }
    };
    // The gRPC metrics beside the component's own (store, compactor).
    backends.extra_metrics = Some(match backends.extra_metrics.take() {
        Some(own) => Arc::new(BothMetrics(grpc_metrics, own)),
        None => grpc_metrics,
    });
    // serve_with syncs and closes the tenant databases (WAL flushed)
    // before it returns; only then does the ingester leave the ring.
    let served = stratus_api::serve_with(cfg, listener, backends, http_stop).await;
    if let Some(lc) = dist_lifecycler
        && let Err(e) = lc.shutdown().await
    {
        tracing::warn!(error = %e, "cannot leave the distributor ring");
    }
    if let Some(lc) = lifecycler {
        match lc.unregister().await {
            Ok(()) => info!("left the ring"),
            Err(e) => tracing::error!(error = %e, "cannot unregister from the ring"),
        }
    }
    served?;
    if let Some(b) = background {
        let _ = b.await;
    }
    Ok(())
}

/// Runs `f` now and then every `every` until `stop` turns true.
pub(crate) async fn periodic<F, Fut>(
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    f: F,
) where
    F: Fn() -> Fut + Send,
    Fut: Future<Output = ()> + Send,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            _ = tick.tick() => f().await,
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
}

/// Two components' metrics on one `/metrics`.
#[derive(Debug)]
struct BothMetrics(Arc<GrpcMetrics>, Arc<dyn stratus_api::ExtraMetrics>);

impl stratus_api::ExtraMetrics for BothMetrics {
    fn encode(&self) -> String {
        let mut o = self.0.encode();
        o.push_str(&self.1.encode());
        o
    }
}

/// A store's counters and gauges on `/metrics`.
#[derive(Debug)]
struct StoreMetricsExport(Arc<BucketStore>);

impl stratus_api::ExtraMetrics for StoreMetricsExport {
    fn encode(&self) -> String {
        let m = self.0.metrics();
        let mut o = String::new();
        for (name, kind, help, v) in [
            (
                "stratus_store_chunk_fetched_bytes",
                "counter",
                "Bytes of chunk segments read from the bucket with ranged GETs.",
                m.chunk_bytes_fetched,
            ),
            (
                "stratus_store_chunk_gets",
                "counter",
                "Ranged GETs of chunk segments (nearby ranges merged).",
                m.chunk_gets,
            ),
            (
                "stratus_store_chunk_cache_hits",
                "counter",
                "Chunks served from the in-memory chunk cache.",
                m.chunk_cache_hits,
            ),
            (
                "stratus_store_chunk_cache_misses",
                "counter",
                "Chunks read from the bucket.",
                m.chunk_cache_misses,
            ),
            (
                "stratus_store_chunk_fetch_failures",
                "counter",
                "Chunk fetches that failed (bucket error, short or corrupt read).",
                m.chunk_fetch_failures,
            ),
            (
                "stratus_store_index_downloaded_bytes",
                "counter",
                "Bytes downloaded to open blocks: meta.json, tombstones and index-header parts.",
                m.index_bytes_downloaded,
            ),
            (
                "stratus_store_chunk_cache_bytes",
                "gauge",
                "Bytes held by the in-memory chunk cache.",
                m.chunk_cache_bytes,
            ),
            (
                "stratus_store_chunk_cache_items",
                "gauge",
                "Chunks held by the in-memory chunk cache.",
                m.chunk_cache_items,
            ),
            (
                "stratus_store_chunk_cache_max_bytes",
                "gauge",
                "Byte budget of the in-memory chunk cache.",
                m.chunk_cache_budget,
            ),
            (
                "stratus_store_index_cache_bytes",
                "gauge",
                "Bytes of the served blocks' index headers in the local cache.",
                m.index_cache_bytes,
            ),
            (
                "stratus_store_index_header_builds",
                "counter",
                "Index headers built from ranged reads of block indexes.",
                m.index_header_builds,
            ),
            (
                "stratus_store_index_gets",
                "counter",
                "Ranged GETs of block indexes (header builds, series, postings; nearby ranges merged).",
                m.index_gets,
            ),
            (
                "stratus_store_index_fetched_bytes",
                "counter",
                "Bytes of block indexes read with ranged GETs.",
                m.index_bytes_fetched,
            ),
            (
                "stratus_store_index_entry_cache_hits",
                "counter",
                "Series entries and postings lists served from the in-memory index cache.",
                m.index_cache_hits,
            ),
            (
                "stratus_store_index_entry_cache_misses",
                "counter",
                "Series entries and postings lists read from the bucket.",
                m.index_cache_misses,
            ),
            (
                "stratus_store_index_fetch_failures",
                "counter",
                "Index reads that failed (bucket error, block gone, short or corrupt read).",
                m.index_fetch_failures,
            ),
            (
                "stratus_store_index_entry_cache_bytes",
                "gauge",
                "Bytes held by the in-memory index cache.",
                m.index_cache_used_bytes,
            ),
            (
                "stratus_store_index_entry_cache_items",
                "gauge",
                "Entries held by the in-memory index cache.",
                m.index_cache_items,
            ),
            (
                "stratus_store_index_entry_cache_max_bytes",
                "gauge",
                "Byte budget of the in-memory index cache (--store.index-cache-bytes).",
                m.index_cache_budget,
            ),
        ] {
            let suffix = if kind == "counter" { "_total" } else { "" };
            o.push_str(&format!(
                "# TYPE {name} {kind}\n# HELP {name} {help}\n{name}{suffix} {v}\n"
            ));
        }
        o
    }
}

/// One refresh of a store's block list (errors are logged; the blocks
/// already served stay).
async fn sync_store(store: &BucketStore) {
    match store.sync().await {
        Ok(s) => {
            if s.downloaded > 0 || s.dropped > 0 {
                info!(
                    tenants = s.tenants,
                    blocks = s.blocks,
                    downloaded = s.downloaded,
                    dropped = s.dropped,
                    "store synced with the bucket index"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "store sync with the bucket failed"),
    }
}
