//! Tricky PromQL semantics checked against hand-computed values: rate
//! extrapolation, staleness, lookback, left-open windows, offsets and `@`,
//! subquery alignment, vector matching errors, plus a robustness loop that
//! evaluates mutated queries and must never panic.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use stratus_model::{Labels, Sample, stale_nan};
use stratus_promql::{Engine, EngineOptions, PromqlError, Value};
use stratus_tsdb::{Db, SeriesSamples};

mod common;

struct Fixture {
    db: Arc<Db>,
    _dir: tempfile::TempDir,
}

/// Label pairs and samples of one test series.
type SeriesDef<'a> = (&'a [(&'a str, &'a str)], &'a [(i64, f64)]);

fn fixture(series: &[SeriesDef<'_>]) -> Fixture {
    let (db, dir) = common::open_test_db();
    let owned: Vec<(Labels, Vec<Sample>)> = series
        .iter()
        .map(|(l, s)| {
            (
                Labels::from_pairs(l.iter().copied()),
                s.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
            )
        })
        .collect();
    let batch: Vec<SeriesSamples<'_>> = owned
        .iter()
        .map(|(labels, samples)| SeriesSamples { labels, samples })
        .collect();
    let r = db.append(&batch).unwrap();
    assert_eq!(r.rejected, 0);
    Fixture { db, _dir: dir }
}

fn engine() -> Engine {
    Engine::new(EngineOptions::default())
}

/// The single value of an instant query (vector with one sample or scalar).
fn one(f: &Fixture, q: &str, t: i64) -> Option<f64> {
    match engine().instant(f.db.as_ref(), q, t).unwrap().value {
        Value::Scalar { v, .. } => Some(v),
        Value::Vector(v) => {
            assert!(v.len() <= 1, "{q}: {v:?}");
            v.first().map(|s| s.v)
        }
        other => panic!("{q}: unexpected {other:?}"),
    }
}

const M: i64 = 60_000;

fn counter() -> Fixture {
    // 0, 60, 120, ... every minute for 10 minutes.
    let s: Vec<(i64, f64)> = (0..=10).map(|i| (i * M, i as f64 * 60.0)).collect();
    fixture(&[(&[("__name__", "c_total")], &s)])
}

#[test]
fn rate_extrapolates_to_window_edges() {
    let f = counter();
    // Window (0, 5m]: samples 1m..5m, extrapolated back to 0 => 1/s.
    assert_eq!(one(&f, "rate(c_total[5m])", 5 * M), Some(1.0));
    assert_eq!(one(&f, "increase(c_total[5m])", 5 * M), Some(300.0));
    // Window (30s, 5m30s]: first sample 1m (30s from the edge), last 5m
    // (30s from the edge): both extrapolated fully.
    let v = one(&f, "increase(c_total[5m])", 5 * M + 30_000).unwrap();
    assert!((v - 300.0).abs() < 1e-9, "{v}");
}

#[test]
fn increase_handles_counter_reset_and_zero_point() {
    let f = fixture(&[(
        &[("__name__", "r_total")],
        &[(0, 0.0), (M, 10.0), (2 * M, 20.0), (3 * M, 5.0)],
    )]);
    // Window (0, 3m]: 10, 20, 5 -> 15 after the reset; sampled 120s,
    // extrapolated by 60s at the start -> 15 * 180 / 120.
    assert_eq!(one(&f, "increase(r_total[3m])", 3 * M), Some(22.5));
    // delta ignores resets: 5 - 10 = -5, same extrapolation.
    assert_eq!(one(&f, "delta(r_total[3m])", 3 * M), Some(-7.5));
    // irate: last two samples, a drop counts as the new value.
    assert_eq!(one(&f, "irate(r_total[3m])", 3 * M), Some(5.0 / 60.0));
    assert_eq!(one(&f, "idelta(r_total[3m])", 3 * M), Some(-15.0));
}

#[test]
fn rate_never_extrapolates_below_zero() {
    // Counter starting at 5 with slope 10/min: zero point 30s before the
    // first sample, closer than the window start.
    let f = fixture(&[(
        &[("__name__", "z_total")],
        &[(4 * M, 5.0), (5 * M, 15.0), (6 * M, 25.0)],
    )]);
    // Window (1m, 6m]: first at 4m (180s from start > 1.1*60s): only half
    // an interval (30s), and the zero point is 30s: 20 * 150/120 = 25.
    assert_eq!(one(&f, "increase(z_total[5m])", 6 * M), Some(25.0));
}

#[test]
fn rate_needs_two_samples() {
    let f = counter();
    assert_eq!(one(&f, "rate(c_total[1m])", 5 * M), None);
    assert!(one(&f, "rate(c_total[61s])", 5 * M).is_some());
}

#[test]
fn range_windows_are_left_open() {
    let f = fixture(&[(&[("__name__", "g")], &[(0, 1.0), (30_000, 2.0), (M, 3.0)])]);
    assert_eq!(one(&f, "count_over_time(g[1m])", M), Some(2.0));
    assert_eq!(one(&f, "count_over_time(g[1m])", M - 1), Some(2.0));
    assert_eq!(one(&f, "count_over_time(g[61s])", M), Some(3.0));
    assert_eq!(one(&f, "sum_over_time(g[1m])", M), Some(5.0));
}

#[test]
fn instant_selector_lookback() {
    let f = fixture(&[(&[("__name__", "g")], &[(0, 7.0)])]);
    assert_eq!(one(&f, "g", 0), Some(7.0));
    assert_eq!(one(&f, "g", 5 * M - 1), Some(7.0));
    // The lookback window (t-5m, t] excludes t-5m itself.
    assert_eq!(one(&f, "g", 5 * M), None);
    assert_eq!(one(&f, "g", -1), None);
    let e = Engine::new(EngineOptions {
        lookback_delta: Duration::from_secs(60),
        ..EngineOptions::default()
    });
    let r = e.instant(f.db.as_ref(), "g", 2 * M).unwrap();
    assert_eq!(r.value, Value::Vector(vec![]));
}

#[test]
fn stale_markers_end_series() {
    let f = fixture(&[(
        &[("__name__", "s")],
        &[(0, 1.0), (M, stale_nan()), (2 * M, 3.0)],
    )]);
    assert_eq!(one(&f, "s", 30_000), Some(1.0));
    assert_eq!(one(&f, "s", M), None);
    assert_eq!(one(&f, "s", 90_000), None);
    assert_eq!(one(&f, "s", 2 * M), Some(3.0));
    // Stale markers are not samples of range vectors.
    assert_eq!(one(&f, "count_over_time(s[3m])", 2 * M), Some(2.0));
}

#[test]
fn offset_and_at_modifiers() {
    let f = counter();
    assert_eq!(one(&f, "c_total offset 2m", 5 * M), Some(180.0));
    assert_eq!(one(&f, "c_total offset -2m", 5 * M), Some(420.0));
    assert_eq!(one(&f, "c_total @ 120", 9 * M), Some(120.0));
    assert_eq!(one(&f, "c_total @ 180 offset 1m", 0), Some(120.0));
    let r = engine()
        .range(f.db.as_ref(), "c_total @ end()", 0, 4 * M, M)
        .unwrap();
    let Value::Matrix(m) = r.value else { panic!() };
    assert_eq!(m.len(), 1);
    assert!(m[0].points.iter().all(|p| p.1 == 240.0));
    assert_eq!(m[0].points.len(), 5);
}

#[test]
fn subqueries_use_absolute_step_alignment() {
    let f = counter();
    // Inner steps at multiples of 1m in (2m, 5m]: 3m, 4m, 5m.
    assert_eq!(
        one(&f, "count_over_time(c_total[3m:1m])", 5 * M + 30_000),
        Some(3.0)
    );
    assert_eq!(
        one(&f, "max_over_time(c_total[3m:1m])", 5 * M + 30_000),
        Some(300.0)
    );
    assert_eq!(
        one(&f, "min_over_time(c_total[3m:1m])", 5 * M + 30_000),
        Some(180.0)
    );
    // rate over a subquery of a rate.
    let v = one(&f, "max_over_time(rate(c_total[2m])[4m:30s])", 8 * M).unwrap();
    assert!((v - 1.0).abs() < 1e-9);
}

#[test]
fn range_query_shapes() {
    let f = counter();
    let r = engine()
        .range(f.db.as_ref(), "c_total * 2", 0, 2 * M, M)
        .unwrap();
    let Value::Matrix(m) = r.value else { panic!() };
    assert_eq!(m.len(), 1);
    assert!(m[0].labels.is_empty());
    assert_eq!(m[0].points, vec![(0, 0.0), (M, 120.0), (2 * M, 240.0)]);
    let r = engine().range(f.db.as_ref(), "time()", 0, M, M).unwrap();
    let Value::Matrix(m) = r.value else { panic!() };
    assert_eq!(m[0].points, vec![(0, 0.0), (M, 60.0)]);
    let e = engine().range(f.db.as_ref(), "c_total[1m]", 0, M, M);
    assert!(matches!(e, Err(PromqlError::BadRangeQueryType { .. })));
}

fn matching_fixture() -> Fixture {
    fixture(&[
        (&[("__name__", "a"), ("job", "x"), ("i", "1")], &[(0, 1.0)]),
        (&[("__name__", "a"), ("job", "x"), ("i", "2")], &[(0, 2.0)]),
        (&[("__name__", "b"), ("job", "x")], &[(0, 10.0)]),
        (&[("__name__", "b"), ("job", "x"), ("k", "1")], &[(0, 20.0)]),
    ])
}

#[test]
fn vector_matching_errors() {
    let f = matching_fixture();
    let q = f.db.as_ref();
    let e = engine().instant(q, "a + on(job) b", 0).unwrap_err();
    assert!(
        e.to_string().contains(
            "many-to-many matching not allowed: matching labels must be unique on one side"
        ),
        "{e}"
    );
    let e = engine()
        .instant(q, "a + on(job) group_left b{k=\"\"}", 0)
        .unwrap();
    let Value::Vector(v) = e.value else { panic!() };
    assert_eq!(v.len(), 2);
    assert!(v.iter().all(|s| s.labels.get("__name__").is_none()));
    let e = engine().instant(q, "b{k=\"\"} + on(job) a", 0).unwrap_err();
    assert!(e.to_string().contains("many-to-many"), "{e}");
    let e = engine()
        .instant(q, "b{k=\"\"} + ignoring(i) a", 0)
        .unwrap_err();
    assert!(matches!(e, PromqlError::ManyToMany { .. }), "{e}");
    // Dropping the name makes two series identical.
    let f2 = fixture(&[
        (&[("__name__", "m1"), ("x", "1")], &[(0, 1.0)]),
        (&[("__name__", "m2"), ("x", "1")], &[(0, 1.0)]),
    ]);
    let e = engine()
        .instant(f2.db.as_ref(), "abs({__name__=~\"m.\"})", 0)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "vector cannot contain metrics with the same labelset"
    );
    // Comparisons keep the name; `bool` drops it.
    let r = engine()
        .instant(f2.db.as_ref(), "{__name__=~\"m.\"} > 0", 0)
        .unwrap();
    let Value::Vector(v) = r.value else { panic!() };
    assert_eq!(v.len(), 2);
}

#[test]
fn set_operators() {
    let f = matching_fixture();
    let q = f.db.as_ref();
    let n = |e: &str| match engine().instant(q, e, 0).unwrap().value {
        Value::Vector(v) => v.len(),
        _ => panic!(),
    };
    assert_eq!(n("a and on(job) b"), 2);
    assert_eq!(n("a unless on(job) b"), 0);
    assert_eq!(n("a or b"), 4);
    assert_eq!(n("a and b"), 0);
}

#[test]
fn aggregations() {
    let f = matching_fixture();
    let q = f.db.as_ref();
    let v = |e: &str| match engine().instant(q, e, 0).unwrap().value {
        Value::Vector(v) => v.into_iter().map(|s| s.v).collect::<Vec<_>>(),
        _ => panic!(),
    };
    assert_eq!(v("sum(a)"), vec![3.0]);
    assert_eq!(v("avg(a)"), vec![1.5]);
    assert_eq!(v("count by (job) ({job=\"x\"})"), vec![4.0]);
    assert_eq!(v("topk(1, a)"), vec![2.0]);
    assert_eq!(v("bottomk(1, a)"), vec![1.0]);
    assert_eq!(v("quantile(0.5, a)"), vec![1.5]);
    assert_eq!(v("stdvar(a)"), vec![0.25]);
    let r = engine().instant(q, "count_values(\"v\", a)", 0).unwrap();
    let Value::Vector(s) = r.value else { panic!() };
    let mut vals: Vec<String> = s
        .iter()
        .map(|s| s.labels.get("v").unwrap().to_string())
        .collect();
    vals.sort();
    assert_eq!(vals, ["1", "2"]);
}

#[test]
fn too_many_samples() {
    let f = counter();
    let e = Engine::new(EngineOptions {
        max_samples: 3,
        ..EngineOptions::default()
    });
    let err = e.instant(f.db.as_ref(), "sum_over_time(c_total[10m])", 10 * M);
    assert!(matches!(err, Err(PromqlError::TooManySamples)));
    let err = e.range(f.db.as_ref(), "1", 0, 10 * M, 1000);
    assert!(matches!(err, Err(PromqlError::TooManySamples)));
}

const SEEDS: &[&str] = &[
    "rate(c_total[5m])",
    "sum by (job) (rate(c_total[5m] offset 1m))",
    "max_over_time(c_total[10m:1m] @ 300)",
    "histogram_quantile(0.9, sum by (le) (rate(c_total[5m])))",
    "label_replace(c_total, \"x\", \"$1\", \"__name__\", \"(.*)\")",
    "c_total / on() group_left scalar(c_total)",
    "topk(2, c_total) or bottomk(1, -c_total)",
    "quantile_over_time(0.5, c_total[3m]) > bool 100",
    "absent(nonexistent{a=\"b\"})",
    "count_values(\"v\", c_total) unless c_total",
    "predict_linear(c_total[5m], 60) + deriv(c_total[5m])",
    "clamp(c_total, 10, 5) + round(c_total, 7)",
    "sort_by_label(c_total, \"a\")",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Mutated queries either fail cleanly or evaluate; nothing panics.
    #[test]
    fn evaluation_never_panics(
        seed in 0..SEEDS.len(),
        cut in 0usize..80,
        insert in "[-+*/^%(){}\\[\\]:@a-z0-9 ,.\"=~!]{0,6}",
        t in -1_000_000i64..2_000_000,
        step in 1i64..200_000,
    ) {
        let f = FIX.with(|f| f.db.clone());
        let s = SEEDS[seed];
        let mut cut = cut.min(s.len());
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        let q = format!("{}{}{}", &s[..cut], insert, &s[cut..]);
        let e = engine();
        let _ = e.instant(f.as_ref(), &q, t);
        let _ = e.range(f.as_ref(), &q, t, t + 10 * step, step);
    }
}

thread_local! {
    static FIX: Fixture = counter();
}

#[test]
fn experimental_features_are_gated() {
    let f = fixture(&[
        (
            &[("__name__", "c_total"), ("instance", "a"), ("job", "j")],
            &[(0, 1.0), (M, 3.0), (2 * M, 4.0)],
        ),
        (
            &[
                ("__name__", "target_info"),
                ("instance", "a"),
                ("job", "j"),
                ("v", "1"),
            ],
            &[(0, 1.0), (M, 1.0), (2 * M, 1.0)],
        ),
    ]);
    for q in [
        "increase(c_total[1m] anchored)",
        "c_total smoothed",
        "info(c_total)",
    ] {
        assert!(
            matches!(
                engine().instant(f.db.as_ref(), q, 90_000),
                Err(PromqlError::Parse { .. })
            ),
            "{q} must need the experimental option"
        );
    }
    let e = Engine::new(EngineOptions {
        enable_experimental: true,
        use_start_timestamps: false,
        ..EngineOptions::default()
    });
    let v = |q: &str| match e.instant(f.db.as_ref(), q, 90_000).unwrap().value {
        Value::Vector(v) => v,
        other => panic!("{q}: {other:?}"),
    };
    // (30s, 90s]: anchor 1 at 0s, last 3 at 60s.
    assert_eq!(v("increase(c_total[1m] anchored)")[0].v, 2.0);
    // Boundaries interpolated at 30s (2) and 90s (3.5).
    assert_eq!(v("increase(c_total[1m] smoothed)")[0].v, 1.5);
    assert_eq!(v("c_total smoothed")[0].v, 3.5);
    let enriched = v("info(c_total)");
    assert_eq!(enriched[0].labels.get("v"), Some("1"));
}
