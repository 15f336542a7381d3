//! The Stratus tenant registry: tenants, plans (named limit presets),
//! per-tenant [`Limits`] and API tokens.
//!
//! - [`Registry`] is what the service uses: token → tenant lookup on every
//!   request, tenant/plan/token administration, a tenant's limits.
//! - [`FileRegistry`] keeps it in one JSON file (`<data>/registry.json`,
//!   mode 0600, written atomically) and serves lookups from memory.
//! - Tokens (`stratus_` + 64 hex digits from the OS random source) are
//!   stored only as SHA-256 digests ([`hash_token`]); a token is shown
//!   once, when created. Admin tokens reach the admin API only; tenant
//!   tokens reach their tenant's data only.

mod error;
mod file;
mod limits;
mod records;
mod registry;
mod token;

pub use error::{Error, Result};
pub use file::{Bootstrapped, DEFAULT_TENANT, FileRegistry, create_private_dir, write_private};
pub use limits::{
    DEFAULT_HA_CLUSTER_LABEL, DEFAULT_HA_MAX_CLUSTERS, DEFAULT_HA_REPLICA_LABEL, Limits, limit_of,
};
pub use records::{
    TenantRecord, TokenRecord, now_secs, random_hex, validate_limits, validate_plan_name,
    validate_token_name,
};
pub use registry::{
    NewToken, Principal, Registry, TenantInfo, TenantUpdate, TokenInfo, TokenScope,
};
pub use token::{TOKEN_PREFIX, TokenHash, ct_eq, hash_token};
