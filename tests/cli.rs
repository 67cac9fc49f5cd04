//! `custody process` as a user runs it: the real binary, real files.

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn custody() -> Command {
    Command::new(env!("CARGO_BIN_EXE_custody"))
}

/// A real report in the repository: bandit 1.8's SARIF over paramiko 4.0.0
/// (25 results; see `fixtures/bandit/README.md`). It names no target.
fn bandit_sarif() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bandit/bandit-paramiko-4.0.0.sarif")
}

/// Findings in [`bandit_sarif`].
const BANDIT_FINDINGS: usize = 25;

fn process(args: &[&str], files: &[&Path]) -> Output {
    let mut cmd = custody();
    cmd.arg("process").args(args).args(files);
    cmd.output().expect("run custody")
}

/// The stdout of a run that must have succeeded (its output in the
/// failure otherwise).
pub fn succeeded(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn events(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .expect("utf-8 stdout")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const AT: [&str; 2] = ["--at", "2026-06-01T00:00:00Z"];

#[test]
fn events_carry_the_documented_fields() {
    let out = process(
        &["--target", "repo:github.com/acme/app", AT[0], AT[1]],
        &[&bandit_sarif()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let evs = events(&out);
    let findings: Vec<&Value> = evs.iter().filter(|e| e["kind"] == "finding").collect();
    let tickets: Vec<&Value> = evs.iter().filter(|e| e["kind"] == "ticket").collect();
    assert_eq!(findings.len(), BANDIT_FINDINGS);
    assert!(!tickets.is_empty());
    for e in &evs {
        for key in ["kind", "event", "event_id", "severity", "target", "team"] {
            assert!(e.get(key).is_some(), "{key} missing in {e}");
        }
        assert!(e["team"].is_null());
        assert_eq!(e["target"], "repo:github.com/acme/app");
    }
    assert!(findings
        .iter()
        .all(|e| e["event"] == "opened" && e["fingerprint"].as_str().unwrap().starts_with("v1:")));
    assert!(tickets
        .iter()
        .all(|e| e["ticket_key"].is_string() && e["fingerprints"].is_array()));
    let members: usize = tickets
        .iter()
        .map(|t| t["fingerprints"].as_array().unwrap().len())
        .sum();
    assert_eq!(
        members, BANDIT_FINDINGS,
        "every finding is in exactly one ticket"
    );
    let err = stderr(&out);
    assert!(
        err.contains("(unattributed)") && err.contains(&BANDIT_FINDINGS.to_string()),
        "{err}"
    );
}

#[test]
fn state_file_makes_runs_successive_scans() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let st = state.to_str().unwrap();
    let args = [
        "--target",
        "repo:github.com/acme/app",
        "--state",
        st,
        AT[0],
        AT[1],
    ];
    let report = bandit_sarif();
    let first = process(&args, &[&report]);
    assert_eq!(first.status.code(), Some(0));
    assert_eq!(
        events(&first).len(),
        BANDIT_FINDINGS
            + events(&first)
                .iter()
                .filter(|e| e["kind"] == "ticket")
                .count()
    );
    // The same scan again: no events at all.
    let second = process(&args, &[&report]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(
        events(&second).is_empty(),
        "{}",
        String::from_utf8_lossy(&second.stdout)
    );
    // A complete Bandit scan with no results resolves every finding.
    let empty = dir.path().join("empty.sarif");
    std::fs::write(
        &empty,
        r#"{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"Bandit"}},"results":[]}]}"#,
    )
    .unwrap();
    let third = process(&args, &[&empty]);
    let evs = events(&third);
    assert_eq!(
        evs.iter()
            .filter(|e| e["kind"] == "finding" && e["event"] == "resolved")
            .count(),
        BANDIT_FINDINGS
    );
    assert!(evs
        .iter()
        .filter(|e| e["kind"] == "ticket")
        .all(|e| e["event"] == "resolved"));
    // No temporary file is left beside the state.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn rejected_inputs_are_named_and_the_rest_processed() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    // 10,000-deep nesting where the decoder reads a value.
    let mut deep = br#"{"runs":[{"tool":{"driver":{"name":"x"}},"results":[{"ruleId":"r","properties":{"severity":"#.to_vec();
    deep.extend(std::iter::repeat_n(b'[', 10_000));
    deep.extend(std::iter::repeat_n(b']', 10_000));
    deep.extend(b"}}]}]}");
    let bad: Vec<(PathBuf, &str)> = vec![
        (write("text.txt", b"this is not json"), "expected a JSON object"),
        (write("shape.sarif", br#"{"runs": {"tool": 1}}"#), "wrong shape"),
        (write("truncated.sarif", br#"{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"x"}},"results":[{"ruleId":"#), "not valid JSON"),
        (write("latin1.sarif", b"{\"runs\":[{\"tool\":{\"driver\":{\"name\":\"caf\xe9\"}}}]}"), "not valid JSON"),
        (write("deep.sarif", &deep), "recursion limit exceeded"),
        (write("unknown.json", br#"{"hello": "world"}"#), "unknown report format"),
        (dir.path().join("missing.sarif"), "cannot read"),
    ];
    let good = bandit_sarif();
    let mut files: Vec<&Path> = bad.iter().map(|(p, _)| p.as_path()).collect();
    files.insert(3, &good);
    let out = process(
        &["--target", "repo:github.com/acme/app", AT[0], AT[1]],
        &files,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for (path, why) in &bad {
        let name = path.file_name().unwrap().to_str().unwrap();
        let line = err
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} not named in: {err}"));
        assert!(
            line.contains("rejected") && line.contains(why),
            "{name}: {line}"
        );
    }
    assert_eq!(
        events(&out)
            .iter()
            .filter(|e| e["kind"] == "finding")
            .count(),
        BANDIT_FINDINGS
    );
}

#[test]
fn oversized_and_endless_input_is_refused_with_bounded_reads() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("custody.toml");
    std::fs::write(&cfg, "[limits]\nmax_report_bytes = 1048576\n").unwrap();
    let big = dir.path().join("big.sarif");
    let mut f = std::fs::File::create(&big).unwrap();
    f.write_all(b"{\"runs\":[], \"pad\": \"").unwrap();
    f.write_all(&vec![b'x'; 2 << 20]).unwrap();
    f.write_all(b"\"}").unwrap();
    let out = process(
        &["--config", cfg.to_str().unwrap(), "--target", "repo:a/b/c"],
        &[&big],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("exceeds the limit of 1048576 bytes"),
        "{}",
        stderr(&out)
    );

    // Standard input that never ends: custody stops reading at the limit.
    let mut child = custody()
        .args([
            "process",
            "--config",
            cfg.to_str().unwrap(),
            "--target",
            "repo:a/b/c",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b' '; 1 << 16];
        // Write up to 64 MiB; custody closes the pipe long before.
        for _ in 0..1024 {
            if stdin.write_all(&chunk).is_err() {
                return true;
            }
        }
        false
    });
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("exceeds the limit"),
        "{}",
        stderr(&out)
    );
    assert!(
        writer.join().unwrap(),
        "custody read all 64 MiB instead of stopping"
    );
}

#[test]
fn usage_and_configuration_errors_exit_2() {
    let report = bandit_sarif();
    let dir = tempfile::tempdir().unwrap();
    let bad_cfg = dir.path().join("bad.toml");
    std::fs::write(&bad_cfg, "[sla]\ncritical = \"soon\"\n").unwrap();
    let corrupt_state = dir.path().join("state.json");
    std::fs::write(&corrupt_state, "{not json").unwrap();
    let table: &[(&[&str], &str)] = &[
        (&["--target", "github.com/x/y"], "--target"),
        (&["--target", "repo:a/b/c", "--at", "yesterday"], "--at"),
        (&["--target", "repo:a/b/c", "--format", "xml"], "--format"),
        (
            &[
                "--target",
                "repo:a/b/c",
                "--config",
                bad_cfg.to_str().unwrap(),
            ],
            "line 2",
        ),
        (
            &[
                "--target",
                "repo:a/b/c",
                "--state",
                corrupt_state.to_str().unwrap(),
            ],
            "not a custody state file",
        ),
        (
            &["--target", "repo:a/b/c", "--emit", "everything"],
            "everything",
        ),
    ];
    for (args, want) in table {
        let out = process(args, &[&report]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // The corrupt state was not overwritten.
    assert_eq!(
        std::fs::read_to_string(&corrupt_state).unwrap(),
        "{not json"
    );
}

#[test]
fn stdin_emit_filter_and_report_target() {
    // A report that names no target needs --target.
    let report = bandit_sarif();
    let out = process(&[], &[&report]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("pass --target"), "{}", stderr(&out));

    let mut child = custody()
        .args([
            "process",
            "--emit",
            "tickets",
            "--target",
            "repo:github.com/acme/app",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(&report).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let evs = events(&out);
    assert!(!evs.is_empty() && evs.iter().all(|e| e["kind"] == "ticket"));
}

#[test]
fn decisions_file_accepts_risk() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.json");
    let st = state.to_str().unwrap();
    let report = bandit_sarif();
    let first = process(
        &[
            "--target",
            "repo:github.com/acme/app",
            "--state",
            st,
            AT[0],
            AT[1],
        ],
        &[&report],
    );
    let fp = events(&first)[0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let decisions = dir.path().join("decisions.jsonl");
    std::fs::write(
        &decisions,
        format!(
            "{{\"target\":\"repo:github.com/acme/app\",\"fingerprint\":\"{fp}\",\"decision\":\"accept_risk\",\"expires_at\":\"2026-09-01T00:00:00Z\",\"reason\":\"WAF rule\",\"author\":\"sec@acme.example\",\"decided_at\":\"2026-06-01T00:00:00Z\"}}\n\
             {{\"target\":\"repo:github.com/acme/app\",\"fingerprint\":\"{fp}\",\"decision\":\"accept_risk\",\"reason\":\"forever\",\"author\":\"x\",\"decided_at\":\"2026-06-01T00:00:00Z\"}}\n"
        ),
    )
    .unwrap();
    let out = process(
        &[
            "--target",
            "repo:github.com/acme/app",
            "--state",
            st,
            "--decisions",
            decisions.to_str().unwrap(),
            "--at",
            "2026-06-02T00:00:00Z",
        ],
        &[&report],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "the second decision has no expiry"
    );
    assert!(
        stderr(&out).contains("decisions.jsonl:2") && stderr(&out).contains("must expire"),
        "{}",
        stderr(&out)
    );
    let evs = events(&out);
    let accepted: Vec<_> = evs.iter().filter(|e| e["event"] == "accepted").collect();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0]["fingerprint"], fp.as_str());
    // After the expiry the finding is open again.
    let out = process(
        &[
            "--target",
            "repo:github.com/acme/app",
            "--state",
            st,
            "--at",
            "2026-09-02T00:00:00Z",
        ],
        &[&report],
    );
    assert!(events(&out)
        .iter()
        .any(|e| e["event"] == "acceptance_expired" && e["fingerprint"] == fp.as_str()));
}

#[test]
fn demo_runs_the_pipeline_and_prints_the_team_table() {
    let stdout = succeeded(&custody().arg("demo").output().unwrap());
    for team in ["appsec", "networking", "qa", "web-platform", "total"] {
        assert!(stdout.lines().any(|l| l.starts_with(team)), "{stdout}");
    }
    // The real change between the tornado releases shows as resolved
    // findings, and the poison message was dead-lettered.
    assert!(stdout.contains("dead-lettered messages: 1"), "{stdout}");
    let total = stdout.lines().find(|l| l.starts_with("total")).unwrap();
    let cols: Vec<&str> = total.split_whitespace().collect();
    let n = |i: usize| cols[i].parse::<u32>().unwrap();
    assert!(n(9) > 0, "resolved: {total}");
    // 6.5 brought findings 6.4.2 did not have: introduced, the rest
    // inherited from the first scans.
    assert!(n(7) > 0, "introduced: {total}");
    assert_eq!(n(7) + n(8), n(6), "introduced + inherited = open: {total}");
}

#[test]
fn publish_ownership_publishes_a_valid_configuration_and_refuses_a_broken_one() {
    use rdkafka::mocking::MockCluster;
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("custody.ownership", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let stdout = succeeded(
        &custody()
            .args(["publish-ownership", "--brokers", &brokers])
            .arg("tests/fixtures/ownership")
            .output()
            .unwrap(),
    );
    assert!(
        stdout.contains(
            "published to custody.ownership: owners.toml, tornado.CODEOWNERS, catalog-info.yaml"
        ),
        "{stdout}"
    );
    // The topic holds the three files and the manifest.
    let msgs = custody::kafka::mock::read_all(&brokers, "custody.ownership").unwrap();
    assert_eq!(msgs.len(), 4);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("owners.toml"), "fallback = 3\n").unwrap();
    let out = custody()
        .args(["publish-ownership", "--brokers", &brokers])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing was published"), "{stderr}");
    assert!(stderr.contains("owners.toml"), "{stderr}");
    assert_eq!(
        custody::kafka::mock::read_all(&brokers, "custody.ownership")
            .unwrap()
            .len(),
        4
    );

    // (Creating a missing topic needs a broker that creates topics: the
    // mock does not; tests/broker.rs runs it against Apache Kafka.)
    // No broker: a Kafka failure, exit 2, within the timeout.
    let out = custody()
        .args(["publish-ownership", "--brokers", "127.0.0.1:1"])
        .args(["--timeout-secs", "2"])
        .arg("tests/fixtures/ownership")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("custody.ownership"), "{stderr}");
}

/// `custody run`'s logs: text lines by default, one JSON object a line
/// with `--log-format json` (for Kubernetes), filtered by `RUST_LOG`.
#[test]
fn service_logs_are_text_or_json_lines_and_filtered() {
    let dir = tempfile::tempdir().unwrap();
    // A configuration the start refuses at once, logging why.
    let cfg = dir.path().join("custody.toml");
    std::fs::write(
        &cfg,
        "[ownership]\nconfig = \"owners.toml\"\ntopic = \"custody.ownership\"\n",
    )
    .unwrap();
    let run = |format: &str, filter: &str| {
        let out = custody()
            .args(["--log-format", format, "run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", filter)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        stderr(&out)
    };
    let text = run("text", "info");
    assert!(
        text.lines()
            .any(|l| l.contains("ERROR") && l.contains("names both `config` and `topic`")),
        "{text}"
    );
    let json = run("json", "info");
    let lines: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert!(!lines.is_empty());
    assert!(lines.iter().any(|v| v["level"] == "ERROR"
        && v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("names both `config` and `topic`"))));
    assert_eq!(run("json", "off"), "", "RUST_LOG=off logs nothing");
}

#[test]
fn publish_sends_a_vex_document_keyed_by_its_target_and_needs_one() {
    use rdkafka::mocking::MockCluster;
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("custody.reports", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let vex = "tests/fixtures/vex/openvex-web-api.json";
    let out = custody()
        .args(["publish", "--decisions", "--brokers", &brokers, vex])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--target"), "{stderr}");
    assert!(custody::kafka::mock::read_all(&brokers, "custody.reports")
        .unwrap()
        .is_empty());
    let stdout = succeeded(
        &custody()
            .args(["publish", "--decisions", "--brokers", &brokers])
            .args(["--target", "image:ghcr.io/acme/web-api:1.4", vex])
            .output()
            .unwrap(),
    );
    assert!(stdout.contains("1 decision(s)"), "{stdout}");
    let sent = custody::kafka::mock::read_all(&brokers, "custody.reports").unwrap();
    assert_eq!(sent, [std::fs::read(vex).unwrap()], "the document as it is");
}

/// A SARIF report without snippets (Ruff's), processed without the
/// checkout, is fingerprinted by message and order: `process` says so,
/// once for the report, naming it; with `--source`, or for a report with
/// snippets (Bandit's), it says nothing.
#[test]
fn snippetless_sarif_without_source_is_warned_about_once() {
    let ruff = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/churn/ruff-6.5.sarif");
    let target = ["--target", "repo:github.com/tornadoweb/tornado"];
    let out = process(&[target[0], target[1], AT[0], AT[1]], &[&ruff]);
    succeeded(&out);
    let err = stderr(&out);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].contains("ruff-6.5.sarif"), "{err}");
    assert!(warnings[0].contains("247 of 247"), "{err}");
    assert!(warnings[0].contains("--source"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let checkout = crate::churn::unpack("6.5", tmp.path());
    let out = process(
        &[
            target[0],
            target[1],
            AT[0],
            AT[1],
            "--source",
            checkout.to_str().unwrap(),
        ],
        &[&ruff],
    );
    succeeded(&out);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));

    let out = process(&[target[0], target[1], AT[0], AT[1]], &[&bandit_sarif()]);
    succeeded(&out);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

/// Bandit's SARIF over tornado 6.4.2 and 6.5 (tests/fixtures/churn).
fn tornado(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/churn/bandit-{version}.sarif"))
}

fn ownership() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ownership/owners.toml")
}

const TORNADO: [&str; 2] = ["--target", "repo:github.com/tornadoweb/tornado"];

/// A state built with ownership remembers it: a rescan that forgets
/// `--owners` is refused (exit 2, naming the state and the configuration,
/// the state untouched, nothing printed), `--owners none` goes on without.
#[test]
fn a_state_built_with_ownership_refuses_a_rescan_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.json");
    let st = state.to_str().unwrap();
    let owners = ownership();
    let first = process(
        &[
            TORNADO[0],
            TORNADO[1],
            "--state",
            st,
            "--owners",
            owners.to_str().unwrap(),
        ],
        &[&tornado("6.4.2")],
    );
    succeeded(&first);
    assert!(events(&first).iter().any(|e| e["team"].is_string()));
    let saved = std::fs::read(&state).unwrap();

    let out = process(&[TORNADO[0], TORNADO[1], "--state", st], &[&tornado("6.5")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("state.json") && err.contains("owners.toml"),
        "{err}"
    );
    assert!(err.contains("--owners none"), "{err}");
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read(&state).unwrap(), saved, "state untouched");

    let out = process(
        &[TORNADO[0], TORNADO[1], "--state", st, "--owners", "none"],
        &[&tornado("6.5")],
    );
    succeeded(&out);
    // The same configuration again is accepted too.
    let again = process(
        &[
            TORNADO[0],
            TORNADO[1],
            "--state",
            st,
            "--owners",
            owners.to_str().unwrap(),
        ],
        &[&tornado("6.5")],
    );
    succeeded(&again);
}

/// `--fail-on` exits 3 when the run opened or reopened findings at or
/// above the severity, one line each on stderr (severity, rule, location,
/// team); below it, or on a rescan that opens none, it exits 0.
#[test]
fn fail_on_lists_the_findings_that_fail_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.json");
    let st = state.to_str().unwrap();
    let owners = ownership();
    let args = [
        TORNADO[0],
        TORNADO[1],
        "--state",
        st,
        "--owners",
        owners.to_str().unwrap(),
        "--emit",
        "findings",
        "--fail-on",
        "high",
    ];
    let out = process(&args, &[&tornado("6.4.2")]);
    let evs = events(&out);
    let high: Vec<&Value> = evs
        .iter()
        .filter(|e| {
            e["event"] == "opened" && matches!(e["severity"].as_str(), Some("high" | "critical"))
        })
        .collect();
    assert!(!high.is_empty(), "bandit finds high findings in tornado");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("high\t") || l.starts_with("critical\t"))
        .collect();
    assert_eq!(lines.len(), high.len(), "{err}");
    for e in &high {
        let loc = &e["location"];
        let want = format!(
            "{}\t{}\t{}:{}\t{}",
            e["severity"].as_str().unwrap(),
            e["rule_id"].as_str().unwrap(),
            loc["path"].as_str().unwrap(),
            loc["start_line"],
            e["team"].as_str().unwrap_or("(unattributed)")
        );
        assert!(lines.contains(&want.as_str()), "{want} in {err}");
    }
    // The state was saved: the same scan again opens nothing.
    let out = process(&args, &[&tornado("6.4.2")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let fresh = process(
        &[
            TORNADO[0],
            TORNADO[1],
            "--emit",
            "findings",
            "--fail-on",
            "critical",
        ],
        &[&tornado("6.4.2")],
    );
    assert!(events(&fresh).iter().all(|e| e["severity"] != "critical"));
    assert_eq!(fresh.status.code(), Some(0), "{}", stderr(&fresh));

    let bad = process(
        &[TORNADO[0], TORNADO[1], "--fail-on", "severe"],
        &[&tornado("6.4.2")],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("--fail-on"), "{}", stderr(&bad));
}

/// `--partial`: a scan of part of the target resolves nothing it does not
/// report; the same rescan, complete, resolves what went away.
#[test]
fn partial_scans_resolve_nothing() {
    let (only_new, only_old, _) = crate::churn::expected("bandit_sarif");
    for (partial, resolved) in [(true, 0), (false, only_old)] {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state.json");
        let st = state.to_str().unwrap();
        let base = [TORNADO[0], TORNADO[1], "--state", st, "--emit", "findings"];
        succeeded(&process(&base, &[&tornado("6.4.2")]));
        let mut args = base.to_vec();
        if partial {
            args.push("--partial");
        }
        let out = process(&args, &[&tornado("6.5")]);
        succeeded(&out);
        let evs = events(&out);
        let n = |kind: &str| evs.iter().filter(|e| e["event"] == kind).count() as u64;
        assert_eq!(n("opened"), only_new, "partial {partial}");
        assert_eq!(n("resolved"), resolved, "partial {partial}");
    }
}

/// A `--scanner` that is not the report's own tool is refused before
/// anything is processed, naming both; the report's own name is fine.
#[test]
fn a_scanner_that_contradicts_the_report_is_refused() {
    let out = process(
        &[TORNADO[0], TORNADO[1], "--scanner", "semgrep"],
        &[&tornado("6.5")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("--scanner semgrep") && err.contains("bandit"),
        "{err}"
    );
    assert!(err.contains("bandit-6.5.sarif"), "{err}");
    assert!(out.stdout.is_empty());
    // Read from standard input, checked first and then processed.
    let mut child = custody()
        .args([
            "process",
            TORNADO[0],
            TORNADO[1],
            "--scanner",
            "Bandit",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let report = std::fs::read(tornado("6.5")).unwrap();
    child.stdin.take().unwrap().write_all(&report).unwrap();
    let out = child.wait_with_output().unwrap();
    succeeded(&out);
    assert!(!events(&out).is_empty());
}

/// The summary explains its columns; `--summary json` prints it as the
/// last line of stderr, with the counts of the events printed.
#[test]
fn the_summary_explains_itself_and_prints_as_json() {
    let out = process(&[TORNADO[0], TORNADO[1]], &[&tornado("6.5")]);
    let err = stderr(&out);
    succeeded(&out);
    assert!(err.contains("open findings by severity"), "{err}");
    assert!(err.contains("what this run changed"), "{err}");

    let owners = ownership();
    let out = process(
        &[
            TORNADO[0],
            TORNADO[1],
            "--owners",
            owners.to_str().unwrap(),
            "--emit",
            "findings",
            "--summary",
            "json",
        ],
        &[&tornado("6.5")],
    );
    succeeded(&out);
    let err = stderr(&out);
    let summary: Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    let evs = events(&out);
    let teams = summary["teams"].as_array().unwrap();
    for team in teams {
        let opened = evs
            .iter()
            .filter(|e| e["event"] == "opened" && e["team"] == team["team"])
            .count() as u64;
        assert_eq!(team["opened"].as_u64(), Some(opened), "{team}");
        let open: u64 = team["open"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(open, opened, "a first scan: all it opened is open");
    }
    let total: u64 = teams.iter().map(|t| t["opened"].as_u64().unwrap()).sum();
    assert_eq!(total as usize, evs.len());
    assert_eq!(
        summary["scans"][0]["findings"].as_u64(),
        Some(evs.len() as u64)
    );
    assert!(!err.contains("per team:"), "no table with --summary json");
}

/// A fixture of `tests/fixtures`.
fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// `(event, target, rule_id)` of every finding event.
fn finding_moves(out: &Output) -> Vec<(String, String, String)> {
    events(out)
        .iter()
        .filter(|e| e.get("fingerprint").is_some_and(Value::is_string))
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("event"), s("target"), s("rule_id"))
        })
        .collect()
}

#[test]
fn a_semgrep_app_listing_is_one_scan_per_repository() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let state = state.to_str().unwrap();
    // --target is only the default: every entry names its repository.
    let run = |file: &str, at: &str| {
        let out = process(
            &[
                "--emit",
                "findings",
                "--state",
                state,
                "--target",
                "repo:github.com/acme/monorepo",
                "--at",
                at,
            ],
            &[&fixture(file)],
        );
        succeeded(&out);
        finding_moves(&out)
    };
    let first = run(
        "semgrep/app/semgrep-app-vulns-1.json",
        "2026-06-01T00:00:00Z",
    );
    let t = |e: &str, t: &str, r: &str| (e.to_string(), t.to_string(), r.to_string());
    assert_eq!(
        first,
        [
            t("opened", "repo:github.com/acme/api", "CVE-2024-34064"),
            t("opened", "repo:github.com/acme/api", "CVE-2024-35195"),
            t("opened", "repo:github.com/acme/web", "CVE-2024-29041"),
        ]
    );
    // The next listing has jinja2 triaged FIXED in acme/api: resolved
    // there, and nothing else moves.
    let second = run(
        "semgrep/app/semgrep-app-vulns-2.json",
        "2026-06-02T00:00:00Z",
    );
    assert_eq!(
        second,
        [t("resolved", "repo:github.com/acme/api", "CVE-2024-34064")]
    );
}

#[test]
fn a_trivy_cluster_scan_resolves_only_in_the_resources_it_lists() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let state = state.to_str().unwrap();
    let run = |file: &str, at: &str| {
        let out = process(
            &["--emit", "findings", "--state", state, "--at", at],
            &[&fixture(file)],
        );
        succeeded(&out);
        finding_moves(&out)
    };
    let first = run(
        "trivy/k8s/trivy-k8s-minikube-1.json",
        "2026-06-01T00:00:00Z",
    );
    let app = "k8s:minikube/default/Deployment/app";
    let api = "k8s:minikube/payments/Deployment/api";
    let t = |e: &str, t: &str, r: &str| (e.to_string(), t.to_string(), r.to_string());
    assert_eq!(
        first,
        [
            t("opened", app, "CVE-2016-2781"),
            t("opened", app, "CVE-2022-3715"),
            t("opened", app, "AVD-KSV-0012"),
            // The same CVE in another workload is another finding.
            t("opened", api, "CVE-2016-2781"),
            t("opened", api, "CVE-2023-0286"),
        ]
    );
    // The second scan lists the default namespace only, bash fixed in the
    // app's image: payments, not listed, keeps its findings open.
    let second = run(
        "trivy/k8s/trivy-k8s-minikube-2.json",
        "2026-06-02T00:00:00Z",
    );
    assert_eq!(second, [t("resolved", app, "CVE-2022-3715")]);
}

/// The same report again for a target, as `custody process --state` gets
/// it from a pipeline rerun: recognized as the target's last scan and
/// applied without decoding (no event), and the next real change gives
/// exactly the events it gives without the rerun.
#[test]
fn a_rescan_of_the_same_report_is_recognized_and_changes_nothing_else() {
    let run = |state: &str, file: &Path, at: &str| {
        let mut cmd = custody();
        cmd.env("RUST_LOG", "custody=debug")
            .arg("process")
            .args(TORNADO)
            .args(["--state", state, "--at", at, "--emit", "all"])
            .arg(file);
        cmd.output().expect("run custody")
    };
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.json"), tmp.path().join("b.json"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let (old, new) = (tornado("6.4.2"), tornado("6.5"));
    let first = run(a, &old, "2026-06-01T00:00:00Z");
    succeeded(&first);
    assert!(!events(&first).is_empty());
    assert!(!stderr(&first).contains("not decoded"));
    let again = run(a, &old, "2026-06-02T00:00:00Z");
    succeeded(&again);
    assert!(events(&again).is_empty(), "{:?}", events(&again));
    assert!(stderr(&again).contains("not decoded"), "{}", stderr(&again));
    let change = run(a, &new, "2026-06-03T00:00:00Z");
    assert!(!stderr(&change).contains("not decoded"));

    // The same change without the rerun.
    succeeded(&run(b, &old, "2026-06-01T00:00:00Z"));
    let direct = run(b, &new, "2026-06-03T00:00:00Z");
    assert_eq!(events(&change), events(&direct));
    // A decision voids what is remembered of its target: the report is
    // decoded again.
    let fp = events(&direct)
        .iter()
        .find(|e| e["kind"] == "finding" && e["event"] == "opened")
        .map(|e| e["fingerprint"].as_str().unwrap().to_string())
        .expect("an opened finding");
    let decisions = tmp.path().join("d.jsonl");
    std::fs::write(
        &decisions,
        format!("{{\"target\":\"repo:github.com/tornadoweb/tornado\",\"fingerprint\":\"{fp}\",\"decision\":\"false_positive\",\"reason\":\"test code\",\"author\":\"sec@acme.example\",\"decided_at\":\"2026-06-03T00:00:00Z\"}}\n"),
    )
    .unwrap();
    let mut cmd = custody();
    let decided = cmd
        .env("RUST_LOG", "custody=debug")
        .arg("process")
        .args(TORNADO)
        .args(["--state", b, "--at", "2026-06-04T00:00:00Z"])
        .arg("--decisions")
        .arg(&decisions)
        .arg(&new)
        .output()
        .unwrap();
    succeeded(&decided);
    assert!(
        !stderr(&decided).contains("not decoded"),
        "{}",
        stderr(&decided)
    );
}

/// `--summary json` follows `schemas/process-summary.schema.json`: with
/// teams, the unattributed findings and `--fail-on`'s list; the check can
/// fail (a summary missing what the schema requires does not pass).
#[test]
fn the_json_summary_follows_its_schema() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/process-summary.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let owners = ownership();
    let summary = |extra: &[&str]| -> Value {
        let mut args = vec![TORNADO[0], TORNADO[1], "--summary", "json"];
        args.extend_from_slice(extra);
        let out = process(&args, &[&tornado("6.5")]);
        let err = stderr(&out);
        serde_json::from_str(err.lines().last().unwrap()).unwrap()
    };
    // Unattributed (no ownership): a null team, findings per target.
    let plain = summary(&[]);
    assert!(plain["teams"][0]["team"].is_null(), "{plain}");
    assert!(!plain["unattributed"].as_object().unwrap().is_empty());
    assert!(plain.get("fail_on").is_none());
    // Teams, and the findings that fail the run.
    let failing = summary(&["--owners", owners.to_str().unwrap(), "--fail-on", "high"]);
    assert!(
        !failing["fail_on"]["findings"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{failing}"
    );
    for s in [&plain, &failing] {
        crate::schemas::validate(&schema, s).unwrap_or_else(|e| panic!("{e}: {s}"));
    }
    // What the schema rules out.
    let mut bad = failing.clone();
    bad["teams"][0]["open"]
        .as_object_mut()
        .unwrap()
        .remove("info");
    assert!(crate::schemas::validate(&schema, &bad).is_err());
    let mut bad = failing.clone();
    bad["fail_on"]["findings"][0]["severity"] = "severe".into();
    assert!(crate::schemas::validate(&schema, &bad).is_err());
    let mut bad = plain;
    bad.as_object_mut().unwrap().remove("scans");
    assert!(crate::schemas::validate(&schema, &bad).is_err());
}

/// The binary allocates with jemalloc in transparent huge pages (see
/// `custody::app::alloc`): jemalloc, asked to print its statistics at
/// exit, reports the options the binary gives it. Were the options'
/// symbol not the one the bundled jemalloc reads, they would be dropped
/// without a word, and `process` would run a third slower. A kernel
/// without transparent huge pages makes jemalloc say `thp` is not
/// supported; the metadata option is reported either way.
#[cfg(target_os = "linux")]
#[test]
fn the_binary_allocates_with_jemalloc_in_huge_pages() {
    let out = custody()
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .args([
            "process",
            "--target",
            "repo:github.com/acme/app",
            AT[0],
            AT[1],
        ])
        .arg(bandit_sarif())
        .output()
        .expect("run custody");
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("opt.metadata_thp: \"auto\""), "{said}");
    if Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
        assert!(said.contains("opt.thp: \"always\""), "{said}");
    }
}
