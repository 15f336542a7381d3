//! The threads that append to the storage engine.
//!
//! Appends run on a small fixed set of threads (one per core, at least
//! two) instead of tokio's blocking pool, which grows a thread per
//! concurrent request. Appending is CPU-bound, so more threads than cores
//! add no throughput; but every thread that allocates series, chunks and
//! WAL buffers gets its own allocator heap, and each heap keeps partly
//! used pages of its own: the engine bench measures about 90 B more
//! resident memory per series with eight appending threads than with one,
//! about 35 B more with two.
//!
//! Jobs queue in arrival order; a job that panics is reported to its
//! caller as failed and its thread goes on with the next one.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// The append job did not finish (it panicked, or no append thread
/// could be started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendTaskFailed;

impl std::fmt::Display for AppendTaskFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the append task did not finish")
    }
}

impl std::error::Error for AppendTaskFailed {}

static POOL: OnceLock<Option<Sender<Job>>> = OnceLock::new();

/// Number of append threads: the available cores, at least two.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

fn start() -> Option<Sender<Job>> {
    let (tx, rx) = channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    let mut started = 0;
    for i in 0..threads() {
        let rx = Arc::clone(&rx);
        let spawned = std::thread::Builder::new()
            .name(format!("stratus-append-{i}"))
            .spawn(move || work(&rx));
        match spawned {
            Ok(_) => started += 1,
            Err(e) => tracing::warn!(error = %e, "starting an append thread"),
        }
    }
    (started > 0).then_some(tx)
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while taking a job.
        let job = match rx.lock() {
            Ok(r) => r.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else { return };
        // The job reports its own result; a panic drops its sender, which
        // the caller sees as a failed task.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

/// Runs `f` on an append thread and waits for its result.
pub async fn run<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, AppendTaskFailed> {
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    match POOL.get_or_init(start) {
        Some(pool) => pool.send(job).map_err(|_| AppendTaskFailed)?,
        // No thread could be started: tokio's blocking pool instead.
        None => {
            tokio::task::spawn_blocking(job)
                .await
                .map_err(|_| AppendTaskFailed)?;
        }
    }
    rx.await.map_err(|_| AppendTaskFailed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_survives_a_panicking_one() {
        assert_eq!(run(|| 2 + 2).await, Ok(4));
        let failed = run(|| -> u32 { panic!("boom") }).await;
        assert_eq!(failed, Err(AppendTaskFailed));
        for _ in 0..8 {
            let name = run(|| std::thread::current().name().map(str::to_string))
                .await
                .expect("job ran")
                .expect("named thread");
            assert!(name.starts_with("stratus-append-"), "{name}");
        }
    }
}
