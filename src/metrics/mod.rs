//! Prometheus metrics: one registry per process, every series declared
//! here and recorded through typed functions. No fingerprint, repository,
//! path or rule id is ever a label.

use crate::model::{FindingEvent, FindingEventKind, Provenance, Severity, Status};
use chrono::{DateTime, Utc};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, RwLock};

mod summary;
pub use summary::{StatePass, TargetSummary};

/// The label of findings no team owns.
pub const UNATTRIBUTED: &str = "unattributed";
/// The label every team beyond the known set (or the cap) folds into.
pub const OTHER: &str = "other";
/// Default cap on distinct team label values (`[metrics] max_teams`).
pub use crate::config::service::DEFAULT_MAX_TEAMS;

/// Open tickets each team's scorecard page lists at most.
pub const TICKETS_PER_TEAM: usize = 50;
/// Unattributed open findings the scorecard lists at most.
pub const UNATTRIBUTED_LISTED: usize = 25;

/// Remediation-time buckets: an hour to a year.
const TTR_BUCKETS: [f64; 12] = [
    3_600.0,
    6.0 * 3_600.0,
    86_400.0,
    3.0 * 86_400.0,
    7.0 * 86_400.0,
    14.0 * 86_400.0,
    30.0 * 86_400.0,
    60.0 * 86_400.0,
    90.0 * 86_400.0,
    180.0 * 86_400.0,
    270.0 * 86_400.0,
    365.0 * 86_400.0,
];

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    messages: IntCounterVec,
    findings: IntCounter,
    unchanged: IntCounter,
    decode_errors: IntCounterVec,
    dead_letters: IntCounterVec,
    events: IntCounterVec,
    state_findings: IntGaugeVec,
    restore_records: IntCounter,
    partitions_restoring: IntGauge,
    partitions_assigned: IntGauge,
    latency: Histogram,
    lag: IntGaugeVec,
    paused: IntGauge,
    in_flight_bytes: IntGauge,
    targets_undecoded: IntGauge,
    ownership_reloads: IntCounterVec,
    evictions: IntCounter,
    thaws: IntCounter,
    open: IntGaugeVec,
    unattributed: IntGaugeVec,
    breached: IntGaugeVec,
    accepted: IntGaugeVec,
    accepted_expiring: IntGaugeVec,
    suppressed: IntGaugeVec,
    not_affected: IntGaugeVec,
    opened_total: IntCounterVec,
    resolved_total: IntCounterVec,
    reopened_total: IntCounterVec,
    breaches_total: IntCounterVec,
    ttr: HistogramVec,
    introduced_open: IntGaugeVec,
    introduced_excused: IntGaugeVec,
    introduced_total: IntCounterVec,
    time_to_fix: HistogramVec,
    teams: RwLock<TeamLabels>,
    scorecard: Mutex<Scorecard>,
}

/// Which team names may be label values.
struct TeamLabels {
    known: HashSet<String>,
    cap: usize,
}

/// One team's scorecard (`/api/teams`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TeamScore {
    /// Open findings by severity.
    pub open: BTreeMap<String, u64>,
    /// Open findings in all.
    pub open_total: u64,
    /// Open findings past their due date.
    pub breached: u64,
    /// Risk-accepted findings.
    pub accepted: u64,
    /// Suppressed findings (not open).
    pub suppressed: u64,
    /// Findings that do not affect their target (not open).
    pub not_affected: u64,
    /// Mean time to remediate, in seconds: from first sighting to
    /// resolution (as `custody_time_to_remediate_seconds`), over the
    /// resolved findings the state keeps, so a restart or a restore keeps
    /// it (null when there is none).
    pub mttr_seconds: Option<f64>,
    /// Resolved findings the state keeps (the ones MTTR is over).
    pub resolved: u64,
    /// Open findings introduced by a scan after the target's first.
    pub open_introduced: u64,
    /// Open findings inherited (present in the target's first scan).
    pub open_inherited: u64,
    /// Findings introduced in the last 7 days, open or fixed since
    /// (accepted, suppressed and not affected ones not counted).
    pub introduced_week: u64,
    /// The same over the last 30 days.
    pub introduced_month: u64,
    /// Its open tickets, the first [`TICKETS_PER_TEAM`] (for its page, not
    /// in `/api/teams`).
    #[serde(skip)]
    pub tickets: Vec<TicketRow>,
    /// Open tickets beyond those listed.
    #[serde(skip)]
    pub tickets_more: u64,
}

/// One open ticket on its team's scorecard page, with the evidence of why
/// the team owns it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TicketRow {
    /// Ticket key.
    pub key: String,
    /// The target.
    pub target: String,
    /// Rule or vulnerability id.
    pub rule: String,
    /// Title.
    pub title: String,
    /// Highest severity of its open findings.
    pub severity: Severity,
    /// Its open findings.
    pub open: usize,
    /// Whether one is past due.
    pub breached: bool,
    /// Earliest due date.
    pub due_at: Option<DateTime<Utc>>,
    /// Where one of its open findings is: path and line.
    pub path: Option<String>,
    /// Its line.
    pub line: Option<u32>,
    /// Which ownership source decided (`codeowners`, `catalog`, ...).
    pub source: String,
    /// The file or catalog entity that decided.
    pub owner_file: Option<String>,
    /// The deciding rule's line in that file.
    pub owner_line: Option<u32>,
    /// The deciding rule.
    pub owner_rule: Option<String>,
}

/// One open finding no team owns, with the reason.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UnownedRow {
    /// The target.
    pub target: String,
    /// Rule or vulnerability id.
    pub rule: String,
    /// Severity.
    pub severity: Severity,
    /// Path, if any.
    pub path: Option<String>,
    /// Line, if any.
    pub line: Option<u32>,
    /// Why no team owns it.
    pub reason: String,
}

/// Every team's scorecard, for the partitions this instance owns.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Scorecard {
    /// By team label (`unattributed` and `other` included).
    pub teams: BTreeMap<String, TeamScore>,
    /// Share of open findings no team owns (0 when nothing is open).
    pub unattributed_share: f64,
    /// Open findings no team owns, the first [`UNATTRIBUTED_LISTED`].
    pub unattributed: Vec<UnownedRow>,
    /// Open unattributed findings beyond those listed.
    pub unattributed_more: u64,
    /// When it was computed.
    pub at: Option<DateTime<Utc>>,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every series declared.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let messages = counter_vec(
            &r,
            "custody_messages_consumed_total",
            "Report messages consumed, by outcome (processed, chunk, dead_lettered, already_applied: redelivered after a crash and passed over, as the changelog says it was applied).",
            &["outcome"],
        );
        let findings = IntCounter::new(
            "custody_findings_consumed_total",
            "Findings in consumed reports (a report identical to its target's last scan counts that scan's).",
        )
        .expect("valid metric");
        r.register(Box::new(findings.clone()))
            .expect("unique metric");
        let unchanged = IntCounter::new(
            "custody_reports_unchanged_total",
            "Reports identical to their target's last scan, with nothing else changed since, applied without decoding them again.",
        )
        .expect("valid metric");
        r.register(Box::new(unchanged.clone()))
            .expect("unique metric");
        let decode_errors = counter_vec(
            &r,
            "custody_decode_errors_total",
            "Reports that could not be decoded, by format and reason.",
            &["format", "reason"],
        );
        let dead_letters = counter_vec(
            &r,
            "custody_dead_lettered_total",
            "Messages sent to the dead-letter topic, by reason.",
            &["reason"],
        );
        let events = counter_vec(
            &r,
            "custody_events_produced_total",
            "Events produced, by kind (finding, ticket) and route (topic).",
            &["kind", "route"],
        );
        let state_findings = gauge_vec(
            &r,
            "custody_state_findings",
            "Findings held in the state of the partitions this instance owns, by status.",
            &["status"],
        );
        let restore_records = IntCounter::new(
            "custody_restore_records_total",
            "Changelog records read while restoring partitions.",
        )
        .expect("valid metric");
        r.register(Box::new(restore_records.clone()))
            .expect("unique metric");
        let partitions_restoring = gauge(
            &r,
            "custody_partitions_restoring",
            "Assigned partitions whose state is still being restored.",
        );
        let partitions_assigned = gauge(
            &r,
            "custody_partitions_assigned",
            "Partitions assigned to this instance.",
        );
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "custody_processing_latency_seconds",
                "From a report message's timestamp to its events being acknowledged.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
        )
        .expect("valid metric");
        r.register(Box::new(latency.clone()))
            .expect("unique metric");
        let lag = gauge_vec(
            &r,
            "custody_consumer_lag",
            "Messages between the processed offset and the high watermark, per owned partition.",
            &["topic", "partition"],
        );
        let paused = gauge(
            &r,
            "custody_partitions_paused",
            "Partitions paused for backpressure.",
        );
        let in_flight_bytes = gauge(
            &r,
            "custody_in_flight_bytes",
            "Bytes of consumed report messages not done yet: held while their partition restores, waiting for missing chunks, being decoded and applied, or waiting for their events to be acknowledged.",
        );
        let targets_undecoded = gauge(
            &r,
            "custody_targets_undecoded",
            "Targets restored from the changelog whose records are not decoded yet: each is decoded when a message needs it, while the loop is idle, or at the next tick of the SLA clock. Until then the per-team figures leave it out.",
        );
        let ownership_reloads = counter_vec(
            &r,
            "custody_ownership_reloads_total",
            "Ownership configuration reloads, by result (ok, refused).",
            &["result"],
        );
        let evictions = IntCounter::new(
            "custody_state_evictions_total",
            "Targets whose decoded state was evicted from memory into its compact form, past decoded_findings_per_partition.",
        )
        .expect("valid metric");
        r.register(Box::new(evictions.clone()))
            .expect("unique metric");
        let thaws = IntCounter::new(
            "custody_state_thaws_total",
            "Evicted targets decoded again from their compact form, for a message, the SLA clock or a re-attribution.",
        )
        .expect("valid metric");
        r.register(Box::new(thaws.clone())).expect("unique metric");
        let sev_team = &["team", "severity"];
        let open = gauge_vec(
            &r,
            "custody_findings_open",
            "Open findings of the owned partitions, by owning team and severity.",
            sev_team,
        );
        let unattributed = gauge_vec(
            &r,
            "custody_findings_unattributed",
            "Open findings no team owns, by severity.",
            &["severity"],
        );
        let breached = gauge_vec(
            &r,
            "custody_findings_sla_breached",
            "Open findings past their SLA due date, by team and severity.",
            sev_team,
        );
        let accepted = gauge_vec(
            &r,
            "custody_findings_accepted",
            "Findings with an accepted risk, by team.",
            &["team"],
        );
        let accepted_expiring = gauge_vec(
            &r,
            "custody_findings_acceptance_expiring",
            "Accepted findings whose acceptance ends within 7 days, by team.",
            &["team"],
        );
        let suppressed = gauge_vec(
            &r,
            "custody_findings_suppressed",
            "Findings suppressed in source or by an external suppression (not open), by team.",
            &["team"],
        );
        let not_affected = gauge_vec(
            &r,
            "custody_findings_not_affected",
            "Findings that do not affect their target, by a vendor's status or a VEX statement (not open), by team.",
            &["team"],
        );
        let opened_total = counter_vec(
            &r,
            "custody_findings_opened_total",
            "Findings opened, by team and severity.",
            sev_team,
        );
        let resolved_total = counter_vec(
            &r,
            "custody_findings_resolved_total",
            "Findings resolved, by team and severity.",
            sev_team,
        );
        let reopened_total = counter_vec(
            &r,
            "custody_findings_reopened_total",
            "Findings reopened, by team and severity.",
            sev_team,
        );
        let breaches_total = counter_vec(
            &r,
            "custody_sla_breaches_total",
            "SLA breaches (each finding's SLA clock breaches at most once), by team and severity.",
            sev_team,
        );
        let ttr = HistogramVec::new(
            HistogramOpts::new(
                "custody_time_to_remediate_seconds",
                "From first seen to resolved, by team and severity.",
            )
            .buckets(TTR_BUCKETS.to_vec()),
            sev_team,
        )
        .expect("valid metric");
        r.register(Box::new(ttr.clone())).expect("unique metric");
        let introduced_open = gauge_vec(
            &r,
            "custody_findings_introduced_open",
            "Open findings introduced by a scan after their scanner's first complete scan of the target (shipped, not inherited), by team and severity.",
            sev_team,
        );
        let introduced_excused = gauge_vec(
            &r,
            "custody_findings_introduced_excused",
            "Introduced findings not counted against their team: risk accepted, suppressed or not affected, by team and status.",
            &["team", "status"],
        );
        let introduced_total = counter_vec(
            &r,
            "custody_findings_introduced_total",
            "Findings opened that were introduced by a scan after their scanner's first complete scan of the target, by team and severity.",
            sev_team,
        );
        let time_to_fix = HistogramVec::new(
            HistogramOpts::new(
                "custody_time_to_fix_introduced_seconds",
                "From the scan that introduced a finding to the scan that no longer saw it, for introduced findings fixed while open (not while accepted, suppressed or not affected), by team and severity.",
            )
            .buckets(TTR_BUCKETS.to_vec()),
            sev_team,
        )
        .expect("valid metric");
        r.register(Box::new(time_to_fix.clone()))
            .expect("unique metric");
        Metrics {
            introduced_open,
            introduced_excused,
            introduced_total,
            time_to_fix,
            registry: r,
            open,
            unattributed,
            breached,
            accepted,
            accepted_expiring,
            suppressed,
            not_affected,
            opened_total,
            resolved_total,
            reopened_total,
            breaches_total,
            ttr,
            teams: RwLock::new(TeamLabels {
                known: HashSet::new(),
                cap: DEFAULT_MAX_TEAMS,
            }),
            scorecard: Mutex::new(Scorecard::default()),
            messages,
            findings,
            unchanged,
            decode_errors,
            dead_letters,
            events,
            state_findings,
            restore_records,
            partitions_restoring,
            partitions_assigned,
            latency,
            lag,
            paused,
            in_flight_bytes,
            targets_undecoded,
            ownership_reloads,
            evictions,
            thaws,
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = enc.encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// A report message consumed.
    pub fn message(&self, outcome: &str) {
        self.messages.with_label_values(&[outcome]).inc();
    }

    /// Findings decoded.
    pub fn findings_consumed(&self, n: usize) {
        self.findings.inc_by(n as u64);
    }

    /// A report applied as its target's last scan again, not decoded.
    pub fn report_unchanged(&self) {
        self.unchanged.inc();
    }

    /// A report that failed to decode.
    pub fn decode_error(&self, format: &str, reason: &str) {
        self.decode_errors
            .with_label_values(&[format, reason])
            .inc();
    }

    /// A dead-lettered message.
    pub fn dead_letter(&self, reason: &str) {
        self.dead_letters.with_label_values(&[reason]).inc();
    }

    /// An event produced.
    pub fn event(&self, kind: &str, route: &str) {
        self.events(kind, route, 1);
    }

    /// `n` events produced to one route: its counter looked up once.
    pub fn events(&self, kind: &str, route: &str, n: u64) {
        if n > 0 {
            self.events.with_label_values(&[kind, route]).inc_by(n);
        }
    }

    /// Changelog records restored.
    pub fn restored(&self, n: usize) {
        self.restore_records.inc_by(n as u64);
    }

    /// Partitions assigned and still restoring.
    pub fn partitions(&self, assigned: usize, restoring: usize, paused: usize) {
        self.partitions_assigned.set(assigned as i64);
        self.partitions_restoring.set(restoring as i64);
        self.paused.set(paused as i64);
    }

    /// Bytes of consumed messages not done yet, over every partition.
    pub fn in_flight_bytes(&self, bytes: usize) {
        self.in_flight_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Restored targets not decoded yet, over every partition.
    pub fn targets_undecoded(&self, targets: usize) {
        self.targets_undecoded
            .set(i64::try_from(targets).unwrap_or(i64::MAX));
    }

    /// Processing latency of one message.
    pub fn latency(&self, seconds: f64) {
        self.latency.observe(seconds.max(0.0));
    }

    /// Consumer lag of an owned partition.
    pub fn lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lag
            .with_label_values(&[topic, &partition.to_string()])
            .set(lag.max(0));
    }

    /// Drops the series of a partition this instance no longer owns.
    pub fn forget_partition(&self, topic: &str, partition: i32) {
        let _ = self
            .lag
            .remove_label_values(&[topic, &partition.to_string()]);
    }

    /// An ownership reload.
    pub fn ownership_reload(&self, ok: bool) {
        self.ownership_reloads
            .with_label_values(&[if ok { "ok" } else { "refused" }])
            .inc();
    }

    /// A target's state evicted from memory past the decoded budget.
    pub fn state_evicted(&self) {
        self.evictions.inc();
    }

    /// An evicted target decoded again.
    pub fn state_thawed(&self) {
        self.thaws.inc();
    }

    /// The processing latency histogram, for the benchmark's p99.
    pub fn latency_histogram(&self) -> &Histogram {
        &self.latency
    }

    /// The teams that may appear as label values (the ownership
    /// configuration's), at most `cap` of them; every other value folds
    /// into `other`.
    pub fn set_teams<'a>(&self, teams: impl IntoIterator<Item = &'a str>, cap: usize) {
        let mut t = self.teams.write().unwrap_or_else(|e| e.into_inner());
        t.cap = cap;
        t.known = teams.into_iter().take(cap).map(str::to_string).collect();
    }

    /// The label value of a team.
    pub fn team_label(&self, team: Option<&str>) -> String {
        let Some(team) = team else {
            return UNATTRIBUTED.to_string();
        };
        let t = self.teams.read().unwrap_or_else(|e| e.into_inner());
        if t.known.contains(team) {
            team.to_string()
        } else {
            OTHER.to_string()
        }
    }

    /// Counts a step's finding events as [`Metrics::finding_event`]
    /// counts each, the openings (most of them: a first scan opens every
    /// finding) added per team, severity and provenance: one label lookup
    /// per kind of opening rather than one or two per event.
    pub fn finding_events<'a>(&self, events: impl IntoIterator<Item = &'a FindingEvent>) {
        let mut opened: Vec<(Option<&str>, Severity, bool, u64)> = Vec::new();
        for e in events {
            if e.event != FindingEventKind::Opened {
                self.finding_event(e);
                continue;
            }
            let introduced = e.origin.provenance == Provenance::Introduced;
            let team = e.team.as_deref();
            match opened
                .iter_mut()
                .find(|(t, s, i, _)| *t == team && *s == e.severity && *i == introduced)
            {
                Some(o) => o.3 += 1,
                None => opened.push((team, e.severity, introduced, 1)),
            }
        }
        for (team, severity, introduced, n) in opened {
            let team = self.team_label(team);
            let labels = [team.as_str(), severity.as_str()];
            self.opened_total.with_label_values(&labels).inc_by(n);
            if introduced {
                self.introduced_total.with_label_values(&labels).inc_by(n);
            }
        }
    }

    /// Counts one finding event.
    pub fn finding_event(&self, e: &FindingEvent) {
        let team = self.team_label(e.team.as_deref());
        let labels = [team.as_str(), e.severity.as_str()];
        match e.event {
            FindingEventKind::Opened => {
                self.opened_total.with_label_values(&labels).inc();
                if e.origin.provenance == Provenance::Introduced {
                    self.introduced_total.with_label_values(&labels).inc();
                }
            }
            FindingEventKind::Reopened => self.reopened_total.with_label_values(&labels).inc(),
            FindingEventKind::SlaBreached => self.breaches_total.with_label_values(&labels).inc(),
            FindingEventKind::Resolved => {
                self.resolved_total.with_label_values(&labels).inc();
                let secs = (e.at - e.first_seen).num_milliseconds().max(0) as f64 / 1000.0;
                self.ttr.with_label_values(&labels).observe(secs);
                if e.origin.provenance == Provenance::Introduced
                    && e.previous_status.is_none_or(|s| s == Status::Open)
                {
                    let fix = (e.at - e.origin.at).num_milliseconds().max(0) as f64 / 1000.0;
                    self.time_to_fix.with_label_values(&labels).observe(fix);
                }
            }
            _ => {}
        }
    }

    /// Reads the latest scorecard in place (no copy of its ticket lists).
    pub fn with_scorecard<R>(&self, f: impl FnOnce(&Scorecard) -> R) -> R {
        f(&self.scorecard.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The latest scorecard.
    pub fn scorecard(&self) -> Scorecard {
        self.scorecard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finding event of `team`, `severity`, `kind` and `provenance`.
    fn event(team: Option<&str>, severity: &str, kind: &str, provenance: &str) -> FindingEvent {
        serde_json::from_value(serde_json::json!({
            "kind": "finding", "event": kind, "event_id": "e",
            "at": "2026-09-21T14:13:20Z", "fingerprint": "v1:00",
            "team": team, "severity": severity, "target": "repo:github.com/acme/api",
            "status": "open", "category": "sast", "scanners": ["t"], "rule_id": "R1",
            "message": "m", "location": {"path": "src/f.py"},
            "first_seen": "2026-09-01T14:13:20Z", "ticket_key": "tk1-00",
            "attribution": {"team": team, "source": "none"},
            "origin": {"provenance": provenance, "at": "2026-09-01T14:13:20Z"}
        }))
        .expect("a finding event")
    }

    #[test]
    fn a_steps_finding_events_count_as_each_counted_alone() {
        let events = [
            event(Some("payments"), "high", "opened", "introduced"),
            event(Some("payments"), "high", "opened", "introduced"),
            event(Some("payments"), "high", "opened", "inherited"),
            event(Some("unknown-team"), "low", "opened", "inherited"),
            event(None, "high", "opened", "introduced"),
            event(Some("payments"), "critical", "resolved", "introduced"),
            event(Some("payments"), "high", "opened", "introduced"),
            event(None, "medium", "reopened", "inherited"),
        ];
        let (each, batched) = (Metrics::new(), Metrics::new());
        for m in [&each, &batched] {
            m.set_teams(["payments"], 10);
        }
        for e in &events {
            each.finding_event(e);
        }
        batched.finding_events(&events);
        let text = each.render();
        assert!(text.contains("payments"), "{text}");
        assert_eq!(batched.render(), text);
    }
}
