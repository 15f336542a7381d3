//! Canonical PromQL text of an [`Expr`], as Prometheus' `String()` methods
//! (`promql/parser/printer.go`) print it: `sum by (a) (x)`, `a + on (b)
//! group_left (c) d`, `x[5m] @ 100.000 offset 1m`, durations in
//! `model.Duration` form, numbers in Go's shortest `%f`-style form, strings
//! and label values Go-quoted, non-legacy names quoted inside braces.
//!
//! Stratus additions follow the same shape: `fill (v)`, `fill_left (v)`,
//! `fill_right (v)`, `anchored`, `smoothed`, and query-dependent duration
//! expressions printed as written (`[step() * 2]`).

use std::fmt::{self, Write};

use stratus_model::MatchType;

use super::lexer::go_quote;
use crate::ast::{
    AtModifier, BinOp, Cardinality, DurationExpr, Expr, VectorMatching, VectorSelector,
};

/// `model.Duration.String()` for a possibly negative number of ms.
pub(crate) fn fmt_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    if ms < 0 {
        out.push('-');
    }
    let mut rest = ms.unsigned_abs();
    let units: [(&str, u64, bool); 7] = [
        ("y", 365 * 24 * 3_600_000, true),
        ("w", 7 * 24 * 3_600_000, true),
        ("d", 24 * 3_600_000, false),
        ("h", 3_600_000, false),
        ("m", 60_000, false),
        ("s", 1_000, false),
        ("ms", 1, false),
    ];
    for (unit, mult, exact) in units {
        if exact && rest % mult != 0 {
            continue;
        }
        let v = rest / mult;
        if v > 0 {
            let _ = write!(out, "{v}{unit}");
            rest -= v * mult;
        }
    }
    out
}

fn is_legacy_label(s: &str) -> bool {
    let mut it = s.chars();
    match it.next() {
        Some(c) if c == '_' || c.is_ascii_alphabetic() => {}
        _ => return false,
    }
    it.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn is_legacy_metric(s: &str) -> bool {
    let mut it = s.chars();
    match it.next() {
        Some(c) if c == '_' || c == ':' || c.is_ascii_alphabetic() => {}
        _ => return false,
    }
    it.all(|c| c == '_' || c == ':' || c.is_ascii_alphanumeric())
}

/// Whether a word would be read back as something other than a label
/// name or metric name.
fn is_special_word(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    l == "inf" || l == "nan"
}

fn label_name(s: &str) -> String {
    if is_legacy_label(s) && !is_special_word(s) {
        s.to_string()
    } else {
        go_quote(s)
    }
}

fn join_labels(ls: &[String]) -> String {
    ls.iter()
        .map(|l| label_name(l))
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_selector(
    f: &mut fmt::Formatter<'_>,
    vs: &VectorSelector,
    style: PrintStyle,
) -> fmt::Result {
    let mut parts: Vec<String> = Vec::new();
    let mut skipped = false;
    for m in &vs.matchers {
        if !skipped
            && &*m.name == stratus_model::METRIC_NAME
            && m.kind == MatchType::Equal
            && vs.name.as_deref() == Some(&*m.value)
            && !m.value.is_empty()
        {
            skipped = true;
            continue;
        }
        parts.push(format!(
            "{}{}{}",
            label_name(&m.name),
            m.kind.as_str(),
            go_quote(&m.value)
        ));
    }
    let sep = if style.compact_matchers {
        parts.sort();
        ","
    } else {
        ", "
    };
    match &vs.name {
        Some(n) if is_legacy_metric(n) && !is_reserved_metric(n) => {
            f.write_str(n)?;
            if !parts.is_empty() {
                write!(f, "{{{}}}", parts.join(sep))?;
            }
        }
        Some(n) => {
            parts.insert(0, go_quote(n));
            write!(f, "{{{}}}", parts.join(sep))?;
        }
        None => write!(f, "{{{}}}", parts.join(sep))?,
    }
    Ok(())
}

/// Names that would not read back as a metric name outside braces.
fn is_reserved_metric(n: &str) -> bool {
    let l = n.to_ascii_lowercase();
    is_special_word(n)
        || matches!(
            l.as_str(),
            "and"
                | "or"
                | "unless"
                | "atan2"
                | "bool"
                | "on"
                | "ignoring"
                | "group_left"
                | "group_right"
                | "offset"
                | "anchored"
                | "smoothed"
        )
}

fn write_dur_expr(f: &mut fmt::Formatter<'_>, d: &DurationExpr) -> fmt::Result {
    match d {
        DurationExpr::Number(v) => f.write_str(&stratus_model::format_float(*v)),
        DurationExpr::Duration(ms) => f.write_str(&fmt_duration(*ms)),
        DurationExpr::Step => f.write_str("step()"),
        DurationExpr::Range => f.write_str("range()"),
        DurationExpr::Neg(e) => {
            f.write_str("-")?;
            write_dur_expr(f, e)
        }
        DurationExpr::Paren(e) => {
            f.write_str("(")?;
            write_dur_expr(f, e)?;
            f.write_str(")")
        }
        DurationExpr::Binary(op, a, b) => {
            write_dur_expr(f, a)?;
            write!(f, " {} ", op.as_str())?;
            write_dur_expr(f, b)
        }
        DurationExpr::MinOf(a, b) | DurationExpr::MaxOf(a, b) => {
            f.write_str(if matches!(d, DurationExpr::MinOf(..)) {
                "min_of("
            } else {
                "max_of("
            })?;
            write_dur_expr(f, a)?;
            f.write_str(", ")?;
            write_dur_expr(f, b)?;
            f.write_str(")")
        }
    }
}

/// A duration in a range or step: the expression if query-dependent.
fn write_range(f: &mut fmt::Formatter<'_>, ms: i64, e: &Option<DurationExpr>) -> fmt::Result {
    match e {
        Some(d) => write_dur_expr(f, d),
        None => f.write_str(&fmt_duration(ms)),
    }
}

/// ` @ t offset d` (Prometheus prints `@` first).
fn write_at_offset(
    f: &mut fmt::Formatter<'_>,
    at: &Option<AtModifier>,
    offset: i64,
    offset_expr: &Option<DurationExpr>,
) -> fmt::Result {
    match at {
        Some(AtModifier::Timestamp(t)) => write!(f, " @ {:.3}", *t as f64 / 1000.0)?,
        Some(AtModifier::Start) => f.write_str(" @ start()")?,
        Some(AtModifier::End) => f.write_str(" @ end()")?,
        None => {}
    }
    match offset_expr {
        Some(d) => {
            f.write_str(" offset ")?;
            // The offset takes a primary duration expression only.
            match d {
                DurationExpr::Number(_)
                | DurationExpr::Duration(_)
                | DurationExpr::Step
                | DurationExpr::Range
                | DurationExpr::Paren(_)
                | DurationExpr::MinOf(..)
                | DurationExpr::MaxOf(..) => write_dur_expr(f, d)?,
                DurationExpr::Neg(inner)
                    if !matches!(**inner, DurationExpr::Binary(..) | DurationExpr::Neg(_)) =>
                {
                    write_dur_expr(f, d)?
                }
                d => {
                    f.write_str("(")?;
                    write_dur_expr(f, d)?;
                    f.write_str(")")?;
                }
            }
        }
        None if offset > 0 => write!(f, " offset {}", fmt_duration(offset))?,
        None if offset < 0 => write!(f, " offset -{}", fmt_duration(-offset))?,
        None => {}
    }
    Ok(())
}

fn write_modifiers(f: &mut fmt::Formatter<'_>, vs: &VectorSelector) -> fmt::Result {
    if vs.anchored {
        f.write_str(" anchored")?;
    }
    if vs.smoothed {
        f.write_str(" smoothed")?;
    }
    Ok(())
}

fn write_matching(f: &mut fmt::Formatter<'_>, op: BinOp, m: &VectorMatching) -> fmt::Result {
    let grouped = matches!(m.card, Cardinality::ManyToOne | Cardinality::OneToMany);
    if !m.labels.is_empty() || m.on || grouped {
        let tag = if m.on { "on" } else { "ignoring" };
        write!(f, " {tag} ({})", join_labels(&m.labels))?;
        if grouped {
            let side = if m.card == Cardinality::ManyToOne {
                "left"
            } else {
                "right"
            };
            write!(f, " group_{side} ({})", join_labels(&m.include))?;
        }
    }
    let _ = op;
    match (m.fill_lhs, m.fill_rhs) {
        (Some(l), Some(r)) if l.to_bits() == r.to_bits() => {
            write!(f, " fill ({})", stratus_model::format_float(l))?
        }
        (l, r) => {
            if let Some(l) = l {
                write!(f, " fill_left ({})", stratus_model::format_float(l))?;
            }
            if let Some(r) = r {
                write!(f, " fill_right ({})", stratus_model::format_float(r))?;
            }
        }
    }
    Ok(())
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_expr(f, self, PrintStyle::default())
    }
}

/// Printing options beyond the canonical form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrintStyle {
    /// Label matchers sorted and joined by `,` without a space, as
    /// Prometheus 2.x prints selectors (3.x keeps their order and
    /// separates them by `, `).
    pub compact_matchers: bool,
}

/// An expression printed with a [`PrintStyle`] (see [`Expr::printed`]).
#[derive(Debug)]
pub struct Printed<'a> {
    expr: &'a Expr,
    style: PrintStyle,
}

impl fmt::Display for Printed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_expr(f, self.expr, self.style)
    }
}

impl Expr {
    /// The expression's text in `style`; `Display` is the default style.
    pub fn printed(&self, style: PrintStyle) -> Printed<'_> {
        Printed { expr: self, style }
    }
}

fn write_expr(f: &mut fmt::Formatter<'_>, e: &Expr, style: PrintStyle) -> fmt::Result {
    fn p(expr: &Expr, style: PrintStyle) -> Printed<'_> {
        Printed { expr, style }
    }
    match e {
        Expr::Number(v) => f.write_str(&stratus_model::format_float(*v)),
        Expr::String(s) => f.write_str(&go_quote(s)),
        Expr::VectorSelector(vs) => {
            write_selector(f, vs, style)?;
            write_modifiers(f, vs)?;
            write_at_offset(f, &vs.at, vs.offset, &vs.offset_expr)
        }
        Expr::MatrixSelector {
            vs,
            range,
            range_expr,
        } => {
            write_selector(f, vs, style)?;
            f.write_str("[")?;
            write_range(f, *range, range_expr)?;
            f.write_str("]")?;
            write_modifiers(f, vs)?;
            write_at_offset(f, &vs.at, vs.offset, &vs.offset_expr)
        }
        Expr::Subquery(s) => {
            write!(f, "{}[", p(&s.expr, style))?;
            write_range(f, s.range, &s.range_expr)?;
            f.write_str(":")?;
            if s.step_expr.is_some() || s.step.is_some() {
                write_range(f, s.step.unwrap_or(0), &s.step_expr)?;
            }
            f.write_str("]")?;
            write_at_offset(f, &s.at, s.offset, &s.offset_expr)
        }
        Expr::Paren(e) => write!(f, "({})", p(e, style)),
        Expr::Neg(e) => write!(f, "-{}", p(e, style)),
        Expr::Binary(b) => {
            write!(f, "{} {}", p(&b.lhs, style), b.op.as_str())?;
            if b.return_bool {
                f.write_str(" bool")?;
            }
            write_matching(f, b.op, &b.matching)?;
            write!(f, " {}", p(&b.rhs, style))
        }
        Expr::Aggregate(a) => {
            f.write_str(a.op.as_str())?;
            if a.without {
                write!(f, " without ({}) ", join_labels(&a.grouping))?;
            } else if !a.grouping.is_empty() {
                write!(f, " by ({}) ", join_labels(&a.grouping))?;
            }
            f.write_str("(")?;
            if let Some(param) = &a.param {
                write!(f, "{}, ", p(param, style))?;
            }
            write!(f, "{})", p(&a.expr, style))
        }
        Expr::Call(c) => {
            write!(f, "{}(", c.func)?;
            for (i, a) in c.args.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{}", p(a, style))?;
            }
            f.write_str(")")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_numbers() {
        assert_eq!(fmt_duration(90 * 60_000), "1h30m");
        assert_eq!(fmt_duration(0), "0s");
        assert_eq!(fmt_duration(-5_000), "-5s");
        assert_eq!(fmt_duration(14 * 24 * 3_600_000), "2w");
        assert_eq!(fmt_duration(90 * 24 * 3_600_000), "90d");
        assert_eq!(fmt_duration(1_500), "1s500ms");
        assert_eq!(stratus_model::format_float(1e100).len(), 101);
        assert_eq!(stratus_model::format_float(0.0000001), "0.0000001");
        assert_eq!(stratus_model::format_float(-0.0), "-0");
        assert_eq!(stratus_model::format_float(f64::INFINITY), "+Inf");
    }
}
