//! `stratus agent` end to end: a fixture target scraped by the agent
//! process, remote-written to a Stratus server process, queried back; the
//! agent's targets API; `exampleconfig` and `install`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Proc, http_client, spawn_stratus};

const FIXTURE: &str = "# HELP fixture_requests_total Requests.\n\
# TYPE fixture_requests_total counter\n\
fixture_requests_total{code=\"200\"} 42\n\
fixture_requests_total{code=\"500\"} 3\n\
# TYPE fixture_temperature gauge\n\
fixture_temperature 21.5\n";

/// A fixture target on 127.0.0.1 serving [`FIXTURE`] on /metrics.
async fn fixture() -> String {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4",
                )],
                FIXTURE,
            )
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    addr
}

/// Starts `stratus agent` and waits for its `listen=` log line.
fn spawn_agent(config: &std::path::Path, data: &std::path::Path) -> Proc {
    common::spawn_listening(&[
        "agent".into(),
        format!("--config.file={}", config.display()),
        format!("--data-dir={}", data.display()),
        "--listen=127.0.0.1:0".into(),
    ])
}

async fn query(c: &reqwest::Client, base: &str, q: &str) -> serde_json::Value {
    c.get(format!("{base}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap()
}

fn first_value(v: &serde_json::Value) -> Option<String> {
    v["data"]["result"][0]["value"][1]
        .as_str()
        .map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_scrapes_and_pushes_to_stratus() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_stratus(&dir.path().join("server"), &["--auth=none"]);
    let target = fixture().await;
    let config = dir.path().join("agent.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  external_labels:\n    agent: test\n\
             scrape_configs:\n  - job_name: fixture\n    static_configs:\n      - targets: [\"{target}\"]\n\
             remote_write:\n  - url: {}/api/v1/push\n    queue_config:\n      batch_send_deadline: 200ms\n",
            server.base
        ),
    )
    .unwrap();
    let agent = spawn_agent(&config, &dir.path().join("agent-data"));
    let c = http_client();

    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut up, mut reqs) = (None, None);
    while Instant::now() < deadline {
        up = first_value(&query(&c, &server.base, "up{job=\"fixture\",agent=\"test\"}").await);
        reqs = first_value(
            &query(
                &c,
                &server.base,
                "fixture_requests_total{job=\"fixture\",code=\"200\"}",
            )
            .await,
        );
        if up.is_some() && reqs.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(up.as_deref(), Some("1"), "up not queryable in time");
    assert_eq!(reqs.as_deref(), Some("42"));

    let t = c
        .get(format!("{}/api/v1/targets?state=active", agent.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let t: serde_json::Value = serde_json::from_str(&t).unwrap();
    let active = &t["data"]["activeTargets"];
    assert_eq!(active[0]["scrapePool"], "fixture", "{t}");
    assert_eq!(active[0]["health"], "up", "{t}");

    let html = c
        .get(format!("{}/targets", agent.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains(&target), "{html}");
    let m = c
        .get(format!("{}/metrics", agent.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("stratus_agent_"), "{m}");

    // A broken file is refused and the running config kept.
    std::fs::write(&config, "scrape_configs:\n  - job_name: [\n").unwrap();
    let r = c
        .post(format!("{}/-/reload", agent.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let health = c
        .get(format!("{}/-/healthy", agent.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[test]
fn exampleconfig_parses_and_install_writes_a_unit() {
    let out = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args(["agent", "exampleconfig"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let cfg = stratus_agent::config::load_str(&text).expect("example config parses");
    assert!(!cfg.remote_write.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args([
            "agent",
            "install",
            "--config.file",
            "/etc/stratus/agent.yml",
        ])
        .arg(format!("--unit-dir={}", dir.path().display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("systemctl daemon-reload"), "{stdout}");
    assert!(stdout.contains("systemctl enable --now stratus-agent"));
    let unit = std::fs::read_to_string(dir.path().join("stratus-agent.service")).unwrap();
    assert!(
        unit.contains("--config.file=/etc/stratus/agent.yml"),
        "{unit}"
    );
    assert!(unit.contains("Restart=always"));
    assert!(unit.contains("User=stratus"));
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    assert!(exec.starts_with('/'), "{exec}");
}
