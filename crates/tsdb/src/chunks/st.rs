//! Chunks with start timestamps (encodings `0x82`, `0x83`, `0x84`): an
//! ordinary chunk (XOR, integer histogram or float histogram) followed by
//! a column holding every sample's start ("created") timestamp.
//!
//! Only series that were given start timestamps get these chunks; every
//! other series keeps the plain encodings and pays nothing. A start
//! timestamp of 0 means "unknown" (Prometheus' convention). The column is
//! stored relative to the sample timestamps, in whichever of two modes is
//! smaller for the chunk: per-sample `t - st` (constant for delta series)
//! or `st` deltas (zero for cumulative series with one start). Layout:
//! `docs/format/chunks.md` section 5.

use super::{Encoding, Error, StColumnSnafu};

use crate::varint::{get_uvarint, get_varint, put_varint};

fn bad(reason: &'static str) -> Error {
    StColumnSnafu { reason }.build()
}

/// The start-timestamp encoding wrapping chunks of `inner`, `None` for an
/// encoding that has none (compact, or already wrapped).
pub fn with_st(inner: Encoding) -> Option<Encoding> {
    match inner {
        Encoding::Xor => Some(Encoding::XorSt),
        Encoding::Histogram => Some(Encoding::HistogramSt),
        Encoding::FloatHistogram => Some(Encoding::FloatHistogramSt),
        _ => None,
    }
}

/// Whether encoding byte `enc` is a chunk with start timestamps.
pub fn is_st_encoding(enc: u8) -> bool {
    Encoding::from_u8(enc).is_some_and(|e| e.inner() != e)
}

/// Wraps chunk `inner` (of the encoding [`with_st`] maps from) with the
/// start timestamps `sts` of its samples, whose timestamps are `ts`
/// (same length).
pub fn encode_st_chunk(inner: &[u8], ts: &[i64], sts: &[i64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(inner.len() + 3 + sts.len() * 2);
    let mut v = inner.len() as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out.extend_from_slice(inner);
    let n = ts.len().min(sts.len());
    let mut a = Vec::with_capacity(n * 2);
    let mut b = Vec::with_capacity(n * 2);
    for i in 0..n {
        put_varint(&mut a, ts[i].wrapping_sub(sts[i]));
        if i == 0 {
            put_varint(&mut b, ts[0].wrapping_sub(sts[0]));
        } else {
            put_varint(&mut b, sts[i].wrapping_sub(sts[i - 1]));
        }
    }
    if b.len() < a.len() {
        out.push(1);
        out.extend_from_slice(&b);
    } else {
        out.push(0);
        out.extend_from_slice(&a);
    }
    out
}

/// Splits a start-timestamp chunk into its inner chunk data and the raw
/// start-timestamp column (mode byte first).
pub fn split_st_chunk(data: &[u8]) -> Result<(&[u8], &[u8]), Error> {
    let mut pos = 0;
    let len = get_uvarint(data, &mut pos).ok_or_else(|| bad("bad inner length"))?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| pos.checked_add(l))
        .filter(|&e| e <= data.len())
        .ok_or_else(|| bad("inner chunk longer than the data"))?;
    Ok((&data[pos..end], &data[end..]))
}

/// Decodes the start-timestamp column `col` for samples at `ts`. Every
/// sample must have an entry and nothing may follow the last one.
pub fn decode_st_column(col: &[u8], ts: &[i64]) -> Result<Vec<i64>, Error> {
    let (&mode, rest) = col.split_first().ok_or_else(|| bad("missing mode byte"))?;
    if mode > 1 {
        return Err(bad("unknown mode"));
    }
    let mut out: Vec<i64> = Vec::with_capacity(ts.len());
    let mut pos = 0;
    for &t in ts {
        let e = get_varint(rest, &mut pos).ok_or_else(|| bad("truncated column"))?;
        let st = match out.last() {
            Some(prev) if mode == 1 => prev.wrapping_add(e),
            _ => t.wrapping_sub(e),
        };
        out.push(st);
    }
    if pos != rest.len() {
        return Err(bad("trailing bytes after the column"));
    }
    Ok(out)
}

/// Fuzz entry point: decodes `data` as a start-timestamp chunk of the
/// encoding byte `enc` (any byte) and checks the invariants a decoder
/// promises (no panic, one start timestamp per sample, re-encoding
/// round-trips). Returns whether the input decoded.
pub fn fuzz_st_decode(enc: u8, data: &[u8]) -> bool {
    let Some(e) = Encoding::from_u8(enc).filter(|e| e.inner() != *e) else {
        return false;
    };
    let Ok((inner, col)) = split_st_chunk(data) else {
        return false;
    };
    let ts: Vec<i64> = match e.inner() {
        Encoding::Xor => match super::decode_xor(inner) {
            Ok(v) => v.into_iter().map(|x| x.0).collect(),
            Err(_) => return false,
        },
        Encoding::Histogram => match super::decode_histogram(inner) {
            Ok(v) => v.into_iter().map(|x| x.0).collect(),
            Err(_) => return false,
        },
        _ => match super::decode_float_histogram(inner) {
            Ok(v) => v.into_iter().map(|x| x.0).collect(),
            Err(_) => return false,
        },
    };
    let Ok(sts) = decode_st_column(col, &ts) else {
        return false;
    };
    assert_eq!(sts.len(), ts.len());
    let again = encode_st_chunk(inner, &ts, &sts);
    let (i2, c2) = split_st_chunk(&again).expect("re-encoded chunk splits");
    assert_eq!(i2, inner);
    assert_eq!(
        decode_st_column(c2, &ts).expect("re-encoded column decodes"),
        sts
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunks::{XorAppender, decode_xor};

    fn xor(ts: &[i64]) -> Vec<u8> {
        let mut a = XorAppender::new();
        for &t in ts {
            a.append(t, t as f64);
        }
        a.into_bytes()
    }

    #[test]
    fn round_trips_both_modes() {
        let ts: Vec<i64> = (1..=50).map(|i| i * 15_000).collect();
        // Cumulative: one start for all (delta mode wins).
        let cum = vec![1000; ts.len()];
        // Delta: each starts at the previous sample (t - st mode wins).
        let del: Vec<i64> = ts.iter().map(|t| t - 15_000).collect();
        // Mixed, with unknown (0) starts.
        let mix: Vec<i64> = ts
            .iter()
            .enumerate()
            .map(|(i, t)| if i % 3 == 0 { 0 } else { t - 7 })
            .collect();
        let data = xor(&ts);
        for sts in [cum, del, mix] {
            let c = encode_st_chunk(&data, &ts, &sts);
            let (inner, col) = split_st_chunk(&c).unwrap();
            assert_eq!(inner, &data[..]);
            assert_eq!(decode_st_column(col, &ts).unwrap(), sts);
            assert!(fuzz_st_decode(Encoding::XorSt as u8, &c));
        }
        // Cumulative and delta columns cost one byte per sample.
        let c = encode_st_chunk(&data, &ts, &vec![1000; ts.len()]);
        assert!(c.len() <= data.len() + 2 + 1 + 3 + ts.len());
        assert_eq!(c[c.len() - ts.len() - 3], 1, "st-delta mode");
    }

    /// Pinned bytes of the example in docs/format/chunks.md section 5.
    #[test]
    fn known_bytes() {
        let ts = [1000, 2000, 3000];
        let data = xor(&ts);
        assert_eq!(decode_xor(&data).unwrap().len(), 3);
        let c = encode_st_chunk(&data, &ts, &[0, 1000, 2000]);
        let mut want = vec![data.len() as u8];
        want.extend_from_slice(&data);
        // t - st = 1000, 1000, 1000 (3 × 2 bytes) beats 1000, +1000, +1000.
        want.extend_from_slice(&[0x00, 0xD0, 0x0F, 0xD0, 0x0F, 0xD0, 0x0F]);
        assert_eq!(c, want);
        let c = encode_st_chunk(&data, &ts, &[500, 500, 500]);
        let tail = &c[1 + data.len()..];
        // st deltas: t0 - st0 = 500, then 0, 0.
        assert_eq!(tail, &[0x01, 0xE8, 0x07, 0x00, 0x00]);
    }

    #[test]
    fn corrupt_inputs_are_errors() {
        let ts = [1000, 2000];
        let data = xor(&ts);
        let c = encode_st_chunk(&data, &ts, &[1, 2]);
        for cut in 0..c.len() {
            let r = split_st_chunk(&c[..cut]).and_then(|(i, col)| {
                let ts: Vec<i64> = decode_xor(i)?.into_iter().map(|x| x.0).collect();
                decode_st_column(col, &ts)
            });
            assert!(r.is_err(), "prefix of {cut} bytes decoded");
        }
        let mut bad_mode = c.clone();
        bad_mode[1 + data.len()] = 7;
        let (_, col) = split_st_chunk(&bad_mode).unwrap();
        assert!(decode_st_column(col, &ts).is_err());
        assert!(split_st_chunk(&[0xff; 11]).is_err());
    }
}
