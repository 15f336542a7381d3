//! String interning for the head.
//!
//! Every label name and value in the head is stored once; a series keeps
//! its label set as a slice of `u32` symbol ids (8 bytes per label instead
//! of two fat pointers), which is most of what makes the head's memory per
//! series small. Symbols are never removed while the head lives; a head
//! with heavy churn accumulates dead strings until restart (noted in
//! ARCHITECTURE.md).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use stratus_model::{Label, Labels};

#[derive(Debug, Default)]
struct Inner {
    ids: HashMap<Arc<str>, u32>,
    strs: Vec<Arc<str>>,
}

/// The head's symbol table.
#[derive(Debug, Default)]
pub(crate) struct Symbols {
    inner: RwLock<Inner>,
}

impl Symbols {
    /// The id of `s`, interning it if new.
    pub(crate) fn intern(&self, s: &Arc<str>) -> u32 {
        if let Some(&id) = self.inner.read().ids.get(&**s) {
            return id;
        }
        let mut w = self.inner.write();
        if let Some(&id) = w.ids.get(&**s) {
            return id;
        }
        let id = w.strs.len() as u32;
        w.strs.push(s.clone());
        w.ids.insert(s.clone(), id);
        id
    }

    /// Interns every name and value of `labels`.
    pub(crate) fn intern_labels(&self, labels: &Labels) -> Box<[u32]> {
        labels
            .iter()
            .flat_map(|l| [self.intern(&l.name), self.intern(&l.value)])
            .collect()
    }

    /// Rebuilds a label set from symbol ids.
    pub(crate) fn labels(&self, syms: &[u32]) -> Labels {
        let r = self.inner.read();
        let get = |id: u32| {
            r.strs
                .get(id as usize)
                .cloned()
                .unwrap_or_else(|| Arc::from(""))
        };
        Labels::from_sorted_unchecked(
            syms.chunks_exact(2)
                .map(|p| Label {
                    name: get(p[0]),
                    value: get(p[1]),
                })
                .collect(),
        )
    }

    /// Whether a symbol-encoded label set equals `labels`, compared in
    /// place (no allocation, one read lock).
    pub(crate) fn matches(&self, syms: &[u32], labels: &Labels) -> bool {
        if syms.len() != labels.len() * 2 {
            return false;
        }
        let r = self.inner.read();
        let eq = |id: u32, s: &Arc<str>| {
            r.strs
                .get(id as usize)
                .is_some_and(|x| Arc::ptr_eq(x, s) || **x == **s)
        };
        syms.chunks_exact(2)
            .zip(labels.iter())
            .all(|(p, l)| eq(p[0], &l.name) && eq(p[1], &l.value))
    }

    /// Looks up the value of label `name` in a symbol-encoded label set.
    pub(crate) fn value_of(&self, syms: &[u32], name: &str) -> Option<Arc<str>> {
        let r = self.inner.read();
        syms.chunks_exact(2)
            .find(|p| r.strs.get(p[0] as usize).is_some_and(|n| &**n == name))
            .and_then(|p| r.strs.get(p[1] as usize).cloned())
    }

    /// Collects the label names of a symbol-encoded label set.
    pub(crate) fn names_into(&self, syms: &[u32], out: &mut std::collections::BTreeSet<String>) {
        let r = self.inner.read();
        for p in syms.chunks_exact(2) {
            if let Some(n) = r.strs.get(p[0] as usize) {
                if !out.contains(&**n) {
                    out.insert(n.to_string());
                }
            }
        }
    }

    /// Compares two symbol-encoded label sets the way `Labels` orders them.
    pub(crate) fn cmp_labels(&self, a: &[u32], b: &[u32]) -> Ordering {
        let r = self.inner.read();
        let s = |id: u32| r.strs.get(id as usize).map(|s| &**s).unwrap_or("");
        for (x, y) in a.chunks_exact(2).zip(b.chunks_exact(2)) {
            let o = s(x[0]).cmp(s(y[0])).then_with(|| s(x[1]).cmp(s(y[1])));
            if o != Ordering::Equal {
                return o;
            }
        }
        a.len().cmp(&b.len())
    }

    /// Number of distinct strings and their approximate heap bytes.
    pub(crate) fn stats(&self) -> (usize, usize) {
        let r = self.inner.read();
        let bytes = r.strs.iter().map(|s| s.len() + 16 + 8 + 24).sum();
        (r.strs.len(), bytes)
    }
}
