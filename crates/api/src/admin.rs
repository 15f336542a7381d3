//! The admin API under `/api/v1/admin/` (admin tokens only, see
//! [`crate::auth::admin_auth`]): tenants, their limits and tokens, plans.
//!
//! | method and path | does |
//! | --- | --- |
//! | `GET /api/v1/admin/tenants` | list tenants (with effective limits) |
//! | `POST /api/v1/admin/tenants` `{"id", "plan"?, "limits"?}` | create a tenant (201) |
//! | `GET /api/v1/admin/tenants/{id}` | one tenant, its effective limits and tokens |
//! | `PATCH /api/v1/admin/tenants/{id}` `{"plan"?, "limits"?, "replace_limits"?}` | change plan (`""` clears) or merge/replace limits |
//! | `PUT /api/v1/admin/tenants/{id}/limits` `{limits}` | replace the tenant's limits |
//! | `DELETE /api/v1/admin/tenants/{id}` | delete the tenant and its tokens (data stays on disk) |
//! | `GET`/`POST /api/v1/admin/tenants/{id}/tokens` `{"name"?}` | list / create a tenant token (the secret is in the answer only) |
//! | `GET /api/v1/admin/tokens`, `POST` `{"name"?}` | list all tokens / create an admin token |
//! | `DELETE /api/v1/admin/tokens/{token_id}` | revoke a token |
//! | `GET /api/v1/admin/plans`, `PUT`/`DELETE /api/v1/admin/plans/{name}` | plans (named limit presets) |
//!
//! Answers use the Prometheus envelope (`{"status":"success","data":…}`,
//! errors `{"status":"error","errorType":…,"error":…}`). Limit changes
//! apply at once, without a restart: request-path limits are read from
//! the registry on every request, and the storage limits (out-of-order
//! window, retention, series limits) are pushed into the tenant's open
//! database and remembered for its next open.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use stratus_model::TenantId;
use stratus_tenancy::{Limits, Registry, TenantUpdate, TokenScope};

use crate::server::AppState;

/// An admin API error.
#[derive(Debug)]
pub(crate) struct AdminError {
    status: StatusCode,
    msg: String,
}

impl AdminError {
    fn bad(msg: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            msg: msg.into(),
        }
    }
}

impl From<stratus_tenancy::Error> for AdminError {
    fn from(e: stratus_tenancy::Error) -> Self {
        use stratus_tenancy::Error as E;
        let status = match &e {
            E::NotFound { .. } => StatusCode::NOT_FOUND,
            E::Exists { .. } => StatusCode::CONFLICT,
            E::Invalid { .. } => StatusCode::BAD_REQUEST,
            E::Store { .. } => {
                tracing::warn!(error = %e, "tenant registry store");
                StatusCode::SERVICE_UNAVAILABLE
            }
            E::Io { .. } | E::Corrupt { .. } | E::Random { .. } => {
                tracing::error!(error = %e, "tenant registry");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self {
            status,
            msg: e.to_string(),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let error_type = match self.status {
            StatusCode::BAD_REQUEST => "bad_data",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "internal",
        };
        json(
            self.status,
            &serde_json::json!({"status": "error", "errorType": error_type, "error": self.msg}),
        )
    }
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn ok(status: StatusCode, data: serde_json::Value) -> Response {
    json(
        status,
        &serde_json::json!({"status": "success", "data": data}),
    )
}

fn to_value(v: impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn parse_body<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, AdminError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| AdminError::bad(format!("invalid JSON body: {e}")))
}

fn tenant_id(s: &str) -> Result<TenantId, AdminError> {
    TenantId::new(s).map_err(|e| AdminError::bad(e.to_string()))
}

/// Runs a registry change on the blocking pool (it fsyncs a file).
async fn blocking<R: Send + 'static>(
    st: &Arc<AppState>,
    f: impl FnOnce(&dyn Registry) -> stratus_tenancy::Result<R> + Send + 'static,
) -> Result<R, AdminError> {
    let reg = st.registry.clone();
    tokio::task::spawn_blocking(move || f(&*reg))
        .await
        .map_err(|e| AdminError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            msg: format!("registry task failed: {e}"),
        })?
        .map_err(AdminError::from)
}

/// A tenant's listing plus its effective limits.
fn tenant_json(st: &AppState, info: &stratus_tenancy::TenantInfo) -> serde_json::Value {
    let mut v = to_value(info);
    if let (Some(o), Ok(t)) = (v.as_object_mut(), TenantId::new(&info.id)) {
        o.insert("effective_limits".into(), to_value(st.effective_limits(&t)));
    }
    v
}

/// `GET /api/v1/admin/tenants`
pub(crate) async fn list_tenants(State(st): State<Arc<AppState>>) -> Response {
    let list: Vec<_> = st
        .registry
        .tenants()
        .iter()
        .map(|t| tenant_json(&st, t))
        .collect();
    ok(StatusCode::OK, serde_json::Value::Array(list))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    id: String,
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    limits: Limits,
}

/// `POST /api/v1/admin/tenants`
pub(crate) async fn create_tenant(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let r = async {
        let req: CreateTenant = parse_body(&body)?;
        let id = tenant_id(&req.id)?;
        let plan = req.plan.filter(|p| !p.is_empty());
        let id2 = id.clone();
        let info = blocking(&st, move |r| r.create_tenant(&id2, plan, req.limits)).await?;
        st.apply_tenant_limits(&id).await;
        Ok::<_, AdminError>(ok(StatusCode::CREATED, tenant_json(&st, &info)))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/admin/tenants/{id}`
pub(crate) async fn show_tenant(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Response {
    let r = (|| {
        let id = tenant_id(&id)?;
        let info = st.registry.tenant(&id).ok_or_else(|| AdminError {
            status: StatusCode::NOT_FOUND,
            msg: format!("tenant {id} not found"),
        })?;
        let mut v = tenant_json(&st, &info);
        let tokens: Vec<_> = st
            .registry
            .tokens()
            .into_iter()
            .filter(|t| t.tenant.as_deref() == Some(id.as_str()))
            .collect();
        if let Some(o) = v.as_object_mut() {
            o.insert("token_list".into(), to_value(tokens));
        }
        Ok::<_, AdminError>(ok(StatusCode::OK, v))
    })();
    r.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchTenant {
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    limits: Option<Limits>,
    #[serde(default)]
    replace_limits: bool,
}

async fn update(st: &Arc<AppState>, id: &str, upd: TenantUpdate) -> Response {
    let r = async {
        let id = tenant_id(id)?;
        let id2 = id.clone();
        let info = blocking(st, move |r| r.update_tenant(&id2, upd)).await?;
        st.apply_tenant_limits(&id).await;
        Ok::<_, AdminError>(ok(StatusCode::OK, tenant_json(st, &info)))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `PATCH /api/v1/admin/tenants/{id}`
pub(crate) async fn patch_tenant(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let req: PatchTenant = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let upd = TenantUpdate {
        plan: req.plan.map(|p| (!p.is_empty()).then_some(p)),
        limits: req.limits,
        replace_limits: req.replace_limits,
    };
    update(&st, &id, upd).await
}

/// `PUT /api/v1/admin/tenants/{id}/limits`
pub(crate) async fn put_limits(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let limits: Limits = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let upd = TenantUpdate {
        plan: None,
        limits: Some(limits),
        replace_limits: true,
    };
    update(&st, &id, upd).await
}

/// `DELETE /api/v1/admin/tenants/{id}`
pub(crate) async fn delete_tenant(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Response {
    let r = async {
        let id = tenant_id(&id)?;
        let id2 = id.clone();
        let info = blocking(&st, move |r| r.delete_tenant(&id2)).await?;
        st.apply_tenant_limits(&id).await;
        st.rate_limiters.forget(&id);
        let mut v = to_value(&info);
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "data_kept".into(),
                serde_json::json!(format!(
                    "the tenant's data stays in {} and {} until removed by hand",
                    st.cfg.data_dir.join("tenants").join(id.as_str()).display(),
                    st.cfg.data_dir.join("blocks").join(id.as_str()).display()
                )),
            );
        }
        Ok::<_, AdminError>(ok(StatusCode::OK, v))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    #[serde(default)]
    name: Option<String>,
}

async fn create_token_for(st: &Arc<AppState>, scope: TokenScope, body: &Bytes) -> Response {
    let r = async {
        let req: CreateToken = parse_body(body)?;
        let name = req.name.unwrap_or_else(|| match &scope {
            TokenScope::Admin => "admin".into(),
            TokenScope::Tenant(t) => t.as_str().to_string(),
        });
        let t = blocking(st, move |r| r.create_token(scope, &name)).await?;
        Ok::<_, AdminError>(ok(StatusCode::CREATED, to_value(&t)))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /api/v1/admin/tenants/{id}/tokens`
pub(crate) async fn create_tenant_token(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    match tenant_id(&id) {
        Ok(t) => create_token_for(&st, TokenScope::Tenant(t), &body).await,
        Err(e) => e.into_response(),
    }
}

/// `GET /api/v1/admin/tenants/{id}/tokens`
pub(crate) async fn list_tenant_tokens(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Response {
    let list: Vec<_> = st
        .registry
        .tokens()
        .into_iter()
        .filter(|t| t.tenant.as_deref() == Some(id.as_str()))
        .collect();
    ok(StatusCode::OK, to_value(list))
}

/// `POST /api/v1/admin/tokens`: a new admin token.
pub(crate) async fn create_admin_token(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    create_token_for(&st, TokenScope::Admin, &body).await
}

/// `GET /api/v1/admin/tokens`
pub(crate) async fn list_tokens(State(st): State<Arc<AppState>>) -> Response {
    ok(StatusCode::OK, to_value(st.registry.tokens()))
}

/// `DELETE /api/v1/admin/tokens/{token_id}`
pub(crate) async fn revoke_token(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Response {
    match blocking(&st, move |r| r.revoke_token(&id)).await {
        Ok(t) => ok(StatusCode::OK, to_value(t)),
        Err(e) => e.into_response(),
    }
}

/// `GET /api/v1/admin/plans`
pub(crate) async fn list_plans(State(st): State<Arc<AppState>>) -> Response {
    ok(StatusCode::OK, to_value(st.registry.plans()))
}

/// `PUT /api/v1/admin/plans/{name}`: creates or replaces a plan; applied
/// at once to every tenant on it.
pub(crate) async fn put_plan(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let r = async {
        let limits: Limits = parse_body(&body)?;
        let l2 = limits.clone();
        blocking(&st, move |r| r.set_plan(&name, Some(l2))).await?;
        st.apply_all_limits().await;
        Ok::<_, AdminError>(ok(StatusCode::OK, to_value(limits)))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /api/v1/admin/plans/{name}` (refused while a tenant uses it).
pub(crate) async fn delete_plan(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Response {
    match blocking(&st, move |r| r.set_plan(&name, None)).await {
        Ok(()) => ok(StatusCode::OK, serde_json::Value::Null),
        Err(e) => e.into_response(),
    }
}
