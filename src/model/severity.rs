//! Severity, normalized from each format's own scale.
//!
//! Scanners disagree on scales (SARIF levels, CVSS scores, vendor words such
//! as "Negligible" or "Moderate"); custody keeps one ordered scale so SLA
//! policies, routing and metrics can compare findings of any tool.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Normalized severity, ordered from least to most severe.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational, negligible or unknown.
    Info,
    /// Low.
    Low,
    /// Medium (also "moderate").
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// All severities, most severe first (the order tables are printed in).
    pub const ALL_DESC: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Info,
    ];

    /// Maps a CVSS base score (0.0 to 10.0) the way CVSS v3 and GitHub's
    /// `security-severity` do: 9.0+ critical, 7.0+ high, 4.0+ medium,
    /// 0.1+ low, otherwise info.
    pub fn from_cvss(score: f64) -> Severity {
        if !score.is_finite() || score < 0.1 {
            Severity::Info
        } else if score >= 9.0 {
            Severity::Critical
        } else if score >= 7.0 {
            Severity::High
        } else if score >= 4.0 {
            Severity::Medium
        } else {
            Severity::Low
        }
    }

    /// Maps a vendor's severity word, case-insensitively. Knows the words of
    /// Trivy, Grype, Semgrep, Bandit, Checkov, Gitleaks and SARIF levels.
    /// Returns `None` for words it does not know, so callers can fall back
    /// to another source instead of guessing.
    pub fn from_label(label: &str) -> Option<Severity> {
        // Most labels need no trimming: a text that starts and ends with
        // ASCII other than whitespace does not start or end with any
        // whitespace.
        let bytes = label.as_bytes();
        let bare = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii() && !b.is_ascii_whitespace());
        let l = if bare(bytes.first()) && bare(bytes.last()) {
            label
        } else {
            label.trim()
        };
        let eq = |w: &str| l.eq_ignore_ascii_case(w);
        if eq("critical") || eq("blocker") {
            Some(Severity::Critical)
        } else if eq("high") || eq("error") || eq("major") || eq("important") {
            Some(Severity::High)
        } else if eq("medium") || eq("moderate") || eq("warning") {
            Some(Severity::Medium)
        } else if eq("low") || eq("note") || eq("minor") {
            Some(Severity::Low)
        } else if eq("info")
            || eq("informational")
            || eq("information")
            || eq("negligible")
            || eq("none")
            || eq("unknown")
            || eq("inventory")
            || eq("experiment")
        {
            Some(Severity::Info)
        } else {
            None
        }
    }

    /// The lowercase name used in events, configuration and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cvss_boundaries() {
        let table = [
            (0.0, Severity::Info),
            (0.1, Severity::Low),
            (3.9, Severity::Low),
            (4.0, Severity::Medium),
            (6.9, Severity::Medium),
            (7.0, Severity::High),
            (8.9, Severity::High),
            (9.0, Severity::Critical),
            (10.0, Severity::Critical),
            (f64::NAN, Severity::Info),
        ];
        for (score, want) in table {
            assert_eq!(Severity::from_cvss(score), want, "score {score}");
        }
    }

    #[test]
    fn vendor_words() {
        let table = [
            ("CRITICAL", Some(Severity::Critical)),
            ("High", Some(Severity::High)),
            ("error", Some(Severity::High)),
            ("Moderate", Some(Severity::Medium)),
            ("WARNING", Some(Severity::Medium)),
            ("note", Some(Severity::Low)),
            ("Negligible", Some(Severity::Info)),
            ("UNKNOWN", Some(Severity::Info)),
            ("spicy", None),
            // Whitespace around a word, ASCII or not, is not part of it.
            (" high\t", Some(Severity::High)),
            ("\u{a0}Low\u{2003}", Some(Severity::Low)),
            ("\u{3000}critical", Some(Severity::Critical)),
            ("medium\n", Some(Severity::Medium)),
            ("é", None),
            ("", None),
            (" ", None),
        ];
        for (word, want) in table {
            assert_eq!(Severity::from_label(word), want, "word {word}");
        }
    }

    #[test]
    fn ordering_is_by_gravity() {
        assert!(Severity::Critical > Severity::High);
        assert!(Severity::Low > Severity::Info);
    }
}
