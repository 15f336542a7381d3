//! Index headers (format in `docs/format/index-header.md`): the parts of a
//! block's `index` needed to look labels up — its TOC, symbol table and
//! label index, copied byte for byte — in one small local file, for a
//! store that leaves the index itself in the bucket.
//!
//! Building one takes two rounds of ranged reads of the index object:
//! the TOC (its last 68 bytes), then the header and symbols (the start of
//! the file) and the label index. [`write_header`] frames them with a
//! magic number, the index's length and a CRC-32C over the whole file;
//! [`parse_header`] checks all of it, so a truncated or damaged file is an
//! error (the store then rebuilds it). Series entries and postings lists
//! stay in the bucket and are read on demand through a
//! [`super::index_reader::RemoteIndex`].

use std::io::Write;
use std::ops::Range;
use std::path::Path;

use snafu::{ResultExt, ensure};

use super::encoding::{Dec, DecErr, put_be32, put_be64};
use super::error::{
    ChecksumSnafu, CreateFileSnafu, Error, RenameSnafu, Result, SyncSnafu, WriteSnafu, check_format,
};
use super::index_reader::{RemoteIndex, Sections, check_index_head, parse_toc};
use super::index_writer::{HEADER_LEN, TOC_LEN};

/// Magic number at the start of an index header ("STIH").
pub const INDEX_HEADER_MAGIC: u32 = 0x5354_4948;
/// Index header format version.
pub const INDEX_HEADER_VERSION: u8 = 1;
/// Name of the index header file inside a store's block cache directory.
pub const INDEX_HEADER_FILENAME: &str = "index-header";

/// Offset of the copied TOC.
const TOC_AT: usize = 16;
/// Offset of the copied index header, followed by the symbols section.
const HEAD_AT: usize = TOC_AT + TOC_LEN;
/// Bytes of everything but the two copied sections.
const FIXED_LEN: usize = HEAD_AT + HEADER_LEN + 4;

/// What to read of an index object to build its header, from its TOC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeaderPlan {
    /// The index's header and symbols section: `0..symbols end`.
    pub(crate) head_and_symbols: Range<u64>,
    /// The label index section.
    pub(crate) labels: Range<u64>,
}

/// The byte range of the TOC of an index object of `index_len` bytes.
pub(crate) fn toc_range(name: &Path, index_len: u64) -> Result<Range<u64>> {
    if index_len < (HEADER_LEN + TOC_LEN) as u64 {
        return Err(Error::Corrupt {
            path: name.to_path_buf(),
            section: "TOC",
            offset: index_len,
            reason: "index object too short",
        });
    }
    Ok(index_len - TOC_LEN as u64..index_len)
}

/// Checks the TOC of an index object of `index_len` bytes and says what
/// else to read.
pub(crate) fn plan(name: &Path, toc: &[u8], index_len: u64) -> Result<HeaderPlan> {
    let len = usize::try_from(index_len).map_err(|_| Error::Corrupt {
        path: name.to_path_buf(),
        section: "TOC",
        offset: index_len,
        reason: "index object too large",
    })?;
    let [symbols, _, _, labels] = parse_toc(name, toc, len)?;
    Ok(HeaderPlan {
        head_and_symbols: 0..symbols.end as u64,
        labels: labels.start as u64..labels.end as u64,
    })
}

/// Writes the index header for an index object of `index_len` bytes to
/// `path` (through a temporary file, fsynced, renamed into place), from
/// its `toc` and the bytes read per [`plan`]; returns the file's size.
/// The sections are checked only by opening the result.
pub(crate) fn write_header(
    path: &Path,
    index_len: u64,
    toc: &[u8],
    head_and_symbols: &[u8],
    labels: &[u8],
) -> Result<u64> {
    let buf = header_bytes(index_len, toc, head_and_symbols, labels);
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp).context(CreateFileSnafu { path: &tmp })?;
        f.write_all(&buf).context(WriteSnafu { path: &tmp })?;
        f.sync_all().context(SyncSnafu { path: &tmp })?;
    }
    std::fs::rename(&tmp, path).context(RenameSnafu { path })?;
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        super::fsync_dir(dir)?;
    }
    Ok(buf.len() as u64)
}

/// The bytes of an index header (see [`write_header`]).
pub(crate) fn header_bytes(
    index_len: u64,
    toc: &[u8],
    head_and_symbols: &[u8],
    labels: &[u8],
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(FIXED_LEN + head_and_symbols.len() + labels.len());
    put_be32(&mut buf, INDEX_HEADER_MAGIC);
    buf.extend_from_slice(&[INDEX_HEADER_VERSION, 0, 0, 0]);
    put_be64(&mut buf, index_len);
    buf.extend_from_slice(toc);
    buf.extend_from_slice(head_and_symbols);
    buf.extend_from_slice(labels);
    let crc = crc32c::crc32c(&buf);
    put_be32(&mut buf, crc);
    buf
}

/// An index object held in memory as a [`RemoteIndex`] (fuzzing, tests):
/// reads slice it, nothing is cached.
#[derive(Debug)]
pub(crate) struct SliceIndex {
    pub(crate) data: Vec<u8>,
    pub(crate) name: std::path::PathBuf,
}

impl RemoteIndex for SliceIndex {
    fn read(&self, ranges: &[Range<u64>]) -> crate::Result<Vec<bytes::Bytes>> {
        ranges
            .iter()
            .map(|r| {
                let (Ok(a), Ok(b)) = (usize::try_from(r.start), usize::try_from(r.end)) else {
                    return Err(crate::Error::Remote {
                        message: "range out of bounds".into(),
                    });
                };
                self.data
                    .get(a..b)
                    .map(bytes::Bytes::copy_from_slice)
                    .ok_or_else(|| crate::Error::Remote {
                        message: "range out of bounds".into(),
                    })
            })
            .collect()
    }
    fn cached(&self, _: u64) -> Option<std::sync::Arc<[u8]>> {
        None
    }
    fn cache(&self, _: u64, _: std::sync::Arc<[u8]>) {}
    fn name(&self) -> &Path {
        &self.name
    }
}

/// Builds the index header of the index object `index` in memory, as a
/// store does from ranged reads; `None` when its TOC is unusable.
pub(crate) fn header_of(name: &Path, index: &[u8]) -> Option<Vec<u8>> {
    let len = index.len() as u64;
    let t = toc_range(name, len).ok()?;
    let toc = index.get(t.start as usize..t.end as usize)?;
    let p = plan(name, toc, len).ok()?;
    let hs = index.get(p.head_and_symbols.start as usize..p.head_and_symbols.end as usize)?;
    let l = index.get(p.labels.start as usize..p.labels.end as usize)?;
    Some(header_bytes(len, toc, hs, l))
}

/// Checks an index header's framing (magic, version, whole-file CRC, the
/// copied TOC and index header, section lengths) and says where its
/// sections are. The sections' own CRCs and structure are checked by the
/// reader.
pub(crate) fn parse_header(path: &Path, data: &[u8]) -> Result<Sections> {
    let len = data.len();
    let corrupt = |offset: usize, reason| Error::Corrupt {
        path: path.to_path_buf(),
        section: "index header",
        offset: offset as u64,
        reason,
    };
    if len < FIXED_LEN {
        return Err(corrupt(len, "file too short"));
    }
    let e = |e: DecErr| e.into_error(path, "index header");
    let mut d = Dec::new(data, 0);
    let magic = d.be_u32().map_err(e)?;
    let v = d.bytes(4).map_err(e)?;
    check_format(
        path,
        magic,
        INDEX_HEADER_MAGIC,
        [v[0], v[1], v[2], v[3]],
        INDEX_HEADER_VERSION,
    )?;
    let body = &data[..len - 4];
    let stored = Dec::new(&data[len - 4..], (len - 4) as u64)
        .be_u32()
        .map_err(e)?;
    let computed = crc32c::crc32c(body);
    ensure!(
        stored == computed,
        ChecksumSnafu {
            path,
            section: "index header",
            offset: (len - 4) as u64,
            stored,
            computed
        }
    );
    let index_len = d.be_u64().map_err(e)?;
    let Ok(index_len) = usize::try_from(index_len) else {
        return Err(corrupt(8, "index length out of range"));
    };
    let toc = data
        .get(TOC_AT..HEAD_AT)
        .ok_or_else(|| corrupt(TOC_AT, "file too short"))?;
    let [symbols, series, postings, labels] = parse_toc(path, toc, index_len)?;
    check_index_head(path, &data[HEAD_AT..])?;
    let sym_at = HEAD_AT + HEADER_LEN;
    let labels_at = sym_at + symbols.len();
    if labels_at.saturating_add(labels.len()) != len - 4 {
        return Err(corrupt(labels_at, "sections do not fill the file"));
    }
    Ok(Sections {
        symbols: sym_at..labels_at,
        labels: labels_at..len - 4,
        labels_index_off: labels.start,
        series,
        postings,
    })
}
