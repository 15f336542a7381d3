//! Tests of the XOR chunk codec: hand-checked bytes, a bit-by-bit model
//! encoder written straight from the spec, round trips, resume, seek and
//! corrupt input.

use super::*;
use proptest::prelude::*;
use stratus_model::STALE_NAN_BITS;

fn encode(samples: &[(i64, f64)]) -> XorAppender {
    let mut app = XorAppender::new();
    for &(t, v) in samples {
        app.append(t, v);
    }
    app
}

fn bits_of(samples: &[(i64, f64)]) -> Vec<(i64, u64)> {
    samples.iter().map(|&(t, v)| (t, v.to_bits())).collect()
}

/// Bit-by-bit encoder transcribed from the format description (Prometheus
/// `xor.go` semantics), independent of the production writer.
fn model_encode(samples: &[(i64, f64)]) -> Vec<u8> {
    let mut bits: Vec<bool> = Vec::new();
    let push = |bits: &mut Vec<bool>, v: u64, n: u32| {
        for i in (0..n).rev() {
            bits.push((v >> i) & 1 == 1);
        }
    };
    let varint_bytes = |mut x: u64| {
        let mut out = Vec::new();
        loop {
            if x < 128 {
                out.push(x as u8);
                return out;
            }
            out.push((x & 127) as u8 | 128);
            x /= 128;
        }
    };
    let (mut pt, mut pv, mut pdelta) = (0i64, 0u64, 0u64);
    let (mut lead, mut trail) = (255u32, 0u32);
    for (i, &(t, v)) in samples.iter().enumerate() {
        let v = v.to_bits();
        if i == 0 {
            let zz = if t < 0 {
                (!(t as u64)) * 2 + 1
            } else {
                (t as u64) * 2
            };
            for b in varint_bytes(zz) {
                push(&mut bits, u64::from(b), 8);
            }
            push(&mut bits, v, 64);
        } else {
            let delta = t.wrapping_sub(pt) as u64;
            if i == 1 {
                for b in varint_bytes(delta) {
                    push(&mut bits, u64::from(b), 8);
                }
            } else {
                let dod = delta.wrapping_sub(pdelta) as i64;
                if dod == 0 {
                    push(&mut bits, 0, 1);
                } else if (-8191..=8192).contains(&dod) {
                    push(&mut bits, 0b10, 2);
                    push(&mut bits, dod as u64, 14);
                } else if (-65535..=65536).contains(&dod) {
                    push(&mut bits, 0b110, 3);
                    push(&mut bits, dod as u64, 17);
                } else if (-524_287..=524_288).contains(&dod) {
                    push(&mut bits, 0b1110, 4);
                    push(&mut bits, dod as u64, 20);
                } else {
                    push(&mut bits, 0b1111, 4);
                    push(&mut bits, dod as u64, 64);
                }
            }
            pdelta = delta;
            let x = v ^ pv;
            if x == 0 {
                push(&mut bits, 0, 1);
            } else {
                push(&mut bits, 1, 1);
                let l = x.leading_zeros().min(31);
                let tr = x.trailing_zeros();
                if lead != 255 && l >= lead && tr >= trail {
                    push(&mut bits, 0, 1);
                    push(&mut bits, x >> trail, 64 - lead - trail);
                } else {
                    lead = l;
                    trail = tr;
                    push(&mut bits, 1, 1);
                    push(&mut bits, u64::from(l), 5);
                    let sig = 64 - l - tr;
                    push(&mut bits, u64::from(sig % 64), 6);
                    push(&mut bits, x >> tr, sig);
                }
            }
        }
        pt = t;
        pv = v;
    }
    let mut out = (samples.len() as u16).to_be_bytes().to_vec();
    for byte in bits.chunks(8) {
        let mut b = 0u8;
        for (i, &bit) in byte.iter().enumerate() {
            if bit {
                b |= 0x80 >> i;
            }
        }
        out.push(b);
    }
    out
}

#[test]
fn known_bytes_three_samples() {
    // Derived by hand from the spec:
    // count 3 | varint(zigzag 1000 = 2000) = D0 0F | 1.0 = 3FF0...
    // | uvarint(1000) = E8 07
    // | 2.0: '1' '1' leading=1 '00001' sig=11 '001011' '11111111111'
    // | dod 0 '0' | 3.0: '1' '1' leading=12 '01100' sig=1 '000001' '1' | pad.
    let expected = [
        0x00, 0x03, 0xD0, 0x0F, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0, 0xE8, 0x07, 0xC2, 0x5F, 0xFF, 0x6C,
        0x06,
    ];
    let samples = [(1000, 1.0), (2000, 2.0), (3000, 3.0)];
    let app = encode(&samples);
    assert_eq!(app.bytes(), expected);
    assert_eq!(model_encode(&samples), expected);
    assert_eq!(bits_of(&decode_xor(&expected).unwrap()), bits_of(&samples));
}

#[test]
fn framing_example_crc() {
    // The segment record example of docs/format/chunks.md section 2.4.
    let data = encode(&[(1000, 1.0), (2000, 2.0), (3000, 3.0)]).into_bytes();
    let mut covered = vec![Encoding::Xor.as_u8()];
    covered.extend_from_slice(&data);
    assert_eq!(data.len(), 0x13);
    assert_eq!(crc32c::crc32c(&covered), 0x7A75_E4E8);
}

#[test]
fn known_bytes_buckets_and_window_reuse() {
    // t=-1 (zigzag 1), 0.0 | +15: 1.0 ('11' lead 2, sig 10, 0x3FF)
    // | dod 0, 0.5 ('10' reusing the window: 10 bits 0000000001)
    // | dod +100 ('10' + 14 bits), 0.5 again ('0')
    // | dod -5 ('10' + 14 bits two's complement), -0.5 ('11' lead 0, sig 1).
    let expected = [
        0x00, 0x05, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0x0F, 0xC4, 0x57, 0xFE, 0x80, 0x18, 0x06, 0x45,
        0xFF, 0xDE, 0x00, 0x60,
    ];
    let samples = [(-1, 0.0), (14, 1.0), (29, 0.5), (144, 0.5), (254, -0.5)];
    assert_eq!(encode(&samples).bytes(), expected);
    assert_eq!(model_encode(&samples), expected);
    assert_eq!(bits_of(&decode_xor(&expected).unwrap()), bits_of(&samples));
}

#[test]
fn empty_chunk() {
    let app = XorAppender::new();
    assert_eq!(app.bytes(), [0, 0]);
    assert_eq!(app.num_samples(), 0);
    assert_eq!(app.first_t(), None);
    assert_eq!(app.last_t(), None);
    assert_eq!(app.last_v(), None);
    assert_eq!(decode_xor(app.bytes()).unwrap(), vec![]);
    assert_eq!(chunk_num_samples(app.bytes()).unwrap(), 0);
    assert!(matches!(
        chunk_num_samples(&[7]),
        Err(Error::MissingHeader { len: 1 })
    ));
    let mut it = XorIterator::new(Vec::<u8>::new());
    assert_eq!(it.next(), None);
    assert!(matches!(it.error(), Some(Error::MissingHeader { len: 0 })));
}

#[test]
fn accessors_and_encoding() {
    let app = encode(&[(-5, 1.5), (10, f64::NAN), (20, -0.0)]);
    assert_eq!(app.num_samples(), 3);
    assert_eq!(app.first_t(), Some(-5));
    assert_eq!(app.last_t(), Some(20));
    assert_eq!(app.last_v().unwrap().to_bits(), (-0.0f64).to_bits());
    assert_eq!(chunk_num_samples(app.bytes()).unwrap(), 3);
    let owned = app.clone().into_bytes();
    assert_eq!(owned, app.bytes());
    assert_eq!(Encoding::from_u8(1), Some(Encoding::Xor));
    assert_eq!(Encoding::from_u8(0), None);
    assert_eq!(Encoding::from_u8(4), None);
    assert_eq!(Encoding::Xor.as_u8(), 1);
    assert!(std::mem::size_of::<XorAppender>() <= 56);
}

#[test]
fn dod_bucket_boundaries() {
    // Deltas chosen so that dod hits every bucket edge (both signs).
    let dods = [
        8192i64, -8191, 8193, -8192, 65536, -65535, 65537, -65536, 524_288, -524_287, 524_289,
        -524_288, 0, 1, -1,
    ];
    let mut samples = vec![(0i64, 0.0), (1_000_000, 1.0)];
    let mut delta = 1_000_000i64;
    for (i, dod) in dods.iter().enumerate() {
        delta += dod;
        let t = samples.last().unwrap().0 + delta;
        samples.push((t, i as f64));
    }
    let app = encode(&samples);
    assert_eq!(app.bytes(), model_encode(&samples));
    assert_eq!(
        bits_of(&decode_xor(app.bytes()).unwrap()),
        bits_of(&samples)
    );
}

#[test]
fn extreme_timestamps() {
    let samples = [
        (i64::MIN, 1.0),
        (i64::MIN + 1, 2.0),
        (-1, 3.0),
        (0, 4.0),
        (i64::MAX - 1, 5.0),
        (i64::MAX, 6.0),
    ];
    let app = encode(&samples);
    assert_eq!(app.bytes(), model_encode(&samples));
    assert_eq!(app.first_t(), Some(i64::MIN));
    assert_eq!(
        bits_of(&decode_xor(app.bytes()).unwrap()),
        bits_of(&samples)
    );
}

#[test]
fn special_values_are_bit_exact() {
    let specials = [
        f64::from_bits(STALE_NAN_BITS),
        f64::NAN,
        f64::from_bits(0xfff8_dead_beef_0001),
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        0.0,
        f64::MIN_POSITIVE,
        f64::from_bits(1),
        f64::MAX,
        f64::from_bits(STALE_NAN_BITS),
    ];
    let samples: Vec<(i64, f64)> = specials
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as i64 * 15_000, v))
        .collect();
    let app = encode(&samples);
    assert_eq!(app.bytes(), model_encode(&samples));
    assert_eq!(
        bits_of(&decode_xor(app.bytes()).unwrap()),
        bits_of(&samples)
    );
}

#[test]
fn full_chunk() {
    let samples: Vec<(i64, f64)> = (0..MAX_SAMPLES_PER_CHUNK)
        .map(|i| (i as i64 * 15_000 + (i % 3) as i64, (i / 7) as f64))
        .collect();
    let app = encode(&samples);
    assert_eq!(chunk_num_samples(app.bytes()).unwrap(), u16::MAX);
    let decoded = decode_xor(app.bytes()).unwrap();
    assert_eq!(bits_of(&decoded), bits_of(&samples));
    let resumed = XorAppender::from_bytes(app.bytes().to_vec()).unwrap();
    assert_eq!(resumed.num_samples(), MAX_SAMPLES_PER_CHUNK);
    assert_eq!(resumed.last_t(), app.last_t());
}

#[test]
fn seek_behaviour() {
    let samples: Vec<(i64, f64)> = (0..10).map(|i| (i * 10, i as f64)).collect();
    let app = encode(&samples);
    let mut it = XorIterator::new(app.bytes());
    assert_eq!(it.seek(-100), Some((0, 0.0)));
    // The current sample satisfies the target again: no movement.
    assert_eq!(it.seek(0), Some((0, 0.0)));
    assert_eq!(it.seek(15), Some((20, 2.0)));
    assert_eq!(it.seek(20), Some((20, 2.0)));
    // Never backwards.
    assert_eq!(it.seek(5), Some((20, 2.0)));
    assert_eq!(it.next(), Some((30, 3.0)));
    assert_eq!(it.seek(30), Some((30, 3.0)));
    assert_eq!(it.seek(90), Some((90, 9.0)));
    assert_eq!(it.next(), None);
    assert_eq!(it.seek(91), None);
    assert!(it.error().is_none());

    let mut it = XorIterator::new(app.bytes().to_vec());
    assert_eq!(it.seek(1000), None);
    assert_eq!(it.next(), None);

    let mut it = XorIterator::new(XorAppender::new().into_bytes());
    assert_eq!(it.seek(i64::MIN), None);
}

#[test]
fn truncated_inputs_error() {
    let samples: Vec<(i64, f64)> = (0..50)
        .map(|i| (i * 15_000 + (i * i) % 7, (i as f64).sqrt()))
        .collect();
    let full = encode(&samples).into_bytes();
    for len in 0..full.len() {
        let prefix = &full[..len];
        assert!(decode_xor(prefix).is_err(), "prefix {len} decoded");
        assert!(XorAppender::from_bytes(prefix.to_vec()).is_err());
        let mut it = XorIterator::new(prefix);
        let n = it.by_ref().count();
        assert!(n < samples.len());
        assert!(it.error().is_some(), "prefix {len}: no error");
        fuzz_xor_decode(prefix);
    }
}

#[test]
fn header_count_mismatch() {
    let samples = [(1000, 1.0), (2000, 2.0), (3000, 3.0)];
    let mut bytes = encode(&samples).into_bytes();
    bytes[1] = 4;
    assert!(matches!(
        decode_xor(&bytes),
        Err(Error::Truncated {
            sample: 3,
            total: 4,
            ..
        })
    ));
    bytes[1] = 2;
    assert!(matches!(
        decode_xor(&bytes),
        Err(Error::TrailingData { total: 2, .. })
    ));
    // The lazy iterator does not check what follows the last sample.
    assert_eq!(XorIterator::new(&bytes).count(), 2);
}

#[test]
fn trailing_data() {
    // 3 samples end exactly... find a chunk whose bits end on a byte boundary.
    let samples = [(1000, 1.0), (2000, 1.0)];
    let mut bytes = encode(&samples).into_bytes();
    // varint(2000)=2 bytes + 8 + uvarint(1000)=2 bytes + '0' => 1 bit used.
    assert_eq!(bytes.len(), 2 + 2 + 8 + 2 + 1);
    bytes.push(0);
    assert!(decode_xor(&bytes).is_err(), "15 padding bits accepted");
    bytes.pop();
    *bytes.last_mut().unwrap() |= 1;
    assert!(matches!(
        decode_xor(&bytes),
        Err(Error::TrailingData { bits: 7, .. })
    ));

    // A chunk ending on a byte boundary may carry one extra zero byte, as
    // Prometheus before v3.0 sometimes wrote.
    let samples = [(1000, 1.0)];
    let mut bytes = encode(&samples).into_bytes();
    bytes.push(0);
    assert_eq!(decode_xor(&bytes).unwrap().len(), 1);
    let mut app = XorAppender::from_bytes(bytes.clone()).unwrap();
    app.append(2000, 1.0);
    assert_eq!(app.bytes(), encode(&[(1000, 1.0), (2000, 1.0)]).bytes());
    bytes.push(0);
    assert!(decode_xor(&bytes).is_err());
    bytes.pop();
    *bytes.last_mut().unwrap() = 0x80;
    assert!(decode_xor(&bytes).is_err());
}

#[test]
fn invalid_window_is_an_error() {
    // Second value: '11', leading 31, sig 0 (=64): 95 bits do not fit.
    let mut app = XorAppender::new();
    app.append(0, 0.0);
    let mut bytes = app.into_bytes();
    bytes[1] = 2;
    bytes.push(0x01); // uvarint delta 1
    // '1' '1' '11111' '000000' then zeros.
    bytes.extend_from_slice(&[0b1111_1110, 0b0000_0000]);
    bytes.extend_from_slice(&[0; 8]);
    assert!(matches!(
        decode_xor(&bytes),
        Err(Error::InvalidXorWindow {
            leading: 31,
            significant: 64,
            ..
        })
    ));
}

#[test]
fn reuse_before_window_reads_64_bits() {
    // Prometheus' decoder starts with a zero window, so '10' as the first
    // XOR control reads 64 bits (Prometheus' resumed appenders write this).
    let mut app = XorAppender::new();
    app.append(0, 0.0);
    let mut bytes = app.into_bytes();
    bytes[1] = 3;
    bytes.push(0x01);
    let v = 2.5f64.to_bits();
    // '10' + 64 bits of v, then dod '0', value '10' + 64 bits of (v ^ 1.0)
    let mut w = Vec::new();
    let mut free = 0u8;
    bstream::write_bits(&mut w, &mut free, 0b10, 2);
    bstream::write_bits(&mut w, &mut free, v, 64);
    bstream::write_bits(&mut w, &mut free, 0b010, 3);
    bstream::write_bits(&mut w, &mut free, v ^ 1f64.to_bits(), 64);
    bytes.extend_from_slice(&w);
    let got = decode_xor(&bytes).unwrap();
    assert_eq!(bits_of(&got), bits_of(&[(0, 0.0), (1, 2.5), (2, 1.0)]));
    // Resuming continues with the (0, 0) window.
    let mut app = XorAppender::from_bytes(bytes).unwrap();
    app.append(3, 7.0);
    let got = decode_xor(app.bytes()).unwrap();
    assert_eq!(bits_of(&got)[3], (3, 7f64.to_bits()));
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
    let mut rng = Rng(0x1234_5678_9abc_def1);
    // Pure random bytes, with small headers so decoding goes deep.
    for _ in 0..3000 {
        let len = (rng.next() % 64) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if len >= 2 && rng.next() % 2 == 0 {
            data[0] = 0;
            data[1] %= 16;
        }
        fuzz_xor_decode(&data);
    }
    // Bit flips, truncations and insertions in valid chunks.
    let seeds: Vec<Vec<u8>> = vec![
        encode(&[(1000, 1.0), (2000, 2.0), (3000, 3.0)]).into_bytes(),
        encode(
            &(0..120)
                .map(|i| (i * 15_000 + i % 4, (i / 3) as f64 * 0.25))
                .collect::<Vec<_>>(),
        )
        .into_bytes(),
        encode(&[
            (i64::MIN, f64::NAN),
            (0, f64::from_bits(STALE_NAN_BITS)),
            (i64::MAX, -0.0),
        ])
        .into_bytes(),
    ];
    for _ in 0..3000 {
        let mut data = seeds[(rng.next() % seeds.len() as u64) as usize].clone();
        for _ in 0..=(rng.next() % 3) {
            match rng.next() % 4 {
                0 | 1 => {
                    let bit = (rng.next() % (data.len() as u64 * 8)) as usize;
                    data[bit / 8] ^= 0x80 >> (bit % 8);
                }
                2 => data.truncate((rng.next() % (data.len() as u64 + 1)) as usize),
                _ => {
                    let at = (rng.next() % (data.len() as u64 + 1)) as usize;
                    data.insert(at, rng.next() as u8);
                }
            }
            if data.is_empty() {
                break;
            }
        }
        fuzz_xor_decode(&data);
    }
}

/// Strictly increasing timestamps: arbitrary sets (huge gaps, negative) or
/// scrape-like series with jitter.
fn timestamps() -> impl Strategy<Value = Vec<i64>> {
    prop_oneof![
        proptest::collection::btree_set(any::<i64>(), 0..150).prop_map(|s| s.into_iter().collect()),
        (
            any::<i64>(),
            proptest::collection::vec(
                prop_oneof![
                    4 => 14_990i64..15_010,
                    1 => 1i64..5,
                    1 => 1i64..2_000_000,
                    1 => 1i64..(i64::MAX / 8),
                ],
                0..150
            )
        )
            .prop_map(|(start, deltas)| {
                let mut t = start;
                let mut out = vec![t];
                for d in deltas {
                    match t.checked_add(d) {
                        Some(n) => {
                            t = n;
                            out.push(t);
                        }
                        None => break,
                    }
                }
                out
            }),
    ]
}

/// A value generator step: `None` repeats the previous value.
fn value() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![
        3 => any::<u64>().prop_map(Some),
        3 => Just(None),
        2 => (0u32..10_000).prop_map(|i| Some(f64::from(i).to_bits())),
        2 => (0u32..1000).prop_map(|i| Some((f64::from(i) / 100.0).to_bits())),
        1 => prop_oneof![
            Just(STALE_NAN_BITS),
            Just(f64::NAN.to_bits()),
            Just(f64::INFINITY.to_bits()),
            Just(f64::NEG_INFINITY.to_bits()),
            Just((-0.0f64).to_bits()),
            Just(0x7ff0_0000_0000_0001u64),
        ]
        .prop_map(Some),
    ]
}

fn series() -> impl Strategy<Value = Vec<(i64, f64)>> {
    timestamps().prop_flat_map(|ts| {
        let n = ts.len();
        proptest::collection::vec(value(), n).prop_map(move |vals| {
            let mut prev = 0u64;
            ts.iter()
                .zip(vals)
                .map(|(&t, v)| {
                    prev = v.unwrap_or(prev);
                    (t, f64::from_bits(prev))
                })
                .collect()
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn round_trip(samples in series()) {
        let app = encode(&samples);
        prop_assert_eq!(app.num_samples(), samples.len());
        prop_assert_eq!(app.first_t(), samples.first().map(|s| s.0));
        prop_assert_eq!(app.last_t(), samples.last().map(|s| s.0));
        prop_assert_eq!(app.last_v().map(f64::to_bits), samples.last().map(|s| s.1.to_bits()));
        let decoded = decode_xor(app.bytes()).unwrap();
        prop_assert_eq!(bits_of(&decoded), bits_of(&samples));
        let lazy: Vec<(i64, f64)> = XorIterator::new(app.bytes()).collect();
        prop_assert_eq!(bits_of(&lazy), bits_of(&samples));
    }

    #[test]
    fn matches_model_encoder(samples in series()) {
        prop_assert_eq!(encode(&samples).into_bytes(), model_encode(&samples));
    }

    #[test]
    fn resume_equals_append_all(samples in series(), split in any::<prop::sample::Index>()) {
        let k = split.index(samples.len() + 1);
        let prefix = encode(&samples[..k]).into_bytes();
        let mut app = XorAppender::from_bytes(prefix).unwrap();
        prop_assert_eq!(app.num_samples(), k);
        for &(t, v) in &samples[k..] {
            app.append(t, v);
        }
        let all = encode(&samples);
        prop_assert_eq!(app.bytes(), all.bytes());
    }

    #[test]
    fn seek_finds_first_at_or_after(samples in series(), targets in proptest::collection::vec(any::<i64>(), 1..8)) {
        let app = encode(&samples);
        let mut targets = targets;
        targets.sort_unstable();
        let mut it = XorIterator::new(app.bytes());
        for target in targets {
            let want = samples.iter().find(|s| s.0 >= target).map(|s| (s.0, s.1.to_bits()));
            prop_assert_eq!(it.seek(target).map(|(t, v)| (t, v.to_bits())), want);
        }
    }

    #[test]
    fn fuzz_never_panics_on_valid_or_flipped(samples in series(), flip in any::<prop::sample::Index>()) {
        let mut bytes = encode(&samples).into_bytes();
        fuzz_xor_decode(&bytes);
        let bit = flip.index(bytes.len() * 8);
        bytes[bit / 8] ^= 0x80 >> (bit % 8);
        fuzz_xor_decode(&bytes);
    }
}
