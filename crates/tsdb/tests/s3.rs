//! The storage engine on a real S3-compatible server (`s3s-fs` on
//! 127.0.0.1): blocks cut and compacted into S3 with the bucket index kept
//! up to date; a fresh database with an empty local directory on the same
//! bucket answers for that history, through the index or, when the index
//! is missing or damaged, by listing.

use std::sync::Arc;

use bytes::Bytes;
use stratus_model::{Labels, MatchType, Matcher, Sample};
use stratus_objstore::Bucket;
use stratus_tsdb::bucket_index::{self, BucketIndex, INDEX_KEY};
use stratus_tsdb::{Db, DbConfig, Queryable, SelectHints, SeriesSamples};

#[path = "../../objstore/tests/common/s3server.rs"]
mod s3server;
use s3server::S3Server;

const H: i64 = 3_600_000;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

type Answer = Vec<(Labels, Vec<(i64, u64)>)>;

fn all(db: &Db, mint: i64, maxt: i64) -> Answer {
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

async fn open(dir: &std::path::Path, bucket: Bucket) -> Arc<Db> {
    let mut cfg = DbConfig::default();
    cfg.head.ooo_window = 24 * H;
    Arc::new(Db::open(dir, bucket, cfg).await.unwrap())
}

async fn stored_index(b: &Bucket) -> BucketIndex {
    let data = b
        .get(INDEX_KEY)
        .await
        .unwrap()
        .expect("bucket index written");
    BucketIndex::parse(&data).expect("valid bucket index")
}

#[tokio::test]
async fn blocks_in_s3_queryable_from_a_fresh_database() {
    let srv = S3Server::start(&["blocks"]);
    let bucket = Bucket::s3(&srv.config("blocks"))
        .unwrap()
        .with_prefix("tenant-a");
    let end = now() / H * H;
    let start = end - 6 * H;
    let dir1 = tempfile::tempdir().unwrap();
    let db = open(dir1.path(), bucket.clone()).await;
    for inst in ["a", "b", "c"] {
        let l = Labels::from_pairs([("__name__", "m"), ("instance", inst)]);
        let s: Vec<Sample> = (0..(6 * 60))
            .map(|i| Sample::new(start + i * 60_000, i as f64))
            .collect();
        db.append(&[SeriesSamples {
            labels: &l,
            samples: &s,
        }])
        .unwrap();
    }
    let expect = all(&db, start, end);
    assert_eq!(expect.len(), 3);
    let cut = db.flush_head().await.unwrap();
    assert!(cut.len() >= 3, "{cut:?}");
    assert_eq!(all(&db, start, end), expect);
    // The index lists exactly the blocks the database has.
    let ix = stored_index(&bucket).await;
    let mut want: Vec<String> = db
        .block_metas()
        .iter()
        .map(|m| m.ulid.to_string())
        .collect();
    let mut got: Vec<String> = ix.blocks.iter().map(|b| b.ulid.clone()).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    // Compaction replaces them: inputs leave the index, no mark stays.
    assert!(db.force_compact().await.unwrap() > 0);
    let ix = stored_index(&bucket).await;
    assert!(ix.deletion_marks.is_empty(), "{ix:?}");
    assert!(ix.blocks.iter().all(|b| b.compaction_level >= 2), "{ix:?}");
    assert_eq!(ix.blocks.len(), db.block_metas().len());
    assert_eq!(
        ix.blocks.iter().map(|b| b.num_samples).sum::<u64>(),
        3 * 6 * 60
    );
    let keys = srv.keys("blocks");
    for b in &ix.blocks {
        assert!(keys.contains(&format!("tenant-a/{}/meta.json", b.ulid)));
    }
    assert_eq!(all(&db, start, end), expect);
    db.close().unwrap();
    drop(db);

    // A fresh database, empty local directory, same bucket: the history
    // comes from S3 through the index.
    let dir2 = tempfile::tempdir().unwrap();
    let db2 = open(dir2.path(), bucket.clone()).await;
    assert_eq!(all(&db2, start, end), expect);
    assert!(db2.bucket_index().same_content(&ix));
    db2.close().unwrap();
    drop(db2);

    // No index: listing finds the same blocks, and the index is rebuilt.
    bucket.delete(INDEX_KEY).await.unwrap();
    let dir3 = tempfile::tempdir().unwrap();
    let db3 = open(dir3.path(), bucket.clone()).await;
    assert_eq!(all(&db3, start, end), expect);
    assert!(stored_index(&bucket).await.same_content(&ix));
    db3.close().unwrap();
    drop(db3);

    // A damaged index is ignored (listing) and rewritten.
    bucket
        .put(INDEX_KEY, Bytes::from_static(b"{\"version\":1,"))
        .await
        .unwrap();
    let dir4 = tempfile::tempdir().unwrap();
    let db4 = open(dir4.path(), bucket.clone()).await;
    assert_eq!(all(&db4, start, end), expect);
    assert!(stored_index(&bucket).await.same_content(&ix));
    db4.close().unwrap();
    drop(db4);

    // An entry whose meta.json never arrived (an unfinished upload) is
    // skipped and dropped; a deletion mark is finished on open.
    let mut stale = ix.clone();
    let ghost = ulid::Ulid::new().to_string();
    stale.blocks.push(stratus_tsdb::bucket_index::IndexBlock {
        ulid: ghost.clone(),
        ..ix.blocks[0].clone()
    });
    bucket
        .put(&format!("{ghost}/index"), Bytes::from_static(b"partial"))
        .await
        .unwrap();
    let victim = ix.blocks[0].ulid.clone();
    stale.mark_deleted(&victim, now());
    bucket_index::write(&bucket, &stale, now()).await.unwrap();
    let dir5 = tempfile::tempdir().unwrap();
    let db5 = open(dir5.path(), bucket.clone()).await;
    let after = stored_index(&bucket).await;
    assert!(
        after
            .blocks
            .iter()
            .all(|b| b.ulid != ghost && b.ulid != victim)
    );
    assert!(after.deletion_marks.is_empty());
    assert!(
        srv.keys("blocks")
            .iter()
            .all(|k| !k.contains(&ghost) && !k.contains(&victim))
    );
    let victim_range = (ix.blocks[0].min_time, ix.blocks[0].max_time);
    let left: usize = all(&db5, start, end).iter().map(|(_, v)| v.len()).sum();
    let removed = expect
        .iter()
        .flat_map(|(_, v)| v)
        .filter(|(t, _)| *t >= victim_range.0 && *t < victim_range.1)
        .count();
    assert_eq!(left, 3 * 6 * 60 - removed);
}
