//! Chunk segment files `chunks/000001`, `000002`, ... of a block: writing
//! them as chunks stream in, and reading chunks back from memory maps.
//!
//! The framing is documented in `docs/format/chunks.md`. A chunk reference
//! is `(segment index << 32) | byte offset of the record`, where the
//! segment index is the file number minus one (`000001` is index 0), as in
//! Prometheus. Opening only checks each segment's 8-byte header; a record's
//! CRC-32C is checked each time the chunk is read, so opening a block does
//! not read its chunk data.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use snafu::{ResultExt, ensure};

use super::encoding::{Dec, put_uvarint};
use super::error::{
    ChecksumSnafu, CreateFileSnafu, Error, FormatLimitSnafu, InvalidChunkRefSnafu, MapSnafu,
    ReadSnafu, Result, SyncSnafu, WriteSnafu, check_format,
};

/// Magic number at the start of a chunk segment file.
pub const SEGMENT_MAGIC: u32 = 0x85BD_40DD;
/// Segment format version.
pub const SEGMENT_VERSION: u8 = 1;
/// Bytes of the segment header.
pub(crate) const SEGMENT_HEADER_LEN: usize = 8;
/// Default maximum size of a segment file (512 MiB).
pub(crate) const DEFAULT_SEGMENT_SIZE: u64 = 512 << 20;

const SECTION: &str = "chunk segment";

/// File name of segment `index` (0-based) inside `chunks/`.
pub(crate) fn segment_name(index: u32) -> String {
    format!("{:06}", u64::from(index) + 1)
}

/// Streams chunk records into numbered segment files.
#[derive(Debug)]
pub(crate) struct SegmentWriter {
    dir: PathBuf,
    max_size: u64,
    cur: Option<(PathBuf, BufWriter<File>)>,
    index: u32,
    offset: u64,
    bytes_done: u64,
    buf: Vec<u8>,
}

impl SegmentWriter {
    /// A writer creating segments in `dir` (which must exist), each at most
    /// `max_size` bytes unless a single record is larger.
    pub(crate) fn new(dir: PathBuf, max_size: u64) -> Self {
        Self {
            dir,
            max_size: max_size.clamp(SEGMENT_HEADER_LEN as u64 + 1, u64::from(u32::MAX)),
            cur: None,
            index: 0,
            offset: 0,
            bytes_done: 0,
            buf: Vec::new(),
        }
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some((path, w)) = self.cur.take() {
            let f = w
                .into_inner()
                .map_err(|e| e.into_error())
                .context(WriteSnafu { path: &path })?;
            f.sync_all().context(SyncSnafu { path: &path })?;
            self.bytes_done += self.offset;
            self.index += 1;
        }
        Ok(())
    }

    /// Appends one chunk record and returns its reference.
    pub(crate) fn write(&mut self, encoding: u8, data: &[u8]) -> Result<u64> {
        self.buf.clear();
        put_uvarint(&mut self.buf, data.len() as u64);
        self.buf.push(encoding);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&[encoding]), data);
        let rec_len = (self.buf.len() + data.len() + 4) as u64;
        if self.cur.is_some() && self.offset + rec_len > self.max_size {
            self.close_current()?;
        }
        let (path, w) = match &mut self.cur {
            Some(cur) => cur,
            None => {
                ensure!(
                    self.index < u32::MAX,
                    FormatLimitSnafu {
                        path: &self.dir,
                        reason: "too many chunk segments"
                    }
                );
                let path = self.dir.join(segment_name(self.index));
                let f = File::create_new(&path).context(CreateFileSnafu { path: &path })?;
                let mut w = BufWriter::with_capacity(1 << 16, f);
                let mut hdr = SEGMENT_MAGIC.to_be_bytes().to_vec();
                hdr.extend_from_slice(&[SEGMENT_VERSION, 0, 0, 0]);
                w.write_all(&hdr).context(WriteSnafu { path: &path })?;
                self.offset = SEGMENT_HEADER_LEN as u64;
                self.cur.insert((path, w))
            }
        };
        let r = (u64::from(self.index) << 32) | self.offset;
        w.write_all(&self.buf)
            .context(WriteSnafu { path: &*path })?;
        w.write_all(data).context(WriteSnafu { path: &*path })?;
        w.write_all(&crc.to_be_bytes())
            .context(WriteSnafu { path: &*path })?;
        self.offset += rec_len;
        Ok(r)
    }

    /// Flushes and fsyncs the last segment and the directory; returns the
    /// total bytes written.
    pub(crate) fn finish(mut self) -> Result<u64> {
        self.close_current()?;
        super::fsync_dir(&self.dir)?;
        Ok(self.bytes_done)
    }
}

/// Memory-maps `path` read-only, refusing files shorter than `min_len`.
pub(crate) fn map_file(path: &Path, min_len: usize, section: &'static str) -> Result<Mmap> {
    let f = File::open(path).context(ReadSnafu { path })?;
    let len = f.metadata().context(ReadSnafu { path })?.len();
    if len < min_len as u64 {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            section,
            offset: len,
            reason: "file too short",
        });
    }
    // SAFETY: block files are immutable once written; nothing in this
    // process writes or truncates them while they are mapped. Another
    // process truncating them would be an operator error (SIGBUS), which
    // no checksum can guard against.
    unsafe { Mmap::map(&f) }.context(MapSnafu { path })
}

/// The read side: every segment of a block, memory-mapped.
#[derive(Debug)]
pub(crate) struct Segments {
    dir: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
}

impl Segments {
    /// Opens and checks the headers of all segments in `dir`. File names
    /// must be the numbers `000001..N` without gaps; other names are
    /// ignored.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let mut nums = Vec::new();
        match fs::read_dir(dir) {
            Ok(rd) => {
                for e in rd {
                    let e = e.context(ReadSnafu { path: dir })?;
                    let name = e.file_name();
                    let Some(name) = name.to_str() else { continue };
                    if name.len() == 6 && name.bytes().all(|b| b.is_ascii_digit()) {
                        if let Ok(n) = name.parse::<u64>() {
                            nums.push(n);
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context(ReadSnafu { path: dir }),
        }
        nums.sort_unstable();
        let mut files = Vec::with_capacity(nums.len());
        for (i, n) in nums.into_iter().enumerate() {
            let path = dir.join(format!("{n:06}"));
            ensure!(
                n == i as u64 + 1,
                InvalidChunkRefSnafu {
                    path,
                    chunk_ref: (i as u64) << 32,
                    reason: "chunk segment numbers are not contiguous from 000001"
                }
            );
            let m = map_file(&path, SEGMENT_HEADER_LEN, SECTION)?;
            check_format(
                &path,
                u32::from_be_bytes([m[0], m[1], m[2], m[3]]),
                SEGMENT_MAGIC,
                [m[4], m[5], m[6], m[7]],
                SEGMENT_VERSION,
            )?;
            files.push((path, m));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
        })
    }

    /// Number of segment files.
    pub(crate) fn len(&self) -> usize {
        self.files.len()
    }

    /// The chunk at `r`: `(encoding, data)` after the CRC check.
    pub(crate) fn chunk(&self, r: u64) -> Result<(u8, &[u8])> {
        let seg = (r >> 32) as usize;
        let off = (r & 0xffff_ffff) as usize;
        let Some((path, m)) = self.files.get(seg) else {
            return InvalidChunkRefSnafu {
                path: self.dir.clone(),
                chunk_ref: r,
                reason: "no such segment",
            }
            .fail();
        };
        if off < SEGMENT_HEADER_LEN || off >= m.len() {
            return InvalidChunkRefSnafu {
                path: path.clone(),
                chunk_ref: r,
                reason: "offset outside the segment's records",
            }
            .fail();
        }
        decode_record(&m[off..], off as u64, path, r)
    }
}

/// Total bytes of the chunk record starting at `buf[0]` (length varint,
/// encoding byte, data, CRC), from its length varint alone; `None` when
/// `buf` ends inside the varint or the varint is malformed. Lets a reader
/// that fetched only a prefix of a record tell how much more it needs.
pub(crate) fn record_len(buf: &[u8]) -> Option<u64> {
    let mut d = Dec::new(buf, 0);
    let n = d.uvarint().ok()?;
    (d.offset()).checked_add(n)?.checked_add(1 + 4)
}

/// Decodes the chunk record at the start of `buf` — which sits at byte
/// `off` of segment `path` and holds at least the whole record — checking
/// its CRC: `(encoding, data)`. The one record decoder, shared by the
/// memory-mapped segments and ranged reads from a bucket.
pub(crate) fn decode_record<'a>(
    buf: &'a [u8],
    off: u64,
    path: &Path,
    r: u64,
) -> Result<(u8, &'a [u8])> {
    let mut d = Dec::new(buf, off);
    let rec = (|| {
        let n = d.len(1)?;
        let body = d.bytes(n + 1)?;
        let crc_at = d.offset();
        let stored = d.be_u32()?;
        Ok((body, crc_at, stored))
    })();
    let (body, crc_at, stored) =
        rec.map_err(|e: super::encoding::DecErr| e.into_error(path, SECTION))?;
    let computed = crc32c::crc32c(body);
    ensure!(
        stored == computed,
        ChecksumSnafu {
            path,
            section: SECTION,
            offset: crc_at,
            stored,
            computed
        }
    );
    match body.split_first() {
        Some((&encoding, data)) => Ok((encoding, data)),
        None => InvalidChunkRefSnafu {
            path,
            chunk_ref: r,
            reason: "empty chunk record",
        }
        .fail(),
    }
}
