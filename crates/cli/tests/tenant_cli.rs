//! `stratus tenant …` and `stratus token …` against a real `stratus`
//! server process on 127.0.0.1 (token auth, the default).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

use stratus_testkit::loopback_port as free_port;

/// Runs `stratus ARGS` against the server; (success, stdout, stderr).
fn cli(url: &str, data: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args(args)
        .env("STRATUS_URL", url)
        .env("STRATUS_DATA_DIR", data)
        .env_remove("STRATUS_ADMIN_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[test]
fn tenant_and_token_commands_drive_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _srv = Server(
        Command::new(env!("CARGO_BIN_EXE_stratus"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Bounded wait until the server bootstrapped and answers.
    let t0 = Instant::now();
    loop {
        let (ok, _, _) = cli(&url, &data, &["tenant", "list"]);
        if ok {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, out, err) = cli(
        &url,
        &data,
        &[
            "tenant",
            "create",
            "team-a",
            "--max-series",
            "50",
            "--retention",
            "30d",
        ],
    );
    assert!(ok, "{err}");
    let v = json(&out);
    assert_eq!(v["id"], "team-a");
    assert_eq!(v["effective_limits"]["max_series"], 50);

    let (ok, out, err) = cli(&url, &data, &["token", "create", "team-a", "--name", "ci"]);
    assert!(ok, "{err}");
    assert!(err.contains("only once"), "{err}");
    let tok = json(&out);
    assert!(tok["token"].as_str().unwrap().starts_with("stratus_"));
    let tok_id = tok["id"].as_str().unwrap().to_string();

    let (ok, out, _) = cli(
        &url,
        &data,
        &["tenant", "limits", "team-a", "--ingestion-rate", "100"],
    );
    assert!(ok);
    let v = json(&out);
    assert_eq!(v["limits"]["ingestion_rate"], 100.0);
    assert_eq!(v["limits"]["max_series"], 50, "merged, not replaced");
    let (ok, out, _) = cli(&url, &data, &["tenant", "limits", "team-a"]);
    assert!(ok);
    assert_eq!(json(&out)["effective_limits"]["retention"], "30days");

    let (ok, out, _) = cli(&url, &data, &["token", "list", "team-a"]);
    assert!(ok);
    assert!(out.contains(&tok_id) && !out.contains(tok["token"].as_str().unwrap()));
    let (ok, _, err) = cli(&url, &data, &["token", "revoke", &tok_id]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&url, &data, &["token", "revoke", &tok_id]);
    assert!(!ok && err.contains("404"), "{err}");

    let (ok, out, _) = cli(&url, &data, &["tenant", "show", "team-a"]);
    assert!(ok);
    assert_eq!(json(&out)["tokens"], 0);
    let (ok, _, err) = cli(&url, &data, &["tenant", "delete", "team-a"]);
    assert!(ok, "{err}");
    let (ok, out, _) = cli(&url, &data, &["tenant", "list"]);
    assert!(ok);
    let ids: Vec<String> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["default"]);

    // A wrong admin token is refused with the server's reason.
    let out = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args([
            "tenant",
            "list",
            "--admin-token",
            "stratus_wrong",
            "--url",
            &url,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}
