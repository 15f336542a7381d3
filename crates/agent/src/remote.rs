//! Remote-write senders: drain an endpoint's [`Queue`] into a
//! Prometheus remote-write endpoint (1.0 or 2.0).
//!
//! One [`Sender`] per endpoint runs on the caller's tokio runtime:
//!
//! - a dispatcher reads queued batches in order, adds the external labels,
//!   applies the write-relabel hook, and hands each series to a shard
//!   chosen by the hash of its final labels (so a series is always sent
//!   by one shard, in order);
//! - `min_shards..=max_shards` shards send concurrently; every
//!   `shard_update_interval` the number is recomputed from the send time
//!   per sample, the append rate and the backlog (Prometheus' queue
//!   manager, simplified) and the shards are restarted when it changes by
//!   more than 30 %;
//! - retries: 5xx, 429 and network errors with exponential backoff and
//!   jitter (`Retry-After` honoured); other 4xx are dropped and counted in
//!   `stratus_agent_samples_failed_total{reason="http_<code>"}`;
//! - a record's queue position is committed once all its series are
//!   acknowledged (at-least-once delivery);
//! - metadata: 1.0 sends the families seen in separate requests (at once
//!   for new families, all of them every `metadata_send_interval`); 2.0
//!   sends it inline with each series.

mod client;
mod encode;
pub(crate) mod metrics;
mod shard;
mod tracker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use snafu::Snafu;
use stratus_model::{Label, Labels, LabelsBuilder, Sample};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info};

pub use metrics::PushMetrics;

use self::encode::{Item, ItemSeries};
use self::shard::{Ctx, Sent};
use crate::queue::{Position, Queue, QueueReader, RecordInfo, RecordPayload};
use crate::sink::Metadata;

/// The write-relabel hook: returns the labels to send, or `None` to drop
/// the series. Called with the external labels already added.
pub type WriteRelabel = Box<dyn Fn(&Labels) -> Option<Labels> + Send + Sync>;

/// Remote-write protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProtocolVersion {
    /// `prometheus.WriteRequest` (1.0), the default.
    #[default]
    V1,
    /// `io.prometheus.write.v2.Request` (2.0).
    V2,
}

/// Request authentication.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// HTTP basic auth.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username}, <secret>)"),
            Self::Bearer(_) => f.write_str("Bearer(<secret>)"),
        }
    }
}

/// Settings of one remote-write endpoint (defaults as Prometheus').
#[derive(Debug, Clone)]
pub struct RemoteSettings {
    /// Name in metrics (`remote_name`) and logs; unique per endpoint.
    pub name: String,
    /// Endpoint URL (`http://host:port/api/v1/write`).
    pub url: String,
    /// Protocol version (default 1.0).
    pub protocol: ProtocolVersion,
    /// Timeout of one request (default 30 s).
    pub timeout: Duration,
    /// Extra request headers (e.g. `X-Scope-OrgID`).
    pub headers: Vec<(String, String)>,
    /// Authentication.
    pub auth: Option<Auth>,
    /// Labels added to every series that lacks them.
    pub external_labels: Vec<(String, String)>,
    /// Fewest shards (default 1).
    pub min_shards: usize,
    /// Most shards (default 50).
    pub max_shards: usize,
    /// Samples per request at most (default 2000).
    pub max_samples_per_send: usize,
    /// A shard sends what it has after this long (default 5 s).
    pub batch_send_deadline: Duration,
    /// First retry delay (default 30 ms); doubled per retry.
    pub min_backoff: Duration,
    /// Longest retry delay (default 5 s).
    pub max_backoff: Duration,
    /// Retry on 429 (default true); when false a 429 drops the data.
    pub retry_on_http_429: bool,
    /// Send metric metadata (default true).
    pub send_metadata: bool,
    /// 1.0: how often all metadata is resent (default 1 min).
    pub metadata_send_interval: Duration,
    /// How often the shard count is recomputed (default 10 s).
    pub shard_update_interval: Duration,
    /// TLS settings (CA, client certificate, server name...).
    pub tls_config: crate::config::TlsConfig,
    /// HTTP proxy the requests go through.
    pub proxy_url: Option<String>,
}

impl RemoteSettings {
    /// Defaults for an endpoint.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            protocol: ProtocolVersion::V1,
            timeout: Duration::from_secs(30),
            headers: Vec::new(),
            auth: None,
            external_labels: Vec::new(),
            min_shards: 1,
            max_shards: 50,
            max_samples_per_send: 2000,
            batch_send_deadline: Duration::from_secs(5),
            min_backoff: Duration::from_millis(30),
            max_backoff: Duration::from_secs(5),
            retry_on_http_429: true,
            send_metadata: true,
            metadata_send_interval: Duration::from_secs(60),
            shard_update_interval: Duration::from_secs(10),
            tls_config: crate::config::TlsConfig::default(),
            proxy_url: None,
        }
    }
}

impl RemoteSettings {
    /// Checks that a client can be built from these settings (headers,
    /// TLS files, proxy URL), without starting anything.
    pub fn check(&self) -> Result<(), String> {
        client::Client::new(self).map(|_| ()).map_err(|e| e.0)
    }
}

/// Errors starting a sender.
#[derive(Debug, Snafu)]
pub enum RemoteError {
    /// A setting is unusable.
    #[snafu(display("remote write {name}: {reason}"))]
    Settings {
        /// Endpoint name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The queue refused a reader (another sender is running on it).
    #[snafu(display("remote write {name}: {source}"))]
    Reader {
        /// Endpoint name.
        name: String,
        /// The queue error.
        source: crate::queue::QueueError,
    },
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where the dispatcher is, for [`Sender::drain`].
#[derive(Debug, Default)]
struct Progress {
    read: Position,
}

/// A running remote-write sender for one endpoint.
#[derive(Debug)]
pub struct Sender {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    ctx: Arc<Ctx>,
    progress: Arc<Mutex<Progress>>,
}

impl Sender {
    /// Starts sending `queue` to the endpoint; must be called inside a
    /// tokio runtime (its tasks run there). `relabel` is the endpoint's
    /// write_relabel_configs. Takes the queue's reader: one sender per
    /// queue.
    pub fn start(
        settings: RemoteSettings,
        queue: Queue,
        relabel: Option<WriteRelabel>,
        metrics: &Arc<PushMetrics>,
    ) -> Result<Sender, RemoteError> {
        let bad = |reason: String| RemoteError::Settings {
            name: settings.name.clone(),
            reason,
        };
        if settings.min_shards == 0 || settings.max_shards < settings.min_shards {
            return Err(bad(format!(
                "need 1 <= min_shards ({}) <= max_shards ({})",
                settings.min_shards, settings.max_shards
            )));
        }
        let ext = Labels::try_from_pairs(settings.external_labels.iter().cloned())
            .map_err(|e| bad(format!("external labels: {e}")))?;
        let client = client::Client::new(&settings).map_err(|e| bad(e.0))?;
        let reader = queue.reader().map_err(|source| RemoteError::Reader {
            name: settings.name.clone(),
            source,
        })?;
        let handles = metrics::SendHandles::new(metrics, &settings.name);
        let l = metrics::RemoteLabel {
            remote_name: settings.name.clone(),
        };
        metrics
            .shards_min
            .get_or_create(&l)
            .set(settings.min_shards as i64);
        metrics
            .shards_max
            .get_or_create(&l)
            .set(settings.max_shards as i64);
        let ctx = Arc::new(Ctx {
            settings,
            client,
            metrics: handles,
            tracker: Mutex::new(tracker::Tracker::default()),
            queue,
            last_failure_ms: AtomicI64::new(0),
            send_nanos: AtomicU64::new(0),
        });
        let (stop, stop_rx) = watch::channel(false);
        let progress = Arc::new(Mutex::new(Progress {
            read: reader.position(),
        }));
        let d = Dispatcher {
            ctx: ctx.clone(),
            reader,
            relabel,
            external: ext,
            stop: stop_rx,
            shards: Vec::new(),
            meta: Arc::new(Mutex::new(MetaState::default())),
            progress: progress.clone(),
            hints: Vec::new(),
        };
        let task = tokio::spawn(d.run());
        Ok(Sender {
            stop,
            task,
            ctx,
            progress,
        })
    }

    /// The queue sent from.
    pub fn queue(&self) -> &Queue {
        &self.ctx.queue
    }

    /// Stops now: requests in flight are abandoned (their data stays in
    /// the queue and is sent again by the next sender), the cursor is
    /// persisted.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            error!(remote = %self.ctx.settings.name, error = %e, "remote-write sender task failed");
        }
        self.ctx.queue.sync();
    }

    /// Waits until everything appended before the call is acknowledged
    /// (or `timeout`), then stops. True when all of it was.
    pub async fn drain(self, timeout: Duration) -> bool {
        let target = self.ctx.queue.stats().write;
        let until = Instant::now() + timeout;
        let mut done = false;
        while Instant::now() < until {
            let read = self.progress.lock().map(|p| p.read).unwrap_or_default();
            if read >= target && self.ctx.tracker().len() == 0 {
                done = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.stop().await;
        done
    }
}

/// Metadata seen, by family name.
#[derive(Debug, Default)]
struct MetaState {
    map: HashMap<String, Arc<Metadata>>,
    changed: bool,
}

struct Dispatcher {
    ctx: Arc<Ctx>,
    reader: QueueReader,
    relabel: Option<WriteRelabel>,
    external: Labels,
    stop: watch::Receiver<bool>,
    shards: Vec<(mpsc::Sender<Vec<Item>>, JoinHandle<()>)>,
    meta: Arc<Mutex<MetaState>>,
    progress: Arc<Mutex<Progress>>,
    /// Bytes each shard's buffer took for recent records (capacity hint
    /// for the next one).
    hints: Vec<usize>,
}

/// Inputs of the shard computation, sampled each interval.
struct Rates {
    at: Instant,
    appended: u64,
    sent: u64,
    send_nanos: u64,
    in_rate: f64,
    out_time_per_sample: f64,
}

/// Chunks a shard channel holds before the dispatcher waits.
const SHARD_CHANNEL: usize = 16;

impl Dispatcher {
    async fn run(mut self) {
        let mut stop = self.stop.clone();
        let n = self.ctx.settings.min_shards;
        self.start_shards(n);
        let meta_task = (self.ctx.settings.send_metadata
            && self.ctx.settings.protocol == ProtocolVersion::V1)
            .then(|| {
                tokio::spawn(run_metadata(
                    self.ctx.clone(),
                    self.meta.clone(),
                    self.stop.clone(),
                ))
            });
        let mut rates = Rates {
            at: Instant::now(),
            appended: self.appended(),
            sent: self.ctx.metrics.sent.get(),
            send_nanos: self.ctx.send_nanos.load(Ordering::Relaxed),
            in_rate: 0.0,
            out_time_per_sample: 0.0,
        };
        let mut next_reshard = Instant::now() + self.ctx.settings.shard_update_interval;
        let mut next_lag = Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            let now = Instant::now();
            if now >= next_lag {
                self.update_lag();
                next_lag = now + Duration::from_millis(500);
            }
            if now >= next_reshard {
                next_reshard = now + self.ctx.settings.shard_update_interval;
                if let Some(n) = self.desired_shards(&mut rates) {
                    if !self.reshard(n).await {
                        break;
                    }
                }
            }
            let walker = Walker {
                v2: self.ctx.settings.protocol == ProtocolVersion::V2,
                shards: self.shards.len().max(1),
                relabel: self.relabel.as_ref(),
                external: &self.external,
                hints: &self.hints,
            };
            match self.reader.next_record_with(|p| walker.walk(p)) {
                Ok(Some((info, walked))) => {
                    if !self.dispatch(info, walked).await {
                        break;
                    }
                }
                Ok(None) => {
                    self.set_progress();
                    let q = self.ctx.queue.clone();
                    tokio::select! {
                        _ = q.appended() => {}
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shard::stopped(&mut stop) => break,
                    }
                }
                Err(e) => {
                    error!(remote = %self.ctx.settings.name, error = %e, "reading the queue failed; retrying in 1 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shard::stopped(&mut stop) => break,
                    }
                }
            }
        }
        // Stopping: shards see the stop signal and return at once.
        for (tx, h) in self.shards.drain(..) {
            drop(tx);
            let _ = h.await;
        }
        if let Some(t) = meta_task {
            let _ = t.await;
        }
        self.update_lag();
        self.ctx.metrics.shards.set(0);
    }

    fn appended(&self) -> u64 {
        self.ctx.queue.appended_samples()
    }

    fn set_progress(&self) {
        if let Ok(mut p) = self.progress.lock() {
            p.read = self.reader.position();
        }
    }

    fn update_lag(&self) {
        let (oldest, in_flight) = {
            let t = self.ctx.tracker();
            (t.oldest_ms(), t.samples())
        };
        let lag = oldest.map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0);
        self.ctx.metrics.lag.set(lag);
        let unread = self.ctx.queue.stats().unread_bytes;
        let (samples, bytes) = (self.appended(), self.ctx.queue.appended_bytes());
        let est = if bytes == 0 {
            0
        } else {
            (unread as f64 * samples as f64 / bytes as f64) as u64
        };
        self.ctx
            .metrics
            .pending
            .set(i64::try_from(in_flight.saturating_add(est)).unwrap_or(i64::MAX));
    }

    fn start_shards(&mut self, n: usize) {
        for _ in 0..n {
            let (tx, rx) = mpsc::channel(SHARD_CHANNEL);
            let h = tokio::spawn(shard::run_shard(self.ctx.clone(), rx, self.stop.clone()));
            self.shards.push((tx, h));
        }
        self.ctx.metrics.shards.set(n as i64);
    }

    /// Flushes and ends the current shards, then starts `n`. False when
    /// stopped meanwhile.
    async fn reshard(&mut self, n: usize) -> bool {
        info!(remote = %self.ctx.settings.name, from = self.shards.len(), to = n, "resharding remote write");
        for (tx, h) in self.shards.drain(..) {
            drop(tx);
            let _ = h.await;
        }
        if *self.stop.borrow() {
            return false;
        }
        self.start_shards(n);
        true
    }

    /// The shard count the rates call for, when it should change.
    fn desired_shards(&self, r: &mut Rates) -> Option<usize> {
        let s = &self.ctx.settings;
        let now = Instant::now();
        let dt = now.duration_since(r.at).as_secs_f64().max(1e-3);
        let appended = self.appended();
        let sent = self.ctx.metrics.sent.get();
        let nanos = self.ctx.send_nanos.load(Ordering::Relaxed);
        let d_in = appended.saturating_sub(r.appended) as f64;
        let d_sent = sent.saturating_sub(r.sent) as f64;
        let d_nanos = nanos.saturating_sub(r.send_nanos) as f64;
        r.at = now;
        r.appended = appended;
        r.sent = sent;
        r.send_nanos = nanos;
        // Exponentially weighted, as Prometheus' ewmaRate (weight 0.2).
        let ew = |old: f64, new: f64| {
            if old == 0.0 {
                new
            } else {
                old + 0.2 * (new - old)
            }
        };
        r.in_rate = ew(r.in_rate, d_in / dt);
        if d_sent > 0.0 {
            r.out_time_per_sample = ew(r.out_time_per_sample, d_nanos / 1e9 / d_sent);
        }
        let cur = self.shards.len();
        // Scaling up cannot help while the endpoint fails.
        let last_fail = self.ctx.last_failure_ms.load(Ordering::Relaxed);
        let window = 2 * s.shard_update_interval.as_millis() as i64;
        if last_fail > 0 && now_ms() - last_fail < window {
            return None;
        }
        if r.out_time_per_sample == 0.0 {
            return None;
        }
        let st = self.ctx.queue.stats();
        let samples_per_byte = {
            let b = self.ctx.queue.appended_bytes();
            if b == 0 {
                1.0 / 16.0
            } else {
                appended as f64 / b as f64
            }
        };
        let backlog =
            st.unread_bytes as f64 * samples_per_byte + self.ctx.tracker().samples() as f64;
        let gain = 0.1 / s.shard_update_interval.as_secs_f64().max(1e-3);
        let desired = r.out_time_per_sample * (r.in_rate + gain * backlog);
        self.ctx.metrics.shards_desired.set(desired);
        let lo = cur as f64 * 0.7;
        let hi = cur as f64 * 1.3;
        if desired > lo && desired < hi {
            return None;
        }
        let n = (desired.ceil() as usize).clamp(s.min_shards, s.max_shards);
        (n != cur).then_some(n)
    }

    /// Spreads one record's series over the shards. False when stopped.
    async fn dispatch(&mut self, info: RecordInfo, walked: WalkedRecord) -> bool {
        let per_shard = self.stage(info, walked);
        self.set_progress();
        let mut stop = self.stop.clone();
        for (k, items) in per_shard.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            let Some((tx, _)) = self.shards.get(k) else {
                continue;
            };
            // Wait for room (the shard is busy or retrying), keeping the
            // lag gauge current meanwhile.
            let permit = loop {
                tokio::select! {
                    r = tx.reserve() => match r {
                        Ok(p) => break p,
                        Err(_) => return false,
                    },
                    _ = shard::stopped(&mut stop) => return false,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => self.update_lag(),
                }
            };
            permit.send(items);
        }
        true
    }

    /// Registers a walked record with the tracker, keeps its metadata and
    /// makes its series the shards' items.
    fn stage(&mut self, info: RecordInfo, walked: WalkedRecord) -> Vec<Vec<Item>> {
        let v2 = self.ctx.settings.protocol == ProtocolVersion::V2;
        let WalkedRecord {
            bufs,
            staged,
            dropped,
            metadata,
        } = walked;
        let n = bufs.len();
        if !metadata.is_empty() && self.ctx.settings.send_metadata {
            if let Ok(mut m) = self.meta.lock() {
                for md in metadata {
                    let new = m.map.get(&md.family).is_none_or(|old| **old != md);
                    if new {
                        m.map.insert(md.family.clone(), Arc::new(md));
                        m.changed = true;
                    }
                }
            }
        }
        self.ctx.metrics.relabel_dropped.inc_by(dropped);
        let (id, done) =
            self.ctx
                .tracker()
                .register(staged.len(), info.end, info.append_ms, info.samples);
        if let Some(p) = done {
            self.ctx.queue.commit(p);
        }
        let meta = if v2 && self.ctx.settings.send_metadata {
            self.meta.lock().ok()
        } else {
            None
        };
        // The larger of this record's bytes and the last hint less an
        // eighth, per shard.
        self.hints.resize(n, 0);
        for (h, b) in self.hints.iter_mut().zip(&bufs) {
            *h = b.len().max(*h - *h / 8);
        }
        let bufs: Vec<Bytes> = bufs.into_iter().map(Bytes::from).collect();
        let mut per_shard: Vec<Vec<Item>> = vec![Vec::new(); n];
        for st in staged {
            let (k, series) = match st {
                Staged::V1 {
                    shard,
                    range,
                    samples,
                    newest,
                } => {
                    let Some(b) = bufs.get(shard) else { continue };
                    let bytes = b.slice(range);
                    (
                        shard,
                        ItemSeries::V1 {
                            bytes,
                            samples,
                            newest,
                        },
                    )
                }
                Staged::Labels(k, labels, samples) => {
                    let meta = meta.as_ref().and_then(|m| {
                        let name = labels.metric_name()?;
                        encode::family_candidates(name).find_map(|f| m.map.get(f).cloned())
                    });
                    (
                        k,
                        ItemSeries::Labels {
                            labels,
                            samples,
                            meta,
                        },
                    )
                }
            };
            if let Some(v) = per_shard.get_mut(k) {
                v.push(Item { series, record: id });
            }
        }
        per_shard
    }
}

/// A record walked once, in the queue reader (which checks it decodes):
/// each series' shard and form, the 1.0 bytes per shard, its metadata.
struct WalkedRecord {
    bufs: Vec<Vec<u8>>,
    staged: Vec<Staged>,
    dropped: u64,
    metadata: Vec<Metadata>,
}

/// What walking a record needs of the dispatcher.
struct Walker<'a> {
    v2: bool,
    shards: usize,
    relabel: Option<&'a WriteRelabel>,
    external: &'a Labels,
    hints: &'a [usize],
}

impl Walker<'_> {
    /// Labels and shard of each series of a record.
    ///
    /// 1.0 without write relabeling (the common case) builds no label
    /// sets: each series' `TimeSeries` message is written straight from
    /// the record's symbols, merged with the external labels on the fly,
    /// into one buffer per shard, and its shard is chosen by a hash of
    /// those label bytes. 2.0 and write relabeling go through [`Labels`].
    fn walk(&self, rec: RecordPayload<'_>) -> Result<WalkedRecord, String> {
        let (v2, n) = (self.v2, self.shards);
        let mut dropped = 0u64;
        // Size each shard's buffer from the last record's (records of
        // one agent are alike), so it is not grown and copied as it fills.
        let mut bufs: Vec<Vec<u8>> = (0..n)
            .map(|k| {
                let hint = match self.hints.get(k) {
                    Some(&h) if self.hints.len() == n => h,
                    _ => rec.len() * 4 / n,
                };
                Vec::with_capacity(hint)
            })
            .collect();
        let mut staged: Vec<Staged> = Vec::new();
        let mut scratch: Vec<u8> = Vec::new();
        let metadata = rec.walk(|table, refs, samples| {
            if samples.is_empty() {
                return;
            }
            scratch.clear();
            if v2 || self.relabel.is_some() {
                // `walk` checked the indexes and the order.
                let labels = Labels::from_sorted_unchecked(
                    refs.iter()
                        .map(|&(n, v)| Label::new(table[n], table[v]))
                        .collect(),
                );
                let Some(labels) = final_labels(self.external, self.relabel, &labels) else {
                    dropped += samples.len() as u64;
                    return;
                };
                if v2 {
                    let k = (labels.stable_hash() % n as u64) as usize;
                    staged.push(Staged::Labels(k, labels, samples.to_vec()));
                    return;
                }
                for l in labels.iter() {
                    encode::put_v1_label(&mut scratch, &l.name, &l.value);
                }
            } else {
                merge_external(self.external, table, refs, |name, value| {
                    encode::put_v1_label(&mut scratch, name, value);
                });
            }
            let k = (xxhash_rust::xxh3::xxh3_64(&scratch) % n as u64) as usize;
            let Some(buf) = bufs.get_mut(k) else { return };
            let start = buf.len();
            buf.extend_from_slice(&scratch);
            encode::put_v1_samples(buf, samples);
            staged.push(Staged::V1 {
                shard: k,
                range: start..buf.len(),
                samples: samples.len() as u32,
                newest: samples.iter().map(|s| s.t).max().unwrap_or(0),
            });
        })?;
        Ok(WalkedRecord {
            bufs,
            staged,
            dropped,
            metadata,
        })
    }
}

/// External labels (series labels win), then the relabel hook.
fn final_labels(external: &Labels, relabel: Option<&WriteRelabel>, l: &Labels) -> Option<Labels> {
    let with_ext = if external.is_empty() {
        l.clone()
    } else {
        let mut b: LabelsBuilder = l.builder();
        let mut added = false;
        for e in external.iter() {
            if l.get(&e.name).is_none() {
                b.set(e.name.clone(), e.value.clone());
                added = true;
            }
        }
        if added { b.build() } else { l.clone() }
    };
    match relabel {
        Some(f) => f(&with_ext).filter(|x| !x.is_empty()),
        None => Some(with_ext),
    }
}

/// A series of a record on its way to a shard.
enum Staged {
    /// 1.0: the `TimeSeries` bytes at `range` of shard `shard`'s buffer.
    V1 {
        shard: usize,
        range: std::ops::Range<usize>,
        samples: u32,
        newest: i64,
    },
    /// 2.0: shard, final labels, samples.
    Labels(usize, Labels, Vec<Sample>),
}

/// Calls `put` with a series' labels (indexes into `table`, sorted by
/// name) and the external labels, in name order; a series label wins over
/// an external label of the same name (the external labels hold no empty
/// values). The result equals [`final_labels`] without write
/// relabeling, without building a label set.
fn merge_external(
    external: &Labels,
    table: &[&str],
    refs: &[(usize, usize)],
    mut put: impl FnMut(&str, &str),
) {
    let mut ext = external.iter().peekable();
    for &(n, v) in refs {
        let (Some(&name), Some(&value)) = (table.get(n), table.get(v)) else {
            continue;
        };
        while let Some(e) = ext.peek() {
            if &*e.name < name {
                put(&e.name, &e.value);
                ext.next();
            } else {
                if &*e.name == name {
                    ext.next();
                }
                break;
            }
        }
        put(name, value);
    }
    for e in ext {
        put(&e.name, &e.value);
    }
}

/// 1.0 metadata: sends new families within a second, everything every
/// `metadata_send_interval`.
async fn run_metadata(ctx: Arc<Ctx>, meta: Arc<Mutex<MetaState>>, mut stop: watch::Receiver<bool>) {
    let mut last_full: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shard::stopped(&mut stop) => return,
        }
        let due = last_full.is_none_or(|t| t.elapsed() >= ctx.settings.metadata_send_interval);
        let all: Vec<Arc<Metadata>> = {
            let Ok(mut m) = meta.lock() else {
                return;
            };
            if m.map.is_empty() || !(m.changed || due) {
                continue;
            }
            m.changed = false;
            m.map.values().cloned().collect()
        };
        for chunk in all.chunks(ctx.settings.max_samples_per_send.max(1)) {
            let body = Bytes::from(encode::encode_v1_metadata(chunk));
            match shard::send_with_retry(&ctx, &mut stop, body, 0, "metadata").await {
                Sent::Done => {
                    ctx.metrics.metadata_sent.inc_by(chunk.len() as u64);
                }
                Sent::Failed => {}
                Sent::Stopped => return,
            }
        }
        last_full = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use stratus_proto::prometheus as v1;

    fn merged(external: &Labels, series: &Labels) -> Vec<(String, String)> {
        let table: Vec<&str> = series.iter().flat_map(|l| [&*l.name, &*l.value]).collect();
        let refs: Vec<(usize, usize)> = (0..series.len()).map(|i| (2 * i, 2 * i + 1)).collect();
        let mut out = Vec::new();
        merge_external(external, &table, &refs, |n, v| {
            out.push((n.to_string(), v.to_string()));
        });
        out
    }

    #[test]
    fn external_merge_matches_the_label_set_merge() {
        let ext = Labels::from_pairs([("agent", "b"), ("job", "ext"), ("zz", "last")]);
        let cases = [
            Labels::from_pairs([("__name__", "a"), ("job", "x"), ("zone", "z")]),
            Labels::from_pairs([("__name__", "a")]),
            Labels::from_pairs([("zzz", "1")]),
            Labels::from_pairs([("agent", "mine"), ("zz", "mine")]),
            Labels::empty(),
        ];
        for series in &cases {
            // The reference: external labels added to a label set, series
            // labels winning (what `final_labels` does).
            let mut b = series.builder();
            for e in ext.iter() {
                if series.get(&e.name).is_none() {
                    b.set(e.name.clone(), e.value.clone());
                }
            }
            let want: Vec<(String, String)> = b
                .build()
                .iter()
                .map(|l| (l.name.to_string(), l.value.to_string()))
                .collect();
            assert_eq!(merged(&ext, series), want, "{series}");
        }
        let none = merged(&Labels::empty(), &cases[0]);
        assert_eq!(none.len(), 3);
    }

    #[test]
    fn staged_v1_bytes_decode_as_the_time_series() {
        let ext = Labels::from_pairs([("cluster", "c1")]);
        let series = Labels::from_pairs([("__name__", "up"), ("job", "j")]);
        let samples = [
            Sample::new(1_700_000_000_000, 1.0),
            Sample::new(5, f64::NAN),
        ];
        let mut bytes = Vec::new();
        let table: Vec<&str> = vec!["__name__", "up", "job", "j"];
        merge_external(&ext, &table, &[(0, 1), (2, 3)], |n, v| {
            encode::put_v1_label(&mut bytes, n, v);
        });
        encode::put_v1_samples(&mut bytes, &samples);
        let item = Item {
            series: ItemSeries::V1 {
                bytes: Bytes::from(bytes),
                samples: 2,
                newest: 1_700_000_000_000,
            },
            record: 0,
        };
        assert_eq!(
            (item.samples(), item.newest()),
            (2, Some(1_700_000_000_000))
        );
        let body = snap::raw::Decoder::new()
            .decompress_vec(&encode::encode_v1(&[item.clone(), item]))
            .unwrap();
        let req = v1::WriteRequest::decode(body.as_slice()).unwrap();
        assert_eq!(req.timeseries.len(), 2);
        let ts = &req.timeseries[1];
        let got: Vec<(&str, &str)> = ts
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(got, [("__name__", "up"), ("cluster", "c1"), ("job", "j")]);
        assert_eq!(series.len() + 1, got.len());
        assert_eq!(ts.samples[0].timestamp, 1_700_000_000_000);
        assert_eq!(ts.samples[0].value, 1.0);
        assert_eq!(ts.samples[1].timestamp, 5);
        assert!(ts.samples[1].value.is_nan());
    }
}
