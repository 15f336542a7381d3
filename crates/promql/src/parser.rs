//! Parsing PromQL text into the engine's [`crate::ast`], and printing it
//! back.
//!
//! Stratus' own parser for the Prometheus 3.x grammar: [`lexer`] (tokens,
//! Go-style strings and numbers, durations), [`parse`] (recursive descent
//! with precedence climbing, Prometheus' checks and error texts with
//! `line:col` positions) and [`printer`] (`Display for Expr`, Prometheus'
//! canonical `String()` form). Constant duration expressions are folded
//! while parsing; query-dependent ones (`step()`, `range()`) stay in the
//! tree for the engine.

use crate::ast::{Expr, ValueType};
use crate::error::PromqlError;

mod lexer;
mod parse;
mod printer;

pub use printer::{PrintStyle, Printed};

/// Parses a PromQL expression into the engine's syntax tree. Errors carry
/// Prometheus' texts, e.g. `1:7: parse error: unexpected <op:+>`.
pub fn parse(input: &str) -> Result<Expr, PromqlError> {
    parse::parse_expr(input).map_err(|e| PromqlError::Parse {
        msg: e.render(input),
    })
}

/// The return type of a known PromQL function.
pub(crate) fn function_return_type(name: &str) -> Option<ValueType> {
    parse::function_return_type(name)
}

/// Argument types, variadic count (0: exact; n > 0: up to n optional
/// trailing arguments of the last type; -1: any number) and return type of
/// a known PromQL function, as Prometheus' function table lists them.
pub fn function_signature(name: &str) -> Option<(&'static [ValueType], i32, ValueType)> {
    parse::function_signature(name)
}

/// A duration in Prometheus' `model.Duration` form (`1h30m`), with a `-`
/// sign when negative.
pub(crate) fn format_duration(ms: i64) -> String {
    printer::fmt_duration(ms)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ast::AtModifier;

    fn err(q: &str) -> String {
        match parse(q) {
            Ok(e) => panic!("{q:?} parsed as {e:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn canon(q: &str) -> String {
        match parse(q) {
            Ok(e) => e.to_string(),
            Err(e) => panic!("{q:?}: {e}"),
        }
    }

    #[test]
    fn selectors_and_modifiers() {
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

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(canon("1 + 2 * 3 ^ 2 ^ 2"), "1 + 2 * 3 ^ 2 ^ 2");
        let Ok(Expr::Binary(b)) = parse("2 ^ 3 ^ 2") else {
            panic!()
        };
        assert!(matches!(*b.rhs, Expr::Binary(_)), "^ is right-associative");
        let Ok(Expr::Binary(b)) = parse("a - b - c") else {
            panic!()
        };
        assert!(matches!(*b.lhs, Expr::Binary(_)), "- is left-associative");
        // Unary minus binds like `*`: -a ^ b is -(a ^ b), -a * b is (-a) * b.
        assert!(matches!(parse("-a ^ b"), Ok(Expr::Neg(_))));
        assert!(matches!(parse("-a * b"), Ok(Expr::Binary(_))));
        assert!(matches!(parse("-1"), Ok(Expr::Number(v)) if v == -1.0));
        // Postfix modifiers bind tighter than any operator.
        let Ok(Expr::Binary(b)) = parse("foo offset 100 + 2") else {
            panic!()
        };
        assert!(matches!(*b.lhs, Expr::VectorSelector(_)));
        let Ok(Expr::Binary(b)) = parse("a or b and c unless d == bool e") else {
            panic!()
        };
        assert_eq!(b.op, crate::ast::BinOp::Or);
    }

    #[test]
    fn canonical_forms() {
        for (q, want) in [
            ("sum(foo) by (a,b)", "sum by (a, b) (foo)"),
            ("SUM without(a) (foo)", "sum without (a) (foo)"),
            ("topk(3, foo)", "topk(3, foo)"),
            ("a + on(x) group_left(y) b", "a + on (x) group_left (y) b"),
            ("a > bool ignoring(x) b", "a > bool ignoring (x) b"),
            ("foo[90m] offset 1h @ 10", "foo[1h30m] @ 10.000 offset 1h"),
            ("foo offset -5m", "foo offset -5m"),
            ("rate(foo[5m])[30m:1m]", "rate(foo[5m])[30m:1m]"),
            ("foo[5m:]", "foo[5m:]"),
            ("foo[1800]", "foo[30m]"),
            ("foo[26m+4m]", "foo[30m]"),
            ("foo offset (1h+5m)", "foo offset 1h5m"),
            (
                r#"{"my.metric", "label.x"="v"}"#,
                r#"{"my.metric", "label.x"="v"}"#,
            ),
            (r#"{__name__="foo"}"#, r#"{__name__="foo"}"#),
            ("foo @ start()", "foo @ start()"),
            ("0x10 + 1_000 + 1e3", "16 + 1000 + 1000"),
            ("-Inf", "-Inf"),
            ("'a\\'b' + 1", ""),
            ("`raw\\n`", r#""raw\\n""#),
            ("foo[step() * 2]", "foo[step() * 2]"),
            ("foo offset -step()", "foo offset -step()"),
            ("a + fill(0) b", "a + fill (0) b"),
            (
                "a + fill_left(1) fill_right(2) b",
                "a + fill_left (1) fill_right (2) b",
            ),
            ("foo[5m] anchored", "foo[5m] anchored"),
            ("foo smoothed", "foo smoothed"),
            ("foo # comment\n + 1", "foo + 1"),
            ("count_values(\"v\", foo)", r#"count_values("v", foo)"#),
            ("time()", "time()"),
        ] {
            if want.is_empty() {
                assert!(parse(q).is_err(), "{q}");
                continue;
            }
            assert_eq!(canon(q), want, "{q}");
        }
    }

    #[test]
    fn error_texts() {
        for (q, want) in [
            ("", "1:1: parse error: no expression found in input"),
            ("1 +", "1:4: parse error: unexpected end of input"),
            (
                "foo{a=~}",
                "1:8: parse error: unexpected \"}\" in label matching, expected string",
            ),
            (
                "foo{a~\"b\"}",
                "1:6: parse error: unexpected character inside braces: '~'",
            ),
            ("sum(", "1:5: parse error: unclosed left parenthesis"),
            (
                "foo{",
                "1:5: parse error: unexpected end of input inside braces",
            ),
            (")", "1:2: parse error: unexpected right parenthesis ')'"),
            ("*foo", "1:1: parse error: unexpected <op:*>"),
            (
                "rate(foo)",
                "1:6: parse error: expected type range vector in call to function \"rate\", got instant vector",
            ),
            (
                "rate(foo[5m], 1)",
                "1:1: parse error: expected 1 argument(s) in call to \"rate\", got 2",
            ),
            (
                "foo(1)",
                "1:1: parse error: unknown function with name \"foo\"",
            ),
            (
                "1 == 1",
                "1:3: parse error: comparisons between scalars must use BOOL modifier",
            ),
            (
                "1 and 1",
                "1:1: parse error: set operator \"and\" not allowed in binary scalar expression",
            ),
            (
                "{}",
                "1:1: parse error: vector selector must contain at least one non-empty matcher",
            ),
            (
                "foo{__name__=\"bar\"}",
                "1:1: parse error: metric name must not be set twice: \"foo\" or \"bar\"",
            ),
            (
                "1 offset 5m",
                "1:1: parse error: offset modifier must be preceded by an instant vector selector or range vector selector or a subquery",
            ),
            (
                "(foo)[5m]",
                "1:6: parse error: ranges only allowed for vector selectors",
            ),
            (
                "foo offset 5m[10m]",
                "1:14: parse error: no offset modifiers allowed before range",
            ),
            (
                "foo[5mm]",
                "1:5: parse error: bad number or duration syntax: \"5mm\"",
            ),
            (
                "foo[1.5h]",
                "1:5: parse error: not a valid duration string: \"1.5h\"",
            ),
            (
                "foo[0s]",
                "1:4: parse error: duration must be greater than 0",
            ),
            (
                "sum(foo, bar)",
                "1:1: parse error: wrong number of arguments for aggregate expression provided, expected 1, got 2",
            ),
            (
                "sum(foo) by (a b)",
                "1:16: parse error: unexpected identifier \"b\" in grouping opts, expected \",\" or \")\"",
            ),
            (
                "foo{a=1}",
                "1:7: parse error: unexpected character inside braces: '1'",
            ),
            (
                "rate(foo[5m],)",
                "1:13: parse error: trailing commas not allowed in function call args",
            ),
            (
                "foo @",
                "1:6: parse error: unexpected end of input in @, expected timestamp",
            ),
            (
                "foo offset",
                "1:11: parse error: unexpected end of input in offset, expected number or duration",
            ),
            (
                "-\"s\"",
                "1:1: parse error: unary expression only allowed on expressions of type scalar or instant vector, got \"string\"",
            ),
            (
                "foo[5m][1m:]",
                "1:1: parse error: subquery is only allowed on instant vector, got matrix instead",
            ),
            ("\"abc", "1:1: parse error: unterminated quoted string"),
            ("a\n+ *", "2:3: parse error: unexpected <op:*>"),
            // Texts and positions below checked against promtool.
            (
                "sum by (a) foo",
                "1:12: parse error: unexpected identifier \"foo\" in aggregation",
            ),
            (
                "foo{a=\"b\",,}",
                "1:11: parse error: unexpected \",\" in label matching, expected identifier or \"}\"",
            ),
            ("foo bar", "1:5: parse error: unexpected identifier \"bar\""),
            (
                "sum without",
                "1:12: parse error: unexpected end of input in grouping opts, expected \"(\"",
            ),
            (
                "topk(foo)",
                "1:1: parse error: wrong number of arguments for aggregate expression provided, expected 2, got 1",
            ),
            (
                "a + on(b) group_left(b) c",
                "1:3: parse error: label \"b\" must not occur in ON and GROUP clause at once",
            ),
            (
                "foo and on(a) group_left b",
                "1:1: parse error: no grouping allowed for \"and\" operation",
            ),
            (
                "foo[5m] @ start() @ end()",
                "1:1: parse error: @ <timestamp> may not be set multiple times",
            ),
            (
                "count_values(1, foo)",
                "1:14: parse error: expected type string in aggregation parameter, got scalar",
            ),
            (
                "label_replace(foo, \"a\")",
                "1:1: parse error: expected 5 argument(s) in call to \"label_replace\", got 2",
            ),
        ] {
            assert_eq!(err(q), want, "{q}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(err(&deep).contains("nesting too deep"));
        let long = vec!["1"; 5_000].join(" + ");
        assert!(err(&long).contains("nesting too deep"));
        let dur = format!("foo[{}]", vec!["1s"; 5_000].join("+"));
        assert!(err(&dur).contains("too large"));
        let neg = format!("{}1", "-".repeat(10_000));
        assert!(parse(&neg).is_err());
        let ok = format!("{}1{}", "(".repeat(50), ")".repeat(50));
        assert!(parse(&ok).is_ok());
    }

    /// Random valid expressions.
    fn arb_expr() -> impl Strategy<Value = String> {
        let sel = prop_oneof![
            Just("foo".to_string()),
            Just(r#"bar{a="x", b!~"y.*"}"#.to_string()),
            Just(r#"{"my.metric", "l.x"="v"}"#.to_string()),
            Just("foo offset -5m".to_string()),
            Just("foo @ 100".to_string()),
            Just("foo smoothed".to_string()),
        ];
        let leaf = prop_oneof![
            sel.clone(),
            (-1e6f64..1e6).prop_map(|v| format!("{v}")),
            Just("NaN".to_string()),
            Just("Inf".to_string()),
            Just("time()".to_string()),
            Just("rate(foo[5m])".to_string()),
            Just("rate(foo[5m] anchored)".to_string()),
            Just("sum_over_time(foo[step()*2] offset range())".to_string()),
            Just("max_over_time(rate(foo[1m])[1h:1m] offset 5m)".to_string()),
        ];
        leaf.prop_recursive(5, 40, 3, |inner| {
            let ops = prop_oneof![
                Just("+"),
                Just("-"),
                Just("*"),
                Just("/"),
                Just("%"),
                Just("^"),
                Just("atan2"),
                Just("== bool"),
                Just("> bool"),
                Just("<= bool"),
            ];
            let vec_ops = prop_oneof![
                Just("and"),
                Just("or"),
                Just("unless"),
                Just("+ on (a)"),
                Just("* ignoring (b) group_left (c)"),
                Just("/ on () group_right ()"),
                Just("- fill (0)"),
                Just("+ fill_left (1) fill_right (-2)"),
            ];
            prop_oneof![
                (inner.clone(), ops, inner.clone()).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
                (vec_ops, inner.clone()).prop_map(|(o, b)| format!("foo {o} (foo + ({b}))")),
                inner.clone().prop_map(|a| format!("({a})")),
                inner.clone().prop_map(|a| format!("-{a}")),
                inner
                    .clone()
                    .prop_map(|a| format!("sum by (a) (abs(foo + ({a})))")),
                inner
                    .clone()
                    .prop_map(|a| format!("max_over_time(topk(3, foo + ({a}))[5m:] offset 1m)")),
                inner.prop_map(|a| format!("clamp(foo, scalar(sum(foo + ({a}))), 1)")),
            ]
        })
    }

    fn roundtrip(q: &str) {
        let Ok(e1) = parse(q) else { return };
        let s1 = e1.to_string();
        let e2 = parse(&s1).unwrap_or_else(|err| panic!("{q:?} printed as {s1:?}: {err}"));
        // Positions differ between the two texts; the structure must not.
        let re = regex::Regex::new(r"Pos \{ line: \d+, col: \d+ \}").unwrap();
        let shape = |e: &Expr| re.replace_all(&format!("{e:?}"), "Pos").into_owned();
        assert_eq!(shape(&e1), shape(&e2), "{q:?} printed as {s1:?}");
        assert_eq!(s1, e2.to_string());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn print_parse_roundtrip(q in arb_expr()) {
            let e = parse(&q);
            prop_assert!(e.is_ok(), "{q:?}: {:?}", e.err().map(|e| e.to_string()));
            roundtrip(&q);
        }

        #[test]
        fn arbitrary_text_never_panics(q in "\\PC{0,60}") {
            let _ = parse(&q);
        }

        #[test]
        fn mutated_queries_never_panic(
            q in arb_expr(),
            cuts in proptest::collection::vec((0usize..200, 0usize..40), 1..4),
        ) {
            let tokens = ["(", ")", "[", "]", "{", "}", "\"", "'", "`", ",", ":", "@", "offset",
                "by", "on", "5m", "-", "^", "\\", "#", "\n", "=~", "!", "0x", "1e", "é"];
            let mut s = q.into_bytes();
            for (at, t) in cuts {
                let at = at % (s.len() + 1);
                if t < tokens.len() {
                    s.splice(at..at, tokens[t].bytes());
                } else if at < s.len() {
                    s.remove(at);
                }
            }
            let s = String::from_utf8_lossy(&s).into_owned();
            let _ = parse(&s);
            roundtrip(&s);
        }
    }
}
