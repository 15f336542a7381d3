//! The agent's configuration, in Prometheus' `prometheus.yml` format.
//!
//! Owns parsing (serde + `serde_yaml_ng`, unknown keys rejected with the
//! line and column), defaults and validation as Prometheus applies them:
//! `global`, `scrape_configs` (HTTP client settings, limits, service
//! discovery, relabeling) and `remote_write` (parsed here, used by the push
//! side). Sections that only a full Prometheus server uses (`rule_files`,
//! `alerting`, `remote_read`, `storage`, `tracing`) are accepted and
//! reported in [`AgentConfig::ignored_sections`] so existing files load.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use snafu::{ResultExt, Snafu};

use crate::relabel::RelabelConfig;

/// Errors from loading or validating a configuration file.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum ConfigError {
    /// The file could not be read.
    #[snafu(display("cannot read config file {}: {source}", path.display()))]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// YAML syntax error, unknown key or invalid value (serde_yaml_ng names
    /// the line and column).
    #[snafu(display("invalid config{}: {message}", file_suffix(path)))]
    Parse {
        /// The file, if loaded from one.
        path: Option<PathBuf>,
        /// The parse error, with its line and column.
        message: String,
    },
    /// A cross-field rule failed.
    #[snafu(display("invalid config{}{}: {message}", file_suffix(path), line_suffix(*line)))]
    Invalid {
        /// The file, if loaded from one.
        path: Option<PathBuf>,
        /// The 1-based line the problem was found near, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
}

fn file_suffix(p: &Option<PathBuf>) -> String {
    match p {
        Some(p) => format!(" {}", p.display()),
        None => String::new(),
    }
}

fn line_suffix(l: Option<usize>) -> String {
    match l {
        Some(l) => format!(" (line {l})"),
        None => String::new(),
    }
}

/// Result alias for configuration loading.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Deserializes a string through `f` inside the visitor, so that
/// serde_yaml_ng attributes an error to the scalar's own line and path.
pub(crate) fn parse_str<'de, D, T>(
    d: D,
    expecting: &'static str,
    f: fn(&str) -> std::result::Result<T, String>,
) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<T> {
        expecting: &'static str,
        f: fn(&str) -> std::result::Result<T, String>,
    }
    impl<T> serde::de::Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<T, E> {
            (self.f)(v).map_err(E::custom)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<T, E> {
            (self.f)(&v.to_string()).map_err(E::custom)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<T, E> {
            (self.f)(&v.to_string()).map_err(E::custom)
        }
    }
    d.deserialize_str(V { expecting, f })
}

// ---------------------------------------------------------------------------
// Durations and sizes in Prometheus syntax.

/// A duration in Prometheus syntax (`15s`, `1m30s`, `1d`, `500ms`, `0`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PromDuration(pub Duration);

const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

impl PromDuration {
    /// Parses Prometheus duration syntax: unit groups in decreasing order,
    /// each at most once (`1h30m`, `2d`, `100ms`), or `0`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        if s == "0" {
            return Ok(Self(Duration::ZERO));
        }
        if s.is_empty() {
            return Err("empty duration string".to_string());
        }
        let bad = || format!("not a valid duration string: {s:?}");
        let b = s.as_bytes();
        let mut i = 0;
        let mut last_unit = None::<usize>;
        let mut total: u64 = 0;
        while i < b.len() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return Err(bad());
            }
            let n: u64 = s[start..i].parse().map_err(|_| bad())?;
            let ustart = i;
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
            let unit = &s[ustart..i];
            let idx = UNITS.iter().position(|(u, _)| *u == unit).ok_or_else(bad)?;
            if last_unit.is_some_and(|l| l >= idx) {
                return Err(bad());
            }
            last_unit = Some(idx);
            total = n
                .checked_mul(UNITS[idx].1)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("duration out of range: {s:?}"))?;
        }
        Ok(Self(Duration::from_millis(total)))
    }

    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for PromDuration {
    /// Formats as Prometheus does (`1m30s`, `0s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis() as u64;
        if ms == 0 {
            return f.write_str("0s");
        }
        for (u, mult) in UNITS {
            // Prometheus prints weeks and years only when exact.
            if (u == "y" || u == "w") && ms % mult != 0 {
                continue;
            }
            if ms >= mult {
                write!(f, "{}{u}", ms / mult)?;
                ms %= mult;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        parse_str(d, "a duration such as 15s or 1m30s", Self::parse)
    }
}

/// A byte size in Prometheus syntax (`10MB`, `512KiB`... units B, KB, MB,
/// GB, TB, PB, EB, all powers of 1024); `0` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses a size.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("not a valid size: {s:?}"))?;
        let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "KB" | "KIB" | "K" => 1 << 10,
            "MB" | "MIB" | "M" => 1 << 20,
            "GB" | "GIB" | "G" => 1 << 30,
            "TB" | "TIB" | "T" => 1 << 40,
            "PB" | "PIB" | "P" => 1 << 50,
            "EB" | "EIB" | "E" => 1 << 60,
            _ => return Err(format!("not a valid size unit in {s:?}")),
        };
        let v = n * mult as f64;
        if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
            return Err(format!("size out of range: {s:?}"));
        }
        Ok(Self(v as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        parse_str(d, "a size such as 10MB", Self::parse)
    }
}

/// A string that is never printed (passwords, tokens).
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// A label name valid in Prometheus' classic charset
/// (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_valid_label_name(s: &str) -> bool {
    let mut it = s.bytes();
    match it.next() {
        Some(c) if c.is_ascii_alphabetic() || c == b'_' => {}
        _ => return false,
    }
    it.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// A metric name valid in Prometheus' classic charset
/// (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn is_valid_metric_name(s: &str) -> bool {
    let mut it = s.bytes();
    match it.next() {
        Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {}
        _ => return false,
    }
    it.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// A label name checked on deserialization.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelName(pub String);

impl<'de> Deserialize<'de> for LabelName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        parse_str(d, "a label name", |s| {
            if is_valid_label_name(s) {
                Ok(Self(s.to_string()))
            } else {
                Err(format!("{s:?} is not a valid label name"))
            }
        })
    }
}

/// A label set with validated names, as in `labels:` and
/// `external_labels:`.
pub type LabelSet = BTreeMap<LabelName, String>;

// ---------------------------------------------------------------------------
// HTTP client settings.

/// `basic_auth`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    #[serde(default)]
    pub username: String,
    /// Password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// File holding the password (read on every request).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// `authorization`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// Scheme (default `Bearer`).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Credentials.
    #[serde(default)]
    pub credentials: Option<Secret>,
    /// File holding the credentials.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

/// `tls_config`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate(s) to validate the server with (PEM).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Server name to verify (SNI).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Skip certificate verification.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Minimum TLS version (`TLS12`, `TLS13`).
    #[serde(default)]
    pub min_version: Option<String>,
}

/// HTTP client settings shared by scrape and remote-write configs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpClientConfig {
    /// `basic_auth`.
    pub basic_auth: Option<BasicAuth>,
    /// `authorization` (with `bearer_token(_file)` folded in).
    pub authorization: Option<Authorization>,
    /// `tls_config`.
    pub tls_config: TlsConfig,
    /// `proxy_url`.
    pub proxy_url: Option<String>,
    /// `follow_redirects` (default true).
    pub follow_redirects: bool,
}

fn validate_http(
    basic_auth: &Option<BasicAuth>,
    authorization: &mut Option<Authorization>,
    bearer_token: &Option<Secret>,
    bearer_token_file: &Option<PathBuf>,
    proxy_url: &Option<String>,
    tls: &TlsConfig,
) -> std::result::Result<(), String> {
    let mut n = 0;
    if basic_auth.is_some() {
        n += 1;
    }
    if authorization.is_some() {
        n += 1;
    }
    if bearer_token.is_some() || bearer_token_file.is_some() {
        n += 1;
    }
    if n > 1 {
        return Err(
            "at most one of basic_auth, authorization and bearer_token & bearer_token_file must be configured"
                .into(),
        );
    }
    if bearer_token.is_some() && bearer_token_file.is_some() {
        return Err("at most one of bearer_token & bearer_token_file must be configured".into());
    }
    if let Some(b) = basic_auth {
        if b.password.is_some() && b.password_file.is_some() {
            return Err(
                "at most one of basic_auth password & password_file must be configured".into(),
            );
        }
    }
    if let Some(a) = authorization.as_mut() {
        if a.credentials.is_some() && a.credentials_file.is_some() {
            return Err(
                "at most one of authorization credentials & credentials_file must be configured"
                    .into(),
            );
        }
        match a.kind.as_deref() {
            None | Some("") => a.kind = Some("Bearer".into()),
            Some(k) if k.eq_ignore_ascii_case("basic") => {
                return Err(
                    "authorization type cannot be set to \"basic\", use \"basic_auth\" instead"
                        .into(),
                );
            }
            Some(k) if k.contains(char::is_whitespace) => {
                return Err(format!("authorization type {k:?} must not contain spaces"));
            }
            _ => {}
        }
    }
    if bearer_token.is_some() || bearer_token_file.is_some() {
        *authorization = Some(Authorization {
            kind: Some("Bearer".into()),
            credentials: bearer_token.clone(),
            credentials_file: bearer_token_file.clone(),
        });
    }
    if let Some(p) = proxy_url {
        if !(p.starts_with("http://") || p.starts_with("https://") || p.starts_with("socks5://")) {
            return Err(format!(
                "invalid proxy_url {p:?}: scheme must be http or https"
            ));
        }
    }
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        return Err("tls_config: cert_file and key_file must be configured together".into());
    }
    if let Some(v) = &tls.min_version {
        if !matches!(v.as_str(), "TLS10" | "TLS11" | "TLS12" | "TLS13") {
            return Err(format!("unknown TLS version {v:?}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Global.

/// The `global` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    /// Default scrape interval (1m).
    #[serde(default = "default_global_interval")]
    pub scrape_interval: PromDuration,
    /// Default scrape timeout (10s, at most the interval).
    #[serde(default)]
    pub scrape_timeout: Option<PromDuration>,
    /// Accepted for compatibility; the agent evaluates no rules.
    #[serde(default)]
    pub evaluation_interval: Option<PromDuration>,
    /// Labels added to every series sent by remote write.
    #[serde(default)]
    pub external_labels: LabelSet,
    /// Accepted for compatibility; unused.
    #[serde(default)]
    pub query_log_file: Option<String>,
    /// Default `body_size_limit` of scrape configs.
    #[serde(default)]
    pub body_size_limit: ByteSize,
    /// Default `sample_limit`.
    #[serde(default)]
    pub sample_limit: u64,
    /// Default `label_limit`.
    #[serde(default)]
    pub label_limit: u64,
    /// Default `label_name_length_limit`.
    #[serde(default)]
    pub label_name_length_limit: u64,
    /// Default `label_value_length_limit`.
    #[serde(default)]
    pub label_value_length_limit: u64,
    /// Default `target_limit`.
    #[serde(default)]
    pub target_limit: u64,
}

fn default_global_interval() -> PromDuration {
    PromDuration(Duration::from_secs(60))
}

impl Default for GlobalConfig {
    fn default() -> Self {
        Self {
            scrape_interval: default_global_interval(),
            scrape_timeout: None,
            evaluation_interval: None,
            external_labels: LabelSet::new(),
            query_log_file: None,
            body_size_limit: ByteSize(0),
            sample_limit: 0,
            label_limit: 0,
            label_name_length_limit: 0,
            label_value_length_limit: 0,
            target_limit: 0,
        }
    }
}

impl GlobalConfig {
    /// The effective default scrape timeout.
    pub fn effective_timeout(&self) -> PromDuration {
        self.scrape_timeout
            .unwrap_or_else(|| PromDuration(Duration::from_secs(10).min(self.scrape_interval.0)))
    }
}

// ---------------------------------------------------------------------------
// Service discovery.

/// One `static_configs` entry (also the file/HTTP SD target group format).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// `host:port` addresses.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Labels attached to every target of the group.
    #[serde(default)]
    pub labels: LabelSet,
}

/// One `file_sd_configs` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    /// File patterns (a `*` glob in the last path element), JSON or YAML.
    pub files: Vec<String>,
    /// Re-read period (5m); files are also watched for changes.
    #[serde(default = "default_file_sd_refresh")]
    pub refresh_interval: PromDuration,
}

fn default_file_sd_refresh() -> PromDuration {
    PromDuration(Duration::from_secs(300))
}

/// One `http_sd_configs` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSdConfig {
    /// URL returning a JSON list of target groups.
    pub url: String,
    /// Poll period (60s).
    #[serde(default = "default_http_sd_refresh")]
    pub refresh_interval: PromDuration,
    /// Basic auth for the SD endpoint.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// Authorization for the SD endpoint.
    #[serde(default)]
    pub authorization: Option<Authorization>,
    /// TLS settings for the SD endpoint.
    #[serde(default)]
    pub tls_config: TlsConfig,
    /// Proxy for the SD endpoint.
    #[serde(default)]
    pub proxy_url: Option<String>,
}

fn default_http_sd_refresh() -> PromDuration {
    PromDuration(Duration::from_secs(60))
}

impl HttpSdConfig {
    /// HTTP client settings for the SD requests.
    pub fn http_client(&self) -> HttpClientConfig {
        HttpClientConfig {
            basic_auth: self.basic_auth.clone(),
            authorization: self.authorization.clone(),
            tls_config: self.tls_config.clone(),
            proxy_url: self.proxy_url.clone(),
            follow_redirects: true,
        }
    }
}

// ---------------------------------------------------------------------------
// Scrape configs.

/// One `scrape_configs` entry, with defaults from `global` applied by
/// [`load_str`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    /// Job name (the `job` label), unique.
    pub job_name: String,
    /// Keep the scraped labels on conflict with target labels.
    #[serde(default)]
    pub honor_labels: bool,
    /// Use the timestamps the target exposes (default true).
    #[serde(default = "yes")]
    pub honor_timestamps: bool,
    /// Accepted for compatibility (Prometheus ≥ 2.48).
    #[serde(default)]
    pub track_timestamps_staleness: bool,
    /// Scrape interval (default: global).
    #[serde(default)]
    pub scrape_interval: Option<PromDuration>,
    /// Scrape timeout (default: global, at most the interval).
    #[serde(default)]
    pub scrape_timeout: Option<PromDuration>,
    /// Accepted for compatibility; the agent negotiates the formats that
    /// Prometheus 2.42 asks for.
    #[serde(default)]
    pub scrape_protocols: Option<Vec<String>>,
    /// Path of the metrics endpoint (`/metrics`).
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    /// `http` or `https`.
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// URL query parameters.
    #[serde(default)]
    pub params: BTreeMap<String, Vec<String>>,
    /// Ask for gzip (default true).
    #[serde(default = "yes")]
    pub enable_compression: bool,
    /// Basic auth.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// Authorization header.
    #[serde(default)]
    pub authorization: Option<Authorization>,
    /// Bearer token (legacy form of `authorization`).
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// Bearer token file (legacy form of `authorization`).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// TLS settings.
    #[serde(default)]
    pub tls_config: TlsConfig,
    /// HTTP proxy.
    #[serde(default)]
    pub proxy_url: Option<String>,
    /// Follow redirects (default true).
    #[serde(default = "yes")]
    pub follow_redirects: bool,
    /// Accepted for compatibility.
    #[serde(default = "yes")]
    pub enable_http2: bool,
    /// Static targets.
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
    /// File-based discovery.
    #[serde(default)]
    pub file_sd_configs: Vec<FileSdConfig>,
    /// HTTP-based discovery.
    #[serde(default)]
    pub http_sd_configs: Vec<HttpSdConfig>,
    /// Target relabeling.
    #[serde(default)]
    pub relabel_configs: Vec<RelabelConfig>,
    /// Relabeling of scraped series.
    #[serde(default)]
    pub metric_relabel_configs: Vec<RelabelConfig>,
    /// Max samples per scrape after metric relabeling (0: none).
    #[serde(default)]
    pub sample_limit: Option<u64>,
    /// Max targets of the job after relabeling (0: none).
    #[serde(default)]
    pub target_limit: Option<u64>,
    /// Max labels per series (0: none).
    #[serde(default)]
    pub label_limit: Option<u64>,
    /// Max label name length (0: none).
    #[serde(default)]
    pub label_name_length_limit: Option<u64>,
    /// Max label value length (0: none).
    #[serde(default)]
    pub label_value_length_limit: Option<u64>,
    /// Max uncompressed body size (0: none).
    #[serde(default)]
    pub body_size_limit: Option<ByteSize>,
}

fn yes() -> bool {
    true
}
fn default_metrics_path() -> String {
    "/metrics".into()
}
fn default_scheme() -> String {
    "http".into()
}

impl ScrapeConfig {
    /// The effective interval (set by [`load_str`]).
    pub fn interval(&self) -> Duration {
        self.scrape_interval
            .map_or(Duration::from_secs(60), |d| d.0)
    }

    /// The effective timeout (set by [`load_str`]).
    pub fn timeout(&self) -> Duration {
        self.scrape_timeout.map_or(Duration::from_secs(10), |d| d.0)
    }

    /// HTTP client settings for scraping.
    pub fn http_client(&self) -> HttpClientConfig {
        HttpClientConfig {
            basic_auth: self.basic_auth.clone(),
            authorization: self.authorization.clone(),
            tls_config: self.tls_config.clone(),
            proxy_url: self.proxy_url.clone(),
            follow_redirects: self.follow_redirects,
        }
    }

    fn validate_local(&mut self) -> std::result::Result<(), String> {
        if self.job_name.is_empty() {
            return Err("job_name is empty".into());
        }
        if self.scheme != "http" && self.scheme != "https" {
            return Err(format!(
                "invalid scheme {:?} for job {:?}: must be http or https",
                self.scheme, self.job_name
            ));
        }
        if !self.metrics_path.starts_with('/') {
            return Err(format!(
                "metrics_path {:?} of job {:?} must start with '/'",
                self.metrics_path, self.job_name
            ));
        }
        validate_http(
            &self.basic_auth,
            &mut self.authorization,
            &self.bearer_token,
            &self.bearer_token_file,
            &self.proxy_url,
            &self.tls_config,
        )
        .map_err(|e| format!("job {:?}: {e}", self.job_name))?;
        for sc in &self.static_configs {
            for t in &sc.targets {
                check_target_address(t).map_err(|e| format!("job {:?}: {e}", self.job_name))?;
            }
        }
        for f in &self.file_sd_configs {
            for p in &f.files {
                check_file_sd_pattern(p).map_err(|e| format!("job {:?}: {e}", self.job_name))?;
            }
        }
        for h in &self.http_sd_configs {
            if !(h.url.starts_with("http://") || h.url.starts_with("https://")) {
                return Err(format!(
                    "job {:?}: URL scheme must be 'http' or 'https' in http_sd_configs url {:?}",
                    self.job_name, h.url
                ));
            }
            let mut a = h.authorization.clone();
            validate_http(
                &h.basic_auth,
                &mut a,
                &None,
                &None,
                &h.proxy_url,
                &h.tls_config,
            )
            .map_err(|e| format!("job {:?}: http_sd_configs: {e}", self.job_name))?;
        }
        Ok(())
    }
}

/// Checks a target address as Prometheus does (no path, not empty).
pub fn check_target_address(addr: &str) -> std::result::Result<(), String> {
    if addr.is_empty() || addr.contains('/') || addr.contains(char::is_whitespace) {
        return Err(format!("{addr:?} is not a valid hostname"));
    }
    Ok(())
}

fn check_file_sd_pattern(p: &str) -> std::result::Result<(), String> {
    let lower = p.to_ascii_lowercase();
    let ext_ok = lower.ends_with(".json") || lower.ends_with(".yml") || lower.ends_with(".yaml");
    let last = p.rsplit('/').next().unwrap_or(p);
    let dir = &p[..p.len() - last.len()];
    if !ext_ok || dir.contains('*') || last.matches('*').count() > 1 {
        return Err(format!(
            "path name {p:?} is not valid for file discovery (a '*' only in the file name, ending in .json, .yml or .yaml)"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Remote write.

/// `queue_config` of a remote-write entry (Prometheus' defaults).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Samples buffered per shard.
    pub capacity: usize,
    /// Max concurrent shards.
    pub max_shards: usize,
    /// Min shards.
    pub min_shards: usize,
    /// Max samples per request.
    pub max_samples_per_send: usize,
    /// Max wait before sending a partial batch.
    pub batch_send_deadline: PromDuration,
    /// Initial retry backoff.
    pub min_backoff: PromDuration,
    /// Max retry backoff.
    pub max_backoff: PromDuration,
    /// Retry on HTTP 429 (always true in current Prometheus).
    pub retry_on_http_429: bool,
    /// Drop samples older than this when sending (0: never).
    pub sample_age_limit: PromDuration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            max_shards: 50,
            min_shards: 1,
            max_samples_per_send: 2_000,
            batch_send_deadline: PromDuration(Duration::from_secs(5)),
            min_backoff: PromDuration(Duration::from_millis(30)),
            max_backoff: PromDuration(Duration::from_secs(5)),
            retry_on_http_429: true,
            sample_age_limit: PromDuration(Duration::ZERO),
        }
    }
}

/// `metadata_config` of a remote-write entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    /// Send metadata (default true).
    pub send: bool,
    /// Period of metadata sends (1m).
    pub send_interval: PromDuration,
    /// Max metadata per request (500).
    pub max_samples_per_send: usize,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        Self {
            send: true,
            send_interval: PromDuration(Duration::from_secs(60)),
            max_samples_per_send: 500,
        }
    }
}

/// The remote-write protobuf message to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProtobufMessage {
    /// `prometheus.WriteRequest` (remote write 1.0).
    #[default]
    V1,
    /// `io.prometheus.write.v2.Request` (remote write 2.0).
    V2,
}

impl<'de> Deserialize<'de> for ProtobufMessage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        parse_str(d, "a protobuf message name", |s| match s {
            "prometheus.WriteRequest" => Ok(Self::V1),
            "io.prometheus.write.v2.Request" => Ok(Self::V2),
            _ => Err(format!(
                "unknown remote write protobuf message {s:?}: use prometheus.WriteRequest or io.prometheus.write.v2.Request"
            )),
        })
    }
}

/// One `remote_write` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// Endpoint URL.
    pub url: String,
    /// Name (unique; defaults to a hash-free index-based name).
    #[serde(default)]
    pub name: Option<String>,
    /// Request timeout (30s).
    #[serde(default = "default_remote_timeout")]
    pub remote_timeout: PromDuration,
    /// Extra HTTP headers (reserved ones rejected).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Relabeling applied to series before sending.
    #[serde(default)]
    pub write_relabel_configs: Vec<RelabelConfig>,
    /// Send exemplars.
    #[serde(default)]
    pub send_exemplars: bool,
    /// Send native histograms.
    #[serde(default)]
    pub send_native_histograms: bool,
    /// Protocol message.
    #[serde(default)]
    pub protobuf_message: ProtobufMessage,
    /// Basic auth.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// Authorization header.
    #[serde(default)]
    pub authorization: Option<Authorization>,
    /// Bearer token (legacy).
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// Bearer token file (legacy).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// TLS settings.
    #[serde(default)]
    pub tls_config: TlsConfig,
    /// HTTP proxy.
    #[serde(default)]
    pub proxy_url: Option<String>,
    /// Follow redirects (default true).
    #[serde(default = "yes")]
    pub follow_redirects: bool,
    /// Accepted for compatibility.
    #[serde(default = "yes")]
    pub enable_http2: bool,
    /// Queue tuning.
    #[serde(default)]
    pub queue_config: QueueConfig,
    /// Metadata sending.
    #[serde(default)]
    pub metadata_config: MetadataConfig,
}

fn default_remote_timeout() -> PromDuration {
    PromDuration(Duration::from_secs(30))
}

const RESERVED_HEADERS: [&str; 12] = [
    "authorization",
    "host",
    "content-encoding",
    "content-length",
    "content-type",
    "user-agent",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "www-authenticate",
    "x-prometheus-remote-write-version",
];

impl RemoteWriteConfig {
    /// HTTP client settings for sending.
    pub fn http_client(&self) -> HttpClientConfig {
        HttpClientConfig {
            basic_auth: self.basic_auth.clone(),
            authorization: self.authorization.clone(),
            tls_config: self.tls_config.clone(),
            proxy_url: self.proxy_url.clone(),
            follow_redirects: self.follow_redirects,
        }
    }

    fn validate_local(&mut self) -> std::result::Result<(), String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!(
                "remote_write url {:?} must start with http:// or https://",
                self.url
            ));
        }
        for h in self.headers.keys() {
            if RESERVED_HEADERS.contains(&h.to_ascii_lowercase().as_str()) {
                return Err(format!("{h} is a reserved header. It must not be changed"));
            }
        }
        let q = &self.queue_config;
        if q.max_shards == 0 || q.min_shards == 0 || q.min_shards > q.max_shards {
            return Err(format!(
                "remote_write {:?}: queue_config needs 1 <= min_shards <= max_shards",
                self.url
            ));
        }
        if q.max_samples_per_send == 0 || q.capacity == 0 {
            return Err(format!(
                "remote_write {:?}: queue_config capacity and max_samples_per_send must be > 0",
                self.url
            ));
        }
        validate_http(
            &self.basic_auth,
            &mut self.authorization,
            &self.bearer_token,
            &self.bearer_token_file,
            &self.proxy_url,
            &self.tls_config,
        )
        .map_err(|e| format!("remote_write {:?}: {e}", self.url))
    }
}

// ---------------------------------------------------------------------------
// The whole file.

/// A parsed, defaulted and validated configuration.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// `global`.
    #[serde(default)]
    pub global: GlobalConfig,
    /// `scrape_configs`.
    #[serde(default)]
    pub scrape_configs: Vec<ScrapeConfig>,
    /// `remote_write`.
    #[serde(default)]
    pub remote_write: Vec<RemoteWriteConfig>,
    #[serde(default)]
    rule_files: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    alerting: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    remote_read: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    storage: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    tracing: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    scrape_config_files: Option<serde_yaml_ng::Value>,
    /// Sections present in the file that the agent does not use (log a
    /// warning for each).
    #[serde(skip)]
    pub ignored_sections: Vec<&'static str>,
}

/// Loads, defaults and validates a configuration file.
pub fn load(path: impl AsRef<Path>) -> Result<AgentConfig> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).context(ReadSnafu { path })?;
    load_str_inner(&text, Some(path.to_path_buf()))
}

/// Parses, defaults and validates configuration text.
pub fn load_str(text: &str) -> Result<AgentConfig> {
    load_str_inner(text, None)
}

fn load_str_inner(text: &str, path: Option<PathBuf>) -> Result<AgentConfig> {
    // An empty file is a valid (empty) config, as in Prometheus.
    let mut cfg: AgentConfig = if text.trim().is_empty() {
        AgentConfig::default()
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: yaml_error_message(text, &e),
        })?
    };
    let invalid = |line: Option<usize>, message: String| ConfigError::Invalid {
        path: path.clone(),
        line,
        message,
    };
    for (name, present) in [
        ("rule_files", cfg.rule_files.is_some()),
        ("alerting", cfg.alerting.is_some()),
        ("remote_read", cfg.remote_read.is_some()),
        ("storage", cfg.storage.is_some()),
        ("tracing", cfg.tracing.is_some()),
    ] {
        if present {
            cfg.ignored_sections.push(name);
        }
    }
    if cfg.scrape_config_files.is_some() {
        return Err(invalid(
            find_line(text, "scrape_config_files:"),
            "scrape_config_files is not supported by stratus agent; inline the scrape configs"
                .into(),
        ));
    }

    // Global defaults.
    let g = &mut cfg.global;
    if g.scrape_interval.0.is_zero() {
        g.scrape_interval = default_global_interval();
    }
    if let Some(t) = g.scrape_timeout {
        if t.0.is_zero() {
            g.scrape_timeout = None;
        } else if t > g.scrape_interval {
            return Err(invalid(
                find_line(text, "scrape_timeout:"),
                "global scrape timeout greater than scrape interval".into(),
            ));
        }
    }
    g.scrape_timeout = Some(g.effective_timeout());
    // Empty values mean "absent".
    g.external_labels.retain(|_, v| !v.is_empty());
    let global = cfg.global.clone();

    let mut seen = HashSet::new();
    for sc in &mut cfg.scrape_configs {
        let line = find_job_line(text, &sc.job_name);
        if !seen.insert(sc.job_name.clone()) {
            return Err(invalid(
                line,
                format!(
                    "found multiple scrape configs with job name {:?}",
                    sc.job_name
                ),
            ));
        }
        sc.validate_local().map_err(|m| invalid(line, m))?;
        let interval = sc.scrape_interval.filter(|d| !d.0.is_zero());
        let interval = interval.unwrap_or(global.scrape_interval);
        sc.scrape_interval = Some(interval);
        match sc.scrape_timeout.filter(|d| !d.0.is_zero()) {
            Some(t) if t > interval => {
                return Err(invalid(
                    line,
                    format!(
                        "scrape timeout greater than scrape interval for scrape config with job name {:?}",
                        sc.job_name
                    ),
                ));
            }
            Some(_) => {}
            None => {
                let gt = global.effective_timeout();
                sc.scrape_timeout = Some(if gt > interval { interval } else { gt });
            }
        }
        sc.sample_limit = Some(sc.sample_limit.unwrap_or(global.sample_limit));
        sc.target_limit = Some(sc.target_limit.unwrap_or(global.target_limit));
        sc.label_limit = Some(sc.label_limit.unwrap_or(global.label_limit));
        sc.label_name_length_limit = Some(
            sc.label_name_length_limit
                .unwrap_or(global.label_name_length_limit),
        );
        sc.label_value_length_limit = Some(
            sc.label_value_length_limit
                .unwrap_or(global.label_value_length_limit),
        );
        sc.body_size_limit = Some(sc.body_size_limit.unwrap_or(global.body_size_limit));
    }

    let mut names = HashSet::new();
    for (i, rw) in cfg.remote_write.iter_mut().enumerate() {
        let line = find_line(text, &rw.url);
        rw.validate_local().map_err(|m| invalid(line, m))?;
        let name = rw
            .name
            .clone()
            .unwrap_or_else(|| format!("remote_write_{i}"));
        if !names.insert(name.clone()) {
            return Err(invalid(
                line,
                format!("found multiple remote write configs with name {name:?}"),
            ));
        }
        rw.name = Some(name);
    }
    Ok(cfg)
}

/// serde_yaml_ng's message, with a line added where it has none (errors
/// on the top-level mapping are reported at line 1 column 1, which it does
/// not print).
fn yaml_error_message(text: &str, e: &serde_yaml_ng::Error) -> String {
    let msg = e.to_string();
    if msg.contains(" at line ") {
        return msg;
    }
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some(field) = rest.split('`').next() {
            for (i, line) in text.lines().enumerate() {
                if line.trim_end().starts_with(&format!("{field}:")) {
                    return format!("{msg} at line {} column 1", i + 1);
                }
            }
        }
    }
    match e.location() {
        Some(l) => format!("{msg} at line {} column {}", l.line(), l.column()),
        None => msg,
    }
}

/// The 1-based line of the first occurrence of `needle`.
fn find_line(text: &str, needle: &str) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    text.find(needle)
        .map(|off| text[..off].bytes().filter(|&b| b == b'\n').count() + 1)
}

/// The line of the last `job_name:` entry naming `job` (the last, so a
/// duplicate points at the second occurrence).
fn find_job_line(text: &str, job: &str) -> Option<usize> {
    let mut found = None;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim_start().trim_start_matches("- ").trim_start();
        if let Some(rest) = l.strip_prefix("job_name:") {
            let v = rest.trim().trim_matches(|c| c == '"' || c == '\'');
            if v == job {
                found = Some(i + 1);
                if found.is_some() && job.is_empty() {
                    break;
                }
            }
        }
    }
    found
}

/// A starter configuration, printed by `stratus agent exampleconfig`.
pub fn example_config() -> &'static str {
    EXAMPLE_CONFIG
}

const EXAMPLE_CONFIG: &str = r#"# stratus agent configuration (Prometheus prometheus.yml format).
global:
  scrape_interval: 15s
  scrape_timeout: 10s
  external_labels:
    # Added to every series pushed; identifies this agent.
    agent: my-agent

scrape_configs:
  # The node exporter on this machine (Debian: prometheus-node-exporter).
  - job_name: node
    static_configs:
      - targets: ["localhost:9100"]
        labels:
          env: prod

  # Targets listed in files (JSON or YAML), re-read when they change:
  #   [{"targets": ["10.0.0.1:8080"], "labels": {"team": "web"}}]
  - job_name: apps
    file_sd_configs:
      - files: ["/etc/stratus/targets/*.json"]
    relabel_configs:
      # Use the host part of the address as the instance label.
      - source_labels: [__address__]
        regex: "([^:]+):\\d+"
        target_label: instance
    metric_relabel_configs:
      # Drop Go runtime internals.
      - source_labels: [__name__]
        regex: "go_memstats_.*"
        action: drop

remote_write:
  # Stratus with a tenant token (or any Prometheus remote-write receiver).
  - url: https://stratus.example.com/api/v1/push
    authorization:
      credentials_file: /etc/stratus/token
    queue_config:
      max_samples_per_send: 2000
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match load_str(text) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn durations() {
        let ok = [
            ("15s", 15_000),
            ("1m30s", 90_000),
            ("1d", 86_400_000),
            ("1w", 604_800_000),
            ("1y", 31_536_000_000),
            ("500ms", 500),
            ("1h1m1s1ms", 3_661_001),
            ("0", 0),
            ("0s", 0),
        ];
        for (s, ms) in ok {
            let d = PromDuration::parse(s).unwrap();
            assert_eq!(d.0.as_millis(), ms, "{s}");
        }
        for s in ["", "1", "s", "1x", "1s1m", "1s1s", "-1s", "1.5s", " 1s"] {
            assert!(PromDuration::parse(s).is_err(), "{s}");
        }
        for (s, back) in [
            ("90s", "1m30s"),
            ("1d", "1d"),
            ("0", "0s"),
            ("2w", "2w"),
            ("1500ms", "1s500ms"),
        ] {
            assert_eq!(PromDuration::parse(s).unwrap().to_string(), back);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("10MB").unwrap().0, 10 << 20);
        assert_eq!(ByteSize::parse("512KB").unwrap().0, 512 << 10);
        assert_eq!(ByteSize::parse("0").unwrap().0, 0);
        assert!(ByteSize::parse("10XB").is_err());
    }

    #[test]
    fn full_config_with_defaults() {
        let text = r#"
global:
  scrape_interval: 15s
  external_labels:
    region: eu
rule_files: ["a.yml"]
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ["localhost:9100", "b:9100"]
        labels: {env: prod}
  - job_name: app
    scrape_interval: 5s
    metrics_path: /m
    scheme: https
    params: {module: [http_2xx]}
    basic_auth: {username: u, password_file: /p}
    tls_config: {ca_file: /ca, insecure_skip_verify: true, server_name: x}
    honor_labels: true
    honor_timestamps: false
    sample_limit: 100
    body_size_limit: 1MB
    file_sd_configs:
      - files: ["/etc/t/*.json", "/etc/t/x.yml"]
        refresh_interval: 1m
    http_sd_configs:
      - url: http://127.0.0.1:1/sd
    relabel_configs:
      - source_labels: [__address__]
        regex: "(.*):.*"
        target_label: host
      - action: labelmap
        regex: __meta_(.+)
    metric_relabel_configs:
      - action: drop
        source_labels: [__name__]
        regex: go_.*
  - job_name: tok
    bearer_token: abc
remote_write:
  - url: https://x/api/v1/push
    headers: {X-Scope-OrgID: t1}
    queue_config: {max_samples_per_send: 500}
    protobuf_message: io.prometheus.write.v2.Request
    write_relabel_configs:
      - action: labeldrop
        regex: tmp_.*
"#;
        let c = load_str(text).unwrap();
        assert_eq!(c.ignored_sections, vec!["rule_files"]);
        assert_eq!(c.global.scrape_timeout.unwrap().0, Duration::from_secs(10));
        let node = &c.scrape_configs[0];
        assert_eq!(node.interval(), Duration::from_secs(15));
        assert_eq!(node.timeout(), Duration::from_secs(10));
        assert_eq!(node.metrics_path, "/metrics");
        assert!(node.honor_timestamps);
        let app = &c.scrape_configs[1];
        assert_eq!(app.interval(), Duration::from_secs(5));
        assert_eq!(
            app.timeout(),
            Duration::from_secs(5),
            "timeout capped at interval"
        );
        assert_eq!(app.body_size_limit, Some(ByteSize(1 << 20)));
        assert_eq!(app.relabel_configs.len(), 2);
        let tok = &c.scrape_configs[2];
        let a = tok.authorization.as_ref().unwrap();
        assert_eq!(a.kind.as_deref(), Some("Bearer"));
        assert_eq!(a.credentials, Some(Secret("abc".into())));
        let rw = &c.remote_write[0];
        assert_eq!(rw.protobuf_message, ProtobufMessage::V2);
        assert_eq!(rw.queue_config.max_samples_per_send, 500);
        assert_eq!(rw.queue_config.capacity, 10_000);
        assert_eq!(rw.remote_timeout.0, Duration::from_secs(30));
        assert_eq!(rw.name.as_deref(), Some("remote_write_0"));
        assert!(format!("{tok:?}").contains("<secret>"));
        assert!(!format!("{tok:?}").contains("abc"));
    }

    #[test]
    fn example_config_loads() {
        let c = load_str(example_config()).unwrap();
        assert_eq!(c.scrape_configs.len(), 2);
        assert_eq!(c.remote_write.len(), 1);
    }

    #[test]
    fn empty_config_is_valid() {
        let c = load_str("").unwrap();
        assert!(c.scrape_configs.is_empty());
    }

    #[test]
    fn errors_name_the_line() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "global:\n  scrape_interval: 15s\n  bogus: 1\n",
                "line 3",
                "unknown field `bogus`",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    scrape_interval: 15x\n",
                "line 3",
                "not a valid duration",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - source_labels: [a]\n        regex: \"(\"\n        target_label: b\n",
                "line 5",
                "regex",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - action: frobnicate\n",
                "line 4",
                "unknown relabel action",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - action: hashmod\n        target_label: x\n        source_labels: [a]\n",
                "line 4",
                "non-zero modulus",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - action: replace\n        source_labels: [a]\n",
                "line 4",
                "requires 'target_label'",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - source_labels: [a]\n        target_label: \"0bad\"\n",
                "line 4",
                "invalid 'target_label'",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - source_labels: [\"a-b\"]\n        target_label: c\n",
                "line 4",
                "not a valid label name",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - action: labeldrop\n        regex: x\n        target_label: y\n",
                "line 4",
                "requires only 'regex'",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - action: lowercase\n        source_labels: [a]\n        target_label: b\n        replacement: x\n",
                "line 4",
                "'replacement' can not be set",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - action: keepequal\n        source_labels: [a]\n        target_label: b\n        regex: x\n",
                "line 4",
                "requires only 'source_labels' and `target_label`",
            ),
            (
                "scrape_configs:\n  - job_name: a\n  - job_name: b\n  - job_name: a\n",
                "line 4",
                "multiple scrape configs with job name \"a\"",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n    scrape_timeout: 10s\n",
                "line 2",
                "scrape timeout greater than scrape interval",
            ),
            (
                "global:\n  scrape_interval: 5s\n  scrape_timeout: 10s\n",
                "line 3",
                "global scrape timeout greater than scrape interval",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    scheme: ftp\n",
                "line 2",
                "invalid scheme",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    basic_auth: {username: u}\n    bearer_token: t\n",
                "line 2",
                "at most one of basic_auth",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    authorization: {type: Basic, credentials: x}\n",
                "line 2",
                "use \"basic_auth\" instead",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    basic_auth: {username: u, password: p, password_file: f}\n",
                "line 2",
                "password & password_file",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    static_configs:\n      - targets: [\"http://x:1/metrics\"]\n",
                "line 2",
                "not a valid hostname",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    static_configs:\n      - targets: [x]\n        labels: {\"1x\": y}\n",
                "line 5",
                "not a valid label name",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    file_sd_configs:\n      - files: [\"/etc/*/x.json\"]\n",
                "line 2",
                "not valid for file discovery",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    body_size_limit: 10QB\n",
                "line 3",
                "size unit",
            ),
            (
                "global:\n  external_labels:\n    \"a b\": c\n",
                "line 3",
                "not a valid label name",
            ),
            (
                "remote_write:\n  - url: http://x/push\n    headers: {Authorization: x}\n",
                "line 2",
                "reserved header",
            ),
            (
                "remote_write:\n  - url: http://x/push\n    protobuf_message: foo\n",
                "line 3",
                "unknown remote write protobuf message",
            ),
            (
                "remote_write:\n  - url: ftp://x\n",
                "line 2",
                "must start with http",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    oauth2: {}\n",
                "line 3",
                "unknown field `oauth2`",
            ),
            ("global: [\n", "line 1", "invalid type"),
            (
                "global:\n  scrape_interval: 1s\n\tx: y\n",
                "line 3",
                "tab character",
            ),
            ("global: {}\nbogus: 1\n", "line 2", "unknown field `bogus`"),
        ];
        for (text, line, msg) in cases {
            let e = err(text);
            assert!(e.contains(line), "{text:?}: {e} (want {line})");
            assert!(e.contains(msg), "{text:?}: {e} (want {msg})");
        }
    }

    #[test]
    fn load_from_file_reports_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.yml");
        std::fs::write(&p, "scrape_configs:\n  - job_name: x\n    foo: 1\n").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("p.yml") && e.contains("line 3"), "{e}");
        let e = load(dir.path().join("missing.yml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
