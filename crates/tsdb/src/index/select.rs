//! Matcher evaluation over any [`PostingsSource`], with Prometheus semantics.
//!
//! A series without label `l` behaves as if it had `l=""`. So a matcher
//! that accepts the empty string (`l=""`, `l!="x"`, `l=~"a|"`, `l!~"x"`)
//! also selects every series that lacks `l`, and cannot be answered from
//! the index by looking values up: the index only holds series that have
//! the label. Such a matcher is evaluated as a subtraction of its inverse
//! instead: `l!="x"` keeps everything except `postings(l, x)`, `l=""` keeps
//! everything except the series having any value of `l`.
//!
//! The plan therefore is:
//! 1. drop matchers that accept everything (`l=~".*"`);
//! 2. look up every matcher that rejects the empty string (cheapest kinds
//!    first, stopping at the first empty result) and intersect them;
//! 3. when there were none, start from all series instead;
//! 4. subtract, for each matcher that accepts the empty string, the series
//!    whose value of that label the matcher rejects.
//!
//! Value lookups use the matcher's fast paths: a finite set of literals
//! (`l="a"`, `l=~"a|b|c"`) is looked up directly, a literal prefix limits a
//! value scan to the values starting with it, and only the remaining
//! regexes test every value of the label.

use stratus_model::Matcher;

use super::ops::{intersect_many, subtract, union_many};
use super::{Postings, PostingsSource};
use crate::error::Result;

/// The ids of the series whose labels satisfy every matcher, sorted.
///
/// Callers must pass at least one matcher: an empty list selects nothing
/// (never "everything"), so a bug upstream cannot turn into a full scan.
/// A list made only of `=~".*"` matchers selects every series, as in
/// Prometheus.
pub fn select_postings(src: &dyn PostingsSource, matchers: &[Matcher]) -> Result<Postings> {
    if matchers.is_empty() {
        return Ok(Vec::new());
    }
    let mut positive: Vec<&Matcher> = Vec::new();
    let mut negative: Vec<&Matcher> = Vec::new();
    for m in matchers {
        if m.matches_everything() {
            continue;
        }
        if m.matches_empty() {
            negative.push(m);
        } else {
            positive.push(m);
        }
    }
    positive.sort_by_key(|m| cost_class(m));

    let mut lists = Vec::with_capacity(positive.len());
    for m in positive {
        let p = postings_matching(src, m)?;
        if p.is_empty() {
            return Ok(Vec::new());
        }
        lists.push(p);
    }
    let mut acc = if lists.is_empty() {
        src.all_postings()?
    } else {
        intersect_many(lists)
    };

    negative.sort_by_key(|m| cost_class(&m.inverse()));
    for m in negative {
        if acc.is_empty() {
            break;
        }
        let drop = postings_matching(src, &m.inverse())?;
        acc = subtract(&acc, &drop);
    }
    Ok(acc)
}

/// Orders lookups: direct value lookups, then prefix scans, then full
/// scans of a label's values.
fn cost_class(m: &Matcher) -> u8 {
    if m.set_matches().is_some() {
        0
    } else if m.prefix().is_some() {
        1
    } else {
        2
    }
}

/// The union of the postings of every non-empty value of `m.name` that `m`
/// accepts (i.e. the series that have the label and whose value matches).
fn postings_matching(src: &dyn PostingsSource, m: &Matcher) -> Result<Postings> {
    let name = &*m.name;
    if let Some(values) = m.set_matches() {
        let values: Vec<&str> = values
            .iter()
            .map(|v| &**v)
            .filter(|v| !v.is_empty())
            .collect();
        return Ok(union_many(src.postings_many(name, &values)?));
    }
    let prefix = m.prefix().unwrap_or("");
    let mut values: Vec<String> = Vec::new();
    src.for_each_value(name, prefix, &mut |v| {
        if !v.starts_with(prefix) {
            return false;
        }
        if !v.is_empty() && m.matches(v) {
            values.push(v.to_owned());
        }
        true
    })?;
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    Ok(union_many(src.postings_many(name, &values)?))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use stratus_model::{Labels, MatchType};

    use super::*;
    use crate::index::MemPostings;

    fn m(kind: MatchType, name: &str, value: &str) -> Matcher {
        Matcher::new(kind, name, value).unwrap()
    }

    fn naive(series: &[(u64, Labels)], matchers: &[Matcher]) -> Vec<u64> {
        if matchers.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<u64> = series
            .iter()
            .filter(|(_, l)| {
                matchers
                    .iter()
                    .all(|m| m.matches(l.get(&m.name).unwrap_or("")))
            })
            .map(|(id, _)| *id)
            .collect();
        out.sort_unstable();
        out
    }

    const NAMES: [&str; 4] = ["a", "b", "c", "d"];
    const VALUES: [&str; 6] = ["", "x", "y", "xy", "yx", "z"];

    fn labels() -> impl Strategy<Value = Labels> {
        proptest::collection::vec(proptest::sample::select(&VALUES[..]), 4)
            .prop_map(|vals| Labels::from_pairs(NAMES.iter().copied().zip(vals)))
    }

    fn matcher() -> impl Strategy<Value = Matcher> {
        let name = proptest::sample::select(&["a", "b", "c", "e"][..]);
        let plain = proptest::sample::select(&["", "x", "y", "xy", "q"][..]);
        let regex = proptest::sample::select(
            &[
                "x|y", "x.*", ".*", ".+", "x?", "", "x|", "(x|y)z?", "[xy]+", "y.+", "xy|.*z",
                "x|yx|q", "(?i)X", ".*y",
            ][..],
        );
        prop_oneof![
            (name.clone(), plain.clone()).prop_map(|(n, v)| m(MatchType::Equal, n, v)),
            (name.clone(), plain).prop_map(|(n, v)| m(MatchType::NotEqual, n, v)),
            (name.clone(), regex.clone()).prop_map(|(n, v)| m(MatchType::RegexMatch, n, v)),
            (name, regex).prop_map(|(n, v)| m(MatchType::RegexNoMatch, n, v)),
        ]
    }

    fn build(series: &[(u64, Labels)]) -> MemPostings {
        let idx = MemPostings::new();
        for (id, l) in series {
            idx.add(*id, l);
        }
        idx
    }

    #[test]
    fn prometheus_semantics_examples() {
        let series: Vec<(u64, Labels)> = vec![
            (1, Labels::from_pairs([("n", "1"), ("i", "a")])),
            (2, Labels::from_pairs([("n", "1"), ("i", "b")])),
            (3, Labels::from_pairs([("n", "1")])),
            (4, Labels::from_pairs([("n", "2"), ("i", "a")])),
        ];
        let idx = build(&series);
        let q = |ms: &[Matcher]| select_postings(&idx, ms).unwrap();
        assert_eq!(q(&[]), Vec::<u64>::new());
        assert_eq!(q(&[m(MatchType::Equal, "i", "")]), vec![3]);
        assert_eq!(q(&[m(MatchType::NotEqual, "i", "a")]), vec![2, 3]);
        assert_eq!(q(&[m(MatchType::NotEqual, "i", "")]), vec![1, 2, 4]);
        assert_eq!(q(&[m(MatchType::RegexMatch, "i", "a|")]), vec![1, 3, 4]);
        assert_eq!(q(&[m(MatchType::RegexMatch, "i", ".*")]), vec![1, 2, 3, 4]);
        assert_eq!(q(&[m(MatchType::RegexMatch, "i", ".+")]), vec![1, 2, 4]);
        assert_eq!(q(&[m(MatchType::RegexNoMatch, "i", "b")]), vec![1, 3, 4]);
        assert_eq!(
            q(&[
                m(MatchType::Equal, "n", "1"),
                m(MatchType::RegexMatch, "i", "a|b|c")
            ]),
            vec![1, 2]
        );
        assert_eq!(
            q(&[
                m(MatchType::Equal, "n", "1"),
                m(MatchType::Equal, "i", "zz")
            ]),
            Vec::<u64>::new()
        );
        assert_eq!(q(&[m(MatchType::Equal, "missing", "")]), vec![1, 2, 3, 4]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn select_matches_naive_filter(
            sets in proptest::collection::vec(labels(), 0..40),
            order in any::<proptest::sample::Index>(),
            matchers in proptest::collection::vec(matcher(), 0..4),
            deleted in proptest::collection::vec(any::<bool>(), 40),
        ) {
            let series: Vec<(u64, Labels)> = sets
                .into_iter()
                .enumerate()
                .map(|(i, l)| (i as u64 * 3 + 1, l))
                .collect();
            // Add in a rotated order so some adds are out of order.
            let mut shuffled = series.clone();
            if !shuffled.is_empty() {
                let k = order.index(shuffled.len());
                shuffled.rotate_left(k);
            }
            let idx = build(&shuffled);
            prop_assert_eq!(select_postings(&idx, &matchers).unwrap(), naive(&series, &matchers));

            // Delete some series (half by labels, half by a scan) and check again.
            let (gone, kept): (Vec<_>, Vec<_>) = series
                .iter()
                .cloned()
                .enumerate()
                .partition(|(i, _)| deleted[*i]);
            let gone: Vec<(u64, Labels)> = gone.into_iter().map(|(_, s)| s).collect();
            let kept: Vec<(u64, Labels)> = kept.into_iter().map(|(_, s)| s).collect();
            let (by_labels, by_scan) = gone.split_at(gone.len() / 2);
            idx.delete_series(by_labels);
            let scan_ids: Vec<u64> = by_scan.iter().map(|(id, _)| *id).collect();
            idx.delete(&scan_ids, &|_| None);
            prop_assert_eq!(select_postings(&idx, &matchers).unwrap(), naive(&kept, &matchers));
            prop_assert_eq!(idx.num_series(), kept.len());
        }
    }
}
