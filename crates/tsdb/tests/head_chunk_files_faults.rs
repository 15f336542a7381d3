//! Head chunk files that cannot be written: sealed chunks wait in the
//! segment's tail buffer, readable, up to its limit, then stay in the
//! heap; nothing is lost, and everything reaches the files once writes
//! work again. (A test binary of its own: the failpoint is process-wide.)

use std::sync::Arc;
use std::time::Duration;

use stratus_model::{Labels, MatchType, Matcher, Sample};
use stratus_objstore::Bucket;
use stratus_tsdb::{Db, DbConfig, Queryable, SelectHints, SeriesSamples, failpoint};

fn cfg(files: bool) -> DbConfig {
    let mut cfg = DbConfig::default();
    cfg.head.block_range = 1 << 40;
    cfg.head.chunk_samples = 4;
    cfg.max_future = Duration::from_secs(100 * 365 * 86400);
    cfg.head_chunk_files = files;
    cfg
}

fn dump(db: &Db) -> Vec<(Labels, Vec<(i64, u64)>)> {
    let any = Matcher::new(MatchType::RegexMatch, "__name__", ".+").unwrap();
    db.select(&[any], &SelectHints::range(0, i64::MAX / 2))
        .unwrap()
        .into_iter()
        .map(|s| {
            let v = s
                .samples(0, i64::MAX / 2)
                .iter()
                .map(|&(t, v)| (t, v.to_bits()))
                .collect();
            (s.labels, v)
        })
        .collect()
}

#[tokio::test]
async fn unwritable_files_lose_nothing() {
    let (dir_on, dir_off, bdir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let bucket = Bucket::local(bdir.path()).unwrap();
    let on = Arc::new(
        Db::open(dir_on.path(), bucket.clone(), cfg(true))
            .await
            .unwrap(),
    );
    let off = Arc::new(Db::open(dir_off.path(), bucket, cfg(false)).await.unwrap());
    failpoint::set("head.chunk_files.write", Some("error"));
    // 200 series x 400 samples: 20,000 sealed chunks of about 60 record
    // bytes, more than a tail may hold (1 MiB).
    for round in 0..10 {
        for i in 0..200 {
            let l = Labels::from_pairs([("__name__", "m"), ("i", &*i.to_string())]);
            let s: Vec<Sample> = (0..40)
                .map(|k| {
                    let t = (round * 40 + k) * 1000;
                    Sample {
                        t,
                        v: (t * i) as f64 * 0.25,
                    }
                })
                .collect();
            for db in [&on, &off] {
                let r = db
                    .append(&[SeriesSamples {
                        labels: &l,
                        samples: &s,
                    }])
                    .unwrap();
                assert_eq!(r.rejected, 0);
            }
        }
    }
    let want = dump(&off);
    assert_eq!(dump(&on), want);
    // Past the tail's limit, chunks stayed in the heap.
    assert!(on.head_memory().sealed_chunks > 20_000 * 40);
    // The tick's write fails: reported, not fatal; still all readable.
    on.maintain().await.unwrap();
    assert_eq!(dump(&on), want);
    failpoint::set("head.chunk_files.write", None);
    on.maintain().await.unwrap();
    on.compact_head_chunks().await.unwrap();
    assert_eq!(dump(&on), want);
    let m = on.head_memory();
    assert_eq!(m.sealed_chunks, m.series * 40, "{m:?}");
    // Reopened: the WAL rebuilds the same head.
    on.close().unwrap();
    drop(on);
    let bucket = Bucket::local(bdir.path()).unwrap();
    let on = Db::open(dir_on.path(), bucket, cfg(true)).await.unwrap();
    assert_eq!(dump(&on), want);
}
