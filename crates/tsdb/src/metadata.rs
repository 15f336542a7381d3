//! Metric metadata of one tenant: metric family name → latest type, help
//! and unit, as received by remote write or OTLP.
//!
//! The map is bounded: once it holds its limit of families, metadata of
//! new families is dropped (and counted) while known families keep being
//! updated. `Db::set_metadata` logs new or changed entries to the WAL
//! (record type 7) before storing them here, and WAL replay refills the
//! map, so metadata survives restarts.

use std::collections::HashMap;

use parking_lot::RwLock;

/// Default number of metric families whose metadata a tenant keeps.
pub const DEFAULT_MAX_METADATA: usize = 100_000;

/// Type of a metric family, spelled as Prometheus spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum MetricType {
    #[default]
    Unknown,
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
}

impl MetricType {
    /// Prometheus' name of the type (`counter`, `gaugehistogram`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::GaugeHistogram => "gaugehistogram",
            Self::Summary => "summary",
            Self::Info => "info",
            Self::StateSet => "stateset",
        }
    }

    /// The remote-write enum value of the type (also its WAL encoding).
    pub fn to_proto(self) -> u8 {
        match self {
            Self::Unknown => 0,
            Self::Counter => 1,
            Self::Gauge => 2,
            Self::Histogram => 3,
            Self::GaugeHistogram => 4,
            Self::Summary => 5,
            Self::Info => 6,
            Self::StateSet => 7,
        }
    }

    /// The type of a WAL byte; `None` for numbers past the known types.
    pub fn from_u8(v: u8) -> Option<Self> {
        (v <= 7).then(|| Self::from_proto(i32::from(v)))
    }

    /// The type of a remote-write enum value (1.0 and 2.0 number the types
    /// alike); unknown numbers map to `Unknown`.
    pub fn from_proto(v: i32) -> Self {
        match v {
            1 => Self::Counter,
            2 => Self::Gauge,
            3 => Self::Histogram,
            4 => Self::GaugeHistogram,
            5 => Self::Summary,
            6 => Self::Info,
            7 => Self::StateSet,
            _ => Self::Unknown,
        }
    }
}

/// Metadata of one metric family.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct MetricMetadata {
    pub kind: MetricType,
    pub help: String,
    pub unit: String,
}

/// A bounded map of metric family metadata (see the module docs).
#[derive(Debug)]
pub struct MetadataStore {
    limit: usize,
    map: RwLock<HashMap<String, MetricMetadata>>,
    dropped: std::sync::atomic::AtomicU64,
}

impl MetadataStore {
    /// A store for at most `limit` families.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            map: RwLock::default(),
            dropped: Default::default(),
        }
    }

    /// Records the latest metadata of families; returns how many entries
    /// were stored (entries of new families beyond the limit are not).
    pub fn set_all<'a>(
        &self,
        items: impl IntoIterator<Item = (&'a str, &'a MetricMetadata)>,
    ) -> u64 {
        let mut m = self.map.write();
        let mut stored = 0;
        for (name, md) in items {
            if name.is_empty() {
                continue;
            }
            if let Some(cur) = m.get_mut(name) {
                if cur != md {
                    *cur = md.clone();
                }
                stored += 1;
            } else if m.len() < self.limit {
                m.insert(name.to_string(), md.clone());
                stored += 1;
            } else {
                self.dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        stored
    }

    /// The entries of `items` that are new or differ from what is stored
    /// (what a write must log).
    pub fn changed(&self, items: &[(String, MetricMetadata)]) -> Vec<(String, MetricMetadata)> {
        let m = self.map.read();
        let mut out: Vec<(String, MetricMetadata)> = Vec::new();
        for (name, md) in items {
            if name.is_empty() || m.get(name) == Some(md) {
                continue;
            }
            match out.iter_mut().find(|(n, _)| n == name) {
                Some(e) => e.1 = md.clone(),
                None => out.push((name.clone(), md.clone())),
            }
        }
        out
    }

    /// Metadata of `metric` only, or of every family; sorted by name.
    pub fn get(&self, metric: Option<&str>) -> Vec<(String, MetricMetadata)> {
        let m = self.map.read();
        let mut v: Vec<(String, MetricMetadata)> = match metric {
            Some(n) => m
                .get(n)
                .map(|md| (n.to_string(), md.clone()))
                .into_iter()
                .collect(),
            None => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Families known.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// Whether no family is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries of new families dropped because the store was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_wins_and_limit_holds() {
        let s = MetadataStore::new(2);
        let g = MetricMetadata {
            kind: MetricType::Gauge,
            help: "h".into(),
            unit: String::new(),
        };
        let c = MetricMetadata {
            kind: MetricType::Counter,
            ..g.clone()
        };
        assert_eq!(s.set_all([("a", &g), ("b", &g)]), 2);
        assert_eq!(s.set_all([("a", &c), ("c", &g)]), 1);
        assert_eq!(s.dropped(), 1);
        let all = s.get(None);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], ("a".to_string(), c));
        assert!(s.get(Some("c")).is_empty());
        assert_eq!(MetricType::from_proto(4).as_str(), "gaugehistogram");
    }
}
