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
use super::{DecodeContext, DecodeError, Decoder, Format, Markers, Report, secret_hash};
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

    fn markers(&self) -> Markers {
        Markers {
            element_keys: &[&["RuleID", "Secret", "offender", "leakURL"]],
            ..Markers::default()
        }
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
    use std::collections::BTreeSet;

    /// A report of the shared corpus; `None` (the test skips) without it.
    fn corpus(name: &str) -> Option<Vec<u8>> {
        crate::testing::shared_bytes(&format!("scans/gitleaks/{name}"), name)
    }

    fn decode(bytes: &[u8]) -> Result<Report, DecodeError> {
        crate::testing::decode_with(&GitleaksDecoder, bytes)
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

    /// A report of this repository's own fixtures (`tests/fixtures/gitleaks`,
    /// hand-written after Gitleaks v8's report; every secret in them is
    /// fake): always present, so the tests below run on any clone.
    fn fixture(name: &str) -> Vec<u8> {
        crate::testing::fixture(&format!("gitleaks/{name}"))
    }

    fn decode_fixture(name: &str) -> Report {
        decode(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Every fixture with its count.
    const FIXTURES: &[(&str, usize)] = &[
        ("gitleaks-web-api.json", 7),
        ("gitleaks-web-api-redacted.json", 7),
        ("gitleaks-empty.json", 0),
    ];

    /// The fixtures' (fake) secrets, matched lines, authors, e-mails and
    /// commit messages, none of which may leave the decoder.
    const FIXTURE_NEVER: &[&str] = &[
        "hooks.slack.com",
        "Fak3W3bh00kT0k3nF0rT3sts",
        "ghp_CustodyFixtureFakeToken",
        "BEGIN OPENSSH PRIVATE KEY",
        "b3BlbnNzaC1rZXktdjE",
        "custodyfx",
        "7Hq2Lm9Vz4Rt6Wb1Kd8S",
        "s3Np5Yg0Jc7Xa2Ue9Fo4",
        "AKIACUSTODYEXAMPLE23",
        "API_KEY",
        "API_TOKEN",
        "REDACTED",
        "Mei Chen",
        "Ravi Menon",
        "Dana Whitfield",
        "example.com",
        "mei.chen",
        "ravi.menon",
        "dana.whitfield",
        "payments and search clients",
        "deploy key for the release job",
    ];

    #[test]
    fn fixture_counts_and_no_secret_leaves() {
        for &(name, raw) in FIXTURES {
            let r = decode_fixture(name);
            assert_eq!(r.findings.len(), raw, "{name}");
            assert!(r.skipped.is_empty());
            assert!(r.target.is_none() && r.commit.is_none() && r.git_ref.is_none());
            assert_eq!(
                r.coverage.iter().collect::<Vec<_>>(),
                vec![&("gitleaks".to_string(), Category::Secret)],
                "{name}"
            );
            let dbg = format!("{r:?}");
            for s in FIXTURE_NEVER {
                assert!(!dbg.contains(s), "{name}: {s} in {dbg}");
            }
            for f in &r.findings {
                assert_eq!(f.scanner, "gitleaks");
                assert_eq!(f.category, Category::Secret);
                assert_eq!(f.severity, Severity::High);
                assert_eq!(f.severity_source.as_deref(), Some("gitleaks:default"));
                assert!(f.evidence.snippet.is_none());
                assert!(f.tool_fingerprint.is_none(), "Gitleaks' own is not used");
                assert!(f.content_hash.is_some());
                assert!(f.path().is_some(), "{name}");
            }
        }
        for name in ["gitleaks-web-api.json", "gitleaks-web-api-redacted.json"] {
            assert_eq!(
                super::super::sniff(&fixture(name)).unwrap(),
                Format::Gitleaks
            );
        }
    }

    #[test]
    fn fixture_v8_fields() {
        let r = decode_fixture("gitleaks-web-api.json");
        let salt = DecodeContext::default().secret_salt;
        type Row<'a> = (
            &'a str,
            Option<&'a str>,
            Option<u32>,
            Option<u32>,
            Option<u32>,
            Option<u32>,
        );
        let rows: Vec<Row<'_>> = r
            .findings
            .iter()
            .map(|f| {
                let l = f.location.as_ref().unwrap();
                (
                    f.rule_id.as_str(),
                    f.path(),
                    l.start_line,
                    l.end_line,
                    l.start_column,
                    l.end_column,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "slack-webhook-url",
                    Some("scripts/notify.sh"),
                    Some(5),
                    Some(5),
                    Some(15),
                    Some(92)
                ),
                (
                    "github-pat",
                    Some(".github/workflows/release.yml"),
                    Some(27),
                    Some(27),
                    Some(22),
                    Some(61)
                ),
                (
                    "private-key",
                    Some("deploy/keys/deploy_ed25519"),
                    Some(1),
                    Some(5),
                    Some(1),
                    Some(33)
                ),
                (
                    "generic-api-key",
                    Some("app/settings.py"),
                    Some(22),
                    Some(22),
                    Some(11),
                    Some(52)
                ),
                (
                    "generic-api-key",
                    Some("app/settings.py"),
                    Some(23),
                    Some(23),
                    Some(9),
                    Some(52)
                ),
                (
                    "aws-access-token",
                    Some("scripts/bootstrap.sh"),
                    Some(15),
                    Some(15),
                    Some(27),
                    Some(46)
                ),
                (
                    "aws-access-token",
                    Some("deploy/terraform.tfvars"),
                    Some(7),
                    Some(7),
                    Some(20),
                    Some(39)
                ),
            ]
        );
        let f = &r.findings[3];
        assert_eq!(f.title.as_deref(), Some("Generic API Key"));
        assert_eq!(f.message, "Generic API Key");
        assert_eq!(
            f.evidence.secret_hash,
            Some(secret_hash(&salt, "custodyfx-7Hq2Lm9Vz4Rt6Wb1Kd8S"))
        );
        // `Match` is longer than `Secret`: the line hash is of `Match`.
        assert_eq!(
            f.content_hash,
            Some(crate::fingerprint::line_hash_salted(
                "API_KEY = \"custodyfx-7Hq2Lm9Vz4Rt6Wb1Kd8S\"",
                &salt
            ))
        );
        // A multi-line match: the line hash is of its first line.
        assert_eq!(
            r.findings[2].content_hash,
            Some(crate::fingerprint::line_hash_salted(
                "-----BEGIN OPENSSH PRIVATE KEY-----",
                &salt
            ))
        );
        assert_eq!(
            r.findings[5].evidence.secret_hash,
            Some(secret_hash(&salt, "AKIACUSTODYEXAMPLE23"))
        );
    }

    #[test]
    fn fixture_salted_secret_hashes() {
        let r = decode_fixture("gitleaks-web-api.json");
        let hashes: Vec<&str> = r
            .findings
            .iter()
            .map(|f| f.evidence.secret_hash.as_deref().expect("secret hash"))
            .collect();
        // The same secret in two files: equal hashes (and equal line
        // hashes, `Match` being the key alone).
        assert_eq!(hashes[5], hashes[6]);
        assert_eq!(r.findings[5].content_hash, r.findings[6].content_hash);
        assert_ne!(r.findings[5].path(), r.findings[6].path());
        // The same rule twice in one file, different secrets.
        assert_ne!(hashes[3], hashes[4]);
        let distinct: BTreeSet<&str> = hashes.iter().copied().collect();
        assert_eq!(distinct.len(), 6);
        // Another salt, other hashes.
        let other = GitleaksDecoder
            .decode(
                &fixture("gitleaks-web-api.json"),
                &DecodeContext {
                    secret_salt: "another-salt".into(),
                },
            )
            .unwrap();
        for (a, b) in r.findings.iter().zip(&other.findings) {
            assert_ne!(a.evidence.secret_hash, b.evidence.secret_hash);
            assert_ne!(a.content_hash, b.content_hash);
        }
        // Seven fingerprints: #5 and #6 differ by path, #3 and #4 by secret.
        let t: crate::model::Target = "repo:github.com/acme/web-api".parse().unwrap();
        assert_eq!(crate::fingerprint::assign(r.findings, &t).len(), 7);
    }

    #[test]
    fn fixture_redacted_report_keeps_only_line_hashes() {
        let plain = decode_fixture("gitleaks-web-api.json");
        let r = decode_fixture("gitleaks-web-api-redacted.json");
        let salt = DecodeContext::default().secret_salt;
        for (f, p) in r.findings.iter().zip(&plain.findings) {
            assert!(f.evidence.secret_hash.is_none());
            assert!(f.content_hash.is_some());
            assert_ne!(f.content_hash, p.content_hash);
            assert_eq!((&f.rule_id, &f.location), (&p.rule_id, &p.location));
        }
        assert_eq!(
            r.findings[3].content_hash,
            Some(crate::fingerprint::line_hash_salted(
                "API_KEY = \"REDACTED\"",
                &salt
            ))
        );
        assert_eq!(
            r.findings[5].content_hash,
            Some(crate::fingerprint::line_hash_salted("REDACTED", &salt))
        );
        let t: crate::model::Target = "repo:github.com/acme/web-api".parse().unwrap();
        assert_eq!(crate::fingerprint::assign(r.findings, &t).len(), 7);
    }

    #[test]
    fn fixture_empty_report() {
        let bytes = fixture("gitleaks-empty.json");
        let r = decode(&bytes).unwrap();
        assert!(r.findings.is_empty() && r.skipped.is_empty());
        assert!(r.coverage.contains(&("gitleaks".into(), Category::Secret)));
        // Sniffed, an empty array is an empty native report, covering nothing.
        let (format, r) = super::super::decode(&bytes, None, &DecodeContext::default()).unwrap();
        assert_eq!(format, Format::Native);
        assert!(r.findings.is_empty() && r.coverage.is_empty());
    }

    #[test]
    fn fixture_truncated_input_is_an_error() {
        for &(name, _) in FIXTURES {
            let bytes = fixture(name);
            crate::testing::assert_truncations_are_syntax_errors(name, &bytes, decode);
        }
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
            crate::testing::assert_truncations_are_syntax_errors(name, &bytes, decode);
        }
    }
}
