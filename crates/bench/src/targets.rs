//! A fleet of fake scrape targets for agent benchmarks: `count` HTTP
//! listeners on consecutive ports, each serving `/metrics` as a
//! node_exporter-like text exposition page of about `series` series.
//!
//! The page of a target is stable in shape (same families, same label
//! sets, same order, with `# HELP`/`# TYPE` lines) and its values change
//! with time like a real exporter's: counters grow by a per-series rate,
//! gauges move in their last significant digits, histogram buckets grow
//! cumulatively. The label text of every line is rendered once at start;
//! a request only formats the values, so the fleet costs little next to
//! the scrapers it feeds.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// What the fleet serves.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Listen address of the first target; target `i` listens on port
    /// `first.port() + i`.
    pub first: SocketAddr,
    /// Number of targets.
    pub count: usize,
    /// Approximate series per target page.
    pub series: usize,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    /// Cumulative bucket / `_count` line of a histogram: grows.
    Bucket,
}

/// One sample line: its rendered `name{labels} ` prefix and value shape.
#[derive(Debug)]
struct Line {
    prefix: String,
    kind: Kind,
    /// Per-series rate (counters, buckets) or level (gauges).
    scale: f64,
    seed: u64,
}

/// One target's page: header lines interleaved with sample lines.
#[derive(Debug)]
enum Part {
    Text(String),
    Sample(Line),
}

#[derive(Debug)]
struct Page {
    parts: Vec<Part>,
    bytes_hint: usize,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser: a cheap, well-spread hash.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn unit(seed: u64) -> f64 {
    (mix(seed) >> 11) as f64 / (1u64 << 53) as f64
}

/// Families modelled on node_exporter's, as (name, type, help, label sets).
struct Builder {
    parts: Vec<Part>,
    series: usize,
    seed: u64,
}

impl Builder {
    fn family(&mut self, name: &str, kind: &str, help: &str, label_sets: &[String]) {
        self.parts.push(Part::Text(format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n"
        )));
        for ls in label_sets {
            let k = if kind == "counter" {
                Kind::Counter
            } else {
                Kind::Gauge
            };
            self.sample(name, ls, k);
        }
    }

    fn sample(&mut self, name: &str, labels: &str, kind: Kind) {
        self.seed = mix(self.seed);
        let r = unit(self.seed);
        let scale = match kind {
            Kind::Counter | Kind::Bucket => (r * 1000.0).round() / 100.0 + 0.01,
            Kind::Gauge => (r * 1e6).round(),
        };
        let prefix = if labels.is_empty() {
            format!("{name} ")
        } else {
            format!("{name}{{{labels}}} ")
        };
        self.parts.push(Part::Sample(Line {
            prefix,
            kind,
            scale,
            seed: self.seed,
        }));
        self.series += 1;
    }

    fn histogram(&mut self, name: &str, help: &str, label_sets: &[&str]) {
        self.parts.push(Part::Text(format!(
            "# HELP {name} {help}\n# TYPE {name} histogram\n"
        )));
        for labels in label_sets {
            let sep = if labels.is_empty() { "" } else { "," };
            for le in [
                "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
                "+Inf",
            ] {
                self.sample(
                    &format!("{name}_bucket"),
                    &format!("{labels}{sep}le=\"{le}\""),
                    Kind::Bucket,
                );
            }
            self.sample(&format!("{name}_sum"), labels, Kind::Counter);
            self.sample(&format!("{name}_count"), labels, Kind::Bucket);
        }
    }
}

fn build_page(target: usize, want: usize) -> Page {
    let mut b = Builder {
        parts: Vec::new(),
        series: 0,
        seed: target as u64 * 0x1_0000_0001,
    };
    const MODES: [&str; 8] = [
        "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
    ];
    const DEVS: [&str; 4] = ["eth0", "eth1", "lo", "wlan0"];
    const DISKS: [&str; 3] = ["nvme0n1", "sda", "sdb"];
    const MOUNTS: [(&str, &str, &str); 5] = [
        ("/dev/nvme0n1p2", "ext4", "/"),
        ("/dev/nvme0n1p1", "vfat", "/boot/efi"),
        ("/dev/sda1", "xfs", "/var/lib/data"),
        ("tmpfs", "tmpfs", "/run"),
        ("tmpfs", "tmpfs", "/tmp"),
    ];
    let mut round = 0usize;
    while b.series < want {
        // Every round adds the same node_exporter-like families; rounds
        // after the first carry a `collector` suffix so names stay unique.
        let sfx = if round == 0 {
            String::new()
        } else {
            format!("_r{round}")
        };
        let cpus: Vec<String> = (0..8)
            .flat_map(|c| {
                MODES
                    .iter()
                    .map(move |m| format!("cpu=\"{c}\",mode=\"{m}\""))
            })
            .collect();
        b.family(
            &format!("node_cpu_seconds_total{sfx}"),
            "counter",
            "Seconds the CPUs spent in each mode.",
            &cpus,
        );
        let devs: Vec<String> = DEVS.iter().map(|d| format!("device=\"{d}\"")).collect();
        for m in [
            "receive_bytes",
            "receive_packets",
            "receive_errs",
            "receive_drop",
            "transmit_bytes",
            "transmit_packets",
            "transmit_errs",
            "transmit_drop",
        ] {
            b.family(
                &format!("node_network_{m}_total{sfx}"),
                "counter",
                &format!("Network device statistic {m}."),
                &devs,
            );
        }
        let disks: Vec<String> = DISKS.iter().map(|d| format!("device=\"{d}\"")).collect();
        for m in [
            "reads_completed_total",
            "writes_completed_total",
            "read_bytes_total",
            "written_bytes_total",
            "io_time_seconds_total",
            "read_time_seconds_total",
            "write_time_seconds_total",
            "discards_completed_total",
        ] {
            b.family(
                &format!("node_disk_{m}{sfx}"),
                "counter",
                &format!("The total number of {m}."),
                &disks,
            );
        }
        let mounts: Vec<String> = MOUNTS
            .iter()
            .map(|(d, f, m)| format!("device=\"{d}\",fstype=\"{f}\",mountpoint=\"{m}\""))
            .collect();
        for m in [
            "avail_bytes",
            "free_bytes",
            "size_bytes",
            "files",
            "files_free",
            "readonly",
        ] {
            b.family(
                &format!("node_filesystem_{m}{sfx}"),
                "gauge",
                &format!("Filesystem {m}."),
                &mounts,
            );
        }
        for m in [
            "MemTotal",
            "MemFree",
            "MemAvailable",
            "Buffers",
            "Cached",
            "SwapCached",
            "Active",
            "Inactive",
            "Dirty",
            "Writeback",
            "AnonPages",
            "Mapped",
            "Shmem",
            "Slab",
            "SReclaimable",
            "SUnreclaim",
            "KernelStack",
            "PageTables",
            "Committed_AS",
            "VmallocUsed",
        ] {
            b.family(
                &format!("node_memory_{m}_bytes{sfx}"),
                "gauge",
                &format!("Memory information field {m}_bytes."),
                &[String::new()],
            );
        }
        for m in ["load1", "load5", "load15", "procs_running", "procs_blocked"] {
            b.family(
                &format!("node_{m}{sfx}"),
                "gauge",
                &format!("{m}."),
                &[String::new()],
            );
        }
        b.histogram(
            &format!("http_request_duration_seconds{sfx}"),
            "A histogram of request latencies.",
            &[
                "handler=\"/metrics\",method=\"GET\"",
                "handler=\"/api\",method=\"POST\"",
            ],
        );
        round += 1;
    }
    let bytes_hint = b
        .parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => t.len(),
            Part::Sample(l) => l.prefix.len() + 24,
        })
        .sum();
    Page {
        parts: b.parts,
        bytes_hint,
    }
}

fn render(page: &Page, now_s: f64) -> String {
    let mut out = String::with_capacity(page.bytes_hint);
    for p in &page.parts {
        match p {
            Part::Text(t) => out.push_str(t),
            Part::Sample(l) => {
                out.push_str(&l.prefix);
                let v = match l.kind {
                    // Counters grow steadily with a per-series rate.
                    Kind::Counter => ((now_s - 1.7e9) * l.scale * 100.0).round() / 100.0,
                    Kind::Bucket => ((now_s - 1.7e9) * l.scale).floor(),
                    // Gauges wander within ±5 % of their level, changing
                    // every 5 s.
                    Kind::Gauge => {
                        let step = (now_s / 5.0) as u64;
                        let w = unit(l.seed ^ step) - 0.5;
                        (l.scale * (1.0 + w / 10.0)).round()
                    }
                };
                let _ = write!(out, "{v}");
                out.push('\n');
            }
        }
    }
    out
}

async fn metrics(State(page): State<Arc<Page>>) -> impl IntoResponse {
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&page, now_s),
    )
}

/// Series on one target page for a requested `series` (rounded up to a
/// whole set of families).
pub fn series_per_page(series: usize) -> usize {
    build_page(0, series)
        .parts
        .iter()
        .filter(|p| matches!(p, Part::Sample(_)))
        .count()
}

/// Binds every target's port, then serves until the process ends.
pub async fn serve(cfg: FleetConfig) -> std::io::Result<()> {
    let mut tasks = Vec::with_capacity(cfg.count);
    for i in 0..cfg.count {
        let port = cfg
            .first
            .port()
            .checked_add(u16::try_from(i).unwrap_or(u16::MAX))
            .ok_or_else(|| std::io::Error::other("port range overflows 65535"))?;
        let addr = SocketAddr::new(cfg.first.ip(), port);
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("binding target {i} on {addr}: {e}"))
        })?;
        let app = Router::new()
            .route("/metrics", get(metrics))
            .with_state(Arc::new(build_page(i, cfg.series)));
        tasks.push(tokio::spawn(
            async move { axum::serve(listener, app).await },
        ));
    }
    for t in tasks {
        t.await.map_err(std::io::Error::other)??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_has_requested_series_and_changes() {
        let p = build_page(3, 500);
        let n = p
            .parts
            .iter()
            .filter(|p| matches!(p, Part::Sample(_)))
            .count();
        assert!((500..1000).contains(&n), "{n}");
        let a = render(&p, 1.8e9);
        let b = render(&p, 1.8e9 + 5.0);
        assert_eq!(a.lines().count(), b.lines().count());
        assert_ne!(a, b);
        assert!(a.contains("node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} "));
        assert!(a.contains(
            "http_request_duration_seconds_bucket{handler=\"/api\",method=\"POST\",le=\"+Inf\"} "
        ));
    }
}
