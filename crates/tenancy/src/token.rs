//! API tokens: generation, hashing and comparison.
//!
//! A token is `stratus_` followed by 64 hex digits (32 bytes from the
//! operating system's random source). Only its SHA-256 digest is stored;
//! the token itself is shown once, when created. Lookups are keyed by the
//! digest, so finding a token's owner is one hash and one map probe.

use sha2::{Digest, Sha256};

/// The printable prefix of every token (lets secret scanners find them).
pub const TOKEN_PREFIX: &str = "stratus_";

/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// A SHA-256 digest of a token.
pub type TokenHash = [u8; 32];

/// Lower-case hex of `b`.
pub(crate) fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(char::from(DIGITS[usize::from(x >> 4)]));
        s.push(char::from(DIGITS[usize::from(x & 15)]));
    }
    s
}

/// Parses 64 hex digits into a digest.
pub(crate) fn parse_hash(s: &str) -> Option<TokenHash> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nib(*b.get(2 * i)?)? << 4) | nib(*b.get(2 * i + 1)?)?;
    }
    Some(out)
}

/// The digest under which `token` is stored.
pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two byte strings in time independent of where they differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // Keep the optimiser from short-cutting the loop above.
    std::hint::black_box(diff) == 0
}

/// `n` bytes from the OS random source.
pub(crate) fn random_bytes(n: usize) -> Result<Vec<u8>, getrandom::Error> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b)?;
    Ok(b)
}

/// A new random token.
pub(crate) fn new_token() -> Result<String, getrandom::Error> {
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        hex(&random_bytes(TOKEN_BYTES)?)
    ))
}

/// A new token id (public, for listing and revoking): `tok_` + 12 hex.
pub(crate) fn new_token_id() -> Result<String, getrandom::Error> {
    Ok(format!("tok_{}", hex(&random_bytes(6)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hash_round_trips() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        let h = hash_token(&a);
        assert_eq!(parse_hash(&hex(&h)), Some(h));
        assert_eq!(parse_hash("zz"), None);
        assert_eq!(parse_hash(&"g".repeat(64)), None);
        // Known SHA-256 vector.
        assert_eq!(
            hex(&hash_token("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(new_token_id().unwrap().starts_with("tok_"));
    }
}
