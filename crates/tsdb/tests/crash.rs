//! Crash tests in real processes: a child process appends at full speed
//! (with block cuts, WAL checkpoints and compactions running beside it)
//! and is killed with SIGKILL at random moments, or aborts itself at a
//! failpoint inside a block cut or a compaction. After each crash the
//! database is reopened and must hold every acknowledged sample and
//! nothing else (the one batch in flight at the kill may be present or
//! absent, but never partially).
//!
//! Trials: `STRATUS_CRASH_TRIALS` (default 24; set e.g. 200 for a long run).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_model::{Labels, MatchType, Matcher, Sample};
use stratus_objstore::Bucket;
use stratus_tsdb::{Db, DbConfig, Queryable, SelectHints, SeriesSamples};

const SERIES: usize = 40;
/// Synthetic time between batches; with the child's pacing below this
/// crosses a 1-minute block range a few times per second.
const STEP: i64 = 100;

fn cfg() -> DbConfig {
    let mut c = DbConfig::default();
    c.head.block_range = 60_000;
    c.head.chunk_samples = 30;
    c.head.ooo_window = 24 * 3_600_000;
    c.compaction_ranges = vec![60_000, 300_000, 1_200_000];
    // Synthetic time runs far ahead of the wall clock in this test.
    c.max_future = Duration::from_secs(100 * 365 * 86400);
    c
}

fn series_labels(k: usize) -> Labels {
    Labels::from_pairs([
        ("__name__", "crash_test"),
        ("k", &format!("{k:03}")[..]),
        ("job", "crash"),
    ])
}

fn value(batch: u64, k: usize) -> f64 {
    (batch * SERIES as u64 + k as u64) as f64
}

async fn open(dir: &std::path::Path) -> Arc<Db> {
    let bucket = Bucket::local(&dir.join("bucket")).unwrap();
    Arc::new(Db::open(&dir.join("db"), bucket, cfg()).await.unwrap())
}

/// Child body: appends batches from `start` on, printing `ACK n` after
/// each acknowledged batch. Runs maintenance concurrently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the crash tests as a child process"]
async fn crash_child() {
    let Ok(dir) = std::env::var("CRASH_DIR") else {
        return;
    };
    let base: i64 = std::env::var("CRASH_BASE").unwrap().parse().unwrap();
    let start: u64 = std::env::var("CRASH_START").unwrap().parse().unwrap();
    let db = open(std::path::Path::new(&dir)).await;
    let d2 = db.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = d2.maintain().await {
                eprintln!("maintenance failed: {e}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let labels: Vec<Labels> = (0..SERIES).map(series_labels).collect();
    println!("READY");
    for b in start.. {
        let t = base + b as i64 * STEP;
        let samples: Vec<[Sample; 1]> =
            (0..SERIES).map(|k| [Sample::new(t, value(b, k))]).collect();
        let batch: Vec<SeriesSamples<'_>> = labels
            .iter()
            .zip(&samples)
            .map(|(l, s)| SeriesSamples {
                labels: l,
                samples: s,
            })
            .collect();
        let r = db.append(&batch).unwrap();
        assert_eq!(r.rejected, 0, "{:?}", r.errors.first());
        println!("ACK {b}");
        if b % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Reads back every batch and checks it against the acknowledged count.
/// Returns the number of complete batches present.
fn verify(db: &Db, base: i64, acked: Option<u64>) -> u64 {
    let m = Matcher::new(MatchType::Equal, "__name__", "crash_test").unwrap();
    let series = db
        .select(&[m], &SelectHints::range(i64::MIN / 2, i64::MAX / 2))
        .unwrap();
    let mut present: Option<u64> = None;
    for (k, s) in series.iter().enumerate() {
        assert_eq!(s.labels, series_labels(k), "unexpected series");
        let samples = s.samples(i64::MIN / 2, i64::MAX / 2);
        for (i, (t, v)) in samples.iter().enumerate() {
            assert_eq!(
                *t,
                base + i as i64 * STEP,
                "series {k}: gap or extra sample at index {i}"
            );
            assert_eq!(
                v.to_bits(),
                value(i as u64, k).to_bits(),
                "series {k} batch {i}: wrong value"
            );
        }
        let n = samples.len() as u64;
        match present {
            None => present = Some(n),
            Some(p) => assert_eq!(p, n, "batch written partially across series"),
        }
    }
    let n = present.unwrap_or(0);
    if let Some(a) = acked {
        assert!(
            n > a,
            "acknowledged batch {a} lost: only {n} batches present"
        );
        assert!(
            n <= a + 2,
            "{n} batches present but only {a} acknowledged (+1 in flight)"
        );
    }
    n
}

#[test]
fn kill9_during_appends_cuts_and_compactions_loses_nothing() {
    let trials: usize = std::env::var("STRATUS_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let dir = tempfile::tempdir().unwrap();
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 3_600_000;
    let exe = std::env::current_exe().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let failpoints = [
        "block.upload.before=abort",
        "block.upload.indexed=abort",
        "block.upload.after=abort",
        "block.delete.marked=abort",
        "compact.written=abort",
        "compact.published=abort",
    ];
    let mut next = 0u64;
    let mut aborted = 0;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for trial in 0..trials {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CRASH_DIR", dir.path())
        .env("CRASH_BASE", base.to_string())
        .env("CRASH_START", next.to_string())
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.path().join("child.log"))
                .unwrap(),
        ));
        // Every third trial dies at a failpoint inside a cut or compaction.
        let fp = (trial % 3 == 2).then(|| failpoints[(trial / 3) % failpoints.len()]);
        if let Some(fp) = fp {
            cmd.env("STRATUS_FAILPOINTS", fp);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<u64>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("ACK ").and_then(|n| n.parse().ok()) {
                    if tx.send(n).is_err() {
                        break;
                    }
                }
            }
        });
        // Let it run a random while (or until it aborts at its failpoint).
        let run_for = Duration::from_millis(if fp.is_some() { 3000 } else { 40 + rnd() % 400 });
        let deadline = Instant::now() + run_for;
        let mut acked: Option<u64> = None;
        let mut died = false;
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(n) => acked = Some(n),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(_)) = child.try_wait() {
                        died = true;
                        break;
                    }
                }
                Err(_) => {
                    // Output closed: the child is exiting on its own.
                    let until = Instant::now() + Duration::from_secs(2);
                    while Instant::now() < until && !died {
                        died = matches!(child.try_wait(), Ok(Some(_)));
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    break;
                }
            }
        }
        child.kill().ok(); // SIGKILL
        child.wait().unwrap();
        // Every ACK the child wrote before dying is still in the pipe: read
        // them all before judging.
        reader.join().unwrap();
        while let Ok(n) = rx.try_recv() {
            acked = Some(n);
        }
        let present = rt.block_on(async {
            let db = open(dir.path()).await;
            let n = verify(&db, base, acked);
            // Reopen once more: recovery itself must be repeatable.
            db.close().unwrap();
            drop(db);
            let db = open(dir.path()).await;
            assert_eq!(verify(&db, base, acked), n);
            n
        });
        eprintln!(
            "trial {trial}: acked {acked:?}, present {present}, failpoint {fp:?}, aborted itself: {died}"
        );
        aborted += usize::from(died);
        assert!(
            acked.is_some() || fp.is_some(),
            "child acknowledged nothing: see child.log"
        );
        next = present;
    }
    assert!(next > 0, "the child never acknowledged anything");
    assert!(
        trials < 6 || aborted > 0,
        "no child ever died at a failpoint inside a cut or compaction"
    );
    // The run crossed many block ranges, so cuts and compactions happened.
    let db = rt.block_on(open(dir.path()));
    assert!(!db.block_metas().is_empty(), "no block was ever cut");
}
