//! The evaluator: Prometheus 3.x semantics over a [`Queryable`].
//!
//! Every node is evaluated once for all steps of the query (an instant
//! query is a range query with one step), like Prometheus' range
//! evaluation: a node returns a scalar per step or a list of series whose
//! points sit on the step timestamps. Binary operators and aggregations then
//! walk the steps with cursors over their operands.
//!
//! Selectors stream each series through a [`stratus_tsdb::SeriesIter`]:
//! instant selectors keep only the newest sample at or before each step
//! (seeking over gaps longer than the lookback), range selectors keep one
//! reusable window buffer per series that slides across the steps. Raw
//! samples are never materialised for the whole query.
//!
//! `__name__` removal is delayed as in Prometheus 3 with delayed name
//! removal: functions and arithmetic flag series (`drop_name`) and the
//! names are removed when the final result is built, where two series with
//! the same label set are an error.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use stratus_model::{Labels, METRIC_NAME, is_stale_nan, reset_hint};
use stratus_tsdb::{Queryable, SelectHints};

use crate::ast::{AtModifier, BinOp, Expr, Subquery, ValueType, VectorSelector};
use crate::error::PromqlError;
use crate::histogram::Hist;
use crate::stats::{Counters, Frame, QueryStats, StatsMode, WinStat, hist_size};
use crate::value::{QueryResult, RangeSeries, Sample, Value};

pub(crate) type Result<T, E = PromqlError> = std::result::Result<T, E>;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (default 5m).
    pub lookback_delta: Duration,
    /// Most samples one query may hold (default 50,000,000).
    pub max_samples: usize,
    /// Query timeout (default 2m).
    pub timeout: Duration,
    /// Step of subqueries written without one (default 1m).
    pub default_subquery_step: Duration,
    /// Most series one query may select, summed over its selectors
    /// (0 = unlimited, the default).
    pub max_series: usize,
    /// Enables experimental PromQL: the `anchored`/`smoothed` modifiers
    /// and the `info()` function (default off, as in Prometheus).
    pub enable_experimental: bool,
    /// Threads one query may use to evaluate large selections, split into
    /// chunks of series (default: the available cores, at most 4; 0 or 1
    /// = one thread). Results are identical whatever the setting.
    pub parallelism: usize,
    /// Uses the samples' start ("created") timestamps: `rate`, `increase`,
    /// `irate` and `resets` see a start timestamp after the previous
    /// sample as a counter reset and bound extrapolation by it, and
    /// `start_timestamp()` returns them (default off, as Prometheus'
    /// `UseStartTimestamps` engine option).
    pub use_start_timestamps: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            lookback_delta: Duration::from_secs(300),
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            default_subquery_step: Duration::from_secs(60),
            max_series: 0,
            enable_experimental: false,
            parallelism: crate::par::default_parallelism(),
            use_start_timestamps: false,
        }
    }
}

/// The PromQL engine.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    opts: EngineOptions,
}

impl Engine {
    /// An engine with the given options.
    pub fn new(opts: EngineOptions) -> Self {
        Self { opts }
    }

    /// The options in use.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Evaluates `expr` at time `t_ms`.
    pub fn instant(
        &self,
        q: &dyn Queryable,
        expr: &str,
        t_ms: i64,
    ) -> Result<QueryResult, PromqlError> {
        let e = crate::parser::parse(expr)?;
        self.instant_expr(q, &e, t_ms)
    }

    /// Evaluates `expr` at `start`, `start + step`, ... up to `end` (ms).
    pub fn range(
        &self,
        q: &dyn Queryable,
        expr: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<QueryResult, PromqlError> {
        let e = crate::parser::parse(expr)?;
        self.range_expr(q, &e, start, end, step)
    }

    /// Evaluates a parsed expression at one time.
    pub fn instant_expr(
        &self,
        q: &dyn Queryable,
        e: &Expr,
        t_ms: i64,
    ) -> Result<QueryResult, PromqlError> {
        self.instant_expr_stats(q, e, t_ms, StatsMode::Off)
    }

    /// [`Engine::instant_expr`] that also gathers [`QueryStats`] (in
    /// [`QueryResult::stats`]) unless `mode` is [`StatsMode::Off`].
    pub fn instant_expr_stats(
        &self,
        q: &dyn Queryable,
        e: &Expr,
        t_ms: i64,
        mode: StatsMode,
    ) -> Result<QueryResult, PromqlError> {
        let t0 = Instant::now();
        let e = &*crate::prepare::prepare(e, 0, 0, self.opts.enable_experimental)?;
        let mut ev = Evaluator::new(q, &self.opts, t_ms, t_ms, 0);
        ev.start_stats(mode, 1);
        let ctx = Ctx {
            start: t_ms,
            end: t_ms,
            step: 1,
        };
        let t1 = Instant::now();
        let val = ev.eval(e, &ctx)?;
        let t2 = Instant::now();
        let value = match val {
            Val::Scalar(v) => Value::Scalar {
                t: t_ms,
                v: v.first().copied().unwrap_or(f64::NAN),
            },
            Val::String(s) => Value::String { t: t_ms, s },
            Val::Vector(series) => {
                let series = finish_names(series)?;
                Value::Vector(
                    series
                        .into_iter()
                        .filter_map(|s| {
                            if let Some((t, h)) = s.hist.first() {
                                return Some(Sample {
                                    labels: s.labels,
                                    t: *t,
                                    v: 0.0,
                                    h: Some(h.clone()),
                                });
                            }
                            let (t, v) = *s.points.first()?;
                            Some(Sample {
                                labels: s.labels,
                                t,
                                v,
                                h: None,
                            })
                        })
                        .collect(),
                )
            }
            Val::Matrix(series) => {
                let mut m: Vec<RangeSeries> = series
                    .into_iter()
                    .map(|s| RangeSeries {
                        labels: s.labels,
                        points: s.points,
                        histograms: s.hist,
                    })
                    .collect();
                if mode != StatsMode::Off {
                    // Prometheus sorts an instant query's matrix in the
                    // engine (timed as resultSortTime); callers sort the
                    // same way, so this only moves the work.
                    m.sort_by(|a, b| a.labels.cmp(&b.labels));
                }
                Value::Matrix(m)
            }
        };
        let t3 = Instant::now();
        Ok(ev.into_result(value, [t0, t1, t2, t3], &ctx))
    }

    /// Evaluates a parsed expression as a range query.
    pub fn range_expr(
        &self,
        q: &dyn Queryable,
        e: &Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<QueryResult, PromqlError> {
        self.range_expr_stats(q, e, start, end, step, StatsMode::Off)
    }

    /// [`Engine::range_expr`] that also gathers [`QueryStats`] (in
    /// [`QueryResult::stats`]) unless `mode` is [`StatsMode::Off`].
    pub fn range_expr_stats(
        &self,
        q: &dyn Queryable,
        e: &Expr,
        start: i64,
        end: i64,
        step: i64,
        mode: StatsMode,
    ) -> Result<QueryResult, PromqlError> {
        let t0 = Instant::now();
        if step <= 0 {
            return Err(PromqlError::BadArgument {
                msg: "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            });
        }
        if end < start {
            return Err(PromqlError::BadArgument {
                msg: "end timestamp must not be before start time".into(),
            });
        }
        let e = &*crate::prepare::prepare(e, step, end - start, self.opts.enable_experimental)?;
        match e.value_type() {
            ValueType::Scalar | ValueType::Vector => {}
            t => {
                return Err(PromqlError::BadRangeQueryType { got: t.to_string() });
            }
        }
        let mut ev = Evaluator::new(q, &self.opts, start, end, step);
        let ctx = Ctx { start, end, step };
        ev.check_samples(ctx.n())?;
        ev.start_stats(mode, ctx.n());
        let t1 = Instant::now();
        let val = ev.eval(e, &ctx)?;
        let t2 = Instant::now();
        let mut out = match val {
            Val::Scalar(v) => vec![RangeSeries {
                labels: Labels::empty(),
                points: (0..ctx.n()).map(|i| (ctx.ts(i), v[i])).collect(),
                histograms: Vec::new(),
            }],
            Val::Vector(series) => finish_names(series)?
                .into_iter()
                .filter(|s| !s.points.is_empty() || !s.hist.is_empty())
                .map(|s| RangeSeries {
                    labels: s.labels,
                    points: s.points,
                    histograms: s.hist,
                })
                .collect(),
            Val::String(_) | Val::Matrix(_) => {
                return Err(PromqlError::BadRangeQueryType {
                    got: e.value_type().to_string(),
                });
            }
        };
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        let t3 = Instant::now();
        Ok(ev.into_result(Value::Matrix(out), [t0, t1, t2, t3], &ctx))
    }
}

/// Drops the names of flagged series, then merges series that now share a
/// label set; two points at one timestamp are an error.
fn finish_names(mut series: Vec<Series>) -> Result<Vec<Series>> {
    for s in &mut series {
        if s.drop_name {
            s.labels = drop_name(&s.labels);
            s.drop_name = false;
        }
    }
    merge_same_labels(series)
}

/// Removes `__name__` and the type-and-unit metadata labels `__type__` and
/// `__unit__`, as Prometheus does wherever a metric name is dropped.
pub(crate) fn drop_name(l: &Labels) -> Labels {
    if !l.iter().any(|lb| is_name_label(&lb.name)) {
        return l.clone();
    }
    l.filter_names(&[METRIC_NAME, "__type__", "__unit__"], false)
}

pub(crate) fn is_name_label(n: &str) -> bool {
    n == METRIC_NAME || n == "__type__" || n == "__unit__"
}

/// Merges series with equal label sets (keeping the first one's position);
/// fails if two of them have a point at the same timestamp.
pub(crate) fn merge_same_labels(series: Vec<Series>) -> Result<Vec<Series>> {
    let mut index: HashMap<Labels, usize> = HashMap::with_capacity(series.len());
    let mut out: Vec<Series> = Vec::with_capacity(series.len());
    let mut merged = false;
    for s in series {
        match index.get(&s.labels) {
            None => {
                index.insert(s.labels.clone(), out.len());
                out.push(s);
            }
            Some(&i) => {
                let o = &mut out[i];
                let mut pts = Vec::with_capacity(o.points.len() + s.points.len());
                let (mut a, mut b) = (0, 0);
                while a < o.points.len() || b < s.points.len() {
                    match (o.points.get(a), s.points.get(b)) {
                        (Some(x), Some(y)) if x.0 == y.0 => {
                            return Err(PromqlError::DuplicateLabelset);
                        }
                        (Some(x), Some(y)) if x.0 < y.0 => {
                            pts.push(*x);
                            a += 1;
                        }
                        (_, Some(y)) => {
                            pts.push(*y);
                            b += 1;
                        }
                        (Some(x), None) => {
                            pts.push(*x);
                            a += 1;
                        }
                        (None, None) => break,
                    }
                }
                o.points = pts;
                if !s.hist.is_empty() {
                    for (t, _) in &s.hist {
                        if o.hist.iter().any(|x| x.0 == *t)
                            || o.points.binary_search_by_key(t, |p| p.0).is_ok()
                        {
                            return Err(PromqlError::DuplicateLabelset);
                        }
                    }
                    o.hist.extend(s.hist);
                    o.hist.sort_by_key(|x| x.0);
                }
                if !o.hist.is_empty()
                    && o.hist
                        .iter()
                        .any(|(t, _)| o.points.binary_search_by_key(t, |p| p.0).is_ok())
                {
                    return Err(PromqlError::DuplicateLabelset);
                }
                merged = true;
            }
        }
    }
    let _ = merged;
    Ok(out)
}

/// The steps a node is evaluated at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) step: i64,
}

impl Ctx {
    pub(crate) fn n(&self) -> usize {
        if self.end < self.start || self.step <= 0 {
            return 0;
        }
        let n = (self.end as i128 - self.start as i128) / self.step as i128 + 1;
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    pub(crate) fn ts(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }
}

/// One series of an intermediate result; points sit on step timestamps.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub(crate) labels: Labels,
    /// Remove `__name__` when the result is finished.
    pub(crate) drop_name: bool,
    pub(crate) points: Vec<(i64, f64)>,
    /// Native histogram points on step timestamps (no step has both).
    pub(crate) hist: Vec<(i64, Hist)>,
}

impl Series {
    /// A float-only series.
    pub(crate) fn floats(labels: Labels, drop_name: bool, points: Vec<(i64, f64)>) -> Self {
        Series {
            labels,
            drop_name,
            points,
            hist: Vec::new(),
        }
    }
}

/// An intermediate value.
#[derive(Debug)]
pub(crate) enum Val {
    /// One value per step.
    Scalar(Vec<f64>),
    String(String),
    Vector(Vec<Series>),
    /// Raw range-vector points (only as the result of an instant query).
    Matrix(Vec<Series>),
}

/// One window handed to a range-vector function.
#[derive(Debug)]
pub(crate) struct Window<'w> {
    pub(crate) series: usize,
    pub(crate) step: usize,
    pub(crate) points: &'w [(i64, f64)],
    /// Native histogram samples of the window.
    pub(crate) hpoints: &'w [(i64, Hist)],
    /// Start timestamps of `points` (empty when unknown: subqueries,
    /// series without any, or the option off).
    pub(crate) fst: &'w [i64],
    /// Start timestamps of `hpoints` (empty when unknown).
    pub(crate) hst: &'w [i64],
    /// Exclusive start of the window (ms).
    pub(crate) range_start: i64,
    /// Inclusive end of the window (ms).
    pub(crate) range_end: i64,
}

/// Walks the steps of a vector value: for each step, the indexes and values
/// of the series that have a point there.
pub(crate) struct StepCursor<'a> {
    series: &'a [Series],
    pos: Vec<usize>,
    hpos: Vec<usize>,
}

impl<'a> StepCursor<'a> {
    pub(crate) fn new(series: &'a [Series]) -> Self {
        Self {
            series,
            pos: vec![0; series.len()],
            hpos: vec![0; series.len()],
        }
    }

    /// Fills `out` with `(series index, histogram)` for step time `ts`;
    /// steps must be visited in increasing order (independently of
    /// [`StepCursor::at`]).
    pub(crate) fn at_hist(&mut self, ts: i64, out: &mut Vec<(usize, Hist)>) {
        out.clear();
        for (i, s) in self.series.iter().enumerate() {
            if s.hist.is_empty() {
                continue;
            }
            let p = &mut self.hpos[i];
            while *p < s.hist.len() && s.hist[*p].0 < ts {
                *p += 1;
            }
            if let Some((t, h)) = s.hist.get(*p) {
                if *t == ts {
                    out.push((i, h.clone()));
                    *p += 1;
                }
            }
        }
    }

    /// Fills `out` with `(series index, value)` for step time `ts`; steps
    /// must be visited in increasing order.
    pub(crate) fn at(&mut self, ts: i64, out: &mut Vec<(usize, f64)>) {
        out.clear();
        for (i, s) in self.series.iter().enumerate() {
            let p = &mut self.pos[i];
            while *p < s.points.len() && s.points[*p].0 < ts {
                *p += 1;
            }
            if let Some(&(t, v)) = s.points.get(*p) {
                if t == ts {
                    out.push((i, v));
                    *p += 1;
                }
            }
        }
    }
}

/// Collects per-step outputs into series keyed by label set.
#[derive(Debug, Default)]
pub(crate) struct OutBuilder {
    index: HashMap<Labels, usize>,
    pub(crate) series: Vec<Series>,
}

impl OutBuilder {
    pub(crate) fn push(&mut self, labels: Labels, drop_name: bool, t: i64, v: f64) -> Result<()> {
        match self.index.get(&labels) {
            Some(&i) => {
                let s = &mut self.series[i];
                if s.points.last().is_some_and(|p| p.0 == t) {
                    return Err(PromqlError::DuplicateLabelset);
                }
                s.points.push((t, v));
            }
            None => {
                self.index.insert(labels.clone(), self.series.len());
                self.series
                    .push(Series::floats(labels, drop_name, vec![(t, v)]));
            }
        }
        Ok(())
    }

    /// [`OutBuilder::push`] remembering the output series in `cache`
    /// (`usize::MAX` at first), so that later steps of the same label set
    /// skip the hash lookup.
    pub(crate) fn push_cached(
        &mut self,
        cache: &mut usize,
        labels: &Labels,
        drop_name: bool,
        t: i64,
        v: f64,
    ) -> Result<()> {
        if let Some(s) = self.series.get_mut(*cache) {
            if s.points.last().is_some_and(|p| p.0 == t) {
                return Err(PromqlError::DuplicateLabelset);
            }
            s.points.push((t, v));
            return Ok(());
        }
        self.push(labels.clone(), drop_name, t, v)?;
        if let Some(&i) = self.index.get(labels) {
            *cache = i;
        }
        Ok(())
    }

    /// Adds a histogram point (steps in increasing order).
    pub(crate) fn push_hist(
        &mut self,
        labels: Labels,
        drop_name: bool,
        t: i64,
        h: Hist,
    ) -> Result<()> {
        match self.index.get(&labels) {
            Some(&i) => {
                let s = &mut self.series[i];
                if s.hist.last().is_some_and(|p| p.0 == t)
                    || s.points.last().is_some_and(|p| p.0 == t)
                {
                    return Err(PromqlError::DuplicateLabelset);
                }
                s.hist.push((t, h));
            }
            None => {
                self.index.insert(labels.clone(), self.series.len());
                self.series.push(Series {
                    labels,
                    drop_name,
                    points: Vec::new(),
                    hist: vec![(t, h)],
                });
            }
        }
        Ok(())
    }
}

/// State of one query evaluation.
pub(crate) struct Evaluator<'a> {
    q: &'a dyn Queryable,
    pub(crate) lookback: i64,
    pub(crate) max_samples: usize,
    max_series: usize,
    /// Series selected so far (for `max_series`).
    series_selected: std::cell::Cell<usize>,
    /// Series returned by the storage so far (for the statistics).
    series_touched: std::cell::Cell<u64>,
    pub(crate) deadline: Instant,
    /// Threads for splitting large selections (see [`crate::par`]).
    pub(crate) parallelism: usize,
    subquery_step: i64,
    pub(crate) query_start: i64,
    pub(crate) query_end: i64,
    pub(crate) query_step: i64,
    warnings: Vec<String>,
    infos: Vec<String>,
    /// Experimental features are enabled.
    pub(crate) experimental: bool,
    /// Start timestamps are read from storage and used.
    pub(crate) use_st: bool,
    /// Position of the expression that annotations are about (appended to
    /// their text as Prometheus does).
    pub(crate) anno_pos: crate::ast::Pos,
    /// Whether selectors evaluated now feed only `histogram_count`/`_sum`/
    /// `_avg` (Prometheus then decodes with its stats iterator, which
    /// derives counter-reset hints on the fly).
    hist_stats: StatsDecoding,
    /// Query statistics, when asked for (`None` costs one branch per hook).
    pub(crate) stats: Option<Box<Counters>>,
}

/// Prometheus' `detectHistogramStatsDecoding` as state of the descent: a
/// stats function above turns it on unless a subquery, a bucket-reading
/// function or a trim operator further up has vetoed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatsDecoding {
    Off,
    On,
    Vetoed,
}

impl std::fmt::Debug for Evaluator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("query_start", &self.query_start)
            .field("query_end", &self.query_end)
            .finish()
    }
}

impl<'a> Evaluator<'a> {
    fn new(q: &'a dyn Queryable, o: &EngineOptions, start: i64, end: i64, step: i64) -> Self {
        Self {
            q,
            lookback: o.lookback_delta.as_millis() as i64,
            max_samples: o.max_samples,
            max_series: o.max_series,
            series_selected: std::cell::Cell::new(0),
            series_touched: std::cell::Cell::new(0),
            deadline: Instant::now() + o.timeout,
            parallelism: o.parallelism.max(1),
            subquery_step: (o.default_subquery_step.as_millis() as i64).max(1),
            query_start: start,
            query_end: end,
            query_step: step,
            warnings: Vec::new(),
            infos: Vec::new(),
            experimental: o.enable_experimental,
            use_st: o.use_start_timestamps,
            anno_pos: crate::ast::Pos::default(),
            hist_stats: StatsDecoding::Off,
            stats: None,
        }
    }

    fn start_stats(&mut self, mode: StatsMode, steps: usize) {
        if mode != StatsMode::Off {
            self.stats = Some(Box::new(Counters::new(mode, steps)));
        }
    }

    /// The result; `t` = start, evaluation start, evaluation end, sorted.
    fn into_result(self, value: Value, t: [Instant; 4], ctx: &Ctx) -> QueryResult {
        let series_touched = self.series_touched.get();
        let stats = self.stats.map(|c| {
            let d = |a: Instant, b: Instant| b.saturating_duration_since(a);
            let eval_total = d(t[0], t[3]);
            QueryStats {
                total_samples: c.total,
                peak_samples: c.peak,
                per_step: c
                    .per_step
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| (ctx.ts(i), n))
                    .collect(),
                series_touched,
                timings: crate::stats::QueryTimings {
                    eval_total,
                    result_sort: d(t[2], t[3]),
                    query_preparation: d(t[0], t[1]),
                    inner_eval: d(t[1], t[2]),
                    exec_queue: Duration::ZERO,
                    exec_total: eval_total,
                },
            }
        });
        QueryResult {
            value,
            warnings: self.warnings,
            infos: self.infos,
            stats,
        }
    }

    fn pos_suffix(&self) -> String {
        if self.anno_pos.line == 0 {
            return String::new();
        }
        format!(" ({})", self.anno_pos)
    }

    /// Evaluates `f` with annotations placed at `pos`.
    pub(crate) fn at_pos<T>(&mut self, pos: crate::ast::Pos, f: impl FnOnce(&mut Self) -> T) -> T {
        let saved = std::mem::replace(&mut self.anno_pos, pos);
        let r = f(self);
        self.anno_pos = saved;
        r
    }

    /// Records a warning annotation (message without prefix).
    pub(crate) fn warn(&mut self, msg: String) {
        let m = format!("PromQL warning: {msg}{}", self.pos_suffix());
        if !self.warnings.contains(&m) {
            self.warnings.push(m);
        }
    }

    /// Records an info annotation (message without prefix).
    pub(crate) fn info(&mut self, msg: String) {
        let m = format!("PromQL info: {msg}{}", self.pos_suffix());
        if !self.infos.contains(&m) {
            self.infos.push(m);
        }
    }

    pub(crate) fn check_deadline(&self) -> Result<()> {
        check_deadline(self.deadline)
    }

    pub(crate) fn check_samples(&self, n: usize) -> Result<()> {
        check_samples(self.max_samples, n)
    }

    pub(crate) fn at_time(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at {
            None => None,
            Some(AtModifier::Start) => Some(self.query_start),
            Some(AtModifier::End) => Some(self.query_end),
            Some(AtModifier::Timestamp(t)) => Some(*t),
        }
    }

    /// Evaluates `e` at every step of `ctx`.
    pub(crate) fn eval(&mut self, e: &Expr, ctx: &Ctx) -> Result<Val> {
        if self.stats.is_none() {
            return self.eval_node(e, ctx);
        }
        self.eval_counted(e, ctx)
    }

    /// [`Evaluator::eval`] with statistics: keeps Prometheus'
    /// `currentSamples` model around the node (see [`crate::stats`]).
    fn eval_counted(&mut self, e: &Expr, ctx: &Ctx) -> Result<Val> {
        if let Expr::Paren(inner) = e {
            return self.eval(inner, ctx);
        }
        let n = ctx.n();
        let Some(c) = self.stats.as_deref_mut() else {
            return self.eval_node(e, ctx);
        };
        let base = c.cur;
        c.frames.push(Frame {
            gathered: vec![0; n],
            ..Frame::default()
        });
        let r = self.eval_node(e, ctx);
        let Some(c) = self.stats.as_deref_mut() else {
            return r;
        };
        let frame = c.frames.pop().unwrap_or_default();
        let val = r?;
        let inputs = c.cur - base;
        // Per step: series with a point (what a parent gathers) and their
        // size (histograms by size).
        let mut present = vec![0i64; n];
        let mut size = vec![0i64; n];
        let mut out_sizes: Vec<i64> = Vec::new();
        let idx = |t: i64| usize::try_from((t - ctx.start) / ctx.step.max(1)).ok();
        match &val {
            Val::Scalar(_) => {
                present.fill(1);
                size.fill(1);
            }
            Val::String(_) => {}
            Val::Vector(ss) | Val::Matrix(ss) => {
                for s in ss {
                    let mut o = 0i64;
                    for p in &s.points {
                        if let Some(i) = idx(p.0).filter(|&i| i < n) {
                            present[i] += 1;
                            size[i] += 1;
                        }
                        o += 1;
                    }
                    for (t, h) in &s.hist {
                        let hs = hist_size(h);
                        if let Some(i) = idx(*t).filter(|&i| i < n) {
                            present[i] += 1;
                            size[i] += hs;
                        }
                        o += hs;
                    }
                    out_sizes.push(o);
                }
            }
        }
        let out_total: i64 = match &val {
            Val::Vector(_) | Val::Matrix(_) => out_sizes.iter().sum(),
            _ => size.iter().sum(),
        };
        let range_call = matches!(e, Expr::Call(call) if call.args.iter().any(|a| a.value_type() == ValueType::Matrix));
        if let Expr::VectorSelector(vs) = e {
            if vs.smoothed {
                // The experimental smoothed selector loads through its own
                // path: count what it returns per step.
                for (k, &sz) in size.iter().enumerate() {
                    c.add_at(k, sz);
                }
            }
        }
        match e {
            // Leaves and nodes that pass their input through.
            Expr::VectorSelector(_)
            | Expr::MatrixSelector { .. }
            | Expr::Subquery(_)
            | Expr::String(_)
            | Expr::Neg(_) => {}
            Expr::Call(call)
                if matches!(call.func.as_str(), "label_replace" | "label_join" | "info") => {}
            // 3.x aggregations hold only their inputs and output.
            Expr::Aggregate(a) if a.op != crate::ast::AggOp::CountValues => {}
            _ if range_call => {
                // Inputs (scalar arguments, a subquery's result), then per
                // series the current window plus the output so far.
                let b = base + inputs;
                let mut done = 0i64;
                let mut outs = out_sizes.iter();
                for w in &frame.windows {
                    c.update_peak(b + done + w.max);
                    if w.nonempty {
                        done += outs.next().copied().unwrap_or(0);
                    }
                    c.update_peak(b + done + w.last);
                }
            }
            // Binary operators, non-range functions, literals: per step,
            // the inputs, the samples gathered for the step and the output
            // so far. `timestamp()` of a selector loads the step's samples
            // itself (one per output sample).
            _ => {
                let own_load = matches!(e, Expr::Call(call) if call.func == "timestamp"
                    && call.args.first().is_some_and(|a| matches!(unparen_expr(a), Expr::VectorSelector(_))));
                let gathered = if own_load { &present } else { &frame.gathered };
                let mut cum = 0i64;
                for (k, sz) in size.iter().enumerate() {
                    cum += sz;
                    let g = gathered.get(k).copied().unwrap_or(0);
                    c.update_peak(base + inputs + cum + g);
                }
            }
        }
        c.cur = base + out_total;
        if range_call {
            // Prometheus keeps scalar arguments counted.
            c.cur += (inputs - frame.sub_result).max(0);
        }
        c.update_peak(c.cur);
        if let Some(parent) = c.frames.last_mut() {
            if parent.gathered.len() == n {
                for (g, p) in parent.gathered.iter_mut().zip(&present) {
                    *g += p;
                }
            }
        }
        Ok(val)
    }

    /// Evaluates one node (no statistics bookkeeping).
    fn eval_node(&mut self, e: &Expr, ctx: &Ctx) -> Result<Val> {
        self.check_deadline()?;
        match e {
            Expr::Number(v) => Ok(Val::Scalar(vec![*v; ctx.n()])),
            Expr::String(s) => Ok(Val::String(s.clone())),
            Expr::Paren(e) => self.eval(e, ctx),
            Expr::VectorSelector(vs) if vs.smoothed => {
                Ok(Val::Vector(self.at_pos(vs.pos, |ev| ev.smoothed_selector(vs, ctx))?))
            }
            Expr::VectorSelector(vs) => Ok(Val::Vector(self.eval_selector(vs, ctx, false)?)),
            Expr::MatrixSelector { .. } | Expr::Subquery(_) => {
                let extended = match e {
                    Expr::MatrixSelector { vs, .. } if crate::extended::is_extended(vs) => {
                        Some(vs.smoothed)
                    }
                    _ => None,
                };
                let mut pts: Vec<WindowCopy> = Vec::new();
                if let Some(c) = self.stats.as_deref_mut() {
                    c.bare_range = true;
                }
                let labels = self.windows(e, ctx, &mut |w| {
                    if w.series >= pts.len() {
                        pts.resize_with(w.series + 1, Default::default);
                    }
                    pts[w.series] = match extended {
                        Some(sm) => (
                            crate::extended::extend_raw(
                                w.points,
                                !w.hpoints.is_empty(),
                                w.range_start,
                                w.range_end,
                                sm,
                            )?,
                            Vec::new(),
                        ),
                        None => (w.points.to_vec(), w.hpoints.to_vec()),
                    };
                    Ok(())
                });
                if let Some(c) = self.stats.as_deref_mut() {
                    c.bare_range = false;
                }
                let labels = labels?;
                pts.resize_with(labels.len(), Default::default);
                let series = labels
                    .into_iter()
                    .zip(pts)
                    .filter(|(_, p)| !p.0.is_empty() || !p.1.is_empty())
                    .map(|(labels, (points, hist))| Series {
                        labels,
                        drop_name: false,
                        points,
                        hist,
                    })
                    .collect();
                Ok(Val::Matrix(series))
            }
            Expr::Neg(inner) => match self.eval(inner, ctx)? {
                Val::Scalar(v) => Ok(Val::Scalar(v.into_iter().map(|x| -x).collect())),
                Val::Vector(mut series) => {
                    for s in &mut series {
                        s.drop_name = true;
                        for p in &mut s.points {
                            p.1 = -p.1;
                        }
                        for p in &mut s.hist {
                            // A negated histogram is no counter any more.
                            let mut h = crate::histogram::scale(&p.1, -1.0);
                            h.reset_hint = reset_hint::GAUGE;
                            p.1 = std::sync::Arc::new(h);
                        }
                    }
                    Ok(Val::Vector(series))
                }
                _ => Err(PromqlError::BadArgument {
                    msg: "unary expression only allowed on expressions of type scalar or instant vector".into(),
                }),
            },
            Expr::Binary(b) if matches!(b.op, BinOp::TrimUpper | BinOp::TrimLower) => {
                let saved = std::mem::replace(&mut self.hist_stats, StatsDecoding::Vetoed);
                let r = self.at_pos(b.pos, |ev| crate::binop::eval_binary(ev, b, ctx));
                self.hist_stats = saved;
                r
            }
            Expr::Binary(b) => self.at_pos(b.pos, |ev| crate::binop::eval_binary(ev, b, ctx)),
            Expr::Aggregate(a) => self.at_pos(a.expr_pos, |ev| {
                crate::aggregate::eval_aggregate(ev, a, ctx)
            }),
            Expr::Call(c) => {
                // Annotations of a function are about its (first) vector or
                // range argument.
                let main = c
                    .args
                    .iter()
                    .position(|a| matches!(a.value_type(), ValueType::Vector | ValueType::Matrix))
                    .unwrap_or(0);
                let pos = c.arg_pos.get(main).copied().unwrap_or_default();
                let saved = self.hist_stats;
                match c.func.as_str() {
                    "histogram_count" | "histogram_sum" | "histogram_avg"
                        if saved != StatsDecoding::Vetoed =>
                    {
                        self.hist_stats = StatsDecoding::On;
                    }
                    "histogram_quantile" | "histogram_quantiles" | "histogram_fraction" => {
                        self.hist_stats = StatsDecoding::Vetoed;
                    }
                    _ => {}
                }
                let r = self.at_pos(pos, |ev| crate::functions::eval_call(ev, c, ctx));
                self.hist_stats = saved;
                r
            }
        }
    }

    /// Evaluates an expression that must be an instant vector.
    pub(crate) fn eval_vector(&mut self, e: &Expr, ctx: &Ctx) -> Result<Vec<Series>> {
        match self.eval(e, ctx)? {
            Val::Vector(v) => Ok(v),
            _ => Err(PromqlError::BadArgument {
                msg: format!("expected instant vector, got {}", e.value_type()),
            }),
        }
    }

    /// Evaluates an expression that must be a scalar: one value per step.
    pub(crate) fn eval_scalar(&mut self, e: &Expr, ctx: &Ctx) -> Result<Vec<f64>> {
        match self.eval(e, ctx)? {
            Val::Scalar(v) => Ok(v),
            _ => Err(PromqlError::BadArgument {
                msg: format!("expected scalar, got {}", e.value_type()),
            }),
        }
    }

    pub(crate) fn select(
        &self,
        vs: &VectorSelector,
        mint: i64,
        maxt: i64,
        range: i64,
    ) -> Result<Vec<stratus_tsdb::Series>> {
        let hints = SelectHints {
            start: mint,
            end: maxt,
            step: self.query_step,
            range,
            func: None,
            labels_only: false,
        };
        let out = self
            .q
            .select(&vs.matchers, &hints)
            .map_err(|source| PromqlError::Storage { source })?;
        // Series touched (for the statistics; one add per selector).
        self.series_touched
            .set(self.series_touched.get().saturating_add(out.len() as u64));
        if self.max_series > 0 {
            let n = self.series_selected.get().saturating_add(out.len());
            self.series_selected.set(n);
            if n > self.max_series {
                return Err(PromqlError::TooManySeries {
                    limit: self.max_series,
                });
            }
        }
        Ok(out)
    }

    /// Reference times (evaluation time shifted by `@` and offset) per step.
    pub(crate) fn refs(&self, at: &Option<AtModifier>, offset: i64, ctx: &Ctx) -> Vec<i64> {
        let at = self.at_time(at);
        (0..ctx.n())
            .map(|i| at.unwrap_or(ctx.ts(i)).saturating_sub(offset))
            .collect()
    }

    /// An instant vector selector: per step, the newest sample in
    /// `(ref - lookback, ref]` unless it is a stale marker. With `ts_mode`
    /// the value is the sample's timestamp in seconds (for `timestamp()`).
    /// Large selections are split across threads ([`crate::par`]).
    pub(crate) fn eval_selector(
        &mut self,
        vs: &VectorSelector,
        ctx: &Ctx,
        ts_mode: bool,
    ) -> Result<Vec<Series>> {
        let mode = if ts_mode {
            SelectorOutput::Timestamps
        } else {
            SelectorOutput::Values
        };
        self.eval_selector_mode(vs, ctx, mode)
    }

    /// [`Evaluator::eval_selector`] returning what `mode` says.
    pub(crate) fn eval_selector_mode(
        &mut self,
        vs: &VectorSelector,
        ctx: &Ctx,
        mode: SelectorOutput,
    ) -> Result<Vec<Series>> {
        let n = ctx.n();
        if n == 0 {
            return Ok(Vec::new());
        }
        let refs = self.refs(&vs.at, vs.offset, ctx);
        let lo = refs[0].saturating_sub(self.lookback).saturating_add(1);
        let hi = refs[n - 1];
        let selected = self.select(vs, lo, hi, 0)?;
        let walk = InstantWalk {
            refs,
            lo,
            hi,
            lookback: self.lookback,
            deadline: self.deadline,
            hist_stats: self.hist_stats == StatsDecoding::On,
            mode,
            ctx: *ctx,
        };
        let chunks = crate::par::plan(self.parallelism, selected.len(), n);
        if chunks.len() > 1 {
            let counts0 = self.win_counts(0);
            let (out, counts) = crate::par::instant_par(
                self.parallelism,
                &chunks,
                &selected,
                &walk,
                self.max_samples,
                counts0,
            )?;
            for c in counts {
                self.merge_win_counts(c);
            }
            return Ok(out);
        }
        let mut counts = self.win_counts(0);
        let mut out = Vec::with_capacity(selected.len());
        let mut total = 0usize;
        for s in &selected {
            let series = walk.series(s, counts.as_mut())?;
            total += series.points.len() + series.hist.len();
            self.check_samples(total)?;
            if !series.points.is_empty() || !series.hist.is_empty() {
                out.push(series);
            }
        }
        self.merge_win_counts(counts);
        Ok(out)
    }

    /// Calls `f` with the window of every series at every step of a range
    /// argument (a matrix selector or a subquery). Returns the labels of the
    /// series, indexed like `Window::series`.
    pub(crate) fn windows(
        &mut self,
        arg: &Expr,
        ctx: &Ctx,
        f: &mut dyn FnMut(Window<'_>) -> Result<()>,
    ) -> Result<Vec<Labels>> {
        match arg {
            Expr::Paren(e) => self.windows(e, ctx, f),
            Expr::MatrixSelector { vs, range, .. } if crate::extended::is_extended(vs) => {
                self.extended_windows(vs, *range, ctx, f)
            }
            Expr::MatrixSelector { vs, range, .. } => self.selector_windows(vs, *range, ctx, f),
            Expr::Subquery(sq) => self.subquery_windows(sq, ctx, f),
            _ => Err(PromqlError::BadArgument {
                msg: format!("expected range vector, got {}", arg.value_type()),
            }),
        }
    }

    fn selector_windows(
        &mut self,
        vs: &VectorSelector,
        range: i64,
        ctx: &Ctx,
        f: &mut dyn FnMut(Window<'_>) -> Result<()>,
    ) -> Result<Vec<Labels>> {
        let Some((walk, selected)) = self.range_walk(vs, range, ctx)? else {
            return Ok(Vec::new());
        };
        let mut counts = self.win_counts(0);
        let mut buf = WindowBuf::default();
        let mut labels = Vec::with_capacity(selected.len());
        for (si, s) in selected.into_iter().enumerate() {
            walk.series(si, &s, &mut buf, counts.as_mut(), f)?;
            labels.push(s.labels);
        }
        self.merge_win_counts(counts);
        Ok(labels)
    }

    /// Selects the series of a plain range selector and returns what walking
    /// their windows needs (no evaluator state, so that chunks of the
    /// series can be walked on other threads); `None` when there are no
    /// steps.
    pub(crate) fn range_walk(
        &self,
        vs: &VectorSelector,
        range: i64,
        ctx: &Ctx,
    ) -> Result<Option<(RangeWalk, Vec<stratus_tsdb::Series>)>> {
        let n = ctx.n();
        if n == 0 {
            return Ok(None);
        }
        let refs = self.refs(&vs.at, vs.offset, ctx);
        let lo = refs[0].saturating_sub(range).saturating_add(1);
        let hi = refs[n - 1];
        let selected = self.select(vs, lo, hi, range)?;
        let walk = RangeWalk {
            refs,
            range,
            lo,
            hi,
            max_samples: self.max_samples,
            deadline: self.deadline,
            hist_stats: self.hist_stats == StatsDecoding::On,
            use_st: self.use_st,
        };
        Ok(Some((walk, selected)))
    }

    /// Window counters for series numbered from `base`, when statistics
    /// are gathered.
    pub(crate) fn win_counts(&self, base: usize) -> Option<WinCounts> {
        let c = self.stats.as_deref()?;
        Some(WinCounts {
            base,
            total: 0,
            per_step: vec![0; c.per_step.len()],
            windows: Vec::new(),
        })
    }

    /// Adds window counters gathered by [`RangeWalk::series`] to the query
    /// statistics (as if each window had been counted as it was made).
    pub(crate) fn merge_win_counts(&mut self, counts: Option<WinCounts>) {
        let (Some(c), Some(w)) = (self.stats.as_deref_mut(), counts) else {
            return;
        };
        c.total += w.total;
        for (a, b) in c.per_step.iter_mut().zip(&w.per_step) {
            *a += b;
        }
        let Some(f) = c.frames.last_mut() else {
            return;
        };
        for (j, ws) in w.windows.iter().enumerate() {
            if !ws.noted {
                continue;
            }
            let si = w.base + j;
            if f.windows.len() <= si {
                f.windows.resize(si + 1, WinStat::default());
            }
            if let Some(fw) = f.windows.get_mut(si) {
                fw.max = fw.max.max(ws.stat.max);
                fw.last = ws.stat.last;
                fw.nonempty |= ws.stat.nonempty;
            }
        }
    }

    fn subquery_windows(
        &mut self,
        sq: &Subquery,
        ctx: &Ctx,
        f: &mut dyn FnMut(Window<'_>) -> Result<()>,
    ) -> Result<Vec<Labels>> {
        let Some((walk, series)) = self.subquery_walk(sq, ctx)? else {
            return Ok(Vec::new());
        };
        let mut counts = walk.counted.then(|| self.win_counts(0)).flatten();
        for (si, s) in series.iter().enumerate() {
            walk.series(si, s, counts.as_mut(), f)?;
        }
        self.merge_win_counts(counts);
        Ok(subquery_labels(series))
    }

    /// Evaluates the inner expression of a subquery at its own steps and
    /// returns its series with what walking their windows at the steps of
    /// `ctx` needs (no evaluator state, so that chunks of the series can be
    /// walked on other threads); `None` when there are no steps.
    pub(crate) fn subquery_walk(
        &mut self,
        sq: &Subquery,
        ctx: &Ctx,
    ) -> Result<Option<(SubqueryWalk, Vec<Series>)>> {
        let n = ctx.n();
        if n == 0 {
            return Ok(None);
        }
        let refs = self.refs(&sq.at, sq.offset, ctx);
        let step = sq.step.unwrap_or(self.subquery_step).max(1);
        let first = refs[0].saturating_sub(sq.range);
        // First step-aligned time after `first` (Go's truncating division).
        let mut start = step * (first / step);
        if start <= first {
            start = start.saturating_add(step);
        }
        let inner = Ctx {
            start,
            end: refs[n - 1],
            step,
        };
        self.check_samples(inner.n())?;
        // The inner expression counts into a child: its samples are only
        // counted (at the last step) when the subquery is the result itself;
        // under a function its windows are counted instead.
        let mut bare = false;
        let mut saved = None;
        if let Some(c) = self.stats.as_deref_mut() {
            bare = std::mem::take(&mut c.bare_range);
            saved = Some((
                std::mem::take(&mut c.per_step),
                std::mem::take(&mut c.total),
            ));
        }
        let saved_decoding = std::mem::replace(&mut self.hist_stats, StatsDecoding::Vetoed);
        let inner_val = if inner.n() == 0 {
            Ok(Val::Vector(Vec::new()))
        } else {
            self.eval(&sq.expr, &inner)
        };
        self.hist_stats = saved_decoding;
        if let (Some(c), Some((per_step, total))) = (self.stats.as_deref_mut(), saved) {
            let child = std::mem::replace(&mut c.total, total);
            c.per_step = per_step;
            if bare {
                c.add_at(n - 1, child);
            }
        }
        let mut series = {
            match inner_val? {
                Val::Vector(v) => v,
                Val::Scalar(v) => vec![Series::floats(
                    Labels::empty(),
                    false,
                    (0..inner.n()).map(|i| (inner.ts(i), v[i])).collect(),
                )],
                _ => {
                    return Err(PromqlError::BadArgument {
                        msg: "subquery is only allowed on instant vector".into(),
                    });
                }
            }
        };
        // The subquery's steps skip samples, so counter-reset hints from
        // storage no longer relate neighbours: let the functions detect
        // resets themselves (Prometheus does the same).
        for s in &mut series {
            for (_, h) in &mut s.hist {
                if matches!(h.reset_hint, reset_hint::RESET | reset_hint::NOT_RESET) {
                    std::sync::Arc::make_mut(h).reset_hint = reset_hint::UNKNOWN;
                }
            }
        }
        if !bare {
            if let Some(f) = self.stats.as_deref_mut().and_then(|c| c.frames.last_mut()) {
                f.sub_result += series
                    .iter()
                    .map(|s| {
                        s.points.len() as i64
                            + s.hist.iter().map(|(_, h)| hist_size(h)).sum::<i64>()
                    })
                    .sum::<i64>();
            }
        }
        let walk = SubqueryWalk {
            refs,
            range: sq.range,
            max_samples: self.max_samples,
            deadline: self.deadline,
            counted: !bare,
        };
        Ok(Some((walk, series)))
    }
}

/// The labels of a subquery's series, indexed like `Window::series`
/// (names removed where the inner expression flagged them).
pub(crate) fn subquery_labels(series: Vec<Series>) -> Vec<Labels> {
    series
        .into_iter()
        .map(|s| {
            if s.drop_name {
                drop_name(&s.labels)
            } else {
                s.labels
            }
        })
        .collect()
}

/// Everything walking the windows of a subquery's series needs (no
/// evaluator state, so that chunks of the series can be walked on other
/// threads).
#[derive(Debug)]
pub(crate) struct SubqueryWalk {
    refs: Vec<i64>,
    range: i64,
    max_samples: usize,
    deadline: Instant,
    /// Windows are counted for the statistics (not when the subquery is
    /// the result itself).
    pub(crate) counted: bool,
}

impl SubqueryWalk {
    /// Calls `f` with the window of series `s` (number `si`) of the
    /// subquery at every step, in step order: the points in
    /// `(ref - range, ref]`, as slices of the series' own points.
    pub(crate) fn series(
        &self,
        si: usize,
        s: &Series,
        mut counts: Option<&mut WinCounts>,
        f: &mut dyn FnMut(Window<'_>) -> Result<()>,
    ) -> Result<()> {
        check_deadline(self.deadline)?;
        let (mut a, mut b) = (0usize, 0usize);
        let (mut ha, mut hb) = (0usize, 0usize);
        for (i, &r) in self.refs.iter().enumerate() {
            let start = r.saturating_sub(self.range);
            while a < s.points.len() && s.points[a].0 <= start {
                a += 1;
            }
            b = b.max(a);
            while b < s.points.len() && s.points[b].0 <= r {
                b += 1;
            }
            while ha < s.hist.len() && s.hist[ha].0 <= start {
                ha += 1;
            }
            hb = hb.max(ha);
            while hb < s.hist.len() && s.hist[hb].0 <= r {
                hb += 1;
            }
            check_samples(self.max_samples, b - a + hb - ha)?;
            let hpoints = s.hist.get(ha..hb).unwrap_or(&[]);
            if let Some(c) = counts.as_deref_mut() {
                let sz = (b - a) as i64 + hpoints.iter().map(|(_, h)| hist_size(h)).sum::<i64>();
                c.add(i, si, sz);
            }
            f(Window {
                series: si,
                step: i,
                points: s.points.get(a..b).unwrap_or(&[]),
                hpoints,
                fst: &[],
                hst: &[],
                range_start: start,
                range_end: r,
            })?;
        }
        Ok(())
    }
}

/// Everything evaluating an instant selector over one selected series
/// needs (no evaluator state, so that chunks of the series can be
/// evaluated on other threads).
#[derive(Debug)]
pub(crate) struct InstantWalk {
    refs: Vec<i64>,
    lo: i64,
    hi: i64,
    lookback: i64,
    deadline: Instant,
    hist_stats: bool,
    mode: SelectorOutput,
    ctx: Ctx,
}

/// What an instant selector's points hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SelectorOutput {
    /// The samples' values.
    Values,
    /// The samples' timestamps in seconds (`timestamp()`).
    Timestamps,
    /// The samples' start timestamps in seconds (`start_timestamp()`).
    StartTimestamps,
}

impl InstantWalk {
    /// The selector's points of series `s` (maybe none), counting them
    /// per step in `counts`.
    pub(crate) fn series(
        &self,
        s: &stratus_tsdb::Series,
        mut counts: Option<&mut WinCounts>,
    ) -> Result<Series> {
        check_deadline(self.deadline)?;
        let (refs, lo, hi, ctx) = (&self.refs, self.lo, self.hi, &self.ctx);
        let ts_mode = self.mode == SelectorOutput::Timestamps;
        if s.has_histograms() || self.mode == SelectorOutput::StartTimestamps {
            let series = self.typed_instant(s)?;
            if let Some(c) = counts.as_deref_mut() {
                for p in &series.points {
                    c.add_step(step_index(ctx, p.0), 1);
                }
                for (t, h) in &series.hist {
                    c.add_step(step_index(ctx, *t), hist_size(h));
                }
            }
            return Ok(series);
        }
        let mut it = s.iter(lo, hi);
        let mut peek = it.next();
        let mut last: Option<(i64, f64)> = None;
        let mut pts = Vec::new();
        for (i, &r) in refs.iter().enumerate() {
            let lo_i = r.saturating_sub(self.lookback);
            if last.is_some_and(|l| l.0 <= lo_i) {
                last = None;
            }
            if peek.is_some_and(|p| p.0 <= lo_i) {
                peek = it.seek(lo_i.saturating_add(1));
            }
            while let Some(p) = peek {
                if p.0 > r {
                    break;
                }
                last = Some(p);
                peek = it.next();
            }
            if let Some((t, v)) = last {
                if t > lo_i && !is_stale_nan(v) {
                    let v = if ts_mode { t as f64 / 1000.0 } else { v };
                    pts.push((ctx.ts(i), v));
                }
            }
        }
        if let Some(c) = counts {
            for p in &pts {
                c.add_step(step_index(ctx, p.0), 1);
            }
        }
        Ok(Series::floats(s.labels.clone(), false, pts))
    }

    /// [`InstantWalk::series`] for one series holding native histograms
    /// (decoded whole, typed).
    fn typed_instant(&self, s: &stratus_tsdb::Series) -> Result<Series> {
        let (refs, ctx, mode) = (&self.refs, &self.ctx, self.mode);
        let ts_mode = mode == SelectorOutput::Timestamps;
        let st_mode = mode == SelectorOutput::StartTimestamps;
        let mut sts = Vec::new();
        let samples = if st_mode {
            typed_st(s, self.lo, self.hi, self.hist_stats, &mut sts)?
        } else {
            typed(s, self.lo, self.hi, self.hist_stats)?
        };
        let mut out = Series::floats(s.labels.clone(), false, Vec::new());
        for (i, &r) in refs.iter().enumerate() {
            // Newest sample at or before r.
            let lo_i = r.saturating_sub(self.lookback);
            let idx = samples.partition_point(|x| x.0 <= r);
            if idx == 0 {
                continue;
            }
            let (t, v) = &samples[idx - 1];
            if *t <= lo_i {
                continue;
            }
            if st_mode {
                let stale = match v {
                    TypedV::F(f) => is_stale_nan(*f),
                    TypedV::H(h) => h.is_stale(),
                };
                if !stale {
                    let st = sts.get(idx - 1).copied().unwrap_or(0);
                    out.points.push((ctx.ts(i), st as f64 / 1000.0));
                }
                continue;
            }
            match v {
                TypedV::F(f) => {
                    if !is_stale_nan(*f) {
                        let f = if ts_mode { *t as f64 / 1000.0 } else { *f };
                        out.points.push((ctx.ts(i), f));
                    }
                }
                TypedV::H(h) => {
                    if !h.is_stale() {
                        if ts_mode {
                            out.points.push((ctx.ts(i), *t as f64 / 1000.0));
                        } else {
                            out.hist.push((ctx.ts(i), h.clone()));
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Everything walking the windows of one selected series needs: the
/// reference time of every step, the range and the query's limits. Built
/// by [`Evaluator::range_walk`]; shared by the threads of [`crate::par`].
#[derive(Debug)]
pub(crate) struct RangeWalk {
    refs: Vec<i64>,
    range: i64,
    lo: i64,
    hi: i64,
    max_samples: usize,
    deadline: Instant,
    /// Histograms are decoded for `histogram_count`/`_sum`/`_avg` only.
    hist_stats: bool,
    /// Start timestamps are read for series that have them.
    use_st: bool,
}

impl RangeWalk {
    /// Calls `f` with the window of series `s` (number `si`) at every step,
    /// in step order; `buf` is scratch space reused across series.
    pub(crate) fn series(
        &self,
        si: usize,
        s: &stratus_tsdb::Series,
        buf: &mut WindowBuf,
        mut counts: Option<&mut WinCounts>,
        f: &mut dyn FnMut(Window<'_>) -> Result<()>,
    ) -> Result<()> {
        let (refs, range, lo, hi) = (&self.refs, self.range, self.lo, self.hi);
        check_deadline(self.deadline)?;
        let with_st = self.use_st && s.has_start_timestamps();
        if s.has_histograms() || with_st {
            let mut sts = Vec::new();
            let samples = if with_st {
                typed_st(s, lo, hi, self.hist_stats, &mut sts)?
            } else {
                typed(s, lo, hi, self.hist_stats)?
            };
            let mut fl: Vec<(i64, f64)> = Vec::new();
            let mut hs: Vec<(i64, Hist)> = Vec::new();
            let mut fst: Vec<i64> = Vec::new();
            let mut hst: Vec<i64> = Vec::new();
            for (i, &r) in refs.iter().enumerate() {
                let start = r.saturating_sub(range);
                let a = samples.partition_point(|x| x.0 <= start);
                let b = samples.partition_point(|x| x.0 <= r);
                fl.clear();
                hs.clear();
                fst.clear();
                hst.clear();
                for (k, (t, v)) in samples.get(a..b).unwrap_or(&[]).iter().enumerate() {
                    let st = sts.get(a + k).copied();
                    match v {
                        TypedV::F(f) if !is_stale_nan(*f) => {
                            fl.push((*t, *f));
                            fst.extend(st);
                        }
                        TypedV::H(h) if !h.is_stale() => {
                            hs.push((*t, h.clone()));
                            hst.extend(st);
                        }
                        _ => {}
                    }
                }
                check_samples(self.max_samples, fl.len() + hs.len())?;
                if let Some(c) = counts.as_deref_mut() {
                    let sz = fl.len() as i64 + hs.iter().map(|(_, h)| hist_size(h)).sum::<i64>();
                    c.add(i, si, sz);
                }
                f(Window {
                    series: si,
                    step: i,
                    points: &fl,
                    hpoints: &hs,
                    fst: &fst,
                    hst: &hst,
                    range_start: start,
                    range_end: r,
                })?;
            }
            return Ok(());
        }
        buf.clear();
        let mut it = s.iter(lo, hi);
        let mut peek = it.next();
        for (i, &r) in refs.iter().enumerate() {
            let start = r.saturating_sub(range);
            while buf.front().is_some_and(|p| p.0 <= start) {
                buf.pop_front();
            }
            if buf.is_empty() && peek.is_some_and(|p| p.0 <= start) {
                peek = it.seek(start.saturating_add(1));
            }
            while let Some(p) = peek {
                if p.0 > r {
                    break;
                }
                if p.0 > start && !is_stale_nan(p.1) {
                    buf.push_back(p);
                }
                peek = it.next();
            }
            check_samples(self.max_samples, buf.len())?;
            if let Some(c) = counts.as_deref_mut() {
                c.add(i, si, buf.len() as i64);
            }
            let points = buf.as_slice();
            f(Window {
                series: si,
                step: i,
                points,
                hpoints: &[],
                fst: &[],
                hst: &[],
                range_start: start,
                range_end: r,
            })?;
        }
        Ok(())
    }
}

/// The samples of a sliding window in time order: a vector whose front is
/// dropped by moving a start index and compacted when it is full and at
/// least half of it has been dropped (contiguous without the copying of a
/// `VecDeque::make_contiguous`).
#[derive(Debug, Default)]
pub(crate) struct WindowBuf {
    v: Vec<(i64, f64)>,
    head: usize,
}

impl WindowBuf {
    fn clear(&mut self) {
        self.v.clear();
        self.head = 0;
    }

    fn front(&self) -> Option<&(i64, f64)> {
        self.v.get(self.head)
    }

    fn pop_front(&mut self) {
        if self.head < self.v.len() {
            self.head += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.head >= self.v.len()
    }

    fn len(&self) -> usize {
        self.v.len() - self.head
    }

    fn push_back(&mut self, p: (i64, f64)) {
        if self.v.len() == self.v.capacity() && self.head > 0 && 2 * self.head >= self.v.len() {
            self.v.drain(..self.head);
            self.head = 0;
        }
        self.v.push(p);
    }

    fn as_slice(&self) -> &[(i64, f64)] {
        self.v.get(self.head..).unwrap_or(&[])
    }
}

/// Statistics of the windows walked for series numbered from `base`,
/// gathered apart (one per chunk of series) and merged into the query's
/// counters by [`Evaluator::merge_win_counts`]: the figures are sums and
/// per-series maxima, so the totals are exact in any order.
#[derive(Debug, Clone)]
pub(crate) struct WinCounts {
    base: usize,
    total: i64,
    /// Per top-level step (empty when not tracked).
    per_step: Vec<i64>,
    windows: Vec<NotedWin>,
}

/// [`WinStat`] of one series, and whether any window was counted.
#[derive(Debug, Clone, Copy, Default)]
struct NotedWin {
    stat: WinStat,
    noted: bool,
}

impl WinCounts {
    /// The same counters for series numbered from `base`.
    pub(crate) fn rebase(&mut self, base: usize) {
        self.base = base;
    }

    /// Counts `n` samples loaded at step `i` (no window).
    #[inline]
    fn add_step(&mut self, i: usize, n: i64) {
        self.total += n;
        if let Some(c) = self.per_step.get_mut(i) {
            *c += n;
        }
    }

    /// Counts a window of `size` samples of series `si` at step `i`.
    #[inline]
    fn add(&mut self, i: usize, si: usize, size: i64) {
        self.total += size;
        if let Some(c) = self.per_step.get_mut(i) {
            *c += size;
        }
        let j = si.saturating_sub(self.base);
        if self.windows.len() <= j {
            self.windows.resize(j + 1, NotedWin::default());
        }
        if let Some(w) = self.windows.get_mut(j) {
            w.stat.max = w.stat.max.max(size);
            w.stat.last = size;
            w.stat.nonempty |= size > 0;
            w.noted = true;
        }
    }
}

/// Fails with [`PromqlError::Timeout`] past `deadline`.
pub(crate) fn check_deadline(deadline: Instant) -> Result<()> {
    if Instant::now() > deadline {
        return Err(PromqlError::Timeout);
    }
    Ok(())
}

/// Fails with [`PromqlError::TooManySamples`] when `n` is over `max`.
pub(crate) fn check_samples(max: usize, n: usize) -> Result<()> {
    if n > max {
        return Err(PromqlError::TooManySamples);
    }
    Ok(())
}

/// True for comparison and set operators, which keep `__name__`.
pub(crate) fn keeps_name(op: BinOp) -> bool {
    op.is_comparison() || op.is_set() || matches!(op, BinOp::TrimUpper | BinOp::TrimLower)
}

/// The name label, if any.
pub(crate) fn metric_name(l: &Labels) -> &str {
    l.get(METRIC_NAME).unwrap_or("")
}

/// The float and histogram points of one window, copied.
type WindowCopy = (Vec<(i64, f64)>, Vec<(i64, Hist)>);

/// A decoded sample of a series holding native histograms.
pub(crate) enum TypedV {
    F(f64),
    H(Hist),
}

/// Decodes every sample of `s` in `[lo, hi]`, histograms as float
/// histograms.
/// The samples of a series holding native histograms in `[lo, hi]`.
///
/// Counter-reset hints follow what Prometheus' queriers report: the first
/// sample of a chunk cut for a reset reads as "unknown" (prometheus#15346).
/// With `stats` (Prometheus' `HistogramStatsIterator`), an "unknown" hint is
/// replaced by the result of reset detection against the previous
/// histogram read, when there is one.
pub(crate) fn typed(
    s: &stratus_tsdb::Series,
    lo: i64,
    hi: i64,
    stats: bool,
) -> Result<Vec<(i64, TypedV)>> {
    let raw = s
        .typed_samples(lo, hi)
        .map_err(|e| PromqlError::BadArgument {
            msg: format!("decoding histogram chunk: {e}"),
        })?;
    Ok(typed_from(raw, stats))
}

/// [`typed`] that also returns every sample's start timestamp in `sts`
/// (0 when unknown), index for index.
pub(crate) fn typed_st(
    s: &stratus_tsdb::Series,
    lo: i64,
    hi: i64,
    stats: bool,
    sts: &mut Vec<i64>,
) -> Result<Vec<(i64, TypedV)>> {
    let raw = s.st_samples(lo, hi).map_err(|e| PromqlError::BadArgument {
        msg: format!("decoding chunk: {e}"),
    })?;
    sts.clear();
    sts.extend(raw.iter().map(|x| x.2));
    Ok(typed_from(
        raw.into_iter().map(|(t, v, _)| (t, v)).collect(),
        stats,
    ))
}

fn typed_from(raw: Vec<(i64, stratus_tsdb::Value)>, stats: bool) -> Vec<(i64, TypedV)> {
    let mut last: Option<Hist> = None;
    raw.into_iter()
        .map(|(t, v)| {
            let v = match v {
                stratus_tsdb::Value::Float(f) => return (t, TypedV::F(f)),
                stratus_tsdb::Value::Histogram(h) => std::sync::Arc::new(h.to_float()),
                stratus_tsdb::Value::FloatHistogram(h) => h,
            };
            let mut h = v;
            if h.reset_hint == reset_hint::RESET {
                std::sync::Arc::make_mut(&mut h).reset_hint = reset_hint::UNKNOWN;
            }
            if stats && !h.is_stale() {
                if h.reset_hint == reset_hint::UNKNOWN {
                    if let Some(prev) = &last {
                        let hint = if crate::histogram::detect_reset(&h, prev) {
                            reset_hint::RESET
                        } else {
                            reset_hint::NOT_RESET
                        };
                        std::sync::Arc::make_mut(&mut h).reset_hint = hint;
                    }
                }
                last = Some(h.clone());
            }
            (t, TypedV::H(h))
        })
        .collect()
}

/// The step of `ctx` that time `t` sits on.
#[inline]
fn step_index(ctx: &Ctx, t: i64) -> usize {
    usize::try_from((t - ctx.start) / ctx.step.max(1)).unwrap_or(usize::MAX)
}

/// `e` without enclosing parentheses.
fn unparen_expr(mut e: &Expr) -> &Expr {
    while let Expr::Paren(inner) = e {
        e = inner;
    }
    e
}
