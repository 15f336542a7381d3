//! Shared by the `stratus` binary's integration tests: starting the real
//! server process on a free loopback port.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `stratus` process and its base URL.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) base: String,
    /// host:port it listens on.
    pub(crate) addr: String,
    /// Its log lines (stdout) so far.
    pub(crate) log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `stratus` with `args` on 127.0.0.1 and a free port, data in
/// `dir`, and waits until it reports its listen address.
pub(crate) fn spawn_stratus(dir: &Path, args: &[&str]) -> Proc {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.push("--listen=127.0.0.1:0".into());
    all.push(format!("--data-dir={}", dir.display()));
    spawn_listening(&all)
}

/// Runs the `stratus` binary with `args` (which must make it listen on a
/// port it chooses) and waits for the `listen=` field of its log.
pub(crate) fn spawn_listening(args: &[String]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start stratus");
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut l) = log2.lock() {
                l.push(line.clone());
            }
            if !sent && let Some(i) = line.find("listen=") {
                let addr: String = line[i + 7..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                    .collect();
                let _ = tx.send(addr);
                sent = true;
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("stratus did not report its listen address");
    Proc {
        child,
        base: format!("http://{addr}"),
        addr,
        log,
    }
}

/// A reqwest client (installs rustls' `ring` provider first: reqwest is
/// built with the agent's `rustls-no-provider` feature).
pub(crate) fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
