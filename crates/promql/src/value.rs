//! Query results as returned to callers.

use std::fmt::Write as _;

use std::sync::Arc;

use stratus_model::{FloatHistogram, Labels};

/// One sample of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    /// Evaluation time (ms).
    pub t: i64,
    /// The float value (0 for a histogram sample).
    pub v: f64,
    /// The native histogram value, if this is a histogram sample.
    pub h: Option<Arc<FloatHistogram>>,
}

/// One series of a range vector (matrix).
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: Labels,
    /// `(timestamp ms, value)`, sorted by time.
    pub points: Vec<(i64, f64)>,
    /// `(timestamp ms, native histogram)`, sorted by time.
    pub histograms: Vec<(i64, Arc<FloatHistogram>)>,
}

/// The value of a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar { t: i64, v: f64 },
    String { t: i64, s: String },
    Vector(Vec<Sample>),
    Matrix(Vec<RangeSeries>),
}

/// A query's value plus its annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub value: Value,
    /// Rendered warnings, e.g. `PromQL warning: ...`.
    pub warnings: Vec<String>,
    /// Rendered infos, e.g. `PromQL info: ...`.
    pub infos: Vec<String>,
    /// Statistics, when the evaluation was asked for them.
    pub stats: Option<crate::stats::QueryStats>,
}

/// Formats a label set the way Prometheus' `Labels.String()` does:
/// `{__name__="x", a="b"}`.
pub fn labels_string(l: &Labels) -> String {
    let mut s = String::from("{");
    for (i, lb) in l.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{}={}", lb.name, go_quote(&lb.value));
    }
    s.push('}');
    s
}

/// Go's `strconv.Quote` for the printable subset we produce.
pub(crate) fn go_quote(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            '\r' => s.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(s, "\\x{:02x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// The populated buckets of a native histogram, lowest first, as the
/// Prometheus HTTP API lists them: `(boundary rule, lower, upper, count)`
/// where the rule is 0 for `(lower, upper]`, 1 for `[lower, upper)` and 3
/// for the closed zero bucket.
pub fn histogram_buckets(h: &FloatHistogram) -> Vec<(u8, f64, f64, f64)> {
    let custom = crate::histogram::is_custom(h);
    crate::histogram::buckets(h)
        .into_iter()
        .filter(|b| b.count != 0.0)
        .map(|b| {
            let rule = if custom || b.lower >= 0.0 && b.upper > 0.0 {
                0
            } else if b.upper <= 0.0 && b.lower < 0.0 {
                1
            } else {
                3
            };
            (rule, b.lower, b.upper, b.count)
        })
        .collect()
}
