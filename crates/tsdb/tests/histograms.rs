//! Native histograms end to end in one tenant database: append (mixed
//! with floats in one series), duplicates and out-of-order refusal, head
//! vs cut blocks vs compacted blocks, deletion, WAL replay.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use stratus_model::{
    BucketSpan, FloatHistogram, Histogram, Labels, MatchType, Matcher, Sample, reset_hint,
};
use stratus_objstore::Bucket;
use stratus_tsdb::{
    Db, DbConfig, Queryable, RejectReason, SelectHints, SeriesHistograms, SeriesSamples, Value,
};

fn labels(inst: &str) -> Labels {
    Labels::from_pairs([("__name__", "h"), ("instance", inst)])
}

async fn open(dir: &std::path::Path, bucket: Bucket, cfg: DbConfig) -> Arc<Db> {
    Arc::new(Db::open(dir, bucket, cfg).await.unwrap())
}

fn cfg() -> DbConfig {
    let mut cfg = DbConfig::default();
    cfg.head.block_range = 10_000;
    cfg.head.chunk_samples = 7;
    cfg.head.ooo_window = i64::MAX / 4;
    cfg.compaction_ranges = vec![10_000, 30_000];
    cfg.max_future = Duration::from_secs(100 * 365 * 86400);
    cfg
}

/// An integer histogram; `k` grows the counts, `layout` picks spans.
fn hist(k: u64, layout: u8, gauge: bool) -> Histogram {
    let (spans, n) = match layout % 3 {
        0 => (
            vec![BucketSpan {
                offset: 0,
                length: 2,
            }],
            2,
        ),
        1 => (
            vec![
                BucketSpan {
                    offset: -1,
                    length: 1,
                },
                BucketSpan {
                    offset: 1,
                    length: 2,
                },
            ],
            3,
        ),
        _ => (Vec::new(), 0),
    };
    let deltas: Vec<i64> = (0..n).map(|i| if i == 0 { k as i64 } else { 0 }).collect();
    Histogram {
        reset_hint: if gauge { reset_hint::GAUGE } else { 0 },
        schema: 1,
        zero_threshold: 0.001,
        zero_count: k,
        count: k + k * n as u64,
        sum: k as f64 * 0.5,
        positive_spans: spans,
        positive_deltas: deltas,
        ..Default::default()
    }
}

/// A comparable rendering of a typed sample (counter-reset hints other
/// than gauge depend on chunk boundaries and are ignored).
fn render(t: i64, v: &Value) -> String {
    match v {
        Value::Float(f) => format!("{t} f {:x}", f.to_bits()),
        Value::Histogram(h) => {
            let mut h = (**h).clone();
            if h.reset_hint != reset_hint::GAUGE || h.is_stale() {
                h.reset_hint = 0;
            }
            format!("{t} h {h:?} {:x}", h.sum.to_bits())
        }
        Value::FloatHistogram(h) => {
            let mut h = (**h).clone();
            if h.reset_hint != reset_hint::GAUGE || h.is_stale() {
                h.reset_hint = 0;
            }
            format!("{t} fh {h:?} {:x}", h.sum.to_bits())
        }
    }
}

fn all(db: &Db, mint: i64, maxt: i64) -> Vec<(Labels, Vec<String>)> {
    let m = Matcher::new(MatchType::RegexMatch, "__name__", ".+").unwrap();
    db.select(&[m], &SelectHints::range(mint, maxt))
        .unwrap()
        .into_iter()
        .map(|s| {
            let v: Vec<String> = s
                .typed_samples(mint, maxt)
                .unwrap()
                .iter()
                .map(|(t, v)| render(*t, v))
                .collect();
            (s.labels, v)
        })
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

#[derive(Debug, Clone)]
enum In {
    F(f64),
    H(Histogram),
    FH(FloatHistogram),
}

fn push(db: &Db, l: &Labels, t: i64, v: &In) -> stratus_tsdb::AppendReport {
    match v {
        In::F(x) => db
            .append(&[SeriesSamples {
                labels: l,
                samples: &[Sample::new(t, *x)],
            }])
            .unwrap(),
        In::H(h) => db
            .append_with_histograms(
                &[],
                &[SeriesHistograms {
                    labels: l,
                    histograms: &[(t, h.clone())],
                    float_histograms: &[],
                }],
            )
            .unwrap(),
        In::FH(h) => db
            .append_with_histograms(
                &[],
                &[SeriesHistograms {
                    labels: l,
                    histograms: &[],
                    float_histograms: &[(t, h.clone())],
                }],
            )
            .unwrap(),
    }
}

fn model_render(t: i64, v: &In) -> String {
    match v {
        In::F(x) => render(t, &Value::Float(*x)),
        In::H(h) => render(t, &Value::Histogram(Arc::new(h.clone()))),
        In::FH(h) => render(t, &Value::FloatHistogram(Arc::new(h.clone()))),
    }
}

fn arb_in() -> impl Strategy<Value = (u8, u64, u8, bool)> {
    (0u8..6, 0u64..20, 0u8..3, any::<bool>())
}

fn make(kind: u8, k: u64, layout: u8, gauge: bool) -> In {
    match kind {
        0 | 1 => In::F(k as f64 - 3.5),
        2 | 3 => In::H(hist(k, layout, gauge)),
        4 => In::FH(hist(k, layout, gauge).to_float()),
        _ => In::H(Histogram::stale()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// Head, re-encoded head chunks, cut blocks and compacted blocks give
    /// the same typed samples for series mixing floats and histograms.
    #[test]
    fn head_block_and_compacted_agree_on_histograms(
        series in prop::collection::vec(prop::collection::vec((1i64..700, arb_in()), 1..50), 1..4),
        q_lo in 0i64..10_000, q_len in 0i64..40_000,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let db = open(dir.path(), Bucket::memory(), cfg()).await;
            let mut model = Vec::new();
            for (i, pts) in series.iter().enumerate() {
                let l = labels(&i.to_string());
                let mut t = 0;
                let mut m = Vec::new();
                for (dt, (kind, k, layout, gauge)) in pts {
                    t += dt;
                    let v = make(*kind, *k, *layout, *gauge);
                    let r = push(&db, &l, t, &v);
                    prop_assert!(r.errors.is_empty(), "{:?}", r.errors);
                    // Re-sending the same sample is a no-op.
                    let r = push(&db, &l, t, &v);
                    prop_assert!(r.errors.is_empty(), "{:?}", r.errors);
                    m.push(model_render(t, &v));
                }
                model.push((l, m));
            }
            let (lo, hi) = (q_lo, q_lo + q_len);
            let want: Vec<(Labels, Vec<String>)> = model
                .iter()
                .map(|(l, m)| {
                    let v: Vec<String> = m
                        .iter()
                        .filter(|s| {
                            let t: i64 = s.split(' ').next().unwrap().parse().unwrap();
                            (lo..=hi).contains(&t)
                        })
                        .cloned()
                        .collect();
                    (l.clone(), v)
                })
                .filter(|(_, v)| !v.is_empty())
                .collect();
            let head = all(&db, lo, hi);
            prop_assert_eq!(&head, &want);
            db.compact_head_chunks().await.unwrap();
            prop_assert_eq!(&all(&db, lo, hi), &want);
            db.flush_head().await.unwrap();
            prop_assert_eq!(&all(&db, lo, hi), &want);
            db.maintain().await.unwrap();
            db.maintain().await.unwrap();
            prop_assert_eq!(&all(&db, lo, hi), &want);
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn duplicates_out_of_order_and_invalid_histograms() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), Bucket::memory(), cfg()).await;
    let l = labels("a");
    assert!(
        push(&db, &l, 100, &In::H(hist(1, 0, false)))
            .errors
            .is_empty()
    );
    assert!(
        push(&db, &l, 200, &In::H(hist(2, 0, false)))
            .errors
            .is_empty()
    );
    // Same timestamp, same histogram: no-op; different: duplicate.
    let r = push(&db, &l, 200, &In::H(hist(2, 0, false)));
    assert!(r.errors.is_empty());
    assert_eq!(r.histograms_accepted, 1);
    let r = push(&db, &l, 200, &In::H(hist(3, 0, false)));
    assert_eq!(r.errors[0].reason, RejectReason::Duplicate);
    // Older and identical: no-op; older and new: refused.
    assert!(
        push(&db, &l, 100, &In::H(hist(1, 0, false)))
            .errors
            .is_empty()
    );
    let r = push(&db, &l, 150, &In::H(hist(1, 0, false)));
    assert_eq!(r.errors[0].reason, RejectReason::OutOfOrderHistogram);
    // A float at a histogram's timestamp.
    let r = push(&db, &l, 200, &In::F(1.0));
    assert_eq!(r.errors[0].reason, RejectReason::Duplicate);
    let r = push(&db, &l, 100, &In::F(1.0));
    assert_eq!(r.errors[0].reason, RejectReason::Duplicate);
    // Malformed.
    let mut bad = hist(5, 0, false);
    bad.positive_deltas.push(1);
    let r = push(&db, &l, 300, &In::H(bad));
    assert_eq!(r.errors[0].reason, RejectReason::InvalidHistogram);
    let mut bad = hist(5, 0, false).to_float();
    bad.positive_buckets[0] = -1.0;
    let r = push(&db, &l, 300, &In::FH(bad));
    assert_eq!(r.errors[0].reason, RejectReason::InvalidHistogram);
    // Float iteration skips histograms.
    let m = Matcher::new(MatchType::Equal, "instance", "a").unwrap();
    let s = db.select(&[m], &SelectHints::range(0, 1000)).unwrap();
    assert!(s[0].has_histograms());
    assert!(s[0].samples(0, 1000).is_empty());
}

#[tokio::test]
async fn histograms_survive_restart_and_crash() {
    let dir = tempfile::tempdir().unwrap();
    let bdir = tempfile::tempdir().unwrap();
    let bucket = Bucket::local(bdir.path()).unwrap();
    let db = open(dir.path(), bucket.clone(), cfg()).await;
    let l = labels("r");
    for i in 0..30u64 {
        let v = match i % 3 {
            0 => In::H(hist(i, (i / 10) as u8, false)),
            1 => In::FH(hist(i, 0, true).to_float()),
            _ => In::F(i as f64),
        };
        assert!(push(&db, &l, 1000 + i as i64 * 100, &v).errors.is_empty());
    }
    let before = all(&db, 0, 100_000);
    assert_eq!(before[0].1.len(), 30);
    // Crash: no close, no flush (the WAL write already happened).
    drop(db);
    let db = open(dir.path(), bucket.clone(), cfg()).await;
    assert_eq!(all(&db, 0, 100_000), before);
    // Cut blocks (checkpoint), restart again.
    db.flush_head().await.unwrap();
    db.close().unwrap();
    drop(db);
    let db = open(dir.path(), bucket.clone(), cfg()).await;
    assert_eq!(all(&db, 0, 100_000), before);
    // Deletion through tombstones on blocks, then compaction.
    let m = Matcher::new(MatchType::Equal, "instance", "r").unwrap();
    db.delete(&[m], 1000, 1500).await.unwrap();
    let after_delete = all(&db, 0, 100_000);
    assert_eq!(after_delete[0].1.len(), 30 - 6);
    db.maintain().await.unwrap();
    assert_eq!(all(&db, 0, 100_000), after_delete);
}
