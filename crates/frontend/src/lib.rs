//! The Stratus query-frontend (`stratus --target=query-frontend`): a
//! Prometheus HTTP API in front of one or more queriers, as Cortex's and
//! Mimir's query-frontend.
//!
//! - `/api/v1/query_range` is split into sub-queries at multiples of
//!   `split_interval` (UTC days by default; `split`), run
//!   concurrently (at most `split_concurrency` per query) and merged per
//!   series in timestamp order (`matrix`); per-interval
//!   extents are kept in a bytes-bounded results cache per tenant
//!   (`cache`) so a repeated dashboard query fetches only
//!   the steps it does not have (never caching the last
//!   `max_cache_freshness`).
//! - Every other read endpoint (`/api/v1/query`, series, labels, label
//!   values, metadata, query_exemplars, format_query, parse_query,
//!   status, remote read, ...) is passed through unchanged.
//! - Every downstream request waits in its tenant's queue; a bounded
//!   worker pool serves the tenants round-robin (`queue`),
//!   a full tenant queue answers 429; downstreams are used round-robin with
//!   retries on connection errors and 5xx
//!   (`downstream`).
//!
//! Tenants. The frontend authenticates nobody itself: it forwards the
//! client's `Authorization` and `X-Scope-OrgID` headers unchanged and the
//! querier decides. For queueing and caching it names the tenant by the
//! `--auth` mode it runs with: `none` → `default`; `header` → the
//! `X-Scope-OrgID` value; `token` → the SHA-256 of the `Authorization`
//! header (a "credential key": the credential itself is never stored or
//! logged; two tokens of one tenant get two cache spaces, which costs
//! memory, never correctness). A request without them is forwarded but
//! never cached. Because the registry lives with the queriers' data,
//! the frontend does not read it; instead, in token mode, an answer made
//! entirely from the cache is only given when the credential got a
//! successful downstream answer within the last 30 s, else the frontend
//! first asks the querier's `status/buildinfo` with it, so a revoked
//! token stops working at once.
//!
//! Errors: downstream 4xx answers pass through with their body; 5xx
//! answers (after retries), connection failures and timeouts become a
//! 503 with Prometheus' error JSON.

mod cache;
mod downstream;
mod matrix;
mod metrics;
mod queue;
mod range;
mod split;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use snafu::{ResultExt, Snafu};
use stratus_api::{AuthMode, FrontendSettings, ServerConfig};
use tokio::net::TcpListener;
use tracing::info;

use crate::downstream::{Answer, Downstream, Failure};
use crate::metrics::Metrics;
use crate::queue::FairQueue;

/// Path prefixes the Prometheus API is served under (as the API server).
const PREFIXES: &[&str] = &["", "/prometheus", "/api/prom"];

/// How long a credential's successful downstream answer vouches for it
/// when an answer comes entirely from the cache.
const AUTH_RECHECK: Duration = Duration::from_secs(30);

/// Largest request body accepted (form bodies of queries).
const MAX_BODY: usize = 8 << 20;

/// Errors that stop the frontend.
#[derive(Debug, Snafu)]
pub enum Error {
    /// The settings cannot work.
    #[snafu(display("invalid frontend settings: {message}"))]
    Config {
        /// What is wrong.
        message: String,
    },
    /// The HTTP server failed.
    #[snafu(display("frontend HTTP server failed: {source}"))]
    Serve {
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Checks the frontend settings.
pub fn validate(s: &FrontendSettings) -> Result<(), Error> {
    let bad = |m: &str| {
        Err(Error::Config {
            message: m.to_string(),
        })
    };
    if s.downstream_urls.is_empty() {
        return bad(
            "the query-frontend needs --frontend.downstream-url (the queriers' HTTP addresses)",
        );
    }
    if s.max_concurrent == 0 || s.split_concurrency == 0 || s.max_outstanding_per_tenant == 0 {
        return bad(
            "frontend.max_concurrent, split_concurrency and max_outstanding_per_tenant must be at least 1",
        );
    }
    if s.downstream_timeout.is_zero() {
        return bad("frontend.downstream_timeout must be positive");
    }
    for u in &s.downstream_urls {
        let n = downstream::normalize_url(u);
        if !(n.starts_with("http://") || n.starts_with("https://")) || n.len() <= "http://".len() {
            return Err(Error::Config {
                message: format!("downstream URL {u:?}: expected http(s)://host:port or host:port"),
            });
        }
    }
    Ok(())
}

/// Shared state of the handlers.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) settings: FrontendSettings,
    pub(crate) auth: AuthMode,
    pub(crate) queue: Arc<FairQueue>,
    pub(crate) cache: Option<cache::ResultsCache>,
    pub(crate) metrics: Arc<Metrics>,
    /// Credential key → last successful downstream answer (token mode).
    verified: Mutex<HashMap<String, Instant>>,
    ready: AtomicBool,
}

/// Who a request is, for queueing and caching.
#[derive(Debug, Clone)]
pub(crate) struct TenantKey {
    pub(crate) key: String,
    /// False when the request carries no tenant (forwarded, not cached).
    pub(crate) known: bool,
}

impl AppState {
    fn tenant_key(&self, h: &HeaderMap) -> TenantKey {
        let unknown = TenantKey {
            key: "anonymous".into(),
            known: false,
        };
        match self.auth {
            AuthMode::None => TenantKey {
                key: "default".into(),
                known: true,
            },
            AuthMode::Header => match h.get("x-scope-orgid").and_then(|v| v.to_str().ok()) {
                Some(t) if !t.is_empty() && t.len() <= 150 => TenantKey {
                    key: t.to_string(),
                    known: true,
                },
                _ => unknown,
            },
            AuthMode::Token => match h.get(header::AUTHORIZATION) {
                Some(v) if !v.is_empty() => {
                    let d = Sha256::digest(v.as_bytes());
                    let hex: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
                    TenantKey {
                        key: format!("cred-{hex}"),
                        known: true,
                    }
                }
                _ => unknown,
            },
        }
    }

    /// Sends `req` through the tenant's queue.
    pub(crate) async fn send(
        &self,
        t: &TenantKey,
        req: downstream::Request,
    ) -> Result<Answer, Response> {
        let rx = self.queue.submit(&t.key, req).map_err(|_| {
            error_json(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                &format!(
                    "too many outstanding requests for this tenant (at most {} queued); retry later",
                    self.settings.max_outstanding_per_tenant
                ),
            )
        })?;
        let r = rx.await.map_err(|_| {
            error_json(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the frontend is shutting down",
            )
        })?;
        match r {
            Ok(a) => {
                if (200..300).contains(&a.status) && self.auth == AuthMode::Token && t.known {
                    let mut v = self.verified.lock();
                    if v.len() > 100_000 {
                        v.retain(|_, at| at.elapsed() < AUTH_RECHECK);
                    }
                    v.insert(t.key.clone(), Instant::now());
                }
                Ok(a)
            }
            Err(Failure::Timeout(m)) => {
                Err(error_json(StatusCode::SERVICE_UNAVAILABLE, "timeout", &m))
            }
            Err(Failure::Unavailable(m)) => Err(error_json(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                &m,
            )),
        }
    }

    /// In token mode, makes sure the credential still works before an
    /// answer made only from the cache: `Err` is the downstream's refusal.
    pub(crate) async fn recheck_auth(
        &self,
        t: &TenantKey,
        prefix: &str,
        headers: &HeaderMap,
    ) -> Result<(), Response> {
        if self.auth != AuthMode::Token {
            return Ok(());
        }
        let fresh = self
            .verified
            .lock()
            .get(&t.key)
            .is_some_and(|at| at.elapsed() < AUTH_RECHECK);
        if fresh {
            return Ok(());
        }
        let req = downstream::Request {
            method: axum::http::Method::GET,
            path_and_query: format!("{prefix}/api/v1/status/buildinfo"),
            headers: forwarded_headers(headers, false),
            body: Bytes::new(),
        };
        let a = self.send(t, req).await?;
        if (200..300).contains(&a.status) {
            Ok(())
        } else {
            Err(answer_response(a))
        }
    }
}

/// The client headers sent downstream: credentials, org id and (for
/// pass-through bodies) the content type.
pub(crate) fn forwarded_headers(h: &HeaderMap, with_body: bool) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for name in [
        header::AUTHORIZATION,
        HeaderName::from_static("x-scope-orgid"),
    ] {
        for v in h.get_all(&name) {
            out.push((name.clone(), v.clone()));
        }
    }
    if with_body && let Some(ct) = h.get(header::CONTENT_TYPE) {
        out.push((header::CONTENT_TYPE, ct.clone()));
    }
    out
}

/// Prometheus' error envelope.
pub(crate) fn error_json(status: StatusCode, kind: &str, msg: &str) -> Response {
    let body = serde_json::json!({"status": "error", "errorType": kind, "error": msg});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A downstream answer as the client's response: 5xx become 503 with
/// Prometheus' error JSON (keeping the downstream's error type and
/// message when it wrote one), everything else passes through.
pub(crate) fn answer_response(a: Answer) -> Response {
    if a.status >= 500 {
        #[derive(serde::Deserialize)]
        struct E {
            #[serde(rename = "errorType")]
            error_type: String,
            error: String,
        }
        return match serde_json::from_slice::<E>(&a.body) {
            Ok(e) => error_json(StatusCode::SERVICE_UNAVAILABLE, &e.error_type, &e.error),
            Err(_) => {
                let text = String::from_utf8_lossy(&a.body);
                let text: String = text.chars().take(512).collect();
                error_json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    &format!("downstream answered {}: {}", a.status, text.trim()),
                )
            }
        };
    }
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut r = (status, a.body).into_response();
    if let Some(ct) = a.content_type {
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    if let Some(w) = a.www_authenticate {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, w);
    }
    r
}

/// Whether `path` (after its API prefix) is a read endpoint the frontend
/// forwards.
fn passes_through(rest: &str) -> bool {
    const EXACT: &[&str] = &[
        "/api/v1/query",
        "/api/v1/query_range",
        "/api/v1/series",
        "/api/v1/labels",
        "/api/v1/metadata",
        "/api/v1/query_exemplars",
        "/api/v1/format_query",
        "/api/v1/parse_query",
        "/api/v1/read",
        "/api/v1/targets",
        "/api/v1/targets/metadata",
        "/api/v1/rules",
        "/api/v1/alerts",
        "/api/v1/alertmanagers",
    ];
    if EXACT.contains(&rest) || rest.starts_with("/api/v1/status/") {
        return true;
    }
    rest.strip_prefix("/api/v1/label/")
        .and_then(|r| r.strip_suffix("/values"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// Splits a request path into (API prefix, rest).
pub(crate) fn split_prefix(path: &str) -> (&'static str, &str) {
    for p in PREFIXES.iter().rev() {
        if !p.is_empty()
            && let Some(rest) = path.strip_prefix(p)
            && rest.starts_with("/api/v1/")
        {
            return (p, rest);
        }
    }
    ("", path)
}

/// Every other read endpoint: forwarded as it came.
async fn forward(State(st): State<Arc<AppState>>, req: HttpRequest) -> Response {
    let (parts, body) = req.into_parts();
    let (prefix, rest) = split_prefix(parts.uri.path());
    if !passes_through(rest) {
        return error_json(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    }
    if rest == "/api/v1/query_range" {
        let body = match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(b) => b,
            Err(e) => return error_json(StatusCode::BAD_REQUEST, "bad_data", &e.to_string()),
        };
        return range::query_range(&st, prefix, &parts, body).await;
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, "bad_data", &e.to_string()),
    };
    let t = st.tenant_key(&parts.headers);
    pass_through(&st, &t, &parts, body).await
}

/// Forwards one request unchanged through the tenant's queue.
pub(crate) async fn pass_through(
    st: &AppState,
    t: &TenantKey,
    parts: &axum::http::request::Parts,
    body: Bytes,
) -> Response {
    let req = downstream::Request {
        method: parts.method.clone(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string()),
        headers: forwarded_headers(&parts.headers, true),
        body,
    };
    match st.send(t, req).await {
        Ok(a) => answer_response(a),
        Err(r) => r,
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    if let Some(c) = &st.cache {
        st.metrics
            .cache_bytes
            .set(i64::try_from(c.bytes()).unwrap_or(i64::MAX));
        st.metrics
            .cache_extents
            .set(i64::try_from(c.len()).unwrap_or(i64::MAX));
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.encode(),
    )
        .into_response()
}

async fn ready(State(st): State<Arc<AppState>>) -> Response {
    if st.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

fn router(st: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/ready", get(ready))
        .route("/health", get(ready))
        .fallback(any(forward))
        .with_state(st)
}

/// Runs the frontend on `listener` until `shutdown` resolves: in-flight
/// requests finish, queued ones are still served, then it returns.
pub async fn serve(
    cfg: &ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let s = cfg.frontend.clone();
    validate(&s)?;
    let metrics = Arc::new(Metrics::new());
    let queue = Arc::new(FairQueue::new(
        s.max_outstanding_per_tenant,
        metrics.clone(),
    ));
    let down = Arc::new(Downstream::new(
        &s.downstream_urls,
        s.max_retries,
        s.downstream_timeout,
    ));
    let workers = queue.start(s.max_concurrent, down);
    let cache = (s.cache_max_bytes > 0 && !s.split_interval.is_zero())
        .then(|| cache::ResultsCache::new(s.cache_max_bytes));
    let st = Arc::new(AppState {
        settings: s.clone(),
        auth: cfg.auth,
        queue: queue.clone(),
        cache,
        metrics,
        verified: Mutex::new(HashMap::new()),
        ready: AtomicBool::new(true),
    });
    let addr = listener.local_addr().context(ServeSnafu)?;
    info!(
        listen = %addr,
        downstreams = s.downstream_urls.len(),
        split_interval = ?s.split_interval,
        "query-frontend listening"
    );
    let st2 = st.clone();
    let served = axum::serve(listener, router(st))
        .with_graceful_shutdown(async move {
            shutdown.await;
            st2.ready.store(false, Ordering::Relaxed);
        })
        .await
        .context(ServeSnafu);
    queue.close();
    for w in workers {
        let _ = w.await;
    }
    info!("query-frontend stopped");
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_that_pass() {
        for p in [
            "/api/v1/query",
            "/api/v1/series",
            "/api/v1/label/job/values",
            "/api/v1/status/buildinfo",
            "/api/v1/query_exemplars",
            "/api/v1/format_query",
        ] {
            assert!(passes_through(p), "{p}");
        }
        for p in [
            "/api/v1/push",
            "/api/v1/admin/tenants",
            "/api/v1/label//values",
            "/api/v1/label/a/b/values",
            "/otlp/v1/metrics",
        ] {
            assert!(!passes_through(p), "{p}");
        }
        assert_eq!(
            split_prefix("/prometheus/api/v1/query"),
            ("/prometheus", "/api/v1/query")
        );
        assert_eq!(
            split_prefix("/api/prom/api/v1/labels"),
            ("/api/prom", "/api/v1/labels")
        );
        assert_eq!(split_prefix("/api/v1/labels"), ("", "/api/v1/labels"));
    }

    #[test]
    fn settings_checked() {
        let mut s = FrontendSettings::default();
        assert!(validate(&s).is_err());
        s.downstream_urls = vec!["127.0.0.1:9009".into()];
        assert!(validate(&s).is_ok());
        s.max_concurrent = 0;
        assert!(validate(&s).is_err());
    }
}

#[cfg(test)]
mod serve_tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;

    /// A frontend on a loopback port in front of `downstream`.
    struct Frontend {
        base: String,
        stop: tokio::sync::oneshot::Sender<()>,
        server: tokio::task::JoinHandle<Result<(), Error>>,
    }

    impl Frontend {
        async fn start(auth: AuthMode, downstream: String) -> Frontend {
            let mut cfg = ServerConfig {
                auth,
                ..ServerConfig::default()
            };
            cfg.frontend.downstream_urls = vec![downstream];
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", l.local_addr().unwrap());
            let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(async move {
                serve(&cfg, l, async {
                    let _ = stop_rx.await;
                })
                .await
            });
            Frontend { base, stop, server }
        }

        async fn stop(self) {
            let _ = self.stop.send(());
            self.server.await.unwrap().unwrap();
        }
    }

    /// A fake querier for `query_range`: one series whose value at `t`
    /// is `t` (ms); records each request's (start, end) in ms.
    async fn fake_querier() -> (String, Arc<Mutex<Vec<(i64, i64)>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let app = Router::new().route(
            "/api/v1/query_range",
            axum::routing::post(move |body: Bytes| {
                let seen = s2.clone();
                async move {
                    let p: HashMap<String, String> =
                        form_urlencoded::parse(&body).into_owned().collect();
                    let ms = |k: &str| stratus_api::parse_time(&p[k]).unwrap();
                    let (start, end) = (ms("start"), ms("end"));
                    let step = ms("step");
                    seen.lock().push((start, end));
                    let mut vals = Vec::new();
                    let mut t = start;
                    while t <= end {
                        let mut s = String::new();
                        matrix::write_timestamp(&mut s, t);
                        vals.push(format!("[{s},\"{t}\"]"));
                        t += step;
                    }
                    format!(
                        "{{\"status\":\"success\",\"data\":{{\"resultType\":\"matrix\",\"result\":[{{\"metric\":{{\"__name__\":\"m\"}},\"values\":[{}]}}]}}}}",
                        vals.join(",")
                    )
                }
            }),
        );
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        (format!("http://{addr}"), seen)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repeated_query_fetches_only_fresh_steps() {
        let (url, seen) = fake_querier().await;
        let fe = Frontend::start(AuthMode::None, url).await;
        let base = fe.base.clone();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let step = 60_000;
        let start = now - 2 * 86_400_000;
        let q = [
            ("query", "m".to_string()),
            ("start", split::format_time(start)),
            ("end", split::format_time(now)),
            ("step", "60".to_string()),
        ];
        let _ = rustls::crypto::ring::default_provider().install_default();
        let c = reqwest::Client::new();
        let ask = || async {
            let r = c
                .get(format!("{base}/api/v1/query_range"))
                .query(&q)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        };
        let first = ask().await;
        let n_first = seen.lock().len();
        // Two days from a point inside a day touch three UTC days.
        assert_eq!(n_first, 3, "{:?}", seen.lock());
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        let points = v["data"]["result"][0]["values"].as_array().unwrap().len() as i64;
        assert_eq!(points, (now - start) / step + 1);
        let second = ask().await;
        assert_eq!(first, second);
        let again = seen.lock()[n_first..].to_vec();
        // Only the steps newer than the freshness cutoff were fetched.
        assert_eq!(again.len(), 1, "{again:?}");
        let (a, b) = again[0];
        assert!(
            a > now - 11 * 60_000 && a <= now - 9 * 60_000,
            "{a} vs {now}"
        );
        assert_eq!(b, start + (now - start) / step * step);
        assert_eq!((a - start) % step, 0);
        fe.stop().await;
    }

    /// `stats` makes a range query go downstream whole, and both query
    /// endpoints hand the querier's body (with its `stats`) back unchanged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stats_queries_pass_through_unchanged() {
        const BODY: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[],"stats":{"timings":{"evalTotalTime":0.0001,"resultSortTime":0,"queryPreparationTime":0,"innerEvalTime":0.0001,"execQueueTime":0,"execTotalTime":0.0001},"samples":{"totalQueryableSamplesPerStep":[[0,1],[172800,2]],"totalQueryableSamples":3,"peakSamples":2}}}}"#;
        let seen: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let app = Router::new().fallback(move |req: axum::extract::Request| {
            let seen = s2.clone();
            async move {
                let uri = req.uri().to_string();
                let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .unwrap_or_default();
                seen.lock()
                    .push(format!("{uri} {}", String::from_utf8_lossy(&body)));
                ([(header::CONTENT_TYPE, "application/json")], BODY)
            }
        });
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        let fe = Frontend::start(AuthMode::None, url).await;
        let base = fe.base.clone();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let c = reqwest::Client::new();
        // Two days: split into UTC days without `stats`.
        let range = [
            ("query", "m"),
            ("start", "0"),
            ("end", "172800"),
            ("step", "60"),
            ("stats", "all"),
        ];
        for (path, params) in [
            ("/api/v1/query_range", &range[..]),
            ("/api/v1/query", &[("query", "m"), ("stats", "1")][..]),
        ] {
            let r = c
                .get(format!("{base}{path}"))
                .query(params)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.text().await.unwrap(), BODY);
        }
        let seen = seen.lock().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            seen[0].starts_with("/api/v1/query_range?") && seen[0].contains("stats=all"),
            "{seen:?}"
        );
        assert!(seen[0].contains("end=172800"), "{seen:?}");
        assert!(seen[1].contains("stats=1"), "{seen:?}");
        fe.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn token_mode_keys_by_credential_hash_and_passes_401() {
        let (url, seen) = fake_querier().await;
        // Only the token `good` may query.
        let guarded = Router::new().fallback(
            move |req: axum::extract::Request| {
                let url = url.clone();
                async move {
                    let ok = req.headers().get(header::AUTHORIZATION)
                        == Some(&HeaderValue::from_static("Bearer good"));
                    if !ok {
                        return (
                            StatusCode::UNAUTHORIZED,
                            [(header::WWW_AUTHENTICATE, "Basic realm=\"stratus\"")],
                            "{\"status\":\"error\",\"errorType\":\"unauthorized\",\"error\":\"invalid or revoked token\"}",
                        )
                            .into_response();
                    }
                    let (parts, body) = req.into_parts();
                    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
                    let r = reqwest::Client::new()
                        .post(format!("{url}{}", parts.uri.path()))
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    r.text().await.unwrap_or_default().into_response()
                }
            },
        );
        let gl = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gaddr = gl.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(gl, guarded).await });
        let fe = Frontend::start(AuthMode::Token, format!("http://{gaddr}")).await;
        let base = fe.base.clone();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let q = [
            ("query", "m".to_string()),
            ("start", split::format_time(now - 2 * 86_400_000)),
            ("end", split::format_time(now - 86_400_000)),
            ("step", "300".to_string()),
        ];
        let _ = rustls::crypto::ring::default_provider().install_default();
        let c = reqwest::Client::new();
        let ask = |tok: &'static str| {
            let r = c
                .get(format!("{base}/api/v1/query_range"))
                .query(&q)
                .bearer_auth(tok)
                .timeout(Duration::from_secs(5))
                .send();
            async move {
                let r = r.await.unwrap();
                let www = r.headers().get("www-authenticate").cloned();
                (r.status().as_u16(), www, r.text().await.unwrap())
            }
        };
        let (st, _, first) = ask("good").await;
        assert_eq!(st, 200, "{first}");
        let n = seen.lock().len();
        assert_eq!(n, 2);
        // Again: entirely from the cache (the credential answered recently).
        let (st, _, again) = ask("good").await;
        assert_eq!((st, &again), (200, &first));
        assert_eq!(seen.lock().len(), n);
        // Another credential has its own cache space: the querier is asked
        // and its 401 passes through.
        let (st, www, body) = ask("bad").await;
        assert_eq!(st, 401, "{body}");
        assert!(body.contains("unauthorized"), "{body}");
        assert!(www.is_some());
        // Metrics name tenants by hash, never by credential.
        let m = c
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(m.contains("tenant=\"cred-"), "{m}");
        assert!(!m.contains("good") && !m.contains("bad"), "{m}");
        fe.stop().await;
    }
}
