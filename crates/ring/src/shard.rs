//! Shard keys: where a series lives on the ring.
//!
//! `shard_key(tenant, labels)` is xxh3-64 over `tenant 0xff` followed by
//! the label set's stable hash ([`Labels::stable_hash`]: xxh3 over the
//! sorted `name 0xff value 0xff` pairs), folded to 32 bits (high xor low).
//! It is a pure function of its inputs, identical in every process and
//! release: changing it would move every series to other ingesters.

use stratus_model::{Labels, hash_pairs};
use xxhash_rust::xxh3::xxh3_64;

/// The ring key of a series of `tenant`.
pub fn shard_key(tenant: &str, labels: &Labels) -> u32 {
    shard_key_from_hash(tenant, labels.stable_hash())
}

/// The ring key from a precomputed [`Labels::stable_hash`] (or
/// [`hash_pairs`] over sorted pairs).
pub fn shard_key_from_hash(tenant: &str, labels_hash: u64) -> u32 {
    let mut stack = [0u8; 256];
    let len = tenant.len() + 1 + 8;
    let mut heap = Vec::new();
    let buf: &mut [u8] = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    let t = tenant.len();
    buf[..t].copy_from_slice(tenant.as_bytes());
    buf[t] = 0xff;
    buf[t + 1..].copy_from_slice(&labels_hash.to_le_bytes());
    let h = xxh3_64(buf);
    (h ^ (h >> 32)) as u32
}

/// The ring key for labels held as unsorted `(name, value)` pairs (e.g. a
/// decoded remote-write series). Sorts a copy of the references by name;
/// for duplicate names the order given is kept.
pub fn shard_key_pairs<'a>(
    tenant: &str,
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> u32 {
    let mut v: Vec<(&str, &str)> = pairs.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    let h = hash_pairs(v.iter().map(|(n, val)| (n.as_bytes(), val.as_bytes())));
    shard_key_from_hash(tenant, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_order_independent() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let k = shard_key("t1", &l);
        assert_eq!(k, shard_key_pairs("t1", [("job", "a"), ("__name__", "up")]));
        assert_ne!(k, shard_key("t2", &l));
        // Pinned value: a change here moves every series in a cluster.
        assert_eq!(k, 1_352_646_397);
        let long = "x".repeat(300);
        let _ = shard_key(&long, &l);
    }
}
