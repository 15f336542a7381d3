//! The distributor: the HTTP API's [`WriteBackend`] in cluster mode.
//!
//! A decoded, validated and limited write is split by series: each series
//! is hashed ([`series_hash`](crate::series_hash) of tenant and sorted
//! labels) and the whole request is placed on replicas by the
//! [`Placement`] at once (one view of the ring); each series is encoded
//! once as a `prometheus.TimeSeries` and every ingester receives one
//! push with its subset, sharing those bytes, all pushes concurrently,
//! each bounded by the client timeout. The write succeeds when every series was acknowledged (in the
//! ingester's WAL) by a quorum of its replicas; pushes still running then
//! finish in the background, so slow replicas catch up. Outcomes:
//!
//! - quorum everywhere: the samples the ingesters refused (out of order,
//!   too old, series limits — the client's fault) come back as the HTTP
//!   API's 400 naming each series, deduplicated across replicas;
//! - an ingester refusing the request itself (INVALID_ARGUMENT marked
//!   as its refusal): 400 with its message; other errors, whatever their
//!   gRPC code (an HTTP/2 ENHANCE_YOUR_CALM reset arrives as
//!   RESOURCE_EXHAUSTED), are failures of that replica;
//! - some series without a quorum (ingesters down, hung past the timeout,
//!   failing): 503 listing the ingesters and errors, so senders retry.
//!
//! Counts of refused samples are exact while each ingester lists all its
//! refusals (up to 32 per push); beyond that the unlisted ones are
//! divided by the replication factor.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::future::BoxFuture;
use stratus_api::{WriteBackend, WriteBatch, WriteFailure, WriteOutcome};
use stratus_model::{Labels, TenantId};
use stratus_proto::ingester as pb;
use stratus_tsdb::{ExemplarReport, RejectReason, SampleError};
use tonic::Code;
use tracing::warn;

use crate::client::{ClientConfig, Clients};
use crate::convert;
use crate::metrics::GrpcMetrics;
use crate::placement::Placement;

/// Samples, histograms and exemplars of one write.
#[derive(Debug, Clone, Copy)]
struct Counts {
    floats: u64,
    hists: u64,
    exemplars: u64,
}

/// Shards, replicates and waits for quorums.
#[derive(Debug, Clone)]
pub struct Distributor {
    placement: Arc<dyn Placement>,
    clients: Arc<Clients>,
    metrics: Arc<GrpcMetrics>,
}

/// What one ingester answered.
type Answer = Result<pb::PushResponse, tonic::Status>;

impl Distributor {
    /// A distributor over `placement` with clients configured by `cfg`.
    pub fn new(placement: Arc<dyn Placement>, cfg: ClientConfig) -> Self {
        Self {
            placement,
            clients: Arc::new(Clients::new(cfg)),
            metrics: Arc::default(),
        }
    }

    /// Records the pushes to ingesters in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<GrpcMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Pushes `batch` for `tenant` to the ingesters (see the module docs).
    pub async fn push(
        &self,
        tenant: &TenantId,
        batch: &WriteBatch,
    ) -> Result<WriteOutcome, WriteFailure> {
        let joined = convert::join_series(batch);
        let metadata = convert::batch_metadata(batch);
        if joined.is_empty() && metadata.is_empty() {
            return Ok(WriteOutcome::default());
        }
        // Every series placed against one view of the membership.
        let hashes: Vec<u32> = joined
            .iter()
            .map(|s| stratus_ring::shard_key_from_hash(tenant.as_str(), s.hash))
            .collect();
        let mut placed = self.placement.place(tenant, &hashes);
        let mut rf = 1usize;
        for i in 0..placed.len() {
            let n = placed.replicas(i).len();
            if n == 0 {
                return Err(WriteFailure {
                    status: 503,
                    message: "no ingesters are configured or healthy\n".to_string(),
                });
            }
            rf = rf.max(n);
        }
        if joined.is_empty() {
            // Metadata only: every ingester keeps it.
            for inst in self.placement.all() {
                placed.add_instance(inst);
            }
        }
        let counts = Counts {
            floats: joined.iter().map(|s| s.samples_len() as u64).sum(),
            hists: joined.iter().map(|s| s.histograms_len() as u64).sum(),
            exemplars: joined.iter().map(|s| s.exemplars.len() as u64).sum(),
        };
        // Each series encoded once; its replicas' requests share the bytes.
        let encoded = convert::encode_series(&joined);
        let mut per_inst: Vec<Vec<prost::bytes::Bytes>> = vec![Vec::new(); placed.instances.len()];
        for (i, bytes) in encoded.into_iter().enumerate() {
            for &k in placed.replicas(i) {
                if let Some(v) = per_inst.get_mut(k as usize) {
                    v.push(bytes.clone());
                }
            }
        }
        // Created timestamps go with their series to its replicas (the
        // HTTP API leaves them in the batch only with
        // --created-timestamp-zero-ingestion).
        let mut per_inst_created: Vec<Vec<pb::CreatedZero>> =
            vec![Vec::new(); placed.instances.len()];
        if !batch.created.is_empty() {
            let by_hash: HashMap<u64, usize> = joined
                .iter()
                .enumerate()
                .map(|(i, s)| (s.hash, i))
                .collect();
            for c in &batch.created {
                let Some(&i) = by_hash.get(&c.series.stable_hash()) else {
                    continue;
                };
                if joined.get(i).is_none_or(|s| !s.labels.is(&c.series)) {
                    continue;
                }
                let z = pb::CreatedZero {
                    labels: convert::labels_to_proto(&c.series),
                    created_ms: c.ct,
                };
                for &k in placed.replicas(i) {
                    if let Some(v) = per_inst_created.get_mut(k as usize) {
                        v.push(z.clone());
                    }
                }
            }
        }
        let n_series = joined.len();
        drop(joined);
        let instances = placed.instances.clone();
        // One push per instance, each in its own task so it completes
        // even when the quorum answered first.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, Answer)>(instances.len().max(1));
        for ((k, inst), (timeseries, created)) in instances
            .iter()
            .enumerate()
            .zip(per_inst.into_iter().zip(per_inst_created))
        {
            let req = pb::PushRequest {
                tenant: tenant.as_str().to_string(),
                timeseries,
                metadata: metadata.clone(),
                created,
            };
            let client = self.clients.get(&inst.addr);
            let timeout = self.clients.timeout();
            let tx = tx.clone();
            let metrics = self.metrics.clone();
            let addr = inst.addr.clone();
            tokio::spawn(async move {
                let start = std::time::Instant::now();
                let ans = match client {
                    Ok(mut c) => match tokio::time::timeout(timeout, c.push(req)).await {
                        Ok(r) => r.map(tonic::Response::into_inner),
                        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                            "no answer within {timeout:?}"
                        ))),
                    },
                    Err(e) => Err(e),
                };
                let code = ans.as_ref().err().map(tonic::Status::code);
                metrics.called("Push", start, code.unwrap_or(Code::Ok));
                metrics.pushed(&addr, code);
                let _ = tx.send((k, ans)).await;
            });
        }
        drop(tx);
        let mut answers: Vec<Option<Answer>> = vec![None; instances.len()];
        let mut received = 0usize;
        while received < instances.len() {
            let Some((k, ans)) = rx.recv().await else {
                break;
            };
            if let Some(slot) = answers.get_mut(k) {
                *slot = Some(ans);
                received += 1;
            }
            if n_series == 0 {
                continue;
            }
            // Done when every series has a quorum or one cannot get it.
            let ok = |k: &u32| matches!(answers.get(*k as usize), Some(Some(Ok(_))));
            let failed = |k: &u32| matches!(answers.get(*k as usize), Some(Some(Err(_))));
            let all_quorum = (0..n_series).all(|i| {
                placed.replicas(i).iter().filter(|k| ok(k)).count() >= placed.min_success(i)
            });
            let hopeless = (0..n_series).any(|i| {
                let idxs = placed.replicas(i);
                idxs.len() - idxs.iter().filter(|k| failed(k)).count() < placed.min_success(i)
            });
            if all_quorum || hopeless {
                break;
            }
        }
        // The request's own faults first: they would fail on every retry.
        // Any other error (transport resets included, whatever their
        // code) is a failed replica, judged by the quorum below.
        for a in answers.iter().flatten() {
            if let Err(s) = a
                && s.code() == Code::InvalidArgument
                && crate::ingester::is_refusal(s)
            {
                return Err(WriteFailure {
                    status: 400,
                    message: format!("{}\n", s.message()),
                });
            }
        }
        let ok = |k: &u32| matches!(answers.get(*k as usize), Some(Some(Ok(_))));
        let short = (0..n_series)
            .filter(|&i| {
                placed.replicas(i).iter().filter(|k| ok(k)).count() < placed.min_success(i)
            })
            .count();
        let meta_only_failed = n_series == 0 && answers.iter().all(|a| !matches!(a, Some(Ok(_))));
        if short > 0 || meta_only_failed {
            let mut msg = format!(
                "{short} of {n_series} series could not be written to a quorum of their ingesters; retry\n"
            );
            for (k, a) in answers.iter().enumerate() {
                let addr = instances.get(k).map_or("?", |i| &*i.addr);
                match a {
                    Some(Err(s)) => msg.push_str(&format!(
                        "ingester {addr}: {:?}: {}\n",
                        s.code(),
                        s.message()
                    )),
                    None => msg.push_str(&format!("ingester {addr}: no answer yet\n")),
                    Some(Ok(_)) => {}
                }
            }
            warn!(tenant = %tenant, short, "write without quorum");
            return Err(WriteFailure {
                status: 503,
                message: msg,
            });
        }
        Ok(Self::outcome(counts, &answers, rf))
    }

    /// Merges the replicas' answers into one report (see the module docs
    /// for the precision of the counts).
    fn outcome(counts: Counts, answers: &[Option<Answer>], rf: usize) -> WriteOutcome {
        let rf = rf.max(1) as u64;
        // Listed refusals, deduplicated across replicas by (labels, t,
        // reason); per replica counted separately so the max wins.
        let mut listed: HashMap<(Labels, i64, i32), u64> = HashMap::new();
        let mut messages: HashSet<String> = HashSet::new();
        let mut unlisted = 0u64;
        let mut series_limited = 0u64;
        let mut ex_refused = 0u64;
        for r in answers.iter().flatten().filter_map(|a| a.as_ref().ok()) {
            let mut here: HashMap<(Labels, i64, i32), u64> = HashMap::new();
            for x in &r.rejections {
                if x.reason == pb::RejectReason::Invalid as i32 {
                    messages.insert(x.message.clone());
                    continue;
                }
                let key = (
                    convert::labels_from_proto(&x.labels),
                    x.timestamp_ms,
                    x.reason,
                );
                *here.entry(key).or_default() += 1;
            }
            let n_listed: u64 = here.values().sum();
            for (k, n) in here {
                let e = listed.entry(k).or_default();
                *e = (*e).max(n);
            }
            unlisted += r.rejected.saturating_sub(n_listed);
            series_limited = series_limited.max(r.series_limited);
            ex_refused += r.exemplars_refused;
        }
        let unlisted = unlisted.div_ceil(rf);
        let mut errors: Vec<SampleError> = Vec::new();
        let (mut float_rej, mut hist_rej) = (0u64, 0u64);
        let mut keys: Vec<_> = listed.into_iter().collect();
        keys.sort_by(|a, b| (&a.0.0, a.0.1).cmp(&(&b.0.0, b.0.1)));
        for ((labels, t, reason), n) in keys {
            let Some(reason) = convert::reason_from_proto(reason) else {
                continue;
            };
            if matches!(
                reason,
                RejectReason::OutOfOrderHistogram | RejectReason::InvalidHistogram
            ) {
                hist_rej += n;
            } else {
                float_rej += n;
            }
            if errors.len() < stratus_tsdb::AppendReport::MAX_ERRORS {
                errors.push(SampleError { labels, t, reason });
            }
        }
        let Counts {
            floats,
            hists,
            exemplars,
        } = counts;
        let rejected = float_rej + hist_rej + unlisted;
        let ex_refused = ex_refused.div_ceil(rf).min(exemplars);
        let report = stratus_tsdb::AppendReport {
            accepted: floats.saturating_sub(float_rej + unlisted),
            histograms_accepted: hists.saturating_sub(hist_rej),
            errors,
            rejected,
            new_series: 0,
            series_limited: series_limited.min(rejected),
        };
        if !messages.is_empty() {
            warn!(problems = ?messages, "ingesters refused series the distributor accepted");
        }
        WriteOutcome {
            report,
            exemplars: ExemplarReport {
                added: exemplars - ex_refused,
                duplicates: 0,
                out_of_order: ex_refused,
                invalid: 0,
            },
        }
    }
}

impl WriteBackend for Distributor {
    fn write<'a>(
        &'a self,
        tenant: &'a TenantId,
        batch: &'a WriteBatch,
    ) -> BoxFuture<'a, Result<WriteOutcome, WriteFailure>> {
        Box::pin(self.push(tenant, batch))
    }
}
