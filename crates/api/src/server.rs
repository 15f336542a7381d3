//! The HTTP server: routes, tenant resolution, the remote-write handler,
//! health and metrics, start-up and graceful shutdown.
//!
//! Routing: remote write at `/api/v1/push`, `/api/prom/push` and
//! `/api/v1/write`; OTLP/HTTP metrics at `/otlp/v1/metrics` (also
//! `/api/v1/otlp/v1/metrics` and under `/prometheus`, `/api/prom`); the
//! read endpoints (series and label metadata, `/api/v1/metadata`,
//! `/api/v1/query_exemplars`, remote read, status, admin) and PromQL
//! (`/api/v1/query`, `/api/v1/query_range`) at the root and under
//! `/prometheus` and `/api/prom`; `/ready`, `/health`, `/metrics`,
//! `/config`, `/ingester/flush`. Everything else is
//! 404.
//!
//! A write is answered only after [`stratus_tsdb::Db::append`] returned,
//! i.e. after the accepted samples are in the tenant's WAL. Decoding and
//! appending are synchronous CPU/disk work and run on the blocking pool.
//! Shutdown: the `shutdown` future resolves → `/ready` turns 503, the
//! listener stops accepting, in-flight requests finish, the maintenance
//! loop stops, and every tenant WAL is synced.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use bytes::Bytes;
use snafu::ResultExt;
use stratus_model::{Labels, Sample, TenantId};
use stratus_objstore::{Bucket, StorageBackend};
use stratus_tenancy::{FileRegistry, Registry};
use stratus_tsdb::{
    AppendReport, Db, DbConfig, HeadConfig, Queryable, SeriesHistograms, SeriesSamples,
    StartTimestamps, Tenants,
};
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::config::{AuthMode, ServerConfig};
use crate::error::{
    CloseSnafu, ObjectStoreSnafu, OpenBucketSnafu, RegistrySnafu, Result, ServeSnafu,
};
use crate::metrics::{Metrics, RequestLabels, RouteLabels};
use crate::otlp::{self, OtlpEncoding};
use crate::remote_write::{self, DecodeError, RwVersion, WriteBatch};
use crate::{admin, auth, expr_api, meta, query, read, remote_read, status};

/// The header carrying the tenant id (Cortex/Mimir convention).
pub(crate) const ORG_ID_HEADER: &str = "x-scope-orgid";
/// The tenant used when authentication is off.
pub(crate) const DEFAULT_TENANT: &str = "default";

const SAMPLES_WRITTEN: HeaderName =
    HeaderName::from_static("x-prometheus-remote-write-samples-written");
const HISTOGRAMS_WRITTEN: HeaderName =
    HeaderName::from_static("x-prometheus-remote-write-histograms-written");
const EXEMPLARS_WRITTEN: HeaderName =
    HeaderName::from_static("x-prometheus-remote-write-exemplars-written");

/// Shared state of all handlers.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) tenants: Arc<Tenants>,
    pub(crate) cfg: ServerConfig,
    pub(crate) metrics: Metrics,
    pub(crate) ready: AtomicBool,
    /// Slots for concurrently evaluated PromQL queries.
    pub(crate) query_slots: Arc<tokio::sync::Semaphore>,
    /// Slots for writes in flight (remote write and OTLP); none free
    /// means overload: 503.
    pub(crate) write_slots: Arc<tokio::sync::Semaphore>,
    /// Tenants, plans, limits and tokens.
    pub(crate) registry: Arc<dyn Registry>,
    /// Server-wide default limits (see `limits::server_defaults`).
    pub(crate) defaults: stratus_tenancy::Limits,
    /// Ingestion rate limit buckets, per tenant.
    pub(crate) rate_limiters: crate::limits::RateLimiters,
    /// `max_concurrent_queries` slots, per tenant.
    pub(crate) tenant_query_slots: crate::limits::QuerySlots,
    default_tenant: TenantId,
    /// Cluster-mode write and read paths (none: local storage).
    pub(crate) backends: crate::backend::Backends,
    /// Elected replicas of Prometheus HA pairs (`ha`).
    pub(crate) ha: stratus_ring::HaTracker,
}

/// Why a request has no usable tenant.
#[derive(Debug)]
pub(crate) enum TenantError {
    Missing,
    Invalid(String),
}

impl std::fmt::Display for TenantError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => f.write_str("no org id: the X-Scope-OrgID header is required"),
            Self::Invalid(e) => write!(f, "invalid X-Scope-OrgID header: {e}"),
        }
    }
}

impl IntoResponse for TenantError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::Missing => StatusCode::UNAUTHORIZED,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
        };
        (status, self.to_string()).into_response()
    }
}

impl AppState {
    /// The tenant of a request, per the auth mode.
    pub(crate) fn tenant(&self, headers: &HeaderMap) -> Result<TenantId, TenantError> {
        match self.cfg.auth {
            AuthMode::None => Ok(self.default_tenant.clone()),
            // Set by `auth::tenant_auth` from the token, never by the client.
            AuthMode::Token => {
                let v = headers
                    .get(crate::auth::AUTH_TENANT_HEADER)
                    .ok_or(TenantError::Missing)?;
                let s = v
                    .to_str()
                    .map_err(|_| TenantError::Invalid("not ASCII".into()))?;
                TenantId::new(s).map_err(|e| TenantError::Invalid(e.to_string()))
            }
            AuthMode::Header => {
                let v = headers.get(ORG_ID_HEADER).ok_or(TenantError::Missing)?;
                let s = v
                    .to_str()
                    .map_err(|_| TenantError::Invalid("not ASCII".into()))?;
                if s.is_empty() {
                    return Err(TenantError::Missing);
                }
                TenantId::new(s).map_err(|e| TenantError::Invalid(e.to_string()))
            }
        }
    }

    /// The tenant's database for a read, or `None` when the tenant has no
    /// data (so reads never create tenant directories).
    pub(crate) async fn db_for_read(&self, t: &TenantId) -> stratus_tsdb::Result<Option<Arc<Db>>> {
        if let Some(db) = self.tenants.get_open(t).await {
            return Ok(Some(db));
        }
        if !self.tenants.exists(t).await? {
            return Ok(None);
        }
        self.tenants.get(t).await.map(Some)
    }

    /// What reads of tenant `t` go through: the read backend when one is
    /// set, else the local database (`None` when the tenant has no data).
    pub(crate) async fn queryable_for_read(
        &self,
        t: &TenantId,
    ) -> stratus_tsdb::Result<Option<Arc<dyn Queryable>>> {
        if let Some(r) = &self.backends.read {
            return Ok(Some(r.queryable(t)));
        }
        Ok(self
            .db_for_read(t)
            .await?
            .map(|db| db as Arc<dyn Queryable>))
    }
}

/// Which remote-write version a Content-Type names; `Err` is the body of
/// a 415 answer.
fn rw_version(headers: &HeaderMap) -> Result<RwVersion, String> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(RwVersion::V1);
    };
    let ct = ct
        .to_str()
        .map_err(|_| "unreadable Content-Type".to_string())?;
    let mut parts = ct.split(';');
    let media = parts.next().unwrap_or("").trim();
    if media.is_empty() {
        return Ok(RwVersion::V1);
    }
    if !media.eq_ignore_ascii_case("application/x-protobuf") {
        return Err(format!(
            "unsupported Content-Type {ct:?}: expected application/x-protobuf (remote write 1.0 or 2.0)"
        ));
    }
    let mut proto = None;
    for p in parts {
        if let Some((k, v)) = p.split_once('=')
            && k.trim().eq_ignore_ascii_case("proto")
        {
            proto = Some(v.trim().trim_matches('"'));
        }
    }
    match proto {
        None | Some("prometheus.WriteRequest") => Ok(RwVersion::V1),
        Some("io.prometheus.write.v2.Request") => Ok(RwVersion::V2),
        Some(other) => Err(format!(
            "unsupported remote write message {other:?}: expected prometheus.WriteRequest or io.prometheus.write.v2.Request"
        )),
    }
}

/// Checks Content-Encoding (absent means snappy, as upstream assumes).
fn check_encoding(headers: &HeaderMap) -> Result<(), String> {
    match headers.get(header::CONTENT_ENCODING) {
        None => Ok(()),
        Some(v) => match v.to_str() {
            Ok(s) if s.trim().is_empty() || s.trim().eq_ignore_ascii_case("snappy") => Ok(()),
            _ => Err(format!(
                "unsupported Content-Encoding {v:?}: only snappy (block format) is supported"
            )),
        },
    }
}

/// What a push did, for the response.
#[derive(Debug)]
pub(crate) struct PushOutcome {
    pub(crate) received: u64,
    pub(crate) refused_invalid: u64,
    pub(crate) histograms_refused: u64,
    pub(crate) messages: Vec<String>,
    pub(crate) num_messages: u64,
    pub(crate) report: AppendReport,
    /// Exemplars stored (duplicates of the newest one count as stored).
    pub(crate) exemplars_written: u64,
    /// Exemplars refused (invalid, out of order, storage disabled).
    pub(crate) exemplars_refused: u64,
    /// Samples of series dropped by label limits.
    pub(crate) limit_refused: u64,
    /// The tenant's limits in force (for messages).
    pub(crate) limits: stratus_tenancy::Limits,
}

/// What [`apply_batch`] did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub(crate) report: AppendReport,
    pub(crate) exemplars: stratus_tsdb::ExemplarReport,
}

/// Injects a zero sample at each created timestamp of the batch whose
/// series has no sample at or after it in the head yet (Prometheus'
/// created-timestamp zero ingestion, which checks the head's newest sample
/// the same way). Refusals of these samples are not reported: they are a
/// hint, not data the sender wrote.
fn inject_created_zeros(db: &Db, batch: &WriteBatch) -> stratus_tsdb::Result<u64> {
    let mut zeros: Vec<(&Labels, [Sample; 1])> = Vec::new();
    for c in &batch.created {
        if db
            .head_newest_timestamp(&c.series)
            .is_none_or(|newest| newest < c.ct)
        {
            zeros.push((&c.series, [Sample::new(c.ct, 0.0)]));
        }
    }
    if zeros.is_empty() {
        return Ok(0);
    }
    let refs: Vec<SeriesSamples<'_>> = zeros
        .iter()
        .map(|(l, s)| SeriesSamples {
            labels: *l,
            samples: s,
        })
        .collect();
    Ok(db.append(&refs)?.accepted)
}

/// Appends a decoded batch (blocking): created-timestamp zeros (if
/// enabled), samples, then exemplars and metadata.
pub(crate) fn apply_batch(
    db: &Db,
    batch: &WriteBatch,
    ct_zero: bool,
) -> stratus_tsdb::Result<Applied> {
    if ct_zero && !batch.created.is_empty() {
        inject_created_zeros(db, batch)?;
    }
    let report = if batch.series.is_empty() && batch.hist_series.is_empty() {
        AppendReport::default()
    } else {
        append_batch(db, batch)?
    };
    let exemplars = db.add_exemplars(
        batch
            .exemplars
            .iter()
            .map(|e| (&e.series, e.exemplar.clone())),
    )?;
    db.set_metadata(&batch.metadata)?;
    Ok(Applied { report, exemplars })
}

/// Appends a decoded batch (blocking), with its start timestamps when
/// it has any. Float series go with their labels borrowed from the
/// batch: the head builds owned labels only for new series.
fn append_batch(db: &Db, batch: &WriteBatch) -> stratus_tsdb::Result<AppendReport> {
    let refs: Vec<SeriesSamples<'_, crate::remote_write::BatchLabels<'_>>> = batch
        .series
        .iter()
        .map(|s| SeriesSamples {
            labels: batch.labels_of(s),
            samples: batch.samples_of(s),
        })
        .collect();
    let with_sts = batch.has_start_timestamps();
    if batch.hist_series.is_empty() && !with_sts {
        return db.append(&refs);
    }
    let hists: Vec<SeriesHistograms<'_>> = batch
        .hist_series
        .iter()
        .map(|s| SeriesHistograms {
            labels: &s.labels,
            histograms: &s.histograms,
            float_histograms: &s.float_histograms,
        })
        .collect();
    if !with_sts {
        return db.append_batch(&refs, &hists);
    }
    let samples: Vec<&[i64]> = batch.series.iter().map(|s| batch.sts_of(s)).collect();
    let histograms: Vec<&[i64]> = batch
        .hist_series
        .iter()
        .map(|s| s.histogram_sts.as_slice())
        .collect();
    let float_histograms: Vec<&[i64]> = batch
        .hist_series
        .iter()
        .map(|s| s.float_histogram_sts.as_slice())
        .collect();
    let sts = StartTimestamps {
        samples: &samples,
        histograms: &histograms,
        float_histograms: &float_histograms,
    };
    db.append_labels_with_start_timestamps(&refs, &hists, &sts)
}

/// The answer to a body that could not be decoded.
fn decode_error_response(e: &DecodeError) -> Response {
    let status = match e {
        DecodeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    (status, format!("{e}\n")).into_response()
}

fn internal_error(msg: String) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, msg).into_response()
}

/// Decodes a body, then appends it to the tenant's database (the
/// database is opened only when there is something to write).
async fn decode_and_append(
    st: &AppState,
    tenant: &TenantId,
    version: RwVersion,
    body: Bytes,
) -> Result<PushOutcome, Response> {
    let max = st.cfg.max_decompressed_bytes;
    let decoded = tokio::task::spawn_blocking(move || {
        let raw = remote_write::decompress_snappy(&body, max)?;
        remote_write::decode(version, &raw)
    })
    .await;
    let mut batch = match decoded {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Err(decode_error_response(&e)),
        Err(e) => return Err(internal_error(format!("decode task failed: {e}\n"))),
    };
    if let Err(r) = crate::ha::dedup(st, tenant, &mut batch, &st.effective_limits(tenant)).await {
        return Err(ha_reject_response(r));
    }
    append_decoded(st, tenant, batch).await
}

/// The remote-write answer to a request the HA tracker did not let in.
fn ha_reject_response(r: crate::ha::HaReject) -> Response {
    use crate::ha::HaReject;
    match r {
        HaReject::Dropped(m) => (StatusCode::ACCEPTED, m).into_response(),
        HaReject::TooManyClusters(m) => (StatusCode::BAD_REQUEST, m).into_response(),
        HaReject::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m).into_response(),
    }
}

impl Metrics {
    /// Counts a push's exemplars.
    fn count_exemplars(&self, tl: &crate::metrics::TenantLabels, out: &PushOutcome) {
        if out.exemplars_written > 0 {
            self.exemplars_written
                .get_or_create(tl)
                .inc_by(out.exemplars_written);
        }
        if out.exemplars_refused > 0 {
            tracing::debug!(tenant = %tl.tenant, refused = out.exemplars_refused, "exemplars refused (invalid or out of order)");
            self.exemplars_rejected
                .get_or_create(tl)
                .inc_by(out.exemplars_refused);
        }
    }
}

/// Appends a decoded batch to the tenant's database (opened only when
/// there is something to write).
pub(crate) async fn append_decoded(
    st: &AppState,
    tenant: &TenantId,
    mut batch: WriteBatch,
) -> Result<PushOutcome, Response> {
    let limits = st.effective_limits(tenant);
    st.metrics
        .tenant_samples_received
        .get_or_create(&Metrics::tenant(tenant.as_str()))
        .inc_by(batch.samples_received() + batch.histograms_refused + batch.histograms_valid());
    let n = batch.samples.len() as u64 + batch.histograms_valid();
    crate::limits::check_ingestion_rate(st, tenant, &limits, n).map_err(|r| *r)?;
    let limit_refused = crate::limits::enforce_label_limits(st, tenant, &mut batch, &limits);
    if !st.cfg.start_timestamp_storage && batch.has_start_timestamps() {
        batch.clear_start_timestamps();
    }
    let ct_zero = st.cfg.created_timestamp_zero_ingestion;
    if !ct_zero {
        // Only used for zero injection; a write backend (the cluster's
        // distributor) forwards what is left.
        batch.created.clear();
    }
    let (batch, applied) = if batch.series.is_empty()
        && batch.hist_series.is_empty()
        && batch.exemplars.is_empty()
        && batch.metadata.is_empty()
    {
        (batch, Applied::default())
    } else if let Some(w) = &st.backends.write {
        match w.write(tenant, &batch).await {
            Ok(o) => (
                batch,
                Applied {
                    report: o.report,
                    exemplars: o.exemplars,
                },
            ),
            Err(f) => {
                let status =
                    StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return Err((status, f.message).into_response());
            }
        }
    } else {
        let db = st.tenants.get(tenant).await.map_err(|e| {
            error!(tenant = %tenant, error = %e, "opening tenant database");
            internal_error(format!("opening the tenant database failed: {e}\n"))
        })?;
        let res = crate::append_pool::run(move || {
            let r = apply_batch(&db, &batch, ct_zero);
            (batch, r)
        })
        .await;
        match res {
            Ok((batch, Ok(applied))) => (batch, applied),
            Ok((_, Err(e))) => {
                error!(tenant = %tenant, error = %e, "append failed");
                return Err(internal_error(format!("storage error: {e}\n")));
            }
            Err(e) => return Err(internal_error(format!("append task failed: {e}\n"))),
        }
    };
    let ex = applied.exemplars;
    Ok(PushOutcome {
        received: batch.samples_received() + batch.histograms_refused + batch.histograms_valid(),
        refused_invalid: batch.invalid_samples,
        histograms_refused: batch.histograms_refused,
        num_messages: batch.num_errors,
        messages: batch.errors,
        report: applied.report,
        exemplars_written: ex.added + ex.duplicates,
        exemplars_refused: batch.exemplars_refused + ex.out_of_order + ex.invalid,
        limit_refused,
        limits,
    })
}

impl AppState {
    /// Counts a write's refused samples per tenant and reason.
    /// Counts a write's samples (received, written, refused — in total
    /// and per reason) and exemplars; returns the refused sample count.
    fn count_outcome(&self, tenant: &TenantId, out: &PushOutcome) -> u64 {
        let tl = Metrics::tenant(tenant.as_str());
        self.metrics.count_exemplars(&tl, out);
        self.metrics
            .samples_received
            .get_or_create(&tl)
            .inc_by(out.received);
        self.metrics
            .samples_written
            .get_or_create(&tl)
            .inc_by(out.report.accepted + out.report.histograms_accepted);
        let rejected =
            out.refused_invalid + out.histograms_refused + out.report.rejected + out.limit_refused;
        if rejected > 0 {
            self.metrics
                .samples_rejected
                .get_or_create(&tl)
                .inc_by(rejected);
        }
        self.count_rejected(tenant, "invalid", out.refused_invalid);
        self.count_rejected(tenant, "native_histogram", out.histograms_refused);
        self.count_rejected(
            tenant,
            "sample_time",
            out.report
                .rejected
                .saturating_sub(out.report.series_limited),
        );
        self.count_rejected(tenant, "series_limit", out.report.series_limited);
        rejected
    }
}

/// The line naming the series limits that refused samples, if any did.
fn series_limit_message(tenant: &TenantId, out: &PushOutcome) -> Option<String> {
    if out.report.series_limited == 0 {
        return None;
    }
    let lim = |v: Option<u64>| {
        v.filter(|&n| n > 0)
            .map_or("unlimited".to_string(), |n| n.to_string())
    };
    Some(format!(
        "{} sample(s) refused by series limits of tenant {tenant}: max_series={}, max_series_per_metric={}",
        out.report.series_limited,
        lim(out.limits.max_series),
        lim(out.limits.max_series_per_metric),
    ))
}

/// Most messages listed in a 400 answer (senders log about 1 KiB).
const MAX_LISTED: usize = 10;

/// `POST /api/v1/push` (and aliases): remote write 1.0 and 2.0.
async fn push(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let tenant = match st.tenant(&headers) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let version = match rw_version(&headers) {
        Ok(v) => v,
        Err(msg) => return (StatusCode::UNSUPPORTED_MEDIA_TYPE, msg).into_response(),
    };
    if let Err(msg) = check_encoding(&headers) {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, msg).into_response();
    }
    let out = match decode_and_append(&st, &tenant, version, body).await {
        Ok(out) => out,
        Err(resp) => return resp,
    };
    let rejected = st.count_outcome(&tenant, &out);
    let mut resp = if out.num_messages == 0 && out.report.rejected == 0 {
        StatusCode::NO_CONTENT.into_response()
    } else {
        let total = out.num_messages + out.report.rejected;
        let mut body = format!(
            "{rejected} sample(s) refused, {} written; {total} problem(s):\n",
            out.report.accepted + out.report.histograms_accepted
        );
        let lines = out
            .messages
            .iter()
            .cloned()
            .chain(out.report.errors.iter().map(ToString::to_string));
        let mut listed = 0u64;
        for l in lines.take(MAX_LISTED) {
            body.push_str(&l);
            body.push('\n');
            listed += 1;
        }
        if total > listed {
            body.push_str(&format!("... and {} more\n", total - listed));
        }
        // Mimir answers 400 to the per-tenant series limits too, although
        // such a sample may be accepted later (when series go idle):
        // retrying at once would not help, and a 5xx/429 would make the
        // sender retry the whole batch forever. We follow Mimir.
        if let Some(msg) = series_limit_message(&tenant, &out) {
            body.push_str(&msg);
            body.push('\n');
        }
        warn!(tenant = %tenant, refused = rejected, written = out.report.accepted, "remote write partly refused");
        (StatusCode::BAD_REQUEST, body).into_response()
    };
    if version == RwVersion::V2 {
        let h = resp.headers_mut();
        h.insert(SAMPLES_WRITTEN, HeaderValue::from(out.report.accepted));
        h.insert(
            HISTOGRAMS_WRITTEN,
            HeaderValue::from(out.report.histograms_accepted),
        );
        h.insert(EXEMPLARS_WRITTEN, HeaderValue::from(out.exemplars_written));
    }
    resp
}

/// Which OTLP encoding a Content-Type names; `Err` is the body of a 415.
fn otlp_encoding(headers: &HeaderMap) -> Result<OtlpEncoding, String> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or(""))
        .unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/x-protobuf") {
        Ok(OtlpEncoding::Protobuf)
    } else if media.eq_ignore_ascii_case("application/json") {
        Ok(OtlpEncoding::Json)
    } else {
        Err(format!(
            "unsupported Content-Type {ct:?}: expected application/x-protobuf or application/json\n"
        ))
    }
}

/// `POST /otlp/v1/metrics` (and under `/prometheus`, `/api/prom`): OTLP/HTTP
/// metrics, protobuf or JSON, plain or gzip. Answers an
/// `ExportMetricsServiceResponse` in the request's encoding, with
/// `partial_success` listing rejected data points.
async fn otlp_metrics(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tenant = match st.tenant(&headers) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let enc = match otlp_encoding(&headers) {
        Ok(e) => e,
        Err(msg) => return (StatusCode::UNSUPPORTED_MEDIA_TYPE, msg).into_response(),
    };
    let gzip = match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str()) {
        None => false,
        Some(Ok(v)) if v.trim().is_empty() || v.trim().eq_ignore_ascii_case("identity") => false,
        Some(Ok(v)) if v.trim().eq_ignore_ascii_case("gzip") => true,
        Some(_) => {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported Content-Encoding: only gzip is supported\n",
            )
                .into_response();
        }
    };
    let max = st.cfg.max_decompressed_bytes;
    let decoded = tokio::task::spawn_blocking(move || {
        let req = if gzip {
            otlp::decode_otlp(enc, &otlp::decompress_gzip(&body, max)?)?
        } else {
            otlp::decode_otlp(enc, &body)?
        };
        Ok::<_, otlp::OtlpDecodeError>(otlp::translate(&req))
    })
    .await;
    let ob = match decoded {
        Ok(Ok(b)) => b,
        Ok(Err(e @ otlp::OtlpDecodeError::TooLarge { .. })) => {
            return (StatusCode::PAYLOAD_TOO_LARGE, format!("{e}\n")).into_response();
        }
        Ok(Err(e)) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        Err(e) => return internal_error(format!("decode task failed: {e}\n")),
    };
    let mut rejected = ob.rejected_points;
    let mut messages = ob.messages;
    let mut batch = ob.batch;
    let ct = match enc {
        OtlpEncoding::Protobuf => "application/x-protobuf",
        OtlpEncoding::Json => "application/json",
    };
    match crate::ha::dedup(&st, &tenant, &mut batch, &st.effective_limits(&tenant)).await {
        Ok(()) => {}
        Err(crate::ha::HaReject::Dropped(m)) => {
            // Accepted (202) with the reason as a partial-success message.
            let body = otlp::encode_response(enc, 0, m.trim_end());
            return (StatusCode::ACCEPTED, [(header::CONTENT_TYPE, ct)], body).into_response();
        }
        Err(r) => return ha_reject_response(r),
    }
    let out = match append_decoded(&st, &tenant, batch).await {
        Ok(out) => out,
        Err(resp) => return resp,
    };
    st.count_outcome(&tenant, &out);
    rejected += out.limit_refused;
    if let Some(msg) = series_limit_message(&tenant, &out) {
        messages.push(msg);
    }
    if out.report.rejected > 0 {
        rejected += out.report.rejected;
        messages.extend(
            out.report
                .errors
                .iter()
                .take(MAX_LISTED)
                .map(ToString::to_string),
        );
    }
    if rejected > 0 {
        warn!(tenant = %tenant, rejected, written = out.report.accepted, "OTLP write partly rejected");
    }
    let body = otlp::encode_response(enc, rejected, &messages.join("; "));
    (StatusCode::OK, [(header::CONTENT_TYPE, ct)], body).into_response()
}

/// `/ready` and `/health`: 200 while the server serves, 503 once it is
/// shutting down.
async fn ready(State(st): State<Arc<AppState>>) -> Response {
    if st.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

/// `/metrics`: the service's own metrics.
async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let stats = st.tenants.stats().await;
    st.metrics.open_tenants.set(stats.len() as i64);
    for (t, s) in &stats {
        let tl = Metrics::tenant(t.as_str());
        st.metrics
            .tenant_active_series
            .get_or_create(&tl)
            .set(i64::try_from(s.head_series).unwrap_or(i64::MAX));
        st.metrics
            .tenant_bytes_stored
            .get_or_create(&tl)
            .set(i64::try_from(s.block_bytes.saturating_add(s.wal_bytes)).unwrap_or(i64::MAX));
    }
    let mut text = st.metrics.encode();
    if let Some(extra) = &st.backends.extra_metrics
        && let Some(eof) = text.rfind("# EOF")
    {
        text.insert_str(eof, &extra.encode());
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Overload protection for writes: at most `max_inflight_writes` are
/// read, decoded and appended at once; past that the server answers 503
/// with `Retry-After` before reading the body (senders retry 5xx, so
/// nothing is lost).
async fn write_admission(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Ok(_permit) = st.write_slots.clone().try_acquire_owned() else {
        warn!(
            max_inflight_writes = st.cfg.max_inflight_writes,
            "write refused: server overloaded"
        );
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!(
                "server overloaded: {} writes in flight (max_inflight_writes); retry later\n",
                st.cfg.max_inflight_writes
            ),
        )
            .into_response();
    };
    next.run(req).await
}

/// Admin token required in token mode; open in the other modes.
async fn operator_auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if st.cfg.auth == AuthMode::Token {
        auth::admin_auth(State(st), req, next).await
    } else {
        next.run(req).await
    }
}

/// `/ingester/flush` (Mimir's name): cuts every tenant's head into blocks
/// now (for operators before maintenance). With `?compact=true` it also
/// rewrites the new blocks into the compact encoding at once (as a
/// "force merge"; benchmarks measure bytes on disk this way).
async fn flush(
    State(st): State<Arc<AppState>>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Response {
    let compact = q.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "compact=true" || kv == "compact=1")
    });
    let tenants = match st.tenants.list().await {
        Ok(t) => t,
        Err(e) => return internal_error(format!("listing tenants: {e}")),
    };
    let mut blocks = 0usize;
    for t in &tenants {
        let db = match st.tenants.get(t).await {
            Ok(db) => db,
            Err(e) => return internal_error(format!("opening tenant {t}: {e}")),
        };
        match db.flush_head().await {
            Ok(metas) => blocks += metas.len(),
            Err(e) => return internal_error(format!("flushing tenant {t}: {e}")),
        }
        if compact {
            if let Err(e) = db.force_compact().await {
                return internal_error(format!("compacting tenant {t}: {e}"));
            }
        }
    }
    info!(tenants = tenants.len(), blocks, "head flushed on request");
    (
        StatusCode::OK,
        format!("flushed {} tenants into {blocks} blocks\n", tenants.len()),
    )
        .into_response()
}

/// `flush_on_shutdown`: every tenant's head into uploaded blocks before
/// the databases close. A tenant that fails keeps its data in its WAL
/// (logged); the others are still flushed.
async fn flush_all_on_shutdown(tenants: &Tenants) {
    let list = match tenants.list().await {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "flush on shutdown: cannot list tenants; heads stay in the WAL");
            return;
        }
    };
    let mut blocks = 0usize;
    for t in &list {
        let flushed = match tenants.get(t).await {
            Ok(db) => db.flush_head().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match flushed {
            Ok(metas) => blocks += metas.len(),
            Err(e) => {
                warn!(tenant = %t, error = %e, "flush on shutdown failed; the head stays in the WAL")
            }
        }
    }
    info!(
        tenants = list.len(),
        blocks, "heads flushed to blocks on shutdown"
    );
}

/// `/config`: the effective configuration as YAML (it holds no secrets).
async fn config(State(st): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        st.cfg.to_yaml(),
    )
        .into_response()
}

/// Counts requests by route and status and times them.
async fn track(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "HEAD") => m.to_string(),
        _ => "other".to_string(),
    };
    let t0 = Instant::now();
    let resp = next.run(req).await;
    st.metrics
        .request_duration
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(t0.elapsed().as_secs_f64());
    st.metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// Path prefixes the read API is served under.
const READ_PREFIXES: [&str; 3] = ["", "/prometheus", "/api/prom"];

fn router(st: Arc<AppState>) -> Router {
    let push_routes = Router::new()
        .route("/api/v1/push", post(push))
        .route("/api/prom/push", post(push))
        .route("/api/v1/write", post(push))
        .route("/otlp/v1/metrics", post(otlp_metrics))
        .route("/prometheus/otlp/v1/metrics", post(otlp_metrics))
        .route("/api/prom/otlp/v1/metrics", post(otlp_metrics))
        .route("/api/v1/otlp/v1/metrics", post(otlp_metrics))
        .layer(DefaultBodyLimit::max(st.cfg.max_compressed_bytes))
        .route_layer(middleware::from_fn_with_state(
            st.clone(),
            auth::tenant_auth,
        ))
        .route_layer(middleware::from_fn_with_state(st.clone(), write_admission));
    let mut reads = Router::new();
    for p in READ_PREFIXES {
        reads = reads
            .route(
                &format!("{p}/api/v1/query"),
                get(query::instant).post(query::instant),
            )
            .route(
                &format!("{p}/api/v1/query_range"),
                get(query::range).post(query::range),
            )
            .route(
                &format!("{p}/api/v1/series"),
                get(read::series).post(read::series),
            )
            .route(
                &format!("{p}/api/v1/labels"),
                get(read::label_names).post(read::label_names),
            )
            .route(
                &format!("{p}/api/v1/label/{{name}}/values"),
                get(read::label_values).post(read::label_values),
            )
            .route(
                &format!("{p}/api/v1/status/buildinfo"),
                get(read::buildinfo),
            )
            .route(&format!("{p}/api/v1/read"), post(remote_read::read))
            .route(
                &format!("{p}/api/v1/format_query"),
                get(expr_api::format_query).post(expr_api::format_query),
            )
            .route(
                &format!("{p}/api/v1/parse_query"),
                get(expr_api::parse_query).post(expr_api::parse_query),
            )
            .route(&format!("{p}/api/v1/status/config"), get(status::config))
            .route(
                &format!("{p}/api/v1/status/flags"),
                get(status::flags_handler),
            )
            .route(
                &format!("{p}/api/v1/status/runtimeinfo"),
                get(status::runtimeinfo),
            )
            .route(
                &format!("{p}/api/v1/status/walreplay"),
                get(status::walreplay),
            )
            .route(&format!("{p}/api/v1/status/tsdb"), get(status::tsdb))
            .route(&format!("{p}/api/v1/targets"), get(status::targets))
            .route(
                &format!("{p}/api/v1/targets/metadata"),
                get(status::targets_metadata),
            )
            .route(&format!("{p}/api/v1/rules"), get(status::rules))
            .route(&format!("{p}/api/v1/alerts"), get(status::alerts))
            .route(
                &format!("{p}/api/v1/alertmanagers"),
                get(status::alertmanagers),
            )
            .route(
                &format!("{p}/api/v1/admin/tsdb/delete_series"),
                post(status::delete_series).put(status::delete_series),
            )
            .route(
                &format!("{p}/api/v1/admin/tsdb/clean_tombstones"),
                post(status::clean_tombstones).put(status::clean_tombstones),
            )
            .route(
                &format!("{p}/api/v1/admin/tsdb/snapshot"),
                post(status::snapshot).put(status::snapshot),
            )
            .route(
                &format!("{p}/api/v1/metadata"),
                get(meta::metadata).post(meta::metadata),
            )
            .route(
                &format!("{p}/api/v1/query_exemplars"),
                get(meta::query_exemplars).post(meta::query_exemplars),
            );
    }
    let reads = reads
        .layer(DefaultBodyLimit::max(st.cfg.max_form_bytes))
        .route_layer(middleware::from_fn_with_state(
            st.clone(),
            auth::tenant_auth,
        ));
    let admin_routes = Router::new()
        .route(
            "/api/v1/admin/tenants",
            get(admin::list_tenants).post(admin::create_tenant),
        )
        .route(
            "/api/v1/admin/tenants/{id}",
            get(admin::show_tenant)
                .patch(admin::patch_tenant)
                .delete(admin::delete_tenant),
        )
        .route("/api/v1/admin/tenants/{id}/limits", put(admin::put_limits))
        .route(
            "/api/v1/admin/tenants/{id}/tokens",
            get(admin::list_tenant_tokens).post(admin::create_tenant_token),
        )
        .route(
            "/api/v1/admin/tokens",
            get(admin::list_tokens).post(admin::create_admin_token),
        )
        .route("/api/v1/admin/tokens/{id}", delete(admin::revoke_token))
        .route("/api/v1/admin/plans", get(admin::list_plans))
        .route(
            "/api/v1/admin/plans/{name}",
            put(admin::put_plan).delete(admin::delete_plan),
        )
        .layer(DefaultBodyLimit::max(1 << 20))
        .route_layer(middleware::from_fn_with_state(st.clone(), auth::admin_auth));
    // Operator endpoints: the admin token in token mode, open otherwise
    // (as Mimir's, which sit behind the operator's network).
    let operator_routes = Router::new()
        .route("/ingester/flush", post(flush).get(flush))
        .route_layer(middleware::from_fn_with_state(st.clone(), operator_auth));
    let app = Router::new()
        .merge(push_routes)
        .merge(reads)
        .merge(admin_routes)
        .merge(operator_routes)
        .route("/ready", get(ready))
        .route("/health", get(ready))
        .route("/metrics", get(metrics))
        .route("/config", get(config))
        .layer(middleware::from_fn_with_state(st.clone(), track));
    // Extra operator routes of cluster components (the `/ring` page).
    match st.backends.operator_routes.clone() {
        Some(extra) => app
            .with_state(st.clone())
            .merge(extra.route_layer(middleware::from_fn_with_state(st, operator_auth))),
        None => app.with_state(st),
    }
}

fn base_url(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("http://localhost:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
}

/// Opens the block bucket the config names: `<data_dir>/blocks` or S3
/// (checked with one listing request, so a wrong endpoint, bucket or
/// credential stops the start with a clear error).
pub async fn open_bucket(cfg: &ServerConfig) -> Result<Bucket> {
    match cfg.storage.backend {
        StorageBackend::Filesystem => {
            let blocks = cfg.data_dir.join("blocks");
            Bucket::local(&blocks).context(OpenBucketSnafu { path: &blocks })
        }
        StorageBackend::S3 => {
            let b = Bucket::s3(&cfg.s3).context(ObjectStoreSnafu)?;
            b.check().await.context(ObjectStoreSnafu)?;
            tracing::info!(location = %b.location(), "blocks in S3");
            Ok(b)
        }
    }
}

/// Runs the service on `listener` until `shutdown` resolves, then stops
/// accepting, finishes in-flight requests and syncs every tenant WAL.
pub async fn serve(
    cfg: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_with(cfg, listener, crate::backend::Backends::default(), shutdown).await
}

/// Opens the tenant databases as [`serve`] does (for an ingester that
/// shares them between its gRPC server and [`serve_with`]).
pub async fn open_tenants(cfg: &ServerConfig) -> Result<Arc<Tenants>> {
    let bucket = open_bucket(cfg).await?;
    let db_cfg = DbConfig {
        head: HeadConfig {
            ooo_window: i64::try_from(cfg.out_of_order_window.as_millis()).unwrap_or(i64::MAX),
            ..HeadConfig::default()
        },
        retention: cfg.retention,
        max_exemplars: cfg.max_exemplars,
        uploader: (!cfg.ingester_id.is_empty()).then(|| cfg.ingester_id.clone()),
        ..DbConfig::default()
    };
    Ok(Arc::new(Tenants::new(&cfg.data_dir, bucket, db_cfg)))
}

/// [`serve`] with cluster-mode backends: writes and reads go where
/// `backends` says, the local engine serves the rest.
pub async fn serve_with(
    cfg: ServerConfig,
    listener: TcpListener,
    backends: crate::backend::Backends,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let reg_path = cfg.data_dir.join("registry.json");
    let (registry, file_registry): (Arc<dyn Registry>, _) = match &backends.registry {
        Some(r) => (r.clone(), None),
        None => {
            let f = Arc::new(FileRegistry::open(&reg_path).context(RegistrySnafu)?);
            (f.clone(), Some(f))
        }
    };
    crate::status::mark_started();
    let tenants = match &backends.tenants {
        Some(t) => t.clone(),
        None => open_tenants(&cfg).await?,
    };
    let default_tenant =
        TenantId::new(DEFAULT_TENANT).map_err(|e| crate::error::Error::Config {
            message: e.to_string(),
        })?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let (maint, apply_tx) = {
        let tenants = tenants.clone();
        let every = cfg.maintain_interval;
        let idle = cfg.idle_close;
        let registry = registry.clone();
        let (apply_tx, apply_rx) = tokio::sync::oneshot::channel::<Arc<AppState>>();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let st = apply_rx.await.ok();
            let mut generation = registry.generation();
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        // A shared registry changed by other nodes: push
                        // storage limits into the open databases.
                        let g = registry.generation();
                        if g != generation && let Some(st) = &st {
                            generation = g;
                            st.apply_all_limits().await;
                        }
                        tenants.maintain(idle).await
                    }
                    _ = stop_rx.changed() => break,
                }
            }
        });
        (task, apply_tx)
    };
    let addr = listener.local_addr().context(ServeSnafu)?;
    let ha_cfg = cfg.ha_tracker.tracker_config();
    ha_cfg.validate().map_err(|e| crate::error::Error::Config {
        message: e.to_string(),
    })?;
    let ha_kv: Arc<dyn stratus_ring::Kv> = match &backends.ha_kv {
        Some(kv) => kv.clone(),
        None => Arc::new(stratus_ring::MemKv::new()),
    };
    let ha = stratus_ring::HaTracker::start(ha_kv, ha_cfg).await;
    let st = Arc::new(AppState {
        ha,
        tenants: tenants.clone(),
        metrics: Metrics::new(),
        ready: AtomicBool::new(true),
        query_slots: Arc::new(tokio::sync::Semaphore::new(
            cfg.max_concurrent_queries.max(1),
        )),
        write_slots: Arc::new(tokio::sync::Semaphore::new(cfg.max_inflight_writes.max(1))),
        registry: registry.clone(),
        defaults: crate::limits::server_defaults(&cfg),
        rate_limiters: crate::limits::RateLimiters::default(),
        tenant_query_slots: crate::limits::QuerySlots::default(),
        default_tenant,
        backends,
        cfg,
    });
    let _ = apply_tx.send(st.clone());
    let base = base_url(addr);
    // Tokens exist on disk before the first line announcing the server.
    if st.cfg.auth == AuthMode::Token
        && let Some(f) = &file_registry
    {
        auth::bootstrap(f, &st.cfg.data_dir, &base).context(RegistrySnafu)?;
    }
    info!(
        listen = %addr,
        data_dir = %st.cfg.data_dir.display(),
        auth = ?st.cfg.auth,
        "Stratus is serving"
    );
    info!("push (Prometheus remote_write url): {base}/api/v1/push");
    info!("push (OTLP/HTTP metrics endpoint): {base}/otlp/v1/metrics");
    info!(
        "query (Prometheus API base URL, e.g. for Grafana): {base} or {base}/prometheus; this build serves /api/v1/query, /api/v1/query_range, /api/v1/series, /api/v1/labels and /api/v1/label/<name>/values"
    );
    if st.cfg.auth == AuthMode::Header {
        info!("tenants: send the X-Scope-OrgID header with every request");
    }
    st.apply_all_limits().await;
    let app = router(st.clone());
    let st2 = st.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            st2.ready.store(false, Ordering::Relaxed);
            info!("shutting down: no new connections; finishing in-flight requests");
        })
        .await
        .context(ServeSnafu);
    let _ = stop_tx.send(true);
    if let Err(e) = maint.await {
        warn!(error = %e, "maintenance task ended abnormally");
    }
    if st.cfg.flush_on_shutdown {
        flush_all_on_shutdown(&tenants).await;
    }
    tenants.close_all().await.context(CloseSnafu)?;
    served?;
    info!("all tenant databases synced and closed; bye");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn content_types() {
        assert_eq!(rw_version(&h(&[])), Ok(RwVersion::V1));
        assert_eq!(
            rw_version(&h(&[("content-type", "application/x-protobuf")])),
            Ok(RwVersion::V1)
        );
        assert_eq!(
            rw_version(&h(&[(
                "content-type",
                "application/x-protobuf;proto=prometheus.WriteRequest"
            )])),
            Ok(RwVersion::V1)
        );
        assert_eq!(
            rw_version(&h(&[(
                "content-type",
                "application/x-protobuf; proto=\"io.prometheus.write.v2.Request\""
            )])),
            Ok(RwVersion::V2)
        );
        assert!(rw_version(&h(&[("content-type", "application/json")])).is_err());
        assert!(
            rw_version(&h(&[(
                "content-type",
                "application/x-protobuf;proto=io.prometheus.write.v3.Request"
            )]))
            .is_err()
        );
    }

    #[test]
    fn encodings() {
        assert!(check_encoding(&h(&[])).is_ok());
        assert!(check_encoding(&h(&[("content-encoding", "snappy")])).is_ok());
        assert!(check_encoding(&h(&[("content-encoding", "gzip")])).is_err());
        assert!(check_encoding(&h(&[("content-encoding", "zstd")])).is_err());
    }
}
