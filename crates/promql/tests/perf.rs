//! Rough throughput figures (ignored by default; run with
//! `cargo test --release -p stratus-promql --test perf -- --ignored --nocapture`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_model::{Labels, Sample};
use stratus_objstore::Bucket;
use stratus_promql::{Engine, EngineOptions, StatsMode, Value};
use stratus_tsdb::{Db, DbConfig, SeriesSamples};

/// `req_total` of `n_series` series over 10 jobs, `n_samples` samples
/// every `scrape` ms from 0 (each series rising at its own rate), in a
/// fresh database. Returns the database and the last sample time.
fn req_total_db(n_series: usize, n_samples: i64, scrape: i64) -> (Arc<Db>, i64, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DbConfig::default();
    cfg.head.ooo_window = i64::MAX / 4;
    cfg.max_future = Duration::from_secs(1 << 40);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let db = Arc::new(
        rt.block_on(Db::open(dir.path(), Bucket::memory(), cfg))
            .unwrap(),
    );
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
