//! Remote write decoding: requests per second through
//! `stratus_api::decode_v1` (the borrowing fast path and the
//! validation into a batch) on one thread, with the bodies already
//! decompressed, so the figure is the decoder's alone.
//!
//! `cargo bench -p stratus-api --bench decode`. Sizes: `DECODE_BENCH_REQUESTS`
//! (default 2,000 requests of 2,000 series, ten labels, one sample each,
//! the shape `stratus bench write` sends).

use std::hint::black_box;
use std::time::Instant;

use prost::Message;
use stratus_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};

/// One request: `n` series starting at series `first`, labelled like the
/// bench workload's (sorted names, a few values unique per series).
fn request(first: usize, n: usize, t: i64) -> Vec<u8> {
    let label = |name: &str, value: String| Label {
        name: name.to_string(),
        value,
    };
    let timeseries = (first..first + n)
        .map(|k| TimeSeries {
            labels: vec![
                label("__name__", format!("bench_metric_{}_total", k % 100)),
                label("cluster", format!("c{}", k % 5)),
                label("container", "app".into()),
                label("instance", format!("host-{}:9100", k / 4)),
                label("job", "bench".into()),
                label("namespace", format!("ns-{}", k % 20)),
                label("pod", format!("pod-{k}-g0")),
                label("region", ["eu", "us", "ap"][k % 3].into()),
                label("series", k.to_string()),
                label("zone", format!("{}a", ["eu", "us", "ap"][k % 3])),
            ],
            samples: vec![Sample {
                value: (k % 1000) as f64 * 1.5,
                timestamp: t,
            }],
            ..Default::default()
        })
        .collect();
    WriteRequest {
        timeseries,
        ..Default::default()
    }
    .encode_to_vec()
}

fn main() {
    let requests: usize = std::env::var("DECODE_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    const SERIES: usize = 2_000;
    let bodies: Vec<Vec<u8>> = (0..50)
        .map(|i| request(i * SERIES, SERIES, 1_700_000_000_000 + i as i64))
        .collect();
    // Warm up (allocator, label arena pool).
    for b in &bodies {
        black_box(stratus_api::decode_v1(b).map(|x| x.samples.len()).ok());
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let mut samples = 0usize;
        for i in 0..requests {
            let b = &bodies[i % bodies.len()];
            match stratus_api::decode_v1(b) {
                Ok(batch) => samples += batch.samples.len(),
                Err(e) => panic!("bench request refused: {e}"),
            }
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(samples, requests * SERIES);
        best = best.min(secs / samples as f64);
    }
    println!(
        "decode_v1: {:.1} ns per series (best of 5 rounds of {requests} requests of {SERIES} series), {:.2} M series/s",
        best * 1e9,
        1e-6 / best
    );
}
