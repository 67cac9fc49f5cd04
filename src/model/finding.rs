//! The normalized finding: what every decoder produces and the native
//! finding format accepts.

use super::{Severity, Target};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The kind of analysis that produced a finding.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Static analysis of source code.
    Sast,
    /// Vulnerable dependencies (software composition analysis).
    Sca,
    /// Vulnerabilities in container image packages.
    Container,
    /// Infrastructure-as-code and configuration checks.
    Iac,
    /// Committed secrets.
    Secret,
    /// Dynamic testing of a running application.
    Dast,
}

impl Category {
    /// The lowercase name used in events and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Sast => "sast",
            Category::Sca => "sca",
            Category::Container => "container",
            Category::Iac => "iac",
            Category::Secret => "secret",
            Category::Dast => "dast",
        }
    }

    /// Whether findings of this category are identified by vulnerability and
    /// package (true) or by code location (false).
    pub fn is_dependency(self) -> bool {
        matches!(self, Category::Sca | Category::Container)
    }
}

/// Where in a file a finding is (1-based lines and columns, as SARIF).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// Path relative to the target's root, with `/` separators.
    pub path: String,
    /// First line of the finding, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_line: Option<u32>,
    /// First column, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_column: Option<u32>,
    /// Last line, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_line: Option<u32>,
    /// Last column, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_column: Option<u32>,
}

/// The dependency a vulnerability was found in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Package {
    /// Ecosystem as a package-URL type (`npm`, `pypi`, `deb`, `apk`,
    /// `golang`, `maven`, ...), so that tools agree.
    pub ecosystem: String,
    /// Package name.
    pub name: String,
    /// Installed version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// First version with a fix, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_version: Option<String>,
}

/// What the scanner showed as proof. For secrets it never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// Source text at the finding (absent for secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snippet: Option<String>,
    /// Salted hash of the secret value, for secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
}

/// What a report itself says of a finding that is not simply open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DispositionState {
    /// Suppressed in source or by an external suppression file (SARIF
    /// `suppressions`).
    Suppressed,
    /// The product is not affected (a vendor's status, a VEX statement).
    NotAffected,
}

impl DispositionState {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DispositionState::Suppressed => "suppressed",
            DispositionState::NotAffected => "not_affected",
        }
    }
}

/// Why a finding is suppressed or not affected, as stated by whoever said
/// so: a suppression of the scanner's report, a vendor's status, a VEX
/// statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Disposition {
    /// Suppressed or not affected.
    pub state: DispositionState,
    /// Where it comes from: for a SARIF suppression its kind (`in_source`,
    /// `external`); `vendor` for a scanner's vendor status; `cyclonedx_vex`
    /// or `openvex` for a VEX document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The suppression's review status (`accepted`, `under_review`), or the
    /// VEX status that decided (`not_affected`, `fixed`, ...), if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The justification given, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
}

/// One normalized finding, as decoded from a report (the native finding
/// format is this object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// The tool that reported it, lowercase (`bandit`, `trivy`, ...).
    pub scanner: String,
    /// What kind of analysis found it.
    pub category: Category,
    /// Rule id, or vulnerability id for dependency findings.
    pub rule_id: String,
    /// Other ids of the same vulnerability (CVE, GHSA, OSV, vendor ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Normalized severity.
    pub severity: Severity,
    /// Where the severity came from (`cvss:7.5`, `level:error`, ...).
    /// Shared (`Arc`) because most findings of a report repeat a few values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity_source: Option<Arc<str>>,
    /// The target, when the finding names its own; otherwise the scan's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// Location in the target, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Affected package, for dependency findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<Package>,
    /// Short title (rule name or vulnerability title); shared between the
    /// findings of one rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<Arc<str>>,
    /// The scanner's message.
    pub message: String,
    /// Proof shown by the scanner.
    #[serde(default, skip_serializing_if = "Evidence::is_empty")]
    pub evidence: Evidence,
    /// Hash of the normalized source line at the finding's start, which the
    /// fingerprint uses instead of the line number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    /// A fingerprint computed by the tool, kept only when it is real (not a
    /// placeholder such as Semgrep's "requires login").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_fingerprint: Option<String>,
    /// CWE ids such as `CWE-78`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cwe: Vec<String>,
    /// Link to the rule or advisory; shared between the findings of one
    /// rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help_uri: Option<Arc<str>>,
    /// An owner stated by the finding itself (e.g. a cloud resource tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Set when the report says the finding is suppressed or does not
    /// affect the target: it is then recorded in that state, not opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<Box<Disposition>>,
}

impl Evidence {
    /// True when there is nothing to show.
    pub fn is_empty(&self) -> bool {
        self.snippet.is_none() && self.secret_hash.is_none()
    }
}

/// The largest message a finding keeps, in bytes; longer ones are cut
/// (see [`Finding::bound`]).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// The largest snippet a finding keeps, in bytes.
pub const MAX_SNIPPET_BYTES: usize = 4 * 1024;
/// The largest path a finding keeps, in bytes.
pub const MAX_PATH_BYTES: usize = 4 * 1024;
/// The largest of any other text a finding keeps (rule id, title, package
/// name and versions, aliases, links...), in bytes.
pub const MAX_FIELD_BYTES: usize = 1024;
/// The most aliases and CWE ids a finding keeps.
pub const MAX_LIST_ITEMS: usize = 64;

/// Cuts `text` to at most `max` bytes (at a character boundary), saying so
/// at its end. Returns whether it was cut.
pub fn bound_text(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let total = text.len();
    let note = format!(" [... cut by custody: {total} bytes in all]");
    let mut end = max.saturating_sub(note.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&note);
    true
}

fn bound_shared(text: &mut Arc<str>, max: usize) {
    if text.len() > max {
        let mut owned = text.to_string();
        bound_text(&mut owned, max);
        *text = owned.into();
    }
}

impl Finding {
    /// Bounds every text of the finding (a scanner's report may hold a
    /// message of megabytes, or a hostile one anything): the message at
    /// [`MAX_MESSAGE_BYTES`], the snippet at [`MAX_SNIPPET_BYTES`], the
    /// path at [`MAX_PATH_BYTES`], other texts at [`MAX_FIELD_BYTES`],
    /// each cut saying so; lists at [`MAX_LIST_ITEMS`]. So every event and
    /// changelog record of a finding stays far below what a broker takes.
    pub fn bound(&mut self) {
        bound_text(&mut self.message, MAX_MESSAGE_BYTES);
        if let Some(s) = &mut self.evidence.snippet {
            bound_text(s, MAX_SNIPPET_BYTES);
        }
        if let Some(l) = &mut self.location {
            bound_text(&mut l.path, MAX_PATH_BYTES);
        }
        for text in [&mut self.scanner, &mut self.rule_id]
            .into_iter()
            .chain(self.aliases.iter_mut())
            .chain(self.cwe.iter_mut())
            .chain(self.owner.iter_mut())
            .chain(self.tool_fingerprint.iter_mut())
            .chain(self.evidence.secret_hash.iter_mut())
            .chain(self.content_hash.iter_mut())
        {
            bound_text(text, MAX_FIELD_BYTES);
        }
        if let Some(p) = &mut self.package {
            for text in [&mut p.ecosystem, &mut p.name]
                .into_iter()
                .chain(p.version.iter_mut())
                .chain(p.fixed_version.iter_mut())
            {
                bound_text(text, MAX_FIELD_BYTES);
            }
        }
        for shared in [
            &mut self.title,
            &mut self.severity_source,
            &mut self.help_uri,
        ]
        .into_iter()
        .flatten()
        {
            bound_shared(shared, MAX_FIELD_BYTES);
        }
        self.aliases.truncate(MAX_LIST_ITEMS);
        self.cwe.truncate(MAX_LIST_ITEMS);
        if let Some(d) = &mut self.disposition {
            for text in d
                .kind
                .iter_mut()
                .chain(d.status.iter_mut())
                .chain(d.justification.iter_mut())
            {
                bound_text(text, MAX_FIELD_BYTES);
            }
        }
    }

    /// A finding with the required fields set and everything else empty;
    /// decoders fill in the rest.
    pub fn new(
        scanner: impl Into<String>,
        category: Category,
        rule_id: impl Into<String>,
        severity: Severity,
        message: impl Into<String>,
    ) -> Finding {
        Finding {
            scanner: scanner.into(),
            category,
            rule_id: rule_id.into(),
            aliases: Vec::new(),
            severity,
            severity_source: None,
            target: None,
            location: None,
            package: None,
            title: None,
            message: message.into(),
            evidence: Evidence::default(),
            content_hash: None,
            tool_fingerprint: None,
            cwe: Vec::new(),
            help_uri: None,
            owner: None,
            disposition: None,
        }
    }

    /// The file path, if the finding has a location.
    pub fn path(&self) -> Option<&str> {
        self.location.as_ref().map(|l| l.path.as_str())
    }

    /// The first line, if known.
    pub fn start_line(&self) -> Option<u32> {
        self.location.as_ref().and_then(|l| l.start_line)
    }

    /// The id tickets group on: the canonical vulnerability id for
    /// dependency findings, the rule id otherwise.
    pub fn group_id(&self) -> &str {
        &self.rule_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_at_a_character_and_say_so() {
        let mut s = "é".repeat(10_000); // 20,000 bytes
        assert!(bound_text(&mut s, 1000));
        assert!(s.len() <= 1000, "{}", s.len());
        assert!(
            s.ends_with(" [... cut by custody: 20000 bytes in all]"),
            "{s}"
        );
        assert!(s.starts_with("éé"));
        let mut short = "short".to_string();
        assert!(!bound_text(&mut short, 1000));
        assert_eq!(short, "short");
    }

    /// Regression (chaos run, 2026-12-06): a valid SARIF result with a
    /// 64 MiB message made a finding event the broker refused
    /// (MessageSizeTooLarge), which stopped the service at every start.
    #[test]
    fn every_text_of_a_finding_is_bounded() {
        let huge = "x".repeat(1 << 20);
        let mut f = Finding::new(
            "bandit",
            Category::Sast,
            huge.clone(),
            Severity::High,
            huge.clone(),
        );
        f.title = Some(huge.as_str().into());
        f.evidence.snippet = Some(huge.clone());
        f.location = Some(Location {
            path: huge.clone(),
            ..Location::default()
        });
        f.aliases = vec![huge.clone(); 1000];
        f.bound();
        let json = serde_json::to_vec(&f).unwrap();
        assert!(json.len() < 200 * 1024, "{} bytes", json.len());
        assert!(f.message.len() <= MAX_MESSAGE_BYTES);
        assert!(f.message.ends_with("1048576 bytes in all]"));
        assert!(f.evidence.snippet.as_ref().unwrap().len() <= MAX_SNIPPET_BYTES);
        assert!(f.path().unwrap().len() <= MAX_PATH_BYTES);
        assert!(f.title.as_ref().unwrap().len() <= MAX_FIELD_BYTES);
        assert_eq!(f.aliases.len(), MAX_LIST_ITEMS);
    }
}
