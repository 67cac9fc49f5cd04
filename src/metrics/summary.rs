//! What the state gauges and the scorecard count, target by target: a
//! [`TargetSummary`] per target (taken from its decoded state, or kept
//! from when it was evicted), summed by a [`StatePass`].

use crate::lifecycle::State;
use crate::model::{Provenance, Severity, Status};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

use super::{
    Metrics, Scorecard, TeamScore, TicketRow, UnownedRow, TICKETS_PER_TEAM, UNATTRIBUTED_LISTED,
};

/// The statuses the state-size gauge counts, each always set.
const STATUSES: [Status; 6] = [
    Status::Open,
    Status::Resolved,
    Status::Accepted,
    Status::FalsePositive,
    Status::Suppressed,
    Status::NotAffected,
];

impl Metrics {
    /// Sets the state-size and per-team gauges from the states of the owned
    /// partitions, in one pass:
    /// series of teams (or partitions) no longer present disappear.
    pub fn set_state<'a>(&self, states: impl IntoIterator<Item = &'a State>, now: DateTime<Utc>) {
        let mut pass = self.state_pass(now);
        for state in states {
            for (spec, ts) in &state.targets {
                pass.add(&TargetSummary::of(spec, ts, now));
            }
        }
        pass.finish();
    }

    /// A pass over the targets of the owned partitions, in their order
    /// (each [`TargetSummary`] added in turn), that sets the state-size and
    /// per-team gauges and the scorecard when it is finished, as
    /// [`Metrics::set_state`] does.
    pub fn state_pass(&self, now: DateTime<Utc>) -> StatePass<'_> {
        StatePass {
            metrics: self,
            now,
            soon: now + chrono::Duration::days(7),
            week: now - chrono::Duration::days(7),
            month: now - chrono::Duration::days(30),
            open: BTreeMap::new(),
            breached: BTreeMap::new(),
            accepted: BTreeMap::new(),
            unattributed: BTreeMap::new(),
            suppressed: BTreeMap::new(),
            not_affected: BTreeMap::new(),
            by_status: STATUSES.iter().map(|s| (s.as_str(), 0)).collect(),
            introduced: BTreeMap::new(),
            inherited: BTreeMap::new(),
            excused: BTreeMap::new(),
            recent: BTreeMap::new(),
            tickets: BTreeMap::new(),
            ttr: BTreeMap::new(),
            unowned_rows: Vec::new(),
            unowned_more: 0,
        }
    }
}

/// What the state gauges and the scorecard count of one target: its
/// findings and open tickets summed by their own team (the label a team
/// gets is decided at each pass), with the times a pass compares to its
/// moment (due dates, recent introductions, acceptances' ends) and the
/// first rows the scorecard may list. A partition keeps one for each
/// target it evicted from memory, so a pass counts them without decoding
/// them; [`StatePass::add`] gives the same whether the summary was taken
/// at the pass or before (and the target unchanged since).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetSummary {
    by_status: BTreeMap<&'static str, i64>,
    teams: BTreeMap<Option<String>, TeamPart>,
    /// Open findings no team owns, the first [`UNATTRIBUTED_LISTED`].
    unowned: Vec<UnownedRow>,
    unowned_more: u64,
    /// Open tickets in key order, the first [`TICKETS_PER_TEAM`] of each
    /// team, with its team.
    tickets: Vec<(Option<String>, TicketRow)>,
    /// Rows left out to save memory (see [`TargetSummary::strip_rows`]):
    /// how many unowned rows, and ticket rows by team.
    stripped: Option<(u64, BTreeMap<Option<String>, u64>)>,
}

/// One team's share of a [`TargetSummary`].
#[derive(Debug, Clone, Default, PartialEq)]
struct TeamPart {
    open: BTreeMap<Severity, u64>,
    /// Due dates of open findings by severity, sorted.
    due: BTreeMap<Severity, Vec<DateTime<Utc>>>,
    introduced: BTreeMap<Severity, u64>,
    inherited: u64,
    excused: BTreeMap<&'static str, u64>,
    /// When its introduced open or resolved findings were introduced,
    /// those of the last 30 days (at the summary), sorted.
    recent: Vec<DateTime<Utc>>,
    accepted: u64,
    /// The ends of its acceptances that have one, sorted.
    accepted_until: Vec<DateTime<Utc>>,
    suppressed: u64,
    not_affected: u64,
    /// Milliseconds from first sighting to resolution, summed, and how
    /// many resolved findings.
    ttr: (i128, u64),
    /// Open tickets beyond those listed.
    tickets_more: u64,
}

impl TargetSummary {
    /// Leaves out the rows the scorecard may list, keeping how many there
    /// were: a pass that may list them ([`StatePass::needs_rows`]) must
    /// have them back ([`TargetSummary::restore_rows`]); one that may not
    /// counts them as those beyond the lists, as it would have.
    pub fn strip_rows(&mut self) {
        if self.stripped.is_some() {
            return;
        }
        let mut teams: BTreeMap<Option<String>, u64> = BTreeMap::new();
        for (team, _) in &self.tickets {
            *teams.entry(team.clone()).or_default() += 1;
        }
        self.stripped = Some((self.unowned.len() as u64, teams));
        self.unowned = Vec::new();
        self.tickets = Vec::new();
    }

    /// Whether rows were left out.
    pub fn stripped(&self) -> bool {
        self.stripped.is_some()
    }

    /// Takes back the rows of `full`, a summary of the same target's state.
    pub fn restore_rows(&mut self, full: TargetSummary) {
        self.unowned = full.unowned;
        self.tickets = full.tickets;
        self.stripped = None;
    }

    /// The summary of target `spec`'s state `ts` at `now`.
    pub fn of(spec: &str, ts: &crate::lifecycle::TargetState, now: DateTime<Utc>) -> TargetSummary {
        let month = now - chrono::Duration::days(30);
        let mut s = TargetSummary::default();
        // By the records' own team texts: a team's name is copied once,
        // not once a record.
        let mut teams: crate::TextMap<Option<&str>, TeamPart> = crate::TextMap::default();
        for rec in ts.findings.values() {
            *s.by_status.entry(rec.status.as_str()).or_default() += 1;
            let part = teams.entry(rec.team.as_deref()).or_default();
            let shipped = rec.provenance() == Provenance::Introduced;
            if shipped {
                match rec.status {
                    Status::Open | Status::Resolved => {
                        let at = rec.origin.as_ref().map_or(rec.first_seen, |o| o.at);
                        if at > month {
                            part.recent.push(at);
                        }
                    }
                    Status::Accepted | Status::Suppressed | Status::NotAffected => {
                        *part.excused.entry(rec.status.as_str()).or_default() += 1;
                    }
                    Status::FalsePositive => {}
                }
            }
            match rec.status {
                Status::Open => {
                    let sev = rec.severity();
                    if shipped {
                        *part.introduced.entry(sev).or_default() += 1;
                    } else {
                        part.inherited += 1;
                    }
                    if rec.team.is_none() {
                        if s.unowned.len() < UNATTRIBUTED_LISTED {
                            let loc = rec.finding.location.as_ref();
                            s.unowned.push(UnownedRow {
                                target: spec.to_string(),
                                rule: rec.finding.group_id().to_string(),
                                severity: sev,
                                path: loc.map(|l| l.path.clone()),
                                line: loc.and_then(|l| l.start_line),
                                reason: rec.attribution.unowned_reason(loc.is_some()),
                            });
                        } else {
                            s.unowned_more += 1;
                        }
                    }
                    if let Some(d) = rec.due_at {
                        part.due.entry(sev).or_default().push(d);
                    }
                    *part.open.entry(sev).or_default() += 1;
                }
                Status::Accepted => {
                    part.accepted += 1;
                    if let Some(u) = rec.accepted_until {
                        part.accepted_until.push(u);
                    }
                }
                Status::Suppressed => part.suppressed += 1,
                Status::NotAffected => part.not_affected += 1,
                Status::Resolved => {
                    if let Some(at) = rec.resolved_at {
                        let ms = (at - rec.first_seen).num_milliseconds().max(0);
                        part.ttr.0 += i128::from(ms);
                        part.ttr.1 += 1;
                    }
                }
                Status::FalsePositive => {}
            }
        }
        let mut listed: crate::TextMap<Option<&str>, usize> = crate::TextMap::default();
        for (key, t) in &ts.tickets {
            if t.status != crate::model::ticket::TicketStatus::Open {
                continue;
            }
            let n = listed.entry(t.team.as_deref()).or_default();
            if *n >= TICKETS_PER_TEAM {
                teams.entry(t.team.as_deref()).or_default().tickets_more += 1;
                continue;
            }
            *n += 1;
            let member = t.open_members.iter().find_map(|fp| ts.findings.get(fp));
            let loc = member.and_then(|m| m.finding.location.as_ref());
            let a = member.map(|m| &*m.attribution);
            // A target's part of a ticket across targets shows under the
            // key of the ticket its team's tracker has.
            let key = match t.grouping {
                crate::model::ticket::Grouping::TeamRule => {
                    crate::ticket::team_rule_key(t.team.as_deref(), &t.group)
                }
                _ => key.clone(),
            };
            let row = TicketRow {
                key,
                target: spec.to_string(),
                rule: t.group.clone(),
                title: t.title.clone(),
                severity: t.severity,
                open: t.open_members.len(),
                breached: t.breached,
                due_at: t.due_at,
                path: loc.map(|l| l.path.clone()),
                line: loc.and_then(|l| l.start_line),
                source: a.map_or_else(|| "none".to_string(), |a| a.source.clone()),
                owner_file: a.and_then(|a| a.file.clone()),
                owner_line: a.and_then(|a| a.line),
                owner_rule: a.and_then(|a| a.rule.clone()),
            };
            s.tickets.push((t.team.clone(), row));
        }
        s.teams = teams
            .into_iter()
            .map(|(team, part)| (team.map(str::to_string), part))
            .collect();
        for part in s.teams.values_mut() {
            for due in part.due.values_mut() {
                due.sort_unstable();
            }
            part.recent.sort_unstable();
            part.accepted_until.sort_unstable();
        }
        s
    }
}

/// A pass of the state gauges and the scorecard (see
/// [`Metrics::state_pass`]).
pub struct StatePass<'a> {
    metrics: &'a Metrics,
    now: DateTime<Utc>,
    soon: DateTime<Utc>,
    week: DateTime<Utc>,
    month: DateTime<Utc>,
    open: BTreeMap<(String, Severity), u64>,
    breached: BTreeMap<(String, Severity), u64>,
    accepted: BTreeMap<String, (u64, u64)>,
    unattributed: BTreeMap<Severity, u64>,
    suppressed: BTreeMap<String, u64>,
    not_affected: BTreeMap<String, u64>,
    by_status: BTreeMap<&'static str, i64>,
    introduced: BTreeMap<(String, Severity), u64>,
    inherited: BTreeMap<String, u64>,
    excused: BTreeMap<(String, &'static str), u64>,
    recent: BTreeMap<String, (u64, u64)>,
    tickets: BTreeMap<String, (Vec<TicketRow>, u64)>,
    /// Per team: milliseconds from first sighting to resolution, summed,
    /// and how many resolved findings.
    ttr: BTreeMap<String, (i128, u64)>,
    unowned_rows: Vec<UnownedRow>,
    unowned_more: u64,
}

impl StatePass<'_> {
    /// Whether the pass may list rows `s` left out (see
    /// [`TargetSummary::strip_rows`]), with the rows added so far.
    pub fn needs_rows(&self, s: &TargetSummary) -> bool {
        let Some((unowned, teams)) = &s.stripped else {
            return false;
        };
        (*unowned > 0 && self.unowned_rows.len() < UNATTRIBUTED_LISTED)
            || teams.keys().any(|team| {
                let label = self.metrics.team_label(team.as_deref());
                self.tickets
                    .get(&label)
                    .is_none_or(|(rows, _)| rows.len() < TICKETS_PER_TEAM)
            })
    }

    /// Counts one target; one whose rows were left out only when the pass
    /// does not need them ([`StatePass::needs_rows`]).
    pub fn add(&mut self, s: &TargetSummary) {
        let now = self.now;
        for (status, n) in &s.by_status {
            *self.by_status.entry(status).or_default() += n;
        }
        for (team, p) in &s.teams {
            let label = self.metrics.team_label(team.as_deref());
            for (sev, n) in &p.open {
                *self.open.entry((label.clone(), *sev)).or_default() += n;
                if team.is_none() {
                    *self.unattributed.entry(*sev).or_default() += n;
                }
            }
            for (sev, due) in &p.due {
                let n = due.partition_point(|d| *d <= now) as u64;
                if n > 0 {
                    *self.breached.entry((label.clone(), *sev)).or_default() += n;
                }
            }
            for (sev, n) in &p.introduced {
                *self.introduced.entry((label.clone(), *sev)).or_default() += n;
            }
            if p.inherited > 0 {
                *self.inherited.entry(label.clone()).or_default() += p.inherited;
            }
            for (status, n) in &p.excused {
                *self.excused.entry((label.clone(), status)).or_default() += n;
            }
            let month = p.recent.len() - p.recent.partition_point(|at| *at <= self.month);
            if month > 0 {
                let week = p.recent.len() - p.recent.partition_point(|at| *at <= self.week);
                let slot = self.recent.entry(label.clone()).or_default();
                slot.0 += week as u64;
                slot.1 += month as u64;
            }
            if p.accepted > 0 {
                let expiring = p.accepted_until.partition_point(|u| *u <= self.soon) as u64;
                let slot = self.accepted.entry(label.clone()).or_default();
                slot.0 += p.accepted;
                slot.1 += expiring;
            }
            if p.suppressed > 0 {
                *self.suppressed.entry(label.clone()).or_default() += p.suppressed;
            }
            if p.not_affected > 0 {
                *self.not_affected.entry(label.clone()).or_default() += p.not_affected;
            }
            if p.ttr.1 > 0 {
                let slot = self.ttr.entry(label.clone()).or_default();
                slot.0 += p.ttr.0;
                slot.1 += p.ttr.1;
            }
        }
        for (team, row) in &s.tickets {
            let label = self.metrics.team_label(team.as_deref());
            let (rows, more) = self.tickets.entry(label).or_default();
            if rows.len() >= TICKETS_PER_TEAM {
                *more += 1;
            } else {
                rows.push(row.clone());
            }
        }
        if let Some((unowned, teams)) = &s.stripped {
            // Past the lists: each counted as one more.
            self.unowned_more += unowned;
            for (team, n) in teams {
                let label = self.metrics.team_label(team.as_deref());
                self.tickets.entry(label).or_default().1 += n;
            }
        }
        for (team, p) in &s.teams {
            if p.tickets_more > 0 {
                let label = self.metrics.team_label(team.as_deref());
                self.tickets.entry(label).or_default().1 += p.tickets_more;
            }
        }
        for row in &s.unowned {
            if self.unowned_rows.len() < UNATTRIBUTED_LISTED {
                self.unowned_rows.push(row.clone());
            } else {
                self.unowned_more += 1;
            }
        }
        self.unowned_more += s.unowned_more;
    }

    /// Sets the gauges and the scorecard from what was added.
    pub fn finish(self) {
        let StatePass {
            metrics,
            now,
            open,
            breached,
            accepted,
            unattributed,
            suppressed,
            not_affected,
            by_status,
            introduced,
            inherited,
            excused,
            recent,
            tickets,
            ttr,
            unowned_rows,
            unowned_more,
            ..
        } = self;
        for (status, n) in &by_status {
            metrics.state_findings.with_label_values(&[status]).set(*n);
        }
        metrics.open.reset();
        metrics.breached.reset();
        metrics.accepted.reset();
        metrics.accepted_expiring.reset();
        metrics.suppressed.reset();
        metrics.not_affected.reset();
        metrics.unattributed.reset();
        metrics.introduced_open.reset();
        metrics.introduced_excused.reset();
        for ((team, sev), n) in &introduced {
            metrics
                .introduced_open
                .with_label_values(&[team, sev.as_str()])
                .set(*n as i64);
        }
        for ((team, status), n) in &excused {
            metrics
                .introduced_excused
                .with_label_values(&[team.as_str(), status])
                .set(*n as i64);
        }
        for ((team, sev), n) in &open {
            metrics
                .open
                .with_label_values(&[team, sev.as_str()])
                .set(*n as i64);
        }
        for ((team, sev), n) in &breached {
            metrics
                .breached
                .with_label_values(&[team, sev.as_str()])
                .set(*n as i64);
        }
        for (team, (n, expiring)) in &accepted {
            metrics.accepted.with_label_values(&[team]).set(*n as i64);
            metrics
                .accepted_expiring
                .with_label_values(&[team])
                .set(*expiring as i64);
        }
        for (team, n) in &suppressed {
            metrics.suppressed.with_label_values(&[team]).set(*n as i64);
        }
        for (team, n) in &not_affected {
            metrics
                .not_affected
                .with_label_values(&[team])
                .set(*n as i64);
        }
        for sev in Severity::ALL_DESC {
            metrics
                .unattributed
                .with_label_values(&[sev.as_str()])
                .set(unattributed.get(&sev).copied().unwrap_or(0) as i64);
        }
        // The scorecard from the same pass.
        let mut card = metrics.scorecard.lock().unwrap_or_else(|p| p.into_inner());
        let mut teams: BTreeMap<String, TeamScore> = BTreeMap::new();
        for ((team, sev), n) in &open {
            let t = teams.entry(team.clone()).or_default();
            t.open.insert(sev.as_str().to_string(), *n);
            t.open_total += n;
        }
        for ((team, _), n) in &breached {
            teams.entry(team.clone()).or_default().breached += n;
        }
        for (team, (n, _)) in &accepted {
            teams.entry(team.clone()).or_default().accepted = *n;
        }
        for (team, n) in &suppressed {
            teams.entry(team.clone()).or_default().suppressed = *n;
        }
        for (team, n) in &not_affected {
            teams.entry(team.clone()).or_default().not_affected = *n;
        }
        for ((team, _), n) in &introduced {
            teams.entry(team.clone()).or_default().open_introduced += n;
        }
        for (team, n) in &inherited {
            teams.entry(team.clone()).or_default().open_inherited = *n;
        }
        for (team, (w, m)) in &recent {
            let t = teams.entry(team.clone()).or_default();
            t.introduced_week = *w;
            t.introduced_month = *m;
        }
        for (team, (mut rows, more)) in tickets {
            rows.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.key.cmp(&b.key)));
            let t = teams.entry(team).or_default();
            t.tickets = rows;
            t.tickets_more = more;
        }
        for (team, (sum, count)) in &ttr {
            let t = teams.entry(team.clone()).or_default();
            t.resolved = *count;
            t.mttr_seconds = (*count > 0).then(|| *sum as f64 / 1000.0 / *count as f64);
        }
        let total: u64 = open.values().sum();
        let unowned: u64 = unattributed.values().sum();
        *card = Scorecard {
            teams,
            unattributed_share: if total == 0 {
                0.0
            } else {
                unowned as f64 / total as f64
            },
            unattributed: unowned_rows,
            unattributed_more: unowned_more,
            at: Some(now),
        };
    }
}
