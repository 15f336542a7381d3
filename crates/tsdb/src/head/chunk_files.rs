//! Head chunk files: sealed head chunks kept out of the process heap.
//!
//! A float chunk goes to the append-only segment files under
//! `<db dir>/chunks_head/` (format: `docs/format/head-chunks.md`) as it
//! is sealed ([`ChunkFiles::append`]), and the series keeps a
//! [`FileChunk`] (segment handle, offset, length) instead of the bytes.
//! The maintenance pass ([`Head::compact_chunks`](super::Head)) writes the
//! compact chunks it encodes, and the other sealed chunks it finds in
//! memory (histograms, chunks with start timestamps), the same way.
//! Readers fetch the bytes with a positional read (`pread`) and check the
//! record's CRC32C: the bytes live in the page cache, not in the resident
//! heap, and there is no `unsafe` memory map.
//!
//! Records appended one by one gather in the current segment's tail
//! buffer, which is written with one `pwrite` when it reaches
//! [`TAIL_FLUSH_BYTES`] and on every maintenance tick
//! ([`ChunkFiles::flush`]). A record still in the tail is read from it.
//! Sealing a chunk thus costs a copy, not a system call, and sealed
//! chunks never pile up in the heap between maintenance passes (after a
//! backfill, or a WAL replay, they would otherwise all be there at once).
//!
//! Lifetimes: a [`Segment`] is shared (`Arc`) by every chunk stored in it
//! and by the writer while it is the current segment; when the last
//! handle drops (its chunks cut into a block, superseded by a later
//! re-encode, or the series removed) the file is deleted. A reader that
//! still holds a handle keeps the open descriptor, so an unlinked file
//! stays readable for it.
//!
//! The files are not a durability mechanism: the WAL is. On open, every
//! leftover segment is deleted (WAL replay rebuilds the head, and the next
//! maintenance pass writes the files again).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use snafu::ResultExt;
use tracing::warn;

use crate::error::{HeadChunkCorruptSnafu, HeadChunkReadSnafu, IoSnafu, Result};

/// First bytes of a segment file.
pub(crate) const MAGIC: [u8; 4] = *b"SHCK";
/// Format version (byte 4 of the header).
pub(crate) const VERSION: u8 = 1;
/// Segment header: magic, version, three zero bytes.
pub(crate) const HEADER_LEN: u64 = 8;
/// Record header: series id (u64), mint (i64), maxt (i64), encoding (u8),
/// data length (u32), all big-endian.
pub(crate) const RECORD_HEAD: usize = 29;
/// CRC32C (Castagnoli) after the data, over header and data.
const CRC_LEN: usize = 4;
/// Default segment size before the writer starts a new file.
pub(crate) const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Largest segment size accepted (offsets are 32-bit).
pub(crate) const MAX_SEGMENT_BYTES: u64 = 1 << 30;
/// A segment's tail buffer is written out when it holds this many bytes.
pub(crate) const TAIL_FLUSH_BYTES: usize = 64 << 10;
/// While writes fail, a tail may grow to this many bytes (its records
/// stay readable); past it, [`ChunkFiles::append`] refuses records and
/// sealed chunks stay in the heap until the files work again.
const TAIL_MAX_BYTES: usize = 16 * TAIL_FLUSH_BYTES;

/// Bytes a chunk of `len` data bytes takes in a segment.
pub(crate) fn record_len(len: usize) -> usize {
    RECORD_HEAD + len + CRC_LEN
}

/// One segment file, open for reading (and, while current, writing).
/// Deleted when the last handle drops.
#[derive(Debug)]
pub(crate) struct Segment {
    path: PathBuf,
    file: File,
    /// Records appended but not yet written; its end is the segment's
    /// size, where the next record goes.
    tail: Mutex<Tail>,
    /// The sum over all live segments of the directory, shared with
    /// [`ChunkFiles`].
    total: Arc<AtomicU64>,
}

impl Drop for Segment {
    fn drop(&mut self) {
        self.total
            .fetch_sub(self.tail.get_mut().end(), Ordering::Relaxed);
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(path = %self.path.display(), error = %e, "could not delete head chunk file");
            }
        }
    }
}

/// The unwritten end of a segment: `buf` goes at file offset `base`.
#[derive(Debug, Default)]
struct Tail {
    base: u64,
    buf: Vec<u8>,
}

impl Tail {
    /// The segment's size (header, written and waiting records).
    fn end(&self) -> u64 {
        self.base + self.buf.len() as u64
    }
}

impl Segment {
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the tail buffer out (one `pwrite`). On failure the records
    /// stay in the buffer, readable, for the next try.
    fn flush_tail(&self, t: &mut Tail) -> Result<()> {
        if t.buf.is_empty() {
            return Ok(());
        }
        crate::failpoint::hit("head.chunk_files.write")?;
        self.file
            .write_all_at(&t.buf, t.base)
            .context(IoSnafu { path: &self.path })?;
        t.base += t.buf.len() as u64;
        t.buf.clear();
        Ok(())
    }

    /// Bytes `start..end` with one positional read, if all of them are
    /// written (`None` when some are still in the tail). A file shorter
    /// than `end` gives the bytes there are (the records past its end
    /// then fail their check).
    fn read_written(&self, start: u64, end: u64) -> Option<std::io::Result<Vec<u8>>> {
        if end > self.tail.lock().base {
            return None;
        }
        let mut buf = vec![0u8; (end - start) as usize];
        let mut got = 0;
        while got < buf.len() {
            match self.file.read_at(&mut buf[got..], start + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(e)),
            }
        }
        buf.truncate(got);
        Some(Ok(buf))
    }

    /// The record at `offset`, `len` bytes long: from the tail buffer if
    /// it is still there, else with one positional read.
    fn read_record(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        {
            let t = self.tail.lock();
            if offset >= t.base {
                let at = (offset - t.base) as usize;
                return match t.buf.get(at..at + len) {
                    Some(b) => Ok(b.to_vec()),
                    None => Err(std::io::ErrorKind::UnexpectedEof.into()),
                };
            }
        }
        // Below `base`: written before `base` moved past it.
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

/// Where a spilled chunk's record is: segment, record offset, data length.
/// 16 bytes (kept small: one per sealed chunk per series).
#[derive(Debug, Clone)]
pub(crate) struct FileChunk {
    pub(crate) seg: Arc<Segment>,
    pub(crate) off: u32,
    pub(crate) len: u32,
}

impl FileChunk {
    /// Whether both name the same record.
    pub(crate) fn same(&self, o: &FileChunk) -> bool {
        Arc::ptr_eq(&self.seg, &o.seg) && self.off == o.off
    }

    /// Reads the chunk's data with one positional read and checks the
    /// record (CRC32C, and that its header matches what the head expects).
    pub(crate) fn read(&self, mint: i64, maxt: i64, encoding: u8) -> Result<Arc<[u8]>> {
        let offset = u64::from(self.off);
        let buf = self
            .seg
            .read_record(offset, record_len(self.len as usize))
            .context(HeadChunkReadSnafu {
                path: &self.seg.path,
                offset,
            })?;
        self.check(&buf, mint, maxt, encoding)
    }

    /// Checks `rec`, this chunk's whole record as read (CRC32C, and that
    /// its header matches what the head expects), and returns its data.
    fn check(&self, rec: &[u8], mint: i64, maxt: i64, encoding: u8) -> Result<Arc<[u8]>> {
        let path = &self.seg.path;
        let offset = u64::from(self.off);
        let corrupt = |reason: String| {
            HeadChunkCorruptSnafu {
                path,
                offset,
                reason,
            }
            .fail()
        };
        let body = RECORD_HEAD + self.len as usize;
        if rec.len() != body + CRC_LEN {
            return corrupt(format!(
                "record of {} bytes, expected {}",
                rec.len(),
                body + CRC_LEN
            ));
        }
        let want = u32::from_be_bytes(be(&rec[body..]));
        let got = crc32c::crc32c(&rec[..body]);
        if want != got {
            return corrupt(format!(
                "checksum mismatch (stored {want:#010x}, computed {got:#010x})"
            ));
        }
        let (m, x) = (
            i64::from_be_bytes(be(&rec[8..])),
            i64::from_be_bytes(be(&rec[16..])),
        );
        let (e, l) = (rec[24], u32::from_be_bytes(be(&rec[25..])));
        if (m, x, e, l) != (mint, maxt, encoding, self.len) {
            return corrupt(format!(
                "record header ({m}, {x}, encoding {e}, {l} bytes) does not match the head's \
                 chunk ({mint}, {maxt}, encoding {encoding}, {} bytes)",
                self.len
            ));
        }
        Ok(Arc::from(&rec[RECORD_HEAD..body]))
    }
}

/// A chunk to read in [`read_many`]: its record, and what the head
/// expects in the record's header (mint, maxt, encoding).
pub(crate) type Want<'a> = (&'a FileChunk, i64, i64, u8);

/// Records closer than this in one segment are read with one `pread`
/// (the bytes between them are read and dropped).
const MERGE_GAP: u64 = 16 << 10;
/// Largest single read [`read_many`] makes.
const MERGE_MAX: u64 = 1 << 20;

/// Reads many chunks, each checked as [`FileChunk::read`] does, with one
/// positional read per run of nearby records in a segment rather than
/// one per chunk (chunks sealed one after another, such as those of
/// series appended together, sit side by side). Returns the data in the
/// order of `want`.
pub(crate) fn read_many(want: &[Want<'_>]) -> Result<Vec<Arc<[u8]>>> {
    let mut order: Vec<usize> = (0..want.len()).collect();
    order.sort_unstable_by_key(|&i| (Arc::as_ptr(&want[i].0.seg) as usize, want[i].0.off));
    let mut out: Vec<Option<Arc<[u8]>>> = vec![None; want.len()];
    let mut i = 0;
    while i < order.len() {
        let first = want[order[i]].0;
        let start = u64::from(first.off);
        let mut end = start + record_len(first.len as usize) as u64;
        let mut j = i + 1;
        while let Some(&k) = order.get(j) {
            let c = want[k].0;
            let (off, len) = (u64::from(c.off), record_len(c.len as usize) as u64);
            if !Arc::ptr_eq(&c.seg, &first.seg)
                || off > end + MERGE_GAP
                || off + len - start > MERGE_MAX
            {
                break;
            }
            end = end.max(off + len);
            j += 1;
        }
        let run = &order[i..j];
        i = j;
        let buf = match first.seg.read_written(start, end) {
            Some(r) => r.context(HeadChunkReadSnafu {
                path: &first.seg.path,
                offset: start,
            })?,
            None => {
                // Part of the run is still in the tail: one by one.
                for &k in run {
                    let (c, mint, maxt, enc) = want[k];
                    out[k] = Some(c.read(mint, maxt, enc)?);
                }
                continue;
            }
        };
        for &k in run {
            let (c, mint, maxt, enc) = want[k];
            let at = (u64::from(c.off) - start) as usize;
            let rec = buf.get(at..at + record_len(c.len as usize)).unwrap_or(&[]);
            out[k] = Some(c.check(rec, mint, maxt, enc)?);
        }
    }
    Ok(out.into_iter().flatten().collect())
}

fn be<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

/// Appends one chunk record to `buf`; returns its offset in `buf`.
pub(crate) fn encode_record(
    buf: &mut Vec<u8>,
    series: u64,
    mint: i64,
    maxt: i64,
    encoding: u8,
    data: &[u8],
) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&series.to_be_bytes());
    buf.extend_from_slice(&mint.to_be_bytes());
    buf.extend_from_slice(&maxt.to_be_bytes());
    buf.push(encoding);
    buf.extend_from_slice(&(data.len() as u32).to_be_bytes());
    buf.extend_from_slice(data);
    let crc = crc32c::crc32c(&buf[at..]);
    buf.extend_from_slice(&crc.to_be_bytes());
    at
}

#[derive(Debug)]
struct Writer {
    seg: Option<Arc<Segment>>,
    next_id: u64,
}

/// The head chunk files of one database: the directory and the writer.
#[derive(Debug)]
pub(crate) struct ChunkFiles {
    dir: PathBuf,
    segment_bytes: u64,
    writer: Mutex<Writer>,
    total: Arc<AtomicU64>,
}

impl ChunkFiles {
    /// Opens `dir` (created if missing) after deleting every file in it:
    /// leftovers of an earlier process, whose chunks the WAL replay has
    /// rebuilt in memory.
    /// New segments are numbered after the leftovers, so that a handle
    /// of an earlier instance in this process dropped late never deletes
    /// a file of this one.
    pub(crate) fn open(dir: &Path, segment_bytes: u64) -> Result<Self> {
        let last = remove_leftovers(dir)?;
        std::fs::create_dir_all(dir).context(IoSnafu { path: dir })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.clamp(4096, MAX_SEGMENT_BYTES),
            writer: Mutex::new(Writer {
                seg: None,
                next_id: last + 1,
            }),
            total: Arc::default(),
        })
    }

    /// Bytes in live segment files (headers and dead records included).
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Drops the current segment when no chunk refers to it any more (its
    /// file is then deleted), so a small head does not keep a mostly dead
    /// file until it fills.
    pub(crate) fn release_idle(&self) {
        let mut w = self.writer.lock();
        if w.seg.as_ref().is_some_and(|s| Arc::strong_count(s) == 1) {
            w.seg = None;
        }
    }

    /// Writes `buf` (whole records) with one write at the end of the
    /// current segment (after its tail), starting a new segment first
    /// when it would grow past the segment size. Returns the segment and
    /// the offset of `buf[0]` in it.
    pub(crate) fn write(&self, buf: &[u8]) -> Result<(Arc<Segment>, u64)> {
        crate::failpoint::hit("head.chunk_files.write")?;
        let len = buf.len() as u64;
        let mut w = self.writer.lock();
        let seg = self.room(&mut w, len)?;
        let mut t = seg.tail.lock();
        seg.flush_tail(&mut t)?;
        let at = t.base;
        seg.file
            .write_all_at(buf, at)
            .context(IoSnafu { path: &seg.path })?;
        t.base = at + len;
        self.total.fetch_add(len, Ordering::Relaxed);
        drop(t);
        Ok((seg, at))
    }

    /// Appends one chunk record to the current segment's tail buffer
    /// (written out once the tail holds [`TAIL_FLUSH_BYTES`]) and returns
    /// where it is. An error (no segment could be created, or the tail is
    /// full of records that could not be written) means the caller keeps
    /// the chunk in memory.
    pub(crate) fn append(
        &self,
        series: u64,
        mint: i64,
        maxt: i64,
        encoding: u8,
        data: &[u8],
    ) -> Result<FileChunk> {
        let len = record_len(data.len()) as u64;
        let mut w = self.writer.lock();
        let seg = self.room(&mut w, len)?;
        let mut t = seg.tail.lock();
        if t.buf.len() >= TAIL_MAX_BYTES {
            seg.flush_tail(&mut t)?;
        }
        let at = t.end();
        encode_record(&mut t.buf, series, mint, maxt, encoding, data);
        self.total.fetch_add(len, Ordering::Relaxed);
        if t.buf.len() >= TAIL_FLUSH_BYTES {
            // A failure keeps the records in the tail, readable; the
            // maintenance tick's `flush` reports it.
            let _ = seg.flush_tail(&mut t);
        }
        drop(t);
        Ok(FileChunk {
            seg,
            // `room` keeps every record of a segment below 4 GiB.
            off: at as u32,
            len: data.len() as u32,
        })
    }

    /// Writes out the current segment's tail and releases its buffer
    /// (each maintenance tick: a quiet database keeps no buffer).
    pub(crate) fn flush(&self) -> Result<()> {
        let w = self.writer.lock();
        if let Some(seg) = &w.seg {
            let mut t = seg.tail.lock();
            seg.flush_tail(&mut t)?;
            t.buf = Vec::new();
        }
        Ok(())
    }

    /// The current segment, with room for `len` more bytes: a new one
    /// (the old one's tail written out first) when it would grow past the
    /// segment size.
    fn room(&self, w: &mut Writer, len: u64) -> Result<Arc<Segment>> {
        // The size is read once: the writer lock keeps it from moving.
        let size = match w.seg.as_ref().map(|s| s.tail.lock().end()) {
            Some(size) if size <= HEADER_LEN || size + len <= self.segment_bytes => size,
            _ => {
                if let Some(old) = &w.seg {
                    old.flush_tail(&mut old.tail.lock())?;
                }
                w.seg = None;
                let id = w.next_id;
                w.next_id += 1;
                w.seg = Some(self.create(id)?);
                HEADER_LEN
            }
        };
        let Some(seg) = w.seg.clone() else {
            unreachable!("a segment was just created")
        };
        if size + len > u64::from(u32::MAX) {
            // Only a single batch larger than 4 GiB gets here.
            return crate::error::ConfigSnafu {
                message: format!("head chunk batch of {len} bytes does not fit a segment"),
            }
            .fail();
        }
        Ok(seg)
    }

    fn create(&self, id: u64) -> Result<Arc<Segment>> {
        let path = self.dir.join(format!("{id:06}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .context(IoSnafu { path: &path })?;
        let mut head = [0u8; HEADER_LEN as usize];
        head[..4].copy_from_slice(&MAGIC);
        head[4] = VERSION;
        let seg = Arc::new(Segment {
            path,
            file,
            tail: Mutex::new(Tail {
                base: HEADER_LEN,
                buf: Vec::new(),
            }),
            total: self.total.clone(),
        });
        // Counted before the write: a failed segment's drop takes it back.
        self.total.fetch_add(HEADER_LEN, Ordering::Relaxed);
        seg.file
            .write_all_at(&head, 0)
            .context(IoSnafu { path: &seg.path })?;
        Ok(seg)
    }
}

/// Deletes the files in `dir` (a missing directory is fine). Returns the
/// highest segment number seen (0 if none).
pub(crate) fn remove_leftovers(dir: &Path) -> Result<u64> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).context(IoSnafu { path: dir }),
    };
    let mut last = 0;
    for e in entries {
        let p = e.context(IoSnafu { path: dir })?.path();
        if p.is_file() {
            let n = p.file_name().and_then(|n| n.to_str()?.parse::<u64>().ok());
            last = last.max(n.unwrap_or(0));
            std::fs::remove_file(&p).context(IoSnafu { path: &p })?;
        }
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let files = ChunkFiles::open(dir.path(), 1 << 20).unwrap();
        let mut buf = Vec::new();
        let a = encode_record(&mut buf, 7, 10, 20, 1, b"hello");
        let b = encode_record(&mut buf, 8, 30, 40, 2, b"world!");
        let (seg, base) = files.write(&buf).unwrap();
        assert_eq!(base, HEADER_LEN);
        let ca = FileChunk {
            seg: seg.clone(),
            off: (base as usize + a) as u32,
            len: 5,
        };
        let cb = FileChunk {
            seg: seg.clone(),
            off: (base as usize + b) as u32,
            len: 6,
        };
        assert_eq!(&*ca.read(10, 20, 1).unwrap(), b"hello");
        assert_eq!(&*cb.read(30, 40, 2).unwrap(), b"world!");
        // The head expecting another chunk: a clear error.
        let e = ca.read(10, 21, 1).unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
        // A flipped bit: checksum mismatch.
        let f = OpenOptions::new().write(true).open(seg.path()).unwrap();
        f.write_all_at(b"J", base + a as u64 + RECORD_HEAD as u64)
            .unwrap();
        let e = ca.read(10, 20, 1).unwrap_err().to_string();
        assert!(e.contains("checksum mismatch"), "{e}");
        // Truncated: a read error naming the file.
        f.set_len(base + b as u64 + 10).unwrap();
        let e = cb.read(30, 40, 2).unwrap_err().to_string();
        assert!(e.contains("head chunk file"), "{e}");
        assert_eq!(files.disk_bytes(), HEADER_LEN + buf.len() as u64);
        // Deleted with its last handle (the writer's included).
        let path = seg.path().to_path_buf();
        drop((ca, cb, seg));
        assert!(path.exists());
        files.release_idle();
        assert!(!path.exists());
        assert_eq!(files.disk_bytes(), 0);
    }

    #[test]
    fn many_reads_merge_nearby_records_keep_order_and_check_each() {
        let dir = tempfile::tempdir().unwrap();
        let files = ChunkFiles::open(dir.path(), 1 << 20).unwrap();
        let data = |i: usize| vec![i as u8; 10 + i % 300];
        // Appended one by one: written at 64 KiB, so the last records
        // are still in the tail; a far record after a 100 KiB gap.
        let mut chunks: Vec<(FileChunk, i64)> = (0..600)
            .map(|i| {
                (
                    files
                        .append(i as u64, i as i64, i as i64 + 1, 1, &data(i))
                        .unwrap(),
                    i as i64,
                )
            })
            .collect();
        let mut gap = Vec::new();
        encode_record(&mut gap, 0, 0, 0, 1, &vec![0u8; 100 << 10]);
        files.write(&gap).unwrap();
        chunks.push((files.append(9, 600, 601, 1, &data(600)).unwrap(), 600));
        let tail_base = chunks[0].0.seg.tail.lock().base;
        assert!(tail_base > HEADER_LEN, "some records written");
        // Shuffled, and one chunk asked twice.
        let mut pick: Vec<usize> = (0..chunks.len()).rev().step_by(3).collect();
        pick.extend((0..chunks.len()).step_by(7));
        let want: Vec<Want<'_>> = pick
            .iter()
            .map(|&i| (&chunks[i].0, chunks[i].1, chunks[i].1 + 1, 1u8))
            .collect();
        let got = read_many(&want).unwrap();
        assert_eq!(got.len(), pick.len());
        for (&i, d) in pick.iter().zip(&got) {
            assert_eq!(&**d, &data(i)[..], "chunk {i}");
        }
        // The head expecting another chunk in a merged run: an error.
        let (c, t) = (&chunks[1].0, chunks[1].1);
        let e = read_many(&[(&chunks[0].0, 0, 1, 1), (c, t, t + 2, 1)]).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        // A damaged byte in a merged run: that chunk's checksum fails.
        let seg = chunks[2].0.seg.clone();
        seg.file
            .write_all_at(b"J", u64::from(chunks[2].0.off) + RECORD_HEAD as u64)
            .unwrap();
        let e = read_many(&[(&chunks[0].0, 0, 1, 1), (&chunks[2].0, 2, 3, 1)]).unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
    }

    #[test]
    fn rotates_at_the_segment_size_and_open_deletes_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let files = ChunkFiles::open(dir.path(), 4096).unwrap();
        let data = vec![0u8; 3000];
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, 0, 1, 1, &data);
        let (s1, _) = files.write(&buf).unwrap();
        let (s2, _) = files.write(&buf).unwrap();
        assert!(!Arc::ptr_eq(&s1, &s2));
        assert!(s1.path().exists() && s2.path().exists());
        drop(files);
        let files = ChunkFiles::open(dir.path(), 4096).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // Handles from before still read (the fd keeps the file).
        drop(files);
        drop((s1, s2));
    }
}
