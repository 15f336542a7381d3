//! Runs every upstream `promqltest` script in `shared/testdata/promqltest`
//! and compares the failing evals with `known_failures.txt`: an unlisted
//! failure or a listed eval that now passes fails the test. Set
//! `PROMQL_WRITE_KNOWN_FAILURES=1` to rewrite the list from the current state;
//! `PROMQL_TESTDATA=<dir>` overrides the script directory.

use std::collections::BTreeMap;
use std::path::PathBuf;

fn testdata() -> PathBuf {
    if let Some(d) = std::env::var_os("PROMQL_TESTDATA") {
        return PathBuf::from(d);
    }
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/promqltest"
    ))
}

fn known_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/known_failures.txt"
    ))
}

#[test]
fn upstream_promqltest_files() {
    let dir = testdata();
    assert!(
        dir.is_dir(),
        "PromQL test data not found at {}: the upstream scripts live in shared/testdata/promqltest beside the workspace",
        dir.display()
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "test"))
        .collect();
    files.sort();
    // "file:line" -> reason
    let mut failures: BTreeMap<String, String> = BTreeMap::new();
    let (mut tp, mut tf) = (0, 0);
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let r = stratus_promql::promqltest::run_file(f);
        // Worded so CI does not mistake it for a test-runner summary line.
        println!(
            "promqltest {name}: evals ok {}, evals failing {}",
            r.passed,
            r.failed.len()
        );
        tp += r.passed;
        tf += r.failed.len();
        for (line, _expr, reason) in r.failed {
            let reason: String = reason
                .replace('\n', " ")
                .chars()
                .take(
                    std::env::var("PROMQL_REASON_LEN")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(300),
                )
                .collect();
            failures.insert(format!("{name}:{line}"), reason);
        }
    }
    println!("promqltest total: evals ok {tp}, evals failing {tf}");
    if std::env::var_os("PROMQL_WRITE_KNOWN_FAILURES").is_some() {
        let mut s = String::from(
            "# Upstream promqltest evals known to fail (file:line reason).\n# Regenerate: PROMQL_WRITE_KNOWN_FAILURES=1 cargo test -p stratus-promql --test upstream\n",
        );
        for (k, v) in &failures {
            s.push_str(&format!("{k} {v}\n"));
        }
        std::fs::write(known_path(), s).unwrap();
        return;
    }
    let known_text = std::fs::read_to_string(known_path()).unwrap_or_default();
    let known: BTreeMap<String, String> = known_text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| match l.split_once(' ') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect();
    let mut problems = Vec::new();
    for (k, v) in &failures {
        if !known.contains_key(k) {
            problems.push(format!("new failure {k}: {v}"));
        }
    }
    for k in known.keys() {
        if !failures.contains_key(k) {
            problems.push(format!("now passes (remove from known_failures.txt): {k}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
