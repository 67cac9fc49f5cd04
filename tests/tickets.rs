//! Ticket events as a tracker adapter reads them, through `custody
//! process`: self-contained (title, Markdown body, labels), bounded, with
//! no secret; and the groupings a team can choose, including a change of
//! grouping over a kept state.
//!
//! The golden file `fixtures/tickets/tornado.tickets.jsonl` is the ticket
//! events of bandit's reports over tornado 6.4.2 then 6.5 (one state),
//! with `fixtures/tickets/custody.toml` and the example ownership;
//! `tornado-ruff.tickets.jsonl` is the same for ruff's reports, whose rules
//! carry their help. To make them again after a deliberate change, run
//! `CUSTODY_REGENERATE_GOLDEN=1 cargo test --test tests tickets::` and
//! review the diff.

use crate::cli::succeeded;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

const TORNADO: &str = "repo:github.com/tornadoweb/tornado";
const AT: &str = "2026-06-01T00:00:00Z";

/// `custody process` over `report` with the example ownership, printing
/// ticket events (or all events with `all`).
fn run(report: &Path, config: &Path, state: Option<&Path>, all: bool) -> Output {
    run_at(report, config, state, all, &[])
}

fn run_at(report: &Path, config: &Path, state: Option<&Path>, all: bool, extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_custody"));
    cmd.args(["process", "--target", TORNADO, "--at", AT])
        .args(extra)
        .arg("--owners")
        .arg(fixture("ownership/owners.toml"))
        .arg("--config")
        .arg(config);
    if !all {
        cmd.args(["--emit", "tickets"]);
    }
    if let Some(s) = state {
        cmd.arg("--state").arg(s);
    }
    cmd.arg(report).output().expect("run custody")
}

fn events(out: &Output) -> Vec<Value> {
    succeeded(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect()
}

fn config(dir: &Path, text: &str) -> PathBuf {
    let name = format!("{}.toml", config_name(text));
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A file name per configuration text, so that configurations of one test
/// do not overwrite each other.
fn config_name(text: &str) -> String {
    text.bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(char::from)
        .collect::<String>()
        + "custody"
}

fn kinds(evs: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in evs {
        *m.entry(e["event"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

/// The ticket events of `scanner`'s SARIF reports over tornado 6.4.2 then
/// 6.5 (one state), compared byte for byte with the golden file `golden`.
fn tornado_golden(scanner: &str, golden: &str) -> Vec<Value> {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.json");
    let cfg = fixture("tickets/custody.toml");
    let mut text = String::new();
    // The releases' tags: the reports name no commit.
    for (version, tag) in [("6.4.2", "v6.4.2"), ("6.5", "v6.5.0")] {
        let report = fixture(&format!("churn/{scanner}-{version}.sarif"));
        let out = run_at(&report, &cfg, Some(&state), false, &["--ref", tag]);
        text.push_str(&succeeded(&out));
    }
    let golden = fixture(golden);
    if std::env::var_os("CUSTODY_REGENERATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    let want = std::fs::read_to_string(&golden).expect("golden file (see the module doc)");
    assert!(
        text == want,
        "ticket events differ from {}; if the change is meant, regenerate it (see the module doc) and review the diff",
        golden.display()
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The headings a body has: custody's own, never the report's.
fn assert_own_headings(body: &str) {
    for l in body.lines().filter(|l| l.trim_start().starts_with('#')) {
        assert!(
            ["### Rule ", "### Rules", "### Locations", "### Ownership"]
                .iter()
                .any(|h| l.starts_with(h)),
            "a heading not custody's: {l:?} in {body}"
        );
    }
}

/// Ruff's rules carry their documentation (SARIF `fullDescription`, in
/// Markdown): each ticket quotes its rule's, escaped, and keeps it for the
/// events that follow.
#[test]
fn ticket_bodies_quote_the_rules_help_from_ruffs_reports() {
    let evs = tornado_golden("ruff", "tickets/tornado-ruff.tickets.jsonl");
    let k = kinds(&evs);
    assert!(k["opened"] > 0, "{k:?}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(fixture("churn/ruff-6.4.2.sarif")).unwrap()).unwrap();
    let rules = report["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap();
    for e in &evs {
        let body = e["body"].as_str().unwrap();
        assert_own_headings(body);
        if e["event"] == "resolved" {
            continue;
        }
        let rule = rules
            .iter()
            .find(|r| r["id"] == e["group"])
            .unwrap_or_else(|| panic!("no rule {} in the report", e["group"]));
        let doc = rule["fullDescription"]["text"].as_str().unwrap();
        assert!(body.contains("**About this rule:**"), "{body}");
        // Its first line, escaped: Ruff's pages start with a heading.
        let first = doc.lines().next().unwrap();
        assert!(first.starts_with("## "), "{first}");
        let escaped = format!("> \\#\\# {}", &first[3..]);
        assert!(body.contains(&escaped), "{escaped:?} not in {body}");
        // Its code examples are not code blocks of the body.
        assert!(!body.contains("```"), "{body}");
    }
}

#[test]
fn ticket_events_of_the_tornado_releases_match_the_golden_file() {
    let evs = tornado_golden("bandit", "tickets/tornado.tickets.jsonl");
    // What an adapter relies on, whatever the golden file holds.
    let k = kinds(&evs);
    // Tornado 6.5 moved code of open tickets: the second run updates them.
    assert!(k["opened"] > 0 && k["updated"] > 0, "{k:?}");
    for e in &evs {
        let body = e["body"].as_str().unwrap();
        let labels: Vec<&str> = e["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        let team = e["team"].as_str().unwrap();
        assert!(
            labels.contains(&format!("team:{team}").as_str()),
            "{labels:?}"
        );
        assert!(labels.contains(&format!("severity:{}", e["severity"].as_str().unwrap()).as_str()));
        assert!(labels.contains(&"category:sast"));
        assert!(body.contains(&format!("`{}`", e["ticket_key"].as_str().unwrap())));
        // Ownership evidence: the CODEOWNERS file and line that decided.
        assert!(body.contains("`tornado.CODEOWNERS` line "), "{body}");
        if e["event"] == "resolved" {
            continue;
        }
        assert!(labels.contains(&"scanner:bandit"), "{labels:?}");
        let open = e["counts"]["open"].as_u64().unwrap() as usize;
        let links = body
            .matches("](https://github.com/tornadoweb/tornado/blob/v6.")
            .count();
        // The configured five locations, then how many more.
        assert_eq!(links, open.min(5), "{body}");
        if open > 5 {
            assert!(body.contains(&format!("- and {} more", open - 5)), "{body}");
        }
        if let Some(due) = e["due_at"].as_str() {
            assert!(
                body.contains(&format!("**SLA due:** {}", &due[..10])),
                "{body}"
            );
        }
    }
}

/// A secret's value and the line it sits on never enter a ticket: not the
/// body, not the title, not a label.
#[test]
fn ticket_events_of_secrets_hold_no_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let report = fixture("gitleaks/gitleaks-web-api.json");
    let raw: Vec<Value> = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let cfg = config(tmp.path(), "[tickets]\ngrouping = \"finding\"\n");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_custody"));
    cmd.args([
        "process",
        "--target",
        "repo:github.com/acme/web-api",
        "--at",
        AT,
    ])
    .args(["--emit", "tickets", "--config"])
    .arg(&cfg)
    .arg(&report);
    let evs = events(&cmd.output().unwrap());
    assert_eq!(evs.len(), raw.len(), "one ticket per secret");
    for e in &evs {
        let body = e["body"].as_str().unwrap();
        assert!(body.contains("Its value is not shown here"), "{body}");
        let text = e.to_string();
        for r in &raw {
            for field in ["Secret", "Match"] {
                let s = r[field].as_str().unwrap();
                assert!(!text.contains(s), "{field} {s:?} in {text}");
            }
        }
    }
}

/// Opened tickets per team under a configuration, and their member counts.
fn opened(evs: &[Value]) -> Vec<(String, usize, String)> {
    evs.iter()
        .filter(|e| e["kind"] == "ticket" && e["event"] == "opened")
        .map(|e| {
            (
                e["team"].as_str().unwrap().to_string(),
                e["fingerprints"].as_array().unwrap().len(),
                e["grouping"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn open_findings_by_team(evs: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in evs
        .iter()
        .filter(|e| e["kind"] == "finding" && e["status"] == "open")
    {
        *m.entry(e["team"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

#[test]
fn each_grouping_makes_its_tickets() {
    let tmp = tempfile::tempdir().unwrap();
    let report = fixture("churn/bandit-6.5.sarif");

    let default = events(&run(&report, &config(tmp.path(), ""), None, true));
    let per_team = open_findings_by_team(&default);
    let rules: BTreeSet<(String, String)> = default
        .iter()
        .filter(|e| e["kind"] == "finding" && e["status"] == "open")
        .map(|e| {
            (
                e["team"].as_str().unwrap().into(),
                e["rule_id"].as_str().unwrap().into(),
            )
        })
        .collect();
    let tickets = opened(&default);
    assert_eq!(tickets.len(), rules.len(), "one per team and rule");
    assert!(tickets.iter().all(|t| t.2 == "team_target_rule"));

    let per_finding = events(&run(
        &report,
        &config(tmp.path(), "[tickets]\ngrouping = \"finding\"\n"),
        None,
        true,
    ));
    let tickets = opened(&per_finding);
    assert_eq!(tickets.len(), per_team.values().sum::<usize>());
    assert!(tickets.iter().all(|t| t.1 == 1 && t.2 == "finding"));

    let team_target = events(&run(
        &report,
        &config(tmp.path(), "[tickets]\ngrouping = \"team_target\"\n"),
        None,
        true,
    ));
    let got: BTreeMap<String, usize> = opened(&team_target)
        .into_iter()
        .map(|(team, n, g)| {
            assert_eq!(g, "team_target");
            (team, n)
        })
        .collect();
    assert_eq!(
        got, per_team,
        "one ticket per team, holding all its findings"
    );
    let qa = team_target
        .iter()
        .find(|e| e["kind"] == "ticket" && e["team"] == "qa")
        .unwrap();
    assert_eq!(qa["group"], "");
    let body = qa["body"].as_str().unwrap();
    assert!(
        body.contains("### Rules") && body.contains("`B101`"),
        "{body}"
    );

    // A team's own grouping wins over the default.
    let mixed = events(&run(
        &report,
        &config(
            tmp.path(),
            "[tickets]\ngrouping = \"team_target\"\n[tickets.teams.qa]\ngrouping = \"finding\"\n",
        ),
        None,
        true,
    ));
    for (team, n, g) in opened(&mixed) {
        match team.as_str() {
            "qa" => assert_eq!((n, g.as_str()), (1, "finding")),
            _ => assert_eq!((n, g.as_str()), (per_team[&team], "team_target")),
        }
    }
}

/// Changing the grouping over a kept state resolves the old tickets once,
/// saying why, and opens the new ones once; a run after that says nothing.
#[test]
fn a_new_grouping_regroups_once_without_a_flood() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.json");
    let report = fixture("churn/bandit-6.5.sarif");
    let default = config(tmp.path(), "");
    let first = events(&run(&report, &default, Some(&state), true));
    let old: BTreeSet<String> = first
        .iter()
        .filter(|e| e["kind"] == "ticket")
        .map(|e| e["ticket_key"].as_str().unwrap().to_string())
        .collect();
    let per_team = open_findings_by_team(&first);

    let team_target = config(tmp.path(), "[tickets]\ngrouping = \"team_target\"\n");
    let second = events(&run(&report, &team_target, Some(&state), true));
    assert!(
        second.iter().all(|e| e["kind"] == "ticket"),
        "no finding changed"
    );
    let resolved: BTreeSet<String> = second
        .iter()
        .filter(|e| e["event"] == "resolved")
        .map(|e| {
            assert_eq!(e["reason"], "regrouped", "{e}");
            assert_eq!(e["grouping"], "team_target_rule");
            assert!(e["body"]
                .as_str()
                .unwrap()
                .contains("grouped by `team_target`"));
            e["ticket_key"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(resolved, old, "every old ticket resolves, once");
    let new: BTreeMap<String, usize> = opened(&second)
        .into_iter()
        .map(|(team, n, _)| (team, n))
        .collect();
    assert_eq!(new, per_team);
    assert_eq!(
        second.len(),
        old.len() + per_team.len(),
        "{:?}",
        kinds(&second)
    );

    // The same run again: nothing new to say.
    let third = events(&run(&report, &team_target, Some(&state), true));
    assert!(third.is_empty(), "{third:?}");

    // Back to the default: the team tickets resolve as regrouped and the
    // old tickets, resolved by the first change, reopen.
    let back = events(&run(&report, &default, Some(&state), true));
    let k = kinds(&back);
    assert_eq!(k.get("resolved"), Some(&per_team.len()), "{k:?}");
    assert_eq!(k.get("reopened"), Some(&old.len()), "{k:?}");
    assert_eq!(back.len(), per_team.len() + old.len());
    assert!(back
        .iter()
        .filter(|e| e["event"] == "resolved")
        .all(|e| e["reason"] == "regrouped"));
}

/// A ticket keeps its rule's help: an event no scan caused (an SLA breach
/// at a later tick), and a scan whose report does not describe the rule,
/// render the help the opening scan gave; the state, written and read
/// back, keeps it, and a ticket record from before tickets kept help
/// reads as having none.
#[test]
fn tickets_keep_their_rules_help_for_later_events() {
    use custody::engine::Engine;
    use custody::model::{ScanMeta, TicketEventKind};
    let engine = Engine::new(&custody::config::Config::default());
    let bytes = std::fs::read(fixture("churn/ruff-6.4.2.sarif")).unwrap();
    let (_, report) = custody::normalize::decode(&bytes, None, engine.decode_context()).unwrap();
    assert!(!report.rule_help.is_empty());
    let scan = ScanMeta {
        scan_id: "s1".into(),
        target: TORNADO.parse().unwrap(),
        commit: None,
        git_ref: None,
        complete: true,
        coverage: report.coverage.clone(),
        rule_help: report.rule_help.clone(),
    };
    let t0: chrono::DateTime<chrono::Utc> = AT.parse().unwrap();
    let mut state = custody::lifecycle::State::new();
    let opened = engine.scan(&mut state, &scan, report.findings.clone(), t0);
    let helped = |e: &custody::model::TicketEvent| e.body.contains("**About this rule:**");
    assert!(!opened.tickets.is_empty());
    assert!(opened.tickets.iter().all(helped));
    let bodies: BTreeMap<String, String> = opened
        .tickets
        .iter()
        .map(|e| (e.ticket_key.clone(), e.body.clone()))
        .collect();

    // Through the state file's form.
    let text = serde_json::to_string(&state).unwrap();
    let mut state: custody::lifecycle::State = serde_json::from_str(&text).unwrap();

    // The same scan with no rule table: nothing changes, help stays.
    let bare = ScanMeta {
        rule_help: Default::default(),
        ..scan.clone()
    };
    let again = engine.scan(&mut state, &bare, report.findings, t0);
    assert!(again.tickets.is_empty(), "{:?}", again.tickets);

    // A year on, every open ticket is past due.
    let later = engine.tick(&mut state, t0 + chrono::Duration::days(365));
    assert!(!later.tickets.is_empty());
    for e in &later.tickets {
        assert_eq!(e.event, TicketEventKind::SlaBreached);
        assert!(helped(e), "{}", e.body);
        let before = &bodies[&e.ticket_key];
        let help = |b: &str| {
            let from = b.find("**About this rule:**").unwrap();
            let to = b.find("### Locations").unwrap();
            b[from..to].to_string()
        };
        assert_eq!(help(&e.body), help(before));
    }

    // A record from before tickets kept help.
    let mut old: Value = serde_json::from_str(&text).unwrap();
    let tickets = old["targets"][TORNADO]["tickets"].as_object_mut().unwrap();
    for t in tickets.values_mut() {
        assert!(t.as_object_mut().unwrap().remove("help").is_some());
    }
    let old: custody::lifecycle::State = serde_json::from_value(old).unwrap();
    assert!(old.targets[TORNADO]
        .tickets
        .values()
        .all(|t| t.help.is_none()));
}

/// Tickets of one finding, or spanning rules, keep no help: the state
/// would otherwise hold a copy per finding, or one rule's help for many.
#[test]
fn tickets_of_one_finding_or_of_many_rules_keep_no_help() {
    let tmp = tempfile::tempdir().unwrap();
    let report = fixture("churn/ruff-6.4.2.sarif");
    for grouping in ["finding", "team_target"] {
        let cfg = config(
            tmp.path(),
            &format!("[tickets]\ngrouping = \"{grouping}\"\n"),
        );
        let state = tmp.path().join(format!("{grouping}.json"));
        let evs = events(&run(&report, &cfg, Some(&state), false));
        assert!(!evs.is_empty());
        for e in &evs {
            let body = e["body"].as_str().unwrap();
            assert!(!body.contains("**About this rule:**"), "{grouping}: {body}");
        }
        let kept: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        let tickets = kept["targets"][TORNADO]["tickets"].as_object().unwrap();
        assert!(!tickets.is_empty());
        assert!(
            tickets.values().all(|t| t.get("help").is_none()),
            "{grouping}"
        );
    }
}

/// The README's example of a body quoting its rule's help is a body of
/// the ruff golden file, as it is.
#[test]
fn the_readmes_example_of_a_rules_help_is_a_golden_body() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let from = readme
        .find("Ruff's reports carry each rule's documentation.")
        .expect("the example in the README");
    let rest = &readme[from..];
    let start = rest.find("```markdown\n").unwrap() + "```markdown\n".len();
    let end = start + rest[start..].find("```\n").unwrap();
    let example = &rest[start..end];
    let golden = std::fs::read_to_string(fixture("tickets/tornado-ruff.tickets.jsonl")).unwrap();
    assert!(
        golden
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .any(|e| e["body"] == example),
        "the README's example is no body of the golden file:\n{example}"
    );
}

/// `custody process` over `report` as a scan of `target`, with the example
/// ownership (any target but tornado falls back to appsec): its ticket
/// events, and the open tickets its summary counts for appsec.
fn run_target_counted(
    report: &Path,
    config: &Path,
    state: &Path,
    target: &str,
) -> (Vec<Value>, u64) {
    let out = Command::new(env!("CARGO_BIN_EXE_custody"))
        .args([
            "process", "--target", target, "--at", AT, "--emit", "tickets",
        ])
        .args(["--summary", "json"])
        .arg("--owners")
        .arg(fixture("ownership/owners.toml"))
        .arg("--config")
        .arg(config)
        .arg("--state")
        .arg(state)
        .arg(report)
        .output()
        .expect("run custody");
    let evs = events(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    let summary: Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    let open = summary["teams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["team"] == "appsec")
        .map_or(0, |t| t["tickets_open"].as_u64().unwrap());
    (evs, open)
}

fn run_target(report: &Path, config: &Path, state: &Path, target: &str) -> Vec<Value> {
    run_target_counted(report, config, state, target).0
}

/// The ticket events of one key, by key.
fn by_key(evs: &[Value]) -> BTreeMap<String, Vec<&Value>> {
    let mut m: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for e in evs {
        m.entry(e["ticket_key"].as_str().unwrap().to_string())
            .or_default()
            .push(e);
    }
    m
}

const API: &str = "repo:github.com/acme/api";
const WEB: &str = "repo:github.com/acme/web";

/// A complete bandit scan that found nothing.
fn empty_bandit(dir: &Path) -> PathBuf {
    let p = dir.join("bandit-empty.sarif");
    std::fs::write(
        &p,
        r#"{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"Bandit","rules":[]}},"results":[]}]}"#,
    )
    .unwrap();
    p
}

/// A team grouped by team and rule gets one ticket per rule across its
/// targets: opened once by the first target's scan, updated with the
/// second's locations (each naming its target), still open while one
/// target has the findings, resolved once both are fixed.
#[test]
fn a_team_grouped_by_team_and_rule_gets_one_ticket_across_targets() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.json");
    let report = fixture("churn/bandit-6.5.sarif");
    let cfg = config(
        tmp.path(),
        "[tickets.teams.appsec]\ngrouping = \"team_rule\"\n",
    );

    let first = run_target(&report, &cfg, &state, API);
    assert!(!first.is_empty());
    let rules: BTreeSet<String> = first
        .iter()
        .map(|e| e["group"].as_str().unwrap().to_string())
        .collect();
    assert!(rules.len() > 1, "{rules:?}");
    for e in &first {
        assert_eq!(e["event"], "opened", "{e}");
        assert_eq!(e["grouping"], "team_rule");
        assert_eq!(e["team"], "appsec");
        assert_eq!(e["targets"], serde_json::json!([API]));
        assert!(e["title"].as_str().unwrap().ends_with("(appsec)"), "{e}");
    }
    assert_eq!(by_key(&first).len(), rules.len(), "one ticket per rule");
    let opened = by_key(&first);

    // The second target's scan: the same tickets, updated, none opened;
    // the summary counts them once, not once per target.
    let (second, tickets_open) = run_target_counted(&report, &cfg, &state, WEB);
    assert_eq!(tickets_open, rules.len() as u64);
    let updated = by_key(&second);
    assert_eq!(
        updated.keys().collect::<Vec<_>>(),
        opened.keys().collect::<Vec<_>>()
    );
    for (key, evs) in &updated {
        assert_eq!(evs.len(), 1, "{key}: {evs:?}");
        let e = evs[0];
        assert_eq!(e["event"], "updated", "{e}");
        assert_eq!(e["targets"], serde_json::json!([API, WEB]));
        let before = opened[key][0]["fingerprints"].as_array().unwrap().len();
        let now = e["fingerprints"].as_array().unwrap().len();
        assert_eq!(now, 2 * before, "each target has the same findings");
        assert_eq!(e["counts"]["open"], now);
        let body = e["body"].as_str().unwrap();
        assert!(body.contains("**Targets:** 2"), "{body}");
        assert!(
            body.contains(&format!("- `{API}` ")) && body.contains(&format!("- `{WEB}` ")),
            "every location names its target: {body}"
        );
        assert_own_headings(body);
    }

    // The same scan again: nothing to say.
    assert!(run_target(&report, &cfg, &state, WEB).is_empty());

    // One target fixed: still open, with the other's findings alone.
    let empty = empty_bandit(tmp.path());
    let fixed = run_target(&empty, &cfg, &state, API);
    assert_eq!(by_key(&fixed).len(), rules.len());
    for e in &fixed {
        assert_eq!(e["event"], "updated", "{e}");
        assert_eq!(e["targets"], serde_json::json!([WEB]));
    }
    // Both fixed: each ticket resolves, once.
    let resolved = run_target(&empty, &cfg, &state, WEB);
    assert_eq!(resolved.len(), rules.len(), "{:?}", kinds(&resolved));
    for e in &resolved {
        assert_eq!(e["event"], "resolved", "{e}");
        assert!(e.get("reason").is_none(), "{e}");
        assert!(e["fingerprints"].as_array().unwrap().is_empty());
    }
}

/// Switching a team to team-and-rule tickets resolves its per-target
/// tickets as `regrouped` and opens each ticket across targets once; a run
/// after that says nothing; switching back resolves those as `regrouped`
/// and reopens the per-target tickets.
#[test]
fn switching_to_team_and_rule_regroups_once_without_a_flood() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.json");
    let report = fixture("churn/bandit-6.5.sarif");
    let default = config(tmp.path(), "");
    let team_rule = config(
        tmp.path(),
        "[tickets.teams.appsec]\ngrouping = \"team_rule\"\n",
    );

    let mut old = BTreeSet::new();
    for target in [API, WEB] {
        for e in run_target(&report, &default, &state, target) {
            assert_eq!(e["event"], "opened");
            old.insert(e["ticket_key"].as_str().unwrap().to_string());
        }
    }
    let switched = run_target(&report, &team_rule, &state, WEB);
    let resolved: BTreeSet<String> = switched
        .iter()
        .filter(|e| e["event"] == "resolved")
        .map(|e| {
            assert_eq!(e["reason"], "regrouped", "{e}");
            assert_eq!(e["grouping"], "team_target_rule");
            e["ticket_key"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(resolved, old, "every per-target ticket resolves, once");
    let new: Vec<&Value> = switched.iter().filter(|e| e["event"] == "opened").collect();
    assert_eq!(
        new.len() * 2,
        old.len(),
        "one ticket per rule for two targets"
    );
    for e in &new {
        assert_eq!(e["grouping"], "team_rule");
        assert_eq!(e["targets"], serde_json::json!([API, WEB]));
    }
    assert_eq!(
        switched.len(),
        old.len() + new.len(),
        "{:?}",
        kinds(&switched)
    );

    assert!(run_target(&report, &team_rule, &state, WEB).is_empty());

    let back = run_target(&report, &default, &state, API);
    let k = kinds(&back);
    assert_eq!(k.get("resolved"), Some(&new.len()), "{k:?}");
    assert_eq!(k.get("reopened"), Some(&old.len()), "{k:?}");
    assert_eq!(back.len(), new.len() + old.len());
    for e in back.iter().filter(|e| e["event"] == "resolved") {
        assert_eq!(e["reason"], "regrouped", "{e}");
        assert_eq!(e["grouping"], "team_rule");
        assert!(e["body"]
            .as_str()
            .unwrap()
            .contains("grouped by `team_target_rule`"));
    }
}
