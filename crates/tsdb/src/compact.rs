//! Compaction: merging blocks into larger ones.
//!
//! The planner picks, in order of urgency:
//! 1. blocks whose time ranges overlap (out-of-order data, a cut repeated
//!    after a crash): merged into one, duplicates dropped ("vertical"
//!    compaction);
//! 2. for each level range (2h → 12h → 24h → 7d by default), two or more
//!    blocks inside one aligned window that the head has moved past;
//! 3. a block with tombstones, rewritten alone so deleted data leaves disk.
//!
//! A merge streams series in label order from every input, copies chunks
//! untouched when one input holds the series, nothing is deleted and its
//! chunks are already in the compact encoding, and otherwise decodes,
//! deduplicates (identical timestamps), drops deleted samples and
//! re-encodes into compact chunks (`chunks::encode_compact`, up to
//! `COMPACT_CHUNK_SAMPLES` samples each): compacted blocks hold the compact
//! encoding only, level-1 blocks cut from the head hold XOR chunks. The output is uploaded (`meta.json` last) and
//! made queryable before the inputs are deleted; a crash in between leaves
//! both, which queries deduplicate and the next start cleans up (an input
//! whose sources a newer block covers is deleted).

use std::sync::Arc;

use stratus_model::Labels;
use ulid::Ulid;

use crate::block::{BlockCompaction, BlockMeta, BlockReader, BlockWriter, ChunkInput, ChunkMeta};
use crate::chunks::{
    COMPACT_CHUNK_SAMPLES, Encoding, MAX_COMPACT_SAMPLES, chunk_num_samples_any, encode_compact,
};
use crate::db::Db;
use crate::error::Result;
use crate::head::window_start;
use crate::index::PostingsSource;
use crate::querier::{Part, Series};

/// Picks the next group of blocks to merge, if any.
pub(crate) fn plan(metas: &[BlockMeta], ranges: &[i64], settled_before: i64) -> Option<Vec<Ulid>> {
    let mut sorted: Vec<&BlockMeta> = metas.iter().collect();
    sorted.sort_by_key(|m| (m.min_time, m.max_time));
    // 1. Overlaps: the first connected group of overlapping blocks.
    let mut i = 0;
    while i < sorted.len() {
        let mut end = sorted[i].max_time;
        let mut j = i + 1;
        while j < sorted.len() && sorted[j].min_time < end {
            end = end.max(sorted[j].max_time);
            j += 1;
        }
        if j - i > 1 {
            return Some(sorted[i..j].iter().map(|m| m.ulid).collect());
        }
        i = j;
    }
    // 2. Level windows.
    let spans: Vec<(i64, i64, Ulid)> = sorted
        .iter()
        .map(|m| (m.min_time, m.max_time, m.ulid))
        .collect();
    if let Some(g) = plan_level(&spans, ranges, settled_before) {
        return Some(g);
    }
    // 3. Tombstones.
    sorted
        .iter()
        .find(|m| m.stats.num_tombstones > 0)
        .map(|m| vec![m.ulid])
}

/// The first level window holding two or more blocks to merge: for each
/// range after the first (`ranges` ascending, e.g. 2h, 12h, 24h), the
/// aligned windows in time order; a window qualifies once it ends at or
/// before `settled_before` (no new data can land in it) and holds at least
/// two blocks that lie inside it and are shorter than the range. `spans`
/// are `(min_time, max_time, id)` sorted by time and must not overlap
/// (overlaps are merged first). Shared by the engine and the cluster
/// compactor (`bucket_store::compact_tenant`).
pub(crate) fn plan_level(
    spans: &[(i64, i64, Ulid)],
    ranges: &[i64],
    settled_before: i64,
) -> Option<Vec<Ulid>> {
    for &r in ranges.iter().skip(1) {
        if r <= 0 {
            continue;
        }
        let mut k = 0;
        while k < spans.len() {
            let w = window_start(spans[k].0, r);
            let mut group = Vec::new();
            let mut m = k;
            while m < spans.len() && window_start(spans[m].0, r) == w {
                let (min, max, id) = spans[m];
                if max <= w.saturating_add(r) && max - min < r {
                    group.push(id);
                }
                m += 1;
            }
            if group.len() > 1 && w.saturating_add(r) <= settled_before {
                return Some(group);
            }
            k = m.max(k + 1);
        }
    }
    None
}

/// Runs compactions until the planner has nothing left to do.
pub(crate) async fn compact(db: &Arc<Db>) -> Result<()> {
    loop {
        let _g = db.maint.lock().await;
        let readers: Vec<Arc<BlockReader>> = db.blocks.read().clone();
        let metas: Vec<BlockMeta> = readers.iter().map(|b| tombstone_meta(b)).collect();
        let settled = db.head.min_valid();
        let Some(group) = plan(&metas, &db.config().compaction_ranges, settled) else {
            return Ok(());
        };
        merge_group(db, readers, &group).await?;
    }
}

/// Rewrites every level-1 block (XOR chunks cut from the head) on its own
/// into the compact encoding now, without waiting for the level windows
/// to settle (an operator's "force merge"). Returns how many blocks were
/// rewritten.
pub(crate) async fn force_compact(db: &Arc<Db>) -> Result<usize> {
    let mut n = 0;
    loop {
        let _g = db.maint.lock().await;
        let readers: Vec<Arc<BlockReader>> = db.blocks.read().clone();
        let Some(b) = readers.iter().find(|b| b.meta().compaction.level <= 1) else {
            return Ok(n);
        };
        let group = vec![b.meta().ulid];
        merge_group(db, readers, &group).await?;
        n += 1;
    }
}

/// Merges the blocks of `group` into one compact-encoded block, publishes
/// it and drops the inputs. The caller holds the maintenance lock.
async fn merge_group(db: &Arc<Db>, readers: Vec<Arc<BlockReader>>, group: &[Ulid]) -> Result<()> {
    let inputs: Vec<Arc<BlockReader>> = readers
        .into_iter()
        .filter(|b| group.contains(&b.meta().ulid))
        .collect();
    let id = Ulid::new();
    let dir = db.dir().join("wip").join(id.to_string());
    let chunk_samples = COMPACT_CHUNK_SAMPLES;
    let ins = inputs.clone();
    let d2 = dir.clone();
    let meta = tokio::task::spawn_blocking(move || merge_blocks(&ins, &d2, id, chunk_samples))
        .await
        .map_err(|e| crate::Error::Task {
            message: e.to_string(),
        })??;
    crate::failpoint::hit("compact.written")?;
    if meta.stats.num_series > 0 {
        let reader = db.publish_block(&meta, &dir).await?;
        db.blocks.write().push(reader);
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    crate::failpoint::hit("compact.published")?;
    for b in &inputs {
        db.drop_block(b.meta().ulid).await?;
    }
    db.sort_blocks();
    db.count_compaction();
    tracing::info!(block = %meta.ulid, inputs = inputs.len(), min_time = meta.min_time,
        max_time = meta.max_time, samples = meta.stats.num_samples, "compacted blocks");
    Ok(())
}

/// The block's meta with the live tombstone count.
fn tombstone_meta(b: &BlockReader) -> BlockMeta {
    let mut m = b.meta().clone();
    m.stats.num_tombstones = b.tombstones().len() as u64;
    m
}

/// Cursor over one input block's series in label order.
struct Cursor<'a> {
    block: &'a BlockReader,
    ids: Vec<u64>,
    pos: usize,
    cur: Option<(Labels, Vec<ChunkMeta>, u64)>,
}

impl<'a> Cursor<'a> {
    fn new(block: &'a BlockReader) -> Result<Self> {
        let mut c = Self {
            block,
            ids: block.all_postings()?,
            pos: 0,
            cur: None,
        };
        c.advance()?;
        Ok(c)
    }

    fn advance(&mut self) -> Result<()> {
        self.cur = None;
        if let Some(&id) = self.ids.get(self.pos) {
            self.pos += 1;
            let mut metas = Vec::new();
            let labels = self.block.series(id, &mut metas)?;
            self.cur = Some((labels, metas, id));
        }
        Ok(())
    }
}

/// Encodes samples (sorted, unique timestamps) into compact chunks of at
/// most `chunk_samples` samples, sizes balanced so no chunk is tiny:
/// `(mint, maxt, sample count, data)`.
pub(crate) fn encode_compact_chunks(
    samples: &[(i64, f64)],
    chunk_samples: usize,
) -> Vec<(i64, i64, usize, Vec<u8>)> {
    let max = chunk_samples.clamp(1, MAX_COMPACT_SAMPLES);
    let n_chunks = samples.len().div_ceil(max);
    if n_chunks == 0 {
        return Vec::new();
    }
    let per = samples.len().div_ceil(n_chunks);
    samples
        .chunks(per)
        .filter_map(|c| {
            let (first, last) = (c.first()?, c.last()?);
            Some((first.0, last.0, c.len(), encode_compact(c)))
        })
        .collect()
}

/// Merges `inputs` into a new block at `dir`, writing compact chunks of at
/// most `chunk_samples` samples.
pub(crate) fn merge_blocks(
    inputs: &[Arc<BlockReader>],
    dir: &std::path::Path,
    id: Ulid,
    chunk_samples: usize,
) -> Result<BlockMeta> {
    let min_time = inputs.iter().map(|b| b.meta().min_time).min().unwrap_or(0);
    let max_time = inputs.iter().map(|b| b.meta().max_time).max().unwrap_or(0);
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|source| crate::Error::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let mut w = BlockWriter::create(dir, id, min_time, max_time)?;
    let mut cursors: Vec<Cursor<'_>> = inputs
        .iter()
        .map(|b| Cursor::new(b))
        .collect::<Result<_>>()?;
    loop {
        // Smallest label set among cursors.
        let mut min: Option<Labels> = None;
        for c in &cursors {
            if let Some((l, _, _)) = &c.cur {
                if min.as_ref().is_none_or(|m| l < m) {
                    min = Some(l.clone());
                }
            }
        }
        let Some(labels) = min else { break };
        let mut srcs: Vec<(&BlockReader, Vec<ChunkMeta>, u64)> = Vec::new();
        for c in cursors.iter_mut() {
            if c.cur.as_ref().is_some_and(|(l, _, _)| *l == labels) {
                if let Some((_, metas, sid)) = c.cur.take() {
                    srcs.push((c.block, metas, sid));
                }
                c.advance()?;
            }
        }
        let deleted = srcs
            .iter()
            .any(|(b, _, sid)| !b.tombstones().get(*sid).is_empty());
        let compact = Encoding::Compact as u8;
        if srcs.len() == 1 && !deleted {
            let (b, metas, _) = &srcs[0];
            let mut owned = Vec::with_capacity(metas.len());
            for m in metas {
                let (enc, data) = b.chunk(m.chunk_ref)?;
                owned.push((m.mint, m.maxt, enc, data));
            }
            if owned.iter().all(|c| c.2 == compact || is_hist(c.2)) {
                // Already compact (histogram chunks are never re-encoded
                // to 0x81): copy the chunks untouched.
                let inputs: Vec<ChunkInput<'_>> = owned
                    .iter()
                    .map(|(mint, maxt, enc, data)| ChunkInput::counted(*mint, *maxt, *enc, data))
                    .collect();
                w.add_series(&labels, &inputs)?;
                continue;
            }
        }
        // Several sources, deletions or other encodings: decode, merge,
        // filter, re-encode. Each source's samples are filtered by its own
        // tombstones first.
        let mut parts = Vec::new();
        for (b, metas, sid) in &srcs {
            let mut p = Vec::new();
            for m in metas {
                let (encoding, data) = b.chunk(m.chunk_ref)?;
                p.push(Part::Chunk {
                    mint: m.mint,
                    maxt: m.maxt,
                    encoding,
                    data: Arc::from(data),
                });
            }
            let ts = b.tombstones().get(*sid);
            if !ts.is_empty() {
                p = crate::head::apply_tombstones(p, ts, i64::MIN, i64::MAX);
            }
            parts.extend(p);
        }
        if parts.iter().any(Part::has_start_timestamps) {
            // Start timestamps survive: typed samples with them, re-encoded
            // into chunks with a start-timestamp column where needed.
            let samples = crate::querier::merge_typed_st(&parts, i64::MIN, i64::MAX)?;
            let encoded = crate::querier::encode_st_chunks(&samples, HISTOGRAM_CHUNK_SAMPLES);
            let inputs: Vec<ChunkInput<'_>> = encoded
                .iter()
                .map(|(mint, maxt, enc, data)| ChunkInput::counted(*mint, *maxt, *enc, data))
                .collect();
            w.add_series(&labels, &inputs)?;
            continue;
        }
        let has_hist = parts.iter().any(Part::is_histogram);
        let s = Series {
            labels: Labels::empty(),
            parts,
        };
        let samples: Vec<(i64, f64)> = s.iter(i64::MIN, i64::MAX).collect();
        // Floats go to compact chunks, histograms to histogram chunks of
        // at most HISTOGRAM_CHUNK_SAMPLES (never 0x81).
        let mut encoded: Vec<(i64, i64, u8, u32, Vec<u8>)> =
            encode_compact_chunks(&samples, chunk_samples)
                .into_iter()
                .map(|(a, b, n, d)| (a, b, compact, n as u32, d))
                .collect();
        if has_hist {
            let typed = crate::querier::merge_typed(&s.parts, i64::MIN, i64::MAX)?;
            let hs: Vec<_> = typed.into_iter().filter(|x| x.1.is_histogram()).collect();
            for (a, b, enc, d) in
                crate::querier::encode_histogram_chunks(&hs, HISTOGRAM_CHUNK_SAMPLES)
            {
                let n = chunk_num_samples_any(enc, &d).unwrap_or(0) as u32;
                encoded.push((a, b, enc, n, d));
            }
            encoded.sort_by_key(|c| (c.0, c.1));
        }
        let inputs: Vec<ChunkInput<'_>> = encoded
            .iter()
            .map(|(mint, maxt, enc, n, data)| ChunkInput {
                mint: *mint,
                maxt: *maxt,
                encoding: *enc,
                data,
                num_samples: *n,
            })
            .collect();
        w.add_series(&labels, &inputs)?;
    }
    let mut sources: Vec<Ulid> = inputs
        .iter()
        .flat_map(|b| b.meta().compaction.sources.iter().copied())
        .collect();
    sources.sort();
    sources.dedup();
    let level = inputs
        .iter()
        .map(|b| b.meta().compaction.level)
        .max()
        .unwrap_or(0)
        + 1;
    Ok(w.finish(BlockCompaction {
        level,
        sources,
        parents: inputs.iter().map(|b| b.meta().ulid).collect(),
        deletable: false,
    })?)
}

/// Histogram chunks written by compaction hold at most this many samples
/// (Prometheus' head cuts at about 120).
const HISTOGRAM_CHUNK_SAMPLES: usize = 120;

fn is_hist(enc: u8) -> bool {
    Encoding::from_u8(enc).is_some_and(Encoding::is_histogram)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{BlockCompaction, BlockStats};

    fn meta(min: i64, max: i64) -> BlockMeta {
        BlockMeta {
            ulid: Ulid::new(),
            min_time: min,
            max_time: max,
            stats: BlockStats::default(),
            compaction: BlockCompaction::default(),
            version: 1,
            thanos: None,
        }
    }

    /// Writes a block of XOR chunks (120 samples each) per series.
    fn xor_block(dir: &std::path::Path, series: &[(Labels, Vec<(i64, f64)>)]) -> Arc<BlockReader> {
        let id = Ulid::new();
        let d = dir.join(id.to_string());
        let mut w = BlockWriter::create(&d, id, 0, 10_000_000).unwrap();
        for (l, samples) in series {
            let chunks = crate::db::encode_chunks(samples.iter().copied(), 120);
            let inputs: Vec<ChunkInput<'_>> = chunks
                .iter()
                .map(|(mint, maxt, data)| {
                    ChunkInput::counted(*mint, *maxt, Encoding::Xor as u8, data)
                })
                .collect();
            w.add_series(l, &inputs).unwrap();
        }
        w.finish(BlockCompaction {
            level: 1,
            sources: vec![id],
            parents: vec![],
            deletable: false,
        })
        .unwrap();
        Arc::new(BlockReader::open(&d).unwrap())
    }

    /// Labels, chunk encodings and sample bits of one series.
    type Dump = (Labels, Vec<u8>, Vec<(i64, u64)>);

    fn read_all(b: &BlockReader) -> Vec<Dump> {
        let mut out = Vec::new();
        let mut metas = Vec::new();
        for id in b.all_postings().unwrap() {
            let l = b.series(id, &mut metas).unwrap();
            let mut encs = Vec::new();
            let mut samples = Vec::new();
            for m in &metas {
                let (e, d) = b.chunk(m.chunk_ref).unwrap();
                encs.push(e);
                let s = crate::chunks::decode_any(e, d).unwrap();
                assert_eq!((s[0].0, s[s.len() - 1].0), (m.mint, m.maxt));
                samples.extend(s.into_iter().map(|(t, v)| (t, v.to_bits())));
            }
            out.push((l, encs, samples));
        }
        out
    }

    #[test]
    fn merge_writes_compact_chunks() {
        let tmp = tempfile::tempdir().unwrap();
        let l = |v: &str| Labels::from_pairs([("__name__", "m"), ("i", v)]);
        let a_only: Vec<(i64, f64)> = (0..500).map(|i| (i * 15_000, i as f64 * 0.5)).collect();
        let both_a: Vec<(i64, f64)> = (0..300).map(|i| (i * 15_000, (i % 7) as f64)).collect();
        let both_b: Vec<(i64, f64)> = (200..600)
            .map(|i| (i * 15_000, if i == 599 { f64::NAN } else { (i % 7) as f64 }))
            .collect();
        let a = xor_block(
            tmp.path(),
            &[(l("a"), a_only.clone()), (l("c"), both_a.clone())],
        );
        let b = xor_block(tmp.path(), &[(l("c"), both_b.clone())]);
        let out = tmp.path().join("out");
        let meta = merge_blocks(&[a, b], &out, Ulid::new(), 256).unwrap();
        assert_eq!(meta.stats.num_samples, 500 + 600);
        let merged = Arc::new(BlockReader::open(&out).unwrap());
        let got = read_all(&merged);
        assert_eq!(got.len(), 2);
        let bits = |s: &[(i64, f64)]| s.iter().map(|&(t, v)| (t, v.to_bits())).collect::<Vec<_>>();
        assert_eq!(got[0].0, l("a"));
        assert_eq!(
            got[0].1,
            vec![0x81, 0x81],
            "single source re-encoded, balanced"
        );
        assert_eq!(got[0].2, bits(&a_only));
        let mut want: Vec<(i64, f64)> = both_a;
        want.extend(both_b.into_iter().filter(|s| s.0 >= 300 * 15_000));
        assert_eq!(got[1].1, vec![0x81; 3]);
        assert_eq!(got[1].2, bits(&want));
        // Compacting the compact block again copies its chunks untouched.
        let out2 = tmp.path().join("out2");
        merge_blocks(std::slice::from_ref(&merged), &out2, Ulid::new(), 4096).unwrap();
        let again = BlockReader::open(&out2).unwrap();
        assert_eq!(read_all(&again), got);
    }

    #[test]
    fn planner_prefers_overlaps_then_levels() {
        let h = 3_600_000;
        let ranges = [2 * h, 12 * h, 24 * h];
        let a = meta(0, 2 * h);
        let b = meta(2 * h, 4 * h);
        let c = meta(h, 3 * h);
        let got = plan(&[a.clone(), b.clone(), c.clone()], &ranges, i64::MAX).unwrap();
        assert_eq!(got.len(), 3, "overlapping group");
        // Non-overlapping 2h blocks in one 12h window: only when settled.
        assert!(plan(&[a.clone(), b.clone()], &ranges, 10 * h).is_none());
        let got = plan(&[a.clone(), b.clone()], &ranges, 12 * h).unwrap();
        assert_eq!(got, vec![a.ulid, b.ulid]);
        // A lone block is left alone.
        assert!(plan(&[a], &ranges, i64::MAX).is_none());
    }
}
