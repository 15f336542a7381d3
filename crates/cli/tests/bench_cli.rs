//! `stratus bench` against a real `stratus` server: a small pre-generated
//! backfill and a short query load, as `bench/compare.sh` runs them. A
//! smoke test of the tool (issue 5 allows no timing assertions here).

use std::process::Command;

mod common;
use common::spawn_stratus;

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run stratus bench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stratus bench {args:?} failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn pregenerated_backfill_then_per_query_latencies() {
    let dir = tempfile::tempdir().unwrap();
    let srv = spawn_stratus(dir.path(), &["--auth=none"]);
    let end = (common::now_ms() / 1000 / 60 * 60).to_string();
    let url = format!("{}/api/v1/push", srv.base);
    let w = bench(&[
        "write",
        "--url",
        &url,
        "--series",
        "300",
        "--metrics",
        "10",
        "--batch-series",
        "100",
        "--backfill",
        "10m",
        "--end",
        &end,
        "--ticks-per-request",
        "2",
        "--pregenerate",
        "64",
        "--json",
    ]);
    // 40 ticks of 300 series, all accepted.
    assert_eq!(w["samples"], 300 * 40, "{w}");
    assert_eq!(w["errors"], serde_json::json!({}), "{w}");

    // A budget too small for the run is refused before anything is sent.
    let out = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args([
            "bench",
            "write",
            "--url",
            &url,
            "--series",
            "300",
            "--backfill",
            "10m",
        ])
        .args(["--end", &end, "--pregenerate", "0", "--json"])
        .output()
        .expect("run stratus bench");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pre-generated requests would exceed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let q = bench(&[
        "query",
        "--url",
        &srv.base,
        "--end",
        &end,
        "--range",
        "10m",
        "--step",
        "60s",
        "--duration",
        "1s",
        "--concurrency",
        "1",
        "--json",
    ]);
    assert_eq!(q["errors"], serde_json::json!({}), "{q}");
    let per = q["queries"].as_array().expect("per-query reports");
    assert_eq!(per.len(), 6, "{q}");
    for r in per {
        assert!(r["query"].as_str().is_some_and(|s| !s.is_empty()), "{r}");
        assert!(r["ok"].as_u64().is_some_and(|n| n > 0), "{r}");
        assert!(r["p50_ms"].as_f64().is_some_and(|v| v > 0.0), "{r}");
    }
}
