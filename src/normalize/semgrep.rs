//! Decoder for Semgrep JSON (`semgrep --json`): `{results: [{check_id,
//! path, start, end, extra: {message, severity, metadata, fingerprint,
//! lines, is_ignored, sca_info}}], errors, paths, version}`.
//!
//! Code results are SAST findings. Results with `extra.sca_info` (Semgrep
//! Supply Chain) are SCA dependency findings: the vulnerability id comes
//! from the rule metadata (`sca-vuln-database-identifier`, `cve`, `ghsa`),
//! the package from `sca_info.dependency_match.found_dependency`.
//! Results ignored in source (`nosemgrep`, `is_ignored`) are skipped.
//!
//! Severity: `ERROR` high, `WARNING` medium, `INFO` low (Semgrep's lowest
//! real level), and the words `CRITICAL`/`HIGH`/`MEDIUM`/`LOW` of newer
//! rules. The tool fingerprint and the source line are used unless they are
//! Semgrep's logged-out placeholder "requires login". Rules that look for
//! secrets keep no snippet and a salted line hash, since their line holds
//! the secret.
//!
//! The Semgrep App API's supply-chain listing (`{vulns: [...], hasMore,
//! cursor}`) is read too: each entry is an SCA finding; entries triaged as
//! ignored, closed or fixed are skipped. A page with `hasMore: true` is
//! part of a listing, so it claims no coverage. The listing spans an
//! organization's repositories: each entry's `repositoryName` is its
//! target (`repo:<host>/<repositoryName>` when the entry's
//! `dependencyFileLocation.url` links into that repository on a host,
//! `repo:<repositoryName>` otherwise), and the report is split into one
//! scan per repository (see [`Report::split`]); a repository whose every
//! entry is closed is scanned too, with nothing open.
//!
//! Coverage: `("semgrep", sast)` for every CLI report, plus SCA when a
//! supply-chain result is present; none when Semgrep reports an error of
//! level `error` (the run failed, e.g. invalid rules), since an empty result
//! list then proves nothing.

use super::util::{canonical_vuln_id, clean_path, ecosystem, set_line_content};
use super::util::{cwe_ids as cwes, non_empty, non_empty_str, shorten};
use super::{DecodeContext, DecodeError, Decoder, Format, Markers, Report};
use crate::fingerprint;
use crate::model::{Category, Finding, Location, Package, Severity};
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The semgrep decoder.
pub struct SemgrepDecoder;

const SCANNER: &str = "semgrep";

/// Longest message kept from an advisory's description, in characters.
const MAX_MESSAGE: usize = 1000;

/// What Semgrep writes instead of fingerprints and lines when logged out.
const REQUIRES_LOGIN: &str = "requires login";

type Str<'a> = super::text::Text<'a>;

#[derive(Deserialize)]
struct Document<'a> {
    #[serde(borrow, default)]
    results: Option<Vec<SgResult<'a>>>,
    #[serde(borrow, default)]
    errors: Option<Vec<SgError<'a>>>,
    /// Semgrep App API supply-chain listing.
    #[serde(borrow, default)]
    vulns: Option<Vec<AppVuln<'a>>>,
    #[serde(default, rename = "hasMore")]
    has_more: Option<bool>,
}

#[derive(Deserialize)]
struct SgError<'a> {
    #[serde(borrow, default)]
    level: Option<Loose<'a>>,
}

#[derive(Deserialize)]
struct SgResult<'a> {
    #[serde(borrow, default)]
    check_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    path: Option<Str<'a>>,
    #[serde(default)]
    start: Option<Position>,
    #[serde(default)]
    end: Option<Position>,
    #[serde(borrow, default)]
    extra: Option<Extra<'a>>,
}

#[derive(Deserialize)]
struct Position {
    #[serde(default)]
    line: Option<i64>,
    #[serde(default)]
    col: Option<i64>,
}

#[derive(Deserialize)]
struct Extra<'a> {
    #[serde(borrow, default)]
    message: Option<Str<'a>>,
    #[serde(borrow, default)]
    severity: Option<Str<'a>>,
    #[serde(borrow, default)]
    metadata: Option<Metadata<'a>>,
    #[serde(borrow, default)]
    fingerprint: Option<Str<'a>>,
    #[serde(borrow, default)]
    lines: Option<Str<'a>>,
    #[serde(default)]
    is_ignored: Option<bool>,
    #[serde(borrow, default)]
    sca_info: Option<ScaInfo<'a>>,
}

/// Rule metadata is free-form (rule authors write what they like), so every
/// field read is loose: a string, a list, or ignored.
#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(borrow, default)]
    cwe: Option<Loose<'a>>,
    #[serde(borrow, default)]
    references: Option<Loose<'a>>,
    #[serde(borrow, default)]
    source: Option<Loose<'a>>,
    #[serde(borrow, default)]
    shortlink: Option<Loose<'a>>,
    #[serde(borrow, default, rename = "source-rule-url")]
    source_rule_url: Option<Loose<'a>>,
    #[serde(borrow, default)]
    category: Option<Loose<'a>>,
    #[serde(borrow, default)]
    subcategory: Option<Loose<'a>>,
    #[serde(borrow, default)]
    technology: Option<Loose<'a>>,
    #[serde(borrow, default, rename = "sca-vuln-database-identifier")]
    vuln_id: Option<Loose<'a>>,
    #[serde(borrow, default)]
    cve: Option<Loose<'a>>,
    #[serde(borrow, default)]
    ghsa: Option<Loose<'a>>,
    #[serde(borrow, default, rename = "sca-severity")]
    sca_severity: Option<Loose<'a>>,
    #[serde(borrow, default, rename = "sca-fix-versions")]
    fix_versions: Option<FixVersions<'a>>,
}

/// A string, a list of strings, or anything else (ignored).
#[derive(Deserialize)]
#[serde(untagged)]
enum Loose<'a> {
    One(#[serde(borrow)] Str<'a>),
    Many(#[serde(borrow)] Vec<Item<'a>>),
    Other(IgnoredAny),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Item<'a> {
    Str(#[serde(borrow)] Str<'a>),
    Other(IgnoredAny),
}

impl<'a> Loose<'a> {
    fn strings(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            Loose::One(s) => Box::new(std::iter::once(s.as_ref())),
            Loose::Many(v) => Box::new(v.iter().filter_map(|i| match i {
                Item::Str(s) => Some(s.as_ref()),
                Item::Other(_) => None,
            })),
            Loose::Other(_) => Box::new(std::iter::empty()),
        }
    }

    fn first(&self) -> Option<&str> {
        self.strings().find_map(non_empty_str)
    }
}

fn loose_strings<'s>(l: &'s Option<Loose<'_>>) -> impl Iterator<Item = &'s str> {
    l.iter().flat_map(|l| l.strings())
}

/// `[{"package": "fixed version"}, ...]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum FixVersions<'a> {
    List(#[serde(borrow)] Vec<BTreeMap<Str<'a>, Item<'a>>>),
    Other(IgnoredAny),
}

#[derive(Deserialize)]
struct ScaInfo<'a> {
    #[serde(borrow, default)]
    dependency_match: Option<DependencyMatch<'a>>,
}

#[derive(Deserialize)]
struct DependencyMatch<'a> {
    #[serde(borrow, default)]
    dependency_pattern: Option<Dependency<'a>>,
    #[serde(borrow, default)]
    found_dependency: Option<Dependency<'a>>,
    #[serde(borrow, default)]
    lockfile: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Dependency<'a> {
    #[serde(borrow, default)]
    package: Option<Str<'a>>,
    #[serde(borrow, default)]
    version: Option<Str<'a>>,
    #[serde(borrow, default)]
    ecosystem: Option<Str<'a>>,
    #[serde(borrow, default)]
    lockfile_path: Option<Str<'a>>,
}

/// One entry of the Semgrep App API supply-chain listing.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppVuln<'a> {
    #[serde(borrow, default)]
    title: Option<Str<'a>>,
    #[serde(borrow, default)]
    advisory: Option<Advisory<'a>>,
    #[serde(borrow, default)]
    matched_dependency: Option<AppDependency<'a>>,
    #[serde(borrow, default)]
    closest_safe_dependency: Option<AppDependency<'a>>,
    #[serde(borrow, default)]
    dependency_file_location: Option<AppFileLocation<'a>>,
    #[serde(borrow, default)]
    triage: Option<Triage<'a>>,
    /// The repository as Semgrep App names it (`org/name`).
    #[serde(borrow, default)]
    repository_name: Option<Str<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Advisory<'a> {
    #[serde(borrow, default)]
    rule_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    title: Option<Str<'a>>,
    #[serde(borrow, default)]
    description: Option<Str<'a>>,
    #[serde(borrow, default)]
    ecosystem: Option<Str<'a>>,
    #[serde(borrow, default)]
    severity: Option<Str<'a>>,
    #[serde(borrow, default)]
    references: Option<AdvisoryReferences<'a>>,
    /// The rule as a JSON string; it tells each package's ecosystem.
    #[serde(borrow, default)]
    rule_text: Option<Str<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdvisoryReferences<'a> {
    #[serde(borrow, default)]
    cve_ids: Option<Vec<Str<'a>>>,
    #[serde(borrow, default)]
    ghsa_ids: Option<Vec<Str<'a>>>,
    #[serde(borrow, default)]
    cwe_ids: Option<Vec<Str<'a>>>,
    #[serde(borrow, default)]
    urls: Option<Vec<Str<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppDependency<'a> {
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
    #[serde(borrow, default)]
    version_specifier: Option<Str<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppFileLocation<'a> {
    #[serde(borrow, default)]
    path: Option<Str<'a>>,
    #[serde(borrow, default)]
    start_line: Option<NumberOrString<'a>>,
    /// A link to the file on its forge, which names the host.
    #[serde(borrow, default)]
    url: Option<Str<'a>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString<'a> {
    Number(i64),
    String(#[serde(borrow)] Str<'a>),
    Other(IgnoredAny),
}

#[derive(Deserialize)]
struct Triage<'a> {
    #[serde(borrow, default)]
    status: Option<Str<'a>>,
}

/// The parts of `advisory.ruleText` read: which ecosystem each package is in.
#[derive(Deserialize)]
struct RuleText<'a> {
    #[serde(borrow, default, rename = "r2c-internal-project-depends-on")]
    depends_on: Option<DependsOn<'a>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DependsOn<'a> {
    Either {
        #[serde(borrow, rename = "depends-on-either")]
        either: Vec<DependsOnEntry<'a>>,
    },
    One(#[serde(borrow)] DependsOnEntry<'a>),
    Other(IgnoredAny),
}

#[derive(Deserialize)]
struct DependsOnEntry<'a> {
    #[serde(borrow, default)]
    namespace: Option<Str<'a>>,
    #[serde(borrow, default)]
    package: Option<Str<'a>>,
}

impl Decoder for SemgrepDecoder {
    fn format(&self) -> Format {
        Format::Semgrep
    }

    fn markers(&self) -> Markers {
        Markers {
            // `vulns` + `hasMore`: Semgrep's supply-chain API listing.
            object_keys: &["interfile_languages_used", "skipped_rules", "hasMore"],
            result_keys: &["check_id"],
            empty_results_key: Some("errors"),
            ..Markers::default()
        }
    }

    fn decode(&self, bytes: &[u8], ctx: &DecodeContext) -> Result<Report, DecodeError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let doc: Document<'_> = serde_json::from_slice(bytes)
            .map_err(|e| DecodeError::from_json(Format::Semgrep, e))?;
        let mut report = Report::default();
        match (&doc.results, &doc.vulns) {
            (None, None) => {
                return Err(DecodeError::Shape {
                    format: Format::Semgrep,
                    detail: "expected `results` (semgrep --json) or `vulns` (Semgrep App \
                             supply-chain listing)"
                        .into(),
                })
            }
            (Some(results), _) => decode_results(results, &doc, ctx, &mut report),
            (None, Some(_)) => {}
        }
        if let Some(vulns) = &doc.vulns {
            decode_app_vulns(vulns, doc.has_more == Some(true), &mut report);
        }
        Ok(report)
    }
}

fn decode_results(
    results: &[SgResult<'_>],
    doc: &Document<'_>,
    ctx: &DecodeContext,
    report: &mut Report,
) {
    let failed = doc.errors.iter().flatten().any(|e| {
        e.level
            .as_ref()
            .and_then(Loose::first)
            .is_some_and(|l| l.eq_ignore_ascii_case("error"))
    });
    if !failed {
        report.coverage.insert((SCANNER.into(), Category::Sast));
    }
    report.findings.reserve(results.len());
    for (i, r) in results.iter().enumerate() {
        let extra = r.extra.as_ref();
        if extra.and_then(|e| e.is_ignored) == Some(true) {
            report.skipped.push(format!(
                "results[{i}] {} at {}: ignored in source",
                r.check_id.as_deref().unwrap_or("?"),
                r.path.as_deref().unwrap_or("?")
            ));
            continue;
        }
        let f = result_finding(r, &ctx.secret_salt);
        if !failed {
            report.coverage.insert((SCANNER.into(), f.category));
        }
        report.findings.push(f);
    }
}

fn result_finding(r: &SgResult<'_>, salt: &str) -> Finding {
    let extra = r.extra.as_ref();
    let meta = extra.and_then(|e| e.metadata.as_ref());
    let check_id = non_empty(&r.check_id).unwrap_or("unknown");
    let sca = extra.and_then(|e| e.sca_info.as_ref());
    let message = extra
        .and_then(|e| non_empty(&e.message))
        .map(str::to_string)
        .unwrap_or_else(|| check_id.to_string());
    let (mut severity, mut source) = severity(extra.and_then(|e| non_empty(&e.severity)));

    let mut f = match sca {
        None => Finding::new(SCANNER, Category::Sast, check_id, severity, message),
        Some(sca) => {
            let ids = meta
                .into_iter()
                .flat_map(|m| {
                    loose_strings(&m.vuln_id)
                        .chain(loose_strings(&m.cve))
                        .chain(loose_strings(&m.ghsa))
                })
                .chain(std::iter::once(check_id));
            let (rule_id, aliases) =
                canonical_vuln_id(ids).unwrap_or_else(|| (check_id.to_string(), Vec::new()));
            if let Some(label) = meta.and_then(|m| m.sca_severity.as_ref()?.first()) {
                if let Some(s) = Severity::from_label(label) {
                    severity = s;
                    source = format!("sca-severity:{label}");
                }
            }
            let mut f = Finding::new(SCANNER, Category::Sca, rule_id, severity, message);
            f.aliases = aliases;
            f.package = sca_package(sca, meta);
            f
        }
    };
    f.severity_source = Some(source.into());
    f.cwe = cwes(meta.into_iter().flat_map(|m| loose_strings(&m.cwe)));
    f.help_uri = meta
        .and_then(|m| {
            [&m.source, &m.shortlink, &m.source_rule_url, &m.references]
                .into_iter()
                .flatten()
                .find_map(Loose::first)
        })
        .map(Into::into);

    let found = sca.and_then(|s| s.dependency_match.as_ref()).and_then(|d| {
        d.found_dependency
            .as_ref()
            .and_then(|f| non_empty(&f.lockfile_path))
            .or(non_empty(&d.lockfile))
    });
    if let Some(path) = non_empty(&r.path).or(found) {
        let num = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok()).filter(|&n| n > 0);
        let (start, end) = (r.start.as_ref(), r.end.as_ref());
        f.location = Some(Location {
            path: clean_path(path, None),
            start_line: num(start.and_then(|p| p.line)),
            start_column: num(start.and_then(|p| p.col)),
            end_line: num(end.and_then(|p| p.line)),
            end_column: num(end.and_then(|p| p.col)),
        });
    }

    f.tool_fingerprint = extra
        .and_then(|e| non_empty(&e.fingerprint))
        .filter(|fp| !fingerprint::is_placeholder(fp))
        .map(str::to_string);
    let lines = extra
        .and_then(|e| non_empty(&e.lines))
        .filter(|l| !l.eq_ignore_ascii_case(REQUIRES_LOGIN));
    let first = extra
        .and_then(|e| e.lines.as_deref())
        .filter(|_| lines.is_some())
        .and_then(|l| l.lines().next());
    if looks_for_secrets(check_id, meta) {
        // The line holds the secret: keep only its salted hash.
        f.content_hash = first
            .filter(|l| !l.trim().is_empty())
            .map(|l| fingerprint::line_hash_salted(l, salt));
    } else {
        if let Some(l) = extra
            .and_then(|e| e.lines.as_deref())
            .filter(|_| lines.is_some())
        {
            f.evidence.snippet = Some(l.trim_end().to_string());
        }
        set_line_content(&mut f, first, salt);
    }
    f
}

/// Rules of the `secrets` families (`generic.secrets.security...`, rules
/// tagged with the `secrets` technology or category).
fn looks_for_secrets(check_id: &str, meta: Option<&Metadata<'_>>) -> bool {
    let is_secrets = |s: &str| {
        let s = s.trim();
        s.eq_ignore_ascii_case("secrets") || s.eq_ignore_ascii_case("secret")
    };
    check_id.split('.').any(is_secrets)
        || meta.is_some_and(|m| {
            [&m.category, &m.subcategory, &m.technology]
                .into_iter()
                .any(|l| loose_strings(l).any(is_secrets))
        })
}

fn sca_package(sca: &ScaInfo<'_>, meta: Option<&Metadata<'_>>) -> Option<Package> {
    let dm = sca.dependency_match.as_ref()?;
    let found = dm.found_dependency.as_ref();
    let pattern = dm.dependency_pattern.as_ref();
    let name = found
        .and_then(|d| non_empty(&d.package))
        .or_else(|| pattern.and_then(|d| non_empty(&d.package)))?;
    let eco = found
        .and_then(|d| non_empty(&d.ecosystem))
        .or_else(|| pattern.and_then(|d| non_empty(&d.ecosystem)))
        .map_or_else(|| "unknown".to_string(), ecosystem);
    let fixed = match meta.and_then(|m| m.fix_versions.as_ref()) {
        Some(FixVersions::List(list)) => list.iter().find_map(|m| match m.get(name) {
            Some(Item::Str(v)) => non_empty_str(v),
            _ => None,
        }),
        _ => None,
    };
    Some(Package {
        ecosystem: eco,
        name: name.to_string(),
        version: found
            .and_then(|d| non_empty(&d.version))
            .map(str::to_string),
        fixed_version: fixed.map(str::to_string),
    })
}

fn decode_app_vulns(vulns: &[AppVuln<'_>], partial: bool, report: &mut Report) {
    if !partial {
        report.coverage.insert((SCANNER.into(), Category::Sca));
    }
    for (i, v) in vulns.iter().enumerate() {
        // A repository is scanned even when its every entry is closed: its
        // findings no longer listed are resolved.
        let target = app_repository(v);
        if let Some(t) = &target {
            report.targets.insert(t.clone());
        }
        let status = v
            .triage
            .as_ref()
            .and_then(|t| non_empty(&t.status))
            .unwrap_or("");
        let closed = ["ignored", "provisionally_ignored", "closed", "fixed"]
            .iter()
            .any(|s| status.eq_ignore_ascii_case(s));
        if closed {
            report
                .skipped
                .push(format!("vulns[{i}]: triage status {status}"));
            continue;
        }
        let mut f = app_vuln_finding(v);
        f.target = target;
        report.findings.push(f);
    }
}

/// The repository an App listing entry is of: `repositoryName` (`org/name`,
/// or a GitLab `group/subgroup/name`), under the host of the entry's
/// `dependencyFileLocation.url` when that link is on the repository's own
/// page (`https://<host>/<repositoryName>/...`); otherwise as Semgrep names
/// it, with no host invented. `None` when the entry names none.
fn app_repository(v: &AppVuln<'_>) -> Option<crate::model::Target> {
    use crate::model::{Target, TargetKind};
    let name = non_empty(&v.repository_name)?.trim_matches('/');
    let url = v
        .dependency_file_location
        .as_ref()
        .and_then(|l| non_empty(&l.url));
    let host = url.and_then(|u| {
        let rest = u.split_once("://")?.1;
        let (host, path) = rest.split_once('/')?;
        let on_repo = path
            .strip_prefix(name)
            .is_some_and(|tail| tail.is_empty() || tail.starts_with('/'));
        (on_repo && !host.is_empty()).then_some(host)
    });
    let spec = match host {
        Some(host) => format!("{host}/{name}"),
        None => name.to_string(),
    };
    Target::new(TargetKind::Repo, &spec).ok()
}

fn app_vuln_finding(v: &AppVuln<'_>) -> Finding {
    let adv = v.advisory.as_ref();
    let refs = adv.and_then(|a| a.references.as_ref());
    let rule = adv.and_then(|a| non_empty(&a.rule_id));
    let ids = refs
        .into_iter()
        .flat_map(|r| {
            r.cve_ids
                .iter()
                .flatten()
                .chain(r.ghsa_ids.iter().flatten())
        })
        .map(|s| s.as_ref())
        .chain(rule);
    let (rule_id, aliases) =
        canonical_vuln_id(ids).unwrap_or_else(|| ("unknown".to_string(), Vec::new()));
    let (severity, source) = severity(adv.and_then(|a| non_empty(&a.severity)));
    let title = adv
        .and_then(|a| non_empty(&a.title))
        .or(non_empty(&v.title));
    let message = adv
        .and_then(|a| non_empty(&a.description))
        .map(|d| shorten(d, MAX_MESSAGE))
        .or_else(|| title.map(str::to_string))
        .unwrap_or_else(|| rule_id.clone());

    let mut f = Finding::new(SCANNER, Category::Sca, rule_id, severity, message);
    f.aliases = aliases;
    f.severity_source = Some(source.into());
    f.title = title.map(Into::into);
    f.cwe = cwes(
        refs.into_iter()
            .flat_map(|r| r.cwe_ids.iter().flatten())
            .map(|s| s.as_ref()),
    );
    f.help_uri = refs
        .and_then(|r| r.urls.iter().flatten().find_map(|u| non_empty_str(u)))
        .map(Into::into);

    let dep = v.matched_dependency.as_ref();
    if let Some(name) = dep.and_then(|d| non_empty(&d.name)) {
        let eco = adv
            .and_then(|a| rule_ecosystem(a, name))
            .or_else(|| adv.and_then(|a| non_empty(&a.ecosystem)).map(ecosystem))
            .unwrap_or_else(|| "unknown".to_string());
        let safe = v
            .closest_safe_dependency
            .as_ref()
            .filter(|s| non_empty(&s.name).is_none_or(|n| n == name))
            .and_then(|s| non_empty(&s.version_specifier));
        f.package = Some(Package {
            ecosystem: eco,
            name: name.to_string(),
            version: dep
                .and_then(|d| non_empty(&d.version_specifier))
                .map(str::to_string),
            fixed_version: safe.map(str::to_string),
        });
    }
    if let Some(loc) = &v.dependency_file_location {
        if let Some(path) = non_empty(&loc.path) {
            let line = match &loc.start_line {
                Some(NumberOrString::Number(n)) => Some(*n),
                Some(NumberOrString::String(s)) => s.trim().parse().ok(),
                _ => None,
            };
            f.location = Some(Location {
                path: clean_path(path, None),
                start_line: line.and_then(|n| u32::try_from(n).ok()).filter(|&n| n > 0),
                ..Location::default()
            });
        }
    }
    f
}

/// The ecosystem the advisory's rule gives for `package`: an advisory may
/// cover one library in several ecosystems, and its `ecosystem` field names
/// only the first.
fn rule_ecosystem(adv: &Advisory<'_>, package: &str) -> Option<String> {
    let text = adv.rule_text.as_deref()?;
    let rule: RuleText<'_> = serde_json::from_str(text).ok()?;
    let entries: Vec<&DependsOnEntry<'_>> = match rule.depends_on.as_ref()? {
        DependsOn::Either { either } => either.iter().collect(),
        DependsOn::One(e) => vec![e],
        DependsOn::Other(_) => Vec::new(),
    };
    entries
        .into_iter()
        .find(|e| non_empty(&e.package) == Some(package))
        .and_then(|e| non_empty(&e.namespace))
        .map(ecosystem)
}

fn severity(label: Option<&str>) -> (Severity, String) {
    match label {
        // Semgrep's INFO is its lowest real level, not "informational".
        Some(l) if l.eq_ignore_ascii_case("info") => (Severity::Low, format!("semgrep:{l}")),
        Some(l) => (
            Severity::from_label(l).unwrap_or(Severity::Info),
            format!("semgrep:{l}"),
        ),
        None => (Severity::Info, "semgrep:none".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report of the shared corpus; `None` (the test skips) without it.
    fn corpus(name: &str) -> Option<Vec<u8>> {
        crate::testing::shared_bytes(&format!("scans/semgrep/{name}"), name)
    }

    fn decode(bytes: &[u8]) -> Result<Report, DecodeError> {
        crate::testing::decode_with(&SemgrepDecoder, bytes)
    }

    fn decode_corpus(name: &str) -> Option<Report> {
        Some(decode(&corpus(name)?).unwrap_or_else(|e| panic!("{name}: {e}")))
    }

    /// Every Semgrep file of `MANIFEST.tsv`: raw count, records skipped.
    const TABLE: &[(&str, usize, usize)] = &[
        ("close_old_findings_report_line31.json", 1, 0),
        ("close_old_findings_report_second_run_line24.json", 1, 0),
        (
            "close_old_findings_report_third_run_different_unique_id.json",
            1,
            0,
        ),
        ("cwe_list.json", 1, 0),
        ("empty.json", 0, 0),
        ("fingerprint_test.json", 2, 0),
        ("high-medium-low-severities.json", 3, 0),
        ("issue_8435.json", 1, 0),
        ("many_findings.json", 3, 0),
        ("many_vulns.json", 48, 0),
        ("multiple_cwes_fabricated.json", 1, 0),
        ("one_finding.json", 1, 0),
        ("repeated_findings.json", 2, 0),
        // App API listing; one vulnerability is triaged CLOSED.
        ("sca-deployments-vulns.json", 22, 1),
        ("semgrep_version_1_30_0_line_26.json", 5, 0),
        ("semgrep_version_1_30_0_line_27.json", 5, 0),
    ];

    #[test]
    fn corpus_counts() {
        for &(name, raw, skipped) in TABLE {
            let Some(r) = decode_corpus(name) else {
                return;
            };
            assert_eq!(r.skipped.len(), skipped, "{name}: {:?}", r.skipped);
            assert_eq!(r.findings.len() + r.skipped.len(), raw, "{name}");
            if name == "sca-deployments-vulns.json" {
                // A page of a longer listing (hasMore): no coverage claimed.
                assert!(r.coverage.is_empty());
            } else {
                assert!(
                    r.coverage.contains(&("semgrep".into(), Category::Sast)),
                    "{name}"
                );
            }
            for f in &r.findings {
                assert_eq!(f.scanner, "semgrep");
                assert!(f.path().is_some(), "{name}");
                assert!(f.tool_fingerprint.as_deref() != Some(REQUIRES_LOGIN));
            }
        }
    }

    #[test]
    fn one_finding_fields() {
        let Some(r) = decode_corpus("one_finding.json") else {
            return;
        };
        let f = &r.findings[0];
        assert_eq!(f.category, Category::Sast);
        assert_eq!(
            f.rule_id,
            "java.lang.security.audit.cbc-padding-oracle.cbc-padding-oracle"
        );
        assert_eq!(f.severity, Severity::Medium);
        assert_eq!(f.severity_source.as_deref(), Some("semgrep:WARNING"));
        assert_eq!(
            f.path(),
            Some("src/main/java/org/owasp/benchmark/testcode/BenchmarkTest02194.java")
        );
        let loc = f.location.as_ref().unwrap();
        assert_eq!(
            (loc.start_line, loc.start_column, loc.end_column),
            (Some(64), Some(4), Some(83))
        );
        assert_eq!(f.cwe, vec!["CWE-696"]);
        assert_eq!(
            f.help_uri.as_deref(),
            Some("https://find-sec-bugs.github.io/bugs.htm#PADDING_ORACLE")
        );
        let line = "\t\t\tjavax.crypto.Cipher c = javax.crypto.Cipher.getInstance(\"DES/CBC/PKCS5Padding\");";
        assert_eq!(f.content_hash, Some(fingerprint::line_hash(line)));
        assert!(f.tool_fingerprint.is_none());
    }

    #[test]
    fn severities_and_cwe_lists() {
        if crate::testing::shared_corpus("scans/semgrep", "severities_and_cwe_lists").is_none() {
            return;
        }
        let sev = |name: &str| -> Vec<Severity> {
            decode_corpus(name)
                .expect("the shared corpus is there")
                .findings
                .iter()
                .map(|f| f.severity)
                .collect()
        };
        assert_eq!(sev("cwe_list.json"), [Severity::Low]);
        assert_eq!(sev("high-medium-low-severities.json"), [Severity::Low; 3]);
        assert_eq!(
            sev("fingerprint_test.json"),
            [Severity::High, Severity::Medium]
        );
        let Some(r) = decode_corpus("multiple_cwes_fabricated.json") else {
            return;
        };
        assert!(r.findings[0].cwe.len() > 1, "{:?}", r.findings[0].cwe);
        let Some(r) = decode_corpus("cwe_list.json") else {
            return;
        };
        assert_eq!(r.findings[0].cwe, vec!["CWE-352"]);
        assert_eq!(
            r.findings[0].tool_fingerprint.as_deref(),
            Some("143cb0c62f3740d62180cbde3ffa976e")
        );
    }

    #[test]
    fn placeholders_are_dropped() {
        let Some(r) = decode_corpus("fingerprint_test.json") else {
            return;
        };
        for f in &r.findings {
            assert!(f.tool_fingerprint.is_none());
            assert!(f.content_hash.is_none());
            assert!(f.evidence.snippet.is_none());
        }
    }

    #[test]
    fn rescans_keep_the_tool_fingerprint() {
        let Some(a) = decode_corpus("close_old_findings_report_line31.json") else {
            return;
        };
        let Some(b) = decode_corpus("close_old_findings_report_second_run_line24.json") else {
            return;
        };
        let Some(c) = decode_corpus("close_old_findings_report_third_run_different_unique_id.json")
        else {
            return;
        };
        assert_eq!(a.findings[0].start_line(), Some(31));
        assert_eq!(b.findings[0].start_line(), Some(24));
        assert_eq!(
            a.findings[0].tool_fingerprint,
            b.findings[0].tool_fingerprint
        );
        assert_ne!(
            a.findings[0].tool_fingerprint,
            c.findings[0].tool_fingerprint
        );
    }

    #[test]
    fn app_supply_chain_listing() {
        let Some(r) = decode_corpus("sca-deployments-vulns.json") else {
            return;
        };
        assert!(r.skipped[0].contains("CLOSED"));
        let f = &r.findings[0];
        assert_eq!(f.category, Category::Sca);
        assert_eq!(f.rule_id, "CVE-2023-1428");
        assert_eq!(f.aliases, vec!["ssc-82207871-bbda-49be-b1af-49fd927a2f93"]);
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.cwe, vec!["CWE-617"]);
        assert_eq!(f.path(), Some("requirements3.txt"));
        assert_eq!(f.start_line(), Some(222));
        assert_eq!(
            f.package,
            Some(Package {
                // The advisory says `gem`; its rule says grpcio is on PyPI.
                ecosystem: "pypi".into(),
                name: "grpcio".into(),
                version: Some("1.47.0".into()),
                fixed_version: Some("1.53.0".into()),
            })
        );
    }

    #[test]
    fn app_listing_entries_name_their_repository() {
        let entry = |repo: &str, url: &str, status: &str| {
            format!(
                r#"{{"title":"t","advisory":{{"ruleId":"ssc-1","references":{{"cveIds":["CVE-2024-1"]}}}},
                "matchedDependency":{{"name":"x","versionSpecifier":"1.0"}},
                "dependencyFileLocation":{{"path":"go.mod","startLine":"3","url":"{url}"}},
                "triage":{{"status":"{status}"}},"repositoryName":"{repo}"}}"#
            )
        };
        let listing = format!(
            r#"{{"vulns":[{},{},{},{}],"hasMore":false}}"#,
            entry(
                "group/sub/proj",
                "https://gitlab.example.com/group/sub/proj/-/blob/main/go.mod#L3",
                "NEW"
            ),
            // A link to another repository says nothing of this one's host.
            entry("acme/web", "https://github.com/acme/webapp/blob/a/go.mod", "NEW"),
            entry("acme/api", "https://example.com", "NEW"),
            entry("acme/old", "", "FIXED"),
        );
        let r = decode(listing.as_bytes()).unwrap();
        let named: Vec<String> = r
            .findings
            .iter()
            .map(|f| f.target.as_ref().map(ToString::to_string).unwrap_or_default())
            .collect();
        assert_eq!(
            named,
            [
                "repo:gitlab.example.com/group/sub/proj",
                "repo:acme/web",
                "repo:acme/api"
            ]
        );
        // A repository whose every entry is closed is scanned too.
        let targets: Vec<String> = r.targets.iter().map(ToString::to_string).collect();
        assert!(targets.contains(&"repo:acme/old".to_string()), "{targets:?}");
        assert_eq!(targets.len(), 4);
    }

    const CLI_SCA: &str = r#"{"version":"1.122.0","errors":[],"results":[{
        "check_id":"ssc-parity-0ddf","path":"go.mod","start":{"line":6,"col":1},"end":{"line":6,"col":1},
        "extra":{"message":"Affected versions of gin are vulnerable.","severity":"WARNING",
          "metadata":{"cve":"CVE-2023-29401","ghsa":"GHSA-2c4m-59x9-fr2g","cwe":["CWE-494: Download of Code"],
            "sca-fix-versions":[{"github.com/gin-gonic/gin":"1.9.1"}],"sca-severity":"MODERATE",
            "sca-vuln-database-identifier":"CVE-2023-29401","technology":["go"]},
          "fingerprint":"...","lines":"\tgithub.com/gin-gonic/gin v1.6.3 // indirect","is_ignored":false,
          "sca_info":{"reachability_rule":false,"sca_finding_schema":20220913,"dependency_match":{
            "dependency_pattern":{"ecosystem":"gomod","package":"github.com/gin-gonic/gin","semver_range":"<1.9.1"},
            "found_dependency":{"package":"github.com/gin-gonic/gin","version":"1.6.3","ecosystem":"gomod",
              "lockfile_path":"go.mod","line_number":6},"lockfile":"go.mod"},"reachable":false}}},
      {"check_id":"py.eval","path":"a.py","start":{"line":1,"col":1},"end":{"line":1,"col":5},
       "extra":{"message":"eval","severity":"ERROR","metadata":{"cwe":7,"references":{"x":1}},"is_ignored":true,"lines":"eval(x)"}}]}"#;

    #[test]
    fn cli_supply_chain_results() {
        let r = decode(CLI_SCA.as_bytes()).unwrap();
        assert_eq!(r.findings.len(), 1);
        assert_eq!(r.skipped.len(), 1, "nosemgrep result skipped");
        let f = &r.findings[0];
        assert_eq!(f.category, Category::Sca);
        assert_eq!(f.rule_id, "CVE-2023-29401");
        assert_eq!(f.aliases, vec!["GHSA-2c4m-59x9-fr2g", "ssc-parity-0ddf"]);
        assert_eq!(f.severity, Severity::Medium);
        assert_eq!(f.severity_source.as_deref(), Some("sca-severity:MODERATE"));
        assert_eq!(f.cwe, vec!["CWE-494"]);
        assert_eq!(
            f.package,
            Some(Package {
                ecosystem: "golang".into(),
                name: "github.com/gin-gonic/gin".into(),
                version: Some("1.6.3".into()),
                fixed_version: Some("1.9.1".into()),
            })
        );
        assert_eq!(f.start_line(), Some(6));
        for c in [Category::Sast, Category::Sca] {
            assert!(r.coverage.contains(&("semgrep".into(), c)));
        }
    }

    #[test]
    fn secret_rules_keep_no_clear_line() {
        let doc = r#"{"results":[{"check_id":"generic.secrets.security.detected-aws-access-key-id-value.detected-aws-access-key-id-value",
          "path":"conf.py","start":{"line":3,"col":1},"end":{"line":3,"col":30},
          "extra":{"message":"AWS Access Key ID Value detected.","severity":"ERROR","metadata":{"technology":["secrets","aws"]},
            "lines":"KEY = 'AKIAIOSFODNN7EXAMPLE'"}}],"errors":[]}"#;
        let r = decode(doc.as_bytes()).unwrap();
        let f = &r.findings[0];
        assert!(!format!("{f:?}").contains("AKIAIOSFODNN7EXAMPLE"));
        let salt = DecodeContext::default().secret_salt;
        assert_eq!(
            f.content_hash,
            Some(fingerprint::line_hash_salted(
                "KEY = 'AKIAIOSFODNN7EXAMPLE'",
                &salt
            ))
        );
    }

    #[test]
    fn failed_runs_claim_no_coverage() {
        let doc = r#"{"results":[],"errors":[{"code":7,"level":"error","type":"InvalidRuleSchemaError","message":"bad"}]}"#;
        assert!(decode(doc.as_bytes()).unwrap().coverage.is_empty());
        let doc = r#"{"results":[],"errors":[{"code":3,"level":"warn","type":["PartialParsing",[]],"path":"x.py"}]}"#;
        assert_eq!(decode(doc.as_bytes()).unwrap().coverage.len(), 1);
        let Some(r) = decode_corpus("empty.json") else {
            return;
        };
        assert!(r.coverage.contains(&("semgrep".into(), Category::Sast)));
    }

    #[test]
    fn wrong_shapes_are_named() {
        for (doc, needle) in [
            (r#"{"results": 5}"#, "expected a sequence"),
            (r#"{"matches": []}"#, "expected `results`"),
            (
                r#"{"results": [{"start": {"line": "x"}}]}"#,
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
        for name in [
            "one_finding.json",
            "cwe_list.json",
            "empty.json",
            "sca-deployments-vulns.json",
        ] {
            let Some(bytes) = corpus(name) else {
                return;
            };
            crate::testing::assert_truncations_are_syntax_errors(name, &bytes, decode);
        }
    }
}
