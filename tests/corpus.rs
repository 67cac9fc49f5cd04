//! Every report of the shared corpus (DefectDojo's parser samples, listed in
//! its `MANIFEST.tsv`) decodes with its format sniffed, never named, and
//! gives a number of findings (after fingerprinting, which merges what is
//! one finding) between the manifest's raw count of records and the count
//! DefectDojo's parser asserts, both included: custody may merge records
//! that are one finding, as DefectDojo does, but must neither lose a
//! record nor invent one. All 101 samples must pass.

use custody::fingerprint;
use custody::model::Target;
use custody::normalize::{self, DecodeContext, Format};

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
    /// DefectDojo's, whichever is smaller, both included. A record that
    /// repeats another of the same report whole (`repeats` of them) is not
    /// a finding of its own, so the raw count less those is the least.
    fn range(&self, repeats: usize) -> std::ops::RangeInclusive<usize> {
        let dd = self.defectdojo.unwrap_or(self.raw);
        let least = self.raw.min(dd).min(self.raw - repeats.min(self.raw));
        least..=self.raw.max(dd)
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
    let repeats = repeated_records(&bytes);
    let range = s.range(repeats);
    if range.contains(&count) {
        Ok(count)
    } else {
        Err(format!(
            "{count} findings, outside {}..={} (raw {}, DefectDojo {:?}, {repeats} repeated records)",
            range.start(),
            range.end(),
            s.raw,
            s.defectdojo
        ))
    }
}

/// Records a report holds twice: in a Trivy cluster report (resources
/// under `Resources`, `Vulnerabilities` or `Misconfigurations`), the
/// records of a resource entry equal in every field to an earlier entry of
/// the same list. DefectDojo fabricated two samples so, listing one
/// workload twice; such a record names nothing the first did not, so
/// counting it once loses nothing. Found by comparing the JSON itself, not
/// through custody's decoder.
fn repeated_records(bytes: &[u8]) -> usize {
    let Ok(serde_json::Value::Object(top)) = serde_json::from_slice::<serde_json::Value>(bytes)
    else {
        return 0;
    };
    if !top.contains_key("ClusterName") {
        return 0;
    }
    let records = |entry: &serde_json::Value| -> usize {
        entry["Results"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                ["Vulnerabilities", "Misconfigurations", "Secrets"]
                    .iter()
                    .filter_map(|k| r[k].as_array())
                    .map(Vec::len)
                    .sum::<usize>()
            })
            .sum()
    };
    ["Resources", "Vulnerabilities", "Misconfigurations"]
        .iter()
        .filter_map(|k| top.get(*k).and_then(|v| v.as_array()))
        .map(|list| {
            list.iter()
                .enumerate()
                .filter(|(i, e)| list[..*i].contains(e))
                .map(|(_, e)| records(e))
                .sum::<usize>()
        })
        .sum()
}

#[test]
fn records_repeated_whole_are_found_in_the_json() {
    let Some(root) =
        custody::testing::shared_corpus("scans", "records_repeated_whole_are_found_in_the_json")
    else {
        return;
    };
    let read = |name: &str| std::fs::read(root.join("trivy").join(name)).unwrap();
    // default/Deployment/redis-follower twice, with two CVEs each time.
    assert_eq!(
        repeated_records(&read(
            "kubernetes_fabricated_internal_duplicates_subset.json"
        )),
        2
    );
    // Its full version repeats records across workloads, no entry whole.
    assert_eq!(
        repeated_records(&read("kubernetes_fabricated_internal_duplicates.json")),
        0
    );
    assert_eq!(repeated_records(&read("kubernetes.json")), 0);
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
    let failures: Vec<String> = samples
        .iter()
        .filter_map(|s| {
            check(&root, s)
                .err()
                .map(|why| format!("{}: {why}", s.name()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} samples fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
