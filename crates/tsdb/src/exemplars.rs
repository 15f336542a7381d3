//! In-memory exemplar storage of one tenant: a bounded circular buffer
//! shared by all series, as Prometheus' circular exemplar storage.
//!
//! Every stored exemplar takes one slot of a ring of fixed capacity; when
//! the ring is full the oldest exemplar (of any series) is overwritten. Each
//! series keeps the ring slots of its exemplars, oldest first, so an
//! eviction pops the front of exactly one series' list. Per series, an
//! exemplar equal to the newest stored one is a no-op (duplicate) and one
//! older than the newest is refused (out of order) and counted.
//!
//! Persistence: [`ExemplarStore::add_all_logged`] hands the exemplars a
//! call is about to store to a logger (the database's WAL, record type 6)
//! under the store's lock, before storing them, so the log holds exactly
//! the sequence of stored exemplars in ring order; replaying it through
//! [`ExemplarStore::add_all`] rebuilds the same ring. WAL checkpoints keep
//! the newest `capacity` logged exemplars, which is all the ring can hold.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;
use stratus_model::{Exemplar, Labels, Matcher};

/// Longest exemplar label set, in characters of names and values together
/// (as Prometheus and OpenMetrics).
pub const MAX_EXEMPLAR_LABELS_CHARS: usize = 128;

/// Default number of exemplars kept per tenant.
pub const DEFAULT_MAX_EXEMPLARS: usize = 100_000;

/// What happened to one exemplar offered to [`ExemplarStore::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExemplarOutcome {
    /// Stored.
    Added,
    /// Equal to the series' newest exemplar: nothing to do.
    Duplicate,
    /// Older than the series' newest exemplar: dropped.
    OutOfOrder,
    /// Its label set is longer than [`MAX_EXEMPLAR_LABELS_CHARS`]: dropped.
    LabelsTooLong,
    /// The store has capacity 0 (exemplars disabled): dropped.
    Disabled,
}

/// Counts of one [`ExemplarStore::add_all`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExemplarReport {
    pub added: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub invalid: u64,
}

/// Cumulative figures of a store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExemplarStats {
    /// Exemplars held now.
    pub stored: u64,
    /// Series with at least one exemplar.
    pub series: u64,
    /// Exemplars ever stored.
    pub added_total: u64,
    /// Exemplars refused because they were out of order.
    pub out_of_order_total: u64,
    /// Exemplars evicted by newer ones.
    pub evicted_total: u64,
}

#[derive(Debug)]
struct Slot {
    series: Labels,
    ex: Exemplar,
}

#[derive(Debug, Default)]
struct Inner {
    ring: Vec<Option<Slot>>,
    /// Next slot to write (the oldest one once the ring is full).
    next: usize,
    /// Ring slots of each series' exemplars, oldest first.
    series: HashMap<Labels, VecDeque<usize>>,
    stats: ExemplarStats,
}

/// A bounded in-memory exemplar store (see the module docs).
#[derive(Debug)]
pub struct ExemplarStore {
    cap: usize,
    inner: Mutex<Inner>,
}

/// The newest stored exemplar of `series`.
fn newest_stored<'g>(g: &'g Inner, series: &Labels) -> Option<&'g Exemplar> {
    g.series
        .get(series)
        .and_then(|q| q.back())
        .and_then(|&i| g.ring.get(i))
        .and_then(Option::as_ref)
        .map(|s| &s.ex)
}

fn same(a: &Exemplar, b: &Exemplar) -> bool {
    a.t == b.t && a.value.to_bits() == b.value.to_bits() && a.labels == b.labels
}

impl ExemplarStore {
    /// A store holding at most `capacity` exemplars (0 disables it).
    pub fn new(capacity: usize) -> Self {
        Self {
            cap: capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Most exemplars held at once.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Offers one exemplar of `series`.
    pub fn add(&self, series: &Labels, ex: Exemplar) -> ExemplarOutcome {
        let mut g = self.inner.lock();
        self.add_locked(&mut g, series, ex)
    }

    /// Offers many exemplars under one lock.
    pub fn add_all<'a>(
        &self,
        items: impl IntoIterator<Item = (&'a Labels, Exemplar)>,
    ) -> ExemplarReport {
        let mut r = ExemplarReport::default();
        let mut g = self.inner.lock();
        for (s, ex) in items {
            match self.add_locked(&mut g, s, ex) {
                ExemplarOutcome::Added => r.added += 1,
                ExemplarOutcome::Duplicate => r.duplicates += 1,
                ExemplarOutcome::OutOfOrder => r.out_of_order += 1,
                ExemplarOutcome::LabelsTooLong | ExemplarOutcome::Disabled => r.invalid += 1,
            }
        }
        r
    }

    /// Offers many exemplars and logs the ones to be stored: under one
    /// lock, decides which would be stored (the rest are counted as
    /// duplicates, out of order or invalid), passes them to `log`, and
    /// stores them only when `log` succeeded. A logging error is returned
    /// and nothing is stored, so a retry logs them again.
    pub fn add_all_logged<'a, E>(
        &self,
        items: impl IntoIterator<Item = (&'a Labels, Exemplar)>,
        log: impl FnOnce(&[(Labels, Exemplar)]) -> Result<(), E>,
    ) -> Result<ExemplarReport, E> {
        let mut r = ExemplarReport::default();
        let mut g = self.inner.lock();
        let mut take: Vec<(Labels, Exemplar)> = Vec::new();
        // Newest exemplar taken so far per series (index into `take`).
        let mut newest_taken: HashMap<&'a Labels, usize> = HashMap::new();
        for (s, ex) in items {
            let newest = match newest_taken.get(s) {
                Some(&i) => take.get(i).map(|x| &x.1),
                None => newest_stored(&g, s),
            };
            match self.check(newest, &ex) {
                Some(ExemplarOutcome::Duplicate) => r.duplicates += 1,
                Some(ExemplarOutcome::OutOfOrder) => {
                    g.stats.out_of_order_total += 1;
                    r.out_of_order += 1;
                }
                Some(_) => r.invalid += 1,
                None => {
                    newest_taken.insert(s, take.len());
                    take.push((s.clone(), ex));
                }
            }
        }
        if take.is_empty() {
            return Ok(r);
        }
        log(&take)?;
        for (s, ex) in take {
            match self.add_locked(&mut g, &s, ex) {
                ExemplarOutcome::Added => r.added += 1,
                ExemplarOutcome::Duplicate => r.duplicates += 1,
                ExemplarOutcome::OutOfOrder => r.out_of_order += 1,
                ExemplarOutcome::LabelsTooLong | ExemplarOutcome::Disabled => r.invalid += 1,
            }
        }
        Ok(r)
    }

    /// Why `ex` would not be stored after `newest` (its series' newest
    /// exemplar), or `None` when it would.
    fn check(&self, newest: Option<&Exemplar>, ex: &Exemplar) -> Option<ExemplarOutcome> {
        if self.cap == 0 {
            return Some(ExemplarOutcome::Disabled);
        }
        let chars: usize = ex
            .labels
            .iter()
            .map(|l| l.name.chars().count() + l.value.chars().count())
            .sum();
        if chars > MAX_EXEMPLAR_LABELS_CHARS {
            return Some(ExemplarOutcome::LabelsTooLong);
        }
        let newest = newest?;
        if same(newest, ex) {
            return Some(ExemplarOutcome::Duplicate);
        }
        if ex.t < newest.t {
            return Some(ExemplarOutcome::OutOfOrder);
        }
        None
    }

    fn add_locked(&self, g: &mut Inner, series: &Labels, ex: Exemplar) -> ExemplarOutcome {
        if let Some(why) = self.check(newest_stored(g, series), &ex) {
            if why == ExemplarOutcome::OutOfOrder {
                g.stats.out_of_order_total += 1;
            }
            return why;
        }
        let idx = g.next;
        g.next = (idx + 1) % self.cap;
        if idx < g.ring.len() {
            if let Some(old) = g.ring[idx].take() {
                g.stats.evicted_total += 1;
                g.stats.stored -= 1;
                if let Some(q) = g.series.get_mut(&old.series) {
                    // The oldest exemplar overall is its series' oldest.
                    if q.front() == Some(&idx) {
                        q.pop_front();
                    } else {
                        q.retain(|&i| i != idx);
                    }
                    if q.is_empty() {
                        g.series.remove(&old.series);
                    }
                }
            }
        } else {
            g.ring.push(None);
        }
        g.series.entry(series.clone()).or_default().push_back(idx);
        g.ring[idx] = Some(Slot {
            series: series.clone(),
            ex,
        });
        g.stats.stored += 1;
        g.stats.added_total += 1;
        ExemplarOutcome::Added
    }

    /// Exemplars in `[start, end]` of the series matching every matcher
    /// of at least one set, sorted by series labels, each series' exemplars
    /// oldest first. Series without exemplars in range are left out.
    pub fn select(
        &self,
        matcher_sets: &[Vec<Matcher>],
        start: i64,
        end: i64,
    ) -> Vec<(Labels, Vec<Exemplar>)> {
        let g = self.inner.lock();
        let mut out = Vec::new();
        for (labels, slots) in &g.series {
            let hit = matcher_sets.iter().any(|set| {
                set.iter()
                    .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
            });
            if !hit {
                continue;
            }
            let exs: Vec<Exemplar> = slots
                .iter()
                .filter_map(|&i| g.ring.get(i).and_then(Option::as_ref))
                .filter(|s| s.ex.t >= start && s.ex.t <= end)
                .map(|s| s.ex.clone())
                .collect();
            if !exs.is_empty() {
                out.push((labels.clone(), exs));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Current figures.
    pub fn stats(&self) -> ExemplarStats {
        let g = self.inner.lock();
        ExemplarStats {
            series: g.series.len() as u64,
            ..g.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_model::MatchType;

    fn ex(t: i64, v: f64, trace: &str) -> Exemplar {
        Exemplar {
            labels: Labels::from_pairs([("trace_id", trace)]),
            value: v,
            t,
        }
    }

    fn sel(store: &ExemplarStore, name: &str) -> Vec<(Labels, Vec<Exemplar>)> {
        let m = Matcher::new(MatchType::Equal, "__name__", name).unwrap();
        store.select(&[vec![m]], i64::MIN, i64::MAX)
    }

    #[test]
    fn duplicates_out_of_order_and_ranges() {
        let s = ExemplarStore::new(10);
        let a = Labels::from_pairs([("__name__", "a")]);
        assert_eq!(s.add(&a, ex(10, 1.0, "x")), ExemplarOutcome::Added);
        assert_eq!(s.add(&a, ex(10, 1.0, "x")), ExemplarOutcome::Duplicate);
        assert_eq!(s.add(&a, ex(5, 1.0, "y")), ExemplarOutcome::OutOfOrder);
        assert_eq!(s.add(&a, ex(10, 2.0, "y")), ExemplarOutcome::Added);
        assert_eq!(s.add(&a, ex(20, 3.0, "z")), ExemplarOutcome::Added);
        let long = "x".repeat(200);
        assert_eq!(
            s.add(&a, ex(30, 3.0, &long)),
            ExemplarOutcome::LabelsTooLong
        );
        let got = sel(&s, "a");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.len(), 3);
        let m = Matcher::new(MatchType::Equal, "__name__", "a").unwrap();
        let r = s.select(&[vec![m]], 11, 20);
        assert_eq!(r[0].1, vec![ex(20, 3.0, "z")]);
        assert_eq!(s.stats().out_of_order_total, 1);
        assert!(sel(&s, "b").is_empty());
        assert_eq!(
            ExemplarStore::new(0).add(&a, ex(1, 1.0, "x")),
            ExemplarOutcome::Disabled
        );
    }

    #[test]
    fn ring_evicts_oldest_across_series() {
        let s = ExemplarStore::new(5);
        let a = Labels::from_pairs([("__name__", "a")]);
        let b = Labels::from_pairs([("__name__", "b")]);
        for i in 0..3 {
            s.add(&a, ex(i, i as f64, "a"));
        }
        for i in 0..20 {
            s.add(&b, ex(i, i as f64, "b"));
        }
        let st = s.stats();
        assert_eq!(st.stored, 5);
        assert_eq!(st.series, 1, "series a fully evicted");
        assert_eq!(st.evicted_total, 18);
        let got = sel(&s, "b");
        let ts: Vec<i64> = got[0].1.iter().map(|e| e.t).collect();
        assert_eq!(ts, vec![15, 16, 17, 18, 19]);
        assert!(sel(&s, "a").is_empty());
    }

    #[test]
    fn logged_adds_log_what_is_stored_and_replay_rebuilds_the_ring() {
        let s = ExemplarStore::new(4);
        let a = Labels::from_pairs([("__name__", "a")]);
        let b = Labels::from_pairs([("__name__", "b")]);
        let mut log: Vec<(Labels, Exemplar)> = Vec::new();
        let batches = [
            vec![
                (&a, ex(10, 1.0, "x")),
                (&a, ex(10, 1.0, "x")), // duplicate within the batch
                (&a, ex(5, 1.0, "y")),  // out of order within the batch
                (&b, ex(1, 1.0, "b")),
            ],
            vec![(&a, ex(10, 1.0, "x")), (&a, ex(11, 2.0, "z"))],
            vec![
                (&b, ex(2, 2.0, "b")),
                (&b, ex(3, 3.0, "b")),
                (&a, ex(12, 1.0, "w")),
            ],
        ];
        let mut reports = Vec::new();
        for batch in batches {
            let r = s
                .add_all_logged(batch, |e| {
                    log.extend_from_slice(e);
                    Ok::<_, ()>(())
                })
                .unwrap();
            reports.push(r);
        }
        assert_eq!(
            reports[0],
            ExemplarReport {
                added: 2,
                duplicates: 1,
                out_of_order: 1,
                invalid: 0
            }
        );
        assert_eq!((reports[1].added, reports[1].duplicates), (1, 1));
        assert_eq!(log.len(), 6);
        // A failing logger stores nothing, so a retry logs again.
        let r = s.add_all_logged([(&a, ex(20, 1.0, "q"))], |_| Err("disk full"));
        assert_eq!(r, Err("disk full"));
        assert_eq!(sel(&s, "a")[0].1.last().map(|e| e.t), Some(12));
        // Replaying the log rebuilds the same ring (capacity 4: 2 evicted).
        let replayed = ExemplarStore::new(4);
        replayed.add_all(log.iter().map(|(l, e)| (l, e.clone())));
        for name in ["a", "b"] {
            assert_eq!(sel(&replayed, name), sel(&s, name));
        }
        assert_eq!(replayed.stats().stored, 4);
    }
}
