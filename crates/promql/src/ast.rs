//! The engine's own PromQL syntax tree.
//!
//! The evaluator works only on these types; [`crate::parser`] converts the
//! tree of whichever parser is in use into them, so the parser can be
//! swapped without touching evaluation. Times and durations are in
//! milliseconds; label matchers are already compiled `stratus_model`
//! matchers.

use std::fmt;

use stratus_model::Matcher;

/// The type an expression evaluates to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Scalar,
    String,
    Vector,
    Matrix,
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueType::Scalar => "scalar",
            ValueType::String => "string",
            ValueType::Vector => "instant vector",
            ValueType::Matrix => "range vector",
        })
    }
}

/// `@` modifier of a selector or subquery.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AtModifier {
    /// `@ start()`: the start of the top-level query.
    Start,
    /// `@ end()`: the end of the top-level query.
    End,
    /// `@ <timestamp>` in milliseconds.
    Timestamp(i64),
}

/// Where a node starts in the query text: 1-based line and column, as
/// Prometheus prints them after annotations (`(1:7)`); `(0, 0)` when
/// unknown (nodes built by the engine).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// An instant vector selector.
#[derive(Debug, Clone)]
pub struct VectorSelector {
    /// The metric name, if given outside the braces.
    pub name: Option<String>,
    /// All matchers, including one for the name.
    pub matchers: Vec<Matcher>,
    /// Offset in ms (negative shifts forward).
    pub offset: i64,
    pub at: Option<AtModifier>,
    /// An offset that depends on the query (`offset step()`), resolved
    /// into `offset` by the engine before evaluation.
    pub offset_expr: Option<DurationExpr>,
    /// The experimental `anchored` range modifier.
    pub anchored: bool,
    /// The experimental `smoothed` modifier.
    pub smoothed: bool,
    /// Start of the selector in the query.
    pub pos: Pos,
}

/// A duration expression that depends on the query (`step()`, `range()`).
///
/// Constant duration expressions are folded by the parser; only these are
/// kept, and the engine resolves them when a query starts. Values are in
/// seconds, as in Prometheus.
#[derive(Debug, Clone, PartialEq)]
pub enum DurationExpr {
    /// A number literal (seconds).
    Number(f64),
    /// A duration literal in milliseconds.
    Duration(i64),
    /// `step()`: the query step.
    Step,
    /// `range()`: the query range (end - start).
    Range,
    Neg(Box<DurationExpr>),
    Paren(Box<DurationExpr>),
    /// `+ - * / % ^` of two durations.
    Binary(BinOp, Box<DurationExpr>, Box<DurationExpr>),
    MinOf(Box<DurationExpr>, Box<DurationExpr>),
    MaxOf(Box<DurationExpr>, Box<DurationExpr>),
}

impl DurationExpr {
    /// Whether the value depends on the query's step or range.
    pub fn is_constant(&self) -> bool {
        match self {
            DurationExpr::Number(_) | DurationExpr::Duration(_) => true,
            DurationExpr::Step | DurationExpr::Range => false,
            DurationExpr::Neg(e) | DurationExpr::Paren(e) => e.is_constant(),
            DurationExpr::Binary(_, a, b)
            | DurationExpr::MinOf(a, b)
            | DurationExpr::MaxOf(a, b) => a.is_constant() && b.is_constant(),
        }
    }

    /// The value in seconds for a query with `step_ms` and `range_ms`.
    pub fn eval_seconds(&self, step_ms: i64, range_ms: i64) -> Result<f64, String> {
        Ok(match self {
            DurationExpr::Number(v) => *v,
            DurationExpr::Duration(ms) => *ms as f64 / 1000.0,
            DurationExpr::Step => step_ms as f64 / 1000.0,
            DurationExpr::Range => range_ms as f64 / 1000.0,
            DurationExpr::Neg(e) => -e.eval_seconds(step_ms, range_ms)?,
            DurationExpr::Paren(e) => e.eval_seconds(step_ms, range_ms)?,
            DurationExpr::MinOf(a, b) => a
                .eval_seconds(step_ms, range_ms)?
                .min(b.eval_seconds(step_ms, range_ms)?),
            DurationExpr::MaxOf(a, b) => a
                .eval_seconds(step_ms, range_ms)?
                .max(b.eval_seconds(step_ms, range_ms)?),
            DurationExpr::Binary(op, a, b) => {
                let x = a.eval_seconds(step_ms, range_ms)?;
                let y = b.eval_seconds(step_ms, range_ms)?;
                match op {
                    BinOp::Add => x + y,
                    BinOp::Sub => x - y,
                    BinOp::Mul => x * y,
                    BinOp::Div if y == 0.0 => return Err("division by zero".into()),
                    BinOp::Div => x / y,
                    BinOp::Mod if y == 0.0 => return Err("modulo by zero".into()),
                    BinOp::Mod => x % y,
                    BinOp::Pow => x.powf(y),
                    o => {
                        return Err(format!(
                            "unexpected operator {} in duration expression",
                            o.as_str()
                        ));
                    }
                }
            }
        })
    }

    /// The value in whole milliseconds; an error when it is not finite or
    /// out of range.
    pub fn eval_ms(&self, step_ms: i64, range_ms: i64) -> Result<i64, String> {
        let s = self.eval_seconds(step_ms, range_ms)?;
        let ms = (s * 1000.0).round();
        if !ms.is_finite() || ms.abs() >= 9.2e18 {
            return Err(format!("duration out of range: {s}"));
        }
        Ok(ms as i64)
    }
}

/// A subquery `expr[range:step]`.
#[derive(Debug, Clone)]
pub struct Subquery {
    pub expr: Box<Expr>,
    pub range: i64,
    /// `None` means the engine's default subquery step.
    pub step: Option<i64>,
    pub offset: i64,
    pub at: Option<AtModifier>,
    /// Query-dependent range, step and offset (see [`DurationExpr`]).
    pub range_expr: Option<DurationExpr>,
    pub step_expr: Option<DurationExpr>,
    pub offset_expr: Option<DurationExpr>,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eql,
    Neq,
    Gtr,
    Lss,
    Gte,
    Lte,
    And,
    Or,
    Unless,
    /// `</`: trims native histogram buckets above a value (experimental).
    TrimUpper,
    /// `>/`: trims native histogram buckets below a value (experimental).
    TrimLower,
}

impl BinOp {
    /// `==`, `!=`, `>`, `<`, `>=`, `<=`.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eql | BinOp::Neq | BinOp::Gtr | BinOp::Lss | BinOp::Gte | BinOp::Lte
        )
    }

    /// `and`, `or`, `unless`.
    pub fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }

    /// The operator as written in PromQL.
    pub fn as_str(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Pow => "^",
            BinOp::Atan2 => "atan2",
            BinOp::Eql => "==",
            BinOp::Neq => "!=",
            BinOp::Gtr => ">",
            BinOp::Lss => "<",
            BinOp::Gte => ">=",
            BinOp::Lte => "<=",
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Unless => "unless",
            BinOp::TrimUpper => "</",
            BinOp::TrimLower => ">/",
        }
    }
}

/// How the two sides of a vector/vector operation are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cardinality {
    OneToOne,
    ManyToOne,
    OneToMany,
    ManyToMany,
}

/// Vector matching modifiers of a binary expression.
#[derive(Debug, Clone)]
pub struct VectorMatching {
    pub card: Cardinality,
    /// `on(...)` when true, `ignoring(...)` (or nothing) when false.
    pub on: bool,
    pub labels: Vec<String>,
    /// Extra labels of `group_left(...)`/`group_right(...)`.
    pub include: Vec<String>,
    /// `fill_left(v)` / `fill(v)`: value for a missing left side.
    pub fill_lhs: Option<f64>,
    /// `fill_right(v)` / `fill(v)`: value for a missing right side.
    pub fill_rhs: Option<f64>,
}

impl Default for VectorMatching {
    fn default() -> Self {
        Self {
            card: Cardinality::OneToOne,
            on: false,
            labels: Vec::new(),
            include: Vec::new(),
            fill_lhs: None,
            fill_rhs: None,
        }
    }
}

/// A binary expression.
#[derive(Debug, Clone)]
pub struct Binary {
    pub op: BinOp,
    pub lhs: Box<Expr>,
    pub rhs: Box<Expr>,
    /// The `bool` modifier of a comparison.
    pub return_bool: bool,
    pub matching: VectorMatching,
    /// Start of the expression (its left operand) in the query.
    pub pos: Pos,
}

/// Aggregation operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggOp {
    Sum,
    Avg,
    Count,
    Min,
    Max,
    Group,
    Stddev,
    Stdvar,
    TopK,
    BottomK,
    CountValues,
    Quantile,
    LimitK,
    LimitRatio,
}

impl AggOp {
    /// The operator's name.
    pub fn as_str(self) -> &'static str {
        match self {
            AggOp::Sum => "sum",
            AggOp::Avg => "avg",
            AggOp::Count => "count",
            AggOp::Min => "min",
            AggOp::Max => "max",
            AggOp::Group => "group",
            AggOp::Stddev => "stddev",
            AggOp::Stdvar => "stdvar",
            AggOp::TopK => "topk",
            AggOp::BottomK => "bottomk",
            AggOp::CountValues => "count_values",
            AggOp::Quantile => "quantile",
            AggOp::LimitK => "limitk",
            AggOp::LimitRatio => "limit_ratio",
        }
    }
}

/// An aggregation `op by (...) (param, expr)`.
#[derive(Debug, Clone)]
pub struct Aggregate {
    pub op: AggOp,
    pub expr: Box<Expr>,
    pub param: Option<Box<Expr>>,
    /// Grouping labels.
    pub grouping: Vec<String>,
    /// `without` instead of `by`.
    pub without: bool,
    /// Start of the aggregated expression and of the parameter.
    pub expr_pos: Pos,
    pub param_pos: Pos,
}

/// A function call.
#[derive(Debug, Clone)]
pub struct Call {
    pub func: String,
    pub args: Vec<Expr>,
    /// Start of each argument in the query.
    pub arg_pos: Vec<Pos>,
}

/// A PromQL expression.
#[derive(Debug, Clone)]
pub enum Expr {
    Number(f64),
    String(String),
    VectorSelector(VectorSelector),
    /// `selector[range]`.
    MatrixSelector {
        vs: VectorSelector,
        range: i64,
        /// A query-dependent range (see [`DurationExpr`]).
        range_expr: Option<DurationExpr>,
    },
    Subquery(Subquery),
    Paren(Box<Expr>),
    /// Unary minus (unary plus is dropped by the parser).
    Neg(Box<Expr>),
    Binary(Binary),
    Aggregate(Aggregate),
    Call(Call),
}

impl Expr {
    /// The static type of the expression.
    pub fn value_type(&self) -> ValueType {
        match self {
            Expr::Number(_) => ValueType::Scalar,
            Expr::String(_) => ValueType::String,
            Expr::VectorSelector(_) | Expr::Aggregate(_) => ValueType::Vector,
            Expr::MatrixSelector { .. } | Expr::Subquery(_) => ValueType::Matrix,
            Expr::Paren(e) | Expr::Neg(e) => e.value_type(),
            Expr::Binary(b) => {
                if b.lhs.value_type() == ValueType::Scalar
                    && b.rhs.value_type() == ValueType::Scalar
                {
                    ValueType::Scalar
                } else {
                    ValueType::Vector
                }
            }
            Expr::Call(c) => crate::functions::return_type(&c.func),
        }
    }

    /// Calls `f` on this node and every descendant (pre-order).
    pub fn walk(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Number(_) | Expr::String(_) | Expr::VectorSelector(_) => {}
            Expr::MatrixSelector { .. } => {}
            Expr::Subquery(s) => s.expr.walk(f),
            Expr::Paren(e) | Expr::Neg(e) => e.walk(f),
            Expr::Binary(b) => {
                b.lhs.walk(f);
                b.rhs.walk(f);
            }
            Expr::Aggregate(a) => {
                if let Some(p) = &a.param {
                    p.walk(f);
                }
                a.expr.walk(f);
            }
            Expr::Call(c) => c.args.iter().for_each(|a| a.walk(f)),
        }
    }

    /// Sets `@ t` on every selector and subquery that has none, never
    /// descending into subqueries. Used by the
    /// test runner's step-invariance check.
    pub fn set_at_everywhere(&mut self, t: i64) {
        match self {
            Expr::Number(_) | Expr::String(_) => {}
            Expr::VectorSelector(vs) | Expr::MatrixSelector { vs, .. } => {
                if vs.at.is_none() {
                    vs.at = Some(AtModifier::Timestamp(t));
                }
            }
            Expr::Subquery(s) => {
                // The inside of a subquery is left alone: it is evaluated
                // relative to the subquery's own (now fixed) time.
                if s.at.is_none() {
                    s.at = Some(AtModifier::Timestamp(t));
                }
            }
            Expr::Paren(e) | Expr::Neg(e) => e.set_at_everywhere(t),
            Expr::Binary(b) => {
                b.lhs.set_at_everywhere(t);
                b.rhs.set_at_everywhere(t);
            }
            Expr::Aggregate(a) => {
                if let Some(p) = &mut a.param {
                    p.set_at_everywhere(t);
                }
                a.expr.set_at_everywhere(t);
            }
            Expr::Call(c) => c.args.iter_mut().for_each(|a| a.set_at_everywhere(t)),
        }
    }

    /// Whether any function call in the tree has one of `names`.
    pub fn calls_any(&self, names: &[&str]) -> bool {
        let mut found = false;
        self.walk(&mut |e| {
            if let Expr::Call(c) = e {
                if names.contains(&c.func.as_str()) {
                    found = true;
                }
            }
        });
        found
    }
}
