//! XOR chunk encode/decode throughput on node_exporter-like data.
//!
//! Run with `cargo bench -p stratus-tsdb --bench chunks`. Plain
//! `std::time` timing: each phase runs 5 trials of about 0.3 s and prints
//! the best trial's samples per second, plus the compressed size per
//! sample.

use std::hint::black_box;
use std::time::{Duration, Instant};

use stratus_tsdb::{XorAppender, XorIterator, decode_xor};

const SAMPLES_PER_CHUNK: usize = 120;
const SERIES: usize = 2000;

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
}

/// One chunk's worth of samples per series: 15 s scrape interval with
/// occasional ms jitter; a third counters growing by small integers, a third
/// gauges with 2-3 significant digits, a third mostly-constant gauges.
fn series_data() -> Vec<Vec<(i64, f64)>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..SERIES)
        .map(|s| {
            let mut t = 1_700_000_000_000i64 + rng.below(15_000) as i64;
            let kind = s % 3;
            let mut counter = rng.below(1_000_000) as f64;
            let mut gauge = rng.below(1000) as f64 / 10.0;
            let constant = [0.0, 1.0, 4096.0, 8.0][s % 4];
            (0..SAMPLES_PER_CHUNK)
                .map(|_| {
                    // Most scrapes land on the interval; one in four is
                    // off by up to 2 ms.
                    let jitter = if rng.below(4) == 0 {
                        rng.below(5) as i64 - 2
                    } else {
                        0
                    };
                    t += 15_000 + jitter;
                    let v = match kind {
                        0 => {
                            counter += rng.below(20) as f64;
                            counter
                        }
                        1 => {
                            gauge = ((gauge + (rng.below(21) as f64 - 10.0) / 10.0) * 10.0).round()
                                / 10.0;
                            gauge
                        }
                        _ => {
                            if rng.below(20) == 0 {
                                constant + 1.0
                            } else {
                                constant
                            }
                        }
                    };
                    (t, v)
                })
                .collect()
        })
        .collect()
}

fn encode(data: &[Vec<(i64, f64)>]) -> Vec<Vec<u8>> {
    data.iter()
        .map(|samples| {
            let mut app = XorAppender::new();
            for &(t, v) in samples {
                app.append(t, v);
            }
            app.into_bytes()
        })
        .collect()
}

/// Runs `f` (which processes `samples` samples) in 5 trials of about 0.3 s
/// each and returns the best trial's samples per second (the machine may be
/// shared, the best trial is the least disturbed one).
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

fn main() {
    let data = series_data();
    let total_samples = SERIES * SAMPLES_PER_CHUNK;
    let chunks = encode(&data);
    let bytes: usize = chunks.iter().map(Vec::len).sum();
    println!(
        "{SERIES} chunks x {SAMPLES_PER_CHUNK} samples: {bytes} bytes, {:.3} bytes/sample",
        bytes as f64 / total_samples as f64
    );
    for (name, kind) in [("counters", 0), ("gauges", 1), ("near-constant", 2)] {
        let (n, b) = chunks
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 == kind)
            .fold((0, 0), |(n, b), (_, c)| {
                (n + SAMPLES_PER_CHUNK, b + c.len())
            });
        println!("  {name:>13}: {:.3} bytes/sample", b as f64 / n as f64);
    }

    let enc = measure(total_samples, || {
        black_box(encode(black_box(&data)));
    });
    println!("encode:            {:>7.1} M samples/s", enc / 1e6);

    let dec = measure(total_samples, || {
        let mut acc = 0u64;
        for c in &chunks {
            for (t, v) in XorIterator::new(black_box(c.as_slice())) {
                acc = acc.wrapping_add(t as u64 ^ v.to_bits());
            }
        }
        black_box(acc);
    });
    println!("decode (iterator): {:>7.1} M samples/s", dec / 1e6);

    let strict = measure(total_samples, || {
        for c in &chunks {
            black_box(decode_xor(black_box(c)).ok());
        }
    });
    println!("decode_xor (Vec):  {:>7.1} M samples/s", strict / 1e6);

    let seek = measure(total_samples, || {
        for c in &chunks {
            let mut it = XorIterator::new(black_box(c.as_slice()));
            black_box(it.seek(i64::MAX));
        }
    });
    println!("seek to end:       {:>7.1} M samples/s", seek / 1e6);
}
