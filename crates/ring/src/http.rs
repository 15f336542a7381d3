//! The ring status page, an axum router the server mounts.
//!
//! `GET <path>`: an HTML table (id, state, health, addresses, zone, token
//! count, primary ownership %, last heartbeat age) or JSON when the request
//! has `Accept: application/json` or `?format=json`. `POST <path>` with
//! the form field `forget=<id>` removes an unhealthy instance (as Cortex's
//! ring page does) and redirects back (303); JSON clients get 200 with a
//! JSON body. A healthy instance is refused with 409, an unknown one 404,
//! a store failure 503.

use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::desc::now_ms;
use crate::error::Error;
use crate::ring::{Operation, Ring};

/// A router serving the status page of `ring` at `/ring`.
pub fn router(ring: Ring) -> Router {
    router_at("/ring", ring)
}

/// A router serving the status page of `ring` at `path` (e.g.
/// `/store-gateway/ring` for a second ring).
pub fn router_at(path: &str, ring: Ring) -> Router {
    Router::new()
        .route(path, get(status).post(forget))
        .with_state(PageState {
            ring,
            path: path.into(),
        })
}

#[derive(Debug, Clone)]
struct PageState {
    ring: Ring,
    path: Arc<str>,
}

/// One row of the status page (also its JSON form).
#[derive(Debug, Serialize)]
struct Row {
    id: String,
    state: &'static str,
    healthy: bool,
    addr: String,
    http_addr: String,
    zone: String,
    tokens: usize,
    ownership: f64,
    registered_at_ms: u64,
    heartbeat_ms: u64,
    heartbeat_age_seconds: f64,
}

#[derive(Debug, Serialize)]
struct Page {
    ring: String,
    replication_factor: usize,
    heartbeat_timeout_seconds: f64,
    instances: Vec<Row>,
}

fn wants_json(headers: &HeaderMap, query: Option<&str>) -> bool {
    let q = query.unwrap_or("");
    if form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "format" && v == "json") {
        return true;
    }
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
}

fn page(ring: &Ring) -> Page {
    let snap = ring.snapshot();
    let now = now_ms();
    let own = snap.ownership();
    let instances = snap
        .instances()
        .iter()
        .zip(own)
        .map(|(i, o)| Row {
            id: i.id.clone(),
            state: i.state.as_str(),
            healthy: snap.is_healthy(i, Operation::Write, now),
            addr: i.addr.clone(),
            http_addr: i.http_addr.clone(),
            zone: i.zone.clone(),
            tokens: i.tokens.len(),
            ownership: o * 100.0,
            registered_at_ms: i.registered_at_ms,
            heartbeat_ms: i.heartbeat_ms,
            heartbeat_age_seconds: i.heartbeat_age(now).as_secs_f64(),
        })
        .collect();
    Page {
        ring: ring.name().to_string(),
        replication_factor: snap.config().replication_factor,
        heartbeat_timeout_seconds: snap.config().heartbeat_timeout.as_secs_f64(),
        instances,
    }
}

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn html(p: &Page) -> String {
    let mut s = String::new();
    let ring = escape(&p.ring);
    let _ = write!(
        s,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Ring {ring}</title>\
         <style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}\
         .unhealthy{{background:#fdd}}</style></head><body>\
         <h1>Ring {ring}</h1><p>Replication factor {}, heartbeat timeout {}s, {} instances.</p>\
         <table><thead><tr><th>Instance</th><th>State</th><th>Health</th><th>Address</th>\
         <th>HTTP address</th><th>Zone</th><th>Tokens</th><th>Ownership</th>\
         <th>Last heartbeat</th><th></th></tr></thead><tbody>",
        p.replication_factor,
        p.heartbeat_timeout_seconds,
        p.instances.len()
    );
    for r in &p.instances {
        let id = escape(&r.id);
        let forget = if r.healthy {
            String::new()
        } else {
            format!(
                "<form method=\"post\"><input type=\"hidden\" name=\"forget\" value=\"{id}\">\
                 <button type=\"submit\">Forget</button></form>"
            )
        };
        let _ = write!(
            s,
            "<tr class=\"{}\"><td>{id}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{:.2}%</td><td>{:.1}s ago</td><td>{forget}</td></tr>",
            if r.healthy { "healthy" } else { "unhealthy" },
            r.state,
            if r.healthy { "healthy" } else { "UNHEALTHY" },
            escape(&r.addr),
            escape(&r.http_addr),
            escape(&r.zone),
            r.tokens,
            r.ownership,
            r.heartbeat_age_seconds,
        );
    }
    s.push_str("</tbody></table></body></html>");
    s
}

async fn status(
    State(st): State<PageState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let p = page(&st.ring);
    if wants_json(&headers, q.as_deref()) {
        return json(StatusCode::OK, &p);
    }
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html(&p),
    )
        .into_response()
}

#[derive(Serialize)]
struct Outcome {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn forget(
    State(st): State<PageState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let as_json = wants_json(&headers, q.as_deref());
    let id = form_urlencoded::parse(&body)
        .chain(form_urlencoded::parse(
            q.as_deref().unwrap_or("").as_bytes(),
        ))
        .find(|(k, _)| k == "forget")
        .map(|(_, v)| v.into_owned());
    let result = match id {
        None => Err((
            StatusCode::BAD_REQUEST,
            "missing form field \"forget\"".to_string(),
        )),
        Some(id) => st.ring.forget(&id).await.map_err(|e| {
            let code = match e {
                Error::InstanceNotFound { .. } => StatusCode::NOT_FOUND,
                Error::ForgetHealthy { .. } => StatusCode::CONFLICT,
                Error::Config { .. } => StatusCode::BAD_REQUEST,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            (code, e.to_string())
        }),
    };
    match (result, as_json) {
        (Ok(()), true) => json(
            StatusCode::OK,
            &Outcome {
                status: "success",
                error: None,
            },
        ),
        (Ok(()), false) => (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, st.path.to_string())],
        )
            .into_response(),
        (Err((code, msg)), true) => json(
            code,
            &Outcome {
                status: "error",
                error: Some(msg),
            },
        ),
        (Err((code, msg)), false) => (code, msg).into_response(),
    }
}
