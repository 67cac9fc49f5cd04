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
        rule_help: Default::default(),
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

fn web_api() -> Target {
    "image:ghcr.io/acme/web-api".parse().unwrap()
}

/// Trivy's vendor status `not_affected` records the finding not affected;
/// the other statuses of the fixture (`fixed`, `affected`,
/// `will_not_fix`) leave findings open; the vendor changing its mind
/// reopens it.
#[test]
fn trivy_vendor_status_not_affected_is_recorded_not_affected() {
    let engine = Engine::new(&Config::default());
    let mut state = State::new();
    let with_apt = |status: &str| {
        let mut r = read_json("trivy/trivy-image-web-api-1.4.json");
        for v in r["Results"][0]["Vulnerabilities"].as_array_mut().unwrap() {
            if v["PkgName"] == "apt" {
                v["Status"] = json!(status);
            }
        }
        r
    };
    let o = apply(
        &engine,
        &mut state,
        Format::Trivy,
        &with_apt("not_affected"),
        &web_api(),
        t0(),
    );
    let apt: Vec<&FindingEvent> = o
        .findings
        .iter()
        .filter(|e| e.package.as_ref().unwrap().name == "apt")
        .collect();
    assert_eq!(events(&apt), [F::NotAffected]);
    assert_eq!(apt[0].status, Status::NotAffected);
    let d = apt[0].disposition.as_ref().unwrap();
    assert_eq!(
        (d.kind.as_deref(), d.status.as_deref()),
        (Some("vendor"), Some("not_affected"))
    );
    assert_eq!(
        o.findings.iter().filter(|e| e.event == F::Opened).count(),
        11
    );
    let fp = apt[0].fingerprint.clone();
    let o = apply(
        &engine,
        &mut state,
        Format::Trivy,
        &with_apt("affected"),
        &web_api(),
        t0() + Duration::days(1),
    );
    assert_eq!(events(&of(&o, &fp)), [F::Reopened]);
    assert_eq!(o.findings.len(), 1);
}

fn vex(name: &str) -> custody::normalize::vex::VexDocument {
    let bytes = std::fs::read(fixture(&format!("vex/{name}"))).unwrap();
    custody::normalize::vex::parse(&bytes)
        .unwrap()
        .expect("a VEX document")
}

/// The specifications' own examples read as they say.
#[test]
fn vex_spec_examples_name_their_vulnerability_product_and_status() {
    use custody::model::{Category, Finding, Package, Severity};
    use custody::normalize::vex::VexDecision;
    let pkg = |eco: &str, name: &str, version: &str, rule: &str| {
        let mut f = Finding::new("grype", Category::Sca, rule, Severity::High, "m");
        f.package = Some(Package {
            ecosystem: eco.into(),
            name: name.into(),
            version: Some(version.into()),
            fixed_version: None,
        });
        f
    };
    let any: Target = "repo:github.com/acme/app".parse().unwrap();
    let cdx = vex("cyclonedx-1.5-spec-example.json");
    assert_eq!(cdx.kind, "cyclonedx_vex");
    assert_eq!(cdx.statements.len(), 1);
    let st = &cdx.statements[0];
    assert_eq!(st.decision, VexDecision::NotAffected("not_affected".into()));
    assert_eq!(
        st.products[0].id, "pkg:maven/com.fasterxml.jackson.core/jackson-databind@2.10.0?type=jar",
        "the BOM-Link's fragment"
    );
    assert!(st
        .justification
        .as_deref()
        .unwrap()
        .starts_with("code_not_reachable: "));
    let jackson = |v: &str| {
        pkg(
            "maven",
            "com.fasterxml.jackson.core:jackson-databind",
            v,
            "CVE-2020-25649",
        )
    };
    assert!(st.matches(&any, &jackson("2.10.0")));
    assert!(!st.matches(&any, &jackson("2.10.1")), "another version");
    let mut other = jackson("2.10.0");
    other.rule_id = "CVE-2020-1".into();
    assert!(!st.matches(&any, &other), "another vulnerability");

    let ov = vex("openvex-0.2.0-spec-example.json");
    assert_eq!(ov.kind, "openvex");
    let st = &ov.statements[0];
    assert_eq!(st.decision, VexDecision::NotAffected("fixed".into()));
    assert_eq!(st.products.len(), 2);
    assert!(st.matches(&any, &pkg("apk", "git", "2.39.0-r1", "CVE-2014-123456")));
    assert!(!st.matches(&any, &pkg("apk", "git", "2.38.0-r0", "CVE-2014-123456")));
    assert!(!st.matches(&any, &pkg("deb", "git", "2.39.0-r1", "CVE-2014-123456")));
}

/// VEX documents about web-api 1.4, applied to Trivy's scan of it.
#[test]
fn vex_statements_mark_matching_findings_not_affected_or_keep_them_open() {
    let engine = Engine::new(&Config::default());
    let mut state = State::new();
    let report = read_json("trivy/trivy-image-web-api-1.4.json");
    apply(
        &engine,
        &mut state,
        Format::Trivy,
        &report,
        &web_api(),
        t0(),
    );
    let at = t0() + Duration::days(1);

    let (o, matched) = engine.vex(&mut state, &vex("cyclonedx-web-api.json"), at);
    // urllib3 (two installs) not affected; zlib1g exploitable and apt in
    // triage: about them, but nothing changes.
    assert_eq!(matched, 4);
    assert_eq!(
        events(&o.findings.iter().collect::<Vec<_>>()),
        [F::NotAffected, F::NotAffected]
    );
    for e in &o.findings {
        assert_eq!(e.package.as_ref().unwrap().name, "urllib3");
        assert_eq!(e.status, Status::NotAffected);
        let d = e.disposition.as_ref().unwrap();
        assert_eq!(d.kind.as_deref(), Some("cyclonedx_vex"));
        assert!(d
            .justification
            .as_deref()
            .unwrap()
            .starts_with("code_not_reachable: "));
    }
    let urllib3 = o.findings[0].fingerprint.clone();

    let (o, matched) = engine.vex(&mut state, &vex("openvex-web-api.json"), at);
    assert_eq!(matched, 3, "zlib1g, requests, openssl");
    let got: Vec<(String, F)> = o
        .findings
        .iter()
        .map(|e| (e.package.as_ref().unwrap().name.clone(), e.event))
        .collect();
    let mut got = got;
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("openssl".to_string(), F::NotAffected),
            ("zlib1g".to_string(), F::NotAffected)
        ]
    );

    // The same documents again: nothing new.
    let (o, _) = engine.vex(&mut state, &vex("openvex-web-api.json"), at);
    assert!(o.findings.is_empty());

    // A rescan does not undo a VEX statement.
    let o = apply(
        &engine,
        &mut state,
        Format::Trivy,
        &report,
        &web_api(),
        at + Duration::days(1),
    );
    assert!(o.findings.is_empty(), "{:?}", o.findings);

    // A statement that urllib3 is affected after all reopens it.
    let affected = serde_json::to_vec(&json!({
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": "https://acme.example/vex/2",
        "author": "Acme Product Security",
        "timestamp": "2024-07-01T00:00:00Z",
        "version": 2,
        "statements": [{
            "vulnerability": {"name": "CVE-2024-37891", "aliases": ["GHSA-34jh-p97f-mpxf"]},
            "products": [{"@id": "pkg:pypi/urllib3@2.0.7"}],
            "status": "affected"
        }]
    }))
    .unwrap();
    let doc = custody::normalize::vex::parse(&affected).unwrap().unwrap();
    let (o, matched) = engine.vex(&mut state, &doc, at + Duration::days(2));
    assert_eq!(matched, 2, "both installs");
    assert_eq!(
        events(&o.findings.iter().collect::<Vec<_>>()),
        [F::Reopened, F::Reopened]
    );
    assert!(o.findings.iter().any(|e| e.fingerprint == urllib3));
}

#[test]
fn bad_vex_documents_are_named_errors() {
    use custody::normalize::vex::parse;
    let e = parse(br#"{"@context": "https://openvex.dev/ns/v0.2.0", "statements": [{"vulnerability": {"name": "CVE-1"}, "products": [{"@id": "pkg:npm/a"}], "status": "maybe"}]}"#).unwrap_err();
    assert!(e.contains("statements[0]") && e.contains("maybe"), "{e}");
    let e = parse(br#"{"bomFormat": "CycloneDX", "vulnerabilities": [{"id": "CVE-1", "affects": [{"ref": "x"}]}]}"#).unwrap_err();
    assert!(
        e.contains("vulnerabilities[0]") && e.contains("analysis"),
        "{e}"
    );
    let e =
        parse(br#"{"@context": "https://openvex.dev/ns/v0.2.0", "statements": 3}"#).unwrap_err();
    assert!(
        e.contains("OpenVEX document") && e.contains("line 1"),
        "{e}"
    );
    // A decision record is not a VEX document.
    assert_eq!(
        parse(br#"{"target": "repo:x/y", "fingerprint": "v1:0"}"#).unwrap(),
        None
    );
}

/// `custody process --decisions` takes a VEX document and applies it after
/// the scans, so it reaches the findings the same run opens.
#[test]
fn process_applies_vex_documents_given_as_decisions() {
    let run = |decisions: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_custody"))
            .args([
                "process",
                "--emit",
                "findings",
                "--at",
                "2024-06-21T00:00:00Z",
            ])
            .arg("--decisions")
            .arg(decisions)
            .arg(fixture("trivy/trivy-image-web-api-1.4.json"))
            .output()
            .unwrap()
    };
    let out = run(&fixture("vex/cyclonedx-web-api.json"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let not_affected: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "not_affected")
        .collect();
    assert_eq!(not_affected.len(), 2);
    assert!(not_affected
        .iter()
        .all(|e| e["package"]["name"] == "urllib3" && e["disposition"]["kind"] == "cyclonedx_vex"));

    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, br#"{"@context": "https://openvex.dev/ns/v0.2.0", "statements": [{"vulnerability": {}, "products": [], "status": "fixed"}]}"#).unwrap();
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.json")
            && err.contains("statements[0]")
            && err.contains("vulnerability.name"),
        "{err}"
    );
}
