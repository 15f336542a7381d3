//! Evaluation split across threads (`EngineOptions::parallelism`) must give
//! exactly what one thread gives: the same series in the same order, the
//! same value bits, the same annotations, statistics and errors.

use std::sync::Arc;

use stratus_model::{BucketSpan, FloatHistogram, Labels, Sample, reset_hint, stale_nan};
use stratus_promql::{Engine, EngineOptions, PromqlError, QueryResult, StatsMode, Value};
use stratus_tsdb::{Db, SeriesHistograms, SeriesSamples};

mod common;

const SCRAPE: i64 = 15_000;
/// Two hours of samples.
const SAMPLES: i64 = 480;

/// 300 counters (with resets), 300 gauges (with NaNs, stale markers and
/// gaps) and 40 native-histogram counters, 2 h at 15 s.
fn db() -> (Arc<Db>, tempfile::TempDir) {
    let (db, dir) = common::open_test_db();
    let mut labels = Vec::new();
    let mut samples = Vec::new();
    for s in 0..300i64 {
        let (inst, job) = (format!("i{s}"), format!("j{}", s % 7));
        labels.push(Labels::from_pairs([
            ("__name__", "m_total"),
            ("instance", inst.as_str()),
            ("job", job.as_str()),
        ]));
        let mut v = 0.0;
        samples.push(
            (0..SAMPLES)
                .map(|i| {
                    v += ((i * 7 + s * 13) % 11) as f64 * 0.37 + 0.1;
                    if (i + s) % 97 == 0 {
                        v = 1.5; // counter reset
                    }
                    Sample::new(i * SCRAPE, v)
                })
                .collect::<Vec<_>>(),
        );
        labels.push(Labels::from_pairs([
            ("__name__", "g"),
            ("instance", inst.as_str()),
            ("job", job.as_str()),
        ]));
        samples.push(
            (0..SAMPLES)
                .filter(|i| (i + s) % 53 >= 3) // gaps of 3 samples
                .map(|i| {
                    let v = match (i * 31 + s) % 89 {
                        0 => f64::NAN,
                        1 => stale_nan(),
                        k => ((k as f64) * 1.618).sin() * 100.0 + s as f64,
                    };
                    Sample::new(i * SCRAPE, v)
                })
                .collect::<Vec<_>>(),
        );
    }
    let batch: Vec<SeriesSamples<'_>> = labels
        .iter()
        .zip(&samples)
        .map(|(labels, samples)| SeriesSamples { labels, samples })
        .collect();
    let r = db.append(&batch).unwrap();
    assert_eq!(r.rejected, 0);
    let hlabels: Vec<Labels> = (0..40)
        .map(|s| {
            let inst = format!("h{s}");
            Labels::from_pairs([
                ("__name__", "h"),
                ("instance", inst.as_str()),
                ("job", "j1"),
            ])
        })
        .collect();
    let hists: Vec<Vec<(i64, FloatHistogram)>> = (0..40)
        .map(|s| {
            (0..SAMPLES)
                .map(|i| {
                    let n = (i + 1) as f64 * (1.0 + s as f64 / 10.0);
                    let h = FloatHistogram {
                        reset_hint: reset_hint::UNKNOWN,
                        schema: 0,
                        zero_threshold: 1e-128,
                        zero_count: n,
                        count: 4.0 * n,
                        sum: 7.5 * n,
                        positive_spans: vec![BucketSpan {
                            offset: 0,
                            length: 3,
                        }],
                        positive_buckets: vec![n, n, n],
                        negative_spans: Vec::new(),
                        negative_buckets: Vec::new(),
                        custom_values: Vec::new(),
                    };
                    (i * SCRAPE, h)
                })
                .collect()
        })
        .collect();
    let hbatch: Vec<SeriesHistograms<'_>> = hlabels
        .iter()
        .zip(&hists)
        .map(|(labels, float_histograms)| SeriesHistograms {
            labels,
            histograms: &[],
            float_histograms,
        })
        .collect();
    db.append_with_histograms(&[], &hbatch).unwrap();
    (db, dir)
}

fn engine(parallelism: usize, max_samples: usize) -> Engine {
    Engine::new(EngineOptions {
        parallelism,
        max_samples,
        ..EngineOptions::default()
    })
}

/// A result as text with every float as its bit pattern.
fn exact(r: &QueryResult) -> String {
    let mut out = String::new();
    let f = |v: f64| format!("{:016x}", v.to_bits());
    match &r.value {
        Value::Matrix(m) => {
            for s in m {
                out += &format!("{:?}:", s.labels);
                for (t, v) in &s.points {
                    out += &format!(" {t}={}", f(*v));
                }
                for (t, h) in &s.histograms {
                    out += &format!(" {t}={h:?}");
                }
                out += "\n";
            }
        }
        Value::Vector(v) => {
            for s in v {
                out += &format!("{:?} {} {} {:?}\n", s.labels, s.t, f(s.v), s.h);
            }
        }
        other => out += &format!("{other:?}"),
    }
    out += &format!("warnings {:?} infos {:?}\n", r.warnings, r.infos);
    if let Some(s) = &r.stats {
        out += &format!(
            "stats total {} peak {} per_step {:?} touched {}\n",
            s.total_samples, s.peak_samples, s.per_step, s.series_touched
        );
    }
    out
}

const QUERIES: &[&str] = &[
    "rate(m_total[5m])",
    "irate(m_total[5m])",
    "increase(m_total[10m])",
    "resets(m_total[10m])",
    "changes(g[10m])",
    "delta(g[5m])",
    "deriv(g[5m])",
    "predict_linear(g[10m], 600)",
    "sum by (job) (rate(m_total[5m]))",
    "topk(5, rate(m_total[5m]))",
    "count by (job) (g)",
    "g",
    "timestamp(g)",
    "g - on (instance, job) g",
    "avg_over_time(g[10m])",
    "sum_over_time(g[10m])",
    "max_over_time(g[10m])",
    "min_over_time(g[10m])",
    "stddev_over_time(g[10m])",
    "quantile_over_time(0.9, g[10m])",
    "mad_over_time(g[10m])",
    "last_over_time(g[10m])",
    "count_over_time(g[1m])",
    "rate({__name__=~\"m_total|h\"}[5m])",
    "histogram_count(rate(h[5m]))",
    "sum by (job) (rate({__name__=~\"m_total|h\"}[5m]))",
    "max_over_time({__name__=~\"g|h\"}[5m])",
    "{__name__=~\"g|h\"}",
    "max_over_time(rate(m_total[290s])[30m:1m])",
    "max_over_time(rate(m_total[290s])[30m:1m] offset 5m)",
    "sum_over_time(g[10m:1m])",
    "count_over_time((g > 50)[20m:2m])",
    "max_over_time({__name__=~\"g|h\"}[10m:1m])",
    "rate(h[10m:1m])",
    "topk(3, max_over_time(g[10m:30s]))",
    "topk by (job) (2, g)",
    "bottomk(7, g)",
    "bottomk(400, g)",
    "rate(m_total[5m] offset 10m)",
    "rate(m_total[5m] @ 3600)",
];

#[test]
fn split_evaluation_equals_one_thread() {
    let (db, _dir) = db();
    let end = (SAMPLES - 1) * SCRAPE;
    let (start, end) = (end - 3_600_000 - 8_000, end - 8_000);
    let one = engine(1, 50_000_000);
    for threads in [3] {
        let par = engine(threads, 50_000_000);
        for q in QUERIES {
            let expr = stratus_promql::parse(q).unwrap();
            for mode in [StatsMode::Off, StatsMode::PerStep] {
                let a = one
                    .range_expr_stats(db.as_ref(), &expr, start, end, 30_000, mode)
                    .unwrap();
                let b = par
                    .range_expr_stats(db.as_ref(), &expr, start, end, 30_000, mode)
                    .unwrap();
                assert_eq!(exact(&a), exact(&b), "{q} on {threads} threads, {mode:?}");
            }
            // Instant queries (one step: never split, same path).
            let a = one.instant_expr(db.as_ref(), &expr, end).unwrap();
            let b = par.instant_expr(db.as_ref(), &expr, end).unwrap();
            assert_eq!(exact(&a), exact(&b), "instant {q} on {threads} threads");
        }
    }
}

#[test]
fn split_evaluation_keeps_the_sample_limit() {
    let (db, _dir) = db();
    let end = (SAMPLES - 1) * SCRAPE - 8_000;
    for (q, limit) in [
        // Instant selector: 300 series x ~121 points in total.
        ("g", 20_000),
        ("g", 40_000),
        // Range selector: the limit applies to each window.
        ("max_over_time(g[10m])", 30),
        ("max_over_time(g[10m])", 50),
        // Subquery windows: the limit applies to each window too.
        ("max_over_time(g[10m:1m])", 5),
        ("max_over_time(g[10m:1m])", 20_000),
    ] {
        let expr = stratus_promql::parse(q).unwrap();
        let run = |threads| {
            engine(threads, limit).range_expr(db.as_ref(), &expr, end - 3_600_000, end, 30_000)
        };
        match (run(1), run(4)) {
            (Ok(a), Ok(b)) => assert_eq!(exact(&a), exact(&b), "{q} limit {limit}"),
            (Err(PromqlError::TooManySamples), Err(PromqlError::TooManySamples)) => {}
            (a, b) => panic!("{q} limit {limit}: {:?} vs {:?}", a.err(), b.err()),
        }
    }
    // And the limits above do bite on both sides.
    let expr = stratus_promql::parse("g").unwrap();
    let e = engine(4, 20_000)
        .range_expr(db.as_ref(), &expr, end - 3_600_000, end, 30_000)
        .unwrap_err();
    assert!(matches!(e, PromqlError::TooManySamples), "{e}");
}
