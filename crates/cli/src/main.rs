//! The `stratus` binary.
//!
//! `stratus` (or `stratus server`) runs the whole service in one process
//! on local disk: remote write in, Prometheus HTTP API out. Flags can also
//! be set through environment variables (`STRATUS_DATA_DIR`, ...).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use stratus_api::ServerConfig;
use tracing::info;

mod admin;
mod agent;
mod bench;
mod cluster;
mod cluster_registry;
mod cluster_ring;
mod compactor;
mod compactor_lease;
mod config;

use config::ServerArgs;

/// mimalloc, built without transparent huge pages (the workspace's
/// `no_thp` feature): with them, the allocator's eagerly committed arena is
/// advised `MADV_HUGEPAGE` and the kernel backs a few live bytes with
/// whole 2 MiB pages (10k series: 134 MiB resident instead of 48 MiB, for
/// no gain in CPU; see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Stratus: a multitenant, Prometheus-compatible metrics service.
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (the default when no command is given).
    Server(Box<ServerArgs>),
    /// Run PromQL test scripts (Prometheus' promqltest language) against
    /// the Stratus engine; prints each failing eval and `N passed, N failed`.
    Promqltest {
        /// Script files (`*.test`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Load generator: remote-write and query load against any
    /// Prometheus-compatible service.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Manage tenants and their limits on a running server (admin token).
    Tenant {
        #[command(subcommand)]
        cmd: admin::TenantCmd,
    },
    /// Create, list and revoke tokens on a running server (admin token).
    Token {
        #[command(subcommand)]
        cmd: admin::TokenCmd,
    },
    /// Scrape Prometheus targets and push them by remote write through a
    /// durable on-disk queue (`stratus agent --config.file agent.yml`).
    Agent(agent::AgentArgs),
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!("SIGINT received"),
        _ = term => info!("SIGTERM received"),
    }
}

async fn run_server(cfg: ServerConfig) -> anyhow::Result<()> {
    if cfg.target != "all" {
        return cluster::run(cfg, shutdown_signal()).await;
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen.as_str())
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    stratus_api::serve(cfg, listener, shutdown_signal()).await?;
    Ok(())
}

/// `stratus promqltest FILE...`: one line per failing eval, then the
/// totals. Fails (exit 1) when any eval failed.
fn run_promqltest(files: &[PathBuf]) -> anyhow::Result<()> {
    let (mut passed, mut failed) = (0usize, 0usize);
    for f in files {
        let report = stratus_promql::promqltest::run_file(f);
        for (line, expr, reason) in &report.failed {
            println!("{}:{line}: {expr}: {reason}", f.display());
        }
        passed += report.passed;
        failed += report.failed.len();
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        anyhow::bail!("{failed} evals failed");
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = match cli.command {
        Some(Command::Server(a)) => *a,
        Some(Command::Promqltest { files }) => return run_promqltest(&files),
        Some(Command::Bench(cmd)) => return bench::run(cmd),
        Some(Command::Tenant { cmd }) => return runtime()?.block_on(admin::run_tenant(cmd)),
        Some(Command::Token { cmd }) => return runtime()?.block_on(admin::run_token(cmd)),
        Some(Command::Agent(a)) => return agent::run(a),
        None => cli.server,
    };
    let cfg = args.resolve()?;
    if args.print_config {
        print!("{}", cfg.to_yaml());
        return Ok(());
    }
    runtime()?.block_on(run_server(cfg))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(args: &[&str]) -> ServerArgs {
        let cli = Cli::try_parse_from(args).unwrap();
        match cli.command {
            Some(Command::Server(a)) => *a,
            Some(_) => panic!("not a server command"),
            None => cli.server,
        }
    }

    #[test]
    fn defaults_and_flags() {
        let c = parse(&["stratus"]).resolve().unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.listen, "0.0.0.0:9009");
        assert_eq!(c.out_of_order_window, Duration::from_secs(3600));
        assert_eq!(c.retention, None);
        let c = parse(&[
            "stratus",
            "server",
            "--auth=header",
            "--ingester.out-of-order-window=10m",
            "--retention=15d",
            "--listen=127.0.0.1:0",
            "--query-timeout=30s",
            "--max-concurrent-queries=4",
        ])
        .resolve()
        .unwrap();
        assert_eq!(c.auth, stratus_api::AuthMode::Header);
        assert_eq!(c.out_of_order_window, Duration::from_secs(600));
        assert_eq!(c.retention, Some(Duration::from_secs(15 * 86400)));
        assert_eq!(c.query_timeout, Duration::from_secs(30));
        assert_eq!(c.max_concurrent_queries, 4);
        let c = parse(&["stratus", "--retention=0"]).resolve().unwrap();
        assert_eq!(c.retention, None);
        assert!(!c.start_timestamp_storage);
        let c = parse(&["stratus", "--storage.start-timestamps"])
            .resolve()
            .unwrap();
        assert!(c.start_timestamp_storage);
        assert!(Cli::try_parse_from(["stratus", "--auth=basic"]).is_err());
        assert!(Cli::try_parse_from(["stratus", "--retention=soon"]).is_err());
        assert!(
            parse(&["stratus", "--max-concurrent-queries=0"])
                .resolve()
                .is_err()
        );
    }

    #[test]
    fn config_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stratus.yaml");
        std::fs::write(&path, "auth: header\nquery_timeout: 1m\nretention: 7d\n").unwrap();
        let file = format!("--config.file={}", path.display());
        let c = parse(&["stratus", &file]).resolve().unwrap();
        assert_eq!(c.auth, stratus_api::AuthMode::Header);
        assert_eq!(c.query_timeout, Duration::from_secs(60));
        assert_eq!(c.retention, Some(Duration::from_secs(7 * 86400)));
        // A flag beats the file; a flag left unset does not.
        let c = parse(&["stratus", &file, "--query-timeout=5s", "--auth=none"])
            .resolve()
            .unwrap();
        assert_eq!(c.query_timeout, Duration::from_secs(5));
        assert_eq!(c.auth, stratus_api::AuthMode::None);
        assert_eq!(c.retention, Some(Duration::from_secs(7 * 86400)));
        std::fs::write(&path, "auth: header\nquery_timout: 1m\n").unwrap();
        let e = parse(&["stratus", &file])
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.contains("query_timout") && e.contains("line 2"), "{e}");
        let missing = format!("--config.file={}", dir.path().join("nope.yaml").display());
        assert!(parse(&["stratus", &missing]).resolve().is_err());
    }

    #[test]
    fn storage_backend_and_s3_flags() {
        let c = parse(&["stratus"]).resolve().unwrap();
        assert_eq!(
            c.storage.backend,
            stratus_objstore::StorageBackend::Filesystem
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stratus.yaml");
        std::fs::write(
            &path,
            "storage:\n  backend: s3\ns3:\n  bucket: from-file\n  region: eu-west-1\n  secret_access_key: file-secret\n",
        )
        .unwrap();
        let file = format!("--config.file={}", path.display());
        let c = parse(&[
            "stratus",
            &file,
            "--s3.bucket=blocks",
            "--s3.endpoint=http://127.0.0.1:9000",
            "--s3.allow-http",
            "--s3.bucket-lookup=virtual-hosted",
            "--s3.access-key-id=AK",
            "--s3.prefix=cluster-a",
        ])
        .resolve()
        .unwrap();
        assert_eq!(c.storage.backend, stratus_objstore::StorageBackend::S3);
        assert_eq!(c.s3.bucket, "blocks");
        assert_eq!(c.s3.region, "eu-west-1");
        assert_eq!(c.s3.endpoint, "http://127.0.0.1:9000");
        assert!(c.s3.allow_http);
        assert_eq!(
            c.s3.bucket_lookup,
            stratus_objstore::BucketLookup::VirtualHosted
        );
        assert_eq!(c.s3.access_key_id, "AK");
        assert_eq!(c.s3.secret_access_key.expose(), "file-secret");
        assert_eq!(c.s3.prefix, "cluster-a");
        let y = c.to_yaml();
        assert!(!y.contains("file-secret") && y.contains("<secret>"), "{y}");
        // http endpoint without allow_http, s3 without bucket: refused.
        let e = parse(&[
            "stratus",
            "--storage.backend=s3",
            "--s3.bucket=b",
            "--s3.endpoint=http://127.0.0.1:9000",
        ])
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.contains("allow_http"), "{e}");
        assert!(
            parse(&["stratus", "--storage.backend=s3"])
                .resolve()
                .is_err()
        );
        assert!(Cli::try_parse_from(["stratus", "--storage.backend=gcs"]).is_err());
    }
}

#[cfg(test)]
mod frontend_flag_tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn query_frontend_flags() {
        let cli = Cli::try_parse_from([
            "stratus",
            "--target=query-frontend",
            "--frontend.downstream-url=127.0.0.1:9090,http://q2:9009",
            "--frontend.split-interval=12h",
            "--frontend.align-to-step",
            "--frontend.max-cache-freshness=5m",
            "--frontend.max-outstanding-per-tenant=7",
        ])
        .unwrap();
        let c = cli.server.resolve().unwrap();
        let f = &c.frontend;
        assert_eq!(f.downstream_urls, vec!["127.0.0.1:9090", "http://q2:9009"]);
        assert_eq!(f.split_interval, Duration::from_secs(12 * 3600));
        assert!(f.align_to_step);
        assert_eq!(f.max_cache_freshness, Duration::from_secs(300));
        assert_eq!(f.max_outstanding_per_tenant, 7);
        // The frontend needs somewhere to send queries; no ingesters.
        let cli = Cli::try_parse_from(["stratus", "--target=query-frontend"]).unwrap();
        let e = cli.server.resolve().unwrap_err().to_string();
        assert!(e.contains("downstream-url"), "{e}");
    }
}
