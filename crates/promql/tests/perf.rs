//! Rough throughput figures (ignored by default; run with
//! `cargo test --release -p stratus-promql --test perf -- --ignored --nocapture`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_model::{Labels, Sample};
use stratus_objstore::Bucket;
use stratus_promql::{Engine, EngineOptions, Value};
use stratus_tsdb::{Db, DbConfig, SeriesSamples};

#[test]
#[ignore]
fn range_query_throughput() {
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
    let (n_series, n_samples, scrape) = (200usize, 2880i64, 15_000i64);
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
    let e = Engine::new(EngineOptions::default());
    let end = (n_samples - 1) * scrape;
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
