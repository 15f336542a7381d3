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
    /// Backfill only: encode every request before the clock starts, up to
    /// this many bytes of compressed bodies, so the generator's CPU does not
    /// compete with the server's during the measured push (the issue's
    /// "pre-encode payloads"). `None` encodes while sending.
    pub pregenerate: Option<u64>,
}

/// Why a push could not start.
#[derive(Debug)]
pub enum WriteError {
    /// The pre-generated bodies would exceed the budget.
    PregenerateBudget {
        /// The budget in bytes.
        budget: u64,
        /// Requests encoded when the budget ran out.
        requests: u64,
    },
    /// Pre-generation is for backfill only.
    PregenerateLive,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PregenerateBudget { budget, requests } => write!(
                f,
                "pre-generated requests would exceed {budget} bytes (after {requests} requests); \
                 raise the budget or push without pre-generation"
            ),
            Self::PregenerateLive => f.write_str("pre-generation needs backfill mode"),
        }
    }
}

impl std::error::Error for WriteError {}

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
fn produce(w: Workload, mode: Mode, queues: Vec<mpsc::Sender<Job>>) -> u64 {
    let nq = queues.len().max(1);
    produce_into(w, mode, |b, job| queues[b % nq].blocking_send(job).is_ok())
}

/// Encodes every request of the run in order, handing each to `send`
/// with its batch number; stops early when `send` returns false.
fn produce_into(mut w: Workload, mode: Mode, mut send: impl FnMut(usize, Job) -> bool) -> u64 {
    let interval = w.config().interval.as_millis().max(1) as i64;
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

/// Encodes every request of a backfill into per-sender lists (batch `b`
/// to sender `b % senders`, as [`produce`] queues them), within `budget`
/// bytes of bodies.
fn pregenerate(
    w: Workload,
    mode: Mode,
    senders: usize,
    budget: u64,
) -> Result<Vec<Vec<Job>>, WriteError> {
    if !matches!(mode, Mode::Backfill { .. }) {
        return Err(WriteError::PregenerateLive);
    }
    let mut lists: Vec<Vec<Job>> = (0..senders).map(|_| Vec::new()).collect();
    let (mut bytes, mut requests, mut over) = (0u64, 0u64, false);
    produce_into(w, mode, |b, job| {
        bytes += job.body.len() as u64;
        if bytes > budget {
            over = true;
            return false;
        }
        requests += 1;
        lists[b % senders].push(job);
        true
    });
    if over {
        return Err(WriteError::PregenerateBudget { budget, requests });
    }
    Ok(lists)
}

/// Runs the push and reports accepted samples/s and latencies. Fails only
/// when pre-generation was asked for and cannot be done.
pub async fn run(w: Workload, cfg: WriteConfig) -> Result<Report, WriteError> {
    let protocol = w.config().protocol;
    let client = crate::http_client();
    let senders = cfg.concurrency.max(1);
    let mode = cfg.mode;
    let (ready, w) = match cfg.pregenerate {
        Some(budget) => {
            let lists = tokio::task::block_in_place(|| pregenerate(w, mode, senders, budget))?;
            (Some(lists), None)
        }
        None => (None, Some(w)),
    };
    let mut queues = Vec::new();
    let mut tasks = Vec::new();
    let mut ready = ready.map(Vec::into_iter);
    for _ in 0..senders {
        // Pre-generated jobs fill a channel that holds them all.
        let list = ready.as_mut().and_then(Iterator::next);
        let (tx, rx) = mpsc::channel(list.as_ref().map_or(4, |l| l.len().max(1)));
        if let Some(list) = list {
            for job in list {
                // Cannot fail: the channel has room for every job and its
                // receiver is alive.
                let _ = tx.try_send(job);
            }
        } else {
            queues.push(tx);
        }
        tasks.push(tokio::spawn(sender(
            client.clone(),
            cfg.clone(),
            protocol,
            rx,
        )));
    }
    let start = Instant::now();
    let producer = w.map(|w| std::thread::spawn(move || produce(w, mode, queues)));
    let mut stats = Stats::default();
    for t in tasks {
        if let Ok(s) = t.await {
            stats.merge(s);
        }
    }
    let late = producer.map_or(0, |p| p.join().unwrap_or(0));
    if late > 0 {
        *stats.errors.entry("live rounds late".into()).or_default() += late;
    }
    Ok(Report::new("write", start.elapsed(), stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::WorkloadConfig;

    fn workload() -> Workload {
        Workload::new(WorkloadConfig {
            series: 250,
            metrics: 5,
            batch_series: 100,
            ..WorkloadConfig::default()
        })
    }

    fn backfill() -> Mode {
        Mode::Backfill {
            span: Duration::from_secs(300),
            end_ms: 1_700_000_000_000,
            ticks_per_request: 2,
        }
    }

    #[test]
    fn pregenerated_requests_are_the_streamed_ones_in_sender_order() {
        let mut streamed: Vec<(usize, Vec<u8>, u64)> = Vec::new();
        produce_into(workload(), backfill(), |b, job| {
            streamed.push((b, job.body, job.samples));
            true
        });
        // 20 ticks in pairs: 10 rounds of 3 batches.
        assert_eq!(streamed.len(), 30);
        let Ok(lists) = pregenerate(workload(), backfill(), 2, u64::MAX) else {
            panic!("pre-generation without a budget failed");
        };
        assert_eq!(lists.len(), 2);
        for (s, list) in lists.iter().enumerate() {
            let want: Vec<_> = streamed.iter().filter(|(b, ..)| b % 2 == s).collect();
            assert_eq!(list.len(), want.len());
            for (job, (_, body, samples)) in list.iter().zip(want) {
                assert_eq!(&job.body, body);
                assert_eq!(job.samples, *samples);
            }
        }
        let samples: u64 = lists.iter().flatten().map(|j| j.samples).sum();
        assert_eq!(samples, 250 * 20);
    }

    #[test]
    fn pregeneration_stops_at_the_budget_and_needs_backfill() {
        let Err(err) = pregenerate(workload(), backfill(), 2, 1_000) else {
            panic!("a 1,000-byte budget cannot hold the run");
        };
        assert!(matches!(
            err,
            WriteError::PregenerateBudget { budget: 1_000, .. }
        ));
        assert!(err.to_string().contains("exceed 1000 bytes"));
        let live = Mode::Live {
            duration: Duration::from_secs(1),
        };
        assert!(matches!(
            pregenerate(workload(), live, 2, u64::MAX),
            Err(WriteError::PregenerateLive)
        ));
    }
}
