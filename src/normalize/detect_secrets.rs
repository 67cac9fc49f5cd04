//! Decoder for detect-secrets baselines (`detect-secrets scan`):
//! `{version, plugins_used, filters_used, results: {"<file>": [{type,
//! filename, hashed_secret, is_verified, line_number}]}, generated_at}`.
//!
//! Every entry is a secret finding of severity high (detect-secrets has no
//! severity), with the plugin's type name (`Private Key`, `Secret Keyword`)
//! as rule. The baseline holds only a SHA-1 of the secret, which is salted
//! and hashed again so it cannot be compared across installations. There is
//! no line text. Entries audited as false positives (`is_secret: false`)
//! are skipped.
//!
//! A baseline does not say which files were scanned: a run that scanned
//! nothing (outside a git repository without `--all-files`) looks like a
//! clean run, and both claim secret coverage.

use super::util::clean_path;
use super::{DecodeContext, DecodeError, Decoder, Format, Markers, Report, secret_hash};
use crate::model::{Category, Finding, Location, Severity};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The detect-secrets decoder.
pub struct DetectSecretsDecoder;

const SCANNER: &str = "detect-secrets";

type Str<'a> = super::text::Text<'a>;

#[derive(Deserialize)]
struct Baseline<'a> {
    /// Files in name order, as detect-secrets writes them.
    #[serde(borrow)]
    results: BTreeMap<Str<'a>, Option<Vec<Entry<'a>>>>,
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    filename: Option<Str<'a>>,
    #[serde(borrow, default)]
    hashed_secret: Option<Str<'a>>,
    #[serde(default)]
    line_number: Option<i64>,
    /// Set by `detect-secrets audit`: false for a false positive.
    #[serde(default)]
    is_secret: Option<bool>,
}

impl Decoder for DetectSecretsDecoder {
    fn format(&self) -> Format {
        Format::DetectSecrets
    }

    fn markers(&self) -> Markers {
        Markers {
            object_keys: &["plugins_used", "filters_used"],
            // Any other `results` object: files to their secrets.
            results_object_keys: Some(&[]),
            ..Markers::default()
        }
    }

    fn decode(&self, bytes: &[u8], ctx: &DecodeContext) -> Result<Report, DecodeError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let baseline: Baseline<'_> = serde_json::from_slice(bytes)
            .map_err(|e| DecodeError::from_json(Format::DetectSecrets, e))?;
        let mut report = Report::default();
        report.coverage.insert((SCANNER.into(), Category::Secret));
        for (file, entries) in &baseline.results {
            for (i, e) in entries.iter().flatten().enumerate() {
                if e.is_secret == Some(false) {
                    report
                        .skipped
                        .push(format!("results[{file:?}][{i}]: audited as not a secret"));
                    continue;
                }
                report.findings.push(finding(file, e, &ctx.secret_salt));
            }
        }
        Ok(report)
    }
}

fn finding(file: &str, e: &Entry<'_>, salt: &str) -> Finding {
    let kind = e
        .kind
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown");
    let mut f = Finding::new(
        SCANNER,
        Category::Secret,
        kind,
        Severity::High,
        format!("{kind} detected"),
    );
    f.severity_source = Some("detect-secrets:default".into());
    f.title = Some(kind.into());
    let path = e
        .filename
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(file);
    f.location = Some(Location {
        path: clean_path(path, None),
        start_line: e
            .line_number
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n > 0),
        ..Location::default()
    });
    f.evidence.secret_hash = e
        .hashed_secret
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|h| secret_hash(salt, h));
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<Report, DecodeError> {
        crate::testing::decode_with(&DetectSecretsDecoder, bytes)
    }

    /// The format as documented by detect-secrets 1.x.
    const BASELINE: &str = r#"{
      "version": "1.5.0",
      "plugins_used": [{"name": "PrivateKeyDetector"}, {"name": "KeywordDetector", "keyword_exclude": ""}],
      "filters_used": [{"path": "detect_secrets.filters.heuristic.is_likely_id_string"}],
      "results": {
        "config/settings.py": [
          {"type": "Secret Keyword", "filename": "config/settings.py",
           "hashed_secret": "e5e9fa1ba31ecd1ae84f75caaa474f3a663f05f4", "is_verified": false, "line_number": 12},
          {"type": "Secret Keyword", "filename": "config/settings.py",
           "hashed_secret": "0000000000000000000000000000000000000001", "is_verified": false, "line_number": 20,
           "is_secret": false}
        ],
        "keys/id_rsa": [
          {"type": "Private Key", "filename": "keys/id_rsa",
           "hashed_secret": "27c6929aef41ae2bcadac15ca6abcaff72cda9cd", "is_verified": true, "line_number": 1}
        ]
      },
      "generated_at": "2024-01-01T00:00:00Z"
    }"#;

    #[test]
    fn documented_baseline() {
        let r = decode(BASELINE.as_bytes()).unwrap();
        assert_eq!(r.findings.len(), 2);
        assert_eq!(r.skipped.len(), 1, "audited false positive");
        assert_eq!(
            r.coverage.iter().collect::<Vec<_>>(),
            vec![&("detect-secrets".to_string(), Category::Secret)]
        );
        let f = &r.findings[0];
        assert_eq!(f.scanner, "detect-secrets");
        assert_eq!(f.category, Category::Secret);
        assert_eq!(f.rule_id, "Secret Keyword");
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.severity_source.as_deref(), Some("detect-secrets:default"));
        assert_eq!(f.path(), Some("config/settings.py"));
        assert_eq!(f.start_line(), Some(12));
        let salt = DecodeContext::default().secret_salt;
        assert_eq!(
            f.evidence.secret_hash,
            Some(secret_hash(
                &salt,
                "e5e9fa1ba31ecd1ae84f75caaa474f3a663f05f4"
            ))
        );
        assert!(f.content_hash.is_none() && f.evidence.snippet.is_none());
        // The tool's SHA-1 is not passed on unsalted.
        assert!(!format!("{r:?}").contains("e5e9fa1ba31ecd1ae84f75caaa474f3a663f05f4"));
        assert_eq!(r.findings[1].rule_id, "Private Key");
    }

    /// Baselines written by the real tool (detect-secrets 1.5.52 over the
    /// paramiko 4.0.0 sdist; see the fixtures' README).
    #[test]
    fn real_baselines() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/detect-secrets");
        for (name, want) in [
            ("baseline.json", 57),
            ("baseline-all-files.json", 57),
            ("baseline-no-git.json", 0),
        ] {
            let path = format!("{dir}/{name}");
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let r = decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(r.findings.len(), want, "{name}");
            assert!(!r.coverage.is_empty());
            for f in &r.findings {
                assert!(f.evidence.secret_hash.is_some(), "{name}");
                assert!(f.start_line().is_some(), "{name}");
            }
        }
        let bytes = std::fs::read(format!("{dir}/baseline.json")).unwrap();
        let r = decode(&bytes).unwrap();
        let count = |t: &str| r.findings.iter().filter(|f| f.rule_id == t).count();
        assert_eq!(count("Private Key"), 17);
        assert_eq!(count("Hex High Entropy String"), 17);
        assert_eq!(count("Secret Keyword"), 15);
        assert_eq!(count("Base64 High Entropy String"), 8);
        assert!(r
            .findings
            .iter()
            .any(|f| f.path() == Some("tests/test_rsa_openssh.key")));
    }

    #[test]
    fn wrong_shapes_are_named() {
        for (doc, needle) in [
            (r#"{"results": 5}"#, "expected a map"),
            (r#"{"version": "1.5.0"}"#, "missing field `results`"),
            (
                r#"{"results": {"a.py": [{"line_number": "x"}]}}"#,
                "invalid type: string",
            ),
            ("null", "invalid type: null"),
        ] {
            match decode(doc.as_bytes()) {
                Err(e @ DecodeError::Shape { .. }) => {
                    assert!(e.to_string().contains(needle), "{doc}: {e}")
                }
                other => panic!("{doc}: {other:?}"),
            }
        }
    }

    #[test]
    fn truncated_input_is_an_error() {
        crate::testing::assert_truncations_are_syntax_errors(
            "baseline",
            BASELINE.as_bytes(),
            decode,
        );
    }
}
