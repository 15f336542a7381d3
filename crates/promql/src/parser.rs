//! Parsing: the only module that knows the `promql-parser` crate.
//!
//! `promql-parser` produces its own tree; [`parse`] converts it into the
//! engine's [`crate::ast`] types (times in ms, compiled matchers, operators
//! as enums). Replacing the parser means rewriting only this file.

use std::time::{Duration, SystemTime};

use promql_parser::label::MatchOp;
use promql_parser::parser as pp;
use stratus_model::{MatchType, Matcher};

use crate::ast::{
    AggOp, Aggregate, AtModifier, BinOp, Binary, Call, Cardinality, Expr, Subquery, VectorMatching,
    VectorSelector,
};
use crate::error::PromqlError;

mod lexer;
mod parse;
mod printer;

/// Parses with Stratus' own PromQL parser (lexer + recursive descent).
/// Errors carry Prometheus' texts and `line:col` positions.
pub fn parse_native(input: &str) -> Result<Expr, PromqlError> {
    parse::parse_expr(input).map_err(|e| PromqlError::Parse {
        msg: e.render(input),
    })
}

/// The return type of a known PromQL function.
pub(crate) fn function_return_type(name: &str) -> Option<crate::ast::ValueType> {
    parse::function_return_type(name)
}

/// Parses a PromQL expression into the engine's syntax tree.
pub fn parse(input: &str) -> Result<Expr, PromqlError> {
    let e = pp::parse(input).map_err(|msg| PromqlError::Parse { msg })?;
    convert(&e)
}

fn err(msg: impl Into<String>) -> PromqlError {
    PromqlError::Parse { msg: msg.into() }
}

fn dur_ms(d: &Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn offset_ms(o: &Option<pp::Offset>) -> i64 {
    match o {
        None => 0,
        Some(pp::Offset::Pos(d)) => dur_ms(d),
        Some(pp::Offset::Neg(d)) => -dur_ms(d),
    }
}

fn at(a: &Option<pp::AtModifier>) -> Option<AtModifier> {
    match a.as_ref()? {
        pp::AtModifier::Start => Some(AtModifier::Start),
        pp::AtModifier::End => Some(AtModifier::End),
        pp::AtModifier::At(t) => {
            let ms = match t.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(d) => dur_ms(&d),
                Err(e) => -dur_ms(&e.duration()),
            };
            Some(AtModifier::Timestamp(ms))
        }
    }
}

fn selector(vs: &pp::VectorSelector) -> Result<VectorSelector, PromqlError> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(err("unsupported: 'or' inside label matchers"));
    }
    let mut matchers = Vec::with_capacity(vs.matchers.matchers.len() + 1);
    if let Some(n) = &vs.name {
        matchers.push(Matcher::eq(stratus_model::METRIC_NAME, n.as_str()));
    }
    for m in &vs.matchers.matchers {
        let kind = match m.op {
            MatchOp::Equal => MatchType::Equal,
            MatchOp::NotEqual => MatchType::NotEqual,
            MatchOp::Re(_) => MatchType::RegexMatch,
            MatchOp::NotRe(_) => MatchType::RegexNoMatch,
        };
        let mm = Matcher::new(kind, m.name.as_str(), m.value.as_str())
            .map_err(|e| err(format!("invalid regular expression: {e}")))?;
        matchers.push(mm);
    }
    Ok(VectorSelector {
        name: vs.name.clone(),
        matchers,
        offset: offset_ms(&vs.offset),
        at: at(&vs.at),
        offset_expr: None,
        anchored: false,
        smoothed: false,
    })
}

fn bin_op(t: &promql_parser::parser::token::TokenType) -> Result<BinOp, PromqlError> {
    Ok(match t.to_string().as_str() {
        "+" => BinOp::Add,
        "-" => BinOp::Sub,
        "*" => BinOp::Mul,
        "/" => BinOp::Div,
        "%" => BinOp::Mod,
        "^" => BinOp::Pow,
        "atan2" => BinOp::Atan2,
        "==" => BinOp::Eql,
        "!=" => BinOp::Neq,
        ">" => BinOp::Gtr,
        "<" => BinOp::Lss,
        ">=" => BinOp::Gte,
        "<=" => BinOp::Lte,
        "and" => BinOp::And,
        "or" => BinOp::Or,
        "unless" => BinOp::Unless,
        o => return Err(err(format!("unsupported binary operator {o:?}"))),
    })
}

fn agg_op(t: &promql_parser::parser::token::TokenType) -> Result<AggOp, PromqlError> {
    Ok(match t.to_string().as_str() {
        "sum" => AggOp::Sum,
        "avg" => AggOp::Avg,
        "count" => AggOp::Count,
        "min" => AggOp::Min,
        "max" => AggOp::Max,
        "group" => AggOp::Group,
        "stddev" => AggOp::Stddev,
        "stdvar" => AggOp::Stdvar,
        "topk" => AggOp::TopK,
        "bottomk" => AggOp::BottomK,
        "count_values" => AggOp::CountValues,
        "quantile" => AggOp::Quantile,
        "limitk" => AggOp::LimitK,
        "limit_ratio" => AggOp::LimitRatio,
        o => return Err(err(format!("unsupported aggregation {o:?}"))),
    })
}

fn convert(e: &pp::Expr) -> Result<Expr, PromqlError> {
    Ok(match e {
        pp::Expr::NumberLiteral(n) => Expr::Number(n.val),
        pp::Expr::StringLiteral(s) => Expr::String(s.val.clone()),
        pp::Expr::VectorSelector(vs) => Expr::VectorSelector(selector(vs)?),
        pp::Expr::MatrixSelector(ms) => Expr::MatrixSelector {
            vs: selector(&ms.vs)?,
            range: dur_ms(&ms.range),
            range_expr: None,
        },
        pp::Expr::Subquery(s) => Expr::Subquery(Subquery {
            expr: Box::new(convert(&s.expr)?),
            range: dur_ms(&s.range),
            step: s.step.as_ref().map(dur_ms).filter(|&s| s > 0),
            offset: offset_ms(&s.offset),
            at: at(&s.at),
            range_expr: None,
            step_expr: None,
            offset_expr: None,
        }),
        pp::Expr::Paren(p) => Expr::Paren(Box::new(convert(&p.expr)?)),
        pp::Expr::Unary(u) => Expr::Neg(Box::new(convert(&u.expr)?)),
        pp::Expr::Binary(b) => {
            let op = bin_op(&b.op)?;
            let mut matching = VectorMatching::default();
            let mut return_bool = false;
            if let Some(m) = &b.modifier {
                return_bool = m.return_bool;
                matching.card = match &m.card {
                    pp::VectorMatchCardinality::OneToOne => Cardinality::OneToOne,
                    pp::VectorMatchCardinality::ManyToOne(l) => {
                        matching.include = l.labels.clone();
                        Cardinality::ManyToOne
                    }
                    pp::VectorMatchCardinality::OneToMany(l) => {
                        matching.include = l.labels.clone();
                        Cardinality::OneToMany
                    }
                    pp::VectorMatchCardinality::ManyToMany => Cardinality::ManyToMany,
                };
                if let Some(lm) = &m.matching {
                    matching.on = lm.is_include();
                    matching.labels = lm.labels().labels.clone();
                }
                matching.fill_lhs = m.fill_values.lhs;
                matching.fill_rhs = m.fill_values.rhs;
            }
            if op.is_set() {
                matching.card = Cardinality::ManyToMany;
            }
            Expr::Binary(Binary {
                op,
                lhs: Box::new(convert(&b.lhs)?),
                rhs: Box::new(convert(&b.rhs)?),
                return_bool,
                matching,
            })
        }
        pp::Expr::Aggregate(a) => {
            let (grouping, without) = match &a.modifier {
                None => (Vec::new(), false),
                Some(m) => (m.labels().labels.clone(), !m.is_include()),
            };
            Expr::Aggregate(Aggregate {
                op: agg_op(&a.op)?,
                expr: Box::new(convert(&a.expr)?),
                param: match &a.param {
                    Some(p) => Some(Box::new(convert(p)?)),
                    None => None,
                },
                grouping,
                without,
            })
        }
        pp::Expr::Call(c) => Expr::Call(Call {
            func: c.func.name.to_string(),
            args: c
                .args
                .args
                .iter()
                .map(|a| convert(a))
                .collect::<Result<_, _>>()?,
        }),
        pp::Expr::Extension(_) => return Err(err("unsupported extension expression")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_selectors_and_modifiers() {
        let e = parse(r#"rate(foo{a="b"}[5m] offset -1m @ 100)"#).unwrap();
        let Expr::Call(c) = e else { panic!() };
        assert_eq!(c.func, "rate");
        let Expr::MatrixSelector { vs, range, .. } = &c.args[0] else {
            panic!()
        };
        assert_eq!(*range, 300_000);
        assert_eq!(vs.offset, -60_000);
        assert_eq!(vs.at, Some(AtModifier::Timestamp(100_000)));
        assert_eq!(vs.matchers.len(), 2);
    }

    /// Every expression of the upstream scripts: the native parser agrees
    /// with the old one wherever the old one parses.
    #[test]
    fn native_matches_old_on_upstream_scripts() {
        let dir = std::env::var("PROMQL_TESTDATA").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/testdata/promqltest"
            )
            .into()
        });
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let re = regex::Regex::new(
            r"^eval(?:_fail|_ordered|_warn|_info)?\s+(?:instant\s+at\s+\S+|range\s+from\s+\S+\s+to\s+\S+\s+step\s+\S+)\s+(.*)$",
        )
        .unwrap();
        let (mut same, mut differ, mut newly) = (0, 0, 0);
        for e in rd {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap();
            for line in text.lines() {
                let Some(c) = re.captures(line.trim()) else {
                    continue;
                };
                let q = &c[1];
                let old = parse(q);
                let new = parse_native(q);
                match (old, new) {
                    (Ok(a), Ok(b)) => {
                        let (a, b) = (format!("{a:?}"), format!("{b:?}"));
                        if a == b {
                            same += 1;
                        } else {
                            differ += 1;
                            println!("DIFF {q}\n  old {a}\n  new {b}");
                        }
                    }
                    (Err(a), Ok(_)) => {
                        newly += 1;
                        println!("NEW OK {q}: old error {a}");
                    }
                    (Ok(_), Err(b)) => {
                        differ += 1;
                        println!("NEW ERR {q}: {b}");
                    }
                    (Err(a), Err(b)) => println!("BOTH ERR {q}: {a} / {b}"),
                }
            }
        }
        println!("same {same} differ {differ} newly {newly}");
    }

    #[test]
    fn parse_error_is_reported() {
        assert!(parse("sum(").is_err());
        assert!(parse("foo{").is_err());
    }
}
