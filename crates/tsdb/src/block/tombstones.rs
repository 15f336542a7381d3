//! Tombstones: deleted time ranges per series of a block, and the block's
//! `tombstones` file (format in `docs/format/tombstones.md`).
//!
//! In memory a [`Tombstones`] maps a series id to a sorted list of
//! disjoint, non-adjacent closed intervals `[mint, maxt]`; adding an
//! interval merges it with any it overlaps or touches. The file is small
//! and read whole at open, so one CRC-32C covers all entries; it is
//! replaced atomically (temporary file + fsync + rename + directory fsync).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use snafu::{ResultExt, ensure};

use super::encoding::{Dec, put_be32, put_uvarint, put_varint};
use super::error::{ChecksumSnafu, ReadSnafu, Result, check_format};
use super::meta::write_atomic;

/// Name of the tombstones file inside a block directory.
pub const TOMBSTONES_FILENAME: &str = "tombstones";
/// Magic number at the start of the tombstones file.
pub const TOMBSTONES_MAGIC: u32 = 0x0130_BA30;
/// The tombstones format version written and read.
pub const TOMBSTONES_VERSION: u8 = 1;

const SECTION: &str = "tombstones";

/// Deleted intervals per series id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tombstones {
    map: BTreeMap<u64, Vec<(i64, i64)>>,
}

impl Tombstones {
    /// No tombstones.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `[mint, maxt]` (inclusive) of series `id` as deleted. An empty
    /// interval (`mint > maxt`) is ignored.
    pub fn add(&mut self, id: u64, mint: i64, maxt: i64) {
        if mint > maxt {
            return;
        }
        let v = self.map.entry(id).or_default();
        let at = v.partition_point(|&(a, _)| a < mint);
        v.insert(at, (mint, maxt));
        // Merge overlapping or touching neighbours in place.
        let mut out: Vec<(i64, i64)> = Vec::with_capacity(v.len());
        for &(a, b) in v.iter() {
            match out.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        *v = out;
    }

    /// The deleted intervals of series `id`, sorted; empty if none.
    pub fn get(&self, id: u64) -> &[(i64, i64)] {
        self.map.get(&id).map_or(&[], |v| v.as_slice())
    }

    /// Whether no series has tombstones.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of series with tombstones.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Total number of intervals over all series (Prometheus'
    /// `numTombstones`).
    pub fn num_intervals(&self) -> u64 {
        self.map.values().map(|v| v.len() as u64).sum()
    }

    /// Series ids with their intervals, in ascending id order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[(i64, i64)])> {
        self.map.iter().map(|(&id, v)| (id, v.as_slice()))
    }

    /// Encodes the whole tombstones file.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.map.len() * 8);
        put_be32(&mut out, TOMBSTONES_MAGIC);
        out.extend_from_slice(&[TOMBSTONES_VERSION, 0, 0, 0]);
        let body_start = out.len();
        put_uvarint(&mut out, self.map.len() as u64);
        let mut prev_id = 0u64;
        for (&id, ivs) in &self.map {
            put_uvarint(&mut out, id - prev_id);
            prev_id = id;
            put_uvarint(&mut out, ivs.len() as u64);
            for &(a, b) in ivs {
                put_varint(&mut out, a);
                put_uvarint(&mut out, b.wrapping_sub(a) as u64);
            }
        }
        let crc = crc32c::crc32c(&out[body_start..]);
        put_be32(&mut out, crc);
        out
    }

    /// Decodes and validates a tombstones file; `path` is for errors.
    pub(crate) fn decode(path: &Path, data: &[u8]) -> Result<Self> {
        let mut d = Dec::new(data, 0);
        let hdr = |d: &mut Dec<'_>| -> Result<(u32, [u8; 4])> {
            let m = d.be_u32().map_err(|e| e.into_error(path, SECTION))?;
            let v = d.bytes(4).map_err(|e| e.into_error(path, SECTION))?;
            Ok((m, [v[0], v[1], v[2], v[3]]))
        };
        let (magic, ver) = hdr(&mut d)?;
        check_format(path, magic, TOMBSTONES_MAGIC, ver, TOMBSTONES_VERSION)?;
        if data.len() < 12 {
            return Err(d.err("missing checksum").into_error(path, SECTION));
        }
        let body = &data[8..data.len() - 4];
        let crc_at = data.len() - 4;
        let stored = Dec::new(&data[crc_at..], crc_at as u64)
            .be_u32()
            .map_err(|e| e.into_error(path, SECTION))?;
        let computed = crc32c::crc32c(body);
        ensure!(
            stored == computed,
            ChecksumSnafu {
                path,
                section: SECTION,
                offset: crc_at as u64,
                stored,
                computed
            }
        );
        Self::decode_body(body).map_err(|e| e.into_error(path, SECTION))
    }

    fn decode_body(body: &[u8]) -> Result<Self, super::encoding::DecErr> {
        let mut d = Dec::new(body, 8);
        let n = d.len(2)?;
        let mut map = BTreeMap::new();
        let mut prev_id: Option<u64> = None;
        for _ in 0..n {
            let delta = d.uvarint()?;
            let id = match prev_id {
                None => delta,
                Some(p) if delta > 0 => p.checked_add(delta).ok_or(d.err("series id overflow"))?,
                Some(_) => return Err(d.err("series ids not strictly increasing")),
            };
            prev_id = Some(id);
            let k = d.len(2)?;
            if k == 0 {
                return Err(d.err("series without intervals"));
            }
            let mut ivs: Vec<(i64, i64)> = Vec::with_capacity(k);
            for _ in 0..k {
                let a = d.varint()?;
                let len = d.uvarint()?;
                let b = a.wrapping_add(len as i64);
                if b < a {
                    return Err(d.err("interval end before start"));
                }
                if let Some(&(_, pb)) = ivs.last() {
                    if a <= pb.saturating_add(1) {
                        return Err(d.err("intervals not sorted and merged"));
                    }
                }
                ivs.push((a, b));
            }
            map.insert(id, ivs);
        }
        if !d.is_empty() {
            return Err(d.err("trailing bytes"));
        }
        Ok(Self { map })
    }

    /// Reads `dir/tombstones`; a missing file means no tombstones.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(TOMBSTONES_FILENAME);
        match fs::read(&path) {
            Ok(data) => Self::decode(&path, &data),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::new()),
            Err(e) => Err(e).context(ReadSnafu { path }),
        }
    }
}

/// Atomically writes (or replaces) the block's `tombstones` file in `dir`.
pub fn write_tombstones(dir: &Path, t: &Tombstones) -> Result<()> {
    write_atomic(dir, &dir.join(TOMBSTONES_FILENAME), &t.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Tombstones {
        let mut t = Tombstones::new();
        t.add(5, 10, 20);
        t.add(5, 30, 40);
        t.add(5, 15, 25);
        t.add(5, 41, 50); // touches [30, 40]
        t.add(0, i64::MIN, i64::MAX);
        t.add(1 << 40, -5, -1);
        t.add(7, 3, 2); // empty, ignored
        t
    }

    #[test]
    fn add_merges() {
        let t = sample();
        assert_eq!(t.get(5), &[(10, 25), (30, 50)]);
        assert_eq!(t.get(0), &[(i64::MIN, i64::MAX)]);
        assert!(t.get(7).is_empty());
        assert_eq!(t.len(), 3);
        assert_eq!(t.num_intervals(), 4);
        let ids: Vec<u64> = t.iter().map(|(id, _)| id).collect();
        assert_eq!(ids, vec![0, 5, 1 << 40]);
    }

    #[test]
    fn tombstones_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Tombstones::read(dir.path()).unwrap().is_empty());
        let t = sample();
        write_tombstones(dir.path(), &t).unwrap();
        assert_eq!(Tombstones::read(dir.path()).unwrap(), t);
        write_tombstones(dir.path(), &Tombstones::new()).unwrap();
        assert!(Tombstones::read(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn tombstones_corruption_is_detected() {
        let good = sample().encode();
        let p = Path::new("tombstones");
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                assert!(Tombstones::decode(p, &b).is_err(), "flip {i}/{bit}");
            }
        }
        for n in 0..good.len() {
            assert!(Tombstones::decode(p, &good[..n]).is_err(), "truncated {n}");
        }
    }
}
