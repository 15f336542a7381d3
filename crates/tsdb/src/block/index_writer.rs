//! Writes a block's `index` file (format in `docs/format/index.md`).
//!
//! The writer gets every series at once (the block writer keeps label sets
//! and chunk metas in memory while chunks stream to disk) because symbol
//! references are byte offsets into the symbol table, which is only known
//! once all strings are known. Sections are streamed through a buffered
//! writer in file order: header, symbols, series, postings, label index,
//! TOC. Each series entry and postings list carries its own CRC-32C so the
//! reader can verify exactly what it decodes; the symbol table, label index
//! and TOC each have one CRC-32C checked at open.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use snafu::{ResultExt, ensure};
use stratus_model::Labels;

use super::ChunkMeta;
use super::encoding::{put_be32, put_be64, put_uvarint, put_varint};
use super::error::{CreateFileSnafu, FormatLimitSnafu, Result, SyncSnafu, WriteSnafu};

/// Magic number at the start of the index file ("STIX").
pub const INDEX_MAGIC: u32 = 0x5354_4958;
/// Index format version.
pub const INDEX_VERSION: u8 = 1;
/// Bytes of the header.
pub(crate) const HEADER_LEN: usize = 8;
/// Bytes of the table of contents at the end of the file.
pub(crate) const TOC_LEN: usize = 4 * 16 + 4;

/// Counts bytes and keeps a running writer.
struct Out<'a> {
    path: &'a Path,
    w: BufWriter<File>,
    pos: u64,
}

impl Out<'_> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.w
            .write_all(b)
            .context(WriteSnafu { path: self.path })?;
        self.pos += b.len() as u64;
        Ok(())
    }
}

/// Writes an entry `uvarint(len(body)) | body | CRC-32C(body)`.
fn put_entry(out: &mut Out<'_>, scratch: &mut Vec<u8>, body: &[u8]) -> Result<()> {
    scratch.clear();
    put_uvarint(scratch, body.len() as u64);
    out.put(scratch)?;
    out.put(body)?;
    out.put(&crc32c::crc32c(body).to_be_bytes())
}

/// Encodes a postings list body: `uvarint(n) | uvarint(first) | uvarint(delta)...`.
fn encode_postings(buf: &mut Vec<u8>, ids: impl ExactSizeIterator<Item = u64>) {
    buf.clear();
    put_uvarint(buf, ids.len() as u64);
    let mut prev = 0u64;
    for (i, id) in ids.enumerate() {
        put_uvarint(buf, if i == 0 { id } else { id - prev });
        prev = id;
    }
}

/// Writes the index for `series` (sorted by labels, each with chunk metas
/// sorted by `mint`) to `path`, fsyncs it and returns its size.
pub(crate) fn write_index(path: &Path, series: &[(Labels, Vec<ChunkMeta>)]) -> Result<u64> {
    ensure!(
        series.len() <= u32::MAX as usize,
        FormatLimitSnafu {
            path,
            reason: "more than 2^32 series"
        }
    );
    // Postings by name, then value; values of the ordinals of the series.
    let mut postings: BTreeMap<&str, BTreeMap<&str, Vec<u32>>> = BTreeMap::new();
    let mut symbols: BTreeSet<&str> = BTreeSet::new();
    for (i, (labels, _)) in series.iter().enumerate() {
        for l in labels {
            symbols.insert(&l.name);
            symbols.insert(&l.value);
            postings
                .entry(&l.name)
                .or_default()
                .entry(&l.value)
                .or_default()
                .push(i as u32);
        }
    }

    let f = File::create_new(path).context(CreateFileSnafu { path })?;
    let mut out = Out {
        path,
        w: BufWriter::with_capacity(1 << 16, f),
        pos: 0,
    };
    let mut hdr = INDEX_MAGIC.to_be_bytes().to_vec();
    hdr.extend_from_slice(&[INDEX_VERSION, 0, 0, 0]);
    out.put(&hdr)?;

    // Symbols: u32 count | (uvarint len | bytes)* | crc.
    let sym_off = out.pos;
    let mut refs: HashMap<&str, u32> = HashMap::with_capacity(symbols.len());
    let mut buf = Vec::with_capacity(1 << 16);
    ensure!(
        symbols.len() <= u32::MAX as usize,
        FormatLimitSnafu {
            path,
            reason: "more than 2^32 symbols"
        }
    );
    put_be32(&mut buf, symbols.len() as u32);
    let mut rel = 4u64;
    let mut crc = 0u32;
    for s in &symbols {
        ensure!(
            rel <= u64::from(u32::MAX),
            FormatLimitSnafu {
                path,
                reason: "symbol table larger than 4 GiB"
            }
        );
        refs.insert(s, rel as u32);
        let before = buf.len();
        put_uvarint(&mut buf, s.len() as u64);
        buf.extend_from_slice(s.as_bytes());
        rel += (buf.len() - before) as u64;
        if buf.len() >= 1 << 16 {
            crc = crc32c::crc32c_append(crc, &buf);
            out.put(&buf)?;
            buf.clear();
        }
    }
    crc = crc32c::crc32c_append(crc, &buf);
    out.put(&buf)?;
    out.put(&crc.to_be_bytes())?;
    let sym_len = out.pos - sym_off;

    // Series: entries; a series' id is its entry's offset in the section.
    let series_off = out.pos;
    let mut ids: Vec<u64> = Vec::with_capacity(series.len());
    let mut scratch = Vec::new();
    for (labels, chunks) in series {
        ids.push(out.pos - series_off);
        buf.clear();
        put_uvarint(&mut buf, labels.len() as u64);
        for l in labels {
            // Every label string was inserted into `refs` above.
            put_uvarint(
                &mut buf,
                u64::from(refs.get(&*l.name).copied().unwrap_or(0)),
            );
            put_uvarint(
                &mut buf,
                u64::from(refs.get(&*l.value).copied().unwrap_or(0)),
            );
        }
        put_uvarint(&mut buf, chunks.len() as u64);
        let mut prev: Option<&ChunkMeta> = None;
        for c in chunks {
            match prev {
                None => {
                    put_varint(&mut buf, c.mint);
                    put_uvarint(&mut buf, c.maxt.wrapping_sub(c.mint) as u64);
                    put_uvarint(&mut buf, c.chunk_ref);
                }
                Some(p) => {
                    put_varint(&mut buf, c.mint.wrapping_sub(p.maxt));
                    put_uvarint(&mut buf, c.maxt.wrapping_sub(c.mint) as u64);
                    put_varint(&mut buf, c.chunk_ref.wrapping_sub(p.chunk_ref) as i64);
                }
            }
            prev = Some(c);
        }
        put_entry(&mut out, &mut scratch, &buf)?;
    }
    let series_len = out.pos - series_off;

    // Postings: the list of all series first, then one per label pair.
    let postings_off = out.pos;
    encode_postings(&mut buf, ids.iter().copied());
    put_entry(&mut out, &mut scratch, &buf)?;
    let mut label_table: Vec<(u32, Vec<(u32, u64)>)> = Vec::with_capacity(postings.len());
    for (name, values) in &postings {
        let mut entries = Vec::with_capacity(values.len());
        for (value, ords) in values {
            let at = out.pos;
            encode_postings(&mut buf, ords.iter().map(|&o| ids[o as usize]));
            put_entry(&mut out, &mut scratch, &buf)?;
            entries.push((refs.get(value).copied().unwrap_or(0), at));
        }
        label_table.push((refs.get(name).copied().unwrap_or(0), entries));
    }
    let postings_len = out.pos - postings_off;

    // Label index: u32 n | n x (name ref, value count, values offset) |
    // value entries (value ref, postings offset) | crc.
    let labels_off = out.pos;
    buf.clear();
    put_be32(&mut buf, label_table.len() as u32);
    let mut values_at = labels_off + 4 + 16 * label_table.len() as u64;
    for (name_ref, entries) in &label_table {
        put_be32(&mut buf, *name_ref);
        put_be32(&mut buf, entries.len() as u32);
        put_be64(&mut buf, values_at);
        values_at += 12 * entries.len() as u64;
    }
    for (_, entries) in &label_table {
        for &(value_ref, at) in entries {
            put_be32(&mut buf, value_ref);
            put_be64(&mut buf, at);
        }
    }
    let crc = crc32c::crc32c(&buf);
    put_be32(&mut buf, crc);
    out.put(&buf)?;
    let labels_len = out.pos - labels_off;

    // TOC.
    buf.clear();
    for (o, l) in [
        (sym_off, sym_len),
        (series_off, series_len),
        (postings_off, postings_len),
        (labels_off, labels_len),
    ] {
        put_be64(&mut buf, o);
        put_be64(&mut buf, l);
    }
    let crc = crc32c::crc32c(&buf);
    put_be32(&mut buf, crc);
    out.put(&buf)?;

    let f = out
        .w
        .into_inner()
        .map_err(|e| e.into_error())
        .context(WriteSnafu { path })?;
    f.sync_all().context(SyncSnafu { path })?;
    Ok(out.pos)
}
