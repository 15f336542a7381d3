//! `stratus bench`: load generation against any Prometheus-compatible
//! service (Stratus, Prometheus with its remote-write receiver,
//! VictoriaMetrics, Mimir...).
//!
//! - [`workload`]: an avalanche-style series set with node_exporter-like
//!   values (counters with small increments, gauges with few significant
//!   digits, one classic histogram family), churn and timestamp jitter,
//!   and the payload encoders. Payloads are encoded by hand from
//!   pre-encoded per-series label bytes, so the generator costs little
//!   next to the server it measures.
//! - [`write`]: remote write 1.0 / 2.0 push in backfill mode (hours of
//!   history, oldest first, as fast as the server accepts) or live mode
//!   (real time, spread over the interval like many scrapers).
//! - [`query`]: a dashboard-style PromQL range-query set run concurrently
//!   for a fixed time.
//! - [`targets`]: a fleet of fake node_exporter-like scrape targets and
//!   [`sink`]: a counting remote-write receiver, for agent benchmarks
//!   (`bench/agent-compare.sh`).
//!
//! Reports give accepted samples/s, request latency percentiles and errors
//! by cause; [`Report`] prints them as text and JSON (for scripts).

pub mod query;
pub mod sink;
pub mod targets;
pub mod workload;
pub mod write;

use std::collections::BTreeMap;
use std::time::Duration;

/// How requests authenticate and name their tenant.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// `X-Scope-OrgID` header value.
    pub tenant: Option<String>,
    /// Bearer token.
    pub token: Option<String>,
}

impl Auth {
    /// Adds the headers to a request.
    pub fn apply(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let mut rb = rb;
        if let Some(t) = &self.tenant {
            rb = rb.header("X-Scope-OrgID", t);
        }
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        rb
    }
}

/// Request latencies and outcomes of one run.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Latency of every finished request (successful or not).
    pub latencies: Vec<Duration>,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests by cause (`HTTP 429`, `connect`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Samples in successful requests (write runs).
    pub samples: u64,
    /// Compressed bytes sent (write runs).
    pub bytes: u64,
}

impl Stats {
    /// Folds another worker's stats into this one.
    pub fn merge(&mut self, o: Stats) {
        self.latencies.extend(o.latencies);
        self.ok += o.ok;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.samples += o.samples;
        self.bytes += o.bytes;
    }

    /// The `q` quantile (0..=1) of the latencies, nearest rank.
    pub fn quantile(&mut self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.sort_unstable();
        let rank =
            ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1]
    }
}

/// The summary of one run, as printed.
#[derive(Debug, Clone)]
pub struct Report {
    /// `write` or `query`.
    pub kind: &'static str,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests by cause.
    pub errors: BTreeMap<String, u64>,
    /// Samples accepted by the server.
    pub samples: u64,
    /// Compressed bytes sent.
    pub bytes: u64,
    /// Median request latency.
    pub p50: Duration,
    /// 99th percentile request latency.
    pub p99: Duration,
}

impl Report {
    /// Builds the report of a finished run.
    pub fn new(kind: &'static str, elapsed: Duration, mut s: Stats) -> Self {
        Self {
            kind,
            elapsed,
            p50: s.quantile(0.5),
            p99: s.quantile(0.99),
            ok: s.ok,
            errors: s.errors,
            samples: s.samples,
            bytes: s.bytes,
        }
    }

    /// Accepted samples per second of wall time.
    pub fn samples_per_sec(&self) -> f64 {
        self.samples as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Human-readable lines.
    pub fn text(&self) -> String {
        let errs: u64 = self.errors.values().sum();
        let mut s = format!(
            "{}: {:.1}s, {} requests ok, {} failed",
            self.kind,
            self.elapsed.as_secs_f64(),
            self.ok,
            errs
        );
        if self.kind == "write" {
            s += &format!(
                ", {} samples accepted ({:.0} samples/s, {:.1} MB sent)",
                self.samples,
                self.samples_per_sec(),
                self.bytes as f64 / 1e6
            );
        }
        s += &format!(
            "\nlatency p50 {:.2} ms, p99 {:.2} ms",
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3
        );
        for (k, v) in &self.errors {
            s += &format!("\nerror {k}: {v}");
        }
        s
    }

    /// One JSON object (for scripts such as bench/compare.sh).
    pub fn json(&self) -> String {
        self.json_value().to_string()
    }

    /// The report as a JSON value, for callers that add fields.
    pub fn json_value(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": self.kind,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "ok": self.ok,
            "errors": self.errors,
            "samples": self.samples,
            "samples_per_s": self.samples_per_sec(),
            "bytes": self.bytes,
            "p50_ms": self.p50.as_secs_f64() * 1e3,
            "p99_ms": self.p99.as_secs_f64() * 1e3,
        })
    }
}

/// A reqwest client; installs rustls' `ring` provider as the process
/// default first (reqwest is built without a built-in provider).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Short name of a request failure, for the error table.
pub(crate) fn failure_cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}
