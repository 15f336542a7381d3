//! Scrape pools, scrape loops and the [`ScrapeManager`].
//!
//! Owns turning discovered groups into targets (target relabeling and the
//! `job`/`instance`/`__scheme__`/`__metrics_path__`/`__param_*`/
//! `__scrape_interval__`/`__scrape_timeout__` labels, as Prometheus'
//! `PopulateLabels`), one loop per target (offset within the interval by
//! a hash of the target, timeout, gzip, body size limit, parsing, label
//! merging with `honor_labels`/`exported_`, metric relabeling, sample and
//! label limits, the synthesized `up`/`scrape_*` series, staleness markers
//! for vanished series and for removed targets), and applying a new
//! configuration by diffing jobs and targets so unchanged targets keep
//! running. Each scrape's result goes to the [`Sink`] as one [`Batch`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use stratus_model::{Labels, LabelsBuilder, METRIC_NAME, Sample, stale_nan};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{AgentConfig, PromDuration, ScrapeConfig};
use crate::discovery::{self, TargetGroup};
use crate::httpclient;
use crate::relabel;
use crate::sink::{Batch, Metadata, SeriesSamples, Sink};
use crate::textparse::{ACCEPT_HEADER, Entry, Format, Parser};

mod metrics;

use self::metrics::JobHandles;
pub use self::metrics::ScrapeMetrics;

/// Health of a target, as `/api/v1/targets` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    /// Not scraped yet.
    #[default]
    Unknown,
    /// Last scrape succeeded.
    Up,
    /// Last scrape failed.
    Down,
}

impl Health {
    /// `up`, `down` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// A scrape target after relabeling.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Labels before relabeling (with `__meta_*`).
    pub discovered_labels: Labels,
    /// Labels after relabeling, including internal `__` labels.
    pub labels: Labels,
    /// The URL scraped.
    pub url: String,
    /// Scrape interval.
    pub interval: Duration,
    /// Scrape timeout.
    pub timeout: Duration,
}

impl Target {
    /// The labels attached to the target's series (no `__` labels).
    pub fn public_labels(&self) -> Labels {
        Labels::from_sorted_unchecked(
            self.labels
                .iter()
                .filter(|l| !l.name.starts_with("__"))
                .cloned()
                .collect(),
        )
    }

    fn key(&self) -> u64 {
        let mut h = self.labels.stable_hash();
        h ^= xxhash_rust::xxh3::xxh3_64(self.url.as_bytes());
        h
    }
}

/// Observed state of one target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetStatus {
    /// Health.
    pub health: Health,
    /// Last error (empty when the last scrape succeeded).
    pub last_error: String,
    /// Start of the last scrape.
    pub last_scrape: Option<SystemTime>,
    /// Duration of the last scrape.
    pub last_scrape_duration: Duration,
    /// Samples in the last scrape (after metric relabeling).
    pub last_samples: u64,
}

/// One target's description and state, for the targets API.
#[derive(Debug, Clone)]
pub struct ActiveTarget {
    /// The job (scrape pool).
    pub scrape_pool: String,
    /// The target.
    pub target: Target,
    /// Its state.
    pub status: TargetStatus,
}

/// A target that relabeling dropped.
#[derive(Debug, Clone)]
pub struct DroppedTarget {
    /// The job (scrape pool).
    pub scrape_pool: String,
    /// Labels before relabeling.
    pub discovered_labels: Labels,
}

/// A snapshot of every pool's targets.
#[derive(Debug, Clone, Default)]
pub struct TargetsSnapshot {
    /// Targets being scraped, by pool then URL.
    pub active: Vec<ActiveTarget>,
    /// Targets dropped by relabeling.
    pub dropped: Vec<DroppedTarget>,
}

// ---------------------------------------------------------------------------
// Target labels.

fn add_default_port(addr: &str, scheme: &str) -> Result<String, String> {
    // Has a port already? `host:port` or `[v6]:port`.
    let has_port = if let Some(rest) = addr.strip_prefix('[') {
        rest.split_once(']')
            .is_some_and(|(_, p)| p.starts_with(':'))
    } else {
        addr.matches(':').count() == 1
    };
    if has_port {
        return Ok(addr.to_string());
    }
    let host = if addr.contains(':') && !addr.starts_with('[') {
        format!("[{addr}]")
    } else {
        addr.to_string()
    };
    match scheme {
        "http" | "" => Ok(format!("{host}:80")),
        "https" => Ok(format!("{host}:443")),
        _ => Err(format!("invalid scheme: {scheme:?}")),
    }
}

/// Builds the target of one discovered label set, as Prometheus'
/// `PopulateLabels` (2.42): `Ok(None)` when relabeling drops it (with its
/// discovered labels), `Err` when the result is unusable.
pub fn populate_target(
    discovered: &BTreeMap<String, String>,
    cfg: &ScrapeConfig,
) -> Result<Result<Target, Labels>, String> {
    let mut b = LabelsBuilder::default();
    for (k, v) in discovered {
        b.set(k.as_str(), v.as_str());
    }
    let interval = PromDuration(cfg.interval()).to_string();
    let timeout = PromDuration(cfg.timeout()).to_string();
    for (k, v) in [
        ("job", cfg.job_name.as_str()),
        ("__scrape_interval__", &interval),
        ("__scrape_timeout__", &timeout),
        ("__metrics_path__", cfg.metrics_path.as_str()),
        ("__scheme__", cfg.scheme.as_str()),
    ] {
        if b.get(k).unwrap_or("").is_empty() {
            b.set(k, v);
        }
    }
    for (k, v) in &cfg.params {
        if let Some(first) = v.first() {
            b.set(format!("__param_{k}"), first.as_str());
        }
    }
    let pre = b.build();
    let Some(lset) = relabel::process(&pre, &cfg.relabel_configs) else {
        return Ok(Err(pre));
    };
    let addr = lset.get("__address__").unwrap_or("");
    if addr.is_empty() {
        return Err("no address".into());
    }
    let scheme = lset.get("__scheme__").unwrap_or("");
    let addr = add_default_port(addr, scheme)?;
    crate::config::check_target_address(&addr)?;
    let ival = lset.get("__scrape_interval__").unwrap_or("");
    let ival =
        PromDuration::parse(ival).map_err(|e| format!("error parsing scrape interval: {e}"))?;
    if ival.0.is_zero() {
        return Err("scrape interval cannot be 0".into());
    }
    let tout = lset.get("__scrape_timeout__").unwrap_or("");
    let tout =
        PromDuration::parse(tout).map_err(|e| format!("error parsing scrape timeout: {e}"))?;
    if tout.0.is_zero() {
        return Err("scrape timeout cannot be 0".into());
    }
    if tout > ival {
        return Err(format!(
            "scrape timeout cannot be greater than scrape interval ({tout:?} > {ival:?})"
        ));
    }
    let mut b = lset.builder();
    b.set("__address__", addr.as_str());
    for l in lset.iter() {
        if l.name.starts_with("__meta_") {
            b.del(&l.name);
        }
    }
    if lset.get("instance").unwrap_or("").is_empty() {
        b.set("instance", addr.as_str());
    }
    let labels = b.build();
    // URL: scheme://address/path?params, with __param_* overriding the
    // first value of the configured parameter.
    let mut params: BTreeMap<String, Vec<String>> = cfg.params.clone();
    for l in labels.iter() {
        if let Some(k) = l.name.strip_prefix("__param_") {
            let e = params.entry(k.to_string()).or_default();
            if e.is_empty() {
                e.push(l.value.to_string());
            } else {
                e[0] = l.value.to_string();
            }
        }
    }
    let scheme = labels.get("__scheme__").unwrap_or("http");
    let path = labels.get("__metrics_path__").unwrap_or("/metrics");
    let mut url = format!("{scheme}://{addr}{path}");
    let mut q = form_query(&params);
    if !q.is_empty() {
        url.push(if path.contains('?') { '&' } else { '?' });
        url.push_str(&std::mem::take(&mut q));
    }
    Ok(Ok(Target {
        discovered_labels: pre,
        labels,
        url,
        interval: ival.0,
        timeout: tout.0,
    }))
}

fn form_query(params: &BTreeMap<String, Vec<String>>) -> String {
    let mut out = String::new();
    for (k, vs) in params {
        for v in vs {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(&pct(k));
            out.push('=');
            out.push_str(&pct(v));
        }
    }
    out
}

fn pct(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            o.push(b as char);
        } else if b == b' ' {
            o.push('+');
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// Targets of a job from its groups: (active targets, dropped label sets).
pub fn targets_from_groups(
    groups: &[TargetGroup],
    cfg: &ScrapeConfig,
) -> (Vec<Target>, Vec<Labels>) {
    let mut active = Vec::new();
    let mut dropped = Vec::new();
    let mut seen = HashSet::new();
    for g in groups {
        for t in &g.targets {
            let mut lset = g.labels.clone();
            for (k, v) in t {
                lset.insert(k.clone(), v.clone());
            }
            match populate_target(&lset, cfg) {
                Ok(Ok(t)) => {
                    if seen.insert(t.key()) {
                        active.push(t);
                    }
                }
                Ok(Err(pre)) => dropped.push(pre),
                Err(e) => {
                    tracing::warn!(job = %cfg.job_name, error = %e, "creating target failed");
                }
            }
        }
    }
    (active, dropped)
}

// ---------------------------------------------------------------------------
// Sample labels.

/// Merges target labels into scraped labels (Prometheus'
/// `mutateSampleLabels`), then applies metric relabeling. `None`: dropped.
pub fn mutate_sample_labels(
    scraped: &Labels,
    target: &Labels,
    honor_labels: bool,
    rules: &[relabel::RelabelConfig],
) -> Option<Labels> {
    let mut b = scraped.builder();
    if honor_labels {
        for l in target.iter() {
            if scraped.get(&l.name).is_none() {
                b.set(l.name.clone(), l.value.clone());
            }
        }
    } else {
        let mut conflicts: Vec<(String, std::sync::Arc<str>)> = Vec::new();
        for l in target.iter() {
            if let Some(v) = scraped.get(&l.name) {
                conflicts.push((l.name.to_string(), v.into()));
            }
            b.set(l.name.clone(), l.value.clone());
        }
        if !conflicts.is_empty() {
            conflicts.sort_by_key(|(n, _)| n.len());
            let mut taken: Vec<String> = Vec::new();
            for (name, value) in &conflicts {
                let mut new = name.clone();
                loop {
                    new = format!("exported_{new}");
                    if scraped.get(&new).is_none()
                        && target.get(&new).is_none()
                        && !taken.contains(&new)
                    {
                        break;
                    }
                }
                taken.push(new.clone());
                b.set(new, value.clone());
            }
        }
    }
    let res = b.build();
    let res = relabel::process(&res, rules)?;
    if res.is_empty() { None } else { Some(res) }
}

// ---------------------------------------------------------------------------
// The scrape loop.

/// Why a scrape failed.
#[derive(Debug)]
struct ScrapeFailure(String);

struct CacheEntry {
    /// Final labels, `None` when metric relabeling drops the series.
    labels: Option<Labels>,
    /// `labels.stable_hash()` (0 when dropped): the series' key in the
    /// per-scrape sets.
    hash: u64,
    seen: u64,
}

/// A cheap hasher for the scrape loop's maps: xxh3 over byte keys, the
/// value itself for `u64` keys (already xxh3 hashes of label sets). The
/// standard SipHash was a tenth of the agent's CPU time.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0 ^ u64::from(i)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = self.0.rotate_left(29) ^ i;
    }
}

type FastBuild = std::hash::BuildHasherDefault<FastHasher>;

/// Series of one scrape keyed by the stable hash of their labels (as
/// Prometheus keys its per-scrape series sets: a 64-bit collision is
/// treated as the same series).
type SeriesSet = HashMap<u64, Labels, FastBuild>;

/// State carried across scrapes of one target (and across a reload of
/// its job).
#[derive(Default)]
pub(crate) struct LoopState {
    cache: HashMap<Box<str>, CacheEntry, FastBuild>,
    /// Series written in the last scrape without explicit timestamps
    /// (they get staleness markers when they vanish).
    prev: SeriesSet,
    iteration: u64,
    last_ts: i64,
    report_labels: Vec<Labels>,
    /// The format of the scrape the cache was filled from.
    format: Option<Format>,
    /// One shared string per distinct label name and value of the cached
    /// series (the queue's record encoder then finds most symbols by
    /// address instead of hashing their bytes).
    interner: HashSet<Arc<str>, FastBuild>,
}

impl LoopState {
    fn intern(&mut self, s: &Arc<str>) -> Arc<str> {
        match self.interner.get(&**s) {
            Some(a) => a.clone(),
            None => {
                self.interner.insert(s.clone());
                s.clone()
            }
        }
    }

    /// `l` with its strings replaced by the interned ones.
    fn intern_labels(&mut self, l: Labels) -> Labels {
        let v = l
            .iter()
            .map(|x| stratus_model::Label {
                name: self.intern(&x.name),
                value: self.intern(&x.value),
            })
            .collect();
        Labels::from_sorted_unchecked(v)
    }

    /// Forgets interned strings no cached series uses any more.
    fn prune_interner(&mut self) {
        if self.interner.len() > 64 + 4 * self.cache.len() {
            self.interner.retain(|a| Arc::strong_count(a) > 1);
        }
    }
}

struct Scraper {
    job: String,
    cfg: Arc<ScrapeConfig>,
    target: Target,
    target_labels: Labels,
    client: Result<reqwest::Client, String>,
    sink: Arc<dyn Sink>,
    status: Arc<Mutex<TargetStatus>>,
    metrics: JobHandles,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct Parsed {
    batch: Batch,
    total: u64,
    added: u64,
    series_added: u64,
    cur: SeriesSet,
}

impl Scraper {
    async fn fetch(&self) -> Result<(Vec<u8>, Format), ScrapeFailure> {
        let client = self.client.as_ref().map_err(|e| ScrapeFailure(e.clone()))?;
        let hc = self.cfg.http_client();
        let mut req = client
            .get(&self.target.url)
            .timeout(self.target.timeout)
            .header("Accept", ACCEPT_HEADER)
            .header(
                "X-Prometheus-Scrape-Timeout-Seconds",
                format!("{}", self.target.timeout.as_secs_f64()),
            );
        if self.cfg.enable_compression {
            req = req.header("Accept-Encoding", "gzip");
        } else {
            req = req.header("Accept-Encoding", "identity");
        }
        if let Some(a) = httpclient::auth_header(&hc).map_err(ScrapeFailure)? {
            req = req.header("Authorization", a);
        }
        let mut resp = req.send().await.map_err(|e| ScrapeFailure(err_chain(&e)))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(ScrapeFailure(format!(
                "server returned HTTP status {}",
                resp.status()
            )));
        }
        let limit = self.cfg.body_size_limit.map_or(0, |b| b.0) as usize;
        let gz = resp
            .headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
        let format = Format::from_content_type(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
        );
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| ScrapeFailure(err_chain(&e)))?
        {
            body.extend_from_slice(&chunk);
            if limit > 0 && !gz && body.len() > limit {
                self.metrics.all.exceeded_body_size_limit.inc();
                return Err(body_limit_err(limit));
            }
        }
        if gz {
            let mut out = Vec::with_capacity(body.len() * 4);
            let d = flate2::read::GzDecoder::new(&body[..]);
            let cap = if limit > 0 {
                limit as u64 + 1
            } else {
                u64::MAX
            };
            d.take(cap)
                .read_to_end(&mut out)
                .map_err(|e| ScrapeFailure(format!("decompressing gzip body: {e}")))?;
            if limit > 0 && out.len() > limit {
                self.metrics.all.exceeded_body_size_limit.inc();
                return Err(body_limit_err(limit));
            }
            body = out;
        }
        Ok((body, format))
    }

    fn parse(
        &self,
        st: &mut LoopState,
        body: &[u8],
        format: Format,
        ts: i64,
    ) -> Result<Parsed, (ScrapeFailure, u64, u64)> {
        let cfg = &self.cfg;
        let mut p = Parser::new(body, format).map_err(|e| (ScrapeFailure(e.to_string()), 0, 0))?;
        p.set_lazy_labels(true);
        // The cache is keyed by series text, whose validity depends on
        // the format: start over when the target switches formats.
        if st.format != Some(format) {
            st.cache.clear();
            st.format = Some(format);
        }
        let mut batch = Batch::default();
        let mut cur = SeriesSet::with_capacity_and_hasher(st.prev.len(), FastBuild::default());
        let mut seen_ts: HashSet<u64, FastBuild> = HashSet::default();
        let mut meta: Vec<Metadata> = Vec::new();
        let (mut total, mut added, mut series_added) = (0u64, 0u64, 0u64);
        let sample_limit = cfg.sample_limit.unwrap_or(0);
        let mut err: Option<String> = None;
        let iteration = st.iteration;
        loop {
            let e = match p.next() {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => {
                    err = Some(e.to_string());
                    break;
                }
            };
            let s = match e {
                Entry::Sample(s) => s,
                Entry::Type(n, t) => {
                    meta_entry(&mut meta, n).kind = t;
                    continue;
                }
                Entry::Help(n, h) => {
                    meta_entry(&mut meta, n).help = h.into_owned();
                    continue;
                }
                Entry::Unit(n, u) => {
                    meta_entry(&mut meta, n).unit = u.to_string();
                    continue;
                }
            };
            total += 1;
            let (labels, hash) = match st.cache.get_mut(s.series) {
                Some(c) => {
                    c.seen = iteration;
                    (c.labels.clone(), c.hash)
                }
                None => {
                    // Labels are parsed only on a cache miss.
                    let parsed = match p.parse_labels() {
                        Ok(l) => l,
                        Err(e) => {
                            err = Some(e.to_string());
                            break;
                        }
                    };
                    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(parsed.len() + 1);
                    pairs.push((METRIC_NAME, s.name));
                    for (n, v) in parsed {
                        pairs.push((n.as_ref(), v.as_ref()));
                    }
                    let scraped = match Labels::try_from_pairs(pairs) {
                        Ok(l) => l,
                        Err(e) => {
                            err = Some(e.to_string());
                            break;
                        }
                    };
                    let res = mutate_sample_labels(
                        &scraped,
                        &self.target_labels,
                        cfg.honor_labels,
                        &cfg.metric_relabel_configs,
                    );
                    if let Some(l) = &res {
                        if l.metric_name().unwrap_or("").is_empty() {
                            err = Some(format!("series {l} has no metric name (__name__ label)"));
                            break;
                        }
                        if let Err(e) = check_label_limits(l, cfg) {
                            self.metrics.all.exceeded_label_limits.inc();
                            err = Some(e);
                            break;
                        }
                    }
                    let res = res.map(|l| st.intern_labels(l));
                    let hash = res.as_ref().map_or(0, Labels::stable_hash);
                    st.cache.insert(
                        s.series.into(),
                        CacheEntry {
                            labels: res.clone(),
                            hash,
                            seen: iteration,
                        },
                    );
                    (res, hash)
                }
            };
            let Some(labels) = labels else { continue };
            added += 1;
            if sample_limit > 0 && added > sample_limit {
                continue; // counted; the scrape fails below
            }
            let t = match (cfg.honor_timestamps, s.timestamp) {
                (true, Some(t)) => t,
                _ => ts,
            };
            let explicit = cfg.honor_timestamps && s.timestamp.is_some();
            let fresh = if explicit {
                seen_ts.insert(hash)
            } else {
                match cur.entry(hash) {
                    std::collections::hash_map::Entry::Occupied(_) => false,
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(labels.clone());
                        true
                    }
                }
            };
            if !fresh {
                self.metrics.all.duplicate_samples.inc();
                continue; // duplicate series within the scrape: keep the first
            }
            if !explicit && !st.prev.contains_key(&hash) {
                series_added += 1;
            }
            batch.series.push(SeriesSamples {
                labels,
                samples: vec![Sample::new(t, s.value)],
            });
        }
        if err.is_none() && sample_limit > 0 && added > sample_limit {
            self.metrics.all.exceeded_sample_limit.inc();
            err = Some(format!(
                "sample limit exceeded: {added} samples > sample_limit {sample_limit}"
            ));
        }
        if let Some(e) = err {
            return Err((ScrapeFailure(e), total, added));
        }
        batch.metadata = meta;
        Ok(Parsed {
            batch,
            total,
            added,
            series_added,
            cur,
        })
    }

    fn report_labels(&self) -> Vec<Labels> {
        REPORT_NAMES
            .iter()
            .map(|n| {
                let mut b = self.target_labels.builder();
                b.set(METRIC_NAME, *n);
                b.build()
            })
            .collect()
    }

    /// One scrape: fetch, parse, append, report.
    async fn scrape_once(&self, st: &mut LoopState) {
        let start_wall = SystemTime::now();
        let start = Instant::now();
        let ts = now_ms().max(st.last_ts + 1);
        st.last_ts = ts;
        st.iteration += 1;
        let fetched = self.fetch().await;
        let result = match fetched {
            Ok((body, format)) => self.parse(st, &body, format, ts),
            Err(e) => Err((e, 0, 0)),
        };
        let duration = start.elapsed();
        let mut batch;
        let (up, total, added, series_added, err) = match result {
            Ok(parsed) => {
                batch = parsed.batch;
                for (h, l) in &st.prev {
                    if parsed.cur.contains_key(h) {
                        continue;
                    }
                    batch.series.push(SeriesSamples {
                        labels: l.clone(),
                        samples: vec![Sample::new(ts, stale_nan())],
                    });
                }
                st.prev = parsed.cur;
                let it = st.iteration;
                st.cache.retain(|_, c| c.seen == it);
                st.prune_interner();
                (1.0, parsed.total, parsed.added, parsed.series_added, None)
            }
            Err((e, total, added)) => {
                // As Prometheus: a failed scrape appends nothing but stale
                // markers for every series of the previous scrape.
                batch = Batch::default();
                for (_, l) in st.prev.drain() {
                    batch.series.push(SeriesSamples {
                        labels: l,
                        samples: vec![Sample::new(ts, stale_nan())],
                    });
                }
                (0.0, total, added, 0, Some(e.0))
            }
        };
        if st.report_labels.is_empty() {
            st.report_labels = self.report_labels();
        }
        let values = [
            up,
            duration.as_secs_f64(),
            total as f64,
            added as f64,
            series_added as f64,
        ];
        for (l, v) in st.report_labels.iter().zip(values) {
            batch.series.push(SeriesSamples {
                labels: l.clone(),
                samples: vec![Sample::new(ts, v)],
            });
        }
        if let Some(e) = &err {
            tracing::debug!(job = %self.job, url = %self.target.url, error = %e, "scrape failed");
            self.metrics.failure.inc();
        } else {
            self.metrics.success.inc();
            self.metrics.samples.inc_by(added);
        }
        self.metrics.duration.observe(duration.as_secs_f64());
        self.append(batch, "sink refused scrape");
        let mut s = self.status.lock();
        s.health = if err.is_none() {
            Health::Up
        } else {
            Health::Down
        };
        s.last_error = err.unwrap_or_default();
        s.last_scrape = Some(start_wall);
        s.last_scrape_duration = duration;
        s.last_samples = added;
    }

    /// Stale markers for every series of the target (it went away).
    fn end_of_run(&self, st: &mut LoopState) {
        if st.iteration == 0 {
            return;
        }
        let ts = now_ms().max(st.last_ts + 1);
        let mut batch = Batch::default();
        for l in st
            .prev
            .drain()
            .map(|(_, l)| l)
            .chain(st.report_labels.iter().cloned())
        {
            batch.series.push(SeriesSamples {
                labels: l,
                samples: vec![Sample::new(ts, stale_nan())],
            });
        }
        self.append(batch, "sink refused end-of-run staleness markers");
    }

    /// Appends `batch` to the sink, counting its samples.
    fn append(&self, batch: Batch, what: &str) {
        let n: u64 = batch.series.iter().map(|s| s.samples.len() as u64).sum();
        match self.sink.append(batch) {
            Ok(()) => {
                self.metrics.all.samples_appended.inc_by(n);
            }
            Err(e) => {
                tracing::warn!(job = %self.job, url = %self.target.url, error = %e, "{what}");
            }
        }
    }
}

const REPORT_NAMES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

fn meta_entry<'m>(meta: &'m mut Vec<Metadata>, name: &str) -> &'m mut Metadata {
    let i = match meta.iter().rposition(|m| m.family == name) {
        Some(i) => i,
        None => {
            meta.push(Metadata {
                family: name.to_string(),
                kind: Default::default(),
                help: String::new(),
                unit: String::new(),
            });
            meta.len() - 1
        }
    };
    &mut meta[i]
}

fn check_label_limits(l: &Labels, cfg: &ScrapeConfig) -> Result<(), String> {
    let limit = cfg.label_limit.unwrap_or(0);
    if limit > 0 && l.len() as u64 > limit {
        return Err(format!(
            "label_limit exceeded (metric: {}, number of labels: {}, limit: {limit})",
            l.metric_name().unwrap_or(""),
            l.len()
        ));
    }
    let nl = cfg.label_name_length_limit.unwrap_or(0);
    let vl = cfg.label_value_length_limit.unwrap_or(0);
    for x in l.iter() {
        if nl > 0 && x.name.len() as u64 > nl {
            return Err(format!(
                "label_name_length_limit exceeded (metric: {}, label name: {}, length: {}, limit: {nl})",
                l.metric_name().unwrap_or(""),
                x.name,
                x.name.len()
            ));
        }
        if vl > 0 && x.value.len() as u64 > vl {
            return Err(format!(
                "label_value_length_limit exceeded (metric: {}, label name: {}, value: {:?}, length: {}, limit: {vl})",
                l.metric_name().unwrap_or(""),
                x.name,
                &*x.value,
                x.value.len()
            ));
        }
    }
    Ok(())
}

fn body_limit_err(limit: usize) -> ScrapeFailure {
    ScrapeFailure(format!(
        "body size limit exceeded: the response is larger than body_size_limit ({limit} bytes)"
    ))
}

fn err_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// How a loop should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopMode {
    /// The target went away: write staleness markers.
    Stale,
    /// The job is being reloaded: hand the state to the new loop.
    Handoff,
}

struct LoopHandle {
    target: Target,
    status: Arc<Mutex<TargetStatus>>,
    stop: oneshot::Sender<StopMode>,
    join: JoinHandle<LoopState>,
}

/// The first scrape time: an offset within the interval derived from the
/// target's hash, so targets spread over the interval.
fn first_delay(key: u64, interval: Duration) -> Duration {
    let iv = interval.as_nanos().max(1) as u64;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let offset = key % iv;
    let base = now - now % iv;
    let mut next = base + offset;
    if next < now {
        next += iv;
    }
    Duration::from_nanos(next - now)
}

fn spawn_loop(
    job: &str,
    cfg: Arc<ScrapeConfig>,
    target: Target,
    client: Result<reqwest::Client, String>,
    sink: Arc<dyn Sink>,
    mut state: LoopState,
    metrics: JobHandles,
) -> LoopHandle {
    let status = Arc::new(Mutex::new(TargetStatus::default()));
    let (stop_tx, mut stop_rx) = oneshot::channel();
    // The cache holds labels from the old config: rebuild it.
    state.cache.clear();
    state.report_labels.clear();
    let scraper = Scraper {
        job: job.to_string(),
        cfg,
        target_labels: target.public_labels(),
        target: target.clone(),
        client,
        sink,
        status: status.clone(),
        metrics,
    };
    let join = tokio::spawn(async move {
        let delay = first_delay(scraper.target.key(), scraper.target.interval);
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + delay, scraper.target.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                mode = &mut stop_rx => {
                    if mode != Ok(StopMode::Handoff) {
                        scraper.end_of_run(&mut state);
                    }
                    return state;
                }
                _ = ticker.tick() => {}
            }
            // A scrape is bounded by the timeout; a stop waits for it.
            scraper.scrape_once(&mut state).await;
        }
    });
    LoopHandle {
        target,
        status,
        stop: stop_tx,
        join,
    }
}

// ---------------------------------------------------------------------------
// Pools and the manager.

#[derive(Default)]
struct PoolView {
    loops: Vec<(Target, Arc<Mutex<TargetStatus>>)>,
    dropped: Vec<Labels>,
}

struct Pool {
    cfg: Arc<ScrapeConfig>,
    view: Arc<Mutex<PoolView>>,
    stop: watch::Sender<Option<StopMode>>,
    join: JoinHandle<HashMap<u64, LoopState>>,
}

fn start_pool(
    cfg: Arc<ScrapeConfig>,
    sink: Arc<dyn Sink>,
    mut inherited: HashMap<u64, LoopState>,
    metrics: Arc<ScrapeMetrics>,
) -> Pool {
    metrics.pools_created.inc();
    let job_metrics = JobHandles::new(&metrics, &cfg.job_name);
    let job_label = ScrapeMetrics::job(&cfg.job_name);
    let view = Arc::new(Mutex::new(PoolView::default()));
    let (stop_tx, mut stop_rx) = watch::channel(None::<StopMode>);
    let (groups_tx, mut groups_rx) = watch::channel(Vec::<TargetGroup>::new());
    let (sd_stop_tx, sd_stop_rx) = watch::channel(false);
    let v = view.clone();
    let pool_cfg = cfg.clone();
    let join = tokio::spawn(async move {
        let sd = tokio::spawn(discovery::run(cfg.clone(), groups_tx, sd_stop_rx));
        let client = httpclient::build_client(&cfg.http_client());
        let mut loops: HashMap<u64, LoopHandle> = HashMap::new();
        let mode = loop {
            let ev = tokio::select! {
                biased;
                r = stop_rx.wait_for(|m| m.is_some()) => {
                    Some(Some(r.ok().and_then(|m| *m).unwrap_or(StopMode::Stale)))
                }
                r = groups_rx.changed() => if r.is_err() { Some(None) } else { None },
            };
            match ev {
                Some(Some(m)) => break m,
                // Discovery ended; keep scraping until stopped.
                Some(None) => break wait_stop(&mut stop_rx).await,
                None => {}
            }
            let groups = groups_rx.borrow_and_update().clone();
            let (targets, dropped) = targets_from_groups(&groups, &cfg);
            metrics.pool_syncs.get_or_create(&job_label).inc();
            metrics
                .discovered
                .get_or_create(&self::metrics::SdLabels {
                    config: cfg.job_name.clone(),
                    name: "scrape".into(),
                })
                .set(groups.iter().map(|g| g.targets.len() as i64).sum());
            let limit = cfg.target_limit.unwrap_or(0) as usize;
            let mut want: HashMap<u64, Target> =
                targets.into_iter().map(|t| (t.key(), t)).collect();
            if limit > 0 && want.len() > limit {
                tracing::warn!(job = %cfg.job_name, targets = want.len(), limit, "target_limit exceeded: no targets scraped");
                metrics.exceeded_target_limit.inc();
                want.clear();
            }
            // Stop loops whose target went away.
            let gone: Vec<u64> = loops
                .keys()
                .filter(|k| !want.contains_key(k))
                .copied()
                .collect();
            for k in gone {
                if let Some(h) = loops.remove(&k) {
                    let _ = h.stop.send(StopMode::Stale);
                    let _ = h.join.await;
                }
            }
            for (k, t) in want {
                if loops.contains_key(&k) {
                    continue;
                }
                let state = inherited.remove(&k).unwrap_or_default();
                let h = spawn_loop(
                    &cfg.job_name,
                    cfg.clone(),
                    t,
                    client.clone(),
                    sink.clone(),
                    state,
                    job_metrics.clone(),
                );
                loops.insert(k, h);
            }
            // Series of targets of the previous config that are not
            // scraped any more go stale.
            for (_, mut st) in inherited.drain() {
                stale_all(&sink, &mut st);
            }
            metrics
                .pool_targets
                .get_or_create(&job_label)
                .set(loops.len() as i64);
            let mut pv = v.lock();
            pv.loops = loops
                .values()
                .map(|h| (h.target.clone(), h.status.clone()))
                .collect();
            pv.dropped = dropped;
        };
        let _ = sd_stop_tx.send(true);
        let _ = sd.await;
        let mut states = HashMap::new();
        for (k, h) in loops {
            let _ = h.stop.send(mode);
            if let Ok(st) = h.join.await {
                states.insert(k, st);
            }
        }
        if mode == StopMode::Stale {
            for (_, mut st) in inherited.drain() {
                stale_all(&sink, &mut st);
            }
        } else {
            states.extend(inherited);
        }
        states
    });
    Pool {
        cfg: pool_cfg,
        view,
        stop: stop_tx,
        join,
    }
}

async fn wait_stop(rx: &mut watch::Receiver<Option<StopMode>>) -> StopMode {
    let r = rx.wait_for(|m| m.is_some()).await;
    r.ok().and_then(|m| *m).unwrap_or(StopMode::Stale)
}

fn stale_all(sink: &Arc<dyn Sink>, st: &mut LoopState) {
    if st.prev.is_empty() && st.report_labels.is_empty() {
        return;
    }
    let ts = now_ms().max(st.last_ts + 1);
    let mut batch = Batch::default();
    for l in st
        .prev
        .drain()
        .map(|(_, l)| l)
        .chain(st.report_labels.drain(..))
    {
        batch.series.push(SeriesSamples {
            labels: l,
            samples: vec![Sample::new(ts, stale_nan())],
        });
    }
    if let Err(e) = sink.append(batch) {
        tracing::warn!(error = %e, "sink refused staleness markers");
    }
}

/// Runs the scrape pools of a configuration and applies new ones.
///
/// Create it inside a tokio runtime; [`ScrapeManager::apply`] starts and
/// stops pools (each runs its discovery and one loop per target on the
/// runtime); [`ScrapeManager::shutdown`] stops everything, writing
/// staleness markers for every series.
#[derive(Debug)]
pub struct ScrapeManager {
    sink: Arc<dyn Sink>,
    pools: tokio::sync::Mutex<BTreeMap<String, PoolEntry>>,
    metrics: Arc<ScrapeMetrics>,
}

struct PoolEntry(Pool);

impl std::fmt::Debug for PoolEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({})", self.0.cfg.job_name)
    }
}

impl ScrapeManager {
    /// A manager that sends every scrape to `sink`.
    pub fn new(sink: Arc<dyn Sink>) -> Self {
        Self::with_metrics(sink, Arc::new(ScrapeMetrics::unregistered()))
    }

    /// A manager that sends every scrape to `sink` and counts in
    /// `metrics`.
    pub fn with_metrics(sink: Arc<dyn Sink>, metrics: Arc<ScrapeMetrics>) -> Self {
        Self {
            sink,
            pools: tokio::sync::Mutex::new(BTreeMap::new()),
            metrics,
        }
    }

    /// Applies `cfg`: unchanged jobs keep running untouched; changed jobs
    /// restart with their series state carried over (series of targets
    /// that no longer exist go stale); removed jobs stop with staleness
    /// markers; new jobs start.
    pub async fn apply(&self, cfg: &AgentConfig) {
        let mut pools = self.pools.lock().await;
        let wanted: BTreeMap<&str, &ScrapeConfig> = cfg
            .scrape_configs
            .iter()
            .map(|c| (c.job_name.as_str(), c))
            .collect();
        let removed: Vec<String> = pools
            .keys()
            .filter(|k| !wanted.contains_key(k.as_str()))
            .cloned()
            .collect();
        for k in removed {
            if let Some(PoolEntry(p)) = pools.remove(&k) {
                let _ = p.stop.send(Some(StopMode::Stale));
                let _ = p.join.await;
            }
            self.metrics.remove_job(&k);
        }
        for (name, sc) in wanted {
            let inherited = match pools.get(name) {
                Some(PoolEntry(p)) if *p.cfg == *sc => continue,
                Some(_) => match pools.remove(name) {
                    Some(PoolEntry(p)) => {
                        self.metrics.pool_reloads.inc();
                        let _ = p.stop.send(Some(StopMode::Handoff));
                        p.join.await.unwrap_or_default()
                    }
                    None => HashMap::new(),
                },
                None => HashMap::new(),
            };
            let pool = start_pool(
                Arc::new(sc.clone()),
                self.sink.clone(),
                inherited,
                self.metrics.clone(),
            );
            pools.insert(name.to_string(), PoolEntry(pool));
        }
    }

    /// Stops every pool; every series gets a staleness marker.
    pub async fn shutdown(&self) {
        let mut pools = self.pools.lock().await;
        for (_, PoolEntry(p)) in std::mem::take(&mut *pools) {
            let _ = p.stop.send(Some(StopMode::Stale));
            let _ = p.join.await;
        }
    }

    /// The current targets and their state.
    pub async fn targets(&self) -> TargetsSnapshot {
        let pools = self.pools.lock().await;
        let mut snap = TargetsSnapshot::default();
        for (name, PoolEntry(p)) in pools.iter() {
            let v = p.view.lock();
            let mut active: Vec<ActiveTarget> = v
                .loops
                .iter()
                .map(|(t, s)| ActiveTarget {
                    scrape_pool: name.clone(),
                    target: t.clone(),
                    status: s.lock().clone(),
                })
                .collect();
            active.sort_by(|a, b| a.target.url.cmp(&b.target.url));
            snap.active.extend(active);
            snap.dropped.extend(v.dropped.iter().map(|d| DroppedTarget {
                scrape_pool: name.clone(),
                discovered_labels: d.clone(),
            }));
        }
        snap
    }
}

#[cfg(test)]
mod tests;
