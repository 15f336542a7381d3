//! Bit stream primitives of the chunk codecs.
//!
//! Bits are written most significant bit first into bytes, the way
//! Prometheus' `bstream` does; unused low bits of the last byte are zero.
//!
//! - [`write_bits`] appends to a `Vec<u8>` whose last byte may be partially
//!   filled; it writes whole bytes at once, never bit by bit.
//! - [`BitReader`] keeps a left-aligned 64-bit buffer refilled with up to 8
//!   bytes per load. It does not own or borrow the data (each call takes the
//!   slice), so an iterator can own its bytes and the reader side by side.

/// Appends the low `n` bits of `value` (`n <= 64`, higher bits ignored) to
/// `buf`. `free` is the number of unused low bits in the last byte of `buf`
/// (0..=7) and is updated. `buf` must not be empty when `free > 0`.
#[inline]
pub(crate) fn write_bits(buf: &mut Vec<u8>, free: &mut u8, value: u64, n: u32) {
    debug_assert!(n <= 64);
    debug_assert!(*free < 8);
    if n == 0 {
        return;
    }
    // Left-align: the bits to write become the top `n` bits.
    let mut v = value << (64 - n);
    let mut n = n;
    let f = u32::from(*free);
    if f > 0 {
        if let Some(last) = buf.last_mut() {
            *last |= (v >> (64 - f)) as u8;
        }
        if n <= f {
            *free = (f - n) as u8;
            return;
        }
        v <<= f;
        n -= f;
    }
    let nbytes = n.div_ceil(8);
    // A fixed 8-byte copy then a truncate is cheaper than a variable-length
    // copy; the bytes past `nbytes` are zero anyway.
    let len = buf.len();
    buf.extend_from_slice(&v.to_be_bytes());
    buf.truncate(len + nbytes as usize);
    *free = (nbytes * 8 - n) as u8;
}

/// Reading position in a bit stream; see the module docs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BitReader {
    /// Buffered bits, left-aligned. Bits below the `avail` valid ones are
    /// either zero or the true stream bits that follow (an 8-byte load may
    /// bring in more bits than are counted), so OR-ing a later load over
    /// them is idempotent.
    acc: u64,
    /// Number of valid bits at the top of `acc`.
    avail: u32,
    /// Next byte of the data to load into `acc`.
    pos: usize,
}

impl BitReader {
    /// A reader starting at byte `start` of the data.
    pub(crate) fn new(start: usize) -> Self {
        BitReader {
            acc: 0,
            avail: 0,
            pos: start,
        }
    }

    /// Bit offset of the next unread bit from the start of the data.
    #[inline]
    pub(crate) fn bit_offset(&self) -> u64 {
        (self.pos as u64) * 8 - u64::from(self.avail)
    }

    /// Loads as many whole bytes as fit into the buffer. Only called with
    /// `avail <= 56`.
    #[inline]
    fn refill(&mut self, data: &[u8]) {
        debug_assert!(self.avail <= 56);
        if let Some(chunk) = data.get(self.pos..self.pos.saturating_add(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.acc |= u64::from_be_bytes(word) >> self.avail;
            let bytes = (64 - self.avail) / 8;
            self.pos += bytes as usize;
            self.avail += bytes * 8;
        } else {
            self.refill_slow(data);
        }
    }

    #[cold]
    fn refill_slow(&mut self, data: &[u8]) {
        while self.avail <= 56 {
            let Some(&b) = data.get(self.pos) else { break };
            self.acc |= u64::from(b) << (56 - self.avail);
            self.avail += 8;
            self.pos += 1;
        }
    }

    /// Makes at least `n <= 57` bits available if the data has them; returns
    /// whether it succeeded. On failure all remaining bits are buffered and
    /// the buffer bits below them are zero.
    #[inline]
    pub(crate) fn ensure(&mut self, data: &[u8], n: u32) -> bool {
        if self.avail < n {
            self.refill(data);
        }
        self.avail >= n
    }

    /// The buffered bits, left-aligned; valid for the top `available()` bits.
    #[inline]
    pub(crate) fn peek(&self) -> u64 {
        self.acc
    }

    /// Number of buffered bits.
    #[inline]
    pub(crate) fn available(&self) -> u32 {
        self.avail
    }

    /// Drops `n` buffered bits (`n <= available()`, `n < 64`).
    #[inline]
    pub(crate) fn consume(&mut self, n: u32) {
        debug_assert!(n <= self.avail && n < 64);
        self.acc <<= n;
        self.avail -= n;
    }

    /// Reads `n` bits (`1 <= n <= 64`) as an unsigned integer, `None` when
    /// the data ends first.
    #[inline]
    pub(crate) fn read_bits(&mut self, data: &[u8], n: u32) -> Option<u64> {
        debug_assert!((1..=64).contains(&n));
        if n > 56 {
            let hi = self.read_short(data, n - 32)?;
            let lo = self.read_short(data, 32)?;
            return Some((hi << 32) | lo);
        }
        self.read_short(data, n)
    }

    /// `read_bits` for `1 <= n <= 56`.
    #[inline]
    fn read_short(&mut self, data: &[u8], n: u32) -> Option<u64> {
        if !self.ensure(data, n) {
            return None;
        }
        let v = self.acc >> (64 - n);
        self.acc <<= n;
        self.avail -= n;
        Some(v)
    }

    /// Bits left in the stream: buffered plus not yet loaded.
    pub(crate) fn remaining_bits(&self, data: &[u8]) -> u64 {
        u64::from(self.avail) + (data.len().saturating_sub(self.pos) as u64) * 8
    }

    /// Whether every bit left in the stream is zero.
    pub(crate) fn rest_is_zero(&self, data: &[u8]) -> bool {
        let buffered_zero = self.avail == 0 || self.acc >> (64 - self.avail) == 0;
        buffered_zero
            && data
                .get(self.pos..)
                .is_none_or(|rest| rest.iter().all(|&b| b == 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn writes_msb_first() {
        let mut buf = Vec::new();
        let mut free = 0;
        write_bits(&mut buf, &mut free, 0b1, 1);
        write_bits(&mut buf, &mut free, 0b01, 2);
        assert_eq!(buf, [0b1010_0000]);
        assert_eq!(free, 5);
        write_bits(&mut buf, &mut free, 0xABCD, 16);
        // 101 + 1010101111001101 = 10110101 01111001 101.....
        assert_eq!(buf, [0xB5, 0x79, 0xA0]);
        assert_eq!(free, 5);
        write_bits(&mut buf, &mut free, u64::MAX, 3);
        assert_eq!(free, 2);
        write_bits(&mut buf, &mut free, 0b110, 2);
        assert_eq!(free, 0);
        assert_eq!(buf[2], 0b1011_1110);
        write_bits(&mut buf, &mut free, 0x0123_4567_89ab_cdef, 64);
        assert_eq!(&buf[3..], &0x0123_4567_89ab_cdefu64.to_be_bytes());
        assert_eq!(free, 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn write_read_round_trip(items in proptest::collection::vec((any::<u64>(), 1u32..=64), 0..200)) {
            let mut buf = Vec::new();
            let mut free = 0;
            for &(v, n) in &items {
                write_bits(&mut buf, &mut free, v, n);
            }
            let total: u64 = items.iter().map(|&(_, n)| u64::from(n)).sum();
            prop_assert_eq!(buf.len() as u64, total.div_ceil(8));
            let mut r = BitReader::new(0);
            for &(v, n) in &items {
                let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
                prop_assert_eq!(r.read_bits(&buf, n), Some(v & mask));
            }
            prop_assert_eq!(r.bit_offset(), total);
            prop_assert!(r.remaining_bits(&buf) < 8);
            prop_assert!(r.rest_is_zero(&buf));
            prop_assert_eq!(r.read_bits(&buf, 8), None);
        }
    }
}
