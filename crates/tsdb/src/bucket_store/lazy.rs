//! The store's lazily opened blocks: chunk bytes read from the bucket on
//! demand.
//!
//! - [`LazyChunks`] is a block's [`RemoteChunks`]: for the chunk
//!   references of one select it serves what the [`ChunkCache`] holds,
//!   turns the rest into byte ranges of the segment objects
//!   (`<ulid>/chunks/000001...`; a record's length is unknown until its
//!   first bytes are read, so a range runs to the next wanted record or
//!   [`RECORD_ESTIMATE`] bytes, whichever is first), merges ranges less
//!   than [`COALESCE_GAP`] apart ([`coalesce`], as Thanos' bucket store
//!   does), reads them with ranged GETs, re-reads exactly the records
//!   longer than their estimate, and decodes every record with the
//!   block module's own decoder (CRC checked).
//! - [`ChunkCache`] keeps decoded chunks in memory, least recently used
//!   first out, within a byte budget shared by every block of the store.
//! - [`FetchCtx`] is what every block shares: the cache, the counters
//!   ([`StoreCounters`]) and the runtime the GETs run on. The read path is
//!   synchronous (`Queryable`), so a fetch is spawned on the runtime and
//!   the calling thread waits for it (the gRPC server calls `select` on
//!   the blocking pool; on a multi-thread runtime worker the wait goes
//!   through `block_in_place`).
//!
//! A short or corrupt read, a reference outside the segments, or a bucket
//! error fails the whole fetch with an error naming the object: a query
//! never gets a partial answer.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use stratus_objstore::Bucket;
use ulid::Ulid;

use crate::block::{
    CHUNKS_DIRNAME, INDEX_FILENAME, RemoteChunks, RemoteIndex, SEGMENT_HEADER_LEN, decode_record,
    record_len, segment_name,
};
use crate::error::{Error, Result};

/// Ranges less than this apart are read with one GET (Thanos' default).
pub(crate) const COALESCE_GAP: u64 = 16 << 10;
/// Bytes read for a record whose end is not bounded by the next wanted
/// record (most chunks are far smaller; longer ones are re-read).
pub(crate) const RECORD_ESTIMATE: u64 = 16 << 10;
/// GETs in flight per segment object during one fetch.
const GET_CONCURRENCY: usize = 8;
/// Longest wait for the GETs of one fetch.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes a cache entry is charged beyond its data (key, map slots).
const ENTRY_OVERHEAD: u64 = 64;

/// Counters of the store's bucket reads and chunk cache.
#[derive(Debug, Default)]
pub(crate) struct StoreCounters {
    /// Bytes of chunk segments read with ranged GETs.
    pub(crate) chunk_bytes_fetched: AtomicU64,
    /// Ranged GETs of chunk segments.
    pub(crate) chunk_gets: AtomicU64,
    /// Chunks served from the cache.
    pub(crate) cache_hits: AtomicU64,
    /// Chunks read from the bucket.
    pub(crate) cache_misses: AtomicU64,
    /// Fetches that failed (bucket error, short or corrupt read).
    pub(crate) fetch_failures: AtomicU64,
    /// Bytes of block metas, tombstones and index-header parts downloaded.
    pub(crate) index_bytes_downloaded: AtomicU64,
    /// Index headers built (first use of a block, or a damaged file).
    pub(crate) header_builds: AtomicU64,
    /// Ranged GETs of index objects (header builds, series, postings).
    pub(crate) index_gets: AtomicU64,
    /// Bytes of index objects read with ranged GETs.
    pub(crate) index_bytes_fetched: AtomicU64,
    /// Series entries and postings lists served from the index cache.
    pub(crate) index_cache_hits: AtomicU64,
    /// Series entries and postings lists read from the bucket.
    pub(crate) index_cache_misses: AtomicU64,
    /// Index reads that failed (bucket error, object gone, short read).
    pub(crate) index_fetch_failures: AtomicU64,
}

/// What every lazily opened block of a store shares.
#[derive(Debug)]
pub(crate) struct FetchCtx {
    pub(crate) cache: ChunkCache,
    /// Series entry and postings list bodies of remote indexes, keyed by
    /// block and offset.
    pub(crate) index_cache: ChunkCache,
    pub(crate) counters: StoreCounters,
    rt: tokio::runtime::Handle,
}

impl FetchCtx {
    pub(crate) fn new(
        cache_bytes: u64,
        index_cache_bytes: u64,
        rt: tokio::runtime::Handle,
    ) -> Self {
        Self {
            cache: ChunkCache::new(cache_bytes),
            index_cache: ChunkCache::new(index_cache_bytes),
            counters: StoreCounters::default(),
            rt,
        }
    }

    /// Runs `fut` on the runtime and waits for it on this thread, at most
    /// [`FETCH_TIMEOUT`].
    pub(crate) fn block_on<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let r = match tokio::time::timeout(FETCH_TIMEOUT, fut).await {
                Ok(r) => r,
                Err(_) => Err(Error::Remote {
                    message: format!("bucket read: no answer within {FETCH_TIMEOUT:?}"),
                }),
            };
            let _ = tx.send(r);
        });
        let wait = || rx.recv_timeout(FETCH_TIMEOUT + Duration::from_secs(5));
        let got = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        got.unwrap_or_else(|_| {
            Err(Error::Remote {
                message: "bucket read did not finish (select must not run on a \
                          current-thread runtime's own thread)"
                    .to_string(),
            })
        })
    }
}

type CacheKey = (u128, u64);
/// One decoded chunk: encoding and data.
type Chunk = (u8, Arc<[u8]>);
/// Per segment, the ranges read and their bytes.
type Fetched = Vec<(usize, Vec<(Range<u64>, Bytes)>)>;

/// Least-recently-used chunks within a byte budget.
#[derive(Debug)]
pub(crate) struct ChunkCache {
    budget: u64,
    inner: Mutex<Lru>,
}

#[derive(Debug, Default)]
struct Lru {
    /// Chunk → (encoding, data, last use).
    map: HashMap<CacheKey, (u8, Arc<[u8]>, u64)>,
    /// Last use → chunk, oldest first.
    order: BTreeMap<u64, CacheKey>,
    bytes: u64,
    tick: u64,
}

fn cost(data: &[u8]) -> u64 {
    data.len() as u64 + ENTRY_OVERHEAD
}

impl ChunkCache {
    /// A cache holding at most `budget` bytes (0 turns it off).
    pub(crate) fn new(budget: u64) -> Self {
        Self {
            budget,
            inner: Mutex::new(Lru::default()),
        }
    }

    /// The chunk `r` of block `block`, marked as just used.
    pub(crate) fn get(&self, block: Ulid, r: u64) -> Option<(u8, Arc<[u8]>)> {
        let mut l = self.inner.lock();
        let l = &mut *l;
        l.tick += 1;
        let tick = l.tick;
        let e = l.map.get_mut(&(block.0, r))?;
        l.order.remove(&e.2);
        e.2 = tick;
        l.order.insert(tick, (block.0, r));
        Some((e.0, e.1.clone()))
    }

    /// Adds a chunk, evicting the least recently used ones to stay within
    /// the budget. A chunk larger than the whole budget is not kept.
    pub(crate) fn insert(&self, block: Ulid, r: u64, encoding: u8, data: Arc<[u8]>) {
        let c = cost(&data);
        if c > self.budget {
            return;
        }
        let mut l = self.inner.lock();
        let l = &mut *l;
        l.tick += 1;
        let tick = l.tick;
        if let Some(old) = l.map.insert((block.0, r), (encoding, data, tick)) {
            l.order.remove(&old.2);
            l.bytes -= cost(&old.1);
        }
        l.order.insert(tick, (block.0, r));
        l.bytes += c;
        while l.bytes > self.budget {
            let Some((_, k)) = l.order.pop_first() else {
                break;
            };
            if let Some(old) = l.map.remove(&k) {
                l.bytes -= cost(&old.1);
            }
        }
    }

    /// Forgets every chunk of `block` (dropped from the bucket index).
    pub(crate) fn drop_block(&self, block: Ulid) {
        let mut l = self.inner.lock();
        let l = &mut *l;
        let gone: Vec<(CacheKey, u64, u64)> = l
            .map
            .iter()
            .filter(|(k, _)| k.0 == block.0)
            .map(|(k, v)| (*k, v.2, cost(&v.1)))
            .collect();
        for (k, tick, c) in gone {
            l.map.remove(&k);
            l.order.remove(&tick);
            l.bytes -= c;
        }
    }

    /// Bytes held (data plus per-entry overhead).
    pub(crate) fn bytes(&self) -> u64 {
        self.inner.lock().bytes
    }

    /// Chunks held.
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    /// The byte budget.
    pub(crate) fn budget(&self) -> u64 {
        self.budget
    }
}

/// Merges byte ranges (sorted by start) whose gap is below `gap` into
/// covering ranges, in order.
pub(crate) fn coalesce(ranges: &[Range<u64>], gap: u64) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(gap) => {
                last.end = last.end.max(r.end);
            }
            _ => out.push(r.clone()),
        }
    }
    out
}

/// A block's chunk segments in the bucket, read on demand.
#[derive(Debug)]
pub(crate) struct LazyChunks {
    /// The tenant's bucket.
    bucket: Bucket,
    /// `<tenant>/<ulid>`, for messages.
    name: String,
    ulid: Ulid,
    /// Size of each segment object (index 0 is `chunks/000001`).
    sizes: Vec<u64>,
    ctx: Arc<FetchCtx>,
}

/// One record to read: where it is and which output slots want it.
struct Want {
    seg: usize,
    off: u64,
    /// End of the first read (estimate).
    end: u64,
    slots: Vec<usize>,
}

impl LazyChunks {
    pub(crate) fn new(
        bucket: Bucket,
        name: String,
        ulid: Ulid,
        sizes: Vec<u64>,
        ctx: Arc<FetchCtx>,
    ) -> Self {
        Self {
            bucket,
            name,
            ulid,
            sizes,
            ctx,
        }
    }

    fn seg_key(&self, seg: usize) -> String {
        format!(
            "{}/{CHUNKS_DIRNAME}/{}",
            self.ulid,
            segment_name(seg as u32)
        )
    }

    fn seg_path(&self, seg: usize) -> PathBuf {
        PathBuf::from(format!(
            "{}/{CHUNKS_DIRNAME}/{}",
            self.name,
            segment_name(seg as u32)
        ))
    }

    fn bad_ref(&self, r: u64, reason: &'static str) -> Error {
        Error::Block {
            source: crate::block::Error::InvalidChunkRef {
                path: PathBuf::from(format!("{}/{CHUNKS_DIRNAME}", self.name)),
                chunk_ref: r,
                reason,
            },
        }
    }

    /// Reads `ranges` of each segment (already coalesced): per segment,
    /// the ranges and their bytes, every answer checked for length.
    fn read(&self, ranges: BTreeMap<usize, Vec<Range<u64>>>) -> Result<Fetched> {
        let jobs: Vec<(usize, String, Vec<Range<u64>>)> = ranges
            .into_iter()
            .map(|(seg, rs)| (seg, self.seg_key(seg), rs))
            .collect();
        let n_gets: u64 = jobs.iter().map(|j| j.2.len() as u64).sum();
        let bucket = self.bucket.clone();
        let got = self.ctx.block_on(async move {
            let mut out = Vec::with_capacity(jobs.len());
            for (seg, key, rs) in jobs {
                let bytes = bucket.get_ranges(&key, &rs, GET_CONCURRENCY).await?;
                out.push((seg, rs.into_iter().zip(bytes).collect::<Vec<_>>()));
            }
            Ok(out)
        })?;
        let c = &self.ctx.counters;
        c.chunk_gets.fetch_add(n_gets, Ordering::Relaxed);
        for (seg, parts) in &got {
            for (r, b) in parts {
                c.chunk_bytes_fetched
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
                if b.len() as u64 != r.end - r.start {
                    return Err(Error::Block {
                        source: crate::block::Error::Corrupt {
                            path: self.seg_path(*seg),
                            section: "chunk segment",
                            offset: r.start,
                            reason: "short ranged read from the bucket",
                        },
                    });
                }
            }
        }
        Ok(got)
    }

    fn fetch_misses(&self, wants: Vec<Want>, out: &mut [Option<Chunk>]) -> Result<()> {
        let mut ranges: BTreeMap<usize, Vec<Range<u64>>> = BTreeMap::new();
        for w in &wants {
            ranges.entry(w.seg).or_default().push(w.off..w.end);
        }
        let ranges = ranges
            .into_iter()
            .map(|(s, rs)| (s, coalesce(&rs, COALESCE_GAP)))
            .collect();
        let got = self.read(ranges)?;
        // Second round: records longer than their first read.
        let mut again: Vec<(Want, u64)> = Vec::new();
        for w in wants {
            let buf = find(&got, w.seg, w.off..w.end).ok_or_else(|| {
                self.bad_ref(
                    chunk_ref(w.seg, w.off),
                    "fetched ranges do not cover the record",
                )
            })?;
            let Some(len) = record_len(&buf) else {
                return Err(corrupt(
                    self.seg_path(w.seg),
                    w.off,
                    "malformed record length",
                ));
            };
            if len > buf.len() as u64 {
                let size = self.sizes.get(w.seg).copied().unwrap_or(0);
                if w.off.saturating_add(len) > size {
                    return Err(corrupt(
                        self.seg_path(w.seg),
                        w.off,
                        "record extends past the end of the segment",
                    ));
                }
                again.push((w, len));
                continue;
            }
            self.decode(&w, &buf[..len as usize], out)?;
        }
        if again.is_empty() {
            return Ok(());
        }
        let mut ranges: BTreeMap<usize, Vec<Range<u64>>> = BTreeMap::new();
        for (w, len) in &again {
            ranges.entry(w.seg).or_default().push(w.off..w.off + len);
        }
        let got = self.read(ranges)?;
        for (w, len) in again {
            let buf = find(&got, w.seg, w.off..w.off + len).ok_or_else(|| {
                self.bad_ref(
                    chunk_ref(w.seg, w.off),
                    "fetched ranges do not cover the record",
                )
            })?;
            self.decode(&w, &buf, out)?;
        }
        Ok(())
    }

    fn decode(&self, w: &Want, rec: &[u8], out: &mut [Option<Chunk>]) -> Result<()> {
        let r = chunk_ref(w.seg, w.off);
        let (enc, data) = decode_record(rec, w.off, &self.seg_path(w.seg), r)?;
        let data: Arc<[u8]> = Arc::from(data);
        self.ctx.cache.insert(self.ulid, r, enc, data.clone());
        for &i in &w.slots {
            if let Some(slot) = out.get_mut(i) {
                *slot = Some((enc, data.clone()));
            }
        }
        Ok(())
    }
}

fn chunk_ref(seg: usize, off: u64) -> u64 {
    ((seg as u64) << 32) | off
}

fn corrupt(path: PathBuf, offset: u64, reason: &'static str) -> Error {
    Error::Block {
        source: crate::block::Error::Corrupt {
            path,
            section: "chunk segment",
            offset,
            reason,
        },
    }
}

/// The bytes of `want` inside the fetched ranges of segment `seg`.
fn find(got: &Fetched, seg: usize, want: Range<u64>) -> Option<Bytes> {
    let (_, parts) = got.iter().find(|(s, _)| *s == seg)?;
    let (r, b) = parts
        .iter()
        .find(|(r, _)| r.start <= want.start && want.end <= r.end)?;
    let from = usize::try_from(want.start - r.start).ok()?;
    let to = usize::try_from(want.end - r.start).ok()?;
    (to <= b.len()).then(|| b.slice(from..to))
}

/// A block's `index` object in the bucket, read in ranges for the series
/// entries and postings lists its index header does not hold.
#[derive(Debug)]
pub(crate) struct LazyIndex {
    bucket: Bucket,
    /// `<tenant>/<ulid>/index`, for messages.
    name: PathBuf,
    ulid: Ulid,
    /// Size of the index object.
    size: u64,
    ctx: Arc<FetchCtx>,
}

impl LazyIndex {
    pub(crate) fn new(
        bucket: Bucket,
        name: String,
        ulid: Ulid,
        size: u64,
        ctx: Arc<FetchCtx>,
    ) -> Self {
        Self {
            bucket,
            name: PathBuf::from(format!("{name}/{INDEX_FILENAME}")),
            ulid,
            size,
            ctx,
        }
    }

    /// Reads `ranges` (sorted, within the object) with ranged GETs, those
    /// less than [`COALESCE_GAP`] apart merged; awaits on the runtime.
    pub(crate) async fn read_async(
        bucket: &Bucket,
        ctx: &FetchCtx,
        name: &std::path::Path,
        key: &str,
        ranges: &[Range<u64>],
    ) -> Result<Vec<Bytes>> {
        let merged = coalesce(ranges, COALESCE_GAP);
        let c = &ctx.counters;
        c.index_gets
            .fetch_add(merged.len() as u64, Ordering::Relaxed);
        let got = match bucket.get_ranges(key, &merged, GET_CONCURRENCY).await {
            Ok(g) => g,
            Err(e) => {
                c.index_fetch_failures.fetch_add(1, Ordering::Relaxed);
                let message = if e.is_not_found() {
                    format!(
                        "{}: the object is gone from the bucket (block deleted?): {e}",
                        name.display()
                    )
                } else {
                    format!("{}: {e}", name.display())
                };
                return Err(Error::Remote { message });
            }
        };
        let mut out = Vec::with_capacity(ranges.len());
        for (m, b) in merged.iter().zip(&got) {
            c.index_bytes_fetched
                .fetch_add(b.len() as u64, Ordering::Relaxed);
            if b.len() as u64 != m.end - m.start {
                c.index_fetch_failures.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Block {
                    source: crate::block::Error::Corrupt {
                        path: name.to_path_buf(),
                        section: "index",
                        offset: m.start,
                        reason: "short ranged read from the bucket",
                    },
                });
            }
        }
        let parts: Vec<(Range<u64>, Bytes)> = merged.into_iter().zip(got).collect();
        for r in ranges {
            let b = parts
                .iter()
                .find(|(m, _)| m.start <= r.start && r.end <= m.end)
                .and_then(|(m, b)| {
                    let from = usize::try_from(r.start - m.start).ok()?;
                    let to = usize::try_from(r.end - m.start).ok()?;
                    (to <= b.len()).then(|| b.slice(from..to))
                })
                .ok_or_else(|| Error::Remote {
                    message: format!(
                        "{}: fetched ranges do not cover {}..{}",
                        name.display(),
                        r.start,
                        r.end
                    ),
                })?;
            out.push(b);
        }
        Ok(out)
    }
}

impl RemoteIndex for LazyIndex {
    fn read(&self, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        for (i, r) in ranges.iter().enumerate() {
            let sorted = i == 0 || ranges[i - 1].end <= r.start;
            if r.start >= r.end || r.end > self.size || !sorted {
                return Err(Error::Block {
                    source: crate::block::Error::Corrupt {
                        path: self.name.clone(),
                        section: "index",
                        offset: r.start,
                        reason: "read outside the index object",
                    },
                });
            }
        }
        let bucket = self.bucket.clone();
        let ctx = self.ctx.clone();
        let name = self.name.clone();
        let key = format!("{}/{INDEX_FILENAME}", self.ulid);
        let ranges = ranges.to_vec();
        self.ctx.block_on(async move {
            LazyIndex::read_async(&bucket, &ctx, &name, &key, &ranges).await
        })
    }

    fn cached(&self, at: u64) -> Option<Arc<[u8]>> {
        let c = &self.ctx.counters;
        match self.ctx.index_cache.get(self.ulid, at) {
            Some((_, b)) => {
                c.index_cache_hits.fetch_add(1, Ordering::Relaxed);
                Some(b)
            }
            None => {
                c.index_cache_misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn cache(&self, at: u64, body: Arc<[u8]>) {
        self.ctx.index_cache.insert(self.ulid, at, 0, body);
    }

    fn name(&self) -> &std::path::Path {
        &self.name
    }
}

impl RemoteChunks for LazyChunks {
    fn fetch(&self, refs: &[u64]) -> Result<Vec<(u8, Arc<[u8]>)>> {
        let mut out: Vec<Option<Chunk>> = vec![None; refs.len()];
        let mut missing: BTreeMap<(usize, u64), Vec<usize>> = BTreeMap::new();
        let c = &self.ctx.counters;
        for (i, &r) in refs.iter().enumerate() {
            if let Some(hit) = self.ctx.cache.get(self.ulid, r) {
                c.cache_hits.fetch_add(1, Ordering::Relaxed);
                out[i] = Some(hit);
                continue;
            }
            let seg = (r >> 32) as usize;
            let off = r & 0xffff_ffff;
            let Some(&size) = self.sizes.get(seg) else {
                return Err(self.bad_ref(r, "no such segment in the bucket"));
            };
            if off < SEGMENT_HEADER_LEN as u64 || off >= size {
                return Err(self.bad_ref(r, "offset outside the segment's records"));
            }
            missing.entry((seg, off)).or_default().push(i);
        }
        if !missing.is_empty() {
            c.cache_misses
                .fetch_add(missing.len() as u64, Ordering::Relaxed);
            let keys: Vec<(usize, u64)> = missing.keys().copied().collect();
            let mut wants = Vec::with_capacity(keys.len());
            for (k, (seg, off)) in keys.iter().copied().enumerate() {
                let size = self.sizes.get(seg).copied().unwrap_or(0);
                // Records never overlap: the next wanted record of the
                // segment bounds this one.
                let next = keys
                    .get(k + 1)
                    .filter(|n| n.0 == seg)
                    .map_or(u64::MAX, |n| n.1);
                let end = size.min(next).min(off.saturating_add(RECORD_ESTIMATE));
                let slots = missing.remove(&(seg, off)).unwrap_or_default();
                wants.push(Want {
                    seg,
                    off,
                    end,
                    slots,
                });
            }
            if let Err(e) = self.fetch_misses(wants, &mut out) {
                c.fetch_failures.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        }
        out.into_iter()
            .zip(refs)
            .map(|(o, &r)| o.ok_or_else(|| self.bad_ref(r, "chunk not fetched")))
            .collect()
    }

    fn num_segments(&self) -> usize {
        self.sizes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalescing_merges_near_ranges_only() {
        let rs = [0..10, 10..20, 30..40, 100_000..100_010, 100_020..100_030];
        assert_eq!(
            coalesce(&rs, 0),
            vec![0..20, 30..40, 100_000..100_010, 100_020..100_030]
        );
        assert_eq!(coalesce(&rs, 16 << 10), vec![0..40, 100_000..100_030]);
        assert_eq!(coalesce(&[0..50, 10..20, 60..70], 5), vec![0..50, 60..70]);
        assert!(coalesce(&[], 5).is_empty());
    }

    #[test]
    fn lru_stays_within_its_budget_and_keeps_recent_chunks() {
        let budget = 10 * (100 + ENTRY_OVERHEAD);
        let c = ChunkCache::new(budget);
        let b = Ulid::from(1u128);
        for r in 0..10u64 {
            c.insert(b, r, 1, Arc::from(vec![r as u8; 100]));
        }
        assert_eq!((c.len(), c.bytes()), (10, budget));
        // Touch 0, then add one more: 1 (the oldest) goes, 0 stays.
        assert!(c.get(b, 0).is_some());
        c.insert(b, 10, 1, Arc::from(vec![0u8; 100]));
        assert!(c.bytes() <= budget);
        assert!(c.get(b, 1).is_none());
        assert_eq!(c.get(b, 0).unwrap().1[0], 0);
        // A big chunk evicts several; one over the budget is not kept.
        c.insert(b, 11, 1, Arc::from(vec![0u8; 450]));
        assert!(c.bytes() <= budget, "{}", c.bytes());
        assert!(c.get(b, 11).is_some());
        c.insert(b, 12, 1, Arc::from(vec![0u8; budget as usize]));
        assert!(c.get(b, 12).is_none());
        for r in 100..10_000u64 {
            c.insert(
                Ulid::from(u128::from(r % 3)),
                r,
                1,
                Arc::from(vec![0u8; (r % 300) as usize]),
            );
            assert!(c.bytes() <= budget);
        }
        let before = c.len();
        c.drop_block(Ulid::from(2u128));
        assert!(c.len() < before);
        c.drop_block(Ulid::from(0u128));
        c.drop_block(Ulid::from(1u128));
        assert_eq!((c.len(), c.bytes()), (0, 0));
        // Off.
        let off = ChunkCache::new(0);
        off.insert(b, 1, 1, Arc::from(vec![1u8]));
        assert_eq!(off.len(), 0);
    }
}
