//! Service discovery: turns a scrape config's `static_configs`,
//! `file_sd_configs` and `http_sd_configs` into target groups.
//!
//! One task per job ([`run`]) polls files (by modification time, about
//! once a second, and fully every `refresh_interval`) and HTTP endpoints
//! (every `refresh_interval`), and publishes the combined groups on a
//! watch channel whenever they change. A provider that fails keeps its
//! last good groups, as Prometheus does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use tokio::sync::watch;

use crate::config::{FileSdConfig, HttpSdConfig, ScrapeConfig, check_target_address};
use crate::httpclient;

/// A group of targets sharing labels, from one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroup {
    /// Where it came from (`static:0`, `file:/path:1`, `http:url:2`).
    pub source: String,
    /// One label set per target (with `__address__`).
    pub targets: Vec<BTreeMap<String, String>>,
    /// Labels common to the group (target labels win).
    pub labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn to_groups(
    raw: Vec<RawGroup>,
    source: &str,
    meta: (&str, &str),
) -> Result<Vec<TargetGroup>, String> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, g) in raw.into_iter().enumerate() {
        for name in g.labels.keys() {
            if !crate::config::is_valid_label_name(name) {
                return Err(format!("{name:?} is not a valid label name"));
            }
        }
        let mut targets = Vec::with_capacity(g.targets.len());
        for t in g.targets {
            check_target_address(&t)?;
            targets.push(BTreeMap::from([("__address__".to_string(), t)]));
        }
        let mut labels = g.labels;
        labels.insert(meta.0.to_string(), meta.1.to_string());
        out.push(TargetGroup {
            source: format!("{source}:{i}"),
            targets,
            labels,
        });
    }
    Ok(out)
}

/// The static groups of a config.
pub fn static_groups(cfg: &ScrapeConfig) -> Vec<TargetGroup> {
    cfg.static_configs
        .iter()
        .enumerate()
        .map(|(i, sc)| TargetGroup {
            source: format!("static:{i}"),
            targets: sc
                .targets
                .iter()
                .map(|t| BTreeMap::from([("__address__".to_string(), t.clone())]))
                .collect(),
            labels: sc
                .labels
                .iter()
                .map(|(k, v)| (k.0.clone(), v.clone()))
                .collect(),
        })
        .collect()
}

/// Parses a file SD file (JSON when the name ends in `.json`, else YAML).
pub fn parse_file(path: &Path, data: &[u8]) -> Result<Vec<TargetGroup>, String> {
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let raw: Vec<RawGroup> = if is_json {
        serde_json::from_slice(data).map_err(|e| format!("{}: {e}", path.display()))?
    } else if data.iter().all(u8::is_ascii_whitespace) {
        Vec::new()
    } else {
        serde_yaml_ng::from_slice(data).map_err(|e| format!("{}: {e}", path.display()))?
    };
    let p = path.display().to_string();
    to_groups(raw, &format!("file:{p}"), ("__meta_filepath", &p))
}

/// Parses an HTTP SD response body.
pub fn parse_http(url: &str, data: &[u8]) -> Result<Vec<TargetGroup>, String> {
    let raw: Vec<RawGroup> =
        serde_json::from_slice(data).map_err(|e| format!("http_sd {url}: {e}"))?;
    to_groups(raw, &format!("http:{url}"), ("__meta_url", url))
}

struct FileState {
    cfg: FileSdConfig,
    mtimes: BTreeMap<PathBuf, Option<SystemTime>>,
    last_full: Option<Instant>,
    groups: BTreeMap<PathBuf, Vec<TargetGroup>>,
}

impl FileState {
    fn poll(&mut self) {
        let mut now_mtimes = BTreeMap::new();
        for pat in &self.cfg.files {
            match glob::glob(pat) {
                Ok(paths) => {
                    for p in paths.flatten() {
                        let m = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
                        now_mtimes.insert(p, m);
                    }
                }
                Err(e) => tracing::warn!(pattern = %pat, error = %e, "file_sd: bad pattern"),
            }
        }
        let due = self
            .last_full
            .is_none_or(|t| t.elapsed() >= self.cfg.refresh_interval.0);
        if !due && now_mtimes == self.mtimes {
            return;
        }
        self.groups.retain(|p, _| now_mtimes.contains_key(p));
        for (p, m) in &now_mtimes {
            if !due && self.mtimes.get(p) == Some(m) {
                continue;
            }
            match std::fs::read(p)
                .map_err(|e| format!("{}: {e}", p.display()))
                .and_then(|d| parse_file(p, &d))
            {
                Ok(g) => {
                    self.groups.insert(p.clone(), g);
                }
                Err(e) => tracing::warn!(error = %e, "file_sd: cannot read targets file"),
            }
        }
        self.mtimes = now_mtimes;
        if due {
            self.last_full = Some(Instant::now());
        }
    }
}

struct HttpState {
    cfg: HttpSdConfig,
    next: Instant,
    groups: Vec<TargetGroup>,
}

async fn fetch_http(cfg: &HttpSdConfig) -> Result<Vec<TargetGroup>, String> {
    let hc = cfg.http_client();
    let client = httpclient::build_client(&hc)?;
    let mut req = client
        .get(&cfg.url)
        .header("Accept", "application/json")
        .timeout(Duration::from_secs(30));
    if let Some(a) = httpclient::auth_header(&hc)? {
        req = req.header("Authorization", a);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("http_sd {}: {e}", cfg.url))?;
    if !resp.status().is_success() {
        return Err(format!(
            "http_sd {}: server returned HTTP status {}",
            cfg.url,
            resp.status()
        ));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("http_sd {}: {e}", cfg.url))?;
    parse_http(&cfg.url, &body)
}

/// How often files are checked for changes.
pub const FILE_POLL: Duration = Duration::from_secs(1);

/// Runs discovery for `cfg` until `tx` has no receivers or `stop` fires,
/// publishing the full group list whenever it changes (the first list is
/// published at once).
pub async fn run(
    cfg: Arc<ScrapeConfig>,
    tx: watch::Sender<Vec<TargetGroup>>,
    mut stop: watch::Receiver<bool>,
) {
    let statics = static_groups(&cfg);
    let mut files: Vec<FileState> = cfg
        .file_sd_configs
        .iter()
        .map(|c| FileState {
            cfg: c.clone(),
            mtimes: BTreeMap::new(),
            last_full: None,
            groups: BTreeMap::new(),
        })
        .collect();
    let mut https: Vec<HttpState> = cfg
        .http_sd_configs
        .iter()
        .map(|c| HttpState {
            cfg: c.clone(),
            next: Instant::now(),
            groups: Vec::new(),
        })
        .collect();
    let mut first = true;
    loop {
        for f in &mut files {
            f.poll();
        }
        for h in &mut https {
            if Instant::now() >= h.next {
                match fetch_http(&h.cfg).await {
                    Ok(g) => h.groups = g,
                    Err(e) => tracing::warn!(error = %e, "http_sd: refresh failed"),
                }
                h.next = Instant::now() + h.cfg.refresh_interval.0.max(Duration::from_millis(100));
            }
        }
        let mut all = statics.clone();
        for f in &files {
            for g in f.groups.values() {
                all.extend(g.iter().cloned());
            }
        }
        for h in &https {
            all.extend(h.groups.iter().cloned());
        }
        if first || *tx.borrow() != all {
            first = false;
            if tx.send(all).is_err() {
                return;
            }
        }
        if files.is_empty() && https.is_empty() {
            // Static only: nothing more to do until stopped.
            let _ = stop.wait_for(|s| *s).await;
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(FILE_POLL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_formats() {
        let j = br#"[{"targets": ["a:1", "b:2"], "labels": {"env": "x"}}]"#;
        let g = parse_file(Path::new("/t/x.json"), j).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].targets.len(), 2);
        assert_eq!(g[0].labels["env"], "x");
        assert_eq!(g[0].labels["__meta_filepath"], "/t/x.json");
        let y = b"- targets: [c:3]\n  labels: {team: t}\n";
        let g = parse_file(Path::new("/t/x.yml"), y).unwrap();
        assert_eq!(g[0].targets[0]["__address__"], "c:3");
        assert!(parse_file(Path::new("/t/x.yml"), b"").unwrap().is_empty());
        for bad in [
            &br#"[{"targets": ["a/b"]}]"#[..],
            br#"[{"targets": ["a:1"], "labels": {"1x": "y"}}]"#,
            br#"{"targets": []}"#,
            br#"[{"targets": [], "bogus": 1}]"#,
        ] {
            assert!(parse_file(Path::new("/t/x.json"), bad).is_err());
        }
    }

    #[tokio::test]
    async fn file_sd_watches_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        std::fs::write(&path, br#"[{"targets": ["a:1"]}]"#).unwrap();
        let yaml = format!(
            "job_name: j\nfile_sd_configs:\n  - files: ['{}/*.json']\n",
            dir.path().display()
        );
        let cfg: ScrapeConfig = serde_yaml_ng::from_str(&yaml).unwrap();
        let (tx, mut rx) = watch::channel(Vec::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(Arc::new(cfg), tx, stop_rx));
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update()[0].targets[0]["__address__"], "a:1");
        // Ensure a different mtime even on coarse file systems.
        tokio::time::sleep(Duration::from_millis(20)).await;
        std::fs::write(&path, br#"[{"targets": ["b:2"]}]"#).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rx.borrow()[0].targets[0]["__address__"], "b:2");
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
