//! End-to-end storage-engine benchmark on node_exporter-like data.
//!
//! Run with `cargo bench -p stratus-tsdb --bench engine` (release build, no
//! harness, plain `std::time`). Environment:
//!
//! - `STRATUS_BENCH_SERIES` (default 100000): active series `N`. The
//!   default finishes in 2–4 minutes on a 2-core machine. 1000000 works
//!   given ~6 GB of RAM (head at the 4 h mark) and time: ~1 G samples are
//!   appended, i.e. about 15–20 minutes at ~1 M samples/s; add
//!   `STRATUS_BENCH_DISK=0 STRATUS_BENCH_THREADS=0` to halve that.
//! - `STRATUS_BENCH_DISK=0`: skip the second 2 h, the block cut and the
//!   compaction (phases 3 and the block reads of 4).
//! - `STRATUS_BENCH_THREADS=0`: skip the 1-vs-2-thread append comparison.
//! - `STRATUS_BENCH_ROUNDS` (default 480 = 2 h): scrape rounds of phase 1
//!   (reduce it for a profiler run, e.g. under callgrind).
//! - `STRATUS_BENCH_POOL=k`: phase 1 appends from `k` threads taking the
//!   requests in turn (one at a time), as a server's blocking pool does;
//!   shows what several allocator heaps cost in memory.
//! - `STRATUS_BENCH_JITTER_MS` (default 25): scrape timestamps get
//!   0..jitter ms added (0 gives perfectly regular timestamps, to see what
//!   jitter costs in chunk bytes).
//!
//! Data: a deterministic generator of node_exporter-like hosts, each
//! exposing 1000 series over ~100 metric names with 8–11 labels (`job`,
//! `instance`, `cluster`, `env`, `region`, `zone`, plus metric-specific
//! `cpu`, `mode`, `device`, `fstype`, `mountpoint`, `collector`...). Each
//! host is scraped every 15 s at its own phase with 0–24 ms of jitter
//! (all series of a scrape share its timestamp);
//! counters grow by small integers or by hundredths (CPU seconds) with a
//! 1-in-10000 reset, gauges random-walk with 1–4 significant digits, and
//! info/limit-style series stay constant. Samples reach [`Db::append`] as
//! remote-write requests of 2000 series × 1 sample, in scrape order.
//!
//! Phases:
//! 1. append 2 h (480 samples per series) of `N` series in one thread with
//!    the default WAL (`FsyncPolicy::Interval(1s)`); throughput counts only
//!    time inside `Db::append` (request generation excluded), split into
//!    the first round (series creation) and the steady state. At the end
//!    (after the other phases, so the memory it frees does not hide phase
//!    2's RSS growth) the same pre-generated requests (30 min) run on
//!    fresh databases with one and with two threads appending disjoint
//!    hosts.
//! 2. resident memory per series: (RSS after − RSS before) / N from
//!    `/proc/self/statm` (pages × 4096) around phase 1, and the head's own
//!    estimate `DbStats::head_bytes / N`, split by part (`Db::head_memory`).
//! 3. bytes per sample on disk: a second 2 h is appended, the head is cut
//!    (`Db::flush_head`, two level-1 blocks of 2 h) and compacted
//!    (`Db::maintain` with ranges [2h, 4h], one 4 h block). Counted: the
//!    sizes of the block's `index` file and `chunks/` segment files (no
//!    `meta.json`, no tombstones) divided by the block's samples. WAL:
//!    bytes of all WAL segment files after phase 1 (series records
//!    included) divided by the samples appended.
//! 4. select-and-decode: the 1000 series of one host over 2 h through
//!    [`Queryable::select`], every sample decoded (from the head, from
//!    level-1 blocks and from the compacted block); and the latency of a
//!    matcher-heavy select `{job="node", __name__=~"node_cpu.*"}`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[global_allocator]
static GLOBAL: Counting = Counting;

/// mimalloc wrapped to count the bytes and blocks the program holds, by
/// requested size (16-byte buckets up to 4 KiB, one bucket above), so the
/// bench can tell live data from allocator overhead (RSS − live bytes).
/// Two relaxed atomic adds per call: noise next to `Db::append`.
#[derive(Debug)]
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
const BUCKETS: usize = 257;
static LIVE_BY_SIZE: [AtomicIsize; BUCKETS] = [const { AtomicIsize::new(0) }; BUCKETS];

fn bucket(size: usize) -> usize {
    size.div_ceil(16).min(BUCKETS - 1)
}

fn count(size: usize, d: isize) {
    LIVE_BYTES.fetch_add(d * size as isize, Ordering::Relaxed);
    LIVE_BY_SIZE[bucket(size)].fetch_add(d, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to mimalloc; only counters
// are updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { mimalloc::MiMalloc.alloc(l) };
        if !p.is_null() {
            count(l.size(), 1);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(l) };
        if !p.is_null() {
            count(l.size(), 1);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count(l.size(), -1);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { mimalloc::MiMalloc.dealloc(p, l) }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let q = unsafe { mimalloc::MiMalloc.realloc(p, l, new) };
        if !q.is_null() {
            count(l.size(), -1);
            count(new, 1);
        }
        q
    }
}

/// Live bytes and live blocks per size bucket, now.
fn live_snapshot() -> (isize, Vec<isize>) {
    (
        LIVE_BYTES.load(Ordering::Relaxed),
        LIVE_BY_SIZE
            .iter()
            .map(|x| x.load(Ordering::Relaxed))
            .collect(),
    )
}

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use stratus_model::{Labels, MatchType, Matcher, Sample};
use stratus_objstore::Bucket;
use stratus_tsdb::{Db, DbConfig, Queryable, SelectHints, SeriesSamples};

const H: i64 = 3_600_000;
const INTERVAL: i64 = 15_000;
const SERIES_PER_HOST: usize = 1000;
const REQUEST_SAMPLES: usize = 2000;

// ---------------------------------------------------------------------------
// Deterministic data generator.

/// SplitMix64: small, fast, good enough for synthetic data.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Counter growing by 0..=max per scrape (integers: bytes, packets...).
    CounterInt { max: u32 },
    /// Counter in hundredths (CPU seconds from USER_HZ ticks).
    CounterCenti { max: u32 },
    /// Gauge random-walking around `base` with `digits` significant digits.
    Gauge { base: f64, digits: u8 },
    /// Constant (info metrics, limits, sizes, states).
    Const(f64),
}

#[derive(Debug)]
struct Template {
    labels: Vec<(&'static str, String)>,
    kind: Kind,
}

/// The 1000 series one host exposes (without target labels).
fn host_template() -> Vec<Template> {
    let mut t = Vec::new();
    let mut add = |name: &'static str, extra: Vec<(&'static str, String)>, kind: Kind| {
        let mut labels = vec![("__name__", name.to_string())];
        labels.extend(extra);
        t.push(Template { labels, kind });
    };
    let cpus = 8;
    let modes = [
        "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
    ];
    for c in 0..cpus {
        for (i, m) in modes.iter().enumerate() {
            let max = [90, 3, 1, 1, 2, 0, 12, 30][i];
            add(
                "node_cpu_seconds_total",
                vec![("cpu", c.to_string()), ("mode", m.to_string())],
                Kind::CounterCenti { max },
            );
        }
        for m in ["nice", "user"] {
            add(
                "node_cpu_guest_seconds_total",
                vec![("cpu", c.to_string()), ("mode", m.to_string())],
                Kind::Const(0.0),
            );
        }
        add(
            "node_cpu_scaling_frequency_hertz",
            vec![("cpu", c.to_string())],
            Kind::Gauge {
                base: 2.4e9,
                digits: 3,
            },
        );
        for n in ["node_softnet_processed_total", "node_softnet_dropped_total"] {
            add(
                n,
                vec![("cpu", c.to_string())],
                Kind::CounterInt { max: 400 },
            );
        }
    }
    let disk = [
        ("node_disk_reads_completed_total", 40),
        ("node_disk_writes_completed_total", 120),
        ("node_disk_read_bytes_total", 160_000),
        ("node_disk_written_bytes_total", 900_000),
        ("node_disk_io_time_seconds_total", 2),
        ("node_disk_io_time_weighted_seconds_total", 3),
        ("node_disk_read_time_seconds_total", 1),
        ("node_disk_write_time_seconds_total", 2),
        ("node_disk_reads_merged_total", 5),
        ("node_disk_writes_merged_total", 60),
        ("node_disk_discards_completed_total", 0),
        ("node_disk_flush_requests_total", 8),
        ("node_disk_io_now", 0),
    ];
    for d in ["nvme0n1", "nvme1n1", "sda", "dm-0"] {
        for &(n, max) in &disk {
            add(n, vec![("device", d.to_string())], Kind::CounterInt { max });
        }
    }
    let fs = [
        ("/dev/nvme0n1p1", "ext4", "/"),
        ("/dev/nvme0n1p2", "vfat", "/boot/efi"),
        ("/dev/nvme1n1", "xfs", "/var/lib/data"),
        ("tmpfs", "tmpfs", "/run"),
        ("tmpfs", "tmpfs", "/dev/shm"),
        ("/dev/mapper/vg-docker", "overlay", "/var/lib/docker"),
    ];
    for (dev, fstype, mp) in fs {
        for (n, kind) in [
            ("node_filesystem_size_bytes", Kind::Const(5.36e11)),
            (
                "node_filesystem_avail_bytes",
                Kind::Gauge {
                    base: 2.1e11,
                    digits: 4,
                },
            ),
            (
                "node_filesystem_free_bytes",
                Kind::Gauge {
                    base: 2.4e11,
                    digits: 4,
                },
            ),
            ("node_filesystem_files", Kind::Const(3.2e7)),
            (
                "node_filesystem_files_free",
                Kind::Gauge {
                    base: 3.0e7,
                    digits: 4,
                },
            ),
            ("node_filesystem_readonly", Kind::Const(0.0)),
            ("node_filesystem_device_error", Kind::Const(0.0)),
        ] {
            add(
                n,
                vec![
                    ("device", dev.to_string()),
                    ("fstype", fstype.to_string()),
                    ("mountpoint", mp.to_string()),
                ],
                kind,
            );
        }
    }
    let net_counters = [
        ("node_network_receive_bytes_total", 600_000),
        ("node_network_transmit_bytes_total", 400_000),
        ("node_network_receive_packets_total", 900),
        ("node_network_transmit_packets_total", 700),
        ("node_network_receive_errs_total", 0),
        ("node_network_transmit_errs_total", 0),
        ("node_network_receive_drop_total", 1),
        ("node_network_transmit_drop_total", 0),
        ("node_network_receive_multicast_total", 2),
        ("node_network_receive_fifo_total", 0),
        ("node_network_transmit_fifo_total", 0),
        ("node_network_receive_frame_total", 0),
        ("node_network_transmit_colls_total", 0),
        ("node_network_transmit_carrier_total", 0),
        ("node_network_receive_compressed_total", 0),
    ];
    let net_consts = [
        ("node_network_mtu_bytes", 1500.0),
        ("node_network_up", 1.0),
        ("node_network_speed_bytes", 1.25e9),
        ("node_network_carrier", 1.0),
        ("node_network_transmit_queue_length", 1000.0),
        ("node_network_iface_id", 2.0),
        ("node_network_dormant", 0.0),
        ("node_network_protocol_type", 1.0),
        ("node_network_flags", 4099.0),
        ("node_network_address_assign_type", 0.0),
    ];
    for d in ["eth0", "eth1", "lo", "docker0", "cni0", "veth1a2b3c"] {
        for &(n, max) in &net_counters {
            add(n, vec![("device", d.to_string())], Kind::CounterInt { max });
        }
        for &(n, v) in &net_consts {
            add(n, vec![("device", d.to_string())], Kind::Const(v));
        }
    }
    let mem = [
        "MemTotal",
        "MemFree",
        "MemAvailable",
        "Buffers",
        "Cached",
        "SwapCached",
        "Active",
        "Inactive",
        "Active_anon",
        "Inactive_anon",
        "Active_file",
        "Inactive_file",
        "Unevictable",
        "Mlocked",
        "SwapTotal",
        "SwapFree",
        "Dirty",
        "Writeback",
        "AnonPages",
        "Mapped",
        "Shmem",
        "KReclaimable",
        "Slab",
        "SReclaimable",
        "SUnreclaim",
        "KernelStack",
        "PageTables",
        "CommitLimit",
        "Committed_AS",
        "VmallocTotal",
    ];
    for (i, m) in mem.iter().enumerate() {
        let name: &'static str = Box::leak(format!("node_memory_{m}_bytes").into_boxed_str());
        let kind = if i % 3 == 0 {
            Kind::Const(6.7e10)
        } else {
            Kind::Gauge {
                base: 1.0e9 * (i as f64),
                digits: 4,
            }
        };
        add(name, Vec::new(), kind);
    }
    let vm = [
        ("node_vmstat_pgfault", 20_000),
        ("node_vmstat_pgmajfault", 3),
        ("node_vmstat_pgpgin", 400),
        ("node_vmstat_pgpgout", 2000),
        ("node_vmstat_pswpin", 0),
        ("node_vmstat_pswpout", 0),
        ("node_vmstat_oom_kill", 0),
        ("node_context_switches_total", 60_000),
        ("node_intr_total", 40_000),
        ("node_forks_total", 80),
        ("node_netstat_Tcp_InSegs", 5000),
        ("node_netstat_Tcp_OutSegs", 5000),
        ("node_netstat_Tcp_RetransSegs", 4),
        ("node_netstat_Tcp_ActiveOpens", 30),
        ("node_netstat_Tcp_PassiveOpens", 25),
        ("node_netstat_Udp_InDatagrams", 300),
        ("node_netstat_Udp_OutDatagrams", 300),
        ("node_netstat_TcpExt_ListenDrops", 0),
        ("node_netstat_IpExt_InOctets", 2_000_000),
        ("node_netstat_IpExt_OutOctets", 1_500_000),
    ];
    for &(n, max) in &vm {
        add(n, Vec::new(), Kind::CounterInt { max });
    }
    for (n, base, digits) in [
        ("node_load1", 1.5, 3),
        ("node_load5", 1.4, 3),
        ("node_load15", 1.3, 3),
        ("node_procs_running", 3.0, 1),
        ("node_procs_blocked", 1.0, 1),
        ("node_sockstat_TCP_inuse", 240.0, 3),
        ("node_sockstat_sockets_used", 900.0, 3),
        ("node_filefd_allocated", 8000.0, 4),
        ("node_entropy_available_bits", 256.0, 3),
        ("node_nf_conntrack_entries", 4200.0, 4),
        ("process_resident_memory_bytes", 2.8e7, 3),
        ("go_goroutines", 9.0, 2),
        ("go_memstats_heap_alloc_bytes", 4.1e6, 3),
        ("process_open_fds", 11.0, 2),
        ("node_scrape_duration_seconds", 0.045, 2),
    ] {
        add(n, Vec::new(), Kind::Gauge { base, digits });
    }
    for (n, v) in [
        ("node_boot_time_seconds", 1.714e9),
        ("node_filefd_maximum", 9.22e18),
        ("node_nf_conntrack_entries_limit", 262_144.0),
        ("process_max_fds", 1_048_576.0),
        ("process_start_time_seconds", 1.714e9),
        ("node_exporter_build_info", 1.0),
        ("node_uname_info", 1.0),
        ("node_os_info", 1.0),
        ("node_time_zone_offset_seconds", 0.0),
        ("up", 1.0),
    ] {
        add(n, Vec::new(), Kind::Const(v));
    }
    for (i, zone) in ["acpitz", "coretemp", "nvme"].iter().enumerate() {
        for s in 0..4 {
            add(
                "node_hwmon_temp_celsius",
                vec![("chip", zone.to_string()), ("sensor", format!("temp{s}"))],
                Kind::Gauge {
                    base: 40.0 + i as f64 * 5.0,
                    digits: 3,
                },
            );
        }
    }
    let collectors = [
        "arp",
        "bcache",
        "bonding",
        "btrfs",
        "conntrack",
        "cpu",
        "cpufreq",
        "diskstats",
        "dmi",
        "edac",
        "entropy",
        "fibrechannel",
        "filefd",
        "filesystem",
        "hwmon",
        "infiniband",
        "ipvs",
        "loadavg",
        "mdadm",
        "meminfo",
        "netclass",
        "netdev",
        "netstat",
        "nfs",
        "nfsd",
        "nvme",
        "os",
        "powersupplyclass",
        "pressure",
        "rapl",
        "schedstat",
        "selinux",
        "sockstat",
        "softnet",
        "stat",
        "tapestats",
        "textfile",
        "thermal_zone",
        "time",
        "timex",
    ];
    for c in collectors {
        add(
            "node_scrape_collector_duration_seconds",
            vec![("collector", c.to_string())],
            Kind::Gauge {
                base: 0.002,
                digits: 2,
            },
        );
        add(
            "node_scrape_collector_success",
            vec![("collector", c.to_string())],
            Kind::Const(1.0),
        );
    }
    for c in 0..cpus {
        for (n, max) in [
            ("node_schedstat_running_seconds_total", 25),
            ("node_schedstat_waiting_seconds_total", 2),
            ("node_schedstat_timeslices_total", 3000),
        ] {
            add(n, vec![("cpu", c.to_string())], Kind::CounterCenti { max });
        }
    }
    // Pad to 1000 with systemd unit states (5 states per unit, one is 1).
    let states = ["activating", "active", "deactivating", "failed", "inactive"];
    let mut unit = 0;
    while t.len() < SERIES_PER_HOST {
        let s = states[t.len() % 5];
        t.push(Template {
            labels: vec![
                ("__name__", "node_systemd_unit_state".to_string()),
                ("name", format!("unit-{unit:03}.service")),
                ("state", s.to_string()),
                ("type", "simple".to_string()),
            ],
            kind: Kind::Const(if s == "active" { 1.0 } else { 0.0 }),
        });
        if t.len() % 5 == 0 {
            unit += 1;
        }
    }
    t.truncate(SERIES_PER_HOST);
    t
}

fn series_labels(host: usize, tpl: &Template) -> Labels {
    let regions = ["us-east-1", "eu-west-1", "ap-south-1"];
    let region = regions[host % 3];
    let mut pairs: Vec<(&str, String)> = vec![
        ("job", "node".to_string()),
        ("instance", format!("host-{host:05}:9100")),
        ("cluster", format!("k8s-{:02}", host / 200)),
        (
            "env",
            if host % 10 == 0 { "staging" } else { "prod" }.to_string(),
        ),
        ("region", region.to_string()),
        (
            "zone",
            format!("{region}{}", ["a", "b", "c"][(host / 3) % 3]),
        ),
    ];
    pairs.extend(tpl.labels.iter().map(|(n, v)| (*n, v.clone())));
    Labels::from_pairs(pairs)
}

/// Per-series generator state (24 bytes).
#[derive(Debug, Clone, Copy)]
struct SeriesState {
    rng: u64,
    /// Counter ticks or gauge value bits.
    acc: u64,
    tpl: u32,
}

struct Data {
    labels: Vec<Labels>,
    kinds: Vec<Kind>,
    state: Vec<SeriesState>,
    hosts: usize,
    n: usize,
    t0: i64,
    jitter: u64,
}

impl Data {
    fn new(n: usize, t0: i64) -> Self {
        let tpls = host_template();
        let hosts = n.div_ceil(SERIES_PER_HOST);
        let mut labels = Vec::with_capacity(n);
        let mut state = Vec::with_capacity(n);
        for i in 0..n {
            let (h, k) = (i / SERIES_PER_HOST, i % SERIES_PER_HOST);
            labels.push(series_labels(h, &tpls[k]));
            let rng = mix(i as u64 ^ 0x5eed);
            let acc = match tpls[k].kind {
                Kind::CounterInt { max } | Kind::CounterCenti { max } => {
                    (rng % 1_000_000) * u64::from(max.max(1))
                }
                Kind::Gauge { base, .. } => base.to_bits(),
                Kind::Const(v) => v.to_bits(),
            };
            state.push(SeriesState {
                rng,
                acc,
                tpl: k as u32,
            });
        }
        Self {
            labels,
            kinds: tpls.iter().map(|t| t.kind).collect(),
            state,
            hosts,
            n,
            t0,
            jitter: env_usize("STRATUS_BENCH_JITTER_MS", 25) as u64,
        }
    }

    fn n(&self) -> usize {
        self.n
    }

    /// Timestamp of `host`'s scrape number `round`.
    fn ts(&self, host: usize, round: i64) -> i64 {
        let phase = (mix(host as u64) % 14_000) as i64;
        let jitter = (mix((host as u64) << 20 ^ round as u64) % self.jitter.max(1)) as i64;
        self.t0 + phase + round * INTERVAL + jitter
    }

    /// Next value of series `i`.
    fn next_value(&mut self, i: usize) -> f64 {
        let st = &mut self.state[i];
        st.rng = mix(st.rng);
        let r = st.rng;
        match self.kinds[st.tpl as usize] {
            Kind::CounterInt { max } => {
                if r % 10_000 == 0 {
                    st.acc = 0;
                } else {
                    st.acc += (r >> 16) % (u64::from(max) + 1);
                }
                st.acc as f64
            }
            Kind::CounterCenti { max } => {
                if r % 10_000 == 0 {
                    st.acc = 0;
                } else {
                    st.acc += (r >> 16) % (u64::from(max) + 1);
                }
                st.acc as f64 / 100.0
            }
            Kind::Gauge { base, digits } => {
                // Mostly small moves, sometimes unchanged.
                let cur = f64::from_bits(st.acc);
                let step = ((r >> 16) % 2001) as f64 / 1000.0 - 1.0; // [-1, 1]
                let next = if r % 4 == 0 {
                    cur
                } else {
                    (cur + step * base * 0.01).clamp(base * 0.5, base * 1.5)
                };
                let v = round_sig(next, digits);
                st.acc = v.to_bits();
                v
            }
            Kind::Const(v) => v,
        }
    }
}

fn round_sig(v: f64, digits: u8) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let mag = v.abs().log10().floor() as i32;
    let p = i32::from(digits) - 1 - mag;
    if p >= 0 {
        let f = 10f64.powi(p);
        (v * f).round() / f
    } else {
        let f = 10f64.powi(-p);
        (v / f).round() * f
    }
}

/// One remote-write request: series indexes and one sample each.
struct Request {
    series: Vec<u32>,
    samples: Vec<Sample>,
}

/// Generates the requests of scrape `round` for hosts `hosts`, in scrape
/// order, `REQUEST_SAMPLES` samples per request.
fn gen_round(data: &mut Data, round: i64, hosts: impl Iterator<Item = usize>) -> Vec<Request> {
    let mut out = Vec::new();
    let mut cur = Request {
        series: Vec::with_capacity(REQUEST_SAMPLES),
        samples: Vec::with_capacity(REQUEST_SAMPLES),
    };
    let n = data.n();
    for h in hosts {
        let t = data.ts(h, round);
        for i in h * SERIES_PER_HOST..((h + 1) * SERIES_PER_HOST).min(n) {
            let v = data.next_value(i);
            cur.series.push(i as u32);
            cur.samples.push(Sample::new(t, v));
            if cur.series.len() == REQUEST_SAMPLES {
                out.push(std::mem::replace(
                    &mut cur,
                    Request {
                        series: Vec::with_capacity(REQUEST_SAMPLES),
                        samples: Vec::with_capacity(REQUEST_SAMPLES),
                    },
                ));
            }
        }
    }
    if !cur.series.is_empty() {
        out.push(cur);
    }
    out
}

/// Appends one request; returns the time spent inside `Db::append`.
fn send(db: &Db, labels: &[Labels], req: &Request) -> Duration {
    let b: Vec<SeriesSamples<'_>> = req
        .series
        .iter()
        .zip(req.samples.chunks_exact(1))
        .map(|(&i, s)| SeriesSamples {
            labels: &labels[i as usize],
            samples: s,
        })
        .collect();
    let start = Instant::now();
    let r = db.append(&b).expect("append");
    let took = start.elapsed();
    assert_eq!(r.rejected, 0, "rejected: {:?}", r.errors.first());
    took
}

// ---------------------------------------------------------------------------
// Measurements.

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    s.split_whitespace()
        .nth(1)
        .and_then(|x| x.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let md = e.metadata().unwrap();
            if md.is_dir() {
                dir_bytes(&e.path())
            } else {
                md.len()
            }
        })
        .sum()
}

/// (index bytes, chunk bytes, samples, series) over the given blocks.
fn block_bytes(bucket_dir: &Path, db: &Db) -> (u64, u64, u64, u64) {
    let mut out = (0, 0, 0, 0);
    for m in db.block_metas() {
        let d = bucket_dir.join(m.ulid.to_string());
        out.0 += std::fs::metadata(d.join("index")).map_or(0, |m| m.len());
        out.1 += dir_bytes(&d.join("chunks"));
        out.2 += m.stats.num_samples;
        out.3 += m.stats.num_series;
    }
    out
}

fn matcher(t: MatchType, n: &str, v: &str) -> Matcher {
    Matcher::new(t, n, v).unwrap()
}

/// Selects one host's series over `[mint, maxt]` and decodes every sample.
/// Returns (series, samples, select time, decode time), best of `reps`.
fn select_decode(
    db: &Db,
    host: usize,
    mint: i64,
    maxt: i64,
    reps: usize,
) -> (usize, u64, Duration, Duration) {
    let ms = [
        matcher(MatchType::Equal, "job", "node"),
        matcher(
            MatchType::Equal,
            "instance",
            &format!("host-{host:05}:9100"),
        ),
    ];
    let mut best = (0, 0, Duration::MAX, Duration::ZERO);
    for _ in 0..reps {
        let start = Instant::now();
        let series = db.select(&ms, &SelectHints::range(mint, maxt)).unwrap();
        let sel = start.elapsed();
        let start = Instant::now();
        let mut n = 0u64;
        let mut acc = 0f64;
        for s in &series {
            for (t, v) in s.iter(mint, maxt) {
                n += 1;
                acc += v + t as f64;
            }
        }
        black_box(acc);
        let dec = start.elapsed();
        if sel + dec < best.2.saturating_add(best.3) {
            best = (series.len(), n, sel, dec);
        }
    }
    best
}

/// Phase 1's appenders: the calling thread, or (`STRATUS_BENCH_POOL=k`)
/// `k` threads taking requests in turn, one at a time, like the tokio
/// blocking pool that runs a server's or an ingester's appends: series
/// are then created and their chunks grown and freed from several
/// threads, i.e. from several of the allocator's per-thread heaps.
struct Pool {
    jobs: Vec<mpsc::Sender<Request>>,
    done: mpsc::Receiver<Duration>,
    next: usize,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    fn new(k: usize, db: &Arc<Db>, labels: &Arc<Vec<Labels>>) -> Self {
        let (done_tx, done) = mpsc::channel();
        let mut jobs = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..k {
            let (tx, rx) = mpsc::channel::<Request>();
            let (db, labels, done_tx) = (db.clone(), labels.clone(), done_tx.clone());
            threads.push(std::thread::spawn(move || {
                for r in rx {
                    let _ = done_tx.send(send(&db, &labels, &r));
                }
            }));
            jobs.push(tx);
        }
        Pool {
            jobs,
            done,
            next: 0,
            threads,
        }
    }

    fn send(&mut self, db: &Db, labels: &[Labels], r: Request) -> Duration {
        if self.jobs.is_empty() {
            return send(db, labels, &r);
        }
        let k = self.next % self.jobs.len();
        self.next += 1;
        self.jobs[k].send(r).unwrap();
        self.done.recv().unwrap()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Median latency of the matcher-heavy select (full and labels-only).
fn heavy_select(db: &Db, mint: i64, maxt: i64) -> (usize, Duration, Duration) {
    let ms = [
        matcher(MatchType::Equal, "job", "node"),
        matcher(MatchType::RegexMatch, "__name__", "node_cpu.*"),
    ];
    let run = |labels_only: bool| {
        let mut v = Vec::new();
        let mut n = 0;
        for _ in 0..5 {
            let mut h = SelectHints::range(mint, maxt);
            h.labels_only = labels_only;
            let start = Instant::now();
            let r = db.select(&ms, &h).unwrap();
            v.push(start.elapsed());
            n = r.len();
            black_box(r);
        }
        v.sort();
        (n, v[v.len() / 2])
    };
    let (n, full) = run(false);
    let (_, lo) = run(true);
    (n, full, lo)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn mps(samples: u64, d: Duration) -> f64 {
    samples as f64 / d.as_secs_f64() / 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn open(dir: &Path, bucket: Bucket, cfg: DbConfig) -> Arc<Db> {
    Arc::new(Db::open(dir, bucket, cfg).await.expect("open db"))
}

// ---------------------------------------------------------------------------

/// CPU time (user + system) of the calling thread, from
/// `/proc/thread-self/stat` (10 ms resolution).
fn thread_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Appends pre-generated requests per thread into one db; returns wall
/// time and the CPU time all threads spent.
fn run_threads(
    db: &Arc<Db>,
    labels: &Arc<Vec<Labels>>,
    per_thread: Vec<Vec<Request>>,
) -> (Duration, Duration) {
    let start = Instant::now();
    let cpu = std::thread::scope(|s| {
        let hs: Vec<_> = per_thread
            .into_iter()
            .map(|reqs| {
                let db = db.clone();
                s.spawn(move || {
                    let c0 = thread_cpu();
                    for r in &reqs {
                        send(&db, labels, r);
                    }
                    thread_cpu().saturating_sub(c0)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<Duration>()
    });
    (start.elapsed(), cpu)
}

fn main() {
    let n = env_usize("STRATUS_BENCH_SERIES", 100_000);
    let rounds = env_usize("STRATUS_BENCH_ROUNDS", 480) as i64;
    let disk = env_usize("STRATUS_BENCH_DISK", 1) != 0;
    let threads = env_usize("STRATUS_BENCH_THREADS", 1) != 0;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // A 4 h-aligned window that ends before now: [t0, t0 + 4h).
    let t0 = (now / (4 * H)) * 4 * H - 4 * H;
    let mut report: Vec<(String, String)> = Vec::new();
    let mut row = |k: &str, v: String| {
        println!("  {k:<58} {v}");
        report.push((k.to_string(), v));
    };
    println!(
        "engine bench: N={n} series ({} hosts × {SERIES_PER_HOST}), {rounds} rounds × 15 s, \
         requests of {REQUEST_SAMPLES} series × 1 sample",
        n.div_ceil(SERIES_PER_HOST)
    );

    // ---- 1 + 2: append 2 h in one thread, memory per series ----
    let dir = tempfile::tempdir().unwrap();
    let bdir = tempfile::tempdir().unwrap();
    let bucket = Bucket::local(bdir.path()).unwrap();
    let cfg = DbConfig {
        compaction_ranges: vec![2 * H, 4 * H],
        // Data time runs far faster than wall time here: re-encode sealed
        // head chunks at every maintenance call (every 20 rounds = 5 min of
        // data), as a server does every 2 minutes of wall time.
        head_chunk_compaction_interval: Duration::ZERO,
        ..DbConfig::default()
    };
    let mut data = Data::new(n, t0);
    let hosts = data.hosts;
    let labels = Arc::new(std::mem::take(&mut data.labels));
    let db = rt.block_on(open(dir.path(), bucket, cfg));
    let mut pool = Pool::new(env_usize("STRATUS_BENCH_POOL", 0), &db, &labels);
    let rss0 = rss_bytes();
    let live0 = live_snapshot();
    let (mut t_create, mut t_steady) = (Duration::ZERO, Duration::ZERO);
    let (mut s_create, mut s_steady) = (0u64, 0u64);
    let wall = Instant::now();
    for round in 0..rounds {
        for r in gen_round(&mut data, round, 0..hosts) {
            let n = r.samples.len() as u64;
            let d = pool.send(&db, &labels, r);
            if round == 0 {
                t_create += d;
                s_create += n;
            } else {
                t_steady += d;
                s_steady += n;
            }
        }
        // What a real server's background ticker does every few seconds.
        if round % 20 == 0 {
            rt.block_on(db.maintain()).unwrap();
        }
    }
    let wall = wall.elapsed();
    drop(pool);
    let rss1 = rss_bytes();
    let live1 = live_snapshot();
    let st = db.stats();
    let wal_bytes = dir_bytes(&dir.path().join("wal"));
    println!("\n[1] append, one thread, {rounds} rounds (time inside Db::append only):");
    row(
        "append 1 thread: series creation round",
        format!("{:.2} M samples/s", mps(s_create, t_create)),
    );
    row(
        "append 1 thread: steady state",
        format!(
            "{:.2} M samples/s ({:.0} ns/sample; wall incl. generation {:.1} s)",
            mps(s_steady, t_steady),
            t_steady.as_nanos() as f64 / s_steady as f64,
            wall.as_secs_f64()
        ),
    );
    println!("\n[2] memory with {rounds} samples/series in the head:");
    row(
        "RSS delta / series (statm)",
        format!(
            "{:.0} B ({:.1} MiB total)",
            rss1.saturating_sub(rss0) as f64 / n as f64,
            rss1.saturating_sub(rss0) as f64 / (1 << 20) as f64
        ),
    );
    row(
        "head estimate (stats.head_bytes) / series",
        format!("{:.0} B", st.head_bytes as f64 / n as f64),
    );
    let hm = db.head_memory();
    let per = |x: u64| x as f64 / hm.series.max(1) as f64;
    row(
        "head breakdown / series (estimate)",
        format!(
            "series {:.0} + labels {:.0} + sealed chunks {:.0} + open chunk {:.0} + ooo {:.0} \
             + maps {:.0} + postings {:.0} + symbols {:.0} B; in head chunk files {:.0} B \
             (files {:.0} B)",
            per(hm.series_structs),
            per(hm.labels),
            per(hm.sealed_chunks),
            per(hm.open_chunks),
            per(hm.ooo),
            per(hm.series_maps),
            per(hm.postings),
            per(hm.symbols),
            per(hm.chunk_files),
            st.head_chunk_file_bytes as f64 / n as f64
        ),
    );
    let live = (live1.0 - live0.0).max(0) as f64;
    row(
        "live heap bytes / series (counting allocator)",
        format!(
            "{:.0} B; allocator overhead (RSS delta − live) {:.0} B",
            live / n as f64,
            (rss1.saturating_sub(rss0) as f64 - live) / n as f64
        ),
    );
    // The size buckets holding most of the growth, as blocks per series.
    let mut by: Vec<(usize, isize)> = live1
        .1
        .iter()
        .zip(&live0.1)
        .map(|(a, b)| a - b)
        .enumerate()
        .filter(|x| x.1 > 0)
        .collect();
    by.sort_by_key(|x| -(x.1 * (x.0 as isize)));
    let top: Vec<String> = by
        .iter()
        .take(12)
        .map(|&(b, c)| {
            let hi = if b == BUCKETS - 1 {
                "+".to_string()
            } else {
                (b * 16).to_string()
            };
            format!(
                "{}-{hi} B ×{:.2}",
                (b.max(1) - 1) * 16 + 1,
                c as f64 / n as f64
            )
        })
        .collect();
    row("live blocks / series by requested size", top.join(", "));
    println!("\n[3] bytes on disk:");
    row(
        "WAL bytes / sample (all segment files, incl. series records)",
        format!(
            "{:.2} B ({} MiB, stats.wal_bytes {} MiB)",
            wal_bytes as f64 / st.samples_appended as f64,
            wal_bytes >> 20,
            st.wal_bytes >> 20
        ),
    );

    // ---- 4a: select from the head ----
    let (mint, maxt) = (t0, t0 + 2 * H - 1);
    let host = hosts / 2;
    let (ns, nsamp, sel, dec) = select_decode(&db, host, mint, maxt, 7);
    let head_sel = (ns, nsamp, sel, dec);
    let heavy_head = heavy_select(&db, mint, maxt);

    let mut disk_rows = Vec::new();
    if disk {
        // Second 2 h, then cut and compact.
        for round in rounds..2 * rounds {
            for r in gen_round(&mut data, round, 0..hosts) {
                send(&db, &labels, &r);
            }
            if round % 20 == 0 {
                rt.block_on(db.maintain()).unwrap();
            }
        }
        let start = Instant::now();
        rt.block_on(db.flush_head()).unwrap();
        let cut = start.elapsed();
        let l1 = block_bytes(bdir.path(), &db);
        let nblocks = db.block_metas().len();
        let l1_sel = select_decode(&db, host, mint, maxt, 7);
        let start = Instant::now();
        rt.block_on(db.maintain()).unwrap();
        let comp = start.elapsed();
        let metas = db.block_metas();
        let l2 = block_bytes(bdir.path(), &db);
        let l2_sel = select_decode(&db, host, mint, maxt, 7);
        let heavy_l2 = heavy_select(&db, mint, maxt);
        disk_rows.push((nblocks, cut, l1, l1_sel, metas, comp, l2, l2_sel, heavy_l2));
    }
    for (nblocks, cut, l1, _, metas, comp, l2, _, _) in &disk_rows {
        let per = |x: &(u64, u64, u64, u64)| {
            format!(
                "{:.3} B (index {:.3} + chunks {:.3}; {} samples, {} series-blocks)",
                (x.0 + x.1) as f64 / x.2 as f64,
                x.0 as f64 / x.2 as f64,
                x.1 as f64 / x.2 as f64,
                x.2,
                x.3
            )
        };
        row(
            &format!(
                "level-1 blocks ({nblocks} × 2h, cut in {:.1} s) bytes/sample",
                cut.as_secs_f64()
            ),
            per(l1),
        );
        row(
            &format!(
                "compacted ({} block(s), level {}, in {:.1} s) bytes/sample",
                metas.len(),
                metas.iter().map(|m| m.compaction.level).max().unwrap_or(0),
                comp.as_secs_f64()
            ),
            per(l2),
        );
    }
    println!("\n[4] select and decode (best of 7):");
    let sel_row = |row: &mut dyn FnMut(&str, String),
                   what: &str,
                   (ns, nsamp, sel, dec): (usize, u64, Duration, Duration)| {
        row(
            &format!("select+decode {ns} series × 2h from {what}"),
            format!(
                "{:.1} M samples/s ({nsamp} samples: select {:.1} ms + decode {:.1} ms)",
                mps(nsamp, sel + dec),
                ms(sel),
                ms(dec)
            ),
        );
    };
    sel_row(&mut row, "head", head_sel);
    for (_, _, _, l1_sel, _, _, _, l2_sel, _) in &disk_rows {
        sel_row(&mut row, "level-1 blocks", *l1_sel);
        sel_row(&mut row, "compacted block", *l2_sel);
    }
    let heavy_row =
        |row: &mut dyn FnMut(&str, String), what: &str, h: (usize, Duration, Duration)| {
            row(
                &format!("{{job=\"node\",__name__=~\"node_cpu.*\"}} on {what} (median of 5)"),
                format!(
                    "{:.1} ms with chunks, {:.1} ms labels-only ({} series)",
                    ms(h.1),
                    ms(h.2),
                    h.0
                ),
            );
        };
    heavy_row(&mut row, "head", heavy_head);
    for (.., heavy_l2) in &disk_rows {
        heavy_row(&mut row, "compacted block", *heavy_l2);
    }
    drop(db);

    // ---- 1b. one vs two threads on identical pre-generated requests ----
    // Runs last: memory it frees stays mapped by the allocator and would
    // hide the RSS growth measured in phase 2.
    if threads {
        let r2 = (6_000_000 / n.max(1)).clamp(10, 120) as i64;
        let mut data = Data::new(n, t0);
        let hosts = data.hosts;
        let mut per: Vec<Vec<Request>> = vec![Vec::new(), Vec::new()];
        let mut creation: Vec<Vec<Request>> = vec![Vec::new(), Vec::new()];
        for round in 0..r2 {
            for (k, p) in per.iter_mut().enumerate() {
                let reqs = gen_round(&mut data, round, (k..hosts).step_by(2));
                if round == 0 {
                    creation[k].extend(reqs);
                } else {
                    p.extend(reqs);
                }
            }
        }
        let samples: u64 = per.iter().flatten().map(|r| r.samples.len() as u64).sum();
        let labels = Arc::new(std::mem::take(&mut data.labels));
        drop(data);
        let mut results = Vec::new();
        for nthreads in [1usize, 2] {
            let dir = tempfile::tempdir().unwrap();
            let db = rt.block_on(open(dir.path(), Bucket::memory(), DbConfig::default()));
            let jobs = |src: &Vec<Vec<Request>>| -> Vec<Vec<Request>> {
                // Clone requests so both runs see identical input.
                let cl = |v: &Vec<Request>| -> Vec<Request> {
                    v.iter()
                        .map(|r| Request {
                            series: r.series.clone(),
                            samples: r.samples.clone(),
                        })
                        .collect()
                };
                if nthreads == 1 {
                    // Interleave the two halves request by request.
                    let mut out = Vec::new();
                    let (a, b) = (cl(&src[0]), cl(&src[1]));
                    let mut ia = a.into_iter();
                    let mut ib = b.into_iter();
                    loop {
                        match (ia.next(), ib.next()) {
                            (None, None) => break,
                            (x, y) => out.extend(x.into_iter().chain(y)),
                        }
                    }
                    vec![out]
                } else {
                    src.iter().map(cl).collect()
                }
            };
            let (c, _) = run_threads(&db, &labels, jobs(&creation));
            let (w, cpu) = run_threads(&db, &labels, jobs(&per));
            results.push((nthreads, c, w, cpu));
            drop(db);
        }
        println!(
            "\n[1b] append, pre-generated requests, {} rounds after a creation round:",
            r2 - 1
        );
        for (nt, c, w, cpu) in &results {
            let creat = n as u64;
            row(
                &format!("append {nt} thread(s): series creation round"),
                format!("{:.2} M samples/s ({:.0} ms)", mps(creat, *c), ms(*c)),
            );
            row(
                &format!("append {nt} thread(s): steady state (wall)"),
                format!(
                    "{:.2} M samples/s total, {:.2} M/s per thread; {:.2} M samples per CPU-second",
                    mps(samples, *w),
                    mps(samples, *w) / *nt as f64,
                    mps(samples, *cpu)
                ),
            );
        }
        drop(labels);
    }

    println!("\nsummary (N = {n}):");
    for (k, v) in &report {
        println!("| {k} | {v} |");
    }
}
