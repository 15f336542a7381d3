//! The Stratus storage engine: one time-series database per tenant.
//!
//! Data path of a write: samples are validated against the series' state,
//! logged to the write-ahead log ([`wal`]) and only then applied to the
//! in-memory head, where each series appends to a compressed XOR chunk
//! ([`chunks`]) and is found through an inverted index ([`index`]). The head
//! is cut into immutable blocks ([`block`]) on fixed time ranges; blocks are
//! merged and deduplicated by compaction. Reads go through one query
//! interface over head and blocks that merges and deduplicates sources.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod block;
mod error;
pub mod index;

pub use block::{
    BlockCompaction, BlockMeta, BlockReader, BlockStats, BlockWriter, ChunkInput, ChunkMeta,
    Tombstones, fuzz_block_index, write_tombstones,
};
pub use error::{Error, Result};
