//! Errors of the block module: writing, opening and reading a block.
//!
//! Every error that comes from reading a file names the file, the section
//! and, where one exists, the byte offset, so an operator can find the
//! damaged spot with a hex dump.

use std::path::{Path, PathBuf};

use snafu::{Snafu, ensure};

/// Errors of reading and writing blocks.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    /// The block directory to create already exists.
    #[snafu(display("block directory {} already exists", path.display()))]
    DirExists { path: PathBuf },

    /// Creating a directory failed.
    #[snafu(display("creating directory {}: {source}", path.display()))]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Creating or opening a file for writing failed.
    #[snafu(display("creating {}: {source}", path.display()))]
    CreateFile {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Writing to a file failed.
    #[snafu(display("writing {}: {source}", path.display()))]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Syncing a file or directory to stable storage failed.
    #[snafu(display("fsync {}: {source}", path.display()))]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Renaming a temporary file into place failed.
    #[snafu(display("renaming {} into place: {source}", path.display()))]
    Rename {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Opening or reading a file failed.
    #[snafu(display("reading {}: {source}", path.display()))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Memory-mapping a file failed.
    #[snafu(display("memory-mapping {}: {source}", path.display()))]
    Map {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A series was added out of label-set order.
    #[snafu(display("series {labels} added out of order (must be strictly after {previous})"))]
    SeriesOrder { labels: String, previous: String },

    /// A chunk handed to the writer is malformed (e.g. `mint > maxt`, or
    /// chunks not sorted by `mint`).
    #[snafu(display("invalid chunk for series {labels}: {reason}"))]
    InvalidChunk {
        labels: String,
        reason: &'static str,
    },

    /// The index would exceed a limit of the format (e.g. a symbol table
    /// larger than 4 GiB).
    #[snafu(display("writing {}: format limit exceeded: {reason}", path.display()))]
    FormatLimit { path: PathBuf, reason: &'static str },

    /// A file does not start with the expected magic number.
    #[snafu(display("{}: bad magic number {found:#010x} (expected {expected:#010x})", path.display()))]
    BadMagic {
        path: PathBuf,
        found: u32,
        expected: u32,
    },

    /// A file has a format version this code does not read.
    #[snafu(display("{}: unsupported format version {version}", path.display()))]
    BadVersion { path: PathBuf, version: u32 },

    /// A checksum does not match the bytes it covers.
    #[snafu(display(
        "{}: checksum mismatch in {section} at offset {offset}: stored {stored:#010x}, computed {computed:#010x}",
        path.display()
    ))]
    Checksum {
        path: PathBuf,
        section: &'static str,
        offset: u64,
        stored: u32,
        computed: u32,
    },

    /// A file's structure is invalid: truncated, an offset out of range,
    /// a malformed varint, unsorted entries, ...
    #[snafu(display("{}: corrupt {section} at offset {offset}: {reason}", path.display()))]
    Corrupt {
        path: PathBuf,
        section: &'static str,
        offset: u64,
        reason: &'static str,
    },

    /// A series id that does not name a series of this block.
    #[snafu(display("{}: invalid series id {id}", path.display()))]
    InvalidSeriesId { path: PathBuf, id: u64 },

    /// A chunk reference that does not point into a segment of this block.
    #[snafu(display("{}: invalid chunk reference {chunk_ref:#x}: {reason}", path.display()))]
    InvalidChunkRef {
        path: PathBuf,
        chunk_ref: u64,
        reason: &'static str,
    },

    /// Reading part of a remote index from the bucket failed (the object
    /// is gone — the block was deleted —, a bucket error, a short read).
    #[snafu(display("{}: reading from the bucket: {source}", path.display()))]
    Fetch {
        path: PathBuf,
        source: Box<crate::Error>,
    },

    /// `meta.json` is not valid JSON of the expected shape.
    #[snafu(display("{}: invalid meta.json: {source}", path.display()))]
    MetaJson {
        path: PathBuf,
        source: serde_json::Error,
    },

    /// `meta.json` parsed but its content is inconsistent.
    #[snafu(display("{}: invalid meta.json: {reason}", path.display()))]
    MetaInvalid { path: PathBuf, reason: String },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Checks the 8-byte head every block file starts with: the big-endian
/// `magic` read from `path` must be `expected`, and the version bytes
/// `[supported, 0, 0, 0]`.
pub(crate) fn check_format(
    path: &Path,
    magic: u32,
    expected: u32,
    version: [u8; 4],
    supported: u8,
) -> Result<()> {
    ensure!(
        magic == expected,
        BadMagicSnafu {
            path,
            found: magic,
            expected
        }
    );
    ensure!(
        version == [supported, 0, 0, 0],
        BadVersionSnafu {
            path,
            version: u32::from_be_bytes(version)
        }
    );
    Ok(())
}
