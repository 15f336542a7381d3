//! The service's own metrics, served at `/metrics` (OpenMetrics text).
//!
//! Registered on one registry owned by the server state, so tests and
//! several servers in one process never share counters.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TenantLabels {
    pub(crate) tenant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    pub(crate) tenant: String,
    pub(crate) reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HaLabels {
    pub(crate) tenant: String,
    pub(crate) cluster: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) route: String,
    pub(crate) method: String,
    pub(crate) status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResponseTypeLabels {
    pub(crate) response_type: &'static str,
}

fn duration_histogram() -> Histogram {
    // 0.5 ms .. ~33 s.
    Histogram::new(exponential_buckets(0.0005, 4.0, 9))
}

/// Metric handles (cheap to clone: `Arc`s inside).
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) samples_received: Family<TenantLabels, Counter>,
    pub(crate) samples_written: Family<TenantLabels, Counter>,
    pub(crate) samples_rejected: Family<TenantLabels, Counter>,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub(crate) open_tenants: Gauge,
    pub(crate) remote_reads: Family<ResponseTypeLabels, Counter>,
    pub(crate) exemplars_written: Family<TenantLabels, Counter>,
    pub(crate) exemplars_rejected: Family<TenantLabels, Counter>,
    pub(crate) tenant_samples_received: Family<TenantLabels, Counter>,
    pub(crate) tenant_samples_rejected: Family<ReasonLabels, Counter>,
    pub(crate) tenant_active_series: Family<TenantLabels, Gauge>,
    pub(crate) tenant_bytes_stored: Family<TenantLabels, Gauge>,
    pub(crate) tenant_queries: Family<TenantLabels, Counter>,
    pub(crate) ha_dropped_samples: Family<HaLabels, Counter>,
    pub(crate) ha_elections: Family<HaLabels, Counter>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let samples_received = Family::<TenantLabels, Counter>::default();
        let samples_written = Family::<TenantLabels, Counter>::default();
        let samples_rejected = Family::<TenantLabels, Counter>::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        let open_tenants = Gauge::default();
        let remote_reads = Family::<ResponseTypeLabels, Counter>::default();
        let exemplars_written = Family::<TenantLabels, Counter>::default();
        let exemplars_rejected = Family::<TenantLabels, Counter>::default();
        registry.register(
            "stratus_api_exemplars_written",
            "Exemplars stored (duplicates of a series' newest included), per tenant.",
            exemplars_written.clone(),
        );
        registry.register(
            "stratus_api_exemplars_rejected",
            "Exemplars dropped (invalid labels, out of order, storage disabled), per tenant.",
            exemplars_rejected.clone(),
        );
        registry.register(
            "stratus_api_samples_received",
            "Float samples received by remote write, per tenant (valid or not).",
            samples_received.clone(),
        );
        registry.register(
            "stratus_api_samples_written",
            "Float samples stored (exact duplicates included), per tenant.",
            samples_written.clone(),
        );
        registry.register(
            "stratus_api_samples_rejected",
            "Samples refused (invalid series, native histograms, out of window, duplicates, too far in the future), per tenant.",
            samples_rejected.clone(),
        );
        registry.register(
            "stratus_api_requests",
            "HTTP requests by route, method and status code.",
            requests.clone(),
        );
        registry.register(
            "stratus_api_request_duration_seconds",
            "Time to answer HTTP requests, by route.",
            request_duration.clone(),
        );
        registry.register(
            "stratus_tenants_open",
            "Tenant databases currently open.",
            open_tenants.clone(),
        );
        registry.register(
            "stratus_api_remote_read_requests",
            "Remote-read requests answered, by negotiated response type.",
            remote_reads.clone(),
        );
        let tenant_samples_received = Family::<TenantLabels, Counter>::default();
        let tenant_samples_rejected = Family::<ReasonLabels, Counter>::default();
        let tenant_active_series = Family::<TenantLabels, Gauge>::default();
        let tenant_bytes_stored = Family::<TenantLabels, Gauge>::default();
        let tenant_queries = Family::<TenantLabels, Counter>::default();
        registry.register(
            "stratus_tenant_samples_received",
            "Samples received by remote write, per tenant (accepted or not).",
            tenant_samples_received.clone(),
        );
        registry.register(
            "stratus_tenant_samples_rejected",
            "Samples refused, per tenant and reason (rate_limited, series_limit, max_label_names_per_series, max_label_name_length, max_label_value_length, invalid, native_histogram, sample_time = out of window, out of order, duplicate or future timestamp).",
            tenant_samples_rejected.clone(),
        );
        registry.register(
            "stratus_tenant_active_series",
            "Series in the in-memory head, per open tenant database.",
            tenant_active_series.clone(),
        );
        registry.register(
            "stratus_tenant_bytes_stored",
            "Bytes on disk (blocks and WAL), per open tenant database.",
            tenant_bytes_stored.clone(),
        );
        registry.register(
            "stratus_tenant_queries",
            "PromQL queries (instant and range) answered, per tenant.",
            tenant_queries.clone(),
        );
        let ha_dropped_samples = Family::<HaLabels, Counter>::default();
        let ha_elections = Family::<HaLabels, Counter>::default();
        registry.register(
            "stratus_ha_dropped_samples",
            "Samples dropped because their request came from a replica of a Prometheus HA pair that is not the elected one, per tenant and HA cluster.",
            ha_dropped_samples.clone(),
        );
        registry.register(
            "stratus_ha_elected_replica_changes",
            "Elections of a replica of a Prometheus HA pair made by this process (first request of a cluster or failover), per tenant and HA cluster.",
            ha_elections.clone(),
        );
        Self {
            ha_dropped_samples,
            ha_elections,
            tenant_samples_received,
            tenant_samples_rejected,
            tenant_active_series,
            tenant_bytes_stored,
            tenant_queries,
            registry,
            samples_received,
            samples_written,
            samples_rejected,
            requests,
            request_duration,
            open_tenants,
            remote_reads,
            exemplars_written,
            exemplars_rejected,
        }
    }

    pub(crate) fn tenant(t: &str) -> TenantLabels {
        TenantLabels {
            tenant: t.to_string(),
        }
    }

    /// The registry in OpenMetrics text format.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
