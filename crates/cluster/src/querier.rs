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
use crate::placement::Placement;

/// Reads from all ingesters.
#[derive(Debug, Clone)]
pub struct Querier {
    placement: Arc<dyn Placement>,
    clients: Arc<Clients>,
    rt: tokio::runtime::Handle,
}

impl Querier {
    /// A querier over `placement`; must be created inside the Tokio
    /// runtime that will run its calls.
    pub fn new(placement: Arc<dyn Placement>, cfg: ClientConfig) -> Self {
        Self {
            placement,
            clients: Arc::new(Clients::new(cfg)),
            rt: tokio::runtime::Handle::current(),
        }
    }

    /// The view of one tenant.
    pub fn tenant(&self, tenant: TenantId) -> TenantQuerier {
        TenantQuerier {
            q: self.clone(),
            tenant,
        }
    }

    /// Runs `call` against every instance; returns the answers once all
    /// but the tolerated failures succeeded. Blocks the calling thread
    /// (which must not be a runtime worker).
    fn fan_out<T, F, Fut>(&self, what: &str, call: F) -> stratus_tsdb::Result<Vec<T>>
    where
        T: Send + 'static,
        F: Fn(IngesterClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>> + Send + 'static,
    {
        let set = self.placement.read_set();
        let max_fail = set.max_failures();
        let instances = set.instances;
        if instances.is_empty() {
            return Err(stratus_tsdb::Error::Remote {
                message: "no ingesters are configured or enough of them healthy".to_string(),
            });
        }
        let n = instances.len();
        let timeout = self.clients.timeout();
        let (tx, rx) = std::sync::mpsc::channel::<(String, Result<T, tonic::Status>)>();
        let _guard = self.rt.enter();
        for inst in instances {
            let tx = tx.clone();
            let client = self.clients.get(&inst.addr);
            let fut = client.map(&call);
            self.rt.spawn(async move {
                let r = match fut {
                    Ok(f) => match tokio::time::timeout(timeout, f).await {
                        Ok(r) => r,
                        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                            "no answer within {timeout:?}"
                        ))),
                    },
                    Err(e) => Err(e),
                };
                let _ = tx.send((inst.addr, r));
            });
        }
        drop(tx);
        // A little slack over the per-call timeout for scheduling.
        let deadline = Instant::now() + timeout + Duration::from_millis(200);
        let mut ok = Vec::with_capacity(n);
        let mut failed: Vec<String> = Vec::new();
        while ok.len() < n - max_fail && failed.len() <= max_fail {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((_, Ok(v))) => ok.push(v),
                Ok((addr, Err(s))) => {
                    failed.push(format!("ingester {addr}: {:?}: {}", s.code(), s.message()))
                }
                Err(_) => {
                    failed.push(format!(
                        "{} ingester(s) did not answer in time",
                        n - ok.len()
                    ));
                    break;
                }
            }
        }
        if ok.len() >= n - max_fail {
            return Ok(ok);
        }
        Err(stratus_tsdb::Error::Remote {
            message: format!(
                "{what}: {} of {n} ingesters answered, {} needed: {}",
                ok.len(),
                n - max_fail,
                failed.join("; ")
            ),
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
            let lists = self.q.fan_out("series", |mut c| {
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
        let lists = self.q.fan_out("select", |mut c| {
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
        let lists = self.q.fan_out("label names", |mut c| {
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
        let lists = self.q.fan_out("label values", |mut c| {
            let req = req.clone();
            async move { Ok(c.label_values(req).await?.into_inner().values) }
        })?;
        Ok(sorted_union(lists))
    }
}
