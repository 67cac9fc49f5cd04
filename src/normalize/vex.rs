//! VEX documents: CycloneDX VEX (a BOM with `vulnerabilities[]`, each with
//! `analysis.state`, `justification`, `detail` and `affects[].ref`) and
//! OpenVEX (`statements[]` with `vulnerability.name`, `products[]`,
//! `status`, `justification`, `impact_statement`), read as decisions about
//! the findings they name.
//!
//! A statement names a vulnerability (matched against a finding's rule id
//! and aliases) and products. A product is a package URL or an image
//! reference:
//! - a package URL of a package (`pkg:pypi/urllib3@2.0.7`) matches a finding
//!   of that package (ecosystem and name; the version too when the purl has
//!   one), on any target;
//! - an image (`pkg:oci/...`, `pkg:docker/...`, or a plain reference such as
//!   `ghcr.io/acme/web-api:1.4`) matches every finding of the vulnerability
//!   on that image target (tag and digest are versions, not targets), or,
//!   with OpenVEX `subcomponents`, the findings of those packages on it.
//!
//! CycloneDX `affects[].ref` is resolved through the document's components
//! (`bom-ref` to `purl`), else as a BOM-Link (`urn:cdx:...#<ref>`), else
//! taken as written.
//!
//! Statuses: `not_affected` makes a finding `not_affected`; `fixed`
//! (OpenVEX) and `resolved` (CycloneDX) too (the product named contains the
//! fix, so the scanner's report of it does not apply), with the status
//! recorded; `affected` and `exploitable` keep it open (and reopen one an
//! earlier statement made not affected); `under_investigation` and
//! `in_triage` change nothing; CycloneDX `false_positive` makes it a false
//! positive.

use super::util::{ecosystem, purl_type};
use crate::model::{Finding, Target, TargetKind};
use serde::Deserialize;
use std::collections::HashMap;

/// What a statement decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VexDecision {
    /// Not affected (`not_affected`, `fixed`, `resolved`): the status word
    /// is kept.
    NotAffected(String),
    /// Affected (`affected`, `exploitable`).
    Affected,
    /// A false positive (CycloneDX `false_positive`).
    FalsePositive,
    /// Under investigation (`under_investigation`, `in_triage`): nothing.
    Investigating,
}

/// One product a statement is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VexProduct {
    /// A package URL or an image reference.
    pub id: String,
    /// OpenVEX subcomponents: package URLs inside the product.
    pub subcomponents: Vec<String>,
}

/// One statement of a VEX document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VexStatement {
    /// The vulnerability id and its aliases.
    pub vulnerability: Vec<String>,
    /// The products.
    pub products: Vec<VexProduct>,
    /// What it decides.
    pub decision: VexDecision,
    /// The justification and its detail, if any.
    pub justification: Option<String>,
}

/// A VEX document: its kind (`cyclonedx_vex`, `openvex`) and statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VexDocument {
    /// `cyclonedx_vex` or `openvex`.
    pub kind: &'static str,
    /// The statements, in document order.
    pub statements: Vec<VexStatement>,
}

#[derive(Deserialize)]
struct Probe {
    #[serde(default, rename = "@context")]
    context: Option<serde_json::Value>,
    #[serde(default, rename = "bomFormat")]
    bom_format: Option<String>,
}

#[derive(Deserialize)]
struct OpenVex {
    statements: Vec<OpenStatement>,
}

#[derive(Deserialize)]
struct OpenStatement {
    vulnerability: OpenVuln,
    #[serde(default)]
    products: Vec<OpenProduct>,
    status: String,
    #[serde(default)]
    justification: Option<String>,
    #[serde(default)]
    impact_statement: Option<String>,
}

#[derive(Deserialize)]
struct OpenVuln {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
}

#[derive(Deserialize)]
struct OpenProduct {
    #[serde(default, rename = "@id")]
    id: Option<String>,
    #[serde(default)]
    identifiers: Option<Identifiers>,
    #[serde(default)]
    subcomponents: Vec<OpenProduct>,
}

#[derive(Deserialize)]
struct Identifiers {
    #[serde(default)]
    purl: Option<String>,
}

impl OpenProduct {
    fn name(&self) -> Option<String> {
        self.identifiers
            .as_ref()
            .and_then(|i| i.purl.clone())
            .or_else(|| self.id.clone())
            .filter(|s| !s.trim().is_empty())
    }
}

#[derive(Deserialize)]
struct CdxBom {
    #[serde(default)]
    metadata: Option<CdxMetadata>,
    #[serde(default)]
    components: Vec<CdxComponent>,
    #[serde(default)]
    vulnerabilities: Vec<CdxVuln>,
}

#[derive(Deserialize)]
struct CdxMetadata {
    #[serde(default)]
    component: Option<CdxComponent>,
}

#[derive(Deserialize)]
struct CdxComponent {
    #[serde(default, rename = "bom-ref")]
    bom_ref: Option<String>,
    #[serde(default)]
    purl: Option<String>,
    #[serde(default)]
    components: Vec<CdxComponent>,
}

#[derive(Deserialize)]
struct CdxVuln {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    references: Vec<CdxReference>,
    #[serde(default)]
    affects: Vec<CdxAffects>,
    #[serde(default)]
    analysis: Option<CdxAnalysis>,
}

#[derive(Deserialize)]
struct CdxReference {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
struct CdxAffects {
    #[serde(rename = "ref")]
    reference: String,
}

#[derive(Deserialize)]
struct CdxAnalysis {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    justification: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

fn joined(a: Option<String>, b: Option<String>) -> Option<String> {
    let a = a.filter(|s| !s.trim().is_empty());
    let b = b.filter(|s| !s.trim().is_empty());
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a}: {b}")),
        (a, b) => a.or(b),
    }
}

/// Reads `bytes` as a VEX document: `Ok(None)` when it is not one (not a
/// single JSON object with an OpenVEX `@context` or `bomFormat:
/// CycloneDX`), an error naming what is wrong and where when it is one of
/// the wrong shape.
pub fn parse(bytes: &[u8]) -> Result<Option<VexDocument>, String> {
    let Ok(probe) = serde_json::from_slice::<Probe>(bytes) else {
        return Ok(None);
    };
    let openvex = probe
        .context
        .as_ref()
        .and_then(serde_json::Value::as_str)
        .is_some_and(|c| c.contains("openvex"));
    let cyclonedx = probe
        .bom_format
        .as_deref()
        .is_some_and(|f| f.eq_ignore_ascii_case("CycloneDX"));
    let err = |what: &str, e: serde_json::Error| format!("{what}: {}", super::json_error(&e));
    if openvex {
        let doc: OpenVex = serde_json::from_slice(bytes).map_err(|e| err("OpenVEX document", e))?;
        let mut statements = Vec::new();
        for (i, s) in doc.statements.into_iter().enumerate() {
            let at = format!("OpenVEX statements[{i}]");
            let name = s
                .vulnerability
                .name
                .filter(|n| !n.trim().is_empty())
                .ok_or_else(|| format!("{at}: vulnerability.name is missing"))?;
            let decision = match s.status.as_str() {
                "not_affected" | "fixed" => VexDecision::NotAffected(s.status.clone()),
                "affected" => VexDecision::Affected,
                "under_investigation" => VexDecision::Investigating,
                other => {
                    return Err(format!(
                        "{at}: unknown status {other:?} (expected not_affected, affected, fixed \
                         or under_investigation)"
                    ))
                }
            };
            let mut products = Vec::new();
            for (j, p) in s.products.iter().enumerate() {
                let id = p
                    .name()
                    .ok_or_else(|| format!("{at}.products[{j}]: no @id or purl"))?;
                products.push(VexProduct {
                    id,
                    subcomponents: p
                        .subcomponents
                        .iter()
                        .filter_map(OpenProduct::name)
                        .collect(),
                });
            }
            if products.is_empty() {
                return Err(format!("{at}: no products"));
            }
            let mut vulnerability = vec![name];
            vulnerability.extend(s.vulnerability.aliases);
            statements.push(VexStatement {
                vulnerability,
                products,
                decision,
                justification: joined(s.justification, s.impact_statement),
            });
        }
        return Ok(Some(VexDocument {
            kind: "openvex",
            statements,
        }));
    }
    if cyclonedx {
        let bom: CdxBom =
            serde_json::from_slice(bytes).map_err(|e| err("CycloneDX document", e))?;
        let mut refs: HashMap<String, String> = HashMap::new();
        fn walk(c: &CdxComponent, refs: &mut HashMap<String, String>) {
            if let (Some(r), Some(p)) = (&c.bom_ref, &c.purl) {
                refs.insert(r.clone(), p.clone());
            }
            for sub in &c.components {
                walk(sub, refs);
            }
        }
        for c in bom
            .metadata
            .iter()
            .filter_map(|m| m.component.as_ref())
            .chain(&bom.components)
        {
            walk(c, &mut refs);
        }
        let mut statements = Vec::new();
        for (i, v) in bom.vulnerabilities.into_iter().enumerate() {
            let at = format!("CycloneDX vulnerabilities[{i}]");
            let id =
                v.id.filter(|n| !n.trim().is_empty())
                    .ok_or_else(|| format!("{at}: id is missing"))?;
            let analysis = v
                .analysis
                .ok_or_else(|| format!("{at}: analysis is missing (not a VEX statement)"))?;
            let state = analysis
                .state
                .ok_or_else(|| format!("{at}: analysis.state is missing"))?;
            let decision = match state.as_str() {
                "not_affected" | "resolved" | "resolved_with_pedigree" => {
                    VexDecision::NotAffected(state.clone())
                }
                "exploitable" => VexDecision::Affected,
                "in_triage" => VexDecision::Investigating,
                "false_positive" => VexDecision::FalsePositive,
                other => {
                    return Err(format!(
                        "{at}: unknown analysis.state {other:?} (expected not_affected, \
                         exploitable, resolved, false_positive or in_triage)"
                    ))
                }
            };
            let products: Vec<VexProduct> = v
                .affects
                .iter()
                .map(|a| VexProduct {
                    id: resolve_ref(&a.reference, &refs),
                    subcomponents: Vec::new(),
                })
                .collect();
            if products.is_empty() {
                return Err(format!("{at}: affects is empty"));
            }
            let mut vulnerability = vec![id];
            vulnerability.extend(v.references.into_iter().filter_map(|r| r.id));
            statements.push(VexStatement {
                vulnerability,
                products,
                decision,
                justification: joined(analysis.justification, analysis.detail),
            });
        }
        return Ok(Some(VexDocument {
            kind: "cyclonedx_vex",
            statements,
        }));
    }
    Ok(None)
}

/// A CycloneDX `ref`: a component's purl, a BOM-Link's fragment, or as is.
fn resolve_ref(r: &str, refs: &HashMap<String, String>) -> String {
    if let Some(p) = refs.get(r) {
        return p.clone();
    }
    if r.starts_with("urn:cdx:") {
        if let Some((_, frag)) = r.split_once('#') {
            let frag = super::util::percent_decode(frag);
            return refs.get(&frag).cloned().unwrap_or(frag);
        }
    }
    r.to_string()
}

/// A package URL, split: type, namespace, name, version, qualifiers.
struct Purl<'a> {
    kind: &'a str,
    namespace: Option<String>,
    name: String,
    version: Option<String>,
    qualifiers: &'a str,
}

fn parse_purl(p: &str) -> Option<Purl<'_>> {
    let kind = purl_type(p)?;
    let rest = &p[4 + kind.len() + 1..];
    let rest = rest.split('#').next().unwrap_or(rest);
    let (rest, qualifiers) = rest.split_once('?').unwrap_or((rest, ""));
    let (path, version) = match rest.rsplit_once('@') {
        Some((path, v)) if !path.is_empty() => (path, Some(super::util::percent_decode(v))),
        _ => (rest, None),
    };
    let (namespace, name) = match path.rsplit_once('/') {
        Some((ns, n)) => (Some(super::util::percent_decode(ns)), n),
        None => (None, path),
    };
    Some(Purl {
        kind,
        namespace,
        name: super::util::percent_decode(name),
        version,
        qualifiers,
    })
}

/// The image a product names, if it names one: an `oci`/`docker` purl
/// (its `repository_url` qualifier, else its name) or a plain reference.
fn product_image(id: &str) -> Option<Target> {
    match parse_purl(id) {
        Some(p) if matches!(p.kind, "oci" | "docker") => {
            let repo = p
                .qualifiers
                .split('&')
                .find_map(|q| q.strip_prefix("repository_url="))
                .map(super::util::percent_decode);
            let name = match (repo, &p.namespace) {
                (Some(r), _) => r,
                (None, Some(ns)) => format!("{ns}/{}", p.name),
                (None, None) => p.name.clone(),
            };
            Target::new(TargetKind::Image, &name).ok()
        }
        Some(_) => None,
        None if !id.contains("://") && !id.trim().is_empty() => {
            let t = id.strip_prefix("image:").unwrap_or(id);
            Target::new(TargetKind::Image, t).ok()
        }
        None => None,
    }
}

/// Whether a package URL names the finding's package.
fn purl_matches(purl: &str, f: &Finding) -> bool {
    let (Some(p), Some(pkg)) = (parse_purl(purl), f.package.as_ref()) else {
        return false;
    };
    if matches!(p.kind, "oci" | "docker") || ecosystem(p.kind) != pkg.ecosystem {
        return false;
    }
    // How each tool names a namespaced package: Maven `group:artifact`,
    // OS packages by name alone (the namespace is the distribution),
    // others (npm scopes, Go modules) `namespace/name`.
    let name = match (&p.namespace, pkg.ecosystem.as_str()) {
        (None, _) | (Some(_), "deb" | "apk" | "rpm") => p.name.clone(),
        (Some(ns), "maven") => format!("{ns}:{}", p.name),
        (Some(ns), _) => format!("{ns}/{}", p.name),
    };
    let name_ok = if pkg.ecosystem == "pypi" {
        let norm = |s: &str| s.replace(['_', '.'], "-").to_ascii_lowercase();
        norm(&name) == norm(&pkg.name)
    } else {
        name == pkg.name
    };
    name_ok
        && p.version
            .as_deref()
            .is_none_or(|v| pkg.version.as_deref() == Some(v))
}

impl VexStatement {
    /// Whether the statement is about `f` on `target`.
    pub fn matches(&self, target: &Target, f: &Finding) -> bool {
        let vuln = self.vulnerability.iter().any(|v| {
            v.eq_ignore_ascii_case(&f.rule_id)
                || f.aliases.iter().any(|a| a.eq_ignore_ascii_case(v))
        });
        vuln && self.products.iter().any(|p| match product_image(&p.id) {
            Some(image) => {
                &image == target
                    && (p.subcomponents.is_empty()
                        || p.subcomponents.iter().any(|s| purl_matches(s, f)))
            }
            None => purl_matches(&p.id, f),
        })
    }
}
