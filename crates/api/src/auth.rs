//! Authentication: which tenant a request belongs to, and who may use the
//! admin API.
//!
//! In token mode ([`AuthMode::Token`], the default) every data endpoint
//! (push and all read/query routes) goes through [`tenant_auth`]: the
//! token comes from the basic-auth password (the user name is ignored) or
//! an `Authorization: Bearer` header, is looked up in the registry (one
//! SHA-256 and one map probe), and the tenant it belongs to is passed to
//! the handler in an internal header that is always stripped from the
//! incoming request first. `X-Scope-OrgID` is ignored in this mode, so a
//! token never reaches another tenant's data. A route that skipped the
//! middleware finds no internal header and answers 401: the failure mode
//! is closed. Missing or unknown tokens get 401 with
//! `WWW-Authenticate: Basic realm="stratus"`; admin tokens get 403 on data
//! endpoints and tenant tokens 403 on the admin API ([`admin_auth`]).
//!
//! On first start in token mode, [`bootstrap`] creates tenant `default`,
//! an admin token and a `default` token, written to
//! `<data>/tokens/{admin,default}.token`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use stratus_tenancy::{FileRegistry, Principal, Registry};
use tracing::info;

use crate::config::AuthMode;
use crate::server::AppState;

/// Internal header carrying the authenticated tenant from
/// [`tenant_auth`] to the handlers; never trusted from the client.
pub(crate) const AUTH_TENANT_HEADER: &str = "x-stratus-authenticated-tenant";

/// The token of a request: basic-auth password or bearer token.
pub(crate) fn request_token(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!rest.is_empty()).then(|| rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT
            .decode(rest)
            .ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (_user, pass) = s.split_once(':')?;
        return (!pass.is_empty()).then(|| pass.to_string());
    }
    None
}

/// Why a request was not let in.
#[derive(Debug)]
pub(crate) enum AuthError {
    /// No credentials (401).
    Missing,
    /// Unknown or revoked token (401).
    Invalid,
    /// A valid token of the wrong kind (403).
    Forbidden(&'static str),
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (status, error_type, msg) = match self {
            Self::Missing => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "authentication required: send the token as the basic-auth password (http://user:TOKEN@host:port) or as 'Authorization: Bearer TOKEN'",
            ),
            Self::Invalid => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "invalid or revoked token",
            ),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m),
        };
        let body = serde_json::json!({
            "status": "error",
            "errorType": error_type,
            "error": msg,
        });
        let mut resp = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"stratus\""),
            );
        }
        resp
    }
}

/// The principal of a request's token.
fn principal(reg: &dyn Registry, headers: &HeaderMap) -> Result<Principal, AuthError> {
    let token = request_token(headers).ok_or(AuthError::Missing)?;
    reg.authenticate(&token).ok_or(AuthError::Invalid)
}

/// Middleware of the data endpoints (push, read, query).
pub(crate) async fn tenant_auth(
    State(st): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    req.headers_mut().remove(AUTH_TENANT_HEADER);
    if st.cfg.auth != AuthMode::Token {
        return next.run(req).await;
    }
    match principal(&*st.registry, req.headers()) {
        Ok(Principal::Tenant { tenant, .. }) => {
            let Ok(v) = HeaderValue::from_str(tenant.as_str()) else {
                return AuthError::Invalid.into_response();
            };
            req.headers_mut().insert(AUTH_TENANT_HEADER, v);
            next.run(req).await
        }
        Ok(Principal::Admin { .. }) => AuthError::Forbidden(
            "admin tokens manage tenants and cannot read or write data; use a tenant token",
        )
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Middleware of the admin API: admin tokens only, in every auth mode.
pub(crate) async fn admin_auth(
    State(st): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    match principal(&*st.registry, req.headers()) {
        Ok(Principal::Admin { .. }) => next.run(req).await,
        Ok(Principal::Tenant { .. }) => {
            AuthError::Forbidden("the admin API needs an admin token").into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// First start in token mode: creates tenant `default` and the two
/// tokens (see [`FileRegistry::bootstrap`]) and logs where they are.
/// Every start logs how to push and query.
pub(crate) fn bootstrap(
    reg: &FileRegistry,
    data_dir: &std::path::Path,
    base: &str,
) -> stratus_tenancy::Result<()> {
    let tokens_dir = data_dir.join("tokens");
    if let Some(b) = reg.bootstrap(&tokens_dir)? {
        info!(
            admin_token_file = %b.admin_file.display(),
            default_token_file = %b.default_file.display(),
            "first start: created tenant 'default', an admin token and a token for 'default' (shown only in these files)"
        );
    }
    let (scheme, hostport) = base.split_once("://").unwrap_or(("http", base));
    info!(
        "auth: token. Send the tenant token as the basic-auth password (any user name) or as 'Authorization: Bearer <token>'"
    );
    info!(
        "push with token: remote_write url {base}/api/v1/push with basic_auth password_file {}",
        tokens_dir.join("default.token").display()
    );
    info!(
        "query with token: {scheme}://user:TOKEN@{hostport} (e.g. promtool query instant \"{scheme}://user:$(cat {})@{hostport}\" up)",
        tokens_dir.join("default.token").display()
    );
    info!(
        "token files: {} (tenant 'default'), {} (admin: stratus tenant/token commands)",
        tokens_dir.join("default.token").display(),
        tokens_dir.join("admin.token").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn tokens_from_bearer_and_basic() {
        assert_eq!(request_token(&auth("Bearer abc")).as_deref(), Some("abc"));
        assert_eq!(request_token(&auth("bearer  abc ")).as_deref(), Some("abc"));
        // "user:pass" and ":pass"
        assert_eq!(
            request_token(&auth("Basic dXNlcjpwYXNz")).as_deref(),
            Some("pass")
        );
        assert_eq!(
            request_token(&auth("Basic OnBhc3M=")).as_deref(),
            Some("pass")
        );
        // No password, bad base64, unknown scheme, nothing.
        assert_eq!(request_token(&auth("Basic dXNlcjo=")), None);
        assert_eq!(request_token(&auth("Basic ***")), None);
        assert_eq!(request_token(&auth("Digest abc")), None);
        assert_eq!(request_token(&auth("Bearer")), None);
        assert_eq!(request_token(&HeaderMap::new()), None);
    }
}
