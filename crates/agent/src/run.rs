//! The `stratus agent` runner: loads the configuration, opens one durable
//! queue per `remote_write` endpoint under `<data-dir>/queue/<name>`,
//! starts a remote-write [`Sender`] per queue and a [`ScrapeManager`]
//! writing to all queues, serves the agent's HTTP endpoints (`/metrics`,
//! `/api/v1/targets`, `/targets`, `/-/healthy`, `/-/ready`,
//! `POST /-/reload`), reloads on SIGHUP, and shuts down gracefully
//! (staleness markers, then a bounded drain of every sender).
//!
//! `/metrics` holds the push side's [`PushMetrics`], the scrape side's
//! [`ScrapeMetrics`], `prometheus_remote_storage_highest_timestamp_in_seconds`
//! and the reload outcome (`prometheus_config_last_reload_successful`,
//! `prometheus_config_last_reload_success_timestamp_seconds`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::RwLock;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use snafu::{ResultExt, Snafu};
use tracing::{error, info, warn};

use crate::config::{self, AgentConfig, LabelSet, ProtobufMessage, RemoteWriteConfig};
use crate::queue::{FanOut, Queue, QueueConfig};
use crate::remote::{Auth, ProtocolVersion, PushMetrics, RemoteSettings, Sender, WriteRelabel};
use crate::scrape::{ScrapeManager, ScrapeMetrics};
use crate::sink::{Batch, Sink, SinkError};

/// Options of `stratus agent`.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The configuration file (Prometheus `prometheus.yml` format).
    pub config_file: PathBuf,
    /// Where the queues live (`<data_dir>/queue/<endpoint name>`).
    pub data_dir: PathBuf,
    /// HTTP listen address (`127.0.0.1:9010`).
    pub listen: String,
    /// Disk budget of each queue in bytes.
    pub queue_max_bytes: u64,
    /// How long shutdown waits for the senders to drain their queues.
    pub drain_timeout: Duration,
}

/// Why the agent could not start.
#[derive(Debug, Snafu)]
pub enum RunError {
    /// The configuration file is invalid.
    #[snafu(display("{source}"))]
    Config {
        /// The configuration error (names file and line).
        source: config::ConfigError,
    },
    /// A `remote_write` entry cannot be used.
    #[snafu(display("remote_write {name:?}: {reason}"))]
    Endpoint {
        /// Endpoint name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A queue could not be opened.
    #[snafu(display("queue of remote_write {name:?}: {source}"))]
    OpenQueue {
        /// Endpoint name.
        name: String,
        /// The queue error.
        source: crate::queue::QueueError,
    },
    /// A sender could not start.
    #[snafu(display("{source}"))]
    StartSender {
        /// The sender error.
        source: crate::remote::RemoteError,
    },
    /// The listen address could not be bound.
    #[snafu(display("cannot listen on {addr}: {source}"))]
    Listen {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[snafu(display("HTTP server: {source}"))]
    Serve {
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A sink appending to the current set of queues (replaced on reload),
/// keeping the newest timestamp appended.
#[derive(Debug)]
struct SwitchSink(RwLock<FanOut>, Gauge<f64, AtomicU64>);

impl Sink for SwitchSink {
    fn append(&self, batch: Batch) -> Result<(), SinkError> {
        let newest = batch
            .series
            .iter()
            .flat_map(|s| s.samples.iter().map(|x| x.t))
            .max();
        self.0.read().append(batch)?;
        if let Some(t) = newest {
            let secs = t as f64 / 1000.0;
            if secs > self.1.get() {
                self.1.set(secs);
            }
        }
        Ok(())
    }
}

/// Outcome of the last configuration (re)load.
#[derive(Debug, Default)]
struct ReloadMetrics {
    successful: Gauge,
    success_time: Gauge<f64, AtomicU64>,
}

impl ReloadMetrics {
    fn new(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "prometheus_config_last_reload_successful",
            "Whether the last configuration reload attempt was successful.",
            m.successful.clone(),
        );
        r.register(
            "prometheus_config_last_reload_success_timestamp_seconds",
            "Timestamp of the last successful configuration reload.",
            m.success_time.clone(),
        );
        m
    }

    fn record(&self, ok: bool) {
        self.successful.set(i64::from(ok));
        if ok {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.success_time.set(now);
        }
    }
}

/// One running endpoint.
#[derive(Debug)]
struct Endpoint {
    /// The settings it was started with (compared on reload).
    rw: RemoteWriteConfig,
    external: LabelSet,
    queue: Queue,
    sender: Sender,
}

/// The agent's running state.
#[derive(Debug)]
struct Agent {
    opts: AgentOptions,
    registry: Registry,
    metrics: Arc<PushMetrics>,
    reloads: ReloadMetrics,
    sink: Arc<SwitchSink>,
    scrape: ScrapeManager,
    endpoints: tokio::sync::Mutex<BTreeMap<String, Endpoint>>,
}

fn endpoint_name(rw: &RemoteWriteConfig) -> String {
    rw.name.clone().unwrap_or_else(|| rw.url.clone())
}

fn read_secret(p: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("cannot read secret file {}: {e}", p.display()))
}

/// Maps a `remote_write` entry and the global external labels to sender
/// settings (secret files are read now).
pub fn remote_settings(
    rw: &RemoteWriteConfig,
    external: &LabelSet,
) -> Result<RemoteSettings, String> {
    let mut s = RemoteSettings::new(endpoint_name(rw), rw.url.clone());
    s.timeout = rw.remote_timeout.get();
    s.headers = rw
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(b) = &rw.basic_auth {
        let password = match (&b.password, &b.password_file) {
            (_, Some(f)) => read_secret(f)?,
            (Some(p), None) => p.0.clone(),
            (None, None) => String::new(),
        };
        s.auth = Some(Auth::Basic {
            username: b.username.clone(),
            password,
        });
    } else if let Some(a) = &rw.authorization {
        let kind = a.kind.as_deref().unwrap_or("Bearer");
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(format!(
                "authorization type {kind:?} is not supported (use Bearer or basic_auth)"
            ));
        }
        let cred = match (&a.credentials, &a.credentials_file) {
            (_, Some(f)) => read_secret(f)?,
            (Some(c), None) => c.0.clone(),
            (None, None) => String::new(),
        };
        s.auth = Some(Auth::Bearer(cred));
    } else if let Some(f) = &rw.bearer_token_file {
        s.auth = Some(Auth::Bearer(read_secret(f)?));
    } else if let Some(t) = &rw.bearer_token {
        s.auth = Some(Auth::Bearer(t.0.clone()));
    }
    s.tls_config = rw.tls_config.clone();
    s.proxy_url = rw.proxy_url.clone();
    s.external_labels = external
        .iter()
        .map(|(k, v)| (k.0.clone(), v.clone()))
        .collect();
    let q = &rw.queue_config;
    s.min_shards = q.min_shards;
    s.max_shards = q.max_shards;
    s.max_samples_per_send = q.max_samples_per_send;
    s.batch_send_deadline = q.batch_send_deadline.get();
    s.min_backoff = q.min_backoff.get();
    s.max_backoff = q.max_backoff.get();
    s.retry_on_http_429 = q.retry_on_http_429;
    s.protocol = match rw.protobuf_message {
        ProtobufMessage::V1 => ProtocolVersion::V1,
        ProtobufMessage::V2 => ProtocolVersion::V2,
    };
    s.send_metadata = rw.metadata_config.send;
    if !rw.metadata_config.send_interval.get().is_zero() {
        s.metadata_send_interval = rw.metadata_config.send_interval.get();
    }
    s.check()?;
    Ok(s)
}

fn write_relabel(rw: &RemoteWriteConfig) -> Option<WriteRelabel> {
    if rw.write_relabel_configs.is_empty() {
        return None;
    }
    let rules = rw.write_relabel_configs.clone();
    Some(Box::new(move |l| crate::relabel::process(l, &rules)))
}

/// A directory name for an endpoint (its name with anything but
/// `[A-Za-z0-9._-]` replaced by `_`).
fn queue_dir_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        format!("q{s}")
    } else {
        s
    }
}

fn log_ignored(cfg: &AgentConfig) {
    for s in &cfg.ignored_sections {
        warn!(
            section = s,
            "configuration section is not used by stratus agent; ignored"
        );
    }
}

impl Agent {
    fn open_queue(&self, name: &str) -> Result<Queue, RunError> {
        let mut qc = QueueConfig::new(self.opts.data_dir.join("queue").join(queue_dir_name(name)));
        qc.max_bytes = self.opts.queue_max_bytes;
        Queue::open(qc, name, &self.metrics).context(OpenQueueSnafu { name })
    }

    /// Brings the endpoints in line with `cfg`: unchanged ones keep
    /// running; changed ones restart on their queue; removed ones stop;
    /// new ones get a queue. Settings are all checked before anything
    /// changes.
    async fn apply_remotes(&self, cfg: &AgentConfig) -> Result<(), RunError> {
        let mut wanted = Vec::new();
        for rw in &cfg.remote_write {
            let name = endpoint_name(rw);
            let settings = remote_settings(rw, &cfg.global.external_labels).map_err(|reason| {
                RunError::Endpoint {
                    name: name.clone(),
                    reason,
                }
            })?;
            wanted.push((name, rw, settings));
        }
        let mut eps = self.endpoints.lock().await;
        let names: Vec<&String> = wanted.iter().map(|(n, _, _)| n).collect();
        let removed: Vec<String> = eps.keys().filter(|k| !names.contains(k)).cloned().collect();
        for name in removed {
            if let Some(ep) = eps.remove(&name) {
                info!(remote = %name, "remote_write endpoint removed");
                ep.sender.stop().await;
            }
        }
        for (name, rw, settings) in wanted {
            let queue = match eps.remove(&name) {
                Some(ep) if ep.rw == *rw && ep.external == cfg.global.external_labels => {
                    eps.insert(name, ep);
                    continue;
                }
                Some(ep) => {
                    info!(remote = %name, "remote_write endpoint changed: restarting its sender");
                    ep.sender.stop().await;
                    ep.queue
                }
                None => self.open_queue(&name)?,
            };
            let sender = Sender::start(settings, queue.clone(), write_relabel(rw), &self.metrics)
                .context(StartSenderSnafu)?;
            eps.insert(
                name,
                Endpoint {
                    rw: rw.clone(),
                    external: cfg.global.external_labels.clone(),
                    queue,
                    sender,
                },
            );
        }
        let queues = eps.values().map(|e| e.queue.clone()).collect();
        *self.sink.0.write() = FanOut::new(queues);
        Ok(())
    }

    /// Re-reads the configuration file and applies it; on error the
    /// running configuration is kept.
    async fn reload(&self) -> Result<(), String> {
        let res = self.try_reload().await;
        self.reloads.record(res.is_ok());
        res
    }

    async fn try_reload(&self) -> Result<(), String> {
        let cfg = config::load(&self.opts.config_file).map_err(|e| e.to_string())?;
        log_ignored(&cfg);
        self.apply_remotes(&cfg).await.map_err(|e| e.to_string())?;
        self.scrape.apply(&cfg).await;
        info!(file = %self.opts.config_file.display(), "configuration reloaded");
        Ok(())
    }

    async fn shutdown(&self) {
        info!("stopping scrapes");
        self.scrape.shutdown().await;
        let eps = std::mem::take(&mut *self.endpoints.lock().await);
        let timeout = self.opts.drain_timeout;
        let mut drains = Vec::new();
        for (name, ep) in eps {
            drains.push(async move { (name, ep.sender.drain(timeout).await) });
        }
        for (name, done) in futures_join(drains).await {
            if done {
                info!(remote = %name, "remote_write queue drained");
            } else {
                warn!(remote = %name, "remote_write queue not drained in time; the rest is sent on the next start");
            }
        }
    }
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join<F, T>(futs: Vec<F>) -> Vec<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        match h.await {
            Ok(v) => out.push(v),
            Err(e) => error!(error = %e, "drain task failed"),
        }
    }
    out
}

/// Runs the agent until `shutdown` completes (or a fatal error). Logs
/// `listen=<addr>` once the HTTP server is bound.
pub async fn run(
    opts: AgentOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    crate::httpclient::install_crypto_provider();
    let cfg = config::load(&opts.config_file).context(ConfigSnafu)?;
    log_ignored(&cfg);
    if cfg.remote_write.is_empty() {
        warn!("no remote_write endpoint configured: scraped samples are discarded");
    }
    let mut registry = Registry::default();
    let metrics = PushMetrics::new(&mut registry);
    let scrape_metrics = ScrapeMetrics::new(&mut registry);
    let reloads = ReloadMetrics::new(&mut registry);
    reloads.record(true);
    let highest = Gauge::<f64, AtomicU64>::default();
    registry.register(
        "prometheus_remote_storage_highest_timestamp_in_seconds",
        "Newest timestamp appended to the queues, seconds since the epoch.",
        highest.clone(),
    );
    let sink = Arc::new(SwitchSink(RwLock::new(FanOut::new(Vec::new())), highest));
    let agent = Arc::new(Agent {
        opts: opts.clone(),
        registry,
        metrics,
        reloads,
        sink: sink.clone(),
        scrape: ScrapeManager::with_metrics(sink, scrape_metrics),
        endpoints: tokio::sync::Mutex::new(BTreeMap::new()),
    });
    agent.apply_remotes(&cfg).await?;
    let listener = tokio::net::TcpListener::bind(opts.listen.as_str())
        .await
        .context(ListenSnafu { addr: &opts.listen })?;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| opts.listen.clone());
    agent.scrape.apply(&cfg).await;
    info!(
        listen = %addr,
        config = %opts.config_file.display(),
        endpoints = cfg.remote_write.len(),
        jobs = cfg.scrape_configs.len(),
        "stratus agent started"
    );

    #[cfg(unix)]
    let hup_task = {
        let agent = agent.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let mut hup = match signal(SignalKind::hangup()) {
                Ok(s) => s,
                Err(e) => {
                    error!(error = %e, "cannot listen for SIGHUP");
                    return;
                }
            };
            while hup.recv().await.is_some() {
                info!("SIGHUP received: reloading the configuration");
                if let Err(e) = agent.reload().await {
                    error!(error = %e, "reload failed; keeping the running configuration");
                }
            }
        })
    };

    let app = router(agent.clone());
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context(ServeSnafu);
    #[cfg(unix)]
    hup_task.abort();
    agent.shutdown().await;
    info!("stratus agent stopped");
    served
}

fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/targets", get(targets_api))
        .route("/targets", get(targets_page))
        .route(
            "/-/healthy",
            get(|| async { "Stratus agent is Healthy.\n" }),
        )
        .route("/-/ready", get(|| async { "Stratus agent is Ready.\n" }))
        .route("/-/reload", post(reload))
        .with_state(agent)
}

async fn metrics(State(agent): State<Arc<Agent>>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &agent.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The value of `key` in a query string (no percent-decoding needed for
/// the values used here).
fn query_param<'a>(uri: &'a Uri, key: &str) -> Option<&'a str> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

async fn targets_api(State(agent): State<Arc<Agent>>, uri: Uri) -> Response {
    let snap = agent.scrape.targets().await;
    let body = crate::targets_api::targets_json(&snap, query_param(&uri, "state")).to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

async fn targets_page(State(agent): State<Arc<Agent>>) -> Html<String> {
    let snap = agent.scrape.targets().await;
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>stratus agent targets</title>\
         <style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}\
         .up{color:green}.down{color:red}</style></head><body><h1>Targets</h1>\
         <table><tr><th>Pool</th><th>Endpoint</th><th>Health</th><th>Last error</th><th>Last scrape</th></tr>",
    );
    for a in &snap.active {
        let health = a.status.health.as_str();
        let last = match a.status.last_scrape {
            Some(t) => {
                let ago = t.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0);
                let at = t
                    .duration_since(UNIX_EPOCH)
                    .map(|d| humantime::format_rfc3339_seconds(UNIX_EPOCH + d).to_string())
                    .unwrap_or_default();
                format!("{at} ({ago:.1}s ago)")
            }
            None => "never".into(),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td><a href=\"{}\">{}</a></td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            html_escape(&a.scrape_pool),
            html_escape(&a.target.url),
            html_escape(&a.target.url),
            health,
            health,
            html_escape(&a.status.last_error),
            html_escape(&last),
        );
    }
    h.push_str("</table></body></html>\n");
    Html(h)
}

async fn reload(State(agent): State<Arc<Agent>>) -> Response {
    match agent.reload().await {
        Ok(()) => (StatusCode::OK, "configuration reloaded\n").into_response(),
        Err(e) => {
            error!(error = %e, "reload failed; keeping the running configuration");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_remote_write() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let text = format!(
            "global:\n  external_labels:\n    agent: a1\nremote_write:\n  - url: http://x/api/v1/push\n    name: main\n    protobuf_message: io.prometheus.write.v2.Request\n    basic_auth:\n      username: t1\n      password_file: {}\n    queue_config:\n      max_shards: 3\n      max_samples_per_send: 100\n      batch_send_deadline: 2s\n",
            pw.display()
        );
        let cfg = config::load_str(&text).unwrap();
        let s = remote_settings(&cfg.remote_write[0], &cfg.global.external_labels).unwrap();
        assert_eq!(s.name, "main");
        assert_eq!(s.protocol, ProtocolVersion::V2);
        assert_eq!(
            s.auth,
            Some(Auth::Basic {
                username: "t1".into(),
                password: "s3cret".into()
            })
        );
        assert_eq!(s.external_labels, vec![("agent".into(), "a1".into())]);
        assert_eq!(s.max_shards, 3);
        assert_eq!(s.max_samples_per_send, 100);
        assert_eq!(s.batch_send_deadline, Duration::from_secs(2));
    }

    #[test]
    fn queue_dir_names() {
        assert_eq!(queue_dir_name("remote_write_0"), "remote_write_0");
        assert_eq!(queue_dir_name("../x y"), ".._x_y");
        assert_eq!(queue_dir_name(".."), "q..");
    }
}
