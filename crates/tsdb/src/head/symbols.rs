//! String interning for the head.
//!
//! Every label name and value in the head is stored once; a series keeps
//! its label set as symbol ids, varint-encoded in one byte slice
//! ([`encode`]: name, value, name, value...; one or two bytes per id for
//! the first 16k strings instead of two fat pointers per label), which is
//! a large part of what makes the head's memory per series small.
//!
//! Reading a symbol takes no lock: strings live in slots that are written
//! once, in buckets of doubling size that are allocated once and never
//! moved, so the append path (which compares a request's labels with a
//! series' symbols for every sample) touches no shared cache line that
//! another appending thread writes. Only interning a new string takes the
//! table's write lock. A slot also keeps the string's first 16 bytes, so
//! the append path's comparison of a short label value reads one slot
//! rather than a slot and then the string's own allocation.
//!
//! Symbols are never removed while the head lives; a head with heavy
//! churn accumulates dead strings until restart (noted in
//! ARCHITECTURE.md).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use stratus_model::{Label, Labels};

/// Slots in the first bucket (log2); bucket `k` holds `FIRST << k` slots.
const FIRST_BITS: u32 = 10;
/// Enough buckets for every `u32` id.
const BUCKETS: usize = 33 - FIRST_BITS as usize;

type Slot = OnceLock<Sym>;

/// Bytes of a symbol kept in its slot ([`Sym::head`]).
const INLINE: usize = 16;

/// A symbol: its string, and the string's first bytes in the slot itself,
/// so that comparing a short string (most label values are) reads the
/// slot alone instead of the slot and then the string's allocation, a
/// second cache miss on every sample once the head outgrows the caches.
#[derive(Debug)]
struct Sym {
    s: Arc<str>,
    /// The first [`INLINE`] bytes of `s`, zero-padded.
    head: [u8; INLINE],
}

impl Sym {
    fn new(s: Arc<str>) -> Self {
        let mut head = [0; INLINE];
        let n = s.len().min(INLINE);
        head[..n].copy_from_slice(&s.as_bytes()[..n]);
        Self { s, head }
    }

    /// Whether the symbol is `b`; reads only the slot when `b` is short.
    #[inline(always)]
    fn is(&self, b: &[u8]) -> bool {
        let n = b.len();
        if n != self.s.len() {
            return false;
        }
        match self.head.get(..n) {
            Some(head) => same_bytes(head, b),
            None => same_bytes(self.s.as_bytes(), b),
        }
    }
}

/// The head's symbol table.
#[derive(Debug)]
pub(crate) struct Symbols {
    /// String → id, for interning. Writers hold the write lock while they
    /// assign an id and fill its slot.
    ids: RwLock<HashMap<Arc<str>, u32>>,
    /// Id → string; see the module docs.
    buckets: Box<[OnceLock<Box<[Slot]>>]>,
    len: AtomicU32,
}

impl Default for Symbols {
    fn default() -> Self {
        Self {
            ids: RwLock::default(),
            buckets: (0..BUCKETS).map(|_| OnceLock::new()).collect(),
            len: AtomicU32::new(0),
        }
    }
}

/// Bucket and offset of symbol `id`.
fn locate(id: u32) -> (usize, usize) {
    let i = u64::from(id) + (1 << FIRST_BITS);
    let k = 63 - i.leading_zeros() - FIRST_BITS;
    (k as usize, (i - ((1u64 << FIRST_BITS) << k)) as usize)
}

/// Appends `id` as a LEB128 varint.
fn put_varint(out: &mut Vec<u8>, mut id: u32) {
    while id >= 0x80 {
        out.push((id as u8) | 0x80);
        id >>= 7;
    }
    out.push(id as u8);
}

/// Encodes symbol ids (name, value, name, value...) as varints.
pub(crate) fn encode(ids: &[u32]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(ids.len() * 2);
    for &id in ids {
        put_varint(&mut out, id);
    }
    out.into_boxed_slice()
}

/// Decodes the ids written by [`encode`]; stops at a truncated varint.
#[derive(Debug, Clone)]
pub(crate) struct Ids<'a>(&'a [u8]);

impl Iterator for Ids<'_> {
    type Item = u32;

    #[inline]
    fn next(&mut self) -> Option<u32> {
        let mut v = 0u32;
        let mut shift = 0;
        while let Some((&b, rest)) = self.0.split_first() {
            self.0 = rest;
            v |= u32::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
            if b < 0x80 {
                return Some(v);
            }
            shift += 7;
        }
        None
    }
}

/// Byte equality without a `memcmp` call for the short strings label names
/// and values nearly always are: equal lengths, then word loads per side
/// (the last one overlapping the one before), which cover every byte.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if std::ptr::eq(a.as_ptr(), b.as_ptr()) {
        return true;
    }
    use super::label_hash::{half, word};
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        // Metric names: most are 17–40 bytes.
        17..=48 => {
            let mut at = 0;
            while at + 8 < n {
                if word(a, at) != word(b, at) {
                    return false;
                }
                at += 8;
            }
            word(a, n - 8) == word(b, n - 8)
        }
        _ => a == b,
    }
}

/// The (name, value) id pairs of an encoded label set.
pub(crate) fn pairs(syms: &[u8]) -> impl Iterator<Item = (u32, u32)> + '_ {
    let mut it = Ids(syms);
    std::iter::from_fn(move || Some((it.next()?, it.next()?)))
}

impl Symbols {
    /// The string of symbol `id` (lock-free).
    #[inline]
    pub(crate) fn get(&self, id: u32) -> Option<&Arc<str>> {
        self.sym(id).map(|x| &x.s)
    }

    #[inline]
    fn sym(&self, id: u32) -> Option<&Sym> {
        let (k, off) = locate(id);
        self.buckets.get(k)?.get()?.get(off)?.get()
    }

    fn str_of(&self, id: u32) -> &str {
        self.get(id).map_or("", |s| &**s)
    }

    /// The id of `s`, interning it if new.
    pub(crate) fn intern(&self, s: &Arc<str>) -> u32 {
        if let Some(&id) = self.ids.read().get(&**s) {
            return id;
        }
        let mut w = self.ids.write();
        if let Some(&id) = w.get(&**s) {
            return id;
        }
        let id = self.len.load(AtomicOrdering::Relaxed);
        let (k, off) = locate(id);
        if let Some(bucket) = self.buckets.get(k) {
            let slots = bucket.get_or_init(|| {
                (0..(1usize << FIRST_BITS) << k)
                    .map(|_| OnceLock::new())
                    .collect()
            });
            if let Some(slot) = slots.get(off) {
                let _ = slot.set(Sym::new(s.clone()));
            }
        }
        w.insert(s.clone(), id);
        self.len
            .store(id.saturating_add(1), AtomicOrdering::Release);
        id
    }

    /// Interns every name and value of `labels`; returns them encoded.
    pub(crate) fn intern_labels(&self, labels: &Labels) -> Box<[u8]> {
        let ids: Vec<u32> = labels
            .iter()
            .flat_map(|l| [self.intern(&l.name), self.intern(&l.value)])
            .collect();
        encode(&ids)
    }

    /// Rebuilds a label set from encoded symbol ids.
    pub(crate) fn labels(&self, syms: &[u8]) -> Labels {
        let get = |id: u32| self.get(id).cloned().unwrap_or_else(|| Arc::from(""));
        Labels::from_sorted_unchecked(
            pairs(syms)
                .map(|(n, v)| Label {
                    name: get(n),
                    value: get(v),
                })
                .collect(),
        )
    }

    /// Whether an encoded label set equals `labels` (owned or borrowed),
    /// compared in place (no allocation, no lock).
    pub(crate) fn matches(
        &self,
        syms: &[u8],
        labels: &(impl crate::series_labels::SeriesLabels + ?Sized),
    ) -> bool {
        let eq = |id: u32, s: &str| self.sym(id).is_some_and(|x| x.is(s.as_bytes()));
        let mut ls = labels.pairs();
        for (n, v) in pairs(syms) {
            match ls.next() {
                Some((ln, lv)) if eq(n, ln) && eq(v, lv) => {}
                _ => return false,
            }
        }
        ls.next().is_none()
    }

    /// Looks up the value of label `name` in an encoded label set.
    pub(crate) fn value_of(&self, syms: &[u8], name: &str) -> Option<Arc<str>> {
        pairs(syms)
            .find(|&(n, _)| self.get(n).is_some_and(|x| &**x == name))
            .and_then(|(_, v)| self.get(v).cloned())
    }

    /// Collects the label names of an encoded label set.
    pub(crate) fn names_into(&self, syms: &[u8], out: &mut std::collections::BTreeSet<String>) {
        for (n, _) in pairs(syms) {
            if let Some(n) = self.get(n) {
                if !out.contains(&**n) {
                    out.insert(n.to_string());
                }
            }
        }
    }

    /// Compares two encoded label sets the way `Labels` orders them.
    pub(crate) fn cmp_labels(&self, a: &[u8], b: &[u8]) -> Ordering {
        let (mut a, mut b) = (pairs(a), pairs(b));
        loop {
            match (a.next(), b.next()) {
                (Some(x), Some(y)) => {
                    let o = self
                        .str_of(x.0)
                        .cmp(self.str_of(y.0))
                        .then_with(|| self.str_of(x.1).cmp(self.str_of(y.1)));
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                (None, None) => return Ordering::Equal,
                (None, Some(_)) => return Ordering::Less,
                (Some(_), None) => return Ordering::Greater,
            }
        }
    }

    /// Number of distinct strings and their approximate heap bytes (string
    /// allocations, lookup entries and slots).
    pub(crate) fn stats(&self) -> (usize, usize) {
        let r = self.ids.read();
        let strings: usize = r.keys().map(|s| (s.len() + 16).next_multiple_of(8)).sum();
        let table = r.capacity() * 8 / 7 * (16 + 4 + 1);
        let slots: usize = self
            .buckets
            .iter()
            .filter_map(OnceLock::get)
            .map(|b| b.len() * std::mem::size_of::<Slot>())
            .sum();
        (r.len(), strings + table + slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_is_byte_equality_at_every_length_and_position() {
        for n in 0..=70usize {
            let a: Vec<u8> = (0..n).map(|i| (i * 7 + 1) as u8).collect();
            assert!(same_bytes(&a, &a.clone()), "len {n}");
            for i in 0..n {
                let mut b = a.clone();
                b[i] ^= 0x20;
                assert!(!same_bytes(&a, &b), "len {n}, byte {i}");
            }
            let mut longer = a.clone();
            longer.push(0);
            assert!(!same_bytes(&a, &longer));
        }
    }

    /// Strings up to the slot's inline bytes are compared from the slot,
    /// longer ones from their allocation: equal strings match at every
    /// length and a difference at any byte, inside the inline part or
    /// after it, does not.
    #[test]
    fn symbols_compare_inline_and_longer_strings() {
        let s = Symbols::default();
        for n in [0, 1, 7, 8, 15, INLINE, INLINE + 1, 40] {
            let text: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            let id = s.intern(&Arc::from(text.as_str()));
            let x = s.sym(id).expect("interned");
            assert!(x.is(text.as_bytes()), "len {n}");
            for i in 0..n {
                let mut other = text.clone().into_bytes();
                other[i] = b'Z';
                assert!(!x.is(&other), "len {n}, byte {i}");
            }
            assert!(!x.is(format!("{text}a").as_bytes()), "len {n} + 1");
            if n > 0 {
                assert!(!x.is(&text.as_bytes()[..n - 1]), "len {n} - 1");
            }
        }
        // A string that only agrees with the slot's zero padding.
        let id = s.intern(&Arc::from("ab"));
        assert!(!s.sym(id).expect("interned").is(b"ab\0"));
    }

    #[test]
    fn locate_covers_ids_without_gaps() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(1023), (0, 1023));
        assert_eq!(locate(1024), (1, 0));
        assert_eq!(locate(3071), (1, 2047));
        assert_eq!(locate(3072), (2, 0));
        let (k, _) = locate(u32::MAX);
        assert!(k < BUCKETS);
    }

    #[test]
    fn varints_round_trip() {
        let ids = [0, 1, 127, 128, 16_383, 16_384, u32::MAX];
        let enc = encode(&ids);
        assert_eq!(Ids(&enc).collect::<Vec<_>>(), ids);
        assert_eq!(enc.len(), 1 + 1 + 1 + 2 + 2 + 3 + 5);
        // A truncated varint ends the sequence.
        assert_eq!(Ids(&[0x80]).count(), 0);
        assert_eq!(pairs(&encode(&[1, 2, 3])).count(), 1);
    }

    #[test]
    fn interning_across_buckets() {
        let s = Symbols::default();
        let strs: Vec<Arc<str>> = (0..5000).map(|i| Arc::from(format!("s{i}"))).collect();
        for (i, x) in strs.iter().enumerate() {
            assert_eq!(s.intern(x), i as u32);
        }
        assert_eq!(s.intern(&Arc::from("s4321")), 4321);
        for (i, x) in strs.iter().enumerate() {
            assert_eq!(s.get(i as u32).map(|a| &**a), Some(&**x));
        }
        assert!(s.get(5000).is_none());
        assert_eq!(s.stats().0, 5000);
    }
}
