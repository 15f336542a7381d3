//! The Stratus storage engine: one time-series database per tenant.
//!
//! Data path of a write: samples are validated against the series' state,
//! logged to the write-ahead log ([`wal`]) and only then applied to the
//! in-memory head, where each series appends to a compressed XOR chunk
//! ([`chunks`]) and is found through an inverted index ([`index`]); sealed
//! chunks are moved out of the heap into head chunk files (`chunks_head/`,
//! read back with positional reads) by the periodic maintenance. The head
//! is cut into immutable blocks ([`block`]) on fixed time ranges; blocks are
//! merged and deduplicated by compaction. Reads go through one query
//! interface over head and blocks that merges and deduplicates sources.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod block;
pub mod bucket_index;
mod bucket_store;
pub mod chunks;
mod compact;
mod db;
mod error;
pub mod exemplars;
pub mod failpoint;
mod head;
pub mod index;
pub mod metadata;
pub mod querier;
mod series_labels;
mod stats;
mod tenants;
mod varint;
pub mod wal;

pub use block::{
    BlockCompaction, BlockMeta, BlockReader, BlockStats, BlockWriter, ChunkInput, ChunkMeta,
    Tombstones, fuzz_block_index, write_tombstones,
};
pub use bucket_index::BucketIndex;
pub use bucket_store::{
    BucketStore, CompactStats, CompactorConfig, DEFAULT_CHUNK_CACHE_BYTES,
    DEFAULT_INDEX_CACHE_BYTES, StoreMetrics, StoreTenant, SyncStats, compact_tenant,
    compact_tenant_at,
};
pub use chunks::{
    Appendable, COMPACT_CHUNK_SAMPLES, COMPACT_ZSTD_LEVEL, ChunkIter, CounterResetHeader, Encoding,
    FloatHistogramAppender, HistogramAppender, MAX_COMPACT_SAMPLES, MAX_SAMPLES_PER_CHUNK,
    XorAppender, XorIterator, chunk_num_samples, chunk_num_samples_any, decode_any, decode_compact,
    decode_float_histogram, decode_histogram, decode_xor, encode_compact,
    encode_compact_with_level, fuzz_compact_decode, fuzz_histogram_decode, fuzz_xor_decode,
    to_xor_chunks,
};
pub use chunks::{
    decode_st_column, encode_st_chunk, fuzz_st_decode, is_st_encoding, split_st_chunk, with_st,
};
pub use db::{
    AppendReport, Db, DbConfig, DbStats, SampleError, SeriesHistograms, SeriesSamples,
    StartTimestamps,
};
pub use error::{Error, RejectReason, Result};
pub use exemplars::{ExemplarOutcome, ExemplarReport, ExemplarStats, ExemplarStore};
pub use head::HeadConfig;
pub use head::HeadMemory;
pub use index::{MemPostings, Postings, PostingsSource, select_postings};
pub use metadata::{MetadataStore, MetricMetadata, MetricType};
pub use querier::{
    Part, Queryable, SelectHints, Series, SeriesIter, Value, encode_histogram_chunks,
    encode_st_chunks, merge_series, merge_typed, merge_typed_st,
};
pub use series_labels::SeriesLabels;
pub use stats::{HeadStats, StatEntry};
pub use tenants::{TenantOverrides, Tenants};
pub use wal::{
    CheckpointStats, FsyncPolicy, Record, RefFloatHistogram, RefHistogram, RefSample, RefSeries,
    RefStartTimestamp, RefTombstone, ReplayOptions, ReplayStats, Wal, WalConfig, fuzz_wal_read,
};
