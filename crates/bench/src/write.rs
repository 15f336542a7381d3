//! Remote-write load: backfill (history, oldest first, as fast as the
//! server takes it) or live (real time, like many scrapers).
//!
//! One producer thread advances the workload and encodes + compresses
//! requests; `concurrency` sender tasks post them. Batch `b` always goes to
//! sender `b % concurrency`, so each series' samples arrive in order even
//! with many senders (a fair test for servers that reject out-of-order
//! samples).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::workload::{Protocol, Workload};
use crate::{Auth, Report, Stats, failure_cause};

/// How time advances.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Push `span` of history ending at `end_ms`, oldest first, with
    /// `ticks_per_request` samples per series in each request.
    Backfill {
        /// Length of the pushed history.
        span: Duration,
        /// Newest tick (ms since the epoch).
        end_ms: i64,
        /// Samples per series per request.
        ticks_per_request: usize,
    },
    /// Push one sample per series per interval at wall-clock time, for
    /// `duration`.
    Live {
        /// How long to run.
        duration: Duration,
    },
}

/// Where and how to push.
#[derive(Debug, Clone)]
pub struct WriteConfig {
    /// Remote-write URL, e.g. `http://127.0.0.1:9009/api/v1/push`.
    pub url: String,
    /// Tenant header / token.
    pub auth: Auth,
    /// Concurrent senders.
    pub concurrency: usize,
    /// Backfill or live.
    pub mode: Mode,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Wall-clock ms since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct Job {
    body: Vec<u8>,
    samples: u64,
}

/// Produces every request of the run into the senders' queues; returns
/// how many live rounds started late (the senders could not keep up).
fn produce(mut w: Workload, mode: Mode, queues: Vec<mpsc::Sender<Job>>) -> u64 {
    let interval = w.config().interval.as_millis().max(1) as i64;
    let nq = queues.len().max(1);
    let send = |b: usize, job: Job| queues[b % nq].blocking_send(job).is_ok();
    let mut late = 0;
    match mode {
        Mode::Backfill {
            span,
            end_ms,
            ticks_per_request,
        } => {
            let end = end_ms - end_ms.rem_euclid(interval);
            let n_ticks = (span.as_millis() as i64 / interval).max(1);
            let per = ticks_per_request.max(1) as i64;
            let mut t = end - (n_ticks - 1) * interval;
            while t <= end {
                let ticks: Vec<i64> = (0..per)
                    .map(|k| t + k * interval)
                    .filter(|&x| x <= end)
                    .collect();
                for b in 0..w.batches() {
                    let (body, samples) = w.encode_compressed(b, &ticks);
                    if !send(b, Job { body, samples }) {
                        return late;
                    }
                }
                w.churn(ticks.len());
                t += per * interval;
            }
        }
        Mode::Live { duration } => {
            let start = Instant::now();
            let nb = w.batches().max(1);
            let mut tick = now_ms();
            tick -= tick.rem_euclid(interval);
            while start.elapsed() < duration {
                let round = Instant::now();
                for b in 0..w.batches() {
                    // Spread the batches over the interval, like scrapes.
                    let due = Duration::from_millis((interval as u64) * b as u64 / nb as u64);
                    if let Some(wait) = due.checked_sub(round.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    let (body, samples) = w.encode_compressed(b, &[tick]);
                    if !send(b, Job { body, samples }) {
                        return late;
                    }
                }
                w.churn(1);
                tick += interval;
                let next = round + Duration::from_millis(interval as u64);
                match next.checked_duration_since(Instant::now()) {
                    Some(wait) => std::thread::sleep(wait),
                    None => late += 1,
                }
            }
        }
    }
    late
}

async fn sender(
    client: reqwest::Client,
    cfg: WriteConfig,
    protocol: Protocol,
    mut rx: mpsc::Receiver<Job>,
) -> Stats {
    let mut st = Stats::default();
    while let Some(job) = rx.recv().await {
        let n = job.body.len() as u64;
        let rb = client
            .post(&cfg.url)
            .header("Content-Type", protocol.content_type())
            .header("Content-Encoding", "snappy")
            .header(
                "X-Prometheus-Remote-Write-Version",
                protocol.version_header(),
            )
            .timeout(cfg.timeout)
            .body(job.body);
        let t0 = Instant::now();
        let r = cfg.auth.apply(rb).send().await;
        match r {
            Ok(resp) if resp.status().is_success() => {
                st.ok += 1;
                st.samples += job.samples;
                st.bytes += n;
                let _ = resp.bytes().await;
            }
            Ok(resp) => {
                *st.errors
                    .entry(format!("HTTP {}", resp.status().as_u16()))
                    .or_default() += 1;
                let _ = resp.bytes().await;
            }
            Err(e) => *st.errors.entry(failure_cause(&e)).or_default() += 1,
        }
        st.latencies.push(t0.elapsed());
    }
    st
}

/// Runs the push and reports accepted samples/s and latencies.
pub async fn run(w: Workload, cfg: WriteConfig) -> Report {
    let protocol = w.config().protocol;
    let client = crate::http_client();
    let mut queues = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..cfg.concurrency.max(1) {
        let (tx, rx) = mpsc::channel(4);
        queues.push(tx);
        tasks.push(tokio::spawn(sender(
            client.clone(),
            cfg.clone(),
            protocol,
            rx,
        )));
    }
    let start = Instant::now();
    let mode = cfg.mode;
    let producer = std::thread::spawn(move || produce(w, mode, queues));
    let mut stats = Stats::default();
    for t in tasks {
        if let Ok(s) = t.await {
            stats.merge(s);
        }
    }
    let late = producer.join().unwrap_or(0);
    if late > 0 {
        *stats.errors.entry("live rounds late".into()).or_default() += late;
    }
    Report::new("write", start.elapsed(), stats)
}
