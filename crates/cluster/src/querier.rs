//! The querier: a [`Queryable`] over all ingesters, the HTTP API's
//! [`ReadBackend`] in cluster mode, so PromQL and the metadata endpoints
//! run unchanged over the cluster.
//!
//! Every read fans out to all instances of the [`Placement`] at once, each
//! call bounded by the client timeout. It completes as soon as all but
//! the tolerated failures of [`Placement::read_set`] answered (with replication
//! factor 3 and quorum 2, every acknowledged sample is on at least two of
//! its three replicas, so any answer set missing at most one instance
//! holds it); it fails when more instances failed. A hung ingester thus
//! costs nothing once a quorum answered, and a dead one fails its call at
//! once. Replicas' series are merged by label set ([`merge_series`]) and
//! their chunks deduplicated by timestamp when iterated, so each sample is
//! seen once.
//!
//! With store addresses ([`Querier::with_stores`]) every read also asks
//! each store (the blocks in the bucket; all of them must answer), and the
//! ingesters are asked only when the range reaches into the last
//! `query_ingesters_within` (0 = always), as Mimir's
//! `-querier.query-ingesters-within`: history older than the ingesters'
//! retention comes from the stores alone. Ingester and store answers are
//! merged and deduplicated the same way.
//!
//! [`Queryable`] is synchronous (PromQL runs on the blocking pool): calls
//! run on the Tokio runtime the querier was built in, and the caller's
//! thread waits for them.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_api::ReadBackend;
use stratus_model::{Matcher, TenantId};
use stratus_proto::ingester as pb;
use stratus_proto::ingester::ingester_client::IngesterClient;
use stratus_tsdb::{Queryable, SelectHints, Series, merge_series};
use tonic::transport::Channel;

use crate::client::{ClientConfig, Clients};
use crate::convert;
use crate::metrics::GrpcMetrics;
use crate::placement::Placement;

/// Reads from all ingesters.
#[derive(Debug, Clone)]
pub struct Querier {
    placement: Arc<dyn Placement>,
    clients: Arc<Clients>,
    rt: tokio::runtime::Handle,
    /// gRPC addresses of the stores.
    stores: Vec<String>,
    /// Ingesters are asked only for ranges ending after now minus this
    /// (zero: always).
    ingesters_within: Duration,
    metrics: Arc<GrpcMetrics>,
}

impl Querier {
    /// A querier over `placement`; must be created inside the Tokio
    /// runtime that will run its calls.
    pub fn new(placement: Arc<dyn Placement>, cfg: ClientConfig) -> Self {
        Self {
            placement,
            clients: Arc::new(Clients::new(cfg)),
            rt: tokio::runtime::Handle::current(),
            stores: Vec::new(),
            ingesters_within: Duration::ZERO,
            metrics: Arc::default(),
        }
    }

    /// Records the calls to ingesters and stores in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<GrpcMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Also reads history from the stores at `stores` (gRPC addresses);
    /// ingesters are asked only for ranges ending within
    /// `ingesters_within` of now (zero: always).
    pub fn with_stores(mut self, stores: Vec<String>, ingesters_within: Duration) -> Self {
        self.stores = stores;
        self.ingesters_within = ingesters_within;
        self
    }

    /// Whether a read ending at `end_ms` must ask the ingesters.
    fn needs_ingesters(&self, end_ms: i64) -> bool {
        if self.ingesters_within.is_zero() || self.stores.is_empty() {
            return true;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let within = i64::try_from(self.ingesters_within.as_millis()).unwrap_or(i64::MAX);
        end_ms >= now.saturating_sub(within)
    }

    /// The view of one tenant.
    pub fn tenant(&self, tenant: TenantId) -> TenantQuerier {
        TenantQuerier {
            q: self.clone(),
            tenant,
        }
    }

    /// Runs `call` against every instance needed for a read ending at
    /// `end_ms`: the ingesters (all but the tolerated failures must
    /// answer) and the stores (all must answer). Returns the answers.
    /// Blocks the calling thread (which must not be a runtime worker).
    fn fan_out<T, F, Fut>(
        &self,
        what: &'static str,
        end_ms: i64,
        call: F,
    ) -> stratus_tsdb::Result<Vec<T>>
    where
        T: Send + 'static,
        F: Fn(IngesterClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>> + Send + 'static,
    {
        // (addresses, failures tolerated, kind) per group.
        let mut groups: Vec<(Vec<String>, usize, &str)> = Vec::new();
        if self.needs_ingesters(end_ms) {
            // One ring snapshot for both the members and the failures
            // tolerated.
            let set = self.placement.read_set();
            let max_fail = set.max_failures();
            let instances = set.instances;
            if instances.is_empty() {
                return Err(stratus_tsdb::Error::Remote {
                    message: "no ingesters are configured or enough of them healthy".to_string(),
                });
            }
            let n = instances.len();
            groups.push((
                instances.into_iter().map(|i| i.addr.to_string()).collect(),
                max_fail.min(n.saturating_sub(1)),
                "ingester",
            ));
        }
        if !self.stores.is_empty() {
            groups.push((self.stores.clone(), 0, "store"));
        }
        let timeout = self.clients.timeout();
        let (tx, rx) = std::sync::mpsc::channel::<(usize, String, Result<T, tonic::Status>)>();
        let _guard = self.rt.enter();
        for (g, (addrs, _, _)) in groups.iter().enumerate() {
            for addr in addrs {
                let tx = tx.clone();
                let client = self.clients.get(addr);
                let fut = client.map(&call);
                let addr = addr.clone();
                let metrics = self.metrics.clone();
                self.rt.spawn(async move {
                    let start = Instant::now();
                    let r = match fut {
                        Ok(f) => match tokio::time::timeout(timeout, f).await {
                            Ok(r) => r,
                            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                                "no answer within {timeout:?}"
                            ))),
                        },
                        Err(e) => Err(e),
                    };
                    let code = r
                        .as_ref()
                        .err()
                        .map_or(tonic::Code::Ok, tonic::Status::code);
                    metrics.called(method_of_read(what), start, code);
                    let _ = tx.send((g, addr, r));
                });
            }
        }
        drop(tx);
        // A little slack over the per-call timeout for scheduling.
        let deadline = Instant::now() + timeout + Duration::from_millis(200);
        let mut ok = Vec::new();
        let mut oks = vec![0usize; groups.len()];
        let mut fails = vec![0usize; groups.len()];
        let mut failed: Vec<String> = Vec::new();
        let done = |oks: &[usize]| {
            groups
                .iter()
                .zip(oks)
                .all(|((a, m, _), o)| *o >= a.len() - m)
        };
        let broken = |fails: &[usize]| groups.iter().zip(fails).any(|((_, m, _), f)| f > m);
        while !done(&oks) && !broken(&fails) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((g, _, Ok(v))) => {
                    ok.push(v);
                    if let Some(o) = oks.get_mut(g) {
                        *o += 1;
                    }
                }
                Ok((g, addr, Err(s))) => {
                    let kind = groups.get(g).map_or("instance", |x| x.2);
                    failed.push(format!("{kind} {addr}: {:?}: {}", s.code(), s.message()));
                    if let Some(f) = fails.get_mut(g) {
                        *f += 1;
                    }
                }
                Err(_) => {
                    failed.push("some instances did not answer in time".to_string());
                    break;
                }
            }
        }
        if done(&oks) {
            return Ok(ok);
        }
        let counts: Vec<String> = groups
            .iter()
            .zip(&oks)
            .map(|((a, m, kind), o)| {
                format!(
                    "{o} of {} {kind}s answered, {} needed",
                    a.len(),
                    a.len() - m
                )
            })
            .collect();
        Err(stratus_tsdb::Error::Remote {
            message: format!("{what}: {}: {}", counts.join(", "), failed.join("; ")),
        })
    }
}

impl ReadBackend for Querier {
    fn queryable(&self, tenant: &TenantId) -> Arc<dyn Queryable> {
        Arc::new(self.tenant(tenant.clone()))
    }
}

/// The querier's view of one tenant.
#[derive(Debug, Clone)]
pub struct TenantQuerier {
    q: Querier,
    tenant: TenantId,
}

/// The gRPC method behind a [`Querier::fan_out`] read.
fn method_of_read(what: &str) -> &'static str {
    match what {
        "series" => "Series",
        "select" => "QueryStream",
        "label names" => "LabelNames",
        "label values" => "LabelValues",
        _ => "other",
    }
}

fn sorted_union(lists: Vec<Vec<String>>) -> Vec<String> {
    let mut all: Vec<String> = lists.into_iter().flatten().collect();
    all.sort_unstable();
    all.dedup();
    all
}

impl Queryable for TenantQuerier {
    fn select(
        &self,
        matchers: &[Matcher],
        hints: &SelectHints,
    ) -> stratus_tsdb::Result<Vec<Series>> {
        let req = pb::QueryRequest {
            tenant: self.tenant.as_str().to_string(),
            start_ms: hints.start,
            end_ms: hints.end,
            matchers: convert::matchers_to_proto(matchers),
        };
        if hints.labels_only {
            let lists = self.q.fan_out("series", hints.end, |mut c| {
                let req = req.clone();
                async move {
                    let r = c.series(req).await?.into_inner();
                    let mut v: Vec<Series> = r
                        .series
                        .iter()
                        .map(|s| Series {
                            labels: convert::labels_from_proto(&s.labels),
                            parts: Vec::new(),
                        })
                        .collect();
                    v.sort_by(|a, b| a.labels.cmp(&b.labels));
                    Ok(v)
                }
            })?;
            return Ok(merge_series(lists));
        }
        let lists = self.q.fan_out("select", hints.end, |mut c| {
            let req = req.clone();
            async move {
                let mut stream = c.query_stream(req).await?.into_inner();
                let mut v: Vec<Series> = Vec::new();
                while let Some(msg) = stream.message().await? {
                    v.extend(msg.series.into_iter().map(convert::series_from_proto));
                }
                // Sorted per source, as merge_series needs (the ingester
                // sends them sorted; relabelling from the wire keeps it
                // cheap to make sure).
                if !v.is_sorted_by(|a, b| a.labels <= b.labels) {
                    v.sort_by(|a, b| a.labels.cmp(&b.labels));
                }
                Ok(v)
            }
        })?;
        Ok(merge_series(lists))
    }

    fn label_names(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> stratus_tsdb::Result<Vec<String>> {
        let req = pb::LabelNamesRequest {
            tenant: self.tenant.as_str().to_string(),
            start_ms: mint,
            end_ms: maxt,
            matchers: convert::matchers_to_proto(matchers),
        };
        let lists = self.q.fan_out("label names", maxt, |mut c| {
            let req = req.clone();
            async move { Ok(c.label_names(req).await?.into_inner().names) }
        })?;
        Ok(sorted_union(lists))
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> stratus_tsdb::Result<Vec<String>> {
        let req = pb::LabelValuesRequest {
            tenant: self.tenant.as_str().to_string(),
            name: name.to_string(),
            start_ms: mint,
            end_ms: maxt,
            matchers: convert::matchers_to_proto(matchers),
        };
        let lists = self.q.fan_out("label values", maxt, |mut c| {
            let req = req.clone();
            async move { Ok(c.label_values(req).await?.into_inner().values) }
        })?;
        Ok(sorted_union(lists))
    }
}
