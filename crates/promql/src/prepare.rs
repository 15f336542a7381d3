//! Query preparation before evaluation: resolves the query-dependent
//! duration expressions (`[step() * 2]`, `offset range()`) with the query's
//! step and range, as Prometheus does when a query starts, and checks the
//! experimental `anchored`/`smoothed` modifiers: they must be enabled
//! ([`crate::EngineOptions::enable_experimental`]) and a range selector
//! carrying one may only be the argument of the functions that accept it.

use std::borrow::Cow;

use crate::ast::{DurationExpr, Expr, VectorSelector};
use crate::error::PromqlError;

/// Functions that accept an `anchored` range.
const ANCHORED_FUNCS: &[&str] = &["changes", "delta", "increase", "rate", "resets"];
/// Functions that accept a `smoothed` range.
const SMOOTHED_FUNCS: &[&str] = &["delta", "increase", "rate"];

/// The expression ready for evaluation with `step_ms` (0 for an instant
/// query) and `range_ms` (end - start); `experimental` allows the
/// `anchored`/`smoothed` modifiers.
pub(crate) fn prepare(
    e: &Expr,
    step_ms: i64,
    range_ms: i64,
    experimental: bool,
) -> Result<Cow<'_, Expr>, PromqlError> {
    if !needs_work(e) {
        return Ok(Cow::Borrowed(e));
    }
    let mut e = e.clone();
    resolve(&mut e, step_ms, range_ms)?;
    check_modifiers(&e, None, experimental)?;
    Ok(Cow::Owned(e))
}

fn vs_needs_work(vs: &VectorSelector) -> bool {
    vs.offset_expr.is_some() || vs.anchored || vs.smoothed
}

fn needs_work(e: &Expr) -> bool {
    let mut found = false;
    e.walk(&mut |n| match n {
        Expr::VectorSelector(vs) => found |= vs_needs_work(vs),
        Expr::MatrixSelector { vs, range_expr, .. } => {
            found |= vs_needs_work(vs) || range_expr.is_some();
        }
        Expr::Subquery(s) => {
            found |= s.range_expr.is_some() || s.step_expr.is_some() || s.offset_expr.is_some();
        }
        _ => {}
    });
    found
}

fn bad(msg: String) -> PromqlError {
    PromqlError::BadArgument { msg }
}

fn ms(d: &DurationExpr, step: i64, range: i64) -> Result<i64, PromqlError> {
    d.eval_ms(step, range).map_err(bad)
}

fn positive(d: &DurationExpr, step: i64, range: i64) -> Result<i64, PromqlError> {
    let v = ms(d, step, range)?;
    if v <= 0 {
        return Err(bad(format!(
            "duration must be greater than 0, got {}",
            crate::parser::format_duration(v)
        )));
    }
    Ok(v)
}

fn resolve_vs(vs: &mut VectorSelector, step: i64, range: i64) -> Result<(), PromqlError> {
    if let Some(d) = vs.offset_expr.take() {
        vs.offset = ms(&d, step, range)?;
    }
    Ok(())
}

fn resolve(e: &mut Expr, step: i64, range: i64) -> Result<(), PromqlError> {
    match e {
        Expr::Number(_) | Expr::String(_) => Ok(()),
        Expr::VectorSelector(vs) => resolve_vs(vs, step, range),
        Expr::MatrixSelector {
            vs,
            range: r,
            range_expr,
        } => {
            if let Some(d) = range_expr.take() {
                *r = positive(&d, step, range)?;
            }
            resolve_vs(vs, step, range)
        }
        Expr::Subquery(s) => {
            if let Some(d) = s.range_expr.take() {
                s.range = positive(&d, step, range)?;
            }
            if let Some(d) = s.step_expr.take() {
                s.step = Some(positive(&d, step, range)?);
            }
            if let Some(d) = s.offset_expr.take() {
                s.offset = ms(&d, step, range)?;
            }
            resolve(&mut s.expr, step, range)
        }
        Expr::Paren(i) | Expr::Neg(i) => resolve(i, step, range),
        Expr::Binary(b) => {
            resolve(&mut b.lhs, step, range)?;
            resolve(&mut b.rhs, step, range)
        }
        Expr::Aggregate(a) => {
            if let Some(p) = &mut a.param {
                resolve(p, step, range)?;
            }
            resolve(&mut a.expr, step, range)
        }
        Expr::Call(c) => c.args.iter_mut().try_for_each(|a| resolve(a, step, range)),
    }
}

/// Checks where `anchored`/`smoothed` are used (`func` is the function
/// whose direct argument `e` is) and that they are enabled.
fn check_modifiers(e: &Expr, func: Option<&str>, on: bool) -> Result<(), PromqlError> {
    match e {
        Expr::VectorSelector(vs) | Expr::MatrixSelector { vs, .. } => {
            let is_range = matches!(e, Expr::MatrixSelector { .. });
            for (set, what, allowed) in [
                (vs.anchored, "anchored", ANCHORED_FUNCS),
                (vs.smoothed, "smoothed", SMOOTHED_FUNCS),
            ] {
                if !set {
                    continue;
                }
                if let (true, Some(f)) = (is_range, func) {
                    if !allowed.contains(&f) {
                        return Err(bad(format!(
                            "{what} modifier can only be used with: {} - not with {f}",
                            allowed.join(", ")
                        )));
                    }
                }
                if !on {
                    // As Prometheus' parser: a parse error (400), not an
                    // execution error.
                    return Err(crate::PromqlError::Parse {
                        msg: format!("the {what} modifier is experimental and must be enabled"),
                    });
                }
            }
            Ok(())
        }
        Expr::Number(_) | Expr::String(_) => Ok(()),
        Expr::Subquery(s) => check_modifiers(&s.expr, None, on),
        Expr::Paren(i) => check_modifiers(i, func, on),
        Expr::Neg(i) => check_modifiers(i, None, on),
        Expr::Binary(b) => {
            check_modifiers(&b.lhs, None, on)?;
            check_modifiers(&b.rhs, None, on)
        }
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                check_modifiers(p, None, on)?;
            }
            check_modifiers(&a.expr, None, on)
        }
        Expr::Call(c) => c
            .args
            .iter()
            .try_for_each(|a| check_modifiers(a, Some(c.func.as_str()), on)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse;

    #[test]
    fn resolves_step_and_range() {
        let e = parse("rate(foo[step() * 2] offset range())").unwrap();
        let p = prepare(&e, 15_000, 600_000, false).unwrap();
        let Expr::Call(c) = &*p else { panic!() };
        let Expr::MatrixSelector { vs, range, .. } = &c.args[0] else {
            panic!()
        };
        assert_eq!(*range, 30_000);
        assert_eq!(vs.offset, 600_000);
        // An instant query has step 0: the range is then invalid.
        assert!(prepare(&e, 0, 0, false).is_err());
    }

    #[test]
    fn anchored_and_smoothed_are_checked() {
        let e = parse("deriv(foo[3m] smoothed)").unwrap();
        assert_eq!(
            prepare(&e, 0, 0, true).unwrap_err().to_string(),
            "smoothed modifier can only be used with: delta, increase, rate - not with deriv"
        );
        let e = parse("rate(foo[3m] anchored)").unwrap();
        assert!(prepare(&e, 0, 0, true).is_ok());
        assert!(matches!(
            prepare(&e, 0, 0, false),
            Err(PromqlError::Parse { .. })
        ));
    }
}
