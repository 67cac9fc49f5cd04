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
}

impl Evidence {
    /// True when there is nothing to show.
    pub fn is_empty(&self) -> bool {
        self.snippet.is_none() && self.secret_hash.is_none()
    }
}

impl Finding {
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
