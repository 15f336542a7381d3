//! The metric metadata and exemplar read endpoints: `/api/v1/metadata`
//! and `/api/v1/query_exemplars`, answered from the tenant's in-memory
//! stores (`stratus_tsdb::MetadataStore`, `stratus_tsdb::ExemplarStore`)
//! in Prometheus' exact JSON encoding.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use stratus_model::Matcher;
use stratus_promql::ast::Expr;

use crate::query::{format_value, write_labels, write_str, write_timestamp};
use crate::read::{ApiError, Params, parse_range, read_db};
use crate::server::AppState;

fn raw_json(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// An integer parameter that may be negative (`-1`: no limit), as
/// Prometheus' metadata endpoint parses `limit` and `limit_per_metric`.
fn int_param(p: &Params, key: &str) -> Result<i64, ApiError> {
    match p.get(key) {
        None => Ok(-1),
        Some(v) => v
            .parse::<i64>()
            .map_err(|_| ApiError::bad_data(format!("{key} must be a number"))),
    }
}

/// `GET|POST /api/v1/metadata`: `{"name":[{"type","help","unit"}]}`.
/// `limit` caps the number of metrics (negative: no cap), `limit_per_metric`
/// the entries per metric (0 or negative: no cap; this store keeps one
/// entry per metric), `metric` selects one metric.
pub(crate) async fn metadata(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let p = Params::parse(q.as_deref(), &headers, &body);
    let run = async {
        let limit = int_param(&p, "limit")?;
        // Validated only: this store keeps one entry per metric, which any
        // `limit_per_metric` allows.
        int_param(&p, "limit_per_metric")?;
        let metric = p.get("metric").map(str::to_string);
        let db = match read_db(&st, &headers).await {
            Ok(db) => db,
            Err(r) => return Ok(r),
        };
        let entries = db
            .map(|db| db.metadata().get(metric.as_deref()))
            .unwrap_or_default();
        let mut out = String::from(r#"{"status":"success","data":{"#);
        for (i, (name, md)) in entries.iter().enumerate() {
            if limit >= 0 && i as i64 >= limit {
                break;
            }
            if i > 0 {
                out.push(',');
            }
            write_str(&mut out, name);
            out.push_str(":[");
            out.push_str(r#"{"type":"#);
            write_str(&mut out, md.kind.as_str());
            out.push_str(r#","help":"#);
            write_str(&mut out, &md.help);
            out.push_str(r#","unit":"#);
            write_str(&mut out, &md.unit);
            out.push_str("}]");
        }
        out.push_str("}}");
        Ok::<_, ApiError>(raw_json(out))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// Collects the matcher sets of every vector selector in `e`, as
/// Prometheus' `parser.ExtractSelectors`.
fn collect_selectors(e: &Expr, out: &mut Vec<Vec<Matcher>>) {
    e.walk(&mut |n| match n {
        Expr::VectorSelector(vs) | Expr::MatrixSelector { vs, .. } => {
            out.push(vs.matchers.clone());
        }
        _ => {}
    });
}

/// `GET|POST /api/v1/query_exemplars?query=&start=&end=`: the exemplars
/// in `[start, end]` of the series matching any selector of `query`.
pub(crate) async fn query_exemplars(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let p = Params::parse(q.as_deref(), &headers, &body);
    let run = async {
        let (start, end) = parse_range(&p)?;
        let expr = stratus_promql::parse(p.get("query").unwrap_or(""))
            .map_err(|e| ApiError::bad_data(e.to_string()))?;
        let mut sets = Vec::new();
        collect_selectors(&expr, &mut sets);
        if sets.is_empty() {
            return Ok(raw_json(r#"{"status":"success","data":null}"#.to_string()));
        }
        let db = match read_db(&st, &headers).await {
            Ok(db) => db,
            Err(r) => return Ok(r),
        };
        let found = db
            .map(|db| db.exemplars().select(&sets, start, end))
            .unwrap_or_default();
        let mut out = String::from(r#"{"status":"success","data":["#);
        for (i, (series, exs)) in found.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(r#"{"seriesLabels":"#);
            write_labels(&mut out, series);
            out.push_str(r#","exemplars":["#);
            for (j, e) in exs.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"labels":"#);
                write_labels(&mut out, &e.labels);
                out.push_str(r#","value":""#);
                out.push_str(&format_value(e.value));
                out.push_str(r#"","timestamp":"#);
                write_timestamp(&mut out, e.t);
                out.push('}');
            }
            out.push_str("]}");
        }
        out.push_str("]}");
        Ok::<_, ApiError>(raw_json(out))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}
