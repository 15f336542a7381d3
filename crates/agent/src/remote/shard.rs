//! One shard: collects series pieces until `max_samples_per_send` or the
//! batch send deadline, sends them with retries (exponential backoff with
//! jitter, `Retry-After`), then acknowledges their queue records. A shard
//! sends one request at a time, so the order of a series (always hashed to
//! the same shard) is kept.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tracing::{error, warn};

use super::client::{Client, Outcome};
use super::encode::{self, Item};
use super::metrics::SendHandles;
use super::tracker::Tracker;
use super::{ProtocolVersion, RemoteSettings};
use crate::queue::Queue;

/// State shared by one endpoint's tasks.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) settings: RemoteSettings,
    pub(crate) client: Client,
    pub(crate) metrics: SendHandles,
    pub(crate) tracker: Mutex<Tracker>,
    pub(crate) queue: Queue,
    /// Wall-clock ms of the last failed attempt (0: none).
    pub(crate) last_failure_ms: AtomicI64,
    /// Total time spent in requests, ns (for shard scaling).
    pub(crate) send_nanos: AtomicU64,
}

impl Ctx {
    pub(crate) fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Resolves when `stop` turns true or its sender is gone.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    let extra = rand::random_range(0..=half.as_micros().max(1) as u64);
    half + Duration::from_micros(extra)
}

/// How a send ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    Done,
    Failed,
    Stopped,
}

/// Sends `body` until it is accepted, rejected for good, or `stop`.
/// `samples` is what the body carries (0 for metadata) for the counters.
pub(crate) async fn send_with_retry(
    ctx: &Ctx,
    stop: &mut watch::Receiver<bool>,
    body: Bytes,
    samples: u64,
    what: &str,
) -> Sent {
    let s = &ctx.settings;
    let mut backoff = s.min_backoff;
    let mut attempt: u32 = 0;
    loop {
        if *stop.borrow() {
            return Sent::Stopped;
        }
        let t0 = Instant::now();
        let out = tokio::select! {
            o = ctx.client.send(body.clone(), attempt) => o,
            _ = stopped(stop) => return Sent::Stopped,
        };
        let el = t0.elapsed();
        ctx.metrics.send_duration.observe(el.as_secs_f64());
        ctx.send_nanos
            .fetch_add(el.as_nanos() as u64, Ordering::Relaxed);
        match out {
            Outcome::Done => {
                ctx.metrics.bytes_sent.inc_by(body.len() as u64);
                return Sent::Done;
            }
            Outcome::Retry { after, what: why } => {
                ctx.metrics.retried.inc_by(samples);
                ctx.last_failure_ms
                    .store(crate::remote::now_ms(), Ordering::Relaxed);
                let wait = after.unwrap_or_else(|| jitter(backoff));
                warn!(
                    remote = %ctx.metrics.remote,
                    attempt,
                    retry_in = ?wait,
                    error = %why,
                    "remote write of {what} failed; retrying"
                );
                backoff = (backoff * 2).min(s.max_backoff);
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped(stop) => return Sent::Stopped,
                }
            }
            Outcome::Fail { status, what: why } => {
                ctx.metrics
                    .failed(&format!("http_{status}"))
                    .inc_by(samples);
                ctx.last_failure_ms
                    .store(crate::remote::now_ms(), Ordering::Relaxed);
                error!(
                    remote = %ctx.metrics.remote,
                    status,
                    samples,
                    error = %why,
                    "remote write of {what} rejected; dropping it without retrying"
                );
                return Sent::Failed;
            }
        }
    }
}

/// Acknowledges the records of sent (or finally rejected) items.
fn ack(ctx: &Ctx, items: &[Item]) {
    let mut commit = None;
    {
        let mut t = ctx.tracker();
        let mut i = 0;
        while i < items.len() {
            let id = items[i].record;
            let mut j = i;
            while j < items.len() && items[j].record == id {
                j += 1;
            }
            if let Some(p) = t.ack(id, j - i) {
                commit = Some(p);
            }
            i = j;
        }
    }
    if let Some(p) = commit {
        ctx.queue.commit(p);
    }
}

/// Encodes and sends one request's items; false when stopped.
async fn send_items(
    ctx: &Ctx,
    stop: &mut watch::Receiver<bool>,
    items: Vec<Item>,
    bufs: &mut encode::BodyBufs,
) -> bool {
    let samples: u64 = items.iter().map(|i| i.samples() as u64).sum();
    let body = match ctx.settings.protocol {
        ProtocolVersion::V1 => encode::encode_v1_with(&items, bufs),
        ProtocolVersion::V2 => Bytes::from(encode::encode_v2(&items)),
    };
    match send_with_retry(ctx, stop, body, samples, "samples").await {
        Sent::Done => {
            ctx.metrics.sent.inc_by(samples);
            let newest = items.iter().filter_map(Item::newest).max();
            if let Some(t) = newest {
                let secs = t as f64 / 1000.0;
                if secs > ctx.metrics.highest_sent.get() {
                    ctx.metrics.highest_sent.set(secs);
                }
            }
            ack(ctx, &items);
            true
        }
        Sent::Failed => {
            ack(ctx, &items);
            true
        }
        Sent::Stopped => false,
    }
}

/// Takes items from the front of `pending` until `max` samples.
fn take(pending: &mut Vec<Item>, n: &mut usize, max: usize) -> Vec<Item> {
    let mut k = 0;
    let mut s = 0;
    while k < pending.len() && (s < max || k == 0) {
        s += pending[k].samples();
        k += 1;
        if s >= max {
            break;
        }
    }
    *n -= s;
    pending.drain(..k).collect()
}

/// Runs one shard until its channel closes (after flushing) or `stop`.
pub(crate) async fn run_shard(
    ctx: Arc<Ctx>,
    mut rx: mpsc::Receiver<Vec<Item>>,
    mut stop: watch::Receiver<bool>,
) {
    let max = ctx.settings.max_samples_per_send.max(1);
    let mut pending: Vec<Item> = Vec::new();
    let mut n = 0usize;
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut bufs = encode::BodyBufs::default();
    loop {
        while n >= max {
            let batch = take(&mut pending, &mut n, max);
            if !send_items(&ctx, &mut stop, batch, &mut bufs).await {
                return;
            }
        }
        if pending.is_empty() {
            deadline = None;
        } else if deadline.is_none() {
            deadline = Some(tokio::time::Instant::now() + ctx.settings.batch_send_deadline);
        }
        let at = deadline.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => return,
            c = rx.recv() => match c {
                Some(c) => {
                    for it in c {
                        n += it.samples();
                        pending.push(it);
                    }
                }
                None => {
                    while !pending.is_empty() {
                        let batch = take(&mut pending, &mut n, max);
                        if !send_items(&ctx, &mut stop, batch, &mut bufs).await {
                            return;
                        }
                    }
                    return;
                }
            },
            _ = tokio::time::sleep_until(at), if deadline.is_some() => {
                let all = std::mem::take(&mut pending);
                n = 0;
                deadline = None;
                if !all.is_empty() && !send_items(&ctx, &mut stop, all, &mut bufs).await {
                    return;
                }
            }
        }
    }
}
