//! Decoder for Bandit JSON (`bandit -f json`): `{errors: [{filename,
//! reason}], generated_at, metrics, results: [{code, col_offset,
//! end_col_offset, filename, issue_confidence, issue_cwe: {id, link},
//! issue_severity, issue_text, line_number, line_range, more_info, test_id,
//! test_name}]}`.
//!
//! Every result is a SAST finding with the test id (`B101`) as rule, the
//! test name as title, `issue_severity` as severity and `more_info` as
//! help link. `code` holds numbered source lines (`"172     assert x\n"`,
//! the number, one space, the line): the line at `line_number` gives the
//! content hash and the lines of `line_range` the snippet. Bandit's SARIF
//! output starts the result's region snippet with the same line, so a run
//! read from either output gets the same fingerprints (its SARIF cuts a
//! multi-line region to two lines; `line_range` has them all). Columns are
//! 0-based in the report and 1-based in a finding.
//!
//! Files Bandit could not parse are listed in `errors`; they do not take
//! the run's coverage away (a report has no per-file coverage), as with
//! Semgrep's per-file errors.

use super::util::{clean_path, non_empty, set_line_content};
use super::{DecodeContext, DecodeError, Decoder, Format, Markers, Report};
use crate::model::{Category, Finding, Location, Severity};
use serde::Deserialize;

/// The Bandit JSON decoder.
pub struct BanditDecoder;

const SCANNER: &str = "bandit";

type Str<'a> = super::text::Text<'a>;

#[derive(Deserialize)]
struct Document<'a> {
    #[serde(borrow)]
    results: Vec<Issue<'a>>,
}

#[derive(Deserialize)]
struct Issue<'a> {
    #[serde(borrow, default)]
    code: Option<Str<'a>>,
    #[serde(default)]
    col_offset: Option<i64>,
    #[serde(default)]
    end_col_offset: Option<i64>,
    #[serde(borrow, default)]
    filename: Option<Str<'a>>,
    #[serde(default)]
    issue_cwe: Option<Cwe>,
    #[serde(borrow, default)]
    issue_severity: Option<Str<'a>>,
    #[serde(borrow, default)]
    issue_text: Option<Str<'a>>,
    #[serde(default)]
    line_number: Option<i64>,
    #[serde(default)]
    line_range: Option<Vec<i64>>,
    #[serde(borrow, default)]
    more_info: Option<Str<'a>>,
    #[serde(borrow, default)]
    test_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    test_name: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Cwe {
    #[serde(default)]
    id: Option<i64>,
}

impl Decoder for BanditDecoder {
    fn format(&self) -> Format {
        Format::Bandit
    }

    fn markers(&self) -> Markers {
        Markers {
            result_keys: &["test_id", "issue_severity"],
            // With no results: `errors`, `generated_at`, `metrics`, `results: []`.
            empty_results_key: Some("metrics"),
            ..Markers::default()
        }
    }

    fn decode(&self, bytes: &[u8], ctx: &DecodeContext) -> Result<Report, DecodeError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let doc: Document<'_> =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::from_json(Format::Bandit, e))?;
        let mut report = Report::default();
        report.coverage.insert((SCANNER.into(), Category::Sast));
        report.findings = doc
            .results
            .iter()
            .map(|i| finding(i, &ctx.secret_salt))
            .collect();
        Ok(report)
    }
}

fn finding(i: &Issue<'_>, salt: &str) -> Finding {
    let rule_id = non_empty(&i.test_id)
        .or(non_empty(&i.test_name))
        .unwrap_or("unknown");
    let label = non_empty(&i.issue_severity);
    let severity = label
        .and_then(Severity::from_label)
        .unwrap_or(Severity::Info);
    let message = non_empty(&i.issue_text)
        .map(str::to_string)
        .unwrap_or_else(|| format!("bandit test {rule_id}"));
    let mut f = Finding::new(SCANNER, Category::Sast, rule_id, severity, message);
    f.severity_source = Some(format!("issue_severity:{}", label.unwrap_or("none")).into());
    f.title = non_empty(&i.test_name).map(Into::into);
    f.help_uri = non_empty(&i.more_info).map(Into::into);
    if let Some(id) = i.issue_cwe.as_ref().and_then(|c| c.id).filter(|&n| n > 0) {
        f.cwe.push(format!("CWE-{id}"));
    }

    let line = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok()).filter(|&n| n > 0);
    let column = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok()?.checked_add(1));
    let start = line(i.line_number);
    let range = i.line_range.as_deref().unwrap_or(&[]);
    let end = line(range.iter().copied().max()).filter(|&e| start.is_none_or(|s| e >= s));
    if let Some(path) = non_empty(&i.filename) {
        f.location = Some(Location {
            path: clean_path(path, None),
            start_line: start,
            start_column: column(i.col_offset),
            end_line: end,
            end_column: column(i.end_col_offset),
        });
    }

    let code: Vec<(u32, &str)> = i.code.as_deref().map(numbered_lines).unwrap_or_default();
    let at = |n: u32| code.iter().find(|(k, _)| *k == n).map(|(_, t)| *t);
    if let Some(start) = start {
        let last = end.unwrap_or(start);
        let region: Vec<&str> = code
            .iter()
            .filter(|(k, _)| (start..=last).contains(k))
            .map(|(_, t)| *t)
            .collect();
        if !region.is_empty() {
            f.evidence.snippet = Some(region.join("\n").trim_end().to_string());
        }
    }
    set_line_content(&mut f, start.and_then(at), salt);
    f
}

/// Bandit's `code`: one source line per line, each after its line number
/// and one space (or a tab, with `--tabbed`). Lines without a number are
/// dropped.
fn numbered_lines(code: &str) -> Vec<(u32, &str)> {
    code.lines()
        .filter_map(|l| {
            let digits = l.len() - l.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let n: u32 = l[..digits].parse().ok()?;
            let rest = &l[digits..];
            let text = rest
                .strip_prefix(' ')
                .or_else(|| rest.strip_prefix('\t'))
                .unwrap_or(rest);
            Some((n, text.trim_end_matches('\r')))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint;

    fn decode(bytes: &[u8]) -> Result<Report, DecodeError> {
        crate::testing::decode_with(&BanditDecoder, bytes)
    }

    fn fixture(name: &str) -> Vec<u8> {
        crate::testing::fixture(&format!("bandit/{name}"))
    }

    const ONE: &str = r#"{
      "errors": [{"filename": "broken.py", "reason": "syntax error while parsing AST from file"}],
      "generated_at": "2024-01-01T00:00:00Z",
      "metrics": {"_totals": {"loc": 10}},
      "results": [{
        "code": "9 import subprocess\n10     subprocess.call(cmd,\n11                     shell=True)\n12 \n",
        "col_offset": 4, "end_col_offset": 30,
        "filename": "./app/run.py",
        "issue_confidence": "HIGH",
        "issue_cwe": {"id": 78, "link": "https://cwe.mitre.org/data/definitions/78.html"},
        "issue_severity": "HIGH",
        "issue_text": "subprocess call with shell=True identified, security issue.",
        "line_number": 10, "line_range": [10, 11],
        "more_info": "https://bandit.readthedocs.io/en/1.9.4/plugins/b602_subprocess_popen_with_shell_equals_true.html",
        "test_id": "B602", "test_name": "subprocess_popen_with_shell_equals_true"
      }]
    }"#;

    #[test]
    fn documented_fields() {
        let r = decode(ONE.as_bytes()).unwrap();
        assert_eq!(r.findings.len(), 1);
        assert_eq!(
            r.coverage.iter().collect::<Vec<_>>(),
            vec![&("bandit".to_string(), Category::Sast)]
        );
        let f = &r.findings[0];
        assert_eq!(f.scanner, "bandit");
        assert_eq!(f.rule_id, "B602");
        assert_eq!(
            f.title.as_deref(),
            Some("subprocess_popen_with_shell_equals_true")
        );
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.severity_source.as_deref(), Some("issue_severity:HIGH"));
        assert_eq!(f.cwe, ["CWE-78"]);
        assert!(f.help_uri.as_deref().unwrap().contains("b602"));
        assert_eq!(
            f.location,
            Some(Location {
                path: "app/run.py".into(),
                start_line: Some(10),
                start_column: Some(5),
                end_line: Some(11),
                end_column: Some(31),
            })
        );
        // The snippet is the result's lines, without their numbers.
        assert_eq!(
            f.evidence.snippet.as_deref(),
            Some("    subprocess.call(cmd,\n                    shell=True)")
        );
        assert_eq!(
            f.content_hash,
            Some(fingerprint::line_hash("subprocess.call(cmd,"))
        );
    }

    #[test]
    fn moved_code_keeps_its_fingerprint() {
        let moved = ONE
            .replace("9 import", "39 import")
            .replace("10     sub", "40     sub")
            .replace("11    ", "41    ")
            .replace("12 \\n", "42 \\n")
            .replace(
                "\"line_number\": 10, \"line_range\": [10, 11]",
                "\"line_number\": 40, \"line_range\": [40, 41]",
            );
        let a = decode(ONE.as_bytes()).unwrap();
        let b = decode(moved.as_bytes()).unwrap();
        assert_eq!(b.findings[0].start_line(), Some(40));
        assert_eq!(a.findings[0].content_hash, b.findings[0].content_hash);
        let t: crate::model::Target = "repo:github.com/acme/api".parse().unwrap();
        assert_eq!(
            fingerprint::assign(a.findings, &t)[0].0,
            fingerprint::assign(b.findings, &t)[0].0
        );
    }

    /// The real report of bandit 1.9.4 over paramiko 4.0.0 (see the
    /// fixture's README), and its SARIF sibling of the same run.
    #[test]
    fn real_report_agrees_with_the_sarif_of_the_same_run() {
        let json = fixture("bandit-paramiko-4.0.0.json");
        assert_eq!(super::super::sniff(&json).unwrap(), Format::Bandit);
        let r = decode(&json).unwrap();
        assert_eq!(r.findings.len(), 25);
        let count = |id: &str| r.findings.iter().filter(|f| f.rule_id == id).count();
        assert_eq!((count("B101"), count("B324"), count("B110")), (9, 8, 4));
        for f in &r.findings {
            assert!(f.content_hash.is_some(), "{f:?}");
            assert!(f.evidence.snippet.is_some(), "{f:?}");
            assert!(f.path().unwrap().starts_with("paramiko/"), "{f:?}");
            assert!(!f.cwe.is_empty());
        }
        let sarif = fixture("bandit-paramiko-4.0.0.sarif");
        let (format, s) = super::super::decode(&sarif, None, &DecodeContext::default()).unwrap();
        assert_eq!(format, Format::Sarif);
        // Bandit's SARIF cuts a multi-line result's region (and snippet) to
        // two lines, where `line_range` has them all; the rest agrees.
        let key = |f: &Finding| {
            let l = f.location.as_ref().unwrap();
            (
                f.scanner.clone(),
                f.rule_id.clone(),
                f.severity,
                f.severity_source.clone(),
                f.cwe.clone(),
                f.help_uri.clone(),
                l.path.clone(),
                l.start_line,
                l.start_column,
                f.content_hash.clone(),
            )
        };
        let mut a: Vec<_> = r.findings.iter().map(key).collect();
        let mut b: Vec<_> = s.findings.iter().map(key).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        let t: crate::model::Target = "repo:github.com/paramiko/paramiko".parse().unwrap();
        let mut fa: Vec<String> = fingerprint::assign(r.findings, &t)
            .into_iter()
            .map(|p| p.0)
            .collect();
        let mut fb: Vec<String> = fingerprint::assign(s.findings, &t)
            .into_iter()
            .map(|p| p.0)
            .collect();
        fa.sort();
        fb.sort();
        assert_eq!(fa.len(), 25);
        assert_eq!(fa, fb);
    }

    #[test]
    fn empty_and_odd_reports() {
        let r = decode(br#"{"errors":[],"generated_at":"x","metrics":{},"results":[]}"#).unwrap();
        assert!(r.findings.is_empty());
        assert!(r.coverage.contains(&("bandit".into(), Category::Sast)));
        // No code, no line, an unknown severity: still a finding.
        let r = decode(br#"{"results":[{"test_id":"B999","issue_severity":"UNDEFINED","filename":"a.py","code":"garbage"}]}"#).unwrap();
        let f = &r.findings[0];
        assert_eq!(f.severity, Severity::Info);
        assert_eq!(f.start_line(), None);
        assert!(f.content_hash.is_none() && f.evidence.snippet.is_none());
    }

    #[test]
    fn wrong_shapes_are_named() {
        for (doc, needle) in [
            (r#"{"errors": []}"#, "missing field `results`"),
            (r#"{"results": {}}"#, "expected a sequence"),
            (
                r#"{"results": [{"line_number": "s3cr3t"}]}"#,
                "invalid type: string, expected i64",
            ),
            ("null", "invalid type: null"),
        ] {
            match decode(doc.as_bytes()) {
                Err(e @ DecodeError::Shape { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains(needle), "{doc}: {text}");
                    assert!(text.contains("bandit"), "{doc}: {text}");
                    assert!(!text.contains("s3cr3t"), "{doc}: {text}");
                }
                other => panic!("{doc}: {other:?}"),
            }
        }
    }

    #[test]
    fn truncated_input_is_an_error() {
        crate::testing::assert_truncations_are_syntax_errors(
            "bandit-paramiko-4.0.0.json",
            &fixture("bandit-paramiko-4.0.0.json"),
            decode,
        );
    }
}
