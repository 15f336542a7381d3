//! Parallel evaluation across series.
//!
//! A large selection (many series times many steps) of an instant
//! selector, or of a range selector or subquery under a range function
//! (for a subquery: the windows over its evaluated series), is split into
//! contiguous chunks of series; the chunks are
//! walked on up to [`crate::EngineOptions::parallelism`] threads (scoped
//! `std` threads, the calling thread among them, taking chunks in turn),
//! each with its own state, and the states come back in chunk order. Every
//! series is still computed by the same code on one thread, so values
//! (Kahan sums and all) are bit-identical to a one-thread run, and merging
//! the states in chunk order restores series order. Small selections and
//! `parallelism = 1` take the one-thread path unchanged.
//!
//! Limits and statistics: every window is still checked against
//! `max_samples` and every series against the deadline on the thread that
//! walks it; window statistics are gathered per chunk
//! ([`crate::engine::WinCounts`]) and added up afterwards, so totals are
//! exact. The first failing chunk in series order decides the error, as in
//! a sequential walk; chunks after a failed one are abandoned early.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use stratus_model::Labels;

use crate::ast::{Expr, Subquery};
use crate::engine::{
    Ctx, Evaluator, InstantWalk, Result, Series, WinCounts, Window, WindowBuf, check_samples,
};
use crate::error::PromqlError;

/// Most threads the default setting uses.
const MAX_DEFAULT_THREADS: usize = 4;
/// Fewest windows (series × steps) worth splitting: below this a query
/// takes a few milliseconds at most and threads cost more than they save.
const MIN_WINDOWS: usize = 16_384;
/// Fewest series per chunk.
const MIN_CHUNK_SERIES: usize = 16;
/// Chunks per thread, so that threads finishing early take more work.
const CHUNKS_PER_THREAD: usize = 4;

/// The default [`crate::EngineOptions::parallelism`]: the available cores,
/// at most 4.
pub(crate) fn default_parallelism() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, MAX_DEFAULT_THREADS)
}

/// The chunks `series` series over `steps` steps are split into on
/// `threads` threads: one chunk (no threads) when not worth it.
pub(crate) fn plan(threads: usize, series: usize, steps: usize) -> Vec<Range<usize>> {
    let windows = series.saturating_mul(steps);
    if threads <= 1 || windows < MIN_WINDOWS || series < 2 * MIN_CHUNK_SERIES {
        return std::iter::once(0..series).collect();
    }
    let chunks = (threads * CHUNKS_PER_THREAD)
        .min(series / MIN_CHUNK_SERIES)
        .max(1);
    let (size, extra) = (series / chunks, series % chunks);
    let mut out = Vec::with_capacity(chunks);
    let mut at = 0;
    for k in 0..chunks {
        let len = size + usize::from(k < extra);
        out.push(at..at + len);
        at += len;
    }
    out
}

/// Tells a chunk whether an earlier chunk has failed (its own result no
/// longer matters).
#[derive(Debug)]
pub(crate) struct Stop {
    failed: AtomicUsize,
}

impl Stop {
    /// Whether chunk `k` may stop.
    pub(crate) fn stopped(&self, k: usize) -> bool {
        self.failed.load(Ordering::Relaxed) < k
    }
}

/// The work of one chunk: `(chunk number, its series, the shared stop
/// flag)` → its result, `None` when it stopped after another chunk failed.
pub(crate) type ChunkWork<'a, T> =
    dyn Fn(usize, Range<usize>, &Stop) -> Result<Option<T>> + Sync + 'a;

/// Runs `work(k, chunk, stop)` for every chunk on up to `threads` threads
/// and returns the results in chunk order, or the error of the first
/// failing chunk. `work` returns `Ok(None)` when it stopped because an
/// earlier chunk failed.
pub(crate) fn run_chunks<T: Send>(
    threads: usize,
    chunks: &[Range<usize>],
    work: &ChunkWork<'_, T>,
) -> Result<Vec<T>> {
    let stop = Stop {
        failed: AtomicUsize::new(usize::MAX),
    };
    let next = AtomicUsize::new(0);
    let worker = || {
        let mut done: Vec<(usize, Result<Option<T>>)> = Vec::new();
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some(chunk) = chunks.get(k) else {
                break;
            };
            if stop.stopped(k) {
                continue;
            }
            let r = work(k, chunk.clone(), &stop);
            if r.is_err() {
                stop.failed.fetch_min(k, Ordering::Relaxed);
            }
            done.push((k, r));
        }
        done
    };
    let threads = threads.clamp(1, chunks.len().max(1));
    let mut done = std::thread::scope(|sc| {
        let handles: Vec<_> = (1..threads).map(|_| sc.spawn(worker)).collect();
        let mut all = worker();
        for h in handles {
            match h.join() {
                Ok(d) => all.extend(d),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        all
    });
    done.sort_by_key(|d| d.0);
    let mut out = Vec::with_capacity(chunks.len());
    for (expect, (k, r)) in done.into_iter().enumerate() {
        match r? {
            Some(t) if k == expect => out.push(t),
            // A chunk skipped or abandoned: only after a failed one, whose
            // error was returned above.
            _ => return Err(abandoned()),
        }
    }
    if out.len() != chunks.len() {
        return Err(abandoned());
    }
    Ok(out)
}

fn abandoned() -> PromqlError {
    PromqlError::BadArgument {
        msg: "internal error: a chunk of series was not evaluated".into(),
    }
}

/// [`Evaluator::windows`] for callers whose per-window work can run on
/// several threads: `f` gets the windows with a state made by `init`, one
/// state per chunk of series; the states come back in series order (one
/// when not split). Plain range selectors and subqueries over enough
/// series are split; anything else (`anchored`/`smoothed`, small
/// selections, `parallelism = 1`) is walked on this thread with one state.
pub(crate) fn windows_par<S: Send>(
    ev: &mut Evaluator<'_>,
    arg: &Expr,
    ctx: &Ctx,
    init: &(dyn Fn() -> S + Sync),
    f: &(dyn Fn(&mut S, Window<'_>) -> Result<()> + Sync),
) -> Result<(Vec<Labels>, Vec<S>)> {
    let mut e = arg;
    while let Expr::Paren(inner) = e {
        e = inner;
    }
    let plain = match e {
        Expr::MatrixSelector { vs, range, .. } if !crate::extended::is_extended(vs) => {
            Some((vs, *range))
        }
        _ => None,
    };
    if let Expr::Subquery(sq) = e {
        if ev.parallelism > 1 {
            return subquery_par(ev, sq, ctx, init, f);
        }
    }
    let Some((vs, range)) = plain.filter(|_| ev.parallelism > 1) else {
        let mut s = init();
        let labels = ev.windows(arg, ctx, &mut |w| f(&mut s, w))?;
        return Ok((labels, vec![s]));
    };
    let Some((walk, selected)) = ev.range_walk(vs, range, ctx)? else {
        return Ok((Vec::new(), vec![init()]));
    };
    let chunks = plan(ev.parallelism, selected.len(), ctx.n());
    let counts0 = ev.win_counts(0);
    let work = |k: usize, chunk: Range<usize>, stop: &Stop| {
        let mut s = init();
        let mut counts = counts0.clone().map(|mut c| {
            c.rebase(chunk.start);
            c
        });
        let mut buf = WindowBuf::default();
        for si in chunk {
            if stop.stopped(k) {
                return Ok(None);
            }
            let Some(series) = selected.get(si) else {
                break;
            };
            walk.series(si, series, &mut buf, counts.as_mut(), &mut |w| f(&mut s, w))?;
        }
        Ok(Some((s, counts)))
    };
    let results = if chunks.len() <= 1 {
        let all = 0..selected.len();
        match work(
            0,
            all,
            &Stop {
                failed: AtomicUsize::new(usize::MAX),
            },
        )? {
            Some(r) => vec![r],
            None => return Err(abandoned()),
        }
    } else {
        run_chunks(ev.parallelism, &chunks, &work)?
    };
    let mut states = Vec::with_capacity(results.len());
    for (s, counts) in results {
        ev.merge_win_counts(counts);
        states.push(s);
    }
    let labels = selected.into_iter().map(|s| s.labels).collect();
    Ok((labels, states))
}

/// [`windows_par`] over a subquery: the inner expression is evaluated
/// once (itself split where it can be), then the windows of its series are
/// walked in chunks of series as for a range selector.
fn subquery_par<S: Send>(
    ev: &mut Evaluator<'_>,
    sq: &Subquery,
    ctx: &Ctx,
    init: &(dyn Fn() -> S + Sync),
    f: &(dyn Fn(&mut S, Window<'_>) -> Result<()> + Sync),
) -> Result<(Vec<Labels>, Vec<S>)> {
    let Some((walk, series)) = ev.subquery_walk(sq, ctx)? else {
        return Ok((Vec::new(), vec![init()]));
    };
    let chunks = plan(ev.parallelism, series.len(), ctx.n());
    let counts0 = walk.counted.then(|| ev.win_counts(0)).flatten();
    let work = |k: usize, chunk: Range<usize>, stop: &Stop| {
        let mut s = init();
        let mut counts = counts0.clone().map(|mut c| {
            c.rebase(chunk.start);
            c
        });
        for si in chunk {
            if stop.stopped(k) {
                return Ok(None);
            }
            let Some(one) = series.get(si) else {
                break;
            };
            walk.series(si, one, counts.as_mut(), &mut |w| f(&mut s, w))?;
        }
        Ok(Some((s, counts)))
    };
    let results = run_chunks(ev.parallelism, &chunks, &work)?;
    let mut states = Vec::with_capacity(results.len());
    for (s, counts) in results {
        ev.merge_win_counts(counts);
        states.push(s);
    }
    Ok((crate::engine::subquery_labels(series), states))
}

/// The instant selector over chunks of `selected` on up to `threads`
/// threads: the non-empty series in selection order, and the counters of
/// every chunk. The samples of all chunks are summed as they are made and
/// the query fails with [`PromqlError::TooManySamples`] once the sum is over
/// `max_samples`, as the sequential running total does (when a query would
/// also fail for another reason, either error may be reported).
pub(crate) fn instant_par(
    threads: usize,
    chunks: &[Range<usize>],
    selected: &[stratus_tsdb::Series],
    walk: &InstantWalk,
    max_samples: usize,
    counts0: Option<WinCounts>,
) -> Result<(Vec<Series>, Vec<Option<WinCounts>>)> {
    let total = AtomicUsize::new(0);
    let work = |k: usize, chunk: Range<usize>, stop: &Stop| {
        let mut counts = counts0.clone();
        let mut out = Vec::with_capacity(chunk.len());
        for si in chunk {
            if stop.stopped(k) {
                return Ok(None);
            }
            let Some(s) = selected.get(si) else {
                break;
            };
            let series = walk.series(s, counts.as_mut())?;
            let n = series.points.len() + series.hist.len();
            let sum = total.fetch_add(n, Ordering::Relaxed).saturating_add(n);
            check_samples(max_samples, sum)?;
            if n > 0 {
                out.push(series);
            }
        }
        Ok(Some((out, counts)))
    };
    let mut out = Vec::with_capacity(selected.len());
    let mut counts = Vec::with_capacity(chunks.len());
    for (series, c) in run_chunks(threads, chunks, &work)? {
        out.extend(series);
        counts.push(c);
    }
    Ok((out, counts))
}

/// Moves the non-empty per-series vectors of `from` (indexed by series
/// number, as the chunk states of [`windows_par`] fill them) into `into`.
pub(crate) fn merge_indexed<T>(into: &mut Vec<Vec<T>>, from: Vec<Vec<T>>) {
    if into.len() < from.len() {
        into.resize_with(from.len(), Vec::new);
    }
    for (slot, v) in into.iter_mut().zip(from) {
        if !v.is_empty() {
            *slot = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_every_series_once() {
        for threads in 1..6 {
            for series in [0usize, 1, 31, 32, 33, 100, 1000, 1001, 5000] {
                for steps in [1usize, 121, 10_000] {
                    let p = plan(threads, series, steps);
                    let mut at = 0;
                    for r in &p {
                        assert_eq!(r.start, at);
                        assert!(r.end >= r.start);
                        at = r.end;
                    }
                    assert_eq!(at, series, "{threads} {series} {steps}");
                    if threads == 1 || series * steps < MIN_WINDOWS {
                        assert_eq!(p.len(), 1);
                    }
                }
            }
        }
        assert!(plan(4, 1000, 121).len() > 1);
    }

    #[test]
    fn run_chunks_keeps_order_and_first_error() {
        let chunks = plan(4, 1000, 1000);
        let r = run_chunks(4, &chunks, &|k, c, _| Ok(Some((k, c.len())))).unwrap();
        assert_eq!(r.len(), chunks.len());
        for (i, (k, len)) in r.iter().enumerate() {
            assert_eq!(*k, i);
            assert_eq!(*len, chunks[i].len());
        }
        // Chunks 3 and 5 fail: chunk 3's error wins.
        let e = run_chunks(3, &chunks, &|k, _, stop: &Stop| {
            if k == 3 {
                return Err(PromqlError::TooManySamples);
            }
            if k == 5 {
                return Err(PromqlError::Timeout);
            }
            if stop.stopped(k) {
                return Ok(None);
            }
            Ok(Some(k))
        })
        .unwrap_err();
        assert!(matches!(e, PromqlError::TooManySamples), "{e}");
    }
}
