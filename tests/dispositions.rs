//! Findings a report or a statement says are not open: suppressed in
//! source (SARIF `suppressions`), not affected (a vendor's status, VEX).
//! Each test starts from a real report of the fixtures and changes only
//! what the case is about, the way a scanner would write it.

use chrono::{DateTime, Duration, TimeZone, Utc};
use custody::config::Config;
use custody::engine::{Engine, Output};
use custody::lifecycle::State;
use custody::metrics::Metrics;
use custody::model::{FindingEvent, FindingEventKind as F, ScanMeta, Status, Target};
use custody::normalize::{DecodeContext, Format};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
}

fn read_json(rel: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(rel)).unwrap()).unwrap()
}

/// Decodes a report and applies it as one complete scan of `target`.
fn apply(
    engine: &Engine,
    state: &mut State,
    format: Format,
    report: &Value,
    target: &Target,
    at: DateTime<Utc>,
) -> Output {
    let bytes = serde_json::to_vec(report).unwrap();
    let r = format.decode(&bytes, &DecodeContext::default()).unwrap();
    let scan = ScanMeta {
        scan_id: ScanMeta::content_id(&bytes),
        target: target.clone(),
        commit: None,
        git_ref: None,
        complete: true,
        coverage: r.coverage,
    };
    engine.scan(state, &scan, r.findings, at)
}

/// The events of one finding.
fn of<'a>(o: &'a Output, fp: &str) -> Vec<&'a FindingEvent> {
    o.findings.iter().filter(|e| e.fingerprint == fp).collect()
}

fn events(evs: &[&FindingEvent]) -> Vec<F> {
    evs.iter().map(|e| e.event).collect()
}

fn tornado() -> Target {
    "repo:github.com/tornadoweb/tornado".parse().unwrap()
}

/// Bandit's SARIF of tornado 6.4.2 with its first result suppressed as the
/// SARIF 2.1.0 `suppression` object says (or not, with `None`).
fn bandit_with(suppressions: Option<Value>) -> Value {
    let mut log = read_json("churn/bandit-6.4.2.sarif");
    if let Some(s) = suppressions {
        log["runs"][0]["results"][0]["suppressions"] = s;
    }
    log
}

#[test]
fn a_suppressed_result_is_recorded_suppressed_and_its_removal_reopens_it() {
    let engine = Engine::new(&Config::default());
    let mut state = State::new();
    let justification = "assert on a value the caller checked";
    let suppressed = bandit_with(Some(json!([{
        "kind": "inSource",
        "status": "accepted",
        "justification": justification,
    }])));
    let first = apply(
        &engine,
        &mut state,
        Format::Sarif,
        &suppressed,
        &tornado(),
        t0(),
    );
    let ev: Vec<&FindingEvent> = first
        .findings
        .iter()
        .filter(|e| e.event != F::Opened)
        .collect();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].event, F::Suppressed);
    assert_eq!(ev[0].location.as_ref().unwrap().start_line, Some(128));
    assert_eq!(ev[0].status, Status::Suppressed);
    let d = ev[0].disposition.as_ref().expect("the suppression is told");
    assert_eq!(d.kind.as_deref(), Some("in_source"));
    assert_eq!(d.status.as_deref(), Some("accepted"));
    assert_eq!(d.justification.as_deref(), Some(justification));
    assert_eq!(
        ev[0].due_at, None,
        "a suppressed finding has no SLA due date"
    );
    // Everything else of the report is opened as before.
    let opened = first
        .findings
        .iter()
        .filter(|e| e.event == F::Opened)
        .count();
    assert_eq!(opened + 1, first.findings.len());
    // Not open: its ticket counts it as suppressed, not open.
    let fp = ev[0].fingerprint.clone();
    let ticket = first
        .tickets
        .iter()
        .rev()
        .find(|t| t.ticket_key == ev[0].ticket_key)
        .unwrap();
    assert!(!ticket.fingerprints.contains(&fp));
    assert!(ticket.counts.suppressed >= 1);

    // The same report again: nothing happens.
    let again = apply(
        &engine,
        &mut state,
        Format::Sarif,
        &suppressed,
        &tornado(),
        t0() + Duration::days(1),
    );
    assert!(again.findings.is_empty(), "{:?}", again.findings);

    // A rejected suppression is none: the finding is reopened.
    let rejected = bandit_with(Some(json!([{"kind": "inSource", "status": "rejected"}])));
    let reopened = apply(
        &engine,
        &mut state,
        Format::Sarif,
        &rejected,
        &tornado(),
        t0() + Duration::days(2),
    );
    assert_eq!(reopened.findings.len(), 1, "only that finding changes");
    let ev = of(&reopened, &fp);
    assert_eq!(events(&ev), [F::Reopened]);
    assert_eq!(ev[0].status, Status::Open);
    assert_eq!(ev[0].fingerprint, fp, "suppressing keeps the fingerprint");
    assert!(ev[0].disposition.is_none());
    assert!(ev[0].due_at.is_some());

    // Suppressed again (external this time), then gone from a complete
    // scan: resolved as usual.
    let external = bandit_with(Some(json!([{"kind": "external"}])));
    let o = apply(
        &engine,
        &mut state,
        Format::Sarif,
        &external,
        &tornado(),
        t0() + Duration::days(3),
    );
    assert_eq!(events(&of(&o, &fp)), [F::Suppressed]);
    let mut without = bandit_with(None);
    without["runs"][0]["results"]
        .as_array_mut()
        .unwrap()
        .remove(0);
    let o = apply(
        &engine,
        &mut state,
        Format::Sarif,
        &without,
        &tornado(),
        t0() + Duration::days(4),
    );
    assert_eq!(events(&of(&o, &fp)), [F::Resolved]);
    assert_eq!(o.findings.len(), 1);
}

#[test]
fn suppressed_findings_are_not_open_and_are_counted_per_team() {
    let engine = Engine::new(&Config::default());
    let mut state = State::new();
    let plain = bandit_with(None);
    apply(&engine, &mut state, Format::Sarif, &plain, &tornado(), t0());
    let mut log = bandit_with(None);
    // Three results suppressed externally.
    for r in log["runs"][0]["results"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .take(3)
    {
        r["suppressions"] = json!([{"kind": "external", "status": "accepted"}]);
    }
    let o = apply(
        &engine,
        &mut state,
        Format::Sarif,
        &log,
        &tornado(),
        t0() + Duration::days(1),
    );
    assert_eq!(
        o.findings
            .iter()
            .filter(|e| e.event == F::Suppressed)
            .count(),
        3
    );
    let metrics = Metrics::new();
    metrics.set_state([&state], t0() + Duration::days(1));
    let m = crate::metrics::scrape(&metrics.render());
    let total = plain["runs"][0]["results"].as_array().unwrap().len();
    let records = &state.targets[&tornado().to_string()].findings;
    let suppressed = records
        .values()
        .filter(|r| r.status == Status::Suppressed)
        .count();
    assert_eq!(suppressed, 3);
    assert_eq!(m["custody_findings_suppressed{team=\"unattributed\"}"], 3.0);
    assert_eq!(m["custody_state_findings{status=\"suppressed\"}"], 3.0);
    let open: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("custody_findings_open{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(open as usize, records.len() - 3);
    assert!(records.len() <= total);
}
