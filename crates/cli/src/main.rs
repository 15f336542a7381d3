//! The `stratus` binary.
//!
//! `stratus` (or `stratus server`) runs the whole service in one process
//! on local disk: remote write in, Prometheus HTTP API out. Flags can also
//! be set through environment variables (`STRATUS_DATA_DIR`, ...).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use stratus_api::{AuthMode, ServerConfig};
use tracing::info;

mod admin;

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
    Server(ServerArgs),
    /// Run PromQL test scripts (Prometheus' promqltest language) against
    /// the Stratus engine; prints each failing eval and `N passed, N failed`.
    Promqltest {
        /// Script files (`*.test`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
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
}

/// How requests are assigned to tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Auth {
    /// No authentication: everything goes to the tenant `default`.
    None,
    /// Tenant id from the `X-Scope-OrgID` header (behind a trusted gateway).
    Header,
    /// Tokens mapped to tenants by the registry (the default): the token
    /// is the basic-auth password or a bearer token.
    Token,
}

#[derive(Debug, Clone, clap::Args)]
struct ServerArgs {
    /// Directory for all data (WALs and blocks).
    #[arg(long, env = "STRATUS_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,

    /// Address (host:port) to listen on for HTTP.
    #[arg(long, env = "STRATUS_LISTEN", default_value = "0.0.0.0:9009")]
    listen: String,

    /// How requests are assigned to tenants.
    #[arg(long, env = "STRATUS_AUTH", value_enum, default_value_t = Auth::Token)]
    auth: Auth,

    /// Samples up to this far behind a series' newest sample are still
    /// accepted (out of order).
    #[arg(
        long = "ingester.out-of-order-window",
        env = "STRATUS_INGESTER_OUT_OF_ORDER_WINDOW",
        default_value = "1h",
        value_parser = humantime::parse_duration
    )]
    out_of_order_window: Duration,

    /// Delete blocks older than this (e.g. 15d); 0 or absent keeps data
    /// forever.
    #[arg(long, env = "STRATUS_RETENTION", value_parser = parse_retention)]
    retention: Option<Duration>,

    /// Default per-tenant limits as JSON, e.g.
    /// '{"ingestion_rate": 10000, "ingestion_burst_size": 200000,
    /// "max_series": 150000}' (a tenant's plan and overrides win).
    #[arg(long, env = "STRATUS_DEFAULT_LIMITS", value_parser = parse_limits)]
    default_limits: Option<stratus_tenancy::Limits>,
}

fn parse_limits(s: &str) -> Result<stratus_tenancy::Limits, String> {
    let l: stratus_tenancy::Limits = serde_json::from_str(s).map_err(|e| e.to_string())?;
    l.validate()?;
    Ok(l)
}

fn parse_retention(s: &str) -> Result<Duration, String> {
    if s == "0" || s.eq_ignore_ascii_case("off") {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| e.to_string())
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

async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let auth = match args.auth {
        Auth::None => AuthMode::None,
        Auth::Header => AuthMode::Header,
        Auth::Token => AuthMode::Token,
    };
    let cfg = ServerConfig {
        data_dir: args.data_dir,
        auth,
        out_of_order_window: args.out_of_order_window,
        retention: args.retention.filter(|d| !d.is_zero()),
        limits: args.default_limits.unwrap_or_default(),
        ..ServerConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(args.listen.as_str())
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
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
        Some(Command::Server(a)) => a,
        Some(Command::Promqltest { files }) => return run_promqltest(&files),
        Some(Command::Tenant { cmd }) => return runtime()?.block_on(admin::run_tenant(cmd)),
        Some(Command::Token { cmd }) => return runtime()?.block_on(admin::run_token(cmd)),
        None => cli.server,
    };
    runtime()?.block_on(run_server(args))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ServerArgs {
        let cli = Cli::try_parse_from(args).unwrap();
        match cli.command {
            Some(Command::Server(a)) => a,
            Some(_) => panic!("not a server command"),
            None => cli.server,
        }
    }

    #[test]
    fn defaults_and_flags() {
        let a = parse(&["stratus"]);
        assert_eq!(a.data_dir, PathBuf::from("./data"));
        assert_eq!(a.listen, "0.0.0.0:9009");
        assert_eq!(a.auth, Auth::Token);
        assert_eq!(a.out_of_order_window, Duration::from_secs(3600));
        assert_eq!(a.retention, None);
        let a = parse(&[
            "stratus",
            "server",
            "--auth=header",
            "--ingester.out-of-order-window=10m",
            "--retention=15d",
            "--listen=127.0.0.1:0",
        ]);
        assert_eq!(a.auth, Auth::Header);
        assert_eq!(a.out_of_order_window, Duration::from_secs(600));
        assert_eq!(a.retention, Some(Duration::from_secs(15 * 86400)));
        assert_eq!(
            parse(&["stratus", "--retention=0"]).retention,
            Some(Duration::ZERO)
        );
        assert!(Cli::try_parse_from(["stratus", "--auth=basic"]).is_err());
        assert!(Cli::try_parse_from(["stratus", "--retention=soon"]).is_err());
    }
}
