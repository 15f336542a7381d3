//! Push-side throughput: queue append MB/s, and sender samples/s into the
//! fixture receiver on 127.0.0.1 (remote write 1.0 and 2.0).
//!
//! `cargo bench -p stratus-agent --bench push` (add `--profile test` for
//! a quick unoptimised-ish figure). Sizes: `PUSH_BENCH_SAMPLES` (default
//! 1 000 000).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use stratus_agent::queue::{Queue, QueueConfig};
use stratus_agent::remote::{ProtocolVersion, PushMetrics, RemoteSettings, Sender};
use stratus_agent::sink::{Batch, SeriesSamples, Sink};
use stratus_model::{Labels, Sample};

/// A scrape-like batch: `n` series of 6 labels, one sample each.
fn scrape(t: i64, n: usize) -> Batch {
    Batch {
        series: (0..n)
            .map(|i| SeriesSamples {
                labels: Labels::from_pairs([
                    ("__name__", format!("metric_{}", i % 50)),
                    ("instance", "node-1.example.org:9100".to_string()),
                    ("job", "node".to_string()),
                    ("cpu", (i / 50).to_string()),
                    ("mode", ["user", "system", "idle"][i % 3].to_string()),
                    ("le", format!("{}", (i % 7) as f64 * 0.5)),
                ]),
                samples: vec![Sample::new(t, i as f64 * 1.5)],
            })
            .collect(),
        metadata: vec![],
    }
}

fn main() {
    let total: usize = std::env::var("PUSH_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let per_batch = 500;
    let batches = total.div_ceil(per_batch);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        for proto in [ProtocolVersion::V1, ProtocolVersion::V2] {
            let dir = tempfile::tempdir().expect("tempdir");
            let m = Arc::new(PushMetrics::unregistered());
            let mut cfg = QueueConfig::new(dir.path());
            cfg.max_bytes = 8 << 30;
            let q = Queue::open(cfg, "bench", &m).expect("queue");
            let input: Vec<Batch> = (0..batches)
                .map(|b| scrape(b as i64 * 15_000, per_batch))
                .collect();
            let t0 = Instant::now();
            for b in input {
                q.append(b).expect("append");
            }
            let el = t0.elapsed().as_secs_f64();
            let bytes = q.appended_bytes() as f64;
            println!(
                "queue append: {} samples, {:.1} MB in {:.3} s = {:.1} MB/s, {:.0} samples/s ({:.1} bytes/sample)",
                batches * per_batch,
                bytes / 1e6,
                el,
                bytes / 1e6 / el,
                (batches * per_batch) as f64 / el,
                bytes / (batches * per_batch) as f64
            );

            let rx = common::Receiver::start().await;
            rx.state.count_only.store(true, Ordering::Relaxed);
            let mut s = RemoteSettings::new("bench", rx.url.clone());
            s.protocol = proto;
            s.min_shards = 4;
            s.max_shards = 4;
            let t0 = Instant::now();
            let sender = Sender::start(s, q.clone(), None, &m).expect("sender");
            let drained = sender.drain(Duration::from_secs(600)).await;
            let el = t0.elapsed().as_secs_f64();
            let sent = m.samples_sent("bench");
            println!(
                "sender {proto:?}: {sent} samples in {:.3} s = {:.0} samples/s ({} requests, drained: {drained})",
                el,
                sent as f64 / el,
                rx.requests()
            );
        }
    });
}
