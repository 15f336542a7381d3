//! Cardinality statistics of a database's head (what Prometheus'
//! `/api/v1/status/tsdb` shows) and on-demand tombstone cleaning.
//!
//! [`Db::head_stats`] reads only the head's inverted index through its
//! public label-name / label-value / postings API (one postings lookup per
//! label pair) plus one pass over the head's series for the chunk count;
//! it takes no lock for longer than one such lookup, so it is safe next
//! to appends, but it costs O(index size) and is meant for operators, not
//! hot paths.

use std::sync::Arc;

use crate::db::Db;
use crate::error::Result;
use crate::index::PostingsSource;
use crate::querier::Part;

/// One entry of a top list: a name and its count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatEntry {
    pub name: String,
    pub value: u64,
}

/// Head cardinality, with top lists of at most `limit` entries each,
/// largest first (ties by name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadStats {
    /// Series in the head.
    pub num_series: u64,
    /// Distinct label name/value pairs in the head's index.
    pub num_label_pairs: u64,
    /// Chunks (sealed and open) held by head series.
    pub chunk_count: u64,
    /// Oldest sample in the head (`i64::MAX` when empty, as Prometheus).
    pub min_time: i64,
    /// Newest sample in the head (`i64::MIN` when empty).
    pub max_time: i64,
    /// Series per metric name.
    pub series_count_by_metric_name: Vec<StatEntry>,
    /// Distinct values per label name.
    pub label_value_count_by_label_name: Vec<StatEntry>,
    /// Bytes of label values per label name (value length × series).
    pub memory_in_bytes_by_label_name: Vec<StatEntry>,
    /// Series per `name=value` pair.
    pub series_count_by_label_value_pair: Vec<StatEntry>,
}

/// Keeps the `limit` largest entries, largest first.
fn top(mut v: Vec<StatEntry>, limit: usize) -> Vec<StatEntry> {
    v.sort_by(|a, b| b.value.cmp(&a.value).then_with(|| a.name.cmp(&b.name)));
    v.truncate(limit);
    v
}

impl Db {
    /// Cardinality statistics of the head (top lists of at most `limit`
    /// entries).
    pub fn head_stats(&self, limit: usize) -> Result<HeadStats> {
        let head = &self.head;
        let index = head.postings();
        let mut by_metric = Vec::new();
        let mut values_by_name = Vec::new();
        let mut bytes_by_name = Vec::new();
        let mut by_pair = Vec::new();
        let mut pairs = 0u64;
        for name in index.label_names() {
            let values = index.label_values(&name);
            let mut bytes = 0u64;
            for value in &values {
                let n = index.postings(&name, value)?.len() as u64;
                if n == 0 {
                    continue;
                }
                if name == stratus_model::METRIC_NAME {
                    by_metric.push(StatEntry {
                        name: value.clone(),
                        value: n,
                    });
                }
                bytes += value.len() as u64 * n;
                by_pair.push(StatEntry {
                    name: format!("{name}={value}"),
                    value: n,
                });
            }
            pairs += values.len() as u64;
            values_by_name.push(StatEntry {
                name: name.clone(),
                value: values.len() as u64,
            });
            bytes_by_name.push(StatEntry { name, value: bytes });
        }
        let chunk_count = head
            .select(&[], i64::MIN, i64::MAX, false)?
            .iter()
            .map(|s| {
                s.parts
                    .iter()
                    .filter(|p| matches!(p, Part::Chunk { .. }))
                    .count() as u64
            })
            .sum();
        Ok(HeadStats {
            num_series: head.num_series(),
            num_label_pairs: pairs,
            chunk_count,
            min_time: head.min_t(),
            max_time: head.max_t(),
            series_count_by_metric_name: top(by_metric, limit),
            label_value_count_by_label_name: top(values_by_name, limit),
            memory_in_bytes_by_label_name: top(bytes_by_name, limit),
            series_count_by_label_value_pair: top(by_pair, limit),
        })
    }

    /// Rewrites every block that has tombstones (and runs any other due
    /// compaction) so deleted data leaves the disk now rather than at the
    /// next maintenance pass. Deleted data is hidden from reads already.
    pub async fn clean_tombstones(self: &Arc<Self>) -> Result<()> {
        crate::compact::compact(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_lists() {
        let e = |n: &str, v| StatEntry {
            name: n.into(),
            value: v,
        };
        let t = top(vec![e("b", 1), e("a", 5), e("c", 5), e("d", 2)], 3);
        assert_eq!(t, vec![e("a", 5), e("c", 5), e("d", 2)]);
    }
}
