//! Byte-level helpers shared by the block files: varints, big-endian
//! integers and a bounds-checked decoder.
//!
//! [`Dec`] never indexes out of range: every read checks the remaining
//! length and returns a [`DecErr`] carrying the absolute file offset of the
//! failure, which callers turn into a [`super::Error::Corrupt`] naming the
//! file and section.

use std::path::Path;

use super::error::Error;

pub(crate) use crate::varint::{put_uvarint, put_varint};

/// Appends `v` as 4 big-endian bytes.
pub(crate) fn put_be32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends `v` as 8 big-endian bytes.
pub(crate) fn put_be64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// A decoding failure at an absolute file offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecErr {
    pub(crate) offset: u64,
    pub(crate) reason: &'static str,
}

impl DecErr {
    /// Turns the failure into a block error naming the file and section.
    pub(crate) fn into_error(self, path: &Path, section: &'static str) -> Error {
        Error::Corrupt {
            path: path.to_path_buf(),
            section,
            offset: self.offset,
            reason: self.reason,
        }
    }
}

/// A bounds-checked cursor over a byte slice that knows the absolute
/// file offset of its first byte.
#[derive(Debug, Clone)]
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
    base: u64,
}

impl<'a> Dec<'a> {
    /// A decoder over `buf`, whose first byte is at file offset `base`.
    pub(crate) fn new(buf: &'a [u8], base: u64) -> Self {
        Self { buf, pos: 0, base }
    }

    /// Absolute file offset of the next byte.
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Bytes left.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether every byte was consumed.
    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// A failure at the current position.
    pub(crate) fn err(&self, reason: &'static str) -> DecErr {
        DecErr {
            offset: self.offset(),
            reason,
        }
    }

    /// The next `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecErr> {
        if n > self.remaining() {
            return Err(self.err("unexpected end of data"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A big-endian u32.
    pub(crate) fn be_u32(&mut self) -> Result<u32, DecErr> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A big-endian u64.
    pub(crate) fn be_u64(&mut self) -> Result<u64, DecErr> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// An unsigned LEB128 varint of at most 10 bytes.
    pub(crate) fn uvarint(&mut self) -> Result<u64, DecErr> {
        let start = self.pos;
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&b) = self.buf.get(self.pos) else {
                self.pos = start;
                return Err(self.err("truncated varint"));
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                self.pos = start;
                return Err(self.err("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    /// A zigzag-encoded signed varint.
    pub(crate) fn varint(&mut self) -> Result<i64, DecErr> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// An unsigned varint that must fit a `usize` no larger than the
    /// remaining input times `unit` (a length or count of items of at least
    /// `unit` bytes each).
    pub(crate) fn len(&mut self, unit: usize) -> Result<usize, DecErr> {
        let at = self.clone();
        let v = self.uvarint()?;
        match usize::try_from(v) {
            Ok(n) if n.saturating_mul(unit.max(1)) <= self.remaining() => Ok(n),
            _ => Err(at.err("length exceeds the data")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        let vals = [
            0u64,
            1,
            127,
            128,
            300,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ];
        let mut buf = Vec::new();
        for v in vals {
            put_uvarint(&mut buf, v);
        }
        let ivals = [0i64, -1, 1, i64::MIN, i64::MAX, -300];
        for v in ivals {
            put_varint(&mut buf, v);
        }
        let mut d = Dec::new(&buf, 0);
        for v in vals {
            assert_eq!(d.uvarint().unwrap(), v);
        }
        for v in ivals {
            assert_eq!(d.varint().unwrap(), v);
        }
        assert!(d.is_empty());
    }

    #[test]
    fn bad_varints_are_errors() {
        assert!(Dec::new(&[0x80, 0x80], 0).uvarint().is_err());
        assert!(Dec::new(&[0xff; 10], 0).uvarint().is_err());
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert!(Dec::new(&over, 0).uvarint().is_err());
        assert!(Dec::new(&[], 5).be_u32().is_err());
        assert_eq!(Dec::new(&[1, 2], 7).be_u32().unwrap_err().offset, 7);
    }
}
