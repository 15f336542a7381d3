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
use super::error::{
    BadMagicSnafu, BadVersionSnafu, ChecksumSnafu, Error, InvalidSeriesIdSnafu, Result,
};
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

/// A validated, lazily decoded index.
#[derive(Debug)]
pub(crate) struct IndexReader {
    path: PathBuf,
    data: Backing,
    /// Whole symbol section (refs are relative to its start), without CRC.
    symbols: Range<usize>,
    series: Range<usize>,
    postings: Range<usize>,
    names: Vec<NameEntry>,
    cache: RwLock<HashMap<u32, Arc<str>>>,
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
    let mut d = Dec::new(slice, at as u64);
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
        let corrupt = |section, offset: usize, reason| Error::Corrupt {
            path: path.clone(),
            section,
            offset: offset as u64,
            reason,
        };
        if len < HEADER_LEN + TOC_LEN {
            return Err(corrupt("header", len, "file too short"));
        }
        let magic = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        ensure!(
            magic == INDEX_MAGIC,
            BadMagicSnafu {
                path: &path,
                found: magic,
                expected: INDEX_MAGIC
            }
        );
        ensure!(
            data[4..8] == [INDEX_VERSION, 0, 0, 0],
            BadVersionSnafu {
                path: &path,
                version: u32::from_be_bytes([data[4], data[5], data[6], data[7]])
            }
        );

        // TOC.
        let toc_at = len - TOC_LEN;
        check_section_crc(&path, &data, &(toc_at..len), "TOC")?;
        let mut d = Dec::new(&data[toc_at..len - 4], toc_at as u64);
        let mut sections = [0usize..0, 0..0, 0..0, 0..0];
        let mut expect = HEADER_LEN;
        for s in &mut sections {
            let off = d.be_u64().map_err(|e| e.into_error(&path, "TOC"))?;
            let l = d.be_u64().map_err(|e| e.into_error(&path, "TOC"))?;
            if off != expect as u64 || l > (toc_at - expect) as u64 {
                return Err(corrupt("TOC", toc_at, "sections do not tile the file"));
            }
            *s = expect..expect + l as usize;
            expect = s.end;
        }
        if expect != toc_at {
            return Err(corrupt("TOC", toc_at, "sections do not tile the file"));
        }
        let [symbols, series, postings, labels] = sections;

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

        let mut r = Self {
            path: path.clone(),
            data,
            symbols: sym_body,
            series,
            postings,
            names: Vec::new(),
            cache: RwLock::new(HashMap::new()),
        };

        // Label index: geometry, names.
        check_section_crc(&path, &r.data, &labels, "label index")?;
        let body = labels.start..labels.end - 4;
        let mut d = Dec::new(&r.data[body.clone()], body.start as u64);
        let e = |e: DecErr| e.into_error(&path, "label index");
        let n = d.be_u32().map_err(e)? as usize;
        if n.saturating_mul(16) > d.remaining() {
            return Err(corrupt(
                "label index",
                body.start,
                "name table exceeds section",
            ));
        }
        let mut names = Vec::with_capacity(n);
        let mut expect = body.start + 4 + 16 * n;
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
            if values_off != expect as u64
                || count.saturating_mul(VALUE_ENTRY_LEN) > body.end - expect
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
        if expect != body.end {
            return Err(corrupt("label index", expect, "trailing bytes"));
        }
        r.names = names;
        Ok(r)
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
        chunks.clear();
        let span = self.series.end - self.series.start;
        ensure!(
            id < span as u64,
            InvalidSeriesIdSnafu {
                path: &self.path,
                id
            }
        );
        let at = self.series.start + id as usize;
        let (body, body_at) = read_entry(&self.data, at, self.series.end)
            .map_err(|e| e.into_error(&self.path, "series"))?;
        let e = |e: DecErr| e.into_error(&self.path, "series");
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

    /// Decodes the postings list at absolute offset `at`.
    fn postings_at(&self, at: u64) -> Result<Vec<u64>> {
        let e = |e: DecErr| e.into_error(&self.path, "postings");
        let Ok(at) = usize::try_from(at) else {
            return Err(e(DecErr {
                offset: at,
                reason: "postings offset out of range",
            }));
        };
        if at < self.postings.start || at >= self.postings.end {
            return Err(e(DecErr {
                offset: at as u64,
                reason: "postings offset out of range",
            }));
        }
        let (body, body_at) = read_entry(&self.data, at, self.postings.end)
            .map_err(|e| e.into_error(&self.path, "postings"))?;
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
        self.postings_at(self.postings.start as u64)
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
        let at = n.values_off + i * VALUE_ENTRY_LEN;
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

    /// The series ids with `name` = `value`, sorted.
    pub(crate) fn postings(&self, name: &str, value: &str) -> Result<Vec<u64>> {
        let Some(n) = self.name(name) else {
            return Ok(Vec::new());
        };
        let i = self.lower_bound(n, value)?;
        if i >= n.count {
            return Ok(Vec::new());
        }
        let (r, at) = self.value_entry(n, i)?;
        if self.symbol(r)? != value {
            return Ok(Vec::new());
        }
        self.postings_at(at)
    }
}
