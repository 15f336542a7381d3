//! The experimental `info(v [, {selector}])` function: enriches each series
//! of `v` with the data labels of the "info" series (default
//! `target_info`) that share its identifying labels (`instance`, `job`).
//!
//! * The optional selector picks the info metrics (`__name__` matchers) and
//!   which data labels are added (its other matchers); a series with no
//!   matching info series is dropped unless every data-label matcher
//!   matches the empty string.
//! * Info series are read like an instant selector (lookback, staleness)
//!   at the time the base expression reads its data: the `@` and `offset`
//!   of the first selector of `v` (and of the subqueries around it) shift
//!   the info lookup too.
//! * When two info series of one metric share identifying labels, the one
//!   with the newer sample wins; labels already on the base series are
//!   kept; two info metrics giving one label different values is an error.
//! * Series whose name matches the info metric matchers are passed through
//!   unchanged. With only negative `__name__` matchers, info metrics are
//!   still restricted to names ending in `_info`.

use std::collections::{BTreeMap, HashMap};

use stratus_model::{Labels, METRIC_NAME, MatchType, Matcher};

use crate::ast::{AtModifier, Call, Expr, VectorSelector};
use crate::engine::{Ctx, Evaluator, OutBuilder, Result, StepCursor, Val};
use crate::error::PromqlError;

const TARGET_INFO: &str = "target_info";
/// Labels that identify the target an info series describes.
const IDENTIFYING: [&str; 2] = ["instance", "job"];

fn bad(msg: String) -> PromqlError {
    PromqlError::BadArgument { msg }
}

/// The `@` time and total offset at which the base expression reads its
/// first selector (walking down through subqueries).
fn read_time(e: &Expr, at: Option<AtModifier>, offset: i64) -> Option<(Option<AtModifier>, i64)> {
    let shift = |a: &Option<AtModifier>, o: i64| match a {
        Some(a) => (Some(*a), o),
        None => (at, offset.saturating_add(o)),
    };
    match e {
        Expr::VectorSelector(vs) | Expr::MatrixSelector { vs, .. } => {
            Some(shift(&vs.at, vs.offset))
        }
        Expr::Subquery(s) => {
            let (a, o) = shift(&s.at, s.offset);
            read_time(&s.expr, a, o)
        }
        Expr::Number(_) | Expr::String(_) => None,
        Expr::Paren(i) | Expr::Neg(i) => read_time(i, at, offset),
        Expr::Binary(b) => read_time(&b.lhs, at, offset).or_else(|| read_time(&b.rhs, at, offset)),
        Expr::Aggregate(a) => read_time(&a.expr, at, offset),
        Expr::Call(c) => c.args.iter().find_map(|x| read_time(x, at, offset)),
    }
}

/// The signature joining a series to an info series of metric `name`.
fn signature(name: &str, l: &Labels) -> String {
    let mut s = String::from(name);
    for id in IDENTIFYING {
        if let Some(v) = l.get(id) {
            s.push('\u{ff}');
            s.push_str(id);
            s.push('=');
            s.push_str(v);
        }
    }
    s
}

/// Evaluates `info(...)`.
pub(crate) fn eval_info(ev: &mut Evaluator<'_>, c: &Call, ctx: &Ctx) -> Result<Val> {
    if !ev.experimental {
        // Prometheus' parser refuses it (400) unless enabled.
        return Err(crate::PromqlError::Parse {
            msg: "function \"info\" is not enabled".into(),
        });
    }
    let Some(arg) = c.args.first() else {
        return Err(bad("missing argument 0 of info".into()));
    };
    let base = ev.eval_vector(arg, ctx)?;
    // Data label matchers by label name, and the info metric name matchers.
    let mut data: BTreeMap<String, Vec<Matcher>> = BTreeMap::new();
    let mut name_ms: Vec<Matcher> = Vec::new();
    match c.args.get(1) {
        Some(Expr::VectorSelector(sel)) => {
            for m in &sel.matchers {
                data.entry(m.name.to_string()).or_default().push(m.clone());
                if &*m.name == METRIC_NAME {
                    name_ms.push(m.clone());
                }
            }
        }
        Some(_) => {
            return Err(bad(
                "expected label selectors as the second argument to \"info\" function".into(),
            ));
        }
        None => name_ms.push(Matcher::eq(METRIC_NAME, TARGET_INFO)),
    }
    // Only negative name matchers: the info metrics are still `*_info`.
    if !name_ms.is_empty()
        && !name_ms
            .iter()
            .any(|m| matches!(m.kind, MatchType::Equal | MatchType::RegexMatch))
    {
        let m = Matcher::new(MatchType::RegexMatch, METRIC_NAME, ".+_info")
            .map_err(|e| bad(format!("info(): {e}")))?;
        name_ms.push(m.clone());
        data.entry(METRIC_NAME.to_string()).or_default().push(m);
    }
    let ignored: Vec<bool> = base
        .iter()
        .map(|s| {
            let n = s.labels.get(METRIC_NAME).unwrap_or("");
            !name_ms.is_empty() && name_ms.iter().all(|m| m.matches(n))
        })
        .collect();

    // Identifying label values of the series to enrich.
    let mut ids: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (s, ign) in base.iter().zip(&ignored) {
        if *ign {
            continue;
        }
        for id in IDENTIFYING {
            if let Some(v) = s.labels.get(id).filter(|v| !v.is_empty()) {
                let vals = ids.entry(id).or_default();
                if !vals.contains(&v) {
                    vals.push(v);
                }
            }
        }
    }
    let has_name = data.contains_key(METRIC_NAME);
    let mut matchers: Vec<Matcher> = Vec::new();
    if !ids.is_empty() {
        if !has_name {
            matchers.push(Matcher::eq(METRIC_NAME, TARGET_INFO));
        }
        for (id, vals) in &ids {
            let re = vals
                .iter()
                .map(|v| regex::escape(v))
                .collect::<Vec<_>>()
                .join("|");
            let m = Matcher::new(MatchType::RegexMatch, *id, re)
                .map_err(|e| bad(format!("info(): {e}")))?;
            matchers.push(m);
        }
        matchers.extend(data.values().flatten().cloned());
    }
    data.remove(METRIC_NAME);

    let info = if matchers.is_empty() {
        Vec::new()
    } else {
        let (at, offset) = read_time(arg, None, 0).unwrap_or((None, 0));
        let at = ev.at_time(&at).map(AtModifier::Timestamp);
        let vs = VectorSelector {
            name: None,
            matchers,
            offset,
            at,
            offset_expr: None,
            anchored: false,
            smoothed: false,
            pos: crate::ast::Pos::default(),
        };
        let values = ev.eval_selector(&vs, ctx, false)?;
        if values.iter().any(|s| !s.hist.is_empty()) {
            return Err(bad("info sample should be float".into()));
        }
        // Values are the timestamps of the info samples.
        ev.eval_selector(&vs, ctx, true)?
    };
    let info_names: Vec<String> = {
        let mut v: Vec<String> = info
            .iter()
            .map(|s| s.labels.get(METRIC_NAME).unwrap_or("").to_string())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let info_sigs: Vec<String> = info
        .iter()
        .map(|s| signature(s.labels.get(METRIC_NAME).unwrap_or(""), &s.labels))
        .collect();
    let base_sigs: Vec<Vec<String>> = base
        .iter()
        .map(|s| info_names.iter().map(|n| signature(n, &s.labels)).collect())
        .collect();
    let all_match_empty = data.values().flatten().all(|m| m.matches_empty());

    let mut out = OutBuilder::default();
    let mut bcur = StepCursor::new(&base);
    let mut hcur = StepCursor::new(&base);
    let mut icur = StepCursor::new(&info);
    let (mut bf, mut bh, mut iv) = (Vec::new(), Vec::new(), Vec::new());
    let mut by_sig: HashMap<&str, (usize, f64)> = HashMap::new();
    for step in 0..ctx.n() {
        ev.check_deadline()?;
        let ts = ctx.ts(step);
        bcur.at(ts, &mut bf);
        hcur.at_hist(ts, &mut bh);
        if bf.is_empty() && bh.is_empty() {
            continue;
        }
        icur.at(ts, &mut iv);
        by_sig.clear();
        for &(ii, t) in &iv {
            let sig = info_sigs[ii].as_str();
            match by_sig.get(sig) {
                Some(&(_, et)) if et > t => {}
                Some(&(ei, et)) if et == t => {
                    return Err(bad(format!(
                        "found duplicate series for info metric: existing {} @ {}, new {} @ {}",
                        info[ei].labels,
                        (et * 1000.0) as i64,
                        info[ii].labels,
                        (t * 1000.0) as i64
                    )));
                }
                _ => {
                    by_sig.insert(sig, (ii, t));
                }
            }
        }
        let floats = bf.iter().map(|&(i, v)| (i, Some(v), None));
        let hists = bh.iter().map(|(i, h)| (*i, None, Some(h.clone())));
        for (bi, v, h) in floats.chain(hists) {
            let bs = &base[bi];
            let labels = if ignored[bi] {
                bs.labels.clone()
            } else {
                let mut added: BTreeMap<String, String> = BTreeMap::new();
                let mut seen = false;
                for sig in &base_sigs[bi] {
                    let Some(&(ii, _)) = by_sig.get(sig.as_str()) else {
                        continue;
                    };
                    seen = true;
                    for l in info[ii].labels.iter() {
                        let name = &*l.name;
                        if name == METRIC_NAME || (!data.is_empty() && !data.contains_key(name)) {
                            continue;
                        }
                        if let Some(prev) = added.get(name) {
                            if prev.as_str() != &*l.value {
                                return Err(bad(format!("conflicting label: {name}")));
                            }
                        }
                        if bs.labels.get(name).is_some() {
                            continue;
                        }
                        added.insert(name.to_string(), l.value.to_string());
                    }
                }
                if !seen && !all_match_empty {
                    continue;
                }
                let mut b = bs.labels.builder();
                for (k, v) in added {
                    b.set(k, v);
                }
                b.build()
            };
            match (v, h) {
                (Some(v), _) => out.push(labels, bs.drop_name, ts, v)?,
                (None, Some(h)) => out.push_hist(labels, bs.drop_name, ts, h)?,
                (None, None) => {}
            }
        }
    }
    Ok(Val::Vector(out.series))
}
