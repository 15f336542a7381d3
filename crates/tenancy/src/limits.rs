//! Per-tenant limits and how their layers combine.
//!
//! Every field is optional: a [`Limits`] value is a set of overrides. The
//! limits in force for a tenant are the server defaults, overlaid by the
//! tenant's plan (a named preset), overlaid by the tenant's own overrides
//! ([`Limits::overlay`]). For the count and rate limits `0` means
//! unlimited; a retention of `0s` keeps data forever; an out-of-order
//! window of `0s` refuses out-of-order samples.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Per-tenant limits (each `None` = not set at this layer).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Samples per second a tenant may push (token bucket refill rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingestion_rate: Option<f64>,
    /// Samples a tenant may push at once (token bucket size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingestion_burst_size: Option<u64>,
    /// Most active (in-memory) series of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_series: Option<u64>,
    /// Most active series with the same metric name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_series_per_metric: Option<u64>,
    /// Most labels (the name included) on one series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_label_names_per_series: Option<u64>,
    /// Longest label name, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_label_name_length: Option<u64>,
    /// Longest label value, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_label_value_length: Option<u64>,
    /// How far behind a series' newest sample an older one is accepted.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub out_of_order_window: Option<Duration>,
    /// Blocks older than this are deleted (`0s` = keep forever).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub retention: Option<Duration>,
    /// Longest a PromQL query may run.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub query_timeout: Option<Duration>,
    /// Most samples one query may hold in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_samples_per_query: Option<u64>,
    /// Most series one query may select.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_series_per_query: Option<u64>,
    /// Most queries of the tenant evaluated at once (more wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_queries: Option<u64>,
    /// Deduplicate Prometheus HA pairs: of the requests carrying both the
    /// cluster and the replica label, keep only those of the elected
    /// replica (default off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_ha_samples: Option<bool>,
    /// The label naming a request's HA cluster (default `cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha_cluster_label: Option<String>,
    /// The label naming a request's HA replica, removed from stored
    /// series (default `__replica__`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha_replica_label: Option<String>,
    /// Most HA clusters the tenant may have (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha_max_clusters: Option<u64>,
}

/// Default of [`Limits::ha_cluster_label`].
pub const DEFAULT_HA_CLUSTER_LABEL: &str = "cluster";
/// Default of [`Limits::ha_replica_label`].
pub const DEFAULT_HA_REPLICA_LABEL: &str = "__replica__";
/// Default of [`Limits::ha_max_clusters`].
pub const DEFAULT_HA_MAX_CLUSTERS: u64 = 100;

/// Takes `top` when set, else `base`.
fn pick<T: Copy>(base: Option<T>, top: Option<T>) -> Option<T> {
    top.or(base)
}

impl Limits {
    /// `self` with every field that `top` sets replaced by `top`'s value.
    pub fn overlay(&self, top: &Limits) -> Limits {
        Limits {
            ingestion_rate: pick(self.ingestion_rate, top.ingestion_rate),
            ingestion_burst_size: pick(self.ingestion_burst_size, top.ingestion_burst_size),
            max_series: pick(self.max_series, top.max_series),
            max_series_per_metric: pick(self.max_series_per_metric, top.max_series_per_metric),
            max_label_names_per_series: pick(
                self.max_label_names_per_series,
                top.max_label_names_per_series,
            ),
            max_label_name_length: pick(self.max_label_name_length, top.max_label_name_length),
            max_label_value_length: pick(self.max_label_value_length, top.max_label_value_length),
            out_of_order_window: pick(self.out_of_order_window, top.out_of_order_window),
            retention: pick(self.retention, top.retention),
            query_timeout: pick(self.query_timeout, top.query_timeout),
            max_samples_per_query: pick(self.max_samples_per_query, top.max_samples_per_query),
            max_series_per_query: pick(self.max_series_per_query, top.max_series_per_query),
            max_concurrent_queries: pick(self.max_concurrent_queries, top.max_concurrent_queries),
            accept_ha_samples: pick(self.accept_ha_samples, top.accept_ha_samples),
            ha_cluster_label: top
                .ha_cluster_label
                .clone()
                .or_else(|| self.ha_cluster_label.clone()),
            ha_replica_label: top
                .ha_replica_label
                .clone()
                .or_else(|| self.ha_replica_label.clone()),
            ha_max_clusters: pick(self.ha_max_clusters, top.ha_max_clusters),
        }
    }

    /// Checks values that can never make sense (negative or non-finite
    /// rates).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(r) = self.ingestion_rate
            && (!r.is_finite() || r < 0.0)
        {
            return Err(format!(
                "ingestion_rate must be a finite number >= 0, got {r}"
            ));
        }
        for (name, v) in [
            ("ha_cluster_label", &self.ha_cluster_label),
            ("ha_replica_label", &self.ha_replica_label),
        ] {
            if v.as_deref().is_some_and(str::is_empty) {
                return Err(format!("{name} must not be empty"));
            }
        }
        if self.ha_cluster_label.is_some() && self.ha_cluster_label == self.ha_replica_label {
            return Err("ha_cluster_label and ha_replica_label must differ".to_string());
        }
        Ok(())
    }

    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

/// A count limit where `0` and `None` both mean unlimited.
pub fn limit_of(v: Option<u64>) -> Option<u64> {
    v.filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_combine_top_wins() {
        let defaults = Limits {
            ingestion_rate: Some(100.0),
            max_series: Some(10),
            retention: Some(Duration::from_secs(3600)),
            ..Limits::default()
        };
        let plan = Limits {
            max_series: Some(20),
            max_series_per_metric: Some(5),
            ..Limits::default()
        };
        let tenant = Limits {
            max_series_per_metric: Some(7),
            ..Limits::default()
        };
        let eff = defaults.overlay(&plan).overlay(&tenant);
        assert_eq!(eff.ingestion_rate, Some(100.0));
        assert_eq!(eff.max_series, Some(20));
        assert_eq!(eff.max_series_per_metric, Some(7));
        assert_eq!(eff.retention, Some(Duration::from_secs(3600)));
        assert_eq!(eff.max_label_name_length, None);
    }

    #[test]
    fn ha_limits_overlay_and_validate() {
        let defaults = Limits {
            ha_cluster_label: Some("cluster".into()),
            ha_max_clusters: Some(100),
            ..Limits::default()
        };
        let tenant: Limits = serde_json::from_str(
            r#"{"accept_ha_samples": true, "ha_replica_label": "replica", "ha_max_clusters": 3}"#,
        )
        .unwrap();
        let eff = defaults.overlay(&tenant);
        assert_eq!(eff.accept_ha_samples, Some(true));
        assert_eq!(eff.ha_cluster_label.as_deref(), Some("cluster"));
        assert_eq!(eff.ha_replica_label.as_deref(), Some("replica"));
        assert_eq!(eff.ha_max_clusters, Some(3));
        let bad: Limits = serde_json::from_str(r#"{"ha_replica_label": ""}"#).unwrap();
        assert!(bad.validate().is_err());
        let same: Limits =
            serde_json::from_str(r#"{"ha_replica_label": "x", "ha_cluster_label": "x"}"#).unwrap();
        assert!(same.validate().is_err());
    }

    #[test]
    fn json_round_trip_with_durations_and_unknown_fields_refused() {
        let l: Limits = serde_json::from_str(
            r#"{"ingestion_rate": 5.5, "out_of_order_window": "10m", "retention": "15days"}"#,
        )
        .unwrap();
        assert_eq!(l.ingestion_rate, Some(5.5));
        assert_eq!(l.out_of_order_window, Some(Duration::from_secs(600)));
        assert_eq!(l.retention, Some(Duration::from_secs(15 * 86400)));
        let back: Limits = serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(back, l);
        assert_eq!(serde_json::to_string(&Limits::default()).unwrap(), "{}");
        assert!(serde_json::from_str::<Limits>(r#"{"max_serie": 1}"#).is_err());
        assert!(
            Limits {
                ingestion_rate: Some(-1.0),
                ..Limits::default()
            }
            .validate()
            .is_err()
        );
        assert_eq!(limit_of(Some(0)), None);
        assert_eq!(limit_of(Some(3)), Some(3));
    }
}
