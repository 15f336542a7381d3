//! Compactor ownership with real processes and a real etcd: two
//! `--target=compactor` processes on one local-filesystem bucket (their
//! `<data-dir>/blocks` are symlinks to one directory) split the tenants
//! through the compactor ring, each tenant compacted by exactly one of
//! them; after one is killed with SIGKILL, its tenants are compacted by
//! the survivor once the dead one's heartbeat timed out; a retention
//! limit set in the shared registry (etcd) applies to its tenant.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_model::{Labels, TenantId};
use stratus_objstore::Bucket;
use stratus_ring::Kv;
use stratus_tenancy::{Limits, Registry};
use stratus_tsdb::bucket_index;
use stratus_tsdb::{BlockCompaction, BlockWriter, ChunkInput, Encoding, encode_compact};
use ulid::Ulid;

mod common;
use common::{Proc, http_client, spawn_stratus};

const H: i64 = 3_600_000;
const TENANTS: usize = 8;

/// Uploads a level-1 block of 2 series (one sample a minute over the 2h
/// window starting at `min`) for `tenant` and lists it in ingester
/// `ing`'s index, as an ingester ships it.
async fn ship(bucket: &Bucket, tmp: &Path, tenant: &str, ing: &str, min: i64) {
    let b = bucket.with_prefix(tenant);
    let id = Ulid::new();
    let dir = tmp.join(id.to_string());
    let mut w = BlockWriter::create(&dir, id, min, min + 2 * H).unwrap();
    for s in 0..2 {
        let l = Labels::from_pairs([("__name__", "m".to_string()), ("s", s.to_string())]);
        let samples: Vec<(i64, f64)> = (0..120).map(|k| (min + k * 60_000, k as f64)).collect();
        let data = encode_compact(&samples);
        let chunk = ChunkInput {
            mint: min,
            maxt: min + 119 * 60_000,
            encoding: Encoding::Compact as u8,
            data: &data,
            num_samples: 120,
        };
        w.add_series(&l, &[chunk]).unwrap();
    }
    let meta = w
        .finish(BlockCompaction {
            level: 1,
            sources: vec![id],
            parents: vec![],
            deletable: false,
        })
        .unwrap();
    b.upload_dir(&id.to_string(), &dir, &["meta.json"])
        .await
        .unwrap();
    let key = bucket_index::key_for(Some(ing));
    let mut ix = bucket_index::read_key(&b, &key)
        .await
        .unwrap()
        .unwrap_or_default();
    ix.add(&meta);
    bucket_index::write_key(&b, &ix, &key, 0).await.unwrap();
}

/// The live blocks of `tenant` (every index merged, marks applied).
async fn live(bucket: &Bucket, tenant: &str) -> usize {
    let all = bucket_index::read_all(&bucket.with_prefix(tenant))
        .await
        .unwrap();
    bucket_index::merge(all.iter().map(|(_, ix)| ix)).map_or(0, |m| m.live_blocks().count())
}

fn tenant(i: usize) -> String {
    format!("tenant-{i}")
}

/// Tenants a compactor's log says it compacted.
fn compacted_by(p: &Proc) -> Vec<String> {
    let log = p.log.lock().unwrap();
    (0..TENANTS)
        .map(tenant)
        .filter(|t| {
            let needle = format!("tenant={t} ");
            log.iter()
                .any(|l| l.contains("compactor: tenant compacted") && l.contains(&needle))
        })
        .collect()
}

fn spawn_compactor(dir: &Path, shared: &Path, etcd: &str) -> Proc {
    std::os::unix::fs::symlink(shared, dir.join("blocks")).unwrap();
    spawn_stratus(
        dir,
        &[
            "--auth=none",
            "--target=compactor",
            &format!("--etcd.endpoints={etcd}"),
            "--ring.heartbeat-period=200ms",
            "--ring.heartbeat-timeout=2s",
            "--compactor.interval=200ms",
            "--compactor.block-ranges=2h",
        ],
    )
}

/// Waits (at most `secs`) until every tenant in `tenants` has `want` live
/// blocks.
async fn wait_live(bucket: &Bucket, tenants: &[String], want: usize, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let mut counts = BTreeMap::new();
        for t in tenants {
            counts.insert(t.clone(), live(bucket, t).await);
        }
        if counts.values().all(|&n| n == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not compacted to {want} block(s) each: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_split_between_compactors_and_move_when_one_dies() {
    let c = http_client();
    let etcd = stratus_ring::EtcdServer::start().await.expect("etcd");
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("bucket");
    std::fs::create_dir_all(&shared).unwrap();
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let mut procs = [
        Some(spawn_compactor(&da, &shared, etcd.url())),
        Some(spawn_compactor(&db, &shared, etcd.url())),
    ];
    // Both compactors are ACTIVE in the ring each one sees.
    let deadline = Instant::now() + Duration::from_secs(10);
    for p in procs.iter().flatten() {
        loop {
            let r = c
                .get(format!("{}/compactor/ring?format=json", p.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            let healthy = v["instances"]
                .as_array()
                .map_or(0, |a| a.iter().filter(|i| i["healthy"] == true).count());
            if healthy == 2 {
                break;
            }
            assert!(Instant::now() < deadline, "ring not formed: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Two ingesters shipped the same window of every tenant.
    let bucket = Bucket::local(&shared).unwrap();
    let src = tmp.path().join("src");
    let w1 = 1_700_000_000_000 / (2 * H) * (2 * H);
    let all: Vec<String> = (0..TENANTS).map(tenant).collect();
    for t in &all {
        for ing in ["i0", "i1"] {
            ship(&bucket, &src, t, ing, w1).await;
        }
    }
    wait_live(&bucket, &all, 1, 10).await;
    // (The log line follows the index write: give the pipe a moment.)
    let deadline = Instant::now() + Duration::from_secs(5);
    let by: Vec<Vec<String>> = loop {
        let by: Vec<Vec<String>> = procs.iter().flatten().map(compacted_by).collect();
        if by.iter().map(Vec::len).sum::<usize>() >= TENANTS || Instant::now() > deadline {
            break by;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for t in &all {
        let n = by.iter().filter(|b| b.contains(t)).count();
        assert_eq!(n, 1, "{t} compacted by {n} compactors: {by:?}");
    }

    eprintln!("compacted by each compactor: {by:?}");
    // Kill the compactor that did the most; the survivor takes its
    // tenants over once the heartbeat timed out.
    let victim = usize::from(by[1].len() > by[0].len());
    let survivor = 1 - victim;
    let moved = by[victim].clone();
    assert!(!moved.is_empty());
    if let Some(mut p) = procs[victim].take() {
        p.child.kill().unwrap();
        let _ = p.child.wait();
    }
    let killed_at = Instant::now();
    let w2 = w1 + 2 * H;
    for t in &moved {
        for ing in ["i0", "i1"] {
            ship(&bucket, &src, t, ing, w2).await;
        }
    }
    wait_live(&bucket, &moved, 2, 15).await;
    assert!(
        killed_at.elapsed() >= Duration::from_millis(1500),
        "taken over before the heartbeat timeout"
    );
    let Some(s) = &procs[survivor] else {
        unreachable!()
    };
    // (The log line follows the index write: give the pipe a moment.)
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now_by = compacted_by(s);
        let missing: Vec<&String> = moved.iter().filter(|t| !now_by.contains(t)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not compacted by the survivor: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = c
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(&format!("stratus_compactor_tenants_owned {TENANTS}")),
        "{text}"
    );
    assert!(
        text.contains("stratus_compactor_groups_merged_total{kind=\"vertical\"}"),
        "{text}"
    );

    // A retention limit set in the registry every node shares (etcd)
    // applies at the survivor's next pass: the tenant's blocks (from
    // 2023) are marked for deletion; the other tenants keep theirs.
    let kv: Arc<dyn Kv> = Arc::new(etcd.client().await.unwrap());
    let reg = stratus_cluster::KvRegistry::start(kv).await.unwrap();
    let limited = TenantId::new(&tenant(0)).unwrap();
    let limits = Limits {
        retention: Some(Duration::from_secs(3600)),
        ..Limits::default()
    };
    reg.create_tenant(&limited, None, limits).unwrap();
    wait_live(&bucket, &[tenant(0)], 0, 10).await;
    for t in &all[1..] {
        assert!(live(&bucket, t).await >= 1, "{t} lost its blocks");
    }
}
