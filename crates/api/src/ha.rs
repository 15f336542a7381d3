//! Deduplication of Prometheus HA pairs in the write path (Mimir's HA
//! tracker, one decision per request).
//!
//! For a tenant with `accept_ha_samples`, the cluster and replica labels
//! (`ha_cluster_label`, default `cluster`; `ha_replica_label`, default
//! `__replica__`) are read from the request's first series, as Mimir does.
//! When both are present, the [`stratus_ring::HaTracker`] decides:
//!
//! - the replica is (or just became) the elected one: the request goes on,
//!   with the replica label removed from every series, exemplar and
//!   created timestamp of it (the cluster label stays);
//! - another replica is elected and alive: the request is dropped and
//!   answered 202 (so Prometheus does not retry), its samples counted in
//!   `stratus_ha_dropped_samples_total{tenant, cluster}`;
//! - the cluster is new and the tenant has `ha_max_clusters` clusters: 400.
//!
//! A request with only one of the two labels (or neither) is accepted
//! unchanged, the replica label included (Mimir does the same). The check
//! runs before the ingestion rate limit, so dropped samples do not use up
//! the tenant's rate.

use stratus_model::{Labels, TenantId};
use stratus_ring::HaOutcome;
use stratus_tenancy::{
    DEFAULT_HA_CLUSTER_LABEL, DEFAULT_HA_MAX_CLUSTERS, DEFAULT_HA_REPLICA_LABEL, Limits,
};

use crate::metrics::HaLabels;
use crate::remote_write::WriteBatch;
use crate::server::AppState;

/// Longest cluster or replica label value tracked (it becomes part of a
/// KV key and value).
const MAX_HA_VALUE: usize = 1024;

/// Why a request of an HA pair is not stored.
#[derive(Debug)]
pub(crate) enum HaReject {
    /// Another replica is elected: answer 202 with this message.
    Dropped(String),
    /// Too many clusters (or label values too long): answer 400 with this
    /// message.
    TooManyClusters(String),
    /// The KV store failed: answer 503 (the sender retries).
    Unavailable(String),
}

/// The first series' labels of a request (float series first, then
/// native histogram series; Mimir looks at `timeseries[0]`).
fn first_labels(batch: &WriteBatch) -> Option<Labels> {
    batch
        .series
        .first()
        .map(|s| batch.labels_of(s).to_labels())
        .or_else(|| batch.hist_series.first().map(|s| s.labels.clone()))
}

/// `labels` without `name`, reusing it when the label is absent.
fn strip(labels: &mut Labels, name: &str) {
    if labels.get(name).is_some() {
        *labels = labels.filter_names(&[name], false);
    }
}

/// Removes the replica label from everything in the request.
fn strip_replica(batch: &mut WriteBatch, name: &str) {
    batch.remove_series_label(name);
    for s in &mut batch.hist_series {
        strip(&mut s.labels, name);
    }
    for e in &mut batch.exemplars {
        strip(&mut e.series, name);
    }
    for c in &mut batch.created {
        strip(&mut c.series, name);
    }
}

/// Applies HA deduplication to a decoded request of `tenant` (see the
/// module docs). `Ok` = store the (possibly rewritten) batch.
pub(crate) async fn dedup(
    st: &AppState,
    tenant: &TenantId,
    batch: &mut WriteBatch,
    limits: &Limits,
) -> Result<(), HaReject> {
    if limits.accept_ha_samples != Some(true) {
        return Ok(());
    }
    let cluster_label = limits
        .ha_cluster_label
        .as_deref()
        .unwrap_or(DEFAULT_HA_CLUSTER_LABEL);
    let replica_label = limits
        .ha_replica_label
        .as_deref()
        .unwrap_or(DEFAULT_HA_REPLICA_LABEL);
    let Some(first) = first_labels(batch) else {
        return Ok(());
    };
    let (Some(cluster), Some(replica)) = (first.get(cluster_label), first.get(replica_label))
    else {
        return Ok(());
    };
    if cluster.len() > MAX_HA_VALUE || replica.len() > MAX_HA_VALUE {
        return Err(HaReject::TooManyClusters(format!(
            "HA label values longer than {MAX_HA_VALUE} bytes are refused ({cluster_label}: {} bytes, {replica_label}: {} bytes)\n",
            cluster.len(),
            replica.len()
        )));
    }
    let (cluster, replica) = (cluster.to_string(), replica.to_string());
    let max = limits.ha_max_clusters.unwrap_or(DEFAULT_HA_MAX_CLUSTERS);
    let outcome = st
        .ha
        .check(tenant.as_str(), &cluster, &replica, max)
        .await
        .map_err(|e| {
            tracing::error!(tenant = %tenant, cluster, error = %e, "HA tracker failed");
            HaReject::Unavailable(format!(
                "HA tracker: cannot check replica {replica:?} of cluster {cluster:?}: {e}; retry later\n"
            ))
        })?;
    let hl = HaLabels {
        tenant: tenant.as_str().to_string(),
        cluster: cluster.clone(),
    };
    match outcome {
        HaOutcome::Accepted => {}
        HaOutcome::Elected { .. } => {
            st.metrics.ha_elections.get_or_create(&hl).inc();
        }
        HaOutcome::NotElected { elected } => {
            let n = batch.samples.len() as u64 + batch.histograms_valid();
            st.metrics.ha_dropped_samples.get_or_create(&hl).inc_by(n);
            return Err(HaReject::Dropped(format!(
                "{n} sample(s) deduplicated: replica {replica:?} of HA cluster {cluster:?} is not the elected replica ({elected:?}); not stored\n"
            )));
        }
        HaOutcome::TooManyClusters { limit, current } => {
            return Err(HaReject::TooManyClusters(format!(
                "tenant {tenant} has {current} HA cluster(s), the limit ha_max_clusters={limit}; new cluster {cluster:?} refused. \
                 Raise the tenant's ha_max_clusters limit (stratus tenant limits {tenant} --ha-max-clusters N)\n"
            )));
        }
    }
    strip_replica(batch, replica_label);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_series_and_stripping() {
        let mut b = WriteBatch::default();
        assert!(first_labels(&b).is_none());
        b.push_series(
            &Labels::from_pairs([("__name__", "up"), ("__replica__", "a"), ("cluster", "c")]),
            0..0,
        )
        .unwrap();
        b.push_series(&Labels::from_pairs([("__name__", "x")]), 0..0)
            .unwrap();
        assert_eq!(first_labels(&b).unwrap().get("__replica__"), Some("a"));
        strip_replica(&mut b, "__replica__");
        assert_eq!(
            b.labels_of(&b.series[0]),
            Labels::from_pairs([("__name__", "up"), ("cluster", "c")])
        );
        assert_eq!(
            b.labels_of(&b.series[1]),
            Labels::from_pairs([("__name__", "x")])
        );
    }
}
