//! PromQL functions (float samples and native histograms).
//!
//! Range-vector functions get one window per series and step from
//! [`Evaluator::windows`] and compute one value from it; instant-vector
//! functions map points. The numerics (extrapolated rates, Kahan sums,
//! linear regression, quantiles, classic-histogram quantiles) follow
//! Prometheus 3 step by step.

use std::collections::{HashMap, HashSet, VecDeque};

use stratus_model::{Labels, METRIC_NAME, MatchType};

use crate::aggregate::{asc_nan_last, desc_nan_last, go_g};
use crate::ast::{Call, Expr, ValueType};
use crate::engine::{
    Ctx, Evaluator, OutBuilder, Result, Series, StepCursor, Val, Window, metric_name,
};
use crate::error::PromqlError;
use crate::histogram::{self as hg, Hist};

/// The result type of a function (by name).
pub(crate) fn return_type(name: &str) -> ValueType {
    if let Some(t) = crate::parser::function_return_type(name) {
        return t;
    }
    match name {
        "time" | "scalar" | "pi" | "start" | "end" | "range" | "step" | "min_of" | "max_of" => {
            ValueType::Scalar
        }
        _ => ValueType::Vector,
    }
}

/// Neumaier-compensated summation step: returns the new sum and compensation.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Quantile `q` of `values` by linear interpolation (sorts `values`).
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // NaN sorts first, as in Prometheus' vectorByValueHeap.
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Go's `math.Max`.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_infinite() && a > 0.0 || b.is_infinite() && b > 0.0 {
        return f64::INFINITY;
    }
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    if a == 0.0 && b == 0.0 {
        return if a.is_sign_negative() { b } else { a };
    }
    if a > b { a } else { b }
}

/// Go's `math.Min`.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_infinite() && a < 0.0 || b.is_infinite() && b < 0.0 {
        return f64::NEG_INFINITY;
    }
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    if a == 0.0 && b == 0.0 {
        return if a.is_sign_negative() { a } else { b };
    }
    if a < b { a } else { b }
}

fn bad(msg: impl Into<String>) -> PromqlError {
    PromqlError::BadArgument { msg: msg.into() }
}

/// The matrix argument, unwrapped from parentheses.
fn unparen(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(i) => unparen(i),
        e => e,
    }
}

pub(crate) fn eval_call(ev: &mut Evaluator<'_>, c: &Call, ctx: &Ctx) -> Result<Val> {
    let name = c.func.as_str();
    let n = ctx.n();
    let arg = |i: usize| -> Result<&Expr> {
        c.args
            .get(i)
            .ok_or_else(|| bad(format!("missing argument {i} of {name}")))
    };
    match name {
        // ---- scalars and query-context functions ----
        "time" => Ok(Val::Scalar(
            (0..n).map(|i| ctx.ts(i) as f64 / 1000.0).collect(),
        )),
        "pi" => Ok(Val::Scalar(vec![std::f64::consts::PI; n])),
        "start" => Ok(Val::Scalar(vec![ev.query_start as f64 / 1000.0; n])),
        "end" => Ok(Val::Scalar(vec![ev.query_end as f64 / 1000.0; n])),
        "range" => Ok(Val::Scalar(vec![
            (ev.query_end - ev.query_start) as f64
                / 1000.0;
            n
        ])),
        "step" => Ok(Val::Scalar(vec![ev.query_step as f64 / 1000.0; n])),
        "scalar" => {
            let v = ev.eval_vector(arg(0)?, ctx)?;
            let mut cur = StepCursor::new(&v);
            let mut buf = Vec::new();
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                cur.at(ctx.ts(i), &mut buf);
                out.push(if buf.len() == 1 { buf[0].1 } else { f64::NAN });
            }
            Ok(Val::Scalar(out))
        }
        "min_of" | "max_of" => {
            let mut acc: Option<Vec<f64>> = None;
            for a in &c.args {
                let v = ev.eval_scalar(a, ctx)?;
                acc = Some(match acc {
                    None => v,
                    Some(prev) => prev
                        .iter()
                        .zip(&v)
                        .map(|(&x, &y)| {
                            if name == "min_of" {
                                go_min(x, y)
                            } else {
                                go_max(x, y)
                            }
                        })
                        .collect(),
                });
            }
            Ok(Val::Scalar(acc.unwrap_or_else(|| vec![f64::NAN; n])))
        }
        "vector" => {
            let v = ev.eval_scalar(arg(0)?, ctx)?;
            Ok(Val::Vector(vec![Series {
                labels: Labels::empty(),
                drop_name: false,
                points: (0..n).map(|i| (ctx.ts(i), v[i])).collect(),
                hist: Vec::new(),
            }]))
        }
        // ---- range-vector functions ----
        "rate"
        | "increase"
        | "delta"
        | "irate"
        | "idelta"
        | "deriv"
        | "changes"
        | "resets"
        | "avg_over_time"
        | "sum_over_time"
        | "count_over_time"
        | "min_over_time"
        | "max_over_time"
        | "stddev_over_time"
        | "stdvar_over_time"
        | "last_over_time"
        | "first_over_time"
        | "present_over_time"
        | "mad_over_time"
        | "ts_of_first_over_time"
        | "ts_of_last_over_time"
        | "ts_of_min_over_time"
        | "ts_of_max_over_time" => range_function(ev, c, name, arg(0)?, &[], ctx),
        "predict_linear" => {
            let s = ev.eval_scalar(arg(1)?, ctx)?;
            range_function(ev, c, name, arg(0)?, &[s], ctx)
        }
        "quantile_over_time" => {
            let q = ev.eval_scalar(arg(0)?, ctx)?;
            for &x in &q {
                if x.is_nan() || !(0.0..=1.0).contains(&x) {
                    ev.warn(format!(
                        "quantile value should be between 0 and 1, got {}",
                        go_g(x)
                    ));
                }
            }
            range_function(ev, c, name, arg(1)?, &[q], ctx)
        }
        "double_exponential_smoothing" | "holt_winters" => {
            let sf = ev.eval_scalar(arg(1)?, ctx)?;
            let tf = ev.eval_scalar(arg(2)?, ctx)?;
            for &x in &sf {
                if x <= 0.0 || x >= 1.0 || x.is_nan() {
                    return Err(bad(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {x:.6}"
                    )));
                }
            }
            for &x in &tf {
                if x <= 0.0 || x >= 1.0 || x.is_nan() {
                    return Err(bad(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {x:.6}"
                    )));
                }
            }
            range_function(
                ev,
                c,
                "double_exponential_smoothing",
                arg(0)?,
                &[sf, tf],
                ctx,
            )
        }
        "absent_over_time" => {
            let a = arg(0)?;
            let mut present = vec![false; n];
            ev.windows(a, ctx, &mut |w| {
                if !w.points.is_empty() || !w.hpoints.is_empty() {
                    present[w.step] = true;
                }
                Ok(())
            })?;
            let labels = absent_labels(a);
            Ok(Val::Vector(absent_series(labels, &present, ctx)))
        }
        "absent" => {
            let a = arg(0)?;
            let v = ev.eval_vector(a, ctx)?;
            let mut present = vec![false; n];
            for s in &v {
                for p in s
                    .points
                    .iter()
                    .map(|p| p.0)
                    .chain(s.hist.iter().map(|p| p.0))
                {
                    let p = (p, ());
                    let i = ((p.0 - ctx.start) / ctx.step) as usize;
                    if let Some(x) = present.get_mut(i) {
                        *x = true;
                    }
                }
            }
            Ok(Val::Vector(absent_series(absent_labels(a), &present, ctx)))
        }
        "start_timestamp" => {
            // Only a selector's samples carry start timestamps (and only
            // with the engine option): anything else gives no result.
            let a = unparen(arg(0)?);
            let mut v = match a {
                Expr::VectorSelector(vs) if ev.use_st => {
                    ev.eval_selector_mode(vs, ctx, crate::engine::SelectorOutput::StartTimestamps)?
                }
                _ => {
                    ev.eval_vector(a, ctx)?;
                    Vec::new()
                }
            };
            for s in &mut v {
                s.drop_name = true;
            }
            Ok(Val::Vector(v))
        }
        "timestamp" => {
            let a = unparen(arg(0)?);
            let mut v = match a {
                Expr::VectorSelector(vs) => ev.eval_selector(vs, ctx, true)?,
                _ => {
                    let mut v = ev.eval_vector(a, ctx)?;
                    for s in &mut v {
                        for p in &mut s.points {
                            p.1 = p.0 as f64 / 1000.0;
                        }
                        if !s.hist.is_empty() {
                            s.points
                                .extend(s.hist.iter().map(|p| (p.0, p.0 as f64 / 1000.0)));
                            s.points.sort_by_key(|p| p.0);
                            s.hist.clear();
                        }
                    }
                    v
                }
            };
            for s in &mut v {
                s.drop_name = true;
            }
            Ok(Val::Vector(v))
        }
        // ---- element-wise functions ----
        "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sgn" | "sin"
        | "cos" | "tan" | "asin" | "acos" | "atan" | "sinh" | "cosh" | "tanh" | "asinh"
        | "acosh" | "atanh" | "deg" | "rad" => {
            let f = simple_fn(name).ok_or_else(|| bad(format!("unknown function {name}")))?;
            let mut v = ev.eval_vector(arg(0)?, ctx)?;
            for s in &mut v {
                s.drop_name = true;
                s.hist.clear();
                for p in &mut s.points {
                    p.1 = f(p.1);
                }
            }
            v.retain(|s| !s.points.is_empty());
            Ok(Val::Vector(v))
        }
        "round" => {
            let to = match c.args.get(1) {
                Some(e) => ev.eval_scalar(e, ctx)?,
                None => vec![1.0; n],
            };
            map_with_scalars(ev, arg(0)?, ctx, &[to], |v, s| {
                let inv = 1.0 / s[0];
                Some((v * inv + 0.5).floor() / inv)
            })
        }
        "clamp" => {
            let lo = ev.eval_scalar(arg(1)?, ctx)?;
            let hi = ev.eval_scalar(arg(2)?, ctx)?;
            map_with_scalars(ev, arg(0)?, ctx, &[lo, hi], |v, s| {
                if s[1] < s[0] {
                    None
                } else {
                    Some(go_max(s[0], go_min(s[1], v)))
                }
            })
        }
        "clamp_max" => {
            let hi = ev.eval_scalar(arg(1)?, ctx)?;
            map_with_scalars(ev, arg(0)?, ctx, &[hi], |v, s| Some(go_min(s[0], v)))
        }
        "clamp_min" => {
            let lo = ev.eval_scalar(arg(1)?, ctx)?;
            map_with_scalars(ev, arg(0)?, ctx, &[lo], |v, s| Some(go_max(s[0], v)))
        }
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year" => {
            let f = date_fn(name);
            match c.args.first() {
                None => Ok(Val::Vector(vec![Series {
                    labels: Labels::empty(),
                    drop_name: false,
                    points: (0..n)
                        .map(|i| (ctx.ts(i), f(ctx.ts(i).div_euclid(1000))))
                        .collect(),
                    hist: Vec::new(),
                }])),
                Some(a) => {
                    let mut v = ev.eval_vector(a, ctx)?;
                    v.retain(|s| !s.points.is_empty());
                    for s in &mut v {
                        s.drop_name = true;
                        s.hist.clear();
                        for p in &mut s.points {
                            p.1 = if p.1.is_finite() {
                                f(p.1 as i64)
                            } else {
                                f64::NAN
                            };
                        }
                    }
                    Ok(Val::Vector(v))
                }
            }
        }
        "sort" | "sort_desc" => {
            let mut v = ev.eval_vector(arg(0)?, ctx)?;
            for s in &mut v {
                s.hist.clear();
            }
            v.retain(|s| !s.points.is_empty());
            if n == 1 {
                let val = |s: &Series| s.points.first().map_or(f64::NAN, |p| p.1);
                if name == "sort" {
                    v.sort_by(|a, b| asc_nan_last(val(a), val(b)));
                } else {
                    v.sort_by(|a, b| desc_nan_last(val(a), val(b)));
                }
            }
            Ok(Val::Vector(v))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut names = Vec::new();
            for a in c.args.iter().skip(1) {
                match ev.eval(a, ctx)? {
                    Val::String(s) => names.push(s),
                    _ => return Err(bad("sort_by_label expects string label names")),
                }
            }
            let mut v = ev.eval_vector(arg(0)?, ctx)?;
            let desc = name == "sort_by_label_desc";
            v.sort_by(|a, b| {
                for l in &names {
                    let x = a.labels.get(l).unwrap_or("");
                    let y = b.labels.get(l).unwrap_or("");
                    if x == y {
                        continue;
                    }
                    let o = natural_cmp(x, y);
                    return if desc { o.reverse() } else { o };
                }
                let o = a.labels.cmp(&b.labels);
                if desc { o.reverse() } else { o }
            });
            Ok(Val::Vector(v))
        }
        "label_replace" => label_replace(ev, c, ctx),
        "label_join" => label_join(ev, c, ctx),
        "histogram_quantile" => histogram_quantile(ev, c, ctx),
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
        | "histogram_stdvar" => {
            let v = ev.eval_vector(arg(0)?, ctx)?;
            Ok(Val::Vector(hist_map(v, |h| {
                Some(match name {
                    "histogram_count" => h.count,
                    "histogram_sum" => h.sum,
                    "histogram_avg" => h.sum / h.count,
                    "histogram_stddev" => crate::histogram::variance(h).sqrt(),
                    _ => crate::histogram::variance(h),
                })
            })))
        }
        "histogram_fraction" => histogram_quantile(ev, c, ctx),
        "histogram_quantiles" => histogram_quantiles(ev, c, ctx),
        "info" => crate::info::eval_info(ev, c, ctx),
        _ => Err(PromqlError::Unsupported {
            what: format!("function {name}()"),
        }),
    }
}

/// Maps the histogram points of every series to floats (float points are
/// dropped); the name is dropped.
fn hist_map(
    v: Vec<Series>,
    f: impl Fn(&stratus_model::FloatHistogram) -> Option<f64>,
) -> Vec<Series> {
    let mut out = Vec::new();
    for s in v {
        let pts: Vec<(i64, f64)> = s
            .hist
            .iter()
            .filter_map(|(t, h)| Some((*t, f(h)?)))
            .collect();
        if !pts.is_empty() {
            out.push(Series::floats(s.labels, true, pts));
        }
    }
    out
}

fn absent_labels(e: &Expr) -> Labels {
    let vs = match e {
        Expr::VectorSelector(vs) | Expr::MatrixSelector { vs, .. } => vs,
        _ => return Labels::empty(),
    };
    let mut b = Labels::empty().builder();
    let mut has: HashSet<&str> = HashSet::new();
    for m in &vs.matchers {
        if &*m.name == METRIC_NAME {
            continue;
        }
        if m.kind == MatchType::Equal && !has.contains(&*m.name) {
            b.set(m.name.clone(), m.value.clone());
            has.insert(&m.name);
        } else {
            b.del(&m.name);
        }
    }
    b.build()
}

fn absent_series(labels: Labels, present: &[bool], ctx: &Ctx) -> Vec<Series> {
    let points: Vec<(i64, f64)> = present
        .iter()
        .enumerate()
        .filter(|(_, p)| !**p)
        .map(|(i, _)| (ctx.ts(i), 1.0))
        .collect();
    if points.is_empty() {
        return Vec::new();
    }
    vec![Series::floats(labels, false, points)]
}

fn map_with_scalars(
    ev: &mut Evaluator<'_>,
    a: &Expr,
    ctx: &Ctx,
    scalars: &[Vec<f64>],
    f: impl Fn(f64, &[f64]) -> Option<f64>,
) -> Result<Val> {
    let v = ev.eval_vector(a, ctx)?;
    let mut out = Vec::with_capacity(v.len());
    let mut sv = vec![0.0; scalars.len()];
    for mut s in v {
        let mut pts = Vec::with_capacity(s.points.len());
        for &(t, x) in &s.points {
            let i = ((t - ctx.start) / ctx.step) as usize;
            for (k, sc) in scalars.iter().enumerate() {
                sv[k] = sc.get(i).copied().unwrap_or(f64::NAN);
            }
            if let Some(y) = f(x, &sv) {
                pts.push((t, y));
            }
        }
        if !pts.is_empty() {
            s.points = pts;
            s.hist.clear();
            s.drop_name = true;
            out.push(s);
        }
    }
    Ok(Val::Vector(out))
}

fn simple_fn(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sgn" => |v: f64| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        },
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => |v: f64| v * 180.0 / std::f64::consts::PI,
        "rad" => |v: f64| v * std::f64::consts::PI / 180.0,
        _ => return None,
    })
}

/// Civil date from days since the epoch: (year, month 1-12, day 1-31).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn date_fn(name: &str) -> fn(i64) -> f64 {
    match name {
        "day_of_month" => |s| civil_from_days(s.div_euclid(86_400)).2 as f64,
        "day_of_week" => |s| (s.div_euclid(86_400) + 4).rem_euclid(7) as f64,
        "day_of_year" => |s| {
            let days = s.div_euclid(86_400);
            let (y, _, _) = civil_from_days(days);
            let jan1 = days_from_civil(y, 1, 1);
            (days - jan1 + 1) as f64
        },
        "days_in_month" => |s| {
            let (y, m, _) = civil_from_days(s.div_euclid(86_400));
            match m {
                2 if is_leap(y) => 29.0,
                2 => 28.0,
                4 | 6 | 9 | 11 => 30.0,
                _ => 31.0,
            }
        },
        "hour" => |s| (s.rem_euclid(86_400) / 3600) as f64,
        "minute" => |s| (s.rem_euclid(3600) / 60) as f64,
        "month" => |s| civil_from_days(s.div_euclid(86_400)).1 as f64,
        _ => |s| civil_from_days(s.div_euclid(86_400)).0 as f64,
    }
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Natural ordering: digit runs compare numerically.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        let (ca, cb) = (ab[i], bb[j]);
        if ca.is_ascii_digit() && cb.is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let na = a[si..i].trim_start_matches('0');
            let nb = b[sj..j].trim_start_matches('0');
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if o != Ordering::Equal {
                return o;
            }
            let o = (i - si).cmp(&(j - sj));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            if ca != cb {
                return ca.cmp(&cb);
            }
            i += 1;
            j += 1;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j))
}

/// Evaluates a range-vector function over every window.
fn range_function(
    ev: &mut Evaluator<'_>,
    c: &Call,
    name: &str,
    marg: &Expr,
    scalars: &[Vec<f64>],
    ctx: &Ctx,
) -> Result<Val> {
    let _ = c;
    let marg_u = unparen(marg);
    let (is_counter, is_rate) = match name {
        "rate" => (true, true),
        "increase" => (true, false),
        _ => (false, false),
    };
    let range_secs = match marg_u {
        Expr::MatrixSelector { range, .. } => *range as f64 / 1000.0,
        Expr::Subquery(s) => s.range as f64 / 1000.0,
        _ => 0.0,
    };
    // `Some(smoothed)` for an anchored/smoothed rate, increase or delta.
    let extended = match marg_u {
        Expr::MatrixSelector { vs, .. }
            if crate::extended::is_extended(vs)
                && matches!(name, "rate" | "increase" | "delta") =>
        {
            Some(vs.smoothed)
        }
        _ => None,
    };
    let init = || RangeState {
        sliding: match name {
            "max_over_time" => Some(SlidingExtreme::new(true)),
            "min_over_time" => Some(SlidingExtreme::new(false)),
            _ => None,
        },
        resets: is_counter.then(CounterResets::default),
        ..RangeState::default()
    };
    let float_only = matches!(
        name,
        "deriv"
            | "predict_linear"
            | "double_exponential_smoothing"
            | "quantile_over_time"
            | "stddev_over_time"
            | "stdvar_over_time"
            | "mad_over_time"
            | "min_over_time"
            | "max_over_time"
            | "ts_of_min_over_time"
            | "ts_of_max_over_time"
    );
    let steps = ctx.n();
    let f = |st: &mut RangeState, w: Window<'_>| {
        let RangeState {
            pts,
            hpts,
            annos,
            non_counter,
            sliding,
            resets,
        } = st;
        let i = w.step;
        if let Some(smoothed) = extended {
            let mut warn = |m: String| annos.push((true, m, w.series));
            if !w.hpoints.is_empty() && !w.points.is_empty() {
                warn(MIX_FH.into());
            } else if !w.hpoints.is_empty() {
                let h = crate::extended::extended_hist_rate(
                    &w, range_secs, smoothed, is_counter, is_rate, &mut warn,
                );
                if let Some(h) = h {
                    if w.series >= hpts.len() {
                        hpts.resize_with(w.series + 1, Vec::new);
                    }
                    hpts[w.series].push((ctx.ts(i), std::sync::Arc::new(h)));
                }
            } else if let Some(v) =
                crate::extended::extended_rate(&w, range_secs, smoothed, is_counter, is_rate)
            {
                if w.series >= pts.len() {
                    pts.resize_with(w.series + 1, Vec::new);
                }
                pts[w.series].push((ctx.ts(i), v));
            }
            return Ok(());
        }
        if float_only && !w.hpoints.is_empty() {
            if w.points.is_empty() {
                return Ok(());
            }
            // Falls through to the float path with the floats only.
            annos.push((
                true,
                format!("{INFO}ignored histograms in a range containing both floats and histograms for metric name {{NAME}}"),
                w.series,
            ));
        } else if !w.hpoints.is_empty() {
            let mut warn = |m: String| annos.push((true, m, w.series));
            match hist_range(name, &w, range_secs, is_counter, is_rate, &mut warn) {
                Some(HOut::F(v)) => {
                    if w.series >= pts.len() {
                        pts.resize_with(w.series + 1, Vec::new);
                    }
                    pts[w.series].push((ctx.ts(i), v));
                }
                Some(HOut::H(h)) => {
                    if w.series >= hpts.len() {
                        hpts.resize_with(w.series + 1, Vec::new);
                    }
                    hpts[w.series].push((ctx.ts(i), h));
                }
                None => {}
            }
            return Ok(());
        }
        let sv = |k: usize| {
            scalars
                .get(k)
                .and_then(|s| s.get(i))
                .copied()
                .unwrap_or(f64::NAN)
        };
        let v = match name {
            "rate" | "increase" | "delta" => {
                if w.points.len() >= 2 && is_counter {
                    *non_counter = true;
                }
                if is_counter && st_overlap(w.points.iter().map(|p| p.0), w.fst) {
                    annos.push((true, ST_OVERLAP.into(), w.series));
                }
                let delta = match resets.as_mut() {
                    Some(r) if is_counter && w.fst.is_empty() && w.points.len() >= 2 => {
                        Some(r.delta(&w))
                    }
                    _ => None,
                };
                extrapolated_rate(&w, range_secs, is_counter, is_rate, delta)
            }
            "irate" | "idelta" => instant_value(w.points, w.fst, name == "irate"),
            "deriv" => {
                if w.points.len() < 2 {
                    None
                } else {
                    Some(linear_regression(w.points, w.points[0].0).0)
                }
            }
            "predict_linear" => {
                if w.points.len() < 2 {
                    None
                } else {
                    let ts = ctx.ts(i);
                    let (slope, icpt) = linear_regression(w.points, ts);
                    Some(slope * sv(0) + icpt)
                }
            }
            "changes" | "resets" => {
                if w.points.is_empty() {
                    None
                } else {
                    let mut cnt = 0.0;
                    for (k, p) in w.points.windows(2).enumerate() {
                        let (a, b) = (p[0].1, p[1].1);
                        let hit = if name == "changes" {
                            a != b && !(a.is_nan() && b.is_nan())
                        } else {
                            b < a || st_reset_at(w.fst, k, p[0].0, p[1].0)
                        };
                        if hit {
                            cnt += 1.0;
                        }
                    }
                    Some(cnt)
                }
            }
            "double_exponential_smoothing" => smooth(w.points, sv(0), sv(1)),
            "quantile_over_time" => {
                if w.points.is_empty() {
                    None
                } else {
                    let mut v: Vec<f64> = w.points.iter().map(|p| p.1).collect();
                    Some(quantile(sv(0), &mut v))
                }
            }
            "min_over_time" | "max_over_time" => match sliding.as_mut() {
                Some(sl) => sl.window(&w),
                None => over_time(name, w.points),
            },
            _ => over_time(name, w.points),
        };
        if let Some(v) = v {
            if w.series >= pts.len() {
                pts.resize_with(w.series + 1, Vec::new);
            }
            let out = &mut pts[w.series];
            if out.capacity() == 0 {
                // At most one point per remaining step.
                out.reserve_exact(steps.saturating_sub(i));
            }
            out.push((ctx.ts(i), v));
        }
        Ok(())
    };
    let (labels, states) = crate::par::windows_par(ev, marg, ctx, &init, &f)?;
    let mut states = states.into_iter();
    let RangeState {
        mut pts,
        mut hpts,
        mut annos,
        ..
    } = states.next().unwrap_or_default();
    for st in states {
        crate::par::merge_indexed(&mut pts, st.pts);
        crate::par::merge_indexed(&mut hpts, st.hpts);
        annos.extend(st.annos);
    }
    let keep_name = matches!(name, "last_over_time" | "first_over_time");
    pts.resize_with(labels.len(), Vec::new);
    hpts.resize_with(labels.len(), Vec::new);
    for (_, m, si) in annos {
        let mn = labels.get(si).map_or("", |l| metric_name(l));
        let m = m.replace("{NAME}", &crate::value::go_quote(mn));
        match m.strip_prefix(INFO) {
            Some(i) => ev.info(i.to_string()),
            None => ev.warn(m),
        }
    }
    let mut out = Vec::new();
    for ((l, p), hp) in labels.into_iter().zip(pts).zip(hpts) {
        if p.is_empty() && hp.is_empty() {
            continue;
        }
        if p.is_empty() {
            out.push(Series {
                labels: l,
                drop_name: !keep_name,
                points: p,
                hist: hp,
            });
            continue;
        }
        if is_counter {
            let mn = metric_name(&l);
            if !mn.is_empty()
                && !mn.ends_with("_total")
                && !mn.ends_with("_sum")
                && !mn.ends_with("_count")
                && !mn.ends_with("_bucket")
            {
                ev.info(format!(
                    "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {}",
                    crate::value::go_quote(mn)
                ));
            }
        }
        out.push(Series {
            labels: l,
            drop_name: !keep_name,
            points: p,
            hist: hp,
        });
    }
    Ok(Val::Vector(out))
}

/// What [`range_function`] gathers from the windows of a chunk of series:
/// points and histogram points indexed by series number, annotations
/// `(warning, text, series)`, and the sliding extreme of min/max_over_time.
#[derive(Debug, Default)]
struct RangeState {
    pts: Vec<Vec<(i64, f64)>>,
    hpts: Vec<Vec<(i64, Hist)>>,
    annos: Vec<(bool, String, usize)>,
    non_counter: bool,
    sliding: Option<SlidingExtreme>,
    /// The counter resets of rate/increase windows.
    resets: Option<CounterResets>,
}

/// The counter resets in the windows of one `rate`/`increase` call,
/// found once per sample rather than once per window holding it.
///
/// As for [`SlidingExtreme`], the windows of a series come in step order
/// as slices of one sample sequence whose bounds only move forward, so
/// the points of a window newer than the previous window's last one are
/// the only ones not yet looked at. A reset is noted as `(time of the
/// sample that dropped, value before it)`; the resets of a window are
/// then the noted ones after its first sample, in time order, and adding
/// their values to `last - first` in that order gives the same sum, bit
/// for bit, as the per-window scan of [`extrapolated_rate`]. Any other
/// window (a new series, bounds moving back) starts afresh.
#[derive(Debug, Default)]
struct CounterResets {
    /// Series and bounds of the previous window, `None` before the first.
    prev: Option<(usize, i64, i64)>,
    /// Timestamp of the newest point looked at.
    last_t: i64,
    /// Resets at or after the current window's first sample.
    found: VecDeque<(i64, f64)>,
}

impl CounterResets {
    /// `last - first` of the window's values plus the value before each
    /// counter reset in it (a window of two or more float samples without
    /// start timestamps).
    fn delta(&mut self, w: &Window<'_>) -> f64 {
        let s = w.points;
        let (Some(&first), Some(&last)) = (s.first(), s.last()) else {
            return 0.0;
        };
        let monotonic = self.prev.is_some_and(|(series, start, end)| {
            series == w.series && w.range_start >= start && w.range_end >= end
        });
        if !monotonic {
            self.found.clear();
            self.last_t = i64::MIN;
        }
        self.prev = Some((w.series, w.range_start, w.range_end));
        while self.found.front().is_some_and(|r| r.0 <= first.0) {
            self.found.pop_front();
        }
        // Only a sample with its predecessor in the window can be a reset
        // here; one that is the window's first sample stays first in every
        // later window that holds it.
        let fresh = fresh_from(s, self.last_t).max(1);
        for pair in s.get(fresh - 1..).unwrap_or(&[]).windows(2) {
            if pair[1].1 < pair[0].1 {
                self.found.push_back((pair[1].0, pair[0].1));
            }
        }
        self.last_t = last.0;
        let mut result = last.1 - first.1;
        for r in &self.found {
            result += r.1;
        }
        result
    }
}

/// `max_over_time`/`min_over_time` over the windows of one range-function
/// call, without rescanning each window: a monotonic deque of the
/// window's non-NaN points that can still be the extreme (values in
/// decreasing order for max, increasing for min; of equal values the
/// earliest first, the one [`over_time`]'s scan keeps).
///
/// [`Evaluator::windows`] hands each series' windows over in step order,
/// as slices of one sample sequence whose bounds only move forward (also
/// with `@`, where they stay put); then the window just entered has the
/// points after the last one seen, and the ones that left are before its
/// first point. Any other window (a new series, bounds moving back)
/// starts the deque afresh.
#[derive(Debug)]
struct SlidingExtreme {
    max: bool,
    /// Series and bounds of the previous window, `None` before the first.
    prev: Option<(usize, i64, i64)>,
    /// Timestamp of the newest point taken in.
    last_t: i64,
    deque: VecDeque<(i64, f64)>,
}

impl SlidingExtreme {
    fn new(max: bool) -> Self {
        Self {
            max,
            prev: None,
            last_t: i64::MIN,
            deque: VecDeque::new(),
        }
    }

    /// The value [`over_time`] gives for the window: the extreme of the
    /// non-NaN points, or the last point if all are NaN; `None` if empty.
    fn window(&mut self, w: &Window<'_>) -> Option<f64> {
        let (first, last) = (*w.points.first()?, *w.points.last()?);
        let monotonic = self.prev.is_some_and(|(series, start, end)| {
            series == w.series && w.range_start >= start && w.range_end >= end
        });
        if !monotonic {
            self.deque.clear();
            self.last_t = i64::MIN;
        }
        self.prev = Some((w.series, w.range_start, w.range_end));
        while self.deque.front().is_some_and(|p| p.0 < first.0) {
            self.deque.pop_front();
        }
        let fresh = fresh_from(w.points, self.last_t);
        for &(t, v) in w.points.get(fresh..).unwrap_or(&[]) {
            if v.is_nan() {
                continue;
            }
            while self
                .deque
                .back()
                .is_some_and(|b| if self.max { b.1 < v } else { b.1 > v })
            {
                self.deque.pop_back();
            }
            self.deque.push_back((t, v));
        }
        self.last_t = last.0;
        Some(self.deque.front().map_or(last.1, |p| p.1))
    }
}

/// Index of the first point of `s` (sorted by time) newer than `last_t`,
/// searched from the end: a sliding window holds few new points.
fn fresh_from(s: &[(i64, f64)], last_t: i64) -> usize {
    let mut i = s.len();
    while i > 0 && s.get(i - 1).is_some_and(|p| p.0 > last_t) {
        i -= 1;
    }
    i
}

fn over_time(name: &str, s: &[(i64, f64)]) -> Option<f64> {
    let first = *s.first()?;
    let last = *s.last()?;
    Some(match name {
        "count_over_time" => s.len() as f64,
        "present_over_time" => 1.0,
        "last_over_time" => last.1,
        "first_over_time" => first.1,
        "ts_of_last_over_time" => last.0 as f64 / 1000.0,
        "ts_of_first_over_time" => first.0 as f64 / 1000.0,
        "sum_over_time" => {
            let (mut sum, mut c) = (0.0, 0.0);
            for p in s {
                (sum, c) = kahan_inc(p.1, sum, c);
            }
            if sum.is_infinite() { sum } else { sum + c }
        }
        "avg_over_time" => {
            let (mut sum, mut count) = (first.1, 1.0);
            let (mut mean, mut c) = (0.0, 0.0);
            let mut incremental = false;
            for (i, p) in s[1..].iter().enumerate() {
                count = (i + 2) as f64;
                if !incremental {
                    let (ns, nc) = kahan_inc(p.1, sum, c);
                    if !ns.is_infinite() {
                        sum = ns;
                        c = nc;
                        continue;
                    }
                    incremental = true;
                    mean = sum / (count - 1.0);
                    c /= count - 1.0;
                }
                let q = (count - 1.0) / count;
                (mean, c) = kahan_inc(p.1 / count, q * mean, q * c);
            }
            if incremental {
                mean + c
            } else {
                sum / count + c / count
            }
        }
        "min_over_time" => {
            let mut m = first.1;
            for p in s {
                if p.1 < m || m.is_nan() {
                    m = p.1;
                }
            }
            m
        }
        "max_over_time" => {
            let mut m = first.1;
            for p in s {
                if p.1 > m || m.is_nan() {
                    m = p.1;
                }
            }
            m
        }
        "ts_of_min_over_time" | "ts_of_max_over_time" => {
            let max = name == "ts_of_max_over_time";
            let (mut m, mut t) = (first.1, first.0);
            for p in s {
                let better = if max { p.1 >= m } else { p.1 <= m };
                if better || m.is_nan() {
                    m = p.1;
                    t = p.0;
                }
            }
            t as f64 / 1000.0
        }
        "stddev_over_time" | "stdvar_over_time" => {
            let (mut count, mut mean, mut cm, mut aux, mut ca) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for p in s {
                count += 1.0;
                let delta = p.1 - (mean + cm);
                (mean, cm) = kahan_inc(delta / count, mean, cm);
                (aux, ca) = kahan_inc(delta * (p.1 - (mean + cm)), aux, ca);
            }
            let var = (aux + ca) / count;
            if name == "stddev_over_time" {
                var.sqrt()
            } else {
                var
            }
        }
        "mad_over_time" => {
            if s.iter().any(|p| p.1.is_nan()) {
                return Some(f64::NAN);
            }
            let mut v: Vec<f64> = s.iter().map(|p| p.1).collect();
            let median = quantile(0.5, &mut v);
            for x in &mut v {
                *x = (*x - median).abs();
            }
            quantile(0.5, &mut v)
        }
        _ => return None,
    })
}

/// Output of a range function over a window holding histograms.
enum HOut {
    F(f64),
    H(Hist),
}

/// Prefix of annotation texts from range functions that are infos.
const INFO: &str = "info:";
const RECONCILED: &str = "mismatched custom buckets were reconciled during";
const MIX_FH: &str = "encountered a mix of histograms and floats for metric name {NAME}";
const MIX_SCHEMA: &str = "vector contains a mix of histograms with exponential and custom buckets schemas for metric name {NAME}";

/// A range function over a window that holds native histograms (and
/// maybe floats). Warnings use `{NAME}` for the quoted metric name.
fn hist_range(
    name: &str,
    w: &Window<'_>,
    range_secs: f64,
    is_counter: bool,
    is_rate: bool,
    warn: &mut dyn FnMut(String),
) -> Option<HOut> {
    let hs = w.hpoints;
    let fs = w.points;
    let mixed = !fs.is_empty();
    let arc = |h: stratus_model::FloatHistogram| Some(HOut::H(std::sync::Arc::new(h)));
    match name {
        "rate" | "increase" | "delta" => {
            if mixed {
                warn(MIX_FH.into());
                return None;
            }
            if hs.len() < 2 && !(is_counter && st_bounds_start(w.hst, w.range_start, hs[0].0)) {
                return None;
            }
            if is_counter && st_overlap(hs.iter().map(|p| p.0), w.hst) {
                warn(ST_OVERLAP.into());
            }
            let h = hist_rate(w, range_secs, is_counter, is_rate, warn)?;
            arc(h)
        }
        "irate" | "idelta" => {
            // The last two samples of either type.
            let st = |v: &[i64], i: usize| v.get(i).copied().unwrap_or(0);
            let mut all: Vec<(i64, Option<&Hist>, i64)> = fs
                .iter()
                .enumerate()
                .rev()
                .take(2)
                .map(|(i, p)| (p.0, None, st(w.fst, i)))
                .chain(
                    hs.iter()
                        .enumerate()
                        .rev()
                        .take(2)
                        .map(|(i, p)| (p.0, Some(&p.1), st(w.hst, i))),
                )
                .collect();
            all.sort_by_key(|p| p.0);
            if all.len() < 2 {
                return None;
            }
            let (a, b) = (all[all.len() - 2], all[all.len() - 1]);
            let (Some(ha), Some(hb)) = (a.1, b.1) else {
                warn(MIX_FH.into());
                return None;
            };
            let is_irate = name == "irate";
            if is_irate
                && (ha.reset_hint == stratus_model::reset_hint::GAUGE
                    || hb.reset_hint == stratus_model::reset_hint::GAUGE)
            {
                warn("this native histogram metric is not a counter: {NAME}".into());
            }
            if !is_irate
                && (ha.reset_hint != stratus_model::reset_hint::GAUGE
                    || hb.reset_hint != stratus_model::reset_hint::GAUGE)
            {
                warn("this native histogram metric is not a gauge: {NAME}".into());
            }
            let mut r = if is_irate && (is_st_reset(a.2, a.0, b.2, b.0) || hg::detect_reset(hb, ha))
            {
                hg::compact(hb)
            } else {
                if hg::custom_mismatch(hb, ha) {
                    warn(format!("{INFO}{RECONCILED} subtraction"));
                }
                match hg::sub(hb, ha) {
                    Ok(r) => r,
                    Err(_) => {
                        warn(MIX_SCHEMA.into());
                        return None;
                    }
                }
            };
            let dt = b.0 - a.0;
            if dt == 0 {
                return None;
            }
            if is_irate {
                r = hg::scale(&r, 1000.0 / dt as f64);
            }
            r.reset_hint = stratus_model::reset_hint::GAUGE;
            arc(r)
        }
        "changes" | "resets" => {
            let st = |v: &[i64], i: usize| v.get(i).copied().unwrap_or(0);
            let mut all: Vec<(i64, Result<f64, &Hist>, i64)> = fs
                .iter()
                .enumerate()
                .map(|(i, p)| (p.0, Ok(p.1), st(w.fst, i)))
                .chain(
                    hs.iter()
                        .enumerate()
                        .map(|(i, p)| (p.0, Err(&p.1), st(w.hst, i))),
                )
                .collect();
            all.sort_by_key(|p| p.0);
            let mut cnt = 0.0;
            for p in all.windows(2) {
                let st_reset = name == "resets" && is_st_reset(p[0].2, p[0].0, p[1].2, p[1].0);
                let hit = match (&p[0].1, &p[1].1) {
                    (Ok(a), Ok(b)) => {
                        if name == "changes" {
                            a != b && !(a.is_nan() && b.is_nan())
                        } else {
                            b < a || st_reset
                        }
                    }
                    (Err(a), Err(b)) => {
                        if name == "changes" {
                            !hg::approx_eq(a, b, |x, y| x == y || (x.is_nan() && y.is_nan()))
                        } else {
                            st_reset || hg::detect_reset(b, a)
                        }
                    }
                    _ => true,
                };
                if hit {
                    cnt += 1.0;
                }
            }
            Some(HOut::F(cnt))
        }
        "count_over_time" => Some(HOut::F((fs.len() + hs.len()) as f64)),
        "present_over_time" => Some(HOut::F(1.0)),
        "last_over_time" | "ts_of_last_over_time" => {
            let lh = hs.last()?;
            match fs.last() {
                Some(lf) if lf.0 > lh.0 => Some(HOut::F(if name == "last_over_time" {
                    lf.1
                } else {
                    lf.0 as f64 / 1000.0
                })),
                _ if name == "last_over_time" => Some(HOut::H(lh.1.clone())),
                _ => Some(HOut::F(lh.0 as f64 / 1000.0)),
            }
        }
        "first_over_time" | "ts_of_first_over_time" => {
            let fh = hs.first()?;
            match fs.first() {
                Some(ff) if ff.0 < fh.0 => Some(HOut::F(if name == "first_over_time" {
                    ff.1
                } else {
                    ff.0 as f64 / 1000.0
                })),
                _ if name == "first_over_time" => Some(HOut::H(fh.1.clone())),
                _ => Some(HOut::F(fh.0 as f64 / 1000.0)),
            }
        }
        "sum_over_time" | "avg_over_time" => {
            if mixed {
                warn(MIX_FH.into());
                return None;
            }
            let avg = name == "avg_over_time";
            let has = |hint: u8| hs.iter().any(|(_, h)| h.reset_hint == hint);
            if has(stratus_model::reset_hint::RESET) && has(stratus_model::reset_hint::NOT_RESET) {
                warn("conflicting counter resets during histogram aggregation".into());
            }
            let mut acc = hg::HistAcc::new(&hs[0].1);
            for (_, h) in &hs[1..] {
                if hg::custom_mismatch(acc.current(), h) {
                    warn(format!("{INFO}{RECONCILED} aggregation"));
                }
                let step = if avg { acc.add_avg(h) } else { acc.add_sum(h) };
                if step.is_err() {
                    warn(MIX_SCHEMA.into());
                    return None;
                }
            }
            let acc = if avg {
                acc.finish_avg()
            } else {
                acc.finish_sum()
            };
            arc(acc)
        }
        _ => {
            // Float-only functions ignore histograms.
            if fs.is_empty() {
                return None;
            }
            let _ = w.range_start;
            None.or_else(|| over_time(name, fs).map(HOut::F))
        }
    }
}

/// Prometheus' `histogramRate` plus the extrapolation of
/// `extrapolatedRate`.
fn hist_rate(
    w: &Window<'_>,
    range_secs: f64,
    is_counter: bool,
    is_rate: bool,
    warn: &mut dyn FnMut(String),
) -> Option<stratus_model::FloatHistogram> {
    use stratus_model::reset_hint::GAUGE;
    let s = w.hpoints;
    let (first, last) = (&s[0], &s[s.len() - 1]);
    if is_counter && (first.1.reset_hint == GAUGE || last.1.reset_hint == GAUGE) {
        warn("this native histogram metric is not a counter: {NAME}".into());
    }
    // A counter reset between the 1st and 2nd sample makes the 1st
    // irrelevant (its bucket layout included): start from an empty
    // histogram shaped like the 2nd.
    let sts = w.hst;
    let reset_at = |k: usize| st_reset_at(sts, k, s[k].0, s[k + 1].0);
    let mut start = std::borrow::Cow::Borrowed(&*first.1);
    if is_counter && s.len() > 1 && (reset_at(0) || hg::detect_reset(&s[1].1, &first.1)) {
        start = std::borrow::Cow::Owned(stratus_model::FloatHistogram {
            schema: s[1].1.schema,
            custom_values: s[1].1.custom_values.clone(),
            ..Default::default()
        });
    }
    let custom = hg::is_custom(&start);
    if hg::is_custom(&last.1) != custom {
        warn(MIX_SCHEMA.into());
        return None;
    }
    let mut min_schema = last.1.schema.min(start.schema);
    if is_counter {
        for (_, h) in s.get(1..s.len().saturating_sub(1)).unwrap_or(&[]) {
            if h.reset_hint == GAUGE {
                warn("this native histogram metric is not a counter: {NAME}".into());
            }
            min_schema = min_schema.min(h.schema);
            if hg::is_custom(h) != custom {
                warn(MIX_SCHEMA.into());
                return None;
            }
        }
    }
    if hg::custom_mismatch(&last.1, &start) {
        warn(format!("{INFO}{RECONCILED} subtraction"));
    }
    let mut h = match hg::sub(&hg::to_schema(&last.1, min_schema), &start) {
        Ok(h) => h,
        Err(_) => {
            warn(MIX_SCHEMA.into());
            return None;
        }
    };
    if is_counter {
        let mut prev: &stratus_model::FloatHistogram = &start;
        for (k, (_, cur)) in s[1..].iter().enumerate() {
            if reset_at(k) || hg::detect_reset(cur, prev) {
                if hg::custom_mismatch(&h, prev) {
                    warn(format!("{INFO}{RECONCILED} addition"));
                }
                match hg::add(&h, prev) {
                    Ok(r) => h = r,
                    Err(_) => {
                        warn(MIX_SCHEMA.into());
                        return None;
                    }
                }
            }
            prev = cur;
        }
    } else if first.1.reset_hint != GAUGE || last.1.reset_hint != GAUGE {
        warn("this native histogram metric is not a gauge: {NAME}".into());
    }
    h.reset_hint = GAUGE;
    let mut to_start = (first.0 - w.range_start) as f64 / 1000.0;
    let mut to_end = (w.range_end - last.0) as f64 / 1000.0;
    let mut sampled = (last.0 - first.0) as f64 / 1000.0;
    let avg = if s.len() > 1 {
        sampled / (s.len() - 1) as f64
    } else {
        0.0
    };
    let threshold = avg * 1.1;
    if is_counter && st_bounds_start(sts, w.range_start, first.0) {
        // A zero sample is assumed at the first sample's start time
        // instead of extrapolating to the left.
        to_start = 0.0;
        sampled = (last.0 - sts[0]) as f64 / 1000.0;
        h = match hg::add(&h, &first.1) {
            Ok(r) => r,
            Err(_) => {
                warn(MIX_SCHEMA.into());
                return None;
            }
        };
        h.reset_hint = GAUGE;
    } else {
        if to_start >= threshold {
            to_start = avg / 2.0;
        }
        if is_counter && h.count > 0.0 && first.1.count >= 0.0 {
            let to_zero = sampled * (first.1.count / h.count);
            if to_zero < to_start {
                to_start = to_zero;
            }
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let interval = sampled + to_start + to_end;
    let mut factor = if sampled != 0.0 {
        interval / sampled
    } else {
        1.0
    };
    if is_rate {
        factor /= range_secs;
    }
    let mut r = hg::scale(&h, factor);
    r.reset_hint = GAUGE;
    Some(r)
}

/// `rate`, `increase` and `delta` with Prometheus' extrapolation.
///
/// `delta`, when given, is the window's increase with counter resets
/// already accounted for (as [`CounterResets::delta`] computes it for a
/// window without start timestamps).
fn extrapolated_rate(
    w: &Window<'_>,
    range_secs: f64,
    is_counter: bool,
    is_rate: bool,
    delta: Option<f64>,
) -> Option<f64> {
    let s = w.points;
    let sts = w.fst;
    let (Some(&first), Some(&last)) = (s.first(), s.last()) else {
        return None;
    };
    let st_start = is_counter && st_bounds_start(sts, w.range_start, first.0);
    if s.len() < 2 && !st_start {
        return None;
    }
    let mut result = last.1 - first.1;
    if let Some(d) = delta {
        result = d;
    } else if is_counter {
        let mut prev = first.1;
        let rest = s.get(1..).unwrap_or(&[]);
        if sts.is_empty() {
            // No start timestamps: only value drops are resets.
            for p in rest {
                if p.1 < prev {
                    result += prev;
                }
                prev = p.1;
            }
        } else {
            for (k, p) in rest.iter().enumerate() {
                if p.1 < prev || st_reset_at(sts, k, s[k].0, p.0) {
                    result += prev;
                }
                prev = p.1;
            }
        }
    }
    let mut to_start = (first.0 - w.range_start) as f64 / 1000.0;
    let mut to_end = (w.range_end - last.0) as f64 / 1000.0;
    let mut sampled = (last.0 - first.0) as f64 / 1000.0;
    let avg = if s.len() > 1 {
        sampled / (s.len() - 1) as f64
    } else {
        0.0
    };
    let threshold = avg * 1.1;
    if st_start {
        // A zero sample is assumed at the first sample's start time
        // instead of extrapolating to the left.
        to_start = 0.0;
        sampled = (last.0 - sts[0]) as f64 / 1000.0;
        result += first.1;
    } else {
        if to_start >= threshold {
            to_start = avg / 2.0;
        }
        if is_counter && result > 0.0 && first.1 >= 0.0 {
            let to_zero = sampled * (first.1 / result);
            if to_zero < to_start {
                to_start = to_zero;
            }
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let interval = sampled + to_start + to_end;
    let mut factor = if sampled != 0.0 {
        interval / sampled
    } else {
        1.0
    };
    if is_rate {
        factor /= range_secs;
    }
    Some(result * factor)
}

/// Prometheus' `isStartTimestampReset`: whether the start timestamp
/// `cur_st` of the sample at `cur_t` says the counter restarted after the
/// previous sample (at `prev_t`, start `prev_st`). 0 is unknown; a start
/// at or after its own sample is invalid or OTel's unknown start; a
/// start on the previous sample is a reset for delta series only (the
/// previous start known and before its sample).
fn is_st_reset(prev_st: i64, prev_t: i64, cur_st: i64, cur_t: i64) -> bool {
    if cur_st == 0 || cur_st >= cur_t || cur_st < prev_t {
        return false;
    }
    if cur_st > prev_t {
        return true;
    }
    prev_st <= prev_t && prev_st != 0 && prev_st != prev_t
}

/// [`is_st_reset`] between samples `k` and `k + 1` when their start
/// timestamps are known (`sts` empty means none are).
fn st_reset_at(sts: &[i64], k: usize, prev_t: i64, cur_t: i64) -> bool {
    match (sts.get(k), sts.get(k + 1)) {
        (Some(&a), Some(&b)) => is_st_reset(a, prev_t, b, cur_t),
        _ => false,
    }
}

/// Whether the first sample's start timestamp lies inside the range
/// (after its exclusive start) and before the sample itself: then a zero
/// is assumed there instead of extrapolating to the left.
fn st_bounds_start(sts: &[i64], range_start: i64, first_t: i64) -> bool {
    sts.first()
        .is_some_and(|&st| st != 0 && st > range_start && st < first_t)
}

/// Prometheus' start-time overlap check over a window: a sample's start
/// time before the previous sample that is not the previous start time.
fn st_overlap(ts: impl Iterator<Item = i64>, sts: &[i64]) -> bool {
    if sts.len() < 2 {
        return false;
    }
    let mut prev: Option<(i64, i64)> = None;
    for (t, &st) in ts.zip(sts) {
        if let Some((pt, pst)) = prev {
            if st != 0 && st < pt && st != pst {
                return true;
            }
        }
        prev = Some((t, st));
    }
    false
}

/// Warning for [`st_overlap`].
const ST_OVERLAP: &str =
    "sample has start time that overlaps with previous sample timestamp for metric {NAME}";

/// `irate` / `idelta`: the last two samples.
fn instant_value(s: &[(i64, f64)], sts: &[i64], is_rate: bool) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let n = s.len();
    let (prev, last) = (s[n - 2], s[n - 1]);
    let st_reset = is_rate && st_reset_at(sts, n - 2, prev.0, last.0);
    let mut v = if is_rate && (last.1 < prev.1 || st_reset) {
        last.1
    } else {
        last.1 - prev.1
    };
    let dt = last.0 - prev.0;
    if dt == 0 {
        return None;
    }
    if is_rate {
        v /= dt as f64 / 1000.0;
    }
    Some(v)
}

/// Least-squares fit of `s` with x in seconds relative to `intercept_t`.
fn linear_regression(s: &[(i64, f64)], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sxy, mut cxy, mut sx2, mut cx2) = (0.0, 0.0, 0.0, 0.0);
    let init_y = s[0].1;
    let mut const_y = true;
    for (i, p) in s.iter().enumerate() {
        if const_y && i > 0 && p.1 != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (p.0 - intercept_t) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(p.1, sy, cy);
        (sxy, cxy) = kahan_inc(x * p.1, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sx += cx;
    sy += cy;
    sxy += cxy;
    sx2 += cx2;
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    let icpt = sy / n - slope * sx / n;
    (slope, icpt)
}

fn smooth(s: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, s[0].1);
    let mut b = s[1].1 - s[0].1;
    for (i, p) in s.iter().enumerate().skip(1) {
        let x = sf * p.1;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

/// Go `regexp.Expand`-style template expansion (`$1`, `${1}`, `$name`).
fn expand(template: &str, caps: &regex::Captures<'_>, re: &regex::Regex) -> String {
    let mut out = String::new();
    let b = template.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            let start = i;
            while i < b.len() && b[i] != b'$' {
                i += 1;
            }
            out.push_str(&template[start..i]);
            continue;
        }
        // b[i] == '$'
        if i + 1 < b.len() && b[i + 1] == b'$' {
            out.push('$');
            i += 2;
            continue;
        }
        let (name, next) = if i + 1 < b.len() && b[i + 1] == b'{' {
            match template[i + 2..].find('}') {
                Some(end) => {
                    let nm = &template[i + 2..i + 2 + end];
                    if nm.is_empty() || !nm.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
                    {
                        out.push('$');
                        i += 1;
                        continue;
                    }
                    (nm, i + 3 + end)
                }
                None => {
                    out.push('$');
                    i += 1;
                    continue;
                }
            }
        } else {
            let mut j = i + 1;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            if j == i + 1 {
                out.push('$');
                i += 1;
                continue;
            }
            (&template[i + 1..j], j)
        };
        i = next;
        if let Ok(idx) = name.parse::<usize>() {
            if let Some(m) = caps.get(idx) {
                out.push_str(m.as_str());
            }
        } else if re.capture_names().flatten().any(|n| n == name) {
            if let Some(m) = caps.name(name) {
                out.push_str(m.as_str());
            }
        }
    }
    out
}

fn string_arg(ev: &mut Evaluator<'_>, e: &Expr, ctx: &Ctx) -> Result<String> {
    match ev.eval(e, ctx)? {
        Val::String(s) => Ok(s),
        _ => Err(bad("expected string argument")),
    }
}

/// Series that now share a label set are merged; overlapping points are an
/// error.
fn dedup_check(v: Vec<Series>) -> Result<Vec<Series>> {
    crate::engine::merge_same_labels(v)
}

fn label_replace(ev: &mut Evaluator<'_>, c: &Call, ctx: &Ctx) -> Result<Val> {
    if c.args.len() != 5 {
        return Err(bad("label_replace expects 5 arguments"));
    }
    let dst = string_arg(ev, &c.args[1], ctx)?;
    let repl = string_arg(ev, &c.args[2], ctx)?;
    let src = string_arg(ev, &c.args[3], ctx)?;
    let re_s = string_arg(ev, &c.args[4], ctx)?;
    let re = regex::Regex::new(&format!("^(?s:{re_s})$")).map_err(|e| {
        bad(format!(
            "invalid regular expression in label_replace(): {re_s}: {e}"
        ))
    })?;
    if !crate::aggregate::is_valid_label_name(&dst) {
        return Err(PromqlError::InvalidLabel {
            msg: format!("invalid destination label name in label_replace(): {dst}"),
        });
    }
    let mut v = ev.eval_vector(&c.args[0], ctx)?;
    for s in &mut v {
        let sv = s.labels.get(&src).unwrap_or("").to_string();
        if let Some(caps) = re.captures(&sv) {
            let res = expand(&repl, &caps, &re);
            let mut b = s.labels.builder();
            b.set(dst.as_str(), res);
            s.labels = b.build();
            if dst == METRIC_NAME {
                s.drop_name = false;
            }
        }
    }
    Ok(Val::Vector(dedup_check(v)?))
}

fn label_join(ev: &mut Evaluator<'_>, c: &Call, ctx: &Ctx) -> Result<Val> {
    if c.args.len() < 3 {
        return Err(bad("label_join expects at least 3 arguments"));
    }
    let dst = string_arg(ev, &c.args[1], ctx)?;
    let sep = string_arg(ev, &c.args[2], ctx)?;
    let mut srcs = Vec::new();
    for a in &c.args[3..] {
        srcs.push(string_arg(ev, a, ctx)?);
    }
    if !crate::aggregate::is_valid_label_name(&dst) {
        return Err(PromqlError::InvalidLabel {
            msg: format!("invalid destination label name in label_join(): {dst}"),
        });
    }
    let mut v = ev.eval_vector(&c.args[0], ctx)?;
    for s in &mut v {
        let joined: Vec<&str> = srcs.iter().map(|n| s.labels.get(n).unwrap_or("")).collect();
        let val = joined.join(&sep);
        let mut b = s.labels.builder();
        b.set(dst.as_str(), val);
        s.labels = b.build();
        if dst == METRIC_NAME {
            s.drop_name = false;
        }
    }
    Ok(Val::Vector(dedup_check(v)?))
}

/// Parses an `le` value like Go's `strconv.ParseFloat`.
pub(crate) fn parse_go_float(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    let lower = t.to_ascii_lowercase();
    match lower.as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => return Some(f64::INFINITY),
        "-inf" | "-infinity" => return Some(f64::NEG_INFINITY),
        "nan" => return Some(f64::NAN),
        _ => {}
    }
    if let Some(h) = lower
        .strip_prefix("0x")
        .or_else(|| lower.strip_prefix("+0x"))
    {
        return u64::from_str_radix(h, 16).ok().map(|v| v as f64);
    }
    if let Some(h) = lower.strip_prefix("-0x") {
        return u64::from_str_radix(h, 16).ok().map(|v| -(v as f64));
    }
    if lower.contains("inf") || lower.contains("nan") {
        return None;
    }
    t.parse::<f64>().ok()
}

fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < eps * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < eps
}

/// Quantile over classic buckets `(upper bound, cumulative count)`.
/// Returns the value and whether monotonicity had to be forced.
/// The fraction of observations in `[lower, upper]` of classic buckets
/// `(upper bound, cumulative count)`, estimated like for a native histogram
/// with the same custom buckets.
fn bucket_fraction(lower: f64, upper: f64, buckets: &mut [(f64, f64)]) -> f64 {
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if !buckets.last().is_some_and(|b| b.0 == f64::INFINITY) {
        return f64::NAN;
    }
    // Coalesce equal bounds, then force monotonic cumulative counts.
    let mut cum: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(le, c) in buckets.iter() {
        match cum.last_mut() {
            Some(last) if last.0 == le => last.1 += c,
            _ => cum.push((le, c)),
        }
    }
    let mut max = f64::NEG_INFINITY;
    for b in &mut cum {
        if b.1 < max {
            b.1 = max;
        }
        max = b.1;
    }
    let mut prev = 0.0;
    let mut counts = Vec::with_capacity(cum.len());
    for b in &cum {
        counts.push(b.1 - prev);
        prev = b.1;
    }
    let h = stratus_model::FloatHistogram {
        schema: stratus_model::CUSTOM_BUCKETS_SCHEMA,
        count: prev,
        custom_values: cum.iter().map(|b| b.0).filter(|b| b.is_finite()).collect(),
        positive_spans: vec![stratus_model::BucketSpan {
            offset: 0,
            length: counts.len() as u32,
        }],
        positive_buckets: counts,
        ..Default::default()
    };
    hg::fraction(lower, upper, &h)
}

pub(crate) fn bucket_quantile(q: f64, buckets: &mut Vec<(f64, f64)>) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    match buckets.last() {
        Some(b) if b.0 == f64::INFINITY => {}
        _ => return (f64::NAN, false),
    }
    // Coalesce equal bounds.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(ub, c) in buckets.iter() {
        match merged.last_mut() {
            Some(l) if l.0 == ub => l.1 += c,
            _ => merged.push((ub, c)),
        }
    }
    *buckets = merged;
    let mut forced = false;
    let mut prev = buckets[0].1;
    for b in buckets.iter_mut().skip(1) {
        let cur = b.1;
        if cur == prev {
            continue;
        }
        if almost_equal(prev, cur, 1e-12) {
            b.1 = prev;
            continue;
        }
        if cur < prev {
            b.1 = prev;
            forced = true;
            continue;
        }
        prev = cur;
    }
    if buckets.len() < 2 {
        return (f64::NAN, forced);
    }
    let obs = buckets[buckets.len() - 1].1;
    if obs == 0.0 {
        return (f64::NAN, forced);
    }
    let mut rank = q * obs;
    let last = buckets.len() - 1;
    let b = buckets[..last].partition_point(|x| x.1 < rank);
    if b == last {
        return (buckets[last - 1].0, forced);
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return (buckets[0].0, forced);
    }
    let mut start = 0.0;
    let end = buckets[b].0;
    let mut count = buckets[b].1;
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    (start + (end - start) * (rank / count), forced)
}

/// `histogram_quantile(q, v)` and `histogram_fraction(lower, upper, v)`
/// over native histograms and classic `le` buckets.
fn histogram_quantile(ev: &mut Evaluator<'_>, c: &Call, ctx: &Ctx) -> Result<Val> {
    let fraction = c.func == "histogram_fraction";
    let nargs = if fraction { 3 } else { 2 };
    if c.args.len() != nargs {
        return Err(bad(format!("{} expects {nargs} arguments", c.func)));
    }
    let q = ev.eval_scalar(&c.args[0], ctx)?;
    let upper = if fraction {
        ev.eval_scalar(&c.args[1], ctx)?
    } else {
        Vec::new()
    };
    let v = ev.eval_vector(&c.args[nargs - 1], ctx)?;
    Ok(Val::Vector(quantile_core(
        ev, &q, &upper, &v, fraction, ctx,
    )?))
}

/// `histogram_quantiles(v, "label", q1, q2, ...)`: one result per
/// quantile, told apart by `label`.
fn histogram_quantiles(ev: &mut Evaluator<'_>, c: &Call, ctx: &Ctx) -> Result<Val> {
    if c.args.len() < 3 {
        return Err(bad("histogram_quantiles expects at least 3 arguments"));
    }
    let v = ev.eval_vector(&c.args[0], ctx)?;
    let label = string_arg(ev, &c.args[1], ctx)?;
    if label.is_empty() {
        return Err(bad("invalid label name \"\""));
    }
    let mut out = OutBuilder::default();
    for qa in &c.args[2..] {
        let q = ev.eval_scalar(qa, ctx)?;
        for s in quantile_core(ev, &q, &[], &v, false, ctx)? {
            for (t, x) in s.points {
                let i = usize::try_from((t - ctx.start) / ctx.step.max(1)).unwrap_or(0);
                let qv = q.get(i).copied().unwrap_or(f64::NAN);
                let mut b = s.labels.builder();
                b.set(label.clone(), quantile_label(qv));
                out.push(b.build(), true, t, x)?;
            }
        }
    }
    Ok(Val::Vector(out.series))
}

/// A quantile as a label value: shortest decimal form with at least one
/// fractional digit (`0.0`, `0.25`, `1.0`).
fn quantile_label(q: f64) -> String {
    let s = format!("{q}");
    if q.is_finite() && !s.contains('.') {
        format!("{s}.0")
    } else {
        s
    }
}

/// The shared body of `histogram_quantile`, `histogram_fraction` (with
/// `upper`) and `histogram_quantiles`.
fn quantile_core(
    ev: &mut Evaluator<'_>,
    q: &[f64],
    upper: &[f64],
    v: &[Series],
    fraction: bool,
    ctx: &Ctx,
) -> Result<Vec<Series>> {
    // Per series: bucket bound and group key (labels without `le`).
    let mut les: Vec<Option<f64>> = Vec::with_capacity(v.len());
    let mut keys: Vec<Labels> = Vec::with_capacity(v.len());
    for s in v {
        let le = s.labels.get("le").and_then(parse_go_float);
        if le.is_none() && !s.points.is_empty() {
            ev.warn(format!(
                "bucket label \"le\" is missing or has a malformed value of {} for metric name {}",
                crate::value::go_quote(s.labels.get("le").unwrap_or("")),
                crate::value::go_quote(metric_name(&s.labels))
            ));
        }
        les.push(le);
        keys.push(s.labels.filter_names(&["le"], false));
    }
    let mut out = OutBuilder::default();
    let mut cur = StepCursor::new(v);
    let mut vals = Vec::new();
    let mut hvals = Vec::new();
    let has_hist = v.iter().any(|s| !s.hist.is_empty());
    let mut warned_q = false;
    for (i, &qv) in q.iter().enumerate().take(ctx.n()) {
        ev.check_deadline()?;
        let ts = ctx.ts(i);
        cur.at(ts, &mut vals);
        if has_hist {
            cur.at_hist(ts, &mut hvals);
        }
        // Prometheus checks the quantile before looking at the input, so an
        // empty vector still gets the warning.
        if !fraction && (qv.is_nan() || !(0.0..=1.0).contains(&qv)) && !warned_q {
            warned_q = true;
            ev.warn(format!(
                "quantile value should be between 0 and 1, got {}",
                go_g(qv)
            ));
        }
        if vals.is_empty() && hvals.is_empty() {
            continue;
        }
        let up = upper.get(i).copied().unwrap_or(f64::NAN);
        let mut order: Vec<&Labels> = Vec::new();
        let mut groups: HashMap<&Labels, Vec<(f64, f64)>> = HashMap::new();
        for &(si, x) in &vals {
            let Some(le) = les[si] else { continue };
            let k = &keys[si];
            groups
                .entry(k)
                .or_insert_with(|| {
                    order.push(k);
                    Vec::new()
                })
                .push((le, x));
        }
        for (si, h) in &hvals {
            let k = &keys[*si];
            let key = crate::engine::drop_name(k);
            if groups.keys().any(|g| crate::engine::drop_name(g) == key) {
                ev.warn(format!(
                    "vector contains a mix of classic and native histograms for metric name {}",
                    crate::value::go_quote(metric_name(k))
                ));
                groups.retain(|g, _| crate::engine::drop_name(g) != key);
                continue;
            }
            let nan_obs = h.sum.is_nan() && h.count > 0.0;
            let val = if fraction {
                hg::fraction(qv, up, h)
            } else if nan_obs && qv * h.count > hg::buckets_total(h) {
                // The quantile falls among the NaN observations.
                f64::NAN
            } else {
                hg::quantile(qv, h)
            };
            if nan_obs {
                let what = if fraction {
                    "histogram_fraction has NaN observations, which are excluded from all fractions"
                } else if val.is_nan() {
                    "histogram_quantile has NaN observations, result is NaN"
                } else {
                    "histogram_quantile has NaN observations, result is skewed higher"
                };
                ev.info(format!(
                    "input to {what} for metric name {}",
                    crate::value::go_quote(metric_name(k))
                ));
            }
            out.push(v[*si].labels.clone(), true, ts, val)?;
        }
        for k in order {
            let Some(mut b) = groups.remove(k) else {
                continue;
            };
            if fraction {
                out.push(k.clone(), true, ts, bucket_fraction(qv, up, &mut b))?;
                continue;
            }
            let (val, forced) = bucket_quantile(qv, &mut b);
            if forced {
                ev.info(format!(
                    "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {}",
                    crate::value::go_quote(metric_name(k))
                ));
            }
            out.push(k.clone(), true, ts, val)?;
        }
    }
    Ok(out.series)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sliding max/min equals the per-window scan bit for bit (NaN,
    /// ±0 and ties included) over windows that advance, stay put, move
    /// back and change series, on a fixed pseudo-random sequence.
    #[test]
    fn sliding_extreme_matches_scan() {
        let vals = [f64::NAN, 0.0, -0.0, 1.0, 2.0, -1.0, f64::INFINITY, 2.0, 1.0];
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for max in [true, false] {
            let name = if max {
                "max_over_time"
            } else {
                "min_over_time"
            };
            let mut sl = SlidingExtreme::new(max);
            for series in 0..40usize {
                let mut points: Vec<(i64, f64)> = Vec::new();
                for t in 0..60 {
                    if rnd(4) != 0 {
                        points.push((t * 10, vals[rnd(vals.len() as u64) as usize]));
                    }
                }
                let range = 10 + 10 * rnd(8) as i64;
                let mut end = -20i64;
                for step in 0..80 {
                    end += match rnd(10) {
                        0 => -30,
                        1 => 0,
                        _ => 5 + 5 * rnd(3) as i64,
                    };
                    let start = end - range;
                    let a = points.partition_point(|p| p.0 <= start);
                    let b = points.partition_point(|p| p.0 <= end).max(a);
                    let w = Window {
                        series,
                        step,
                        points: &points[a..b],
                        hpoints: &[],
                        fst: &[],
                        hst: &[],
                        range_start: start,
                        range_end: end,
                    };
                    let want = over_time(name, w.points).map(f64::to_bits);
                    let got = sl.window(&w).map(f64::to_bits);
                    assert_eq!(got, want, "{name} series {series} step {step}");
                }
            }
        }
    }

    /// `rate` from the incremental counter resets equals the per-window
    /// scan bit for bit over windows that advance, stay put, move back,
    /// change series or are left out (as windows holding histograms are),
    /// on counters with resets, NaNs and large jumps.
    #[test]
    fn counter_resets_match_scan() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut cr = CounterResets::default();
        for series in 0..60usize {
            let mut points: Vec<(i64, f64)> = Vec::new();
            let mut v = 0.0f64;
            for t in 0..80 {
                v = match rnd(12) {
                    0 => rnd(5) as f64 * 0.3,
                    1 => f64::NAN,
                    2 => v + 1e17,
                    _ if v.is_nan() => 1.0,
                    _ => v + rnd(7) as f64 * 0.1,
                };
                if rnd(5) != 0 {
                    points.push((t * 10, v));
                }
            }
            let range = 10 + 10 * rnd(10) as i64;
            let mut end = -20i64;
            for step in 0..100 {
                end += match rnd(12) {
                    0 => -30,
                    1 => 0,
                    _ => 5 + 5 * rnd(3) as i64,
                };
                let start = end - range;
                let a = points.partition_point(|p| p.0 <= start);
                let b = points.partition_point(|p| p.0 <= end).max(a);
                let w = Window {
                    series,
                    step,
                    points: &points[a..b],
                    hpoints: &[],
                    fst: &[],
                    hst: &[],
                    range_start: start,
                    range_end: end,
                };
                if w.points.len() < 2 || rnd(6) == 0 {
                    continue;
                }
                let want = extrapolated_rate(&w, range as f64, true, true, None).map(f64::to_bits);
                let delta = cr.delta(&w);
                let got =
                    extrapolated_rate(&w, range as f64, true, true, Some(delta)).map(f64::to_bits);
                assert_eq!(got, want, "series {series} step {step}");
            }
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        // 2016-02-29
        assert_eq!(civil_from_days(16_860), (2016, 2, 29));
        assert_eq!(days_from_civil(2016, 2, 29), 16_860);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn natural_order() {
        assert_eq!(natural_cmp("a2", "a10"), std::cmp::Ordering::Less);
        assert_eq!(natural_cmp("b", "a10"), std::cmp::Ordering::Greater);
    }

    #[test]
    fn kahan_keeps_small_terms() {
        let (s, c) = kahan_inc(1.0, 1e100, 0.0);
        let (s, c) = kahan_inc(-1e100, s, c);
        assert_eq!(s + c, 1.0);
    }
}
