//! Team accountability metrics: after a known scenario the scraped values
//! equal what the findings say; team labels stay bounded.

use crate::service::{old_new, send_raw_at, wait_done, Harness};
use custody::engine::{Attribute, Engine, Output};
use custody::metrics::Metrics;
use custody::model::{
    Attribution, Finding, FindingEvent, FindingEventKind, ScanMeta, Status, Target,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Parses the Prometheus text format: `name{sorted labels}` -> value.
pub fn scrape(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let key = match series.split_once('{') {
            Some((name, rest)) => {
                let mut labels: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
                labels.sort_unstable();
                format!("{name}{{{}}}", labels.join(","))
            }
            None => series.to_string(),
        };
        out.insert(key, value.parse::<f64>().unwrap());
    }
    out
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[test]
fn scraped_team_metrics_equal_what_the_findings_say() {
    let mut h = Harness::new(2);
    h.config.service.tick_interval = Duration::from_secs(1);
    let service = h.start_owned();
    let (old, new) = old_new("bandit");
    let now = chrono::Utc::now();
    // Release 6.4.2 scanned 40 days ago, 6.5 31 days ago: what 6.5 fixed
    // took 9 days to remediate; high findings (30-day SLA) are past due.
    let day = 86_400_000i64;
    let t0 = now.timestamp_millis() - 40 * day;
    let t1 = now.timestamp_millis() - 31 * day;
    let target = "repo:github.com/tornadoweb/tornado";
    send_raw_at(&h, target, &std::fs::read(old).unwrap(), t0);
    send_raw_at(&h, target, &std::fs::read(new).unwrap(), t1);
    wait_done(&service, 2);
    // A tick (every second) raises the breaches; the gauges refresh every
    // second.
    std::thread::sleep(Duration::from_millis(3500));
    let events: Vec<FindingEvent> = h.findings();

    // What the findings say: the latest event of each finding.
    let mut latest: BTreeMap<&str, &FindingEvent> = BTreeMap::new();
    for e in &events {
        latest.insert(&e.fingerprint, e);
    }
    let mut open: BTreeMap<(String, &str), f64> = BTreeMap::new();
    let mut breached: BTreeMap<(String, &str), f64> = BTreeMap::new();
    for e in latest.values() {
        if e.status == Status::Open {
            let team = e.team.clone().unwrap();
            *open.entry((team.clone(), e.severity.as_str())).or_default() += 1.0;
            if e.due_at.is_some_and(|d| d <= now) {
                *breached.entry((team, e.severity.as_str())).or_default() += 1.0;
            }
        }
    }
    let mut counted: BTreeMap<(&str, String, &str), f64> = BTreeMap::new();
    for e in &events {
        *counted
            .entry((
                e.event.as_str(),
                e.team.clone().unwrap(),
                e.severity.as_str(),
            ))
            .or_default() += 1.0;
    }
    assert!(!breached.is_empty(), "the scenario breaches SLAs");

    let m = scrape(&service.metrics.render());
    let series = |name: &str, team: &str, sev: &str| {
        get(&m, &format!("{name}{{severity=\"{sev}\",team=\"{team}\"}}"))
    };
    for ((team, sev), n) in &open {
        assert_eq!(
            series("custody_findings_open", team, sev),
            *n,
            "{team} {sev}"
        );
    }
    let total_open: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("custody_findings_open{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total_open, open.values().sum::<f64>());
    for ((team, sev), n) in &breached {
        assert_eq!(series("custody_findings_sla_breached", team, sev), *n);
        assert_eq!(series("custody_sla_breaches_total", team, sev), *n);
    }
    for ((kind, team, sev), n) in &counted {
        let name = match *kind {
            "opened" => "custody_findings_opened_total",
            "resolved" => "custody_findings_resolved_total",
            _ => continue,
        };
        assert_eq!(series(name, team, sev), *n, "{name} {team} {sev}");
    }
    // Every owned finding is attributed in this scenario.
    for sev in ["critical", "high", "medium", "low", "info"] {
        assert_eq!(
            get(
                &m,
                &format!("custody_findings_unattributed{{severity=\"{sev}\"}}")
            ),
            0.0
        );
    }
    // 17 remediated after 9 days: above the 7-day bucket, within 14 days.
    let bucket = |le: &str| -> f64 {
        m.iter()
            .filter(|(k, _)| {
                k.starts_with("custody_time_to_remediate_seconds_bucket{")
                    && k.contains(&format!("le=\"{le}\""))
            })
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(bucket("604800"), 0.0);
    assert_eq!(bucket("1209600"), 17.0);
    // The scorecard agrees.
    let card = service.metrics.scorecard();
    for (team, _) in open.keys() {
        let want: f64 = open
            .iter()
            .filter(|((t, _), _)| t == team)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(card.teams[team].open_total as f64, want);
    }
    assert_eq!(card.unattributed_share, 0.0);
    let resolved: u64 = card.teams.values().map(|t| t.resolved).sum();
    assert_eq!(resolved, 17);
    let mttr = card
        .teams
        .values()
        .filter_map(|t| t.mttr_seconds)
        .next()
        .unwrap();
    assert!((mttr - 9.0 * 86_400.0).abs() < 1.0, "{mttr}");
    service.stop().unwrap();
}

/// Gives every finding a different team nobody configured.
struct EveryoneElse(std::sync::atomic::AtomicUsize);

impl Attribute for EveryoneElse {
    fn attribute(&self, _: &Target, _: &Finding) -> Arc<Attribution> {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut a = Attribution::unattributed();
        a.team = Some(format!("team-{n}"));
        a.source = "finding".into();
        Arc::new(a)
    }
}

#[test]
fn unknown_owners_never_grow_the_series_past_the_cap() {
    let metrics = Metrics::new();
    metrics.set_teams(["payments", "web"], 2);
    let engine = Engine::new(&custody::config::Config::default())
        .with_attribution(Box::new(EveryoneElse(Default::default())));
    let bytes = std::fs::read("tests/fixtures/churn/bandit-6.4.2.sarif").unwrap();
    let (_, report) = custody::normalize::decode(&bytes, None, engine.decode_context()).unwrap();
    let mut state = custody::lifecycle::State::new();
    let mut out = Output::default();
    for i in 0..20 {
        let scan = ScanMeta {
            scan_id: format!("s{i}"),
            target: format!("repo:github.com/acme/r{i}").parse().unwrap(),
            commit: None,
            git_ref: None,
            complete: true,
            coverage: report.coverage.clone(),
            rule_help: Default::default(),
        };
        engine.scan_into(
            &mut state,
            &scan,
            report.findings.clone(),
            chrono::Utc::now(),
            &mut out,
        );
    }
    // 5,440 findings, each with its own unknown team.
    assert_eq!(out.findings.len(), 20 * 272);
    for e in &out.findings {
        assert_eq!(e.event, FindingEventKind::Opened);
        metrics.finding_event(e);
    }
    metrics.set_state([&state], chrono::Utc::now());
    let text = metrics.render();
    let teams: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split("team=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(teams.into_iter().collect::<Vec<_>>(), vec!["other"]);
    let open_series = text
        .lines()
        .filter(|l| l.starts_with("custody_findings_open{"))
        .count();
    assert!(open_series <= 5, "{open_series} series");
}

/// Gives every finding to one team.
struct Team(&'static str);

impl Attribute for Team {
    fn attribute(&self, _: &Target, _: &Finding) -> Arc<Attribution> {
        let mut a = Attribution::unattributed();
        a.team = Some(self.0.into());
        a.source = "finding".into();
        Arc::new(a)
    }
}

#[test]
fn team_sla_overrides_set_the_due_dates() {
    let config = custody::config::Config::parse(
        "[sla]\nhigh = 30\nmedium = 90\n[sla.teams.payments]\nhigh = 5\n",
        "t.toml",
    )
    .unwrap();
    let bytes = std::fs::read("tests/fixtures/churn/bandit-6.4.2.sarif").unwrap();
    for (team, high_days) in [("payments", 5), ("web", 30)] {
        let engine = Engine::new(&config).with_attribution(Box::new(Team(team)));
        let (_, report) =
            custody::normalize::decode(&bytes, None, engine.decode_context()).unwrap();
        let scan = ScanMeta {
            scan_id: "s".into(),
            target: "repo:github.com/tornadoweb/tornado".parse().unwrap(),
            commit: None,
            git_ref: None,
            complete: true,
            coverage: report.coverage,
            rule_help: Default::default(),
        };
        let mut state = custody::lifecycle::State::new();
        let out = engine.scan(&mut state, &scan, report.findings, chrono::Utc::now());
        let mut checked = 0;
        for e in &out.findings {
            let days = (e.due_at.unwrap() - e.at).num_days();
            match e.severity.as_str() {
                "high" => assert_eq!(days, high_days, "{team}"),
                "medium" => assert_eq!(days, 90, "{team}"),
                _ => continue,
            }
            checked += 1;
        }
        assert!(checked > 0, "no high or medium finding");
    }
}

#[test]
fn decisions_flow_through_the_service_into_the_accepted_gauges() {
    use custody::kafka::publish::DEFAULT_CHUNK_BYTES;
    use custody::lifecycle::{DecisionKind, DecisionRecord};
    let h = Harness::new(1);
    let service = h.start_owned();
    let target = "repo:github.com/tornadoweb/tornado";
    let (old, _) = old_new("semgrep");
    let n = h.publish(target, "semgrep", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    let opened = h.findings();
    let (a, b) = (&opened[0], &opened[1]);
    let now = chrono::Utc::now();
    let decision = |fp: &str, kind: DecisionKind, days: Option<i64>| DecisionRecord {
        target: target.parse().unwrap(),
        fingerprint: fp.to_string(),
        decision: kind,
        expires_at: days.map(|d| now + chrono::Duration::days(d)),
        reason: "compensating control".into(),
        author: "alice@acme.example".into(),
        decided_at: now,
    };
    let p = h.publisher();
    let topic = &h.config.service.reports_topics[0];
    p.send_decision(
        topic,
        &decision(&a.fingerprint, DecisionKind::AcceptRisk, Some(3)),
    )
    .unwrap();
    p.send_decision(
        topic,
        &decision(&b.fingerprint, DecisionKind::FalsePositive, None),
    )
    .unwrap();
    p.send_decision(
        topic,
        &decision("no-such-finding", DecisionKind::FalsePositive, None),
    )
    .unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
    wait_done(&service, n + 3);
    let events = h.findings();
    let kinds: Vec<(&str, FindingEventKind)> = events[opened.len()..]
        .iter()
        .map(|e| (e.fingerprint.as_str(), e.event))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (a.fingerprint.as_str(), FindingEventKind::Accepted),
            (b.fingerprint.as_str(), FindingEventKind::FalsePositive),
        ]
    );
    std::thread::sleep(Duration::from_millis(1500));
    let m = scrape(&service.metrics.render());
    let team = a.team.clone().unwrap();
    assert_eq!(
        get(&m, &format!("custody_findings_accepted{{team=\"{team}\"}}")),
        1.0
    );
    assert_eq!(
        get(
            &m,
            &format!("custody_findings_acceptance_expiring{{team=\"{team}\"}}")
        ),
        1.0
    );
    assert_eq!(
        get(&m, "custody_dead_lettered_total{reason=\"bad_decision\"}"),
        1.0
    );
    let open: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("custody_findings_open{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(open, opened.len() as f64 - 2.0);
    service.stop().unwrap();
}

/// An engine that attributes every finding to the team `web`, and
/// Bandit's reports of the two tornado releases decoded by it.
fn web_engine_and_bandit_reports() -> (
    Engine,
    custody::normalize::Report,
    custody::normalize::Report,
) {
    let engine =
        Engine::new(&custody::config::Config::default()).with_attribution(Box::new(Team("web")));
    let decode = |path: &str| {
        let bytes = std::fs::read(path).unwrap();
        custody::normalize::decode(&bytes, None, engine.decode_context())
            .unwrap()
            .1
    };
    let (old, new) = old_new("bandit");
    let (old, new) = (decode(&old), decode(&new));
    (engine, old, new)
}

#[test]
fn introduced_findings_and_their_time_to_fix_count_against_the_team_unless_excused() {
    use custody::lifecycle::{DecisionKind, DecisionRecord, State};
    use custody::model::Provenance;
    let metrics = Metrics::new();
    metrics.set_teams(["web"], 10);
    let (engine, old, new) = web_engine_and_bandit_reports();
    let target: Target = "repo:github.com/tornadoweb/tornado".parse().unwrap();
    let meta = |id: &str, commit: &str| ScanMeta {
        scan_id: id.into(),
        target: target.clone(),
        commit: Some(commit.into()),
        git_ref: Some("refs/tags/v6.5".into()),
        complete: true,
        coverage: old.coverage.clone(),
        rule_help: Default::default(),
    };
    let t0 = chrono::Utc::now() - chrono::Duration::days(20);
    let t1 = t0 + chrono::Duration::days(5);
    let t2 = t1 + chrono::Duration::days(3);
    let mut state = State::new();
    let feed = |o: &Output| o.findings.iter().for_each(|e| metrics.finding_event(e));
    // 6.4.2 first: everything inherited. 6.5 then brings new findings.
    feed(&engine.scan(&mut state, &meta("a", "v6.4.2"), old.findings.clone(), t0));
    let second = engine.scan(&mut state, &meta("b", "v6.5"), new.findings.clone(), t1);
    feed(&second);
    let introduced: Vec<&FindingEvent> = second
        .findings
        .iter()
        .filter(|e| e.event == FindingEventKind::Opened)
        .collect();
    assert!(introduced.len() >= 2, "the fixture's 6.5 adds findings");
    assert!(introduced
        .iter()
        .all(|e| e.origin.provenance == Provenance::Introduced
            && e.origin.commit.as_deref() == Some("v6.5")));
    // One of them has its risk accepted: visible, not counted against.
    let excused = &introduced[0];
    let d = DecisionRecord {
        target: target.clone(),
        fingerprint: excused.fingerprint.clone(),
        decision: DecisionKind::AcceptRisk,
        expires_at: Some(t1 + chrono::Duration::days(90)),
        reason: "test code".into(),
        author: "alice@acme.example".into(),
        decided_at: t1,
    };
    feed(&engine.decide(&mut state, &d, t1).unwrap());
    metrics.set_state([&state], t1);
    let m = scrape(&metrics.render());
    let open_introduced: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("custody_findings_introduced_open{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(open_introduced as usize, introduced.len() - 1);
    assert_eq!(
        get(
            &m,
            r#"custody_findings_introduced_excused{status="accepted",team="web"}"#
        ),
        1.0
    );
    let card = metrics.scorecard();
    let web = &card.teams["web"];
    assert_eq!(web.open_introduced as usize, introduced.len() - 1);
    assert_eq!(
        (web.open_introduced + web.open_inherited),
        web.open_total,
        "every open finding is one or the other"
    );
    // Counted at t1 (the accepted one not): all introduced this week.
    assert_eq!(web.introduced_week as usize, introduced.len() - 1);
    assert_eq!(web.introduced_month, web.introduced_week);
    metrics.set_state([&state], t1 + chrono::Duration::days(8));
    let card = metrics.scorecard();
    assert_eq!(card.teams["web"].introduced_week, 0);
    assert_eq!(
        card.teams["web"].introduced_month as usize,
        introduced.len() - 1
    );
    // Back to the 6.4.2 code: what 6.5 introduced is fixed, 3 days later;
    // the accepted one goes too, and does not count as fixed.
    feed(&engine.scan(
        &mut state,
        &meta("c", "v6.4.2-again"),
        old.findings.clone(),
        t2,
    ));
    let m = scrape(&metrics.render());
    let fixed: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("custody_time_to_fix_introduced_seconds_count{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(fixed as usize, introduced.len() - 1);
    let sum: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("custody_time_to_fix_introduced_seconds_sum{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(sum, fixed * 3.0 * 86_400.0);
    let opened: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("custody_findings_introduced_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(opened as usize, introduced.len());
}

/// The scorecard's MTTR and resolved count come from the resolved findings
/// the state keeps, not from the events this instance saw: a new instance
/// that restores the state from its changelog, and saw no event, shows
/// the same figures.
#[test]
fn mttr_on_the_scorecard_comes_from_the_state_and_survives_a_restore() {
    use custody::lifecycle::State;
    use custody::service::changelog::{baseline_record, records, Restorer};
    let (engine, old, new) = web_engine_and_bandit_reports();
    let target: Target = "repo:github.com/tornadoweb/tornado".parse().unwrap();
    let spec = target.to_string();
    let meta = |id: &str| ScanMeta {
        scan_id: id.into(),
        target: target.clone(),
        commit: None,
        git_ref: None,
        complete: true,
        coverage: old.coverage.clone(),
        rule_help: Default::default(),
    };
    let restored = |state: &State| {
        let fps: Vec<String> = state.targets[&spec].findings.keys().cloned().collect();
        let mut recs = records(state, &spec, &fps, None);
        recs.extend(baseline_record(state, &spec));
        let mut r = Restorer::new();
        for rec in &recs {
            r.apply(&rec.key, rec.value.as_deref()).unwrap();
        }
        r.finish()
    };
    // What a new instance shows: fresh metrics, no event seen.
    let card_after_restart = |state: &State, now| {
        let metrics = Metrics::new();
        metrics.set_teams(["web"], 10);
        metrics.set_state([&restored(state)], now);
        let t = metrics.scorecard().teams.remove("web").unwrap();
        (t.resolved, t.mttr_seconds)
    };
    let resolved = |o: &Output| {
        o.findings
            .iter()
            .filter(|e| e.event == FindingEventKind::Resolved)
            .count() as u64
    };
    let day = 86_400.0;
    let t0 = chrono::Utc::now() - chrono::Duration::days(20);
    let t1 = t0 + chrono::Duration::days(5);
    let t2 = t1 + chrono::Duration::days(3);
    let mut state = State::new();
    let first = engine.scan(&mut state, &meta("a"), old.findings.clone(), t0);
    assert_eq!(resolved(&first), 0);
    assert_eq!(card_after_restart(&state, t0), (0, None));
    // 6.5 fixes some of 6.4.2's findings, 5 days after they were seen.
    let second = engine.scan(&mut state, &meta("b"), new.findings.clone(), t1);
    let n = resolved(&second);
    assert!(n > 0, "the fixture's 6.5 fixes findings");
    let (count, mttr) = card_after_restart(&state, t1);
    assert_eq!(count, n);
    assert!((mttr.unwrap() - 5.0 * day).abs() < 1.0, "{mttr:?}");
    // Back to 6.4.2: those reopen (no longer resolved), and what 6.5
    // brought resolves 3 days after it was first seen.
    let third = engine.scan(&mut state, &meta("c"), old.findings.clone(), t2);
    let m = resolved(&third);
    assert!(m > 0, "the fixture's 6.5 adds findings");
    let (count, mttr) = card_after_restart(&state, t2);
    assert_eq!(count, m);
    assert!((mttr.unwrap() - 3.0 * day).abs() < 1.0, "{mttr:?}");
}

/// A team grouped by (team, rule): its page lists each target's part of a
/// ticket under the key of the ticket its tracker has (the one the ticket
/// events carry), not the part's own key.
#[test]
fn a_team_rule_tickets_rows_carry_the_trackers_ticket_key() {
    use custody::lifecycle::State;
    use custody::model::ticket::Grouping;
    let mut config = custody::config::Config::default();
    config.tickets.grouping = Grouping::TeamRule;
    let engine = Engine::new(&config).with_attribution(Box::new(Team("web")));
    let (_, old, _) = web_engine_and_bandit_reports();
    let metrics = Metrics::new();
    metrics.set_teams(["web"], 10);
    let mut state = State::new();
    let now = chrono::Utc::now();
    for spec in ["repo:github.com/acme/api", "repo:github.com/acme/web"] {
        let meta = ScanMeta {
            scan_id: spec.into(),
            target: spec.parse().unwrap(),
            commit: None,
            git_ref: None,
            complete: true,
            coverage: old.coverage.clone(),
            rule_help: Default::default(),
        };
        engine.scan(&mut state, &meta, old.findings.clone(), now);
    }
    metrics.set_state([&state], now);
    let card = metrics.scorecard();
    let rows = &card.teams["web"].tickets;
    assert!(!rows.is_empty());
    let targets: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets.len(), 2, "each target's part is listed");
    for r in rows {
        assert_eq!(
            r.key,
            custody::ticket::team_rule_key(Some("web"), &r.rule),
            "{r:?}"
        );
    }
}
