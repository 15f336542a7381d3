//! Compressed sample chunks: the float (XOR, "Gorilla") chunk codec.
//!
//! Owns the byte format of a chunk's *data* (what Prometheus calls a chunk's
//! bytes, without the on-disk `len | encoding | data | crc` framing, which
//! the block writer owns; both are specified in `docs/format/chunks.md`).
//!
//! Design choices:
//! - Byte compatibility with Prometheus' XOR encoding (encoding byte 1) is a
//!   hard requirement: remote read streams raw chunk bytes to Prometheus
//!   clients, and blocks must stay readable by Prometheus tooling. The
//!   encoder makes the same choices as Prometheus' encoder bit for bit (same
//!   delta-of-delta buckets, same leading-zero clamp, same window reuse rule),
//!   so a chunk built here is byte-identical to the one Prometheus builds
//!   from the same samples.
//! - [`XorAppender`] keeps only what the next append needs (last timestamp,
//!   value bits, timestamp delta, XOR window, free bits of the last byte and
//!   the sample count) next to the byte buffer: 56 bytes per active series.
//!   Its buffer is a complete chunk after every append, so head readers can
//!   decode it at any time.
//! - [`XorIterator`] decodes lazily with a 64-bit bit buffer refilled up to
//!   8 bytes at a time; it never allocates. It works on any `AsRef<[u8]>`,
//!   so it can own an `Arc`-ed or memory-mapped chunk or borrow a slice.
//! - Decoding is defensive: corrupt or truncated input ends iteration with
//!   an [`Error`] instead of panicking, and [`decode_xor`] additionally
//!   rejects anything but zero padding after the last sample.

mod bstream;
mod xor;

use snafu::Snafu;

pub use xor::{XorAppender, XorIterator, chunk_num_samples, decode_xor, fuzz_xor_decode};

/// Maximum number of samples in one chunk (the header count is a `u16`).
pub const MAX_SAMPLES_PER_CHUNK: usize = u16::MAX as usize;

/// Chunk encoding, the byte stored in front of the chunk data on disk and
/// sent in remote read responses. Values match Prometheus' `chunkenc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Encoding {
    /// Float samples, XOR encoded. Later: `Histogram = 2`,
    /// `FloatHistogram = 3`.
    Xor = 1,
}

impl Encoding {
    /// The encoding for an encoding byte, `None` when unknown.
    pub fn from_u8(b: u8) -> Option<Encoding> {
        match b {
            1 => Some(Encoding::Xor),
            _ => None,
        }
    }

    /// The encoding byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// Errors decoding chunk data. Bit offsets count from the first bit of the
/// chunk data (the sample count header included).
#[derive(Debug, Clone, PartialEq, Eq, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    /// The data is shorter than the 2-byte sample count header.
    #[snafu(display("chunk of {len} bytes is too short for its 2-byte header"))]
    MissingHeader { len: usize },

    /// The data ended before all samples announced by the header were read.
    #[snafu(display(
        "chunk truncated: data ends at bit {bit_offset} while decoding sample {sample} of {total}"
    ))]
    Truncated {
        sample: u16,
        total: u16,
        bit_offset: u64,
    },

    /// A varint timestamp (first timestamp or first delta) is longer than
    /// 10 bytes or overflows 64 bits.
    #[snafu(display("varint overflow in sample {sample} at bit {bit_offset}"))]
    VarintOverflow { sample: u16, bit_offset: u64 },

    /// A new XOR window (leading zeros + significant bits) exceeds 64 bits.
    #[snafu(display(
        "invalid XOR window in sample {sample} at bit {bit_offset}: \
         {leading} leading zeros + {significant} significant bits exceed 64"
    ))]
    InvalidXorWindow {
        sample: u16,
        bit_offset: u64,
        leading: u8,
        significant: u8,
    },

    /// After the last sample there is more than one byte of padding or a
    /// non-zero padding bit.
    #[snafu(display(
        "{bits} trailing bits after the last of {total} samples are not zero padding"
    ))]
    TrailingData { bits: u64, total: u16 },
}

#[cfg(test)]
mod tests;
