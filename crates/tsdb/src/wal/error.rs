//! Errors of the write-ahead log.
//!
//! Every I/O failure names the file it happened on; corruption names the
//! file and byte offset and says how to recover.

use std::path::PathBuf;

use snafu::Snafu;

/// Errors of the write-ahead log.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    /// The WAL directory could not be created.
    #[snafu(display("failed to create WAL directory {}", path.display()))]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A directory could not be listed.
    #[snafu(display("failed to list WAL directory {}", path.display()))]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A segment file could not be created or opened.
    #[snafu(display("failed to open WAL segment {}", path.display()))]
    OpenSegment {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Writing to a segment failed.
    #[snafu(display("failed to write WAL segment {}", path.display()))]
    WriteSegment {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Reading a segment failed (an I/O error, not corruption).
    #[snafu(display("failed to read WAL segment {} at offset {offset}", path.display()))]
    ReadSegment {
        path: PathBuf,
        offset: u64,
        source: std::io::Error,
    },

    /// fsync of a file failed.
    #[snafu(display("failed to fsync {}", path.display()))]
    SyncFile {
        path: PathBuf,
        source: std::io::Error,
    },

    /// fsync of a directory failed.
    #[snafu(display("failed to fsync directory {}", path.display()))]
    SyncDir {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Truncating a segment (tail repair) failed.
    #[snafu(display("failed to truncate WAL segment {} to {offset} bytes", path.display()))]
    Truncate {
        path: PathBuf,
        offset: u64,
        source: std::io::Error,
    },

    /// Removing a segment, checkpoint or leftover temporary directory failed.
    #[snafu(display("failed to remove {}", path.display()))]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Renaming a finished checkpoint into place failed.
    #[snafu(display("failed to rename {} to {}", from.display(), to.display()))]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },

    /// The log contains bytes that are not a valid record.
    #[snafu(display(
        "corrupt WAL at {} offset {offset}: {reason}; replay with repair enabled \
         (ReplayOptions {{ repair: true }}) truncates the segment there, losing the data after it",
        path.display()
    ))]
    Corruption {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// A single record would be larger than the format allows (4 GiB).
    #[snafu(display(
        "WAL record of {len} bytes exceeds the 4 GiB record limit; log smaller batches"
    ))]
    RecordTooLarge { len: usize },

    /// `checkpoint(through)` was asked to include the segment being written.
    #[snafu(display(
        "cannot checkpoint through segment {through}: it must be below the current segment {current}"
    ))]
    CheckpointOpenSegment { through: u64, current: u64 },

    /// `checkpoint(through)` would not be newer than the existing checkpoint.
    #[snafu(display(
        "cannot checkpoint through segment {through}: checkpoint {existing} already exists"
    ))]
    CheckpointNotNewer { through: u64, existing: u64 },

    /// The replay callback returned an error; replay stopped.
    #[snafu(display("WAL replay callback failed at {} offset {offset}: {source}", path.display()))]
    Callback {
        path: PathBuf,
        offset: u64,
        source: Box<crate::Error>,
    },
}
