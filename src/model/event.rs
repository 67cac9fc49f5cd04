//! The events custody publishes: one per finding transition, and one per
//! ticket transition. Both carry a deterministic `event_id` so consumers can
//! drop redelivered copies.

use super::{Category, Disposition, Location, Origin, Package, Severity, Status, Target};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The `kind` field that tells finding and ticket events apart on a shared
/// stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventClass {
    /// A finding event.
    Finding,
    /// A ticket event.
    Ticket,
}

/// What happened to a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FindingEventKind {
    /// First seen.
    Opened,
    /// Severity or message changed.
    Updated,
    /// Absent from a complete scan by every tool that reported it.
    Resolved,
    /// Seen again after being resolved.
    Reopened,
    /// Its owning team changed.
    Reassigned,
    /// Open past its SLA due date (fires once).
    SlaBreached,
    /// Risk accepted until an expiry.
    Accepted,
    /// A risk acceptance ran out; the finding is open again.
    AcceptanceExpired,
    /// Declared a false positive.
    FalsePositive,
    /// Suppressed (SARIF `suppressions`): first seen suppressed, or a
    /// suppression added. Removing it later gives `reopened`.
    Suppressed,
    /// Not affected (a vendor's status, a VEX statement): first seen so, or
    /// declared so. A later report or statement of it as affected gives
    /// `reopened`.
    NotAffected,
}

impl FindingEventKind {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingEventKind::Opened => "opened",
            FindingEventKind::Updated => "updated",
            FindingEventKind::Resolved => "resolved",
            FindingEventKind::Reopened => "reopened",
            FindingEventKind::Reassigned => "reassigned",
            FindingEventKind::SlaBreached => "sla_breached",
            FindingEventKind::Accepted => "accepted",
            FindingEventKind::AcceptanceExpired => "acceptance_expired",
            FindingEventKind::FalsePositive => "false_positive",
            FindingEventKind::Suppressed => "suppressed",
            FindingEventKind::NotAffected => "not_affected",
        }
    }
}

/// Why a finding belongs to its team.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Attribution {
    /// The team id, or null when unattributed.
    pub team: Option<String>,
    /// Which source decided: `finding`, `codeowners`, `catalog`,
    /// `mapping`, `fallback` or `none`.
    pub source: String,
    /// The file or catalog entity that decided, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The 1-based line of the deciding rule, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// The rule text that decided, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The owners as written in the source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
}

impl Attribution {
    /// Why no team owns a finding with this answer: an owner named that
    /// maps to no team, or no source that matched (`has_path`: whether the
    /// finding has a path CODEOWNERS could have matched).
    pub fn unowned_reason(&self, has_path: bool) -> String {
        if !self.owners.is_empty() {
            let mut at = self.source.clone();
            if let Some(f) = &self.file {
                at.push(' ');
                at.push_str(f);
                if let Some(l) = self.line {
                    at.push_str(&format!(":{l}"));
                }
            }
            return format!(
                "owner {} (from {at}) is not a configured team or alias",
                self.owners.join(", ")
            );
        }
        if has_path {
            "no CODEOWNERS rule matches its path, and no catalog entry, mapping or fallback covers its target".to_string()
        } else {
            "no path to match CODEOWNERS against, and no catalog entry, mapping or fallback covers its target".to_string()
        }
    }

    /// The answer when no source names an owner.
    pub fn unattributed() -> Attribution {
        Attribution {
            team: None,
            source: "none".to_string(),
            file: None,
            line: None,
            rule: None,
            owners: Vec::new(),
        }
    }
}

/// A finding transition, as published on the findings topic and printed by
/// `custody process`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FindingEvent {
    /// Always `finding`.
    pub kind: EventClass,
    /// What happened.
    pub event: FindingEventKind,
    /// Deterministic id: the same transition of the same finding always has
    /// the same id.
    pub event_id: String,
    /// When custody processed it (the injected clock).
    #[serde(serialize_with = "super::time::serialize")]
    pub at: DateTime<Utc>,
    /// The finding's versioned fingerprint.
    pub fingerprint: String,
    /// Owning team id, null when unattributed.
    pub team: Option<String>,
    /// The previous team, on `reassigned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_team: Option<String>,
    /// Normalized severity.
    pub severity: Severity,
    /// The target.
    pub target: Target,
    /// Status after the transition.
    pub status: Status,
    /// Category.
    pub category: Category,
    /// Tools currently reporting it.
    pub scanners: Vec<String>,
    /// Rule id or canonical vulnerability id.
    pub rule_id: String,
    /// Other ids of the vulnerability.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Short title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<Arc<str>>,
    /// The scanner's message.
    pub message: String,
    /// Latest location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Affected package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<Package>,
    /// When it was first seen.
    #[serde(serialize_with = "super::time::serialize")]
    pub first_seen: DateTime<Utc>,
    /// SLA due date while open, if the policy sets one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::time::serialize_opt"
    )]
    pub due_at: Option<DateTime<Utc>>,
    /// End of the risk acceptance, when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_until: Option<DateTime<Utc>>,
    /// While suppressed or not affected: who said so and why (the
    /// suppression's kind, status and justification, or the vendor's or
    /// VEX statement's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<Disposition>,
    /// The ticket this finding belongs to.
    pub ticket_key: String,
    /// Why the team owns it.
    pub attribution: Arc<Attribution>,
    /// The scan that caused the event, if a scan did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_id: Option<String>,
    /// Where the finding was first seen: `inherited` with the target, or
    /// `introduced` by a later scan, with that scan's commit, ref and time.
    /// A finding custody recorded before it kept origins is inherited, at
    /// its first sighting, with no commit or ref.
    pub origin: Origin,
    /// On `resolved`: the status it was resolved from (`open` when it was
    /// fixed; `accepted`, `suppressed` or `not_affected` when it went
    /// away while excused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_status: Option<Status>,
}

/// What happened to a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketEventKind {
    /// The group got its first open finding.
    Opened,
    /// Members, severity or due date changed while open.
    Updated,
    /// No open finding is left.
    Resolved,
    /// A resolved ticket got an open finding again.
    Reopened,
    /// The group's findings moved to another team's ticket.
    Reassigned,
    /// A member passed its SLA due date.
    SlaBreached,
}

impl TicketEventKind {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TicketEventKind::Opened => "opened",
            TicketEventKind::Updated => "updated",
            TicketEventKind::Resolved => "resolved",
            TicketEventKind::Reopened => "reopened",
            TicketEventKind::Reassigned => "reassigned",
            TicketEventKind::SlaBreached => "sla_breached",
        }
    }
}

/// Why a ticket transition happened, when its kind alone does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketReason {
    /// The grouping of the team's tickets changed: this ticket's findings
    /// moved to tickets of the new grouping, which open once.
    Regrouped,
}

/// Member counts of a ticket by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct TicketCounts {
    /// Open members.
    pub open: u32,
    /// Risk-accepted members.
    pub accepted: u32,
    /// Resolved members.
    pub resolved: u32,
    /// False-positive members.
    pub false_positive: u32,
    /// Suppressed members.
    #[serde(default)]
    pub suppressed: u32,
    /// Members that do not affect the target.
    #[serde(default)]
    pub not_affected: u32,
}

/// A ticket transition, routed to a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TicketEvent {
    /// Always `ticket`.
    pub kind: EventClass,
    /// What happened.
    pub event: TicketEventKind,
    /// Deterministic id.
    pub event_id: String,
    /// When custody processed it.
    #[serde(serialize_with = "super::time::serialize")]
    pub at: DateTime<Utc>,
    /// Stable key of the group (team, target, rule or vulnerability).
    pub ticket_key: String,
    /// Owning team, null when unattributed.
    pub team: Option<String>,
    /// The previous team, on `reassigned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_team: Option<String>,
    /// On `reassigned`: the ticket the findings moved to (this one is
    /// closed; the new team's ticket carries them on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reassigned_to: Option<String>,
    /// Why, when the kind alone does not say: `regrouped` on the
    /// `resolved` of a ticket whose team's grouping changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<TicketReason>,
    /// How the ticket groups findings: `team_target_rule`, `team_target`,
    /// `finding` or `team_rule` (one ticket per team and rule across
    /// targets).
    pub grouping: super::ticket::Grouping,
    /// Highest severity among open members (or among all, once resolved).
    pub severity: Severity,
    /// The target (under `team_rule`, the first of `targets`, or of the
    /// targets that held members once none is left).
    pub target: Target,
    /// Under `team_rule`: every target holding open members, sorted.
    /// Absent under the other groupings, whose tickets hold one target's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
    /// Category of the members.
    pub category: Category,
    /// The rule or vulnerability the group is about (empty when the
    /// grouping spans rules).
    pub group: String,
    /// Short title (at most 256 bytes).
    pub title: String,
    /// The ticket's description in Markdown, for a tracker to show as it
    /// is: what is wrong and its help, severity and SLA due date, the open
    /// locations with links (the first `tickets.max_locations`, saying how
    /// many more), and why the team owns it. Bounded in size; never holds
    /// a secret or a source snippet.
    pub body: String,
    /// Labels for a tracker: `team:<id>` (`team:unattributed`),
    /// `severity:<s>`, `category:<c>` and `scanner:<name>` for the open
    /// members' categories and scanners.
    pub labels: Vec<String>,
    /// Destination topic chosen by the routing rules.
    pub route: String,
    /// Earliest SLA due date among open members.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::time::serialize_opt"
    )]
    pub due_at: Option<DateTime<Utc>>,
    /// Members by status.
    pub counts: TicketCounts,
    /// Fingerprints of the open members.
    pub fingerprints: Vec<String>,
    /// Why the team owns it.
    pub attribution: Arc<Attribution>,
}
