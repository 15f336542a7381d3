//! Compact chunk encoding (0x81) vs Prometheus XOR on node_exporter-like
//! data: size per sample, encode/decode throughput, zstd level and chunk
//! size trade-offs.
//!
//! Run with `cargo bench -p stratus-tsdb --bench compact`. Plain
//! `std::time` timing: each phase runs 5 trials of about 0.3 s and prints
//! the best trial's samples per second.
//!
//! Data (deterministic): 1000 series × 2 h × 15 s (480 samples each);
//! timestamps on a 15 s grid, one scrape in four off by 1–2 ms; 3 %
//! constant series, 60 % counters (small integer increments, mostly idle
//! counters, CPU-seconds-like `ticks / 100`, 4096-byte pages) with rare
//! resets, 37 % gauges with 1–4 significant digits and 0–3 decimals;
//! 1 % of series end with a staleness marker.

use std::hint::black_box;
use std::time::{Duration, Instant};

use stratus_tsdb::{
    COMPACT_CHUNK_SAMPLES, COMPACT_ZSTD_LEVEL, XorAppender, XorIterator, decode_compact,
    encode_compact, encode_compact_with_level,
};

const SERIES: usize = 1000;
const SAMPLES: usize = 480; // 2 h at 15 s
const XOR_CHUNK: usize = 120;
/// Bytes around each chunk besides its data: segment record (length
/// varint, encoding byte, CRC-32C) and the index chunk meta (about 3–6
/// bytes of varints). Reported separately as an estimate.
const PER_CHUNK_OVERHEAD: usize = 12;
const STALE: u64 = 0x7ff0_0000_0000_0002;

/// Small deterministic PRNG (xorshift64*), so the bench needs no crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Constant,
    CounterInt,
    CounterIdle,
    CounterCpu,
    CounterPages,
    Gauge,
}

const KINDS: [Kind; 6] = [
    Kind::Constant,
    Kind::CounterInt,
    Kind::CounterIdle,
    Kind::CounterCpu,
    Kind::CounterPages,
    Kind::Gauge,
];

fn kind_of(s: usize) -> Kind {
    match s % 100 {
        0..=2 => Kind::Constant,
        3..=22 => Kind::CounterInt,
        23..=40 => Kind::CounterIdle,
        41..=52 => Kind::CounterCpu,
        53..=62 => Kind::CounterPages,
        _ => Kind::Gauge,
    }
}

/// One series of `n` samples of kind `kind`.
fn gen_series(rng: &mut Rng, s: usize, n: usize) -> (Kind, Vec<(i64, f64)>) {
    let kind = kind_of(s);
    let base = 1_700_000_000_000i64 + rng.below(15_000) as i64;
    let constant = [1.0, 0.0, 4096.0, 3.0][s % 4];
    let max_inc = [2, 5, 20, 100, 1000][rng.below(5) as usize];
    let mut counter = rng.below(10_000_000) as i64;
    // Gauge shape: digits, decimals, step size, change rate.
    let digits = 1 + rng.below(4) as u32;
    let decimals = rng.below(4) as i32;
    let range = 10i64.pow(digits);
    let step = [1, 3, (range / 10).max(1), range][rng.below(4) as usize];
    let change_one_in = [1, 1, 3, 10][rng.below(4) as usize];
    let mut g = rng.below(range as u64) as i64;
    let stale_end = s % 100 == 99;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let jitter = if rng.chance(4) {
            [-2, -1, 1, 2][rng.below(4) as usize]
        } else {
            0
        };
        let t = base + i as i64 * 15_000 + jitter;
        let reset = rng.chance(2000);
        let v = match kind {
            Kind::Constant => constant,
            Kind::CounterInt | Kind::CounterIdle | Kind::CounterCpu | Kind::CounterPages => {
                if reset {
                    counter = 0;
                }
                counter += match kind {
                    Kind::CounterInt => rng.below(max_inc + 1) as i64,
                    Kind::CounterIdle => i64::from(rng.chance(20)) * (1 + rng.below(3) as i64),
                    Kind::CounterCpu => 1400 + rng.below(200) as i64,
                    _ => 4096 * rng.below(8) as i64,
                };
                if kind == Kind::CounterCpu {
                    counter as f64 / 100.0
                } else {
                    counter as f64
                }
            }
            Kind::Gauge => {
                if rng.chance(change_one_in) {
                    g = (g + rng.below(2 * step as u64 + 1) as i64 - step).clamp(0, range - 1);
                }
                if decimals == 0 {
                    g as f64
                } else {
                    g as f64 / 10f64.powi(decimals)
                }
            }
        };
        out.push((t, v));
    }
    if stale_end {
        if let Some(last) = out.last_mut() {
            last.1 = f64::from_bits(STALE);
        }
    }
    (kind, out)
}

fn dataset(series: usize, samples: usize, seed: u64) -> Vec<(Kind, Vec<(i64, f64)>)> {
    let mut rng = Rng(seed);
    (0..series)
        .map(|s| gen_series(&mut rng, s, samples))
        .collect()
}

fn encode_xor(samples: &[(i64, f64)], per_chunk: usize) -> Vec<Vec<u8>> {
    samples
        .chunks(per_chunk)
        .map(|c| {
            let mut app = XorAppender::new();
            for &(t, v) in c {
                app.append(t, v);
            }
            app.into_bytes()
        })
        .collect()
}

/// Balanced split into chunks of at most `max` samples, like compaction.
fn split(samples: &[(i64, f64)], max: usize) -> std::slice::Chunks<'_, (i64, f64)> {
    let k = samples.len().div_ceil(max).max(1);
    samples.chunks(samples.len().div_ceil(k).max(1))
}

fn encode_compact_all(samples: &[(i64, f64)], max: usize, level: i32) -> Vec<Vec<u8>> {
    split(samples, max)
        .map(|c| encode_compact_with_level(c, level))
        .collect()
}

/// Runs `f` (which processes `samples` samples) in 5 trials of about 0.3 s
/// each and returns the best trial's samples per second.
fn measure(samples: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm up
    let mut best = 0f64;
    for _ in 0..5 {
        let start = Instant::now();
        let mut rounds = 0u64;
        while start.elapsed() < Duration::from_millis(300) {
            f();
            rounds += 1;
        }
        let rate = (samples as f64 * rounds as f64) / start.elapsed().as_secs_f64();
        best = best.max(rate);
    }
    best
}

fn sizes(chunks: &[Vec<Vec<u8>>]) -> (usize, usize) {
    let data: usize = chunks.iter().flatten().map(Vec::len).sum();
    let n: usize = chunks.iter().map(Vec::len).sum();
    (data, data + n * PER_CHUNK_OVERHEAD)
}

fn main() {
    let data = dataset(SERIES, SAMPLES, 0x9e37_79b9_7f4a_7c15);
    let total = SERIES * SAMPLES;
    let chunk = COMPACT_CHUNK_SAMPLES;

    let xor: Vec<Vec<Vec<u8>>> = data.iter().map(|s| encode_xor(&s.1, XOR_CHUNK)).collect();
    let compact: Vec<Vec<Vec<u8>>> = data
        .iter()
        .map(|s| split(&s.1, chunk).map(encode_compact).collect())
        .collect();
    // Round-trip check.
    for (s, cs) in data.iter().zip(&compact) {
        let back: Vec<(i64, f64)> = cs.iter().flat_map(|c| decode_compact(c).unwrap()).collect();
        assert!(
            back.len() == s.1.len()
                && back
                    .iter()
                    .zip(&s.1)
                    .all(|(a, b)| a.0 == b.0 && a.1.to_bits() == b.1.to_bits())
        );
    }
    let (xd, xf) = sizes(&xor);
    let (cd, cf) = sizes(&compact);
    println!("{SERIES} series x {SAMPLES} samples (2 h @ 15 s), node_exporter-like mix");
    println!(
        "XOR (120/chunk):       {:.3} bytes/sample data, {:.3} with ~{PER_CHUNK_OVERHEAD} B/chunk framing+index",
        xd as f64 / total as f64,
        xf as f64 / total as f64
    );
    println!(
        "compact (<= {chunk}/chunk): {:.3} bytes/sample data, {:.3} with framing+index",
        cd as f64 / total as f64,
        cf as f64 / total as f64
    );
    for k in KINDS {
        let (mut n, mut xb, mut cb) = (0usize, 0usize, 0usize);
        for (i, s) in data.iter().enumerate() {
            if s.0 == k {
                n += s.1.len();
                xb += xor[i].iter().map(Vec::len).sum::<usize>();
                cb += compact[i].iter().map(Vec::len).sum::<usize>();
            }
        }
        println!(
            "  {:>13}: {:>4} series  XOR {:.3}  compact {:.3} bytes/sample",
            format!("{k:?}"),
            n / SAMPLES,
            xb as f64 / n as f64,
            cb as f64 / n as f64
        );
    }

    println!("zstd level (compact, <= {chunk}/chunk): bytes/sample, encode rate");
    for level in [1, 3, 6, 9, 12, 15, 19] {
        let enc: Vec<Vec<Vec<u8>>> = data
            .iter()
            .map(|s| encode_compact_all(&s.1, chunk, level))
            .collect();
        let (d, _) = sizes(&enc);
        let rate = measure(total, || {
            for s in &data {
                black_box(encode_compact_all(black_box(&s.1), chunk, level));
            }
        });
        println!(
            "  level {level:>2}: {:.3} bytes/sample, encode {:>6.2} M samples/s",
            d as f64 / total as f64,
            rate / 1e6
        );
    }

    let enc_xor = measure(total, || {
        for s in &data {
            black_box(encode_xor(black_box(&s.1), XOR_CHUNK));
        }
    });
    let enc_c = measure(total, || {
        for s in &data {
            black_box(encode_compact_all(
                black_box(&s.1),
                chunk,
                COMPACT_ZSTD_LEVEL,
            ));
        }
    });
    let dec_xor = measure(total, || {
        let mut acc = 0u64;
        for c in xor.iter().flatten() {
            for (t, v) in XorIterator::new(black_box(c.as_slice())) {
                acc = acc.wrapping_add(t as u64 ^ v.to_bits());
            }
        }
        black_box(acc);
    });
    let dec_c = measure(total, || {
        let mut acc = 0u64;
        for c in compact.iter().flatten() {
            for (t, v) in decode_compact(black_box(c)).unwrap_or_default() {
                acc = acc.wrapping_add(t as u64 ^ v.to_bits());
            }
        }
        black_box(acc);
    });
    println!(
        "encode: XOR {:>6.1} M samples/s, compact {:>6.1} M samples/s",
        enc_xor / 1e6,
        enc_c / 1e6
    );
    println!(
        "decode: XOR {:>6.1} M samples/s, compact {:>6.1} M samples/s",
        dec_xor / 1e6,
        dec_c / 1e6
    );

    // Chunk size trade-off on longer series (12 h, as in a compacted
    // 12 h block): size vs the cost of decoding one whole chunk (what a
    // query touching it pays).
    let long_n = 2880;
    let long = dataset(200, long_n, 0x1234_5678_9abc_def0);
    let long_total = 200 * long_n;
    println!(
        "chunk size (200 series x 12 h): bytes/sample with framing, decode rate, us per chunk decode"
    );
    for max in [120, 240, 480, 960, 1440, 2048, 2880] {
        let enc: Vec<Vec<Vec<u8>>> = long
            .iter()
            .map(|s| encode_compact_all(&s.1, max, COMPACT_ZSTD_LEVEL))
            .collect();
        let (_, f) = sizes(&enc);
        let n_chunks: usize = enc.iter().map(Vec::len).sum();
        let rate = measure(long_total, || {
            for c in enc.iter().flatten() {
                black_box(decode_compact(black_box(c)).ok());
            }
        });
        println!(
            "  <= {max:>4}/chunk: {:.3} bytes/sample, decode {:>6.1} M samples/s, {:>6.1} us/chunk",
            f as f64 / long_total as f64,
            rate / 1e6,
            long_total as f64 / n_chunks as f64 / rate * 1e6
        );
    }
}
