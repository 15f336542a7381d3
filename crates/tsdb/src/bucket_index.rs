//! The bucket index: one `bucket-index.json` per tenant prefix listing the
//! tenant's blocks (ulid, time range, stats, compaction lineage) and
//! pending deletions, so a reader finds the blocks with one GET instead of
//! listing the bucket (format in `docs/format/bucket-index.md`).
//!
//! The writer of a tenant's blocks keeps it: a new block enters the index
//! before its `meta.json` is uploaded (so every complete block is in the
//! index), a deletion is marked before the block's objects go and the
//! entry leaves after. Readers take the index when it is present and
//! valid, skip marked blocks and entries whose `meta.json` is missing, and
//! fall back to listing the bucket otherwise.
//!
//! In cluster mode several processes write blocks of one tenant: each
//! ingester keeps its own index (`bucket-index.ingester-<id>.json`, see
//! [`key_for`]), only the compactor writes `bucket-index.json`, and
//! readers merge all of them ([`read_all`], [`merge`]).

use serde::{Deserialize, Serialize};
use stratus_objstore::Bucket;
use tracing::warn;

use crate::block::BlockMeta;
use crate::error::Result;

/// Object key of the index under a tenant's prefix.
pub const INDEX_KEY: &str = "bucket-index.json";

/// The only index version written and read.
pub const INDEX_VERSION: u32 = 1;

/// The content of `bucket-index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketIndex {
    /// Format version ([`INDEX_VERSION`]).
    pub version: u32,
    /// When the index was last written (Unix ms).
    pub updated_at: i64,
    /// The tenant's blocks, ordered by (min_time, ulid).
    pub blocks: Vec<IndexBlock>,
    /// Blocks being deleted: readers ignore them.
    pub deletion_marks: Vec<DeletionMark>,
}

/// One block of the index: the parts of its `meta.json` a reader needs to
/// choose blocks for a query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexBlock {
    /// The block's ULID (its directory name).
    pub ulid: String,
    /// Inclusive lower bound of its sample timestamps (ms).
    pub min_time: i64,
    /// Exclusive upper bound of its sample timestamps (ms).
    pub max_time: i64,
    /// Samples in the block.
    pub num_samples: u64,
    /// Series in the block.
    pub num_series: u64,
    /// Chunks in the block.
    pub num_chunks: u64,
    /// Bytes of chunk segments plus index.
    pub num_bytes: u64,
    /// Compaction level (1 = cut from a head).
    pub compaction_level: u32,
    /// The level-1 blocks whose data it holds.
    pub sources: Vec<String>,
}

/// A block whose deletion has started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionMark {
    /// The block's ULID.
    pub ulid: String,
    /// When the deletion started (Unix ms).
    pub deletion_time: i64,
    /// The block's objects are gone from the bucket (the cluster
    /// compactor deletes them `deletion_delay` after the mark and keeps
    /// the mark while an ingester's index still lists the block). Absent
    /// (false) in indexes written before the field existed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub objects_deleted: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for BucketIndex {
    fn default() -> Self {
        Self {
            version: INDEX_VERSION,
            updated_at: 0,
            blocks: Vec::new(),
            deletion_marks: Vec::new(),
        }
    }
}

impl IndexBlock {
    /// The entry for a block.
    pub fn from_meta(m: &BlockMeta) -> Self {
        Self {
            ulid: m.ulid.to_string(),
            min_time: m.min_time,
            max_time: m.max_time,
            num_samples: m.stats.num_samples,
            num_series: m.stats.num_series,
            num_chunks: m.stats.num_chunks,
            num_bytes: m.stats.num_bytes,
            compaction_level: m.compaction.level,
            sources: m.compaction.sources.iter().map(|u| u.to_string()).collect(),
        }
    }
}

impl BucketIndex {
    /// An index of `metas`.
    pub fn from_metas<'a>(metas: impl IntoIterator<Item = &'a BlockMeta>) -> Self {
        let mut ix = Self::default();
        for m in metas {
            ix.add(m);
        }
        ix
    }

    /// Adds (or replaces) a block's entry.
    pub fn add(&mut self, m: &BlockMeta) {
        let e = IndexBlock::from_meta(m);
        self.blocks.retain(|b| b.ulid != e.ulid);
        self.blocks.push(e);
        self.blocks
            .sort_by(|a, b| (a.min_time, &a.ulid).cmp(&(b.min_time, &b.ulid)));
    }

    /// Marks a block as being deleted.
    pub fn mark_deleted(&mut self, ulid: &str, now_ms: i64) {
        if !self.deletion_marks.iter().any(|d| d.ulid == ulid) {
            self.deletion_marks.push(DeletionMark {
                ulid: ulid.to_string(),
                deletion_time: now_ms,
                objects_deleted: false,
            });
        }
    }

    /// Removes a block's entry and its deletion mark.
    pub fn remove(&mut self, ulid: &str) {
        self.blocks.retain(|b| b.ulid != ulid);
        self.deletion_marks.retain(|d| d.ulid != ulid);
    }

    /// Whether a deletion of `ulid` has started.
    pub fn is_marked(&self, ulid: &str) -> bool {
        self.deletion_marks.iter().any(|d| d.ulid == ulid)
    }

    /// The blocks readers should use: entries without a deletion mark.
    pub fn live_blocks(&self) -> impl Iterator<Item = &IndexBlock> {
        self.blocks.iter().filter(|b| !self.is_marked(&b.ulid))
    }

    /// Same blocks and marks (ignoring `updated_at`).
    pub fn same_content(&self, o: &Self) -> bool {
        self.blocks == o.blocks && self.deletion_marks == o.deletion_marks
    }

    /// Parses an index; `None` (with a warning naming the problem) when it
    /// is not valid JSON of this version.
    pub fn parse(data: &[u8]) -> Option<Self> {
        match serde_json::from_slice::<Self>(data) {
            Ok(ix) if ix.version == INDEX_VERSION => Some(ix),
            Ok(ix) => {
                warn!(
                    version = ix.version,
                    "bucket index of an unknown version ignored"
                );
                None
            }
            Err(e) => {
                warn!(error = %e, "unreadable bucket index ignored");
                None
            }
        }
    }
}

/// Prefix of every bucket index file's key.
pub const INDEX_PREFIX: &str = "bucket-index";

/// The index key of an uploader: [`INDEX_KEY`] for the sole writer of a
/// prefix (`None`), `bucket-index.ingester-<id>.json` for an ingester on
/// a shared bucket.
pub fn key_for(uploader: Option<&str>) -> String {
    match uploader {
        Some(id) => format!("{INDEX_PREFIX}.ingester-{id}.json"),
        None => INDEX_KEY.to_string(),
    }
}

/// Reads the index under `bucket`'s prefix: `None` when absent or
/// invalid (the caller then lists the bucket).
pub async fn read(bucket: &Bucket) -> Result<Option<BucketIndex>> {
    read_key(bucket, INDEX_KEY).await
}

/// Reads the index stored at `key`: `None` when absent or invalid.
pub async fn read_key(bucket: &Bucket, key: &str) -> Result<Option<BucketIndex>> {
    Ok(bucket.get(key).await?.and_then(|d| BucketIndex::parse(&d)))
}

/// Writes the index under `bucket`'s prefix (one atomic PUT), stamping
/// `updated_at`.
pub async fn write(bucket: &Bucket, ix: &BucketIndex, now_ms: i64) -> Result<()> {
    write_key(bucket, ix, INDEX_KEY, now_ms).await
}

/// Writes the index at `key` (one atomic PUT), stamping `updated_at`.
pub async fn write_key(bucket: &Bucket, ix: &BucketIndex, key: &str, now_ms: i64) -> Result<()> {
    let mut ix = ix.clone();
    ix.updated_at = now_ms;
    let data = serde_json::to_vec_pretty(&ix).unwrap_or_default();
    bucket.put(key, data.into()).await?;
    Ok(())
}

/// Every index file under `bucket`'s prefix (the tenant index and the
/// uploaders' indexes) with its key; unreadable ones are left out (with
/// a warning). One LIST plus one GET per file.
pub async fn read_all(bucket: &Bucket) -> Result<Vec<(String, BucketIndex)>> {
    let mut out = Vec::new();
    for key in bucket.list_files("").await? {
        if !key.starts_with(INDEX_PREFIX) || !key.ends_with(".json") {
            continue;
        }
        if let Some(ix) = read_key(bucket, &key).await? {
            out.push((key, ix));
        }
    }
    Ok(out)
}

/// The merged view of several writers' indexes: every block listed by
/// any of them, and every deletion mark of any of them (a block marked by
/// one writer — the compactor deleting a merged input — is dead for all).
/// `None` when there is no index at all.
pub fn merge<'a>(indexes: impl IntoIterator<Item = &'a BucketIndex>) -> Option<BucketIndex> {
    let mut out: Option<BucketIndex> = None;
    for ix in indexes {
        let m = out.get_or_insert_with(BucketIndex::default);
        m.updated_at = m.updated_at.max(ix.updated_at);
        for b in &ix.blocks {
            if !m.blocks.iter().any(|x| x.ulid == b.ulid) {
                m.blocks.push(b.clone());
            }
        }
        for d in &ix.deletion_marks {
            if !m.is_marked(&d.ulid) {
                m.deletion_marks.push(d.clone());
            }
        }
    }
    if let Some(m) = out.as_mut() {
        m.blocks
            .sort_by(|a, b| (a.min_time, &a.ulid).cmp(&(b.min_time, &b.ulid)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{BlockCompaction, BlockStats, META_VERSION};

    fn meta(min: i64) -> BlockMeta {
        BlockMeta {
            ulid: ulid::Ulid::new(),
            min_time: min,
            max_time: min + 10,
            stats: BlockStats {
                num_samples: 5,
                ..BlockStats::default()
            },
            compaction: BlockCompaction {
                level: 1,
                ..BlockCompaction::default()
            },
            version: META_VERSION,
            thanos: None,
        }
    }

    #[test]
    fn add_mark_remove_parse() {
        let (a, b) = (meta(100), meta(0));
        let mut ix = BucketIndex::from_metas([&a, &b]);
        assert_eq!(ix.blocks[0].ulid, b.ulid.to_string());
        ix.mark_deleted(&a.ulid.to_string(), 7);
        assert_eq!(ix.live_blocks().count(), 1);
        let text = serde_json::to_vec(&ix).unwrap();
        let back = BucketIndex::parse(&text).unwrap();
        assert!(back.same_content(&ix));
        ix.remove(&a.ulid.to_string());
        assert_eq!(ix.blocks.len(), 1);
        assert!(ix.deletion_marks.is_empty());
        assert!(BucketIndex::parse(b"{not json").is_none());
        let mut other = BucketIndex::default();
        other.add(&a);
        other.mark_deleted(&b.ulid.to_string(), 9);
        let m = merge([&ix, &other]).unwrap();
        assert_eq!(m.blocks.len(), 2);
        assert_eq!(m.live_blocks().count(), 1);
        assert!(merge(std::iter::empty()).is_none());
        assert_eq!(key_for(Some("i-1")), "bucket-index.ingester-i-1.json");
        assert!(
            BucketIndex::parse(br#"{"version":9,"updated_at":0,"blocks":[],"deletion_marks":[]}"#)
                .is_none()
        );
    }
}
