//! The results cache: per tenant, one extent per (query, step, grid
//! offset, interval), bounded in bytes with least-recently-used eviction.
//!
//! An extent holds the merged points of the steps `start..=end` of one
//! split interval (a UTC day by default); the grid offset (`start mod
//! step`) is part of the key, so every point of an extent lies on the
//! grid of any query that finds it. Extents never reach past `now -
//! max_cache_freshness` (late samples may still change recent results).
//! Answers that carried warnings (possibly partial data) are not cached;
//! infos are kept with the extent and given again with its points.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;

use crate::matrix::Matrix;

/// What an extent is cached under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    /// The tenant key (tenant id or credential hash), never a credential.
    pub(crate) tenant: String,
    /// The expression and every parameter besides start/end/step/timeout.
    pub(crate) query: String,
    pub(crate) step: i64,
    /// `start mod step`: which grid the points lie on.
    pub(crate) offset: i64,
    /// Start of the split interval.
    pub(crate) interval_start: i64,
}

/// Cached steps `start..=end` of one interval.
#[derive(Debug, Clone)]
pub(crate) struct Extent {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) data: Matrix,
    /// Infos of the answers the points came from (replayed on hits).
    pub(crate) infos: Vec<String>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Key, (Extent, usize, u64)>,
    lru: BTreeMap<u64, Key>,
    bytes: usize,
    tick: u64,
}

/// A bounded, thread-safe extent cache.
#[derive(Debug)]
pub(crate) struct ResultsCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

impl ResultsCache {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_bytes,
        }
    }

    /// The extent under `k`, marked as recently used.
    pub(crate) fn get(&self, k: &Key) -> Option<Extent> {
        let mut g = self.inner.lock();
        g.tick += 1;
        let tick = g.tick;
        let inner = &mut *g;
        let (ext, _, t) = inner.entries.get_mut(k)?;
        inner.lru.remove(t);
        *t = tick;
        inner.lru.insert(tick, k.clone());
        Some(ext.clone())
    }

    /// Stores `ext` under `k` (replacing what was there), evicting the
    /// least recently used extents beyond the budget. An extent larger
    /// than a quarter of the budget is not stored.
    pub(crate) fn put(&self, k: Key, ext: Extent) {
        let size = ext.data.bytes() + k.query.len() + k.tenant.len() + 128;
        if size > self.max_bytes / 4 {
            return;
        }
        let mut g = self.inner.lock();
        g.tick += 1;
        let tick = g.tick;
        if let Some((_, old, t)) = g.entries.remove(&k) {
            g.lru.remove(&t);
            g.bytes -= old;
        }
        g.bytes += size;
        g.lru.insert(tick, k.clone());
        g.entries.insert(k, (ext, size, tick));
        while g.bytes > self.max_bytes {
            let Some((_, victim)) = g.lru.pop_first() else {
                break;
            };
            if let Some((_, s, _)) = g.entries.remove(&victim) {
                g.bytes -= s;
            }
        }
    }

    /// Bytes held (estimated).
    pub(crate) fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }

    /// Extents held.
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }
}

/// The steps `start..=end` of a grid.
pub(crate) type Steps = (i64, i64);

/// What a piece `[a, b]` needs fetched given the cached extent: the
/// gaps before and after it (on the grid `step`), and the extent the
/// cached and fetched points will cover together. `None` for the extent
/// when they do not touch (the cached one is then of no use).
pub(crate) fn plan(
    a: i64,
    b: i64,
    step: i64,
    cached: Option<&Extent>,
) -> (Vec<Steps>, Option<Steps>) {
    let Some(ext) = cached else {
        return (vec![(a, b)], None);
    };
    let touches = ext.start <= b.saturating_add(step) && ext.end.saturating_add(step) >= a;
    if !touches {
        return (vec![(a, b)], None);
    }
    let mut gaps = Vec::new();
    if a < ext.start {
        gaps.push((a, ext.start - step));
    }
    if b > ext.end {
        gaps.push((ext.end + step, b));
    }
    (gaps, Some((a.min(ext.start), b.max(ext.end))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Points;

    fn key(q: &str, day: i64) -> Key {
        Key {
            tenant: "t".into(),
            query: q.into(),
            step: 60_000,
            offset: 0,
            interval_start: day,
        }
    }

    fn matrix(points: usize) -> Matrix {
        let mut m = Matrix::default();
        let p = Points {
            values: (0..points)
                .map(|i| (i as i64 * 60_000, "1".into()))
                .collect(),
            histograms: Vec::new(),
        };
        m.series.insert(vec![("a".into(), "b".into())], p);
        m
    }

    #[test]
    fn plans_reuse_extents() {
        let ext = Extent {
            start: 600_000,
            end: 1_200_000,
            data: Matrix::default(),
            infos: Vec::new(),
        };
        let s = 60_000;
        // Fully covered: nothing to fetch.
        assert_eq!(
            plan(660_000, 1_200_000, s, Some(&ext)),
            (vec![], Some((600_000, 1_200_000)))
        );
        // The newest part is missing (a refreshed dashboard).
        assert_eq!(
            plan(600_000, 1_500_000, s, Some(&ext)),
            (vec![(1_260_000, 1_500_000)], Some((600_000, 1_500_000)))
        );
        // Both sides missing.
        assert_eq!(
            plan(0, 1_500_000, s, Some(&ext)),
            (
                vec![(0, 540_000), (1_260_000, 1_500_000)],
                Some((0, 1_500_000))
            )
        );
        // Adjacent counts as touching; far away does not.
        assert_eq!(
            plan(1_260_000, 1_320_000, s, Some(&ext)),
            (vec![(1_260_000, 1_320_000)], Some((600_000, 1_320_000)))
        );
        assert_eq!(
            plan(1_380_000, 1_500_000, s, Some(&ext)),
            (vec![(1_380_000, 1_500_000)], None)
        );
        assert_eq!(plan(0, 10, s, None), (vec![(0, 10)], None));
    }

    #[test]
    fn bounded_by_bytes_least_recently_used_first() {
        let one = matrix(100).bytes() + 200;
        let c = ResultsCache::new(one * 4 + 10);
        for d in 0..4 {
            c.put(
                key("q", d),
                Extent {
                    start: 0,
                    end: 1,
                    data: matrix(100),
                    infos: Vec::new(),
                },
            );
        }
        assert_eq!(c.len(), 4);
        assert!(c.get(&key("q", 0)).is_some());
        // A fifth evicts the least recently used (day 1; day 0 was read).
        c.put(
            key("q", 4),
            Extent {
                start: 0,
                end: 1,
                data: matrix(100),
                infos: Vec::new(),
            },
        );
        assert!(c.bytes() <= one * 4 + 10);
        assert!(c.get(&key("q", 1)).is_none());
        assert!(c.get(&key("q", 0)).is_some());
        assert!(c.get(&key("q", 4)).is_some());
        // Too large for the budget: not stored at all.
        c.put(
            key("big", 0),
            Extent {
                start: 0,
                end: 1,
                data: matrix(10_000),
                infos: Vec::new(),
            },
        );
        assert!(c.get(&key("big", 0)).is_none());
        // Replacing keeps the accounting right.
        let before = c.bytes();
        c.put(
            key("q", 4),
            Extent {
                start: 0,
                end: 2,
                data: matrix(100),
                infos: Vec::new(),
            },
        );
        assert_eq!(c.bytes(), before);
        assert_eq!(c.get(&key("q", 4)).map(|e| e.end), Some(2));
    }
}
