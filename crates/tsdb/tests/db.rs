//! End-to-end tests of one tenant database: append, query, out-of-order
//! rules, block cuts, compaction, deletion, retention, restart.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use stratus_model::{Labels, MatchType, Matcher, Sample, stale_nan};
use stratus_objstore::Bucket;
use stratus_tsdb::{Db, DbConfig, Queryable, RejectReason, SelectHints, SeriesSamples};

const H: i64 = 3_600_000;

fn labels(name: &str, inst: &str) -> Labels {
    Labels::from_pairs([("__name__", name), ("instance", inst), ("job", "node")])
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn open(dir: &std::path::Path, bucket: Bucket, cfg: DbConfig) -> Arc<Db> {
    Arc::new(Db::open(dir, bucket, cfg).await.unwrap())
}

/// Every series with samples in `[mint, maxt]`. Selects work at chunk
/// granularity, so a series whose chunk spans the range without a sample
/// in it may be returned with no samples (depending on how its chunks are
/// cut: head, level-1 and compacted blocks cut differently); like PromQL,
/// drop those.
fn all(db: &Db, mint: i64, maxt: i64) -> Vec<(Labels, Vec<(i64, u64)>)> {
    let m = Matcher::new(MatchType::RegexMatch, "__name__", ".+").unwrap();
    db.select(&[m], &SelectHints::range(mint, maxt))
        .unwrap()
        .into_iter()
        .map(|s| {
            let v: Vec<(i64, u64)> = s
                .samples(mint, maxt)
                .into_iter()
                .map(|(t, v)| (t, v.to_bits()))
                .collect();
            (s.labels, v)
        })
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

fn push(db: &Db, l: &Labels, samples: &[(i64, f64)]) -> stratus_tsdb::AppendReport {
    let s: Vec<Sample> = samples.iter().map(|&(t, v)| Sample::new(t, v)).collect();
    db.append(&[SeriesSamples {
        labels: l,
        samples: &s,
    }])
    .unwrap()
}

#[tokio::test]
async fn append_and_read_back_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), Bucket::memory(), DbConfig::default()).await;
    let base = now() - H;
    let l = labels("up", "a");
    let vals = [
        1.0,
        f64::NAN,
        stale_nan(),
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
    ];
    let samples: Vec<(i64, f64)> = vals
        .iter()
        .enumerate()
        .map(|(i, &v)| (base + i as i64 * 15_000 + (i as i64 % 3), v))
        .collect();
    let r = push(&db, &l, &samples);
    assert_eq!(r.accepted, 6);
    let got = all(&db, base, base + H);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, l);
    let want: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
    assert_eq!(got[0].1, want);
}

#[tokio::test]
async fn out_of_order_duplicates_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), Bucket::memory(), DbConfig::default()).await;
    let base = now() - H / 2;
    let l = labels("x", "a");
    push(&db, &l, &[(base, 1.0), (base + 60_000, 2.0)]);
    // Out of order within the window: accepted.
    let r = push(&db, &l, &[(base + 30_000, 1.5)]);
    assert_eq!((r.accepted, r.rejected), (1, 0));
    // Exact duplicate (in-order and out-of-order): no-op.
    let r = push(
        &db,
        &l,
        &[(base + 60_000, 2.0), (base + 30_000, 1.5), (base, 1.0)],
    );
    assert_eq!((r.accepted, r.rejected), (3, 0));
    // Different value at an existing timestamp: rejected.
    let r = push(
        &db,
        &l,
        &[(base + 30_000, 9.0), (base, 9.0), (base + 60_000, 9.0)],
    );
    assert_eq!(r.rejected, 3);
    assert!(r.errors.iter().all(|e| e.reason == RejectReason::Duplicate));
    assert!(
        r.errors[0].to_string().contains("instance=\"a\""),
        "{}",
        r.errors[0]
    );
    // Older than the window: rejected with a clear reason.
    let r = push(&db, &l, &[(base - 2 * H, 1.0)]);
    assert_eq!(r.errors[0].reason, RejectReason::TooOld);
    // Far future: rejected.
    let r = push(&db, &l, &[(now() + H, 1.0)]);
    assert_eq!(r.errors[0].reason, RejectReason::TooFarInFuture);
    let got = all(&db, base - 3 * H, base + H);
    let ts: Vec<i64> = got[0].1.iter().map(|x| x.0).collect();
    assert_eq!(ts, vec![base, base + 30_000, base + 60_000]);
}

#[tokio::test]
async fn out_of_order_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DbConfig::default();
    cfg.head.ooo_window = 0;
    let db = open(dir.path(), Bucket::memory(), cfg).await;
    let base = now() - H / 2;
    let l = labels("x", "a");
    push(&db, &l, &[(base, 1.0), (base + 60_000, 2.0)]);
    let r = push(&db, &l, &[(base + 30_000, 1.5)]);
    assert_eq!(r.errors[0].reason, RejectReason::OutOfOrder);
}

#[tokio::test]
async fn series_limits_refuse_only_new_series() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), Bucket::memory(), DbConfig::default()).await;
    let t = now();
    db.set_series_limits(3, 2);
    assert_eq!(push(&db, &labels("a", "1"), &[(t, 1.0)]).rejected, 0);
    assert_eq!(push(&db, &labels("a", "2"), &[(t, 1.0)]).rejected, 0);
    let r = push(&db, &labels("a", "3"), &[(t, 1.0), (t + 1, 1.0)]);
    assert_eq!(r.rejected, 2);
    assert_eq!(r.errors[0].reason, RejectReason::MaxSeriesPerMetric);
    assert!(r.errors[0].to_string().contains("max_series_per_metric"));
    assert_eq!(push(&db, &labels("b", "1"), &[(t, 1.0)]).rejected, 0);
    let r = push(&db, &labels("c", "1"), &[(t, 1.0)]);
    assert_eq!(r.errors[0].reason, RejectReason::MaxSeries);
    // Existing series keep accepting samples.
    assert_eq!(push(&db, &labels("a", "1"), &[(t + 10, 2.0)]).rejected, 0);
    // Raised at runtime: accepted at once.
    db.set_series_limits(0, 0);
    assert_eq!(push(&db, &labels("c", "1"), &[(t, 1.0)]).rejected, 0);
    assert_eq!(db.stats().head_series, 4);
}

#[tokio::test]
async fn borrowed_labels_append_like_owned_ones() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), Bucket::memory(), DbConfig::default()).await;
    let t = now();
    let pairs: &[(&str, &str)] = &[("__name__", "up"), ("instance", "a"), ("job", "node")];
    let s = [Sample::new(t, 1.0)];
    let r = db
        .append(&[SeriesSamples {
            labels: pairs,
            samples: &s,
        }])
        .unwrap();
    assert_eq!((r.accepted, r.new_series), (1, 1));
    // The owned form names the same series; a duplicate timestamp with
    // another value is refused and reported with owned labels.
    assert_eq!(push(&db, &labels("up", "a"), &[(t + 1, 2.0)]).new_series, 0);
    let dup = [Sample::new(t, 5.0)];
    let r = db
        .append(&[SeriesSamples {
            labels: pairs,
            samples: &dup,
        }])
        .unwrap();
    assert_eq!(r.rejected, 1);
    assert_eq!(r.errors[0].labels, labels("up", "a"));
    // Series limits see borrowed labels too.
    db.set_series_limits(1, 0);
    let other: &[(&str, &str)] = &[("__name__", "up"), ("instance", "b"), ("job", "node")];
    let r = db
        .append(&[SeriesSamples {
            labels: other,
            samples: &s,
        }])
        .unwrap();
    assert_eq!(r.errors[0].reason, RejectReason::MaxSeries);
    assert_eq!(db.stats().head_series, 1);
    // Restart: the series definition logged from borrowed labels replays.
    drop(db);
    let db = open(dir.path(), Bucket::memory(), DbConfig::default()).await;
    let got = all(&db, t - 1, t + 10);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, labels("up", "a"));
    assert_eq!(got[0].1.len(), 2);
}

/// Pushes `hours` of 15s data for `n` series ending near now, oldest first.
fn fill(db: &Db, n: usize, start: i64, end: i64) -> usize {
    let ls: Vec<Labels> = (0..n).map(|i| labels("m", &format!("i{i}"))).collect();
    let mut total = 0;
    let mut t = start;
    while t < end {
        let batch: Vec<Vec<Sample>> = (0..n)
            .map(|i| {
                (0..20)
                    .map(|k| t + k * 15_000)
                    .filter(|&x| x < end)
                    .map(|x| Sample::new(x, (x / 15_000 + i as i64) as f64))
                    .collect()
            })
            .collect();
        let ss: Vec<SeriesSamples<'_>> = ls
            .iter()
            .zip(&batch)
            .map(|(l, s)| SeriesSamples {
                labels: l,
                samples: s,
            })
            .collect();
        let r = db.append(&ss).unwrap();
        assert_eq!(r.rejected, 0, "{:?}", r.errors.first());
        total += r.accepted as usize;
        t += 20 * 15_000;
    }
    total
}

#[tokio::test]
async fn cut_compact_and_restart_keep_every_sample() {
    let dir = tempfile::tempdir().unwrap();
    let bdir = tempfile::tempdir().unwrap();
    let bucket = Bucket::local(bdir.path()).unwrap();
    let mut cfg = DbConfig::default();
    cfg.head.ooo_window = 30 * 24 * H;
    cfg.compaction_ranges = vec![2 * H, 6 * H];
    // Align to the 6h level so the cut always completes a 6h window (the
    // test must not depend on the hour of day it runs at).
    let end = now() / (6 * H) * (6 * H);
    let start = end - 9 * H;
    let db = open(dir.path(), bucket.clone(), cfg.clone()).await;
    let n = fill(&db, 20, start, end);
    assert_eq!(n, 20 * 9 * 240);
    let before = all(&db, start, end);
    // Late out-of-order samples for an old range.
    let late = labels("m", "late");
    push(&db, &late, &[(start + 7, 1.0), (start + 8, 2.0)]);
    let before_late = all(&db, start, end);
    db.maintain().await.unwrap();
    let metas = db.block_metas();
    assert!(!metas.is_empty(), "blocks were cut");
    assert!(db.stats().blocks_cut > 0);
    assert!(db.stats().compactions > 0, "{metas:?}");
    assert_eq!(all(&db, start, end), before_late);
    // Restart: WAL replay + blocks reload give the same answer.
    db.close().unwrap();
    drop(db);
    let db = open(dir.path(), bucket.clone(), cfg.clone()).await;
    assert_eq!(all(&db, start, end), before_late);
    // Whole head flushed, everything compacted: still the same.
    db.flush_head().await.unwrap();
    db.maintain().await.unwrap();
    assert_eq!(all(&db, start, end), before_late);
    let without_late: Vec<_> = all(&db, start, end)
        .into_iter()
        .filter(|(l, _)| l.get("instance") != Some("late"))
        .collect();
    assert_eq!(without_late, before);
    // Force compaction rewrites what is left at level 1, same answers.
    push(&db, &labels("m", "fresh"), &[(end - 1000, 3.0)]);
    let expect = all(&db, start, end);
    db.flush_head().await.unwrap();
    assert!(db.block_metas().iter().any(|m| m.compaction.level == 1));
    assert!(db.force_compact().await.unwrap() > 0);
    assert!(
        db.block_metas().iter().all(|m| m.compaction.level >= 2),
        "{:?}",
        db.block_metas()
    );
    assert_eq!(all(&db, start, end), expect);
}

#[tokio::test]
async fn delete_series_by_matchers_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DbConfig::default();
    cfg.head.ooo_window = 30 * 24 * H;
    let db = open(dir.path(), Bucket::memory(), cfg.clone()).await;
    let end = now() / H * H;
    let start = end - 5 * H;
    fill(&db, 3, start, end);
    db.cut_blocks().await.unwrap();
    assert!(!db.block_metas().is_empty());
    let m = Matcher::eq("instance", "i1");
    let (dmin, dmax) = (start + H, end - H);
    db.delete(&[m], dmin, dmax).await.unwrap();
    let check = |db: &Db| {
        for (l, s) in all(db, start, end) {
            let hit = s.iter().any(|x| x.0 >= dmin && x.0 <= dmax);
            assert_eq!(hit, l.get("instance") != Some("i1"), "{l}");
            assert!(!s.is_empty());
        }
    };
    check(&db);
    // Tombstones survive restart (WAL for the head, file for blocks)...
    db.close().unwrap();
    drop(db);
    let db = open(dir.path(), Bucket::memory(), cfg).await;
    let _ = &db;
    // (the memory bucket is gone with the old Db; only the head part is
    // checked after restart in this test)
    for (l, s) in all(&db, start, end) {
        if l.get("instance") == Some("i1") {
            assert!(!s.iter().any(|x| x.0 >= dmin && x.0 <= dmax));
        }
    }
}

#[tokio::test]
async fn deletion_is_applied_by_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let bdir = tempfile::tempdir().unwrap();
    let bucket = Bucket::local(bdir.path()).unwrap();
    let mut cfg = DbConfig::default();
    cfg.head.ooo_window = 30 * 24 * H;
    let db = open(dir.path(), bucket.clone(), cfg.clone()).await;
    let end = now() / H * H;
    let start = end - 4 * H;
    fill(&db, 2, start, end);
    db.flush_head().await.unwrap();
    let samples_before: u64 = db.block_metas().iter().map(|m| m.stats.num_samples).sum();
    db.delete(&[Matcher::eq("instance", "i0")], i64::MIN, i64::MAX)
        .await
        .unwrap();
    db.maintain().await.unwrap();
    let samples_after: u64 = db.block_metas().iter().map(|m| m.stats.num_samples).sum();
    assert_eq!(
        samples_after * 2,
        samples_before,
        "deleted series gone from disk"
    );
    let got = all(&db, start, end);
    assert_eq!(got.len(), 1);
    drop(db);
    let db = open(dir.path(), bucket, cfg).await;
    assert_eq!(all(&db, start, end).len(), 1);
}

#[tokio::test]
async fn retention_drops_old_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DbConfig::default();
    cfg.head.ooo_window = 30 * 24 * H;
    cfg.retention = Some(Duration::from_secs(3 * 3600));
    // No level compaction: a merged block reaching past the cutoff would
    // keep its old samples, and whether one forms depends on the hour.
    cfg.compaction_ranges = vec![2 * H];
    let db = open(dir.path(), Bucket::memory(), cfg).await;
    let end = now() / H * H;
    fill(&db, 2, end - 8 * H, end);
    db.maintain().await.unwrap();
    let cutoff = now() - 3 * H;
    assert!(db.block_metas().iter().all(|m| m.max_time > cutoff));
    assert!(all(&db, 0, end)[0].1[0].0 >= end - 6 * H);
}

#[tokio::test]
async fn label_names_and_values_bounded_by_matchers_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), Bucket::memory(), DbConfig::default()).await;
    let t = now() - 60_000;
    push(
        &db,
        &Labels::from_pairs([("__name__", "a"), ("x", "1")]),
        &[(t, 1.0)],
    );
    push(
        &db,
        &Labels::from_pairs([("__name__", "b"), ("y", "2")]),
        &[(t, 1.0)],
    );
    assert_eq!(
        db.label_names(&[], t, t).unwrap(),
        vec!["__name__", "x", "y"]
    );
    let ma = Matcher::eq("__name__", "a");
    assert_eq!(
        db.label_names(std::slice::from_ref(&ma), t, t).unwrap(),
        vec!["__name__", "x"]
    );
    assert_eq!(
        db.label_values("__name__", &[], t, t).unwrap(),
        vec!["a", "b"]
    );
    assert_eq!(db.label_values("x", &[ma], t, t).unwrap(), vec!["1"]);
    assert!(
        db.label_values("x", &[Matcher::eq("__name__", "b")], t, t)
            .unwrap()
            .is_empty()
    );
    // Out of the time range: nothing.
    assert!(
        db.label_names(&[Matcher::eq("x", "1")], 0, 1000)
            .unwrap()
            .is_empty()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// Head, freshly cut blocks and compacted blocks answer every query the
    /// same way.
    #[test]
    fn head_block_and_compacted_agree(
        seed_series in proptest::collection::vec((0u8..4, proptest::collection::vec((0i64..40_000, -5i32..5), 1..60)), 1..8),
        q_lo in 0i64..20_000, q_len in 0i64..30_000,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = DbConfig::default();
            cfg.head.block_range = 10_000; // tiny blocks: many cuts
            cfg.head.chunk_samples = 7;
            cfg.head.ooo_window = i64::MAX / 4;
            cfg.compaction_ranges = vec![10_000, 30_000];
            cfg.max_future = Duration::from_secs(100 * 365 * 86400);
            let db = open(dir.path(), Bucket::memory(), cfg).await;
            for (inst, pts) in &seed_series {
                let l = labels("p", &format!("{inst}"));
                for &(t, v) in pts {
                    // Random order, duplicates with both same and different values.
                    let s = [Sample::new(t, v as f64)];
                    db.append(&[SeriesSamples { labels: &l, samples: &s }]).unwrap();
                }
            }
            let q = |db: &Db| all(db, q_lo, q_lo + q_len);
            let head = q(&db);
            db.compact_head_chunks().await.unwrap();
            prop_assert_eq!(&q(&db), &head, "head chunks re-encoded in place");
            db.flush_head().await.unwrap();
            let blocks = q(&db);
            prop_assert_eq!(&head, &blocks);
            db.maintain().await.unwrap();
            db.maintain().await.unwrap();
            let compacted = q(&db);
            prop_assert_eq!(&head, &compacted);
            // Against a naive model: first value written per timestamp wins.
            let mut model: std::collections::BTreeMap<String, std::collections::BTreeMap<i64, f64>> = Default::default();
            for (inst, pts) in &seed_series {
                let e = model.entry(format!("{inst}")).or_default();
                for &(t, v) in pts {
                    e.entry(t).or_insert(v as f64);
                }
            }
            let want: Vec<(Labels, Vec<(i64, u64)>)> = model.iter().filter_map(|(inst, m)| {
                let v: Vec<(i64, u64)> = m.range(q_lo..=q_lo + q_len).map(|(&t, &v)| (t, v.to_bits())).collect();
                (!v.is_empty()).then(|| (labels("p", inst), v))
            }).collect();
            prop_assert_eq!(head, want);
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn head_chunk_compaction_saves_memory_and_keeps_data() {
    // A block-range boundary at least 2 h ago; one hour of data inside a
    // block window and one hour across the boundary (chunks are cut there).
    let b = now() / (2 * H) * (2 * H) - 2 * H;
    for end in [b, b + H / 2] {
        chunk_compaction_case(end).await;
    }
}

async fn chunk_compaction_case(end: i64) {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), Bucket::memory(), DbConfig::default()).await;
    fill(&db, 50, end - H, end);
    let before = all(&db, end - H, end);
    // Sealed chunks went to the head chunk files as they were sealed, so
    // the pass shrinks the live chunk bytes there; the heap does not grow.
    let mem_before = db.head_memory();
    let n = db.compact_head_chunks().await.unwrap();
    assert!(n > 0);
    assert_eq!(all(&db, end - H, end), before);
    let mem_after = db.head_memory();
    assert!(
        mem_after.total() <= mem_before.total(),
        "heap {} > {}",
        mem_after.total(),
        mem_before.total()
    );
    assert!(
        mem_after.chunk_files < mem_before.chunk_files,
        "live chunk file bytes {} >= {}",
        mem_after.chunk_files,
        mem_before.chunk_files
    );
    // Appends, out-of-order inserts and duplicate checks keep working on
    // re-encoded chunks.
    let l = labels("m", "i1");
    let r = push(&db, &l, &[(end - H + 15_000, 999.0)]);
    assert_eq!(r.errors[0].reason, RejectReason::Duplicate);
    let r = push(&db, &l, &[(end - H + 7, 1.0), (end, 5.0)]);
    assert_eq!((r.accepted, r.rejected), (2, 0));
    db.cut_blocks().await.unwrap();
    db.flush_head().await.unwrap();
    let got = all(&db, end - H, end);
    assert_eq!(got.len(), before.len());
}

/// Exemplars are logged to the WAL: a restart (and a checkpoint in
/// between) keeps exactly what the ring held.
#[tokio::test]
async fn exemplars_survive_restart_and_checkpoints() {
    use stratus_model::Exemplar;
    let dir = tempfile::tempdir().unwrap();
    let bdir = tempfile::tempdir().unwrap();
    let bucket = Bucket::local(bdir.path()).unwrap();
    let cfg = DbConfig {
        max_exemplars: 8,
        ..DbConfig::default()
    };
    let t0 = now() - 10_000;
    let ex = |i: i64| Exemplar {
        labels: Labels::from_pairs([("trace_id", &*format!("t{i}"))]),
        value: i as f64,
        t: t0 + i,
    };
    let series = [labels("req_total", "a"), labels("req_total", "b")];
    let all_ex = |db: &Db| {
        let m = Matcher::new(MatchType::Equal, "__name__", "req_total").unwrap();
        db.exemplars().select(&[vec![m]], i64::MIN, i64::MAX)
    };
    let db = open(dir.path(), bucket.clone(), cfg.clone()).await;
    for s in &series {
        push(&db, s, &[(t0, 1.0)]);
    }
    // 12 exemplars into a ring of 8: the 4 oldest are evicted.
    let r = db
        .add_exemplars((0..12).map(|i| (&series[(i % 2) as usize], ex(i))))
        .unwrap();
    assert_eq!(r.added, 12);
    let before = all_ex(&db);
    assert_eq!(before.iter().map(|s| s.1.len()).sum::<usize>(), 8);
    db.close().unwrap();
    drop(db);
    let db = open(dir.path(), bucket.clone(), cfg.clone()).await;
    assert_eq!(all_ex(&db), before);
    // A cut checkpoints the WAL: the ring's exemplars are kept.
    db.flush_head().await.unwrap();
    db.add_exemplars([(&series[0], ex(20))]).unwrap();
    let before = all_ex(&db);
    db.close().unwrap();
    drop(db);
    let wal = dir.path().join("wal");
    assert!(
        std::fs::read_dir(&wal).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("checkpoint.")),
        "a checkpoint was written"
    );
    let db = open(dir.path(), bucket, cfg).await;
    assert_eq!(all_ex(&db), before);
    assert_eq!(before.iter().map(|s| s.1.len()).sum::<usize>(), 8);
}
