//! Binary operators: scalar/scalar, vector/scalar and vector/vector with
//! Prometheus' vector matching (`on`, `ignoring`, `group_left`,
//! `group_right`, `bool`, set operators and the experimental `fill`
//! modifiers).

use std::collections::{HashMap, HashSet};

use stratus_model::{Labels, METRIC_NAME};

use crate::ast::{BinOp, Binary, Cardinality, VectorMatching};
use crate::engine::{Ctx, Evaluator, OutBuilder, Result, Series, StepCursor, Val, keeps_name};
use crate::error::PromqlError;
use crate::histogram::Hist;
use crate::value::labels_string;

/// Applies `op` to two floats: `(value, keep)`; `keep` is the comparison
/// result for comparison operators and always true otherwise.
pub(crate) fn apply(op: BinOp, l: f64, r: f64) -> (f64, bool) {
    match op {
        BinOp::Add => (l + r, true),
        BinOp::Sub => (l - r, true),
        BinOp::Mul => (l * r, true),
        BinOp::Div => (l / r, true),
        BinOp::Mod => (l % r, true),
        BinOp::Pow => (l.powf(r), true),
        BinOp::Atan2 => (l.atan2(r), true),
        BinOp::Eql => (l, l == r),
        BinOp::Neq => (l, l != r),
        BinOp::Gtr => (l, l > r),
        BinOp::Lss => (l, l < r),
        BinOp::Gte => (l, l >= r),
        BinOp::Lte => (l, l <= r),
        BinOp::And | BinOp::Or | BinOp::Unless | BinOp::TrimUpper | BinOp::TrimLower => (l, true),
    }
}

pub(crate) fn eval_binary(ev: &mut Evaluator<'_>, b: &Binary, ctx: &Ctx) -> Result<Val> {
    let lhs = ev.eval(&b.lhs, ctx)?;
    let rhs = ev.eval(&b.rhs, ctx)?;
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => Ok(Val::Scalar(
            l.iter()
                .zip(&r)
                .map(|(&l, &r)| {
                    let (v, keep) = apply(b.op, l, r);
                    if b.op.is_comparison() {
                        if keep { 1.0 } else { 0.0 }
                    } else {
                        v
                    }
                })
                .collect(),
        )),
        (Val::Vector(l), Val::Scalar(r)) => {
            Ok(Val::Vector(vector_scalar(ev, b, l, &r, false, ctx)))
        }
        (Val::Scalar(l), Val::Vector(r)) => Ok(Val::Vector(vector_scalar(ev, b, r, &l, true, ctx))),
        (Val::Vector(l), Val::Vector(r)) => {
            if b.op.is_set() {
                set_op(ev, b, l, r, ctx)
            } else {
                vector_vector(ev, b, l, r, ctx)
            }
        }
        _ => Err(PromqlError::BadArgument {
            msg: format!(
                "binary expression must contain only scalar and instant vector types, got {} and {}",
                b.lhs.value_type(),
                b.rhs.value_type()
            ),
        }),
    }
}

fn vector_scalar(
    ev: &mut Evaluator<'_>,
    b: &Binary,
    series: Vec<Series>,
    sc: &[f64],
    swap: bool,
    ctx: &Ctx,
) -> Vec<Series> {
    let mut out = Vec::with_capacity(series.len());
    for mut s in series {
        let mut pts = Vec::with_capacity(s.points.len());
        for &(t, v) in &s.points {
            let idx = ((t - ctx.start) / ctx.step) as usize;
            let x = sc.get(idx).copied().unwrap_or(f64::NAN);
            let (l, r) = if swap { (x, v) } else { (v, x) };
            let (mut val, mut keep) = apply(b.op, l, r);
            if b.op.is_comparison() && swap {
                val = v;
            }
            if b.return_bool {
                val = if keep { 1.0 } else { 0.0 };
                keep = true;
            }
            if keep {
                pts.push((t, val));
            }
        }
        let mut hpts = Vec::new();
        for (t, h) in &s.hist {
            let idx = ((t - ctx.start) / ctx.step) as usize;
            let x = sc.get(idx).copied().unwrap_or(f64::NAN);
            let out = match b.op {
                BinOp::Mul => crate::histogram::scale(h, x),
                BinOp::Div if !swap => crate::histogram::div(h, x),
                BinOp::TrimUpper | BinOp::TrimLower if !swap => {
                    crate::histogram::trim(h, x, b.op == BinOp::TrimUpper)
                }
                _ => {
                    let (lk, rk) = if swap {
                        ("float", "histogram")
                    } else {
                        ("histogram", "float")
                    };
                    let op = b.op.as_str();
                    ev.info(format!(
                        "incompatible sample types encountered for binary operator \"{op}\": {lk} {op} {rk}"
                    ));
                    continue;
                }
            };
            hpts.push((*t, std::sync::Arc::new(out)));
        }
        if !pts.is_empty() || !hpts.is_empty() {
            s.points = pts;
            s.hist = hpts;
            if !keeps_name(b.op) || b.return_bool {
                s.drop_name = true;
            }
            out.push(s);
        }
    }
    out
}

/// The matching signature of a label set.
fn signature(l: &Labels, m: &VectorMatching, buf: &mut Vec<u8>) {
    buf.clear();
    for lb in l.iter() {
        let listed = m.labels.iter().any(|n| **n == *lb.name);
        let keep = if m.on {
            listed
        } else {
            !listed && &*lb.name != METRIC_NAME
        };
        if keep {
            buf.extend_from_slice(lb.name.as_bytes());
            buf.push(0xff);
            buf.extend_from_slice(lb.value.as_bytes());
            buf.push(0xff);
        }
    }
}

fn match_labels(l: &Labels, m: &VectorMatching) -> Labels {
    if m.on {
        l.filter_names(&m.labels, true)
    } else {
        let mut names: Vec<&str> = m.labels.iter().map(String::as_str).collect();
        names.push(METRIC_NAME);
        l.filter_names(&names, false)
    }
}

/// Output labels of a vector/vector arithmetic or comparison match.
fn result_labels(l: &Labels, r: &Labels, op: BinOp, m: &VectorMatching) -> Labels {
    let mut b = l.builder();
    if !keeps_name(op) {
        b.del(METRIC_NAME);
        b.del("__type__");
        b.del("__unit__");
    }
    if m.card == Cardinality::OneToOne {
        if m.on {
            let drop: Vec<String> = l
                .iter()
                .filter(|lb| !m.labels.iter().any(|n| **n == *lb.name))
                .map(|lb| lb.name.to_string())
                .collect();
            for n in drop {
                b.del(&n);
            }
        } else {
            for n in &m.labels {
                b.del(n);
            }
        }
    }
    for n in &m.include {
        match r.get(n) {
            Some(v) => {
                b.set(n.as_str(), v);
            }
            None => {
                b.del(n);
            }
        }
    }
    b.build()
}

fn vector_vector(
    ev: &mut Evaluator<'_>,
    b: &Binary,
    lhs: Vec<Series>,
    rhs: Vec<Series>,
    ctx: &Ctx,
) -> Result<Val> {
    if lhs.iter().chain(&rhs).any(|s| !s.hist.is_empty()) {
        return vector_vector_mixed(ev, b, lhs, rhs, ctx);
    }
    let m = &b.matching;
    let swap = m.card == Cardinality::OneToMany;
    // `one` is the side looked up by signature, `many` the side iterated.
    let (many, one) = if swap { (&rhs, &lhs) } else { (&lhs, &rhs) };
    // Fill values are not swapped for group_right: `fill_left` is used
    // when the (possibly swapped) many side is missing, as upstream does.
    let (fill_many, fill_one) = (m.fill_lhs, m.fill_rhs);
    let many_sigs = signatures(many, m);
    let one_sigs = signatures(one, m);
    // Every distinct signature gets a number once, so the per-step
    // matching indexes vectors instead of hashing label bytes.
    let (many_ids, one_ids, nsigs) = {
        let mut ids: HashMap<&[u8], usize> = HashMap::new();
        let mut many_ids = Vec::with_capacity(many_sigs.len());
        let mut one_ids = Vec::with_capacity(one_sigs.len());
        for (sigs, out) in [(&many_sigs, &mut many_ids), (&one_sigs, &mut one_ids)] {
            for sig in sigs.iter() {
                let next = ids.len();
                out.push(*ids.entry(sig.as_slice()).or_insert(next));
            }
        }
        (many_ids, one_ids, ids.len())
    };
    let mut out = OutBuilder::default();
    let mut cur_many = StepCursor::new(many);
    let mut cur_one = StepCursor::new(one);
    let (mut vm, mut vo) = (Vec::new(), Vec::new());
    // Per signature number: the step it was last seen on the `one` side
    // and that side's (series, value) then; the step it last matched.
    let mut one_step: Vec<usize> = vec![usize::MAX; nsigs];
    let mut one_at: Vec<(usize, f64)> = vec![(0, 0.0); nsigs];
    let mut matched_step: Vec<usize> = vec![usize::MAX; nsigs];
    let mut matched: HashMap<usize, HashSet<Labels>> = HashMap::new();
    // Per `many` series: the `one` series it last matched (`usize::MAX`
    // for a fill value), the result labels and the output series.
    let mut pair: Vec<Option<(usize, Labels, usize)>> = vec![None; many.len()];
    let mut used_one: Vec<usize> = vec![usize::MAX; one.len()];
    for i in 0..ctx.n() {
        ev.check_deadline()?;
        let ts = ctx.ts(i);
        cur_many.at(ts, &mut vm);
        cur_one.at(ts, &mut vo);
        if (vm.is_empty() && fill_many.is_none()) || (vo.is_empty() && fill_one.is_none()) {
            continue;
        }
        for &(oi, ov) in &vo {
            let id = one_ids[oi];
            if one_step[id] == i {
                let prev = one_at[id].0;
                let side = if swap { "left" } else { "right" };
                return Err(PromqlError::ManyToMany {
                    group: labels_string(&match_labels(&one[oi].labels, m)),
                    side,
                    a: labels_string(&one[oi].labels),
                    b: labels_string(&one[prev].labels),
                });
            }
            one_step[id] = i;
            one_at[id] = (oi, ov);
        }
        matched.clear();
        for &(mi, mv) in &vm {
            let id = many_ids[mi];
            let (ov, oi) = if one_step[id] == i {
                let (oi, ov) = one_at[id];
                used_one[oi] = i;
                (ov, oi)
            } else {
                match fill_one {
                    Some(f) => (f, usize::MAX),
                    None => continue,
                }
            };
            let (l, r) = if swap { (ov, mv) } else { (mv, ov) };
            let (mut val, keep) = apply(b.op, l, r);
            if b.return_bool {
                val = if keep { 1.0 } else { 0.0 };
            } else if !keep {
                continue;
            }
            let cached = pair[mi].as_mut().filter(|p| p.0 == oi);
            let (labels, slot) = match cached {
                Some(p) => (p.1.clone(), &mut p.2),
                None => {
                    let empty = Labels::empty();
                    let olabels = one.get(oi).map_or(&empty, |s| &s.labels);
                    let labels = result_labels(&many[mi].labels, olabels, b.op, m);
                    let p = pair[mi].insert((oi, labels.clone(), usize::MAX));
                    (labels, &mut p.2)
                }
            };
            if m.card == Cardinality::OneToOne {
                if matched_step[id] == i {
                    return Err(PromqlError::MultipleMatches);
                }
                matched_step[id] = i;
            } else if !matched.entry(id).or_default().insert(labels.clone()) {
                return Err(PromqlError::GroupingNotUnique);
            }
            let drop = b.return_bool || many[mi].drop_name && keeps_name(b.op);
            out.push_cached(slot, &labels, drop, ts, val)?;
        }
        if let Some(f) = fill_many {
            for &(oi, ov) in &vo {
                if used_one[oi] == i {
                    continue;
                }
                let (l, r) = if swap { (ov, f) } else { (f, ov) };
                let (mut val, keep) = apply(b.op, l, r);
                if b.return_bool {
                    val = if keep { 1.0 } else { 0.0 };
                } else if !keep {
                    continue;
                }
                // A missing many side yields the match group's labels.
                let labels = match_labels(&one[oi].labels, m);
                out.push(labels, false, ts, val)?;
            }
        }
    }
    Ok(Val::Vector(out.series))
}

/// One sample of either type.
#[derive(Clone)]
enum Samp {
    F(f64),
    H(Hist),
}

impl Samp {
    fn kind(&self) -> &'static str {
        match self {
            Samp::F(_) => "float",
            Samp::H(_) => "histogram",
        }
    }
}

/// Applies `op` to two samples of any type: `None` drops the result.
fn apply_samples(ev: &mut Evaluator<'_>, b: &Binary, l: &Samp, r: &Samp) -> Option<Samp> {
    use crate::histogram as hg;
    let op = b.op;
    let out = match (l, r) {
        (Samp::F(l), Samp::F(r)) => {
            let (val, keep) = apply(op, *l, *r);
            return if b.return_bool {
                Some(Samp::F(if keep { 1.0 } else { 0.0 }))
            } else if keep {
                Some(Samp::F(val))
            } else {
                None
            };
        }
        (Samp::H(x), Samp::H(y)) => match op {
            BinOp::Add | BinOp::Sub => {
                if hg::custom_mismatch(x, y) {
                    let what = if op == BinOp::Add {
                        "addition"
                    } else {
                        "subtraction"
                    };
                    ev.info(format!(
                        "mismatched custom buckets were reconciled during {what}"
                    ));
                }
                let r = if op == BinOp::Add {
                    hg::add(x, y)
                } else {
                    hg::sub(x, y)
                };
                match r {
                    Ok(mut h) => {
                        if op == BinOp::Sub {
                            h.reset_hint = stratus_model::reset_hint::GAUGE;
                        }
                        Some(Samp::H(std::sync::Arc::new(h)))
                    }
                    Err(_) => {
                        ev.warn("vector contains a mix of histograms with exponential and custom buckets schemas for metric name \"\"".into());
                        return None;
                    }
                }
            }
            BinOp::Eql | BinOp::Neq => {
                let (mut cx, mut cy) = (hg::compact(x), hg::compact(y));
                cx.reset_hint = 0;
                cy.reset_hint = 0;
                let eq = cx == cy;
                let keep = eq == (op == BinOp::Eql);
                if b.return_bool {
                    Some(Samp::F(if keep { 1.0 } else { 0.0 }))
                } else if keep {
                    Some(l.clone())
                } else {
                    return None;
                }
            }
            _ => None,
        },
        (Samp::H(h), Samp::F(f)) => {
            match op {
                BinOp::Mul => Some(Samp::H(std::sync::Arc::new(hg::scale(h, *f)))),
                BinOp::Div => Some(Samp::H(std::sync::Arc::new(hg::div(h, *f)))),
                BinOp::TrimUpper | BinOp::TrimLower => Some(Samp::H(std::sync::Arc::new(
                    hg::trim(h, *f, op == BinOp::TrimUpper),
                ))),
                _ => None,
            }
        }
        (Samp::F(f), Samp::H(h)) => match op {
            BinOp::Mul => Some(Samp::H(std::sync::Arc::new(hg::scale(h, *f)))),
            _ => None,
        },
    };
    if out.is_none() {
        ev.info(format!(
            "incompatible sample types encountered for binary operator \"{}\": {} {} {}",
            op.as_str(),
            l.kind(),
            op.as_str(),
            r.kind()
        ));
    }
    out
}

/// The samples of `series` at `ts`, floats then histograms.
fn samples_at(
    cur: &mut StepCursor<'_>,
    ts: i64,
    fbuf: &mut Vec<(usize, f64)>,
    hbuf: &mut Vec<(usize, Hist)>,
) -> Vec<(usize, Samp)> {
    cur.at(ts, fbuf);
    cur.at_hist(ts, hbuf);
    fbuf.iter()
        .map(|&(i, v)| (i, Samp::F(v)))
        .chain(hbuf.drain(..).map(|(i, h)| (i, Samp::H(h))))
        .collect()
}

/// [`vector_vector`] when any input holds native histograms.
fn vector_vector_mixed(
    ev: &mut Evaluator<'_>,
    b: &Binary,
    lhs: Vec<Series>,
    rhs: Vec<Series>,
    ctx: &Ctx,
) -> Result<Val> {
    let m = &b.matching;
    let swap = m.card == Cardinality::OneToMany;
    let (many, one) = if swap { (&rhs, &lhs) } else { (&lhs, &rhs) };
    let (fill_many, fill_one) = (m.fill_lhs, m.fill_rhs);
    let many_sigs = signatures(many, m);
    let one_sigs = signatures(one, m);
    let mut out = OutBuilder::default();
    let mut cur_many = StepCursor::new(many);
    let mut cur_one = StepCursor::new(one);
    let (mut fb, mut hb) = (Vec::new(), Vec::new());
    let mut one_by_sig: HashMap<&[u8], usize> = HashMap::new();
    let mut matched: HashMap<&[u8], HashSet<Labels>> = HashMap::new();
    for i in 0..ctx.n() {
        ev.check_deadline()?;
        let ts = ctx.ts(i);
        let vm = samples_at(&mut cur_many, ts, &mut fb, &mut hb);
        let vo = samples_at(&mut cur_one, ts, &mut fb, &mut hb);
        if (vm.is_empty() && fill_many.is_none()) || (vo.is_empty() && fill_one.is_none()) {
            continue;
        }
        one_by_sig.clear();
        for (k, (oi, _)) in vo.iter().enumerate() {
            let sig = one_sigs[*oi].as_slice();
            if let Some(&prev) = one_by_sig.get(sig) {
                let side = if swap { "left" } else { "right" };
                let prev_i = vo.get(prev).map_or(*oi, |p| p.0);
                return Err(PromqlError::ManyToMany {
                    group: labels_string(&match_labels(&one[*oi].labels, m)),
                    side,
                    a: labels_string(&one[*oi].labels),
                    b: labels_string(&one[prev_i].labels),
                });
            }
            one_by_sig.insert(sig, k);
        }
        matched.clear();
        let mut used_one: HashSet<usize> = HashSet::new();
        for (mi, mv) in &vm {
            let sig = many_sigs[*mi].as_slice();
            let (ov, olabels) = match one_by_sig.get(sig) {
                Some(&k) => {
                    used_one.insert(k);
                    let Some((oi, ov)) = vo.get(k) else { continue };
                    (ov.clone(), Some(&one[*oi].labels))
                }
                None => match fill_one {
                    Some(f) => (Samp::F(f), None),
                    None => continue,
                },
            };
            let (l, r) = if swap { (&ov, mv) } else { (mv, &ov) };
            let Some(val) = apply_samples(ev, b, l, r) else {
                continue;
            };
            let empty = Labels::empty();
            let labels = result_labels(&many[*mi].labels, olabels.unwrap_or(&empty), b.op, m);
            let set = matched.entry(sig).or_default();
            if m.card == Cardinality::OneToOne {
                if !set.is_empty() {
                    return Err(PromqlError::MultipleMatches);
                }
                set.insert(Labels::empty());
            } else if !set.insert(labels.clone()) {
                return Err(PromqlError::GroupingNotUnique);
            }
            let drop = b.return_bool || many[*mi].drop_name && keeps_name(b.op);
            match val {
                Samp::F(v) => out.push(labels, drop, ts, v)?,
                Samp::H(h) => out.push_hist(labels, drop, ts, h)?,
            }
        }
        if let Some(f) = fill_many {
            for (k, (oi, ov)) in vo.iter().enumerate() {
                if used_one.contains(&k) {
                    continue;
                }
                let fv = Samp::F(f);
                let (l, r) = if swap { (ov, &fv) } else { (&fv, ov) };
                let Some(val) = apply_samples(ev, b, l, r) else {
                    continue;
                };
                let labels = match_labels(&one[*oi].labels, m);
                match val {
                    Samp::F(v) => out.push(labels, false, ts, v)?,
                    Samp::H(h) => out.push_hist(labels, false, ts, h)?,
                }
            }
        }
    }
    Ok(Val::Vector(out.series))
}

fn signatures(s: &[Series], m: &VectorMatching) -> Vec<Vec<u8>> {
    s.iter()
        .map(|s| {
            let mut buf = Vec::new();
            signature(&s.labels, m, &mut buf);
            buf
        })
        .collect()
}

fn set_op(
    ev: &mut Evaluator<'_>,
    b: &Binary,
    lhs: Vec<Series>,
    rhs: Vec<Series>,
    ctx: &Ctx,
) -> Result<Val> {
    let m = &b.matching;
    let ls = signatures(&lhs, m);
    let rs = signatures(&rhs, m);
    let mut cur_l = StepCursor::new(&lhs);
    let mut cur_r = StepCursor::new(&rhs);
    let (mut vl, mut vr) = (Vec::new(), Vec::new());
    // Output: per input series (lhs first, then rhs) the kept points.
    let mut keep_l: Vec<Vec<(i64, f64)>> = vec![Vec::new(); lhs.len()];
    let mut keep_r: Vec<Vec<(i64, f64)>> = vec![Vec::new(); rhs.len()];
    let mut sigs: HashSet<&[u8]> = HashSet::new();
    let has_hist = lhs.iter().chain(&rhs).any(|s| !s.hist.is_empty());
    let (mut hl, mut hr) = (Vec::new(), Vec::new());
    let mut hkeep_l: Vec<Vec<(i64, Hist)>> = vec![Vec::new(); lhs.len()];
    let mut hkeep_r: Vec<Vec<(i64, Hist)>> = vec![Vec::new(); rhs.len()];
    for i in 0..ctx.n() {
        ev.check_deadline()?;
        let ts = ctx.ts(i);
        cur_l.at(ts, &mut vl);
        cur_r.at(ts, &mut vr);
        if has_hist {
            cur_l.at_hist(ts, &mut hl);
            cur_r.at_hist(ts, &mut hr);
            let lsig: HashSet<&[u8]> = vl
                .iter()
                .map(|x| ls[x.0].as_slice())
                .chain(hl.iter().map(|x| ls[x.0].as_slice()))
                .collect();
            let rsig: HashSet<&[u8]> = vr
                .iter()
                .map(|x| rs[x.0].as_slice())
                .chain(hr.iter().map(|x| rs[x.0].as_slice()))
                .collect();
            match b.op {
                BinOp::And => {
                    vl.retain(|x| rsig.contains(ls[x.0].as_slice()));
                    hl.retain(|x| rsig.contains(ls[x.0].as_slice()));
                    vr.clear();
                    hr.clear();
                }
                BinOp::Unless => {
                    vl.retain(|x| !rsig.contains(ls[x.0].as_slice()));
                    hl.retain(|x| !rsig.contains(ls[x.0].as_slice()));
                    vr.clear();
                    hr.clear();
                }
                _ => {
                    vr.retain(|x| !lsig.contains(rs[x.0].as_slice()));
                    hr.retain(|x| !lsig.contains(rs[x.0].as_slice()));
                }
            }
            for (li, v) in vl.drain(..) {
                keep_l[li].push((ts, v));
            }
            for (ri, v) in vr.drain(..) {
                keep_r[ri].push((ts, v));
            }
            for (li, h) in hl.drain(..) {
                hkeep_l[li].push((ts, h));
            }
            for (ri, h) in hr.drain(..) {
                hkeep_r[ri].push((ts, h));
            }
            continue;
        }
        sigs.clear();
        match b.op {
            BinOp::And => {
                sigs.extend(vr.iter().map(|&(ri, _)| rs[ri].as_slice()));
                for &(li, v) in &vl {
                    if sigs.contains(ls[li].as_slice()) {
                        keep_l[li].push((ts, v));
                    }
                }
            }
            BinOp::Unless => {
                sigs.extend(vr.iter().map(|&(ri, _)| rs[ri].as_slice()));
                for &(li, v) in &vl {
                    if !sigs.contains(ls[li].as_slice()) {
                        keep_l[li].push((ts, v));
                    }
                }
            }
            _ => {
                for &(li, v) in &vl {
                    sigs.insert(ls[li].as_slice());
                    keep_l[li].push((ts, v));
                }
                for &(ri, v) in &vr {
                    if !sigs.contains(rs[ri].as_slice()) {
                        keep_r[ri].push((ts, v));
                    }
                }
            }
        }
    }
    let mut out = OutBuilder::default();
    let mut push_all = |src: Vec<Series>,
                        keep: Vec<Vec<(i64, f64)>>,
                        hkeep: Vec<Vec<(i64, Hist)>>|
     -> Result<()> {
        for ((s, pts), hpts) in src.into_iter().zip(keep).zip(hkeep) {
            for (t, v) in pts {
                out.push(s.labels.clone(), s.drop_name, t, v)?;
            }
            for (t, h) in hpts {
                out.push_hist(s.labels.clone(), s.drop_name, t, h)?;
            }
        }
        Ok(())
    };
    push_all(lhs, keep_l, hkeep_l)?;
    push_all(rhs, keep_r, hkeep_r)?;
    // Points of one series may now be out of order (lhs and rhs parts).
    for s in &mut out.series {
        s.points.sort_by_key(|p| p.0);
        s.hist.sort_by_key(|p| p.0);
    }
    Ok(Val::Vector(out.series))
}
