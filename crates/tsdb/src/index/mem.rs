//! The head's in-memory inverted index.
//!
//! [`MemPostings`] maps every label pair `name=value` to the sorted ids of
//! the series that carry it, plus the list of all series ids. It is shared
//! by appenders (which add series) and queriers (which evaluate matchers),
//! so it is `Send + Sync` behind one `parking_lot::RwLock`: adding a series
//! is a handful of hash lookups, short enough that sharding the lock buys
//! nothing measurable on the head's workload, and a single lock keeps a
//! series' pairs and the all-series list consistent with each other.
//!
//! Memory is the design constraint (the whole head targets <= 1 KiB per
//! active series with ~10 labels):
//! - label names and values are `Arc<str>` keys shared with the head's label
//!   sets (see [`MemPostings::intern_labels`]), so each distinct string is
//!   stored once;
//! - a pair carried by a single series (ids, pod names, ...) stores its id
//!   inline; other pairs own a delta-varint list ([`DeltaList`]), about one
//!   or two bytes per label per series, as does the list of all series;
//! - sorted value iteration (needed by regex matchers and `label_values`)
//!   uses one `Vec<Arc<str>>` per label name, appended to as values appear
//!   and re-sorted lazily only when a value arrived out of order. Sorting
//!   is a stable sort, which merges the sorted prefix with the new tail in
//!   about linear time.
//!
//! Ids are normally added in increasing order (an append); an out-of-order
//! add (concurrent creation, WAL replay) decodes from the nearest restart
//! point of the list.
//!
//! No lock is held while calling back into caller code: `for_each_value`
//! copies values out in bounded batches and calls the callback between
//! batches, so the callback may query this index again.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::mem::size_of;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock, RwLockWriteGuard};
use stratus_model::{Label, Labels};

use super::delta::DeltaList;
use super::{Postings, PostingsSource};
use crate::error::Result;

/// Values handed to a `for_each_value` callback per lock acquisition.
const VALUE_BATCH: usize = 512;

/// The ids of one label pair.
enum Ids {
    /// Exactly one series: no heap allocation.
    One(u64),
    /// Two or more series, delta-compressed (boxed so that the common
    /// single-series pairs keep the map entries small).
    Many(Box<DeltaList>),
}

impl Ids {
    fn insert(&mut self, id: u64) {
        match self {
            Ids::One(x) => {
                let x = *x;
                if x != id {
                    let pair = if x < id { [x, id] } else { [id, x] };
                    *self = Ids::Many(Box::new(DeltaList::from_sorted(&pair)));
                }
            }
            Ids::Many(v) => v.insert(id),
        }
    }

    /// Removes `ids` (sorted); returns whether the list is now empty.
    fn remove(&mut self, ids: &[u64]) -> bool {
        match self {
            Ids::One(x) => ids.binary_search(x).is_ok(),
            Ids::Many(v) => {
                v.remove(ids);
                match v.len() {
                    0 => return true,
                    1 => {
                        let one = v.iter().next();
                        if let Some(one) = one {
                            *self = Ids::One(one);
                        }
                    }
                    _ => {}
                }
                false
            }
        }
    }

    fn to_postings(&self) -> Postings {
        match self {
            Ids::One(x) => vec![*x],
            Ids::Many(v) => v.to_vec(),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Ids::One(_) => 0,
            Ids::Many(v) => size_of::<DeltaList>() + v.heap_bytes(),
        }
    }
}

/// The values of one label name.
#[derive(Default)]
struct Values {
    ids: HashMap<Arc<str>, Ids>,
    /// Every key of `ids`; `sorted[..sorted_len]` is in ascending order.
    sorted: Vec<Arc<str>>,
    sorted_len: usize,
}

impl Values {
    fn add(&mut self, value: &Arc<str>, id: u64) {
        if let Some(ids) = self.ids.get_mut(&**value) {
            ids.insert(id);
            return;
        }
        self.ids.insert(value.clone(), Ids::One(id));
        let in_order = self.sorted_len == self.sorted.len()
            && self.sorted.last().is_none_or(|last| **last < **value);
        self.sorted.push(value.clone());
        if in_order {
            self.sorted_len = self.sorted.len();
        }
    }

    fn is_sorted(&self) -> bool {
        self.sorted_len == self.sorted.len()
    }

    fn ensure_sorted(&mut self) {
        if !self.is_sorted() {
            // Stable sort: finds the long sorted prefix as one run.
            self.sorted.sort();
            self.sorted_len = self.sorted.len();
        }
    }

    /// Drops from `sorted` the values no longer in `ids` (order kept).
    fn prune(&mut self) {
        let was_sorted = self.is_sorted();
        let ids = &self.ids;
        self.sorted.retain(|v| ids.contains_key(&**v));
        self.sorted_len = if was_sorted { self.sorted.len() } else { 0 };
    }

    /// Up to `max` values from the first one `>= from` (`> from` when not
    /// `inclusive`). Requires `is_sorted()`.
    fn batch(&self, from: &str, inclusive: bool, max: usize) -> Vec<Arc<str>> {
        let start = if inclusive {
            self.sorted.partition_point(|v| **v < *from)
        } else {
            self.sorted.partition_point(|v| **v <= *from)
        };
        self.sorted.iter().skip(start).take(max).cloned().collect()
    }
}

#[derive(Default)]
struct Inner {
    /// Every series id.
    all: DeltaList,
    names: HashMap<Arc<str>, Values>,
}

impl Inner {
    /// Removes `ids` from the pair; returns whether the value is gone.
    fn remove_pair(&mut self, name: &str, value: &str, ids: &[u64]) -> bool {
        let Some(values) = self.names.get_mut(name) else {
            return false;
        };
        let Some(list) = values.ids.get_mut(value) else {
            return false;
        };
        if list.remove(ids) {
            values.ids.remove(value);
            return true;
        }
        false
    }

    /// Drops vanished values from the sorted lists of `names` (and names
    /// left without values).
    fn prune<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        for name in names {
            if let Some(values) = self.names.get_mut(name) {
                if values.ids.is_empty() {
                    self.names.remove(name);
                } else {
                    values.prune();
                }
            }
        }
    }
}

/// The head's in-memory inverted index. See the module docs.
#[derive(Default)]
pub struct MemPostings {
    inner: RwLock<Inner>,
    /// General-purpose interner for strings that are not (yet) index keys.
    symbols: Mutex<HashSet<Arc<str>>>,
}

impl fmt::Debug for MemPostings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.inner.read();
        f.debug_struct("MemPostings")
            .field("series", &g.all.len())
            .field("label_names", &g.names.len())
            .finish()
    }
}

impl MemPostings {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Indexes series `id` under each of its labels. Adding the same id and
    /// labels twice is a no-op. Keys take over `labels`' `Arc<str>`s for
    /// pairs not yet indexed, so pass interned labels
    /// ([`intern_labels`](Self::intern_labels)) to share strings.
    pub fn add(&self, id: u64, labels: &Labels) {
        let mut g = self.inner.write();
        g.all.insert(id);
        for Label { name, value } in labels {
            match g.names.get_mut(&**name) {
                Some(values) => values.add(value, id),
                None => {
                    let mut values = Values::default();
                    values.add(value, id);
                    g.names.insert(name.clone(), values);
                }
            }
        }
    }

    /// Removes the series `ids` (any order). `labels_of` gives each removed
    /// series' labels; it is called before the index is locked. Series it
    /// returns `None` for are removed by a scan of every list (slow but
    /// correct).
    pub fn delete(&self, ids: &[u64], labels_of: &dyn Fn(u64) -> Option<Labels>) {
        let mut known = Vec::with_capacity(ids.len());
        let mut unknown = Vec::new();
        for &id in ids {
            match labels_of(id) {
                Some(l) => known.push((id, l)),
                None => unknown.push(id),
            }
        }
        self.delete_series(&known);
        if !unknown.is_empty() {
            unknown.sort_unstable();
            unknown.dedup();
            let mut g = self.inner.write();
            g.all.remove(&unknown);
            let Inner { names, .. } = &mut *g;
            for values in names.values_mut() {
                let before = values.ids.len();
                values.ids.retain(|_, list| !list.remove(&unknown));
                if values.ids.len() != before {
                    values.prune();
                }
            }
            names.retain(|_, values| !values.ids.is_empty());
        }
    }

    /// Removes series given with their labels.
    pub fn delete_series(&self, series: &[(u64, Labels)]) {
        if series.is_empty() {
            return;
        }
        let mut by_pair: HashMap<(&str, &str), Vec<u64>> = HashMap::new();
        let mut ids: Vec<u64> = Vec::with_capacity(series.len());
        for (id, labels) in series {
            ids.push(*id);
            for l in labels {
                by_pair.entry((&l.name, &l.value)).or_default().push(*id);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        for list in by_pair.values_mut() {
            list.sort_unstable();
            list.dedup();
        }
        let mut g = self.inner.write();
        g.all.remove(&ids);
        let mut touched: HashSet<&str> = HashSet::new();
        for (&(name, value), list) in &by_pair {
            if g.remove_pair(name, value, list) {
                touched.insert(name);
            }
        }
        g.prune(touched);
    }

    /// Every label name with at least one value, sorted.
    pub fn label_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .inner
            .read()
            .names
            .keys()
            .map(|k| k.to_string())
            .collect();
        out.sort_unstable();
        out
    }

    /// Every value of label `name`, sorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        let g = self.sorted_read(name);
        g.names
            .get(name)
            .map(|v| v.sorted.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default()
    }

    /// Number of indexed series.
    pub fn num_series(&self) -> usize {
        self.inner.read().all.len()
    }

    /// Returns `labels` with each name and value replaced by the index's own
    /// `Arc<str>` when the index already holds that string for that label,
    /// so a series' label set shares its strings with the index and with
    /// other series. This is the cheap way to intern: no extra table.
    pub fn intern_labels(&self, labels: &Labels) -> Labels {
        let g = self.inner.read();
        let v: Vec<Label> = labels
            .iter()
            .map(|l| match g.names.get_key_value(&*l.name) {
                Some((name, values)) => Label {
                    name: name.clone(),
                    value: values
                        .ids
                        .get_key_value(&*l.value)
                        .map_or_else(|| l.value.clone(), |(v, _)| v.clone()),
                },
                None => l.clone(),
            })
            .collect();
        Labels::from_sorted_unchecked(v)
    }

    /// Interns an arbitrary string in a side table (one allocation per
    /// distinct string). Prefer [`intern_labels`](Self::intern_labels) for
    /// series labels; call [`gc_symbols`](Self::gc_symbols) after dropping
    /// series to release strings nobody else holds.
    pub fn intern(&self, s: &str) -> Arc<str> {
        let mut symbols = self.symbols.lock();
        if let Some(a) = symbols.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        symbols.insert(a.clone());
        a
    }

    /// Drops interned strings referenced only by the side table; returns
    /// how many were dropped.
    pub fn gc_symbols(&self) -> usize {
        let mut symbols = self.symbols.lock();
        let before = symbols.len();
        symbols.retain(|s| Arc::strong_count(s) > 1);
        before - symbols.len()
    }

    /// Approximate heap bytes held by the index, including the label
    /// strings it references (which the head's label sets share).
    pub fn approx_bytes(&self) -> usize {
        fn table<K, V>(capacity: usize) -> usize {
            // hashbrown: buckets ~ capacity * 8/7, one control byte each.
            capacity * 8 / 7 * (size_of::<K>() + size_of::<V>() + 1)
        }
        fn string(s: &str) -> usize {
            // Arc header (two counters) + bytes, rounded to the allocator's
            // 8-byte granularity.
            (2 * size_of::<usize>() + s.len()).next_multiple_of(8)
        }
        let g = self.inner.read();
        let mut total = g.all.heap_bytes();
        total += table::<Arc<str>, Values>(g.names.capacity());
        for (name, values) in &g.names {
            total += string(name);
            total += table::<Arc<str>, Ids>(values.ids.capacity());
            total += values.sorted.capacity() * size_of::<Arc<str>>();
            for (value, ids) in &values.ids {
                total += string(value) + ids.heap_bytes();
            }
        }
        drop(g);
        let symbols = self.symbols.lock();
        total += table::<Arc<str>, ()>(symbols.capacity());
        total += symbols
            .iter()
            .filter(|s| Arc::strong_count(s) == 1)
            .map(|s| string(s))
            .sum::<usize>();
        total
    }

    /// A read guard under which `name`'s values are sorted.
    fn sorted_read(&self, name: &str) -> parking_lot::RwLockReadGuard<'_, Inner> {
        let g = self.inner.read();
        if g.names.get(name).is_none_or(Values::is_sorted) {
            return g;
        }
        drop(g);
        let mut g = self.inner.write();
        if let Some(values) = g.names.get_mut(name) {
            values.ensure_sorted();
        }
        RwLockWriteGuard::downgrade(g)
    }
}

impl PostingsSource for MemPostings {
    fn all_postings(&self) -> Result<Postings> {
        Ok(self.inner.read().all.to_vec())
    }

    fn for_each_value(
        &self,
        name: &str,
        from: &str,
        f: &mut dyn FnMut(&str) -> bool,
    ) -> Result<()> {
        let mut from: Arc<str> = Arc::from(from);
        let mut inclusive = true;
        loop {
            let batch = {
                let g = self.sorted_read(name);
                match g.names.get(name) {
                    Some(values) => values.batch(&from, inclusive, VALUE_BATCH),
                    None => return Ok(()),
                }
            };
            for v in &batch {
                if !f(v) {
                    return Ok(());
                }
            }
            match batch.last() {
                Some(last) if batch.len() == VALUE_BATCH => {
                    from = last.clone();
                    inclusive = false;
                }
                _ => return Ok(()),
            }
        }
    }

    fn postings(&self, name: &str, value: &str) -> Result<Postings> {
        let g = self.inner.read();
        Ok(g.names
            .get(name)
            .and_then(|v| v.ids.get(value))
            .map(Ids::to_postings)
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use stratus_model::{MatchType, Matcher};

    use super::*;
    use crate::index::select_postings;

    fn ls(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<MemPostings>();
    }

    #[test]
    fn add_lookup_and_sorted_values() {
        let idx = MemPostings::new();
        idx.add(5, &ls(&[("job", "b"), ("i", "2")]));
        idx.add(1, &ls(&[("job", "b"), ("i", "1")]));
        idx.add(3, &ls(&[("job", "a"), ("i", "3")]));
        idx.add(3, &ls(&[("job", "a"), ("i", "3")])); // duplicate: no-op
        assert_eq!(idx.num_series(), 3);
        assert_eq!(idx.all_postings().unwrap(), vec![1, 3, 5]);
        assert_eq!(idx.postings("job", "b").unwrap(), vec![1, 5]);
        assert_eq!(idx.postings("job", "a").unwrap(), vec![3]);
        assert!(idx.postings("job", "zz").unwrap().is_empty());
        assert!(idx.postings("nope", "a").unwrap().is_empty());
        assert_eq!(idx.label_names(), vec!["i", "job"]);
        assert_eq!(idx.label_values("i"), vec!["1", "2", "3"]);
        assert_eq!(idx.label_values("job"), vec!["a", "b"]);
        assert!(idx.label_values("nope").is_empty());

        idx.delete(&[1, 3], &|id| match id {
            1 => Some(ls(&[("job", "b"), ("i", "1")])),
            _ => None,
        });
        assert_eq!(idx.all_postings().unwrap(), vec![5]);
        assert_eq!(idx.label_values("i"), vec!["2"]);
        assert_eq!(idx.label_values("job"), vec!["b"]);
        idx.delete_series(&[(5, ls(&[("job", "b"), ("i", "2")]))]);
        assert!(idx.label_names().is_empty());
        assert_eq!(idx.num_series(), 0);
    }

    #[test]
    fn for_each_value_batches_stops_and_may_reenter() {
        let idx = MemPostings::new();
        // Out-of-order values across several batches.
        for i in (0..2000u64).rev() {
            idx.add(i, &ls(&[("v", &format!("{i:05}"))]));
        }
        let mut seen = Vec::new();
        idx.for_each_value("v", "00100", &mut |v| {
            // Re-entering the index from the callback must not deadlock.
            assert_eq!(idx.postings("v", v).unwrap().len(), 1);
            seen.push(v.to_owned());
            v < "01500"
        })
        .unwrap();
        assert_eq!(seen.len(), 1401);
        assert_eq!(seen.first().map(String::as_str), Some("00100"));
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        let mut n = 0;
        idx.for_each_value("v", "", &mut |_| {
            n += 1;
            true
        })
        .unwrap();
        assert_eq!(n, 2000);
    }

    #[test]
    fn interning_shares_strings() {
        let idx = MemPostings::new();
        let a = ls(&[("job", "api"), ("pod", "p1")]);
        idx.add(1, &a);
        let b = idx.intern_labels(&ls(&[("job", "api"), ("pod", "p2")]));
        let job_a = &a.as_slice()[0].value;
        let job_b = &b.as_slice()[0].value;
        assert!(Arc::ptr_eq(job_a, job_b));
        assert_eq!(b.get("pod"), Some("p2"));

        let s1 = idx.intern("hello");
        let s2 = idx.intern("hello");
        assert!(Arc::ptr_eq(&s1, &s2));
        drop((s1, s2));
        assert_eq!(idx.gc_symbols(), 1);
        assert!(idx.approx_bytes() > 0);
    }

    #[test]
    fn concurrent_add_and_select() {
        let idx = Arc::new(MemPostings::new());
        let m = [
            Matcher::eq("job", "x"),
            Matcher::new(MatchType::RegexMatch, "i", "1.*").unwrap(),
        ];
        thread::scope(|s| {
            for t in 0..4u64 {
                let idx = &idx;
                s.spawn(move || {
                    for i in 0..2000u64 {
                        let id = i * 4 + t;
                        let job = if id % 2 == 0 { "x" } else { "y" };
                        idx.add(id, &ls(&[("job", job), ("i", &id.to_string())]));
                    }
                });
            }
            for _ in 0..2 {
                let idx = &idx;
                let m = &m;
                s.spawn(move || {
                    for _ in 0..200 {
                        let got = select_postings(&**idx, m).unwrap();
                        assert!(got.windows(2).all(|w| w[0] < w[1]));
                        assert!(got.iter().all(|id| id % 2 == 0));
                    }
                });
            }
        });
        assert_eq!(idx.num_series(), 8000);
        let want: Vec<u64> = (0..8000u64)
            .filter(|id| id % 2 == 0 && id.to_string().starts_with('1'))
            .collect();
        assert_eq!(select_postings(&*idx, &m).unwrap(), want);
    }
}
