//! Tickets across targets ([`Grouping::TeamRule`]): one ticket per team
//! and rule or vulnerability, whatever the target.
//!
//! State is kept per target, so each target keeps its part of such a
//! ticket as a ticket record of its own ([`super::group_key`]), refreshed
//! as any other, which publishes no event. A target's part, with the
//! first `tickets.max_locations` of its open members, is its
//! [`Contribution`]; the ticket ([`super::team_rule_key`]) is the sum of
//! the contributions of every target, and [`derive`] compares that sum
//! with the ticket's record as last published to give its transitions:
//! opened once, updated, resolved when the last target's part has no open
//! member (saying `regrouped` when the team's grouping changed),
//! reopened, SLA breached. Deriving again from the same contributions
//! gives nothing, so a front end that rebuilt them (a restart) publishes
//! only what changed.

use super::TicketTransition;
use super::{render, team_rule_key, Grouping, Router, TicketRecord, TicketStatus};
use crate::config::TicketSettings;
use crate::lifecycle::{FindingRecord, TargetState};
use crate::model::{Status, TicketCounts, TicketEventKind, TicketReason};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One target's part of a ticket across targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// The target's part: its record, as the target's state keeps it.
    pub part: TicketRecord,
    /// Its first open members by place (at most `tickets.max_locations`),
    /// which the ticket's body lists.
    pub members: Vec<FindingRecord>,
}

impl Contribution {
    /// Whether the part has open members.
    pub fn is_open(&self) -> bool {
        self.part.status == TicketStatus::Open && !self.part.open_members.is_empty()
    }
}

/// A change of one target's part: its contribution, or None once the part
/// holds no member at all (its findings were regrouped or reassigned).
#[derive(Debug, Clone, PartialEq)]
pub struct PartChange {
    /// The ticket's key ([`team_rule_key`]).
    pub ticket: String,
    /// The target's spec.
    pub target: String,
    /// The part's contribution; None: the part is gone.
    pub contribution: Option<Contribution>,
}

/// The change of the part `key` of the state `ts` of target `spec`; None
/// when `key` is no such part.
pub fn part_change(
    ts: &TargetState,
    spec: &str,
    key: &str,
    max_locations: usize,
) -> Option<PartChange> {
    let (ticket, c) = contribution(ts, key, max_locations)?;
    let empty = c.part.open_members.is_empty() && c.part.counts == TicketCounts::default();
    Some(PartChange {
        ticket,
        target: spec.to_string(),
        contribution: (!empty).then_some(c),
    })
}

/// Each ticket across targets (by key) with each target's contribution
/// (by target spec).
pub type Parts = BTreeMap<String, BTreeMap<String, Contribution>>;

/// The contribution of the part `key` of a target's state, with the key
/// of the ticket it is part of; None when `key` is no such part. With
/// `max_locations` 0, without members (what deriving the ticket needs).
pub fn contribution(
    ts: &TargetState,
    key: &str,
    max_locations: usize,
) -> Option<(String, Contribution)> {
    let part = ts.tickets.get(key)?;
    if part.grouping != Grouping::TeamRule {
        return None;
    }
    if max_locations == 0 {
        return Some((
            team_rule_key(part.team.as_deref(), &part.group),
            Contribution {
                part: part.clone(),
                members: Vec::new(),
            },
        ));
    }
    let mut members: Vec<&FindingRecord> = part
        .open_members
        .iter()
        .filter_map(|fp| ts.findings.get(fp).map(|r| &**r))
        .filter(|r| r.status == Status::Open)
        .collect();
    let order = |a: &&FindingRecord, b: &&FindingRecord| {
        render::place(&a.finding)
            .cmp(&render::place(&b.finding))
            .then_with(|| a.finding.rule_id.cmp(&b.finding.rule_id))
    };
    if members.len() > max_locations && max_locations > 0 {
        members.select_nth_unstable_by(max_locations - 1, order);
    }
    members.truncate(max_locations);
    members.sort_by(order);
    Some((
        team_rule_key(part.team.as_deref(), &part.group),
        Contribution {
            part: part.clone(),
            members: members.into_iter().cloned().collect(),
        },
    ))
}

/// The contributions of every part of every target's state.
pub fn parts_of<'a>(
    targets: impl IntoIterator<Item = (&'a String, &'a TargetState)>,
    max_locations: usize,
) -> Parts {
    let mut parts = Parts::new();
    for (spec, ts) in targets {
        for (key, rec) in &ts.tickets {
            if rec.grouping != Grouping::TeamRule {
                continue;
            }
            if let Some((k, c)) = contribution(ts, key, max_locations) {
                parts.entry(k).or_default().insert(spec.clone(), c);
            }
        }
    }
    parts
}

/// Derives the ticket `key` from its contributions (`parts`, by target;
/// None when no target has a part left) and its record as last published
/// in `tickets`, which it updates; returns its transitions.
pub fn derive(
    key: &str,
    parts: Option<&BTreeMap<String, Contribution>>,
    tickets: &mut BTreeMap<String, TicketRecord>,
    router: &Router,
    settings: &TicketSettings,
) -> Vec<TicketTransition> {
    let mut out = Vec::new();
    let all: Vec<&Contribution> = parts.map(|p| p.values().collect()).unwrap_or_default();
    let open: Vec<&Contribution> = all.iter().copied().filter(|c| c.is_open()).collect();
    let Some(sample) = open.first().or(all.first()).copied() else {
        // No target has a part left (its findings were all regrouped or
        // reassigned): an open ticket resolves.
        if let Some(rec) = tickets.get_mut(key) {
            if rec.status == TicketStatus::Open {
                let reason = (settings.grouping_for(rec.team.as_deref()) != Grouping::TeamRule)
                    .then_some(TicketReason::Regrouped);
                rec.status = TicketStatus::Resolved;
                rec.open_members.clear();
                rec.counts = TicketCounts::default();
                rec.breached = false;
                out.push(TicketTransition::next(
                    rec,
                    key,
                    TicketEventKind::Resolved,
                    reason,
                ));
            }
        }
        return out;
    };
    let members: BTreeSet<String> = open
        .iter()
        .flat_map(|c| c.part.open_members.iter().cloned())
        .collect();
    let mut counts = TicketCounts::default();
    for c in &all {
        let n = &c.part.counts;
        counts.open += n.open;
        counts.accepted += n.accepted;
        counts.resolved += n.resolved;
        counts.false_positive += n.false_positive;
        counts.suppressed += n.suppressed;
        counts.not_affected += n.not_affected;
    }
    let severity = open
        .iter()
        .chain(if open.is_empty() {
            all.iter()
        } else {
            [].iter()
        })
        .map(|c| c.part.severity)
        .max()
        .unwrap_or(sample.part.severity);
    let due = open.iter().filter_map(|c| c.part.due_at).min();
    let breached = open.iter().any(|c| c.part.breached);
    let is_open = !open.is_empty();
    let team = sample.part.team.clone();
    let title = render::team_rule_title(&sample.part.title, team.as_deref());
    let route = router
        .route(team.as_deref(), severity, sample.part.category)
        .to_string();
    let help = open
        .iter()
        .chain(all.iter())
        .find_map(|c| c.part.help.clone());
    match tickets.get_mut(key) {
        None if !is_open => {}
        None => {
            let rec = TicketRecord {
                team,
                target: sample.part.target.clone(),
                group: sample.part.group.clone(),
                grouping: Grouping::TeamRule,
                commit: None,
                git_ref: None,
                category: sample.part.category,
                title,
                help,
                status: TicketStatus::Open,
                severity,
                due_at: due,
                open_members: members,
                counts,
                breached,
                route,
                seq: 0,
            };
            let rec = super::open_record(rec, key, &mut out);
            tickets.insert(key.to_string(), rec);
        }
        Some(rec) => {
            rec.target = sample.part.target.clone();
            rec.category = sample.part.category;
            let reason = (settings.grouping_for(rec.team.as_deref()) != Grouping::TeamRule)
                .then_some(TicketReason::Regrouped);
            let fresh = super::Refreshed {
                open_members: members,
                severity,
                due_at: due,
                counts,
                breached,
                route,
                title,
                help,
            };
            super::refresh_record(rec, key, fresh, is_open, reason, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Category, Severity};
    use chrono::{DateTime, TimeZone, Utc};

    fn router() -> Router {
        Router {
            routes: Vec::new(),
            default_topic: "custody.tickets".into(),
        }
    }

    fn team_rule() -> TicketSettings {
        TicketSettings {
            grouping: Grouping::TeamRule,
            ..TicketSettings::default()
        }
    }

    fn day(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, d, 0, 0, 0).single().unwrap()
    }

    /// A target's part of payments' B101 ticket, with `open` members.
    fn part(target: &str, open: &[&str], severity: Severity, due: Option<u32>) -> Contribution {
        let open: BTreeSet<String> = open.iter().map(|s| format!("{target}/{s}")).collect();
        Contribution {
            part: TicketRecord {
                team: Some("payments".into()),
                target: target.parse().unwrap(),
                group: "B101".into(),
                grouping: Grouping::TeamRule,
                commit: None,
                git_ref: None,
                category: Category::Sast,
                title: "Use of assert".into(),
                help: None,
                status: if open.is_empty() {
                    TicketStatus::Resolved
                } else {
                    TicketStatus::Open
                },
                severity,
                due_at: due.filter(|_| !open.is_empty()).map(day),
                counts: TicketCounts {
                    open: open.len() as u32,
                    resolved: u32::from(open.is_empty()),
                    ..TicketCounts::default()
                },
                open_members: open,
                breached: false,
                route: "ignored".into(),
                seq: 3,
            },
            members: Vec::new(),
        }
    }

    const A: &str = "repo:github.com/acme/api";
    const B: &str = "repo:github.com/acme/web";

    fn key() -> String {
        team_rule_key(Some("payments"), "B101")
    }

    fn kinds(t: &[TicketTransition]) -> Vec<(TicketEventKind, u64, Option<TicketReason>)> {
        t.iter().map(|t| (t.kind, t.seq, t.reason)).collect()
    }

    #[test]
    fn the_key_is_one_per_team_and_rule_and_never_a_targets_part() {
        let k = key();
        assert!(k.starts_with("tk2-"));
        assert_eq!(k, team_rule_key(Some("payments"), "B101"));
        assert_ne!(k, team_rule_key(Some("qa"), "B101"));
        assert_ne!(k, team_rule_key(Some("payments"), "B102"));
        assert_ne!(k, team_rule_key(None, "B101"));
        let part_a = super::super::group_key(Grouping::TeamRule, Some("payments"), A, "B101", "x");
        let part_b = super::super::group_key(Grouping::TeamRule, Some("payments"), B, "B101", "y");
        assert_ne!(part_a, part_b);
        assert_ne!(part_a, k);
    }

    /// Two targets' parts make one ticket, opened once, holding both
    /// targets' members, at the highest severity and the earliest due
    /// date; the same parts again say nothing.
    #[test]
    fn the_sum_of_the_targets_parts_opens_one_ticket_once() {
        let mut tickets = BTreeMap::new();
        let parts = BTreeMap::from([
            (
                A.to_string(),
                part(A, &["1", "2"], Severity::Medium, Some(20)),
            ),
            (B.to_string(), part(B, &["1"], Severity::High, Some(9))),
        ]);
        let t = derive(&key(), Some(&parts), &mut tickets, &router(), &team_rule());
        assert_eq!(kinds(&t), [(TicketEventKind::Opened, 1, None)]);
        let rec = &tickets[&key()];
        assert_eq!(rec.open_members.len(), 3);
        assert_eq!(rec.counts.open, 3);
        assert_eq!(rec.severity, Severity::High);
        assert_eq!(rec.due_at, Some(day(9)));
        assert_eq!(rec.grouping, Grouping::TeamRule);
        assert_eq!(rec.title, "Use of assert (payments)");
        assert_eq!(rec.route, "custody.tickets");
        let again = derive(&key(), Some(&parts), &mut tickets, &router(), &team_rule());
        assert!(again.is_empty(), "{again:?}");
    }

    /// A target fixing its findings updates the ticket while another
    /// target still has some; its tombstone changes nothing more; the last
    /// target's fix resolves it, and a new finding reopens it.
    #[test]
    fn the_ticket_resolves_when_the_last_targets_part_has_nothing_open() {
        let mut tickets = BTreeMap::new();
        let mut parts = BTreeMap::from([
            (A.to_string(), part(A, &["1"], Severity::High, Some(9))),
            (B.to_string(), part(B, &["1"], Severity::Low, Some(20))),
        ]);
        let k = key();
        let s = team_rule();
        derive(&k, Some(&parts), &mut tickets, &router(), &s);

        parts.insert(A.to_string(), part(A, &[], Severity::High, None));
        let t = derive(&k, Some(&parts), &mut tickets, &router(), &s);
        assert_eq!(kinds(&t), [(TicketEventKind::Updated, 2, None)]);
        let rec = &tickets[&k];
        assert_eq!(
            (
                rec.severity,
                rec.due_at,
                rec.counts.open,
                rec.counts.resolved
            ),
            (Severity::Low, Some(day(20)), 1, 1)
        );
        assert_eq!(rec.target, B.parse().unwrap());

        // The fixed target's part gone altogether (its tombstone).
        parts.remove(A);
        assert!(derive(&k, Some(&parts), &mut tickets, &router(), &s).is_empty());

        parts.insert(B.to_string(), part(B, &[], Severity::Low, None));
        let t = derive(&k, Some(&parts), &mut tickets, &router(), &s);
        assert_eq!(kinds(&t), [(TicketEventKind::Resolved, 3, None)]);
        assert_eq!(tickets[&k].status, TicketStatus::Resolved);
        assert!(tickets[&k].open_members.is_empty());

        parts.insert(A.to_string(), part(A, &["7"], Severity::Medium, Some(30)));
        let t = derive(&k, Some(&parts), &mut tickets, &router(), &s);
        assert_eq!(kinds(&t), [(TicketEventKind::Reopened, 4, None)]);
    }

    /// The last target's part gone (its tombstone) resolves the ticket;
    /// when the team is no longer grouped by team and rule, it says
    /// `regrouped`.
    #[test]
    fn the_last_tombstone_resolves_saying_regrouped_when_the_grouping_changed() {
        for (settings, reason) in [
            (team_rule(), None),
            (TicketSettings::default(), Some(TicketReason::Regrouped)),
        ] {
            let mut tickets = BTreeMap::new();
            let parts = BTreeMap::from([(A.to_string(), part(A, &["1"], Severity::High, None))]);
            derive(&key(), Some(&parts), &mut tickets, &router(), &team_rule());
            let t = derive(&key(), None, &mut tickets, &router(), &settings);
            assert_eq!(kinds(&t), [(TicketEventKind::Resolved, 2, reason)]);
            assert!(derive(&key(), None, &mut tickets, &router(), &settings).is_empty());
        }
    }

    /// The records as last published, written and read back (a restart),
    /// with the same parts: nothing to say; with one part changed: that
    /// change alone, its sequence following on.
    #[test]
    fn restored_records_and_the_same_parts_publish_nothing_new() {
        let mut tickets = BTreeMap::new();
        let mut parts = BTreeMap::from([
            (
                A.to_string(),
                part(A, &["1", "2"], Severity::Medium, Some(20)),
            ),
            (B.to_string(), part(B, &["1"], Severity::High, Some(9))),
        ]);
        derive(&key(), Some(&parts), &mut tickets, &router(), &team_rule());
        let kept = serde_json::to_string(&tickets).unwrap();
        let mut restored: BTreeMap<String, TicketRecord> = serde_json::from_str(&kept).unwrap();
        assert_eq!(restored, tickets);
        let t = derive(&key(), Some(&parts), &mut restored, &router(), &team_rule());
        assert!(t.is_empty(), "{t:?}");

        parts.insert(B.to_string(), part(B, &["1", "3"], Severity::High, Some(9)));
        let t = derive(&key(), Some(&parts), &mut restored, &router(), &team_rule());
        assert_eq!(kinds(&t), [(TicketEventKind::Updated, 2, None)]);
        assert_eq!(restored[&key()].open_members.len(), 4);
    }

    /// A part's breach is the ticket's, said once.
    #[test]
    fn a_breached_part_breaches_the_ticket_once() {
        let mut tickets = BTreeMap::new();
        let mut parts = BTreeMap::from([
            (A.to_string(), part(A, &["1"], Severity::High, Some(9))),
            (B.to_string(), part(B, &["1"], Severity::High, Some(9))),
        ]);
        derive(&key(), Some(&parts), &mut tickets, &router(), &team_rule());
        for target in [A, B] {
            let mut p = part(target, &["1"], Severity::High, Some(9));
            p.part.breached = true;
            parts.insert(target.to_string(), p);
            let t = derive(&key(), Some(&parts), &mut tickets, &router(), &team_rule());
            let want: &[_] = if target == A {
                &[(TicketEventKind::SlaBreached, 2, None)]
            } else {
                &[]
            };
            assert_eq!(kinds(&t), want, "{target}");
        }
        assert!(tickets[&key()].breached);
    }
}
