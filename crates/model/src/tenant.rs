//! Validated tenant ids.
//!
//! A tenant id names a directory on disk and a prefix in the object store,
//! so it is validated once, on construction: 1 to 150 bytes of ASCII
//! letters, digits and `-_.!*'()`, and never `.` or `..` (the character set
//! Cortex and Mimir accept, which cannot escape a directory).

use std::fmt;
use std::sync::Arc;

use crate::error::{InvalidTenantSnafu, Result};

/// Longest tenant id accepted, in bytes.
pub const MAX_TENANT_ID_LEN: usize = 150;

/// A validated tenant id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// Validates and wraps `id`.
    pub fn new(id: &str) -> Result<Self> {
        let fail = |reason| InvalidTenantSnafu { id, reason }.fail();
        if id.is_empty() {
            return fail("empty");
        }
        if id.len() > MAX_TENANT_ID_LEN {
            return fail("longer than 150 bytes");
        }
        if id == "." || id == ".." {
            return fail("'.' and '..' are reserved");
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!*'()".contains(&b))
        {
            return fail("only letters, digits and -_.!*'() are allowed");
        }
        Ok(Self(id.into()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_hostile_ids() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a b",
            "\u{e9}",
            &"x".repeat(151),
        ] {
            assert!(TenantId::new(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["default", "team-1", "a.b", "..a", "x(1)"] {
            assert!(TenantId::new(good).is_ok(), "{good:?} rejected");
        }
    }
}
