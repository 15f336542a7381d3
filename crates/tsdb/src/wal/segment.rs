//! Segment files: naming, the file header, directory listing and the
//! append-only segment writer.
//!
//! A segment is created with its 8-byte header, fsynced, and its directory
//! fsynced before any record goes in, so a segment that exists after a crash
//! is either empty (creation torn), a prefix of the header, or a header
//! followed by frames. Writes that fail are rolled back by truncating to the
//! last good size; if even that fails the writer is marked broken and the
//! WAL moves on to a fresh segment before the next write.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use snafu::ResultExt;

use super::error::{
    Error, OpenSegmentSnafu, ReadDirSnafu, SyncDirSnafu, SyncFileSnafu, WriteSegmentSnafu,
};

/// Magic bytes at the start of every segment.
pub(crate) const MAGIC: [u8; 4] = *b"SWAL";
/// Format version written into the segment header.
pub(crate) const VERSION: u8 = 4;
/// Length of the segment header.
pub(crate) const HEADER_LEN: u64 = 8;

/// The 8-byte segment header: magic, version, three reserved zero bytes.
pub(crate) fn header() -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&MAGIC);
    h[4] = VERSION;
    h
}

/// File name of segment `index`: at least 8 zero-padded decimal digits.
pub(crate) fn segment_name(index: u64) -> String {
    format!("{index:08}")
}

/// Parses a segment file name: one or more ASCII digits, nothing else.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}

const CHECKPOINT_PREFIX: &str = "checkpoint.";
/// Suffix of a checkpoint under construction; never parses as a checkpoint.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// Directory name of the checkpoint through segment `index`.
pub(crate) fn checkpoint_name(index: u64) -> String {
    format!("{CHECKPOINT_PREFIX}{index:08}")
}

/// Parses `checkpoint.<digits>`; anything else (including `.tmp`) is `None`.
pub(crate) fn parse_checkpoint_name(name: &str) -> Option<u64> {
    name.strip_prefix(CHECKPOINT_PREFIX)
        .and_then(parse_segment_name)
}

/// What a WAL directory holds, each list sorted by index.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub(crate) segments: Vec<(u64, PathBuf)>,
    pub(crate) checkpoints: Vec<(u64, PathBuf)>,
    /// Leftover `checkpoint.*.tmp` directories of interrupted checkpoints.
    pub(crate) tmp: Vec<PathBuf>,
}

/// Lists segments, checkpoints and leftover temporary checkpoints in `dir`.
/// Other entries are ignored.
pub(crate) fn list_dir(dir: &Path) -> Result<Listing, Error> {
    let mut out = Listing::default();
    let rd = std::fs::read_dir(dir).context(ReadDirSnafu { path: dir })?;
    for entry in rd {
        let entry = entry.context(ReadDirSnafu { path: dir })?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let ft = entry.file_type().context(ReadDirSnafu { path: dir })?;
        if ft.is_file() {
            if let Some(i) = parse_segment_name(&name) {
                out.segments.push((i, entry.path()));
            }
        } else if ft.is_dir() {
            if let Some(i) = parse_checkpoint_name(&name) {
                out.checkpoints.push((i, entry.path()));
            } else if name.starts_with(CHECKPOINT_PREFIX) && name.ends_with(TMP_SUFFIX) {
                out.tmp.push(entry.path());
            }
        }
    }
    out.segments.sort_unstable_by_key(|s| s.0);
    out.checkpoints.sort_unstable_by_key(|s| s.0);
    Ok(out)
}

/// fsyncs a directory so that created, renamed and removed entries persist.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .context(SyncDirSnafu { path: dir })
}

/// An open segment being appended to.
#[derive(Debug)]
pub(crate) struct SegmentWriter {
    /// Shared so that an fsync can run outside the WAL's lock.
    pub(crate) file: Arc<File>,
    pub(crate) path: PathBuf,
    pub(crate) index: u64,
    /// Bytes in the file, header included.
    pub(crate) size: u64,
    /// A failed write could not be rolled back: write no more here.
    pub(crate) broken: bool,
}

impl SegmentWriter {
    /// Creates segment `index` in `dir` (failing if it exists), writes and
    /// fsyncs its header. The caller fsyncs `dir`.
    pub(crate) fn create(dir: &Path, index: u64) -> Result<Self, Error> {
        let path = dir.join(segment_name(index));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .context(OpenSegmentSnafu { path: &path })?;
        file.write_all(&header())
            .context(WriteSegmentSnafu { path: &path })?;
        file.sync_all().context(SyncFileSnafu { path: &path })?;
        Ok(Self {
            file: Arc::new(file),
            path,
            index,
            size: HEADER_LEN,
            broken: false,
        })
    }

    /// Appends `buf` with one `write_all` (a single write(2) for regular
    /// files). On failure the file is truncated back to its previous size.
    pub(crate) fn write(&mut self, buf: &[u8]) -> Result<(), Error> {
        let mut f: &File = &self.file;
        if let Err(e) = f.write_all(buf) {
            let rolled_back =
                self.file.set_len(self.size).is_ok() && f.seek(SeekFrom::Start(self.size)).is_ok();
            if !rolled_back {
                self.broken = true;
            }
            return Err(e).context(WriteSegmentSnafu { path: &self.path });
        }
        self.size += buf.len() as u64;
        Ok(())
    }

    /// fsyncs the segment's data.
    pub(crate) fn sync(&self) -> Result<(), Error> {
        self.file
            .sync_data()
            .context(SyncFileSnafu { path: &self.path })
    }
}
