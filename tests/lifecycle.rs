//! Lifecycle and ticket transitions, table by table, through the engine.

use chrono::{DateTime, Duration, TimeZone, Utc};
use custody::config::{Config, Route};
use custody::engine::{Engine, Output};
use custody::lifecycle::{DecisionKind, DecisionRecord, State};
use custody::model::{
    Category, Finding, FindingEventKind as F, Location, Package, Provenance, ScanMeta, Severity,
    Status, Target, TicketEventKind as T,
};
use proptest::prelude::*;
use std::collections::BTreeSet;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn target() -> Target {
    "repo:github.com/acme/payments".parse().unwrap()
}

fn code(scanner: &str, rule: &str, path: &str, line: u32, text: &str) -> Finding {
    let mut f = Finding::new(
        scanner,
        Category::Sast,
        rule,
        Severity::High,
        format!("{rule} at line {line}"),
    );
    f.location = Some(Location {
        path: path.into(),
        start_line: Some(line),
        ..Location::default()
    });
    f.content_hash = Some(custody::fingerprint::line_hash(text));
    f
}

fn scan(scanner: &str, complete: bool, categories: &[Category]) -> ScanMeta {
    ScanMeta {
        scan_id: format!("{scanner}-scan"),
        target: target(),
        commit: None,
        git_ref: None,
        complete,
        coverage: categories
            .iter()
            .map(|c| (scanner.to_string(), *c))
            .collect(),
        rule_help: Default::default(),
    }
}

fn kinds(o: &Output) -> (Vec<F>, Vec<T>) {
    (
        o.findings.iter().map(|e| e.event).collect(),
        o.tickets.iter().map(|e| e.event).collect(),
    )
}

struct World {
    engine: Engine,
    state: State,
}

impl World {
    fn new() -> World {
        World::with(Config::default())
    }

    fn with(config: Config) -> World {
        World {
            engine: Engine::new(&config),
            state: State::new(),
        }
    }

    fn scan(&mut self, meta: &ScanMeta, findings: Vec<Finding>, at: DateTime<Utc>) -> Output {
        self.engine.scan(&mut self.state, meta, findings, at)
    }

    fn status(&self, fp: &str) -> Status {
        self.state.targets[&target().to_string()].findings[fp].status
    }
}

fn eval(line: u32) -> Finding {
    code("bandit", "B307", "app/views.py", line, "return eval(expr)")
}

#[test]
fn first_scan_opens_and_rescan_is_silent() {
    let mut w = World::new();
    let sast = scan("bandit", true, &[Category::Sast]);
    let o = w.scan(&sast, vec![eval(10)], t0());
    assert_eq!(kinds(&o), (vec![F::Opened], vec![T::Opened]));
    assert_eq!(o.findings[0].due_at, Some(t0() + Duration::days(30)));
    assert_eq!(
        o.tickets[0].fingerprints,
        vec![o.findings[0].fingerprint.clone()]
    );
    // Same findings, code moved down 40 lines: nothing to say.
    let o = w.scan(&sast, vec![eval(50)], t0() + Duration::days(1));
    assert_eq!(kinds(&o), (vec![], vec![]));
}

#[test]
fn absence_resolves_only_after_a_complete_scan_by_the_same_scanner_of_the_category() {
    /// (case, scanner of the second scan, complete?, categories, event).
    type Case<'a> = (&'a str, &'a str, bool, &'a [Category], Option<F>);
    let table: &[Case] = &[
        (
            "complete, same scanner",
            "bandit",
            true,
            &[Category::Sast],
            Some(F::Resolved),
        ),
        ("incomplete scan", "bandit", false, &[Category::Sast], None),
        ("other scanner", "semgrep", true, &[Category::Sast], None),
        (
            "same scanner, other category",
            "bandit",
            true,
            &[Category::Iac],
            None,
        ),
    ];
    for &(name, scanner, complete, cats, want) in table {
        let mut w = World::new();
        let first = w.scan(
            &scan("bandit", true, &[Category::Sast]),
            vec![eval(10)],
            t0(),
        );
        let fp = first.findings[0].fingerprint.clone();
        let o = w.scan(
            &scan(scanner, complete, cats),
            vec![],
            t0() + Duration::days(1),
        );
        assert_eq!(o.findings.first().map(|e| e.event), want, "{name}");
        if want.is_some() {
            assert_eq!(w.status(&fp), Status::Resolved, "{name}");
            assert_eq!(kinds(&o).1, vec![T::Resolved], "{name}");
        } else {
            assert_eq!(w.status(&fp), Status::Open, "{name}");
            assert!(o.tickets.is_empty(), "{name}");
        }
    }
}

#[test]
fn resolved_then_seen_again_reopens_with_a_new_sla_clock() {
    let mut w = World::new();
    let sast = scan("bandit", true, &[Category::Sast]);
    w.scan(&sast, vec![eval(10)], t0());
    w.scan(&sast, vec![], t0() + Duration::days(5));
    let later = t0() + Duration::days(20);
    let o = w.scan(&sast, vec![eval(12)], later);
    assert_eq!(kinds(&o), (vec![F::Reopened], vec![T::Reopened]));
    assert_eq!(o.findings[0].due_at, Some(later + Duration::days(30)));
    assert_eq!(o.findings[0].first_seen, t0());
}

#[test]
fn reopen_keeps_the_first_due_date_when_configured() {
    let mut cfg = Config::default();
    cfg.sla.restart_on_reopen = false;
    let mut w = World::with(cfg);
    let sast = scan("bandit", true, &[Category::Sast]);
    w.scan(&sast, vec![eval(10)], t0());
    w.scan(&sast, vec![], t0() + Duration::days(5));
    let o = w.scan(&sast, vec![eval(10)], t0() + Duration::days(20));
    assert_eq!(o.findings[0].due_at, Some(t0() + Duration::days(30)));
}

#[test]
fn severity_change_updates_finding_and_ticket() {
    let mut w = World::new();
    let sast = scan("bandit", true, &[Category::Sast]);
    w.scan(&sast, vec![eval(10)], t0());
    let mut f = eval(10);
    f.severity = Severity::Critical;
    let o = w.scan(&sast, vec![f], t0() + Duration::days(1));
    assert_eq!(kinds(&o), (vec![F::Updated], vec![T::Updated]));
    assert_eq!(o.findings[0].severity, Severity::Critical);
    // Due date recomputed from the opening for the new severity.
    assert_eq!(o.findings[0].due_at, Some(t0() + Duration::days(7)));
}

#[test]
fn message_changes_update_but_line_numbers_in_messages_do_not() {
    let mut w = World::new();
    let sast = scan("bandit", true, &[Category::Sast]);
    w.scan(&sast, vec![eval(10)], t0());
    // eval(99)'s message quotes line 99 instead of 10.
    let o = w.scan(&sast, vec![eval(99)], t0() + Duration::days(1));
    assert_eq!(kinds(&o), (vec![], vec![]));
    let mut f = eval(99);
    f.message = "Use of possibly insecure function - consider ast.literal_eval".into();
    let o = w.scan(&sast, vec![f], t0() + Duration::days(2));
    assert_eq!(kinds(&o).0, vec![F::Updated]);
    // The ticket's members and severity did not change: no ticket event.
    assert!(o.tickets.is_empty());
}

#[test]
fn sla_breach_fires_once_for_finding_and_ticket() {
    let mut w = World::new();
    w.scan(
        &scan("bandit", true, &[Category::Sast]),
        vec![eval(10)],
        t0(),
    );
    let o = w.engine.tick(&mut w.state, t0() + Duration::days(29));
    assert_eq!(kinds(&o), (vec![], vec![]));
    let o = w.engine.tick(&mut w.state, t0() + Duration::days(30));
    assert_eq!(kinds(&o), (vec![F::SlaBreached], vec![T::SlaBreached]));
    let o = w.engine.tick(&mut w.state, t0() + Duration::days(90));
    assert_eq!(kinds(&o), (vec![], vec![]));
}

fn decision(fp: &str, kind: DecisionKind, expires: Option<DateTime<Utc>>) -> DecisionRecord {
    DecisionRecord {
        target: target(),
        fingerprint: fp.to_string(),
        decision: kind,
        expires_at: expires,
        reason: "compensating control".into(),
        author: "alice@acme.example".into(),
        decided_at: t0(),
    }
}

#[test]
fn risk_acceptance_must_expire_and_expires_back_to_open() {
    let mut w = World::new();
    let o = w.scan(
        &scan("bandit", true, &[Category::Sast]),
        vec![eval(10)],
        t0(),
    );
    let fp = o.findings[0].fingerprint.clone();
    let err = w.engine.decide(
        &mut w.state,
        &decision(&fp, DecisionKind::AcceptRisk, None),
        t0(),
    );
    assert!(err.unwrap_err().to_string().contains("must expire"));
    let past = decision(
        &fp,
        DecisionKind::AcceptRisk,
        Some(t0() - Duration::days(1)),
    );
    assert!(w.engine.decide(&mut w.state, &past, t0()).is_err());

    let until = t0() + Duration::days(60);
    let o = w
        .engine
        .decide(
            &mut w.state,
            &decision(&fp, DecisionKind::AcceptRisk, Some(until)),
            t0(),
        )
        .unwrap();
    assert_eq!(kinds(&o), (vec![F::Accepted], vec![T::Resolved]));
    assert_eq!(o.findings[0].accepted_until, Some(until));
    assert_eq!(o.tickets[0].counts.accepted, 1);
    // Accepted findings do not breach their SLA while accepted.
    let o = w.engine.tick(&mut w.state, t0() + Duration::days(45));
    assert_eq!(kinds(&o), (vec![], vec![]));
    // Expiry: open again, and already past due, so breached too.
    let o = w.engine.tick(&mut w.state, until);
    assert_eq!(kinds(&o).0, vec![F::AcceptanceExpired, F::SlaBreached]);
    assert_eq!(kinds(&o).1, vec![T::Reopened, T::SlaBreached]);
    assert_eq!(w.status(&fp), Status::Open);
}

#[test]
fn false_positive_stays_silent_and_revoke_reopens() {
    let mut w = World::new();
    let sast = scan("bandit", true, &[Category::Sast]);
    let o = w.scan(&sast, vec![eval(10)], t0());
    let fp = o.findings[0].fingerprint.clone();
    let o = w
        .engine
        .decide(
            &mut w.state,
            &decision(&fp, DecisionKind::FalsePositive, None),
            t0(),
        )
        .unwrap();
    assert_eq!(kinds(&o), (vec![F::FalsePositive], vec![T::Resolved]));
    // Seen again, absent, past due: a false positive says nothing.
    assert_eq!(
        kinds(&w.scan(&sast, vec![eval(11)], t0() + Duration::days(1))),
        (vec![], vec![])
    );
    assert_eq!(
        kinds(&w.engine.tick(&mut w.state, t0() + Duration::days(100))),
        (vec![], vec![])
    );
    let o = w
        .engine
        .decide(
            &mut w.state,
            &decision(&fp, DecisionKind::Revoke, None),
            t0() + Duration::days(100),
        )
        .unwrap();
    assert_eq!(kinds(&o).0, vec![F::Reopened, F::SlaBreached]);
    // Unknown fingerprints are refused, not silently ignored.
    assert!(w
        .engine
        .decide(
            &mut w.state,
            &decision("v1:nope", DecisionKind::FalsePositive, None),
            t0()
        )
        .is_err());
}

fn dep(scanner: &str, sev: Severity) -> Finding {
    let mut f = Finding::new(
        scanner,
        Category::Container,
        "CVE-2023-0286",
        sev,
        "X.400 type confusion",
    );
    f.package = Some(Package {
        ecosystem: "deb".into(),
        name: "openssl".into(),
        version: Some("1.1.1n-0+deb11u3".into()),
        fixed_version: Some("1.1.1n-0+deb11u4".into()),
    });
    f
}

#[test]
fn two_tools_one_finding_resolves_when_both_stop() {
    let mut w = World::new();
    let trivy = scan("trivy", true, &[Category::Container]);
    let grype = scan("grype", true, &[Category::Container]);
    let o = w.scan(&trivy, vec![dep("trivy", Severity::High)], t0());
    assert_eq!(kinds(&o), (vec![F::Opened], vec![T::Opened]));
    // Grype reports the same CVE in the same package: same finding, and
    // its higher severity wins.
    let o = w.scan(&grype, vec![dep("grype", Severity::Critical)], t0());
    assert_eq!(kinds(&o).0, vec![F::Updated]);
    assert_eq!(
        o.findings[0].scanners,
        vec!["grype".to_string(), "trivy".to_string()]
    );
    assert_eq!(o.findings[0].severity, Severity::Critical);
    // Trivy no longer reports it: still open, back to Trivy's... no, to Grype's view.
    let o = w.scan(&trivy, vec![], t0() + Duration::days(1));
    assert!(o.findings.iter().all(|e| e.event != F::Resolved));
    // Grype rescans with the same result: nothing.
    assert_eq!(
        kinds(&w.scan(&grype, vec![dep("grype", Severity::Critical)], t0())),
        (vec![], vec![])
    );
    let o = w.scan(&grype, vec![], t0() + Duration::days(2));
    assert_eq!(kinds(&o), (vec![F::Resolved], vec![T::Resolved]));
}

#[test]
fn tickets_group_by_rule_and_route_by_severity() {
    let mut cfg = Config::default();
    cfg.routes.push(Route {
        topic: "sec.urgent".into(),
        teams: vec![],
        unattributed: None,
        min_severity: Some(Severity::Critical),
        categories: vec![],
    });
    let mut w = World::with(cfg);
    let sast = scan("bandit", true, &[Category::Sast]);
    let mut crit = code(
        "bandit",
        "B602",
        "app/run.py",
        3,
        "subprocess.call(cmd, shell=True)",
    );
    crit.severity = Severity::Critical;
    let o = w.scan(
        &sast,
        vec![
            eval(10),
            code("bandit", "B307", "app/other.py", 7, "eval(y)"),
            crit,
        ],
        t0(),
    );
    assert_eq!(o.findings.len(), 3);
    assert_eq!(o.tickets.len(), 2);
    let b307 = o.tickets.iter().find(|t| t.group == "B307").unwrap();
    assert_eq!(b307.counts.open, 2);
    assert_eq!(b307.route, "custody.tickets");
    let b602 = o.tickets.iter().find(|t| t.group == "B602").unwrap();
    assert_eq!(b602.route, "sec.urgent");
    // One of two members fixed: the ticket is updated, not resolved.
    let o = w.scan(
        &sast,
        vec![
            eval(10),
            code(
                "bandit",
                "B602",
                "app/run.py",
                3,
                "subprocess.call(cmd, shell=True)",
            ),
        ],
        t0() + Duration::days(1),
    );
    let t: Vec<_> = o
        .tickets
        .iter()
        .map(|t| (t.group.as_str(), t.event, t.counts.open))
        .collect();
    assert!(t.contains(&("B307", T::Updated, 1)), "{t:?}");
}

#[test]
fn event_ids_are_deterministic_and_unique() {
    let run = || {
        let mut w = World::new();
        let sast = scan("bandit", true, &[Category::Sast]);
        let mut ids = Vec::new();
        for (day, findings) in [
            (0, vec![eval(1)]),
            (1, vec![]),
            (2, vec![eval(3)]),
            (3, vec![]),
        ] {
            let o = w.scan(&sast, findings, t0() + Duration::days(day));
            ids.extend(o.findings.iter().map(|e| e.event_id.clone()));
            ids.extend(o.tickets.iter().map(|e| e.event_id.clone()));
        }
        ids
    };
    let a = run();
    assert_eq!(a, run());
    assert_eq!(a.len(), 8);
    assert_eq!(a.iter().collect::<BTreeSet<_>>().len(), a.len());
}

proptest! {
    /// After any sequence of complete scans by one scanner, the open
    /// findings are exactly those of the last scan, and repeating the last
    /// scan emits nothing.
    #[test]
    fn open_set_follows_complete_scans(scans in proptest::collection::vec(proptest::collection::btree_set(0usize..12, 0..12), 1..8)) {
        let pool: Vec<Finding> = (0..12)
            .map(|i| code("bandit", &format!("B{}", 100 + i % 3), &format!("m{}.py", i % 4), 10 + i as u32, &format!("call_{i}()")))
            .collect();
        let mut w = World::new();
        let sast = scan("bandit", true, &[Category::Sast]);
        let mut fps = std::collections::BTreeMap::new();
        for (day, set) in scans.iter().enumerate() {
            let findings: Vec<Finding> = set.iter().map(|&i| pool[i].clone()).collect();
            let at = t0() + Duration::hours(day as i64);
            let o = w.scan(&sast, findings.clone(), at);
            for e in &o.findings {
                if e.event == F::Opened {
                    fps.insert(e.fingerprint.clone(), ());
                }
            }
            let ts = &w.state.targets[&target().to_string()];
            let open = ts.findings.values().filter(|r| r.status == Status::Open).count();
            prop_assert_eq!(open, set.len());
            let again = w.scan(&sast, findings, at);
            prop_assert!(again.findings.is_empty() && again.tickets.is_empty());
        }
    }
}

/// One scan of the changelog property below: which scanner, which of the
/// pool's findings (with a line shift and a message variant), whether it
/// is complete, and how many minutes after the previous scan it runs.
#[derive(Debug, Clone)]
struct Step {
    scanner: usize,
    reported: BTreeSet<usize>,
    shift: u32,
    variant: bool,
    complete: bool,
    minutes: i64,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0usize..3,
        proptest::collection::btree_set(0usize..10, 0..10),
        0u32..3,
        any::<bool>(),
        any::<bool>(),
        0i64..150,
    )
        .prop_map(
            |(scanner, reported, shift, variant, complete, minutes)| Step {
                scanner,
                reported,
                shift,
                variant,
                complete,
                minutes,
            },
        )
}

/// The findings of one step: code findings of bandit (which move and whose
/// message changes), and one CVE that trivy and grype both report with
/// their own severities.
fn step_findings(s: &Step) -> (ScanMeta, Vec<Finding>) {
    let name = ["bandit", "trivy", "grype"][s.scanner];
    let category = if s.scanner == 0 {
        Category::Sast
    } else {
        Category::Container
    };
    let findings = s
        .reported
        .iter()
        .map(|&i| {
            if s.scanner == 0 {
                let mut f = code(
                    "bandit",
                    &format!("B{}", 100 + i % 3),
                    &format!("m{}.py", i % 4),
                    10 + i as u32 * 5 + s.shift,
                    &format!("call_{i}()"),
                );
                if s.variant && i % 2 == 0 {
                    f.message.push_str(" (reworded)");
                }
                f
            } else {
                let sev = if s.variant {
                    Severity::Critical
                } else {
                    Severity::High
                };
                let mut f = dep(name, sev);
                f.rule_id = format!("CVE-2023-{}", 1000 + i);
                f
            }
        })
        .collect();
    (scan(name, s.complete, &[category]), findings)
}

/// Replays scans through the engine, appending the changelog records of
/// what each scan touched to one log, and restores a state from the log.
fn replay(steps: &[Step], resolution: std::time::Duration) -> (State, State, usize) {
    replay_as(steps, resolution, None)
}

/// [`replay`], the records written by a [`changelog::Writer`] of `format`
/// (`None`: as JSON by `changelog::records`).
fn replay_as(
    steps: &[Step],
    resolution: std::time::Duration,
    format: Option<custody::service::changelog::ChangelogFormat>,
) -> (State, State, usize) {
    use custody::service::changelog;
    let mut writer = format.map(changelog::Writer::new);
    let engine = Engine::new(&Config::default());
    let spec = target().to_string();
    let mut state = State::new();
    let mut log = Vec::new();
    let mut at = t0();
    for s in steps {
        at += Duration::minutes(s.minutes);
        let (meta, findings) = step_findings(s);
        let mut out = Output::default();
        let touched = engine.scan_touched(&mut state, &meta, findings, at, &mut out, resolution);
        log.extend(match writer.as_mut() {
            Some(w) => w.records(&state, &spec, &touched.findings, Some(&touched.tickets)),
            None => changelog::records(&state, &spec, &touched.findings, Some(&touched.tickets)),
        });
        if touched.baseline {
            log.extend(changelog::baseline_record(&state, &spec));
        }
    }
    let mut restorer = changelog::Restorer::new();
    for r in &log {
        restorer.apply(&r.key, r.value.as_deref()).unwrap();
    }
    // A scan that reported nothing leaves an empty target in memory, which
    // has no record to restore from.
    state.targets.retain(|_, ts| {
        !ts.findings.is_empty() || !ts.tickets.is_empty() || !ts.baselined.is_empty()
    });
    (state, restorer.finish(), log.len())
}

proptest! {
    /// A changelog that holds only what each scan changed restores the
    /// state exactly when `last_seen` is written at every scan, and up to
    /// `last_seen` (at most one period old) when it is written once a
    /// period.
    #[test]
    fn changelog_of_changes_restores_the_state(steps in proptest::collection::vec(step(), 1..12)) {
        let (live, restored, _) = replay(&steps, std::time::Duration::ZERO);
        prop_assert_eq!(&restored, &live);
        // The same in the binary form.
        let binary = Some(custody::service::changelog::ChangelogFormat::Binary);
        let (live, restored, _) = replay_as(&steps, std::time::Duration::ZERO, binary);
        prop_assert_eq!(&restored, &live);
        let hour = std::time::Duration::from_secs(3600);
        let (live, restored, _) = replay(&steps, hour);
        let spec = target().to_string();
        let (Some(l), Some(r)) = (live.targets.get(&spec), restored.targets.get(&spec)) else {
            prop_assert!(live.targets.is_empty() && restored.targets.is_empty());
            return Ok(());
        };
        prop_assert_eq!(&l.tickets, &r.tickets);
        prop_assert_eq!(l.findings.len(), r.findings.len());
        for (fp, lrec) in &l.findings {
            let rrec = &r.findings[fp];
            prop_assert!(rrec.last_seen <= lrec.last_seen);
            prop_assert!(lrec.last_seen - rrec.last_seen < Duration::hours(1));
            let mut same = rrec.clone();
            same.last_seen = lrec.last_seen;
            prop_assert_eq!(&same, lrec);
        }
    }
}

proptest! {
    /// A scan sent again with nothing applied in between, applied by
    /// `rescan_unchanged` from the fingerprints its first application
    /// observed (what the service does instead of decoding the same report
    /// twice), leaves the very state, events and changelog records that
    /// applying it in full does; after scans of other scanners, moves,
    /// resolutions and reopenings alike.
    #[test]
    fn an_unchanged_rescan_is_the_same_as_a_full_one(
        steps in proptest::collection::vec(step(), 1..12),
        later in 0i64..150,
        hourly in any::<bool>(),
    ) {
        let engine = Engine::new(&Config::default());
        let resolution = if hourly {
            std::time::Duration::from_secs(3600)
        } else {
            std::time::Duration::ZERO
        };
        let mut full = State::new();
        let mut skipped = State::new();
        let mut at = t0();
        for s in &steps {
            at += Duration::minutes(s.minutes);
            let (meta, findings) = step_findings(s);
            let mut out = Output::default();
            let first = engine.scan_touched(&mut full, &meta, findings.clone(), at, &mut out, resolution);
            let mut out2 = Output::default();
            let first2 = engine.scan_touched(&mut skipped, &meta, findings.clone(), at, &mut out2, resolution);
            prop_assert_eq!(&first, &first2);
            let again = at + Duration::minutes(later);
            let mut out = Output::default();
            let whole = engine.scan_touched(&mut full, &meta, findings, again, &mut out, resolution);
            prop_assert!(out.findings.is_empty() && out.tickets.is_empty());
            let quick = engine
                .rescan_unchanged(&mut skipped, &meta.target, &first.observed, again, resolution);
            prop_assert!(quick.is_some(), "the state is as the first application left it");
            let quick = quick.unwrap_or_default();
            prop_assert_eq!(&quick.findings, &whole.findings);
            prop_assert_eq!(&quick.tickets, &whole.tickets);
            prop_assert_eq!(&skipped, &full);
            at = again;
        }
    }
}

#[test]
fn an_unchanged_rescan_refuses_a_state_changed_since() {
    let engine = Engine::new(&Config::default());
    let sast = scan("bandit", true, &[Category::Sast]);
    let report = |n: u32| -> Vec<Finding> {
        (0..n)
            .map(|i| {
                code(
                    "bandit",
                    "B101",
                    "app/views.py",
                    10 + i * 3,
                    &format!("call_{i}()"),
                )
            })
            .collect()
    };
    let mut state = State::new();
    let mut out = Output::default();
    let hour = std::time::Duration::from_secs(3600);
    let first = engine.scan_touched(&mut state, &sast, report(3), t0(), &mut out, hour);
    assert_eq!(first.observed.len(), 3);
    // A complete scan reporting two of the three resolves the third: the
    // first report sent again must reopen it, which only a full
    // application does.
    let _ = engine.scan_touched(&mut state, &sast, report(2), t0(), &mut out, hour);
    let before = state.clone();
    let at = t0() + Duration::minutes(1);
    assert!(engine
        .rescan_unchanged(&mut state, &sast.target, &first.observed, at, hour)
        .is_none());
    assert_eq!(state, before, "a refused rescan changes nothing");
    // So is a list of fingerprints out of order, even on the state the
    // scan left.
    let mut fresh = State::new();
    let first = engine.scan_touched(&mut fresh, &sast, report(3), t0(), &mut out, hour);
    let reversed: Vec<String> = first.observed.iter().rev().cloned().collect();
    assert!(engine
        .rescan_unchanged(&mut fresh, &sast.target, &reversed, at, hour)
        .is_none());
    assert!(engine
        .rescan_unchanged(&mut fresh, &sast.target, &first.observed, at, hour)
        .is_some());
    // An unknown target is refused too.
    let other = "repo:github.com/acme/other".parse::<Target>().unwrap();
    assert!(engine
        .rescan_unchanged(&mut state, &other, &first.observed, at, hour)
        .is_none());
}

#[test]
fn a_rescan_writes_nothing_until_last_seen_enters_a_new_hour() {
    use custody::service::changelog;
    let engine = Engine::new(&Config::default());
    let hour = std::time::Duration::from_secs(3600);
    let sast = scan("bandit", true, &[Category::Sast]);
    let findings = |shift: u32| -> Vec<Finding> {
        (0..6)
            .map(|i| {
                code(
                    "bandit",
                    &format!("B{}", 100 + i % 2),
                    "app/views.py",
                    10 + i * 3 + shift,
                    &format!("call_{i}()"),
                )
            })
            .collect()
    };
    let mut state = State::new();
    let at = t0() + Duration::minutes(5);
    // One scan `minutes` after the first: its events' kinds and the counts
    // of finding and ticket records it touched.
    let mut scan = |fs: Vec<Finding>, minutes: i64, resolution| {
        let mut out = Output::default();
        let at = at + Duration::minutes(minutes);
        let t = engine.scan_touched(&mut state, &sast, fs, at, &mut out, resolution);
        (kinds(&out), (t.findings.len(), t.tickets.len()))
    };
    let quiet = (vec![], vec![]);
    assert_eq!(scan(findings(0), 0, hour).1, (6, 2));
    // The same scan 50 minutes later, same hour: no events, no records.
    assert_eq!(scan(findings(0), 50, hour), (quiet.clone(), (0, 0)));
    // Code moved down two lines: no events, but the stored locations
    // changed, so every finding's record is written; no ticket changed.
    assert_eq!(scan(findings(2), 52, hour), (quiet.clone(), (6, 0)));
    // The next hour: last_seen is written once more.
    assert_eq!(scan(findings(2), 60, hour), (quiet.clone(), (6, 0)));
    // With resolution zero every rescan writes every finding it reports.
    let zero = std::time::Duration::ZERO;
    assert_eq!(scan(findings(2), 61, zero), (quiet, (6, 0)));
    // One finding gone from a complete scan: it and its ticket are written.
    let mut fewer = findings(2);
    fewer.pop();
    assert_eq!(
        scan(fewer, 62, hour),
        ((vec![F::Resolved], vec![T::Updated]), (1, 1))
    );
    // The records written are those named.
    let spec = target().to_string();
    let fp = state.targets[&spec].findings.keys().next().unwrap().clone();
    let key = state.targets[&spec].tickets.keys().next().unwrap().clone();
    let recs = changelog::records(&state, &spec, &[fp], Some(&[key]));
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r.value.is_some()));
}

/// A scan of `scanner` at a commit and ref, with its own scan id.
fn scan_at(scanner: &str, id: &str, complete: bool, commit: &str) -> ScanMeta {
    ScanMeta {
        scan_id: id.into(),
        commit: Some(commit.into()),
        git_ref: Some("refs/heads/main".into()),
        ..scan(scanner, complete, &[Category::Sast])
    }
}

#[test]
fn findings_of_the_first_scan_are_inherited_and_later_ones_introduced_by_their_scan() {
    let mut w = World::new();
    let first = w.scan(
        &scan_at("bandit", "s1", true, "aaa111"),
        vec![eval(10)],
        t0(),
    );
    let o = &first.findings[0].origin;
    assert_eq!(o.provenance, Provenance::Inherited);
    assert_eq!(o.commit.as_deref(), Some("aaa111"));
    assert_eq!(o.at, t0());
    let at = t0() + Duration::days(2);
    let exec = code("bandit", "B102", "app/run.py", 3, "exec(code)");
    let second = w.scan(
        &scan_at("bandit", "s2", true, "bbb222"),
        vec![eval(10), exec],
        at,
    );
    assert_eq!(kinds(&second).0, vec![F::Opened], "only the new one");
    let o = &second.findings[0].origin;
    assert_eq!(o.provenance, Provenance::Introduced);
    assert_eq!(
        (
            o.commit.as_deref(),
            o.git_ref.as_deref(),
            o.scan_id.as_deref(),
            o.at
        ),
        (Some("bbb222"), Some("refs/heads/main"), Some("s2"), at)
    );
    // Kept in the state record, and on every later event of the finding.
    let fp = second.findings[0].fingerprint.clone();
    let rec = &w.state.targets[&target().to_string()].findings[&fp];
    assert_eq!(rec.provenance(), Provenance::Introduced);
    let gone = w.scan(
        &scan_at("bandit", "s3", true, "ccc333"),
        vec![eval(10)],
        at + Duration::days(1),
    );
    assert_eq!(kinds(&gone).0, vec![F::Resolved]);
    assert_eq!(gone.findings[0].origin.commit.as_deref(), Some("bbb222"));
    assert_eq!(gone.findings[0].previous_status, Some(Status::Open));
}

#[test]
fn a_first_scan_in_parts_is_inherited_until_it_completes_and_a_new_scanner_has_its_own_baseline() {
    let mut w = World::new();
    // The first scan arrives in two parts: the first incomplete.
    let a = w.scan(&scan_at("bandit", "s1", false, "aaa"), vec![eval(10)], t0());
    let exec = code("bandit", "B102", "app/run.py", 3, "exec(code)");
    let b = w.scan(
        &scan_at("bandit", "s1", true, "aaa"),
        vec![eval(10), exec],
        t0(),
    );
    assert_eq!(a.findings[0].origin.provenance, Provenance::Inherited);
    assert_eq!(b.findings[0].origin.provenance, Provenance::Inherited);
    // semgrep scans the target for the first time later: what it finds
    // was there before custody watched it with semgrep.
    let sg = code(
        "semgrep",
        "python.eval",
        "app/views.py",
        10,
        "return eval(expr)",
    );
    let s = w.scan(
        &scan_at("semgrep", "g1", true, "bbb"),
        vec![sg],
        t0() + Duration::days(1),
    );
    assert_eq!(s.findings[0].origin.provenance, Provenance::Inherited);
    // A bandit scan after its first complete one introduces.
    let pickle = code("bandit", "B301", "app/cache.py", 8, "pickle.loads(blob)");
    let n = w.scan(
        &scan_at("bandit", "s2", true, "ccc"),
        vec![
            eval(10),
            code("bandit", "B102", "app/run.py", 3, "exec(code)"),
            pickle,
        ],
        t0() + Duration::days(2),
    );
    assert_eq!(n.findings.len(), 1);
    assert_eq!(n.findings[0].origin.provenance, Provenance::Introduced);
}

#[test]
fn a_first_complete_scan_with_no_findings_makes_the_next_findings_introduced() {
    let mut w = World::new();
    let o = w.scan(&scan_at("bandit", "s1", true, "aaa"), vec![], t0());
    assert!(o.findings.is_empty());
    let o = w.scan(
        &scan_at("bandit", "s2", true, "bbb"),
        vec![eval(10)],
        t0() + Duration::hours(1),
    );
    assert_eq!(o.findings[0].origin.provenance, Provenance::Introduced);
}

#[test]
fn state_written_without_origins_loads_as_inherited_and_later_findings_are_introduced() {
    let mut w = World::new();
    w.scan(&scan_at("bandit", "s1", true, "aaa"), vec![eval(10)], t0());
    // The state as the previous version wrote it: no origin on records, no
    // baseline on targets.
    let mut json = serde_json::to_value(&w.state).unwrap();
    for ts in json["targets"].as_object_mut().unwrap().values_mut() {
        let ts = ts.as_object_mut().unwrap();
        assert!(ts.remove("baselined").is_some());
        for rec in ts["findings"].as_object_mut().unwrap().values_mut() {
            assert!(rec.as_object_mut().unwrap().remove("origin").is_some());
        }
    }
    let mut old: State = serde_json::from_value(json).unwrap();
    let spec = target().to_string();
    let rec = old.targets[&spec].findings.values().next().unwrap();
    assert_eq!(rec.origin, None);
    assert_eq!(rec.provenance(), Provenance::Inherited);
    for ts in old.targets.values_mut() {
        ts.settle_baseline();
    }
    w.state = old;
    let exec = code("bandit", "B102", "app/run.py", 3, "exec(code)");
    let o = w.scan(
        &scan_at("bandit", "s2", true, "bbb"),
        vec![eval(10), exec],
        t0() + Duration::days(1),
    );
    assert_eq!(o.findings.len(), 1);
    assert_eq!(o.findings[0].origin.provenance, Provenance::Introduced);
    // The old finding's events say inherited, at its first sighting.
    let fp = w.state.targets[&spec]
        .findings
        .keys()
        .find(|k| **k != o.findings[0].fingerprint)
        .unwrap()
        .clone();
    let gone = w.scan(
        &scan_at("bandit", "s3", true, "ccc"),
        vec![],
        t0() + Duration::days(2),
    );
    let e = gone.findings.iter().find(|e| e.fingerprint == fp).unwrap();
    assert_eq!(e.origin.provenance, Provenance::Inherited);
    assert_eq!((e.origin.at, e.origin.commit.as_deref()), (t0(), None));
}
