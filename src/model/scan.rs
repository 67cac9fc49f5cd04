//! Scan metadata and finding status.

use super::{Category, Target};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

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
    /// The help text of the rules the report describes: tickets keep it
    /// (not findings), so it is never written per finding.
    #[serde(skip)]
    pub rule_help: RuleHelp,
}

/// The help text a report gives of its rules or vulnerabilities (SARIF's
/// `help` or `fullDescription`, Trivy's and Grype's descriptions), by rule
/// or vulnerability id ([`super::Finding::group_id`]). Each text is cut at
/// [`RuleHelp::MAX_BYTES`]; the first text given for an id is kept. Shared
/// by the scans a report is split into.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleHelp(Arc<BTreeMap<String, Arc<str>>>);

impl RuleHelp {
    /// Longest help text kept, in bytes.
    pub const MAX_BYTES: usize = 4096;

    /// Records `text` as the help of `id`, unless `id` has one already or
    /// `text` is blank; returns whether it was recorded.
    pub fn insert(&mut self, id: &str, text: &str) -> bool {
        let text = text.trim();
        if text.is_empty() || id.is_empty() || self.0.contains_key(id) {
            return false;
        }
        let mut text = text.to_string();
        super::bound_text(&mut text, Self::MAX_BYTES);
        Arc::make_mut(&mut self.0).insert(id.to_string(), text.into());
        true
    }

    /// Whether `id` has help already.
    pub fn contains(&self, id: &str) -> bool {
        self.0.contains_key(id)
    }

    /// The help of `id`.
    pub fn get(&self, id: &str) -> Option<&Arc<str>> {
        self.0.get(id)
    }

    /// How many ids have help.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no id has help.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_help_keeps_the_first_text_of_an_id_cut_at_its_bound() {
        let mut h = RuleHelp::default();
        assert!(!h.insert("R1", "  \n "), "blank help is no help");
        assert!(!h.insert("", "text"));
        assert!(h.insert("R1", " first\n"));
        assert!(!h.insert("R1", "second"));
        assert!(h.insert("R2", &"é".repeat(RuleHelp::MAX_BYTES)));
        assert_eq!(h.get("R1").map(|t| &**t), Some("first"));
        let long = h.get("R2").unwrap();
        assert!(long.len() <= RuleHelp::MAX_BYTES, "{}", long.len());
        assert!(long.ends_with("bytes in all]"), "{long}");
        assert_eq!(h.len(), 2);
        // Copies share the table until one changes.
        let copy = h.clone();
        h.insert("R3", "third");
        assert!(!copy.contains("R3") && h.contains("R3"));
    }
}
