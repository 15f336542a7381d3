//! Inverted index: postings lists and matcher evaluation.
//!
//! A postings list is a sorted, duplicate-free list of series ids. Both the
//! head's in-memory index and a block's on-disk index implement
//! [`PostingsSource`]; [`select_postings`] evaluates label matchers over any
//! source with Prometheus semantics.
//!
//! - [`ops`](self#set-operations): intersection, union, subtraction of
//!   postings lists, galloping when sizes differ a lot;
//! - [`select_postings`]: matcher evaluation (Prometheus' `PostingsForMatchers`
//!   semantics: an absent label has the value "");
//! - [`MemPostings`]: the head's concurrent in-memory index.
//!
//! # Set operations
//!
//! [`intersect`], [`intersect_many`], [`union_many`] and [`subtract`] take
//! sorted, duplicate-free lists and return one.

use crate::error::Result;

mod delta;
mod mem;
mod ops;
mod select;

pub use mem::MemPostings;
pub use ops::{intersect, intersect_many, subtract, union_many};
pub use select::select_postings;

/// A sorted, duplicate-free list of series ids.
pub type Postings = Vec<u64>;

/// What an index must answer so matchers can be evaluated over it.
pub trait PostingsSource {
    /// Every series id in the index, sorted.
    fn all_postings(&self) -> Result<Postings>;

    /// Calls `f` with each distinct value of label `name`, in ascending
    /// byte order, starting at the first value `>= from`. Stops early when
    /// `f` returns `false`.
    fn for_each_value(&self, name: &str, from: &str, f: &mut dyn FnMut(&str) -> bool)
    -> Result<()>;

    /// The series ids that have label `name` = `value`, sorted. Empty when
    /// the pair is not in the index.
    fn postings(&self, name: &str, value: &str) -> Result<Postings>;

    /// The postings of `name` = each of `values`, in order. Sources that
    /// read from far away (a store's remote index) answer in one batch.
    fn postings_many(&self, name: &str, values: &[&str]) -> Result<Vec<Postings>> {
        values.iter().map(|v| self.postings(name, v)).collect()
    }
}
