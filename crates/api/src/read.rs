//! The read side of the Prometheus HTTP API v1 in this slice: the metadata
//! endpoints `/api/v1/series`, `/api/v1/labels`,
//! `/api/v1/label/<name>/values` and `/api/v1/status/buildinfo`.
//!
//! Parameters come from the URL query and, for POST, from an
//! `application/x-www-form-urlencoded` body (body values first, as Go's
//! `Request.FormValue` sees them). Answers use Prometheus' JSON envelope
//! and error types. `match[]` selectors are parsed by the engine's PromQL
//! parser into [`stratus_model::Matcher`] sets; several `match[]`
//! parameters select the union of their series.
//! Storage reads are synchronous and run on the blocking thread pool.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use serde::ser::SerializeMap;
use stratus_model::{Labels, Matcher};
use stratus_tsdb::{Db, Queryable, SelectHints};

use crate::server::AppState;

/// Prometheus' error types and their HTTP status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorType {
    BadData,
    Execution,
    Timeout,
    Internal,
}

impl ErrorType {
    fn as_str(self) -> &'static str {
        match self {
            Self::BadData => "bad_data",
            Self::Execution => "execution",
            Self::Timeout => "timeout",
            Self::Internal => "internal",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Self::BadData => StatusCode::BAD_REQUEST,
            Self::Execution => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An API error answered in the JSON envelope.
#[derive(Debug)]
pub(crate) struct ApiError {
    kind: ErrorType,
    msg: String,
}

impl ApiError {
    pub(crate) fn bad_data(msg: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::BadData,
            msg: msg.into(),
        }
    }

    pub(crate) fn internal(msg: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::Internal,
            msg: msg.into(),
        }
    }

    /// A query that failed while evaluating (422).
    pub(crate) fn execution(msg: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::Execution,
            msg: msg.into(),
        }
    }

    /// A query that ran past its timeout (503).
    pub(crate) fn timeout(msg: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::Timeout,
            msg: msg.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.kind == ErrorType::Internal {
            tracing::error!(error = %self.msg, "API request failed");
        }
        let body = serde_json::json!({
            "status": "error",
            "errorType": self.kind.as_str(),
            "error": self.msg,
        });
        json_response(self.kind.status(), &body)
    }
}

pub(crate) fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(v) => (status, [(header::CONTENT_TYPE, "application/json")], v).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the response failed: {e}"),
        )
            .into_response(),
    }
}

#[derive(Serialize)]
struct Success<'a, T: Serialize> {
    status: &'static str,
    data: T,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    warnings: &'a [String],
}

/// A success envelope with `data` and optional warnings.
pub(crate) fn success(data: impl Serialize, warnings: &[String]) -> Response {
    json_response(
        StatusCode::OK,
        &Success {
            status: "success",
            data,
            warnings,
        },
    )
}

/// Request parameters from the form body (first) and the URL query.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Self {
        let mut v = Vec::new();
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .and_then(|c| c.split(';').next())
            .is_some_and(|c| {
                c.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if is_form {
            v.extend(form_urlencoded::parse(body).into_owned());
        }
        if let Some(q) = query {
            v.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        Self(v)
    }

    /// The first value of `key`; an empty value counts as absent, as in
    /// Prometheus.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a timestamp: RFC 3339 (any offset, up to nanosecond precision)
/// or Unix seconds as a float, to milliseconds. Prometheus' own encodings
/// of its minimum and maximum time are understood too.
pub fn parse_time(s: &str) -> Result<i64, String> {
    const MIN_TIME: &str = "-292273086-05-16T16:47:06Z";
    const MAX_TIME: &str = "292277025-08-18T07:12:54.999999999Z";
    if s == MIN_TIME {
        return Ok(i64::MIN);
    }
    if s == MAX_TIME {
        return Ok(i64::MAX);
    }
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() || f.abs() >= 9.2e15 {
            return Err(format!("cannot parse {s:?} to a valid timestamp"));
        }
        let secs = f.trunc();
        let ms = ((f - secs) * 1000.0).round();
        return Ok(secs as i64 * 1000 + ms as i64);
    }
    parse_rfc3339(s).ok_or_else(|| format!("cannot parse {s:?} to a valid timestamp"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let d = b.get(from..from + len)?;
        d.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let at = |i: usize, want: &[u8]| b.get(i).is_some_and(|c| want.contains(c));
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, min, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let mdays = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > mdays || hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if at(i, b".") {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset = if at(i, b"Zz") {
        i += 1;
        0
    } else if at(i, b"+-") {
        let sign = if b[i] == b'-' { -1 } else { 1 };
        let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
        if !at(i + 3, b":") || oh > 23 || om > 59 {
            return None;
        }
        i += 6;
        sign * (oh * 3600 + om * 60)
    } else {
        return None;
    };
    if i != b.len() {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset;
    Some(secs * 1000 + nanos / 1_000_000)
}

/// `start` and `end` (defaults: minimum and maximum time).
pub(crate) fn parse_range(p: &Params) -> Result<(i64, i64), ApiError> {
    let get = |k: &str, default: i64| -> Result<i64, ApiError> {
        p.get(k).map_or(Ok(default), |v| {
            parse_time(v).map_err(|e| ApiError::bad_data(format!("invalid parameter {k:?}: {e}")))
        })
    };
    let start = get("start", i64::MIN)?;
    let end = get("end", i64::MAX)?;
    if end < start {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    Ok((start, end))
}

/// `limit`: 0 or absent means no limit.
pub(crate) fn parse_limit(p: &Params) -> Result<usize, ApiError> {
    let Some(v) = p.get("limit") else {
        return Ok(0);
    };
    match v.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        Ok(_) => Err(ApiError::bad_data(
            "invalid parameter \"limit\": limit must be non-negative",
        )),
        Err(e) => Err(ApiError::bad_data(format!(
            "invalid parameter \"limit\": {e}"
        ))),
    }
}

/// Parses a series selector (`up{job="x"}`, `{__name__=~"a.+"}`) into
/// its matcher set (one set per selector; kept as a list of sets so
/// callers can union several `match[]` parameters).
pub fn parse_selector(s: &str) -> Result<Vec<Vec<Matcher>>, String> {
    let expr = stratus_promql::parse(s).map_err(|e| e.to_string())?;
    let stratus_promql::ast::Expr::VectorSelector(vs) = expr else {
        return Err(format!("{s:?} is not a series selector"));
    };
    if vs.offset != 0 || vs.offset_expr.is_some() || vs.at.is_some() {
        return Err(format!(
            "{s:?}: offset and @ modifiers are not allowed in a series selector"
        ));
    }
    Ok(vec![vs.matchers])
}

/// Every `match[]` parameter, each alternative as its own matcher set.
pub(crate) fn parse_matches(p: &Params) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let mut out = Vec::new();
    for s in p.all("match[]") {
        out.extend(
            parse_selector(s)
                .map_err(|e| ApiError::bad_data(format!("invalid parameter \"match[]\": {e}")))?,
        );
    }
    Ok(out)
}

/// Undoes Prometheus' `U__` label-name escaping (`_` → `__`, other
/// characters → `_<hex code point>_`). Names that are not escaped, or not
/// validly, are returned as given.
pub fn unescape_label_name(s: &str) -> String {
    let Some(rest) = s.strip_prefix("U__") else {
        return s.to_string();
    };
    let mut out = String::with_capacity(rest.len());
    let mut it = rest.chars().peekable();
    while let Some(c) = it.next() {
        if c != '_' {
            out.push(c);
            continue;
        }
        if it.peek() == Some(&'_') {
            it.next();
            out.push('_');
            continue;
        }
        let mut code = 0u32;
        let mut digits = 0;
        loop {
            match it.next() {
                Some('_') if digits > 0 => break,
                Some(h) if h.is_ascii_hexdigit() && digits < 8 => {
                    code = code * 16 + h.to_digit(16).unwrap_or(0);
                    digits += 1;
                }
                _ => return s.to_string(),
            }
        }
        match char::from_u32(code) {
            Some(ch) => out.push(ch),
            None => return s.to_string(),
        }
    }
    out
}

/// Label sets serialized as JSON objects in label order.
struct LabelsJson<'a>(&'a Labels);

impl Serialize for LabelsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for l in self.0.iter() {
            m.serialize_entry(&*l.name, &*l.value)?;
        }
        m.end()
    }
}

const TRUNCATED: &str = "results truncated due to limit";

/// The tenant's database for reading, or `None` if the tenant has no data.
pub(crate) async fn read_db(
    st: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Arc<Db>>, Response> {
    let tenant = st.tenant(headers).map_err(IntoResponse::into_response)?;
    st.db_for_read(&tenant)
        .await
        .map_err(|e| ApiError::internal(format!("opening tenant database: {e}")).into_response())
}

/// What the tenant's reads go through (the read backend in cluster mode),
/// or `None` if the tenant has no data.
pub(crate) async fn read_queryable(
    st: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Arc<dyn Queryable>>, Response> {
    let tenant = st.tenant(headers).map_err(IntoResponse::into_response)?;
    st.queryable_for_read(&tenant)
        .await
        .map_err(|e| ApiError::internal(format!("opening tenant database: {e}")).into_response())
}

/// Runs a storage read on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> stratus_tsdb::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ApiError::internal(e.to_string())),
        Err(e) => Err(ApiError::internal(format!("read task failed: {e}"))),
    }
}

fn truncate<T>(v: &mut Vec<T>, limit: usize, warnings: &mut Vec<String>) {
    if limit > 0 && v.len() > limit {
        v.truncate(limit);
        warnings.push(TRUNCATED.to_string());
    }
}

/// `GET|POST /api/v1/series`.
pub(crate) async fn series(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let p = Params::parse(q.as_deref(), &headers, &body);
    let run = async {
        let sets = parse_matches(&p)?;
        if sets.is_empty() {
            return Err(ApiError::bad_data("no match[] parameter provided"));
        }
        let (start, end) = parse_range(&p)?;
        let limit = parse_limit(&p)?;
        let db = match read_queryable(&st, &headers).await {
            Ok(Some(db)) => db,
            Ok(None) => return Ok(success(Vec::<()>::new(), &[])),
            Err(r) => return Ok(r),
        };
        let mut found: Vec<Labels> = blocking(move || {
            let hints = SelectHints {
                start,
                end,
                labels_only: true,
                ..Default::default()
            };
            let mut all = BTreeSet::new();
            for ms in &sets {
                all.extend(db.select(ms, &hints)?.into_iter().map(|s| s.labels));
            }
            Ok(all.into_iter().collect())
        })
        .await?;
        let mut warnings = Vec::new();
        truncate(&mut found, limit, &mut warnings);
        let data: Vec<LabelsJson<'_>> = found.iter().map(LabelsJson).collect();
        Ok::<_, ApiError>(success(data, &warnings))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET|POST /api/v1/labels`.
pub(crate) async fn label_names(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let p = Params::parse(q.as_deref(), &headers, &body);
    let run = async {
        let sets = parse_matches(&p)?;
        let (start, end) = parse_range(&p)?;
        let limit = parse_limit(&p)?;
        let db = match read_queryable(&st, &headers).await {
            Ok(Some(db)) => db,
            Ok(None) => return Ok(success(Vec::<String>::new(), &[])),
            Err(r) => return Ok(r),
        };
        let mut names = blocking(move || {
            if sets.is_empty() {
                return db.label_names(&[], start, end);
            }
            let mut all = BTreeSet::new();
            for ms in &sets {
                all.extend(db.label_names(ms, start, end)?);
            }
            Ok(all.into_iter().collect())
        })
        .await?;
        let mut warnings = Vec::new();
        truncate(&mut names, limit, &mut warnings);
        Ok::<_, ApiError>(success(names, &warnings))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET|POST /api/v1/label/<name>/values`.
pub(crate) async fn label_values(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let p = Params::parse(q.as_deref(), &headers, &body);
    let run = async {
        let name = unescape_label_name(&name);
        if name.is_empty() {
            return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
        }
        let sets = parse_matches(&p)?;
        let (start, end) = parse_range(&p)?;
        let limit = parse_limit(&p)?;
        let db = match read_queryable(&st, &headers).await {
            Ok(Some(db)) => db,
            Ok(None) => return Ok(success(Vec::<String>::new(), &[])),
            Err(r) => return Ok(r),
        };
        let mut values = blocking(move || {
            if sets.is_empty() {
                return db.label_values(&name, &[], start, end);
            }
            let mut all = BTreeSet::new();
            for ms in &sets {
                all.extend(db.label_values(&name, ms, start, end)?);
            }
            Ok(all.into_iter().collect())
        })
        .await?;
        let mut warnings = Vec::new();
        truncate(&mut values, limit, &mut warnings);
        Ok::<_, ApiError>(success(values, &warnings))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/status/buildinfo`. No `features` map: Grafana would take
/// a non-empty one to mean Mimir.
pub(crate) async fn buildinfo() -> Response {
    success(
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "revision": option_env!("STRATUS_REVISION").unwrap_or("unknown"),
            "branch": option_env!("STRATUS_BRANCH").unwrap_or("unknown"),
            "buildUser": "",
            "buildDate": "",
            "goVersion": "none (Stratus is written in Rust)",
        }),
        &[],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1700000000.123"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("-1.5"), Ok(-1500));
        assert_eq!(parse_time("1.0006"), Ok(1001));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Ok(1_435_781_451_781)
        );
        assert_eq!(
            parse_time("2015-07-01T22:10:51.781123456+02:00"),
            Ok(1_435_781_451_781)
        );
        assert_eq!(parse_time("2000-02-29T00:00:00Z"), Ok(951_782_400_000));
        assert_eq!(parse_time("1969-12-31T23:59:59.5Z"), Ok(-500));
        assert_eq!(parse_time("-292273086-05-16T16:47:06Z"), Ok(i64::MIN));
        for bad in [
            "",
            "abc",
            "NaN",
            "inf",
            "1e300",
            "2001-02-29T00:00:00Z",
            "2015-07-01T20:10:51",
            "2015-07-01 20:10:51Z",
            "2015-07-01T20:10:51.Z",
            "2015-07-01T20:10:51Zjunk",
            "2015-13-01T20:10:51Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn selectors() {
        let s = parse_selector(r#"up{job="x"}"#).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].len(), 2);
        assert_eq!(&*s[0][0].name, "__name__");
        assert_eq!(&*s[0][0].value, "up");
        assert_eq!(s[0][1].kind, stratus_model::MatchType::Equal);
        let s = parse_selector(r#"{__name__=~"a.+", b!~"c|d", e!="f"}"#).unwrap();
        assert_eq!(s[0].len(), 3);
        assert!(s[0][0].matches("abc") && !s[0][0].matches("a"));
        assert!(!s[0][1].matches("c") && s[0][1].matches("cd"));
        assert!(parse_selector("rate(up[5m])").is_err());
        assert!(parse_selector("up offset 5m").is_err());
        assert!(parse_selector("{").is_err());
        assert!(parse_selector(r#"{a=""}"#).is_err());
    }

    #[test]
    fn or_inside_braces_is_not_promql() {
        assert!(parse_selector(r#"{a="1" or b="2"}"#).is_err());
    }

    #[test]
    fn unescape() {
        assert_eq!(unescape_label_name("job"), "job");
        assert_eq!(unescape_label_name("U__foo_2e_bar"), "foo.bar");
        assert_eq!(unescape_label_name("U__a__b"), "a_b");
        assert_eq!(unescape_label_name("U___2603_"), "☃");
        assert_eq!(unescape_label_name("U__bad_zz_"), "U__bad_zz_");
        assert_eq!(unescape_label_name("U__trail_"), "U__trail_");
    }
}
