//! Aggregation operators (`sum`, `avg`, `topk`, `count_values`, ...).
//!
//! Each step's input vector is split into groups by the `by`/`without`
//! labels; the float arithmetic (Kahan-compensated sums, the
//! direct-then-incremental mean, Welford variance) follows Prometheus so
//! results agree to the last bits in the common cases.

use std::collections::HashMap;

use stratus_model::{Labels, METRIC_NAME};

use crate::ast::{AggOp, Aggregate};
use std::sync::Arc;

use crate::engine::{Ctx, Evaluator, OutBuilder, Result, Series, StepCursor, Val};
use crate::error::PromqlError;
use crate::functions::{kahan_inc, quantile};
use crate::histogram::Hist;
use stratus_model::format_float;

/// Group labels of one series.
fn group_labels(l: &Labels, drop_name: bool, a: &Aggregate) -> Labels {
    if a.without {
        let mut names: Vec<&str> = a.grouping.iter().map(String::as_str).collect();
        names.push(METRIC_NAME);
        l.filter_names(&names, false)
    } else {
        let mut g = l.filter_names(&a.grouping, true);
        if drop_name {
            g = crate::engine::drop_name(&g);
        }
        g
    }
}

/// Running state of one group at one step.
#[derive(Debug, Clone)]
struct Group {
    labels: Labels,
    value: f64,
    mean: f64,
    kahan: f64,
    count: f64,
    incremental: bool,
    /// Members (series index, value) for topk/bottomk/limitk/quantile.
    members: Vec<(usize, f64)>,
}

pub(crate) fn eval_aggregate(ev: &mut Evaluator<'_>, a: &Aggregate, ctx: &Ctx) -> Result<Val> {
    let n = ctx.n();
    let mut fparam: Option<Vec<f64>> = None;
    let mut sparam: Option<String> = None;
    if let Some(p) = &a.param {
        match a.op {
            AggOp::CountValues => match ev.eval(p, ctx)? {
                Val::String(s) => sparam = Some(s),
                _ => {
                    return Err(PromqlError::BadArgument {
                        msg: "count_values parameter must be a string".into(),
                    });
                }
            },
            _ => fparam = Some(ev.eval_scalar(p, ctx)?),
        }
    }
    let mut input = ev.eval_vector(&a.expr, ctx)?;
    let has_hist = input.iter().any(|s| !s.hist.is_empty());
    if has_hist
        && matches!(
            a.op,
            AggOp::Count | AggOp::Group | AggOp::LimitK | AggOp::LimitRatio
        )
    {
        // These only look at presence (or keep samples as they are).
        if matches!(a.op, AggOp::Count | AggOp::Group) {
            for s in &mut input {
                if !s.hist.is_empty() {
                    s.points.extend(s.hist.iter().map(|p| (p.0, 1.0)));
                    s.points.sort_by_key(|p| p.0);
                    s.hist.clear();
                }
            }
        }
    }
    if matches!(a.op, AggOp::CountValues) {
        let label = sparam.unwrap_or_default();
        if label.is_empty() || !is_valid_label_name(&label) {
            return Err(PromqlError::InvalidLabel {
                msg: format!("invalid label name {}", crate::value::go_quote(&label)),
            });
        }
        return count_values(ev, a, &label, input, ctx);
    }
    if let Some(p) = &fparam {
        match a.op {
            AggOp::TopK | AggOp::BottomK | AggOp::LimitK if p.iter().any(|v| v.is_nan()) => {
                return Err(PromqlError::ParamNaN);
            }
            AggOp::LimitRatio => {
                if p.iter().any(|v| v.is_nan()) {
                    return Err(PromqlError::RatioNaN);
                }
                let (mn, mx) = p
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                        (a.min(v), b.max(v))
                    });
                if mn < -1.0 {
                    ev.warn(format!(
                        "ratio value should be between -1 and 1, got {}",
                        go_g(mn)
                    ));
                } else if mx > 1.0 {
                    ev.warn(format!(
                        "ratio value should be between -1 and 1, got {}",
                        go_g(mx)
                    ));
                }
            }
            AggOp::Quantile => {
                for &q in p {
                    if q.is_nan() || !(0.0..=1.0).contains(&q) {
                        ev.at_pos(a.param_pos, |ev| {
                            ev.warn(format!(
                                "quantile value should be between 0 and 1, got {}",
                                go_g(q)
                            ))
                        });
                    }
                }
            }
            _ => {}
        }
    }
    // Group key of every input series (constant across steps).
    let keys: Vec<Labels> = input
        .iter()
        .map(|s| group_labels(&s.labels, s.drop_name, a))
        .collect();
    // Group number of every input series, from hashing each label set
    // once rather than at every step.
    let mut gid: Vec<usize> = Vec::with_capacity(keys.len());
    let ngroups = {
        let mut m: HashMap<&Labels, usize> = HashMap::with_capacity(keys.len());
        for k in &keys {
            let next = m.len();
            gid.push(*m.entry(k).or_insert(next));
        }
        m.len()
    };
    // Per group number: its position in `groups` at this step (or
    // `usize::MAX`), and its output series once it has one.
    let mut slot: Vec<usize> = vec![usize::MAX; ngroups];
    let mut out_slot: Vec<usize> = vec![usize::MAX; ngroups];
    let mut member_slot: Vec<usize> = Vec::new();
    let mut active: Vec<usize> = Vec::new();
    let mut out = OutBuilder::default();
    let mut cur = StepCursor::new(&input);
    let mut vals = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut spare: Vec<Vec<(usize, f64)>> = Vec::new();
    let mut hvals = Vec::new();
    let hist_agg = has_hist && matches!(a.op, AggOp::Sum | AggOp::Avg);
    let mut hcur = StepCursor::new(&input);
    for i in 0..n {
        ev.check_deadline()?;
        let ts = ctx.ts(i);
        cur.at(ts, &mut vals);
        let mut skip: Vec<&Labels> = Vec::new();
        if has_hist {
            hcur.at_hist(ts, &mut hvals);
            if !hvals.is_empty() {
                if hist_agg {
                    skip = hist_groups(ev, a.op, &keys, &vals, &hvals, ts, &mut out)?;
                } else if !matches!(
                    a.op,
                    AggOp::Count | AggOp::Group | AggOp::LimitK | AggOp::LimitRatio
                ) {
                    ev.info(format!(
                        "ignored histogram in {} aggregation",
                        agg_name(a.op)
                    ));
                }
            }
        }
        if has_hist && matches!(a.op, AggOp::LimitK | AggOp::LimitRatio) {
            let param = fparam.as_ref().map_or(f64::NAN, |p| p[i]);
            limit_mixed(a.op, param, &keys, &vals, &hvals, &input, ts, &mut out)?;
            continue;
        }
        if vals.is_empty() {
            continue;
        }
        let param = fparam.as_ref().map_or(f64::NAN, |p| p[i]);
        for &k in &active {
            slot[k] = usize::MAX;
        }
        active.clear();
        // The member lists of the last step are kept for reuse.
        for g in groups.drain(..) {
            let mut m = g.members;
            m.clear();
            spare.push(m);
        }
        for &(si, v) in &vals {
            let k = gid[si];
            match slot[k] {
                usize::MAX => {
                    slot[k] = groups.len();
                    active.push(k);
                    let mut g = new_group(a.op, keys[si].clone(), v);
                    if let Some(m) = spare.pop() {
                        g.members = m;
                    }
                    g.members.push((si, v));
                    groups.push(g);
                }
                g => add(a.op, &mut groups[g], si, v),
            }
        }
        match a.op {
            AggOp::TopK | AggOp::BottomK | AggOp::LimitK | AggOp::LimitRatio => {
                if member_slot.is_empty() {
                    member_slot = vec![usize::MAX; input.len()];
                }
                for g in &mut groups {
                    let picked = select_k(a.op, param, &mut g.members, &input);
                    for (si, v) in picked {
                        let s = &input[si];
                        out.push_cached(&mut member_slot[si], &s.labels, s.drop_name, ts, v)?;
                    }
                }
            }
            _ => {
                for (g, &k) in groups.iter_mut().zip(&active) {
                    if skip.contains(&&g.labels) {
                        continue;
                    }
                    let v = finish(a.op, g, param);
                    out.push_cached(&mut out_slot[k], &g.labels, false, ts, v)?;
                }
            }
        }
    }
    Ok(Val::Vector(out.series))
}

fn agg_name(op: AggOp) -> &'static str {
    match op {
        AggOp::Sum => "sum",
        AggOp::Avg => "avg",
        AggOp::Count => "count",
        AggOp::Min => "min",
        AggOp::Max => "max",
        AggOp::Group => "group",
        AggOp::Stddev => "stddev",
        AggOp::Stdvar => "stdvar",
        AggOp::TopK => "topk",
        AggOp::BottomK => "bottomk",
        AggOp::CountValues => "count_values",
        AggOp::Quantile => "quantile",
        AggOp::LimitK => "limitk",
        AggOp::LimitRatio => "limit_ratio",
    }
}

/// `sum`/`avg` over the histogram samples of one step: outputs the
/// histogram groups and returns the group keys that also hold floats
/// (those produce nothing, with a warning).
fn hist_groups<'k>(
    ev: &mut Evaluator<'_>,
    op: AggOp,
    keys: &'k [Labels],
    vals: &[(usize, f64)],
    hvals: &[(usize, Hist)],
    ts: i64,
    out: &mut OutBuilder,
) -> Result<Vec<&'k Labels>> {
    let mut order: Vec<&Labels> = Vec::new();
    // Per group: the running sum or mean, or None once two histograms
    // could not be combined (the group then yields nothing).
    let mut acc: HashMap<&Labels, Option<crate::histogram::HistAcc>> = HashMap::new();
    // Per group: a "reset" hint seen, a "not reset" hint seen (both is a
    // conflict, as Prometheus warns).
    let mut seen: HashMap<&Labels, (bool, bool)> = HashMap::new();
    for (si, h) in hvals {
        let k = &keys[*si];
        let flags = seen.entry(k).or_default();
        match h.reset_hint {
            stratus_model::reset_hint::RESET => flags.0 = true,
            stratus_model::reset_hint::NOT_RESET => flags.1 = true,
            _ => {}
        }
        let Some(slot) = acc.get_mut(k) else {
            order.push(k);
            acc.insert(k, Some(crate::histogram::HistAcc::new(h)));
            continue;
        };
        let Some(a) = slot else { continue };
        if crate::histogram::custom_mismatch(a.current(), h) {
            ev.info("mismatched custom buckets were reconciled during aggregation".into());
        }
        let r = if op == AggOp::Avg {
            a.add_avg(h)
        } else {
            a.add_sum(h)
        };
        if r.is_err() {
            ev.warn(
                "vector contains a mix of histograms with exponential and custom buckets schemas for metric name \"\"".into(),
            );
            *slot = None;
        }
    }
    if seen.values().any(|&(r, n)| r && n) {
        ev.warn("conflicting counter resets during histogram aggregation".into());
    }
    let mut skip = Vec::new();
    for k in order {
        if vals.iter().any(|(si, _)| &keys[*si] == k) {
            ev.warn("encountered a mix of histograms and floats for aggregation".into());
            skip.push(k);
            continue;
        }
        let Some(Some(a)) = acc.remove(k) else {
            continue;
        };
        let h = if op == AggOp::Avg {
            a.finish_avg()
        } else {
            a.finish_sum()
        };
        out.push_hist(k.clone(), false, ts, Arc::new(h))?;
    }
    Ok(skip)
}

fn new_group(op: AggOp, labels: Labels, v: f64) -> Group {
    let value = match op {
        AggOp::Count | AggOp::Group => 1.0,
        AggOp::Stddev | AggOp::Stdvar => {
            if v.is_finite() {
                0.0
            } else {
                f64::NAN
            }
        }
        _ => v,
    };
    Group {
        labels,
        value,
        mean: v,
        kahan: 0.0,
        count: 1.0,
        incremental: false,
        members: Vec::new(),
    }
}

fn add(op: AggOp, g: &mut Group, si: usize, v: f64) {
    match op {
        AggOp::Sum => {
            let (s, c) = kahan_inc(v, g.value, g.kahan);
            g.value = s;
            g.kahan = c;
        }
        AggOp::Avg => {
            g.count += 1.0;
            if !g.incremental {
                let (s, c) = kahan_inc(v, g.value, g.kahan);
                if !s.is_infinite() {
                    g.value = s;
                    g.kahan = c;
                    return;
                }
                g.incremental = true;
                g.mean = g.value / (g.count - 1.0);
                g.kahan /= g.count - 1.0;
            }
            let q = (g.count - 1.0) / g.count;
            let (m, c) = kahan_inc(v / g.count, q * g.mean, q * g.kahan);
            g.mean = m;
            g.kahan = c;
        }
        AggOp::Count => g.value += 1.0,
        AggOp::Group => {}
        AggOp::Min => {
            if g.value > v || g.value.is_nan() {
                g.value = v;
            }
        }
        AggOp::Max => {
            if g.value < v || g.value.is_nan() {
                g.value = v;
            }
        }
        AggOp::Stddev | AggOp::Stdvar => {
            g.count += 1.0;
            let delta = v - g.mean;
            g.mean += delta / g.count;
            g.value += delta * (v - g.mean);
        }
        AggOp::TopK
        | AggOp::BottomK
        | AggOp::LimitK
        | AggOp::LimitRatio
        | AggOp::Quantile
        | AggOp::CountValues => g.members.push((si, v)),
    }
}

fn finish(op: AggOp, g: &mut Group, param: f64) -> f64 {
    match op {
        AggOp::Sum => {
            if g.value.is_infinite() {
                g.value
            } else {
                g.value + g.kahan
            }
        }
        AggOp::Avg => {
            if g.incremental {
                g.mean + g.kahan
            } else {
                g.value / g.count + g.kahan / g.count
            }
        }
        AggOp::Stdvar => g.value / g.count,
        AggOp::Stddev => (g.value / g.count).sqrt(),
        AggOp::Quantile => {
            let mut v: Vec<f64> = g.members.iter().map(|m| m.1).collect();
            quantile(param, &mut v)
        }
        _ => g.value,
    }
}

/// Members kept by topk/bottomk/limitk/limit_ratio, in output order.
/// `limitk`/`limit_ratio` over a step holding histogram samples too: both
/// kinds are selected alike (in input order) and kept as they are.
#[allow(clippy::too_many_arguments)]
fn limit_mixed(
    op: AggOp,
    param: f64,
    keys: &[Labels],
    vals: &[(usize, f64)],
    hvals: &[(usize, Hist)],
    input: &[Series],
    ts: i64,
    out: &mut OutBuilder,
) -> Result<()> {
    let mut all: Vec<(usize, Option<usize>)> = vals.iter().map(|&(si, _)| (si, None)).collect();
    all.extend(
        hvals
            .iter()
            .enumerate()
            .map(|(hi, (si, _))| (*si, Some(hi))),
    );
    all.sort_by_key(|e| e.0);
    let mut order: Vec<&Labels> = Vec::new();
    let mut members: HashMap<&Labels, Vec<(usize, f64)>> = HashMap::new();
    // Series index -> where its sample is (float value or histogram slot).
    let mut float_of: HashMap<usize, f64> = vals.iter().copied().collect();
    let mut hist_of: HashMap<usize, usize> = HashMap::new();
    for (si, h) in all {
        if let Some(hi) = h {
            hist_of.insert(si, hi);
        }
        let k = &keys[si];
        members
            .entry(k)
            .or_insert_with(|| {
                order.push(k);
                Vec::new()
            })
            .push((si, 0.0));
    }
    for k in order {
        let Some(m) = members.get_mut(k) else {
            continue;
        };
        for (si, _) in select_k(op, param, m, input) {
            let s = &input[si];
            if let Some(&hi) = hist_of.get(&si) {
                if let Some((_, h)) = hvals.get(hi) {
                    out.push_hist(s.labels.clone(), s.drop_name, ts, h.clone())?;
                }
            } else if let Some(v) = float_of.remove(&si) {
                out.push(s.labels.clone(), s.drop_name, ts, v)?;
            }
        }
    }
    Ok(())
}

fn select_k(
    op: AggOp,
    param: f64,
    members: &mut [(usize, f64)],
    input: &[Series],
) -> Vec<(usize, f64)> {
    match op {
        AggOp::LimitRatio => members
            .iter()
            .copied()
            .filter(|&(si, _)| {
                let off = ratio_offset(&input[si].labels);
                (param >= 0.0 && off < param) || (param < 0.0 && off >= 1.0 + param)
            })
            .collect(),
        _ => {
            if param < 1.0 {
                return Vec::new();
            }
            let k = if param >= members.len() as f64 {
                members.len()
            } else {
                param as usize
            };
            match op {
                AggOp::LimitK => members[..k].to_vec(),
                // Descending, NaN last; ties keep input order.
                AggOp::TopK => first_k(members, k, desc_nan_last),
                _ => first_k(members, k, asc_nan_last),
            }
        }
    }
}

/// Largest `k` for which [`first_k`] keeps a sorted list of the best `k`
/// members seen so far instead of sorting all members.
const SMALL_K: usize = 32;

/// The first `k` members (`k <= members.len()`) of a stable sort of
/// `members` by `cmp`, in that order. For a small `k` the members are
/// scanned once, keeping the best `k` so far sorted (a member enters only
/// when it sorts strictly before the last one kept, and after any kept
/// member it ties with), which selects the same members in the same order
/// as the stable sort without sorting, or copying, the rest.
fn first_k(
    members: &mut [(usize, f64)],
    k: usize,
    cmp: fn(f64, f64) -> std::cmp::Ordering,
) -> Vec<(usize, f64)> {
    use std::cmp::Ordering::Less;
    if k == 0 {
        return Vec::new();
    }
    if k > SMALL_K || k >= members.len() {
        members.sort_by(|a, b| cmp(a.1, b.1));
        return members.get(..k).unwrap_or(members).to_vec();
    }
    let mut best: Vec<(usize, f64)> = Vec::with_capacity(k + 1);
    for &m in members.iter() {
        if best.len() == k {
            match best.last() {
                Some(last) if cmp(m.1, last.1) == Less => {}
                _ => continue,
            }
            best.pop();
        }
        // After every kept member that does not sort after `m`.
        let at = best.partition_point(|b| cmp(m.1, b.1) != Less);
        best.insert(at, m);
    }
    best
}

pub(crate) fn desc_nan_last(a: f64, b: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Equal,
        (true, false) => Greater,
        (false, true) => Less,
        _ => b.partial_cmp(&a).unwrap_or(Equal),
    }
}

pub(crate) fn asc_nan_last(a: f64, b: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Equal,
        (true, false) => Greater,
        (false, true) => Less,
        _ => a.partial_cmp(&b).unwrap_or(Equal),
    }
}

/// Position of a series in [0, 1] for `limit_ratio`: its Prometheus label
/// hash (xxHash64 of `name 0xff value 0xff ...`) over `u64::MAX`.
fn ratio_offset(l: &Labels) -> f64 {
    let mut buf = Vec::with_capacity(256);
    for lb in l.iter() {
        buf.extend_from_slice(lb.name.as_bytes());
        buf.push(0xff);
        buf.extend_from_slice(lb.value.as_bytes());
        buf.push(0xff);
    }
    xxhash_rust::xxh64::xxh64(&buf, 0) as f64 / u64::MAX as f64
}

fn count_values(
    ev: &mut Evaluator<'_>,
    a: &Aggregate,
    label: &str,
    input: Vec<Series>,
    ctx: &Ctx,
) -> Result<Val> {
    let mut out = OutBuilder::default();
    let mut cur = StepCursor::new(&input);
    let mut hcur = StepCursor::new(&input);
    let mut vals = Vec::new();
    let mut hvals = Vec::new();
    let keys: Vec<Labels> = input
        .iter()
        .map(|s| group_labels(&s.labels, s.drop_name, a))
        .collect();
    for i in 0..ctx.n() {
        ev.check_deadline()?;
        let ts = ctx.ts(i);
        cur.at(ts, &mut vals);
        hcur.at_hist(ts, &mut hvals);
        let mut order: Vec<Labels> = Vec::new();
        let mut counts: HashMap<Labels, f64> = HashMap::new();
        let floats = vals.iter().map(|&(si, v)| (si, format_float(v)));
        let hists = hvals
            .iter()
            .map(|(si, h)| (*si, crate::value::histogram_string(h)));
        for (si, v) in floats.chain(hists) {
            let mut b = keys[si].builder();
            b.set(label, v);
            let l = b.build();
            match counts.get_mut(&l) {
                Some(c) => *c += 1.0,
                None => {
                    counts.insert(l.clone(), 1.0);
                    order.push(l);
                }
            }
        }
        for l in order {
            let c = counts.get(&l).copied().unwrap_or(0.0);
            out.push(l, false, ts, c)?;
        }
    }
    Ok(Val::Vector(out.series))
}

/// Prometheus 3 accepts any non-empty valid UTF-8 label name.
pub(crate) fn is_valid_label_name(s: &str) -> bool {
    // Prometheus 3 accepts any non-empty valid UTF-8 name.
    !s.is_empty() && !s.chars().any(|c| crate::value::raw_byte(c).is_some())
}

/// Go's `%g` formatting for the values that appear in annotations.
pub(crate) fn go_g(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let s = format!("{v}");
    let exp = if v == 0.0 {
        0
    } else {
        v.abs().log10().floor() as i32
    };
    if !(-4..21).contains(&exp) {
        let e = format!("{v:e}");
        // Rust prints `1e21`, Go prints `1e+21`.
        match e.split_once('e') {
            Some((m, x)) if !x.starts_with('-') => format!("{m}e+{x:0>2}"),
            Some((m, x)) => format!("{m}e-{:0>2}", &x[1..]),
            None => e,
        }
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Values with many ties, NaNs, infinities and both zeros.
    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            (0i32..6).prop_map(f64::from),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
            any::<f64>(),
        ]
    }

    proptest! {
        #[test]
        fn first_k_is_the_stable_sort_prefix(
            vals in proptest::collection::vec(value(), 1..80),
            k in 1usize..90,
        ) {
            let members: Vec<(usize, f64)> = vals.iter().copied().enumerate().collect();
            let k = k.min(members.len());
            for cmp in [desc_nan_last as fn(f64, f64) -> std::cmp::Ordering, asc_nan_last] {
                let mut sorted = members.clone();
                sorted.sort_by(|a, b| cmp(a.1, b.1));
                let mut m = members.clone();
                let got = first_k(&mut m, k, cmp);
                let want = &sorted[..k];
                prop_assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(want) {
                    prop_assert_eq!(g.0, w.0);
                    prop_assert_eq!(g.1.to_bits(), w.1.to_bits());
                }
            }
        }
    }
}
