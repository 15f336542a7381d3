//! Compressed sample chunks: the float chunk codecs — Prometheus' XOR
//! ("Gorilla", encoding 1, used by the head and level-1 blocks) and the
//! compact encoding (`0x81`, zstd-compressed decimal columns, used by blocks
//! written by compaction) — and reading any of them ([`ChunkIter`]).
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

mod any;
mod bstream;
mod compact;
mod histogram;
mod st;
mod xor;

use snafu::Snafu;

pub use any::{ChunkIter, chunk_num_samples_any, decode_any, to_xor_chunks};
pub use compact::{
    COMPACT_CHUNK_SAMPLES, COMPACT_VERSION, COMPACT_ZSTD_LEVEL, MAX_COMPACT_SAMPLES,
    decode_compact, encode_compact, encode_compact_with_level, fuzz_compact_decode,
};
pub use histogram::{
    Appendable, CounterResetHeader, FloatHistogramAppender, HISTOGRAM_HEADER_LEN,
    HistogramAppender, decode_float_histogram, decode_histogram, fuzz_histogram_decode,
};
pub use st::{
    decode_st_column, encode_st_chunk, fuzz_st_decode, is_st_encoding, split_st_chunk, with_st,
};
pub use xor::{
    XOR_SAMPLE_ROOM, XorAppender, XorIterator, chunk_num_samples, decode_xor, fuzz_xor_decode,
};

/// Maximum number of samples in one chunk (the header count is a `u16`).
pub const MAX_SAMPLES_PER_CHUNK: usize = u16::MAX as usize;

/// Chunk encoding, the byte stored in front of the chunk data on disk and
/// sent in remote read responses. Values match Prometheus' `chunkenc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Encoding {
    /// Float samples, XOR encoded.
    Xor = 1,
    /// Integer native histograms (Prometheus' `EncHistogram`).
    Histogram = 2,
    /// Float native histograms (Prometheus' `EncFloatHistogram`).
    FloatHistogram = 3,
    /// Float samples, Stratus' compact encoding (decimal columns + zstd),
    /// written by compaction. Not a Prometheus encoding: remote read
    /// converts it with [`to_xor_chunks`].
    Compact = 0x81,
    /// An XOR chunk with a start-timestamp column (Stratus only, see
    /// `docs/format/chunks.md` section 5).
    XorSt = 0x82,
    /// An integer histogram chunk with a start-timestamp column.
    HistogramSt = 0x83,
    /// A float histogram chunk with a start-timestamp column.
    FloatHistogramSt = 0x84,
}

impl Encoding {
    /// The encoding for an encoding byte, `None` when unknown.
    pub fn from_u8(b: u8) -> Option<Encoding> {
        match b {
            1 => Some(Encoding::Xor),
            2 => Some(Encoding::Histogram),
            3 => Some(Encoding::FloatHistogram),
            0x81 => Some(Encoding::Compact),
            0x82 => Some(Encoding::XorSt),
            0x83 => Some(Encoding::HistogramSt),
            0x84 => Some(Encoding::FloatHistogramSt),
            _ => None,
        }
    }

    /// The encoding byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Whether chunks of this encoding hold native histograms.
    pub fn is_histogram(self) -> bool {
        matches!(self.inner(), Encoding::Histogram | Encoding::FloatHistogram)
    }

    /// The encoding of the chunk inside a start-timestamp chunk (itself
    /// for every other encoding).
    pub fn inner(self) -> Encoding {
        match self {
            Encoding::XorSt => Encoding::Xor,
            Encoding::HistogramSt => Encoding::Histogram,
            Encoding::FloatHistogramSt => Encoding::FloatHistogram,
            e => e,
        }
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

    /// A corrupt start-timestamp column or wrapper (encodings 0x82..0x84).
    #[snafu(display("corrupt start-timestamp chunk: {reason}"))]
    StColumn { reason: &'static str },

    /// A corrupt native histogram chunk.
    #[snafu(display("corrupt histogram chunk at sample {sample}, bit {bit_offset}: {reason}"))]
    Histogram {
        sample: u16,
        reason: &'static str,
        bit_offset: u64,
    },

    /// A float decoder was given a histogram chunk.
    #[snafu(display("chunk encoding {encoding} holds histograms, not float samples"))]
    NotFloat { encoding: u8 },

    /// The chunk's encoding byte is not one this crate decodes.
    #[snafu(display("unknown chunk encoding {encoding:#04x}"))]
    UnknownEncoding { encoding: u8 },

    /// Decoded timestamps do not strictly increase.
    #[snafu(display("timestamps do not increase at sample {sample}"))]
    Unordered { sample: usize },

    /// A compact chunk of an unknown format version.
    #[snafu(display("unknown compact chunk version {version}"))]
    CompactVersion { version: u8 },

    /// A compact chunk with unknown or contradictory flag bits.
    #[snafu(display("invalid compact chunk flags {flags:#04x}"))]
    CompactFlags { flags: u8 },

    /// A compact chunk announcing more samples than allowed.
    #[snafu(display("compact chunk announces {count} samples, at most {max} allowed"))]
    CompactTooManySamples { count: u64, max: usize },

    /// The (declared or actual) body length is impossible for the sample
    /// count, or the decompressed body is not as long as declared.
    #[snafu(display(
        "compact chunk body length {declared} is invalid (decompressed {actual} bytes)"
    ))]
    CompactBodyLength { declared: u64, actual: u64 },

    /// zstd rejected the compressed body.
    #[snafu(display("compact chunk body does not decompress: {message}"))]
    CompactDecompress { message: String },

    /// A section of a compact chunk ended early.
    #[snafu(display("compact chunk truncated in {section} at byte {offset}"))]
    CompactTruncated {
        section: &'static str,
        offset: usize,
    },

    /// A varint longer than 10 bytes or overflowing 64 bits.
    #[snafu(display("varint overflow in compact chunk {section} at byte {offset}"))]
    CompactVarint {
        section: &'static str,
        offset: usize,
    },

    /// A decimal exponent outside `-22..=22`.
    #[snafu(display("compact chunk decimal exponent {exponent} out of range"))]
    CompactExponent { exponent: i32 },

    /// A decoded mantissa (or its delta) outside `(-2^53, 2^53)`.
    #[snafu(display("compact chunk mantissa out of range at sample {sample} (byte {offset})"))]
    CompactMantissa { sample: usize, offset: usize },

    /// An exception index beyond the last sample, or too many exceptions.
    #[snafu(display("compact chunk exception index {index} invalid at byte {offset}"))]
    CompactException { index: u64, offset: usize },

    /// A sparse column's bitmap has padding bits set, or an entry it marks
    /// as non-zero is zero.
    #[snafu(display("invalid sparse column in compact chunk {section} at byte {offset}"))]
    CompactBitmap {
        section: &'static str,
        offset: usize,
    },

    /// Bytes left after the last section of a compact chunk.
    #[snafu(display("{bytes} bytes after the {section} of a compact chunk"))]
    CompactTrailing { bytes: usize, section: &'static str },
}

#[cfg(test)]
mod compact_tests;
#[cfg(test)]
mod tests;
