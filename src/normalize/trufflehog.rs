//! Decoder for TruffleHog's JSON output (`trufflehog ... --json`): JSON
//! Lines, one object per secret found (a JSON array of the same objects is
//! read too). Both generations are read, record by record:
//!
//! - v3: `{SourceMetadata: {Data: {<Source>: {file, line, commit,
//!   repository, ...}}}, SourceID, SourceType, SourceName, DetectorType,
//!   DetectorName, DecoderName, Verified, Raw, RawV2, Redacted, ExtraData,
//!   StructuredData}`, where `<Source>` is `Git`, `Github`, `Gitlab`,
//!   `Filesystem`, `S3`, `Docker`, ...
//! - v2: `{branch, commit, commitHash, date, diff, path, printDiff, reason,
//!   stringsFound}`.
//!
//! Every record is a secret finding with the detector (`DetectorName`, or
//! v2's `reason`) as rule. Severity: critical for a v3 secret TruffleHog
//! verified (the credential works), high otherwise. The secret is kept
//! only as a salted hash: `RawV2` (the detector's full credential, e.g.
//! key id and secret together) or else `Raw`, as written; for v2 the
//! `stringsFound`, together. Everything else that can hold the secret or
//! its neighbourhood is never read: `Redacted` (despite its name, for many
//! detectors the whole secret), `ExtraData`, `StructuredData`, and v2's
//! `diff`, `printDiff` and commit message; nor are author e-mails. No line
//! text is available, so the secret's hash is the fingerprint basis.
//!
//! The report's target is the repository its git records name, when they
//! all name one (a scan of an organization names many, and gets none).
//! Commits are not read: the records of one history scan span many.
//!
//! TruffleHog prints nothing when it finds nothing: an empty input, with
//! the format named, is a report with no findings that covers secrets.

use super::util::{clean_path, non_empty};
use super::{DecodeContext, DecodeError, Decoder, Format, Markers, Report, secret_hash};
use crate::model::{Category, Finding, Location, Severity, Target, TargetKind};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The TruffleHog decoder.
pub struct TrufflehogDecoder;

const SCANNER: &str = "trufflehog";

type Str<'a> = super::text::Text<'a>;

/// One record, v3 and v2 fields side by side.
#[derive(Deserialize)]
struct Record<'a> {
    // v3
    #[serde(borrow, default, rename = "SourceMetadata")]
    source_metadata: Option<SourceMetadata<'a>>,
    #[serde(borrow, default, rename = "DetectorType")]
    detector_type: Option<Scalar<'a>>,
    #[serde(borrow, default, rename = "DetectorName")]
    detector_name: Option<Str<'a>>,
    #[serde(borrow, default, rename = "DecoderName")]
    decoder_name: Option<Str<'a>>,
    #[serde(default, rename = "Verified")]
    verified: Option<bool>,
    #[serde(borrow, default, rename = "Raw")]
    raw: Option<Str<'a>>,
    #[serde(borrow, default, rename = "RawV2")]
    raw_v2: Option<Str<'a>>,
    // v2
    #[serde(borrow, default)]
    path: Option<Str<'a>>,
    #[serde(borrow, default)]
    reason: Option<Str<'a>>,
    #[serde(borrow, default, rename = "stringsFound")]
    strings_found: Option<Vec<Str<'a>>>,
}

#[derive(Deserialize)]
struct SourceMetadata<'a> {
    /// One entry, named after the source kind.
    #[serde(borrow, default, rename = "Data")]
    data: Option<BTreeMap<Str<'a>, Option<SourceData<'a>>>>,
}

#[derive(Deserialize)]
struct SourceData<'a> {
    #[serde(borrow, default)]
    file: Option<Str<'a>>,
    #[serde(borrow, default)]
    path: Option<Str<'a>>,
    #[serde(default)]
    line: Option<i64>,
    #[serde(borrow, default)]
    repository: Option<Str<'a>>,
}

/// `DetectorType` is an enum number; a string is accepted too.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar<'a> {
    Number(i64),
    Text(#[serde(borrow)] Str<'a>),
}

impl Decoder for TrufflehogDecoder {
    fn format(&self) -> Format {
        Format::Trufflehog
    }

    fn markers(&self) -> Markers {
        Markers {
            // v3 and v2 records (the first line of JSON Lines).
            object_keys: &[
                "SourceMetadata",
                "DetectorName",
                "DetectorType",
                "stringsFound",
                "printDiff",
                "commitHash",
            ],
            element_keys: &[&["SourceMetadata", "DetectorName", "stringsFound"]],
            ..Markers::default()
        }
    }

    fn decode(&self, bytes: &[u8], ctx: &DecodeContext) -> Result<Report, DecodeError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let mut report = Report::default();
        report.coverage.insert((SCANNER.into(), Category::Secret));
        let shape = |at: String, e: &serde_json::Error| DecodeError::Shape {
            format: Format::Trufflehog,
            detail: format!("{at}: {}", super::json_error(e)),
        };
        let records: Vec<Record<'_>> = if bytes.iter().find(|b| !b.is_ascii_whitespace())
            == Some(&b'[')
        {
            serde_json::from_slice(bytes).map_err(|e| match e.is_data() {
                true => shape("array element".into(), &e),
                false => DecodeError::from_json(Format::Trufflehog, e),
            })?
        } else {
            let mut out = Vec::new();
            let stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Record<'_>>();
            for (n, item) in stream.enumerate() {
                match item {
                    Ok(r) => out.push(r),
                    Err(e) if e.is_data() => return Err(shape(format!("record {}", n + 1), &e)),
                    Err(e) => return Err(DecodeError::from_json(Format::Trufflehog, e)),
                }
            }
            out
        };
        for (n, r) in records.iter().enumerate() {
            let f = if is_v3(r) {
                v3(r, &ctx.secret_salt)
            } else if r.reason.is_some() || r.strings_found.is_some() {
                v2(r, &ctx.secret_salt)
            } else {
                return Err(DecodeError::Shape {
                    format: Format::Trufflehog,
                    detail: format!(
                        "record {} is neither a v3 result (DetectorName, SourceMetadata) \
                         nor a v2 one (reason, stringsFound)",
                        n + 1
                    ),
                });
            };
            report.findings.push(f);
        }
        report.target = one_repository(&records);
        Ok(report)
    }
}

/// The repository the report names, when its git records (`Git`,
/// `Github`, ... sources) all name the same one; none for a scan of many
/// repositories (an organization) or of no repository (a filesystem).
fn one_repository(records: &[Record<'_>]) -> Option<Target> {
    let mut repos = records.iter().filter_map(|r| {
        let data = r.source_metadata.as_ref()?.data.as_ref()?;
        non_empty(&data.values().flatten().next()?.repository)
    });
    let first = repos.next()?;
    if repos.any(|r| r != first) {
        return None;
    }
    Target::new(TargetKind::Repo, first).ok()
}

fn is_v3(r: &Record<'_>) -> bool {
    r.detector_name.is_some() || r.detector_type.is_some() || r.source_metadata.is_some()
}

fn v3(r: &Record<'_>, salt: &str) -> Finding {
    let number = match &r.detector_type {
        Some(Scalar::Number(n)) => Some(n.to_string()),
        Some(Scalar::Text(t)) => non_empty_text(t).map(str::to_string),
        None => None,
    };
    let rule_id = non_empty(&r.detector_name)
        .map(str::to_string)
        .or(number)
        .unwrap_or_else(|| "unknown".to_string());
    let verified = r.verified == Some(true);
    let mut message = format!(
        "{rule_id} secret, {}",
        if verified {
            "verified: the credential works"
        } else {
            "not verified"
        }
    );
    if let Some(decoder) = non_empty(&r.decoder_name).filter(|d| !d.eq_ignore_ascii_case("PLAIN")) {
        message.push_str(&format!(
            " (found in {} content)",
            decoder.to_ascii_lowercase()
        ));
    }
    let (severity, source) = if verified {
        (Severity::Critical, "trufflehog:verified")
    } else {
        (Severity::High, "trufflehog:unverified")
    };
    let mut f = Finding::new(SCANNER, Category::Secret, &rule_id, severity, message);
    f.severity_source = Some(source.into());
    f.title = non_empty(&r.detector_name).map(Into::into);
    let data = r
        .source_metadata
        .as_ref()
        .and_then(|m| m.data.as_ref())
        .and_then(|d| d.values().flatten().next());
    if let Some(d) = data {
        if let Some(path) = non_empty(&d.file).or(non_empty(&d.path)) {
            f.location = Some(Location {
                path: clean_path(path, None),
                start_line: d
                    .line
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|&n| n > 0),
                ..Location::default()
            });
        }
    }
    f.evidence.secret_hash = non_empty(&r.raw_v2)
        .or(non_empty(&r.raw))
        .map(|s| secret_hash(salt, s));
    f
}

fn v2(r: &Record<'_>, salt: &str) -> Finding {
    let rule_id = non_empty(&r.reason).unwrap_or("unknown");
    let mut f = Finding::new(
        SCANNER,
        Category::Secret,
        rule_id,
        Severity::High,
        format!("{rule_id} found in the git history"),
    );
    f.severity_source = Some("trufflehog:v2".into());
    f.title = non_empty(&r.reason).map(Into::into);
    f.location = non_empty(&r.path).map(|p| Location {
        path: clean_path(p, None),
        ..Location::default()
    });
    let strings: Vec<&str> = r
        .strings_found
        .iter()
        .flatten()
        .filter_map(|s| non_empty_text(s))
        .collect();
    if !strings.is_empty() {
        f.evidence.secret_hash = Some(secret_hash(salt, &strings.join("\0")));
    }
    f
}

fn non_empty_text<'s>(s: &'s Str<'_>) -> Option<&'s str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint;
    use std::collections::BTreeSet;

    fn decode(bytes: &[u8]) -> Result<Report, DecodeError> {
        crate::testing::decode_with(&TrufflehogDecoder, bytes)
    }

    fn fixture(name: &str) -> Vec<u8> {
        crate::testing::fixture(&format!("trufflehog/{name}"))
    }

    fn target() -> crate::model::Target {
        "repo:github.com/acme/web-api".parse().unwrap()
    }

    /// The fixtures' (fake) secrets, their redacted forms, the extra data,
    /// authors, e-mails and commit messages: none may leave the decoder.
    const NEVER: &[&str] = &[
        "AKIACUSTODYFIXTURE42",
        "custodyFixtureSecretKey",
        "ghp_custodyFixture",
        "xoxb-custody",
        "hunter2-custody",
        "custody-fixture-db",
        "BEGIN OPENSSH PRIVATE KEY",
        "BEGIN RSA PRIVATE KEY",
        "custodyFixtureEntropy",
        "b3BlbnNzaC1rZXktdjE",
        "123456789012",
        "arn:aws",
        "Mei Chen",
        "mei.chen",
        "Ravi Menon",
        "ravi.menon",
        "example.com",
        "rotate the deploy key",
        "add staging settings",
    ];

    fn no_secret_leaves(name: &str, r: &Report) {
        let dbg = format!("{r:?}");
        for s in NEVER {
            assert!(!dbg.contains(s), "{name}: {s} in {dbg}");
        }
    }

    #[test]
    fn v3_git_fixture() {
        let bytes = fixture("trufflehog-v3-git.jsonl");
        assert_eq!(super::super::sniff(&bytes).unwrap(), Format::Trufflehog);
        let r = decode(&bytes).unwrap();
        no_secret_leaves("v3-git", &r);
        assert_eq!(
            r.coverage.iter().collect::<Vec<_>>(),
            vec![&("trufflehog".to_string(), Category::Secret)]
        );
        // Every record names one repository: the report's target.
        assert_eq!(r.target, Some(target()));
        let rows: Vec<(&str, Option<&str>, Option<u32>, Severity)> = r
            .findings
            .iter()
            .map(|f| (f.rule_id.as_str(), f.path(), f.start_line(), f.severity))
            .collect();
        assert_eq!(
            rows,
            [
                ("AWS", Some("deploy/env.sh"), Some(4), Severity::Critical),
                (
                    "Github",
                    Some(".github/workflows/release.yml"),
                    Some(27),
                    Severity::High
                ),
                ("Slack", Some("scripts/notify.sh"), Some(5), Severity::High),
                (
                    "PrivateKey",
                    Some("deploy/keys/deploy_ed25519"),
                    Some(1),
                    Severity::Critical
                ),
                ("URI", Some("app/settings.py"), Some(12), Severity::High),
                ("AWS", Some("deploy/env.sh"), Some(4), Severity::Critical),
            ]
        );
        for f in &r.findings {
            assert_eq!(f.scanner, "trufflehog");
            assert_eq!(f.category, Category::Secret);
            assert!(f.evidence.secret_hash.is_some());
            assert!(f.evidence.snippet.is_none() && f.content_hash.is_none());
        }
        assert_eq!(
            r.findings[0].message,
            "AWS secret, verified: the credential works"
        );
        assert_eq!(
            r.findings[0].severity_source.as_deref(),
            Some("trufflehog:verified")
        );
        assert_eq!(
            r.findings[2].message,
            "Slack secret, not verified (found in base64 content)"
        );
        // RawV2 (key id and secret) is the hashed value where present.
        let salt = DecodeContext::default().secret_salt;
        assert_eq!(
            r.findings[0].evidence.secret_hash,
            Some(secret_hash(
                &salt,
                "AKIACUSTODYFIXTURE42:custodyFixtureSecretKey0000000000000000"
            ))
        );
        // The same key in an older commit: the same secret hash; the two
        // records are two occurrences.
        assert_eq!(
            r.findings[0].evidence.secret_hash,
            r.findings[5].evidence.secret_hash
        );
        let fps: BTreeSet<String> = fingerprint::assign(r.findings, &target())
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(fps.len(), 6);
    }

    #[test]
    fn v3_filesystem_and_github_fixtures() {
        let fs = decode(&fixture("trufflehog-v3-filesystem.jsonl")).unwrap();
        no_secret_leaves("v3-filesystem", &fs);
        let gh = decode(&fixture("trufflehog-v3-github.jsonl")).unwrap();
        no_secret_leaves("v3-github", &gh);
        let paths: Vec<Option<&str>> = fs.findings.iter().map(Finding::path).collect();
        assert_eq!(
            paths,
            [Some("app/settings.py"), Some("deploy/keys/deploy_ed25519")]
        );
        assert_eq!(gh.findings.len(), 2);
        assert_eq!(gh.target, Some(target()));
        assert_eq!(fs.target, None, "a filesystem names no repository");
        // Records of two repositories (an organization's scan): no target.
        let two = format!(
            "{}{}",
            String::from_utf8(fixture("trufflehog-v3-github.jsonl")).unwrap(),
            String::from_utf8(fixture("trufflehog-v3-git.jsonl"))
                .unwrap()
                .replace("acme/web-api.git", "acme/billing.git")
        );
        assert_eq!(decode(two.as_bytes()).unwrap().target, None);
        assert_eq!(gh.findings[0].path(), Some("deploy/env.sh"));
        // One secret, seen by two sources at one place: one fingerprint.
        let git = decode(&fixture("trufflehog-v3-git.jsonl")).unwrap();
        let fp = |f: &Finding| fingerprint::assign(vec![f.clone()], &target())[0].0.clone();
        assert_eq!(fp(&gh.findings[0]), fp(&git.findings[0]));
        assert_eq!(fp(&fs.findings[0]), fp(&git.findings[4]));
        // The key moved two lines down: still the same finding.
        assert_eq!(
            (gh.findings[0].start_line(), git.findings[0].start_line()),
            (Some(6), Some(4))
        );
    }

    #[test]
    fn v2_fixture() {
        let bytes = fixture("trufflehog-v2.jsonl");
        assert_eq!(super::super::sniff(&bytes).unwrap(), Format::Trufflehog);
        let r = decode(&bytes).unwrap();
        no_secret_leaves("v2", &r);
        let rows: Vec<(&str, Option<&str>)> = r
            .findings
            .iter()
            .map(|f| (f.rule_id.as_str(), f.path()))
            .collect();
        assert_eq!(
            rows,
            [
                ("AWS API Key", Some("deploy/env.sh")),
                ("High Entropy", Some("app/settings.py")),
                ("RSA private key", Some("deploy/keys/id_rsa")),
            ]
        );
        for f in &r.findings {
            assert_eq!(f.severity, Severity::High);
            assert_eq!(f.severity_source.as_deref(), Some("trufflehog:v2"));
            assert_eq!(f.start_line(), None);
            assert!(f.evidence.secret_hash.is_some());
        }
        assert_eq!(
            r.findings[0].message,
            "AWS API Key found in the git history"
        );
    }

    #[test]
    fn an_array_and_an_empty_stream() {
        let lines = fixture("trufflehog-v3-git.jsonl");
        let text = String::from_utf8(lines).unwrap();
        let array = format!("[{}]", text.trim().lines().collect::<Vec<_>>().join(","));
        assert_eq!(
            super::super::sniff(array.as_bytes()).unwrap(),
            Format::Trufflehog
        );
        let a = decode(array.as_bytes()).unwrap();
        let b = decode(text.as_bytes()).unwrap();
        assert_eq!(a.findings, b.findings);
        for empty in ["", "\n", "[]"] {
            let r = decode(empty.as_bytes()).unwrap();
            assert!(r.findings.is_empty());
            assert!(r
                .coverage
                .contains(&("trufflehog".into(), Category::Secret)));
        }
    }

    #[test]
    fn another_salt_other_hashes() {
        let bytes = fixture("trufflehog-v3-git.jsonl");
        let a = decode(&bytes).unwrap();
        let b = TrufflehogDecoder
            .decode(
                &bytes,
                &DecodeContext {
                    secret_salt: "another-salt".into(),
                },
            )
            .unwrap();
        for (x, y) in a.findings.iter().zip(&b.findings) {
            assert_ne!(x.evidence.secret_hash, y.evidence.secret_hash);
        }
    }

    #[test]
    fn wrong_shapes_are_named() {
        for (doc, needle) in [
            (
                "{\"DetectorName\":\"AWS\",\"Raw\":\"a\"}\n{\"DetectorName\":\"AWS\",\"Verified\":\"s3cr3t\"}",
                "record 2: invalid type: string, expected a boolean",
            ),
            (
                "{\"DetectorName\":\"AWS\"}\n{\"foo\":1}",
                "record 2 is neither a v3 result",
            ),
            (
                r#"[{"reason":"x","stringsFound":"s3cr3t"}]"#,
                "array element: invalid type: string, expected a sequence",
            ),
            (
                r#"{"DetectorName":"AWS","SourceMetadata":{"Data":{"Git":{"line":"s3cr3t"}}}}"#,
                "record 1: invalid type: string, expected i64",
            ),
            ("5", "record 1: invalid type: integer"),
        ] {
            match decode(doc.as_bytes()) {
                Err(e @ DecodeError::Shape { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains(needle), "{doc}: {text}");
                    assert!(text.contains("trufflehog"), "{doc}: {text}");
                    assert!(!text.contains("s3cr3t"), "{doc}: {text}");
                }
                other => panic!("{doc}: {other:?}"),
            }
        }
    }

    /// TruffleHog's real output in the shared corpus: its secrets (plain,
    /// base64 as older v3 wrote `Raw`, or `Redacted`), extra data, e-mails
    /// and commit messages never leave the decoder. Skips without the
    /// corpus.
    #[test]
    fn corpus_reports_keep_no_secret() {
        const CORPUS_NEVER: &[&str] = &[
            "AKIAYVP4CIPPERUVIFXG",
            "QUtJQVlWUDRDSVBQRVJVVklGWEc",
            "aHR0cHM6Ly9hZG1pbjphZG1p",
            "herokuapp",
            "595918472158",
            "canarytokens",
            "counters-MacBook",
            "d15627104d07846ac2914a976e8e347a663bbd9b",
            "BEGIN",
            "Fixed since_commit",
            "@@",
        ];
        for (name, records, v3) in [
            ("v3_git.json", 4, true),
            ("v3_github.json", 4, true),
            ("v2_many_vulns.json", 64, false),
        ] {
            let Some(bytes) =
                crate::testing::shared_bytes(&format!("scans/trufflehog/{name}"), name)
            else {
                return;
            };
            let r = decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(r.findings.len(), records, "{name}");
            let dbg = format!("{r:?}");
            for s in CORPUS_NEVER {
                assert!(!dbg.contains(s), "{name}: {s}");
            }
            for f in &r.findings {
                assert!(f.evidence.secret_hash.is_some(), "{name}");
                assert_eq!(f.start_line().is_some(), v3, "{name}");
            }
        }
    }

    #[test]
    fn truncated_input_is_an_error() {
        for name in ["trufflehog-v3-git.jsonl", "trufflehog-v2.jsonl"] {
            crate::testing::assert_truncations_are_syntax_errors(name, &fixture(name), decode);
        }
    }
}
