//! Tests of the native histogram chunk codecs.

use proptest::prelude::*;
use stratus_model::{
    BucketSpan, CUSTOM_BUCKETS_SCHEMA, FloatHistogram, Histogram, reset_hint, stale_nan,
};

use super::*;

fn spans(v: &[(i32, u32)]) -> Vec<BucketSpan> {
    v.iter()
        .map(|&(offset, length)| BucketSpan { offset, length })
        .collect()
}

fn sample_hist(i: u64) -> Histogram {
    Histogram {
        reset_hint: reset_hint::UNKNOWN,
        schema: 3,
        zero_threshold: 2f64.powi(-128),
        zero_count: i,
        count: 10 * i + 5,
        sum: 1.5 * i as f64,
        positive_spans: spans(&[(0, 2), (3, 1)]),
        positive_deltas: vec![1 + i as i64, 2, -1],
        negative_spans: spans(&[(-2, 1)]),
        negative_deltas: vec![i as i64],
        custom_values: Vec::new(),
    }
}

/// The hint a decoded histogram carries at position `i` of a chunk whose
/// header was derived from its first sample.
fn with_hint<T: Clone>(h: &T, set: impl Fn(&mut T)) -> T {
    let mut x = h.clone();
    set(&mut x);
    x
}

fn assert_same_hist(got: &[(i64, Histogram)], want: &[(i64, Histogram)]) {
    assert_eq!(got.len(), want.len());
    for ((t1, a), (t2, b)) in got.iter().zip(want) {
        assert_eq!(t1, t2);
        let b = with_hint(b, |x| x.reset_hint = a.reset_hint);
        assert!(a.bit_eq(&b), "{a:?}\n!=\n{b:?}");
    }
}

fn assert_same_float(got: &[(i64, FloatHistogram)], want: &[(i64, FloatHistogram)]) {
    assert_eq!(got.len(), want.len());
    for ((t1, a), (t2, b)) in got.iter().zip(want) {
        assert_eq!(t1, t2);
        let b = with_hint(b, |x| x.reset_hint = a.reset_hint);
        assert!(a.bit_eq(&b), "{a:?}\n!=\n{b:?}");
    }
}

#[test]
fn varbit_round_trips_bucket_edges() {
    let mut vals = vec![0i64, 1, -1, i64::MIN, i64::MAX];
    for w in [3u32, 6, 9, 12, 18, 25, 56] {
        let half = 1i64 << (w - 1);
        vals.extend([half, half + 1, -(half - 1), -half, half - 1]);
    }
    let mut buf = vec![0, 0, 0];
    let mut free = 0;
    for &v in &vals {
        put_varbit_int(&mut buf, &mut free, v);
        put_varbit_uint(&mut buf, &mut free, v as u64);
    }
    let mut rd = Rd::new(&buf);
    for &v in &vals {
        assert_eq!(rd.varbit_int().unwrap(), v);
        assert_eq!(rd.varbit_uint().unwrap(), v as u64);
    }
}

#[test]
fn varbit_widths_match_prometheus() {
    // 0 -> "0"; 4 -> "10" + 3 bits; 5 -> "110" + 6 bits; -3 -> "10" + 101.
    let mut buf = vec![0, 0, 0];
    let mut free = 0;
    put_varbit_int(&mut buf, &mut free, 0);
    put_varbit_int(&mut buf, &mut free, 4);
    put_varbit_int(&mut buf, &mut free, -3);
    // 0 10100 10101 -> 0101_0010 101 -> 0x52 0xA0
    assert_eq!(&buf[3..], &[0x52, 0xA0]);
    let mut buf = vec![0, 0, 0];
    let mut free = 0;
    put_varbit_uint(&mut buf, &mut free, 7); // "10" + 111
    put_varbit_uint(&mut buf, &mut free, 8); // "110" + 001000
    // 10111 110001000 -> 1011_1110 0010_00.. -> 0xBE 0x20
    assert_eq!(&buf[3..], &[0xBE, 0x20]);
}

#[test]
fn zero_threshold_encoding() {
    for (zt, first) in [
        (0.0, 0u8),
        (2f64.powi(-128), 116),
        (1.0, 244),
        (1024.0, 254),
        (0.001, 255),
        (2048.0, 255),
        (-0.0, 255),
    ] {
        let mut buf = vec![0, 0, 0];
        let mut free = 0;
        put_zero_threshold(&mut buf, &mut free, zt);
        assert_eq!(buf[3], first, "{zt}");
        let mut rd = Rd::new(&buf);
        assert_eq!(
            read_zero_threshold(&mut rd).unwrap().to_bits(),
            zt.to_bits()
        );
    }
}

#[test]
fn custom_bounds_encoding() {
    for b in [
        0.0,
        0.001,
        0.5,
        1.0,
        33554.43,
        33554.431,
        -1.0,
        0.0001,
        f64::INFINITY,
        0.1,
    ] {
        let mut buf = vec![0, 0, 0];
        let mut free = 0;
        put_custom_bound(&mut buf, &mut free, b);
        let mut rd = Rd::new(&buf);
        assert_eq!(
            read_custom_bound(&mut rd).unwrap().to_bits(),
            b.to_bits(),
            "{b}"
        );
    }
}

#[test]
fn integer_histograms_round_trip() {
    let mut app = HistogramAppender::new(CounterResetHeader::Unknown);
    let mut want = Vec::new();
    for i in 0..50u64 {
        let h = sample_hist(i);
        assert_eq!(app.appendable(&h), Appendable::Yes);
        let t = 1000 + 15_000 * i as i64 + (i as i64 % 3);
        app.append(t, &h);
        want.push((t, h));
    }
    let got = decode_histogram(app.bytes()).unwrap();
    assert_same_hist(&got, &want);
    assert_eq!(got[0].1.reset_hint, reset_hint::UNKNOWN);
    assert_eq!(got[1].1.reset_hint, reset_hint::NOT_RESET);
    assert_eq!(app.num_samples(), 50);
    assert_eq!(app.first_t(), Some(1000));
}

#[test]
fn stale_marker_and_nan_sums() {
    let mut app = HistogramAppender::new(CounterResetHeader::Unknown);
    let mut h = sample_hist(1);
    h.sum = f64::from_bits(0x7ff8_0000_0000_0abc);
    app.append(1, &h);
    let stale = Histogram {
        count: 77,
        ..Histogram::stale()
    };
    assert_eq!(app.appendable(&stale), Appendable::Yes);
    app.append(2, &stale);
    app.append(3, &Histogram::stale());
    // A live sample after a stale one needs a new chunk.
    assert_eq!(
        app.appendable(&sample_hist(2)),
        Appendable::Cut(CounterResetHeader::Unknown)
    );
    let got = decode_histogram(app.bytes()).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].1.sum.to_bits(), 0x7ff8_0000_0000_0abc);
    assert!(got[1].1.is_stale() && got[1].1.count == 0);
    assert!(got[2].1.is_stale());

    // A chunk starting with a stale marker.
    let mut app = FloatHistogramAppender::new(CounterResetHeader::Unknown);
    app.append(5, &FloatHistogram::stale());
    let got = decode_float_histogram(app.bytes()).unwrap();
    assert_eq!(got[0].1.sum.to_bits(), stale_nan().to_bits());
}

#[test]
fn cuts_on_layout_change_and_reset() {
    let mut app = HistogramAppender::new(CounterResetHeader::Unknown);
    app.append(1, &sample_hist(5));
    let mut h = sample_hist(6);
    h.schema = 2;
    assert_eq!(
        app.appendable(&h),
        Appendable::Cut(CounterResetHeader::Unknown)
    );
    let mut h = sample_hist(6);
    h.zero_threshold = 0.5;
    assert_eq!(
        app.appendable(&h),
        Appendable::Cut(CounterResetHeader::Unknown)
    );
    // A new bucket, nothing decreased: no reset.
    let mut h = sample_hist(6);
    h.positive_spans = spans(&[(0, 2), (3, 2)]);
    h.positive_deltas = vec![7, 2, -1, 0];
    assert_eq!(
        app.appendable(&h),
        Appendable::Cut(CounterResetHeader::NotReset)
    );
    // Count went down.
    assert_eq!(
        app.appendable(&sample_hist(4)),
        Appendable::Cut(CounterResetHeader::Reset)
    );
    // A bucket went down.
    let mut h = sample_hist(6);
    h.positive_deltas = vec![1, 2, -1];
    assert_eq!(
        app.appendable(&h),
        Appendable::Cut(CounterResetHeader::Reset)
    );
    // Explicit hint.
    let mut h = sample_hist(6);
    h.reset_hint = reset_hint::RESET;
    assert_eq!(
        app.appendable(&h),
        Appendable::Cut(CounterResetHeader::Reset)
    );
    // Gauge after counter.
    let mut h = sample_hist(6);
    h.reset_hint = reset_hint::GAUGE;
    assert_eq!(
        app.appendable(&h),
        Appendable::Cut(CounterResetHeader::Gauge)
    );
}

#[test]
fn gauge_histograms_may_go_down() {
    let mut g = sample_hist(5);
    g.reset_hint = reset_hint::GAUGE;
    let mut app = HistogramAppender::new(CounterResetHeader::for_hint(g.reset_hint));
    app.append(1, &g);
    let mut down = sample_hist(1);
    down.reset_hint = reset_hint::GAUGE;
    assert_eq!(app.appendable(&down), Appendable::Yes);
    app.append(2, &down);
    let got = decode_histogram(app.bytes()).unwrap();
    assert!(got.iter().all(|(_, h)| h.reset_hint == reset_hint::GAUGE));
    assert_same_hist(&got, &[(1, g), (2, down)]);
}

#[test]
fn custom_bucket_histograms_round_trip() {
    let fh = |i: f64| FloatHistogram {
        schema: CUSTOM_BUCKETS_SCHEMA,
        count: 10.0 + i,
        sum: 3.25 * i,
        positive_spans: spans(&[(0, 3)]),
        positive_buckets: vec![1.0 + i, 2.0, 7.0],
        custom_values: vec![0.005, 0.1, 2.5, 1e6, -0.0],
        ..Default::default()
    };
    let mut app = FloatHistogramAppender::new(CounterResetHeader::Unknown);
    let want: Vec<_> = (0..10).map(|i| (i * 10, fh(i as f64))).collect();
    for (t, h) in &want {
        assert_eq!(app.appendable(h), Appendable::Yes);
        app.append(*t, h);
    }
    assert_same_float(&decode_float_histogram(app.bytes()).unwrap(), &want);
    let mut other = fh(20.0);
    other.custom_values[0] = 0.006;
    assert_eq!(
        app.appendable(&other),
        Appendable::Cut(CounterResetHeader::Unknown)
    );

    let h = Histogram {
        schema: CUSTOM_BUCKETS_SCHEMA,
        count: 3,
        positive_spans: spans(&[(1, 2)]),
        positive_deltas: vec![1, 1],
        custom_values: vec![1.0, 2.0],
        ..Default::default()
    };
    let mut app = HistogramAppender::new(CounterResetHeader::Unknown);
    app.append(1, &h);
    assert_same_hist(&decode_histogram(app.bytes()).unwrap(), &[(1, h)]);
}

#[test]
fn empty_and_truncated_chunks() {
    let app = HistogramAppender::new(CounterResetHeader::Reset);
    assert_eq!(app.bytes(), &[0, 0, 0x80]);
    assert!(decode_histogram(app.bytes()).unwrap().is_empty());
    assert!(decode_histogram(&[0, 1]).is_err());
    let mut app = HistogramAppender::new(CounterResetHeader::Unknown);
    for i in 0..5 {
        app.append(i, &sample_hist(i as u64));
    }
    let b = app.bytes();
    for cut in 0..b.len() {
        assert!(decode_histogram(&b[..cut]).is_err(), "cut {cut}");
    }
    let mut extra = b.to_vec();
    extra.extend([0, 0]);
    assert!(decode_histogram(&extra).is_err());
}

#[test]
fn known_bytes_single_histogram() {
    // One histogram: zero threshold 0, schema 0, one positive span
    // {offset 0, length 1} with count 2, no negative spans; t = 0, count 2,
    // zero count 0, sum 0.0.
    let h = Histogram {
        count: 2,
        positive_spans: spans(&[(0, 1)]),
        positive_deltas: vec![2],
        ..Default::default()
    };
    let mut app = HistogramAppender::new(CounterResetHeader::Unknown);
    app.append(0, &h);
    // 00 01 00 | zt 00 | schema "0" | pos spans: n=1 "10 001", len 1
    // "10 001", offset "0" | neg spans "0" | t "0" | count 2 "10 010" |
    // zcount "0" | sum 64 zero bits | bucket 2 "10 010"
    let mut bits = String::new();
    bits += "0"; // schema
    bits += "10001"; // 1 span
    bits += "10001"; // length 1
    bits += "0"; // offset 0
    bits += "0"; // no negative spans
    bits += "0"; // t = 0
    bits += "10010"; // count 2
    bits += "0"; // zero count
    bits += &"0".repeat(64); // sum
    bits += "10010"; // bucket delta 2
    while bits.len() % 8 != 0 {
        bits.push('0');
    }
    let mut want = vec![0u8, 1, 0, 0];
    for c in bits.as_bytes().chunks(8) {
        want.push(u8::from_str_radix(std::str::from_utf8(c).unwrap(), 2).unwrap());
    }
    assert_eq!(app.bytes(), &want[..]);
}

#[test]
fn fuzz_entry_on_mutated_chunks() {
    let mut app = HistogramAppender::new(CounterResetHeader::Unknown);
    let mut fapp = FloatHistogramAppender::new(CounterResetHeader::Gauge);
    for i in 0..20u64 {
        app.append(i as i64 * 1000, &sample_hist(i));
        let mut f = sample_hist(i).to_float();
        f.reset_hint = reset_hint::GAUGE;
        fapp.append(i as i64 * 1000, &f);
    }
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for base in [app.bytes().to_vec(), fapp.bytes().to_vec()] {
        fuzz_histogram_decode(&base);
        for _ in 0..2000 {
            let mut m = base.clone();
            match next() % 4 {
                0 => {
                    let i = (next() as usize) % m.len();
                    m[i] ^= 1 << (next() % 8);
                }
                1 => m.truncate((next() as usize) % m.len()),
                2 => {
                    let i = (next() as usize) % m.len();
                    m[i] = next() as u8;
                }
                _ => m.push(next() as u8),
            }
            fuzz_histogram_decode(&m);
        }
    }
    for len in 0..64 {
        let junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        fuzz_histogram_decode(&junk);
    }
}

fn arb_layout() -> impl Strategy<Value = (i32, f64, Vec<BucketSpan>, Vec<BucketSpan>, Vec<f64>)> {
    let sp = || {
        prop::collection::vec((0i32..4, 0u32..4), 0..4).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (o, l))| BucketSpan {
                    offset: if i == 0 { o - 2 } else { o },
                    length: l,
                })
                .collect::<Vec<_>>()
        })
    };
    prop_oneof![
        (
            -4i32..=8,
            prop_oneof![Just(0.0), Just(2f64.powi(-128)), any::<f64>()],
            sp(),
            sp()
        )
            .prop_map(|(s, z, p, n)| (s, z, p, n, Vec::new())),
        (sp(), prop::collection::vec(any::<f64>(), 0..5)).prop_map(|(p, c)| (
            CUSTOM_BUCKETS_SCHEMA,
            0.0,
            p,
            Vec::new(),
            c
        )),
    ]
}

fn n_buckets(s: &[BucketSpan]) -> usize {
    s.iter().map(|x| x.length as usize).sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any histograms of one layout round-trip bit for bit (counts as
    /// arbitrary integers, sums as arbitrary bits, including NaNs).
    #[test]
    fn int_round_trip(
        layout in arb_layout(),
        ts in prop::collection::vec(any::<i64>(), 1..40),
        seed in prop::collection::vec((any::<u64>(), any::<u64>(), any::<u64>(), prop::collection::vec(any::<i64>(), 16)), 40),
        gauge in any::<bool>(),
    ) {
        let (schema, zt, p, n, c) = layout;
        let mut ts = ts;
        ts.sort_unstable();
        ts.dedup();
        let hint = if gauge { reset_hint::GAUGE } else { reset_hint::UNKNOWN };
        let mut app = HistogramAppender::new(CounterResetHeader::for_hint(hint));
        let mut want = Vec::new();
        for (t, (cnt, zc, sum, b)) in ts.iter().zip(&seed) {
            let h = Histogram {
                reset_hint: hint,
                schema,
                zero_threshold: zt,
                zero_count: *zc,
                count: *cnt,
                sum: f64::from_bits(*sum),
                positive_deltas: b.iter().take(n_buckets(&p)).copied().collect(),
                negative_deltas: b.iter().skip(8).take(n_buckets(&n)).copied().collect(),
                positive_spans: p.clone(),
                negative_spans: n.clone(),
                custom_values: c.clone(),
            };
            if h.positive_deltas.len() != n_buckets(&p) || h.negative_deltas.len() != n_buckets(&n) {
                return Ok(());
            }
            if h.is_stale() {
                continue;
            }
            app.append(*t, &h);
            want.push((*t, h));
        }
        let got = decode_histogram(app.bytes()).unwrap();
        assert_same_hist(&got, &want);
    }

    #[test]
    fn float_round_trip(
        layout in arb_layout(),
        ts in prop::collection::vec(any::<i64>(), 1..40),
        seed in prop::collection::vec((any::<f64>(), any::<f64>(), any::<u64>(), prop::collection::vec(any::<u64>(), 16)), 40),
    ) {
        let (schema, zt, p, n, c) = layout;
        let mut ts = ts;
        ts.sort_unstable();
        ts.dedup();
        let mut app = FloatHistogramAppender::new(CounterResetHeader::Unknown);
        let mut want = Vec::new();
        for (t, (cnt, zc, sum, b)) in ts.iter().zip(&seed) {
            let h = FloatHistogram {
                schema,
                zero_threshold: zt,
                zero_count: *zc,
                count: *cnt,
                sum: f64::from_bits(*sum),
                positive_buckets: b.iter().take(n_buckets(&p)).map(|x| f64::from_bits(*x)).collect(),
                negative_buckets: b.iter().skip(8).take(n_buckets(&n)).map(|x| f64::from_bits(*x)).collect(),
                positive_spans: p.clone(),
                negative_spans: n.clone(),
                custom_values: c.clone(),
                ..Default::default()
            };
            if h.positive_buckets.len() != n_buckets(&p) || h.negative_buckets.len() != n_buckets(&n) {
                return Ok(());
            }
            if h.is_stale() {
                continue;
            }
            app.append(*t, &h);
            want.push((*t, h));
        }
        let got = decode_float_histogram(app.bytes()).unwrap();
        assert_same_float(&got, &want);
        fuzz_histogram_decode(app.bytes());
    }
}
