//! Per-tenant limits in the request path.
//!
//! The limits in force for a tenant are the server defaults
//! ([`crate::ServerConfig::limits`] plus the older single-purpose settings
//! such as `out_of_order_window`), overlaid by the tenant's plan and then
//! its own overrides from the registry; they are computed on every
//! request (a map probe and a small struct copy), so admin changes apply
//! to the next request. Storage-side limits (out-of-order window,
//! retention) are pushed into the tenant database through
//! [`stratus_tsdb::TenantOverrides`]. In a cluster the ingestion rate is
//! split evenly among the healthy distributors
//! ([`crate::RateLimitShare`], Mimir's "global" strategy).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use stratus_model::TenantId;
use stratus_tenancy::{Limits, limit_of};
use stratus_tsdb::TenantOverrides;
use tokio::sync::Semaphore;

use crate::metrics::ReasonLabels;
use crate::remote_write::WriteBatch;
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
                    series_limits: Some((
                        limit_of(l.max_series).unwrap_or(0),
                        limit_of(l.max_series_per_metric).unwrap_or(0),
                    )),
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

/// Locks a std mutex, ignoring poisoning (the guarded maps stay valid).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    last: Instant,
}

/// Per-tenant token buckets of the ingestion rate limit.
#[derive(Debug, Default)]
pub(crate) struct RateLimiters(Mutex<HashMap<TenantId, TokenBucket>>);

impl RateLimiters {
    /// Takes `n` samples from `t`'s bucket (refilled at `rate`/s up to
    /// `burst`); false, taking nothing, when there are not enough.
    fn allow(&self, t: &TenantId, n: u64, rate: f64, burst: f64) -> bool {
        let now = Instant::now();
        let mut m = lock(&self.0);
        let b = m.entry(t.clone()).or_insert(TokenBucket {
            tokens: burst,
            last: now,
        });
        let refill = now.duration_since(b.last).as_secs_f64() * rate;
        b.tokens = (b.tokens + refill).min(burst);
        b.last = now;
        let n = n as f64;
        if n <= b.tokens {
            b.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Forgets a tenant's bucket (deleted tenant).
    pub(crate) fn forget(&self, t: &TenantId) {
        lock(&self.0).remove(t);
    }
}

/// Per-tenant semaphores of `max_concurrent_queries`.
#[derive(Debug, Default)]
pub(crate) struct QuerySlots(Mutex<HashMap<TenantId, (u64, Arc<Semaphore>)>>);

impl QuerySlots {
    /// The tenant's semaphore for `limit` slots (`None` when unlimited).
    /// A changed limit makes a new semaphore; queries holding slots of the
    /// old one finish normally.
    pub(crate) fn get(&self, t: &TenantId, limit: u64) -> Option<Arc<Semaphore>> {
        if limit == 0 {
            lock(&self.0).remove(t);
            return None;
        }
        let mut m = lock(&self.0);
        let e = m
            .entry(t.clone())
            .or_insert_with(|| (limit, Arc::new(Semaphore::new(slots(limit)))));
        if e.0 != limit {
            *e = (limit, Arc::new(Semaphore::new(slots(limit))));
        }
        Some(e.1.clone())
    }
}

fn slots(limit: u64) -> usize {
    usize::try_from(limit)
        .unwrap_or(Semaphore::MAX_PERMITS)
        .min(Semaphore::MAX_PERMITS)
}

/// Checks a push of `n` samples against the ingestion rate limit; `Err`
/// is the 429 answer (remote-write senders retry 429 with backoff).
pub(crate) fn check_ingestion_rate(
    st: &AppState,
    t: &TenantId,
    l: &Limits,
    n: u64,
) -> Result<(), Box<Response>> {
    let Some(rate) = l.ingestion_rate.filter(|&r| r > 0.0) else {
        return Ok(());
    };
    let burst = match limit_of(l.ingestion_burst_size) {
        Some(b) => b as f64,
        None => rate.ceil(),
    };
    // Global strategy: the tenant's rate is shared by the distributors.
    let share = st
        .backends
        .rate_limit_share
        .as_ref()
        .map_or(1, |s| s.distributors().max(1));
    let local_rate = rate / share as f64;
    if n == 0 || st.rate_limiters.allow(t, n, local_rate, burst) {
        return Ok(());
    }
    st.count_rejected(t, "rate_limited", n);
    let split = if share > 1 {
        format!(" shared by {share} distributors, {local_rate}/s here")
    } else {
        String::new()
    };
    let msg = format!(
        "per-tenant ingestion rate limit (ingestion_rate={rate}{split}, ingestion_burst_size={burst}) exceeded while adding {n} samples for tenant {t}; \
         the request was not stored and may be retried. Raise the tenant's ingestion_rate / ingestion_burst_size limit \
         (stratus tenant limits {t} --ingestion-rate N) or the server default (--default-limits)\n"
    );
    Err(Box::new(
        (StatusCode::TOO_MANY_REQUESTS, msg).into_response(),
    ))
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

/// Why a series breaks a label limit, naming the limit.
fn label_violation(
    labels: &impl stratus_tsdb::SeriesLabels,
    l: &Limits,
) -> Option<(&'static str, String)> {
    let name = clip(labels.metric_name().unwrap_or(""), 200);
    if let Some(max) = limit_of(l.max_label_names_per_series)
        && labels.len() as u64 > max
    {
        return Some((
            "max_label_names_per_series",
            format!(
                "series {name:?} has {} labels, more than max_label_names_per_series={max}; raise the tenant's max_label_names_per_series limit",
                labels.len()
            ),
        ));
    }
    for (lname, lvalue) in labels.pairs() {
        if let Some(max) = limit_of(l.max_label_name_length)
            && lname.len() as u64 > max
        {
            return Some((
                "max_label_name_length",
                format!(
                    "label name {:?}... of series {name:?} is {} bytes, longer than max_label_name_length={max}; raise the tenant's max_label_name_length limit",
                    clip(lname, 64),
                    lname.len()
                ),
            ));
        }
        if let Some(max) = limit_of(l.max_label_value_length)
            && lvalue.len() as u64 > max
        {
            return Some((
                "max_label_value_length",
                format!(
                    "value {:?}... of label {:?} of series {name:?} is {} bytes, longer than max_label_value_length={max}; raise the tenant's max_label_value_length limit",
                    clip(lvalue, 64),
                    clip(lname, 64),
                    lvalue.len()
                ),
            ));
        }
    }
    None
}

/// Drops the series of `batch` that break a label limit, adding a
/// message per series to the batch's errors (the answer is then 400 and
/// names the limit; the other series are stored). Returns the number of
/// samples dropped.
pub(crate) fn enforce_label_limits(
    st: &AppState,
    t: &TenantId,
    batch: &mut WriteBatch,
    l: &Limits,
) -> u64 {
    if limit_of(l.max_label_names_per_series).is_none()
        && limit_of(l.max_label_name_length).is_none()
        && limit_of(l.max_label_value_length).is_none()
    {
        return 0;
    }
    let mut dropped = 0u64;
    let mut msgs = Vec::new();
    batch.retain_series(|labels, s| match label_violation(&labels, l) {
        None => true,
        Some((reason, msg)) => {
            let n = s.samples.len() as u64;
            dropped += n;
            st.count_rejected(t, reason, n);
            msgs.push(msg);
            false
        }
    });
    batch
        .hist_series
        .retain(|s| match label_violation(&s.labels, l) {
            None => true,
            Some((reason, msg)) => {
                let n = (s.histograms.len() + s.float_histograms.len()) as u64;
                dropped += n;
                st.count_rejected(t, reason, n);
                msgs.push(msg);
                false
            }
        });
    for m in msgs {
        batch.num_errors += 1;
        if batch.errors.len() < 32 {
            batch.errors.push(m);
        }
    }
    dropped
}

impl AppState {
    /// Adds to `stratus_tenant_samples_rejected_total{tenant, reason}`.
    pub(crate) fn count_rejected(&self, t: &TenantId, reason: &str, n: u64) {
        if n > 0 {
            self.metrics
                .tenant_samples_rejected
                .get_or_create(&ReasonLabels {
                    tenant: t.as_str().to_string(),
                    reason: reason.to_string(),
                })
                .inc_by(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use stratus_model::Labels;

    use super::*;

    #[test]
    fn token_bucket_refills_and_caps() {
        let r = RateLimiters::default();
        let t = TenantId::new("t").unwrap();
        assert!(r.allow(&t, 10, 1.0, 10.0));
        assert!(!r.allow(&t, 1, 1.0, 10.0), "bucket empty");
        assert!(!r.allow(&t, 11, 1000.0, 10.0), "never more than the burst");
        std::thread::sleep(Duration::from_millis(30));
        assert!(r.allow(&t, 20, 1000.0, 1000.0), "refilled at the rate");
    }

    #[test]
    fn query_slots_follow_the_limit() {
        let q = QuerySlots::default();
        let t = TenantId::new("t").unwrap();
        assert!(q.get(&t, 0).is_none());
        let a = q.get(&t, 2).unwrap();
        assert_eq!(a.available_permits(), 2);
        let held = a.clone().try_acquire_owned().unwrap();
        assert_eq!(
            q.get(&t, 2).unwrap().available_permits(),
            1,
            "same semaphore"
        );
        let b = q.get(&t, 3).unwrap();
        assert_eq!(b.available_permits(), 3, "new limit, new semaphore");
        drop(held);
    }

    #[test]
    fn label_limits_name_the_limit() {
        let l = Limits {
            max_label_names_per_series: Some(2),
            max_label_name_length: Some(8),
            max_label_value_length: Some(4),
            ..Limits::default()
        };
        let ok = Labels::from_pairs([("__name__", "m"), ("a", "v")]);
        assert!(label_violation(&ok, &l).is_none());
        let many = Labels::from_pairs([("__name__", "m"), ("a", "v"), ("b", "v")]);
        assert_eq!(
            label_violation(&many, &l).unwrap().0,
            "max_label_names_per_series"
        );
        let long_name = Labels::from_pairs([("__name__", "m"), ("abcdefghi", "v")]);
        let (r, msg) = label_violation(&long_name, &l).unwrap();
        assert_eq!(r, "max_label_name_length");
        assert!(msg.contains("max_label_name_length=8"), "{msg}");
        let long_value = Labels::from_pairs([("__name__", "m"), ("a", "ééééé")]);
        let (r, msg) = label_violation(&long_value, &l).unwrap();
        assert_eq!(r, "max_label_value_length");
        assert!(msg.contains("10 bytes"), "{msg}");
        assert_eq!(clip("éé", 3), "é");
    }
}
