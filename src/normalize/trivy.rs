//! Decoder for Trivy JSON (`trivy ... -f json`).
//!
//! Four shapes are read:
//! - the `SchemaVersion: 2` report `{ArtifactName, ArtifactType, Metadata,
//!   Results: [...]}` of image, filesystem, repository and SBOM scans;
//! - the legacy (pre-schema) top-level list of results;
//! - the Kubernetes cluster report, both `{ClusterName, Vulnerabilities:
//!   [resource], Misconfigurations: [resource]}` and the newer
//!   `{ClusterName, Resources: [resource]}`, where a resource is
//!   `{Namespace, Kind, Name, Results}`; findings are located at
//!   `<Namespace>/<Kind>/<Name>`, and each resource of a cluster the report
//!   names is a target of its own,
//!   `k8s:<ClusterName>/<Namespace>/<Kind>/<Name>` (see [`Report::split`]):
//!   listed with no finding, it is still scanned. Trivy's report carries
//!   no labels or annotations of a resource, so no owner comes from them;
//!   the ownership's cloud patterns match these targets' names;
//! - `null`, an empty legacy report.
//!
//! Vulnerabilities become dependency findings (container when the artifact
//! is an image or a cluster workload, SCA otherwise); one whose vendor
//! `Status` is `not_affected` is marked not affected (a [`Disposition`] of
//! kind `vendor`), so it is recorded `not_affected`, not opened; the other
//! statuses (`affected`, `fixed`, `under_investigation`, `will_not_fix`,
//! `fix_deferred`, `end_of_life`, `unknown`) leave it open. Misconfigurations IaC
//! findings (checks with status `PASS` or `EXCEPTION` are skipped) and
//! secrets secret findings. Licenses are not findings. Trivy masks secrets
//! in `Match`; the line is still only kept as a salted hash.
//!
//! Coverage follows each result's `Class`: `os-pkgs` and `lang-pkgs` cover
//! the dependency category, `config` IaC and `secret` secrets. Trivy lists
//! no result for a secret scan that found nothing, so such a scan cannot be
//! told from one that did not look for secrets.

use super::util::{canonical_vuln_id, clean_path, ecosystem, purl_type, set_line_content};
use super::util::{cwe_ids as cwes, non_empty, non_empty_str, shorten};
use super::{DecodeContext, DecodeError, Decoder, Format, Markers, Report};
use crate::model::{
    Category, Disposition, DispositionState, Finding, Location, Package, Severity, Target,
    TargetKind,
};
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The trivy decoder.
pub struct TrivyDecoder;

const SCANNER: &str = "trivy";

/// Longest message kept from an advisory's description, in characters.
const MAX_MESSAGE: usize = 1000;

/// The rule of a vulnerability entry that names a package but no
/// vulnerability id.
pub const UNIDENTIFIED: &str = "TRIVY-UNIDENTIFIED";

type Str<'a> = super::text::Text<'a>;

#[derive(Deserialize)]
struct Document<'a> {
    #[serde(default, rename = "SchemaVersion")]
    schema_version: Option<IgnoredAny>,
    #[serde(borrow, default, rename = "ArtifactName")]
    artifact_name: Option<Str<'a>>,
    #[serde(borrow, default, rename = "ArtifactType")]
    artifact_type: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Metadata")]
    metadata: Option<Metadata<'a>>,
    #[serde(borrow, default, rename = "Results")]
    results: Option<Vec<TrivyResult<'a>>>,
    #[serde(borrow, default, rename = "ClusterName")]
    cluster_name: Option<Str<'a>>,
    /// Kubernetes report: resources with vulnerability results.
    #[serde(borrow, default, rename = "Vulnerabilities")]
    vulnerabilities: Option<Vec<Resource<'a>>>,
    /// Kubernetes report: resources with misconfiguration results.
    #[serde(borrow, default, rename = "Misconfigurations")]
    misconfigurations: Option<Vec<Resource<'a>>>,
    /// Newer Kubernetes report: all resources.
    #[serde(borrow, default, rename = "Resources")]
    resources: Option<Vec<Resource<'a>>>,
}

#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(borrow, default, rename = "RepoURL")]
    repo_url: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Commit")]
    commit: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Branch")]
    branch: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Resource<'a> {
    #[serde(borrow, default, rename = "Namespace")]
    namespace: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Kind")]
    kind: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Name")]
    name: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Results")]
    results: Option<Vec<TrivyResult<'a>>>,
}

#[derive(Deserialize)]
struct TrivyResult<'a> {
    #[serde(borrow, default, rename = "Target")]
    target: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Class")]
    class: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Type")]
    kind: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Vulnerabilities")]
    vulnerabilities: Option<Vec<Vulnerability<'a>>>,
    #[serde(borrow, default, rename = "Misconfigurations")]
    misconfigurations: Option<Vec<Misconfiguration<'a>>>,
    #[serde(borrow, default, rename = "Secrets")]
    secrets: Option<Vec<Secret<'a>>>,
}

#[derive(Deserialize)]
struct Vulnerability<'a> {
    #[serde(borrow, default, rename = "VulnerabilityID")]
    id: Option<Str<'a>>,
    #[serde(borrow, default, rename = "VendorIDs")]
    vendor_ids: Option<Vec<Str<'a>>>,
    #[serde(borrow, default, rename = "PkgName")]
    pkg_name: Option<Str<'a>>,
    #[serde(borrow, default, rename = "PkgPath")]
    pkg_path: Option<Str<'a>>,
    #[serde(borrow, default, rename = "PkgIdentifier")]
    pkg_identifier: Option<PkgIdentifier<'a>>,
    #[serde(borrow, default, rename = "InstalledVersion")]
    installed_version: Option<Str<'a>>,
    #[serde(borrow, default, rename = "FixedVersion")]
    fixed_version: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Status")]
    status: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Severity")]
    severity: Option<Str<'a>>,
    #[serde(borrow, default, rename = "SeveritySource")]
    severity_source: Option<Str<'a>>,
    #[serde(borrow, default, rename = "PrimaryURL")]
    primary_url: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Title")]
    title: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Description")]
    description: Option<Str<'a>>,
    #[serde(borrow, default, rename = "CweIDs")]
    cwe_ids: Option<Vec<Str<'a>>>,
    #[serde(borrow, default, rename = "CVSS")]
    cvss: Option<BTreeMap<Str<'a>, Cvss>>,
    #[serde(borrow, default, rename = "References")]
    references: Option<Vec<Str<'a>>>,
}

#[derive(Deserialize)]
struct PkgIdentifier<'a> {
    #[serde(borrow, default, rename = "PURL")]
    purl: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Cvss {
    #[serde(default, rename = "V40Score")]
    v40: Option<f64>,
    #[serde(default, rename = "V3Score")]
    v3: Option<f64>,
    #[serde(default, rename = "V2Score")]
    v2: Option<f64>,
}

#[derive(Deserialize)]
struct Misconfiguration<'a> {
    #[serde(borrow, default, rename = "ID")]
    id: Option<Str<'a>>,
    #[serde(borrow, default, rename = "AVDID")]
    avd_id: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Title")]
    title: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Description")]
    description: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Message")]
    message: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Resolution")]
    resolution: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Severity")]
    severity: Option<Str<'a>>,
    #[serde(borrow, default, rename = "PrimaryURL")]
    primary_url: Option<Str<'a>>,
    #[serde(borrow, default, rename = "References")]
    references: Option<Vec<Str<'a>>>,
    #[serde(borrow, default, rename = "Status")]
    status: Option<Str<'a>>,
    #[serde(borrow, default, rename = "CauseMetadata")]
    cause: Option<CauseMetadata<'a>>,
}

#[derive(Deserialize)]
struct CauseMetadata<'a> {
    #[serde(default, rename = "StartLine")]
    start_line: Option<i64>,
    #[serde(default, rename = "EndLine")]
    end_line: Option<i64>,
    #[serde(borrow, default, rename = "Code")]
    code: Option<Code<'a>>,
}

#[derive(Deserialize)]
struct Code<'a> {
    #[serde(borrow, default, rename = "Lines")]
    lines: Option<Vec<CodeLine<'a>>>,
}

#[derive(Deserialize)]
struct CodeLine<'a> {
    #[serde(default, rename = "Number")]
    number: Option<i64>,
    #[serde(borrow, default, rename = "Content")]
    content: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Secret<'a> {
    #[serde(borrow, default, rename = "RuleID")]
    rule_id: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Severity")]
    severity: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Title")]
    title: Option<Str<'a>>,
    #[serde(default, rename = "StartLine")]
    start_line: Option<i64>,
    #[serde(default, rename = "EndLine")]
    end_line: Option<i64>,
    #[serde(borrow, default, rename = "Match")]
    matched: Option<Str<'a>>,
    #[serde(borrow, default, rename = "Code")]
    code: Option<Code<'a>>,
}

impl Decoder for TrivyDecoder {
    fn format(&self) -> Format {
        Format::Trivy
    }

    fn markers(&self) -> Markers {
        Markers {
            object_keys: &["SchemaVersion", "ArtifactName", "ArtifactType", "ClusterName"],
            // The legacy list: `[{"Target": ..., "Vulnerabilities": ...}]`.
            element_keys: &[&["Target"], &["Vulnerabilities", "Type"]],
            ..Markers::default()
        }
    }

    fn decode(&self, bytes: &[u8], ctx: &DecodeContext) -> Result<Report, DecodeError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let json = |e| DecodeError::from_json(Format::Trivy, e);
        let mut report = Report::default();
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            let results: Vec<TrivyResult<'_>> = serde_json::from_slice(bytes).map_err(json)?;
            decode_legacy(&results, ctx, &mut report);
            return Ok(report);
        }
        match serde_json::from_slice::<Option<Document<'_>>>(bytes).map_err(json)? {
            None => decode_legacy(&[], ctx, &mut report),
            Some(doc) => decode_document(doc, ctx, &mut report)?,
        }
        Ok(report)
    }
}

/// The legacy list of results (or `null`): no artifact type, so a result
/// of operating-system packages marks the artifact as an image.
fn decode_legacy(results: &[TrivyResult<'_>], ctx: &DecodeContext, report: &mut Report) {
    if results.is_empty() {
        // Trivy printed `null`: its vulnerability scan found no packages.
        report
            .coverage
            .insert((SCANNER.into(), Category::Container));
        report.coverage.insert((SCANNER.into(), Category::Sca));
        return;
    }
    let image = results
        .iter()
        .any(|r| r.kind.as_deref().is_some_and(is_os_type));
    let scope = Scope {
        salt: &ctx.secret_salt,
        dependency: dependency_category(image),
        resource: None,
        target: None,
    };
    for (i, r) in results.iter().enumerate() {
        decode_result(r, &format!("Results[{i}]"), &scope, report);
    }
}

fn decode_document(
    doc: Document<'_>,
    ctx: &DecodeContext,
    report: &mut Report,
) -> Result<(), DecodeError> {
    let k8s = doc.cluster_name.is_some()
        || doc.resources.is_some()
        || doc.vulnerabilities.is_some()
        || doc.misconfigurations.is_some();
    let schema2 = doc.schema_version.is_some()
        || doc.results.is_some()
        || doc.artifact_name.is_some()
        || doc.artifact_type.is_some();
    if !k8s && !schema2 {
        return Err(DecodeError::Shape {
            format: Format::Trivy,
            detail: "expected an object with `Results` (SchemaVersion 2) or `ClusterName`/\
                     `Resources` (Kubernetes report), a list of results, or null"
                .into(),
        });
    }

    let artifact_type = doc.artifact_type.as_deref().unwrap_or("").trim();
    let artifact_name = doc.artifact_name.as_deref().unwrap_or("").trim();
    let image = artifact_type.eq_ignore_ascii_case("container_image");
    report.target = if image {
        Target::new(TargetKind::Image, artifact_name).ok()
    } else if artifact_type.eq_ignore_ascii_case("repository") {
        let repo_url = doc.metadata.as_ref().and_then(|m| m.repo_url.as_deref());
        [Some(artifact_name), repo_url]
            .into_iter()
            .flatten()
            .find(|n| is_url_ish(n))
            .and_then(|n| Target::new(TargetKind::Repo, n).ok())
    } else {
        None
    };
    if let Some(m) = &doc.metadata {
        let some = |s: &Option<Str<'_>>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        report.commit = some(&m.commit);
        report.git_ref = some(&m.branch);
    }

    let scope = Scope {
        salt: &ctx.secret_salt,
        dependency: dependency_category(image),
        resource: None,
        target: None,
    };
    for (i, r) in doc.results.iter().flatten().enumerate() {
        decode_result(r, &format!("Results[{i}]"), &scope, report);
    }

    // Kubernetes: every vulnerability is in a workload's image.
    if doc.vulnerabilities.is_some() {
        report
            .coverage
            .insert((SCANNER.into(), Category::Container));
    }
    if doc.misconfigurations.is_some() {
        report.coverage.insert((SCANNER.into(), Category::Iac));
    }
    let lists = [
        ("Vulnerabilities", &doc.vulnerabilities),
        ("Misconfigurations", &doc.misconfigurations),
        ("Resources", &doc.resources),
    ];
    let cluster = doc
        .cluster_name
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    for (list, resources) in lists {
        for (i, res) in resources.iter().flatten().enumerate() {
            let path = resource_path(res);
            // Each resource of a named cluster is a target of its own,
            // scanned even when it has no finding.
            let target = cluster.and_then(|c| resource_target(c, &path));
            if let Some(t) = &target {
                report.targets.insert(t.clone());
            }
            let scope = Scope {
                salt: &ctx.secret_salt,
                dependency: Category::Container,
                resource: Some(&path),
                target: target.as_ref(),
            };
            for (j, r) in res.results.iter().flatten().enumerate() {
                decode_result(r, &format!("{list}[{i}].Results[{j}]"), &scope, report);
            }
        }
    }
    Ok(())
}

/// What the findings of one result share.
struct Scope<'s> {
    salt: &'s str,
    /// Category of vulnerabilities: container or SCA.
    dependency: Category,
    /// `<Namespace>/<Kind>/<Name>` of a Kubernetes resource.
    resource: Option<&'s str>,
    /// The resource's target, `k8s:<ClusterName>/<Namespace>/<Kind>/<Name>`.
    target: Option<&'s Target>,
}

/// The target of a cluster's resource: `k8s:<cluster>/<path>`; `None` when
/// its names hold whitespace (its findings then fall to the scan's target).
fn resource_target(cluster: &str, path: &str) -> Option<Target> {
    let name = match path {
        "" => cluster.to_string(),
        p => format!("{cluster}/{p}"),
    };
    Target::new(TargetKind::K8s, &name).ok()
}

fn dependency_category(image: bool) -> Category {
    if image {
        Category::Container
    } else {
        Category::Sca
    }
}

/// `default/Deployment/redis`, or `ClusterRole/admin` for cluster-scoped
/// resources.
fn resource_path(res: &Resource<'_>) -> String {
    [&res.namespace, &res.kind, &res.name]
        .into_iter()
        .filter_map(|p| p.as_deref().map(str::trim).filter(|s| !s.is_empty()))
        .collect::<Vec<_>>()
        .join("/")
}

/// Trivy's operating-system result types (`debian`, `alpine`, `redhat`...).
fn is_os_type(kind: &str) -> bool {
    matches!(ecosystem(kind).as_str(), "deb" | "apk" | "rpm")
}

/// A repository URL rather than a local path.
fn is_url_ish(name: &str) -> bool {
    let name = name.trim();
    if name.contains("://") || name.starts_with("git@") {
        return true;
    }
    match name.split_once('/') {
        Some((host, rest)) => host.contains('.') && !host.starts_with('.') && !rest.is_empty(),
        None => false,
    }
}

fn decode_result(r: &TrivyResult<'_>, label: &str, scope: &Scope<'_>, report: &mut Report) {
    let target = r.target.as_deref().unwrap_or("").trim();
    let result_path = match scope.resource {
        Some(res) => res.to_string(),
        None => clean_path(target, None),
    };
    let class = r.class.as_deref().map(str::trim);
    let covered = match class {
        Some("os-pkgs" | "lang-pkgs") => Some(scope.dependency),
        Some("config") => Some(Category::Iac),
        Some("secret") => Some(Category::Secret),
        // Legacy results have no class and only hold vulnerabilities.
        None if r.misconfigurations.is_none() && r.secrets.is_none() => Some(scope.dependency),
        _ => None,
    };
    if let Some(c) = covered {
        report.coverage.insert((SCANNER.into(), c));
    }

    for (i, v) in r.vulnerabilities.iter().flatten().enumerate() {
        match vulnerability(v, r, &result_path, scope) {
            Some(f) => {
                if let Some(d) = non_empty(&v.description) {
                    if !report.rule_help.contains(&f.rule_id) {
                        report.rule_help.insert(&f.rule_id, d);
                    }
                }
                push(report, f, scope)
            }
            None => report.skipped.push(format!(
                "{label}.Vulnerabilities[{i}] ({target}): neither VulnerabilityID nor PkgName"
            )),
        }
    }
    for (i, m) in r.misconfigurations.iter().flatten().enumerate() {
        let status = m.status.as_deref().unwrap_or("FAIL").trim();
        if status.eq_ignore_ascii_case("PASS") || status.eq_ignore_ascii_case("EXCEPTION") {
            let id = m.avd_id.as_deref().or(m.id.as_deref()).unwrap_or("?");
            report.skipped.push(format!(
                "{label}.Misconfigurations[{i}] ({target}): {id} status {status}"
            ));
            continue;
        }
        let f = misconfiguration(m, &result_path, scope);
        if !report.rule_help.contains(&f.rule_id) {
            let help = match (non_empty(&m.description), non_empty(&m.resolution)) {
                (Some(d), Some(r)) => format!("{d}\n\nResolution: {r}"),
                (d, r) => d.or(r).unwrap_or_default().to_string(),
            };
            report.rule_help.insert(&f.rule_id, &help);
        }
        push(report, f, scope);
    }
    for s in r.secrets.iter().flatten() {
        push(report, secret(s, &result_path, scope), scope);
    }
}

fn push(report: &mut Report, mut f: Finding, scope: &Scope<'_>) {
    f.target = scope.target.cloned();
    report.coverage.insert((SCANNER.into(), f.category));
    report.findings.push(f);
}

fn vulnerability(
    v: &Vulnerability<'_>,
    r: &TrivyResult<'_>,
    result_path: &str,
    scope: &Scope<'_>,
) -> Option<Finding> {
    let ids =
        v.id.iter()
            .chain(v.vendor_ids.iter().flatten())
            .map(|s| s.as_ref());
    let pkg_name = non_empty(&v.pkg_name);
    // An entry naming a package but no vulnerability (legacy reports have
    // them) is still a finding, so the package's owner sees it: under a
    // rule of its own, keyed like any other by package and location.
    let (rule_id, aliases) = match canonical_vuln_id(ids) {
        Some(found) => found,
        None => {
            pkg_name?;
            (UNIDENTIFIED.to_string(), Vec::new())
        }
    };
    let (severity, source) = vulnerability_severity(v);
    let title = non_empty(&v.title);
    let message = match (non_empty(&v.description), title) {
        (Some(d), _) => shorten(d, MAX_MESSAGE),
        (None, Some(t)) => t.to_string(),
        (None, None) => match pkg_name {
            Some(p) if rule_id == UNIDENTIFIED => {
                format!("Trivy lists a vulnerability in {p} without naming it")
            }
            Some(p) => format!("{rule_id} in {p}"),
            None => rule_id.clone(),
        },
    };

    let mut f = Finding::new(SCANNER, scope.dependency, rule_id, severity, message);
    f.aliases = aliases;
    f.severity_source = Some(source.into());
    f.title = title.map(Into::into);
    f.help_uri = non_empty(&v.primary_url)
        .or_else(|| v.references.iter().flatten().find_map(|u| non_empty_str(u)))
        .map(Into::into);
    f.cwe = cwes(v.cwe_ids.iter().flatten().map(|s| s.as_ref()));
    if let Some(name) = pkg_name {
        let purl_kind = v
            .pkg_identifier
            .as_ref()
            .and_then(|p| p.purl.as_deref())
            .and_then(purl_type);
        let eco = match (purl_kind, non_empty(&r.kind)) {
            (Some(t), _) | (None, Some(t)) => ecosystem(t),
            (None, None) => "unknown".to_string(),
        };
        f.package = Some(Package {
            ecosystem: eco,
            name: name.to_string(),
            version: non_empty(&v.installed_version).map(str::to_string),
            fixed_version: non_empty(&v.fixed_version).map(str::to_string),
        });
    }
    let path = match (scope.resource, non_empty(&v.pkg_path)) {
        (None, Some(p)) => clean_path(p, None),
        _ => result_path.to_string(),
    };
    if !path.is_empty() {
        f.location = Some(Location {
            path,
            ..Location::default()
        });
    }
    // The vendor's status: `not_affected` means the package as installed
    // is not affected; every other status (`affected`, `fixed`,
    // `under_investigation`, `will_not_fix`, `fix_deferred`,
    // `end_of_life`, `unknown`) leaves the finding open.
    if non_empty(&v.status).is_some_and(|s| s.eq_ignore_ascii_case("not_affected")) {
        f.disposition = Some(Box::new(Disposition {
            state: DispositionState::NotAffected,
            kind: Some("vendor".into()),
            status: Some("not_affected".into()),
            justification: None,
        }));
    }
    Some(f)
}

/// Trivy's own severity, unless it is missing or `UNKNOWN`; then the CVSS
/// score of the severity source, of NVD, or of any vendor.
fn vulnerability_severity(v: &Vulnerability<'_>) -> (Severity, String) {
    let label = non_empty(&v.severity);
    if let Some(l) = label.filter(|l| !l.eq_ignore_ascii_case("unknown")) {
        if let Some(s) = Severity::from_label(l) {
            return (s, format!("trivy:{l}"));
        }
    }
    if let Some(score) = cvss_score(v) {
        return (Severity::from_cvss(score), format!("cvss:{score}"));
    }
    match label {
        Some(l) => (
            Severity::from_label(l).unwrap_or(Severity::Info),
            format!("trivy:{l}"),
        ),
        None => (Severity::Info, "trivy:none".to_string()),
    }
}

fn cvss_score(v: &Vulnerability<'_>) -> Option<f64> {
    let map = v.cvss.as_ref()?;
    let score = |c: &Cvss| {
        [c.v40, c.v3, c.v2]
            .into_iter()
            .flatten()
            .find(|s| s.is_finite())
    };
    let preferred = [non_empty(&v.severity_source), Some("nvd"), Some("ghsa")];
    preferred
        .into_iter()
        .flatten()
        .find_map(|vendor| map.get(vendor).and_then(score))
        .or_else(|| map.values().find_map(score))
}

fn misconfiguration(m: &Misconfiguration<'_>, path: &str, scope: &Scope<'_>) -> Finding {
    let rule_id = non_empty(&m.avd_id)
        .or(non_empty(&m.id))
        .unwrap_or("unknown");
    let (severity, source) = label_severity(non_empty(&m.severity));
    let title = non_empty(&m.title);
    let message = non_empty(&m.message)
        .or(title)
        .map(str::to_string)
        .or_else(|| non_empty(&m.description).map(|d| shorten(d, MAX_MESSAGE)))
        .unwrap_or_else(|| rule_id.to_string());
    let mut f = Finding::new(SCANNER, Category::Iac, rule_id, severity, message);
    f.severity_source = Some(source.into());
    f.title = title.map(Into::into);
    f.help_uri = non_empty(&m.primary_url)
        .or_else(|| m.references.iter().flatten().find_map(|u| non_empty_str(u)))
        .map(Into::into);
    let cause = m.cause.as_ref();
    let start = cause.and_then(|c| c.start_line);
    let end = cause.and_then(|c| c.end_line);
    f.location = location(path, start, end);
    let line = start.and_then(|n| code_line(cause?.code.as_ref()?, n));
    if let Some(l) = line {
        f.evidence.snippet = Some(l.trim_end().to_string());
    }
    set_line_content(&mut f, line, scope.salt);
    f
}

fn secret(s: &Secret<'_>, path: &str, scope: &Scope<'_>) -> Finding {
    let rule_id = non_empty(&s.rule_id).unwrap_or("unknown");
    let (severity, source) = label_severity(non_empty(&s.severity));
    let title = non_empty(&s.title);
    let message = match title {
        Some(t) => t.to_string(),
        None => format!("secret matching rule {rule_id}"),
    };
    let mut f = Finding::new(SCANNER, Category::Secret, rule_id, severity, message);
    f.severity_source = Some(source.into());
    f.title = title.map(Into::into);
    f.location = location(path, s.start_line, s.end_line);
    // `Match` is the (masked) line; it is only ever kept salted and hashed.
    let line = s
        .matched
        .as_deref()
        .and_then(|m| m.lines().next())
        .or_else(|| code_line(s.code.as_ref()?, s.start_line?));
    set_line_content(&mut f, line, scope.salt);
    f
}

/// The content of line `number` among a code excerpt's lines.
fn code_line<'c>(code: &'c Code<'_>, number: i64) -> Option<&'c str> {
    code.lines
        .iter()
        .flatten()
        .find(|l| l.number == Some(number))
        .and_then(|l| l.content.as_deref())
}

fn location(path: &str, start: Option<i64>, end: Option<i64>) -> Option<Location> {
    if path.is_empty() {
        return None;
    }
    // Trivy writes 0 when it does not know the line.
    let line = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok()).filter(|&n| n > 0);
    Some(Location {
        path: path.to_string(),
        start_line: line(start),
        end_line: line(end),
        ..Location::default()
    })
}

fn label_severity(label: Option<&str>) -> (Severity, String) {
    match label {
        Some(l) => (
            Severity::from_label(l).unwrap_or(Severity::Info),
            format!("trivy:{l}"),
        ),
        None => (Severity::Info, "trivy:none".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A report of the shared corpus; `None` (the test skips) without it.
    fn corpus(name: &str) -> Option<Vec<u8>> {
        crate::testing::shared_bytes(&format!("scans/trivy/{name}"), name)
    }

    fn decode(bytes: &[u8]) -> Result<Report, DecodeError> {
        crate::testing::decode_with(&TrivyDecoder, bytes)
    }

    fn decode_corpus(name: &str) -> Option<Report> {
        Some(decode(&corpus(name)?).unwrap_or_else(|e| panic!("{name}: {e}")))
    }

    /// (file, MANIFEST raw count, skipped records, coverage expected).
    const TABLE: &[(&str, usize, usize, bool)] = &[
        ("all_statuses.json", 8, 0, true),
        ("cvss_severity_source.json", 2, 0, true),
        ("cvssv4_severity_source.json", 3, 0, true),
        ("issue_10991.json", 37, 0, true),
        ("issue_14136.json", 1, 0, true),
        ("issue_9092.json", 1, 0, true),
        ("issue_9170.json", 37, 0, true),
        ("issue_9263.json", 1, 0, true),
        ("issue_9333.json", 13, 0, true),
        ("kubernetes.json", 20, 0, true),
        (
            "kubernetes_fabricated_internal_duplicates.json",
            13,
            0,
            true,
        ),
        (
            "kubernetes_fabricated_internal_duplicates_subset.json",
            5,
            0,
            true,
        ),
        ("kubernetes_fabricated_subset.json", 13, 0, true),
        ("legacy_many_vulns.json", 93, 0, true),
        ("legacy_no_vuln.json", 0, 0, true),
        // One entry has only PkgName: a finding of the unidentified rule.
        ("legacy_trivy_mix.json", 7, 0, true),
        // Licenses are not findings, and a license scan covers nothing.
        ("license_scheme.json", 0, 0, false),
        ("misconfigurations_and_secrets.json", 5, 0, true),
        ("scheme_2_many_vulns.json", 5, 0, true),
        ("scheme_2_no_vuln.json", 0, 0, true),
        ("severity_prio.json", 2, 0, true),
    ];

    #[test]
    fn corpus_counts() {
        for &(name, raw, skipped, covered) in TABLE {
            let Some(r) = decode_corpus(name) else {
                return;
            };
            assert_eq!(r.skipped.len(), skipped, "{name}: {:?}", r.skipped);
            assert_eq!(r.findings.len() + r.skipped.len(), raw, "{name}");
            assert_eq!(!r.coverage.is_empty(), covered, "{name}: {:?}", r.coverage);
            for f in &r.findings {
                assert_eq!(f.scanner, "trivy");
                assert!(r.coverage.contains(&("trivy".into(), f.category)), "{name}");
                if f.category.is_dependency() {
                    assert!(f.package.is_some(), "{name}: {f:?}");
                }
            }
        }
    }

    #[test]
    fn image_vulnerability_fields() {
        let Some(r) = decode_corpus("scheme_2_many_vulns.json") else {
            return;
        };
        assert_eq!(
            r.target.as_ref().map(|t| t.to_string()).as_deref(),
            Some("image:teamdojo")
        );
        assert_eq!(
            r.coverage.iter().collect::<Vec<_>>(),
            vec![&("trivy".to_string(), Category::Container)]
        );
        let f = r
            .findings
            .iter()
            .find(|f| f.rule_id == "CVE-2018-1324")
            .expect("CVE-2018-1324");
        assert_eq!(f.category, Category::Container);
        let p = f.package.as_ref().unwrap();
        assert_eq!(p.ecosystem, "maven");
        assert_eq!(p.name, "org.apache.commons:commons-compress");
        assert_eq!(f.path(), Some("app/libs/commons-compress-1.14"));
    }

    #[test]
    fn filesystem_vulnerability_misconfiguration_and_secrets() {
        let Some(r) = decode_corpus("misconfigurations_and_secrets.json") else {
            return;
        };
        assert!(r.target.is_none(), "ArtifactName `.` names no target");
        let cats: Vec<Category> = r.findings.iter().map(|f| f.category).collect();
        assert_eq!(
            cats,
            [
                Category::Sca,
                Category::Sca,
                Category::Iac,
                Category::Secret,
                Category::Secret
            ]
        );
        for c in [Category::Sca, Category::Iac, Category::Secret] {
            assert!(r.coverage.contains(&("trivy".into(), c)));
        }

        let v = &r.findings[0];
        assert_eq!(v.rule_id, "CVE-2021-33503");
        assert_eq!(v.severity, Severity::High);
        assert_eq!(v.severity_source.as_deref(), Some("trivy:HIGH"));
        assert_eq!(v.path(), Some("requirements.txt"));
        assert_eq!(v.cwe, vec!["CWE-400"]);
        assert_eq!(
            v.help_uri.as_deref(),
            Some("https://avd.aquasec.com/nvd/cve-2021-33503")
        );
        assert_eq!(
            v.package,
            Some(Package {
                ecosystem: "pypi".into(),
                name: "urllib3".into(),
                version: Some("1.26.3".into()),
                fixed_version: Some("1.26.5".into()),
            })
        );

        let m = &r.findings[2];
        assert_eq!(m.rule_id, "DS002");
        assert_eq!(m.severity, Severity::High);
        assert_eq!(m.path(), Some("Dockerfile"));
        assert_eq!(m.title.as_deref(), Some("Image user should not be 'root'"));

        let s = &r.findings[3];
        assert_eq!(s.rule_id, "github-pat");
        assert_eq!(s.severity, Severity::Critical);
        assert_eq!(s.path(), Some("Dockerfile"));
        assert_eq!(s.start_line(), Some(24));
        assert!(s.content_hash.is_some());
        for f in &r.findings[3..] {
            let dbg = format!("{f:?}");
            assert!(!dbg.contains("GITHUB_PAT"), "{dbg}");
            assert!(f.evidence.snippet.is_none());
        }
    }

    #[test]
    fn misconfiguration_line_content() {
        let Some(r) = decode_corpus("issue_14136.json") else {
            return;
        };
        let f = &r.findings[0];
        assert_eq!(f.rule_id, "AVD-AWS-0143");
        assert_eq!(f.category, Category::Iac);
        assert_eq!(f.severity, Severity::Low);
        assert_eq!(f.path(), Some("../../aws-credentials/main.tf"));
        assert_eq!(f.start_line(), Some(20));
        assert_eq!(
            f.content_hash,
            Some(crate::fingerprint::line_hash(
                r#"resource "aws_iam_user" "this" {"#
            ))
        );
    }

    #[test]
    fn kubernetes_reports() {
        let Some(r) = decode_corpus("kubernetes.json") else {
            return;
        };
        assert!(r.target.is_none());
        let v = &r.findings[0];
        assert_eq!(v.category, Category::Container);
        assert_eq!(v.rule_id, "CVE-2020-27350");
        assert_eq!(v.aliases, vec!["DSA-4808-1"]);
        assert_eq!(v.path(), Some("default/Deployment/redis-follower"));
        assert_eq!(
            v.target.as_ref().map(ToString::to_string).as_deref(),
            Some(
                "k8s:arn:aws:eks:us-east-1:576036489467:cluster/monitoring-test-cluster/\
                 default/Deployment/redis-follower"
            )
        );
        // The services have no finding, and are scanned all the same.
        assert_eq!(r.targets.len(), 4);
        assert_eq!(v.package.as_ref().unwrap().ecosystem, "deb");
        let m = r
            .findings
            .iter()
            .find(|f| f.category == Category::Iac)
            .unwrap();
        assert_eq!(m.rule_id, "KSV001");
        assert_eq!(m.path(), Some("default/Deployment/redis-follower"));
        assert_eq!(m.start_line(), Some(132));
        assert!(m.content_hash.is_some());

        let Some(r) = decode_corpus("issue_9170.json") else {
            return;
        };
        assert!(r.findings.iter().all(|f| f.category == Category::Iac));
        assert_eq!(r.findings[0].rule_id, "AVD-KSV-0116");
        assert_eq!(r.findings[0].severity, Severity::Low);
        assert_eq!(r.findings[0].path(), Some("default/Service/kubernetes"));
        assert_eq!(
            r.coverage.iter().collect::<Vec<_>>(),
            vec![&("trivy".to_string(), Category::Iac)]
        );
    }

    #[test]
    fn an_entry_naming_neither_vulnerability_nor_package_is_skipped_with_where() {
        let text = br#"[{"Target":"app/go.sum","Type":"gomod","Vulnerabilities":[
              {"PkgName":"golang.org/x/net","InstalledVersion":"0.1.0"},
              {"InstalledVersion":"1.0.0","Severity":"HIGH"}]}]"#;
        let r = decode(text).unwrap();
        assert_eq!(r.findings.len(), 1);
        assert_eq!(r.findings[0].rule_id, UNIDENTIFIED);
        assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
        assert!(
            r.skipped[0].contains("Vulnerabilities[1] (app/go.sum)")
                && r.skipped[0].contains("neither VulnerabilityID nor PkgName"),
            "{:?}",
            r.skipped
        );
    }

    #[test]
    fn legacy_reports() {
        let Some(r) = decode_corpus("legacy_trivy_mix.json") else {
            return;
        };
        // The entry with only PkgName is a finding of its package, with a
        // rule saying it was not named and no severity claimed.
        let unnamed: Vec<_> = r
            .findings
            .iter()
            .filter(|f| f.rule_id == UNIDENTIFIED)
            .collect();
        assert_eq!(unnamed.len(), 1, "{:?}", r.findings);
        let f = unnamed[0];
        assert_eq!(f.package.as_ref().unwrap().name, "simplito/elliptic-php");
        assert_eq!(f.package.as_ref().unwrap().ecosystem, "composer");
        assert_eq!(f.severity, Severity::Info);
        assert_eq!(f.path(), Some("php-app/composer.lock"));
        assert!(f.message.contains("without naming it"), "{}", f.message);
        // An alpine result marks the artifact as an image.
        assert!(r.findings.iter().all(|f| f.category == Category::Container));
        let lodash = r.findings.iter().find(|f| f.rule_id != UNIDENTIFIED).unwrap();
        assert_eq!(lodash.rule_id, "CVE-2018-16487");
        assert_eq!(lodash.package.as_ref().unwrap().ecosystem, "npm");
        assert_eq!(lodash.path(), Some("node-app/package-lock.json"));

        let Some(r) = decode_corpus("legacy_no_vuln.json") else {
            return;
        };
        assert!(r.findings.is_empty());
        assert!(r.coverage.contains(&("trivy".into(), Category::Sca)));
    }

    #[test]
    fn severity_falls_back_to_cvss() {
        let Some(r) = decode_corpus("severity_prio.json") else {
            return;
        };
        assert_eq!(r.findings[0].severity, Severity::Low);
        assert_eq!(r.findings[1].severity, Severity::Critical);
        let doc = r#"{"SchemaVersion":2,"Results":[{"Target":"go.sum","Class":"lang-pkgs","Type":"gomod",
            "Vulnerabilities":[
              {"VulnerabilityID":"GHSA-aaaa-bbbb-cccc","PkgName":"x","SeveritySource":"ghsa",
               "CVSS":{"ghsa":{"V3Score":7.5},"nvd":{"V3Score":9.8}}},
              {"VulnerabilityID":"CVE-2020-1","PkgName":"x","Severity":"UNKNOWN","CVSS":{"redhat":{"V2Score":5}}},
              {"VulnerabilityID":"CVE-2020-2","PkgName":"x","Severity":"SPICY"},
              {"VulnerabilityID":"CVE-2020-3","PkgName":"x"}]}]}"#;
        let r = decode(doc.as_bytes()).unwrap();
        let got: Vec<(Severity, &str)> = r
            .findings
            .iter()
            .map(|f| (f.severity, f.severity_source.as_deref().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                (Severity::High, "cvss:7.5"),
                (Severity::Medium, "cvss:5"),
                (Severity::Info, "trivy:SPICY"),
                (Severity::Info, "trivy:none"),
            ]
        );
        assert_eq!(r.findings[0].package.as_ref().unwrap().ecosystem, "golang");
    }

    #[test]
    fn passed_checks_are_skipped_and_targets_named() {
        let doc = r#"{"SchemaVersion":2,"ArtifactName":"https://github.com/acme/api","ArtifactType":"repository",
            "Metadata":{"Commit":"abc123","Branch":"main","Author":"Jane <jane@example.com>"},
            "Results":[{"Target":"main.tf","Class":"config","Type":"terraform","Misconfigurations":[
              {"ID":"AVD-1","Status":"PASS"},{"ID":"AVD-2","Status":"FAIL","Severity":"MEDIUM",
               "CauseMetadata":{"StartLine":3,"EndLine":4,"Code":{"Lines":[{"Number":3,"Content":"  acl = \"public\""}]}}}]}]}"#;
        let r = decode(doc.as_bytes()).unwrap();
        assert_eq!(r.findings.len(), 1);
        assert_eq!(r.skipped.len(), 1);
        assert!(r.skipped[0].contains("AVD-1"));
        assert_eq!(
            r.target.as_ref().unwrap().to_string(),
            "repo:github.com/acme/api"
        );
        assert_eq!(r.commit.as_deref(), Some("abc123"));
        assert_eq!(r.git_ref.as_deref(), Some("main"));
        let f = &r.findings[0];
        assert_eq!(
            (f.start_line(), f.location.as_ref().unwrap().end_line),
            (Some(3), Some(4))
        );
        assert_eq!(
            f.content_hash,
            Some(crate::fingerprint::line_hash("acl = \"public\""))
        );
        assert!(!format!("{r:?}").contains("jane"));
    }

    #[test]
    fn wrong_shapes_are_named() {
        for (doc, needle) in [
            (r#"{"Results": 5}"#, "expected a sequence"),
            (r#"{"matches": []}"#, "Results"),
            (r#"[{"Target": 1}]"#, "invalid type"),
            ("5", "invalid type"),
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
            "misconfigurations_and_secrets.json",
            "kubernetes.json",
            "legacy_trivy_mix.json",
        ] {
            let Some(bytes) = corpus(name) else {
                return;
            };
            crate::testing::assert_truncations_are_syntax_errors(name, &bytes, decode);
        }
        assert_eq!(decode(b"").unwrap_err().reason(), "syntax");
    }

    /// A report of this repository's own fixtures (`tests/fixtures/trivy`,
    /// hand-written after Trivy's JSON format; see its README): always
    /// present, so the tests below run on any clone.
    fn fixture(name: &str) -> Vec<u8> {
        crate::testing::fixture(&format!("trivy/{name}"))
    }

    fn decode_fixture(name: &str) -> Report {
        decode(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn rules_help_is_the_advisorys_description_or_the_checks_with_its_resolution() {
        let r = decode_fixture("trivy-repo-web-api.json");
        assert_eq!(
            r.rule_help.get("AVD-AWS-0088").map(|h| &**h),
            Some(
                "Objects stored in a bucket without default encryption are kept in clear text at rest.\n\nResolution: Configure default server-side encryption for the bucket"
            )
        );
        let r = decode_fixture("trivy-fs-web-api.json");
        let help = r.rule_help.get("CVE-2023-50782").expect("a description");
        assert!(help.starts_with("RSA decryption in python-cryptography"), "{help}");
        // Every finding with help is described under its own id.
        assert!(r.rule_help.len() <= r.findings.len());
    }

    /// (fixture, findings, skipped, coverage).
    const FIXTURES: &[(&str, usize, usize, &[Category])] = &[
        (
            "trivy-image-web-api-1.4.json",
            12,
            0,
            &[Category::Container],
        ),
        ("trivy-image-web-api-1.5.json", 5, 0, &[Category::Container]),
        (
            "trivy-fs-web-api.json",
            10,
            0,
            &[Category::Sca, Category::Iac, Category::Secret],
        ),
        (
            "trivy-repo-web-api.json",
            3,
            2,
            &[Category::Iac, Category::Secret],
        ),
        (
            "trivy-image-static-site-clean.json",
            0,
            0,
            &[Category::Container],
        ),
    ];

    #[test]
    fn fixture_counts() {
        for &(name, found, skipped, covered) in FIXTURES {
            let bytes = fixture(name);
            assert_eq!(
                super::super::sniff(&bytes).unwrap(),
                Format::Trivy,
                "{name}"
            );
            let r = decode_fixture(name);
            assert_eq!(r.findings.len(), found, "{name}");
            assert_eq!(r.skipped.len(), skipped, "{name}: {:?}", r.skipped);
            let want: BTreeSet<(String, Category)> =
                covered.iter().map(|&c| ("trivy".to_string(), c)).collect();
            assert_eq!(r.coverage, want, "{name}");
            for f in &r.findings {
                assert_eq!(f.scanner, "trivy");
                assert!(r.coverage.contains(&("trivy".into(), f.category)), "{name}");
                assert!(f.target.is_none(), "{name}: {f:?}");
                if f.category.is_dependency() {
                    let p = f.package.as_ref().expect("package");
                    assert!(!p.name.is_empty() && p.version.is_some(), "{name}: {p:?}");
                }
            }
        }
    }

    #[test]
    fn fixture_image_vulnerability_fields() {
        let r = decode_fixture("trivy-image-web-api-1.4.json");
        let target = r.target.clone().expect("an image names its target");
        assert_eq!(target.to_string(), "image:ghcr.io/acme/web-api");
        assert_eq!((r.commit.as_deref(), r.git_ref.as_deref()), (None, None));
        assert!(r.findings.iter().all(|f| f.category == Category::Container));
        let count = |s: Severity| r.findings.iter().filter(|f| f.severity == s).count();
        assert_eq!(
            [
                Severity::Critical,
                Severity::High,
                Severity::Medium,
                Severity::Low
            ]
            .map(count),
            [1, 2, 5, 4]
        );
        let pkg = |i: usize| r.findings[i].package.clone().unwrap();

        let apt = &r.findings[0];
        assert_eq!(apt.rule_id, "CVE-2011-3374");
        assert_eq!(apt.severity_source.as_deref(), Some("trivy:LOW"));
        assert_eq!(pkg(0).fixed_version, None, "status affected: no fix");

        let glibc = &r.findings[2];
        assert_eq!(glibc.rule_id, "CVE-2024-2961");
        assert_eq!(glibc.aliases, vec!["DSA-5673-1"]);
        assert_eq!(glibc.severity, Severity::High);
        assert_eq!(glibc.severity_source.as_deref(), Some("trivy:HIGH"));
        assert_eq!(glibc.cwe, vec!["CWE-787"]);
        assert_eq!(
            glibc.help_uri.as_deref(),
            Some("https://avd.aquasec.com/nvd/cve-2024-2961")
        );
        assert_eq!(
            glibc.title.as_deref(),
            Some("glibc: iconv() may write past the output buffer when converting to ISO-2022-CN-EXT")
        );
        assert!(glibc
            .message
            .starts_with("When iconv() in the GNU C Library"));
        // OS packages are located at the result's target.
        assert_eq!(glibc.path(), Some("ghcr.io/acme/web-api:1.4 (debian 12.5)"));
        assert_eq!(
            pkg(2),
            Package {
                ecosystem: "deb".into(),
                name: "libc6".into(),
                version: Some("2.36-9+deb12u4".into()),
                fixed_version: Some("2.36-9+deb12u6".into()),
            }
        );

        // One CVE in two packages.
        for (i, name) in [(3, "libssl3"), (5, "openssl")] {
            assert_eq!(r.findings[i].rule_id, "CVE-2024-0727");
            assert_eq!(pkg(i).name, name);
            assert_eq!(pkg(i).fixed_version.as_deref(), Some("3.0.13-1~deb12u1"));
        }

        // will_not_fix: critical, no fixed version, epoch kept.
        let zlib = &r.findings[6];
        assert_eq!(zlib.rule_id, "CVE-2023-45853");
        assert_eq!(zlib.severity, Severity::Critical);
        assert_eq!(
            pkg(6),
            Package {
                ecosystem: "deb".into(),
                name: "zlib1g".into(),
                version: Some("1:1.2.13.dfsg-1".into()),
                fixed_version: None,
            }
        );

        // A GHSA-only advisory keeps its GHSA id, without aliases.
        let ghsa = &r.findings[8];
        assert_eq!(ghsa.rule_id, "GHSA-v8gr-m533-ghj9");
        assert!(ghsa.aliases.is_empty());
        assert_eq!(
            pkg(8),
            Package {
                ecosystem: "pypi".into(),
                name: "cryptography".into(),
                version: Some("41.0.3".into()),
                fixed_version: Some("41.0.4".into()),
            }
        );
        assert_eq!(
            ghsa.path(),
            Some("opt/venv/lib/python3.11/site-packages/cryptography-41.0.3.dist-info/METADATA")
        );

        // One CVE in one package at two paths: two findings, two
        // fingerprints (distinct installs stay distinct).
        let (a, b) = (&r.findings[10], &r.findings[11]);
        assert_eq!(
            (a.rule_id.as_str(), pkg(10).name.as_str()),
            ("CVE-2024-37891", "urllib3")
        );
        assert_eq!(
            (b.rule_id.as_str(), pkg(11).name.as_str()),
            ("CVE-2024-37891", "urllib3")
        );
        assert_ne!(a.path(), b.path());
        assert_eq!(pkg(10).fixed_version.as_deref(), Some("1.26.19, 2.2.2"));
        assert_eq!(crate::fingerprint::assign(r.findings, &target).len(), 12);
    }

    #[test]
    fn fixture_filesystem_vulnerability_misconfiguration_and_secrets() {
        let r = decode_fixture("trivy-fs-web-api.json");
        assert!(r.target.is_none(), "ArtifactName `.` names no target");
        let cats: Vec<Category> = r.findings.iter().map(|f| f.category).collect();
        assert_eq!(
            cats,
            [
                [Category::Sca; 4].as_slice(),
                &[Category::Iac; 3],
                &[Category::Secret; 3]
            ]
            .concat()
        );

        let v = &r.findings[0];
        assert_eq!(v.rule_id, "CVE-2023-50782");
        assert_eq!(v.path(), Some("requirements.txt"));
        assert_eq!(
            v.package,
            Some(Package {
                ecosystem: "pypi".into(),
                name: "cryptography".into(),
                version: Some("41.0.3".into()),
                fixed_version: Some("42.0.0".into()),
            })
        );

        // Misconfigurations are named by AVDID.
        let rules: Vec<&str> = r.findings[4..7]
            .iter()
            .map(|f| f.rule_id.as_str())
            .collect();
        assert_eq!(rules, ["AVD-DS-0002", "AVD-DS-0013", "AVD-DS-0026"]);
        let root = &r.findings[4];
        assert_eq!(root.severity, Severity::High);
        assert_eq!(root.path(), Some("Dockerfile"));
        assert_eq!(root.start_line(), None);
        assert_eq!(root.content_hash, None, "no line, no line hash");
        let m = &r.findings[5];
        assert_eq!(m.severity, Severity::Medium);
        assert_eq!(m.start_line(), Some(11));
        let line = "RUN cd /app && /opt/venv/bin/pip install --no-cache-dir -r requirements.txt";
        assert_eq!(m.content_hash, Some(crate::fingerprint::line_hash(line)));
        assert_eq!(m.evidence.snippet.as_deref(), Some(line));

        let salt = DecodeContext::default().secret_salt;
        let secrets: Vec<(&str, Severity, Option<&str>, Option<u32>)> = r.findings[7..]
            .iter()
            .map(|f| (f.rule_id.as_str(), f.severity, f.path(), f.start_line()))
            .collect();
        assert_eq!(
            secrets,
            [
                (
                    "aws-access-key-id",
                    Severity::Critical,
                    Some("deploy/staging.env"),
                    Some(3)
                ),
                (
                    "aws-secret-access-key",
                    Severity::Critical,
                    Some("deploy/staging.env"),
                    Some(4)
                ),
                (
                    "github-pat",
                    Severity::Critical,
                    Some("scripts/release.sh"),
                    Some(12)
                ),
            ]
        );
        let s = &r.findings[7];
        assert_eq!(s.title.as_deref(), Some("AWS Access Key ID"));
        assert_eq!(s.message, "AWS Access Key ID");
        assert_eq!(
            s.content_hash,
            Some(crate::fingerprint::line_hash_salted(
                "AWS_ACCESS_KEY_ID=********************",
                &salt
            ))
        );
        for f in &r.findings[7..] {
            assert!(f.evidence.snippet.is_none() && f.evidence.secret_hash.is_none());
            assert!(f.content_hash.is_some());
        }
        // Neither the secrets nor the (masked) lines leave the decoder.
        let dbg = format!("{r:?}");
        for never in [
            "AKIACUSTODYEXAMPLE23",
            "ghp_CustodyFixtureFakeToken",
            "AWS_ACCESS_KEY_ID=",
            "AWS_SECRET_ACCESS_KEY=",
            "GH_TOKEN",
            "****",
        ] {
            assert!(!dbg.contains(never), "{never} in {dbg}");
        }
    }

    #[test]
    fn fixture_repository_target_and_passed_checks() {
        let r = decode_fixture("trivy-repo-web-api.json");
        assert_eq!(
            r.target.as_ref().map(|t| t.to_string()).as_deref(),
            Some("repo:github.com/acme/web-api")
        );
        assert_eq!(
            r.commit.as_deref(),
            Some("d2ac911d10e83c2bccadebfc77c20a5b8c70c73b")
        );
        assert_eq!(r.git_ref.as_deref(), Some("main"));
        assert!(r.skipped[0].contains("AVD-AWS-0086") && r.skipped[0].contains("PASS"));
        assert!(r.skipped[1].contains("AVD-AWS-0087") && r.skipped[1].contains("PASS"));

        let rules: Vec<(&str, Category, Severity)> = r
            .findings
            .iter()
            .map(|f| (f.rule_id.as_str(), f.category, f.severity))
            .collect();
        assert_eq!(
            rules,
            [
                ("AVD-AWS-0088", Category::Iac, Severity::High),
                ("AVD-AWS-0090", Category::Iac, Severity::Medium),
                ("slack-web-hook", Category::Secret, Severity::Medium),
            ]
        );
        let m = &r.findings[0];
        assert_eq!(m.path(), Some("infra/s3.tf"));
        let loc = m.location.as_ref().unwrap();
        assert_eq!((loc.start_line, loc.end_line), (Some(1), Some(4)));
        assert_eq!(
            m.content_hash,
            Some(crate::fingerprint::line_hash(
                r#"resource "aws_s3_bucket" "uploads" {"#
            ))
        );
        // Two checks on one block: same line hash, two fingerprints.
        assert_eq!(m.content_hash, r.findings[1].content_hash);
        let s = &r.findings[2];
        assert_eq!(s.path(), Some(".github/workflows/notify.yml"));
        assert_eq!(s.start_line(), Some(12));
        assert!(s.content_hash.is_some() && s.evidence.snippet.is_none());
        let target = r.target.clone().unwrap();
        assert_eq!(
            crate::fingerprint::assign(r.findings.clone(), &target).len(),
            3
        );
        // Author, committer, the webhook and its masked line stay out.
        let dbg = format!("{r:?}");
        for never in [
            "Dana",
            "dana.whitfield",
            "noreply",
            "hooks.slack.com",
            "SLACK_WEBHOOK_URL",
            "****",
        ] {
            assert!(!dbg.contains(never), "{never} in {dbg}");
        }
    }

    #[test]
    fn fixture_clean_image_has_coverage_and_no_findings() {
        let r = decode_fixture("trivy-image-static-site-clean.json");
        assert!(r.findings.is_empty() && r.skipped.is_empty());
        assert_eq!(
            r.target.as_ref().map(|t| t.to_string()).as_deref(),
            Some("image:ghcr.io/acme/static-site")
        );
        assert_eq!(
            r.coverage.iter().collect::<Vec<_>>(),
            vec![&("trivy".to_string(), Category::Container)]
        );
    }

    #[test]
    fn fixture_cluster_resources_are_targets() {
        let r = decode_fixture("k8s/trivy-k8s-minikube-1.json");
        let targets: Vec<String> = r.targets.iter().map(ToString::to_string).collect();
        assert_eq!(
            targets,
            [
                "k8s:minikube/default/Deployment/app",
                "k8s:minikube/default/Service/app",
                "k8s:minikube/payments/Deployment/api",
            ]
        );
        assert!(r.findings.iter().all(|f| f.target.is_some()));
        let mut r = r;
        let parts = r.split(None).unwrap();
        let counts: Vec<(String, usize)> = parts
            .iter()
            .map(|p| (p.target.to_string(), p.findings.len()))
            .collect();
        assert_eq!(
            counts,
            [
                ("k8s:minikube/default/Deployment/app".to_string(), 3),
                ("k8s:minikube/default/Service/app".to_string(), 0),
                ("k8s:minikube/payments/Deployment/api".to_string(), 2),
            ]
        );
        // A cluster report without a cluster name names no resource
        // target: its findings fall to the scan's target, as before.
        let r = decode(
            br#"{"Vulnerabilities":[{"Namespace":"a","Kind":"Pod","Name":"p","Results":[
                {"Target":"x (alpine 3.19)","Class":"os-pkgs","Type":"alpine",
                 "Vulnerabilities":[{"VulnerabilityID":"CVE-2024-1","PkgName":"musl","InstalledVersion":"1"}]}]}]}"#,
        )
        .unwrap();
        assert!(r.targets.is_empty());
        assert!(r.findings[0].target.is_none());
    }

    #[test]
    fn fixture_truncated_input_is_an_error() {
        for &(name, ..) in FIXTURES {
            let bytes = fixture(name);
            crate::testing::assert_truncations_are_syntax_errors(name, &bytes, decode);
        }
    }

    /// A complete scan of the same image after a version bump resolves
    /// what it no longer reports and opens what is new.
    #[test]
    fn fixture_rescan_resolves_and_opens() {
        use crate::config::Config;
        use crate::engine::Engine;
        use crate::model::{FindingEventKind as K, ScanMeta};
        use chrono::TimeZone;

        let engine = Engine::new(&Config::default());
        let mut state = crate::lifecycle::State::new();
        let t0 = chrono::Utc.with_ymd_and_hms(2024, 6, 20, 0, 0, 0).unwrap();
        let mut scan = |name: &str, days: i64| {
            let r = decode_fixture(name);
            let meta = ScanMeta {
                scan_id: name.into(),
                target: r.target.clone().unwrap(),
                commit: None,
                git_ref: None,
                complete: true,
                coverage: r.coverage,
                rule_help: Default::default(),
            };
            engine.scan(
                &mut state,
                &meta,
                r.findings,
                t0 + chrono::Duration::days(days),
            )
        };
        let first = scan("trivy-image-web-api-1.4.json", 0);
        assert_eq!(first.findings.len(), 12);
        let usr_local = "usr/local/lib/python3.11/site-packages/urllib3-2.0.7.dist-info/METADATA";
        let kept = first
            .findings
            .iter()
            .find(|e| e.location.as_ref().is_some_and(|l| l.path == usr_local))
            .map(|e| e.fingerprint.clone())
            .unwrap();
        assert!(first.findings.iter().all(|e| e.event == K::Opened));
        let second = scan("trivy-image-web-api-1.5.json", 28);
        let of = |k: K| -> BTreeSet<(String, String)> {
            second
                .findings
                .iter()
                .filter(|e| e.event == k)
                .map(|e| (e.rule_id.clone(), e.package.as_ref().unwrap().name.clone()))
                .collect()
        };
        let pair = |id: &str, name: &str| (id.to_string(), name.to_string());
        // The copy of urllib3 in /opt/venv is gone; the one left in
        // /usr/local keeps its fingerprint: no event at all for it.
        assert!(second.findings.iter().all(|e| e.fingerprint != kept));
        assert!(
            state.targets["image:ghcr.io/acme/web-api"].findings[&kept].status
                == crate::model::Status::Open
        );
        assert_eq!(
            of(K::Resolved),
            [
                pair("CVE-2024-37891", "urllib3"),
                pair("CVE-2024-28085", "bsdutils"),
                pair("CVE-2024-2961", "libc6"),
                pair("CVE-2024-0727", "libssl3"),
                pair("CVE-2024-0727", "openssl"),
                pair("CVE-2023-50782", "cryptography"),
                pair("GHSA-v8gr-m533-ghj9", "cryptography"),
                pair("CVE-2024-35195", "requests"),
            ]
            .into()
        );
        assert_eq!(of(K::Opened), [pair("CVE-2024-6345", "setuptools")].into());
        assert_eq!(second.findings.len(), 9, "nothing updated");
    }

    /// Trivy and Grype scanning the same image: one finding per (CVE,
    /// package) both report, with both tools as its sources.
    #[test]
    fn fixture_trivy_and_grype_of_one_image_agree() {
        use crate::config::Config;
        use crate::engine::Engine;
        use crate::model::{FindingEventKind as K, ScanMeta};
        use chrono::TimeZone;

        let trivy = decode_fixture("trivy-image-web-api-1.4.json");
        let grype_path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/grype/grype-image-web-api-1.4.json"
        );
        let grype_bytes = std::fs::read(grype_path).unwrap_or_else(|e| panic!("{grype_path}: {e}"));
        let grype = Format::Grype
            .decode(&grype_bytes, &DecodeContext::default())
            .unwrap();
        let target = trivy.target.clone().unwrap();
        assert_eq!(grype.target.as_ref(), Some(&target));

        // Fingerprints do not name the scanner: the two reports share 12
        // (urllib3's two installs at the same paths in both).
        let fps = |r: &Report| -> BTreeSet<String> {
            crate::fingerprint::assign(r.findings.clone(), &target)
                .into_iter()
                .map(|(fp, _)| fp)
                .collect()
        };
        let (t, g) = (fps(&trivy), fps(&grype));
        assert_eq!((t.len(), g.len()), (12, 13));
        assert_eq!(t.intersection(&g).count(), 12);
        assert!(t.is_subset(&g));

        // Applied one after the other, each shared finding has both sources.
        let engine = Engine::new(&Config::default());
        let mut state = crate::lifecycle::State::new();
        let now = chrono::Utc.with_ymd_and_hms(2024, 6, 20, 12, 0, 0).unwrap();
        let mut outs = Vec::new();
        for r in [trivy.clone(), grype] {
            let meta = ScanMeta {
                scan_id: String::new(),
                target: target.clone(),
                commit: None,
                git_ref: None,
                complete: true,
                coverage: r.coverage,
                rule_help: Default::default(),
            };
            outs.push(engine.scan(&mut state, &meta, r.findings, now));
        }
        assert_eq!(outs[0].findings.len(), 12);
        // Grype adds its one finding; no severity of a shared one rises.
        let kinds: Vec<(K, &str, &[String])> = outs[1]
            .findings
            .iter()
            .map(|e| (e.event, e.rule_id.as_str(), e.scanners.as_slice()))
            .collect();
        assert_eq!(
            kinds,
            [(K::Opened, "CVE-2024-4032", ["grype".to_string()].as_slice())]
        );
        let records = &state.targets[&target.to_string()].findings;
        assert_eq!(records.len(), 13);
        // One record per (CVE, package, install): trivy's path, as trivy
        // reported first.
        let key = |f: &Finding| {
            (
                f.rule_id.clone(),
                f.package.as_ref().unwrap().name.clone(),
                f.path().map(str::to_string),
            )
        };
        let mut both = BTreeSet::new();
        for (fp, rec) in records {
            let names: Vec<&str> = rec.sources.names().collect();
            if t.contains(fp) {
                assert_eq!(names, ["grype", "trivy"], "{:?}", key(&rec.finding));
                assert_eq!(rec.finding.scanner, "trivy", "the first to report it");
                assert!(both.insert(key(&rec.finding)), "one record per install");
            } else {
                assert_eq!(names, ["grype"]);
                assert_eq!(
                    rec.finding
                        .package
                        .as_ref()
                        .map(|p| (p.ecosystem.as_str(), p.name.as_str())),
                    Some(("generic", "python"))
                );
            }
        }
        let trivy_pairs: BTreeSet<_> = trivy.findings.iter().map(key).collect();
        assert_eq!(both, trivy_pairs);
    }

    #[test]
    fn helpers() {
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abcd", 4), "abcd");
        assert_eq!(shorten("ééééé", 3).chars().count(), 3);
        assert_eq!(
            cwes(["CWE-79", "NVD-CWE-Other", "cwe-89: SQL", "CWE-79"]),
            ["CWE-79", "CWE-89"]
        );
        assert!(is_url_ish("github.com/acme/api"));
        assert!(is_url_ish("git@github.com:acme/api.git"));
        assert!(!is_url_ish("."));
        assert!(!is_url_ish("./src/app"));
    }
}
