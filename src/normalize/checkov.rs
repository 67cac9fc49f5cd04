//! Decoder for Checkov JSON (`checkov -o json`): one report `{check_type,
//! results: {passed_checks, failed_checks, skipped_checks, parsing_errors},
//! summary}`, or a list of them, one per check type (framework), which is
//! what Checkov writes when more than one framework found files. A bare
//! summary `{passed, failed, ..., checkov_version}` is what it writes when
//! no framework found anything to check: an empty report.
//!
//! Every failed check is an IaC finding (a secret finding for the `secrets`
//! check type) with the check id (`CKV_K8S_12`) as rule, the check name as
//! title and the `guideline` as help link. The path is `repo_file_path`
//! (relative to the repository root) or `file_path` (relative to the
//! scanned directory), both written by Checkov with a leading `/`, which is
//! dropped. `file_line_range` `[0, 0]` (a whole Dockerfile) is no line.
//!
//! Severity: `severity` when the report has one (only with a platform key);
//! otherwise high, as Checkov's own SARIF output calls every failed check
//! an error.
//!
//! Fingerprint basis: the checked `resource` (`Deployment.default.web`,
//! `aws_s3_bucket.data`, `jobs(build)`), which names the block whatever its
//! lines; the first line of `code_block` is far weaker (every Kubernetes
//! manifest starts with `apiVersion: v1`), and the `code_block` line at the
//! check's start is the basis only when there is no resource. The `code_block` lines are the snippet.
//!
//! Secrets: for the `secrets` check type, Checkov's `resource` is an
//! unsalted SHA-1 of the secret and `code_block` shows the line with the
//! secret partly masked; the first is salted and hashed again, the second
//! is dropped.
//!
//! Skipped checks (`checkov:skip=` comments, `--skip-check`) are recorded in
//! [`Report::skipped`]; passed checks are not read. Results of the SCA
//! check types (`sca_package`, `sca_image`, which need a platform key) are
//! not read either: they are recorded as skipped, and claim no coverage.

use super::util::{clean_path, non_empty, set_line_content};
use super::{DecodeContext, DecodeError, Decoder, Format, Markers, Report, secret_hash};
use crate::fingerprint;
use crate::model::{Category, Finding, Location, Severity};
use serde::Deserialize;

/// The Checkov JSON decoder.
pub struct CheckovDecoder;

const SCANNER: &str = "checkov";

type Str<'a> = super::text::Text<'a>;

#[derive(Deserialize)]
struct CheckovReport<'a> {
    #[serde(borrow, default)]
    check_type: Option<Str<'a>>,
    #[serde(borrow, default)]
    results: Option<Results<'a>>,
    /// Present on the bare summary only.
    #[serde(default)]
    failed: Option<u64>,
    /// Present on the bare summary only.
    #[serde(borrow, default)]
    checkov_version: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Results<'a> {
    #[serde(borrow, default)]
    failed_checks: Option<Vec<Check<'a>>>,
    #[serde(borrow, default)]
    skipped_checks: Option<Vec<Check<'a>>>,
}

#[derive(Deserialize)]
struct Check<'a> {
    #[serde(borrow, default)]
    check_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    bc_check_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    check_name: Option<Str<'a>>,
    #[serde(borrow, default)]
    check_result: Option<CheckResult<'a>>,
    #[serde(borrow, default)]
    code_block: Option<Vec<CodeLine<'a>>>,
    #[serde(borrow, default)]
    file_path: Option<Str<'a>>,
    #[serde(borrow, default)]
    repo_file_path: Option<Str<'a>>,
    #[serde(default)]
    file_line_range: Option<Vec<i64>>,
    #[serde(borrow, default)]
    resource: Option<Str<'a>>,
    #[serde(borrow, default)]
    severity: Option<Str<'a>>,
    #[serde(borrow, default)]
    guideline: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct CheckResult<'a> {
    #[serde(borrow, default)]
    suppress_comment: Option<Str<'a>>,
}

/// `[line_number, "text\n"]`.
#[derive(Deserialize)]
struct CodeLine<'a>(Option<i64>, #[serde(borrow)] Option<Str<'a>>);

impl Decoder for CheckovDecoder {
    fn format(&self) -> Format {
        Format::Checkov
    }

    fn markers(&self) -> Markers {
        Markers {
            object_keys: &["check_type", "checkov_version"],
            results_object_keys: Some(&["failed_checks", "passed_checks"]),
            element_keys: &[&["check_type"]],
            ..Markers::default()
        }
    }

    fn decode(&self, bytes: &[u8], ctx: &DecodeContext) -> Result<Report, DecodeError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let list = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        let reports: Vec<CheckovReport<'_>> = if list {
            serde_json::from_slice(bytes)
        } else {
            serde_json::from_slice(bytes).map(|r| vec![r])
        }
        .map_err(|e| DecodeError::from_json(Format::Checkov, e))?;
        let mut out = Report::default();
        for (n, r) in reports.iter().enumerate() {
            let at = if list {
                format!("report {}", n + 1)
            } else {
                "the report".to_string()
            };
            read_report(r, &at, &ctx.secret_salt, &mut out)?;
        }
        Ok(out)
    }
}

fn read_report(
    r: &CheckovReport<'_>,
    at: &str,
    salt: &str,
    out: &mut Report,
) -> Result<(), DecodeError> {
    let shape = |detail: String| DecodeError::Shape {
        format: Format::Checkov,
        detail,
    };
    let check_type = non_empty(&r.check_type).unwrap_or("");
    let Some(results) = &r.results else {
        return match (r.failed, &r.checkov_version) {
            (Some(n), _) if n > 0 => Err(shape(format!(
                "{at}: its summary counts {n} failed checks but it has no `results`"
            ))),
            (_, Some(_)) => {
                // The summary Checkov prints when it found nothing to check.
                out.coverage.insert((SCANNER.into(), Category::Iac));
                Ok(())
            }
            _ => Err(shape(format!(
                "{at} has neither `results` nor a Checkov summary"
            ))),
        };
    };
    let failed = results.failed_checks.as_deref().unwrap_or(&[]);
    if check_type.starts_with("sca_") {
        if !failed.is_empty() {
            out.skipped.push(format!(
                "{at} ({check_type}): {} failed checks of an SCA check type, which is not read",
                failed.len()
            ));
        }
        return Ok(());
    }
    let category = if check_type == "secrets" {
        Category::Secret
    } else {
        Category::Iac
    };
    out.coverage.insert((SCANNER.into(), category));
    for c in failed {
        out.findings.push(finding(c, category, salt));
    }
    for (i, c) in results.skipped_checks.iter().flatten().enumerate() {
        let id = non_empty(&c.check_id).unwrap_or("unknown");
        let path = non_empty(&c.repo_file_path)
            .or(non_empty(&c.file_path))
            .unwrap_or("?");
        let why = c
            .check_result
            .as_ref()
            .and_then(|r| non_empty(&r.suppress_comment))
            .unwrap_or("no reason given");
        out.skipped.push(format!(
            "{at} ({check_type}) skipped_checks[{i}]: {id} at {path} skipped ({why})"
        ));
    }
    Ok(())
}

fn finding(c: &Check<'_>, category: Category, salt: &str) -> Finding {
    let rule_id = non_empty(&c.check_id)
        .or(non_empty(&c.bc_check_id))
        .unwrap_or("unknown");
    let name = non_empty(&c.check_name);
    let resource = non_empty(&c.resource);
    let label = non_empty(&c.severity);
    let (severity, source) = match label.and_then(|l| Some((Severity::from_label(l)?, l))) {
        Some((s, l)) => (s, format!("checkov:{l}")),
        None => (Severity::High, "checkov:default".to_string()),
    };
    let mut message = name.unwrap_or(rule_id).to_string();
    if let (Some(res), Category::Iac) = (resource, category) {
        message = format!("{message} ({res})");
    }
    let mut f = Finding::new(SCANNER, category, rule_id, severity, message);
    f.severity_source = Some(source.into());
    f.title = name.map(Into::into);
    f.help_uri = non_empty(&c.guideline).map(Into::into);

    let written = non_empty(&c.repo_file_path).or(non_empty(&c.file_path));
    if let Some(path) = written {
        let range = c.file_line_range.as_deref().unwrap_or(&[]);
        let line = |n: Option<&i64>| n.and_then(|&n| u32::try_from(n).ok()).filter(|&n| n > 0);
        let start = line(range.first());
        f.location = Some(Location {
            path: clean_path(path.trim_start_matches('/'), None),
            start_line: start,
            end_line: line(range.get(1)).filter(|_| start.is_some()),
            ..Location::default()
        });
    }

    let lines: Vec<&str> = c
        .code_block
        .iter()
        .flatten()
        .filter_map(|CodeLine(_, text)| text.as_deref())
        .collect();
    // The line at the check's start, else the block's first.
    let start = f.start_line().map(i64::from);
    let first = c
        .code_block
        .iter()
        .flatten()
        .find(|CodeLine(n, _)| n.is_some() && *n == start)
        .and_then(|CodeLine(_, text)| text.as_deref())
        .or(lines.first().copied());
    if category == Category::Secret {
        // Checkov's resource here is the secret's SHA-1: salted again.
        f.evidence.secret_hash = resource.map(|r| secret_hash(salt, r));
        set_line_content(&mut f, first, salt);
        return f;
    }
    if !lines.is_empty() {
        f.evidence.snippet = Some(lines.concat().trim_end().to_string());
    }
    match resource {
        Some(res) => {
            // A Dockerfile's resource is its path and a dot: keep what
            // follows the path, so the basis does not repeat it.
            let own = non_empty(&c.file_path)
                .and_then(|p| res.strip_prefix(p))
                .unwrap_or(res);
            f.content_hash = Some(fingerprint::line_hash(&format!("resource {own}")));
        }
        None => set_line_content(&mut f, first, salt),
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn decode(bytes: &[u8]) -> Result<Report, DecodeError> {
        crate::testing::decode_with(&CheckovDecoder, bytes)
    }

    fn fixture(name: &str) -> Vec<u8> {
        crate::testing::fixture(&format!("checkov/{name}"))
    }

    fn target() -> crate::model::Target {
        "repo:github.com/nolar/kopf".parse().unwrap()
    }

    /// Checkov 3.3.30 over the kopf 1.45.2 sdist with `--quiet`: a list of
    /// three reports (kubernetes, dockerfile, github_actions), failed
    /// checks only.
    #[test]
    fn real_list_of_reports() {
        let bytes = fixture("checkov-kopf-1.45.2-quiet.json");
        assert_eq!(super::super::sniff(&bytes).unwrap(), Format::Checkov);
        let r = decode(&bytes).unwrap();
        assert_eq!(r.findings.len(), 26);
        assert!(r.skipped.is_empty());
        assert_eq!(
            r.coverage.iter().collect::<Vec<_>>(),
            vec![&("checkov".to_string(), Category::Iac)]
        );
        let per_path = |p: &str| r.findings.iter().filter(|f| f.path() == Some(p)).count();
        assert_eq!(per_path("docs/deployment-depl.yaml"), 20);
        assert_eq!(per_path("docker/Dockerfile"), 2);
        let gha: Vec<&Finding> = r
            .findings
            .iter()
            .filter(|f| f.rule_id == "CKV2_GHA_1")
            .collect();
        assert_eq!(gha.len(), 4);
        assert!(gha
            .iter()
            .all(|f| f.path().unwrap().starts_with(".github/workflows/")));
        let f = r
            .findings
            .iter()
            .find(|f| f.rule_id == "CKV_K8S_12")
            .unwrap();
        assert_eq!(f.title.as_deref(), Some("Memory requests should be set"));
        assert_eq!(
            f.message,
            "Memory requests should be set (Deployment.default.kopfexample-operator)"
        );
        assert_eq!(f.category, Category::Iac);
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.severity_source.as_deref(), Some("checkov:default"));
        assert_eq!(
            (f.start_line(), f.location.as_ref().unwrap().end_line),
            (Some(1), Some(20))
        );
        assert!(f
            .evidence
            .snippet
            .as_deref()
            .unwrap()
            .starts_with("apiVersion: apps/v1\nkind: Deployment\n"));
        // Checkov writes line 0 for a workflow's `on:` block at the top.
        let lines: Vec<Option<u32>> = gha.iter().map(|f| f.start_line()).collect();
        assert_eq!(lines, [Some(15), Some(31), None, None]);
        // 26 distinct findings: no two share rule, path and resource.
        let fps: BTreeSet<String> = crate::fingerprint::assign(r.findings, &target())
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(fps.len(), 26);
    }

    /// Checkov 3.3.30 over the same sdist, the Dockerfile framework only:
    /// one report object (not a list), with its 71 passed checks.
    #[test]
    fn real_single_report_with_passed_checks() {
        let bytes = fixture("checkov-kopf-1.45.2-dockerfile.json");
        assert_eq!(super::super::sniff(&bytes).unwrap(), Format::Checkov);
        let r = decode(&bytes).unwrap();
        let ids: Vec<&str> = r.findings.iter().map(|f| f.rule_id.as_str()).collect();
        assert_eq!(ids, ["CKV_DOCKER_2", "CKV_DOCKER_3"]);
        assert!(r.skipped.is_empty(), "passed checks are not findings");
        // The same checks as in the list report of all frameworks, with the
        // same fingerprints.
        let all = decode(&fixture("checkov-kopf-1.45.2-quiet.json")).unwrap();
        let docker: Vec<Finding> = all
            .findings
            .into_iter()
            .filter(|f| f.path() == Some("docker/Dockerfile"))
            .collect();
        assert_eq!(
            crate::fingerprint::assign(r.findings, &target()),
            crate::fingerprint::assign(docker, &target())
        );
    }

    const REPORT: &str = r#"{
      "check_type": "terraform",
      "results": {
        "passed_checks": [{"check_id": "CKV_AWS_20", "check_result": {"result": "PASSED"}}],
        "failed_checks": [{
          "check_id": "CKV_AWS_18", "bc_check_id": "BC_AWS_S3_13",
          "check_name": "Ensure the S3 bucket has access logging enabled",
          "check_result": {"result": "FAILED"},
          "code_block": [[3, "resource \"aws_s3_bucket\" \"data\" {\n"], [4, "  bucket = \"acme-data\"\n"], [5, "}\n"]],
          "file_path": "/s3.tf", "repo_file_path": "/infra/s3.tf", "file_line_range": [3, 5],
          "resource": "aws_s3_bucket.data", "severity": "LOW",
          "guideline": "https://docs.example.com/ckv_aws_18"
        }],
        "skipped_checks": [{
          "check_id": "CKV_AWS_21", "check_result": {"result": "SKIPPED", "suppress_comment": "versioning is done by the backup job"},
          "file_path": "/s3.tf", "repo_file_path": "/infra/s3.tf", "file_line_range": [3, 5], "resource": "aws_s3_bucket.data"
        }],
        "parsing_errors": []
      },
      "summary": {"passed": 1, "failed": 1, "skipped": 1, "parsing_errors": 0, "checkov_version": "3.3.30"}
    }"#;

    #[test]
    fn documented_fields_and_skips() {
        let r = decode(REPORT.as_bytes()).unwrap();
        assert_eq!(r.findings.len(), 1);
        let f = &r.findings[0];
        assert_eq!(f.rule_id, "CKV_AWS_18");
        assert_eq!(f.path(), Some("infra/s3.tf"));
        assert_eq!(f.start_line(), Some(3));
        assert_eq!(f.severity, Severity::Low);
        assert_eq!(f.severity_source.as_deref(), Some("checkov:LOW"));
        assert_eq!(
            f.help_uri.as_deref(),
            Some("https://docs.example.com/ckv_aws_18")
        );
        assert_eq!(
            f.evidence.snippet.as_deref(),
            Some("resource \"aws_s3_bucket\" \"data\" {\n  bucket = \"acme-data\"\n}")
        );
        assert_eq!(r.skipped.len(), 1);
        assert!(
            r.skipped[0].contains("CKV_AWS_21")
                && r.skipped[0].contains("versioning is done by the backup job"),
            "{:?}",
            r.skipped
        );
    }

    #[test]
    fn the_resource_is_the_basis_whatever_its_lines() {
        let moved = REPORT
            .replace("[[3, ", "[[30, ")
            .replace("[4, ", "[40, ")
            .replace("[5, ", "[50, ")
            .replace("[3, 5]", "[30, 32]")
            .replace(
                "  bucket = \\\"acme-data\\\"",
                "  bucket = \\\"acme-data-2\\\"",
            );
        assert_ne!(moved, REPORT);
        let a = decode(REPORT.as_bytes()).unwrap();
        let b = decode(moved.as_bytes()).unwrap();
        assert_eq!(b.findings[0].start_line(), Some(30));
        assert_ne!(a.findings[0].evidence, b.findings[0].evidence);
        let fp =
            |findings: Vec<Finding>| crate::fingerprint::assign(findings, &target())[0].0.clone();
        assert_eq!(fp(a.findings), fp(b.findings.clone()));
        // Another resource, another finding.
        let other = REPORT.replace("aws_s3_bucket.data", "aws_s3_bucket.logs");
        let c = decode(other.as_bytes()).unwrap();
        assert_ne!(fp(c.findings), fp(b.findings));
    }

    #[test]
    fn without_a_resource_the_start_line_is_the_basis() {
        let doc = r#"{"check_type": "kubernetes", "results": {"failed_checks": [{
          "check_id": "CKV_K8S_20", "file_path": "/k8s/web.yaml", "file_line_range": [4, 5],
          "code_block": [[3, "---\n"], [4, "kind: Deployment\n"], [5, "metadata: {}\n"]]}]}}"#;
        let r = decode(doc.as_bytes()).unwrap();
        assert_eq!(
            r.findings[0].content_hash,
            Some(fingerprint::line_hash("kind: Deployment"))
        );
    }

    #[test]
    fn secrets_are_never_kept() {
        let sha1 = "25910f981e85ca04baf359199dd0bd4a3d4738b2";
        let doc = format!(
            r#"{{"check_type": "secrets", "results": {{"failed_checks": [{{
              "check_id": "CKV_SECRET_2", "check_name": "AWS Access Key",
              "code_block": [[7, "aws_access_key_id = AKIAIOSF************\n"]],
              "file_path": "/deploy/env.sh", "file_line_range": [7, 8],
              "resource": "{sha1}"}}]}}}}"#
        );
        let r = decode(doc.as_bytes()).unwrap();
        assert_eq!(
            r.coverage.iter().collect::<Vec<_>>(),
            vec![&("checkov".to_string(), Category::Secret)]
        );
        let f = &r.findings[0];
        assert_eq!(f.category, Category::Secret);
        assert_eq!(f.message, "AWS Access Key");
        let salt = DecodeContext::default().secret_salt;
        assert_eq!(f.evidence.secret_hash, Some(secret_hash(&salt, sha1)));
        assert!(f.evidence.snippet.is_none());
        let dbg = format!("{r:?}");
        assert!(!dbg.contains(sha1) && !dbg.contains("AKIAIOSF"), "{dbg}");
    }

    #[test]
    fn summaries_and_other_check_types() {
        // What Checkov prints when no framework found a file.
        let r = decode(br#"{"passed": 0, "failed": 0, "skipped": 0, "parsing_errors": 0, "resource_count": 0, "checkov_version": "3.3.30"}"#).unwrap();
        assert!(r.findings.is_empty());
        assert!(r.coverage.contains(&("checkov".into(), Category::Iac)));
        let sca = r#"[{"check_type": "sca_package", "results": {"failed_checks": [{"check_id": "CKV_CVE_2021_1"}]}}]"#;
        let r = decode(sca.as_bytes()).unwrap();
        assert!(r.findings.is_empty() && r.coverage.is_empty());
        assert_eq!(r.skipped.len(), 1);
    }

    #[test]
    fn wrong_shapes_are_named() {
        for (doc, needle) in [
            (
                "{}",
                "the report has neither `results` nor a Checkov summary",
            ),
            (
                r#"{"failed": 3, "checkov_version": "3"}"#,
                "counts 3 failed checks",
            ),
            (
                r#"[{"check_type": "x", "results": {}}, {"check_type": "y"}]"#,
                "report 2 has neither",
            ),
            (
                r#"{"check_type": "x", "results": {"failed_checks": [{"file_line_range": "s3cr3t"}]}}"#,
                "invalid type: string, expected a sequence",
            ),
            (
                r#"{"check_type": "x", "results": {"failed_checks": [{"code_block": [["s3cr3t"]]}]}}"#,
                "invalid type: string, expected i64",
            ),
            ("5", "invalid type: integer"),
        ] {
            match decode(doc.as_bytes()) {
                Err(e @ DecodeError::Shape { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains(needle), "{doc}: {text}");
                    assert!(text.contains("checkov"), "{doc}: {text}");
                    assert!(!text.contains("s3cr3t"), "{doc}: {text}");
                }
                other => panic!("{doc}: {other:?}"),
            }
        }
    }

    /// A report of the shared corpus written with a platform key: its
    /// severities are read; `None` (the test skips) without the corpus.
    #[test]
    fn corpus_severities() {
        let name = "checkov-report-severity.json";
        let Some(bytes) = crate::testing::shared_bytes(&format!("scans/checkov/{name}"), name)
        else {
            return;
        };
        let r = decode(&bytes).unwrap();
        let got: Vec<(&str, Severity, Option<&str>)> = r
            .findings
            .iter()
            .map(|f| (f.rule_id.as_str(), f.severity, f.severity_source.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("CKV_GCP_29", Severity::Medium, Some("checkov:MEDIUM")),
                ("CKV_GCP_62", Severity::Medium, Some("checkov:MEDIUM")),
                ("CKV_GCP_78", Severity::Low, Some("checkov:LOW")),
                ("CKV_GCP_28", Severity::High, Some("checkov:HIGH")),
            ]
        );
        assert_eq!(r.findings[0].path(), Some("gcs.tf"));
    }

    #[test]
    fn truncated_input_is_an_error() {
        for name in [
            "checkov-kopf-1.45.2-quiet.json",
            "checkov-kopf-1.45.2-dockerfile.json",
        ] {
            crate::testing::assert_truncations_are_syntax_errors(name, &fixture(name), decode);
        }
    }
}
