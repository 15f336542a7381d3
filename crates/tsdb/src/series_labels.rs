//! Label sets as the append path receives them: an owned [`Labels`] or
//! borrowed name/value pairs (for example slices of a request body). The
//! head hashes and compares either form in place, so an owned `Labels`
//! (an `Arc<str>` per name and value) is built only when a series is
//! created or a refused sample is reported.

use std::sync::Arc;

use stratus_model::{Label, Labels, METRIC_NAME};

/// A valid label set, owned or borrowed: pairs sorted by name, names
/// unique and non-empty, no empty values, `__name__` present. The append
/// path trusts this (the API validates requests); equal label sets give
/// equal pairs whatever the form, so they name the same series.
pub trait SeriesLabels {
    /// The (name, value) pairs in name order.
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> + Clone;

    /// Number of pairs.
    fn len(&self) -> usize;

    /// Whether there are no pairs.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The metric name (`__name__`), if present.
    fn metric_name(&self) -> Option<&str> {
        self.pairs()
            .find(|(n, _)| *n == METRIC_NAME)
            .map(|(_, v)| v)
    }

    /// The label set as an owned [`Labels`].
    fn to_labels(&self) -> Labels {
        Labels::from_sorted_unchecked(
            self.pairs()
                .map(|(n, v)| Label::new(Arc::<str>::from(n), Arc::<str>::from(v)))
                .collect(),
        )
    }
}

impl SeriesLabels for Labels {
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.iter().map(|l| (&*l.name, &*l.value))
    }

    fn len(&self) -> usize {
        Labels::len(self)
    }

    fn metric_name(&self) -> Option<&str> {
        Labels::metric_name(self)
    }

    fn to_labels(&self) -> Labels {
        self.clone()
    }
}

impl<T: SeriesLabels + ?Sized> SeriesLabels for &T {
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        (**self).pairs()
    }

    fn len(&self) -> usize {
        (**self).len()
    }

    fn metric_name(&self) -> Option<&str> {
        (**self).metric_name()
    }

    fn to_labels(&self) -> Labels {
        (**self).to_labels()
    }
}

impl SeriesLabels for [(&str, &str)] {
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.iter().copied()
    }

    fn len(&self) -> usize {
        <[_]>::len(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_and_owned_forms_agree() {
        let owned = Labels::from_pairs([("__name__", "up"), ("job", "a"), ("zone", "z1")]);
        let borrowed: &[(&str, &str)] = &[("__name__", "up"), ("job", "a"), ("zone", "z1")];
        assert!(owned.pairs().eq(borrowed.pairs()));
        assert_eq!(SeriesLabels::len(borrowed), 3);
        assert_eq!(borrowed.metric_name(), Some("up"));
        assert_eq!(borrowed.to_labels(), owned);
        assert_eq!(<&Labels as SeriesLabels>::to_labels(&&owned), owned);
        let unnamed: &[(&str, &str)] = &[("job", "a")];
        assert_eq!(unnamed.metric_name(), None);
    }
}
