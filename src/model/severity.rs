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
            bytes
        } else {
            label.trim().as_bytes()
        };
        // Lowercased into a small buffer and matched once: no word it
        // knows is longer than the buffer.
        let mut lower = [0u8; 16];
        let word = lower.get_mut(..l.len())?;
        for (to, from) in word.iter_mut().zip(l) {
            *to = from.to_ascii_lowercase();
        }
        match &*word {
            b"critical" | b"blocker" => Some(Severity::Critical),
            b"high" | b"error" | b"major" | b"important" => Some(Severity::High),
            b"medium" | b"moderate" | b"warning" => Some(Severity::Medium),
            b"low" | b"note" | b"minor" => Some(Severity::Low),
            b"info" | b"informational" | b"information" | b"negligible" | b"none" | b"unknown"
            | b"inventory" | b"experiment" => Some(Severity::Info),
            _ => None,
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
            // Longer than any word it knows, and a word's prefix.
            ("informational-and-more", None),
            ("criticality", None),
            ("hig", None),
            // Only ASCII letters fold: a Kelvin sign is not a K.
            ("\u{212a}", None),
            ("InFoRmAtIoNaL", Some(Severity::Info)),
        ];
        for (word, want) in table {
            assert_eq!(Severity::from_label(word), want, "word {word}");
        }
    }

    /// The definition `from_label` is fast for: the label trimmed, then
    /// compared with each word without regard to ASCII case.
    fn by_definition(label: &str) -> Option<Severity> {
        let words: [(&[&str], Severity); 5] = [
            (&["critical", "blocker"], Severity::Critical),
            (&["high", "error", "major", "important"], Severity::High),
            (&["medium", "moderate", "warning"], Severity::Medium),
            (&["low", "note", "minor"], Severity::Low),
            (
                &[
                    "info",
                    "informational",
                    "information",
                    "negligible",
                    "none",
                    "unknown",
                    "inventory",
                    "experiment",
                ],
                Severity::Info,
            ),
        ];
        let l = label.trim();
        words
            .iter()
            .find(|(ws, _)| ws.iter().any(|w| l.eq_ignore_ascii_case(w)))
            .map(|(_, s)| *s)
    }

    proptest::proptest! {
        #[test]
        fn from_label_is_the_trimmed_case_blind_comparison(
            label in "[ \t\u{a0}\u{2003}]{0,2}(?i:(critical|high|moderate|note|informational|none|experiment|warnings?|lo|x))[ \n\u{3000}é]{0,2}",
            any in "\\PC{0,20}",
        ) {
            proptest::prop_assert_eq!(Severity::from_label(&label), by_definition(&label));
            proptest::prop_assert_eq!(Severity::from_label(&any), by_definition(&any));
        }
    }

    #[test]
    fn ordering_is_by_gravity() {
        assert!(Severity::Critical > Severity::High);
        assert!(Severity::Low > Severity::Info);
    }
}
