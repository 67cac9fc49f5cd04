//! What custody keeps of a ticket: its record, its status and the grouping
//! it was made under. Grouping findings into tickets, their transitions and
//! their routing are [`crate::ticket`]'s.

use super::{Category, Severity, Target, TicketCounts};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What findings one ticket holds. Per-target state keeps every ticket, so
/// every grouping but [`Grouping::TeamRule`] stays within one target; that
/// one's per-target parts are kept like the others' tickets and summed
/// across targets into one ticket ([`crate::ticket::aggregate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Grouping {
    /// One ticket per team, target and rule or vulnerability (the default).
    #[default]
    TeamTargetRule,
    /// One ticket per team and target, whatever the rule.
    TeamTarget,
    /// One ticket per finding.
    Finding,
    /// One ticket per team and rule or vulnerability, across targets.
    TeamRule,
}

impl Grouping {
    /// The snake_case name used in configuration and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Grouping::TeamTargetRule => "team_target_rule",
            Grouping::TeamTarget => "team_target",
            Grouping::Finding => "finding",
            Grouping::TeamRule => "team_rule",
        }
    }
}

/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    /// Has open members.
    Open,
    /// Has none.
    Resolved,
}

/// Everything custody remembers about one ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketRecord {
    /// Owning team.
    pub team: Option<String>,
    /// The target.
    pub target: Target,
    /// Rule or vulnerability id (empty when the grouping spans rules).
    pub group: String,
    /// The grouping it was made under (records from before groupings
    /// were configurable were made under the default).
    #[serde(default)]
    pub grouping: Grouping,
    /// The commit of the last scan that refreshed it, if the scan named
    /// one: links in its body point there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The branch or tag of that scan, if it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Category of its findings.
    pub category: Category,
    /// Title.
    pub title: String,
    /// The rule's help text, as the last scan that refreshed the ticket
    /// and described the rule gave it (at most
    /// [`super::RuleHelp::MAX_BYTES`]): kept here, once per ticket, so
    /// that every later event of the ticket (an SLA breach, a decision)
    /// has the same body. None for a ticket spanning rules or of one
    /// finding (that would be a copy per finding), and in records from
    /// before tickets kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<std::sync::Arc<str>>,
    /// Status.
    pub status: TicketStatus,
    /// Highest severity of the open members.
    pub severity: Severity,
    /// Earliest due date of the open members.
    pub due_at: Option<DateTime<Utc>>,
    /// Fingerprints of the open members.
    pub open_members: BTreeSet<String>,
    /// Members by status.
    pub counts: TicketCounts,
    /// Whether an open member is past due.
    pub breached: bool,
    /// Topic chosen by routing.
    pub route: String,
    /// Number of transitions so far: part of each event's id.
    pub seq: u64,
}
