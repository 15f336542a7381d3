//! Label sets: the identity of a series.
//!
//! A [`Labels`] value is an immutable, sorted (by name), duplicate-free list
//! of name/value pairs behind an `Arc`, so cloning one is a reference-count
//! increment. Strings are `Arc<str>` so that a storage engine can hand out
//! its interned strings without copying them.

use std::fmt;
use std::sync::Arc;

use crate::error::{DuplicateLabelSnafu, Result};

/// The reserved label that holds a series' metric name.
pub const METRIC_NAME: &str = "__name__";

/// One name/value pair.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    pub name: Arc<str>,
    pub value: Arc<str>,
}

impl Label {
    /// Builds a label from anything string-like.
    pub fn new(name: impl Into<Arc<str>>, value: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}", self.name, &*self.value)
    }
}

/// A sorted, duplicate-free label set. Empty values are never stored: an
/// empty value means the label is absent, as in Prometheus.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Labels(Arc<[Label]>);

impl Labels {
    /// The empty label set.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Builds a label set from pairs in any order. Pairs with empty values
    /// are dropped. Fails when a name appears twice.
    pub fn try_from_pairs<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Result<Self>
    where
        N: Into<Arc<str>>,
        V: Into<Arc<str>>,
    {
        let mut v: Vec<Label> = pairs
            .into_iter()
            .map(|(n, v)| Label::new(n, v))
            .filter(|l| !l.value.is_empty())
            .collect();
        v.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = v.windows(2).find(|w| w[0].name == w[1].name) {
            return DuplicateLabelSnafu {
                name: w[0].name.to_string(),
            }
            .fail();
        }
        Ok(Self(v.into()))
    }

    /// Builds a label set from pairs; a later duplicate name replaces an
    /// earlier one. Convenient for tests and literals.
    pub fn from_pairs<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Self
    where
        N: Into<Arc<str>>,
        V: Into<Arc<str>>,
    {
        let mut b = LabelsBuilder::default();
        for (n, v) in pairs {
            b.set(n, v);
        }
        b.build()
    }

    /// Wraps labels that the caller guarantees are sorted by name, unique
    /// and have no empty values (e.g. decoded from a trusted index).
    pub fn from_sorted_unchecked(v: Vec<Label>) -> Self {
        debug_assert!(v.windows(2).all(|w| w[0].name < w[1].name));
        Self(v.into())
    }

    /// Whether the labels are sorted by name with unique names.
    pub fn is_sorted_unique(v: &[Label]) -> bool {
        v.windows(2).all(|w| w[0].name < w[1].name)
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| (*l.name).cmp(name))
            .ok()
            .map(|i| &*self.0[i].value)
    }

    /// The metric name (`__name__`), if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates the labels in name order.
    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    /// The labels as a slice.
    pub fn as_slice(&self) -> &[Label] {
        &self.0
    }

    /// A stable 64-bit hash of the label set (xxh3 over
    /// `name 0xff value 0xff ...`). Stable across processes and versions:
    /// it is used for sharding.
    pub fn stable_hash(&self) -> u64 {
        hash_pairs(
            self.0
                .iter()
                .map(|l| (l.name.as_bytes(), l.value.as_bytes())),
        )
    }

    /// A builder seeded with these labels.
    pub fn builder(&self) -> LabelsBuilder {
        LabelsBuilder {
            labels: self.0.to_vec(),
        }
    }

    /// Keeps only the labels whose names are in `names` (or, with
    /// `keep = false`, all labels except those).
    pub fn filter_names(&self, names: &[impl AsRef<str>], keep: bool) -> Labels {
        let v: Vec<Label> = self
            .0
            .iter()
            .filter(|l| names.iter().any(|n| n.as_ref() == &*l.name) == keep)
            .cloned()
            .collect();
        Self(v.into())
    }

    /// Drops the metric name.
    pub fn without_metric_name(&self) -> Labels {
        if self.get(METRIC_NAME).is_none() {
            return self.clone();
        }
        self.filter_names(&[METRIC_NAME], false)
    }

    /// Approximate heap bytes held (for statistics).
    pub fn approx_bytes(&self) -> usize {
        self.0
            .iter()
            .map(|l| l.name.len() + l.value.len() + 32)
            .sum()
    }
}

/// Hashes name/value pairs the same way as [`Labels::stable_hash`], for
/// callers holding labels in another representation.
pub fn hash_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> u64 {
    // One-shot hashing of a contiguous buffer is several times faster than
    // feeding a streaming hasher piece by piece; same result either way.
    let len: usize = pairs.clone().map(|(n, v)| n.len() + v.len() + 2).sum();
    let mut stack = [0u8; 512];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    let mut i = 0;
    for (n, v) in pairs {
        buf[i..i + n.len()].copy_from_slice(n);
        i += n.len();
        buf[i] = 0xff;
        i += 1;
        buf[i..i + v.len()].copy_from_slice(v);
        i += v.len();
        buf[i] = 0xff;
        i += 1;
    }
    xxhash_rust::xxh3::xxh3_64(&buf[..i])
}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Labels {
    /// Prometheus' notation: `name{a="b", c="d"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.metric_name();
        if let Some(n) = name {
            f.write_str(n)?;
        }
        let mut first = true;
        let mut any = false;
        for l in self.0.iter().filter(|l| &*l.name != METRIC_NAME) {
            if first {
                f.write_str("{")?;
                first = false;
            } else {
                f.write_str(", ")?;
            }
            any = true;
            write!(f, "{}={:?}", l.name, &*l.value)?;
        }
        if any {
            f.write_str("}")?;
        } else if name.is_none() {
            f.write_str("{}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Mutable label set used to derive new label sets.
#[derive(Debug, Clone, Default)]
pub struct LabelsBuilder {
    labels: Vec<Label>,
}

impl LabelsBuilder {
    /// Sets `name` to `value`; an empty value deletes the label.
    pub fn set(&mut self, name: impl Into<Arc<str>>, value: impl Into<Arc<str>>) -> &mut Self {
        let name = name.into();
        let value = value.into();
        match self.labels.iter().position(|l| l.name == name) {
            Some(i) if value.is_empty() => {
                self.labels.remove(i);
            }
            Some(i) => self.labels[i].value = value,
            None if value.is_empty() => {}
            None => self.labels.push(Label { name, value }),
        }
        self
    }

    /// Removes `name`.
    pub fn del(&mut self, name: &str) -> &mut Self {
        self.labels.retain(|l| &*l.name != name);
        self
    }

    /// Current value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| &*l.name == name)
            .map(|l| &*l.value)
    }

    /// Finishes the label set.
    pub fn build(mut self) -> Labels {
        self.labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Labels(self.labels.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_and_unique() {
        let l = Labels::from_pairs([("b", "2"), ("a", "1"), ("b", "3"), ("c", "")]);
        assert_eq!(l.len(), 2);
        assert_eq!(l.get("a"), Some("1"));
        assert_eq!(l.get("b"), Some("3"));
        assert_eq!(l.get("c"), None);
        assert!(Labels::try_from_pairs([("a", "1"), ("a", "2")]).is_err());
    }

    #[test]
    fn display_like_prometheus() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "x\"y")]);
        assert_eq!(l.to_string(), r#"up{job="x\"y"}"#);
        assert_eq!(Labels::empty().to_string(), "{}");
    }

    #[test]
    fn hash_matches_streaming_definition() {
        let l = Labels::from_pairs([("a", "1"), ("bb", "22")]);
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for part in [
            &b"a"[..],
            b"\xff",
            b"1",
            b"\xff",
            b"bb",
            b"\xff",
            b"22",
            b"\xff",
        ] {
            h.update(part);
        }
        assert_eq!(l.stable_hash(), h.digest());
        let long = Labels::from_pairs([("x", "y".repeat(1000))]);
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(b"x\xff");
        h.update("y".repeat(1000).as_bytes());
        h.update(b"\xff");
        assert_eq!(long.stable_hash(), h.digest());
    }

    #[test]
    fn hash_is_stable() {
        let a = Labels::from_pairs([("a", "1"), ("b", "2")]);
        let b = Labels::from_pairs([("b", "2"), ("a", "1")]);
        assert_eq!(a.stable_hash(), b.stable_hash());
        assert_ne!(
            a.stable_hash(),
            Labels::from_pairs([("a", "12")]).stable_hash()
        );
    }
}
