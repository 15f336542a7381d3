//! Query statistics (`stats` parameter) counted by the engine on small
//! hand-built data: instant and range selectors, range vectors, subqueries
//! (under a function and bare), `@`, and the peak of binary operators.
//! The expected figures are what Prometheus 2.42 reports for the same data
//! (checked by hand with `stats=all`) where 2.42 and 3.x agree.

use std::sync::Arc;

use stratus_model::{Labels, Sample};
use stratus_promql::{Engine, EngineOptions, QueryStats, StatsMode};
use stratus_tsdb::{Db, SeriesSamples};

mod common;

/// Data start (ms).
const BASE: i64 = 1_700_000_000_000;

/// `a{i="1"}` = k and `a{i="2"}` = 2k every 15 s, `b{i="1"}` every 30 s,
/// for 10 minutes from `BASE`.
fn fixture() -> (Arc<Db>, tempfile::TempDir) {
    let (db, dir) = common::open_test_db();
    let pts = |every: i64, mul: f64| -> Vec<Sample> {
        (0..=40)
            .step_by(every as usize)
            .map(|k| Sample::new(BASE + k * 15_000, k as f64 * mul))
            .collect()
    };
    let owned = [
        (
            Labels::from_pairs([("__name__", "a"), ("i", "1")]),
            pts(1, 1.0),
        ),
        (
            Labels::from_pairs([("__name__", "a"), ("i", "2")]),
            pts(1, 2.0),
        ),
        (
            Labels::from_pairs([("__name__", "b"), ("i", "1")]),
            pts(2, 1.0),
        ),
    ];
    let batch: Vec<SeriesSamples<'_>> = owned
        .iter()
        .map(|(labels, samples)| SeriesSamples { labels, samples })
        .collect();
    assert_eq!(db.append(&batch).unwrap().rejected, 0);
    (db, dir)
}

/// Off the 15 s sample grid, so left-closed and left-open windows agree.
const T: i64 = BASE + 300_500;

fn instant(db: &Db, q: &str, t: i64) -> QueryStats {
    let e = stratus_promql::parse(q).unwrap();
    Engine::new(EngineOptions::default())
        .instant_expr_stats(db, &e, t, StatsMode::PerStep)
        .unwrap()
        .stats
        .unwrap()
}

fn range(db: &Db, q: &str) -> QueryStats {
    let e = stratus_promql::parse(q).unwrap();
    Engine::new(EngineOptions::default())
        .range_expr_stats(
            db,
            &e,
            BASE + 200_500,
            BASE + 400_500,
            50_000,
            StatsMode::PerStep,
        )
        .unwrap()
        .stats
        .unwrap()
}

/// Checks total, peak and that every step has `per_step` samples.
#[track_caller]
fn check(s: &QueryStats, total: i64, peak: i64, per_step: i64) {
    assert_eq!(s.total_samples, total, "total {s:?}");
    assert_eq!(s.peak_samples, peak, "peak {s:?}");
    assert!(s.per_step.iter().all(|&(_, n)| n == per_step), "{s:?}");
    assert_eq!(s.per_step.iter().map(|p| p.1).sum::<i64>(), total);
}

#[test]
fn instant_query_counts() {
    let (db, _d) = fixture();
    let db = db.as_ref();
    let cases: &[(&str, i64, i64)] = &[
        ("a", 2, 2),
        ("b", 1, 1),
        ("a + b", 3, 7),
        ("a * 2", 2, 8),
        ("abs(a)", 2, 6),
        ("1", 0, 1),
        ("vector(1)", 0, 3),
        ("scalar(b)", 1, 3),
        ("a offset 1m", 2, 2),
        // Range vectors: the whole window counts.
        ("a[1m]", 8, 8),
        ("rate(a[1m])", 8, 6),
        ("sum_over_time(a[2m])", 16, 10),
        // Subqueries: windows over the result under a function, the inner
        // samples for a bare one.
        ("max_over_time(a[1m:20s])", 6, 11),
        ("rate(a[1m:15s])", 8, 14),
        ("a[1m:20s]", 6, 6),
        // `@`: the pinned samples.
        ("a @ 1700000100.5", 2, 2),
        ("rate(a[1m] @ 1700000100.5)", 8, 6),
    ];
    for &(q, total, peak) in cases {
        let s = instant(db, q, T);
        assert_eq!(s.per_step, vec![(T, total)], "{q}");
        assert_eq!((s.total_samples, s.peak_samples), (total, peak), "{q}");
    }
    // Aggregations hold only input and output in 3.x (2.42: 5).
    check(&instant(db, "sum(a)", T), 2, 2, 2);
    assert!(instant(db, "a", T).series_touched == 2);
}

#[test]
fn range_query_counts() {
    let (db, _d) = fixture();
    let db = db.as_ref();
    let s = range(db, "a");
    assert_eq!(s.per_step.len(), 5);
    assert_eq!(s.per_step[0], (BASE + 200_500, 2));
    check(&s, 10, 10, 2);
    check(&range(db, "a + b"), 15, 23, 3);
    check(&range(db, "a * 2"), 10, 28, 2);
    check(&range(db, "count(a > 5)"), 10, 28, 2);
    check(&range(db, "abs(a)"), 10, 22, 2);
    check(&range(db, "scalar(b)"), 5, 11, 1);
    check(&range(db, "1"), 0, 5, 0);
    check(&range(db, "rate(a[1m])"), 40, 14, 8);
    check(&range(db, "sum_over_time(a[2m])"), 80, 18, 16);
    check(&range(db, "max_over_time(a[1m:20s])"), 30, 39, 6);
    check(&range(db, "rate(a[1m:15s])"), 40, 50, 8);
    check(&range(db, "a @ 1700000100.5"), 10, 10, 2);
    // `@` under a range function: Prometheus evaluates the pinned call once
    // and copies it (peak 10); Stratus evaluates it per step.
    let s = range(db, "rate(a[1m] @ 1700000100.5)");
    check(&s, 40, s.peak_samples, 8);
}

#[test]
fn stats_off_by_default() {
    let (db, _d) = fixture();
    let r = Engine::new(EngineOptions::default())
        .instant(db.as_ref(), "rate(a[1m])", T)
        .unwrap();
    assert!(r.stats.is_none());
    let e = stratus_promql::parse("a").unwrap();
    let s = Engine::new(EngineOptions::default())
        .instant_expr_stats(db.as_ref(), &e, T, StatsMode::Summary)
        .unwrap()
        .stats
        .unwrap();
    assert!(s.per_step.is_empty());
    assert_eq!(s.total_samples, 2);
}

/// Native histograms count by size, Prometheus 3.x's `HPoint.size()`:
/// (168 + 8 × (spans + buckets) + 8) / 16 = 12 for one span of 2 buckets
/// (Prometheus 2.42 counted each as 1).
#[test]
fn histograms_count_by_size() {
    use stratus_model::{BucketSpan, FloatHistogram};
    use stratus_tsdb::SeriesHistograms;
    let (db, _d) = fixture();
    let labels = Labels::from_pairs([("__name__", "h")]);
    let hs: Vec<(i64, FloatHistogram)> = (0..=40i64)
        .map(|k| {
            let c = k as f64;
            (
                BASE + k * 15_000,
                FloatHistogram {
                    count: 2.0 * c,
                    sum: c,
                    positive_spans: vec![BucketSpan {
                        offset: 0,
                        length: 2,
                    }],
                    positive_buckets: vec![c, c],
                    ..Default::default()
                },
            )
        })
        .collect();
    let r = db
        .append_with_histograms(
            &[],
            &[SeriesHistograms {
                labels: &labels,
                histograms: &[],
                float_histograms: &hs,
            }],
        )
        .unwrap();
    assert_eq!(r.rejected, 0);
    let db = db.as_ref();
    let s = instant(db, "h", T);
    assert_eq!((s.total_samples, s.peak_samples), (12, 12), "{s:?}");
    let s = instant(db, "h[1m]", T);
    assert_eq!(s.total_samples, 48, "{s:?}");
    let s = instant(db, "rate(h[1m])", T);
    assert_eq!(s.total_samples, 48, "{s:?}");
    // A float series beside it still counts 1 per sample.
    let s = instant(db, "count(h) + count(a)", T);
    assert_eq!(s.total_samples, 14, "{s:?}");
}
