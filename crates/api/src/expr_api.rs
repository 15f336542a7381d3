//! `/api/v1/format_query` and `/api/v1/parse_query`: PromQL text tools
//! for UIs.
//!
//! - `format_query` answers the expression pretty-printed the way
//!   Prometheus' `Pretty` does it (the `promql-parser` printer: one line
//!   when it fits in 100 columns, otherwise operands and arguments
//!   indented by two spaces per level; label matchers sorted).
//! - `parse_query` answers the syntax tree as JSON in the shape of
//!   Prometheus' `translateAST` (`{"type":"vectorSelector","name":…,
//!   "matchers":[…],"offset":…,"timestamp":…,"startOrEnd":…}` and so on;
//!   durations and offsets in ms, the metric name also as the last
//!   `__name__` matcher, numbers formatted as Go's `'f', -1`).
//!
//! The expression is first checked by the engine's parser
//! (`stratus_promql::parse`), so a query these endpoints accept is one the
//! query endpoints accept; a parse error is `400 bad_data`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use promql_parser::label::{MatchOp, Matchers};
use promql_parser::parser::{
    self as pp, AtModifier, Expr, LabelModifier, Offset, VectorMatchCardinality, VectorSelector,
};
use serde_json::{Value, json};

use crate::read::{ApiError, Params, success};
use crate::server::AppState;

/// Parses the `query` parameter (400 `bad_data` when missing or invalid).
fn parse_param(p: &Params) -> Result<Expr, ApiError> {
    let Some(q) = p.get("query") else {
        return Err(ApiError::bad_data(
            "invalid parameter \"query\": query is empty",
        ));
    };
    stratus_promql::parse(q)
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))?;
    pp::parse(q).map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))
}

/// The expression pretty-printed as Prometheus' `format_query` does.
pub(crate) fn format_expr(e: &Expr) -> String {
    go_numbers(&e.prettify())
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

fn ms(d: &Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn offset_ms(o: Option<&Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => ms(d),
        Some(Offset::Neg(d)) => -ms(d),
    }
}

/// `(timestamp, startOrEnd)` of an `@` modifier.
fn at_json(at: Option<&AtModifier>) -> (Value, Value) {
    match at {
        None => (Value::Null, Value::Null),
        Some(AtModifier::Start) => (Value::Null, json!("start")),
        Some(AtModifier::End) => (Value::Null, json!("end")),
        Some(AtModifier::At(t)) => {
            let ms = match t.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(d) => ms(&d),
                Err(e) => -ms(&e.duration()),
            };
            (json!(ms), Value::Null)
        }
    }
}

fn matchers_json(name: Option<&str>, m: &Matchers) -> Result<Value, ApiError> {
    if !m.or_matchers.is_empty() {
        return Err(ApiError::bad_data(
            "invalid parameter \"query\": \"or\" inside label matchers has no Prometheus syntax tree",
        ));
    }
    let mut out: Vec<Value> = m
        .matchers
        .iter()
        .map(|m| {
            let op = match m.op {
                MatchOp::Equal => "=",
                MatchOp::NotEqual => "!=",
                MatchOp::Re(_) => "=~",
                MatchOp::NotRe(_) => "!~",
            };
            json!({"name": m.name, "value": m.value, "type": op})
        })
        .collect();
    if let Some(n) = name {
        out.push(json!({"name": "__name__", "value": n, "type": "="}));
    }
    Ok(Value::Array(out))
}

fn selector_fields(
    vs: &VectorSelector,
    kind: &str,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let (timestamp, start_or_end) = at_json(vs.at.as_ref());
    let mut m = serde_json::Map::new();
    m.insert("type".into(), json!(kind));
    m.insert("name".into(), json!(vs.name.as_deref().unwrap_or("")));
    m.insert("offset".into(), json!(offset_ms(vs.offset.as_ref())));
    m.insert(
        "matchers".into(),
        matchers_json(vs.name.as_deref(), &vs.matchers)?,
    );
    m.insert("timestamp".into(), timestamp);
    m.insert("startOrEnd".into(), start_or_end);
    m.insert("anchored".into(), json!(false));
    m.insert("smoothed".into(), json!(false));
    Ok(m)
}

fn label_list(l: Option<&promql_parser::label::Labels>) -> Value {
    json!(l.map(|l| l.labels.clone()).unwrap_or_default())
}

/// The syntax tree as Prometheus' `parse_query` answers it.
pub(crate) fn translate(e: &Expr) -> Result<Value, ApiError> {
    Ok(match e {
        Expr::Aggregate(a) => json!({
            "type": "aggregation",
            "op": a.op.to_string(),
            "expr": translate(&a.expr)?,
            "param": match &a.param { Some(p) => translate(p)?, None => Value::Null },
            "grouping": label_list(a.modifier.as_ref().map(LabelModifier::labels)),
            "without": matches!(a.modifier, Some(LabelModifier::Exclude(_))),
        }),
        Expr::Unary(u) => json!({
            "type": "unaryExpr",
            "op": "-",
            "expr": translate(&u.expr)?,
        }),
        Expr::Binary(b) => {
            use pp::value::ValueType;
            let vectors =
                b.lhs.value_type() == ValueType::Vector && b.rhs.value_type() == ValueType::Vector;
            let matching = if vectors {
                let m = b.modifier.as_ref();
                let card = if b.op.is_set_operator() {
                    "many-to-many"
                } else {
                    match m.map(|m| &m.card) {
                        None | Some(VectorMatchCardinality::OneToOne) => "one-to-one",
                        Some(VectorMatchCardinality::ManyToOne(_)) => "many-to-one",
                        Some(VectorMatchCardinality::OneToMany(_)) => "one-to-many",
                        Some(VectorMatchCardinality::ManyToMany) => "many-to-many",
                    }
                };
                let fill = m.map(|m| &m.fill_values);
                json!({
                    "card": card,
                    "labels": label_list(m.and_then(|m| m.matching.as_ref()).map(LabelModifier::labels)),
                    "on": matches!(m.and_then(|m| m.matching.as_ref()), Some(LabelModifier::Include(_))),
                    "include": label_list(m.and_then(|m| m.card.labels())),
                    "fillValues": {
                        "lhs": fill.and_then(|f| f.lhs),
                        "rhs": fill.and_then(|f| f.rhs),
                    },
                })
            } else {
                Value::Null
            };
            json!({
                "type": "binaryExpr",
                "op": b.op.to_string(),
                "lhs": translate(&b.lhs)?,
                "rhs": translate(&b.rhs)?,
                "matching": matching,
                "bool": b.return_bool(),
            })
        }
        Expr::Paren(p) => json!({"type": "parenExpr", "expr": translate(&p.expr)?}),
        Expr::Subquery(s) => {
            let (timestamp, start_or_end) = at_json(s.at.as_ref());
            json!({
                "type": "subquery",
                "expr": translate(&s.expr)?,
                "range": ms(&s.range),
                "offset": offset_ms(s.offset.as_ref()),
                "step": s.step.as_ref().map_or(0, ms),
                "timestamp": timestamp,
                "startOrEnd": start_or_end,
                "alignEvalTime": false,
            })
        }
        Expr::NumberLiteral(n) => {
            json!({"type": "numberLiteral", "val": stratus_model::format_float(n.val)})
        }
        Expr::StringLiteral(s) => json!({"type": "stringLiteral", "val": s.val}),
        Expr::VectorSelector(vs) => Value::Object(selector_fields(vs, "vectorSelector")?),
        Expr::MatrixSelector(ms_) => {
            let mut m = selector_fields(&ms_.vs, "matrixSelector")?;
            m.insert("range".into(), json!(ms(&ms_.range)));
            Value::Object(m)
        }
        Expr::Call(c) => {
            let args = c
                .args
                .args
                .iter()
                .map(|a| translate(a))
                .collect::<Result<Vec<_>, _>>()?;
            json!({
                "type": "call",
                "func": {
                    "name": c.func.name,
                    "argTypes": c.func.arg_types.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "variadic": c.func.variadic,
                    "returnType": c.func.return_type.to_string(),
                },
                "args": args,
            })
        }
        Expr::Extension(_) => {
            return Err(ApiError::bad_data(
                "invalid parameter \"query\": unsupported expression",
            ));
        }
    })
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
    match parse_param(&p).and_then(|e| translate(&e)) {
        Ok(v) => success(v, &[]),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(q: &str) -> Value {
        translate(&pp::parse(q).unwrap()).unwrap()
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
        let f = |q: &str| format_expr(&pp::parse(q).unwrap());
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
