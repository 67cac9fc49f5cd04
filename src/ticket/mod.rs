//! Tickets: findings grouped so a team gets one ticket per problem, not one
//! per line. The default group is (team, target, rule or vulnerability);
//! a team can be given another [`Grouping`]. Ticket transitions are
//! derived by comparing a ticket's open members before and after a step,
//! and each ticket is routed to a topic by team, severity and category.
//! [`render`] writes the title, body and labels a tracker shows;
//! [`aggregate`] sums the targets' parts of the tickets that span targets
//! (grouping by team and rule).

pub mod aggregate;
pub mod render;

use crate::config::{Route, TicketSettings};
use crate::lifecycle::{FindingRecord, TargetState};
use crate::model::{
    Category, RuleHelp, Severity, Status, Target, TicketCounts, TicketEventKind, TicketReason,
};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

pub use crate::model::ticket::{Grouping, TicketRecord, TicketStatus};

/// The stable key of a ticket group.
pub fn ticket_key(team: Option<&str>, target: &Target, group: &str) -> String {
    ticket_key_of_spec(team, &target.to_string(), group)
}

/// [`ticket_key`] with the target as its spec, for callers that key many
/// groups of one target.
pub fn ticket_key_of_spec(team: Option<&str>, target_spec: &str, group: &str) -> String {
    let mut h = Sha256::new();
    for part in [team.unwrap_or(""), target_spec, group] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    format!("tk1-{}", crate::fingerprint::hex(&h.finalize()[..12]))
}

/// The key of the ticket a finding (`fingerprint`, of rule or
/// vulnerability `group`) of `team` belongs to under `grouping`. The
/// default grouping keeps the keys it always had (`tk1-`); the others are
/// `tk2-`, hashed with the grouping's name so no two groupings share a key.
/// Under [`Grouping::TeamRule`] this is the key of the target's part of
/// the ticket; the ticket's own key is [`team_rule_key`].
pub fn group_key(
    grouping: Grouping,
    team: Option<&str>,
    target_spec: &str,
    group: &str,
    fingerprint: &str,
) -> String {
    let last = match grouping {
        Grouping::TeamTargetRule => return ticket_key_of_spec(team, target_spec, group),
        Grouping::TeamTarget => "",
        Grouping::Finding => fingerprint,
        Grouping::TeamRule => group,
    };
    tk2(grouping, team, target_spec, last)
}

/// The key of the ticket of `team` and rule or vulnerability `group`
/// under [`Grouping::TeamRule`], whatever the target: a `tk2-` key with an
/// empty target, so it is never a target's part ([`group_key`]).
pub fn team_rule_key(team: Option<&str>, group: &str) -> String {
    tk2(Grouping::TeamRule, team, "", group)
}

fn tk2(grouping: Grouping, team: Option<&str>, target_spec: &str, last: &str) -> String {
    let mut h = Sha256::new();
    for part in [grouping.as_str(), team.unwrap_or(""), target_spec, last] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    format!("tk2-{}", crate::fingerprint::hex(&h.finalize()[..12]))
}

/// What a refresh needs besides the state: the grouping in force, the
/// scan that caused it (if one did) and the tickets being regrouped.
pub struct RefreshContext<'a> {
    /// Routing.
    pub router: &'a Router,
    /// Groupings.
    pub settings: &'a TicketSettings,
    /// The scan's commit and ref, when a scan caused the refresh.
    pub scan: Option<(Option<&'a str>, Option<&'a str>)>,
    /// The help text of the rules that scan's report described.
    pub rule_help: Option<&'a RuleHelp>,
    /// Open tickets whose grouping is no longer in force: once their
    /// findings left, they resolve as `regrouped`.
    pub regrouped: &'a BTreeSet<String>,
}

/// Routing rules: the first matching route's topic, else the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    /// Rules in order.
    pub routes: Vec<Route>,
    /// Topic when none matches.
    pub default_topic: String,
}

impl Router {
    /// The topic for a ticket of `team`, `severity` and `category`.
    pub fn route(&self, team: Option<&str>, severity: Severity, category: Category) -> &str {
        self.routes
            .iter()
            .find(|r| {
                let team_ok = match (r.unattributed, team) {
                    (Some(true), t) => t.is_none(),
                    (Some(false), None) => false,
                    (_, t) => {
                        r.teams.is_empty() || t.is_some_and(|t| r.teams.iter().any(|x| x == t))
                    }
                };
                team_ok
                    && r.min_severity.is_none_or(|m| severity >= m)
                    && (r.categories.is_empty() || r.categories.contains(&category))
            })
            .map_or(self.default_topic.as_str(), |r| r.topic.as_str())
    }
}

/// One transition of one ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketTransition {
    /// The ticket.
    pub key: String,
    /// What happened.
    pub kind: TicketEventKind,
    /// The ticket's sequence number after it.
    pub seq: u64,
    /// For `reassigned`: the new team and the ticket its findings moved to.
    pub moved_to: Option<(Option<String>, String)>,
    /// Why, when the kind alone does not say (a `resolved` by regrouping).
    pub reason: Option<TicketReason>,
}

impl TicketTransition {
    /// The next transition of ticket `key`, counted in its record.
    pub(crate) fn next(
        rec: &mut TicketRecord,
        key: &str,
        kind: TicketEventKind,
        reason: Option<TicketReason>,
    ) -> TicketTransition {
        rec.seq += 1;
        TicketTransition {
            key: key.to_string(),
            kind,
            seq: rec.seq,
            moved_to: None,
            reason,
        }
    }
}

/// What a ticket's open members make of its record at a refresh.
pub(crate) struct Refreshed {
    pub open_members: BTreeSet<String>,
    pub severity: Severity,
    pub due_at: Option<DateTime<Utc>>,
    pub counts: TicketCounts,
    pub breached: bool,
    pub route: String,
    pub title: String,
    /// None: the ticket keeps the help it has (the report did not
    /// describe the rule).
    pub help: Option<std::sync::Arc<str>>,
}

/// A new ticket record, opened (and breached, when its members are).
pub(crate) fn open_record(
    mut rec: TicketRecord,
    key: &str,
    out: &mut Vec<TicketTransition>,
) -> TicketRecord {
    out.push(TicketTransition::next(
        &mut rec,
        key,
        TicketEventKind::Opened,
        None,
    ));
    if rec.breached {
        out.push(TicketTransition::next(
            &mut rec,
            key,
            TicketEventKind::SlaBreached,
            None,
        ));
    }
    rec
}

/// Refreshes a ticket's record with what its open members make of it
/// (`is_open`: it has any), and gives its transitions: reopened, resolved
/// (with `resolved_reason`), updated when its members, severity or due
/// date changed while open, and `sla_breached` once it newly passed its
/// due date while open.
pub(crate) fn refresh_record(
    rec: &mut TicketRecord,
    key: &str,
    fresh: Refreshed,
    is_open: bool,
    resolved_reason: Option<TicketReason>,
    out: &mut Vec<TicketTransition>,
) {
    let was_open = rec.status == TicketStatus::Open;
    let changed = rec.open_members != fresh.open_members
        || rec.severity != fresh.severity
        || rec.due_at != fresh.due_at;
    let newly_breached = is_open && fresh.breached && !rec.breached;
    rec.counts = fresh.counts;
    rec.severity = fresh.severity;
    rec.due_at = fresh.due_at;
    rec.open_members = fresh.open_members;
    rec.breached = fresh.breached;
    rec.route = fresh.route;
    rec.title = fresh.title;
    if fresh.help.is_some() {
        rec.help = fresh.help;
    }
    let kind = match (was_open, is_open) {
        (false, true) => {
            rec.status = TicketStatus::Open;
            Some((TicketEventKind::Reopened, None))
        }
        (true, false) => {
            rec.status = TicketStatus::Resolved;
            Some((TicketEventKind::Resolved, resolved_reason))
        }
        (true, true) if changed => Some((TicketEventKind::Updated, None)),
        _ => None,
    };
    if let Some((kind, reason)) = kind {
        out.push(TicketTransition::next(rec, key, kind, reason));
    }
    if newly_breached {
        out.push(TicketTransition::next(
            rec,
            key,
            TicketEventKind::SlaBreached,
            None,
        ));
    }
}

#[derive(Default)]
struct Aggregate {
    /// Open members, in the order of the target's records (sorted).
    open: Vec<String>,
    counts: TicketCounts,
    severity_open: Option<Severity>,
    severity_any: Option<Severity>,
    due: Option<DateTime<Utc>>,
    breached: bool,
    sample_open: Option<String>,
    sample_any: Option<String>,
}

/// Recomputes the tickets in `keys` from their members and returns their
/// transitions.
pub fn refresh(
    ts: &mut TargetState,
    target: &Target,
    keys: &BTreeSet<String>,
    ctx: &RefreshContext<'_>,
) -> Vec<TicketTransition> {
    refresh_tickets(&ts.findings, &mut ts.tickets, target, keys, ctx)
}

/// [`refresh`] on a target's records and tickets borrowed apart: it
/// changes only the tickets, so a large step refreshes them while its
/// finding events, which read the records, are built on other threads.
pub fn refresh_tickets(
    findings: &BTreeMap<String, Box<FindingRecord>>,
    tickets: &mut BTreeMap<String, TicketRecord>,
    target: &Target,
    keys: &BTreeSet<String>,
    ctx: &RefreshContext<'_>,
) -> Vec<TicketTransition> {
    let router = ctx.router;
    let mut aggs: BTreeMap<&str, Aggregate> = keys
        .iter()
        .map(|k| (k.as_str(), Aggregate::default()))
        .collect();
    for (fp, rec) in findings {
        let Some(a) = aggs.get_mut(&*rec.ticket_key) else {
            continue;
        };
        let sev = rec.severity();
        a.severity_any = a.severity_any.max(Some(sev));
        match rec.status {
            Status::Open => {
                a.counts.open += 1;
                a.open.push(fp.clone());
                a.severity_open = a.severity_open.max(Some(sev));
                a.due = match (a.due, rec.due_at) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
                a.breached |= rec.sla_breached;
                // Describe the ticket by an open member when it has one.
                if a.sample_open.is_none() {
                    a.sample_open = Some(fp.clone());
                }
            }
            Status::Accepted => a.counts.accepted += 1,
            Status::Resolved => a.counts.resolved += 1,
            Status::FalsePositive => a.counts.false_positive += 1,
            Status::Suppressed => a.counts.suppressed += 1,
            Status::NotAffected => a.counts.not_affected += 1,
        }
        if a.sample_any.is_none() {
            a.sample_any = Some(fp.clone());
        }
    }
    let mut out = Vec::new();
    for (key, a) in aggs {
        let sample = a.sample_open.as_ref().or(a.sample_any.as_ref());
        let Some(sample) = sample.and_then(|fp| findings.get(fp)) else {
            // No member left at all: its findings were reassigned. When
            // they all went to one other ticket, this one is `reassigned`
            // (naming where to); otherwise it is resolved.
            let moved: BTreeSet<(Option<String>, std::sync::Arc<str>)> = tickets
                .get(key)
                .map(|rec| {
                    rec.open_members
                        .iter()
                        .filter_map(|fp| findings.get(fp))
                        .map(|r| (r.team.clone(), r.ticket_key.clone()))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(rec) = tickets.get_mut(key) {
                if rec.status == TicketStatus::Open {
                    // Regrouped findings went to the new grouping's
                    // tickets: this one resolves, saying why.
                    let regrouped = ctx.regrouped.contains(key);
                    let moved_to = (moved.len() == 1 && !regrouped)
                        .then(|| moved.into_iter().next())
                        .flatten()
                        .map(|(team, key)| (team, key.to_string()));
                    rec.status = TicketStatus::Resolved;
                    rec.open_members.clear();
                    rec.counts = TicketCounts::default();
                    rec.breached = false;
                    rec.seq += 1;
                    out.push(TicketTransition {
                        key: key.to_string(),
                        kind: if moved_to.is_some() {
                            TicketEventKind::Reassigned
                        } else {
                            TicketEventKind::Resolved
                        },
                        seq: rec.seq,
                        moved_to,
                        reason: regrouped.then_some(TicketReason::Regrouped),
                    });
                }
            }
            continue;
        };
        let f = &sample.finding;
        let severity = a.severity_open.or(a.severity_any).unwrap_or(f.severity);
        let grouping = ctx.settings.grouping_for(sample.team.as_deref());
        let title = render::title(grouping, target, f);
        let route = router
            .route(sample.team.as_deref(), severity, f.category)
            .to_string();
        let is_open = !a.open.is_empty();
        // Built from sorted keys in one go, not key by key.
        let open: BTreeSet<String> = a.open.into_iter().collect();
        let (commit, git_ref) = ctx.scan.unwrap_or_default();
        // A ticket spanning rules has no one rule to explain; a ticket per
        // finding keeps none, or every finding would carry its rule's help
        // in the state and the changelog (its body has the help link).
        let help = match grouping {
            Grouping::TeamTarget | Grouping::Finding => None,
            _ => ctx.rule_help.and_then(|h| {
                std::iter::once(f.group_id())
                    .chain(f.aliases.iter().map(String::as_str))
                    .find_map(|id| h.get(id))
                    .cloned()
            }),
        };
        match tickets.get_mut(key) {
            None if !is_open => {}
            None => {
                let rec = TicketRecord {
                    team: sample.team.clone(),
                    target: target.clone(),
                    group: match grouping {
                        Grouping::TeamTarget => String::new(),
                        _ => f.group_id().to_string(),
                    },
                    grouping,
                    commit: commit.map(str::to_string),
                    git_ref: git_ref.map(str::to_string),
                    category: f.category,
                    title,
                    help,
                    status: TicketStatus::Open,
                    severity,
                    due_at: a.due,
                    open_members: open,
                    counts: a.counts,
                    breached: a.breached,
                    route,
                    seq: 0,
                };
                let rec = open_record(rec, key, &mut out);
                tickets.insert(key.to_string(), rec);
            }
            Some(rec) => {
                if ctx.scan.is_some() {
                    rec.commit = commit.map(str::to_string);
                    rec.git_ref = git_ref.map(str::to_string);
                }
                // A scan whose report does not describe the rule (another
                // scanner's, or a chunk without the rule table) keeps the
                // help the ticket has.
                let fresh = Refreshed {
                    open_members: open,
                    severity,
                    due_at: a.due,
                    counts: a.counts,
                    breached: a.breached,
                    route,
                    title,
                    help,
                };
                refresh_record(rec, key, fresh, is_open, None, &mut out);
            }
        }
    }
    out
}
