//! `stratus tenant …` and `stratus token …`: clients of a running
//! server's admin API (`/api/v1/admin/…`).
//!
//! The server is `--url` (default `http://127.0.0.1:9009`); the admin
//! token comes from `--admin-token`, the `STRATUS_ADMIN_TOKEN` variable,
//! or the file `<data-dir>/tokens/admin.token` written on first start.
//! Answers are printed as pretty JSON (the `data` of the envelope).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use stratus_tenancy::Limits;

/// Where the server is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub(crate) struct Conn {
    /// Base URL of the running server.
    #[arg(long, env = "STRATUS_URL", default_value = "http://127.0.0.1:9009")]
    url: String,
    /// Admin token (default: the file `<data-dir>/tokens/admin.token`).
    #[arg(long, env = "STRATUS_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Data directory of the server (to find the admin token file).
    #[arg(long, env = "STRATUS_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
}

/// Limit flags (each sets one field of the tenant's overrides; 0 means
/// unlimited for counts and rates, and keep-forever for retention).
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct LimitFlags {
    /// Samples per second.
    #[arg(long)]
    ingestion_rate: Option<f64>,
    /// Samples accepted at once (token bucket size).
    #[arg(long)]
    ingestion_burst_size: Option<u64>,
    /// Most active series.
    #[arg(long)]
    max_series: Option<u64>,
    /// Most active series per metric name.
    #[arg(long)]
    max_series_per_metric: Option<u64>,
    /// Most labels per series.
    #[arg(long)]
    max_label_names_per_series: Option<u64>,
    /// Longest label name (bytes).
    #[arg(long)]
    max_label_name_length: Option<u64>,
    /// Longest label value (bytes).
    #[arg(long)]
    max_label_value_length: Option<u64>,
    /// Out-of-order window (e.g. 10m).
    #[arg(long, value_parser = humantime::parse_duration)]
    out_of_order_window: Option<Duration>,
    /// Retention (e.g. 30d; 0s keeps data forever).
    #[arg(long, value_parser = humantime::parse_duration)]
    retention: Option<Duration>,
    /// Query timeout (e.g. 1m).
    #[arg(long, value_parser = humantime::parse_duration)]
    query_timeout: Option<Duration>,
    /// Most samples one query may load.
    #[arg(long)]
    max_samples_per_query: Option<u64>,
    /// Most series one query may select.
    #[arg(long)]
    max_series_per_query: Option<u64>,
    /// Most concurrent queries.
    #[arg(long)]
    max_concurrent_queries: Option<u64>,
    /// Deduplicate Prometheus HA pairs (true/false).
    #[arg(long)]
    accept_ha_samples: Option<bool>,
    /// Label naming the HA cluster (default `cluster`).
    #[arg(long)]
    ha_cluster_label: Option<String>,
    /// Label naming the HA replica, removed from stored series (default
    /// `__replica__`).
    #[arg(long)]
    ha_replica_label: Option<String>,
    /// Most HA clusters of the tenant (default 100; 0 = unlimited).
    #[arg(long)]
    ha_max_clusters: Option<u64>,
}

impl LimitFlags {
    fn to_limits(&self) -> Limits {
        Limits {
            ingestion_rate: self.ingestion_rate,
            ingestion_burst_size: self.ingestion_burst_size,
            max_series: self.max_series,
            max_series_per_metric: self.max_series_per_metric,
            max_label_names_per_series: self.max_label_names_per_series,
            max_label_name_length: self.max_label_name_length,
            max_label_value_length: self.max_label_value_length,
            out_of_order_window: self.out_of_order_window,
            retention: self.retention,
            query_timeout: self.query_timeout,
            max_samples_per_query: self.max_samples_per_query,
            max_series_per_query: self.max_series_per_query,
            max_concurrent_queries: self.max_concurrent_queries,
            accept_ha_samples: self.accept_ha_samples,
            ha_cluster_label: self.ha_cluster_label.clone(),
            ha_replica_label: self.ha_replica_label.clone(),
            ha_max_clusters: self.ha_max_clusters,
        }
    }
}

/// `stratus tenant …`
#[derive(Debug, Subcommand)]
pub(crate) enum TenantCmd {
    /// Create a tenant (then `stratus token create ID` for its token).
    Create {
        /// Tenant id (letters, digits, -_.!*'()).
        id: String,
        /// Plan (named limit preset).
        #[arg(long)]
        plan: Option<String>,
        #[command(flatten)]
        limits: Box<LimitFlags>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List tenants.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a tenant, its effective limits and tokens.
    Show {
        /// Tenant id.
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a tenant and its tokens (its data stays on disk).
    Delete {
        /// Tenant id.
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show, or change at runtime, a tenant's limits and plan.
    Limits {
        /// Tenant id.
        id: String,
        /// Set the plan ("" clears it).
        #[arg(long)]
        plan: Option<String>,
        /// Replace all overrides with the given flags instead of merging.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        limits: Box<LimitFlags>,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `stratus token …`
#[derive(Debug, Subcommand)]
pub(crate) enum TokenCmd {
    /// Create a token for a tenant (or `--admin`); prints it once.
    Create {
        /// Tenant id (omit with --admin).
        tenant: Option<String>,
        /// Create an admin token.
        #[arg(long)]
        admin: bool,
        /// A name to recognise the token by.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke a token by id (`tok_…`, see `stratus token list`).
    Revoke {
        /// Token id.
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List tokens (all, or a tenant's).
    List {
        /// Tenant id.
        tenant: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
}

impl Conn {
    fn token(&self) -> anyhow::Result<String> {
        if let Some(t) = &self.admin_token {
            return Ok(t.trim().to_string());
        }
        let f = self.data_dir.join("tokens").join("admin.token");
        let t = std::fs::read_to_string(&f).with_context(|| {
            format!(
                "no admin token: pass --admin-token, set STRATUS_ADMIN_TOKEN, or point --data-dir at the server's data (reading {})",
                f.display()
            )
        })?;
        Ok(t.trim().to_string())
    }

    /// Sends a request and returns the envelope's `data`.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("HTTP client")?;
        let mut req = client
            .request(method, &url)
            .header("authorization", format!("Bearer {}", self.token()?));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status();
        let text = resp.text().await.context("reading the answer")?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{status}: unexpected answer: {text}"))?;
        if !status.is_success() {
            let msg = v.get("error").and_then(|e| e.as_str()).unwrap_or(&text);
            anyhow::bail!("{status}: {msg}");
        }
        Ok(v.get("data").cloned().unwrap_or(serde_json::Value::Null))
    }
}

fn print(v: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn limits_json(l: &LimitFlags) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::to_value(l.to_limits())?)
}

/// Runs `stratus tenant …`.
pub(crate) async fn run_tenant(cmd: TenantCmd) -> anyhow::Result<()> {
    use reqwest::Method;
    let v = match cmd {
        TenantCmd::Create {
            id,
            plan,
            limits,
            conn,
        } => {
            let body = serde_json::json!({"id": id, "plan": plan, "limits": limits_json(&limits)?});
            conn.call(Method::POST, "/api/v1/admin/tenants", Some(body))
                .await?
        }
        TenantCmd::List { conn } => {
            conn.call(Method::GET, "/api/v1/admin/tenants", None)
                .await?
        }
        TenantCmd::Show { id, conn } => {
            conn.call(Method::GET, &format!("/api/v1/admin/tenants/{id}"), None)
                .await?
        }
        TenantCmd::Delete { id, conn } => {
            conn.call(Method::DELETE, &format!("/api/v1/admin/tenants/{id}"), None)
                .await?
        }
        TenantCmd::Limits {
            id,
            plan,
            replace,
            limits,
            conn,
        } => {
            let l = limits.to_limits();
            if plan.is_none() && l.is_empty() && !replace {
                let t = conn
                    .call(Method::GET, &format!("/api/v1/admin/tenants/{id}"), None)
                    .await?;
                serde_json::json!({
                    "plan": t.get("plan"),
                    "limits": t.get("limits"),
                    "effective_limits": t.get("effective_limits"),
                })
            } else {
                let body = serde_json::json!({
                    "plan": plan,
                    "limits": serde_json::to_value(l)?,
                    "replace_limits": replace,
                });
                conn.call(
                    Method::PATCH,
                    &format!("/api/v1/admin/tenants/{id}"),
                    Some(body),
                )
                .await?
            }
        }
    };
    print(&v)
}

/// Runs `stratus token …`.
pub(crate) async fn run_token(cmd: TokenCmd) -> anyhow::Result<()> {
    use reqwest::Method;
    let v = match cmd {
        TokenCmd::Create {
            tenant,
            admin,
            name,
            conn,
        } => {
            let body = serde_json::json!({ "name": name });
            let path = match (tenant, admin) {
                (Some(t), false) => format!("/api/v1/admin/tenants/{t}/tokens"),
                (None, true) => "/api/v1/admin/tokens".to_string(),
                _ => anyhow::bail!("give either a tenant id or --admin"),
            };
            let v = conn.call(Method::POST, &path, Some(body)).await?;
            eprintln!("the token is shown only once; store it now");
            v
        }
        TokenCmd::Revoke { id, conn } => {
            conn.call(Method::DELETE, &format!("/api/v1/admin/tokens/{id}"), None)
                .await?
        }
        TokenCmd::List { tenant, conn } => {
            let path = match tenant {
                Some(t) => format!("/api/v1/admin/tenants/{t}/tokens"),
                None => "/api/v1/admin/tokens".to_string(),
            };
            conn.call(Method::GET, &path, None).await?
        }
    };
    print(&v)
}
