//! `stratus bench write|query|targets|sink`: the load generator's command
//! line (the generator itself is the `stratus-bench` crate).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use stratus_bench::workload::{Protocol, Workload, WorkloadConfig};
use stratus_bench::{Auth, query, write};

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Proto {
    /// Remote write 1.0.
    V1,
    /// Remote write 2.0.
    V2,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Push an avalanche-style workload by remote write and report
    /// accepted samples/s and latencies.
    Write(Box<WriteArgs>),
    /// Run the dashboard query set concurrently for a fixed time and
    /// report latencies.
    Query(QueryArgs),
    /// Serve a fleet of fake node_exporter-like scrape targets on
    /// consecutive ports (for agent benchmarks).
    Targets(TargetsArgs),
    /// Run a remote-write receiver that only counts what it receives
    /// (`GET /stats`).
    Sink(SinkArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct TargetsArgs {
    /// Address of the first target; target i listens on port + i.
    #[arg(long, default_value = "127.0.0.1:19600")]
    listen: std::net::SocketAddr,
    /// Number of targets.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Series per target page (rounded up to whole families).
    #[arg(long, default_value_t = 600)]
    series: usize,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SinkArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:19590")]
    listen: std::net::SocketAddr,
}

#[derive(Debug, clap::Args)]
pub(crate) struct WriteArgs {
    /// Remote-write URL.
    #[arg(long, default_value = "http://127.0.0.1:9009/api/v1/push")]
    url: String,
    /// Active series.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Metric names the series are spread over.
    #[arg(long, default_value_t = 100)]
    metrics: usize,
    /// Step between a series' samples.
    #[arg(long, default_value = "15s", value_parser = duration)]
    interval: Duration,
    /// Series replaced by new ones per minute.
    #[arg(long, default_value_t = 0.0)]
    churn_per_min: f64,
    /// Timestamps land up to this many ms after their tick.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Remote-write version.
    #[arg(long, value_enum, default_value_t = Proto::V1)]
    protocol: Proto,
    /// Concurrent senders.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Series per request.
    #[arg(long, default_value_t = 2_000)]
    batch_series: usize,
    /// Backfill this much history (oldest first, as fast as accepted)
    /// instead of pushing live.
    #[arg(long, value_parser = duration)]
    backfill: Option<Duration>,
    /// Backfill: samples per series in one request.
    #[arg(long, default_value_t = 1)]
    ticks_per_request: usize,
    /// Backfill: newest timestamp (Unix seconds; default now).
    #[arg(long)]
    end: Option<f64>,
    /// Live mode: how long to push.
    #[arg(long, default_value = "1m", value_parser = duration)]
    duration: Duration,
    /// Seed of the values (same seed, same data).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Tenant (X-Scope-OrgID header).
    #[arg(long)]
    tenant: Option<String>,
    /// Bearer token.
    #[arg(long, env = "STRATUS_BENCH_TOKEN")]
    token: Option<String>,
    /// Per-request timeout.
    #[arg(long, default_value = "60s", value_parser = duration)]
    timeout: Duration,
    /// Backfill: encode every request before the clock starts, holding at
    /// most this many MiB of compressed bodies, so the generator does not
    /// compete with the server for CPU during the push.
    #[arg(long, value_name = "MIB")]
    pregenerate: Option<u64>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct QueryArgs {
    /// Prometheus API base URL.
    #[arg(long, default_value = "http://127.0.0.1:9009")]
    url: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// How long to run.
    #[arg(long, default_value = "30s", value_parser = duration)]
    duration: Duration,
    /// Range of each query.
    #[arg(long, default_value = "1h", value_parser = duration)]
    range: Duration,
    /// Step of each query.
    #[arg(long, default_value = "60s", value_parser = duration)]
    step: Duration,
    /// End of the queried range (Unix seconds; default now).
    #[arg(long)]
    end: Option<f64>,
    /// File with one query per line (default: the dashboard set).
    #[arg(long)]
    queries: Option<PathBuf>,
    /// Tenant (X-Scope-OrgID header).
    #[arg(long)]
    tenant: Option<String>,
    /// Bearer token.
    #[arg(long, env = "STRATUS_BENCH_TOKEN")]
    token: Option<String>,
    /// Per-request timeout.
    #[arg(long, default_value = "60s", value_parser = duration)]
    timeout: Duration,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs a bench command on its own runtime.
pub(crate) fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cmd {
        BenchCommand::Targets(a) => {
            println!(
                "serving {} targets from {} with {} series each",
                a.count,
                a.listen,
                stratus_bench::targets::series_per_page(a.series)
            );
            rt.block_on(stratus_bench::targets::serve(
                stratus_bench::targets::FleetConfig {
                    first: a.listen,
                    count: a.count,
                    series: a.series,
                },
            ))
            .context("serving targets")?;
        }
        BenchCommand::Sink(a) => {
            rt.block_on(stratus_bench::sink::serve(a.listen))
                .context("serving the sink")?;
        }
        BenchCommand::Write(a) => {
            let w = Workload::new(WorkloadConfig {
                series: a.series,
                metrics: a.metrics,
                interval: a.interval,
                churn_per_min: a.churn_per_min,
                jitter_ms: a.jitter_ms,
                seed: a.seed,
                batch_series: a.batch_series,
                protocol: match a.protocol {
                    Proto::V1 => Protocol::V1,
                    Proto::V2 => Protocol::V2,
                },
            });
            let mode = match a.backfill {
                Some(span) => write::Mode::Backfill {
                    span,
                    end_ms: a.end.map_or_else(write::now_ms, |s| (s * 1000.0) as i64),
                    ticks_per_request: a.ticks_per_request,
                },
                None => write::Mode::Live {
                    duration: a.duration,
                },
            };
            let cfg = write::WriteConfig {
                url: a.url,
                auth: Auth {
                    tenant: a.tenant,
                    token: a.token,
                },
                concurrency: a.concurrency,
                mode,
                timeout: a.timeout,
                pregenerate: a.pregenerate.map(|mib| mib.saturating_mul(1 << 20)),
            };
            let r = rt.block_on(write::run(w, cfg))?;
            println!("{}", if a.json { r.json() } else { r.text() });
        }
        BenchCommand::Query(a) => {
            let queries = match &a.queries {
                Some(p) => std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from)
                    .collect(),
                None => query::dashboard_queries(),
            };
            let end_s = a.end.unwrap_or_else(|| write::now_ms() as f64 / 1000.0);
            let cfg = query::QueryConfig {
                base_url: a.url.trim_end_matches('/').to_string(),
                auth: Auth {
                    tenant: a.tenant,
                    token: a.token,
                },
                concurrency: a.concurrency,
                duration: a.duration,
                range: a.range,
                step: a.step,
                end_s,
                queries,
                timeout: a.timeout,
            };
            let (all, per) = rt.block_on(query::run(cfg));
            if a.json {
                let mut v = all.json_value();
                v["queries"] = per
                    .iter()
                    .map(|(q, r)| {
                        serde_json::json!({
                            "query": q,
                            "ok": r.ok,
                            "p50_ms": r.p50.as_secs_f64() * 1e3,
                            "p99_ms": r.p99.as_secs_f64() * 1e3,
                        })
                    })
                    .collect();
                println!("{v}");
            } else {
                println!("{}", all.text());
                for (q, r) in per {
                    println!(
                        "  p50 {:8.2} ms  p99 {:8.2} ms  ok {:5}  {q}",
                        r.p50.as_secs_f64() * 1e3,
                        r.p99.as_secs_f64() * 1e3,
                        r.ok
                    );
                }
            }
        }
    }
    Ok(())
}
