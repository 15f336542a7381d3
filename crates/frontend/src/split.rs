//! Splitting a range query into sub-queries by time: which expressions
//! may be split, and the step-aligned pieces inside each interval.
//!
//! A range query evaluates its expression independently at every step
//! `start + k·step`; a sub-query over `[a, b]` with the same step, `a` on
//! that grid, evaluates exactly the steps of the original inside `[a, b]`
//! (selectors look back as far as they need, whatever the sub-range).
//! So offsets, `@ <timestamp>`, subqueries (their inner steps are aligned
//! to absolute time, not to the query) and `step()` split correctly. Two
//! things depend on the query's own range and do not: `@ start()` /
//! `@ end()` and the `range()` duration function. Queries using them,
//! and queries the frontend cannot parse, are sent whole.

use stratus_promql::ast::{AtModifier, DurationExpr, Expr, VectorSelector};

/// One sub-query: evaluation steps from `start` to `end` (inclusive,
/// both on the query's grid), all inside the interval starting at
/// `interval_start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) interval_start: i64,
}

/// Whether splitting `e` by evaluation time keeps its result.
pub(crate) fn splittable(e: &Expr) -> bool {
    let mut ok = true;
    let at_ok = |a: &Option<AtModifier>| !matches!(a, Some(AtModifier::Start | AtModifier::End));
    let vs_ok = |vs: &VectorSelector| at_ok(&vs.at) && dur_ok(vs.offset_expr.as_ref());
    e.walk(&mut |n| match n {
        Expr::VectorSelector(vs) => ok &= vs_ok(vs),
        Expr::MatrixSelector { vs, range_expr, .. } => {
            ok &= vs_ok(vs) && dur_ok(range_expr.as_ref());
        }
        Expr::Subquery(s) => {
            ok &= at_ok(&s.at)
                && dur_ok(s.range_expr.as_ref())
                && dur_ok(s.step_expr.as_ref())
                && dur_ok(s.offset_expr.as_ref());
        }
        _ => {}
    });
    ok
}

/// Whether a duration expression avoids `range()`.
fn dur_ok(d: Option<&DurationExpr>) -> bool {
    fn has_range(d: &DurationExpr) -> bool {
        match d {
            DurationExpr::Range => true,
            DurationExpr::Number(_) | DurationExpr::Duration(_) | DurationExpr::Step => false,
            DurationExpr::Neg(e) | DurationExpr::Paren(e) => has_range(e),
            DurationExpr::Binary(_, a, b)
            | DurationExpr::MinOf(a, b)
            | DurationExpr::MaxOf(a, b) => has_range(a) || has_range(b),
        }
    }
    d.is_none_or(|d| !has_range(d))
}

/// Rounds `t` down to a multiple of `step` (Mimir's step alignment).
pub(crate) fn align_down(t: i64, step: i64) -> i64 {
    if step <= 0 {
        return t;
    }
    t - t.rem_euclid(step)
}

/// The pieces of the range query `[start, end]` with `step` split at
/// multiples of `interval` (all in ms; `step` and `interval` positive,
/// `start <= end`). Every step of the query lies in exactly one piece,
/// pieces are in time order, and at most `max_pieces` are returned
/// (`None` when more would be needed).
pub(crate) fn split(
    start: i64,
    end: i64,
    step: i64,
    interval: i64,
    max_pieces: usize,
) -> Option<Vec<Piece>> {
    if step <= 0 || interval <= 0 || end < start {
        return None;
    }
    let (start, end, step, interval) = (
        i128::from(start),
        i128::from(end),
        i128::from(step),
        i128::from(interval),
    );
    // The last step of the query.
    let last = start + (end - start) / step * step;
    let mut out = Vec::new();
    let mut cur = start;
    while cur <= last {
        if out.len() >= max_pieces {
            return None;
        }
        let interval_start = cur.div_euclid(interval) * interval;
        let boundary = interval_start + interval;
        // The last grid point before the next interval starts.
        let piece_end = (cur + (boundary - 1 - cur) / step * step).min(last);
        out.push(Piece {
            start: i64::try_from(cur).ok()?,
            end: i64::try_from(piece_end).ok()?,
            interval_start: i64::try_from(interval_start).ok()?,
        });
        cur = piece_end + step;
    }
    Some(out)
}

/// A millisecond timestamp as an API time parameter (seconds with a
/// three-digit fraction when needed), exact.
pub(crate) fn format_time(ms: i64) -> String {
    let mut s = String::new();
    crate::matrix::write_timestamp(&mut s, ms);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn steps_of(start: i64, end: i64, step: i64) -> Vec<i64> {
        let mut v = Vec::new();
        let mut t = start;
        while t <= end {
            v.push(t);
            t += step;
        }
        v
    }

    /// Every (start, end, step) combination: the pieces cover exactly the
    /// query's steps, in order, each inside one interval.
    #[test]
    fn pieces_cover_every_step_once() {
        let starts = [0, 1, DAY - 1, DAY, DAY + 17_000, 3 * DAY - 60_000, -DAY - 5];
        let lens = [0, 1, 59_999, DAY - 1, DAY, DAY + 1, 3 * DAY + 12_345];
        let steps = [
            1_000,
            15_000,
            60_000,
            3_600_000,
            7 * 3_600_000,
            DAY,
            2 * DAY,
        ];
        for &s in &starts {
            for &l in &lens {
                for &st in &steps {
                    if l / st > 11_000 {
                        continue;
                    }
                    let e = s + l;
                    let pieces = split(s, e, st, DAY, 20_000).unwrap();
                    let mut got = Vec::new();
                    for p in &pieces {
                        assert!(p.start <= p.end, "{p:?}");
                        assert_eq!(p.interval_start.rem_euclid(DAY), 0);
                        assert!(p.start >= p.interval_start && p.end < p.interval_start + DAY);
                        assert_eq!((p.start - s).rem_euclid(st), 0);
                        got.extend(steps_of(p.start, p.end, st));
                    }
                    assert_eq!(got, steps_of(s, e, st), "s={s} e={e} step={st}");
                    for w in pieces.windows(2) {
                        assert!(w[0].interval_start < w[1].interval_start);
                    }
                }
            }
        }
    }

    #[test]
    fn day_edges() {
        // Exactly at midnight: the midnight step belongs to the new day.
        let p = split(0, 2 * DAY, 3_600_000, DAY, 10).unwrap();
        assert_eq!(
            p,
            vec![
                Piece {
                    start: 0,
                    end: DAY - 3_600_000,
                    interval_start: 0
                },
                Piece {
                    start: DAY,
                    end: 2 * DAY - 3_600_000,
                    interval_start: DAY
                },
                Piece {
                    start: 2 * DAY,
                    end: 2 * DAY,
                    interval_start: 2 * DAY
                },
            ]
        );
        // A step longer than the interval: days without a step are skipped.
        let p = split(10, 5 * DAY, 2 * DAY, DAY, 10).unwrap();
        let starts: Vec<i64> = p.iter().map(|p| p.start).collect();
        assert_eq!(starts, vec![10, 2 * DAY + 10, 4 * DAY + 10]);
        // A single point, and the bound on the number of pieces.
        assert_eq!(split(5, 5, 1000, DAY, 1).unwrap().len(), 1);
        assert!(split(0, 3 * DAY, 60_000, DAY, 3).is_none());
        assert!(split(0, 3 * DAY, 60_000, DAY, 4).is_some());
        assert!(split(10, 5, 1000, DAY, 4).is_none());
    }

    #[test]
    fn which_queries_split() {
        let yes = [
            "rate(x[5m])",
            "sum by (a) (rate(x[5m] offset 1h))",
            "x @ 1700000000",
            "max_over_time(rate(x[1m])[1h:5m])",
            "max_over_time(x[1h:] offset 1d)",
            "x offset step()",
            "avg_over_time(x[step()])",
            "time()",
            "1",
        ];
        for q in yes {
            assert!(splittable(&stratus_promql::parse(q).unwrap()), "{q}");
        }
        let no = [
            "x @ start()",
            "rate(x[5m] @ end())",
            "max_over_time(x[1h:1m] @ end())",
            "sum(x) + on() group_left max_over_time(y[1h:] @ start())",
            "avg_over_time(x[range()])",
            "x offset range()",
            "max_over_time(x[1h:range()])",
        ];
        for q in no {
            let e = stratus_promql::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert!(!splittable(&e), "{q}");
        }
    }

    #[test]
    fn alignment_and_times() {
        assert_eq!(align_down(61_500, 60_000), 60_000);
        assert_eq!(align_down(-1, 60_000), -60_000);
        assert_eq!(format_time(1_500), "1.500");
        assert_eq!(format_time(-1_500), "-1.500");
        assert_eq!(format_time(1_700_000_000_000), "1700000000");
    }
}
