//! Tests of the compact chunk codec and of reading any encoding: round
//! trips (bit-exact, special values, extreme timestamps), the decimal path
//! and its size, hand-checked bytes, corrupt input, `ChunkIter` seek and
//! the conversion to XOR chunks.

use super::compact::decimal_of;
use super::*;
use proptest::prelude::*;
use stratus_model::STALE_NAN_BITS;

const COMPACT: u8 = Encoding::Compact as u8;

fn bits_of(samples: &[(i64, f64)]) -> Vec<(i64, u64)> {
    samples.iter().map(|&(t, v)| (t, v.to_bits())).collect()
}

fn round_trip(samples: &[(i64, f64)]) -> Vec<u8> {
    let data = encode_compact(samples);
    let back = decode_compact(&data).unwrap();
    assert_eq!(bits_of(&back), bits_of(samples));
    let lazy: Vec<_> = ChunkIter::new(COMPACT, data.as_slice()).collect();
    assert_eq!(bits_of(&lazy), bits_of(samples));
    assert_eq!(
        chunk_num_samples_any(COMPACT, &data).unwrap(),
        samples.len()
    );
    fuzz_compact_decode(&data);
    data
}

/// Scrape-like timestamps: 15 s with a little jitter.
fn scrape_times(n: usize) -> Vec<i64> {
    (0..n as i64)
        .map(|i| 1_700_000_000_000 + i * 15_000 + [0, 0, 1, 0, -2, 0, 0, 3][i as usize % 8])
        .collect()
}

#[test]
fn decimal_conversion() {
    assert_eq!(decimal_of(0.0), Some((0, 0)));
    assert_eq!(decimal_of(-0.0), None);
    assert_eq!(decimal_of(37.2), Some((372, -1)));
    assert_eq!(decimal_of(0.25), Some((25, -2)));
    assert_eq!(decimal_of(1234.5), Some((12345, -1)));
    assert_eq!(decimal_of(1200.0), Some((12, 2)));
    assert_eq!(decimal_of(-7.0), Some((-7, 0)));
    assert_eq!(decimal_of(1e20), Some((1, 20)));
    assert_eq!(decimal_of(1.5e-9), Some((15, -10)));
    assert_eq!(decimal_of(0.1 + 0.2), None);
    assert_eq!(decimal_of(f64::NAN), None);
    assert_eq!(decimal_of(f64::INFINITY), None);
    assert_eq!(decimal_of(f64::MIN_POSITIVE), None);
    assert_eq!(
        decimal_of(9_007_199_254_740_991.0),
        Some((9_007_199_254_740_991, 0))
    );
    assert_eq!(decimal_of(9_007_199_254_740_993.0), None);
}

#[test]
fn empty_and_single() {
    assert_eq!(round_trip(&[]), vec![COMPACT_VERSION, 0, 0]);
    round_trip(&[(0, 0.0)]);
    round_trip(&[(-5, -0.0)]);
    round_trip(&[(i64::MIN, f64::from_bits(STALE_NAN_BITS))]);
    round_trip(&[(i64::MAX, 1.5)]);
}

/// Hand-checked bytes of a small uncompressed decimal chunk.
#[test]
fn known_bytes_decimal() {
    let data = encode_compact(&[(1000, 1.5), (2000, 2.0), (3000, 2.5)]);
    #[rustfmt::skip]
    let want = [
        0x01,             // version
        0x08,             // flags: uncompressed, decimal, delta-of-delta
        0x03,             // 3 samples
        0xD0, 0x0F,       // varint(1000) = zigzag 2000
        0xE8, 0x07,       // uvarint(1000)
        0x00,             // dod 0
        0xFF,             // exponent -1
        0x1E,             // varint(15): 1.5 = 15e-1
        0x0A,             // varint(+5): delta
        0x00,             // varint(0): delta-of-delta
        0x00,             // no exceptions
    ];
    assert_eq!(data, want);
    assert_eq!(
        bits_of(&decode_compact(&want).unwrap()),
        bits_of(&[(1000, 1.5), (2000, 2.0), (3000, 2.5)])
    );
}

/// Sparse columns and grid timestamps, hand-checked.
#[test]
fn known_bytes_sparse_and_grid() {
    let s: Vec<(i64, f64)> = (0..10).map(|i| (1000 + i * 15_000, 7.0)).collect();
    #[rustfmt::skip]
    let want = [
        0x01, 0x60, 0x0A, // version, flags: ts sparse, values sparse; 10 samples
        0xD0, 0x0F,       // t0 = 1000
        0x98, 0x75,       // uvarint(15000)
        0x00,             // 8 delta-of-deltas, all zero: bitmap, no varints
        0x00,             // exponent 0
        0x0E,             // m0 = 7
        0x00, 0x00,       // 9 deltas, all zero: bitmap
        0x00,             // no exceptions
    ];
    assert_eq!(round_trip(&s), want);

    // A jittered sample and a missed scrape: grid residuals win.
    let ts = [0, 1000, 2001, 3000, 5000, 6000, 7000, 8000, 9000, 10_000];
    let s: Vec<(i64, f64)> = ts.iter().map(|&t| (t, 1.0)).collect();
    #[rustfmt::skip]
    let want = [
        0x01, 0x70, 0x0A, // flags: grid, ts sparse, values sparse
        0x00,             // t0 = 0
        0xE8, 0x07,       // interval 1000
        0x00,             // origin offset 0
        0x0A, 0x00,       // residual bitmap: entries 1 and 3 (samples 2 and 4) non-zero
        0x02,             // +1 (2001 vs 2000)
        0xD0, 0x0F,       // +1000 (5000 vs 4000; the anchor moves to 5000)
        0x00,             // exponent 0
        0x02,             // m0 = 1
        0x00, 0x00,       // 9 zero deltas
        0x00,             // no exceptions
    ];
    assert_eq!(round_trip(&s), want);
}

/// Exceptions and the raw (XOR byte plane) mode, hand-checked.
#[test]
fn known_bytes_exception_and_raw() {
    let stale = f64::from_bits(STALE_NAN_BITS);
    let data = encode_compact(&[(0, 1.0), (1, stale)]);
    #[rustfmt::skip]
    let want = [
        0x01, 0x00, 0x02, // version, flags, 2 samples
        0x00, 0x01,       // t0 = 0, delta 1
        0x00,             // exponent 0
        0x02, 0x00,       // m0 = 1, delta 0 (the exception repeats m)
        0x01,             // 1 exception
        0x01,             // at index 1
        0x7F, 0xF0, 0, 0, 0, 0, 0, 0x02, // stale marker bits
    ];
    assert_eq!(data, want);
    let data = encode_compact(&[(0, f64::NAN)]);
    let mut want = vec![0x01, 0x02, 0x01, 0x00];
    want.extend_from_slice(&f64::NAN.to_bits().to_be_bytes());
    assert_eq!(data, want);
    assert!(decode_compact(&data).unwrap()[0].1.is_nan());
}

#[test]
fn decimal_path_is_small() {
    let ts = scrape_times(480);
    // Counter with small integer increments.
    let mut c = 1_000_000.0;
    let counter: Vec<(i64, f64)> = ts
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            c += (i * 7 % 13) as f64;
            (t, c)
        })
        .collect();
    // Gauge with one decimal.
    let gauge: Vec<(i64, f64)> = ts
        .iter()
        .enumerate()
        .map(|(i, &t)| (t, (300 + (i * 37 % 21) as i64 - 10) as f64 / 10.0))
        .collect();
    // CPU-seconds-like counter: ticks / 100.
    let mut ticks = 123_456_789i64;
    let cpu: Vec<(i64, f64)> = ts
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            ticks += 1490 + (i as i64 * 17 % 21);
            (t, ticks as f64 / 100.0)
        })
        .collect();
    for (name, s) in [("counter", &counter), ("gauge", &gauge), ("cpu", &cpu)] {
        let data = round_trip(s);
        let flags = data[1];
        assert_eq!(flags & 0x06, 0, "{name}: decimal mode");
        let per = data.len() as f64 / s.len() as f64;
        assert!(per < 1.0, "{name}: {per} bytes/sample");
    }
    // Constant series: almost nothing.
    let constant: Vec<(i64, f64)> = ts.iter().map(|&t| (t, 1.0)).collect();
    assert!(round_trip(&constant).len() < 60);
    // A stale marker at the end keeps the decimal path.
    let mut with_stale = gauge.clone();
    with_stale.push((ts[479] + 15_000, f64::from_bits(STALE_NAN_BITS)));
    let data = round_trip(&with_stale);
    assert_eq!(data[1] & 0x06, 0);
}

#[test]
fn non_decimal_values_fall_back() {
    let mut x = 0.1f64;
    let s: Vec<(i64, f64)> = scrape_times(300)
        .into_iter()
        .map(|t| {
            x = x * 1.000_1 + 0.3;
            (t, x)
        })
        .collect();
    let data = round_trip(&s);
    assert_eq!(data[1] & 0x06, 0x02, "raw mode");
    // Mostly decimal with a few binary fractions: exceptions.
    let mut mixed: Vec<(i64, f64)> = scrape_times(300)
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i as f64))
        .collect();
    mixed[10].1 = 0.1 + 0.2;
    mixed[200].1 = f64::INFINITY;
    let data = round_trip(&mixed);
    assert_eq!(data[1] & 0x06, 0);
    // Values whose common exponent overflows the mantissa.
    round_trip(&[(1, 1e-20), (2, 1e15), (3, 5.0), (4, 1e-20)]);
}

#[test]
fn corrupt_headers_are_errors() {
    let good = encode_compact(&[(1000, 1.5), (2000, 2.0), (3000, 2.5)]);
    let with = |i: usize, b: u8| {
        let mut d = good.clone();
        d[i] = b;
        decode_compact(&d)
    };
    assert!(matches!(
        decode_compact(&[]),
        Err(Error::CompactTruncated { .. })
    ));
    assert!(matches!(
        with(0, 2),
        Err(Error::CompactVersion { version: 2 })
    ));
    assert!(matches!(with(1, 0x80), Err(Error::CompactFlags { .. })));
    assert!(matches!(with(1, 0x42), Err(Error::CompactFlags { .. })));
    assert!(matches!(with(1, 0x04), Err(Error::CompactFlags { .. })));
    assert!(matches!(with(1, 0x0A), Err(Error::CompactFlags { .. })));
    assert!(matches!(
        with(1, 0x01),
        Err(Error::CompactBodyLength { .. })
    ));
    assert!(matches!(
        decode_compact(&[1, 1, 3, 10, 1, 2, 3, 4]),
        Err(Error::CompactDecompress { .. })
    ));
    assert!(matches!(with(8, 30), Err(Error::CompactExponent { .. })));
    assert!(matches!(
        decode_compact(&[1, 0, 0xFF, 0xFF, 0x7F]),
        Err(Error::CompactTooManySamples { .. })
    ));
    // Count and body length disagree.
    assert!(with(2, 4).is_err());
    assert!(matches!(with(2, 100), Err(Error::CompactBodyLength { .. })));
    let mut long = good.clone();
    long.push(0);
    assert!(matches!(
        decode_compact(&long),
        Err(Error::CompactTrailing { .. })
    ));
    // Sparse columns: padding bits and zero "non-zero" entries.
    let sparse = encode_compact(&(0..10).map(|i| (i * 10, 7.0)).collect::<Vec<_>>());
    assert_eq!(sparse[1], 0x60);
    let mut bad = sparse.clone();
    bad[9] = 0x80; // value bitmap: bit of entry 15 of 9
    assert!(matches!(
        decode_compact(&bad),
        Err(Error::CompactBitmap { .. })
    ));
    let mut bad = sparse.clone();
    bad[8] = 0x01; // marks delta 0 non-zero: the varint read is 0x00
    assert!(matches!(
        decode_compact(&bad),
        Err(Error::CompactBitmap { .. })
    ));
    // Non-increasing timestamps.
    assert!(matches!(with(5, 0), Err(Error::Unordered { sample: 1 })));
    // Exception index out of range.
    let mut exc = encode_compact(&[(0, 1.0), (1, f64::NAN)]);
    exc[9] = 2;
    assert!(matches!(
        decode_compact(&exc),
        Err(Error::CompactException { .. })
    ));
    // Mantissa out of range: 2^53 as the first mantissa.
    let mut m = vec![1, 0, 1, 0, 0];
    let mut tmp = Vec::new();
    let mut x = 1u64 << 54; // zigzag(2^53)
    while x >= 0x80 {
        tmp.push((x as u8) | 0x80);
        x >>= 7;
    }
    tmp.push(x as u8);
    m.extend_from_slice(&tmp);
    m.push(0);
    assert!(matches!(
        decode_compact(&m),
        Err(Error::CompactMantissa { .. })
    ));
    // Declared decompressed size must be plausible.
    assert!(matches!(
        decode_compact(&[1, 1, 100, 0xFF, 0xFF, 0xFF, 0x7F, 0x28, 0xB5]),
        Err(Error::CompactBodyLength { .. })
    ));
    // Unknown encodings.
    assert!(matches!(
        ChunkIter::new(0x42, &good[..]).error(),
        Some(Error::UnknownEncoding { encoding: 0x42 })
    ));
    assert!(chunk_num_samples_any(4, &good).is_err());
}

#[test]
fn every_truncation_is_an_error() {
    let s: Vec<(i64, f64)> = scrape_times(200)
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, if i == 50 { f64::NAN } else { i as f64 * 0.5 }))
        .collect();
    let data = round_trip(&s);
    for len in 0..data.len() {
        assert!(decode_compact(&data[..len]).is_err(), "prefix {len}");
        let it = ChunkIter::new(COMPACT, &data[..len]);
        assert!(it.error().is_some());
    }
}

#[test]
fn chunk_iter_seek_semantics() {
    let s: Vec<(i64, f64)> = (0..10).map(|i| (i * 10, i as f64)).collect();
    for enc in [Encoding::Xor as u8, COMPACT] {
        let data = if enc == COMPACT {
            encode_compact(&s)
        } else {
            to_xor_chunks(COMPACT, &encode_compact(&s), 120).unwrap()[0]
                .2
                .clone()
        };
        let mut it = ChunkIter::new(enc, data.as_slice());
        assert_eq!(it.seek(-5), Some((0, 0.0)));
        assert_eq!(it.seek(0), Some((0, 0.0)), "last returned sample counts");
        assert_eq!(it.next(), Some((10, 1.0)));
        assert_eq!(it.seek(35), Some((40, 4.0)));
        assert_eq!(it.seek(20), Some((40, 4.0)), "never backwards");
        assert_eq!(it.next(), Some((50, 5.0)));
        assert_eq!(it.seek(90), Some((90, 9.0)));
        assert_eq!(it.seek(91), None);
        assert_eq!(it.next(), None);
        assert!(it.error().is_none());
    }
}

#[test]
fn xor_conversion() {
    let s: Vec<(i64, f64)> = scrape_times(1000)
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, (i % 17) as f64))
        .collect();
    let data = encode_compact(&s);
    let xor = to_xor_chunks(COMPACT, &data, 120).unwrap();
    assert_eq!(xor.len(), 9);
    let mut back = Vec::new();
    for (mint, maxt, c) in &xor {
        let part = decode_xor(c).unwrap();
        assert!(part.len() <= 120);
        assert_eq!((part[0].0, part[part.len() - 1].0), (*mint, *maxt));
        back.extend(part);
    }
    assert_eq!(bits_of(&back), bits_of(&s));
    // A small XOR chunk passes through byte for byte.
    let x = &xor[0].2;
    assert_eq!(&to_xor_chunks(1, x, 120).unwrap()[0].2, x);
    assert_eq!(to_xor_chunks(1, x, 50).unwrap().len(), 3);
    assert!(to_xor_chunks(COMPACT, &data[..10], 120).is_err());
    assert!(
        to_xor_chunks(COMPACT, &encode_compact(&[]), 120)
            .unwrap()
            .is_empty()
    );
    assert_eq!(decode_any(COMPACT, &data).unwrap().len(), 1000);
}

/// A tiny deterministic PRNG for the fuzz-style tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn fuzz_random_and_mutated_inputs() {
    let mut rng = Rng(0x0bad_cafe_1234_5678);
    // Random bytes behind plausible headers.
    for _ in 0..3000 {
        let len = (rng.next() % 80) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if len >= 3 {
            data[0] = 1;
            data[1] &= 0x0f;
            data[2] &= 0x3f;
        }
        fuzz_compact_decode(&data);
    }
    // Bit flips, byte changes, truncations and insertions in valid chunks.
    let stale = f64::from_bits(STALE_NAN_BITS);
    let seeds: Vec<Vec<u8>> = vec![
        encode_compact(&[(1000, 1.5), (2000, 2.0), (3000, 2.5)]),
        encode_compact(
            &scrape_times(300)
                .into_iter()
                .enumerate()
                .map(|(i, t)| (t, (i * i % 97) as f64 * 0.25))
                .collect::<Vec<_>>(),
        ),
        encode_compact(&[(i64::MIN, f64::NAN), (0, stale), (i64::MAX, -0.0)]),
        encode_compact(
            &(0..64)
                .map(|i| (i * 1000, f64::from_bits(rng.next())))
                .collect::<Vec<_>>(),
        ),
        encode_compact(&[(5, 1.0), (6, 0.1 + 0.2), (7, 3.0), (8, f64::INFINITY)]),
    ];
    for seed in &seeds {
        fuzz_compact_decode(seed);
        for _ in 0..600 {
            let mut d = seed.clone();
            match rng.next() % 4 {
                0 => {
                    let bit = (rng.next() % (d.len() as u64 * 8)) as usize;
                    d[bit / 8] ^= 1 << (bit % 8);
                }
                1 => {
                    let i = (rng.next() % d.len() as u64) as usize;
                    d[i] = rng.next() as u8;
                }
                2 => d.truncate((rng.next() % d.len() as u64) as usize),
                _ => {
                    let i = (rng.next() % (d.len() as u64 + 1)) as usize;
                    d.insert(i, rng.next() as u8);
                }
            }
            fuzz_compact_decode(&d);
        }
    }
}

fn special_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::from_bits(STALE_NAN_BITS)),
        Just(f64::NAN),
        Just(-f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(0.0),
        Just(f64::MIN_POSITIVE),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(5e-324),
        any::<u64>().prop_map(|b| f64::from_bits(b | 0x7ff0_0000_0000_0001)), // NaN payloads
    ]
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => any::<u64>().prop_map(f64::from_bits),
        3 => (-100_000i64..100_000, -4i32..3).prop_map(|(m, e)| {
            if e >= 0 { m as f64 * 10f64.powi(e) } else { m as f64 / 10f64.powi(-e) }
        }),
        1 => special_value(),
    ]
}

/// Sorted unique timestamps: negative, huge gaps and scrape-like runs.
fn series() -> impl Strategy<Value = Vec<(i64, f64)>> {
    (
        any::<i64>(),
        proptest::collection::vec(
            (
                prop_oneof![
                    4 => 14_990u64..15_010,
                    1 => 1u64..3,
                    1 => any::<u64>().prop_map(|g| g % (u64::MAX / 64) + 1),
                ],
                value(),
            ),
            0..400,
        ),
    )
        .prop_map(|(start, steps)| {
            let mut out = Vec::with_capacity(steps.len());
            let mut t = start;
            for (gap, v) in steps {
                out.push((t, v));
                match t.checked_add_unsigned(gap) {
                    Some(n) => t = n,
                    None => break,
                }
            }
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn round_trip_arbitrary(samples in series()) {
        let data = encode_compact(&samples);
        let back = decode_compact(&data).unwrap();
        prop_assert_eq!(bits_of(&back), bits_of(&samples));
        prop_assert_eq!(chunk_num_samples_any(COMPACT, &data).unwrap(), samples.len());
        let lazy: Vec<_> = ChunkIter::new(COMPACT, data.as_slice()).collect();
        prop_assert_eq!(bits_of(&lazy), bits_of(&samples));
        let mut back = Vec::new();
        for (_, _, c) in to_xor_chunks(COMPACT, &data, 120).unwrap() {
            back.extend(decode_xor(&c).unwrap());
        }
        prop_assert_eq!(bits_of(&back), bits_of(&samples));
    }

    #[test]
    fn round_trip_decimal(start in -1_000_000_000_000i64..1_000_000_000_000,
                          ms in proptest::collection::vec(-1_000_000i64..1_000_000, 1..500),
                          e in -6i32..4) {
        let samples: Vec<(i64, f64)> = ms.iter().enumerate().map(|(i, &m)| {
            let v = if e >= 0 { m as f64 * 10f64.powi(e) } else { m as f64 / 10f64.powi(-e) };
            (start + i as i64 * 15_000, v)
        }).collect();
        let data = encode_compact(&samples);
        prop_assert_eq!(data[1] & 0x06, 0, "decimal mode");
        let back = decode_compact(&data).unwrap();
        prop_assert_eq!(bits_of(&back), bits_of(&samples));
    }
}
