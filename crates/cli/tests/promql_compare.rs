//! Stratus against a real Prometheus 2.42 on the same pushed dataset: runs
//! `scripts/promql-compare` (the peers' 404 queries, instant and range, at
//! evaluation times off the sample grid) with this build's binary.
//!
//! Every failing query must be listed in `promql_compare_known.txt` with
//! its reason, and every listed query must still fail (so the list only
//! shrinks). Needs the peers harness in `shared/peers` beside the
//! workspace (`PEERS=<dir>` overrides) and the Debian `prometheus`,
//! `python3` and `curl` (scripts/test installs them).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The known differences: query → reason.
fn known() -> BTreeMap<String, String> {
    let text =
        std::fs::read_to_string(repo().join("crates/cli/tests/promql_compare_known.txt")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (q, why) = l.split_once('\t').unwrap_or((l, ""));
            (q.trim().to_string(), why.trim().to_string())
        })
        .collect()
}

#[test]
fn same_answers_as_prometheus() {
    let peers = std::env::var_os("PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/peers"));
    assert!(
        peers.join("promql_compare.py").is_file(),
        "the peers harness is not at {} (it lives in shared/peers beside the workspace; set PEERS=<dir>)",
        peers.display()
    );
    let out = Command::new("bash")
        .arg(repo().join("scripts/promql-compare"))
        .arg(env!("CARGO_BIN_EXE_stratus"))
        .env("PEERS", &peers)
        .output()
        .expect("run scripts/promql-compare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "promql-compare failed:\n{stdout}\n{stderr}"
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.ends_with(" failed"),
        "no summary line:\n{stdout}\n{stderr}"
    );
    eprintln!("promql-compare vs Prometheus 2.42: {summary}");

    let failing: BTreeMap<String, String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("FAIL "))
        .map(|l| {
            let (q, why) = l.split_once("  ::  ").unwrap_or((l, ""));
            (q.to_string(), why.to_string())
        })
        .collect();
    let known = known();
    let new: Vec<String> = failing
        .iter()
        .filter(|(q, _)| !known.contains_key(*q))
        .map(|(q, why)| format!("{q}  ::  {why}"))
        .collect();
    let fixed: Vec<&String> = known.keys().filter(|q| !failing.contains_key(*q)).collect();
    assert!(
        new.is_empty() && fixed.is_empty(),
        "{summary}\nnew differences from Prometheus:\n{}\nlisted in promql_compare_known.txt but now passing (remove them):\n{}",
        new.join("\n"),
        fixed
            .iter()
            .map(|q| q.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
