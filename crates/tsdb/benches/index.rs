//! Micro-benchmark of the head's inverted index ([`MemPostings`]).
//!
//! Run with `cargo bench -p stratus-tsdb --bench index` (release build, no
//! harness). Builds an index of `N` series (default 1M, override with the
//! `INDEX_BENCH_SERIES` env var) with 10 labels each: 6 with few values and
//! 4 "unique-ish" (instance n/10, path n/2, pod n/4, uid n), then prints add
//! throughput, the index's memory per series (measured with a counting
//! allocator and as reported by `approx_bytes`) and selection latencies.
//! `NO_INTERN=1` adds without `intern_labels`; `NO_QUERIES=1` skips the
//! selections (handy under `perf`).
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use stratus_model::{Labels, MatchType, Matcher};
use stratus_tsdb::{MemPostings, select_postings};

/// Counts live heap bytes on top of the system allocator.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn labels(i: u64, n: u64) -> Labels {
    let job = if i % 10 == 0 {
        "x".to_string()
    } else {
        format!("job-{}", i % 10)
    };
    let mix = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    Labels::from_pairs([
        ("__name__", format!("metric_{}", i % 100)),
        ("job", job),
        ("env", format!("env-{}", i % 3)),
        ("region", format!("region-{}", i % 5)),
        ("cluster", format!("cluster-{}", i % 20)),
        ("namespace", format!("namespace-{}", i % 50)),
        ("instance", format!("i-{}", i / 10)),
        (
            "path",
            format!("/api/v1/endpoint/{}", (i / 2) % (n / 2).max(1)),
        ),
        (
            "pod",
            format!("pod-{:016x}", (mix + i / 4) % (n / 4).max(1)),
        ),
        (
            "uid",
            format!("{:032x}", i.wrapping_mul(0x2545_F491_4F6C_DD1D)),
        ),
    ])
}

fn time<T>(iters: u32, mut f: impl FnMut() -> T) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        black_box(f());
    }
    start.elapsed() / iters
}

fn main() {
    let n: u64 = std::env::var("INDEX_BENCH_SERIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let base = LIVE.load(Ordering::Relaxed);
    let idx = MemPostings::new();
    let mut add_time = Duration::ZERO;
    let chunk = 10_000;
    let mut start = 0;
    while start < n {
        let end = (start + chunk).min(n);
        let batch: Vec<(u64, Labels)> = (start..end).map(|i| (i, labels(i, n))).collect();
        let t = Instant::now();
        for (id, l) in &batch {
            if std::env::var_os("NO_INTERN").is_some() {
                idx.add(*id, l);
            } else {
                let l = idx.intern_labels(l);
                idx.add(*id, &l);
            }
        }
        add_time += t.elapsed();
        start = end;
    }
    let live = LIVE.load(Ordering::Relaxed) - base;
    let approx = idx.approx_bytes();
    println!("series: {n}, labels per series: 10");
    println!(
        "add (intern_labels + add): {:.2?} total, {:.0} ns/series",
        add_time,
        add_time.as_nanos() as f64 / n as f64
    );
    println!(
        "memory: {:.1} B/series measured (heap incl. label strings), approx_bytes {:.1} B/series",
        live as f64 / n as f64,
        approx as f64 / n as f64
    );

    let queries: Vec<(&str, Vec<Matcher>)> = vec![
        (
            r#"job="x", instance=~"i-1|i-2|i-3""#,
            vec![
                Matcher::eq("job", "x"),
                Matcher::new(MatchType::RegexMatch, "instance", "i-1|i-2|i-3").unwrap(),
            ],
        ),
        (
            r#"__name__="metric_7", job="x""#,
            vec![Matcher::eq("__name__", "metric_7"), Matcher::eq("job", "x")],
        ),
        (
            r#"__name__="metric_7", instance=~"i-12.*""#,
            vec![
                Matcher::eq("__name__", "metric_7"),
                Matcher::new(MatchType::RegexMatch, "instance", "i-12.*").unwrap(),
            ],
        ),
        (
            r#"__name__="metric_7", env!="env-1""#,
            vec![
                Matcher::eq("__name__", "metric_7"),
                Matcher::new(MatchType::NotEqual, "env", "env-1").unwrap(),
            ],
        ),
        (
            r#"__name__="metric_7", uid=~".*ff""#,
            vec![
                Matcher::eq("__name__", "metric_7"),
                Matcher::new(MatchType::RegexMatch, "uid", ".*ff").unwrap(),
            ],
        ),
    ];
    if std::env::var_os("NO_QUERIES").is_some() {
        return;
    }
    for (name, ms) in &queries {
        let result = select_postings(&idx, ms).unwrap().len();
        let iters = 20;
        let d = time(iters, || select_postings(&idx, ms).unwrap());
        println!("select {name}: {d:.2?}/query ({result} series)");
    }
}
