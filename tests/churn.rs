//! No ticket churn when code merely moves: real scanners on two consecutive
//! releases of tornado (6.4.2 -> 6.5, see tests/fixtures/churn/README.md),
//! where 138 of bandit's 255 surviving findings moved to other lines. The
//! second scan must open exactly the findings that are new and resolve
//! exactly the ones that went away (`expected.json`), nothing else.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/churn")
}

pub fn expected(key: &str) -> (u64, u64, u64) {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let n = |k: &str| v[key][k].as_u64().unwrap();
    (n("only_new"), n("only_old"), n("new_total"))
}

/// Unpacks a release's source files (the files with findings).
pub fn unpack(version: &str, into: &Path) -> PathBuf {
    let dir = into.join(version);
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new("tar")
        .arg("xzf")
        .arg(fixtures().join(format!("src-{version}.tar.gz")))
        .arg("-C")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

/// Processes the old then the new report with one state file; returns the
/// second run's finding events.
fn two_releases(tool_file: &str, ext: &str, source: Option<&Path>) -> Vec<Value> {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.json");
    let mut second = Vec::new();
    for (i, version) in ["6.4.2", "6.5"].into_iter().enumerate() {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_custody"));
        cmd.args([
            "process",
            "--emit",
            "findings",
            "--target",
            "repo:github.com/tornadoweb/tornado",
        ])
        .arg("--state")
        .arg(&state)
        .args([
            "--at",
            if i == 0 {
                "2026-01-01T00:00:00Z"
            } else {
                "2026-01-02T00:00:00Z"
            },
        ]);
        if let Some(root) = source {
            cmd.arg("--source").arg(unpack(version, root));
        }
        let out = cmd
            .arg(fixtures().join(format!("{tool_file}-{version}.{ext}")))
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if i == 1 {
            second = String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        }
    }
    second
}

fn count(events: &[Value], kind: &str) -> u64 {
    events.iter().filter(|e| e["event"] == kind).count() as u64
}

fn assert_exact(key: &str, events: &[Value]) {
    let (only_new, only_old, _) = expected(key);
    assert_eq!(count(events, "opened"), only_new, "{key}: opened");
    assert_eq!(count(events, "resolved"), only_old, "{key}: resolved");
    assert_eq!(count(events, "reopened"), 0, "{key}: reopened");
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(events.len() as u64, only_new + only_old, "{key}: {kinds:?}");
}

#[test]
fn bandit_sarif_moves_without_churn() {
    assert_exact("bandit_sarif", &two_releases("bandit", "sarif", None));
}

#[test]
fn bandit_sarif_with_source_lines_moves_without_churn() {
    let tmp = tempfile::tempdir().unwrap();
    assert_exact(
        "bandit_sarif",
        &two_releases("bandit", "sarif", Some(tmp.path())),
    );
}

#[test]
fn ruff_sarif_with_source_lines_moves_without_churn() {
    // Ruff's SARIF has no snippets: the lines come from the checkout.
    let tmp = tempfile::tempdir().unwrap();
    assert_exact(
        "ruff_sarif",
        &two_releases("ruff", "sarif", Some(tmp.path())),
    );
}

#[test]
fn ruff_sarif_without_source_never_churns_more_than_the_real_change() {
    // Without line content the fingerprint falls back to the message and
    // the order of identical messages in a file: moves still do not churn,
    // though a rewritten line with an unchanged message is not noticed.
    let events = two_releases("ruff", "sarif", None);
    let (only_new, only_old, _) = expected("ruff_sarif");
    assert!(
        count(&events, "opened") <= only_new,
        "{}",
        count(&events, "opened")
    );
    assert!(
        count(&events, "resolved") <= only_old,
        "{}",
        count(&events, "resolved")
    );
    assert_eq!(
        count(&events, "opened") + 3,
        count(&events, "resolved"),
        "250 -> 247 findings"
    );
}
