//! Per-tenant limits in the request path.
//!
//! The limits in force for a tenant are the server defaults
//! ([`crate::ServerConfig::limits`] plus the older single-purpose settings
//! such as `out_of_order_window`), overlaid by the tenant's plan and then
//! its own overrides from the registry; they are computed on every
//! request (a map probe and a small struct copy), so admin changes apply
//! to the next request. Storage-side limits (out-of-order window,
//! retention) are pushed into the tenant database through
//! [`stratus_tsdb::TenantOverrides`].

use std::time::Duration;

use stratus_model::TenantId;
use stratus_tenancy::Limits;
use stratus_tsdb::TenantOverrides;

use crate::server::AppState;

/// The server-wide defaults as one [`Limits`] with the storage and query
/// settings filled in.
pub(crate) fn server_defaults(cfg: &crate::ServerConfig) -> Limits {
    Limits {
        out_of_order_window: Some(cfg.out_of_order_window),
        retention: Some(cfg.retention.unwrap_or(Duration::ZERO)),
        query_timeout: Some(cfg.query_timeout),
        max_samples_per_query: Some(u64::try_from(cfg.query_max_samples).unwrap_or(u64::MAX)),
        ..Limits::default()
    }
    .overlay(&cfg.limits)
}

impl AppState {
    /// The limits in force for `t`: defaults < plan < tenant overrides.
    pub(crate) fn effective_limits(&self, t: &TenantId) -> Limits {
        self.defaults.overlay(&self.registry.limits(t))
    }

    /// Pushes `t`'s storage limits into its database (open now or later).
    pub(crate) async fn apply_tenant_limits(&self, t: &TenantId) {
        let l = self.effective_limits(t);
        let ooo = l
            .out_of_order_window
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let retention = l.retention.map(|d| (!d.is_zero()).then_some(d));
        self.tenants
            .set_overrides(
                t,
                TenantOverrides {
                    retention,
                    ooo_window: ooo,
                },
            )
            .await;
    }

    /// [`Self::apply_tenant_limits`] for every registered tenant.
    pub(crate) async fn apply_all_limits(&self) {
        for info in self.registry.tenants() {
            if let Ok(t) = TenantId::new(&info.id) {
                self.apply_tenant_limits(&t).await;
            }
        }
    }
}
