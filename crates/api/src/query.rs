//! The PromQL endpoints of the Prometheus HTTP API v1: `/api/v1/query`
//! (instant) and `/api/v1/query_range` (range), GET or POST form.
//!
//! Parameters are checked on the async worker (bad ones are `bad_data`
//! 400s before any storage is touched, with Prometheus' messages); the
//! expression is parsed there too. Evaluation runs on the blocking pool,
//! at most `max_concurrent_queries` at once (server-wide, and per tenant
//! from its limits), under a timeout (the `timeout` parameter, capped by
//! the tenant's `query_timeout`, else the server's); the engine gets the
//! same deadline so an abandoned query stops by itself. A query over its
//! tenant's `max_concurrent_queries` waits for a slot, as Prometheus'
//! query queue does (dashboards fire many at once), for at most its
//! timeout; then, like a query running past its timeout, it gets
//! Prometheus' `{"status":"error","errorType":"timeout",...}` with 503
//! (the slot case naming the limit to raise). A tenant without data is queried as an empty store,
//! so `1+1` (Grafana's health check) works before anything was written.
//!
//! The response JSON is written by hand rather than through serde, because
//! Prometheus has exact textual rules serde cannot express, and two of
//! them (checked byte for byte against a running Prometheus):
//!
//! - samples of vectors and matrices go through Prometheus' jsoniter codec
//!   (`web/api/v1/json_codec.go` → `util/jsonutil`): the timestamp is
//!   written from integer milliseconds as seconds with a three-digit
//!   fraction when not whole (`1435781451.781`, `1435781451`, `1.500`),
//!   the value as a string in Go's shortest formatting, switching to
//!   exponent form below 1e-6 and from 1e21 on ([`format_value`]);
//! - scalars and strings use their own `MarshalJSON` (`promql/value.go`):
//!   the timestamp is the float `t / 1000` in shortest form (`1.5`), a
//!   scalar's value is always in plain notation (`'f'`, so `1e21` is
//!   `"1000000000000000000000"`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use stratus_model::{Labels, Matcher};
use stratus_promql::ast::{Expr, ValueType};
use stratus_promql::{
    Engine, EngineOptions, PromqlError, QueryResult, QueryStats, RangeSeries, StatsMode, Value,
};
use stratus_tsdb::{Queryable, SelectHints, Series};

use crate::read::{ApiError, Params, parse_limit, parse_time};
use crate::server::AppState;

/// Prometheus' limit of points per series in a range query.
const MAX_POINTS: i128 = 11_000;

/// The shortest decimal digits that read back as the finite `a > 0`,
/// written to `d`: returns how many and the decimal exponent of the first
/// (`a = d.ddd × 10^exp`).
///
/// The digits are Ryū's (the `ryu` crate), which are Go's: Go's
/// `strconv` has used Ryū for shortest formatting since Go 1.17, and both
/// choose among equally short candidates the one nearest the exact value,
/// an exact halfway tie going to the even digit (`1e15+0.25` is
/// `…0.2`; Rust's std would write `…0.3`). Only Ryū's notation differs
/// (`1e21`, `1.5e-7`, `0.001`, `100.0`), so its text is taken apart here.
fn shortest_digits(a: f64, d: &mut [u8; 24]) -> (usize, i32) {
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(a).as_bytes();
    let mut n = 0usize;
    // Digits before the point, leading zeros, the exponent after `e`.
    let (mut point, mut lead, mut exp10) = (0i32, 0i32, 0i32);
    let mut seen_point = false;
    for (i, &b) in s.iter().enumerate() {
        match b {
            b'0'..=b'9' => {
                if !seen_point {
                    point += 1;
                }
                if n == 0 && b == b'0' {
                    lead += 1;
                } else if let Some(slot) = d.get_mut(n) {
                    *slot = b;
                    n += 1;
                }
            }
            b'.' => seen_point = true,
            b'e' | b'E' => {
                let rest = s.get(i + 1..).unwrap_or(&[]);
                let (neg, rest) = match rest.split_first() {
                    Some((b'-', r)) => (true, r),
                    Some((b'+', r)) => (false, r),
                    _ => (false, rest),
                };
                for &c in rest {
                    exp10 = exp10 * 10 + i32::from(c.wrapping_sub(b'0') % 10);
                }
                if neg {
                    exp10 = -exp10;
                }
                break;
            }
            _ => {}
        }
    }
    while n > 1 && d.get(n - 1) == Some(&b'0') {
        n -= 1;
    }
    (n, point - 1 - lead + exp10)
}

/// Appends ASCII bytes.
fn push_ascii(out: &mut String, b: &[u8]) {
    out.push_str(std::str::from_utf8(b).unwrap_or_default());
}

/// Appends `n` zeros.
fn push_zeros(out: &mut String, mut n: usize) {
    const ZEROS: &str = "00000000000000000000000000000000";
    while n > 0 {
        let k = n.min(ZEROS.len());
        out.push_str(&ZEROS[..k]);
        n -= k;
    }
}

/// Appends Go's `strconv.FormatFloat(v, fmt, -1, 64)` for `fmt` `'f'`
/// (plain) or `'e'` (exponent), including `NaN`, `+Inf`, `-Inf` and `-0`,
/// without allocating.
fn write_go_float(out: &mut String, v: f64, exponent: bool) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    if v.is_sign_negative() {
        out.push('-');
    }
    if v == 0.0 {
        out.push_str(if exponent { "0e+00" } else { "0" });
        return;
    }
    let mut d = [0u8; 24];
    let (n, exp) = shortest_digits(v.abs(), &mut d);
    let digits = d.get(..n).unwrap_or(&[]);
    if exponent {
        push_ascii(out, digits.get(..1).unwrap_or(b"0"));
        if n > 1 {
            out.push('.');
            push_ascii(out, digits.get(1..).unwrap_or(&[]));
        }
        out.push_str(if exp < 0 { "e-" } else { "e+" });
        let e = exp.unsigned_abs();
        if e < 10 {
            out.push('0');
        }
        out.push_str(itoa::Buffer::new().format(e));
    } else if exp >= 0 {
        let int_len = exp.unsigned_abs() as usize + 1;
        if n <= int_len {
            push_ascii(out, digits);
            push_zeros(out, int_len - n);
        } else {
            push_ascii(out, digits.get(..int_len).unwrap_or(&[]));
            out.push('.');
            push_ascii(out, digits.get(int_len..).unwrap_or(&[]));
        }
    } else {
        out.push_str("0.");
        push_zeros(out, exp.unsigned_abs() as usize - 1);
        push_ascii(out, digits);
    }
}

/// [`write_go_float`] into a new string.
fn go_format_float(v: f64, exponent: bool) -> String {
    let mut out = String::new();
    write_go_float(&mut out, v, exponent);
    out
}

/// True when Prometheus' codec writes `v` in exponent form: `|v| < 1e-6`
/// or `|v| >= 1e21`, zero, NaN and infinities aside.
fn uses_exponent(v: f64) -> bool {
    let abs = v.abs();
    abs != 0.0 && abs.is_finite() && !(1e-6..1e21).contains(&abs)
}

/// Formats a sample value as Prometheus' JSON codec does
/// (`util/jsonutil.MarshalFloat`): Go's `strconv.FormatFloat` with the
/// shortest round-trip digits, in plain notation (`'f'`) unless
/// `|v| < 1e-6` or `|v| >= 1e21` (then `'e'`, with a sign and at least two
/// exponent digits: `1e+21`, `1e-07`). Zero is always plain (`0`, `-0`);
/// `NaN`, `+Inf` and `-Inf` are spelled as Go spells them.
pub fn format_value(v: f64) -> String {
    go_format_float(v, uses_exponent(v))
}

/// Appends [`format_value`]`(v)` to `out`, without allocating.
pub(crate) fn write_value(out: &mut String, v: f64) {
    write_go_float(out, v, uses_exponent(v));
}

/// Formats a scalar's value as Prometheus' `Scalar.MarshalJSON` does: Go's
/// `strconv.FormatFloat(v, 'f', -1, 64)`, shortest round-trip digits in
/// plain notation whatever the magnitude.
#[cfg(test)]
pub(crate) fn format_plain(v: f64) -> String {
    go_format_float(v, false)
}

/// Writes a millisecond timestamp as Go's `encoding/json` writes the
/// float `t / 1000` (scalars and strings): shortest digits, plain
/// notation (the exponent form Go would use below 1e-6 or from 1e21 on
/// cannot occur for millisecond timestamps other than 0).
pub(crate) fn write_seconds_float(out: &mut String, ms: i64) {
    write_go_float(out, ms as f64 / 1000.0, false);
}

/// Writes a millisecond timestamp as seconds the way Prometheus' codec
/// does (`util/jsonutil.MarshalTimestamp`): the whole seconds, then, if the
/// millisecond part is not zero, a dot and exactly three digits.
pub fn write_timestamp(out: &mut String, ms: i64) {
    if ms < 0 {
        out.push('-');
    }
    let a = ms.unsigned_abs();
    out.push_str(itoa::Buffer::new().format(a / 1000));
    let frac = a % 1000;
    if frac != 0 {
        // `frac < 1000`: three digits, so the casts cannot truncate.
        let digit = |x: u64| char::from(b'0' + (x % 10) as u8);
        out.push('.');
        out.push(digit(frac / 100));
        out.push(digit(frac / 10));
        out.push(digit(frac));
    }
}

/// Writes a JSON string with Go's `encoding/json` escaping (HTML-safe:
/// `<`, `>`, `&`, U+2028 and U+2029 as `\u` escapes).
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

pub(crate) fn write_labels(out: &mut String, l: &Labels) {
    out.push('{');
    for (i, lb) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, &lb.name);
        out.push(':');
        write_str(out, &lb.value);
    }
    out.push('}');
}

/// `[<ts>,"<v>"]`
fn write_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    write_timestamp(out, t);
    out.push_str(",\"");
    write_value(out, v);
    out.push_str("\"]");
}

/// `[<ts>,{"count":"..","sum":"..","buckets":[[rule,"lo","hi","n"],..]}]`
fn write_hist_point(out: &mut String, t: i64, h: &stratus_model::FloatHistogram) {
    out.push('[');
    write_timestamp(out, t);
    out.push_str(",{\"count\":\"");
    write_value(out, h.count);
    out.push_str("\",\"sum\":\"");
    write_value(out, h.sum);
    out.push('"');
    let buckets = stratus_promql::histogram_buckets(h);
    if !buckets.is_empty() {
        out.push_str(",\"buckets\":[");
        for (i, (rule, lo, hi, n)) in buckets.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "[{rule},\"{}\",\"{}\",\"{}\"]",
                format_value(lo),
                format_value(hi),
                format_value(n)
            );
        }
        out.push(']');
    }
    out.push_str("}]");
}

/// Points (a histogram counted as 8) from which a matrix is written on
/// several threads.
const PAR_ENCODE_POINTS: usize = 20_000;

/// Writes a matrix; a large one in contiguous chunks of series on up to
/// `threads` threads, joined in order (the same text as on one thread).
fn write_matrix(out: &mut String, m: &[RangeSeries], threads: usize) {
    let weight = |s: &RangeSeries| 1 + s.points.len() + 8 * s.histograms.len();
    let total: usize = m.iter().map(weight).sum();
    let threads = threads.min(m.len() / 2);
    if threads <= 1 || total < PAR_ENCODE_POINTS {
        write_series_list(out, m);
        return;
    }
    // Cut where the running weight passes each thread's share.
    let mut cuts = vec![0usize];
    let mut acc = 0usize;
    for (i, s) in m.iter().enumerate() {
        acc += weight(s);
        if acc.saturating_mul(threads) >= total.saturating_mul(cuts.len())
            && cuts.len() < threads
            && i + 1 < m.len()
        {
            cuts.push(i + 1);
        }
    }
    cuts.push(m.len());
    let parts: Vec<String> = std::thread::scope(|sc| {
        let handles: Vec<_> = cuts
            .windows(2)
            .skip(1)
            .map(|c| {
                let chunk = m.get(c[0]..c[1]).unwrap_or(&[]);
                sc.spawn(move || {
                    let mut o = String::with_capacity(
                        chunk
                            .iter()
                            .map(|s| 64 + 40 * weight(s))
                            .fold(0usize, usize::saturating_add),
                    );
                    write_series_list_items(&mut o, chunk);
                    o
                })
            })
            .collect();
        let mut first = String::new();
        let head = m.get(..cuts.get(1).copied().unwrap_or(0)).unwrap_or(&[]);
        write_series_list_items(&mut first, head);
        let mut parts = vec![first];
        for h in handles {
            match h.join() {
                Ok(p) => parts.push(p),
                Err(e) => std::panic::resume_unwind(e),
            }
        }
        parts
    });
    out.push('[');
    let mut first = true;
    for p in parts.iter().filter(|p| !p.is_empty()) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(p);
    }
    out.push(']');
}

/// `[` series `,` ... `]`
fn write_series_list(out: &mut String, m: &[RangeSeries]) {
    out.push('[');
    write_series_list_items(out, m);
    out.push(']');
}

/// The series of a matrix, comma-separated.
fn write_series_list_items(out: &mut String, m: &[RangeSeries]) {
    for (i, s) in m.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"metric\":");
        write_labels(out, &s.labels);
        if !s.points.is_empty() {
            out.push_str(",\"values\":[");
            for (j, &(t, v)) in s.points.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                write_point(out, t, v);
            }
            out.push(']');
        }
        if !s.histograms.is_empty() {
            out.push_str(",\"histograms\":[");
            for (j, (t, h)) in s.histograms.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                write_hist_point(out, *t, h);
            }
            out.push(']');
        }
        out.push('}');
    }
}

/// Writes `,"key":[...]` (JSON strings) unless `list` is empty: the
/// `warnings`/`infos` members of Prometheus' response envelope.
pub fn write_string_list(out: &mut String, key: &str, list: &[String]) {
    if list.is_empty() {
        return;
    }
    let _ = write!(out, ",\"{key}\":[");
    for (i, w) in list.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, w);
    }
    out.push(']');
}

/// About the size of a result's JSON (a little over for float points), so
/// that the response is written into one allocation instead of growing
/// (and copying) a multi-megabyte string a dozen times.
fn encoded_size_hint(v: &Value) -> usize {
    const POINT: usize = 40;
    let series = |labels: &stratus_model::Labels| 32 + 48 * labels.len();
    let n = match v {
        Value::Matrix(m) => m
            .iter()
            .map(|s| series(&s.labels) + POINT * s.points.len() + 256 * s.histograms.len())
            .fold(0usize, usize::saturating_add),
        Value::Vector(v) => v
            .iter()
            .map(|s| series(&s.labels) + POINT + if s.h.is_some() { 256 } else { 0 })
            .fold(0usize, usize::saturating_add),
        _ => 0,
    };
    n.saturating_add(256).min(1 << 30)
}

/// The success envelope of a query result, as Prometheus writes it.
#[cfg(test)]
pub(crate) fn encode_result(r: &QueryResult) -> String {
    encode_result_on(r, 1)
}

/// [`encode_result`] writing a large matrix on up to `threads` threads.
pub(crate) fn encode_result_on(r: &QueryResult, threads: usize) -> String {
    let mut out = String::with_capacity(encoded_size_hint(&r.value));
    out.push_str("{\"status\":\"success\",\"data\":{\"resultType\":");
    match &r.value {
        Value::Scalar { t, v } => {
            out.push_str("\"scalar\",\"result\":[");
            write_seconds_float(&mut out, *t);
            out.push_str(",\"");
            write_go_float(&mut out, *v, false);
            out.push_str("\"]");
        }
        Value::String { t, s } => {
            out.push_str("\"string\",\"result\":[");
            write_seconds_float(&mut out, *t);
            out.push(',');
            write_str(&mut out, s);
            out.push(']');
        }
        Value::Vector(samples) => {
            out.push_str("\"vector\",\"result\":[");
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(&mut out, &s.labels);
                match &s.h {
                    Some(h) => {
                        out.push_str(",\"histogram\":");
                        write_hist_point(&mut out, s.t, h);
                    }
                    None => {
                        out.push_str(",\"value\":");
                        write_point(&mut out, s.t, s.v);
                    }
                }
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(m) => {
            out.push_str("\"matrix\",\"result\":");
            write_matrix(&mut out, m, threads);
        }
    }
    if let Some(st) = &r.stats {
        write_stats(&mut out, st);
    }
    out.push('}');
    write_string_list(&mut out, "warnings", &r.warnings);
    write_string_list(&mut out, "infos", &r.infos);
    out.push('}');
    out
}

/// Go's `encoding/json` spelling of a float64: shortest digits, plain
/// unless below 1e-6 or from 1e21 on, and then without the exponent's
/// leading zero (`4.2e-7`).
fn write_json_float(out: &mut String, v: f64) {
    if uses_exponent(v) {
        let s = go_format_float(v, true);
        match s.find("e-0") {
            Some(i) => {
                out.push_str(&s[..i + 2]);
                out.push_str(&s[i + 3..]);
            }
            None => out.push_str(&s),
        }
    } else {
        write_go_float(out, v, false);
    }
}

/// The `stats` member of a query's `data`, as Prometheus'
/// `util/stats.BuiltinStats` marshals it: timings in seconds, then the
/// samples (per step first, when asked for with `stats=all`).
fn write_stats(out: &mut String, st: &QueryStats) {
    let t = &st.timings;
    out.push_str(",\"stats\":{\"timings\":{");
    for (i, (k, d)) in [
        ("evalTotalTime", t.eval_total),
        ("resultSortTime", t.result_sort),
        ("queryPreparationTime", t.query_preparation),
        ("innerEvalTime", t.inner_eval),
        ("execQueueTime", t.exec_queue),
        ("execTotalTime", t.exec_total),
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "\"{k}\":");
        write_json_float(out, d.as_secs_f64());
    }
    out.push_str("},\"samples\":{");
    if !st.per_step.is_empty() {
        out.push_str("\"totalQueryableSamplesPerStep\":[");
        for (i, &(t, n)) in st.per_step.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('[');
            write_json_float(out, t as f64 / 1000.0);
            let _ = write!(out, ",{n}]");
        }
        out.push_str("],");
    }
    let _ = write!(
        out,
        "\"totalQueryableSamples\":{},\"peakSamples\":{}}}}}",
        st.total_samples, st.peak_samples
    );
}

/// Parses a duration parameter as Prometheus' API does: float seconds
/// (`30`, `0.5`) or a Prometheus duration (`5m`, `1h30m`). Returns
/// nanoseconds.
pub fn parse_duration(s: &str) -> Result<i128, String> {
    if let Ok(f) = s.parse::<f64>() {
        let ns = f * 1e9;
        if !ns.is_finite() || ns >= i64::MAX as f64 || ns <= i64::MIN as f64 {
            return Err(format!(
                "cannot parse {s:?} to a valid duration. It overflows int64"
            ));
        }
        return Ok(ns as i128);
    }
    if !s.starts_with('-')
        && let Ok(ms) = stratus_promql::promqltest::parse_duration(s)
    {
        return Ok(i128::from(ms) * 1_000_000);
    }
    Err(format!("cannot parse {s:?} to a valid duration"))
}

fn invalid(param: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_data(format!("invalid parameter {param:?}: {e}"))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ns_to_duration(ns: i128) -> Duration {
    Duration::from_nanos(u64::try_from(ns.max(0)).unwrap_or(u64::MAX))
}

/// Settings shared by both endpoints.
struct Common {
    expr: Expr,
    timeout: Duration,
    lookback: Option<Duration>,
    limit: usize,
    /// `stats`: any value asks for statistics, `all` also per step.
    stats: StatsMode,
}

/// The `timeout` parameter is capped by the tenant's `query_timeout` in
/// [`run`] (absent = that limit).
fn parse_common(p: &Params) -> Result<Common, ApiError> {
    let timeout = match p.get("timeout") {
        None => Duration::MAX,
        Some(s) => {
            let ns = parse_duration(s).map_err(|e| invalid("timeout", e))?;
            if ns <= 0 {
                return Err(invalid("timeout", "timeout must be positive"));
            }
            ns_to_duration(ns)
        }
    };
    let lookback = match p.get("lookback_delta") {
        None => None,
        Some(s) => {
            let ns = parse_duration(s).map_err(|e| {
                ApiError::bad_data(format!("error parsing lookback delta duration: {e}"))
            })?;
            // As in Prometheus, zero or negative means the default.
            (ns > 0).then(|| ns_to_duration(ns))
        }
    };
    let limit = parse_limit(p)?;
    let stats = match p.get("stats") {
        None | Some("") => StatsMode::Off,
        Some("all") => StatsMode::PerStep,
        Some(_) => StatsMode::Summary,
    };
    let text = p.get("query").unwrap_or("");
    if text.trim().is_empty() {
        return Err(invalid("query", "no expression found in input"));
    }
    let expr = stratus_promql::parse(text).map_err(|e| invalid("query", e))?;
    Ok(Common {
        expr,
        timeout,
        lookback,
        limit,
        stats,
    })
}

/// A tenant with no data: every read is empty.
#[derive(Debug)]
struct EmptyStore;

impl Queryable for EmptyStore {
    fn select(&self, _: &[Matcher], _: &SelectHints) -> stratus_tsdb::Result<Vec<Series>> {
        Ok(Vec::new())
    }

    fn label_names(&self, _: &[Matcher], _: i64, _: i64) -> stratus_tsdb::Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn label_values(
        &self,
        _: &str,
        _: &[Matcher],
        _: i64,
        _: i64,
    ) -> stratus_tsdb::Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// What to evaluate.
enum Eval {
    Instant(i64),
    Range { start: i64, end: i64, step: i64 },
}

/// Maps an engine error to Prometheus' error type.
fn engine_error(e: PromqlError) -> ApiError {
    let msg = e.to_string();
    match e {
        PromqlError::Parse { .. } | PromqlError::BadRangeQueryType { .. } => {
            ApiError::bad_data(msg)
        }
        PromqlError::Storage { .. } => ApiError::internal(msg),
        PromqlError::Timeout => ApiError::timeout(msg),
        _ => ApiError::execution(msg),
    }
}

/// Cuts vectors and matrices to `limit` series (0 = no limit), with
/// Prometheus' warning.
fn apply_limit(r: &mut QueryResult, limit: usize) {
    if limit == 0 {
        return;
    }
    let cut = match &mut r.value {
        Value::Vector(v) if v.len() > limit => {
            v.truncate(limit);
            true
        }
        Value::Matrix(m) if m.len() > limit => {
            m.truncate(limit);
            true
        }
        _ => false,
    };
    if cut {
        r.warnings.push("results truncated due to limit".into());
    }
}

/// Threads one query may use (`query_parallelism`, 0 = the engine's
/// default).
fn query_threads(cfg: &crate::config::ServerConfig) -> usize {
    match cfg.query_parallelism {
        0 => EngineOptions::default().parallelism,
        n => n,
    }
}

/// Resolves the tenant, evaluates on the blocking pool under the
/// timeout, and encodes the answer.
async fn run(st: &AppState, headers: &HeaderMap, c: Common, what: Eval) -> Response {
    let tenant = match st.tenant(headers) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let store: Arc<dyn Queryable> = match st.queryable_for_read(&tenant).await {
        Ok(Some(q)) => q,
        Ok(None) => Arc::new(EmptyStore),
        Err(e) => {
            return ApiError::internal(format!("opening tenant database: {e}")).into_response();
        }
    };
    let limits = st.effective_limits(&tenant);
    st.metrics
        .tenant_queries
        .get_or_create(&crate::metrics::Metrics::tenant(tenant.as_str()))
        .inc();
    let tenant_timeout = limits
        .query_timeout
        .filter(|d| !d.is_zero())
        .unwrap_or(st.cfg.query_timeout);
    let timeout = c.timeout.min(tenant_timeout);
    let as_usize = |v: Option<u64>| {
        stratus_tenancy::limit_of(v)
            .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
    };
    let engine = Engine::new(EngineOptions {
        lookback_delta: c.lookback.unwrap_or(st.cfg.lookback_delta),
        max_samples: as_usize(limits.max_samples_per_query),
        max_series: stratus_tenancy::limit_of(limits.max_series_per_query)
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        timeout,
        default_subquery_step: st.cfg.evaluation_interval,
        enable_experimental: st.cfg.promql_experimental,
        use_start_timestamps: st.cfg.promql_use_start_timestamps,
        parallelism: query_threads(&st.cfg),
    });
    let expr = c.expr;
    let slots = st.query_slots.clone();
    // Per-tenant concurrency: a query over max_concurrent_queries waits
    // for a slot (within its timeout, then 503) rather than failing at
    // once with 429, because dashboards fire many queries together and
    // Prometheus' own concurrency limit also queues.
    let max_conc = stratus_tenancy::limit_of(limits.max_concurrent_queries);
    let tenant_slots = max_conc.and_then(|n| st.tenant_query_slots.get(&tenant, n));
    let got_tenant_slot = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let got = got_tenant_slot.clone();
    let mode = c.stats;
    let task = async move {
        let queued = std::time::Instant::now();
        // The wait for a tenant slot is bounded by the query's timeout.
        let tenant_slot = match tenant_slots {
            Some(sem) => match tokio::time::timeout(timeout, sem.acquire_owned()).await {
                Ok(Ok(p)) => Some(p),
                Ok(Err(_)) | Err(_) => return Ok(Err(PromqlError::Timeout)),
            },
            None => None,
        };
        got.store(true, std::sync::atomic::Ordering::Relaxed);
        // The slot moves into the blocking task: a query abandoned at its
        // timeout keeps it until the engine's own deadline stops it.
        let Ok(slot) = slots.acquire_owned().await else {
            return Ok(Err(PromqlError::Timeout));
        };
        let queue_time = queued.elapsed();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let _tenant_slot = tenant_slot;
            let q: &dyn Queryable = &*store;
            let mut r = match what {
                Eval::Instant(t) => engine.instant_expr_stats(q, &expr, t, mode),
                Eval::Range { start, end, step } => {
                    engine.range_expr_stats(q, &expr, start, end, step, mode)
                }
            };
            if let Ok(QueryResult {
                stats: Some(st), ..
            }) = &mut r
            {
                st.timings.exec_queue = queue_time;
                st.timings.exec_total = queue_time.saturating_add(st.timings.eval_total);
            }
            r
        })
        .await
    };
    // A little slack so the engine's own deadline usually answers first;
    // this outer one covers waiting for a slot and a query stuck between
    // deadline checks.
    let outer = timeout.saturating_add(Duration::from_millis(250));
    let slot_timeout = || {
        ApiError::timeout(format!(
            "query timed out waiting for a slot: tenant {tenant} already runs max_concurrent_queries={} queries; raise the tenant's max_concurrent_queries limit",
            max_conc.unwrap_or(0)
        ))
        .into_response()
    };
    let res = match tokio::time::timeout(outer, task).await {
        Err(_) if !got_tenant_slot.load(std::sync::atomic::Ordering::Relaxed) => {
            return slot_timeout();
        }
        Ok(Ok(Err(PromqlError::Timeout)))
            if !got_tenant_slot.load(std::sync::atomic::Ordering::Relaxed) =>
        {
            return slot_timeout();
        }
        Err(_) => return ApiError::timeout("query timed out in query execution").into_response(),
        Ok(Err(e)) => {
            return ApiError::internal(format!("query evaluation failed: {e}")).into_response();
        }
        Ok(Ok(r)) => r,
    };
    match res {
        Ok(mut r) => {
            if let Some(s) = &r.stats {
                // Series touched is Stratus' own figure: not in
                // Prometheus' JSON, logged for operators.
                tracing::debug!(
                    tenant = %tenant,
                    series_touched = s.series_touched,
                    total_samples = s.total_samples,
                    peak_samples = s.peak_samples,
                    "query statistics"
                );
            }
            if let Value::Matrix(m) = &mut r.value {
                m.sort_by(|a, b| a.labels.cmp(&b.labels));
            }
            apply_limit(&mut r, c.limit);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                encode_result_on(&r, query_threads(&st.cfg)),
            )
                .into_response()
        }
        Err(e) => engine_error(e).into_response(),
    }
}

/// `GET|POST /api/v1/query`.
pub(crate) async fn instant(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let p = Params::parse(q.as_deref(), &headers, &body);
    let t = match p.get("time") {
        None => now_ms(),
        Some(s) => match parse_time(s) {
            Ok(t) => t,
            Err(e) => return invalid("time", e).into_response(),
        },
    };
    let c = match parse_common(&p) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    run(&st, &headers, c, Eval::Instant(t)).await
}

/// Checks the range parameters; returns `(start, end, step)` in ms.
fn parse_range_params(p: &Params) -> Result<(i64, i64, i64), ApiError> {
    let time = |k: &str| parse_time(p.get(k).unwrap_or("")).map_err(|e| invalid(k, e));
    let start = time("start")?;
    let end = time("end")?;
    if end < start {
        return Err(invalid(
            "end",
            "end timestamp must not be before start time",
        ));
    }
    let step_ns = parse_duration(p.get("step").unwrap_or("")).map_err(|e| invalid("step", e))?;
    let step_ms = step_ns / 1_000_000;
    if step_ns <= 0 || step_ms <= 0 {
        return Err(invalid(
            "step",
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    // Prometheus divides the range by the step in nanoseconds.
    let range_ns = (i128::from(end) - i128::from(start)) * 1_000_000;
    if range_ns / step_ns > MAX_POINTS {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let step = i64::try_from(step_ms).unwrap_or(i64::MAX);
    Ok((start, end, step))
}

/// `GET|POST /api/v1/query_range`.
pub(crate) async fn range(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let p = Params::parse(q.as_deref(), &headers, &body);
    let (start, end, step) = match parse_range_params(&p) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let c = match parse_common(&p) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let vt = c.expr.value_type();
    if !matches!(vt, ValueType::Scalar | ValueType::Vector) {
        return ApiError::bad_data(format!(
            "invalid expression type \"{vt}\" for range query, must be Scalar or instant Vector"
        ))
        .into_response();
    }
    run(&st, &headers, c, Eval::Range { start, end, step }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    // The formatter used before the Ryū one, kept as the reference the
    // property tests compare with: Rust's std shortest digits, with
    // exact halfway ties re-resolved Go's way.

    /// The reference (std-based) shortest decimal digits that read back as `a` (finite, > 0), with
    /// the decimal exponent of the first digit (`a = d.ddd × 10^exp`), chosen
    /// as Go's `strconv` chooses them.
    ///
    /// Rust's shortest formatting and Go's agree except when the exact binary
    /// value lies exactly halfway between two shortest candidates: Rust rounds
    /// the last digit up, Go to even (1e15+0.25 = 1000000000000000.25 is
    /// `…0.3` in Rust and `…0.2` in Go). Such ties are detected from the exact
    /// decimal expansion and resolved Go's way.
    fn go_shortest_digits(a: f64) -> (Vec<u8>, i32) {
        let (mut digits, exp) = split_exp(&format!("{a:e}"));
        let n = digits.len();
        // A tie needs both n-digit candidates within half an ulp of `a`, so
        // 10^(last digit's place) <= ulp(a) < a * 2^-52, which forces n >= 16:
        // shorter outputs (most stored values) need no further check.
        if n < 16 {
            return (digits, exp);
        }
        // A tie means the exact value has n+1 significant digits ending in 5;
        // 18 correctly rounded digits show the candidates cheaply, the full
        // expansion (at most 767 digits for an f64) confirms.
        let trimmed = |s: &str| {
            let (mut d, e) = split_exp(s);
            while d.len() > 1 && d.last() == Some(&b'0') {
                d.pop();
            }
            (d, e)
        };
        let (exact, exact_exp) = trimmed(&format!("{a:.17e}"));
        if exact_exp != exp || exact.len() != n + 1 || exact.get(n) != Some(&b'5') {
            return (digits, exp);
        }
        if trimmed(&format!("{a:.800e}")).0 != exact {
            return (digits, exp);
        }
        let last = digits[n - 1];
        let other = if exact[..n] == digits[..] {
            // Rust rounded the tie down; the candidate above.
            (last < b'9').then(|| {
                let mut o = digits.clone();
                o[n - 1] = last + 1;
                o
            })
        } else if exact[..n - 1] == digits[..n - 1] && exact[n - 1] + 1 == last {
            // Rust rounded the tie up; the candidate below.
            Some(exact[..n].to_vec())
        } else {
            None
        };
        if let Some(o) = other
            && o[n - 1] % 2 == 0
            && parse_digits(&o, exp) == Some(a)
        {
            digits = o;
        }
        (digits, exp)
    }

    /// Splits Rust's `d.ddde±x` into the digits and the exponent.
    fn split_exp(s: &str) -> (Vec<u8>, i32) {
        let (mant, exp) = s.split_once('e').unwrap_or((s, "0"));
        let digits = mant.bytes().filter(u8::is_ascii_digit).collect();
        (digits, exp.parse().unwrap_or(0))
    }

    /// The value of `d.ddd × 10^exp`.
    fn parse_digits(d: &[u8], exp: i32) -> Option<f64> {
        let mut s: String = d.iter().map(|&b| b as char).collect();
        let _ = write!(s, "e{}", i64::from(exp) - (d.len() as i64 - 1));
        s.parse().ok()
    }

    /// Go's `strconv.FormatFloat(v, fmt, -1, 64)` for `fmt` `'f'` (plain) or
    /// `'e'` (exponent), including `NaN`, `+Inf`, `-Inf` and `-0`.
    fn reference_format_float(v: f64, exponent: bool) -> String {
        if v.is_nan() {
            return "NaN".into();
        }
        if v.is_infinite() {
            return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
        }
        let mut out = String::new();
        if v.is_sign_negative() {
            out.push('-');
        }
        if v == 0.0 {
            out.push('0');
            if exponent {
                out.push_str("e+00");
            }
            return out;
        }
        let (d, exp) = go_shortest_digits(v.abs());
        let digit = |i: usize| d.get(i).map_or('0', |&b| b as char);
        if exponent {
            out.push(digit(0));
            if d.len() > 1 {
                out.push('.');
                out.extend(d[1..].iter().map(|&b| b as char));
            }
            let sign = if exp < 0 { '-' } else { '+' };
            let _ = write!(out, "e{sign}{:02}", exp.unsigned_abs());
        } else if exp >= 0 {
            let int_len = exp.unsigned_abs() as usize + 1;
            for i in 0..int_len {
                out.push(digit(i));
            }
            if d.len() > int_len {
                out.push('.');
                out.extend(d[int_len..].iter().map(|&b| b as char));
            }
        } else {
            out.push_str("0.");
            for _ in 1..exp.unsigned_abs() {
                out.push('0');
            }
            out.extend(d.iter().map(|&b| b as char));
        }
        out
    }

    use stratus_promql::Sample;

    #[test]
    fn values_like_prometheus() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (0.1, "0.1"),
            (2.0, "2"),
            (1234.5678, "1234.5678"),
            (1e21, "1e+21"),
            (-1e21, "-1e+21"),
            (1e20, "100000000000000000000"),
            (123_456_789_012_345_680_000.0, "123456789012345680000"),
            (1.2345678901234568e21, "1.2345678901234568e+21"),
            (1e-7, "1e-07"),
            (1.5e-7, "1.5e-07"),
            (-1.5e-7, "-1.5e-07"),
            (1e-6, "0.000001"),
            (9.99e-7, "9.99e-07"),
            (5e-324, "5e-324"),
            (1e100, "1e+100"),
            (f64::MAX, "1.7976931348623157e+308"),
            (0.30000000000000004, "0.30000000000000004"),
            (1.0 / 3.0, "0.3333333333333333"),
            // Ties between two shortest candidates go to the even digit.
            (1e15 + 0.25, "1000000000000000.2"),
            (1e15 + 0.75, "1000000000000000.8"),
            (-(1e15 + 0.25), "-1000000000000000.2"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for &(v, want) in cases {
            assert_eq!(format_value(v), want, "{v:e}");
            let mut fast = String::new();
            write_value(&mut fast, v);
            assert_eq!(fast, want, "{v:e}");
        }
        // The stale marker is a NaN too.
        assert_eq!(format_value(stratus_model::stale_nan()), "NaN");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        /// Any finite f64: the text reads back as the same value, with as
        /// many digits as Rust's shortest form, and equals it outside ties.
        #[test]
        fn formatting_round_trips(bits in proptest::prelude::any::<u64>()) {
            let v = f64::from_bits(bits);
            proptest::prop_assume!(v.is_finite());
            for s in [format_value(v), format_plain(v)] {
                let back: f64 = s.parse().unwrap();
                proptest::prop_assert_eq!(back.to_bits(), v.to_bits(), "{}", s);
            }
            let mut fast = String::new();
            write_value(&mut fast, v);
            proptest::prop_assert_eq!(&fast, &format_value(v));
            proptest::prop_assert_eq!(format_value(v), reference_format_value(v));
            proptest::prop_assert_eq!(format_plain(v), reference_format_float(v, false));
            proptest::prop_assert_eq!(go_format_float(v, true), reference_format_float(v, true));
            let (d, _) = go_shortest_digits(v.abs().max(f64::MIN_POSITIVE));
            let (rd, _) = split_exp(&format!("{:e}", v.abs().max(f64::MIN_POSITIVE)));
            proptest::prop_assert_eq!(d.len(), rd.len());
        }

        /// Values with short decimal forms, as counters and gauges have.
        #[test]
        fn short_values_match_display(m in -1_000_000_000i64..1_000_000_000, e in 0u32..9) {
            let v = m as f64 / 10f64.powi(e as i32);
            proptest::prop_assert_eq!(format_plain(v), format!("{v}"));
            let mut fast = String::new();
            write_value(&mut fast, v);
            proptest::prop_assert_eq!(fast, format_value(v));
            proptest::prop_assert_eq!(format_value(v), reference_format_value(v));
        }

        /// Values with up to 17 digits at any exponent, where exact
        /// halfway ties (which Go and Rust's std resolve differently)
        /// are frequent: the Ryū formatter agrees with the reference.
        #[test]
        fn tie_prone_values_match_reference(m in 1u64..(1u64 << 53), e in -30i32..30) {
            let v = m as f64 * 10f64.powi(e) + 0.25 * (e.rem_euclid(3) as f64);
            for v in [v, -v, v / 4.0, v * 1024.0] {
                proptest::prop_assert_eq!(format_value(v), reference_format_value(v));
                proptest::prop_assert_eq!(format_plain(v), reference_format_float(v, false));
            }
        }

        /// Millisecond timestamps written without `fmt` equal the
        /// formatted ones.
        #[test]
        fn timestamps_match_fmt(ms in proptest::prelude::any::<i64>()) {
            let mut fast = String::new();
            write_timestamp(&mut fast, ms);
            let a = ms.unsigned_abs();
            let mut want = String::new();
            if ms < 0 {
                want.push('-');
            }
            let _ = write!(want, "{}", a / 1000);
            if a % 1000 != 0 {
                let _ = write!(want, ".{:03}", a % 1000);
            }
            proptest::prop_assert_eq!(fast, want);
        }
    }

    /// Timing of the sample writers against the reference formatter:
    /// `cargo test -p stratus-api --lib json_writer_timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, not a check"]
    fn json_writer_timing() {
        let vals: Vec<f64> = (0..200_000u64)
            .map(|i| {
                let x = i as f64;
                match i % 4 {
                    0 => x,
                    1 => x * 0.1,
                    2 => (x * 1e-3).sin() * 123.456,
                    _ => 1.0 / (x + 1.0),
                }
            })
            .collect();
        let mut out = String::with_capacity(8 << 20);
        let t0 = std::time::Instant::now();
        for &v in &vals {
            out.push_str(&reference_format_value(v));
        }
        let reference = t0.elapsed();
        let len = out.len();
        out.clear();
        let t0 = std::time::Instant::now();
        for &v in &vals {
            write_value(&mut out, v);
        }
        let fast = t0.elapsed();
        assert_eq!(out.len(), len);
        out.clear();
        // Rust's std shortest formatting alone (what the former fast
        // path was built on), writing in place.
        let t0 = std::time::Instant::now();
        for &v in &vals {
            let _ = write!(out, "{v:e}");
        }
        let std_e = t0.elapsed();
        out.clear();
        let t0 = std::time::Instant::now();
        for i in 0..200_000i64 {
            let ms = 1_700_000_000_000 + i * 15_001;
            let _ = write!(out, "{}", ms / 1000);
            if ms % 1000 != 0 {
                let _ = write!(out, ".{:03}", ms % 1000);
            }
        }
        let ts_fmt = t0.elapsed();
        out.clear();
        let t0 = std::time::Instant::now();
        for i in 0..200_000i64 {
            write_timestamp(&mut out, 1_700_000_000_000 + i * 15_001);
        }
        let ts_fast = t0.elapsed();
        println!(
            "200k values: reference {reference:?}, std {{:e}} {std_e:?}, write_value {fast:?}; \
             200k timestamps: fmt {ts_fmt:?}, write_timestamp {ts_fast:?}"
        );
    }

    /// [`format_value`] through the reference formatter.
    fn reference_format_value(v: f64) -> String {
        reference_format_float(v, uses_exponent(v))
    }

    #[test]
    fn edge_values_match_reference() {
        let mut cases = vec![
            0.0,
            -0.0,
            1e21,
            -1e21,
            1e-7,
            1e-6,
            9.999999999999999e20,
            5e-324,
            -5e-324,
            f64::MIN_POSITIVE,
            1.7976931348623157e308,
            -1.7976931348623157e308,
            0.1 + 0.2,
            1e15 + 0.25,
            1e15 + 0.75,
            2f64.powi(53),
            2f64.powi(53) + 2.0,
            123_456_789_012_345_680_000.0,
            1e23,
            1e22,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        for e in -330..310 {
            cases.push(10f64.powi(e));
            cases.push(1.5 * 10f64.powi(e));
        }
        for v in cases {
            assert_eq!(format_value(v), reference_format_value(v), "{v:e}");
            assert_eq!(format_plain(v), reference_format_float(v, false), "{v:e}");
            assert_eq!(
                go_format_float(v, true),
                reference_format_float(v, true),
                "{v:e}"
            );
            let mut fast = String::new();
            write_value(&mut fast, v);
            assert_eq!(fast, format_value(v), "{v:e}");
        }
        assert_eq!(format_plain(1e21), "1000000000000000000000");
        assert_eq!(format_plain(5e-324).len(), "0.".len() + 323 + 1);
        assert_eq!(format_value(0.1 + 0.2), "0.30000000000000004");
        let mut t = String::new();
        for ms in [0, 1, 10, 999, 1000, 1001, -1, -1500, 1_700_000_000_123] {
            write_timestamp(&mut t, ms);
            t.push(' ');
        }
        assert_eq!(
            t,
            "0 0.001 0.010 0.999 1 1.001 -0.001 -1.500 1700000000.123 "
        );
    }

    #[test]
    fn scalar_values_like_prometheus() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (0.1, "0.1"),
            (1e21, "1000000000000000000000"),
            (1.5e-7, "0.00000015"),
            (123_456_789_012_345_680_000.0, "123456789012345680000"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for &(v, want) in cases {
            assert_eq!(format_plain(v), want, "{v:e}");
        }
        let mut s = String::new();
        write_seconds_float(&mut s, 1_435_781_451_781);
        s.push(' ');
        write_seconds_float(&mut s, 4000);
        s.push(' ');
        write_seconds_float(&mut s, 1);
        s.push(' ');
        write_seconds_float(&mut s, 0);
        assert_eq!(s, "1435781451.781 4 0.001 0");
    }

    #[test]
    fn stats_like_prometheus() {
        let mut out = String::new();
        for v in [0.0, 0.000187367, 4.21e-7, 1e-6, 12.5, 1700000300.5] {
            write_json_float(&mut out, v);
            out.push(' ');
        }
        assert_eq!(out, "0 0.000187367 4.21e-7 0.000001 12.5 1700000300.5 ");
        let st = QueryStats {
            total_samples: 4,
            peak_samples: 3,
            per_step: vec![(1_000, 1), (61_500, 3)],
            series_touched: 2,
            timings: stratus_promql::QueryTimings {
                eval_total: Duration::from_micros(250),
                exec_total: Duration::from_millis(1),
                ..Default::default()
            },
        };
        let mut out = String::new();
        write_stats(&mut out, &st);
        assert_eq!(
            out,
            ",\"stats\":{\"timings\":{\"evalTotalTime\":0.00025,\"resultSortTime\":0,\"queryPreparationTime\":0,\"innerEvalTime\":0,\"execQueueTime\":0,\"execTotalTime\":0.001},\"samples\":{\"totalQueryableSamplesPerStep\":[[1,1],[61.5,3]],\"totalQueryableSamples\":4,\"peakSamples\":3}}"
        );
        let mut out = String::new();
        write_stats(
            &mut out,
            &QueryStats {
                per_step: Vec::new(),
                ..st
            },
        );
        assert!(out.ends_with("\"samples\":{\"totalQueryableSamples\":4,\"peakSamples\":3}}"));
    }

    #[test]
    fn timestamps_like_prometheus() {
        let ts = |ms| {
            let mut s = String::new();
            write_timestamp(&mut s, ms);
            s
        };
        assert_eq!(ts(1_435_781_451_781), "1435781451.781");
        assert_eq!(ts(1_435_781_451_000), "1435781451");
        assert_eq!(ts(4000), "4");
        assert_eq!(ts(0), "0");
        assert_eq!(ts(1500), "1.500");
        assert_eq!(ts(1005), "1.005");
        assert_eq!(ts(1050), "1.050");
        assert_eq!(ts(-1500), "-1.500");
        assert_eq!(ts(-5), "-0.005");
        assert_eq!(ts(i64::MIN), "-9223372036854775.808");
    }

    #[test]
    fn encodes_each_result_type() {
        let r = |value| QueryResult {
            stats: None,
            value,
            warnings: Vec::new(),
            infos: Vec::new(),
        };
        assert_eq!(
            encode_result(&r(Value::Scalar { t: 4000, v: 2.0 })),
            r#"{"status":"success","data":{"resultType":"scalar","result":[4,"2"]}}"#
        );
        assert_eq!(
            encode_result(&r(Value::String {
                t: 1500,
                s: "a\"<b>".into()
            })),
            r#"{"status":"success","data":{"resultType":"string","result":[1.5,"a\"\u003cb\u003e"]}}"#
        );
        assert_eq!(
            encode_result(&r(Value::Scalar {
                t: 1_435_781_451_781,
                v: 1.5e-7
            })),
            r#"{"status":"success","data":{"resultType":"scalar","result":[1435781451.781,"0.00000015"]}}"#
        );
        assert_eq!(
            encode_result(&r(Value::Scalar {
                t: -1500,
                v: f64::NEG_INFINITY
            })),
            r#"{"status":"success","data":{"resultType":"scalar","result":[-1.5,"-Inf"]}}"#
        );
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        assert_eq!(
            encode_result(&r(Value::Vector(vec![Sample {
                labels: l.clone(),
                t: 1_435_781_451_781,
                v: 1.0,
                h: None,
            }]))),
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a"},"value":[1435781451.781,"1"]}]}}"#
        );
        let h = stratus_model::FloatHistogram {
            schema: 0,
            count: 3.0,
            sum: 4.5,
            zero_threshold: 0.001,
            zero_count: 1.0,
            positive_spans: vec![stratus_model::BucketSpan {
                offset: 1,
                length: 1,
            }],
            positive_buckets: vec![2.0],
            ..Default::default()
        };
        assert_eq!(
            encode_result(&r(Value::Vector(vec![Sample {
                labels: Labels::empty(),
                t: 1000,
                v: 0.0,
                h: Some(std::sync::Arc::new(h)),
            }]))),
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{"count":"3","sum":"4.5","buckets":[[3,"-0.001","0.001","1"],[0,"1","2","2"]]}]}]}}"#
        );
        let mut res = r(Value::Matrix(vec![
            RangeSeries {
                labels: Labels::empty(),
                points: vec![(0, f64::NAN), (15_000, f64::INFINITY)],
                histograms: vec![],
            },
            RangeSeries {
                labels: l,
                points: vec![],
                histograms: vec![],
            },
        ]));
        res.warnings.push("PromQL warning: w".into());
        res.infos.push("PromQL info: i".into());
        let got = encode_result(&res);
        assert_eq!(
            got,
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[0,"NaN"],[15,"+Inf"]]},{"metric":{"__name__":"up","job":"a"}}]},"warnings":["PromQL warning: w"],"infos":["PromQL info: i"]}"#
        );
        let v: serde_json::Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v["data"]["result"][0]["values"][1][1], "+Inf");
    }

    #[test]
    fn matrix_written_on_threads_is_the_same_text() {
        let r = |v| QueryResult {
            value: v,
            warnings: vec![],
            infos: vec![],
            stats: None,
        };
        for (series, points) in [(1usize, 30_000usize), (7, 3_000), (300, 121), (1000, 25)] {
            let m: Vec<RangeSeries> = (0..series)
                .map(|i| {
                    let inst = format!("i{i}");
                    RangeSeries {
                        labels: Labels::from_pairs([
                            ("__name__", "m"),
                            ("instance", inst.as_str()),
                        ]),
                        points: (0..points - i % 3)
                            .map(|k| (k as i64 * 15_000, (i * 31 + k) as f64 / 7.0))
                            .collect(),
                        histograms: vec![],
                    }
                })
                .collect();
            let res = r(Value::Matrix(m));
            let one = encode_result_on(&res, 1);
            for threads in [2, 3, 4] {
                assert_eq!(
                    encode_result_on(&res, threads),
                    one,
                    "{series} series, {threads} threads"
                );
            }
            let v: serde_json::Value = serde_json::from_str(&one).unwrap();
            assert_eq!(v["data"]["result"].as_array().map(Vec::len), Some(series));
        }
    }

    #[test]
    fn json_strings_round_trip() {
        for s in [
            "",
            "plain",
            "q\"uo\\te",
            "nl\n\t\r",
            "\u{1}\u{1f}",
            "<&>",
            "é☃\u{2028}",
        ] {
            let mut out = String::new();
            write_str(&mut out, s);
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(30_000_000_000));
        assert_eq!(parse_duration("0.5"), Ok(500_000_000));
        assert_eq!(parse_duration("5m"), Ok(300_000_000_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration("-1"), Ok(-1_000_000_000));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("-5m").is_err());
        assert!(parse_duration("1e300").is_err());
        assert!(parse_duration("NaN").is_err());
    }

    fn params(q: &str) -> Params {
        Params::parse(Some(q), &HeaderMap::new(), b"")
    }

    #[test]
    fn range_params() {
        assert_eq!(
            parse_range_params(&params("start=0&end=60&step=15")).unwrap(),
            (0, 60_000, 15_000)
        );
        assert_eq!(
            parse_range_params(&params("start=0&end=60&step=1m")).unwrap(),
            (0, 60_000, 60_000)
        );
        // Exactly 11,000 steps is allowed, one more is not.
        assert!(parse_range_params(&params("start=0&end=11000&step=1")).is_ok());
        assert!(parse_range_params(&params("start=0&end=11001&step=1")).is_err());
        for bad in [
            "end=60&step=15",
            "start=0&step=15",
            "start=0&end=60",
            "start=60&end=0&step=15",
            "start=0&end=60&step=0",
            "start=0&end=60&step=-15",
            "start=0&end=60&step=0.0001",
            "start=x&end=60&step=15",
        ] {
            assert!(parse_range_params(&params(bad)).is_err(), "{bad}");
        }
    }
}
