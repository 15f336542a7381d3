//! The append threads: a small fixed set of OS threads (one per core, 2 to
//! 16) that run every remote-write and ingester append.
//!
//! Appends used to run on tokio's blocking pool, which starts a new thread
//! whenever all are busy (up to 512). The allocator keeps one heap per
//! thread, and a head's memory (series records, chunk buffers allocated and
//! freed at every chunk cut) then spreads over as many heaps, each with
//! its own partly used pages: the engine bench's `STRATUS_BENCH_POOL`
//! shows resident memory per series growing with the number of appending
//! threads at the same live bytes. A fixed set as large as the machine's
//! parallelism keeps the appends' throughput and bounds that overhead.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// Why an append task produced no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendTaskError(String);

impl std::fmt::Display for AppendTaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AppendTaskError {}

fn pool() -> &'static mpsc::Sender<Job> {
    static POOL: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let n = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 16));
        for i in 0..n {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("stratus-append-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next
                        // job, never while running one.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if spawned.is_err() {
                // Fewer threads than planned; at least one is needed, and
                // `run` reports the failure when none could start.
                break;
            }
        }
        tx
    })
}

/// Runs `f` (an append) on the append threads and returns its result.
/// A panic in `f` is reported as an error; the thread survives it.
pub async fn run<F, R>(f: F) -> Result<R, AppendTaskError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let r = std::panic::catch_unwind(AssertUnwindSafe(f));
        let _ = tx.send(r.map_err(|_| AppendTaskError("append task panicked".into())));
    });
    if pool().send(job).is_err() {
        return Err(AppendTaskError("no append thread is running".into()));
    }
    match rx.await {
        Ok(r) => r,
        Err(_) => Err(AppendTaskError("no append thread is running".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_survives_panics() {
        assert_eq!(run(|| 41 + 1).await, Ok(42));
        let e = run(|| -> u32 { panic!("boom") }).await;
        assert!(e.is_err());
        let names = run(|| std::thread::current().name().map(str::to_owned)).await;
        assert!(
            names
                .ok()
                .flatten()
                .is_some_and(|n| n.starts_with("stratus-append-"))
        );
        // Many concurrent jobs all complete.
        let mut hs = Vec::new();
        for i in 0..64u64 {
            hs.push(tokio::spawn(run(move || i * 2)));
        }
        let mut sum = 0;
        for h in hs {
            sum += h.await.ok().and_then(Result::ok).unwrap_or(0);
        }
        assert_eq!(sum, (0..64u64).map(|i| i * 2).sum::<u64>());
    }
}
