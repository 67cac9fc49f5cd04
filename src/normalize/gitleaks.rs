//! Decoder for Gitleaks JSON reports: a list of leak records, v8
//! (`RuleID`, `Secret`, `Match`, `File`, `StartLine`, ...) or v7 and older
//! (`rule`, `offender`, `line`, `file`, `lineNumber`, ...); `null` means
//! nothing was found.
//!
//! Every record is a secret finding of severity high (Gitleaks has no
//! severity). The secret (`Secret`, or `offender`) is kept only as a salted
//! hash, unless Gitleaks redacted it (`REDACTED`, or a `...`-cut value),
//! when the fingerprint falls back to the salted hash of the line
//! (`Match`, or `line`). Commit, author, e-mail and commit message are not
//! read. Gitleaks' own `Fingerprint` embeds the commit and line number, so
//! it is not used as the tool fingerprint.

use super::util::{clean_path, set_line_content};
use super::{secret_hash, DecodeContext, DecodeError, Decoder, Format, Report};
use crate::model::{Category, Finding, Location, Severity};
use serde::Deserialize;

/// The gitleaks decoder.
pub struct GitleaksDecoder;

const SCANNER: &str = "gitleaks";

type Str<'a> = super::text::Text<'a>;

/// One leak, v8 and v7 field names side by side (JSON keys are
/// case-sensitive, so `File` and `file` do not collide).
#[derive(Deserialize)]
struct Leak<'a> {
    // v8
    #[serde(borrow, default, rename = "RuleID")]
    rule_id: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Description")]
    description: Option<Str<'a>>,
    #[serde(default, rename = "StartLine")]
    start_line: Option<i64>,
    #[serde(default, rename = "EndLine")]
    end_line: Option<i64>,
    #[serde(default, rename = "StartColumn")]
    start_column: Option<i64>,
    #[serde(default, rename = "EndColumn")]
    end_column: Option<i64>,
    #[serde(borrow, default, rename = "Match")]
    matched: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Secret")]
    secret: Option<Str<'a>>,
    #[serde(borrow, default, rename = "File")]
    file: Option<Str<'a>>,
    // v7 and older
    #[serde(borrow, default)]
    rule: Option<Str<'a>>,
    #[serde(borrow, default)]
    offender: Option<Str<'a>>,
    #[serde(borrow, default)]
    line: Option<Str<'a>>,
    #[serde(default, rename = "lineNumber")]
    line_number: Option<i64>,
    #[serde(borrow, default, rename = "file")]
    file_v7: Option<Str<'a>>,
}

impl Decoder for GitleaksDecoder {
    fn format(&self) -> Format {
        Format::Gitleaks
    }

    fn decode(&self, bytes: &[u8], ctx: &DecodeContext) -> Result<Report, DecodeError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let leaks: Option<Vec<Leak<'_>>> = serde_json::from_slice(bytes)
            .map_err(|e| DecodeError::from_json(Format::Gitleaks, e))?;
        let mut report = Report::default();
        report.coverage.insert((SCANNER.into(), Category::Secret));
        report.findings = leaks
            .iter()
            .flatten()
            .map(|l| finding(l, &ctx.secret_salt))
            .collect();
        Ok(report)
    }
}

fn finding(l: &Leak<'_>, salt: &str) -> Finding {
    let rule_id = non_empty(&l.rule_id)
        .or(non_empty(&l.rule))
        .or(non_empty(&l.description))
        .unwrap_or("unknown");
    let title = non_empty(&l.description).or(non_empty(&l.rule));
    let secret = non_empty(&l.secret)
        .or(non_empty(&l.offender))
        .filter(|s| !is_redacted(s));
    let mut message = match title {
        Some(t) => t.to_string(),
        None => format!("secret matching rule {rule_id}"),
    };
    let mut title = title.map(str::to_string);
    if let Some(s) = secret {
        // Rule names never hold the secret, but make sure.
        for text in [Some(&mut message), title.as_mut()].into_iter().flatten() {
            if text.contains(s) {
                *text = text.replace(s, "[REDACTED]");
            }
        }
    }

    let mut f = Finding::new(SCANNER, Category::Secret, rule_id, Severity::High, message);
    f.severity_source = Some("gitleaks:default".into());
    f.title = title.map(Into::into);
    let file = non_empty(&l.file).or(non_empty(&l.file_v7));
    if let Some(path) = file {
        let num = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok()).filter(|&n| n > 0);
        f.location = Some(Location {
            path: clean_path(path, None),
            start_line: num(l.start_line.or(l.line_number)),
            start_column: num(l.start_column),
            end_line: num(l.end_line),
            end_column: num(l.end_column),
        });
    }
    f.evidence.secret_hash = secret.map(|s| secret_hash(salt, s));
    let line = non_empty(&l.matched)
        .or(non_empty(&l.line))
        .and_then(|m| m.lines().next());
    set_line_content(&mut f, line, salt);
    f
}

/// Gitleaks `--redact` writes `REDACTED`, or with a percentage the kept
/// part followed by `...`.
fn is_redacted(secret: &str) -> bool {
    secret == "REDACTED" || secret.ends_with("...")
}

fn non_empty<'s>(s: &'s Option<Str<'_>>) -> Option<&'s str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report of the shared corpus; `None` (the test skips) without it.
    fn corpus(name: &str) -> Option<Vec<u8>> {
        crate::testing::shared_bytes(&format!("scans/gitleaks/{name}"), name)
    }

    fn decode(bytes: &[u8]) -> Result<Report, DecodeError> {
        GitleaksDecoder.decode(bytes, &DecodeContext::default())
    }

    fn decode_corpus(name: &str) -> Option<Report> {
        Some(decode(&corpus(name)?).unwrap_or_else(|e| panic!("{name}: {e}")))
    }

    /// Every Gitleaks file of `MANIFEST.tsv` with its raw count.
    const TABLE: &[(&str, usize)] = &[
        ("data_many.json", 2),
        ("data_one.json", 1),
        ("gitleaks8_many.json", 4),
        ("issue4336.json", 1),
        ("no_findings.json", 0),
        ("redacted_data_many.json", 6),
        ("version_7.5.0.json", 8),
    ];

    /// The secrets, authors and e-mails of the corpus, none of which may
    /// appear in any finding.
    const NEVER: &[&str] = &[
        "AKIAIOSFODNN7EXAMPLE",
        "c77e01c1e89682e4d4b94a059a7fd2b37ab326ed",
        "38c47f19e349153fa963bb3b3212fe8e-us11",
        "secretAWSsecret",
        "dfjksdjfs3294dfjlsdaf213",
        "BEGIN RSA PRIVATE KEY",
        "BEGIN OPENSSH PRIVATE KEY",
        "1073168529405472768",
        "John Doe",
        "john.doe",
        "Firstname",
        "first.last",
        "Bhurinat",
        "nate.bwangsut",
        "someuser",
        "you@example.com",
        "Lorem ipsum",
    ];

    #[test]
    fn corpus_counts_and_no_secret_leaves() {
        for &(name, raw) in TABLE {
            let Some(r) = decode_corpus(name) else {
                return;
            };
            assert_eq!(r.findings.len(), raw, "{name}");
            assert!(r.skipped.is_empty());
            assert_eq!(
                r.coverage.iter().collect::<Vec<_>>(),
                vec![&("gitleaks".to_string(), Category::Secret)],
                "{name}"
            );
            for f in &r.findings {
                let dbg = format!("{f:?}");
                for s in NEVER {
                    assert!(!dbg.contains(s), "{name}: {s} in {dbg}");
                }
                assert_eq!(f.category, Category::Secret);
                assert_eq!(f.severity, Severity::High);
                assert!(f.evidence.snippet.is_none());
                assert!(f.tool_fingerprint.is_none());
                assert!(f.path().is_some(), "{name}");
            }
        }
    }

    #[test]
    fn v8_fields() {
        let Some(r) = decode_corpus("gitleaks8_many.json") else {
            return;
        };
        let f = &r.findings[3];
        assert_eq!(f.rule_id, "generic-api-key");
        assert_eq!(f.title.as_deref(), Some("Generic API Key"));
        assert_eq!(f.message, "Generic API Key");
        assert_eq!(f.severity_source.as_deref(), Some("gitleaks:default"));
        assert_eq!(f.path(), Some("tests/api.py"));
        let loc = f.location.as_ref().unwrap();
        assert_eq!(
            (loc.start_line, loc.start_column, loc.end_column),
            (Some(21), Some(10), Some(46))
        );
        let salt = DecodeContext::default().secret_salt;
        assert_eq!(
            f.evidence.secret_hash,
            Some(secret_hash(&salt, "dfjksdjfs3294dfjlsdaf213"))
        );
        assert_eq!(
            f.content_hash,
            Some(crate::fingerprint::line_hash_salted(
                "apikey = \"dfjksdjfs3294dfjlsdaf213\"",
                &salt
            ))
        );
        // The same secret in two commits: same hash, two records.
        assert_eq!(
            r.findings[0].evidence.secret_hash,
            r.findings[1].evidence.secret_hash
        );
    }

    #[test]
    fn v7_fields() {
        let Some(r) = decode_corpus("version_7.5.0.json") else {
            return;
        };
        let f = &r.findings[0];
        assert_eq!(f.rule_id, "AWS Access Key");
        assert_eq!(f.start_line(), Some(13));
        assert!(f
            .path()
            .unwrap()
            .ends_with("gitlab_secret_detection_report_1_vuln.json"));
        let salt = DecodeContext::default().secret_salt;
        assert_eq!(
            f.evidence.secret_hash,
            Some(secret_hash(&salt, "AKIAIOSFODNN7EXAMPLE"))
        );

        // The oldest records have no line number.
        let Some(r) = decode_corpus("data_many.json") else {
            return;
        };
        assert_eq!(r.findings[0].path(), Some(".bashrc"));
        assert_eq!(r.findings[0].start_line(), None);
        assert!(r.findings[0].content_hash.is_some());
    }

    #[test]
    fn redacted_secrets_are_not_hashed() {
        let Some(r) = decode_corpus("redacted_data_many.json") else {
            return;
        };
        for f in &r.findings {
            assert!(f.evidence.secret_hash.is_none());
            assert!(f.content_hash.is_some());
        }
        let doc = r#"[{"RuleID":"x","Secret":"AKIA...","Match":"key=AKIA...","File":"a"}]"#;
        assert!(decode(doc.as_bytes()).unwrap().findings[0]
            .evidence
            .secret_hash
            .is_none());
    }

    #[test]
    fn a_secret_in_the_description_is_redacted() {
        let doc = r#"[{"RuleID":"custom","Description":"found hunter22 here","Secret":"hunter22","File":"a.txt","StartLine":1}]"#;
        let r = decode(doc.as_bytes()).unwrap();
        assert!(!format!("{r:?}").contains("hunter22"));
        assert_eq!(r.findings[0].message, "found [REDACTED] here");
    }

    #[test]
    fn wrong_shapes_are_named() {
        for (doc, needle) in [
            (r#"{"matches": 5}"#, "expected a sequence"),
            (
                r#"[{"RuleID": 5}]"#,
                "invalid type: integer, expected a string",
            ),
            (r#"[{"StartLine": "x"}]"#, "invalid type: string"),
            ("5", "invalid type"),
        ] {
            match decode(doc.as_bytes()) {
                Err(e @ DecodeError::Shape { .. }) => {
                    assert!(e.to_string().contains(needle), "{doc}: {e}")
                }
                other => panic!("{doc}: {other:?}"),
            }
        }
        assert!(decode(b"[]").unwrap().findings.is_empty());
    }

    #[test]
    fn truncated_input_is_an_error() {
        for name in [
            "gitleaks8_many.json",
            "version_7.5.0.json",
            "no_findings.json",
        ] {
            let Some(bytes) = corpus(name) else {
                return;
            };
            let end = bytes.trim_ascii_end().len();
            for cut in [1, end / 3, end / 2, end - 1] {
                let err = decode(&bytes[..cut]).unwrap_err();
                assert_eq!(err.reason(), "syntax", "{name} cut at {cut}: {err}");
            }
        }
    }
}
