//! Reading a chunk of any encoding: the iterator the query path uses,
//! sample counts, whole-chunk decoding and conversion to Prometheus XOR
//! chunks (for remote read, whose clients only know XOR).
//!
//! XOR chunks decode lazily ([`XorIterator`]); compact chunks are decoded
//! whole on creation (zstd needs the whole body anyway) and then served
//! from a vector.

use super::compact::{compact_num_samples, decode_compact};
use super::histogram::histogram_num_samples;
use super::{
    Encoding, Error, MAX_SAMPLES_PER_CHUNK, NotFloatSnafu, UnknownEncodingSnafu, UnorderedSnafu,
    XorAppender, XorIterator, chunk_num_samples, decode_xor,
};

/// Iterates the samples of a chunk of any known encoding. Corrupt data or
/// an unknown encoding ends iteration early; [`ChunkIter::error`] tells why.
#[derive(Debug, Clone)]
pub enum ChunkIter<B: AsRef<[u8]>> {
    /// A lazily decoded XOR chunk.
    Xor(XorIterator<B>),
    /// A chunk decoded up front (compact encoding).
    Decoded {
        samples: Vec<(i64, f64)>,
        /// Index of the next sample to return.
        pos: usize,
    },
    /// The chunk could not be decoded; yields nothing.
    Failed(Error),
}

impl<B: AsRef<[u8]>> ChunkIter<B> {
    /// An iterator over chunk `data` of encoding byte `encoding`.
    pub fn new(encoding: u8, data: B) -> Self {
        match Encoding::from_u8(encoding) {
            Some(Encoding::Xor) => ChunkIter::Xor(XorIterator::new(data)),
            Some(Encoding::Compact) => match decode_compact(data.as_ref()) {
                Ok(samples) => ChunkIter::Decoded { samples, pos: 0 },
                Err(e) => ChunkIter::Failed(e),
            },
            // Float iteration skips histogram chunks: they hold no float
            // samples (see `querier::TypedIter` for typed samples).
            Some(
                Encoding::Histogram
                | Encoding::FloatHistogram
                | Encoding::HistogramSt
                | Encoding::FloatHistogramSt,
            ) => ChunkIter::Decoded {
                samples: Vec::new(),
                pos: 0,
            },
            // Chunks with start timestamps are rare: decoded whole, the
            // start timestamps ignored (see `querier::Series::st_samples`).
            Some(Encoding::XorSt) => {
                match super::split_st_chunk(data.as_ref()).and_then(|(x, _)| decode_xor(x)) {
                    Ok(samples) => ChunkIter::Decoded { samples, pos: 0 },
                    Err(e) => ChunkIter::Failed(e),
                }
            }
            None => ChunkIter::Failed(UnknownEncodingSnafu { encoding }.build()),
        }
    }

    /// Advances to the first sample with timestamp `>= t` and returns it.
    /// Like [`XorIterator::seek`], the sample last returned counts (it is
    /// returned again if its timestamp is `>= t`), so the iterator never
    /// moves backwards.
    pub fn seek(&mut self, t: i64) -> Option<(i64, f64)> {
        match self {
            ChunkIter::Xor(it) => it.seek(t),
            ChunkIter::Decoded { samples, pos } => {
                if let Some(last) = pos.checked_sub(1).and_then(|p| samples.get(p)) {
                    if last.0 >= t {
                        return Some(*last);
                    }
                }
                let rest = samples.get(*pos..).unwrap_or_default();
                let i = *pos + rest.partition_point(|s| s.0 < t);
                let s = samples.get(i).copied();
                *pos = if s.is_some() { i + 1 } else { samples.len() };
                s
            }
            ChunkIter::Failed(_) => None,
        }
    }

    /// Why iteration stopped early, if it did.
    pub fn error(&self) -> Option<&Error> {
        match self {
            ChunkIter::Xor(it) => it.error(),
            ChunkIter::Decoded { .. } => None,
            ChunkIter::Failed(e) => Some(e),
        }
    }
}

impl<B: AsRef<[u8]>> Iterator for ChunkIter<B> {
    type Item = (i64, f64);

    #[inline]
    fn next(&mut self) -> Option<(i64, f64)> {
        match self {
            ChunkIter::Xor(it) => it.next(),
            ChunkIter::Decoded { samples, pos } => {
                let s = samples.get(*pos).copied()?;
                *pos += 1;
                Some(s)
            }
            ChunkIter::Failed(_) => None,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            ChunkIter::Xor(it) => it.size_hint(),
            ChunkIter::Decoded { samples, pos } => {
                let n = samples.len().saturating_sub(*pos);
                (n, Some(n))
            }
            ChunkIter::Failed(_) => (0, Some(0)),
        }
    }
}

/// The number of samples a chunk announces (from its header, without
/// decoding the samples).
pub fn chunk_num_samples_any(encoding: u8, data: &[u8]) -> Result<usize, Error> {
    match Encoding::from_u8(encoding) {
        Some(Encoding::Xor) => chunk_num_samples(data).map(usize::from),
        Some(Encoding::Compact) => compact_num_samples(data),
        Some(Encoding::Histogram | Encoding::FloatHistogram) => histogram_num_samples(data),
        Some(e @ (Encoding::XorSt | Encoding::HistogramSt | Encoding::FloatHistogramSt)) => {
            chunk_num_samples_any(e.inner().as_u8(), super::split_st_chunk(data)?.0)
        }
        None => UnknownEncodingSnafu { encoding }.fail(),
    }
}

/// Decodes a whole float chunk of any known encoding strictly. Histogram
/// chunks are an error ([`Error::NotFloat`]).
pub fn decode_any(encoding: u8, data: &[u8]) -> Result<Vec<(i64, f64)>, Error> {
    match Encoding::from_u8(encoding) {
        Some(Encoding::Xor) => decode_xor(data),
        Some(Encoding::Compact) => decode_compact(data),
        Some(Encoding::XorSt) => decode_xor(super::split_st_chunk(data)?.0),
        Some(
            Encoding::Histogram
            | Encoding::FloatHistogram
            | Encoding::HistogramSt
            | Encoding::FloatHistogramSt,
        ) => NotFloatSnafu { encoding }.fail(),
        None => UnknownEncodingSnafu { encoding }.fail(),
    }
}

/// Converts a chunk of any known encoding into Prometheus XOR chunks of at
/// most `max_samples` samples each (clamped to `1..=65535`), as
/// `(mint, maxt, data)`. An XOR chunk that is small enough is returned
/// byte for byte; empty input chunks give no output chunk.
pub fn to_xor_chunks(
    encoding: u8,
    data: &[u8],
    max_samples: usize,
) -> Result<Vec<(i64, i64, Vec<u8>)>, Error> {
    let max = max_samples.clamp(1, MAX_SAMPLES_PER_CHUNK);
    let samples = decode_any(encoding, data)?;
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Ok(Vec::new());
    };
    if let Some(i) = samples.windows(2).position(|w| w[0].0 >= w[1].0) {
        return UnorderedSnafu { sample: i + 1 }.fail();
    }
    if encoding == Encoding::Xor as u8 && samples.len() <= max {
        return Ok(vec![(first.0, last.0, data.to_vec())]);
    }
    let mut out = Vec::with_capacity(samples.len().div_ceil(max));
    for part in samples.chunks(max) {
        let mut app = XorAppender::new();
        for &(t, v) in part {
            app.append(t, v);
        }
        if let (Some(a), Some(b)) = (part.first(), part.last()) {
            out.push((a.0, b.0, app.into_bytes()));
        }
    }
    Ok(out)
}
