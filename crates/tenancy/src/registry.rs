//! The [`Registry`] trait (what the service needs from a tenant store)
//! and the types it exchanges.
//!
//! The trait is synchronous: lookups are served from memory on every
//! request, and changes are rare admin actions. A cluster-wide store
//! (etcd) can implement it with an in-memory copy kept current by a watch.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use stratus_model::TenantId;

use crate::error::Result;
use crate::limits::Limits;

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An admin token: may use the admin API, reads no tenant's data.
    Admin {
        /// The token's id.
        token_id: String,
    },
    /// A tenant token: reads and writes that tenant's data only.
    Tenant {
        /// The tenant.
        tenant: TenantId,
        /// The token's id.
        token_id: String,
    },
}

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    /// The admin API.
    Admin,
    /// One tenant's data.
    Tenant(TenantId),
}

/// A tenant as listed by the registry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantInfo {
    /// The tenant id.
    pub id: String,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// The tenant's plan, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The tenant's own overrides.
    pub limits: Limits,
    /// Number of tokens of the tenant.
    pub tokens: usize,
}

/// A token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// Public id, used to revoke it.
    pub id: String,
    /// A human name.
    pub name: String,
    /// `admin` or `tenant`.
    pub kind: &'static str,
    /// The tenant of a tenant token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Creation time, Unix seconds.
    pub created: u64,
}

/// A token just created: the only time its secret is available.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct NewToken {
    /// The token's listing.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The secret, to send as a bearer token or basic-auth password.
    pub token: String,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("info", &self.info)
            .field("token", &"<secret>")
            .finish()
    }
}

/// A change to a tenant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantUpdate {
    /// `Some(None)` clears the plan, `Some(Some(p))` sets it.
    pub plan: Option<Option<String>>,
    /// New overrides.
    pub limits: Option<Limits>,
    /// Replace the overrides with `limits` instead of merging them in.
    pub replace_limits: bool,
}

/// The tenant store: tenants, plans, limits and tokens.
pub trait Registry: Send + Sync + fmt::Debug {
    /// The owner of `token`, or `None` for an unknown or revoked token.
    /// Called on every request: must be cheap (one hash, one map probe).
    fn authenticate(&self, token: &str) -> Option<Principal>;

    /// One tenant.
    fn tenant(&self, id: &TenantId) -> Option<TenantInfo>;

    /// All tenants, sorted by id.
    fn tenants(&self) -> Vec<TenantInfo>;

    /// Adds a tenant; fails if it exists or names an unknown plan.
    fn create_tenant(
        &self,
        id: &TenantId,
        plan: Option<String>,
        limits: Limits,
    ) -> Result<TenantInfo>;

    /// Changes a tenant's plan or limits.
    fn update_tenant(&self, id: &TenantId, update: TenantUpdate) -> Result<TenantInfo>;

    /// Removes a tenant and all its tokens.
    fn delete_tenant(&self, id: &TenantId) -> Result<TenantInfo>;

    /// Creates a token; the returned value is the only copy of the secret.
    fn create_token(&self, scope: TokenScope, name: &str) -> Result<NewToken>;

    /// Revokes a token by id.
    fn revoke_token(&self, id: &str) -> Result<TokenInfo>;

    /// All tokens (without secrets).
    fn tokens(&self) -> Vec<TokenInfo>;

    /// The named limit presets.
    fn plans(&self) -> BTreeMap<String, Limits>;

    /// Sets (`Some`) or removes (`None`) a plan; removing a plan in use
    /// fails.
    fn set_plan(&self, name: &str, limits: Option<Limits>) -> Result<()>;

    /// The tenant's plan overlaid by its own overrides (server defaults
    /// not included); empty for unknown tenants.
    fn limits(&self, id: &TenantId) -> Limits;

    /// A counter that changes whenever the registry changed by other
    /// means than this process' calls (a shared store's watch), so the
    /// server can re-apply storage limits. Constant for registries only
    /// this process changes.
    fn generation(&self) -> u64 {
        0
    }
}
