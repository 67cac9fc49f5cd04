//! `custody demo`: the whole service on an embedded Kafka-protocol broker
//! (librdkafka's mock cluster, in-process, real TCP), with bundled reports
//! from real scanners and a bundled ownership example, published through
//! the real publish path and consumed by the real service path.
//!
//! The bundled reports are the test fixtures (see their READMEs): bandit,
//! ruff and semgrep over tornado 6.4.2 and then 6.5, so the second round
//! opens what 6.5 introduced and resolves what it removed; checkov over
//! kopf's IaC and bandit over paramiko, which the ownership example does
//! not cover (they fall to its fallback team); and one message that is not
//! a report, to show the dead-letter path.

use crate::config::Config;
use crate::kafka::mock::{create_mock_topics, read_all};
use crate::kafka::publish::{PublishOptions, Publisher};
use crate::kafka::service::Service;
use crate::model::{
    FindingEvent, Provenance, Severity, Status, Target, TicketEvent, TicketEventKind,
};
use crate::service::http;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TORNADO: &str = "repo:github.com/tornadoweb/tornado";

/// `(target, scanner, file name, bytes)` in publishing order.
fn bundled() -> Vec<(&'static str, &'static str, &'static str, &'static [u8])> {
    vec![
        (
            TORNADO,
            "bandit",
            "bandit-6.4.2.sarif",
            include_bytes!("../../tests/fixtures/churn/bandit-6.4.2.sarif"),
        ),
        (
            TORNADO,
            "ruff",
            "ruff-6.4.2.sarif",
            include_bytes!("../../tests/fixtures/churn/ruff-6.4.2.sarif"),
        ),
        (
            TORNADO,
            "semgrep",
            "semgrep-6.4.2.json",
            include_bytes!("../../tests/fixtures/churn/semgrep-6.4.2.json"),
        ),
        (
            "repo:github.com/paramiko/paramiko",
            "bandit",
            "bandit-paramiko-4.0.0.sarif",
            include_bytes!("../../tests/fixtures/bandit/bandit-paramiko-4.0.0.sarif"),
        ),
        (
            "repo:github.com/nolar/kopf",
            "checkov",
            "checkov results_sarif.sarif",
            include_bytes!("../../tests/fixtures/checkov/results_sarif.sarif"),
        ),
        (
            TORNADO,
            "bandit",
            "bandit-6.5.sarif",
            include_bytes!("../../tests/fixtures/churn/bandit-6.5.sarif"),
        ),
        (
            TORNADO,
            "ruff",
            "ruff-6.5.sarif",
            include_bytes!("../../tests/fixtures/churn/ruff-6.5.sarif"),
        ),
        (
            TORNADO,
            "semgrep",
            "semgrep-6.5.json",
            include_bytes!("../../tests/fixtures/churn/semgrep-6.5.json"),
        ),
    ]
}

const OWNERS_TOML: &str = include_str!("../../tests/fixtures/ownership/owners.toml");
const CODEOWNERS: &str = include_str!("../../tests/fixtures/ownership/tornado.CODEOWNERS");
const CATALOG: &str = include_str!("../../tests/fixtures/ownership/catalog-info.yaml");

/// Per-team results read back from the output topics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TeamRow {
    /// Open findings by severity.
    pub open: BTreeMap<Severity, usize>,
    /// Resolved findings.
    pub resolved: usize,
    /// Open findings a scan after the target's first brought (shipped).
    pub introduced: usize,
    /// Open findings present in the target's first scan.
    pub inherited: usize,
    /// Tickets opened.
    pub tickets_opened: usize,
}

/// What the demo saw.
#[derive(Debug, Default)]
pub struct DemoOutcome {
    /// By team (`(unattributed)` for none).
    pub teams: BTreeMap<String, TeamRow>,
    /// Open findings with no team.
    pub unattributed_open: usize,
    /// Finding events read.
    pub finding_events: usize,
    /// Ticket events read.
    pub ticket_events: usize,
    /// Dead-lettered messages read.
    pub dead_letters: usize,
    /// Messages published.
    pub published: usize,
}

/// `custody demo`.
pub fn command(args: crate::cli::DemoArgs) -> u8 {
    match run(&args, &mut std::io::stdout()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("custody demo: {e}");
            2
        }
    }
}

fn run(args: &crate::cli::DemoArgs, out: &mut dyn Write) -> Result<(), String> {
    let started = Instant::now();
    let cluster = crate::kafka::mock::start()?;
    let brokers = cluster.bootstrap_servers();
    tracing::info!("embedded Kafka-protocol broker (librdkafka mock cluster) at {brokers}");
    let dir = std::env::temp_dir().join(format!("custody-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (name, text) in [
        ("owners.toml", OWNERS_TOML),
        ("tornado.CODEOWNERS", CODEOWNERS),
        ("catalog-info.yaml", CATALOG),
    ] {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))?;
    }
    let mut config = Config::default();
    config.service.brokers = brokers.clone();
    config.service.partitions = 4;
    config.service.replication_factor = 1;
    config.service.group_id = "custody-demo".into();
    config.service.ownership_topic = Some("custody.ownership".into());
    create_mock_topics(&cluster, &mut config)?;
    // The ownership example goes through `custody publish-ownership`'s
    // path to the ownership topic, which the service reads at its start.
    let sent = crate::kafka::ownership_topic::publish(
        &brokers,
        &[],
        "custody.ownership",
        &dir,
        1,
        Duration::from_secs(30),
    )
    .map_err(|e| e.to_string())?;
    tracing::info!(
        "ownership version {} published to custody.ownership ({})",
        sent.id,
        sent.files.join(", ")
    );
    let service = Service::start(&config, None).map_err(|e| e.to_string())?;

    let outcome = publish_and_collect(&config, &service)?;
    print_table(out, &outcome, started.elapsed()).map_err(|e| e.to_string())?;

    if args.serve {
        serve(&args.listen, &service)?;
    }
    service.stop().map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    drop(cluster);
    Ok(())
}

/// Publishes the bundled reports, waits until the service processed them
/// and reads back every event.
pub fn publish_and_collect(config: &Config, service: &Service) -> Result<DemoOutcome, String> {
    let s = &config.service;
    let publisher = Publisher::new(&s.brokers, std::iter::empty())?;
    let mut published = 0;
    for (target, scanner, _name, bytes) in bundled() {
        let target = target.parse::<Target>().map_err(|e| e.to_string())?;
        let opts = PublishOptions {
            scanner: Some(scanner.to_string()),
            ..PublishOptions::new(&s.reports_topics[0], target)
        };
        published += publisher.send(&opts, bytes)?.chunks;
    }
    // Not a report: dead-lettered with its reason, the rest flows on.
    let tornado = TORNADO.parse::<Target>().map_err(|e| e.to_string())?;
    let poison = PublishOptions {
        scanner: Some("bandit".into()),
        ..PublishOptions::new(&s.reports_topics[0], tornado)
    };
    published += publisher
        .send(&poison, b"<html>502 Bad Gateway</html>")?
        .chunks;
    publisher.flush(Duration::from_secs(30))?;

    let deadline = Instant::now() + Duration::from_secs(120);
    while service.health.done_messages.load(Ordering::Relaxed) < published {
        if service.finished() {
            return Err("the service stopped early".into());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {published} messages processed within 120 s",
                service.health.done_messages.load(Ordering::Relaxed)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut outcome = DemoOutcome {
        published,
        ..DemoOutcome::default()
    };
    let findings: Vec<FindingEvent> = read_all(&s.brokers, &s.findings_topic)?
        .iter()
        .filter_map(|b| serde_json::from_slice(b).ok())
        .collect();
    let mut topics = vec![config.default_topic.clone()];
    topics.extend(config.routes.iter().map(|r| r.topic.clone()));
    topics.sort();
    topics.dedup();
    let mut tickets: Vec<TicketEvent> = Vec::new();
    for t in &topics {
        tickets.extend(
            read_all(&s.brokers, t)?
                .iter()
                .filter_map(|b| serde_json::from_slice(b).ok()),
        );
    }
    outcome.dead_letters = read_all(&s.brokers, &s.dead_letter_topic)?.len();
    outcome.finding_events = findings.len();
    outcome.ticket_events = tickets.len();
    let mut latest: HashMap<(String, String), &FindingEvent> = HashMap::new();
    for e in &findings {
        latest.insert((e.target.to_string(), e.fingerprint.clone()), e);
    }
    for e in latest.values() {
        let team = e.team.clone().unwrap_or_else(|| "(unattributed)".into());
        let row = outcome.teams.entry(team).or_default();
        match e.status {
            Status::Open => {
                *row.open.entry(e.severity).or_default() += 1;
                match e.origin.provenance {
                    Provenance::Introduced => row.introduced += 1,
                    Provenance::Inherited => row.inherited += 1,
                }
                if e.team.is_none() {
                    outcome.unattributed_open += 1;
                }
            }
            Status::Resolved => row.resolved += 1,
            _ => {}
        }
    }
    for t in &tickets {
        if t.event == TicketEventKind::Opened {
            let team = t.team.clone().unwrap_or_else(|| "(unattributed)".into());
            outcome.teams.entry(team).or_default().tickets_opened += 1;
        }
    }
    Ok(outcome)
}

fn print_table(out: &mut dyn Write, o: &DemoOutcome, took: Duration) -> std::io::Result<()> {
    writeln!(
        out,
        "\nPublished {} messages (8 real scanner reports, 1 poison message) through the embedded broker; processed in {:.1} s.\n",
        o.published,
        took.as_secs_f64()
    )?;
    writeln!(
        out,
        "{:<16} {:>8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>10} {:>9} {:>9} {:>8}",
        "team",
        "critical",
        "high",
        "medium",
        "low",
        "info",
        "open",
        "introduced",
        "inherited",
        "resolved",
        "tickets"
    )?;
    let mut total = TeamRow::default();
    for (team, row) in &o.teams {
        let open: usize = row.open.values().sum();
        let n = |s: Severity| row.open.get(&s).copied().unwrap_or(0);
        writeln!(
            out,
            "{:<16} {:>8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>10} {:>9} {:>9} {:>8}",
            team,
            n(Severity::Critical),
            n(Severity::High),
            n(Severity::Medium),
            n(Severity::Low),
            n(Severity::Info),
            open,
            row.introduced,
            row.inherited,
            row.resolved,
            row.tickets_opened
        )?;
        for (s, c) in &row.open {
            *total.open.entry(*s).or_default() += c;
        }
        total.resolved += row.resolved;
        total.introduced += row.introduced;
        total.inherited += row.inherited;
        total.tickets_opened += row.tickets_opened;
    }
    writeln!(
        out,
        "{:<16} {:>8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>10} {:>9} {:>9} {:>8}",
        "total",
        total.open.get(&Severity::Critical).copied().unwrap_or(0),
        total.open.get(&Severity::High).copied().unwrap_or(0),
        total.open.get(&Severity::Medium).copied().unwrap_or(0),
        total.open.get(&Severity::Low).copied().unwrap_or(0),
        total.open.get(&Severity::Info).copied().unwrap_or(0),
        total.open.values().sum::<usize>(),
        total.introduced,
        total.inherited,
        total.resolved,
        total.tickets_opened
    )?;
    writeln!(
        out,
        "\nunattributed open findings: {}; finding events: {}; ticket events: {}; dead-lettered messages: {}",
        o.unattributed_open, o.finding_events, o.ticket_events, o.dead_letters
    )?;
    Ok(())
}

fn serve(listen: &str, service: &Service) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let state = http::AppState {
        health: Arc::clone(&service.health),
        metrics: Arc::clone(&service.metrics),
    };
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        tracing::info!("serving http://{listen}/ (team scorecard), /metrics, /healthz, /readyz, /api/teams; Ctrl-C stops");
        tokio::spawn(http::serve(listener, state));
        let _ = tokio::signal::ctrl_c().await;
        Ok::<(), String>(())
    })
}
