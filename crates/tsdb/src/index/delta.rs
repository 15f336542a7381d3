//! Compressed postings lists for the head's in-memory index.
//!
//! A [`DeltaList`] stores a sorted, duplicate-free list of series ids as
//! LEB128 varints of the gaps between consecutive ids. Head series get
//! increasing ids as they are created, so the ids of one label pair are
//! mostly close together: typically one or two bytes per id instead of
//! eight. Appending an id above the last one (the normal case) is O(1).
//! Restart points every 64 ids make an insertion below the last id (two
//! appenders creating series at once, WAL replay of their interleaved
//! records) cost a short decode plus a move of the bytes after it, as an
//! insertion into a `Vec` does; deletions re-encode the list. Buffers grow
//! by an eighth at a time, so little capacity is unused.

use super::Postings;
use crate::varint::{get_uvarint, put_uvarint};

/// Elements between restart points.
const SKIP: usize = 64;

/// A sorted, duplicate-free list of ids, delta-varint encoded.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeltaList {
    bytes: Vec<u8>,
    /// Restart points, about every [`SKIP`] elements: `(value, offset)`
    /// where `value` is the element just before byte `offset`, so decoding
    /// can start there. Sorted by both fields.
    skips: Vec<(u64, u32)>,
    /// The largest id (valid when `len > 0`).
    last: u64,
    len: usize,
}

impl DeltaList {
    /// A list of the sorted, duplicate-free `ids`.
    pub(crate) fn from_sorted(ids: &[u64]) -> Self {
        let mut l = DeltaList::default();
        l.bytes.reserve_exact(ids.len() + ids.len() / 4);
        l.skips.reserve_exact(ids.len() / SKIP);
        for &id in ids {
            l.push(id);
        }
        l
    }

    /// Number of ids.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `id`, which must be above every id in the list.
    fn push(&mut self, id: u64) {
        debug_assert!(self.len == 0 || id > self.last);
        let gap = if self.len == 0 { id } else { id - self.last };
        if self.len > 0 && self.len % SKIP == 0 {
            if self.skips.len() == self.skips.capacity() {
                self.skips.reserve_exact((self.skips.len() / 8).max(4));
            }
            self.skips.push((self.last, self.bytes.len() as u32));
        }
        if self.bytes.capacity() - self.bytes.len() < 10 {
            self.bytes.reserve_exact((self.bytes.len() / 8).max(16));
        }
        put_uvarint(&mut self.bytes, gap);
        self.last = id;
        self.len += 1;
    }

    /// Adds `id` (no-op if present). Appending above the last id is O(1);
    /// an insertion decodes from the nearest restart point and moves the
    /// bytes after it.
    pub(crate) fn insert(&mut self, id: u64) {
        if self.len == 0 || id > self.last {
            self.push(id);
            return;
        }
        if id == self.last {
            return;
        }
        // Last restart point whose preceding value is below `id`.
        let k = self.skips.partition_point(|&(v, _)| v < id);
        let (mut prev, mut pos) = match k.checked_sub(1).and_then(|i| self.skips.get(i)) {
            Some(&(v, off)) => (v, off as usize),
            None => (0, 0),
        };
        let mut first = k == 0;
        loop {
            let start = pos;
            let Some(gap) = get_uvarint(&self.bytes, &mut pos) else {
                return; // unreachable: id < last is in range
            };
            let v = if first { gap } else { prev.wrapping_add(gap) };
            first = false;
            if v == id {
                return;
            }
            if v > id {
                // Replace the gap prev→v with prev→id, id→v.
                let mut repl = Vec::with_capacity(20);
                put_uvarint(&mut repl, if start == 0 { id } else { id - prev });
                put_uvarint(&mut repl, v - id);
                let grown = repl.len() - (pos - start);
                self.bytes.splice(start..pos, repl);
                for s in &mut self.skips[k..] {
                    s.1 += grown as u32;
                }
                self.len += 1;
                if self.len > 2 * SKIP * (self.skips.len() + 1) {
                    // Insertions made the restart points sparse.
                    *self = Self::from_sorted(&self.to_vec());
                }
                return;
            }
            prev = v;
        }
    }

    /// Removes the sorted `ids` present in the list.
    pub(crate) fn remove(&mut self, ids: &[u64]) {
        let v = self.to_vec();
        let rest = super::ops::subtract(&v, ids);
        if rest.len() != v.len() {
            *self = Self::from_sorted(&rest);
        }
    }

    /// Iterates the ids in ascending order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let mut pos = 0usize;
        let mut prev = 0u64;
        std::iter::from_fn(move || {
            let gap = get_uvarint(&self.bytes, &mut pos)?;
            prev = prev.wrapping_add(gap);
            Some(prev)
        })
    }

    /// The ids, decoded.
    pub(crate) fn to_vec(&self) -> Postings {
        let mut out = Vec::with_capacity(self.len);
        out.extend(self.iter());
        out
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.skips.capacity() * 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn append_insert_remove() {
        let mut l = DeltaList::default();
        assert!(l.is_empty());
        for id in [1, 2, 300, 70_000, u64::MAX] {
            l.insert(id);
        }
        l.insert(300); // present
        l.insert(u64::MAX); // present, last
        l.insert(5); // out of order
        assert_eq!(l.to_vec(), vec![1, 2, 5, 300, 70_000, u64::MAX]);
        assert_eq!(l.len(), 6);
        l.remove(&[2, 300, 301]);
        assert_eq!(l.to_vec(), vec![1, 5, 70_000, u64::MAX]);
        l.remove(&[1, 5, 70_000, u64::MAX]);
        assert!(l.is_empty());
        assert!(l.to_vec().is_empty());
        l.insert(7);
        assert_eq!(l.to_vec(), vec![7]);
    }

    #[test]
    fn dense_ids_take_about_a_byte() {
        let ids: Vec<u64> = (1000..11_000).collect();
        let l = DeltaList::from_sorted(&ids);
        assert!(l.heap_bytes() < 16_000, "{}", l.heap_bytes());
        assert_eq!(l.to_vec(), ids);
    }

    #[test]
    fn interleaved_inserts_stay_cheap_and_correct() {
        // Two creators interleaving ids: every other id arrives late.
        let mut l = DeltaList::default();
        for i in 0..20_000u64 {
            l.insert(2 * i);
        }
        for i in 0..20_000u64 {
            l.insert(2 * i + 1);
        }
        assert_eq!(l.to_vec(), (0..40_000).collect::<Vec<_>>());
        l.insert(39_999);
        l.insert(0);
        assert_eq!(l.len(), 40_000);
    }

    proptest! {
        #[test]
        fn behaves_like_a_sorted_set(ops in proptest::collection::vec((any::<bool>(), 0u64..5000), 0..600)) {
            let mut l = DeltaList::default();
            let mut want = std::collections::BTreeSet::new();
            for (add, id) in ops {
                if add {
                    l.insert(id);
                    want.insert(id);
                } else {
                    l.remove(&[id]);
                    want.remove(&id);
                }
            }
            prop_assert_eq!(l.to_vec(), want.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(l.len(), want.len());
        }
    }
}
