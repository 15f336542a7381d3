//! `stratus promqltest` runs scripts in Prometheus' test language and ends
//! with `N passed, N failed`.

use std::process::Command;

#[test]
fn promqltest_command_reports_passes_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.test");
    std::fs::write(
        &good,
        "load 1m\n    up{job=\"a\"} 0+1x10\n\neval instant at 5m up\n    up{job=\"a\"} 5\n\neval instant at 5m sum(up)\n    {} 5\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.test");
    std::fs::write(
        &bad,
        "load 1m\n    up{job=\"a\"} 0+1x10\n\neval instant at 5m up\n    up{job=\"a\"} 6\n",
    )
    .unwrap();
    let exe = env!("CARGO_BIN_EXE_stratus");
    let out = Command::new(exe)
        .arg("promqltest")
        .arg(&good)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some("2 passed, 0 failed"),
        "{stdout}"
    );
    let out = Command::new(exe)
        .arg("promqltest")
        .arg(&good)
        .arg(&bad)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("bad.test:4:"), "{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some("2 passed, 1 failed"),
        "{stdout}"
    );
}
