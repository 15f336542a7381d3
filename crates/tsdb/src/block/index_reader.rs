//! Reads a block's `index` file (format in `docs/format/index.md`) from a
//! memory map, validating as it goes.
//!
//! Opening checks the header, the TOC (CRC-32C, sections tiling the file
//! exactly), the symbol table (CRC-32C, strictly sorted UTF-8 strings) and
//! the label index (CRC-32C, table geometry), and loads only the list of
//! label names. Series entries and postings lists are decoded lazily, each
//! verified against its own CRC-32C when read. Symbols decoded into
//! `Arc<str>` for label sets are kept in a bounded cache so repeated label
//! names and values are shared instead of allocated per call.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use parking_lot::RwLock;
use snafu::ensure;
use stratus_model::{Label, Labels};

use super::ChunkMeta;
use super::encoding::{Dec, DecErr};
use super::error::{ChecksumSnafu, Error, InvalidSeriesIdSnafu, Result, check_format};
use super::index_writer::{HEADER_LEN, INDEX_MAGIC, INDEX_VERSION, TOC_LEN};

/// Most symbols kept in the decoded-symbol cache.
const SYMBOL_CACHE_CAP: usize = 1 << 18;

/// Bytes of one entry of the label-value table.
const VALUE_ENTRY_LEN: usize = 12;

/// The bytes of an index: a memory map, or owned bytes (fuzzing, tests).
#[derive(Debug)]
pub(crate) enum Backing {
    Map(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Map(m) => m,
            Self::Owned(v) => v,
        }
    }
}

/// A label name and where its value entries are.
#[derive(Debug)]
struct NameEntry {
    name: Arc<str>,
    /// Absolute offset of the first value entry.
    values_off: usize,
    /// Number of values.
    count: usize,
}

/// Reads the series entries and postings lists of an index that is not
/// on local disk (a store's block in the bucket, opened from its index
/// header): ranged reads of the index object, and a cache of entries.
pub(crate) trait RemoteIndex: std::fmt::Debug + Send + Sync {
    /// The bytes of each of `ranges` (absolute offsets in the index
    /// object, sorted by start, not overlapping), in order, each exactly
    /// as long as its range. Nearby ranges may be read together.
    fn read(&self, ranges: &[Range<u64>]) -> crate::Result<Vec<bytes::Bytes>>;

    /// The body of the entry at absolute offset `at`, if cached (it was
    /// CRC-checked when cached).
    fn cached(&self, at: u64) -> Option<Arc<[u8]>>;

    /// Caches the (CRC-checked) body of the entry at absolute offset `at`.
    fn cache(&self, at: u64, body: Arc<[u8]>);

    /// The index object's name, for errors (`<tenant>/<ulid>/index`).
    fn name(&self) -> &Path;
}

/// Where series entries and postings lists are read from.
#[derive(Debug)]
enum Body {
    /// From `data`, at their offsets in the index file.
    Local,
    /// With ranged reads of the index object; `data` is an index header.
    Remote(Arc<dyn RemoteIndex>),
}

/// Bytes read for a series entry whose end is not bounded by the next
/// wanted series (most entries are far smaller; longer ones are re-read).
const SERIES_ESTIMATE: usize = 1 << 10;

/// One entry to read from a remote index.
#[derive(Debug, Clone, Copy)]
struct Want {
    /// Absolute offset of the entry.
    at: usize,
    /// End of the first read.
    first_end: usize,
    /// The entry must end at or before this offset.
    limit: usize,
}

/// Bytes of `n` as a uvarint.
fn uvarint_len(n: u64) -> usize {
    (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
}

/// A validated, lazily decoded index: a whole `index` file, or an index
/// header (symbols and label index only) with series and postings read
/// through a [`RemoteIndex`].
#[derive(Debug)]
pub(crate) struct IndexReader {
    path: PathBuf,
    data: Backing,
    /// Whole symbol section (refs are relative to its start), without
    /// CRC; positions in `data`.
    symbols: Range<usize>,
    /// The series section, as offsets in the index file.
    series: Range<usize>,
    /// The postings section, as offsets in the index file.
    postings: Range<usize>,
    /// The value-table rows of the label index, positions in `data`.
    rows: Range<usize>,
    /// Offset in the index file of the first value-table row.
    rows_index_off: usize,
    names: Vec<NameEntry>,
    cache: RwLock<HashMap<u32, Arc<str>>>,
    body: Body,
}

/// Where the sections of an index are: positions in the bytes held
/// (`symbols`, `labels`, both including their CRC) and offsets in the
/// index file (`labels_index_off`, `series`, `postings`).
#[derive(Debug, Clone)]
pub(crate) struct Sections {
    pub(crate) symbols: Range<usize>,
    pub(crate) labels: Range<usize>,
    pub(crate) labels_index_off: usize,
    pub(crate) series: Range<usize>,
    pub(crate) postings: Range<usize>,
}

/// Checks an index's 8-byte header (magic, version, padding).
pub(crate) fn check_index_head(path: &Path, head: &[u8]) -> Result<()> {
    let Some(h) = head.get(..HEADER_LEN) else {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            section: "header",
            offset: 0,
            reason: "file too short",
        });
    };
    check_format(
        path,
        u32::from_be_bytes([h[0], h[1], h[2], h[3]]),
        INDEX_MAGIC,
        [h[4], h[5], h[6], h[7]],
        INDEX_VERSION,
    )
}

/// Checks an index's TOC (`toc`: its last [`TOC_LEN`] bytes, CRC
/// included) against the index length `len`; returns the symbols, series,
/// postings and label index sections as offsets in the index file.
pub(crate) fn parse_toc(path: &Path, toc: &[u8], len: usize) -> Result<[Range<usize>; 4]> {
    let corrupt = |offset: usize, reason| Error::Corrupt {
        path: path.to_path_buf(),
        section: "TOC",
        offset: offset as u64,
        reason,
    };
    if len < HEADER_LEN + TOC_LEN || toc.len() != TOC_LEN {
        return Err(corrupt(len, "file too short"));
    }
    let toc_at = len - TOC_LEN;
    let mut d = Dec::new(toc, toc_at as u64);
    let e = |e: DecErr| e.into_error(path, "TOC");
    let body = d.bytes(TOC_LEN - 4).map_err(e)?;
    let stored = d.be_u32().map_err(e)?;
    let computed = crc32c::crc32c(body);
    ensure!(
        stored == computed,
        ChecksumSnafu {
            path,
            section: "TOC",
            offset: (len - 4) as u64,
            stored,
            computed
        }
    );
    let mut d = Dec::new(body, toc_at as u64);
    let mut sections = [0usize..0, 0..0, 0..0, 0..0];
    let mut expect = HEADER_LEN;
    for s in &mut sections {
        let off = d.be_u64().map_err(e)?;
        let l = d.be_u64().map_err(e)?;
        if off != expect as u64 || l > (toc_at - expect) as u64 {
            return Err(corrupt(toc_at, "sections do not tile the file"));
        }
        *s = expect..expect + l as usize;
        expect = s.end;
    }
    if expect != toc_at {
        return Err(corrupt(toc_at, "sections do not tile the file"));
    }
    Ok(sections)
}

/// Reads `uvarint(len) | body | CRC-32C(body)` at absolute offset `at`
/// from `data`, which must end at `end`; returns the body and its offset.
fn read_entry(data: &[u8], at: usize, end: usize) -> Result<(&[u8], u64), EntryErr> {
    let Some(slice) = data.get(at..end) else {
        return Err(EntryErr::Dec(DecErr {
            offset: at as u64,
            reason: "entry offset out of range",
        }));
    };
    read_entry_in(slice, at as u64)
}

/// Reads the entry at the start of `slice`, whose first byte is at
/// absolute offset `base`.
fn read_entry_in(slice: &[u8], base: u64) -> Result<(&[u8], u64), EntryErr> {
    let mut d = Dec::new(slice, base);
    let n = d.len(1).map_err(EntryErr::Dec)?;
    let body_at = d.offset();
    let body = d.bytes(n).map_err(EntryErr::Dec)?;
    let crc_at = d.offset();
    let stored = d.be_u32().map_err(EntryErr::Dec)?;
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(EntryErr::Crc {
            offset: crc_at,
            stored,
            computed,
        });
    }
    Ok((body, body_at))
}

enum EntryErr {
    Dec(DecErr),
    Crc {
        offset: u64,
        stored: u32,
        computed: u32,
    },
}

impl EntryErr {
    fn into_error(self, path: &Path, section: &'static str) -> Error {
        match self {
            Self::Dec(e) => e.into_error(path, section),
            Self::Crc {
                offset,
                stored,
                computed,
            } => Error::Checksum {
                path: path.to_path_buf(),
                section,
                offset,
                stored,
                computed,
            },
        }
    }
}

/// Checks the CRC-32C stored in the last 4 bytes of `data[r]`.
fn check_section_crc(
    path: &Path,
    data: &[u8],
    r: &Range<usize>,
    section: &'static str,
) -> Result<()> {
    let corrupt = |offset: usize, reason| Error::Corrupt {
        path: path.to_path_buf(),
        section,
        offset: offset as u64,
        reason,
    };
    if r.end - r.start < 8 {
        return Err(corrupt(r.start, "section too short"));
    }
    let crc_at = r.end - 4;
    let body = data
        .get(r.start..crc_at)
        .ok_or_else(|| corrupt(r.start, "out of range"))?;
    let stored = Dec::new(data.get(crc_at..r.end).unwrap_or_default(), crc_at as u64)
        .be_u32()
        .map_err(|e| e.into_error(path, section))?;
    let computed = crc32c::crc32c(body);
    ensure!(
        stored == computed,
        ChecksumSnafu {
            path,
            section,
            offset: crc_at as u64,
            stored,
            computed
        }
    );
    Ok(())
}

impl IndexReader {
    /// Memory-maps and validates the index at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let m = super::chunk_segments::map_file(path, HEADER_LEN + TOC_LEN, "index")?;
        Self::from_backing(path.to_path_buf(), Backing::Map(m))
    }

    /// Validates an index held in memory; `path` is used in errors.
    pub(crate) fn from_backing(path: PathBuf, data: Backing) -> Result<Self> {
        let len = data.len();
        if len < HEADER_LEN + TOC_LEN {
            return Err(Error::Corrupt {
                path,
                section: "header",
                offset: len as u64,
                reason: "file too short",
            });
        }
        check_index_head(&path, &data)?;
        let [symbols, series, postings, labels] = parse_toc(&path, &data[len - TOC_LEN..], len)?;
        let sections = Sections {
            symbols,
            labels_index_off: labels.start,
            labels,
            series,
            postings,
        };
        Self::from_sections(path, data, sections, Body::Local)
    }

    /// Reads and validates the index header at `path` (read into memory,
    /// so a file changed later cannot fault the process); series and
    /// postings are read through `remote`.
    pub(crate) fn open_header(path: &Path, remote: Arc<dyn RemoteIndex>) -> Result<Self> {
        let data = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_header_bytes(path.to_path_buf(), data, remote)
    }

    /// Validates the index header `data`; `path` is used in errors.
    pub(crate) fn from_header_bytes(
        path: PathBuf,
        data: Vec<u8>,
        remote: Arc<dyn RemoteIndex>,
    ) -> Result<Self> {
        let sections = super::index_header::parse_header(&path, &data)?;
        Self::from_sections(path, Backing::Owned(data), sections, Body::Remote(remote))
    }

    fn from_sections(path: PathBuf, data: Backing, sec: Sections, body: Body) -> Result<Self> {
        let corrupt = |section, offset: usize, reason| Error::Corrupt {
            path: path.clone(),
            section,
            offset: offset as u64,
            reason,
        };
        let Sections {
            symbols,
            labels,
            labels_index_off,
            series,
            postings,
        } = sec;
        if symbols.end > data.len() || labels.end > data.len() {
            return Err(corrupt("TOC", data.len(), "sections exceed the file"));
        }
        // Symbols: validate CRC, UTF-8, strict order.
        check_section_crc(&path, &data, &symbols, "symbols")?;
        let sym_body = symbols.start..symbols.end - 4;
        {
            let mut d = Dec::new(&data[sym_body.clone()], sym_body.start as u64);
            let e = |e: DecErr| e.into_error(&path, "symbols");
            let n = d.be_u32().map_err(e)?;
            let mut prev: Option<&[u8]> = None;
            for _ in 0..n {
                let l = d.len(1).map_err(e)?;
                let at = d.offset();
                let s = d.bytes(l).map_err(e)?;
                if std::str::from_utf8(s).is_err() {
                    return Err(corrupt("symbols", at as usize, "symbol is not UTF-8"));
                }
                if prev.is_some_and(|p| p >= s) {
                    return Err(corrupt(
                        "symbols",
                        at as usize,
                        "symbols not strictly sorted",
                    ));
                }
                prev = Some(s);
            }
            if !d.is_empty() {
                return Err(corrupt("symbols", d.offset() as usize, "trailing bytes"));
            }
        }

        // Label index: geometry, names.
        check_section_crc(&path, &data, &labels, "label index")?;
        let lbody = labels.start..labels.end - 4;
        let mut r = Self {
            path: path.clone(),
            data,
            symbols: sym_body,
            series,
            postings,
            rows: lbody.clone(),
            rows_index_off: labels_index_off,
            names: Vec::new(),
            cache: RwLock::new(HashMap::new()),
            body,
        };
        let mut d = Dec::new(&r.data[lbody.clone()], lbody.start as u64);
        let e = |e: DecErr| e.into_error(&path, "label index");
        let n = d.be_u32().map_err(e)? as usize;
        if n.saturating_mul(16) > d.remaining() {
            return Err(corrupt(
                "label index",
                lbody.start,
                "name table exceeds section",
            ));
        }
        let rows_start = lbody.start + 4 + 16 * n;
        // Value rows: their offsets in the index file.
        let rows_index_off = labels_index_off + 4 + 16 * n;
        let mut names = Vec::with_capacity(n);
        let mut expect = rows_start;
        let mut prev_ref: Option<u32> = None;
        for _ in 0..n {
            let at = d.offset() as usize;
            let name_ref = d.be_u32().map_err(e)?;
            let count = d.be_u32().map_err(e)? as usize;
            let values_off = d.be_u64().map_err(e)?;
            if prev_ref.is_some_and(|p| p >= name_ref) {
                return Err(corrupt(
                    "label index",
                    at,
                    "label names not strictly sorted",
                ));
            }
            prev_ref = Some(name_ref);
            if values_off != (expect - rows_start + rows_index_off) as u64
                || count.saturating_mul(VALUE_ENTRY_LEN) > lbody.end - expect
            {
                return Err(corrupt("label index", at, "value table out of place"));
            }
            let name = r.symbol_arc(name_ref)?;
            names.push(NameEntry {
                name,
                values_off: expect,
                count,
            });
            expect += count * VALUE_ENTRY_LEN;
        }
        if expect != lbody.end {
            return Err(corrupt("label index", expect, "trailing bytes"));
        }
        r.names = names;
        r.rows = rows_start..lbody.end;
        r.rows_index_off = rows_index_off;
        Ok(r)
    }

    /// The series section's offsets in the index file.
    #[cfg(test)]
    pub(crate) fn series_section(&self) -> Range<usize> {
        self.series.clone()
    }

    /// The postings section's offsets in the index file.
    #[cfg(test)]
    pub(crate) fn postings_section(&self) -> Range<usize> {
        self.postings.clone()
    }

    /// The file path (for errors).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the index file in bytes.
    pub(crate) fn size(&self) -> usize {
        self.data.len()
    }

    /// The symbol at `r` (an offset into the symbol section), borrowed.
    fn symbol(&self, r: u32) -> Result<&str> {
        let at = self.symbols.start.saturating_add(r as usize);
        let corrupt = |reason| Error::Corrupt {
            path: self.path.clone(),
            section: "symbols",
            offset: at as u64,
            reason,
        };
        if r < 4 || at >= self.symbols.end {
            return Err(corrupt("symbol reference out of range"));
        }
        let mut d = Dec::new(&self.data[at..self.symbols.end], at as u64);
        let l = d.len(1).map_err(|e| e.into_error(&self.path, "symbols"))?;
        let b = d
            .bytes(l)
            .map_err(|e| e.into_error(&self.path, "symbols"))?;
        std::str::from_utf8(b).map_err(|_| corrupt("symbol is not UTF-8"))
    }

    /// The symbol at `r` as a shared string, through the cache.
    fn symbol_arc(&self, r: u32) -> Result<Arc<str>> {
        if let Some(s) = self.cache.read().get(&r) {
            return Ok(s.clone());
        }
        let s: Arc<str> = Arc::from(self.symbol(r)?);
        let mut c = self.cache.write();
        if c.len() < SYMBOL_CACHE_CAP {
            c.insert(r, s.clone());
        }
        Ok(s)
    }

    /// Decodes series `id`: its labels, and its chunk metas into `chunks`.
    pub(crate) fn series(&self, id: u64, chunks: &mut Vec<ChunkMeta>) -> Result<Labels> {
        let mut out = None;
        self.for_each_series(&[id], |_, labels, metas| {
            chunks.clear();
            chunks.extend_from_slice(metas);
            out = Some(labels);
            Ok::<_, Error>(())
        })?;
        out.ok_or_else(|| Error::InvalidSeriesId {
            path: self.path.clone(),
            id,
        })
    }

    /// The absolute offset of series `id`'s entry in the index file.
    fn series_at(&self, id: u64) -> Result<usize> {
        let span = self.series.end - self.series.start;
        ensure!(
            id < span as u64,
            InvalidSeriesIdSnafu {
                path: &self.path,
                id
            }
        );
        Ok(self.series.start + id as usize)
    }

    /// Decodes the series `ids` (sorted ascending, as postings are) and
    /// calls `f` with each id, its labels and its chunk metas, in order. A
    /// remote index reads every entry not cached with one batch of ranged
    /// reads first.
    pub(crate) fn for_each_series<E: From<Error>>(
        &self,
        ids: &[u64],
        mut f: impl FnMut(u64, Labels, &[ChunkMeta]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut metas = Vec::new();
        match &self.body {
            Body::Local => {
                for &id in ids {
                    let at = self.series_at(id)?;
                    let (body, body_at) = read_entry(&self.data, at, self.series.end)
                        .map_err(|e| e.into_error(&self.path, "series"))?;
                    let l = self.decode_series(body, body_at, &mut metas)?;
                    f(id, l, &metas)?;
                }
            }
            Body::Remote(remote) => {
                let mut ats = Vec::with_capacity(ids.len());
                for &id in ids {
                    ats.push(self.series_at(id)?);
                }
                let mut sorted = ats.clone();
                sorted.sort_unstable();
                sorted.dedup();
                let wants: Vec<Want> = sorted
                    .iter()
                    .enumerate()
                    .map(|(i, &at)| {
                        let limit = sorted.get(i + 1).copied().unwrap_or(self.series.end);
                        Want {
                            at,
                            first_end: limit.min(at.saturating_add(SERIES_ESTIMATE)),
                            limit,
                        }
                    })
                    .collect();
                let bodies = self.remote_entries(remote.as_ref(), &wants, "series")?;
                for (&id, at) in ids.iter().zip(ats) {
                    let found = sorted.binary_search(&at).ok().and_then(|i| bodies.get(i));
                    let Some((body, body_at)) = found else {
                        return Err(Error::InvalidSeriesId {
                            path: remote.name().to_path_buf(),
                            id,
                        }
                        .into());
                    };
                    let l = self.decode_series(body, *body_at, &mut metas)?;
                    f(id, l, &metas)?;
                }
            }
        }
        Ok(())
    }

    /// Reads the entries `wants` (sorted by `at`, not overlapping) of the
    /// remote index: cached bodies, the rest with one batch of ranged
    /// reads (a second for entries longer than their first read); checks
    /// each CRC and caches the bodies. Returns each body with the absolute
    /// offset of its first byte.
    fn remote_entries(
        &self,
        remote: &dyn RemoteIndex,
        wants: &[Want],
        section: &'static str,
    ) -> Result<Vec<(Arc<[u8]>, u64)>> {
        let path = remote.name();
        let corrupt = |offset: usize, reason| Error::Corrupt {
            path: path.to_path_buf(),
            section,
            offset: offset as u64,
            reason,
        };
        let mut out: Vec<Option<(Arc<[u8]>, u64)>> = vec![None; wants.len()];
        let mut miss = Vec::new();
        for (i, w) in wants.iter().enumerate() {
            if w.at >= w.limit || w.first_end > w.limit {
                return Err(corrupt(w.at, "entry offset out of range"));
            }
            match remote.cached(w.at as u64) {
                Some(b) => {
                    let body_at = w.at + uvarint_len(b.len() as u64);
                    out[i] = Some((b, body_at as u64));
                }
                None => miss.push(i),
            }
        }
        let fetch = |ranges: Vec<Range<u64>>| -> Result<Vec<bytes::Bytes>> {
            let n = ranges.len();
            let got = remote.read(&ranges).map_err(|e| Error::Fetch {
                path: path.to_path_buf(),
                source: Box::new(e),
            })?;
            if got.len() != n {
                return Err(corrupt(
                    0,
                    "ranged reads answered the wrong number of ranges",
                ));
            }
            Ok(got)
        };
        let mut again = Vec::new();
        if !miss.is_empty() {
            let ranges = miss
                .iter()
                .map(|&i| wants[i].at as u64..wants[i].first_end as u64)
                .collect();
            let got = fetch(ranges)?;
            for (&i, buf) in miss.iter().zip(got) {
                let w = &wants[i];
                let mut d = Dec::new(&buf, w.at as u64);
                let n = d.uvarint().map_err(|e| e.into_error(path, section))?;
                let total = (d.offset() - w.at as u64)
                    .saturating_add(n)
                    .saturating_add(4);
                if total > (w.limit - w.at) as u64 {
                    return Err(corrupt(w.at, "entry extends past its bounds"));
                }
                if total > buf.len() as u64 {
                    again.push((i, total));
                    continue;
                }
                out[i] = Some(self.checked_body(remote, w.at, &buf, section)?);
            }
        }
        if !again.is_empty() {
            let ranges = again
                .iter()
                .map(|&(i, total)| wants[i].at as u64..wants[i].at as u64 + total)
                .collect();
            let got = fetch(ranges)?;
            for (&(i, _), buf) in again.iter().zip(got) {
                out[i] = Some(self.checked_body(remote, wants[i].at, &buf, section)?);
            }
        }
        out.into_iter()
            .zip(wants)
            .map(|(o, w)| o.ok_or_else(|| corrupt(w.at, "entry not read")))
            .collect()
    }

    /// Checks the entry at the start of `buf` (at absolute offset `at`)
    /// and caches its body.
    fn checked_body(
        &self,
        remote: &dyn RemoteIndex,
        at: usize,
        buf: &[u8],
        section: &'static str,
    ) -> Result<(Arc<[u8]>, u64)> {
        let (body, body_at) =
            read_entry_in(buf, at as u64).map_err(|e| e.into_error(remote.name(), section))?;
        let body: Arc<[u8]> = Arc::from(body);
        remote.cache(at as u64, body.clone());
        Ok((body, body_at))
    }

    /// Decodes a series entry's body (at absolute offset `body_at`): its
    /// labels, and its chunk metas into `chunks`.
    fn decode_series(
        &self,
        body: &[u8],
        body_at: u64,
        chunks: &mut Vec<ChunkMeta>,
    ) -> Result<Labels> {
        chunks.clear();
        let e = |e: DecErr| e.into_error(self.entries_path(), "series");
        let mut d = Dec::new(body, body_at);
        let nl = d.len(2).map_err(e)?;
        let mut labels = Vec::with_capacity(nl);
        let mut prev_name: Option<u32> = None;
        for _ in 0..nl {
            let at = d.clone();
            let nr = d.uvarint().map_err(e)?;
            let vr = d.uvarint().map_err(e)?;
            let (Ok(nr), Ok(vr)) = (u32::try_from(nr), u32::try_from(vr)) else {
                return Err(e(at.err("symbol reference out of range")));
            };
            if prev_name.is_some_and(|p| p >= nr) {
                return Err(e(at.err("label names not strictly sorted")));
            }
            prev_name = Some(nr);
            let value = self.symbol_arc(vr)?;
            if value.is_empty() {
                return Err(e(at.err("empty label value")));
            }
            labels.push(Label {
                name: self.symbol_arc(nr)?,
                value,
            });
        }
        let nc = d.len(3).map_err(e)?;
        chunks.reserve(nc);
        let mut prev: Option<ChunkMeta> = None;
        for _ in 0..nc {
            let at = d.clone();
            let c = match prev {
                None => {
                    let mint = d.varint().map_err(e)?;
                    let dt = d.uvarint().map_err(e)?;
                    let r = d.uvarint().map_err(e)?;
                    ChunkMeta {
                        mint,
                        maxt: mint.wrapping_add(dt as i64),
                        chunk_ref: r,
                    }
                }
                Some(p) => {
                    let mint = p.maxt.wrapping_add(d.varint().map_err(e)?);
                    let dt = d.uvarint().map_err(e)?;
                    let dr = d.varint().map_err(e)?;
                    ChunkMeta {
                        mint,
                        maxt: mint.wrapping_add(dt as i64),
                        chunk_ref: p.chunk_ref.wrapping_add(dr as u64),
                    }
                }
            };
            if c.maxt < c.mint || prev.is_some_and(|p| c.mint < p.mint) {
                return Err(e(at.err("chunk time ranges invalid or unsorted")));
            }
            chunks.push(c);
            prev = Some(c);
        }
        if !d.is_empty() {
            return Err(e(d.err("trailing bytes in series entry")));
        }
        // Increasing references mean increasing names only if every
        // reference points at the start of a symbol; check the strings.
        if !Labels::is_sorted_unique(&labels) {
            return Err(e(DecErr {
                offset: body_at,
                reason: "label names not strictly sorted",
            }));
        }
        Ok(Labels::from_sorted_unchecked(labels))
    }

    /// Checks a postings offset (absolute, from the label index).
    fn postings_off(&self, at: u64) -> Result<usize> {
        match usize::try_from(at) {
            Ok(at) if at >= self.postings.start && at < self.postings.end => Ok(at),
            _ => Err(DecErr {
                offset: at,
                reason: "postings offset out of range",
            }
            .into_error(self.entries_path(), "postings")),
        }
    }

    /// Decodes the postings list at absolute offset `at`.
    fn postings_at(&self, at: u64) -> Result<Vec<u64>> {
        let at = self.postings_off(at)?;
        let (body, body_at) = read_entry(&self.data, at, self.postings.end)
            .map_err(|e| e.into_error(&self.path, "postings"))?;
        self.decode_postings(body, body_at)
    }

    /// The postings lists at absolute offsets `offs`, each with the offset
    /// where it must end (the next list's start), read remotely in one
    /// batch.
    fn remote_postings(
        &self,
        remote: &dyn RemoteIndex,
        offs: &[(usize, usize)],
    ) -> Result<Vec<Vec<u64>>> {
        let mut sorted: Vec<(usize, usize)> = offs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let wants: Vec<Want> = sorted
            .iter()
            .enumerate()
            .map(|(i, &(at, end))| {
                let next = sorted.get(i + 1).map_or(usize::MAX, |n| n.0);
                let limit = end.min(next);
                Want {
                    at,
                    first_end: limit,
                    limit,
                }
            })
            .collect();
        let bodies = self.remote_entries(remote, &wants, "postings")?;
        let mut out = Vec::with_capacity(offs.len());
        for o in offs {
            let i = sorted
                .binary_search(o)
                .map_err(|_| DecErr {
                    offset: o.0 as u64,
                    reason: "postings list not read",
                })
                .map_err(|e| e.into_error(remote.name(), "postings"))?;
            let Some((body, body_at)) = bodies.get(i) else {
                return Err(DecErr {
                    offset: o.0 as u64,
                    reason: "postings list not read",
                }
                .into_error(remote.name(), "postings"));
            };
            out.push(self.decode_postings(body, *body_at)?);
        }
        Ok(out)
    }

    /// Where the postings list of value row `p` (a position in `data`)
    /// starts and must end (the next row's list, or the section's end).
    fn row_postings(&self, p: usize) -> Result<(usize, usize)> {
        let (_, at) = self.row(p)?;
        let at = self.postings_off(at)?;
        let end = if p + VALUE_ENTRY_LEN < self.rows.end {
            self.postings_off(self.row(p + VALUE_ENTRY_LEN)?.1)?
        } else {
            self.postings.end
        };
        Ok((at, end))
    }

    /// Decodes a postings list body (at absolute offset `body_at`).
    fn decode_postings(&self, body: &[u8], body_at: u64) -> Result<Vec<u64>> {
        let e = |e: DecErr| e.into_error(self.entries_path(), "postings");
        let mut d = Dec::new(body, body_at);
        let n = d.len(1).map_err(e)?;
        let span = (self.series.end - self.series.start) as u64;
        let mut out = Vec::with_capacity(n);
        let mut prev = 0u64;
        for i in 0..n {
            let at = d.clone();
            let v = d.uvarint().map_err(e)?;
            let id = if i == 0 {
                v
            } else if v == 0 {
                return Err(e(at.err("postings not strictly increasing")));
            } else {
                prev.saturating_add(v)
            };
            if id >= span {
                return Err(e(at.err("series id beyond the series section")));
            }
            out.push(id);
            prev = id;
        }
        if !d.is_empty() {
            return Err(e(d.err("trailing bytes in postings list")));
        }
        Ok(out)
    }

    /// Every series id, sorted.
    pub(crate) fn all_postings(&self) -> Result<Vec<u64>> {
        match &self.body {
            Body::Local => self.postings_at(self.postings.start as u64),
            Body::Remote(remote) => {
                let end = if self.rows.start < self.rows.end {
                    self.postings_off(self.row(self.rows.start)?.1)?
                } else {
                    self.postings.end
                };
                let mut v = self.remote_postings(remote.as_ref(), &[(self.postings.start, end)])?;
                Ok(v.pop().unwrap_or_default())
            }
        }
    }

    /// Where series entries and postings lists come from (for errors):
    /// the index file, or the index object in the bucket.
    fn entries_path(&self) -> &Path {
        match &self.body {
            Body::Local => &self.path,
            Body::Remote(r) => r.name(),
        }
    }

    /// Label names, sorted.
    pub(crate) fn label_names(&self) -> Vec<String> {
        self.names.iter().map(|n| n.name.to_string()).collect()
    }

    fn name(&self, name: &str) -> Option<&NameEntry> {
        self.names
            .binary_search_by(|n| (*n.name).cmp(name))
            .ok()
            .and_then(|i| self.names.get(i))
    }

    /// Value entry `i` of `n`: (value symbol ref, postings offset).
    fn value_entry(&self, n: &NameEntry, i: usize) -> Result<(u32, u64)> {
        self.row(n.values_off + i * VALUE_ENTRY_LEN)
    }

    /// The value row at position `at` of `data`.
    fn row(&self, at: usize) -> Result<(u32, u64)> {
        let e = |e: DecErr| e.into_error(&self.path, "label index");
        let b = self.data.get(at..at + VALUE_ENTRY_LEN).unwrap_or_default();
        let mut d = Dec::new(b, at as u64);
        Ok((d.be_u32().map_err(e)?, d.be_u64().map_err(e)?))
    }

    /// Index of the first value of `n` that is `>= v`.
    fn lower_bound(&self, n: &NameEntry, v: &str) -> Result<usize> {
        let (mut lo, mut hi) = (0usize, n.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (r, _) = self.value_entry(n, mid)?;
            if self.symbol(r)? < v {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Calls `f` with each value of `name` that is `>= from`, in order,
    /// until it returns `false`.
    pub(crate) fn for_each_value(
        &self,
        name: &str,
        from: &str,
        f: &mut dyn FnMut(&str) -> bool,
    ) -> Result<()> {
        let Some(n) = self.name(name) else {
            return Ok(());
        };
        for i in self.lower_bound(n, from)?..n.count {
            let (r, _) = self.value_entry(n, i)?;
            if !f(self.symbol(r)?) {
                break;
            }
        }
        Ok(())
    }

    /// The value row of `name` = `value`: its position in `data`.
    fn find_row(&self, name: &str, value: &str) -> Result<Option<usize>> {
        let Some(n) = self.name(name) else {
            return Ok(None);
        };
        let i = self.lower_bound(n, value)?;
        if i >= n.count {
            return Ok(None);
        }
        let (r, _) = self.value_entry(n, i)?;
        if self.symbol(r)? != value {
            return Ok(None);
        }
        Ok(Some(n.values_off + i * VALUE_ENTRY_LEN))
    }

    /// The series ids with `name` = `value`, sorted.
    pub(crate) fn postings(&self, name: &str, value: &str) -> Result<Vec<u64>> {
        let mut v = self.postings_many(name, &[value])?;
        Ok(v.pop().unwrap_or_default())
    }

    /// The series ids of each `name` = `values[i]`, sorted, in the order
    /// of `values` (empty for a pair not in the index). A remote index
    /// reads the lists not cached with one batch of ranged reads.
    pub(crate) fn postings_many(&self, name: &str, values: &[&str]) -> Result<Vec<Vec<u64>>> {
        let mut rows = Vec::with_capacity(values.len());
        for v in values {
            rows.push(self.find_row(name, v)?);
        }
        match &self.body {
            Body::Local => rows
                .into_iter()
                .map(|r| match r {
                    Some(p) => self.postings_at(self.row(p)?.1),
                    None => Ok(Vec::new()),
                })
                .collect(),
            Body::Remote(remote) => {
                let mut offs = Vec::new();
                for p in rows.iter().flatten() {
                    offs.push(self.row_postings(*p)?);
                }
                let mut lists = self.remote_postings(remote.as_ref(), &offs)?.into_iter();
                Ok(rows
                    .iter()
                    .map(|r| match r {
                        Some(_) => lists.next().unwrap_or_default(),
                        None => Vec::new(),
                    })
                    .collect())
            }
        }
    }
}
