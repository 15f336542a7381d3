//! Recursive-descent / precedence-climbing PromQL parser producing
//! [`crate::ast::Expr`] directly.
//!
//! Grammar and checks follow Prometheus 3.x (`generated_parser.y`,
//! `parse.go`): operator precedence `or` < `and unless` < comparisons <
//! `+ -` < `* / % atan2` < `^` (right-associative), unary minus at the level
//! of `*`, postfix `[range]`, `[range:step]`, `offset`, `@`, `anchored`,
//! `smoothed` binding tighter than any operator, duration expressions in
//! ranges and offsets, and the type checks of `checkAST` (reported only when
//! the text is otherwise well-formed, as Prometheus does). Error texts and
//! `line:col` positions follow Prometheus.

use stratus_model::{MatchType, Matcher};

use super::lexer::{AGGREGATORS, Tok, Token, go_quote, lex};
use crate::ast::{
    AggOp, Aggregate, AtModifier, BinOp, Binary, Call, Cardinality, DurationExpr, Expr, Pos,
    Subquery, ValueType, VectorMatching, VectorSelector,
};

/// Maximum nesting of the expression tree; deeper input is rejected
/// instead of risking the stack (Prometheus has no limit).
pub(crate) const MAX_DEPTH: u32 = 200;

const EMPTY_SELECTOR: &str = "vector selector must contain at least one non-empty matcher";

/// A parse error at a byte offset.
#[derive(Debug, Clone)]
pub(crate) struct ParseError {
    pub(crate) pos: usize,
    pub(crate) msg: String,
}

impl ParseError {
    /// Prometheus' text: `line:col: parse error: msg`.
    pub(crate) fn render(&self, input: &str) -> String {
        let pos = self.pos.min(input.len());
        let mut line = 1;
        let mut last_break: isize = -1;
        for (i, b) in input.as_bytes().iter().enumerate().take(pos) {
            if *b == b'\n' {
                line += 1;
                last_break = i as isize;
            }
        }
        let col = pos as isize - last_break;
        format!("{line}:{col}: parse error: {}", self.msg)
    }
}

type PResult<T> = Result<T, ParseError>;

/// Argument and return types of a PromQL function.
struct FuncSig {
    name: &'static str,
    args: &'static [ValueType],
    /// 0: exact; n > 0: up to n optional trailing args of the last type;
    /// -1: any number.
    variadic: i32,
    ret: ValueType,
}

use ValueType::{Matrix as M, Scalar as S, String as Str, Vector as V};

const fn f(
    name: &'static str,
    args: &'static [ValueType],
    variadic: i32,
    ret: ValueType,
) -> FuncSig {
    FuncSig {
        name,
        args,
        variadic,
        ret,
    }
}

static FUNCTIONS: &[FuncSig] = &[
    f("abs", &[V], 0, V),
    f("absent", &[V], 0, V),
    f("absent_over_time", &[M], 0, V),
    f("acos", &[V], 0, V),
    f("acosh", &[V], 0, V),
    f("asin", &[V], 0, V),
    f("asinh", &[V], 0, V),
    f("atan", &[V], 0, V),
    f("atanh", &[V], 0, V),
    f("avg_over_time", &[M], 0, V),
    f("ceil", &[V], 0, V),
    f("changes", &[M], 0, V),
    f("clamp", &[V, S, S], 0, V),
    f("clamp_max", &[V, S], 0, V),
    f("clamp_min", &[V, S], 0, V),
    f("cos", &[V], 0, V),
    f("cosh", &[V], 0, V),
    f("count_over_time", &[M], 0, V),
    f("days_in_month", &[V], 1, V),
    f("day_of_month", &[V], 1, V),
    f("day_of_week", &[V], 1, V),
    f("day_of_year", &[V], 1, V),
    f("deg", &[V], 0, V),
    f("delta", &[M], 0, V),
    f("deriv", &[M], 0, V),
    f("double_exponential_smoothing", &[M, S, S], 0, V),
    f("end", &[], 0, S),
    f("exp", &[V], 0, V),
    f("first_over_time", &[M], 0, V),
    f("floor", &[V], 0, V),
    f("histogram_avg", &[V], 0, V),
    f("histogram_count", &[V], 0, V),
    f("histogram_fraction", &[S, S, V], 0, V),
    f("histogram_quantile", &[S, V], 0, V),
    f("histogram_quantiles", &[V, Str, S], -1, V),
    f("histogram_stddev", &[V], 0, V),
    f("histogram_stdvar", &[V], 0, V),
    f("histogram_sum", &[V], 0, V),
    f("hour", &[V], 1, V),
    f("idelta", &[M], 0, V),
    f("increase", &[M], 0, V),
    f("info", &[V, V], 1, V),
    f("irate", &[M], 0, V),
    f("label_join", &[V, Str, Str, Str], -1, V),
    f("label_replace", &[V, Str, Str, Str, Str], 0, V),
    f("last_over_time", &[M], 0, V),
    f("ln", &[V], 0, V),
    f("log10", &[V], 0, V),
    f("log2", &[V], 0, V),
    f("mad_over_time", &[M], 0, V),
    f("max_over_time", &[M], 0, V),
    f("max_of", &[S, S], 0, S),
    f("min_of", &[S, S], 0, S),
    f("min_over_time", &[M], 0, V),
    f("minute", &[V], 1, V),
    f("month", &[V], 1, V),
    f("pi", &[], 0, S),
    f("predict_linear", &[M, S], 0, V),
    f("present_over_time", &[M], 0, V),
    f("quantile_over_time", &[S, M], 0, V),
    f("rad", &[V], 0, V),
    f("range", &[], 0, S),
    f("rate", &[M], 0, V),
    f("resets", &[M], 0, V),
    f("round", &[V, S], 1, V),
    f("scalar", &[V], 0, S),
    f("sgn", &[V], 0, V),
    f("sin", &[V], 0, V),
    f("sinh", &[V], 0, V),
    f("sort", &[V], 0, V),
    f("sort_by_label", &[V, Str], -1, V),
    f("sort_by_label_desc", &[V, Str], -1, V),
    f("sort_desc", &[V], 0, V),
    f("sqrt", &[V], 0, V),
    f("start", &[], 0, S),
    f("start_timestamp", &[V], 0, V),
    f("stddev_over_time", &[M], 0, V),
    f("stdvar_over_time", &[M], 0, V),
    f("step", &[], 0, S),
    f("sum_over_time", &[M], 0, V),
    f("tan", &[V], 0, V),
    f("tanh", &[V], 0, V),
    f("time", &[], 0, S),
    f("timestamp", &[V], 0, V),
    f("ts_of_first_over_time", &[M], 0, V),
    f("ts_of_last_over_time", &[M], 0, V),
    f("ts_of_max_over_time", &[M], 0, V),
    f("ts_of_min_over_time", &[M], 0, V),
    f("vector", &[S], 0, V),
    f("year", &[V], 1, V),
];

fn function(name: &str) -> Option<&'static FuncSig> {
    FUNCTIONS.iter().find(|s| s.name == name)
}

/// Argument types, variadic count and return type of a known function.
pub(crate) fn function_signature(name: &str) -> Option<(&'static [ValueType], i32, ValueType)> {
    function(name).map(|s| (s.args, s.variadic, s.ret))
}

/// The return type of a known PromQL function.
pub(crate) fn function_return_type(name: &str) -> Option<ValueType> {
    function(name).map(|s| s.ret)
}

/// Prometheus' `DocumentedType`.
fn doc_type(t: ValueType) -> &'static str {
    match t {
        ValueType::Scalar => "scalar",
        ValueType::String => "string",
        ValueType::Vector => "instant vector",
        ValueType::Matrix => "range vector",
    }
}

/// Prometheus' `ValueType.String()`.
fn short_type(t: ValueType) -> &'static str {
    match t {
        ValueType::Scalar => "scalar",
        ValueType::String => "string",
        ValueType::Vector => "vector",
        ValueType::Matrix => "matrix",
    }
}

/// An expression with its source range and tree depth.
struct Node {
    e: Expr,
    start: usize,
    end: usize,
    depth: u32,
}

/// Binary operator precedence (higher binds tighter).
fn precedence(op: BinOp) -> u8 {
    match op {
        BinOp::Or => 1,
        BinOp::And | BinOp::Unless => 2,
        BinOp::Eql | BinOp::Neq | BinOp::Gtr | BinOp::Lss | BinOp::Gte | BinOp::Lte => 3,
        BinOp::Add | BinOp::Sub => 4,
        BinOp::Mul
        | BinOp::Div
        | BinOp::Mod
        | BinOp::Atan2
        | BinOp::TrimUpper
        | BinOp::TrimLower => 5,
        BinOp::Pow => 6,
    }
}

const MUL_PREC: u8 = 5;
const POW_PREC: u8 = 6;

/// Parses a whole PromQL expression.
pub(crate) fn parse_expr(input: &str) -> Result<Expr, ParseError> {
    let toks = lex(input);
    let mut p = Parser {
        line_starts: std::iter::once(0)
            .chain(
                input
                    .bytes()
                    .enumerate()
                    .filter(|(_, b)| *b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect(),
        toks,
        i: 0,
        nest: 0,
        type_errs: Vec::new(),
        dur_nodes: 0,
    };
    if matches!(p.peek().tok, Tok::Eof) {
        return Err(ParseError {
            pos: 0,
            msg: "no expression found in input".into(),
        });
    }
    let n = p.expr(0)?;
    if !matches!(p.peek().tok, Tok::Eof) {
        return Err(p.unexpected("", ""));
    }
    if let Some(e) = p.type_errs.into_iter().next() {
        return Err(e);
    }
    Ok(n.e)
}

struct Parser {
    /// Byte offsets where the lines of the input start.
    line_starts: Vec<usize>,
    toks: Vec<Token>,
    i: usize,
    /// Current recursion depth of the parser itself.
    nest: u32,
    /// Type errors in the order found (reported only if there is no
    /// syntax error).
    type_errs: Vec<ParseError>,
    /// Nodes in the duration expression being parsed.
    dur_nodes: u32,
}

fn word_is(t: &Tok, w: &str) -> bool {
    match t {
        Tok::Ident(s) => s.eq_ignore_ascii_case(w),
        _ => false,
    }
}

impl Parser {
    /// The line and column of a byte offset.
    fn pos(&self, off: usize) -> Pos {
        let line = self.line_starts.partition_point(|&s| s <= off).max(1);
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        Pos {
            line: line as u32,
            col: (off.saturating_sub(start) + 1) as u32,
        }
    }

    fn peek(&self) -> &Token {
        // The token list always ends with Eof or Error, which is never
        // consumed past.
        &self.toks[self.i.min(self.toks.len() - 1)]
    }

    fn peek_at(&self, k: usize) -> &Token {
        &self.toks[(self.i + k).min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if !matches!(t.tok, Tok::Eof | Tok::Error(_)) {
            self.i += 1;
        }
        t
    }

    fn prev_end(&self) -> usize {
        if self.i == 0 {
            0
        } else {
            self.toks[(self.i - 1).min(self.toks.len() - 1)].end
        }
    }

    /// `unexpected <token> [in context][, expected ...]` at the current token
    /// (or the lexer's error when the current token is one).
    fn unexpected(&self, context: &str, expected: &str) -> ParseError {
        let t = self.peek();
        if let Tok::Error(m) = &t.tok {
            return ParseError {
                pos: t.start,
                msg: m.clone(),
            };
        }
        let mut msg = format!("unexpected {}", t.desc());
        if !context.is_empty() {
            msg.push_str(" in ");
            msg.push_str(context);
        }
        if !expected.is_empty() {
            msg.push_str(", expected ");
            msg.push_str(expected);
        }
        ParseError { pos: t.start, msg }
    }

    fn err_at(pos: usize, msg: impl Into<String>) -> ParseError {
        ParseError {
            pos,
            msg: msg.into(),
        }
    }

    fn type_error(&mut self, pos: usize, msg: impl Into<String>) {
        self.type_errs.push(Self::err_at(pos, msg));
    }

    fn enter(&mut self, pos: usize) -> PResult<()> {
        self.nest += 1;
        if self.nest > MAX_DEPTH {
            return Err(Self::err_at(
                pos,
                format!("expression nesting too deep (more than {MAX_DEPTH} levels)"),
            ));
        }
        Ok(())
    }

    fn check_depth(depth: u32, pos: usize) -> PResult<()> {
        if depth > MAX_DEPTH {
            return Err(Self::err_at(
                pos,
                format!("expression nesting too deep (more than {MAX_DEPTH} levels)"),
            ));
        }
        Ok(())
    }

    fn peek_binop(&self) -> Option<BinOp> {
        Some(match &self.peek().tok {
            Tok::Add => BinOp::Add,
            Tok::Sub => BinOp::Sub,
            Tok::Mul => BinOp::Mul,
            Tok::Div => BinOp::Div,
            Tok::Mod => BinOp::Mod,
            Tok::Pow => BinOp::Pow,
            Tok::Eqlc => BinOp::Eql,
            Tok::Neq => BinOp::Neq,
            Tok::Gtr => BinOp::Gtr,
            Tok::Lss => BinOp::Lss,
            Tok::Gte => BinOp::Gte,
            Tok::Lte => BinOp::Lte,
            Tok::TrimUpper => BinOp::TrimUpper,
            Tok::TrimLower => BinOp::TrimLower,
            Tok::Ident(w) => match w.to_ascii_lowercase().as_str() {
                "and" => BinOp::And,
                "or" => BinOp::Or,
                "unless" => BinOp::Unless,
                "atan2" => BinOp::Atan2,
                _ => return None,
            },
            _ => return None,
        })
    }

    /// Binary expressions with operators of at least `min_prec`.
    fn expr(&mut self, min_prec: u8) -> PResult<Node> {
        let pos = self.peek().start;
        self.enter(pos)?;
        let mut lhs = self.unary()?;
        while let Some(op) = self.peek_binop() {
            let prec = precedence(op);
            if prec < min_prec {
                break;
            }
            let op_pos = self.next().start;
            let (return_bool, matching) = self.bin_modifiers()?;
            let next_min = if op == BinOp::Pow { prec } else { prec + 1 };
            let rhs = self.expr(next_min)?;
            lhs = self.binary(lhs, op, op_pos, return_bool, matching, rhs)?;
        }
        self.nest -= 1;
        Ok(lhs)
    }

    fn bin_modifiers(&mut self) -> PResult<(bool, VectorMatching)> {
        let mut m = VectorMatching::default();
        let mut return_bool = false;
        if word_is(&self.peek().tok, "bool") {
            self.next();
            return_bool = true;
        }
        let t = self.peek().tok.clone();
        if word_is(&t, "on") || word_is(&t, "ignoring") {
            self.next();
            m.on = word_is(&t, "on");
            m.labels = self.grouping_labels()?;
            let g = self.peek().tok.clone();
            if word_is(&g, "group_left") || word_is(&g, "group_right") {
                self.next();
                m.card = if word_is(&g, "group_left") {
                    Cardinality::ManyToOne
                } else {
                    Cardinality::OneToMany
                };
                if matches!(self.peek().tok, Tok::LParen) {
                    m.include = self.grouping_labels()?;
                }
            }
        }
        // fill(v), fill_left(v), fill_right(v) in any order.
        loop {
            let t = self.peek().tok.clone();
            let which = match &t {
                Tok::Ident(w) if matches!(self.peek_at(1).tok, Tok::LParen) => match w.as_str() {
                    "fill" => 0,
                    "fill_left" => 1,
                    "fill_right" => 2,
                    _ => break,
                },
                _ => break,
            };
            self.next();
            self.next();
            let v = self.signed_number("fill modifier")?;
            if !matches!(self.peek().tok, Tok::RParen) {
                return Err(self.unexpected("fill modifier", "\")\""));
            }
            self.next();
            match which {
                0 => {
                    m.fill_lhs = Some(v);
                    m.fill_rhs = Some(v);
                }
                1 => m.fill_lhs = Some(v),
                _ => m.fill_rhs = Some(v),
            }
        }
        Ok((return_bool, m))
    }

    /// `[+-] number` (also a duration, as seconds).
    fn signed_number(&mut self, context: &str) -> PResult<f64> {
        let mut sign = 1.0;
        match self.peek().tok {
            Tok::Add => {
                self.next();
            }
            Tok::Sub => {
                self.next();
                sign = -1.0;
            }
            _ => {}
        }
        let t = self.peek().clone();
        match &t.tok {
            Tok::Number(v, _) => {
                self.next();
                Ok(sign * v)
            }
            Tok::Duration(d) => {
                self.next();
                Ok(sign * parse_duration(d).map_err(|m| Self::err_at(t.start, m))? as f64 / 1000.0)
            }
            _ => Err(self.unexpected(context, "number")),
        }
    }

    fn binary(
        &mut self,
        lhs: Node,
        op: BinOp,
        op_pos: usize,
        return_bool: bool,
        mut matching: VectorMatching,
        rhs: Node,
    ) -> PResult<Node> {
        let (start, end) = (lhs.start, rhs.end);
        let depth = lhs.depth.max(rhs.depth) + 1;
        Self::check_depth(depth, start)?;
        let lt = lhs.e.value_type();
        let rt = rhs.e.value_type();
        if return_bool && !op.is_comparison() {
            self.type_error(
                op_pos,
                "bool modifier can only be used on comparison operators",
            );
        }
        if op.is_comparison() && !return_bool && lt == S && rt == S {
            self.type_error(op_pos, "comparisons between scalars must use BOOL modifier");
        }
        if op.is_set() && matching.card == Cardinality::OneToOne {
            matching.card = Cardinality::ManyToMany;
        }
        if matching.on {
            for l in &matching.labels {
                if matching.include.contains(l) {
                    self.type_error(
                        op_pos,
                        format!(
                            "label {} must not occur in ON and GROUP clause at once",
                            go_quote(l)
                        ),
                    );
                }
            }
        }
        if lt != S && lt != V {
            self.type_error(
                lhs.start,
                "binary expression must contain only scalar and instant vector types",
            );
        }
        if rt != S && rt != V {
            self.type_error(
                rhs.start,
                "binary expression must contain only scalar and instant vector types",
            );
        }
        if lt != V || rt != V {
            if !matching.labels.is_empty() {
                self.type_error(
                    start,
                    "vector matching only allowed between instant vectors",
                );
            }
            matching = VectorMatching::default();
        } else if op.is_set() {
            if matches!(
                matching.card,
                Cardinality::OneToMany | Cardinality::ManyToOne
            ) {
                self.type_error(
                    start,
                    format!(
                        "no grouping allowed for {} operation",
                        go_quote(op.as_str())
                    ),
                );
            }
            if matching.card != Cardinality::ManyToMany {
                self.type_error(start, "set operations must always be many-to-many");
            }
        }
        if (lt == S || rt == S) && op.is_set() {
            self.type_error(
                start,
                format!(
                    "set operator {} not allowed in binary scalar expression",
                    go_quote(op.as_str())
                ),
            );
        }
        Ok(Node {
            e: Expr::Binary(Binary {
                op,
                lhs: Box::new(lhs.e),
                rhs: Box::new(rhs.e),
                return_bool,
                matching,
                pos: self.pos(start),
            }),
            start,
            end,
            depth,
        })
    }

    fn unary(&mut self) -> PResult<Node> {
        let t = self.peek().clone();
        if matches!(t.tok, Tok::Add | Tok::Sub) {
            self.next();
            // Unary operators bind like `*`: only `^` is taken into the operand.
            let operand = self.expr(POW_PREC)?;
            let _ = MUL_PREC;
            let neg = matches!(t.tok, Tok::Sub);
            if let Expr::Number(v) = operand.e {
                return Ok(Node {
                    e: Expr::Number(if neg { -v } else { v }),
                    start: t.start,
                    end: operand.end,
                    depth: operand.depth,
                });
            }
            let ty = operand.e.value_type();
            if ty != S && ty != V {
                self.type_error(
                    t.start,
                    format!(
                        "unary expression only allowed on expressions of type scalar or instant vector, got {}",
                        go_quote(doc_type(ty))
                    ),
                );
            }
            if !neg {
                return Ok(Node {
                    start: t.start,
                    ..operand
                });
            }
            let depth = operand.depth + 1;
            Self::check_depth(depth, t.start)?;
            return Ok(Node {
                e: Expr::Neg(Box::new(operand.e)),
                start: t.start,
                end: operand.end,
                depth,
            });
        }
        let prim = self.primary()?;
        self.postfix(prim)
    }

    fn primary(&mut self) -> PResult<Node> {
        let t = self.peek().clone();
        let leaf = |e: Expr, t: &Token| Node {
            e,
            start: t.start,
            end: t.end,
            depth: 1,
        };
        match &t.tok {
            Tok::Number(v, _) => {
                self.next();
                Ok(leaf(Expr::Number(*v), &t))
            }
            Tok::Duration(d) => {
                self.next();
                let ms = parse_duration(d).map_err(|m| Self::err_at(t.start, m))?;
                Ok(leaf(Expr::Number(ms as f64 / 1000.0), &t))
            }
            Tok::Str(s) => {
                self.next();
                Ok(leaf(Expr::String(s.clone()), &t))
            }
            Tok::LParen => {
                self.next();
                let inner = self.expr(0)?;
                if !matches!(self.peek().tok, Tok::RParen) {
                    return Err(self.unexpected("", ""));
                }
                let close = self.next();
                let depth = inner.depth + 1;
                Self::check_depth(depth, t.start)?;
                Ok(Node {
                    e: Expr::Paren(Box::new(inner.e)),
                    start: t.start,
                    end: close.end,
                    depth,
                })
            }
            Tok::LBrace => self.vector_selector(None, t.start),
            Tok::Ident(w) => {
                let lw = w.to_ascii_lowercase();
                let nt = self.peek_at(1).tok.clone();
                if AGGREGATORS.contains(&lw.as_str())
                    && (matches!(nt, Tok::LParen) || word_is(&nt, "by") || word_is(&nt, "without"))
                {
                    return self.aggregate(&lw, t.start);
                }
                if matches!(nt, Tok::LParen) {
                    return self.call(w, t.start);
                }
                if is_reserved_word(&lw) {
                    return Err(self.unexpected("", ""));
                }
                self.next();
                self.vector_selector(Some(w.clone()), t.start)
            }
            Tok::MetricIdent(w) => {
                self.next();
                self.vector_selector(Some(w.clone()), t.start)
            }
            _ => Err(self.unexpected("", "")),
        }
    }

    /// `{...}` after an optional metric name (the name is consumed; the
    /// current token may be `{`).
    fn vector_selector(&mut self, name: Option<String>, start: usize) -> PResult<Node> {
        let mut name = name;
        let mut matchers: Vec<Matcher> = Vec::new();
        let mut inner_names: Vec<String> = Vec::new();
        let mut end = self.prev_end();
        if matches!(self.peek().tok, Tok::LBrace) {
            self.next();
            loop {
                let t = self.peek().clone();
                let label = match &t.tok {
                    Tok::RBrace => {
                        end = self.next().end;
                        break;
                    }
                    Tok::Label(l) => l.clone(),
                    Tok::Str(s) => s.clone(),
                    _ => {
                        return Err(self.unexpected("label matching", "identifier or \"}\""));
                    }
                };
                self.next();
                let kind = match self.peek().tok {
                    Tok::Eql => Some(MatchType::Equal),
                    Tok::Neq => Some(MatchType::NotEqual),
                    Tok::EqlRegex => Some(MatchType::RegexMatch),
                    Tok::NeqRegex => Some(MatchType::RegexNoMatch),
                    _ => None,
                };
                match kind {
                    None if matches!(t.tok, Tok::Str(_))
                        && matches!(self.peek().tok, Tok::Comma | Tok::RBrace) =>
                    {
                        // A quoted metric name.
                        inner_names.push(label.clone());
                        matchers.push(Matcher::eq(stratus_model::METRIC_NAME, label.as_str()));
                    }
                    None => {
                        return Err(self.unexpected("label matching", "label matching operator"));
                    }
                    Some(kind) => {
                        self.next();
                        let vt = self.peek().clone();
                        let Tok::Str(value) = &vt.tok else {
                            return Err(self.unexpected("label matching", "string"));
                        };
                        self.next();
                        let m = Matcher::new(kind, label.as_str(), value.as_str())
                            .map_err(|e| Self::err_at(t.start, format!("{e}")))?;
                        matchers.push(m);
                    }
                }
                match self.peek().tok {
                    Tok::Comma => {
                        self.next();
                    }
                    Tok::RBrace => {}
                    _ => return Err(self.unexpected("label matching", "\",\" or \"}\"")),
                }
            }
        }
        if let Some(n) = &name {
            for m in &matchers {
                if &*m.name == stratus_model::METRIC_NAME {
                    self.type_error(
                        start,
                        format!(
                            "metric name must not be set twice: {} or {}",
                            go_quote(n),
                            go_quote(&m.value)
                        ),
                    );
                }
            }
            matchers.insert(0, Matcher::eq(stratus_model::METRIC_NAME, n.as_str()));
        } else if inner_names.len() > 1 {
            self.type_error(
                start,
                format!(
                    "metric name must not be set twice: {} or {}",
                    go_quote(&inner_names[0]),
                    go_quote(&inner_names[1])
                ),
            );
        } else if let Some(n) = inner_names.pop() {
            // The name matcher goes first, as for a name outside braces.
            if let Some(i) = matchers
                .iter()
                .position(|m| &*m.name == stratus_model::METRIC_NAME && *m.value == *n)
            {
                let m = matchers.remove(i);
                matchers.insert(0, m);
            }
            name = Some(n);
        }
        if name.is_none() && !matchers.iter().any(|m| !m.matches_empty()) {
            self.type_error(start, EMPTY_SELECTOR);
        }
        Ok(Node {
            e: Expr::VectorSelector(VectorSelector {
                name,
                matchers,
                offset: 0,
                at: None,
                offset_expr: None,
                anchored: false,
                smoothed: false,
                pos: self.pos(start),
            }),
            start,
            end,
            depth: 1,
        })
    }

    /// `( labels )`.
    fn grouping_labels(&mut self) -> PResult<Vec<String>> {
        if !matches!(self.peek().tok, Tok::LParen) {
            return Err(self.unexpected("grouping opts", "\"(\""));
        }
        self.next();
        let mut out = Vec::new();
        loop {
            let t = self.peek().clone();
            match &t.tok {
                Tok::RParen => {
                    self.next();
                    return Ok(out);
                }
                Tok::Ident(w) | Tok::Label(w) => out.push(w.clone()),
                Tok::Str(s) => out.push(s.clone()),
                _ => return Err(self.unexpected("grouping opts", "label")),
            }
            self.next();
            match self.peek().tok {
                Tok::Comma => {
                    self.next();
                }
                Tok::RParen => {}
                _ => return Err(self.unexpected("grouping opts", "\",\" or \")\"")),
            }
        }
    }

    /// `( args )` of a call or aggregation.
    fn call_args(&mut self) -> PResult<(Vec<Node>, usize)> {
        if !matches!(self.peek().tok, Tok::LParen) {
            return Err(self.unexpected("", ""));
        }
        self.next();
        let mut args = Vec::new();
        if matches!(self.peek().tok, Tok::RParen) {
            let end = self.next().end;
            return Ok((args, end));
        }
        loop {
            args.push(self.expr(0)?);
            match self.peek().tok {
                Tok::Comma => {
                    let c = self.next();
                    if matches!(self.peek().tok, Tok::RParen) {
                        return Err(Self::err_at(
                            c.start,
                            "trailing commas not allowed in function call args",
                        ));
                    }
                }
                Tok::RParen => {
                    let end = self.next().end;
                    return Ok((args, end));
                }
                _ => return Err(self.unexpected("", "")),
            }
        }
    }

    fn aggregate(&mut self, op_name: &str, start: usize) -> PResult<Node> {
        let op = match op_name {
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
            _ => AggOp::LimitRatio,
        };
        self.next();
        let mut grouping = None;
        let modifier = |p: &mut Self| -> PResult<Option<(Vec<String>, bool)>> {
            let t = p.peek().tok.clone();
            if word_is(&t, "by") || word_is(&t, "without") {
                p.next();
                let labels = p.grouping_labels()?;
                return Ok(Some((labels, word_is(&t, "without"))));
            }
            Ok(None)
        };
        if let Some(g) = modifier(self)? {
            grouping = Some(g);
        }
        if !matches!(self.peek().tok, Tok::LParen) {
            return Err(self.unexpected("aggregation", ""));
        }
        let (args, end) = self.call_args()?;
        let mut end = end;
        if grouping.is_none() {
            if let Some(g) = modifier(self)? {
                grouping = Some(g);
                end = self.prev_end();
            }
        }
        let (grouping, without) = grouping.unwrap_or_default();
        if args.is_empty() {
            return Err(Self::err_at(
                start,
                "no arguments for aggregate expression provided",
            ));
        }
        let with_param = matches!(
            op,
            AggOp::TopK
                | AggOp::BottomK
                | AggOp::CountValues
                | AggOp::Quantile
                | AggOp::LimitK
                | AggOp::LimitRatio
        );
        let want = if with_param { 2 } else { 1 };
        if args.len() != want {
            return Err(Self::err_at(
                start,
                format!(
                    "wrong number of arguments for aggregate expression provided, expected {want}, got {}",
                    args.len()
                ),
            ));
        }
        let depth = args.iter().map(|a| a.depth).max().unwrap_or(0) + 1;
        Self::check_depth(depth, start)?;
        let mut it = args.into_iter();
        let (param, expr) = if with_param {
            let p = it.next();
            (p, it.next())
        } else {
            (None, it.next())
        };
        let Some(expr) = expr else {
            return Err(Self::err_at(
                start,
                "no arguments for aggregate expression provided",
            ));
        };
        let et = expr.e.value_type();
        if et != V {
            self.type_error(
                expr.start,
                format!(
                    "expected type instant vector in aggregation expression, got {}",
                    doc_type(et)
                ),
            );
        }
        if let Some(p) = &param {
            let want = if op == AggOp::CountValues { Str } else { S };
            let pt = p.e.value_type();
            if pt != want {
                self.type_error(
                    p.start,
                    format!(
                        "expected type {} in aggregation parameter, got {}",
                        doc_type(want),
                        doc_type(pt)
                    ),
                );
            }
        }
        Ok(Node {
            e: Expr::Aggregate(Aggregate {
                op,
                expr_pos: self.pos(expr.start),
                param_pos: param.as_ref().map_or(Pos::default(), |p| self.pos(p.start)),
                expr: Box::new(expr.e),
                param: param.map(|p| Box::new(p.e)),
                grouping,
                without,
            }),
            start,
            end,
            depth,
        })
    }

    fn call(&mut self, name: &str, start: usize) -> PResult<Node> {
        let name_end = self.peek().end;
        self.next();
        let Some(sig) = function(name) else {
            return Err(Self::err_at(
                start,
                format!("unknown function with name {}", go_quote(name)),
            ));
        };
        let _ = name_end;
        let (args, end) = self.call_args()?;
        let nargs = sig.args.len();
        let got = args.len();
        if sig.variadic == 0 {
            if nargs != got {
                self.type_error(
                    start,
                    format!(
                        "expected {nargs} argument(s) in call to {}, got {got}",
                        go_quote(name)
                    ),
                );
            }
        } else {
            let min = nargs - 1;
            if min > got {
                self.type_error(
                    start,
                    format!(
                        "expected at least {min} argument(s) in call to {}, got {got}",
                        go_quote(name)
                    ),
                );
            } else if sig.variadic > 0 && min + (sig.variadic as usize) < got {
                self.type_error(
                    start,
                    format!(
                        "expected at most {} argument(s) in call to {}, got {got}",
                        min + sig.variadic as usize,
                        go_quote(name)
                    ),
                );
            }
        }
        for (i, a) in args.iter().enumerate() {
            let want = match sig.args.get(i) {
                Some(t) => *t,
                None if sig.variadic != 0 => match sig.args.last() {
                    Some(t) => *t,
                    None => break,
                },
                None => break,
            };
            if name == "info" && i == 1 {
                // The label selector of info() may match empty values but
                // must be a plain selector.
                self.type_errs
                    .retain(|e| !(e.pos == a.start && e.msg == EMPTY_SELECTOR));
                if !matches!(a.e, Expr::VectorSelector(_)) {
                    self.type_error(
                        a.start,
                        "expected label selectors as the second argument to \"info\" function",
                    );
                }
                continue;
            }
            let t = a.e.value_type();
            if t != want {
                self.type_error(
                    a.start,
                    format!(
                        "expected type {} in call to function {}, got {}",
                        doc_type(want),
                        go_quote(name),
                        doc_type(t)
                    ),
                );
            }
        }
        let depth = args.iter().map(|a| a.depth).max().unwrap_or(0) + 1;
        Self::check_depth(depth, start)?;
        Ok(Node {
            e: Expr::Call(Call {
                func: name.to_string(),
                arg_pos: args.iter().map(|a| self.pos(a.start)).collect(),
                args: args.into_iter().map(|a| a.e).collect(),
            }),
            start,
            end,
            depth,
        })
    }

    /// Postfix modifiers: `[range]`, `[range:step]`, `offset`, `@`,
    /// `anchored`, `smoothed`.
    fn postfix(&mut self, mut n: Node) -> PResult<Node> {
        loop {
            let t = self.peek().clone();
            match &t.tok {
                Tok::LBracket => n = self.range_or_subquery(n)?,
                Tok::At => {
                    self.next();
                    let at = self.at_value()?;
                    self.set_at(&mut n, at)?;
                }
                w if word_is(w, "offset") => {
                    self.next();
                    let d = self.offset_duration()?;
                    self.set_offset(&mut n, d)?;
                }
                w if word_is(w, "anchored") || word_is(w, "smoothed") => {
                    self.next();
                    let anchored = word_is(w, "anchored");
                    let what = if anchored { "anchored" } else { "smoothed" };
                    let vs = match &mut n.e {
                        Expr::VectorSelector(vs) | Expr::MatrixSelector { vs, .. } => vs,
                        _ => {
                            return Err(Self::err_at(
                                n.start,
                                format!(
                                    "{what} modifier must be preceded by an instant vector selector or range vector selector"
                                ),
                            ));
                        }
                    };
                    if vs.anchored || vs.smoothed {
                        return Err(Self::err_at(
                            n.start,
                            "anchored and smoothed modifiers may be set only once",
                        ));
                    }
                    if anchored {
                        vs.anchored = true;
                    } else {
                        vs.smoothed = true;
                    }
                    n.end = t.end;
                }
                _ => return Ok(n),
            }
            n.end = n.end.max(self.prev_end());
        }
    }

    fn range_or_subquery(&mut self, n: Node) -> PResult<Node> {
        let open = self.next();
        self.dur_nodes = 0;
        let range = self.duration_expr("subquery selector", "duration")?;
        match self.peek().tok {
            Tok::RBracket => {
                let close = self.next();
                let Expr::VectorSelector(vs) = n.e else {
                    return Err(Self::err_at(
                        open.start,
                        "ranges only allowed for vector selectors",
                    ));
                };
                if vs.offset != 0 || vs.offset_expr.is_some() {
                    return Err(Self::err_at(
                        open.start,
                        "no offset modifiers allowed before range",
                    ));
                }
                if vs.at.is_some() {
                    return Err(Self::err_at(
                        open.start,
                        "no @ modifiers allowed before range",
                    ));
                }
                if vs.anchored || vs.smoothed {
                    return Err(Self::err_at(
                        open.start,
                        "no anchored or smoothed modifiers allowed before range",
                    ));
                }
                let (range, range_expr) = self.fold_positive(range, open.start)?;
                let mut vs = vs;
                vs.offset = 0;
                Ok(Node {
                    e: Expr::MatrixSelector {
                        vs,
                        range,
                        range_expr,
                    },
                    start: n.start,
                    end: close.end,
                    depth: 1,
                })
            }
            Tok::Colon => {
                self.next();
                let step = if matches!(self.peek().tok, Tok::RBracket) {
                    None
                } else {
                    Some(self.duration_expr("subquery selector", "duration or \"]\"")?)
                };
                if !matches!(self.peek().tok, Tok::RBracket) {
                    return Err(self.unexpected("subquery selector", "\"]\""));
                }
                let close = self.next();
                let t = n.e.value_type();
                if t != V {
                    self.type_error(
                        n.start,
                        format!(
                            "subquery is only allowed on instant vector, got {} instead",
                            short_type(t)
                        ),
                    );
                }
                let (range, range_expr) = self.fold_positive(range, open.start)?;
                let (step, step_expr) = match step {
                    None => (None, None),
                    Some(s) => {
                        let (v, e) = self.fold_positive(s, open.start)?;
                        (Some(v), e)
                    }
                };
                let depth = n.depth + 1;
                Self::check_depth(depth, n.start)?;
                Ok(Node {
                    e: Expr::Subquery(Subquery {
                        expr: Box::new(n.e),
                        range,
                        step,
                        offset: 0,
                        at: None,
                        range_expr,
                        step_expr,
                        offset_expr: None,
                    }),
                    start: n.start,
                    end: close.end,
                    depth,
                })
            }
            _ => Err(self.unexpected("subquery or range", "\":\" or \"]\"")),
        }
    }

    /// Folds a constant duration that must be positive; keeps a
    /// query-dependent one for the engine.
    fn fold_positive(&self, d: DurationExpr, pos: usize) -> PResult<(i64, Option<DurationExpr>)> {
        if !d.is_constant() {
            return Ok((0, Some(d)));
        }
        let ms = d.eval_ms(0, 0).map_err(|m| Self::err_at(pos, m))?;
        if ms <= 0 {
            return Err(Self::err_at(pos, "duration must be greater than 0"));
        }
        Ok((ms, None))
    }

    fn at_value(&mut self) -> PResult<AtModifier> {
        let t = self.peek().clone();
        if word_is(&t.tok, "start") || word_is(&t.tok, "end") {
            self.next();
            if !matches!(self.peek().tok, Tok::LParen)
                || !matches!(self.peek_at(1).tok, Tok::RParen)
            {
                return Err(self.unexpected("@", "\"(\""));
            }
            self.next();
            self.next();
            return Ok(if word_is(&t.tok, "start") {
                AtModifier::Start
            } else {
                AtModifier::End
            });
        }
        if !matches!(
            t.tok,
            Tok::Number(..) | Tok::Duration(_) | Tok::Add | Tok::Sub
        ) {
            return Err(self.unexpected("@", "timestamp"));
        }
        let v = self.signed_number("@")?;
        if !v.is_finite() || v >= i64::MAX as f64 / 1000.0 || v <= i64::MIN as f64 / 1000.0 {
            return Err(Self::err_at(
                t.start,
                format!("timestamp out of bounds for @ modifier: {v:.6}"),
            ));
        }
        Ok(AtModifier::Timestamp((v * 1000.0).round() as i64))
    }

    fn set_at(&mut self, n: &mut Node, at: AtModifier) -> PResult<()> {
        let slot = match &mut n.e {
            Expr::VectorSelector(vs) | Expr::MatrixSelector { vs, .. } => &mut vs.at,
            Expr::Subquery(s) => &mut s.at,
            _ => {
                return Err(Self::err_at(
                    n.start,
                    "@ modifier must be preceded by an instant vector selector or range vector selector or a subquery",
                ));
            }
        };
        if slot.is_some() {
            return Err(Self::err_at(
                n.start,
                "@ <timestamp> may not be set multiple times",
            ));
        }
        *slot = Some(at);
        Ok(())
    }

    fn set_offset(&mut self, n: &mut Node, d: DurationExpr) -> PResult<()> {
        let (offset, offset_expr) = match &mut n.e {
            Expr::VectorSelector(vs) | Expr::MatrixSelector { vs, .. } => {
                (&mut vs.offset, &mut vs.offset_expr)
            }
            Expr::Subquery(s) => (&mut s.offset, &mut s.offset_expr),
            _ => {
                return Err(Self::err_at(
                    n.start,
                    "offset modifier must be preceded by an instant vector selector or range vector selector or a subquery",
                ));
            }
        };
        if *offset != 0 || offset_expr.is_some() {
            return Err(Self::err_at(
                n.start,
                "offset may not be set multiple times",
            ));
        }
        if d.is_constant() {
            *offset = d.eval_ms(0, 0).map_err(|m| Self::err_at(n.start, m))?;
        } else {
            *offset_expr = Some(d);
        }
        Ok(())
    }

    /// The duration after `offset`: an optionally signed literal,
    /// parenthesised duration expression, `step()`, `range()`,
    /// `min_of(..)` or `max_of(..)`.
    fn offset_duration(&mut self) -> PResult<DurationExpr> {
        self.dur_nodes = 0;
        match self.peek().tok {
            Tok::Sub => {
                self.next();
                let d = self.duration_primary("offset", "number or duration")?;
                Ok(match d {
                    DurationExpr::Number(v) => DurationExpr::Number(-v),
                    DurationExpr::Duration(ms) => DurationExpr::Duration(-ms),
                    d => DurationExpr::Neg(Box::new(d)),
                })
            }
            Tok::Add => {
                self.next();
                self.duration_primary("offset", "number or duration")
            }
            _ => self.duration_primary("offset", "number or duration"),
        }
    }

    /// A full duration expression (inside brackets or parentheses).
    fn duration_expr(&mut self, context: &str, expected: &str) -> PResult<DurationExpr> {
        self.duration_binary(0, context, expected)
    }

    /// Counts a duration expression node; bounds the tree's size.
    fn dur_node(&mut self) -> PResult<()> {
        self.dur_nodes += 1;
        if self.dur_nodes > MAX_DEPTH {
            return Err(Self::err_at(
                self.peek().start,
                format!("duration expression too large (more than {MAX_DEPTH} operations)"),
            ));
        }
        Ok(())
    }

    fn duration_binary(
        &mut self,
        min_prec: u8,
        context: &str,
        expected: &str,
    ) -> PResult<DurationExpr> {
        let pos = self.peek().start;
        self.enter(pos)?;
        let mut lhs = self.duration_unary(context, expected)?;
        loop {
            let op = match self.peek().tok {
                Tok::Add => BinOp::Add,
                Tok::Sub => BinOp::Sub,
                Tok::Mul => BinOp::Mul,
                Tok::Div => BinOp::Div,
                Tok::Mod => BinOp::Mod,
                Tok::Pow => BinOp::Pow,
                _ => break,
            };
            let prec = precedence(op);
            if prec < min_prec {
                break;
            }
            self.next();
            let next_min = if op == BinOp::Pow { prec } else { prec + 1 };
            let rhs = self.duration_binary(next_min, context, "number or duration")?;
            self.dur_node()?;
            lhs = DurationExpr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        self.nest -= 1;
        Ok(lhs)
    }

    fn duration_unary(&mut self, context: &str, expected: &str) -> PResult<DurationExpr> {
        match self.peek().tok {
            Tok::Sub => {
                self.next();
                let pos = self.peek().start;
                self.enter(pos)?;
                let d = self.duration_binary(POW_PREC, context, expected)?;
                self.nest -= 1;
                self.dur_node()?;
                Ok(match d {
                    DurationExpr::Number(v) => DurationExpr::Number(-v),
                    DurationExpr::Duration(ms) => DurationExpr::Duration(-ms),
                    d => DurationExpr::Neg(Box::new(d)),
                })
            }
            Tok::Add => {
                self.next();
                let pos = self.peek().start;
                self.enter(pos)?;
                let d = self.duration_binary(POW_PREC, context, expected)?;
                self.nest -= 1;
                Ok(d)
            }
            _ => self.duration_primary(context, expected),
        }
    }

    fn duration_primary(&mut self, context: &str, expected: &str) -> PResult<DurationExpr> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::Number(v, _) => {
                self.next();
                Ok(DurationExpr::Number(*v))
            }
            Tok::Duration(d) => {
                self.next();
                Ok(DurationExpr::Duration(
                    parse_duration(d).map_err(|m| Self::err_at(t.start, m))?,
                ))
            }
            Tok::LParen => {
                self.next();
                self.dur_node()?;
                let d = self.duration_expr(context, expected)?;
                if !matches!(self.peek().tok, Tok::RParen) {
                    return Err(self.unexpected(context, "\")\""));
                }
                self.next();
                Ok(DurationExpr::Paren(Box::new(d)))
            }
            Tok::Ident(w) => {
                let lw = w.to_ascii_lowercase();
                if !matches!(self.peek_at(1).tok, Tok::LParen) {
                    return Err(self.unexpected(context, expected));
                }
                match lw.as_str() {
                    "step" | "range" => {
                        self.next();
                        self.next();
                        if !matches!(self.peek().tok, Tok::RParen) {
                            return Err(self.unexpected(context, "\")\""));
                        }
                        self.next();
                        Ok(if lw == "step" {
                            DurationExpr::Step
                        } else {
                            DurationExpr::Range
                        })
                    }
                    "min_of" | "max_of" => {
                        self.next();
                        self.next();
                        self.dur_node()?;
                        let a = self.duration_expr(context, expected)?;
                        if !matches!(self.peek().tok, Tok::Comma) {
                            return Err(self.unexpected(context, "\",\""));
                        }
                        self.next();
                        let b = self.duration_expr(context, expected)?;
                        if !matches!(self.peek().tok, Tok::RParen) {
                            return Err(self.unexpected(context, "\")\""));
                        }
                        self.next();
                        Ok(if lw == "min_of" {
                            DurationExpr::MinOf(Box::new(a), Box::new(b))
                        } else {
                            DurationExpr::MaxOf(Box::new(a), Box::new(b))
                        })
                    }
                    _ => Err(self.unexpected(context, expected)),
                }
            }
            _ => Err(self.unexpected(context, expected)),
        }
    }
}

/// Words that cannot start an expression as a metric name.
fn is_reserved_word(lw: &str) -> bool {
    matches!(
        lw,
        "and"
            | "or"
            | "unless"
            | "atan2"
            | "bool"
            | "on"
            | "ignoring"
            | "group_left"
            | "group_right"
    )
}

/// Prometheus' `model.ParseDuration` (units y w d h m s ms, descending,
/// each at most once) in milliseconds.
pub(crate) fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("not a valid duration string: {}", go_quote(s));
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(bad());
    }
    const UNITS: [(&str, i64); 7] = [
        ("y", 365 * 24 * 3_600_000),
        ("w", 7 * 24 * 3_600_000),
        ("d", 24 * 3_600_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let b = s.as_bytes();
    let mut i = 0;
    let mut next_unit = 0;
    let mut total: i64 = 0;
    while i < b.len() {
        let ds = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if ds == i {
            return Err(bad());
        }
        let n: i64 = s[ds..i].parse().map_err(|_| bad())?;
        let us = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &s[us..i];
        let Some(k) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(bad());
        };
        if k < next_unit {
            return Err(bad());
        }
        next_unit = k + 1;
        total = n
            .checked_mul(UNITS[k].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| "duration out of range".to_string())?;
    }
    Ok(total)
}
