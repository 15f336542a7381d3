//! Start timestamps survive every storage step: head (open and sealed
//! chunks), WAL replay, block cut (with out-of-order samples merged in)
//! and compaction; series without start timestamps keep plain chunks.

use std::sync::Arc;

use stratus_model::{FloatHistogram, Labels, MatchType, Matcher, Sample};
use stratus_objstore::Bucket;
use stratus_tsdb::{
    Db, DbConfig, Queryable, SelectHints, SeriesHistograms, SeriesSamples, StartTimestamps, Value,
};

const H: i64 = 3_600_000;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `(t, is_histogram, st)` of every sample of every series `m{...}`, and
/// whether any of its parts is stored with start timestamps.
type Dump = Vec<(Labels, bool, Vec<(i64, bool, i64)>)>;

fn dump(db: &Db, lo: i64, hi: i64) -> Dump {
    let m = Matcher::new(MatchType::Equal, "__name__", "m").unwrap();
    db.select(&[m], &SelectHints::range(lo, hi))
        .unwrap()
        .into_iter()
        .map(|s| {
            let samples = s
                .st_samples(lo, hi)
                .unwrap()
                .into_iter()
                .map(|(t, v, st)| (t, matches!(v, Value::FloatHistogram(_)), st))
                .collect();
            (s.labels.clone(), s.has_start_timestamps(), samples)
        })
        .collect()
}

#[tokio::test]
async fn start_timestamps_round_trip_head_wal_blocks_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let bdir = tempfile::tempdir().unwrap();
    let bucket = Bucket::local(bdir.path()).unwrap();
    let mut cfg = DbConfig::default();
    cfg.head.ooo_window = 30 * 24 * H;
    cfg.compaction_ranges = vec![2 * H, 6 * H];
    let end = now() / (6 * H) * (6 * H);
    let start = end - 5 * H;
    let db = Arc::new(
        Db::open(dir.path(), bucket.clone(), cfg.clone())
            .await
            .unwrap(),
    );
    let cum = Labels::from_pairs([("__name__", "m"), ("k", "cumulative")]);
    let del = Labels::from_pairs([("__name__", "m"), ("k", "delta")]);
    let plain = Labels::from_pairs([("__name__", "m"), ("k", "plain")]);
    let hist = Labels::from_pairs([("__name__", "m"), ("k", "hist")]);
    let step = 60_000;
    let n = 5 * 60; // 5 h of minutes: chunks sealed, several block ranges
    let times: Vec<i64> = (0..n).map(|i| start + i * step).collect();
    let samples: Vec<Sample> = times.iter().map(|&t| Sample::new(t, t as f64)).collect();
    // Cumulative: restarted every 100 minutes; delta: each sample starts
    // at the previous one; some samples without (0).
    let cum_st: Vec<i64> = times
        .iter()
        .enumerate()
        .map(|(i, _)| {
            if i % 37 == 5 {
                0
            } else {
                start + (i as i64 / 100) * 100 * step - 1
            }
        })
        .collect();
    let del_st: Vec<i64> = times.iter().map(|t| t - step).collect();
    let hs: Vec<(i64, FloatHistogram)> = times
        .iter()
        .map(|&t| {
            let mut h = FloatHistogram::default();
            h.count = (t % 1000) as f64;
            h.sum = h.count;
            (t, h)
        })
        .collect();
    let h_st: Vec<i64> = times.iter().map(|t| t - 30_000).collect();
    let batch = [
        SeriesSamples {
            labels: &cum,
            samples: &samples,
        },
        SeriesSamples {
            labels: &del,
            samples: &samples,
        },
        SeriesSamples {
            labels: &plain,
            samples: &samples,
        },
    ];
    let hb = [SeriesHistograms {
        labels: &hist,
        histograms: &[],
        float_histograms: &hs,
    }];
    let r = db
        .append_with_start_timestamps(
            &batch,
            &hb,
            &StartTimestamps {
                samples: &[&cum_st, &del_st, &[]],
                histograms: &[],
                float_histograms: &[&h_st],
            },
        )
        .unwrap();
    assert_eq!(r.rejected, 0);
    // A late (out-of-order) sample: stored, without its start timestamp.
    let late = [Sample::new(start + 30, 1.0)];
    db.append_with_start_timestamps(
        &[SeriesSamples {
            labels: &del,
            samples: &late,
        }],
        &[],
        &StartTimestamps {
            samples: &[&[start]],
            ..Default::default()
        },
    )
    .unwrap();

    let expect = |labels: &Labels, sts: &[i64], is_hist: bool| -> Vec<(i64, bool, i64)> {
        let mut v: Vec<(i64, bool, i64)> = times
            .iter()
            .zip(sts.iter().chain(std::iter::repeat(&0)))
            .map(|(&t, &st)| (t, is_hist, st))
            .collect();
        if labels == &del {
            v.insert(1, (start + 30, false, 0));
        }
        v
    };
    let want: Dump = vec![
        (cum.clone(), true, expect(&cum, &cum_st, false)),
        (del.clone(), true, expect(&del, &del_st, false)),
        (hist.clone(), true, expect(&hist, &h_st, true)),
        (plain.clone(), false, expect(&plain, &[], false)),
    ];
    let mut got = dump(&db, start, end);
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want_sorted = want.clone();
    want_sorted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want_sorted, "head");

    // WAL replay.
    db.close().unwrap();
    drop(db);
    let db = Arc::new(
        Db::open(dir.path(), bucket.clone(), cfg.clone())
            .await
            .unwrap(),
    );
    let mut got = dump(&db, start, end);
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want_sorted, "after WAL replay");

    // Head chunk compaction must not drop them; then blocks and
    // compaction (2h -> 6h) and a forced rewrite.
    db.compact_head_chunks().await.unwrap();
    db.flush_head().await.unwrap();
    assert!(!db.block_metas().is_empty());
    let mut got = dump(&db, start, end);
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want_sorted, "after block cut");
    db.maintain().await.unwrap();
    db.force_compact().await.unwrap();
    assert!(db.block_metas().iter().any(|m| m.compaction.level > 1));
    let mut got = dump(&db, start, end);
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want_sorted, "after compaction");
    db.close().unwrap();
}
