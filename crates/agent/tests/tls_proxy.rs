//! `tls_config` and `proxy_url` for scrapes and remote write, over real
//! TLS on 127.0.0.1: a CA, server and client certificates made by the
//! `openssl` command in the test; a small HTTPS server (rustls, one
//! thread per connection) serving a metrics page or taking remote-write
//! requests; a small HTTP proxy (absolute-form requests and `CONNECT`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use stratus_agent::queue::{Queue, QueueConfig};
use stratus_agent::remote::{PushMetrics, RemoteSettings, Sender};
use stratus_agent::scrape::{Health, ScrapeManager};
use stratus_agent::sink::{Batch, SeriesSamples, Sink, SinkError};
use stratus_model::{Labels, Sample};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PAGE: &str = "# TYPE tls_fixture gauge\ntls_fixture 7\n";

/// Certificates of one test: a CA; a server certificate for
/// `stratus.test` and 127.0.0.1; one for `other.test` only; a client
/// certificate.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("run openssl");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let mut a = vec!["req", "-x509", "-nodes", "-days", "2"];
        a.extend(ec);
        a.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=stratus test CA",
        ]);
        a.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        a.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        run(&a);
        for (name, ext) in [
            (
                "srv",
                "subjectAltName=DNS:stratus.test,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "other",
                "subjectAltName=DNS:other.test\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(d.join(format!("{name}.ext")), ext).unwrap();
            let mut a = vec!["req", "-nodes"];
            a.extend(ec);
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let crt = format!("{name}.crt");
            let ext = format!("{name}.ext");
            a.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=stratus test"]);
            run(&a);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &crt,
                "-extfile",
                &ext,
            ]);
        }
        Certs { dir }
    }

    fn server_config(&self, cert: &str, client_auth: bool) -> Arc<rustls::ServerConfig> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(self.path(&format!("{cert}.crt")))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(self.path(&format!("{cert}.key"))).unwrap();
        let b = rustls::ServerConfig::builder();
        let b = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(self.path("ca.crt")).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            let v = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .unwrap();
            b.with_client_cert_verifier(v)
        } else {
            b.with_no_client_auth()
        };
        Arc::new(b.with_single_cert(chain, key).unwrap())
    }
}

/// What a test server saw.
#[derive(Default)]
struct Seen {
    /// Requests answered.
    requests: AtomicUsize,
    /// Remote-write samples decoded.
    samples: AtomicUsize,
    /// Request lines.
    lines: Mutex<Vec<String>>,
}

/// Reads one HTTP/1.1 request (head and `Content-Length` body); `None`
/// at end of stream.
fn read_request(r: &mut impl BufRead) -> Option<(String, Vec<u8>)> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((line.trim_end().to_string(), body))
}

/// Answers requests on one connection: `GET` gets [`PAGE`], `POST` is
/// decoded as remote write 1.0.
fn handle<S: Read + Write>(s: S, seen: &Seen) {
    let mut r = BufReader::new(s);
    while let Some((line, body)) = read_request(&mut r) {
        seen.lines.lock().unwrap().push(line.clone());
        let resp = if line.starts_with("POST") {
            let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
            let req = stratus_proto::prometheus::WriteRequest::decode(raw.as_slice()).unwrap();
            let n: usize = req.timeseries.iter().map(|t| t.samples.len()).sum();
            seen.samples.fetch_add(n, Ordering::SeqCst);
            "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n".to_string()
        } else {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\n\r\n{PAGE}",
                PAGE.len()
            )
        };
        seen.requests.fetch_add(1, Ordering::SeqCst);
        if r.get_mut().write_all(resp.as_bytes()).is_err() || r.get_mut().flush().is_err() {
            return;
        }
    }
}

/// An HTTP(S) server on 127.0.0.1 (threads; lives as long as the test).
fn serve(tls: Option<Arc<rustls::ServerConfig>>) -> (String, Arc<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let seen = Arc::new(Seen::default());
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(tcp) = conn else { continue };
            let seen = s2.clone();
            let tls = tls.clone();
            std::thread::spawn(move || match tls {
                Some(cfg) => {
                    let Ok(c) = rustls::ServerConnection::new(cfg) else {
                        return;
                    };
                    handle(rustls::StreamOwned::new(c, tcp), &seen);
                }
                None => handle(tcp, &seen),
            });
        }
    });
    (addr, seen)
}

/// A forward proxy: `CONNECT host:port` tunnels; absolute-form requests
/// are passed on to their host as they are. Records the request lines.
async fn proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l2 = lines.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = l.accept().await else {
                return;
            };
            let lines = l2.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match c.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let first = text.lines().next().unwrap_or("").to_string();
                lines.lock().unwrap().push(first.clone());
                let mut parts = first.split_whitespace();
                let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                if method == "CONNECT" {
                    let Ok(mut up) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = c
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await;
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut up).await;
                } else {
                    let host = target
                        .strip_prefix("http://")
                        .and_then(|r| r.split('/').next())
                        .unwrap_or("");
                    let Ok(mut up) = tokio::net::TcpStream::connect(host).await else {
                        return;
                    };
                    if up.write_all(&head).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut up).await;
                }
            });
        }
    });
    (addr, lines)
}

/// A sink keeping every batch.
#[derive(Debug, Default)]
struct Capture(Mutex<Vec<Batch>>);

impl Sink for Capture {
    fn append(&self, batch: Batch) -> Result<(), SinkError> {
        self.0.lock().unwrap().push(batch);
        Ok(())
    }
}

impl Capture {
    /// The last value of `name` that is not a staleness marker.
    fn value(&self, name: &str) -> Option<f64> {
        let b = self.0.lock().unwrap();
        b.iter().rev().find_map(|b| {
            b.series
                .iter()
                .filter(|s| s.labels.metric_name() == Some(name))
                .flat_map(|s| s.samples.iter().map(|x| x.v))
                .rfind(|v| !v.is_nan())
        })
    }
}

/// Runs a one-job config scraping `target` until `up` appears (or 5 s);
/// returns `up`, the fixture value and the target's last error.
async fn scrape_with(job_yaml: &str) -> (Option<f64>, Option<f64>, String) {
    let cfg = stratus_agent::config::load_str(&format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n{job_yaml}"
    ))
    .unwrap();
    let sink = Arc::new(Capture::default());
    let m = ScrapeManager::new(sink.clone());
    m.apply(&cfg).await;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && sink.value("up").is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snap = m.targets().await;
    let err = snap
        .active
        .first()
        .filter(|a| a.status.health == Health::Down)
        .map(|a| a.status.last_error.clone())
        .unwrap_or_default();
    m.shutdown().await;
    (sink.value("up"), sink.value("tls_fixture"), err)
}

fn job(name: &str, addr: &str, extra: &str) -> String {
    format!(
        "  - job_name: {name}\n    scheme: https\n    static_configs:\n      - targets: [\"{addr}\"]\n{extra}"
    )
}

fn p(c: &Certs, f: &str) -> String {
    c.path(f).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_over_tls_with_ca_client_cert_server_name_and_skip_verify() {
    let certs = Certs::new();
    let (mtls, seen) = serve(Some(certs.server_config("srv", true)));
    let (other, _) = serve(Some(certs.server_config("other", false)));

    // CA and client certificate: verified both ways.
    let tls = format!(
        "    tls_config:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n",
        p(&certs, "ca.crt"),
        p(&certs, "client.crt"),
        p(&certs, "client.key")
    );
    let (up, v, err) = scrape_with(&job("mtls", &mtls, &tls)).await;
    assert_eq!((up, v), (Some(1.0), Some(7.0)), "{err}");
    assert!(seen.requests.load(Ordering::SeqCst) >= 1);

    // Without the client certificate the server refuses the handshake.
    let tls = format!("    tls_config:\n      ca_file: {}\n", p(&certs, "ca.crt"));
    let (up, _, err) = scrape_with(&job("nocert", &mtls, &tls)).await;
    assert_eq!(up, Some(0.0));
    assert!(!err.is_empty());

    // Unknown CA: refused.
    let (up, _, err) = scrape_with(&job("noca", &mtls, "")).await;
    assert_eq!(up, Some(0.0));
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // A certificate for another name: refused, unless server_name names
    // it, or verification is skipped.
    let (up, _, err) = scrape_with(&job("wrongname", &other, &tls)).await;
    assert_eq!(up, Some(0.0), "{err}");
    let named = format!("{tls}      server_name: other.test\n");
    let (up, v, err) = scrape_with(&job("named", &other, &named)).await;
    assert_eq!((up, v), (Some(1.0), Some(7.0)), "{err}");
    let badname = format!("{tls}      server_name: third.test\n");
    let (up, _, err) = scrape_with(&job("badname", &other, &badname)).await;
    assert_eq!(up, Some(0.0), "{err}");
    let skip = "    tls_config:\n      insecure_skip_verify: true\n";
    let (up, v, err) = scrape_with(&job("skip", &other, skip)).await;
    assert_eq!((up, v), (Some(1.0), Some(7.0)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_through_a_proxy() {
    let (target, seen) = serve(None);
    let (proxy, lines) = proxy().await;
    let yaml = format!(
        "  - job_name: proxied\n    proxy_url: http://{proxy}\n    static_configs:\n      - targets: [\"{target}\"]\n"
    );
    let (up, v, err) = scrape_with(&yaml).await;
    assert_eq!((up, v), (Some(1.0), Some(7.0)), "{err}");
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("GET http://{target}/metrics"))),
        "{lines:?}"
    );
    assert!(seen.requests.load(Ordering::SeqCst) >= 1);
}

fn batch(t: i64) -> Batch {
    let labels = Labels::try_from_pairs([("__name__", "rw_tls"), ("job", "x")]).unwrap();
    Batch {
        series: vec![SeriesSamples {
            labels,
            samples: vec![Sample::new(t, t as f64)],
        }],
        metadata: Vec::new(),
    }
}

/// Sends 10 samples with `s` to a receiver; true when all arrived.
async fn push_with(s: RemoteSettings, seen: &Seen) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(PushMetrics::unregistered());
    let q = Queue::open(QueueConfig::new(dir.path()), "tls", &m).unwrap();
    let sender = Sender::start(s, q.clone(), None, &m).unwrap();
    for t in 1..=10 {
        q.append(batch(t)).unwrap();
    }
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && seen.samples.load(Ordering::SeqCst) < 10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sender.stop().await;
    seen.samples.load(Ordering::SeqCst) == 10
}

fn rw_settings(url: &str) -> RemoteSettings {
    let mut s = RemoteSettings::new("tls", url);
    s.batch_send_deadline = Duration::from_millis(20);
    s.min_backoff = Duration::from_millis(10);
    s.max_backoff = Duration::from_millis(100);
    s.timeout = Duration::from_secs(2);
    s.send_metadata = false;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_over_tls_with_client_cert_and_through_a_connect_proxy() {
    let certs = Certs::new();
    let (addr, seen) = serve(Some(certs.server_config("srv", true)));
    let url = format!("https://{addr}/api/v1/write");

    // A bad CA file is refused up front.
    let mut s = rw_settings(&url);
    s.tls_config.ca_file = Some(Path::new("/nonexistent/ca.crt").to_path_buf());
    let e = s.check().unwrap_err();
    assert!(e.contains("ca_file"), "{e}");

    // CA + client certificate through a CONNECT proxy.
    let (proxy, lines) = proxy().await;
    let mut s = rw_settings(&url);
    s.tls_config.ca_file = Some(certs.path("ca.crt"));
    s.tls_config.cert_file = Some(certs.path("client.crt"));
    s.tls_config.key_file = Some(certs.path("client.key"));
    s.proxy_url = Some(format!("http://{proxy}"));
    s.check().unwrap();
    assert!(push_with(s, &seen).await, "samples did not arrive over TLS");
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("CONNECT {addr} HTTP/1.1")),
        "{lines:?}"
    );

    // server_name against a certificate for another name.
    let (other, seen2) = serve(Some(certs.server_config("other", false)));
    let mut s = rw_settings(&format!("https://{other}/api/v1/write"));
    s.tls_config.ca_file = Some(certs.path("ca.crt"));
    s.tls_config.server_name = Some("other.test".into());
    assert!(push_with(s, &seen2).await, "server_name not honoured");
}
