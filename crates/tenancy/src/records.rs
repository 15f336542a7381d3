//! The stored form of tenants and tokens, and the checks every registry
//! applies to names: shared by [`FileRegistry`](crate::FileRegistry) and
//! registries kept elsewhere (the cluster's etcd registry), so all of
//! them store the same records and refuse the same input.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use stratus_model::TenantId;

use crate::error::{InvalidSnafu, RandomSnafu, Result};
use crate::limits::Limits;
use crate::registry::{NewToken, Principal, TokenInfo, TokenScope};
use crate::token::{TokenHash, hash_token, hex, new_token, new_token_id, parse_hash, random_bytes};

/// A tenant as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRecord {
    /// Creation time, Unix seconds.
    pub created: u64,
    /// The tenant's plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The tenant's own overrides.
    #[serde(default)]
    pub limits: Limits,
}

/// A token as stored: its SHA-256 digest, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// Public id (`tok_` + 12 hex), used to revoke it.
    pub id: String,
    /// A human name.
    pub name: String,
    /// `admin` or `tenant`.
    pub kind: String,
    /// The tenant of a tenant token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Lower-case hex SHA-256 of the secret.
    pub sha256: String,
    /// Creation time, Unix seconds.
    pub created: u64,
}

/// Now, in Unix seconds.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random_err(e: getrandom::Error) -> crate::error::Error {
    RandomSnafu {
        message: e.to_string(),
    }
    .build()
}

/// `n` random bytes from the OS random source, as lower-case hex.
pub fn random_hex(n: usize) -> Result<String> {
    Ok(hex(&random_bytes(n).map_err(random_err)?))
}

/// Checks a token's name: at most 200 characters, no control characters.
pub fn validate_token_name(name: &str) -> Result<()> {
    if name.len() > 200 || name.chars().any(char::is_control) {
        return InvalidSnafu {
            message: "token name: at most 200 characters, no control characters",
        }
        .fail();
    }
    Ok(())
}

/// Checks a plan's name: 1 to 100 letters, digits, `-`, `_` or `.`.
pub fn validate_plan_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 100
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return InvalidSnafu {
            message: format!("plan name {name:?}: 1 to 100 letters, digits, '-', '_' or '.'"),
        }
        .fail();
    }
    Ok(())
}

/// Checks limits given to a registry (a 400 when wrong).
pub fn validate_limits(l: &Limits) -> Result<()> {
    l.validate()
        .map_err(|message| InvalidSnafu { message }.build())
}

impl TokenRecord {
    /// A fresh token for `scope`: the record to store and the secret to
    /// show once.
    pub fn mint(scope: &TokenScope, name: &str) -> Result<(TokenRecord, NewToken)> {
        let secret = new_token().map_err(random_err)?;
        let id = new_token_id().map_err(random_err)?;
        Ok(Self::for_secret(scope, name, id, secret))
    }

    /// The record of an operator-provided `secret` (e.g. an admin token
    /// file): its id is derived from the digest (`tok_` + the first 12
    /// hex digits), so every node registering the same secret writes the
    /// same record.
    pub fn from_secret(scope: &TokenScope, name: &str, secret: &str) -> TokenRecord {
        let digest = hex(&hash_token(secret));
        let id = format!("tok_{}", digest.get(..12).unwrap_or(&digest));
        Self::for_secret(scope, name, id, secret.to_string()).0
    }

    fn for_secret(
        scope: &TokenScope,
        name: &str,
        id: String,
        secret: String,
    ) -> (TokenRecord, NewToken) {
        let rec = TokenRecord {
            id,
            name: name.to_string(),
            kind: match scope {
                TokenScope::Admin => "admin".into(),
                TokenScope::Tenant(_) => "tenant".into(),
            },
            tenant: match scope {
                TokenScope::Admin => None,
                TokenScope::Tenant(t) => Some(t.as_str().to_string()),
            },
            sha256: hex(&hash_token(&secret)),
            created: now_secs(),
        };
        let nt = NewToken {
            info: rec.info(),
            token: secret,
        };
        (rec, nt)
    }

    /// The listing of the token.
    pub fn info(&self) -> TokenInfo {
        TokenInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: if self.kind == "admin" {
                "admin"
            } else {
                "tenant"
            },
            tenant: self.tenant.clone(),
            created: self.created,
        }
    }

    /// The stored digest, `None` when it is not 64 hex digits.
    pub fn hash(&self) -> Option<TokenHash> {
        parse_hash(&self.sha256)
    }

    /// Who the token belongs to, `None` for an inconsistent record (bad
    /// kind, an admin token with a tenant, a tenant token without one or
    /// with an invalid tenant id). Whether the tenant exists is the
    /// caller's check.
    pub fn principal(&self) -> Option<Principal> {
        match (self.kind.as_str(), &self.tenant) {
            ("admin", None) => Some(Principal::Admin {
                token_id: self.id.clone(),
            }),
            ("tenant", Some(t)) => Some(Principal::Tenant {
                tenant: TenantId::new(t).ok()?,
                token_id: self.id.clone(),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_and_provided_tokens() {
        let t = TenantId::new("a").unwrap();
        let (rec, nt) = TokenRecord::mint(&TokenScope::Tenant(t.clone()), "ci").unwrap();
        assert_eq!(rec.hash(), Some(hash_token(&nt.token)));
        assert!(!serde_json::to_string(&rec).unwrap().contains(&nt.token));
        assert!(matches!(rec.principal(), Some(Principal::Tenant { tenant, .. }) if tenant == t));
        let a = TokenRecord::from_secret(&TokenScope::Admin, "admin-file", "s3cret-s3cret");
        let b = TokenRecord::from_secret(&TokenScope::Admin, "admin-file", "s3cret-s3cret");
        assert_eq!(a.id, b.id);
        assert_eq!(a.id.len(), 16);
        assert!(matches!(a.principal(), Some(Principal::Admin { .. })));
        assert!(validate_plan_name("a b").is_err());
        assert!(validate_token_name("a\nb").is_err());
        assert_eq!(random_hex(4).unwrap().len(), 8);
    }
}
