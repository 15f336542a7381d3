//! Set operations on postings lists (sorted, duplicate-free `u64` slices).
//!
//! Every operation allocates its output once (sized by an upper bound) and
//! nothing per element. When one input is much shorter than the other
//! (ratio >= [`GALLOP_RATIO`]), the short side drives an exponential
//! ("galloping") search in the long side, so the cost is
//! `O(short * log(long / short))` instead of `O(short + long)`; otherwise a
//! plain linear merge wins because it is branch-predictable and streams
//! memory.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::Postings;

/// Length ratio from which galloping beats a linear merge.
const GALLOP_RATIO: usize = 16;

/// Index of the first element of `s` that is `>= target` (`s.len()` when
/// none is), found by exponential then binary search from the front. Cheap
/// when the answer is near the start, which is the common case when the
/// caller advances through `s` in order.
fn gallop(s: &[u64], target: u64) -> usize {
    let mut hi = 1;
    while hi < s.len() && s[hi] < target {
        hi *= 2;
    }
    let lo = hi / 2;
    let end = (hi + 1).min(s.len());
    if lo >= end {
        return end;
    }
    lo + s[lo..end].partition_point(|&x| x < target)
}

/// The ids present in both `a` and `b`.
pub fn intersect(a: &[u64], b: &[u64]) -> Postings {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(small.len());
    if small.is_empty() {
        return out;
    }
    if large.len() / small.len() >= GALLOP_RATIO {
        let mut rest = large;
        for &x in small {
            let i = gallop(rest, x);
            match rest.get(i) {
                None => break,
                Some(&y) if y == x => {
                    out.push(x);
                    rest = &rest[i + 1..];
                }
                Some(_) => rest = &rest[i..],
            }
        }
        return out;
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        match x.cmp(&y) {
            Ordering::Less => i += 1,
            Ordering::Greater => j += 1,
            Ordering::Equal => {
                out.push(x);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// Keeps in `acc` only the ids also in `other`, reusing `acc`'s buffer.
fn retain_common(acc: &mut Vec<u64>, other: &[u64]) {
    if acc.is_empty() {
        return;
    }
    if other.len() < acc.len() {
        *acc = intersect(acc, other);
        return;
    }
    let gallop_other = other.len() / acc.len() >= GALLOP_RATIO;
    let mut rest = other;
    let mut w = 0;
    for r in 0..acc.len() {
        let x = acc[r];
        let i = if gallop_other {
            gallop(rest, x)
        } else {
            rest.iter().position(|&y| y >= x).unwrap_or(rest.len())
        };
        match rest.get(i) {
            None => break,
            Some(&y) if y == x => {
                acc[w] = x;
                w += 1;
                rest = &rest[i + 1..];
            }
            Some(_) => rest = &rest[i..],
        }
    }
    acc.truncate(w);
}

/// The ids present in every list. Intersects smallest first and stops as
/// soon as the running result is empty. No lists → empty.
pub fn intersect_many(mut lists: Vec<Postings>) -> Postings {
    lists.sort_unstable_by_key(Vec::len);
    let mut it = lists.into_iter();
    let Some(mut acc) = it.next() else {
        return Vec::new();
    };
    for l in it {
        if acc.is_empty() {
            break;
        }
        retain_common(&mut acc, &l);
    }
    acc
}

/// Merges two lists, dropping duplicates.
fn union2(a: &[u64], b: &[u64]) -> Postings {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        match x.cmp(&y) {
            Ordering::Less => {
                out.push(x);
                i += 1;
            }
            Ordering::Greater => {
                out.push(y);
                j += 1;
            }
            Ordering::Equal => {
                out.push(x);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// The ids present in any list: a plain merge for two lists, a k-way heap
/// merge for more.
pub fn union_many(mut lists: Vec<Postings>) -> Postings {
    lists.retain(|l| !l.is_empty());
    match lists.len() {
        0 => return Vec::new(),
        1 => return lists.pop().unwrap_or_default(),
        2 => return union2(&lists[0], &lists[1]),
        _ => {}
    }
    let total: usize = lists.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total);
    // (next value, list index); positions[list] is the index of that value.
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = lists
        .iter()
        .enumerate()
        .filter_map(|(k, l)| l.first().map(|&v| Reverse((v, k))))
        .collect();
    let mut positions = vec![0usize; lists.len()];
    while let Some(Reverse((v, k))) = heap.pop() {
        if out.last() != Some(&v) {
            out.push(v);
        }
        let list = &lists[k];
        if heap.is_empty() {
            // Only this list is left: copy its tail, skipping `v`.
            out.extend_from_slice(&list[positions[k] + 1..]);
            break;
        }
        positions[k] += 1;
        if let Some(&next) = list.get(positions[k]) {
            heap.push(Reverse((next, k)));
        }
    }
    out
}

/// The ids of `a` that are not in `b`.
pub fn subtract(a: &[u64], b: &[u64]) -> Postings {
    if b.is_empty() || a.is_empty() {
        return a.to_vec();
    }
    let mut out = Vec::with_capacity(a.len());
    if b.len() / a.len() >= GALLOP_RATIO {
        // Few ids to keep or drop: look each one up in `b`.
        let mut rest = b;
        for &x in a {
            let i = gallop(rest, x);
            rest = &rest[i..];
            if rest.first() != Some(&x) {
                out.push(x);
            }
        }
        return out;
    }
    if a.len() / b.len() >= GALLOP_RATIO {
        // Few ids to remove: copy the runs between them.
        let mut rest = a;
        for &y in b {
            let i = gallop(rest, y);
            out.extend_from_slice(&rest[..i]);
            rest = &rest[i..];
            if rest.first() == Some(&y) {
                rest = &rest[1..];
            }
            if rest.is_empty() {
                break;
            }
        }
        out.extend_from_slice(rest);
        return out;
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        match x.cmp(&y) {
            Ordering::Less => {
                out.push(x);
                i += 1;
            }
            Ordering::Greater => j += 1,
            Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn set(v: &[u64]) -> BTreeSet<u64> {
        v.iter().copied().collect()
    }

    fn sorted(s: BTreeSet<u64>) -> Vec<u64> {
        s.into_iter().collect()
    }

    /// Lists with a mix of densities so both merge and gallop paths run.
    fn list() -> impl Strategy<Value = Vec<u64>> {
        prop_oneof![
            proptest::collection::btree_set(0u64..64, 0..8),
            proptest::collection::btree_set(0u64..64, 0..64),
            proptest::collection::btree_set(0u64..2000, 0..600),
            proptest::collection::btree_set(any::<u64>(), 0..4),
        ]
        .prop_map(sorted)
    }

    #[test]
    fn gallop_finds_lower_bound() {
        let s: Vec<u64> = (0..100).map(|x| x * 2).collect();
        for t in 0..210 {
            assert_eq!(gallop(&s, t), s.partition_point(|&x| x < t), "target {t}");
        }
        assert_eq!(gallop(&[], 5), 0);
        assert_eq!(gallop(&[7], 5), 0);
        assert_eq!(gallop(&[7], 9), 1);
    }

    #[test]
    fn edge_cases() {
        assert!(intersect_many(vec![]).is_empty());
        assert!(union_many(vec![]).is_empty());
        assert_eq!(union_many(vec![vec![1, 2]]), vec![1, 2]);
        assert_eq!(subtract(&[1, 2, 3], &[]), vec![1, 2, 3]);
        assert!(subtract(&[], &[1]).is_empty());
        assert_eq!(intersect(&[u64::MAX], &[0, u64::MAX]), vec![u64::MAX]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn ops_match_btreeset(a in list(), b in list()) {
            let (sa, sb) = (set(&a), set(&b));
            prop_assert_eq!(intersect(&a, &b), sorted(&sa & &sb));
            prop_assert_eq!(subtract(&a, &b), sorted(&sa - &sb));
            prop_assert_eq!(union_many(vec![a.clone(), b.clone()]), sorted(&sa | &sb));
            let mut acc = a.clone();
            retain_common(&mut acc, &b);
            prop_assert_eq!(acc, sorted(&sa & &sb));
        }

        #[test]
        fn many_match_btreeset(lists in proptest::collection::vec(list(), 0..7)) {
            let sets: Vec<BTreeSet<u64>> = lists.iter().map(|l| set(l)).collect();
            let union = sets.iter().fold(BTreeSet::new(), |acc, s| &acc | s);
            prop_assert_eq!(union_many(lists.clone()), sorted(union));
            let inter = sets
                .iter()
                .skip(1)
                .fold(sets.first().cloned().unwrap_or_default(), |acc, s| &acc & s);
            prop_assert_eq!(intersect_many(lists), sorted(inter));
        }
    }
}
