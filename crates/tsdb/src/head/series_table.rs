//! The head's series lookup by label-set hash: one open-addressing table
//! per hash stripe, written by hand so that the append path can prefetch.
//!
//! With 100k series and more, the table, the series and their symbols do
//! not fit in the CPU caches, and looking a series up is a chain of cache
//! misses that the locks on the way (every lock is a full fence on x86)
//! keep from overlapping. A slot here holds the hash and the series side
//! by side (16 bytes, one cache line read per probe instead of a control
//! byte group and an entry), and its address is a function of the hash
//! and of the table's [`SlotsHint`], which is readable without the stripe
//! lock, so [`Db::append`](crate::Db::append) fetches the slots of the
//! series a few positions ahead in its batch while it works on the current
//! one (see [`prefetch`]).
//!
//! Linear probing, power-of-two capacity, at most 3/4 full; removal
//! shifts the following run back (no tombstones). Equal hashes of
//! different label sets simply occupy several slots of one run: the
//! caller's comparison picks the right one.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{MemSeries, SeriesArc};

type Slot = Option<(u64, SeriesArc)>;

/// Hash → series for one stripe.
#[derive(Debug, Default)]
pub(crate) struct SeriesTable {
    slots: Box<[Slot]>,
    len: usize,
}

/// Where a stripe's slots are, for prefetching without its lock: written
/// under the stripe's write lock whenever the table grows, read relaxed.
/// A stale pair (read during a resize) only makes one prefetch useless.
#[derive(Debug, Default)]
pub(crate) struct SlotsHint {
    addr: AtomicUsize,
    mask: AtomicUsize,
}

impl SlotsHint {
    /// Hints the CPU to fetch the slot where a lookup of `hash` starts.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        let mask = self.mask.load(Ordering::Relaxed);
        let addr = self.addr.load(Ordering::Relaxed);
        if addr != 0 {
            prefetch(addr.wrapping_add((home(hash) & mask) * std::mem::size_of::<Slot>()));
        }
    }

    fn set(&self, t: &SeriesTable) {
        self.addr
            .store(t.slots.as_ptr() as usize, Ordering::Relaxed);
        self.mask
            .store(t.slots.len().saturating_sub(1), Ordering::Relaxed);
    }
}

/// Hints the CPU to bring the cache line at `addr` in. Never reads the
/// memory in the language's sense, so any address is fine (a freed or
/// unmapped one included); a no-op off x86-64.
#[inline(always)]
pub(crate) fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint that cannot fault or change memory,
    // whatever the address, and SSE is part of the x86-64 baseline.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::without_provenance(addr));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// The slot a hash starts probing at (before masking). The stripe is
/// picked by the hash's low bits, so the slot uses the high ones.
#[inline(always)]
fn home(hash: u64) -> usize {
    hash.rotate_right(32) as usize
}

impl SeriesTable {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// The series with `hash` for which `same` holds.
    #[inline]
    pub(crate) fn find(
        &self,
        hash: u64,
        mut same: impl FnMut(&MemSeries) -> bool,
    ) -> Option<&SeriesArc> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = home(hash) & mask;
        while let Some((h, s)) = &self.slots[i] {
            if *h == hash && same(s) {
                return Some(s);
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// The first series with `hash`, without comparing labels: what the
    /// append path prefetches.
    #[inline]
    pub(crate) fn first_with(&self, hash: u64) -> Option<&SeriesArc> {
        self.find(hash, |_| true)
    }

    /// Adds a series (the caller has checked it is not there yet) and
    /// refreshes `hint` when the table moved.
    pub(crate) fn insert(&mut self, hash: u64, s: SeriesArc, hint: &SlotsHint) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
            hint.set(self);
        }
        let i = self.free_slot(hash);
        self.slots[i] = Some((hash, s));
        self.len += 1;
    }

    /// The first empty slot of `hash`'s run (the table is never full).
    fn free_slot(&self, hash: u64) -> usize {
        let mask = self.mask();
        let mut i = home(hash) & mask;
        while self.slots[i].is_some() {
            i = (i + 1) & mask;
        }
        i
    }

    fn grow(&mut self) {
        let cap = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, (0..cap).map(|_| None).collect());
        for (h, s) in old.into_vec().into_iter().flatten() {
            let i = self.free_slot(h);
            self.slots[i] = Some((h, s));
        }
    }

    /// Removes the series with `hash` and id `id`; whether it was there.
    pub(crate) fn remove(&mut self, hash: u64, id: u64) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let mask = self.mask();
        let mut i = home(hash) & mask;
        loop {
            match &self.slots[i] {
                None => return false,
                Some((h, s)) if *h == hash && s.id == id => break,
                Some(_) => i = (i + 1) & mask,
            }
        }
        self.slots[i] = None;
        self.len -= 1;
        // Shift back the rest of the run: a slot may move into the hole
        // when its home is not cyclically inside (hole, slot].
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let Some((h, _)) = &self.slots[j] else {
                return true;
            };
            let k = home(*h) & mask;
            let stays = if hole <= j {
                hole < k && k <= j
            } else {
                hole < k || k <= j
            };
            if !stays {
                self.slots[hole] = self.slots[j].take();
                hole = j;
            }
        }
    }

    /// Every series in the table.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &SeriesArc> {
        self.slots.iter().flatten().map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn series(id: u64) -> SeriesArc {
        SeriesArc::new(MemSeries::new(id, Box::default()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Inserts and removals agree with a plain map, including many
        /// equal hashes (small hash space) and runs that wrap around.
        #[test]
        fn table_agrees_with_a_map(ops in proptest::collection::vec((any::<bool>(), 0u64..64, 0u64..40), 1..400)) {
            let hint = SlotsHint::default();
            let mut t = SeriesTable::default();
            let mut model: std::collections::BTreeMap<u64, u64> = Default::default();
            for (add, id, hsel) in ops {
                // Few distinct hashes, high bits varied so homes differ.
                let hash = (hsel % 8) << 40 | (hsel % 3);
                let present = model.contains_key(&id);
                if add && !present {
                    t.insert(hash, series(id), &hint);
                    model.insert(id, hash);
                } else if !add && present {
                    let h = model.remove(&id).unwrap();
                    prop_assert!(t.remove(h, id));
                } else if !add {
                    prop_assert!(!t.remove(hash, id));
                }
                prop_assert_eq!(t.len(), model.len());
                for (&id, &h) in &model {
                    prop_assert_eq!(t.find(h, |s| s.id == id).map(|s| s.id), Some(id));
                }
                let mut ids: Vec<u64> = t.iter().map(|s| s.id).collect();
                ids.sort_unstable();
                prop_assert_eq!(ids, model.keys().copied().collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn hint_follows_growth() {
        let hint = SlotsHint::default();
        let mut t = SeriesTable::default();
        hint.prefetch(7);
        for id in 0..100u64 {
            t.insert(id.wrapping_mul(0x9e37_79b9_7f4a_7c15), series(id), &hint);
        }
        assert_eq!(hint.addr.load(Ordering::Relaxed), t.slots.as_ptr() as usize);
        assert_eq!(hint.mask.load(Ordering::Relaxed), t.capacity() - 1);
        hint.prefetch(7);
    }
}
