//! Every report of the shared corpus (DefectDojo's parser samples) is
//! either decoded with the record count the manifest gives, or refused with
//! a clear error for the formats custody does not read; never a panic.

use custody::normalize::{self, DecodeContext, DecodeError, Format};

#[test]
fn every_corpus_report_decodes_or_is_refused_clearly() {
    let Some(root) = custody::testing::shared_corpus(
        "scans",
        "every_corpus_report_decodes_or_is_refused_clearly",
    ) else {
        return;
    };
    let manifest = std::fs::read_to_string(root.join("MANIFEST.tsv")).expect("corpus manifest");
    let ctx = DecodeContext::default();
    let mut decoded = 0;
    for line in manifest.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (dir, file, raw) = (cols[0], cols[1], cols[4]);
        let bytes = std::fs::read(root.join(dir).join(file)).unwrap();
        let result = normalize::decode(&bytes, None, &ctx);
        match dir {
            "bandit" | "checkov" | "trufflehog" => {
                // Formats custody does not read: a named refusal (bandit and
                // checkov JSON advise the SARIF output), or an empty report
                // for the literal `null`/empty list.
                if let Err(e) = result {
                    assert!(
                        matches!(e, DecodeError::UnknownFormat(_) | DecodeError::Syntax(_)),
                        "{dir}/{file}: {e}"
                    );
                }
            }
            _ => {
                let (format, report) = result.unwrap_or_else(|e| panic!("{dir}/{file}: {e}"));
                let want_format = match dir {
                    "anchore_grype" => Format::Grype,
                    "gitleaks" => Format::Gitleaks,
                    "semgrep" => Format::Semgrep,
                    "sarif" => Format::Sarif,
                    "trivy" => Format::Trivy,
                    other => panic!("unexpected corpus folder {other}"),
                };
                let raw: usize = raw.parse().unwrap();
                if raw > 0 {
                    assert_eq!(format, want_format, "{dir}/{file}");
                }
                let total = report.findings.len() + report.skipped.len();
                assert_eq!(
                    total,
                    raw,
                    "{dir}/{file}: findings {} + skipped {:?}",
                    report.findings.len(),
                    report.skipped
                );
                decoded += 1;
            }
        }
    }
    assert!(decoded >= 80, "only {decoded} corpus files decoded");
}
