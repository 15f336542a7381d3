//! Reading segments and replaying the log.
//!
//! [`read_segment`] walks one segment's frames and classifies where it
//! stops: a *torn* stop (short header, frame running past the end of the
//! file, checksum mismatch) is what an interrupted write or lost unsynced
//! pages look like; a *hard* stop (bad magic, unknown version, a
//! checksum-valid record that does not decode or has an unknown type) is not.
//! [`replay`] truncates torn stops in the last segment silently (with a
//! warning) and treats everything else as corruption that needs an explicit
//! repair. Reading goes through a large `BufReader` and a reused payload
//! buffer; the only allocations are the decoded records themselves.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

use snafu::ResultExt;

use super::error::{CorruptionSnafu, Error, OpenSegmentSnafu, ReadSegmentSnafu, TruncateSnafu};
use super::record::{self, FRAME_HEADER_LEN};
use super::segment::{self, HEADER_LEN, MAGIC, VERSION};
use super::{Record, ReplayOptions, ReplayStats};

/// Why reading a segment stopped before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stop {
    /// Offset of the first byte that is not part of a valid record.
    pub(crate) offset: u64,
    /// Whether this looks like an interrupted write.
    pub(crate) torn: bool,
    pub(crate) reason: String,
}

/// What the per-record callback of [`read_segment`] receives.
pub(crate) enum Item {
    /// A decoded record.
    Record(Record),
    /// A checksum-valid frame, not decoded (`decode == false`).
    Frame,
}

const READ_BUF: usize = 1 << 20;

/// Reads one segment of `len` bytes from `r`. Calls `f(item, offset)` for
/// every valid record in order. Returns `Ok(None)` when the whole segment is
/// valid, `Ok(Some(stop))` when it stops early; `Err` only for I/O errors or
/// errors returned by `f`.
pub(crate) fn read_segment<R: Read>(
    r: R,
    len: u64,
    path: &Path,
    decode: bool,
    f: &mut dyn FnMut(Item, u64) -> Result<(), Error>,
) -> Result<Option<Stop>, Error> {
    let stop = |offset: u64, torn: bool, reason: String| {
        Ok(Some(Stop {
            offset,
            torn,
            reason,
        }))
    };
    if len == 0 {
        return Ok(None);
    }
    let mut r = BufReader::with_capacity(READ_BUF.min(len as usize).max(64), r);
    let io = |offset: u64| ReadSegmentSnafu { path, offset };

    if len < HEADER_LEN {
        let mut h = vec![0u8; len as usize];
        if let Err(e) = r.read_exact(&mut h) {
            return short_read(e, 0, io(0));
        }
        let torn = h[..] == segment::header()[..h.len()];
        return stop(0, torn, format!("segment header is only {len} bytes"));
    }
    let mut h = [0u8; HEADER_LEN as usize];
    if let Err(e) = r.read_exact(&mut h) {
        return short_read(e, 0, io(0));
    }
    if h[..4] != MAGIC {
        return stop(0, false, format!("bad segment magic {:02x?}", &h[..4]));
    }
    if !(1..=VERSION).contains(&h[4]) {
        return stop(
            0,
            false,
            format!(
                "unsupported segment format version {} (this build reads 1 to {VERSION})",
                h[4]
            ),
        );
    }

    let mut offset = HEADER_LEN;
    let mut payload = Vec::new();
    loop {
        let left = len - offset;
        if left == 0 {
            return Ok(None);
        }
        if left < FRAME_HEADER_LEN as u64 {
            return stop(
                offset,
                true,
                format!("incomplete record header ({left} bytes)"),
            );
        }
        let mut fh = [0u8; FRAME_HEADER_LEN];
        if let Err(e) = r.read_exact(&mut fh) {
            return short_read(e, offset, io(offset));
        }
        let plen = u32::from_le_bytes([fh[0], fh[1], fh[2], fh[3]]);
        let typ = fh[4];
        let crc = u32::from_le_bytes([fh[5], fh[6], fh[7], fh[8]]);
        let avail = left - FRAME_HEADER_LEN as u64;
        if u64::from(plen) > avail {
            return stop(
                offset,
                true,
                format!("record length {plen} exceeds the {avail} bytes left in the segment"),
            );
        }
        payload.resize(plen as usize, 0);
        if let Err(e) = r.read_exact(&mut payload) {
            return short_read(e, offset, io(offset));
        }
        let actual = record::frame_crc(&fh[..5], &payload);
        if actual != crc {
            return stop(
                offset,
                true,
                format!("checksum mismatch (stored {crc:08x}, computed {actual:08x})"),
            );
        }
        if decode {
            match record::decode(typ, &payload) {
                Ok(rec) => f(Item::Record(rec), offset)?,
                Err(reason) => return stop(offset, false, reason),
            }
        } else if matches!(
            typ,
            record::TYPE_SERIES | record::TYPE_SAMPLES | record::TYPE_TOMBSTONES
        ) {
            f(Item::Frame, offset)?;
        } else {
            return stop(
                offset,
                false,
                format!("{} (type {typ})", record::type_name(typ)),
            );
        }
        offset += FRAME_HEADER_LEN as u64 + u64::from(plen);
    }
}

/// A read that ends early means the file shrank under us: report it as torn
/// at `offset`; any other I/O error is an error.
fn short_read(
    e: std::io::Error,
    offset: u64,
    ctx: ReadSegmentSnafu<&Path, u64>,
) -> Result<Option<Stop>, Error> {
    if e.kind() == ErrorKind::UnexpectedEof {
        Ok(Some(Stop {
            offset,
            torn: true,
            reason: "file ended early".to_string(),
        }))
    } else {
        Err(e).context(ctx)
    }
}

/// Truncates `path` to `offset` bytes and fsyncs it.
pub(crate) fn truncate(path: &Path, offset: u64) -> Result<(), Error> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| {
            f.set_len(offset)?;
            f.sync_all()
        })
        .context(TruncateSnafu { path, offset })
}

/// Opens a segment for reading and returns it with its length.
pub(crate) fn open_segment(path: &Path) -> Result<(File, u64), Error> {
    let f = File::open(path).context(OpenSegmentSnafu { path })?;
    let len = f
        .metadata()
        .context(ReadSegmentSnafu { path, offset: 0u64 })?
        .len();
    Ok((f, len))
}

/// Reads the newest checkpoint, then every segment after it, in order,
/// calling `f` per record.
///
/// A torn or corrupt record at the tail of the last segment (the signature
/// of a write interrupted by a crash) is cut off: the file is truncated at
/// the start of that record, a warning names the file, offset and bytes
/// dropped, and replay returns `Ok`. Corruption anywhere else (an earlier
/// segment, the checkpoint, a missing segment, a checksum-valid record that
/// does not decode) returns [`Error::Corruption`] naming the file and offset,
/// unless `opts.repair` is set: then that segment is truncated at the
/// corruption, an error is logged, and replay continues with the next
/// segment. Leftover `checkpoint.*.tmp` directories are ignored (and removed
/// by [`super::Wal::open`]); segments at or below the newest checkpoint are
/// skipped. A directory that does not exist replays as empty.
pub fn replay(
    dir: &Path,
    opts: &ReplayOptions,
    f: &mut dyn FnMut(Record) -> Result<(), crate::Error>,
) -> Result<ReplayStats, Error> {
    let mut stats = ReplayStats::default();
    if !dir.exists() {
        return Ok(stats);
    }
    let listing = segment::list_dir(dir)?;
    let mut after = None;
    if let Some((n, cp_dir)) = listing.checkpoints.last() {
        stats.checkpoint = Some(*n);
        after = Some(*n);
        let cp = segment::list_dir(cp_dir)?;
        for (_, path) in &cp.segments {
            replay_segment(path, false, opts, &mut stats, f)?;
            stats.checkpoint_segments += 1;
        }
    }
    let segs: Vec<&(u64, PathBuf)> = listing
        .segments
        .iter()
        .filter(|(i, _)| after.is_none_or(|n| *i > n))
        .collect();
    let mut expect = after.map(|n| n + 1);
    for (k, (index, path)) in segs.iter().enumerate() {
        let gap = expect.filter(|e| index != e);
        if let Some(e) = gap {
            let reason = format!("segments {e} to {} are missing", index - 1);
            if !opts.repair {
                return CorruptionSnafu {
                    path: path.clone(),
                    offset: 0u64,
                    reason,
                }
                .fail();
            }
            tracing::error!(path = %path.display(), %reason, "WAL repair: continuing past missing segments");
            stats.repaired += 1;
        }
        expect = Some(index + 1);
        replay_segment(path, k + 1 == segs.len(), opts, &mut stats, f)?;
        stats.segments += 1;
    }
    Ok(stats)
}

fn replay_segment(
    path: &Path,
    last: bool,
    opts: &ReplayOptions,
    stats: &mut ReplayStats,
    f: &mut dyn FnMut(Record) -> Result<(), crate::Error>,
) -> Result<(), Error> {
    let (file, len) = open_segment(path)?;
    let mut cb = |item: Item, offset: u64| -> Result<(), Error> {
        let Item::Record(rec) = item else {
            return Ok(());
        };
        stats.records += 1;
        match &rec {
            Record::Series(s) => stats.series += s.len() as u64,
            Record::Samples(s) => stats.samples += s.len() as u64,
            Record::Tombstones(t) => stats.tombstones += t.len() as u64,
            Record::Metadata(_) | Record::Exemplars(_) | Record::StartTimestamps(_) => {}
            Record::Histograms(h) => stats.samples += h.len() as u64,
            Record::FloatHistograms(h) => stats.samples += h.len() as u64,
        }
        f(rec).map_err(|e| Error::Callback {
            path: path.to_path_buf(),
            offset,
            source: Box::new(e),
        })
    };
    let Some(stop) = read_segment(file, len, path, true, &mut cb)? else {
        return Ok(());
    };
    let dropped = len - stop.offset;
    if last && stop.torn {
        tracing::warn!(
            path = %path.display(),
            offset = stop.offset,
            bytes_dropped = dropped,
            reason = %stop.reason,
            "WAL: truncating torn tail of the last segment"
        );
    } else if opts.repair {
        tracing::error!(
            path = %path.display(),
            offset = stop.offset,
            bytes_dropped = dropped,
            reason = %stop.reason,
            "WAL repair: truncating corrupt segment, data after the offset is lost"
        );
        stats.repaired += 1;
    } else {
        return CorruptionSnafu {
            path,
            offset: stop.offset,
            reason: stop.reason,
        }
        .fail();
    }
    truncate(path, stop.offset)?;
    stats.truncated_bytes += dropped;
    Ok(())
}

/// Fuzz entry point: treats `data` as the content of a segment file and
/// reads it as replay does. Must never panic. Also checks that the valid
/// prefix before a stop re-reads cleanly with the same records.
pub fn fuzz_wal_read(data: &[u8]) {
    let path = Path::new("fuzz-input");
    let mut n = 0usize;
    let mut count = |_: Item, _: u64| -> Result<(), Error> {
        n += 1;
        Ok(())
    };
    let Ok(stop) = read_segment(data, data.len() as u64, path, true, &mut count) else {
        return;
    };
    if let Some(stop) = stop {
        let Some(prefix) = data.get(..stop.offset as usize) else {
            panic!(
                "stop offset {} beyond input of {} bytes",
                stop.offset,
                data.len()
            );
        };
        let mut m = 0usize;
        let mut count2 = |_: Item, _: u64| -> Result<(), Error> {
            m += 1;
            Ok(())
        };
        let again = read_segment(prefix, prefix.len() as u64, path, true, &mut count2);
        assert!(
            matches!(again, Ok(None)) || stop.offset == 0,
            "valid prefix does not re-read cleanly: {again:?}"
        );
        assert!(
            m == n || stop.offset == 0,
            "prefix re-read {m} records, first read {n}"
        );
    }
}
