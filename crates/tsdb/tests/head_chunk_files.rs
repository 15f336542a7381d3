//! Head chunk files (`<dir>/chunks_head/`): sealed head chunks moved out
//! of the heap as they are sealed or by the head chunk compaction read
//! back exactly as they were, keep out-of-order and duplicate handling unchanged, disappear with
//! their last chunk, are deleted on restart, and a damaged file is an
//! error, never a panic.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use stratus_model::{BucketSpan, Histogram, Labels, MatchType, Matcher, Sample, reset_hint};
use stratus_objstore::Bucket;
use stratus_tsdb::{
    Db, DbConfig, Queryable, RejectReason, SelectHints, SeriesHistograms, SeriesSamples,
    StartTimestamps, Value,
};

fn cfg(files: bool) -> DbConfig {
    let mut cfg = DbConfig::default();
    cfg.head.block_range = 10_000;
    cfg.head.chunk_samples = 7;
    cfg.head.ooo_window = i64::MAX / 4;
    cfg.compaction_ranges = vec![10_000, 30_000];
    cfg.max_future = Duration::from_secs(100 * 365 * 86400);
    cfg.head_chunk_files = files;
    cfg.head_chunk_segment_bytes = 4096;
    cfg
}

struct Tdb {
    db: Arc<Db>,
    _dir: tempfile::TempDir,
    _bdir: tempfile::TempDir,
}

async fn open(files: bool) -> Tdb {
    let dir = tempfile::tempdir().unwrap();
    let bdir = tempfile::tempdir().unwrap();
    let bucket = Bucket::local(bdir.path()).unwrap();
    let db = Arc::new(Db::open(dir.path(), bucket, cfg(files)).await.unwrap());
    Tdb {
        db,
        _dir: dir,
        _bdir: bdir,
    }
}

fn seg_files(db: &Db) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(db.dir().join("chunks_head"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn labels(i: usize) -> Labels {
    Labels::from_pairs([("__name__", "m"), ("i", &*i.to_string())])
}

fn hist(k: u64) -> Histogram {
    Histogram {
        reset_hint: if k % 5 == 0 { reset_hint::GAUGE } else { 0 },
        schema: 1,
        zero_threshold: 0.001,
        zero_count: k,
        count: 3 * k,
        sum: k as f64 * 0.5,
        positive_spans: vec![BucketSpan {
            offset: 0,
            length: 2,
        }],
        positive_deltas: vec![k as i64, 0],
        ..Default::default()
    }
}

fn render(t: i64, v: &Value, st: i64) -> String {
    match v {
        Value::Float(f) => format!("{t} f {:x} st {st}", f.to_bits()),
        Value::Histogram(h) => format!("{t} h {h:?} {:x} st {st}", h.sum.to_bits()),
        Value::FloatHistogram(h) => format!("{t} fh {h:?} {:x} st {st}", h.sum.to_bits()),
    }
}

fn any() -> Matcher {
    Matcher::new(MatchType::RegexMatch, "__name__", ".+").unwrap()
}

fn all(db: &Db, mint: i64, maxt: i64) -> Vec<(Labels, Vec<String>)> {
    db.select(&[any()], &SelectHints::range(mint, maxt))
        .unwrap()
        .into_iter()
        .map(|s| {
            let v = s
                .st_samples(mint, maxt)
                .unwrap()
                .iter()
                .map(|(t, v, st)| render(*t, v, *st))
                .collect();
            (s.labels, v)
        })
        .collect()
}

#[derive(Debug, Clone)]
enum In {
    F(f64),
    H(u64),
}

fn value() -> impl Strategy<Value = In> {
    prop_oneof![
        4 => (-1e6f64..1e6).prop_map(In::F),
        1 => Just(In::F(f64::NAN)),
        1 => Just(In::F(stratus_model::stale_nan())),
        1 => Just(In::F(f64::INFINITY)),
        1 => Just(In::F(f64::NEG_INFINITY)),
        2 => (1u64..50).prop_map(In::H),
    ]
}

/// Appends `(series, dt, value, st)` steps: each series' time advances by
/// `dt` (so samples are in order), histograms accepted in order only.
fn apply(db: &Db, t0: &mut [i64; 3], steps: &[(usize, i64, In, i64)]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, dt, v, st) in steps {
        t0[*i] += dt;
        let t = t0[*i];
        let l = labels(*i);
        let r = match v {
            In::F(v) => {
                let s = [Sample { t, v: *v }];
                let sts = [*st];
                let list: [&[i64]; 1] = [&sts];
                db.append_with_start_timestamps(
                    &[SeriesSamples {
                        labels: &l,
                        samples: &s,
                    }],
                    &[],
                    &StartTimestamps {
                        samples: &list,
                        ..Default::default()
                    },
                )
                .unwrap()
            }
            In::H(k) => {
                let h = [(t, hist(*k))];
                db.append_with_histograms(
                    &[],
                    &[SeriesHistograms {
                        labels: &l,
                        histograms: &h,
                        float_histograms: &[],
                    }],
                )
                .unwrap()
            }
        };
        out.push(format!(
            "{} {}",
            r.rejected,
            r.accepted + r.histograms_accepted
        ));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Chunks moved to files query exactly as the same chunks kept in
    /// memory, floats (NaN, stale markers, ±Inf), histograms and start
    /// timestamps alike, across several compaction passes.
    #[test]
    fn spilled_chunks_query_like_in_memory_ones(
        rounds in proptest::collection::vec(
            proptest::collection::vec(
                (0usize..3, 1i64..1500, value(), prop_oneof![3 => Just(0i64), 1 => 1i64..100]),
                1..60,
            ),
            1..4,
        )
    ) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let on = open(true).await;
            let off = open(false).await;
            let (mut ta, mut tb) = ([1_000_000i64; 3], [1_000_000i64; 3]);
            for steps in &rounds {
                let ra = apply(&on.db, &mut ta, steps);
                let rb = apply(&off.db, &mut tb, steps);
                prop_assert_eq!(ra, rb);
                let before = all(&on.db, 0, i64::MAX / 2);
                on.db.compact_head_chunks().await.unwrap();
                off.db.compact_head_chunks().await.unwrap();
                let a = all(&on.db, 0, i64::MAX / 2);
                prop_assert_eq!(&a, &before);
                prop_assert_eq!(&a, &all(&off.db, 0, i64::MAX / 2));
                // A sub-range too.
                let mid = ta[0] - 2000;
                prop_assert_eq!(all(&on.db, mid, mid + 3000), all(&off.db, mid, mid + 3000));
                // Nothing stays in memory but the open chunks.
                let m = on.db.head_memory();
                prop_assert!(off.db.head_memory().chunk_files == 0);
                if m.chunk_files > 0 {
                    prop_assert!(!seg_files(&on.db).is_empty());
                }
            }
            Ok(())
        })?;
    }
}

fn floats(db: &Db, i: i64, samples: &[(i64, f64)]) -> stratus_tsdb::AppendReport {
    let l = labels(i as usize);
    let s: Vec<Sample> = samples.iter().map(|&(t, v)| Sample { t, v }).collect();
    db.append(&[SeriesSamples {
        labels: &l,
        samples: &s,
    }])
    .unwrap()
}

fn hists(db: &Db, i: i64, h: &[(i64, Histogram)]) -> stratus_tsdb::AppendReport {
    let l = labels(i as usize);
    db.append_with_histograms(
        &[],
        &[SeriesHistograms {
            labels: &l,
            histograms: h,
            float_histograms: &[],
        }],
    )
    .unwrap()
}

fn reasons(r: &stratus_tsdb::AppendReport) -> Vec<RejectReason> {
    r.errors.iter().map(|e| e.reason).collect()
}

/// A float chunk goes to the files as it is sealed, with no compaction
/// pass: no sealed bytes stay in the heap. Its record waits in the
/// segment's tail buffer, readable, until the maintenance tick writes it.
#[tokio::test]
async fn sealed_chunks_leave_the_heap_at_once() {
    let on = open(true).await;
    let off = open(false).await;
    // 7 samples per chunk: 5 sealed chunks per series, one open.
    for i in 0..20 {
        let s: Vec<(i64, f64)> = (0..40).map(|k| (k * 100, (i * k) as f64)).collect();
        floats(&on.db, i, &s);
        floats(&off.db, i, &s);
    }
    // What stays is the list of 100 chunk handles (40 bytes each).
    let m = on.db.head_memory();
    assert_eq!(m.sealed_chunks, 100 * 40, "{m:?}");
    assert!(m.chunk_files > 0, "{m:?}");
    assert!(off.db.head_memory().sealed_chunks > m.sealed_chunks + m.chunk_files);
    assert_eq!(all(&on.db, 0, 100_000), all(&off.db, 0, 100_000));
    // Written out by the tick (the segments before the current one were
    // written as the writer moved on): every file holds its records.
    let on_disk = |db: &Db| -> u64 {
        seg_files(db)
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum()
    };
    let before = on_disk(&on.db);
    on.db.maintain().await.unwrap();
    assert!(on_disk(&on.db) > before);
    assert_eq!(all(&on.db, 0, 100_000), all(&off.db, 0, 100_000));
    // The pass still re-encodes them (from the files) into compact chunks.
    assert!(on.db.compact_head_chunks().await.unwrap() > 0);
    assert_eq!(all(&on.db, 0, 100_000), all(&off.db, 0, 100_000));
}

#[tokio::test]
async fn out_of_order_and_duplicates_against_spilled_chunks() {
    for files in [true, false] {
        let t = open(files).await;
        let db = &t.db;
        let base: Vec<(i64, f64)> = (0..60).map(|k| (1000 + k * 100, k as f64)).collect();
        assert_eq!(floats(db, 0, &base).rejected, 0);
        let hs: Vec<(i64, Histogram)> = (0..30)
            .map(|k| (1000 + k * 100, hist(k as u64 + 1)))
            .collect();
        assert_eq!(hists(db, 1, &hs).rejected, 0);
        db.compact_head_chunks().await.unwrap();
        if files {
            assert!(db.head_memory().chunk_files > 0);
            assert!(!seg_files(db).is_empty());
        }
        // Same value at a stored time: a no-op; another value: refused.
        let r = floats(db, 0, &[(1300, 3.0)]);
        assert_eq!((r.accepted, r.rejected), (1, 0), "files={files}");
        let r = floats(db, 0, &[(1300, 4.0)]);
        assert_eq!(reasons(&r), [RejectReason::Duplicate], "files={files}");
        // A new out-of-order sample inside a spilled chunk's range.
        let r = floats(db, 0, &[(1350, 42.0)]);
        assert_eq!((r.accepted, r.rejected), (1, 0), "files={files}");
        let r = floats(db, 0, &[(1350, 43.0)]);
        assert_eq!(reasons(&r), [RejectReason::Duplicate]);
        // Histograms: same one is a no-op, another refused, a new old
        // time is out of order.
        let r = hists(db, 1, &[(1500, hist(6))]);
        assert_eq!((r.histograms_accepted, r.rejected), (1, 0), "files={files}");
        let r = hists(db, 1, &[(1500, hist(7))]);
        assert_eq!(reasons(&r), [RejectReason::Duplicate]);
        let r = hists(db, 1, &[(1550, hist(7))]);
        assert_eq!(reasons(&r), [RejectReason::OutOfOrderHistogram]);
        // A float where a spilled histogram is stored.
        let r = floats(db, 1, &[(1500, 1.0)]);
        assert_eq!(reasons(&r), [RejectReason::Duplicate]);
        let got = all(db, 0, 100_000);
        assert!(got[0].1.iter().any(|s| s.starts_with("1350 f ")));
        assert_eq!(got[0].1.len(), 61);
        assert_eq!(got[1].1.len(), 30);
    }
}

#[tokio::test]
async fn files_go_with_their_last_chunk() {
    let t = open(true).await;
    let db = &t.db;
    for i in 0..100 {
        let s: Vec<(i64, f64)> = (0..40).map(|k| (k * 100, (i * k) as f64)).collect();
        floats(db, i, &s);
    }
    db.compact_head_chunks().await.unwrap();
    let first = seg_files(db);
    // One batch larger than a segment (4 KiB here): the next pass starts
    // a new file.
    assert!(db.stats().head_chunk_file_bytes > 4096);
    assert!(!first.is_empty());
    let before = all(db, 0, 100_000);
    // More samples in the same window: every series' window is
    // re-encoded, so the first pass' records are all superseded.
    for i in 0..100 {
        let s: Vec<(i64, f64)> = (40..80).map(|k| (k * 100, (i * k) as f64)).collect();
        floats(db, i, &s);
    }
    db.compact_head_chunks().await.unwrap();
    let second = seg_files(db);
    for p in &first {
        assert!(!second.contains(p), "{} survived its chunks", p.display());
    }
    assert!(!second.is_empty());
    let after = all(db, 0, 100_000);
    assert_eq!(after.len(), before.len());
    assert_eq!(after[3].1.len(), 80);
    // A block cut takes every chunk: the files go (the writer's current
    // one at the next pass).
    db.flush_head().await.unwrap();
    db.compact_head_chunks().await.unwrap();
    assert!(seg_files(db).is_empty(), "{:?}", seg_files(db));
    assert_eq!(db.stats().head_chunk_file_bytes, 0);
    // The data is in the blocks.
    assert_eq!(all(db, 0, 100_000), after);
}

#[tokio::test]
async fn restart_deletes_leftover_files_and_replays_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let bdir = tempfile::tempdir().unwrap();
    let bucket = Bucket::local(bdir.path()).unwrap();
    let db = Arc::new(
        Db::open(dir.path(), bucket.clone(), cfg(true))
            .await
            .unwrap(),
    );
    for i in 0..5 {
        let s: Vec<(i64, f64)> = (0..50).map(|k| (k * 100, (i + k) as f64)).collect();
        floats(&db, i, &s);
    }
    db.compact_head_chunks().await.unwrap();
    let files = seg_files(&db);
    assert!(!files.is_empty());
    let want = all(&db, 0, 100_000);
    // A crash leaves the files behind: copy them back after the drop,
    // plus one of a higher number.
    let saved: Vec<(PathBuf, Vec<u8>)> = files
        .iter()
        .map(|p| (p.clone(), std::fs::read(p).unwrap()))
        .collect();
    db.close().unwrap();
    drop(db);
    assert!(seg_files_in(dir.path()).is_empty());
    for (p, b) in &saved {
        std::fs::write(p, b).unwrap();
    }
    std::fs::write(dir.path().join("chunks_head/000099"), b"junk").unwrap();
    let db = Arc::new(
        Db::open(dir.path(), bucket.clone(), cfg(true))
            .await
            .unwrap(),
    );
    // The leftovers are gone; the replay's sealed chunks went to new
    // files, numbered after them.
    let newer = |files: Vec<PathBuf>| {
        files
            .iter()
            .all(|p| p.file_name().unwrap().to_str().unwrap() > "000099")
    };
    assert!(newer(seg_files(&db)));
    assert_eq!(all(&db, 0, 100_000), want);
    db.compact_head_chunks().await.unwrap();
    let fresh = seg_files(&db);
    assert!(!fresh.is_empty());
    assert!(newer(fresh));
    assert_eq!(all(&db, 0, 100_000), want);
    drop(db);
    // With the files switched off, leftovers are deleted too.
    std::fs::write(dir.path().join("chunks_head/000001"), b"junk").unwrap();
    let db = Arc::new(Db::open(dir.path(), bucket, cfg(false)).await.unwrap());
    assert!(seg_files(&db).is_empty());
    db.compact_head_chunks().await.unwrap();
    assert!(seg_files(&db).is_empty());
    assert_eq!(all(&db, 0, 100_000), want);
}

fn seg_files_in(dir: &std::path::Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("chunks_head"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn damaged_files_are_errors_not_panics() {
    for damage in ["flip", "truncate"] {
        let t = open(true).await;
        let db = &t.db;
        let s: Vec<(i64, f64)> = (0..50).map(|k| (k * 100, k as f64)).collect();
        floats(db, 0, &s);
        db.compact_head_chunks().await.unwrap();
        let files = seg_files(db);
        assert_eq!(files.len(), 1);
        {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&files[0])
                .unwrap();
            match damage {
                "flip" => {
                    // In the last record: the live compact chunk (the
                    // float chunks sealed by the appends come before it).
                    let at = f.metadata().unwrap().len() - 6;
                    let mut b = [0u8; 1];
                    f.read_exact_at(&mut b, at).unwrap_or(());
                    f.write_all_at(&[b[0] ^ 0x10], at).unwrap();
                }
                _ => f.set_len(20).unwrap(),
            }
        }
        let e = db
            .select(&[any()], &SelectHints::range(0, 100_000))
            .unwrap_err()
            .to_string();
        assert!(e.contains("head chunk file"), "{damage}: {e}");
        assert!(
            e.contains(if damage == "flip" {
                "checksum"
            } else {
                "offset"
            }),
            "{damage}: {e}"
        );
        // An out-of-order sample in the damaged range cannot be checked
        // for a duplicate: refused.
        let r = floats(db, 0, &[(150, 1.0)]);
        assert_eq!(reasons(&r), [RejectReason::Duplicate], "{damage}");
        // A block cut fails and keeps the head as it is.
        assert!(db.flush_head().await.is_err());
        assert!(db.block_metas().is_empty());
        // In-order appends go on.
        assert_eq!(floats(db, 0, &[(10_000, 1.0)]).rejected, 0);
    }
}
