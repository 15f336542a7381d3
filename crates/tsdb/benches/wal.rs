//! WAL throughput: `cargo bench -p stratus-tsdb --bench wal`.
//!
//! Measures `Wal::log` cost per sample for batches of 1000 samples (one
//! scrape of 1000 series) and replay throughput in samples per second.
//! Plain `std::time` timing; no benchmark framework.

use std::time::{Duration, Instant};

use stratus_model::Labels;
use stratus_tsdb::wal::{
    self, FsyncPolicy, Record, RefSample, RefSeries, ReplayOptions, Wal, WalConfig,
};

const SERIES: u64 = 1000;

fn run(policy: FsyncPolicy, name: &str, batches: i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(
        dir.path(),
        WalConfig {
            fsync: policy,
            ..WalConfig::default()
        },
    )
    .expect("open");
    let series: Vec<RefSeries> = (0..SERIES)
        .map(|i| RefSeries {
            sref: i,
            labels: Labels::from_pairs([
                ("__name__", "http_requests_total".to_string()),
                ("instance", format!("host-{}", i % 50)),
                ("path", format!("/api/v1/{i}")),
            ]),
        })
        .collect();
    wal.log(&series, &[]).expect("log series");
    let mut batch: Vec<RefSample> = Vec::with_capacity(SERIES as usize);
    let start = Instant::now();
    for b in 0..batches {
        batch.clear();
        let t = 1_700_000_000_000 + b * 15_000;
        batch.extend((0..SERIES).map(|i| RefSample {
            sref: i,
            t: t + (i as i64 % 7),
            v: (b as f64) * 1.5 + i as f64,
        }));
        wal.log(&[], &batch).expect("log");
    }
    let took = start.elapsed();
    let n = batches as u64 * SERIES;
    let bytes = wal.size_bytes();
    drop(wal);
    println!(
        "log  [{name:>14}]: {n} samples in {took:?}: {:.1} ns/sample, {:.1} MB/s, {:.2} bytes/sample",
        took.as_nanos() as f64 / n as f64,
        bytes as f64 / took.as_secs_f64() / 1e6,
        bytes as f64 / n as f64,
    );

    let mut best = Duration::MAX;
    let mut samples = 0;
    for _ in 0..3 {
        samples = 0u64;
        let start = Instant::now();
        let stats = wal::replay(dir.path(), &ReplayOptions::default(), &mut |r| {
            if let Record::Samples(s) = r {
                samples += s.len() as u64;
            }
            Ok(())
        })
        .expect("replay");
        best = best.min(start.elapsed());
        assert_eq!(stats.samples, n);
    }
    println!(
        "replay[{name:>14}]: {samples} samples in {best:?}: {:.1} M samples/s",
        samples as f64 / best.as_secs_f64() / 1e6
    );
}

fn main() {
    run(FsyncPolicy::Never, "Never", 3000);
    run(FsyncPolicy::default(), "Interval(1s)", 3000);
    // One fsync per log() call: dominated by the disk's flush latency.
    run(FsyncPolicy::Always, "Always", 200);
}
