//! Every report of the shared corpus (DefectDojo's parser samples, listed in
//! its `MANIFEST.tsv`) decodes with its format sniffed, never named, and
//! gives a number of findings (after fingerprinting, which merges what is
//! one finding) between the manifest's raw count of records and the count
//! DefectDojo's parser asserts, both included: custody may merge records
//! that are one finding, as DefectDojo does, but must neither lose a
//! record nor invent one.
//!
//! The samples custody does not yet read right are listed in [`KNOWN_GAPS`]
//! with the reason, and each must still fail: a gap that is closed has to
//! leave the list.

use custody::fingerprint;
use custody::model::Target;
use custody::normalize::{self, DecodeContext, Format};

/// Samples whose count is known to fall outside the range, with why.
const KNOWN_GAPS: &[(&str, &str)] = &[
    // Trivy cluster reports are split into one target per resource, but
    // DefectDojo fabricated this one by listing one workload
    // (default/Deployment/redis-follower) twice, with the same CVE,
    // package and image in both entries: within one target those records
    // are one finding. (Its full version's note gives the duplicates
    // DefectDojo's own import finds, 3 of 13, which custody's 10 matches;
    // this subset's gives none, so its range is the raw count.)
    (
        "trivy/kubernetes_fabricated_internal_duplicates_subset.json",
        "Trivy k8s cluster report: one workload is listed twice, with the same CVE, \
         package and image in both entries (5 -> 3)",
    ),
    // A record that cannot be a finding.
    (
        "trivy/legacy_trivy_mix.json",
        "one Vulnerabilities entry has no VulnerabilityID: skipped, with the reason in \
         Report::skipped (7 -> 6)",
    ),
];

/// One line of `MANIFEST.tsv`.
struct Sample {
    dir: String,
    file: String,
    raw: usize,
    /// `None` where the manifest says `-` (no parser count).
    defectdojo: Option<usize>,
}

impl Sample {
    fn name(&self) -> String {
        format!("{}/{}", self.dir, self.file)
    }

    /// The counts a finding list may have: between the raw count and
    /// DefectDojo's, whichever is smaller, both included.
    fn range(&self) -> std::ops::RangeInclusive<usize> {
        let dd = self.defectdojo.unwrap_or(self.raw);
        self.raw.min(dd)..=self.raw.max(dd)
    }
}

fn manifest(root: &std::path::Path) -> Vec<Sample> {
    let text = std::fs::read_to_string(root.join("MANIFEST.tsv")).expect("corpus manifest");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("manifest header").split('\t').collect();
    assert_eq!(
        header[..6],
        [
            "format",
            "file",
            "bytes",
            "valid_json",
            "raw_results",
            "defectdojo_expected"
        ],
        "manifest columns"
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            Sample {
                dir: cols[0].to_string(),
                file: cols[1].to_string(),
                raw: cols[4].parse().unwrap_or_else(|e| panic!("{l}: raw: {e}")),
                defectdojo: match cols[5] {
                    // No parser count, but the note may give DefectDojo's
                    // count after its own deduplication at import.
                    "-" => cols.get(6).and_then(|note| dedup_count(note, cols[4])),
                    n => Some(n.parse().unwrap_or_else(|e| panic!("{l}: dd: {e}"))),
                },
            }
        })
        .collect()
}

/// DefectDojo's count after its deduplication at import, where a sample's
/// note says how many duplicates its import test expects ("expects 3
/// duplicates on first import"): the raw count less those.
fn dedup_count(note: &str, raw: &str) -> Option<usize> {
    let at = note.find("expects ")? + "expects ".len();
    let rest = &note[at..];
    let n: usize = rest.split(' ').next()?.parse().ok()?;
    rest[n.to_string().len()..]
        .starts_with(" duplicates")
        .then(|| raw.parse::<usize>().ok()?.checked_sub(n))
        .flatten()
}

/// The format a corpus folder holds.
fn format_of(dir: &str) -> Format {
    match dir {
        "anchore_grype" => Format::Grype,
        "bandit" => Format::Bandit,
        "checkov" => Format::Checkov,
        "gitleaks" => Format::Gitleaks,
        "sarif" => Format::Sarif,
        "semgrep" => Format::Semgrep,
        "trivy" => Format::Trivy,
        "trufflehog" => Format::Trufflehog,
        other => panic!("unexpected corpus folder {other}"),
    }
}

/// Decodes a sample as a user's report would be (format sniffed) and counts
/// its findings after fingerprinting. `Err` says what is wrong.
fn check(root: &std::path::Path, s: &Sample) -> Result<usize, String> {
    let bytes = std::fs::read(root.join(&s.dir).join(&s.file)).map_err(|e| e.to_string())?;
    let (format, report) = normalize::decode(&bytes, None, &DecodeContext::default())
        .map_err(|e| format!("does not decode: {e}"))?;
    // `null` (Gitleaks' and legacy Trivy's "nothing found") names no
    // format: it is an empty report of any.
    let literal_null = bytes.trim_ascii() == b"null";
    if format != format_of(&s.dir) && !(literal_null && report.findings.is_empty()) {
        return Err(format!("sniffed as {format}"));
    }
    // As `custody process` applies it: one scan per target the records
    // name, the report's own target or a stand-in for those naming none.
    let mut report = report;
    let default = report
        .target
        .clone()
        .unwrap_or_else(|| "repo:example.com/corpus/scans".parse::<Target>().unwrap());
    let parts = report
        .split(Some(default))
        .map_err(|e| format!("does not split: {e}"))?;
    let count = parts
        .into_iter()
        .map(|p| fingerprint::assign(p.findings, &p.target).len())
        .sum::<usize>();
    if s.range().contains(&count) {
        Ok(count)
    } else {
        Err(format!(
            "{count} findings, outside {}..={} (raw {}, DefectDojo {:?})",
            s.range().start(),
            s.range().end(),
            s.raw,
            s.defectdojo
        ))
    }
}

#[test]
fn every_corpus_report_is_sniffed_and_counted_within_the_manifest() {
    let Some(root) = custody::testing::shared_corpus(
        "scans",
        "every_corpus_report_is_sniffed_and_counted_within_the_manifest",
    ) else {
        return;
    };
    let samples = manifest(&root);
    assert_eq!(samples.len(), 101, "the manifest lists 101 samples");
    for (gap, _) in KNOWN_GAPS {
        assert!(
            samples.iter().any(|s| s.name() == *gap),
            "known gap {gap} is not in the manifest"
        );
    }
    let mut failures = Vec::new();
    let mut closed = Vec::new();
    for s in &samples {
        let name = s.name();
        let gap = KNOWN_GAPS.iter().find(|(g, _)| *g == name);
        match (check(&root, s), gap) {
            (Ok(_), None) | (Err(_), Some(_)) => {}
            (Err(why), None) => failures.push(format!("{name}: {why}")),
            (Ok(n), Some((_, reason))) => closed.push(format!(
                "{name} ({n} findings) is listed as a gap: {reason}"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} samples fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        closed.is_empty(),
        "known gaps that now pass (remove them from KNOWN_GAPS):\n{}",
        closed.join("\n")
    );
}
