//! The frontend's own metrics, served at `/metrics` (OpenMetrics text):
//! results cache hits and misses (per interval extent), sub-queries sent
//! by splitting, downstream retries, per-tenant queue lengths and
//! refused requests. Tenant labels are tenant keys (an id, or a
//! credential's hash prefix), never credentials.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    tenant: String,
    reason: &'static str,
}

/// Metric handles of one frontend.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) cache_hits: Counter,
    pub(crate) cache_partial_hits: Counter,
    pub(crate) cache_misses: Counter,
    pub(crate) split_queries: Counter,
    pub(crate) queries: Counter,
    pub(crate) retries: Counter,
    pub(crate) cache_bytes: Gauge,
    pub(crate) cache_extents: Gauge,
    queue_length: Family<TenantLabels, Gauge>,
    rejected: Family<RejectLabels, Counter>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            registry: Registry::default(),
            cache_hits: Counter::default(),
            cache_partial_hits: Counter::default(),
            cache_misses: Counter::default(),
            split_queries: Counter::default(),
            queries: Counter::default(),
            retries: Counter::default(),
            cache_bytes: Gauge::default(),
            cache_extents: Gauge::default(),
            queue_length: Family::default(),
            rejected: Family::default(),
        };
        registry.register(
            "stratus_frontend_cache_hits",
            "Interval extents of range queries answered entirely from the results cache",
            m.cache_hits.clone(),
        );
        registry.register(
            "stratus_frontend_cache_partial_hits",
            "Interval extents answered partly from the cache (only the missing steps fetched)",
            m.cache_partial_hits.clone(),
        );
        registry.register(
            "stratus_frontend_cache_misses",
            "Interval extents of cacheable range queries not found in the cache",
            m.cache_misses.clone(),
        );
        registry.register(
            "stratus_frontend_split_queries",
            "Sub-queries sent downstream for split range queries",
            m.split_queries.clone(),
        );
        registry.register(
            "stratus_frontend_range_queries",
            "Range queries received",
            m.queries.clone(),
        );
        registry.register(
            "stratus_frontend_downstream_retries",
            "Downstream requests retried after a connection error or a 5xx",
            m.retries.clone(),
        );
        registry.register(
            "stratus_frontend_cache_bytes",
            "Estimated bytes held by the results cache",
            m.cache_bytes.clone(),
        );
        registry.register(
            "stratus_frontend_cache_extents",
            "Extents held by the results cache",
            m.cache_extents.clone(),
        );
        registry.register(
            "stratus_frontend_queue_length",
            "Downstream requests queued per tenant",
            m.queue_length.clone(),
        );
        registry.register(
            "stratus_frontend_rejected_requests",
            "Requests refused per tenant and reason",
            m.rejected.clone(),
        );
        Self { registry, ..m }
    }

    pub(crate) fn queue_length(&self, tenant: &str, len: usize) {
        self.queue_length
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
            })
            .set(i64::try_from(len).unwrap_or(i64::MAX));
    }

    pub(crate) fn rejected(&self, tenant: &str) {
        self.rejected
            .get_or_create(&RejectLabels {
                tenant: tenant.to_string(),
                reason: "queue_full",
            })
            .inc();
    }

    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
