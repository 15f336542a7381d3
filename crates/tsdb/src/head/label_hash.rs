//! The head's label-set hash: the key of its series lookup, computed once
//! per appended series, so its cost is paid on every sample of a request.
//!
//! Not stable across processes (a per-process random seed) and never
//! persisted: only [`super::Head`] uses it, and collisions are resolved by
//! comparing labels. Equal label sets hash equally whether owned or
//! borrowed, since only the pairs' bytes and lengths count.
//!
//! Each string is read in place with at most two (possibly overlapping)
//! unaligned loads when it is 16 bytes or shorter, as nearly all label
//! names and values are, so there is no per-string copy and no loop; longer
//! strings add one step per 16 bytes. A string's two words and its length
//! go through one 64×64→128-bit multiply whose halves are folded together.
//! A name and its value are reduced independently (two multiplies the CPU
//! runs in parallel) and joined into the running state with a third, so
//! the serial chain is one multiply per pair.

use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

use crate::series_labels::SeriesLabels;

const P0: u64 = 0xa076_1d64_78bd_642f;
const P1: u64 = 0xe703_7ed1_a0b4_28db;
const P2: u64 = 0x8ebc_6af0_9c88_c6e3;
const P3: u64 = 0x5899_65cc_7537_4cc3;

/// The 128-bit product of `a` and `b`, high and low halves xor-ed.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// The eight bytes of `b` at `at`, little-endian (also used by the
/// symbol table's string comparison).
#[inline(always)]
pub(super) fn word(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The four bytes of `b` at `at`, little-endian.
#[inline(always)]
pub(super) fn half(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u64::from(u32::from_le_bytes(a))
}

/// One string reduced to a word. For a given length the loads cover every
/// byte, so distinct strings of equal length differ in `(x, y)`; the length
/// itself is folded in, so `("ab", "c")` and `("a", "bc")` differ too.
#[inline(always)]
fn string(b: &[u8], k: u64) -> u64 {
    let n = b.len();
    let (x, y) = if n <= 16 {
        if n >= 8 {
            (word(b, 0), word(b, n - 8))
        } else if n >= 4 {
            ((half(b, 0) << 32) | half(b, n - 4), 0)
        } else if n > 0 {
            (
                (u64::from(b[0]) << 16) | (u64::from(b[n / 2]) << 8) | u64::from(b[n - 1]),
                0,
            )
        } else {
            (0, 0)
        }
    } else {
        let mut acc = k;
        let mut i = 0;
        while i + 16 < n {
            acc = fold(word(b, i) ^ P1, word(b, i + 8) ^ acc).wrapping_add(acc);
            i += 16;
        }
        (word(b, n - 16) ^ acc, word(b, n - 8))
    };
    fold(x ^ k, y ^ P0 ^ (n as u64))
}

fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| RandomState::new().hash_one(0x0053_5452_4154_5553_u64))
}

/// Hash of a label set for the head's series lookup; see the module docs.
pub(crate) fn series_hash(labels: &(impl SeriesLabels + ?Sized)) -> u64 {
    let mut h = seed() ^ (labels.len() as u64);
    for (n, v) in labels.pairs() {
        let a = string(n.as_bytes(), P1);
        let b = string(v.as_bytes(), P2);
        h = fold(a ^ h, b ^ P3).wrapping_add(h.rotate_left(23));
    }
    // Every input bit reaches both halves (the stripe uses the low bits,
    // the map's tags the high ones).
    fold(h ^ P0, h.rotate_left(32) ^ P1)
}
