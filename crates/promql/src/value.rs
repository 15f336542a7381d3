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
/// First of the private-use code points that stand for the raw bytes
/// 0x80..=0xff of a query string that are not valid UTF-8 (Go keeps such
/// bytes; a Rust `String` cannot).
const RAW_BYTE_BASE: u32 = 0x10_FF00;

/// Decodes query-string bytes, mapping each byte that is not part of a valid
/// UTF-8 sequence to a private-use stand-in (see [`raw_byte`]).
pub(crate) fn bytes_to_string(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for &b in chunk.invalid() {
            out.extend(char::from_u32(RAW_BYTE_BASE + u32::from(b)));
        }
    }
    out
}

/// The invalid raw byte a stand-in character represents, if it is one.
pub(crate) fn raw_byte(c: char) -> Option<u8> {
    let v = c as u32;
    (RAW_BYTE_BASE + 0x80..=RAW_BYTE_BASE + 0xff)
        .contains(&v)
        .then(|| (v - RAW_BYTE_BASE) as u8)
}

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
            c => match raw_byte(c) {
                Some(b) => {
                    let _ = write!(s, "\\x{b:02x}");
                }
                None => s.push(c),
            },
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

/// Go's `FloatHistogram.String()`: count, sum and the populated buckets,
/// lowest first, as `count_values` uses for a histogram's label value.
pub(crate) fn histogram_string(h: &FloatHistogram) -> String {
    use crate::aggregate::go_g;
    let mut s = format!("{{count:{}, sum:{}", go_g(h.count), go_g(h.sum));
    for (rule, lo, hi, c) in histogram_buckets(h) {
        let (open, close) = match rule {
            0 => ('(', ']'),
            1 => ('[', ')'),
            _ => ('[', ']'),
        };
        let _ = write!(s, ", {open}{},{}{close}:{}", go_g(lo), go_g(hi), go_g(c));
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_model::BucketSpan;

    #[test]
    fn histogram_string_is_go_format() {
        let span = |length| vec![BucketSpan { offset: 0, length }];
        let h = FloatHistogram {
            count: 20.0,
            sum: 10.0,
            zero_threshold: 0.001,
            zero_count: 2.0,
            positive_spans: span(2),
            positive_buckets: vec![1.0, 2.0],
            negative_spans: span(2),
            negative_buckets: vec![1.0, 2.0],
            ..Default::default()
        };
        assert_eq!(
            histogram_string(&h),
            "{count:20, sum:10, [-2,-1):2, [-1,-0.5):1, [-0.001,0.001]:2, (0.5,1]:1, (1,2]:2}"
        );
    }

    #[test]
    fn invalid_utf8_bytes_survive_quoting() {
        let s = bytes_to_string(b"a\xc5z\xe2\x82\xac");
        assert_eq!(go_quote(&s), "\"a\\xc5z\u{20ac}\"");
        assert!(!crate::aggregate::is_valid_label_name(&s));
        assert!(crate::aggregate::is_valid_label_name("a\u{20ac}"));
    }
}
