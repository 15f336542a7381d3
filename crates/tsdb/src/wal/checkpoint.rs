//! Checkpoints: compaction of the log's closed prefix.
//!
//! `checkpoint.<N>` holds, in ordinary segment files, everything still
//! needed from the previous checkpoint and segments `<= N`. It is built in
//! `checkpoint.<N>.tmp` (a name that never parses as a checkpoint), every
//! file fsynced, then renamed into place and the directory fsynced; only then
//! are the covered segments and older checkpoints removed. A crash at any
//! point leaves either the old state (plus a `.tmp` that is ignored and
//! later removed) or the new checkpoint next to segments it covers (which
//! replay skips). Only closed segments are read, so concurrent appends are
//! never blocked.

use std::path::Path;

use snafu::ResultExt;

use super::error::{CheckpointNotNewerSnafu, CorruptionSnafu, Error, RemoveSnafu, RenameSnafu};
use super::reader::{Item, open_segment, read_segment};
use super::record::{self};
use super::segment::{self, HEADER_LEN, SegmentWriter, TMP_SUFFIX};
use super::{CheckpointStats, Record};

/// Exemplars per record written by a checkpoint.
const EXEMPLARS_PER_RECORD: usize = 1024;

/// Flush the checkpoint encode buffer to disk at this size.
const FLUSH_AT: usize = 1 << 20;

/// Builds `checkpoint.<through>` from the newest older checkpoint and the
/// segments up to `through`, then deletes what it replaces. The caller
/// guarantees `through` is below the segment being written and serializes
/// calls.
pub(crate) fn checkpoint(
    dir: &Path,
    segment_size: u64,
    through: u64,
    keep_series: &dyn Fn(u64) -> bool,
    min_t: i64,
    max_exemplars: usize,
) -> Result<CheckpointStats, Error> {
    let listing = segment::list_dir(dir)?;
    let prev = listing.checkpoints.last().cloned();
    if let Some((existing, _)) = prev.as_ref().filter(|p| p.0 >= through) {
        return CheckpointNotNewerSnafu {
            through,
            existing: *existing,
        }
        .fail();
    }
    let mut stats = CheckpointStats {
        through,
        ..CheckpointStats::default()
    };

    // Inputs: the previous checkpoint's segments, then WAL segments in
    // (prev, through], which must be contiguous.
    let mut inputs = Vec::new();
    if let Some((_, cp_dir)) = &prev {
        inputs.extend(segment::list_dir(cp_dir)?.segments.into_iter().map(|s| s.1));
    }
    let mut expect = prev.as_ref().map(|p| p.0 + 1);
    for (index, path) in &listing.segments {
        if prev.as_ref().is_some_and(|p| *index <= p.0) || *index > through {
            continue;
        }
        if let Some(e) = expect.filter(|e| e != index) {
            return CorruptionSnafu {
                path: path.clone(),
                offset: 0u64,
                reason: format!("segments {e} to {} are missing", index - 1),
            }
            .fail();
        }
        expect = Some(index + 1);
        inputs.push(path.clone());
        stats.segments_read += 1;
    }

    let final_dir = dir.join(segment::checkpoint_name(through));
    let tmp_dir = dir.join(format!("{}{TMP_SUFFIX}", segment::checkpoint_name(through)));
    if tmp_dir.exists() {
        std::fs::remove_dir_all(&tmp_dir).context(RemoveSnafu { path: &tmp_dir })?;
    }
    std::fs::create_dir(&tmp_dir).context(super::error::CreateDirSnafu { path: &tmp_dir })?;

    let mut out = Writer {
        dir: &tmp_dir,
        segment_size,
        seg: SegmentWriter::create(&tmp_dir, 1)?,
        buf: Vec::with_capacity(FLUSH_AT + (FLUSH_AT >> 2)),
    };
    // The newest `max_exemplars` exemplars, in order; written last.
    let mut exemplars = std::collections::VecDeque::new();
    for path in &inputs {
        let (file, len) = open_segment(path)?;
        let mut cb = |item: Item, _offset: u64| -> Result<(), Error> {
            let Item::Record(rec) = item else {
                return Ok(());
            };
            if let Record::Exemplars(v) = rec {
                for e in v {
                    if max_exemplars == 0 {
                        stats.exemplars_dropped += 1;
                        continue;
                    }
                    if exemplars.len() >= max_exemplars {
                        exemplars.pop_front();
                        stats.exemplars_dropped += 1;
                    }
                    exemplars.push_back(e);
                }
                return Ok(());
            }
            let rec = filter(rec, keep_series, min_t, &mut stats);
            out.add(&rec)
        };
        if let Some(stop) = read_segment(file, len, path, true, &mut cb)? {
            return CorruptionSnafu {
                path: path.clone(),
                offset: stop.offset,
                reason: stop.reason,
            }
            .fail();
        }
    }
    stats.exemplars_kept = exemplars.len() as u64;
    let exemplars = Vec::from(exemplars);
    for part in exemplars.chunks(EXEMPLARS_PER_RECORD) {
        out.add(&Record::Exemplars(part.to_vec()))?;
    }
    out.finish()?;
    stats.bytes_written = dir_bytes(&tmp_dir);

    std::fs::rename(&tmp_dir, &final_dir).context(RenameSnafu {
        from: &tmp_dir,
        to: &final_dir,
    })?;
    segment::sync_dir(dir)?;

    for (index, path) in &listing.segments {
        if *index <= through {
            std::fs::remove_file(path).context(RemoveSnafu { path })?;
            stats.segments_deleted += 1;
        }
    }
    for (index, path) in &listing.checkpoints {
        if *index < through {
            std::fs::remove_dir_all(path).context(RemoveSnafu { path })?;
            stats.checkpoints_deleted += 1;
        }
    }
    segment::sync_dir(dir)?;
    Ok(stats)
}

/// Keeps what the checkpoint needs from one record.
fn filter(rec: Record, keep: &dyn Fn(u64) -> bool, min_t: i64, st: &mut CheckpointStats) -> Record {
    match rec {
        Record::Series(mut v) => {
            let before = v.len() as u64;
            v.retain(|s| keep(s.sref));
            st.series_kept += v.len() as u64;
            st.series_dropped += before - v.len() as u64;
            Record::Series(v)
        }
        Record::Samples(mut v) => {
            let before = v.len() as u64;
            // Consecutive samples of one series are common: ask once per run.
            let mut last: Option<(u64, bool)> = None;
            v.retain(|s| {
                if s.t < min_t {
                    return false;
                }
                match last {
                    Some((r, k)) if r == s.sref => k,
                    _ => {
                        let k = keep(s.sref);
                        last = Some((s.sref, k));
                        k
                    }
                }
            });
            st.samples_kept += v.len() as u64;
            st.samples_dropped += before - v.len() as u64;
            Record::Samples(v)
        }
        Record::Tombstones(mut v) => {
            let before = v.len() as u64;
            v.retain(|t| keep(t.sref));
            st.tombstones_kept += v.len() as u64;
            st.tombstones_dropped += before - v.len() as u64;
            Record::Tombstones(v)
        }
        // Metadata is never re-sent when unchanged: always kept.
        Record::Metadata(v) => Record::Metadata(v),
        // Gathered by the caller.
        Record::Exemplars(v) => Record::Exemplars(v),
        Record::Histograms(mut v) => {
            let before = v.len() as u64;
            v.retain(|s| s.t >= min_t && keep(s.sref));
            st.samples_kept += v.len() as u64;
            st.samples_dropped += before - v.len() as u64;
            Record::Histograms(v)
        }
        Record::StartTimestamps(mut v) => {
            v.retain(|s| s.t >= min_t && keep(s.sref));
            Record::StartTimestamps(v)
        }
        Record::FloatHistograms(mut v) => {
            let before = v.len() as u64;
            v.retain(|s| s.t >= min_t && keep(s.sref));
            st.samples_kept += v.len() as u64;
            st.samples_dropped += before - v.len() as u64;
            Record::FloatHistograms(v)
        }
    }
}

/// Sum of file sizes in `dir`, best effort.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Writes checkpoint records into size-rotated segments.
struct Writer<'a> {
    dir: &'a Path,
    segment_size: u64,
    seg: SegmentWriter,
    buf: Vec<u8>,
}

impl Writer<'_> {
    fn add(&mut self, rec: &Record) -> Result<(), Error> {
        let empty = match rec {
            Record::Series(v) => v.is_empty(),
            Record::Samples(v) => v.is_empty(),
            Record::Tombstones(v) => v.is_empty(),
            Record::Metadata(v) => v.is_empty(),
            Record::Exemplars(v) => v.is_empty(),
            Record::Histograms(v) => v.is_empty(),
            Record::FloatHistograms(v) => v.is_empty(),
            Record::StartTimestamps(v) => v.is_empty(),
        };
        if empty {
            return Ok(());
        }
        let start = self.buf.len();
        record::encode_record(&mut self.buf, rec)?;
        let pending = self.seg.size + start as u64;
        if pending + (self.buf.len() - start) as u64 > self.segment_size && pending > HEADER_LEN {
            // The new record does not fit: close this segment with what
            // came before it and start the next one.
            self.seg.write(&self.buf[..start])?;
            self.seg.sync()?;
            self.seg = SegmentWriter::create(self.dir, self.seg.index + 1)?;
            self.buf.drain(..start);
        }
        if self.buf.len() >= FLUSH_AT {
            self.seg.write(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), Error> {
        if !self.buf.is_empty() {
            self.seg.write(&self.buf)?;
        }
        self.seg.sync()?;
        segment::sync_dir(self.dir)
    }
}
