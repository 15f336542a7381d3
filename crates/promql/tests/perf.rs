//! Rough throughput figures (ignored by default; run with
//! `cargo test --release -p stratus-promql --test perf -- --ignored --nocapture`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_model::{Labels, Sample};
use stratus_promql::{Engine, EngineOptions, StatsMode, Value};
use stratus_tsdb::{Db, SeriesSamples};

mod common;

/// `req_total` of `n_series` series over 10 jobs, `n_samples` samples
/// every `scrape` ms from 0 (each series rising at its own rate), in a
/// fresh database. Returns the database and the last sample time.
fn req_total_db(n_series: usize, n_samples: i64, scrape: i64) -> (Arc<Db>, i64, tempfile::TempDir) {
    let (db, dir) = common::open_test_db();
    let labels: Vec<Labels> = (0..n_series)
        .map(|i| {
            let inst = format!("i{i}");
            let job = format!("j{}", i % 10);
            Labels::from_pairs([
                ("__name__", "req_total"),
                ("instance", inst.as_str()),
                ("job", job.as_str()),
            ])
        })
        .collect();
    // Append in time order, one batch per timestamp chunk.
    for chunk in (0..n_samples).collect::<Vec<_>>().chunks(240) {
        let samples: Vec<Vec<Sample>> = (0..n_series)
            .map(|s| {
                chunk
                    .iter()
                    .map(|&i| Sample::new(i * scrape, (i * (s as i64 + 1)) as f64))
                    .collect()
            })
            .collect();
        let batch: Vec<SeriesSamples<'_>> = labels
            .iter()
            .zip(&samples)
            .map(|(labels, samples)| SeriesSamples { labels, samples })
            .collect();
        db.append(&batch).unwrap();
    }
    (db, (n_samples - 1) * scrape, dir)
}

#[test]
#[ignore]
fn range_query_throughput() {
    let (n_series, n_samples) = (200usize, 2880i64);
    let (db, end, _dir) = req_total_db(n_series, n_samples, 15_000);
    let e = Engine::new(EngineOptions::default());
    for q in [
        "rate(req_total[5m])",
        "sum by (job) (rate(req_total[5m]))",
        "req_total",
        "max_over_time(req_total[1h])",
        "histogram_quantile(0.9, sum by (le) (rate(req_total[5m])))",
    ] {
        let t = Instant::now();
        let r = e.range(db.as_ref(), q, 0, end, 60_000).unwrap();
        let el = t.elapsed();
        let pts: usize = match &r.value {
            Value::Matrix(m) => m.iter().map(|s| s.points.len()).sum(),
            _ => 0,
        };
        println!(
            "{q}: {:?} for {} raw samples, {pts} output points",
            el,
            n_series as i64 * n_samples
        );
    }
}

/// Rough cost of counting (ignored by default; run with
/// `cargo test --release -p stratus-promql --test perf -- --ignored --nocapture`):
/// best of 5 range queries over 200 series × 2880 samples, stats off and
/// with per-step stats.
#[test]
#[ignore]
fn stats_overhead() {
    let (db, end, _dir) = req_total_db(200, 2880, 15_000);
    let e = Engine::new(EngineOptions::default());
    for q in [
        "rate(req_total[5m])",
        "sum by (job) (rate(req_total[5m]))",
        "req_total",
        "max_over_time(req_total[1h])",
        "max_over_time(req_total[10m:1m])",
    ] {
        let expr = stratus_promql::parse(q).unwrap();
        let best = |mode: StatsMode| {
            (0..5)
                .map(|_| {
                    let t = std::time::Instant::now();
                    let r = e
                        .range_expr_stats(db.as_ref(), &expr, 0, end, 60_000, mode)
                        .unwrap();
                    std::hint::black_box(r);
                    t.elapsed()
                })
                .min()
                .unwrap()
        };
        let (off, on) = (best(StatsMode::Off), best(StatsMode::PerStep));
        println!("{q}: stats off {off:?}, stats=all {on:?}");
    }
}

/// The 1,000-series dashboard queries of `bench/query-compare.sh quick`
/// (1 h range, 30 s step, off the 15 s sample grid) over `req_total`:
/// median of `PERF_REPS` (default 9) runs with the default parallelism and
/// with one thread, checking both give the same answer. Also the loop to
/// attach `perf record` to.
#[test]
#[ignore]
fn dashboard_queries() {
    let (db, end, _dir) = req_total_db(1000, 480, 15_000);
    let reps: usize = std::env::var("PERF_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let q_end = end - 8_000;
    let q_start = q_end - 3_600_000;
    let par = Engine::new(EngineOptions::default());
    let one = Engine::new(EngineOptions {
        parallelism: 1,
        ..EngineOptions::default()
    });
    for q in [
        "rate(req_total[5m])",
        "irate(req_total[5m])",
        "increase(req_total[10m])",
        "sum by (job) (rate(req_total[5m]))",
        "topk(5, rate(req_total[5m]))",
        "count by (job) (req_total)",
        "max_over_time(req_total[10m])",
        "avg_over_time(req_total[10m])",
    ] {
        let expr = stratus_promql::parse(q).unwrap();
        let median = |e: &Engine| {
            let mut times: Vec<Duration> = (0..reps)
                .map(|_| {
                    let t = Instant::now();
                    let r = e
                        .range_expr(db.as_ref(), &expr, q_start, q_end, 30_000)
                        .unwrap();
                    std::hint::black_box(r);
                    t.elapsed()
                })
                .collect();
            times.sort();
            times[times.len() / 2]
        };
        let a = par
            .range_expr(db.as_ref(), &expr, q_start, q_end, 30_000)
            .unwrap();
        let b = one
            .range_expr(db.as_ref(), &expr, q_start, q_end, 30_000)
            .unwrap();
        assert_eq!(format!("{:?}", a.value), format!("{:?}", b.value), "{q}");
        let (tp, t1) = (median(&par), median(&one));
        println!(
            "{q}: parallelism {} {tp:?}, one thread {t1:?}",
            par.options().parallelism
        );
    }
}
