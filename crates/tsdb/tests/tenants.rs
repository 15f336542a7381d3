//! Tenant databases: isolation on disk and in queries, lazy open, idle
//! close with data surviving, per-tenant statistics.

use std::time::Duration;

use stratus_model::{Labels, Matcher, Sample, TenantId};
use stratus_objstore::Bucket;
use stratus_tsdb::{DbConfig, Queryable, SelectHints, SeriesSamples, Tenants};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn tenants_are_isolated_and_reopen_after_idle_close() {
    let root = tempfile::tempdir().unwrap();
    let bucket = Bucket::local(&root.path().join("blocks")).unwrap();
    let tenants = Tenants::new(root.path(), bucket, DbConfig::default());
    let a = TenantId::new("team-a").unwrap();
    let b = TenantId::new("team-b").unwrap();
    let t = now() - 1000;
    let la = Labels::from_pairs([("__name__", "only_in_a"), ("job", "x")]);
    let lb = Labels::from_pairs([("__name__", "only_in_b"), ("job", "x")]);
    let s = [Sample::new(t, 1.0)];
    tenants
        .get(&a)
        .await
        .unwrap()
        .append(&[SeriesSamples {
            labels: &la,
            samples: &s,
        }])
        .unwrap();
    tenants
        .get(&b)
        .await
        .unwrap()
        .append(&[SeriesSamples {
            labels: &lb,
            samples: &s,
        }])
        .unwrap();
    let job = Matcher::eq("job", "x");
    let names = |db: &stratus_tsdb::Db| -> Vec<String> {
        db.select(
            std::slice::from_ref(&job),
            &SelectHints::range(0, i64::MAX / 2),
        )
        .unwrap()
        .iter()
        .map(|s| s.labels.metric_name().unwrap().to_string())
        .collect()
    };
    assert_eq!(names(&tenants.get(&a).await.unwrap()), vec!["only_in_a"]);
    assert_eq!(names(&tenants.get(&b).await.unwrap()), vec!["only_in_b"]);
    assert!(root.path().join("tenants/team-a/wal").is_dir());
    assert!(root.path().join("tenants/team-b/wal").is_dir());
    let stats = tenants.stats().await;
    assert_eq!(stats.len(), 2);
    assert!(
        stats
            .iter()
            .all(|(_, s)| s.head_series == 1 && s.samples_appended == 1)
    );
    // Idle close, then lazy reopen replays the WAL.
    tenants.maintain(Duration::ZERO).await;
    assert!(tenants.get_open(&a).await.is_none(), "idle tenant closed");
    assert_eq!(names(&tenants.get(&a).await.unwrap()), vec!["only_in_a"]);
    assert_eq!(tenants.list().await.unwrap(), vec![a, b]);
}

#[tokio::test]
async fn retention_and_ooo_window_per_tenant() {
    let root = tempfile::tempdir().unwrap();
    let bucket = Bucket::local(&root.path().join("blocks")).unwrap();
    let mut cfg = DbConfig::default();
    cfg.head.ooo_window = 30 * 24 * 3_600_000;
    // No level compaction: whether a merged block reaches past the
    // retention cutoff would depend on the hour of day.
    cfg.compaction_ranges = vec![2 * 3_600_000];
    let tenants = Tenants::new(root.path(), bucket, cfg);
    let short = TenantId::new("short").unwrap();
    let long = TenantId::new("long").unwrap();
    tenants
        .set_overrides(
            &short,
            stratus_tsdb::TenantOverrides {
                retention: Some(Some(Duration::from_secs(3 * 3600))),
                ooo_window: Some(0),
                ..Default::default()
            },
        )
        .await;
    let h = 3_600_000;
    let end = now() / h * h;
    let l = Labels::from_pairs([("__name__", "m")]);
    let samples: Vec<Sample> = (0..8 * 240)
        .map(|i| Sample::new(end - 8 * h + i * 15_000, 1.0))
        .collect();
    for t in [&short, &long] {
        let db = tenants.get(t).await.unwrap();
        let r = db
            .append(&[SeriesSamples {
                labels: &l,
                samples: &samples,
            }])
            .unwrap();
        assert_eq!(r.rejected, 0);
        db.maintain().await.unwrap();
    }
    let oldest = |db: &stratus_tsdb::Db| {
        db.select(
            &[Matcher::eq("__name__", "m")],
            &SelectHints::range(0, i64::MAX / 2),
        )
        .unwrap()[0]
            .samples(0, i64::MAX / 2)[0]
            .0
    };
    assert!(
        oldest(&tenants.get(&short).await.unwrap()) >= end - 6 * h,
        "short retention applied"
    );
    assert_eq!(
        oldest(&tenants.get(&long).await.unwrap()),
        end - 8 * h,
        "default keeps all"
    );
    // The short tenant refuses out-of-order samples; the other accepts them.
    let late = [Sample::new(end - 90_000 + 7, 2.0)];
    let r = tenants
        .get(&short)
        .await
        .unwrap()
        .append(&[SeriesSamples {
            labels: &l,
            samples: &late,
        }])
        .unwrap();
    assert_eq!(r.errors[0].reason, stratus_tsdb::RejectReason::OutOfOrder);
    let r = tenants
        .get(&long)
        .await
        .unwrap()
        .append(&[SeriesSamples {
            labels: &l,
            samples: &late,
        }])
        .unwrap();
    assert_eq!(r.rejected, 0);
}
