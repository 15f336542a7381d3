//! `stratus agent`: the command line of the scraping/pushing agent
//! (`stratus agent --config.file FILE`, `stratus agent exampleconfig`,
//! `stratus agent install`); the runner itself is
//! [`stratus_agent::run`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};

/// `stratus agent` arguments.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct AgentArgs {
    #[command(subcommand)]
    cmd: Option<AgentCmd>,
    /// Configuration file (Prometheus prometheus.yml format).
    #[arg(long = "config.file", visible_alias = "config", value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// Directory of the on-disk queues.
    #[arg(long, default_value = "./agent-data")]
    data_dir: PathBuf,
    /// HTTP listen address (/metrics, /api/v1/targets, /targets, /-/reload).
    #[arg(long, default_value = "127.0.0.1:9010")]
    listen: String,
    /// Disk budget of each endpoint's queue in bytes (oldest data dropped
    /// beyond it).
    #[arg(long = "queue.max-bytes", default_value_t = 1 << 30)]
    queue_max_bytes: u64,
    /// How long shutdown waits for queued data to be sent.
    #[arg(long = "drain-timeout", default_value = "10s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
}

#[derive(Debug, Subcommand)]
enum AgentCmd {
    /// Print a starter configuration.
    Exampleconfig,
    /// Write a systemd unit running the agent, and print how to enable it.
    Install {
        /// The configuration file the service uses.
        #[arg(
            long = "config.file",
            visible_alias = "config",
            default_value = "/etc/stratus/agent.yml"
        )]
        config_file: PathBuf,
        /// Where to write `stratus-agent.service`.
        #[arg(long, default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
        /// The user the service runs as.
        #[arg(long, default_value = "stratus")]
        user: String,
        /// The service's queue directory.
        #[arg(long, default_value = "/var/lib/stratus-agent")]
        data_dir: PathBuf,
    },
}

/// Runs `stratus agent ...`.
pub(crate) fn run(args: AgentArgs) -> anyhow::Result<()> {
    match args.cmd {
        Some(AgentCmd::Exampleconfig) => {
            print!("{}", stratus_agent::config::example_config());
            Ok(())
        }
        Some(AgentCmd::Install {
            config_file,
            unit_dir,
            user,
            data_dir,
        }) => install(&config_file, &unit_dir, &user, &data_dir),
        None => {
            let config_file = args
                .config_file
                .context("--config.file FILE is required (see `stratus agent exampleconfig`)")?;
            let opts = stratus_agent::run::AgentOptions {
                config_file,
                data_dir: args.data_dir,
                listen: args.listen,
                queue_max_bytes: args.queue_max_bytes,
                drain_timeout: args.drain_timeout,
            };
            crate::runtime()?.block_on(async move {
                stratus_agent::run::run(opts, crate::shutdown_signal()).await
            })?;
            Ok(())
        }
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("cannot read the current directory")?
        .join(p))
}

/// The systemd unit text.
fn unit_text(exe: &Path, config_file: &Path, user: &str, data_dir: &Path) -> String {
    format!(
        "[Unit]
Description=Stratus agent: scrapes Prometheus targets and pushes them by remote write
Wants=network-online.target
After=network-online.target

[Service]
User={user}
ExecStart={exe} agent --config.file={config} --data-dir={data} --listen=127.0.0.1:9010
ExecReload=/bin/kill -HUP $MAINPID
StateDirectory=stratus-agent
Restart=always
RestartSec=5
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
",
        exe = exe.display(),
        config = config_file.display(),
        data = data_dir.display(),
    )
}

fn install(config_file: &Path, unit_dir: &Path, user: &str, data_dir: &Path) -> anyhow::Result<()> {
    if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        anyhow::bail!("invalid --user {user:?}");
    }
    let exe = std::env::current_exe().context("cannot find the path of this executable")?;
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    let text = unit_text(&exe, &absolute(config_file)?, user, &absolute(data_dir)?);
    let path = unit_dir.join("stratus-agent.service");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    println!("enable and start it with:");
    println!("  systemctl daemon-reload");
    println!("  systemctl enable --now stratus-agent");
    Ok(())
}
