//! Query statistics for the HTTP API's `stats` parameter: samples loaded
//! per step (`totalQueryableSamples`), the peak number of samples held at
//! once (`peakSamples`), series touched, and the phase timings.
//!
//! Counting follows Prometheus 3.x (`promql/engine.go`, `util/stats`):
//!
//! - an instant selector counts each sample it returns at the step it is
//!   returned for; a range selector counts its whole window at every step
//!   (a sample is counted once per window holding it);
//! - a subquery under a function counts its output windows like a range
//!   selector, and the samples its inner expression loaded are not counted;
//!   a bare subquery (an instant query `x[5m:1m]`) counts the inner
//!   expression's samples at the last step;
//! - a native histogram counts `(size in bytes + 8) / 16`, Prometheus'
//!   `HPoint.size()` (2.42 counted every histogram as 1);
//! - `@` needs no special rule: Stratus evaluates a pinned selector at every
//!   step, which is what Prometheus' step-invariant evaluation adds up to.
//!
//! Peak samples model Prometheus' `currentSamples` at node boundaries: a
//! node's inputs stay counted while it runs, steps of binary operators and
//! non-range functions add the samples gathered for the step and the output
//! so far, range functions add the current window and the output of the
//! series done so far, aggregations add only their output (3.x; 2.42
//! evaluated aggregations like binary operators, so its peaks are higher).
//! `label_replace`/`label_join` relabel their input in place (3.x; 2.42
//! evaluated them per step like other functions, so its peaks are higher).
//! Step-invariant (`@`) subtrees of range queries are not evaluated once
//! and copied as in Prometheus, so their peaks can be higher here; instant
//! queries are not affected. The experimental anchored range selectors are
//! not counted. Newer Prometheus versions than the 3.x this follows add
//! `samplesRead` and attribute a subquery's inner samples to the outer
//! steps whose windows read them; neither is implemented.
//!
//! Everything is behind `Option<Box<Counters>>` on the evaluator: with stats
//! off each hook is one branch on a `None`.

use std::time::Duration;

use stratus_model::FloatHistogram;

/// How much the caller wants counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatsMode {
    /// No statistics (the default; costs nothing).
    #[default]
    Off,
    /// Totals and peak (`stats=<anything>`).
    Summary,
    /// Totals, peak and samples per step (`stats=all`).
    PerStep,
}

/// Time spent in each phase, as Prometheus reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueryTimings {
    /// Whole evaluation: preparation, inner evaluation and sorting.
    pub eval_total: Duration,
    /// Sorting the result.
    pub result_sort: Duration,
    /// Checking and rewriting the expression before evaluation.
    pub query_preparation: Duration,
    /// Evaluating the expression tree.
    pub inner_eval: Duration,
    /// Waiting for a query slot (filled in by the caller that queues).
    pub exec_queue: Duration,
    /// Queueing plus evaluation (filled in by the caller that queues;
    /// `eval_total` until then).
    pub exec_total: Duration,
}

/// Statistics of one evaluated query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueryStats {
    /// Samples loaded, summed over the steps.
    pub total_samples: i64,
    /// Most samples held at once.
    pub peak_samples: i64,
    /// `(step time ms, samples)` per step; empty unless
    /// [`StatsMode::PerStep`].
    pub per_step: Vec<(i64, i64)>,
    /// Series returned by the storage, summed over selectors (Stratus
    /// only; not part of Prometheus' JSON).
    pub series_touched: u64,
    /// Phase timings.
    pub timings: QueryTimings,
}

/// The size of a histogram sample in float samples (Prometheus 3.x
/// `HPoint.size()`: the Go struct is 168 bytes, plus 8 per span, bucket
/// and custom bound, plus the 8-byte timestamp, over 16).
pub(crate) fn hist_size(h: &FloatHistogram) -> i64 {
    let elems = h.positive_spans.len()
        + h.negative_spans.len()
        + h.positive_buckets.len()
        + h.negative_buckets.len()
        + h.custom_values.len();
    let bytes = 168usize.saturating_add(elems.saturating_mul(8)) + 8;
    i64::try_from(bytes / 16).unwrap_or(i64::MAX)
}

/// Per-series window figures of a range function (for the peak).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WinStat {
    pub(crate) max: i64,
    pub(crate) last: i64,
    pub(crate) nonempty: bool,
}

/// One node being evaluated (for the peak).
#[derive(Debug, Default)]
pub(crate) struct Frame {
    /// Samples its inputs contribute per step (series with a point).
    pub(crate) gathered: Vec<i64>,
    /// Window figures when the node is a range function.
    pub(crate) windows: Vec<WinStat>,
    /// Samples of a subquery result the node's windows read (released
    /// when the node is done).
    pub(crate) sub_result: i64,
}

/// The running counters of one query.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) total: i64,
    /// Per-step totals of the top-level steps (empty: not tracked, also
    /// inside subqueries).
    pub(crate) per_step: Vec<i64>,
    pub(crate) cur: i64,
    pub(crate) peak: i64,
    pub(crate) frames: Vec<Frame>,
    /// The next range argument is a bare subquery (an instant query's
    /// result), not a function's argument.
    pub(crate) bare_range: bool,
}

impl Counters {
    pub(crate) fn new(mode: StatsMode, steps: usize) -> Self {
        Counters {
            per_step: if mode == StatsMode::PerStep {
                vec![0; steps]
            } else {
                Vec::new()
            },
            ..Default::default()
        }
    }

    /// Adds `n` samples loaded at step `i`.
    #[inline]
    pub(crate) fn add_at(&mut self, i: usize, n: i64) {
        self.total += n;
        if let Some(c) = self.per_step.get_mut(i) {
            *c += n;
        }
    }

    pub(crate) fn update_peak(&mut self, v: i64) {
        if v > self.peak {
            self.peak = v;
        }
    }
}
