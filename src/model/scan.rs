//! Scan metadata and finding status.

use super::{Category, Target};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What one scan was: which target, which tools and categories it covered,
/// and whether it ran to completion. Only a complete scan can resolve
/// findings by their absence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanMeta {
    /// The scan's id (given by the publisher, or derived from the content);
    /// empty when not known, and events then carry none.
    pub scan_id: String,
    /// What was scanned.
    pub target: Target,
    /// Commit scanned, if known.
    pub commit: Option<String>,
    /// Branch or tag scanned, if known.
    pub git_ref: Option<String>,
    /// True when the scan ran to completion over the whole target.
    pub complete: bool,
    /// The (scanner, category) pairs this scan looked for. A finding of a
    /// pair the scan covers, and that the scan did not report, is resolved.
    pub coverage: BTreeSet<(String, Category)>,
}

impl ScanMeta {
    /// A scan id derived from the report's bytes, for publishers that give
    /// none: the same report always gets the same id.
    pub fn content_id(report: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(&Sha256::digest(report)[..12])
    }
}

/// Where a finding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Reported and not fixed.
    Open,
    /// No longer reported by a complete scan.
    Resolved,
    /// Risk accepted until an expiry date.
    Accepted,
    /// Declared not a real issue.
    FalsePositive,
    /// Suppressed in source or by an external suppression (SARIF), with
    /// the suppression's justification; not open.
    Suppressed,
    /// Does not affect the target: the vendor's status or a VEX
    /// statement says so; not open.
    NotAffected,
}

impl Status {
    /// The status a disposition puts a finding in.
    pub fn of(state: super::DispositionState) -> Status {
        match state {
            super::DispositionState::Suppressed => Status::Suppressed,
            super::DispositionState::NotAffected => Status::NotAffected,
        }
    }

    /// The snake_case name used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Resolved => "resolved",
            Status::Accepted => "accepted",
            Status::FalsePositive => "false_positive",
            Status::Suppressed => "suppressed",
            Status::NotAffected => "not_affected",
        }
    }
}

/// Whether a finding came with the target or was shipped into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provenance {
    /// Present before its scanner's first complete scan of the target
    /// finished (in that scan or an earlier partial one): it was there
    /// when custody started watching. Also what a finding recorded by a
    /// version of custody that did not keep origins counts as.
    Inherited,
    /// Brought by a later scan: shipped while custody was watching.
    Introduced,
}

impl Provenance {
    /// The snake_case name used in events and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Provenance::Inherited => "inherited",
            Provenance::Introduced => "introduced",
        }
    }
}

/// Where a finding was first seen: the scan that brought it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Origin {
    /// Inherited or introduced.
    pub provenance: Provenance,
    /// When that scan was applied (the finding's first sighting).
    #[serde(serialize_with = "super::time::serialize")]
    pub at: DateTime<Utc>,
    /// The commit it scanned, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The branch or tag it scanned, if known.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "ref")]
    pub git_ref: Option<String>,
    /// Its scan id, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_id: Option<String>,
}
