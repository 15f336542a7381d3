//! Scrape tests: target labels, label merging, and real scrape loops
//! against fixture HTTP servers on 127.0.0.1 (and the Debian node
//! exporter), with an in-memory sink.

use super::*;
use crate::config::load_str;
use crate::sink::SinkError;
use std::io::Write;
use std::net::SocketAddr;
use stratus_model::is_stale_nan;

#[derive(Debug, Default)]
struct MemSink {
    batches: Mutex<Vec<Batch>>,
}

impl Sink for MemSink {
    fn append(&self, batch: Batch) -> Result<(), SinkError> {
        self.batches.lock().push(batch);
        Ok(())
    }
}

impl MemSink {
    /// Waits (bounded) until `pred` holds for the batches so far.
    async fn wait(&self, what: &str, pred: impl Fn(&[Batch]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            if pred(&self.batches.lock()) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn find<'b>(b: &'b Batch, name: &str) -> Vec<&'b SeriesSamples> {
    b.series
        .iter()
        .filter(|s| s.labels.metric_name() == Some(name))
        .collect()
}

fn value(b: &Batch, name: &str) -> Option<f64> {
    find(b, name).first().map(|s| s.samples[0].v)
}

#[derive(Clone)]
struct Fixture {
    body: Arc<Mutex<(String, &'static str, bool)>>,
}

impl Fixture {
    fn set(&self, body: &str, ct: &'static str, gzip: bool) {
        *self.body.lock() = (body.to_string(), ct, gzip);
    }
}

async fn serve(body: &str) -> (SocketAddr, Fixture) {
    let fx = Fixture {
        body: Arc::new(Mutex::new((
            body.to_string(),
            "text/plain; version=0.0.4",
            false,
        ))),
    };
    let f2 = fx.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let f = f2.clone();
            async move {
                let (body, ct, gz) = f.body.lock().clone();
                let mut r = axum::response::Response::builder().header("content-type", ct);
                let bytes = if gz {
                    r = r.header("content-encoding", "gzip");
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    e.write_all(body.as_bytes()).unwrap();
                    e.finish().unwrap()
                } else {
                    body.into_bytes()
                };
                r.body(axum::body::Body::from(bytes)).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, fx)
}

fn config(addr: SocketAddr, extra: &str) -> AgentConfig {
    load_str(&format!(
        "scrape_configs:\n  - job_name: fx\n    scrape_interval: 100ms\n    scrape_timeout: 90ms\n{extra}    static_configs:\n      - targets: ['{addr}']\n        labels: {{env: test}}\n"
    ))
    .unwrap()
}

#[test]
fn target_labels_like_prometheus() {
    let cfg = load_str(
        "scrape_configs:\n  - job_name: j\n    scrape_interval: 15s\n    params: {module: [a, b]}\n    relabel_configs:\n      - source_labels: [__meta_drop]\n        regex: 'yes'\n        action: drop\n      - source_labels: [__meta_team]\n        target_label: team\n      - source_labels: [__param_target]\n        target_label: __param_module\n        regex: '(.+)'\n",
    )
    .unwrap();
    let sc = &cfg.scrape_configs[0];
    let d = BTreeMap::from([
        ("__address__".to_string(), "example.org".to_string()),
        ("__meta_team".to_string(), "web".to_string()),
    ]);
    let t = populate_target(&d, sc).unwrap().unwrap();
    assert_eq!(t.url, "http://example.org:80/metrics?module=a&module=b");
    assert_eq!(
        t.public_labels(),
        Labels::from_pairs([
            ("instance", "example.org:80"),
            ("job", "j"),
            ("team", "web")
        ])
    );
    assert_eq!(t.labels.get("__scrape_interval__"), Some("15s"));
    assert_eq!(t.labels.get("__scrape_timeout__"), Some("10s"));
    assert!(t.labels.get("__meta_team").is_none(), "meta labels dropped");
    assert_eq!(t.discovered_labels.get("__meta_team"), Some("web"));
    // __param_* from relabeling overrides the first value.
    let d2 = BTreeMap::from([
        ("__address__".to_string(), "h:1".to_string()),
        ("__param_target".to_string(), "x y".to_string()),
    ]);
    let t2 = populate_target(&d2, sc).unwrap().unwrap();
    assert_eq!(t2.url, "http://h:1/metrics?module=x+y&module=b&target=x+y");
    // Dropped by relabeling.
    let d3 = BTreeMap::from([
        ("__address__".to_string(), "h:1".to_string()),
        ("__meta_drop".to_string(), "yes".to_string()),
    ]);
    assert!(populate_target(&d3, sc).unwrap().is_err());
    // IPv6 and https default ports; no address is an error.
    assert_eq!(add_default_port("::1", "https").unwrap(), "[::1]:443");
    assert_eq!(add_default_port("[::1]:9", "http").unwrap(), "[::1]:9");
    assert!(populate_target(&BTreeMap::new(), sc).is_err());
}

#[test]
fn honor_labels_and_exported_prefix() {
    let scraped = Labels::from_pairs([
        ("__name__", "m"),
        ("job", "inner"),
        ("instance", "i"),
        ("exported_job", "taken"),
    ]);
    let target = Labels::from_pairs([("job", "outer"), ("instance", "t:1")]);
    let l = mutate_sample_labels(&scraped, &target, false, &[]).unwrap();
    assert_eq!(l.get("job"), Some("outer"));
    assert_eq!(l.get("instance"), Some("t:1"));
    assert_eq!(l.get("exported_instance"), Some("i"));
    assert_eq!(l.get("exported_exported_job"), Some("inner"));
    assert_eq!(l.get("exported_job"), Some("taken"));
    let l = mutate_sample_labels(&scraped, &target, true, &[]).unwrap();
    assert_eq!(l.get("job"), Some("inner"));
    assert_eq!(l.get("instance"), Some("i"));
}

#[tokio::test]
async fn scrape_synthesizes_series_and_marks_staleness() {
    let (addr, fx) = serve("# TYPE a gauge\n# HELP a The a.\na 1\nb{x=\"1\"} 2\n").await;
    let sink = Arc::new(MemSink::default());
    let m = ScrapeManager::new(sink.clone());
    m.apply(&config(addr, "")).await;
    sink.wait("first scrape", |bs| {
        bs.iter().any(|b| value(b, "up") == Some(1.0))
    })
    .await;
    {
        let bs = sink.batches.lock();
        let b = bs.iter().find(|b| value(b, "up") == Some(1.0)).unwrap();
        let a = find(b, "a")[0];
        assert_eq!(a.labels.get("job"), Some("fx"));
        assert_eq!(a.labels.get("instance"), Some(addr.to_string().as_str()));
        assert_eq!(a.labels.get("env"), Some("test"));
        assert_eq!(a.samples[0].v, 1.0);
        assert_eq!(value(b, "scrape_samples_scraped"), Some(2.0));
        assert_eq!(value(b, "scrape_samples_post_metric_relabeling"), Some(2.0));
        assert!(value(b, "scrape_duration_seconds").unwrap() >= 0.0);
        assert!(b.metadata.iter().any(|md| md.family == "a"
            && md.kind == crate::sink::MetricType::Gauge
            && md.help == "The a."));
        let first_added = bs.iter().find_map(|b| value(b, "scrape_series_added"));
        assert_eq!(first_added, Some(2.0));
    }
    // b vanishes: exactly one stale marker for it, at the scrape time.
    fx.set("a 1\n", "text/plain", false);
    sink.wait("stale marker for b", |bs| {
        bs.iter()
            .any(|b| find(b, "b").iter().any(|s| is_stale_nan(s.samples[0].v)))
    })
    .await;
    {
        let bs = sink.batches.lock();
        let b = bs
            .iter()
            .find(|b| find(b, "b").iter().any(|s| is_stale_nan(s.samples[0].v)))
            .unwrap();
        assert_eq!(value(b, "a"), Some(1.0));
        let up_ts = find(b, "up")[0].samples[0].t;
        assert_eq!(find(b, "b")[0].samples[0].t, up_ts);
    }
    let snap = m.targets().await;
    assert_eq!(snap.active.len(), 1);
    assert_eq!(snap.active[0].status.health, Health::Up);
    // Target removal: every series of the target goes stale.
    let n = sink.batches.lock().len();
    m.apply(&load_str("").unwrap()).await;
    {
        let bs = sink.batches.lock();
        let last = bs.last().unwrap();
        assert!(bs.len() > n);
        for name in ["a", "up", "scrape_duration_seconds", "scrape_series_added"] {
            let s = find(last, name);
            assert_eq!(s.len(), 1, "{name}");
            assert!(is_stale_nan(s[0].samples[0].v), "{name}");
        }
    }
    assert!(m.targets().await.active.is_empty());
    m.shutdown().await;
}

#[tokio::test]
async fn failed_scrape_goes_down_and_stales_series() {
    let (addr, fx) = serve("a 1\n").await;
    let sink = Arc::new(MemSink::default());
    let m = ScrapeManager::new(sink.clone());
    m.apply(&config(addr, "")).await;
    sink.wait("up", |bs| bs.iter().any(|b| value(b, "up") == Some(1.0)))
        .await;
    fx.set("a{ 1\n", "text/plain", false);
    sink.wait("up=0 with a stale", |bs| {
        bs.iter().any(|b| {
            value(b, "up") == Some(0.0) && find(b, "a").iter().any(|s| is_stale_nan(s.samples[0].v))
        })
    })
    .await;
    let snap = m.targets().await;
    assert_eq!(snap.active[0].status.health, Health::Down);
    assert!(
        snap.active[0].status.last_error.contains("line 1"),
        "{:?}",
        snap.active[0].status
    );
    let json = crate::targets_api::targets_json(&snap, None);
    assert_eq!(json["data"]["activeTargets"][0]["health"], "down");
    m.shutdown().await;
}

#[tokio::test]
async fn limits_fail_the_scrape() {
    let body = "a{x=\"1\"} 1\na{x=\"2\"} 2\nlong{v=\"0123456789\"} 3\n";
    let cases = [
        ("    sample_limit: 2\n", "sample limit exceeded"),
        ("    label_limit: 1\n", "label_limit exceeded"),
        (
            "    label_value_length_limit: 5\n",
            "label_value_length_limit exceeded",
        ),
        (
            "    label_name_length_limit: 3\n",
            "label_name_length_limit exceeded",
        ),
        ("    body_size_limit: 10B\n", "body size limit exceeded"),
    ];
    for (extra, msg) in cases {
        let (addr, _fx) = serve(body).await;
        let sink = Arc::new(MemSink::default());
        let m = ScrapeManager::new(sink.clone());
        m.apply(&config(addr, extra)).await;
        sink.wait("a scrape", |bs| bs.iter().any(|b| value(b, "up").is_some()))
            .await;
        {
            let bs = sink.batches.lock();
            let b = bs.iter().find(|b| value(b, "up").is_some()).unwrap();
            assert_eq!(value(b, "up"), Some(0.0), "{extra}");
            assert!(find(b, "a").is_empty(), "{extra}: no samples on failure");
        }
        let snap = m.targets().await;
        assert!(
            snap.active[0].status.last_error.contains(msg),
            "{extra}: {}",
            snap.active[0].status.last_error
        );
        m.shutdown().await;
    }
}

#[tokio::test]
async fn openmetrics_gzip_honor_timestamps_and_metric_relabeling() {
    let (addr, fx) = serve("").await;
    fx.set(
        "# TYPE c counter\nc_total{job=\"inner\"} 5 1700000000.5\nc_created 1\ngo_x 1\n# EOF\n",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        true,
    );
    let sink = Arc::new(MemSink::default());
    let m = ScrapeManager::new(sink.clone());
    let extra = "    metric_relabel_configs:\n      - source_labels: [__name__]\n        regex: 'go_.*'\n        action: drop\n";
    m.apply(&config(addr, extra)).await;
    sink.wait("up", |bs| bs.iter().any(|b| value(b, "up") == Some(1.0)))
        .await;
    {
        let bs = sink.batches.lock();
        let b = bs.iter().find(|b| value(b, "up") == Some(1.0)).unwrap();
        let c = find(b, "c_total")[0];
        assert_eq!(c.samples[0].t, 1_700_000_000_500);
        assert_eq!(c.labels.get("job"), Some("fx"));
        assert_eq!(c.labels.get("exported_job"), Some("inner"));
        assert!(find(b, "go_x").is_empty());
        assert_eq!(value(b, "scrape_samples_scraped"), Some(3.0));
        assert_eq!(value(b, "scrape_samples_post_metric_relabeling"), Some(2.0));
    }
    m.shutdown().await;
}

#[tokio::test]
async fn reload_keeps_unchanged_targets_and_stales_removed_ones() {
    let (a1, _f1) = serve("m 1\n").await;
    let (a2, _f2) = serve("m 2\n").await;
    let sink = Arc::new(MemSink::default());
    let m = ScrapeManager::new(sink.clone());
    let two = |job2: &str| {
        load_str(&format!(
            "scrape_configs:\n  - job_name: one\n    scrape_interval: 100ms\n    scrape_timeout: 90ms\n    static_configs: [{{targets: ['{a1}']}}]\n{job2}"
        ))
        .unwrap()
    };
    let job2 = format!(
        "  - job_name: two\n    scrape_interval: 100ms\n    scrape_timeout: 90ms\n    static_configs: [{{targets: ['{a2}']}}]\n"
    );
    m.apply(&two(&job2)).await;
    sink.wait("both jobs", |bs| {
        let jobs: HashSet<_> = bs
            .iter()
            .flat_map(|b| find(b, "m"))
            .filter_map(|s| s.labels.get("job").map(str::to_string))
            .collect();
        jobs.len() == 2
    })
    .await;
    let before = m.targets().await;
    let one_scrape = before.active[0].status.last_scrape;
    // Remove job two; job one's loop must keep running (its status kept).
    m.apply(&two("")).await;
    let after = m.targets().await;
    assert_eq!(after.active.len(), 1);
    assert!(after.active[0].status.last_scrape >= one_scrape);
    assert!(
        after.active[0].status.last_scrape.is_some(),
        "loop not restarted"
    );
    let stale_two = sink
        .batches
        .lock()
        .iter()
        .flat_map(|b| find(b, "m"))
        .any(|s| s.labels.get("job") == Some("two") && is_stale_nan(s.samples[0].v));
    assert!(stale_two, "removed job's series go stale");
    m.shutdown().await;
}

/// Scrapes the real Debian node exporter (`prometheus-node-exporter`).
#[tokio::test]
async fn scrapes_node_exporter() {
    let bin = "/usr/bin/prometheus-node-exporter";
    if !std::path::Path::new(bin).exists() {
        panic!(
            "{bin} missing: install the Debian package prometheus-node-exporter (scripts/apt-packages.txt)"
        );
    }
    let port = stratus_testkit::loopback_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = tokio::process::Command::new(bin)
        .arg(format!("--web.listen-address={addr}"))
        .arg("--collector.disable-defaults")
        .arg("--collector.cpu")
        .arg("--collector.meminfo")
        .arg("--collector.loadavg")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Wait for it to listen.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        assert!(Instant::now() < deadline, "node exporter did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sink = Arc::new(MemSink::default());
    let m = ScrapeManager::new(sink.clone());
    let cfg = load_str(&format!(
        "scrape_configs:\n  - job_name: node\n    scrape_interval: 500ms\n    scrape_timeout: 400ms\n    static_configs: [{{targets: ['{addr}']}}]\n"
    ))
    .unwrap();
    m.apply(&cfg).await;
    sink.wait("node scrape", |bs| {
        bs.iter().any(|b| value(b, "up").is_some())
    })
    .await;
    {
        let bs = sink.batches.lock();
        let b = bs.iter().find(|b| value(b, "up").is_some()).unwrap();
        assert_eq!(value(b, "up"), Some(1.0), "{:?}", m_err(b));
        let node: Vec<_> = b
            .series
            .iter()
            .filter(|s| {
                s.labels
                    .metric_name()
                    .is_some_and(|n| n.starts_with("node_"))
            })
            .collect();
        assert!(node.len() > 10, "node_ series arrive: {}", node.len());
        for s in node {
            assert_eq!(s.labels.get("job"), Some("node"));
            assert_eq!(s.labels.get("instance"), Some(addr.as_str()));
        }
        assert!(b.metadata.iter().any(|md| md.family.starts_with("node_")));
    }
    m.shutdown().await;
    let _ = child.kill().await;
}

fn m_err(b: &Batch) -> Vec<String> {
    b.series
        .iter()
        .take(3)
        .map(|s| s.labels.to_string())
        .collect()
}

#[tokio::test]
async fn http_sd_targets_are_scraped() {
    let (metrics, _fx) = serve("m 1\n").await;
    let sd_body = format!(r#"[{{"targets": ["{metrics}"], "labels": {{"team": "sd"}}}}]"#);
    let app = axum::Router::new().route(
        "/sd",
        axum::routing::get(move || {
            let b = sd_body.clone();
            async move { ([("content-type", "application/json")], b) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sd_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let cfg = load_str(&format!(
        "scrape_configs:\n  - job_name: sd\n    scrape_interval: 100ms\n    scrape_timeout: 90ms\n    http_sd_configs: [{{url: 'http://{sd_addr}/sd'}}]\n    relabel_configs:\n      - source_labels: [__meta_url]\n        target_label: sd_url\n"
    ))
    .unwrap();
    let sink = Arc::new(MemSink::default());
    let m = ScrapeManager::new(sink.clone());
    m.apply(&cfg).await;
    sink.wait("m from an HTTP-discovered target", |bs| {
        bs.iter().flat_map(|b| find(b, "m")).any(|s| {
            s.labels.get("team") == Some("sd")
                && s.labels.get("sd_url") == Some(format!("http://{sd_addr}/sd").as_str())
                && s.labels.get("__meta_url").is_none()
        })
    })
    .await;
    m.shutdown().await;
}
