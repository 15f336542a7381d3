//! A real S3-compatible server for integration tests: `s3s-fs` (from
//! crates.io, installed by `scripts/test` into `~/.cache/stratus/tools`) on
//! 127.0.0.1 with a fresh data directory. Shared by the objstore, tsdb
//! and cli tests (included with `#[path]`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use stratus_objstore::{S3Config, Secret};

/// Access key the server accepts.
pub(crate) const ACCESS_KEY: &str = "stratus-test-key";
/// Secret key the server accepts.
pub(crate) const SECRET_KEY: &str = "stratus-test-secret-0123456789";

/// How to get the server when it is missing.
pub(crate) const INSTALL_HINT: &str = "s3s-fs (a real S3 server for these tests) is missing: run \
    scripts/test, which installs it, or `cargo install --locked s3s-fs@0.14.1 --features binary \
    --root ~/.cache/stratus/tools` (or set STRATUS_S3S_FS to its path)";

/// Where the `s3s-fs` binary is: `$STRATUS_S3S_FS`, else in
/// `$STRATUS_TOOLS_DIR/bin` (default `~/.cache/stratus/tools/bin`), else
/// `<repo>/target/tools/bin`, else `s3s-fs` on `PATH`.
pub(crate) fn s3s_fs_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("STRATUS_S3S_FS") {
        return PathBuf::from(p);
    }
    let tools = std::env::var_os("STRATUS_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/stratus/tools"))
        });
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    for local in tools
        .map(|t| t.join("bin/s3s-fs"))
        .into_iter()
        .chain([repo.join("target/tools/bin/s3s-fs")])
    {
        if local.exists() {
            return local;
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("s3s-fs");
            if p.exists() {
                return p;
            }
        }
    }
    panic!("{INSTALL_HINT}");
}

/// A running `s3s-fs`; killed on drop.
pub(crate) struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub(crate) endpoint: String,
    /// Its data directory: one sub-directory per bucket.
    pub(crate) root: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Server {
    /// Starts the server on a free loopback port with one bucket per name
    /// in `buckets`, and waits (at most 20 s) until it listens.
    pub(crate) fn start(buckets: &[&str]) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        for b in buckets {
            std::fs::create_dir_all(root.path().join(b)).expect("bucket dir");
        }
        let bin = s3s_fs_binary();
        let mut child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .env("RUST_LOG", "s3s_fs=info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}; {INSTALL_HINT}", bin.display()));
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(i) = line.find("running at http://") {
                    let addr: String = line[i + "running at http://".len()..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                        .collect();
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("s3s-fs did not report its address within 20 s");
            }
        };
        Self {
            child,
            endpoint: format!("http://{addr}"),
            root,
        }
    }

    /// Settings for `bucket` on this server with the right credentials.
    pub(crate) fn config(&self, bucket: &str) -> S3Config {
        S3Config {
            bucket: bucket.to_string(),
            endpoint: self.endpoint.clone(),
            access_key_id: ACCESS_KEY.to_string(),
            secret_access_key: Secret::new(SECRET_KEY),
            allow_http: true,
            ..S3Config::default()
        }
    }

    /// Every object key in `bucket` (relative paths of its files), sorted.
    pub(crate) fn keys(&self, bucket: &str) -> Vec<String> {
        fn walk(base: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else if let Ok(rel) = p.strip_prefix(base) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let base = self.root.path().join(bucket);
        let mut out = Vec::new();
        walk(&base, &base, &mut out);
        out.sort();
        out
    }
}
