//! `/api/v1/format_query` and `/api/v1/parse_query`: PromQL text tools
//! for UIs.
//!
//! - `format_query` answers the expression pretty-printed the way
//!   Prometheus' `Pretty` does it: one line when it fits in 100 columns,
//!   otherwise operands and arguments indented by two spaces per level;
//!   label matchers sorted, numbers as Go's `%v`.
//! - `parse_query` answers the syntax tree as JSON in the shape of
//!   Prometheus' `translateAST` (`{"type":"vectorSelector","name":…,
//!   "matchers":[…],"offset":…,"timestamp":…,"startOrEnd":…}` and so on;
//!   durations and offsets in ms, the metric name also as the last
//!   `__name__` matcher, numbers formatted as Go's `'f', -1`).
//!
//! Both work on the engine's own syntax tree (`stratus_promql::parse`), so
//! a query these endpoints accept is one the query endpoints accept; a
//! parse error is `400 bad_data`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use stratus_promql::ast::{AtModifier, Cardinality, Expr, ValueType, VectorSelector};
use stratus_promql::parser::{PrintStyle, function_signature};

use crate::read::{ApiError, Params, success};
use crate::server::AppState;

/// Most characters a node may take on one line before its children are
/// split onto lines of their own (Prometheus' `maxCharactersPerLine`).
const MAX_LINE: usize = 100;

/// Parses the `query` parameter (400 `bad_data` when missing or invalid).
fn parse_param(p: &Params) -> Result<Expr, ApiError> {
    let Some(q) = p.get("query") else {
        return Err(ApiError::bad_data(
            "invalid parameter \"query\": query is empty",
        ));
    };
    stratus_promql::parse(q)
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))
}

/// One node on one line as Prometheus 2.x's `String()` prints it.
fn one_line(e: &Expr) -> String {
    let style = PrintStyle {
        compact_matchers: true,
    };
    go_numbers(&e.printed(style).to_string())
}

fn indent(level: usize) -> String {
    "  ".repeat(level)
}

/// The expression pretty-printed as Prometheus' `format_query` does.
pub(crate) fn format_expr(e: &Expr) -> String {
    pretty(e, 0)
}

/// Prometheus' `Pretty(level)`: a node that fits in [`MAX_LINE`]
/// characters stays on one line (indented by two spaces per level);
/// otherwise its operands or arguments go on lines of their own one level
/// deeper.
fn pretty(e: &Expr, level: usize) -> String {
    let line = one_line(e);
    let fits = line.len() <= MAX_LINE;
    let ind = indent(level);
    match e {
        Expr::Aggregate(a) if !fits => {
            let mut s = format!("{ind}{}", a.op.as_str());
            if a.without {
                s.push_str(&format!(" without ({}) ", a.grouping.join(", ")));
            } else if !a.grouping.is_empty() {
                s.push_str(&format!(" by ({}) ", a.grouping.join(", ")));
            }
            s.push_str("(\n");
            if let Some(p) = &a.param {
                s.push_str(&pretty(p, level + 1));
                s.push_str(",\n");
            }
            s.push_str(&pretty(&a.expr, level + 1));
            s.push('\n');
            s.push_str(&ind);
            s.push(')');
            s
        }
        Expr::Binary(b) if !fits => {
            let bool_ = if b.return_bool { " bool" } else { "" };
            format!(
                "{}\n{ind}{}{bool_}{}\n{}",
                pretty(&b.lhs, level + 1),
                b.op.as_str(),
                matching_suffix(b),
                pretty(&b.rhs, level + 1)
            )
        }
        Expr::Call(c) if !fits => {
            let args: Vec<String> = c.args.iter().map(|a| pretty(a, level + 1)).collect();
            format!("{ind}{}(\n{}\n{ind})", c.func, args.join(",\n"))
        }
        Expr::Paren(inner) if !fits => {
            format!("{ind}(\n{}\n{ind})", pretty(inner, level + 1))
        }
        // Prometheus prints an unsplit subquery without indentation and a
        // split one as its inner expression followed by the range suffix.
        Expr::Subquery(_) if fits => line,
        Expr::Subquery(s) => {
            let inner = one_line(&s.expr);
            let suffix = line.get(inner.len()..).unwrap_or_default();
            format!("{}{suffix}", pretty(&s.expr, level))
        }
        Expr::Neg(inner) => format!("{ind}-{}", pretty(inner, level).trim()),
        _ => format!("{ind}{line}"),
    }
}

/// ` on (a) group_left (b)` of a binary expression, as Prometheus'
/// `getMatchingStr` (empty without `on`/`ignoring` labels).
fn matching_suffix(b: &stratus_promql::ast::Binary) -> String {
    let m = &b.matching;
    if m.labels.is_empty() && !m.on {
        return String::new();
    }
    let mut s = format!(
        " {} ({})",
        if m.on { "on" } else { "ignoring" },
        m.labels.join(", ")
    );
    match m.card {
        Cardinality::ManyToOne => s.push_str(&format!(" group_left ({})", m.include.join(", "))),
        Cardinality::OneToMany => s.push_str(&format!(" group_right ({})", m.include.join(", "))),
        _ => {}
    }
    s
}

/// A number as Go's `%v` prints a float64 (Prometheus' number literal
/// printer): shortest digits, exponent form below 1e-4 and from 1e21 on.
fn go_v(v: f64) -> String {
    if !v.is_finite() || v == 0.0 {
        return stratus_model::format_float(v);
    }
    let exp = v.abs().log10().floor() as i32;
    if (-4..21).contains(&exp) {
        return format!("{v}");
    }
    // Rust's `{:e}` is the shortest round-trip mantissa, as Go's.
    let e = format!("{v:e}");
    let Some((mant, x)) = e.split_once('e') else {
        return e;
    };
    let (sign, digits) = match x.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', x),
    };
    format!("{mant}e{sign}{digits:0>2}")
}

/// Rewrites the number literals of a printed expression from Rust's plain
/// notation to Go's `%v` (durations, `@` times and quoted strings stay).
fn go_numbers(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if matches!(c, b'"' | b'\'' | b'`') {
            let start = i;
            i += 1;
            while i < b.len() && b[i] != c {
                if b[i] == b'\\' && c != b'`' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(b.len());
            out.push_str(s.get(start..i).unwrap_or_default());
            continue;
        }
        let prev = out.as_bytes().last().copied();
        let starts_token =
            !prev.is_some_and(|p| p.is_ascii_alphanumeric() || p == b'_' || p == b'.');
        if c.is_ascii_digit() && starts_token {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            let tok = s.get(start..i).unwrap_or_default();
            let is_literal =
                !b.get(i).is_some_and(|n| n.is_ascii_alphabetic()) && !out.ends_with("@ ");
            match tok.parse::<f64>() {
                Ok(v) if is_literal => out.push_str(&go_v(v)),
                _ => out.push_str(tok),
            }
            continue;
        }
        if c == b'I' && starts_token && !matches!(prev, Some(b'-' | b'+')) {
            let end = i + 3;
            if s.get(i..end) == Some("Inf")
                && !b
                    .get(end)
                    .is_some_and(|n| n.is_ascii_alphanumeric() || *n == b'_' || *n == b':')
            {
                out.push_str("+Inf");
                i = end;
                continue;
            }
        }
        // Copy one whole character.
        let ch_len = s
            .get(i..)
            .and_then(|r| r.chars().next())
            .map_or(1, char::len_utf8);
        out.push_str(s.get(i..i + ch_len).unwrap_or_default());
        i += ch_len;
    }
    out
}

/// `(timestamp, startOrEnd)` of an `@` modifier.
fn at_json(at: Option<&AtModifier>) -> (Value, Value) {
    match at {
        None => (Value::Null, Value::Null),
        Some(AtModifier::Start) => (Value::Null, json!("start")),
        Some(AtModifier::End) => (Value::Null, json!("end")),
        Some(AtModifier::Timestamp(t)) => (json!(t), Value::Null),
    }
}

/// The matchers in source order, the metric name's matcher last (as
/// Prometheus' parser appends it).
fn matchers_json(vs: &VectorSelector) -> Value {
    let name_at = vs.name.as_deref().and_then(|n| {
        vs.matchers.iter().position(|m| {
            &*m.name == stratus_model::METRIC_NAME
                && m.kind == stratus_model::MatchType::Equal
                && &*m.value == n
        })
    });
    let one = |m: &stratus_model::Matcher| json!({"name": &*m.name, "value": &*m.value, "type": m.kind.as_str()});
    let mut out: Vec<Value> = vs
        .matchers
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != name_at)
        .map(|(_, m)| one(m))
        .collect();
    if let Some(m) = name_at.and_then(|i| vs.matchers.get(i)) {
        out.push(one(m));
    }
    Value::Array(out)
}

fn selector_fields(vs: &VectorSelector, kind: &str) -> serde_json::Map<String, Value> {
    let (timestamp, start_or_end) = at_json(vs.at.as_ref());
    let mut m = serde_json::Map::new();
    m.insert("type".into(), json!(kind));
    m.insert("name".into(), json!(vs.name.as_deref().unwrap_or("")));
    m.insert("offset".into(), json!(vs.offset));
    m.insert("matchers".into(), matchers_json(vs));
    m.insert("timestamp".into(), timestamp);
    m.insert("startOrEnd".into(), start_or_end);
    m.insert("anchored".into(), json!(vs.anchored));
    m.insert("smoothed".into(), json!(vs.smoothed));
    m
}

/// A value type as Prometheus' `parser.ValueType` names it.
fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::Scalar => "scalar",
        ValueType::String => "string",
        ValueType::Vector => "vector",
        ValueType::Matrix => "matrix",
    }
}

/// The syntax tree as Prometheus' `parse_query` answers it.
pub(crate) fn translate(e: &Expr) -> Value {
    match e {
        Expr::Aggregate(a) => json!({
            "type": "aggregation",
            "op": a.op.as_str(),
            "expr": translate(&a.expr),
            "param": a.param.as_deref().map_or(Value::Null, translate),
            "grouping": a.grouping,
            "without": a.without,
        }),
        Expr::Neg(inner) => json!({
            "type": "unaryExpr",
            "op": "-",
            "expr": translate(inner),
        }),
        Expr::Binary(b) => {
            let vectors =
                b.lhs.value_type() == ValueType::Vector && b.rhs.value_type() == ValueType::Vector;
            let matching = if vectors {
                let m = &b.matching;
                let card = if b.op.is_set() {
                    "many-to-many"
                } else {
                    match m.card {
                        Cardinality::OneToOne => "one-to-one",
                        Cardinality::ManyToOne => "many-to-one",
                        Cardinality::OneToMany => "one-to-many",
                        Cardinality::ManyToMany => "many-to-many",
                    }
                };
                json!({
                    "card": card,
                    "labels": m.labels,
                    "on": m.on,
                    "include": m.include,
                    "fillValues": {"lhs": m.fill_lhs, "rhs": m.fill_rhs},
                })
            } else {
                Value::Null
            };
            json!({
                "type": "binaryExpr",
                "op": b.op.as_str(),
                "lhs": translate(&b.lhs),
                "rhs": translate(&b.rhs),
                "matching": matching,
                "bool": b.return_bool,
            })
        }
        Expr::Paren(inner) => json!({"type": "parenExpr", "expr": translate(inner)}),
        Expr::Subquery(s) => {
            let (timestamp, start_or_end) = at_json(s.at.as_ref());
            json!({
                "type": "subquery",
                "expr": translate(&s.expr),
                "range": s.range,
                "offset": s.offset,
                "step": s.step.unwrap_or(0),
                "timestamp": timestamp,
                "startOrEnd": start_or_end,
                "alignEvalTime": false,
            })
        }
        Expr::Number(v) => {
            json!({"type": "numberLiteral", "val": stratus_model::format_float(*v)})
        }
        Expr::String(s) => json!({"type": "stringLiteral", "val": s}),
        Expr::VectorSelector(vs) => Value::Object(selector_fields(vs, "vectorSelector")),
        Expr::MatrixSelector { vs, range, .. } => {
            let mut m = selector_fields(vs, "matrixSelector");
            m.insert("range".into(), json!(range));
            Value::Object(m)
        }
        Expr::Call(c) => {
            let (args, variadic, ret) =
                function_signature(&c.func).unwrap_or((&[], 0, ValueType::Vector));
            json!({
                "type": "call",
                "func": {
                    "name": c.func,
                    "argTypes": args.iter().map(|t| type_name(*t)).collect::<Vec<_>>(),
                    "variadic": variadic,
                    "returnType": type_name(ret),
                },
                "args": c.args.iter().map(translate).collect::<Vec<_>>(),
            })
        }
    }
}

/// `GET|POST /api/v1/format_query`.
pub(crate) async fn format_query(
    State(_st): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let p = Params::parse(q.as_deref(), &headers, &body);
    match parse_param(&p) {
        Ok(e) => success(format_expr(&e), &[]),
        Err(e) => e.into_response(),
    }
}

/// `GET|POST /api/v1/parse_query`.
pub(crate) async fn parse_query(
    State(_st): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let p = Params::parse(q.as_deref(), &headers, &body);
    match parse_param(&p).map(|e| translate(&e)) {
        Ok(v) => success(v, &[]),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(q: &str) -> Value {
        translate(&stratus_promql::parse(q).unwrap())
    }

    #[test]
    fn selectors() {
        assert_eq!(
            tr(r#"up{job="a"} offset 5m"#),
            json!({"type": "vectorSelector", "name": "up", "offset": 300000,
                "matchers": [{"name": "job", "value": "a", "type": "="},
                             {"name": "__name__", "value": "up", "type": "="}],
                "timestamp": null, "startOrEnd": null, "anchored": false, "smoothed": false})
        );
        let m = tr(r#"rate({__name__=~"a.*"}[1m] @ 100)"#);
        assert_eq!(m["func"]["name"], "rate");
        assert_eq!(m["func"]["argTypes"], json!(["matrix"]));
        assert_eq!(m["func"]["returnType"], "vector");
        let a = &m["args"][0];
        assert_eq!(a["type"], "matrixSelector");
        assert_eq!(a["name"], "");
        assert_eq!(a["range"], 60000);
        assert_eq!(a["timestamp"], 100000);
        assert_eq!(
            a["matchers"],
            json!([{"name": "__name__", "value": "a.*", "type": "=~"}])
        );
        assert_eq!(tr("x @ end()")["startOrEnd"], "end");
    }

    #[test]
    fn operators() {
        let b = tr("a / on(job) group_left(x) b");
        assert_eq!(
            b["matching"],
            json!({"card": "many-to-one", "labels": ["job"], "on": true, "include": ["x"],
                   "fillValues": {"lhs": null, "rhs": null}})
        );
        assert_eq!(tr("a and b")["matching"]["card"], "many-to-many");
        assert_eq!(tr("a + b")["matching"]["card"], "one-to-one");
        assert_eq!(tr("a > bool 1")["matching"], Value::Null);
        assert_eq!(tr("a > bool 1")["bool"], true);
        let agg = tr("topk without (a) (5, x)");
        assert_eq!(agg["op"], "topk");
        assert_eq!(agg["param"], json!({"type": "numberLiteral", "val": "5"}));
        assert_eq!(agg["grouping"], json!(["a"]));
        assert_eq!(agg["without"], true);
        assert_eq!(tr("1e21")["val"], "1000000000000000000000");
        assert_eq!(tr("-Inf")["val"], "-Inf");
        assert_eq!(tr("-x")["type"], "unaryExpr");
        let s = tr("x[5m:30s]");
        assert_eq!(
            (s["range"].clone(), s["step"].clone()),
            (json!(300000), json!(30000))
        );
        assert_eq!(tr("(1)")["type"], "parenExpr");
    }

    #[test]
    fn go_number_printing() {
        assert_eq!(go_v(1e21), "1e+21");
        assert_eq!(go_v(1e20), "100000000000000000000");
        assert_eq!(go_v(-1.5e-7), "-1.5e-07");
        assert_eq!(go_v(0.0001), "0.0001");
        assert_eq!(go_v(0.00001), "1e-05");
        assert_eq!(go_v(1.2345e300), "1.2345e+300");
        let f = |q: &str| format_expr(&stratus_promql::parse(q).unwrap());
        assert_eq!(f("x * 1e21 + 0.00001"), "x * 1e+21 + 1e-05");
        assert_eq!(
            f(r#"x{a="1e21", b="0.00001"} offset 5m"#),
            r#"x{a="1e21",b="0.00001"} offset 5m"#
        );
        assert_eq!(f("x - Inf"), "x - +Inf");
        assert_eq!(f("-Inf"), "-Inf");
        assert_eq!(f("x @ 100"), "x @ 100.000");
        assert_eq!(f("x[5m]"), "x[5m]");
    }
}
