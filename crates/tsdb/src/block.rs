//! Immutable on-disk blocks: writing them, and reading them back from
//! memory maps.
//!
//! A block directory `<ULID>/` holds `meta.json` ([`BlockMeta`]), `index`
//! (symbols, series, postings, label index; `docs/format/index.md`),
//! `chunks/000001...` (chunk segments of at most 512 MiB;
//! `docs/format/chunks.md`) and optionally `tombstones` ([`Tombstones`];
//! `docs/format/tombstones.md`).
//!
//! Design choices:
//! - [`BlockWriter`] streams chunk bytes to segment files as series arrive
//!   and keeps only label sets and chunk metas in memory; the index is
//!   written at [`BlockWriter::finish`], then `meta.json` last, so a
//!   directory without `meta.json` is an incomplete block.
//! - A series id is the byte offset of the series' entry within the index's
//!   series section: ids are sorted like label sets and need no offset
//!   table. They are not dense.
//! - Chunk bytes come from a `ChunkSource`: the block's own segment
//!   files, memory-mapped ([`BlockReader::open`]), or a `RemoteChunks`
//!   fetcher for a block whose segments stay in the bucket
//!   ([`BlockReader::open_with_header`], the store's lazily opened
//!   blocks). Both decode records with the same function, CRC included.
//! - The index is the block's own `index` file, memory-mapped, or an index
//!   header (`index_header`: TOC, symbols, label index) with series
//!   entries and postings lists read through a `RemoteIndex` (ranged
//!   reads of the index object in the bucket, in batches).
//! - Readers trust nothing: magic numbers, versions, section bounds and
//!   CRC-32C checksums are checked; corrupt bytes become an [`Error`] naming
//!   file, section and offset, never a panic. Opening validates the small
//!   tables; series, postings and chunks are checked when decoded.

mod chunk_segments;
mod encoding;
mod error;
mod index_header;
mod index_reader;
mod index_writer;
mod meta;
#[cfg(test)]
mod tests;
mod tombstones;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use snafu::{ResultExt, ensure};
use stratus_model::Labels;

pub use chunk_segments::{SEGMENT_MAGIC, SEGMENT_VERSION};
pub use error::{Error, Result};
pub use index_header::{INDEX_HEADER_FILENAME, INDEX_HEADER_MAGIC, INDEX_HEADER_VERSION};
pub(crate) use index_header::{plan as index_header_plan, toc_range, write_header};
pub(crate) use index_reader::RemoteIndex;
pub use index_writer::{INDEX_MAGIC, INDEX_VERSION};
pub use meta::{
    BlockCompaction, BlockMeta, BlockStats, INGESTER_ID_LABEL, META_FILENAME, META_VERSION,
    ThanosMeta,
};
pub use tombstones::{
    TOMBSTONES_FILENAME, TOMBSTONES_MAGIC, TOMBSTONES_VERSION, Tombstones, write_tombstones,
};

use chunk_segments::{DEFAULT_SEGMENT_SIZE, SegmentWriter, Segments};
pub(crate) use chunk_segments::{SEGMENT_HEADER_LEN, decode_record, record_len, segment_name};
use error::{CreateDirSnafu, DirExistsSnafu, InvalidChunkSnafu, SeriesOrderSnafu, SyncSnafu};
use index_reader::{Backing, IndexReader};

/// Name of the index file inside a block directory.
pub const INDEX_FILENAME: &str = "index";
/// Name of the chunk segment directory inside a block directory.
pub const CHUNKS_DIRNAME: &str = "chunks";

/// Where a chunk of a series is and what time range it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    /// First sample timestamp (ms, inclusive).
    pub mint: i64,
    /// Last sample timestamp (ms, inclusive).
    pub maxt: i64,
    /// `(segment index << 32) | byte offset` of the chunk record.
    pub chunk_ref: u64,
}

/// One chunk handed to [`BlockWriter::add_series`].
#[derive(Debug, Clone, Copy)]
pub struct ChunkInput<'a> {
    pub mint: i64,
    pub maxt: i64,
    /// Chunk encoding (1 = XOR); opaque to the block.
    pub encoding: u8,
    pub data: &'a [u8],
    pub num_samples: u32,
}

impl<'a> ChunkInput<'a> {
    /// A chunk whose sample count is read from its bytes (0 when they
    /// cannot be read: the count is a statistic, the bytes are copied
    /// as they are).
    pub fn counted(mint: i64, maxt: i64, encoding: u8, data: &'a [u8]) -> Self {
        Self {
            mint,
            maxt,
            encoding,
            data,
            num_samples: crate::chunks::chunk_num_samples_any(encoding, data)
                .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        }
    }
}

/// Fsyncs a directory so renames and new entries in it are durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    let f = fs::File::open(dir).context(SyncSnafu { path: dir })?;
    f.sync_all().context(SyncSnafu { path: dir })
}

/// Writes one block.
#[derive(Debug)]
pub struct BlockWriter {
    dir: PathBuf,
    ulid: ulid::Ulid,
    min_time: i64,
    max_time: i64,
    segments: SegmentWriter,
    series: Vec<(Labels, Vec<ChunkMeta>)>,
    num_samples: u64,
    num_chunks: u64,
}

impl BlockWriter {
    /// Starts writing a block into `dir` (created; must not exist). Chunks
    /// stream to segment files as series are added; the index is written at
    /// finish. If writing fails the directory is left without `meta.json`,
    /// i.e. incomplete; the caller deletes it.
    pub fn create(dir: &Path, ulid: ulid::Ulid, min_time: i64, max_time: i64) -> Result<Self> {
        ensure!(!dir.exists(), DirExistsSnafu { path: dir });
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).context(CreateDirSnafu { path: parent })?;
        }
        fs::create_dir(dir).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                Error::DirExists {
                    path: dir.to_path_buf(),
                }
            } else {
                Error::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                }
            }
        })?;
        let chunks = dir.join(CHUNKS_DIRNAME);
        fs::create_dir(&chunks).context(CreateDirSnafu { path: &chunks })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            ulid,
            min_time,
            max_time,
            segments: SegmentWriter::new(chunks, DEFAULT_SEGMENT_SIZE),
            series: Vec::new(),
            num_samples: 0,
            num_chunks: 0,
        })
    }

    /// Caps segment files at `size` bytes (tests use small segments).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn with_segment_size(mut self, size: u64) -> Self {
        self.segments = SegmentWriter::new(self.dir.join(CHUNKS_DIRNAME), size);
        self
    }

    /// Adds a series. Series must come in strictly increasing label-set
    /// order; a series with no chunks is skipped. Chunks must be sorted by
    /// `mint` and have `mint <= maxt`.
    pub fn add_series(&mut self, labels: &Labels, chunks: &[ChunkInput<'_>]) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        if let Some((prev, _)) = self.series.last() {
            ensure!(
                labels > prev,
                SeriesOrderSnafu {
                    labels: labels.to_string(),
                    previous: prev.to_string()
                }
            );
        }
        let mut prev_mint = i64::MIN;
        for c in chunks {
            ensure!(
                c.mint <= c.maxt,
                InvalidChunkSnafu {
                    labels: labels.to_string(),
                    reason: "mint after maxt"
                }
            );
            ensure!(
                c.mint >= prev_mint,
                InvalidChunkSnafu {
                    labels: labels.to_string(),
                    reason: "chunks not sorted by mint"
                }
            );
            prev_mint = c.mint;
        }
        let mut metas = Vec::with_capacity(chunks.len());
        for c in chunks {
            let chunk_ref = self.segments.write(c.encoding, c.data)?;
            metas.push(ChunkMeta {
                mint: c.mint,
                maxt: c.maxt,
                chunk_ref,
            });
            self.num_samples += u64::from(c.num_samples);
        }
        self.num_chunks += chunks.len() as u64;
        self.series.push((labels.clone(), metas));
        Ok(())
    }

    /// Writes the index and `meta.json` (meta last), fsyncs files and
    /// directories, and returns the meta.
    pub fn finish(self, compaction: BlockCompaction) -> Result<BlockMeta> {
        let chunk_bytes = self.segments.finish()?;
        let index_bytes = index_writer::write_index(&self.dir.join(INDEX_FILENAME), &self.series)?;
        let meta = BlockMeta {
            ulid: self.ulid,
            min_time: self.min_time,
            max_time: self.max_time,
            stats: BlockStats {
                num_samples: self.num_samples,
                num_series: self.series.len() as u64,
                num_chunks: self.num_chunks,
                num_tombstones: 0,
                num_bytes: chunk_bytes + index_bytes,
            },
            compaction,
            version: META_VERSION,
            thanos: None,
        };
        // `write` fsyncs the block directory after the rename.
        meta.write(&self.dir)?;
        if let Some(parent) = self.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync_dir(parent)?;
        }
        Ok(meta)
    }
}

/// Fetches the chunk records of a block whose segment files are not on
/// local disk (a store reads them from the bucket with ranged GETs).
pub(crate) trait RemoteChunks: std::fmt::Debug + Send + Sync {
    /// The chunks at `refs`, in the order given (a ref may repeat):
    /// `(encoding, data)` each, CRC-checked. Any failure fails the whole
    /// call: no partial answers.
    fn fetch(&self, refs: &[u64]) -> crate::Result<Vec<(u8, Arc<[u8]>)>>;

    /// Number of chunk segment files.
    fn num_segments(&self) -> usize;
}

/// Where a block's chunk bytes come from.
#[derive(Debug)]
enum ChunkSource {
    /// The segment files in the block directory, memory-mapped.
    Local(Segments),
    /// Fetched on demand from elsewhere (the bucket).
    Remote(Arc<dyn RemoteChunks>),
}

/// A block opened for reading. Cheap to share in an `Arc`.
#[derive(Debug)]
pub struct BlockReader {
    dir: PathBuf,
    meta: BlockMeta,
    index: IndexReader,
    chunks: ChunkSource,
    tombstones: Tombstones,
}

impl BlockReader {
    /// Reads `meta.json`, opens the index, the chunk segments and the
    /// tombstones, and validates them.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, || {
            Ok(ChunkSource::Local(Segments::open(
                &dir.join(CHUNKS_DIRNAME),
            )?))
        })
    }

    /// Opens a block whose directory holds `meta.json`, an index header
    /// ([`INDEX_HEADER_FILENAME`]) and optionally `tombstones`; series
    /// entries and postings lists come from `index`, chunk bytes from
    /// `chunks`. A damaged header is an error (the caller rebuilds it).
    pub(crate) fn open_with_header(
        dir: &Path,
        index: Arc<dyn RemoteIndex>,
        chunks: Arc<dyn RemoteChunks>,
    ) -> Result<Self> {
        Self::open_inner(
            dir,
            || IndexReader::open_header(&dir.join(INDEX_HEADER_FILENAME), index),
            || Ok(ChunkSource::Remote(chunks)),
        )
    }

    /// Opens a block whose directory holds `meta.json` and the whole
    /// `index`, chunk bytes from `chunks` (how the store opened blocks
    /// before index headers; the benchmark compares both).
    #[cfg(test)]
    pub(crate) fn open_lazy(dir: &Path, chunks: Arc<dyn RemoteChunks>) -> Result<Self> {
        Self::open_with(dir, || Ok(ChunkSource::Remote(chunks)))
    }

    fn open_with(dir: &Path, chunks: impl FnOnce() -> Result<ChunkSource>) -> Result<Self> {
        Self::open_inner(dir, || IndexReader::open(&dir.join(INDEX_FILENAME)), chunks)
    }

    fn open_inner(
        dir: &Path,
        index: impl FnOnce() -> Result<IndexReader>,
        chunks: impl FnOnce() -> Result<ChunkSource>,
    ) -> Result<Self> {
        let meta = BlockMeta::read(dir)?;
        if let Some(name) = dir.file_name().and_then(|n| n.to_str()) {
            if let Ok(u) = ulid::Ulid::from_string(name) {
                ensure!(
                    u == meta.ulid,
                    error::MetaInvalidSnafu {
                        path: dir.join(META_FILENAME),
                        reason: format!("ULID {} does not match the directory name", meta.ulid)
                    }
                );
            }
        }
        let index = index()?;
        let chunks = chunks()?;
        let tombstones = Tombstones::read(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            meta,
            index,
            chunks,
            tombstones,
        })
    }

    /// The block's meta.
    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    /// The block directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The labels of series `id` (an id from this block's postings); fills
    /// `chunks` with its chunk metas, sorted by `mint`.
    pub fn series(&self, id: u64, chunks: &mut Vec<ChunkMeta>) -> Result<Labels> {
        self.index.series(id, chunks)
    }

    /// Calls `f` with each of the series `ids` (sorted, from this block's
    /// postings): its id, labels and chunk metas (sorted by `mint`). A
    /// block opened from an index header reads the entries in one batch
    /// of ranged reads first.
    pub fn for_each_series<E: From<Error>>(
        &self,
        ids: &[u64],
        f: impl FnMut(u64, Labels, &[ChunkMeta]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        self.index.for_each_series(ids, f)
    }

    /// The chunk at reference `r`: `(encoding, data)` after the CRC check.
    /// Only for blocks with local segments ([`BlockReader::open`]); a
    /// lazily opened block answers with an error (use
    /// [`BlockReader::chunks`]).
    pub fn chunk(&self, r: u64) -> Result<(u8, &[u8])> {
        match &self.chunks {
            ChunkSource::Local(s) => s.chunk(r),
            ChunkSource::Remote(_) => error::InvalidChunkRefSnafu {
                path: self.dir.clone(),
                chunk_ref: r,
                reason: "the block's chunks are remote: read them with BlockReader::chunks",
            }
            .fail(),
        }
    }

    /// The chunks at `refs`, in order: `(encoding, data)` each, after the
    /// CRC check; one batch, so a remote source fetches them together
    /// (nearby ranges merged). Works for every block.
    pub fn chunks(&self, refs: &[u64]) -> crate::Result<Vec<(u8, Arc<[u8]>)>> {
        match &self.chunks {
            ChunkSource::Local(s) => refs
                .iter()
                .map(|&r| {
                    let (e, d) = s.chunk(r)?;
                    Ok((e, Arc::from(d)))
                })
                .collect(),
            ChunkSource::Remote(f) => {
                let got = f.fetch(refs)?;
                if got.len() != refs.len() {
                    return Err(crate::Error::Remote {
                        message: format!(
                            "block {}: {} chunks fetched for {} references",
                            self.meta.ulid,
                            got.len(),
                            refs.len()
                        ),
                    });
                }
                Ok(got)
            }
        }
    }

    /// Whether the chunk segments are read from elsewhere (the bucket)
    /// rather than from local files.
    pub fn is_lazy(&self) -> bool {
        matches!(self.chunks, ChunkSource::Remote(_))
    }

    /// All label names, sorted.
    pub fn label_names(&self) -> Result<Vec<String>> {
        Ok(self.index.label_names())
    }

    /// All values of label `name`, sorted.
    pub fn label_values(&self, name: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        self.index.for_each_value(name, "", &mut |v| {
            out.push(v.to_string());
            true
        })?;
        Ok(out)
    }

    /// The block's tombstones as of opening.
    pub fn tombstones(&self) -> &Tombstones {
        &self.tombstones
    }

    /// Number of chunk segment files.
    pub fn num_segments(&self) -> usize {
        match &self.chunks {
            ChunkSource::Local(s) => s.len(),
            ChunkSource::Remote(f) => f.num_segments(),
        }
    }

    /// Size of the index file in bytes.
    pub fn index_size(&self) -> u64 {
        self.index.size() as u64
    }
}

impl crate::index::PostingsSource for BlockReader {
    fn all_postings(&self) -> crate::Result<crate::index::Postings> {
        Ok(self.index.all_postings()?)
    }

    fn for_each_value(
        &self,
        name: &str,
        from: &str,
        f: &mut dyn FnMut(&str) -> bool,
    ) -> crate::Result<()> {
        Ok(self.index.for_each_value(name, from, f)?)
    }

    fn postings(&self, name: &str, value: &str) -> crate::Result<crate::index::Postings> {
        Ok(self.index.postings(name, value)?)
    }

    fn postings_many(
        &self,
        name: &str,
        values: &[&str],
    ) -> crate::Result<Vec<crate::index::Postings>> {
        Ok(self.index.postings_many(name, values)?)
    }
}

/// Fuzz entry point: treats `data` as an index file, opens it and walks
/// every label name, value, postings list and series; then builds its
/// index header as a store would and walks it again through ranged reads
/// of `data`. Must never panic.
pub fn fuzz_block_index(data: &[u8]) {
    if let Ok(ix) =
        IndexReader::from_backing(PathBuf::from("fuzz/index"), Backing::Owned(data.to_vec()))
    {
        fuzz_walk(&ix);
    }
    let name = Path::new("fuzz/index");
    if let Some(h) = index_header::header_of(name, data) {
        let remote = Arc::new(index_header::SliceIndex {
            data: data.to_vec(),
            name: name.to_path_buf(),
        });
        if let Ok(ix) = IndexReader::from_header_bytes(PathBuf::from("fuzz/header"), h, remote) {
            fuzz_walk(&ix);
        }
    }
}

fn fuzz_walk(ix: &IndexReader) {
    let _ = ix.path();
    let mut chunks = Vec::new();
    let mut walk = |ids: &[u64]| {
        for &id in ids {
            let _ = ix.series(id, &mut chunks);
        }
        let _ = ix.for_each_series(ids, |_, _, _| Ok::<_, Error>(()));
    };
    if let Ok(all) = ix.all_postings() {
        walk(&all);
    }
    for name in ix.label_names() {
        let mut values = Vec::new();
        let _ = ix.for_each_value(&name, "", &mut |v| {
            values.push(v.to_string());
            true
        });
        let _ = ix.for_each_value(&name, "m", &mut |_| false);
        for v in &values {
            if let Ok(p) = ix.postings(&name, v) {
                walk(&p);
            }
        }
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let _ = ix.postings_many(&name, &refs);
        let _ = ix.postings(&name, "no such value");
    }
    for id in [0u64, 1, 7, u32::MAX as u64, u64::MAX] {
        let _ = ix.series(id, &mut chunks);
    }
}
