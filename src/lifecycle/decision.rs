//! A human decision about one finding (accept the risk, false positive,
//! revoke): its record, as the decisions topic and decisions files carry
//! it, read and checked on its own. Applying it is [`super::apply_decision`].

use crate::model::Target;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a decision record decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// Accept the risk until `expires_at` (mandatory).
    AcceptRisk,
    /// Not a real issue.
    FalsePositive,
    /// Withdraw an earlier acceptance or false-positive decision.
    Revoke,
}

/// A human decision about one finding, as read from the decisions topic or
/// a decisions file (JSON Lines).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRecord {
    /// The finding's target.
    pub target: Target,
    /// The finding's fingerprint.
    pub fingerprint: String,
    /// What is decided.
    pub decision: DecisionKind,
    /// When an acceptance ends; required for `accept_risk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Why.
    pub reason: String,
    /// Who decided.
    pub author: String,
    /// When it was decided.
    pub decided_at: DateTime<Utc>,
}

/// Reads a JSON Lines file of decisions: each with its 1-based line
/// number; blank lines are skipped, and the first bad line is an error
/// naming it.
pub fn read_decisions(path: &std::path::Path) -> Result<Vec<(usize, DecisionRecord)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let d: DecisionRecord = serde_json::from_str(line)
            .map_err(|e| format!("line {}: {}", i + 1, crate::normalize::json_error(&e)))?;
        out.push((i + 1, d));
    }
    Ok(out)
}

/// Why a decision was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    /// `accept_risk` without an expiry.
    #[error("accept_risk for {0} has no expires_at; risk acceptance must expire")]
    NoExpiry(String),
    /// Expiry not after the decision.
    #[error("accept_risk for {0} expires before it was decided")]
    ExpiryInPast(String),
    /// Fingerprint unknown for the target.
    #[error("no finding {fingerprint} on {target}")]
    UnknownFinding {
        /// Its target.
        target: String,
        /// The fingerprint.
        fingerprint: String,
    },
    /// The decision does not apply to the finding's status.
    #[error("cannot {decision} finding {fingerprint}: it is {status}")]
    NotApplicable {
        /// The fingerprint.
        fingerprint: String,
        /// The decision.
        decision: &'static str,
        /// Its status.
        status: &'static str,
    },
}

impl DecisionRecord {
    /// Checks the record on its own (before any state is looked at).
    pub fn validate(&self) -> Result<(), DecisionError> {
        if self.decision == DecisionKind::AcceptRisk {
            match self.expires_at {
                None => return Err(DecisionError::NoExpiry(self.fingerprint.clone())),
                Some(e) if e <= self.decided_at => {
                    return Err(DecisionError::ExpiryInPast(self.fingerprint.clone()))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}
