//! Decoder for Grype JSON (`grype -o json`), descriptor versions 0.7 to
//! 0.9x: `{matches: [{vulnerability, relatedVulnerabilities, artifact}],
//! source: {type, target}, distro, descriptor}`.
//!
//! Every match is one dependency finding: container when the source is an
//! image, SCA otherwise. The canonical id is chosen among the match's id and
//! its related vulnerabilities' ids. Severity is Grype's word unless it is
//! missing or `Unknown`; then the CVSS base score of the vulnerability or of
//! a related record. Old reports (0.7) write `links`, `cvssV2`/`cvssV3` and
//! `fixedInVersion` instead of `urls`, `cvss` and `fix`; both are read.
//!
//! Maven artifacts are named `group:artifact` from their package URL, as
//! Trivy names them, so the two tools agree on the package.
//! One CVE in one package found at two paths is two findings here, and
//! two fingerprints (distinct installs stay distinct: see `fingerprint`).

use super::util::{canonical_vuln_id, clean_path, ecosystem, purl_type};
use super::util::{non_empty, non_empty_str, shorten};
use super::{DecodeContext, DecodeError, Decoder, Format, Markers, Report};
use crate::model::{Category, Finding, Location, Package, Severity, Target, TargetKind};
use serde::de::IgnoredAny;
use serde::Deserialize;

/// The grype decoder.
pub struct GrypeDecoder;

const SCANNER: &str = "grype";

/// Longest message kept from an advisory's description, in characters.
const MAX_MESSAGE: usize = 1000;

type Str<'a> = super::text::Text<'a>;

#[derive(Deserialize)]
struct Document<'a> {
    #[serde(borrow)]
    matches: Vec<Match<'a>>,
    #[serde(borrow, default)]
    source: Option<Source<'a>>,
}

#[derive(Deserialize)]
struct Source<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    target: Option<SourceTarget<'a>>,
}

/// An image source's target is an object; a directory's is a string, which
/// names no target custody can use.
#[derive(Deserialize)]
#[serde(untagged)]
enum SourceTarget<'a> {
    Image {
        #[serde(borrow, default, rename = "userInput")]
        user_input: Option<Str<'a>>,
    },
    Other(IgnoredAny),
}

#[derive(Deserialize)]
struct Match<'a> {
    #[serde(borrow)]
    vulnerability: Vulnerability<'a>,
    #[serde(borrow, default, rename = "relatedVulnerabilities")]
    related: Option<Vec<Related<'a>>>,
    #[serde(borrow)]
    artifact: Artifact<'a>,
}

#[derive(Deserialize)]
struct Vulnerability<'a> {
    #[serde(borrow, default)]
    id: Option<Str<'a>>,
    #[serde(borrow, default)]
    severity: Option<Str<'a>>,
    #[serde(borrow, default)]
    description: Option<Str<'a>>,
    #[serde(borrow, default, rename = "dataSource")]
    data_source: Option<Str<'a>>,
    #[serde(borrow, default)]
    urls: Option<Vec<Str<'a>>>,
    /// Grype 0.7: `links` instead of `urls`.
    #[serde(borrow, default)]
    links: Option<Vec<Str<'a>>>,
    #[serde(borrow, default)]
    cvss: Option<Vec<Cvss<'a>>>,
    /// Grype 0.7: one object per CVSS version.
    #[serde(default, rename = "cvssV3")]
    cvss_v3: Option<OldCvss>,
    #[serde(default, rename = "cvssV2")]
    cvss_v2: Option<OldCvss>,
    #[serde(borrow, default)]
    fix: Option<Fix<'a>>,
    /// Grype 0.7: `fixedInVersion` instead of `fix`.
    #[serde(borrow, default, rename = "fixedInVersion")]
    fixed_in_version: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Related<'a> {
    #[serde(borrow, default)]
    id: Option<Str<'a>>,
    #[serde(borrow, default)]
    severity: Option<Str<'a>>,
    #[serde(borrow, default)]
    description: Option<Str<'a>>,
    #[serde(borrow, default)]
    cvss: Option<Vec<Cvss<'a>>>,
}

#[derive(Deserialize)]
struct Cvss<'a> {
    #[serde(borrow, default)]
    version: Option<Str<'a>>,
    #[serde(default)]
    metrics: Option<Metrics>,
}

#[derive(Deserialize)]
struct Metrics {
    #[serde(default, rename = "baseScore")]
    base_score: Option<f64>,
}

#[derive(Deserialize)]
struct OldCvss {
    #[serde(default, rename = "baseScore")]
    base_score: Option<f64>,
}

#[derive(Deserialize)]
struct Fix<'a> {
    #[serde(borrow, default)]
    versions: Option<Vec<Str<'a>>>,
}

#[derive(Deserialize)]
struct Artifact<'a> {
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
    #[serde(borrow, default)]
    version: Option<Str<'a>>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    locations: Option<Vec<ArtifactLocation<'a>>>,
    #[serde(borrow, default)]
    purl: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct ArtifactLocation<'a> {
    #[serde(borrow, default)]
    path: Option<Str<'a>>,
}

impl Decoder for GrypeDecoder {
    fn format(&self) -> Format {
        Format::Grype
    }

    fn markers(&self) -> Markers {
        Markers {
            object_keys: &["matches", "descriptor"],
            ..Markers::default()
        }
    }

    fn decode(&self, bytes: &[u8], _ctx: &DecodeContext) -> Result<Report, DecodeError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let doc: Document<'_> =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::from_json(Format::Grype, e))?;
        let mut report = Report::default();
        let source_kind = doc
            .source
            .as_ref()
            .and_then(|s| non_empty(&s.kind))
            .unwrap_or("");
        let image = source_kind.eq_ignore_ascii_case("image");
        let category = if image {
            Category::Container
        } else {
            Category::Sca
        };
        if image {
            report.target = match doc.source.as_ref().and_then(|s| s.target.as_ref()) {
                Some(SourceTarget::Image {
                    user_input: Some(name),
                }) => Target::new(TargetKind::Image, name).ok(),
                _ => None,
            };
        }
        report.coverage.insert((SCANNER.into(), category));
        report.findings.reserve(doc.matches.len());
        for (i, m) in doc.matches.iter().enumerate() {
            match finding(m, category) {
                Some(f) => {
                    if !report.rule_help.contains(&f.rule_id) {
                        let v = &m.vulnerability;
                        let related = m.related.as_deref().unwrap_or(&[]);
                        if let Some(d) = non_empty(&v.description)
                            .or_else(|| related.iter().find_map(|r| non_empty(&r.description)))
                        {
                            report.rule_help.insert(&f.rule_id, d);
                        }
                    }
                    report.findings.push(f)
                }
                None => report.skipped.push(format!(
                    "matches[{i}]: no vulnerability id (package {})",
                    m.artifact.name.as_deref().unwrap_or("?")
                )),
            }
        }
        Ok(report)
    }
}

fn finding(m: &Match<'_>, category: Category) -> Option<Finding> {
    let v = &m.vulnerability;
    let related = m.related.as_deref().unwrap_or(&[]);
    let ids =
        v.id.iter()
            .chain(related.iter().filter_map(|r| r.id.as_ref()))
            .map(|s| s.as_ref());
    let (rule_id, aliases) = canonical_vuln_id(ids)?;
    let (severity, source) = severity(v, related);
    let a = &m.artifact;
    let name = package_name(a);
    let version = non_empty(&a.version);
    let description = non_empty(&v.description)
        .or_else(|| related.iter().find_map(|r| non_empty(&r.description)));
    let message = match (description, &name) {
        (Some(d), _) => shorten(d, MAX_MESSAGE),
        (None, Some(n)) => match version {
            Some(ver) => format!("{rule_id} in {n} {ver}"),
            None => format!("{rule_id} in {n}"),
        },
        (None, None) => rule_id.clone(),
    };

    let mut f = Finding::new(SCANNER, category, rule_id, severity, message);
    f.aliases = aliases;
    f.severity_source = Some(source.into());
    f.help_uri = non_empty(&v.data_source)
        .or_else(|| {
            v.urls
                .iter()
                .chain(v.links.iter())
                .flatten()
                .find_map(|u| non_empty_str(u))
        })
        .map(Into::into);
    if let Some(name) = name {
        let eco = match (non_empty(&a.purl).and_then(purl_type), non_empty(&a.kind)) {
            (Some(t), _) | (None, Some(t)) => ecosystem(t),
            (None, None) => "unknown".to_string(),
        };
        let fixed = v
            .fix
            .as_ref()
            .and_then(|fx| fx.versions.as_ref()?.iter().find_map(|s| non_empty_str(s)))
            .or_else(|| non_empty(&v.fixed_in_version));
        f.package = Some(Package {
            ecosystem: eco,
            name,
            version: version.map(str::to_string),
            fixed_version: fixed.map(str::to_string),
        });
    }
    let path = a
        .locations
        .iter()
        .flatten()
        .find_map(|l| non_empty(&l.path));
    if let Some(p) = path {
        f.location = Some(Location {
            path: clean_path(p, None),
            ..Location::default()
        });
    }
    Some(f)
}

/// The package name; Maven artifacts as `group:artifact` from the purl.
fn package_name(a: &Artifact<'_>) -> Option<String> {
    let name = non_empty(&a.name)?;
    if let Some(purl) = non_empty(&a.purl) {
        if purl_type(purl).is_some_and(|t| t.eq_ignore_ascii_case("maven")) {
            if let Some(ga) = maven_coordinates(purl) {
                return Some(ga);
            }
        }
    }
    Some(name.to_string())
}

/// `pkg:maven/org.apache.commons/commons-compress@1.21?x=y` ->
/// `org.apache.commons:commons-compress`.
fn maven_coordinates(purl: &str) -> Option<String> {
    let rest = purl.strip_prefix("pkg:")?;
    let rest = rest.split(['?', '#']).next()?;
    let rest = rest.split('@').next()?;
    let mut parts = rest.split('/').skip(1);
    let group = parts.next().filter(|s| !s.is_empty())?;
    let artifact = parts.next().filter(|s| !s.is_empty())?;
    if parts.next().is_some() {
        return None;
    }
    Some(format!(
        "{}:{}",
        group.replace("%2F", "/").replace("%40", "@"),
        artifact.replace("%2F", "/").replace("%40", "@")
    ))
}

fn severity(v: &Vulnerability<'_>, related: &[Related<'_>]) -> (Severity, String) {
    let known = |l: &str| !l.eq_ignore_ascii_case("unknown");
    let label = non_empty(&v.severity);
    if let Some(l) = label.filter(|l| known(l)) {
        if let Some(s) = Severity::from_label(l) {
            return (s, format!("grype:{l}"));
        }
    }
    let own = cvss_score(v.cvss.as_deref().unwrap_or(&[])).or_else(|| {
        [&v.cvss_v3, &v.cvss_v2]
            .into_iter()
            .flatten()
            .find_map(|c| c.base_score.filter(|s| s.is_finite()))
    });
    if let Some(score) = own {
        return (Severity::from_cvss(score), format!("cvss:{score}"));
    }
    for r in related {
        if let Some(l) = non_empty(&r.severity).filter(|l| known(l)) {
            if let Some(s) = Severity::from_label(l) {
                return (s, format!("grype:{l}"));
            }
        }
        if let Some(score) = cvss_score(r.cvss.as_deref().unwrap_or(&[])) {
            return (Severity::from_cvss(score), format!("cvss:{score}"));
        }
    }
    match label {
        Some(l) => (
            Severity::from_label(l).unwrap_or(Severity::Info),
            format!("grype:{l}"),
        ),
        None => (Severity::Info, "grype:none".to_string()),
    }
}

/// The base score of the newest CVSS version listed.
fn cvss_score(list: &[Cvss<'_>]) -> Option<f64> {
    list.iter()
        .filter_map(|c| {
            let score = c.metrics.as_ref()?.base_score.filter(|s| s.is_finite())?;
            let major = c
                .version
                .as_deref()
                .and_then(|v| v.trim().split('.').next()?.parse::<u32>().ok())
                .unwrap_or(0);
            Some((major, score))
        })
        .max_by_key(|&(major, _)| major)
        .map(|(_, score)| score)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report of the shared corpus; `None` (the test skips) without it.
    fn corpus(name: &str) -> Option<Vec<u8>> {
        crate::testing::shared_bytes(&format!("scans/anchore_grype/{name}"), name)
    }

    fn decode(bytes: &[u8]) -> Result<Report, DecodeError> {
        crate::testing::decode_with(&GrypeDecoder, bytes)
    }

    fn decode_corpus(name: &str) -> Option<Report> {
        Some(decode(&corpus(name)?).unwrap_or_else(|e| panic!("{name}: {e}")))
    }

    /// Every Grype file of `MANIFEST.tsv` with its raw count (len(matches)).
    const TABLE: &[(&str, usize)] = &[
        ("anchore_grype_epss_problem.json", 1),
        ("check_all_fields.json", 6),
        ("check_all_fields_different_ids_fabricated.json", 1),
        ("check_all_fields_no_ids_fabricated.json", 1),
        ("check_all_fields_with_ids_fabricated.json", 1),
        ("fix_available.json", 1),
        ("fix_not_available.json", 1),
        ("issue_9618.json", 35),
        ("issue_9942.json", 1),
        ("many_vulns.json", 1509),
        ("many_vulns2.json", 1567),
        ("many_vulns3.json", 327),
        ("many_vulns4.json", 9),
        ("many_vulns_with_epss_values.json", 15),
        ("no_vuln.json", 0),
        ("same_cve_different_paths.json", 2),
    ];

    #[test]
    fn corpus_counts() {
        for &(name, raw) in TABLE {
            let Some(r) = decode_corpus(name) else {
                return;
            };
            assert!(r.skipped.is_empty(), "{name}: {:?}", r.skipped);
            assert_eq!(r.findings.len(), raw, "{name}");
            assert_eq!(r.coverage.len(), 1, "{name}");
            for f in &r.findings {
                assert_eq!(f.scanner, "grype");
                assert!(r.coverage.contains(&("grype".into(), f.category)));
                let p = f.package.as_ref().expect("package");
                assert!(
                    !p.name.is_empty() && !p.ecosystem.is_empty(),
                    "{name}: {p:?}"
                );
                assert!(f.message.chars().count() <= MAX_MESSAGE, "{name}");
            }
        }
    }

    #[test]
    fn image_match_fields() {
        let Some(r) = decode_corpus("check_all_fields.json") else {
            return;
        };
        assert_eq!(
            r.target.as_ref().map(|t| t.to_string()).as_deref(),
            Some("image:vulnerable-image")
        );
        assert!(r.coverage.contains(&("grype".into(), Category::Container)));
        let f = &r.findings[0];
        assert_eq!(f.category, Category::Container);
        assert_eq!(f.rule_id, "CVE-2004-0971");
        assert!(f.aliases.is_empty(), "the related id is the same CVE");
        assert_eq!(f.severity, Severity::Info);
        assert_eq!(f.severity_source.as_deref(), Some("grype:Negligible"));
        assert_eq!(f.path(), Some("/var/lib/dpkg/status"));
        assert_eq!(
            f.help_uri.as_deref(),
            Some("https://security-tracker.debian.org/tracker/CVE-2004-0971")
        );
        assert_eq!(
            f.package,
            Some(Package {
                ecosystem: "deb".into(),
                name: "libgssapi-krb5-2".into(),
                version: Some("1.17-3+deb10u3".into()),
                fixed_version: None,
            })
        );
        // No description of its own: the related NVD record's.
        assert!(
            f.message.starts_with("The krb5-send-pr script"),
            "{}",
            f.message
        );
    }

    #[test]
    fn directory_source_is_sca_without_target() {
        let Some(r) = decode_corpus("many_vulns4.json") else {
            return;
        };
        assert!(r.target.is_none());
        assert_eq!(
            r.coverage.iter().collect::<Vec<_>>(),
            vec![&("grype".to_string(), Category::Sca)]
        );
        let f = &r.findings[0];
        assert_eq!(f.category, Category::Sca);
        assert_eq!(f.package.as_ref().unwrap().ecosystem, "npm");
        assert_eq!(f.path(), Some("components/yarn.lock"));
    }

    #[test]
    fn old_and_new_layouts() {
        // Grype 0.7: links, cvssV2, fixedInVersion.
        let Some(r) = decode_corpus("many_vulns3.json") else {
            return;
        };
        let f = r
            .findings
            .iter()
            .find(|f| f.rule_id == "CVE-2015-5237")
            .unwrap();
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.package.as_ref().unwrap().ecosystem, "pypi");
        assert!(f
            .help_uri
            .as_deref()
            .unwrap()
            .starts_with("http://www.openwall.com/"));
        assert!(r
            .findings
            .iter()
            .any(|f| f.package.as_ref().unwrap().fixed_version.is_some()));

        // Grype 0.96: no severity of its own; GHSA id related; Maven name.
        let Some(r) = decode_corpus("issue_9618.json") else {
            return;
        };
        let f = r
            .findings
            .iter()
            .find(|f| f.rule_id == "CVE-2024-26308")
            .unwrap();
        assert_eq!(f.aliases, vec!["GHSA-4265-ccf5-phj5"]);
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.severity_source.as_deref(), Some("grype:High"));
        let p = f.package.as_ref().unwrap();
        assert_eq!(p.ecosystem, "maven");
        assert_eq!(p.name, "org.apache.commons:commons-compress");
        assert_eq!(p.fixed_version.as_deref(), Some("1.26.0"));
        assert_eq!(
            f.path(),
            Some("/opt/kafka/plugins/apicurio/commons-compress-1.21.jar")
        );
    }

    #[test]
    fn fix_states() {
        let Some(fixed) = decode_corpus("fix_available.json") else {
            return;
        };
        let Some(not) = decode_corpus("fix_not_available.json") else {
            return;
        };
        let fv = |r: &Report| {
            r.findings[0]
                .package
                .as_ref()
                .unwrap()
                .fixed_version
                .clone()
        };
        assert!(fv(&fixed).is_some());
        assert!(fv(&not).is_none());
    }

    #[test]
    fn same_cve_at_two_paths_is_two_findings() {
        let Some(r) = decode_corpus("same_cve_different_paths.json") else {
            return;
        };
        assert_eq!(r.findings.len(), 2);
        assert_eq!(r.findings[0].rule_id, r.findings[1].rule_id);
        assert_ne!(r.findings[0].path(), r.findings[1].path());
        // Two installs: two findings (see `fingerprint`, distinct installs).
        let t = r.target.clone().unwrap();
        let named = crate::fingerprint::assign(r.findings, &t);
        assert_eq!(named.len(), 2);
        assert_ne!(named[0].0, named[1].0);
    }

    #[test]
    fn severity_fallbacks() {
        let doc = r#"{"matches":[
          {"vulnerability":{"id":"CVE-2020-1","severity":"Unknown","cvss":[
             {"version":"2.0","metrics":{"baseScore":9.3}},{"version":"3.1","metrics":{"baseScore":5.5}}]},
           "artifact":{"name":"a","type":"npm"}},
          {"vulnerability":{"id":"CVE-2020-2","severity":"Unknown"},
           "relatedVulnerabilities":[{"id":"CVE-2020-2","cvss":[{"version":"3.1","metrics":{"baseScore":7.0}}]}],
           "artifact":{"name":"a","type":"npm"}},
          {"vulnerability":{"id":"CVE-2020-3","severity":"Whatever"},"artifact":{"name":"a"}},
          {"vulnerability":{},"artifact":{"name":"nameless"}}]}"#;
        let r = decode(doc.as_bytes()).unwrap();
        let got: Vec<(Severity, &str)> = r
            .findings
            .iter()
            .map(|f| (f.severity, f.severity_source.as_deref().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                (Severity::Medium, "cvss:5.5"),
                (Severity::High, "cvss:7"),
                (Severity::Info, "grype:Whatever"),
            ]
        );
        assert_eq!(r.findings[2].package.as_ref().unwrap().ecosystem, "unknown");
        assert_eq!(r.skipped.len(), 1);
        assert!(r.skipped[0].contains("nameless"));
        assert_eq!(r.coverage.len(), 1, "no source: SCA");
    }

    /// A report of this repository's own fixtures (`tests/fixtures/grype`,
    /// hand-written after Grype's JSON model; see its README): always
    /// present, so the tests below run on any clone.
    fn fixture(name: &str) -> Vec<u8> {
        crate::testing::fixture(&format!("grype/{name}"))
    }

    fn decode_fixture(name: &str) -> Report {
        decode(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn rules_help_is_the_advisorys_description_else_the_related_ones() {
        let r = decode_fixture("grype-image-web-api-1.4.json");
        let help = |id: &str| r.rule_help.get(id).map(|h| h.to_string());
        assert!(help("CVE-2011-3374").unwrap().starts_with("apt-key in apt"));
        // Under the id custody names the vulnerability by (its CVE).
        let f = r
            .findings
            .iter()
            .find(|f| f.aliases.iter().any(|a| a == "GHSA-3ww4-gg4f-jr7f"))
            .unwrap();
        assert!(help(&f.rule_id).is_some(), "{}", f.rule_id);
    }

    /// (fixture, findings, target, coverage).
    const FIXTURES: &[(&str, usize, Option<&str>, Category)] = &[
        (
            "grype-image-web-api-1.4.json",
            13,
            Some("image:ghcr.io/acme/web-api"),
            Category::Container,
        ),
        ("grype-dir-storefront.json", 9, None, Category::Sca),
        (
            "grype-image-static-site-clean.json",
            0,
            Some("image:ghcr.io/acme/static-site"),
            Category::Container,
        ),
    ];

    #[test]
    fn fixture_counts() {
        for &(name, found, target, category) in FIXTURES {
            let bytes = fixture(name);
            assert_eq!(
                super::super::sniff(&bytes).unwrap(),
                Format::Grype,
                "{name}"
            );
            let r = decode_fixture(name);
            assert!(r.skipped.is_empty(), "{name}: {:?}", r.skipped);
            assert_eq!(r.findings.len(), found, "{name}");
            assert_eq!(
                r.target.as_ref().map(|t| t.to_string()).as_deref(),
                target,
                "{name}"
            );
            assert_eq!(
                r.coverage.iter().collect::<Vec<_>>(),
                vec![&("grype".to_string(), category)],
                "{name}"
            );
            for f in &r.findings {
                assert_eq!(f.scanner, "grype");
                assert_eq!(f.category, category);
                let p = f.package.as_ref().expect("package");
                assert!(
                    !p.name.is_empty() && !p.ecosystem.is_empty() && p.version.is_some(),
                    "{name}: {p:?}"
                );
                assert!(
                    f.path().is_some_and(|p| p.starts_with('/')),
                    "{name}: {f:?}"
                );
                assert!(f.message.chars().count() <= MAX_MESSAGE, "{name}");
            }
        }
    }

    #[test]
    fn fixture_image_match_fields() {
        let r = decode_fixture("grype-image-web-api-1.4.json");
        let f = &r.findings[0];
        assert_eq!(f.category, Category::Container);
        assert_eq!(f.rule_id, "CVE-2011-3374");
        assert!(f.aliases.is_empty(), "the related id is the same CVE");
        assert_eq!(f.severity, Severity::Info);
        assert_eq!(f.severity_source.as_deref(), Some("grype:Negligible"));
        assert_eq!(f.path(), Some("/var/lib/dpkg/status"));
        assert_eq!(
            f.help_uri.as_deref(),
            Some("https://security-tracker.debian.org/tracker/CVE-2011-3374")
        );
        assert_eq!(
            f.package,
            Some(Package {
                ecosystem: "deb".into(),
                name: "apt".into(),
                version: Some("2.6.1".into()),
                fixed_version: None,
            })
        );
        // No description of its own (Debian record): the related NVD one's.
        assert!(
            f.message.starts_with("apt-key in apt does not"),
            "{}",
            f.message
        );

        // GHSA matches with a related CVE: the CVE is canonical, the GHSA an
        // alias; a GHSA without CVE stays as it is.
        let ids: Vec<(&str, Vec<&str>)> = r
            .findings
            .iter()
            .map(|f| {
                (
                    f.rule_id.as_str(),
                    f.aliases.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(ids[2], ("CVE-2023-50782", vec!["GHSA-3ww4-gg4f-jr7f"]));
        assert_eq!(ids[3], ("GHSA-v8gr-m533-ghj9", vec![]));
        assert_eq!(ids[9], ("CVE-2024-35195", vec!["GHSA-9wx4-h78v-vm56"]));
        assert_eq!(ids[10], ("CVE-2024-37891", vec!["GHSA-34jh-p97f-mpxf"]));
        let c = &r.findings[2];
        assert_eq!(
            c.help_uri.as_deref(),
            Some("https://github.com/advisories/GHSA-3ww4-gg4f-jr7f")
        );
        assert_eq!(
            c.package,
            Some(Package {
                ecosystem: "pypi".into(),
                name: "cryptography".into(),
                version: Some("41.0.3".into()),
                fixed_version: Some("42.0.0".into()),
            })
        );
        assert_eq!(
            c.path(),
            Some("/opt/venv/lib/python3.11/site-packages/cryptography-41.0.3.dist-info/METADATA")
        );
        // One CVE in two packages, matched through their source package.
        for (i, name) in [(5, "libssl3"), (7, "openssl")] {
            assert_eq!(r.findings[i].rule_id, "CVE-2024-0727");
            assert_eq!(r.findings[i].package.as_ref().unwrap().name, name);
        }
        // A binary matched by CPE: the purl's type is the ecosystem.
        let py = &r.findings[8];
        assert_eq!(py.rule_id, "CVE-2024-4032");
        let p = py.package.as_ref().unwrap();
        assert_eq!(
            (p.ecosystem.as_str(), p.name.as_str()),
            ("generic", "python")
        );
        assert_eq!(py.path(), Some("/usr/local/bin/python3.11"));
    }

    #[test]
    fn fixture_fix_states() {
        let r = decode_fixture("grype-image-web-api-1.4.json");
        let fixed: Vec<(&str, Option<&str>)> = r
            .findings
            .iter()
            .map(|f| {
                let p = f.package.as_ref().unwrap();
                (p.name.as_str(), p.fixed_version.as_deref())
            })
            .collect();
        assert_eq!(
            fixed,
            [
                ("apt", None),                          // not-fixed
                ("bsdutils", Some("2.38.1-5+deb12u1")), // fixed
                ("cryptography", Some("42.0.0")),       // fixed
                ("cryptography", Some("41.0.4")),       // fixed
                ("libc6", Some("2.36-9+deb12u6")),      // fixed
                ("libssl3", Some("3.0.13-1~deb12u1")),  // fixed
                ("libtinfo6", None),                    // not-fixed
                ("openssl", Some("3.0.13-1~deb12u1")),  // fixed
                ("python", None),                       // unknown
                ("requests", Some("2.32.0")),           // fixed
                ("urllib3", Some("2.2.2")),             // fixed
                ("urllib3", Some("2.2.2")),             // fixed
                ("zlib1g", None),                       // wont-fix
            ]
        );
        let r = decode_fixture("grype-dir-storefront.json");
        let ip = r
            .findings
            .iter()
            .find(|f| f.package.as_ref().unwrap().name == "ip")
            .unwrap();
        assert_eq!(
            ip.package.as_ref().unwrap().fixed_version,
            None,
            "not-fixed"
        );
    }

    #[test]
    fn fixture_severity_fallbacks() {
        let r = decode_fixture("grype-image-web-api-1.4.json");
        let got: Vec<(Severity, &str)> = r
            .findings
            .iter()
            .map(|f| (f.severity, f.severity_source.as_deref().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                (Severity::Info, "grype:Negligible"),
                // `Unknown`, no CVSS of its own: the related NVD record's word.
                (Severity::Low, "grype:Low"),
                (Severity::High, "grype:High"),
                (Severity::Low, "grype:Low"),
                (Severity::High, "grype:High"),
                (Severity::Low, "grype:Low"),
                (Severity::Info, "grype:Negligible"),
                (Severity::Low, "grype:Low"),
                // `Unknown`, no CVSS and no related record: stays unknown.
                (Severity::Info, "grype:Unknown"),
                (Severity::Medium, "grype:Medium"),
                (Severity::Medium, "grype:Medium"),
                (Severity::Medium, "grype:Medium"),
                (Severity::Critical, "grype:Critical"),
            ]
        );
    }

    #[test]
    fn fixture_directory_source_is_sca_without_target() {
        let r = decode_fixture("grype-dir-storefront.json");
        assert!(r.target.is_none());
        let f = &r.findings[0];
        assert_eq!(f.category, Category::Sca);
        assert_eq!(f.rule_id, "CVE-2023-45857");
        assert_eq!(f.aliases, vec!["GHSA-wf5p-g6vw-rhxx"]);
        assert_eq!(
            (f.severity, f.severity_source.as_deref()),
            (Severity::Medium, Some("grype:Medium"))
        );
        assert_eq!(f.path(), Some("/package-lock.json"));
        assert_eq!(
            f.package,
            Some(Package {
                ecosystem: "npm".into(),
                name: "axios".into(),
                version: Some("1.5.1".into()),
                fixed_version: Some("1.6.0".into()),
            })
        );
        // Every match is a GHSA with its CVE related.
        for f in &r.findings {
            assert!(f.rule_id.starts_with("CVE-"), "{}", f.rule_id);
            assert_eq!(f.aliases.len(), 1);
            assert!(f.aliases[0].starts_with("GHSA-"));
            assert_eq!(f.package.as_ref().unwrap().ecosystem, "npm");
        }
    }

    /// Distinct installs stay distinct: `urllib3` in two `site-packages`
    /// of one image, `lodash` in two lockfiles of one checkout.
    #[test]
    fn fixture_same_cve_at_two_paths_is_two_fingerprints() {
        let r = decode_fixture("grype-image-web-api-1.4.json");
        let (a, b) = (&r.findings[10], &r.findings[11]);
        assert_eq!(a.rule_id, "CVE-2024-37891");
        assert_eq!(a.rule_id, b.rule_id);
        assert_eq!(a.package, b.package);
        assert_eq!(
            a.path(),
            Some("/opt/venv/lib/python3.11/site-packages/urllib3-2.0.7.dist-info/METADATA")
        );
        assert_eq!(
            b.path(),
            Some("/usr/local/lib/python3.11/site-packages/urllib3-2.0.7.dist-info/METADATA")
        );
        let t = r.target.clone().unwrap();
        let plain = crate::fingerprint::dependency_fingerprint(a, &t);
        assert_eq!(plain, crate::fingerprint::dependency_fingerprint(b, &t));
        let named = crate::fingerprint::assign(r.findings, &t);
        assert_eq!(named.len(), 13);
        let urllib3: Vec<&(String, Finding)> = named
            .iter()
            .filter(|(_, f)| f.rule_id == "CVE-2024-37891")
            .collect();
        assert_eq!(urllib3.len(), 2);
        assert_ne!(urllib3[0].0, urllib3[1].0);
        // Neither has the plain fingerprint a single install would have.
        assert!(urllib3.iter().all(|(fp, _)| Some(fp) != plain.as_ref()));
        // The other packages, each at one location, keep theirs.
        let python = named
            .iter()
            .find(|(_, f)| f.rule_id == "CVE-2024-4032")
            .unwrap();
        assert_eq!(
            Some(&python.0),
            crate::fingerprint::dependency_fingerprint(&python.1, &t).as_ref()
        );

        // lodash in two lockfiles of a directory scan: 9 findings, 9 names.
        let r = decode_fixture("grype-dir-storefront.json");
        let (a, b) = (&r.findings[5], &r.findings[6]);
        assert_eq!(
            (a.rule_id.as_str(), b.rule_id.as_str()),
            ("CVE-2021-23337", "CVE-2021-23337")
        );
        assert_eq!(a.path(), Some("/package-lock.json"));
        assert_eq!(b.path(), Some("/packages/admin/package-lock.json"));
        let t: Target = "repo:github.com/acme/storefront".parse().unwrap();
        assert_eq!(crate::fingerprint::assign(r.findings, &t).len(), 9);
    }

    #[test]
    fn fixture_truncated_input_is_an_error() {
        for &(name, ..) in FIXTURES {
            let bytes = fixture(name);
            crate::testing::assert_truncations_are_syntax_errors(name, &bytes, decode);
        }
    }

    #[test]
    fn maven_names() {
        assert_eq!(
            maven_coordinates("pkg:maven/org.apache.avro/avro@1.9.2?type=jar").as_deref(),
            Some("org.apache.avro:avro")
        );
        assert_eq!(maven_coordinates("pkg:maven/avro@1.9.2"), None);
        assert_eq!(maven_coordinates("pkg:maven"), None);
    }

    #[test]
    fn wrong_shapes_are_named() {
        for (doc, needle) in [
            (r#"{"matches": 5}"#, "expected a sequence"),
            (r#"{"source": {}}"#, "missing field `matches`"),
            (
                r#"{"matches": [{"artifact": {}}]}"#,
                "missing field `vulnerability`",
            ),
            ("null", "invalid type: null"),
            ("[]", "expected struct Document"),
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
        for name in ["check_all_fields.json", "many_vulns4.json", "no_vuln.json"] {
            let Some(bytes) = corpus(name) else {
                return;
            };
            crate::testing::assert_truncations_are_syntax_errors(name, &bytes, decode);
        }
    }
}
