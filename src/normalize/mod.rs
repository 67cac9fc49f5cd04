//! Decoders: one module per report format behind the [`Decoder`] trait,
//! chosen by name or sniffed from the content.
//!
//! Decoding is pure: bytes in, findings out. Nothing here knows about Kafka
//! or files. Each decoder parses straight into typed, borrowing structs
//! (never into `serde_json::Value`), skipping what it does not need, which
//! is what keeps a 100,000-result report within twice the cost of merely
//! parsing it.

use crate::model::{Category, Finding, RuleHelp, Target};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

pub mod sniff;
pub mod text;
pub mod util;
pub mod vex;

pub use sniff::sniff;

/// Declares the formats: each one's variant (with its documentation), its
/// name, and its decoder's module and type. The enum, [`Format::ALL`],
/// [`Format::name`] and the dispatch to decoders all come from the one
/// list below: a new format is a new decoder module (its [`Decoder`],
/// sniffing markers included) and one line there. Sniffing asks the
/// formats in this order, so a format whose markers another's would also
/// match comes first.
macro_rules! formats {
    ($($(#[$doc:meta])* $variant:ident = $name:literal => $module:ident :: $decoder:ident,)*) => {
        $(pub mod $module;)*

        /// Report formats custody reads.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Format {
            $($(#[$doc])* $variant,)*
        }

        impl Format {
            /// Every format, in the order sniffing reports them.
            pub const ALL: &'static [Format] = &[$(Format::$variant,)*];

            /// The format's name (`--format`, the `custody-format` header).
            pub fn name(self) -> &'static str {
                match self {
                    $(Format::$variant => $name,)*
                }
            }

            fn decode_unbounded(self, bytes: &[u8], ctx: &DecodeContext) -> Result<Report, DecodeError> {
                match self {
                    $(Format::$variant => $module::$decoder.decode(bytes, ctx),)*
                }
            }

            /// How [`sniff`] tells the format (see [`Decoder::markers`]).
            pub fn markers(self) -> Markers {
                match self {
                    $(Format::$variant => $module::$decoder.markers(),)*
                }
            }
        }
    };
}

formats! {
    /// SARIF 2.1.0 (CodeQL, Semgrep, Bandit, Ruff, Checkov, ...).
    Sarif = "sarif" => sarif::SarifDecoder,
    /// Trivy JSON: image, filesystem and Kubernetes reports, legacy list.
    Trivy = "trivy" => trivy::TrivyDecoder,
    /// Grype JSON.
    Grype = "grype" => grype::GrypeDecoder,
    /// Gitleaks JSON (v7 and v8 records).
    Gitleaks = "gitleaks" => gitleaks::GitleaksDecoder,
    /// Bandit JSON (`bandit -f json`); before Semgrep, whose empty report
    /// has Bandit's `errors` too.
    Bandit = "bandit" => bandit::BanditDecoder,
    /// Semgrep JSON (`semgrep --json`).
    Semgrep = "semgrep" => semgrep::SemgrepDecoder,
    /// detect-secrets baseline JSON.
    DetectSecrets = "detect-secrets" => detect_secrets::DetectSecretsDecoder,
    /// Checkov JSON: one report, or a list of reports (one per check type).
    Checkov = "checkov" => checkov::CheckovDecoder,
    /// TruffleHog JSON Lines (`--json`), v3 and v2 records.
    Trufflehog = "trufflehog" => trufflehog::TrufflehogDecoder,
    /// custody's native finding JSON: one object, an array or JSON Lines.
    Native = "native" => native::NativeDecoder,
}

impl Format {
    /// Looks a format up by name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL
            .iter()
            .copied()
            .find(|f| f.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Decodes `bytes` with this format's decoder; every finding's texts
    /// are bounded ([`crate::model::Finding::bound`]).
    pub fn decode(self, bytes: &[u8], ctx: &DecodeContext) -> Result<Report, DecodeError> {
        let mut report = self.decode_unbounded(bytes, ctx)?;
        report
            .findings
            .iter_mut()
            .for_each(crate::model::Finding::bound);
        Ok(report)
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What tells a format from a report's first keys, for [`sniff`]: each
/// decoder declares its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct Markers {
    /// Top-level object keys only this format has.
    pub object_keys: &'static [&'static str],
    /// A `$schema` value holding this (lower case).
    pub schema_holds: Option<&'static str>,
    /// Keys of the first element of a top-level `results` array.
    pub result_keys: &'static [&'static str],
    /// Keys of a top-level `results` object; `Some(&[])`: any object.
    pub results_object_keys: Option<&'static [&'static str]>,
    /// For an empty `results` array: a top-level key that tells the format.
    pub empty_results_key: Option<&'static str>,
    /// A top-level array whose first element has a key of each group.
    pub element_keys: &'static [&'static [&'static str]],
}

/// One report format.
pub trait Decoder {
    /// Which format this decoder reads.
    fn format(&self) -> Format;

    /// How [`sniff`] tells this format.
    fn markers(&self) -> Markers;

    /// Decodes a whole report. Must not panic on any input.
    fn decode(&self, bytes: &[u8], ctx: &DecodeContext) -> Result<Report, DecodeError>;
}

/// What decoders need besides the bytes.
#[derive(Debug, Clone)]
pub struct DecodeContext {
    /// Salt for hashing secret values; a secret never leaves a decoder in
    /// clear.
    pub secret_salt: String,
}

impl Default for DecodeContext {
    fn default() -> DecodeContext {
        DecodeContext {
            secret_salt: DEFAULT_SECRET_SALT.to_string(),
        }
    }
}

/// The salt used when the configuration sets none. Deployments should set
/// their own so hashes cannot be compared across installations.
pub const DEFAULT_SECRET_SALT: &str = "custody-default-salt-v1";

/// A decoded report.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The findings, in report order.
    pub findings: Vec<Finding>,
    /// The (scanner, category) pairs the report covers, including tools
    /// that ran and found nothing.
    pub coverage: BTreeSet<(String, Category)>,
    /// The target the report names, if it names one.
    pub target: Option<Target>,
    /// The targets the report's records name on their own (a Kubernetes
    /// resource, a repository of a Semgrep App listing, a native finding's
    /// `target`), each a target the report scanned, even one whose records
    /// were all skipped or found nothing: the report is split into one scan
    /// per target ([`Report::split`]). Empty for a report of one target.
    pub targets: BTreeSet<Target>,
    /// The commit the report names, if any.
    pub commit: Option<String>,
    /// The branch or tag the report names, if any.
    pub git_ref: Option<String>,
    /// Records skipped on purpose (suppressed, passed checks), with reasons.
    pub skipped: Vec<String>,
    /// The help text of the rules or vulnerabilities of its findings: what
    /// ticket bodies quote (kept by tickets, not findings).
    pub rule_help: RuleHelp,
}

/// One target's part of a report (see [`Report::split`]).
#[derive(Debug, Clone)]
pub struct TargetScan {
    /// The target.
    pub target: Target,
    /// Its findings, in report order.
    pub findings: Vec<Finding>,
}

/// A report has records that name no target, and nothing says which
/// target they are of.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
#[error(
    "the report names no target{}",
    if *records > 0 { format!(" for {records} of its findings") } else { String::new() }
)]
pub struct NoTarget {
    /// How many findings name no target.
    pub records: usize,
}

impl Report {
    /// Splits the report into one scan per target: a finding that names
    /// its own target ([`Finding::target`]) belongs to it, any other to
    /// `default` (the caller's `--target` or message key), or to the
    /// target the report names when there is no default. Every target of
    /// [`Report::targets`] gets a scan, with no findings if none are left
    /// of it; the default target gets one only when a finding falls to
    /// it, or when the report names no target of its own records (a
    /// report of one target, empty or not). Targets come sorted, the
    /// default's scan among them.
    ///
    /// Fails when findings fall to the default and there is none.
    pub fn split(&mut self, default: Option<Target>) -> Result<Vec<TargetScan>, NoTarget> {
        let default = default.or_else(|| self.target.clone());
        // A report of one target: its findings go to the default as they
        // are, not moved one by one.
        if self.targets.is_empty() && self.findings.iter().all(|f| f.target.is_none()) {
            let findings = std::mem::take(&mut self.findings);
            let target = default.ok_or(NoTarget {
                records: findings.len(),
            })?;
            return Ok(vec![TargetScan { target, findings }]);
        }
        let mut by_target: BTreeMap<Target, Vec<Finding>> = self
            .targets
            .iter()
            .map(|t| (t.clone(), Vec::new()))
            .collect();
        let mut unnamed = 0;
        for f in std::mem::take(&mut self.findings) {
            let target = match (&f.target, &default) {
                (Some(t), _) | (None, Some(t)) => t.clone(),
                (None, None) => {
                    unnamed += 1;
                    continue;
                }
            };
            let mut f = f;
            // The scan's target says it from here on.
            f.target = None;
            by_target.entry(target).or_default().push(f);
        }
        if unnamed > 0 {
            return Err(NoTarget { records: unnamed });
        }
        if by_target.is_empty() {
            let target = default.ok_or(NoTarget { records: 0 })?;
            by_target.insert(target, Vec::new());
        }
        Ok(by_target
            .into_iter()
            .map(|(target, findings)| TargetScan { target, findings })
            .collect())
    }

    /// Names every finding's scanner `name` (a publisher's override), and
    /// the coverage with it.
    pub fn set_scanner(&mut self, name: &str) {
        for f in &mut self.findings {
            if f.scanner != name {
                f.scanner = name.to_string();
            }
        }
        let cats: BTreeSet<Category> = self.coverage.iter().map(|(_, c)| *c).collect();
        self.coverage = cats.into_iter().map(|c| (name.to_string(), c)).collect();
    }
}

/// Why a report could not be decoded. Every variant is poison: retrying the
/// same bytes cannot succeed, so the service dead-letters them.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all, truncated, invalid UTF-8 or nested too deeply.
    #[error("not valid JSON: {0}")]
    Syntax(String),
    /// JSON, but not of the shape the format requires.
    #[error("{format} report has the wrong shape: {detail}")]
    Shape {
        /// The format that was expected.
        format: Format,
        /// What was wrong and where.
        detail: String,
    },
    /// No decoder recognizes the content.
    #[error("unknown report format: {0}")]
    UnknownFormat(String),
    /// Larger than the configured limit.
    #[error("report of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Bytes seen (at least).
        size: u64,
        /// The limit.
        limit: u64,
    },
}

impl DecodeError {
    /// A short, fixed reason for metric labels and dead-letter headers.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Syntax(_) => "syntax",
            DecodeError::Shape { .. } => "shape",
            DecodeError::UnknownFormat(_) => "unknown_format",
            DecodeError::TooLarge { .. } => "too_large",
        }
    }

    /// Wraps a serde_json error: syntax problems (including truncation,
    /// invalid UTF-8 and excessive nesting) versus shape problems.
    pub fn from_json(format: Format, err: serde_json::Error) -> DecodeError {
        use serde_json::error::Category as C;
        match err.classify() {
            C::Data => DecodeError::Shape {
                format,
                detail: json_error(&err),
            },
            C::Syntax | C::Eof | C::Io => DecodeError::Syntax(json_error(&err)),
        }
    }
}

/// What a serde_json error says was wrong and where, without any value of
/// the input: serde quotes the value it did not expect (`invalid type:
/// string "AKIA..."`), and a report's values can be secrets, which must not
/// reach a dead-letter header, a log line or a metric. The kind of value,
/// what was expected, the field names of the format and the line and
/// column are kept.
pub fn json_error(err: &serde_json::Error) -> String {
    let text = err.to_string();
    // Syntax errors quote only JSON's own characters (expected `,` or `}`).
    if !err.is_data() {
        return text;
    }
    // serde_json appends " at line L column C"; the rest is serde's.
    let (message, at) = match text.rfind(" at line ") {
        Some(i) => text.split_at(i),
        None => (text.as_str(), ""),
    };
    // "<what it got>, expected <what the format says>": only the first part
    // can hold input, and serde puts it in quotes or backticks, after the
    // kind of value. "missing field `x`" and "duplicate field `x`" name
    // fields of the format and are kept whole.
    let kept = if message.starts_with("missing field") || message.starts_with("duplicate field") {
        message.to_string()
    } else {
        let (got, expected) = match message.rfind(", expected ") {
            Some(i) => message.split_at(i),
            None => (message, ""),
        };
        let got = got
            .find(['"', '`', '\''])
            .map_or(got, |i| got[..i].trim_end());
        // A bare message with no kind of value (a syntax error) keeps only
        // what serde_json wrote before any quote.
        format!("{got}{expected}")
    };
    format!("{kept}{at}")
}

/// The digest that recognizes a report sent again: XXH3-128 of its
/// bytes. It is not a cryptographic hash, and need not be: it is only
/// compared with the digest of the same target's last scan, and a report
/// made to collide with that one would be applied as that scan sent
/// again, which anyone able to send that target's reports can have by
/// sending its last report again. It runs at memory speed (a 200 KB
/// report in 7.4 us on this project's machines, a fifth of BLAKE3's
/// time), and a rescan sent again is hashed whole before anything else.
pub fn report_digest(bytes: &[u8]) -> [u8; 16] {
    xxhash_rust::xxh3::xxh3_128(bytes).to_le_bytes()
}

/// Hashes a secret value with the salt: the only form in which a secret may
/// appear in a fingerprint, event or log.
pub fn secret_hash(salt: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"custody-secret\0");
    h.update(salt.as_bytes());
    h.update(b"\0");
    h.update(secret.as_bytes());
    crate::fingerprint::hex(&h.finalize()[..16])
}

/// Decodes with the named format, or sniffs the format when `format` is
/// `None`.
pub fn decode(
    bytes: &[u8],
    format: Option<Format>,
    ctx: &DecodeContext,
) -> Result<(Format, Report), DecodeError> {
    let format = match format {
        Some(f) => f,
        None => sniff(bytes)?,
    };
    let report = format.decode(bytes, ctx)?;
    Ok((format, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_split_by_the_targets_their_records_name() {
        use crate::model::Severity;
        let t = |s: &str| s.parse::<Target>().unwrap();
        let finding = |target: Option<&str>| {
            let mut f = Finding::new("t", Category::Sast, "R", Severity::High, "m");
            f.target = target.map(t);
            f
        };
        let parts = |r: &mut Report, default: Option<&str>| {
            r.split(default.map(t)).map(|ps| {
                ps.into_iter()
                    .map(|p| {
                        assert!(p.findings.iter().all(|f| f.target.is_none()));
                        (p.target.to_string(), p.findings.len())
                    })
                    .collect::<Vec<_>>()
            })
        };
        // One target: an empty report is still a scan of it.
        let mut r = Report::default();
        assert_eq!(
            parts(&mut r, Some("repo:a/b")),
            Ok(vec![("repo:a/b".into(), 0)])
        );
        assert_eq!(parts(&mut r, None), Err(NoTarget { records: 0 }));
        // Records naming targets, one listed with nothing, one naming none.
        let mut r = Report {
            findings: vec![
                finding(Some("k8s:c/x")),
                finding(None),
                finding(Some("k8s:c/x")),
            ],
            targets: [t("k8s:c/x"), t("k8s:c/y")].into(),
            ..Report::default()
        };
        assert_eq!(
            parts(&mut r.clone(), Some("cloud:c")),
            Ok(vec![
                ("cloud:c".into(), 1),
                ("k8s:c/x".into(), 2),
                ("k8s:c/y".into(), 0)
            ])
        );
        // The report's own target is the default when the caller has none.
        r.target = Some(t("image:nginx"));
        assert_eq!(
            parts(&mut r.clone(), None).map(|p| p[0].clone()),
            Ok(("image:nginx".into(), 1))
        );
        r.target = None;
        assert_eq!(parts(&mut r, None), Err(NoTarget { records: 1 }));
        // Every record naming its target: the default gets no scan.
        let mut r = Report {
            findings: vec![finding(Some("k8s:c/x"))],
            targets: [t("k8s:c/x")].into(),
            ..Report::default()
        };
        assert_eq!(
            parts(&mut r, Some("cloud:c")),
            Ok(vec![("k8s:c/x".into(), 1)])
        );
        assert_eq!(
            NoTarget { records: 2 }.to_string(),
            "the report names no target for 2 of its findings"
        );
    }

    /// Regression (chaos run, 2026-12-06): a Gitleaks report whose
    /// `StartLine` held the secret was dead-lettered with
    /// `invalid type: string "AKIA..."` in its error header.
    #[test]
    fn decode_errors_never_quote_the_reports_values() {
        let secret = "AKIAIOSFODNN7EXAMPLE";
        let cases: [(Format, String); 5] = [
            (
                Format::Gitleaks,
                format!(
                    r#"[{{"Description":"AWS","StartLine":"{secret}","File":"a.py","RuleID":"aws-access-token","Secret":"{secret}","Match":"{secret}"}}]"#
                ),
            ),
            (
                Format::Trivy,
                format!(
                    r#"{{"SchemaVersion":2,"ArtifactName":"x","Results":[{{"Target":"x","Vulnerabilities":"{secret}"}}]}}"#
                ),
            ),
            (
                Format::Sarif,
                format!(
                    r#"{{"version":"2.1.0","runs":[{{"tool":{{"driver":{{"name":"x"}}}},"results":"{secret}"}}]}}"#
                ),
            ),
            (Format::Native, format!(r#"[{{"severity":"{secret}"}}]"#)),
            (
                Format::Native,
                format!(r#"{{"severity":7, "{secret}": 1}}"#),
            ),
        ];
        for (format, report) in cases {
            let err = format
                .decode(report.as_bytes(), &DecodeContext::default())
                .expect_err(&report);
            let text = err.to_string();
            assert!(!text.contains(secret), "{format:?}: {text}");
            assert!(text.contains("line 1 column"), "{format:?}: {text}");
        }
    }

    #[test]
    fn json_errors_keep_the_kind_the_expectation_and_the_place() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct S {
            line: u32,
            level: Option<Level>,
        }
        #[derive(Debug, serde::Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Level {
            Low,
        }
        let table = [
            (
                r#"{"line": "s3cr3t"}"#,
                "invalid type: string, expected u32 at line 1 column 17",
            ),
            (
                r#"{"line": 1, "level": "s3cr3t"}"#,
                "unknown variant, expected `low` at line 1 column 29",
            ),
            (
                r#"{"line": 1, "s3cr3t": 2}"#,
                "unknown field, expected `line` or `level` at line 1 column 20",
            ),
            (
                r#"{"level": "low"}"#,
                "missing field `line` at line 1 column 16",
            ),
            (
                r#"{"line": 1, "line": 2}"#,
                "duplicate field `line` at line 1 column 18",
            ),
            (
                r#"{"line": 1"#,
                "EOF while parsing an object at line 1 column 10",
            ),
        ];
        for (json, want) in table {
            let err = serde_json::from_str::<S>(json).expect_err(json);
            assert_eq!(json_error(&err), want, "{json}: serde said {err}");
        }
    }
}
