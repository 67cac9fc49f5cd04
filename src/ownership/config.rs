//! The ownership configuration: teams and their aliases, per-repository
//! CODEOWNERS files and explicit owners, image and cloud mappings, and
//! fallbacks. Read from one TOML file (or `owners.toml` in a directory),
//! with every referenced file relative to it, and validated before use:
//! every error names the key (and the file and line where one applies).

use super::codeowners::{CodeOwners, Flavor};
use crate::model::{Target, TargetKind};
use globset::{Glob, GlobMatcher};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// Why an ownership configuration was refused: the same errors as the
/// main configuration's (a file unread, a parse error, an invalid key).
pub type OwnershipError = crate::config::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOwnership {
    #[serde(default)]
    teams: Vec<RawTeam>,
    #[serde(default)]
    repos: Vec<RawRepo>,
    #[serde(default)]
    images: Vec<RawMapping>,
    #[serde(default)]
    cloud: Vec<RawMapping>,
    #[serde(default)]
    catalog: Vec<String>,
    fallback: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTeam {
    id: String,
    #[serde(default)]
    aliases: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepo {
    target: String,
    codeowners: Option<String>,
    checkout: Option<String>,
    #[serde(default)]
    gitlab: bool,
    owner: Option<String>,
    fallback: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    pattern: String,
    team: Option<String>,
    service: Option<String>,
}

/// What custody knows about one repository's ownership.
#[derive(Debug)]
pub struct RepoOwnership {
    /// Its CODEOWNERS file (path as configured) and the compiled rules.
    pub codeowners: Option<(String, Arc<CodeOwners>)>,
    /// An owner for the whole repository, before CODEOWNERS.
    pub owner: Option<String>,
    /// The owner when nothing else decides.
    pub fallback: Option<String>,
}

/// A glob over image or cloud names, mapped to a team.
#[derive(Debug)]
pub struct Mapping {
    /// The pattern as written.
    pub pattern: String,
    /// Its compiled form.
    pub matcher: GlobMatcher,
    /// What it maps to.
    pub to: MappingTarget,
    /// Its position in the configuration, for explanations.
    pub key: String,
}

/// What a mapping names: a team directly, or a catalog entity whose owner
/// owns the image or account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappingTarget {
    /// A team id or alias.
    Team(String),
    /// A catalog entity reference (`payments-api`, `component:payments-api`).
    Service(String),
}

/// A validated ownership configuration.
#[derive(Debug)]
pub struct Ownership {
    /// Where it was read from.
    pub origin: String,
    /// Team ids, sorted.
    pub teams: Vec<String>,
    /// Normalized alias -> team id (team ids map to themselves).
    pub aliases: HashMap<String, String>,
    /// Per repository target.
    pub repos: BTreeMap<Target, RepoOwnership>,
    /// Image patterns, first match wins.
    pub images: Vec<Mapping>,
    /// Cloud patterns, first match wins.
    pub cloud: Vec<Mapping>,
    /// The service catalog.
    pub catalog: super::catalog::Catalog,
    /// The global fallback team.
    pub fallback: Option<String>,
    /// Problems that do not stop loading (invalid CODEOWNERS lines, owner
    /// handles no team claims), for `owners check`.
    pub warnings: Vec<String>,
}

/// A configuration's entry file, read: `path` itself, or `owners.toml` in
/// it when it is a directory.
pub struct Entry {
    /// Its text.
    pub text: String,
    /// Its path, as errors name it.
    pub shown: String,
    /// The directory the files it names are relative to.
    pub base: std::path::PathBuf,
}

impl Entry {
    /// Reads the entry file of `path`.
    pub fn read(path: &Path) -> Result<Entry, OwnershipError> {
        let file = if path.is_dir() {
            path.join("owners.toml")
        } else {
            path.to_path_buf()
        };
        let shown = file.display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|source| OwnershipError::Read {
            path: shown.clone(),
            source,
        })?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Entry { text, shown, base })
    }
}

/// How owner handles are compared: case-insensitively (GitHub handles and
/// e-mail addresses are), without a leading `@`, and Backstage's
/// `group:default/x` read as `group:x`.
pub fn normalize_alias(handle: &str) -> String {
    let h = handle.trim().trim_start_matches('@').to_ascii_lowercase();
    match h.strip_prefix("group:default/") {
        Some(rest) => format!("group:{rest}"),
        None => h,
    }
}

impl Ownership {
    /// Loads a configuration file, or `owners.toml` in a directory.
    pub fn load(path: &Path) -> Result<Ownership, OwnershipError> {
        let e = Entry::read(path)?;
        Ownership::parse(&e.text, &e.shown, &e.base, &|p| std::fs::read_to_string(p))
    }

    /// Parses and validates configuration text; `read` loads the files it
    /// names, relative to `base`.
    pub fn parse(
        text: &str,
        origin: &str,
        base: &Path,
        read: &dyn Fn(&Path) -> std::io::Result<String>,
    ) -> Result<Ownership, OwnershipError> {
        let raw: RawOwnership = toml::from_str(text).map_err(|e| OwnershipError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid = |key: String, message: String| OwnershipError::Invalid {
            path: origin.to_string(),
            key,
            message,
        };
        let mut teams = Vec::new();
        let mut aliases: HashMap<String, String> = HashMap::new();
        for (i, t) in raw.teams.iter().enumerate() {
            let id = t.id.trim();
            if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    format!("teams[{i}].id"),
                    format!("{:?} must be one word", t.id),
                ));
            }
            for alias in std::iter::once(id).chain(t.aliases.iter().map(String::as_str)) {
                let key = normalize_alias(alias);
                if key.is_empty() {
                    return Err(invalid(
                        format!("teams[{i}].aliases"),
                        "contains an empty alias".into(),
                    ));
                }
                if let Some(other) = aliases.get(&key) {
                    if other != id {
                        return Err(invalid(
                            format!("teams[{i}].aliases"),
                            format!("{alias:?} already names team {other:?}"),
                        ));
                    }
                }
                aliases.insert(key, id.to_string());
            }
            teams.push(id.to_string());
        }
        teams.sort();
        teams.dedup();

        let mut warnings = Vec::new();
        let mut repos = BTreeMap::new();
        for (i, r) in raw.repos.iter().enumerate() {
            let target: Target = r
                .target
                .parse()
                .map_err(|e| invalid(format!("repos[{i}].target"), format!("{e}")))?;
            if target.kind() != TargetKind::Repo {
                return Err(invalid(
                    format!("repos[{i}].target"),
                    format!("{target} is not a repo: target"),
                ));
            }
            if r.codeowners.is_some() && r.checkout.is_some() {
                return Err(invalid(
                    format!("repos[{i}]"),
                    "names both `codeowners` and `checkout`; give one".into(),
                ));
            }
            // The named file, or in a checkout the first CODEOWNERS where
            // GitHub looks: .github/, the root, docs/.
            let source: Option<(String, String)> = match (&r.codeowners, &r.checkout) {
                (Some(rel), _) => {
                    let path = base.join(rel);
                    let text = read(&path).map_err(|e| {
                        invalid(
                            format!("repos[{i}].codeowners"),
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?;
                    Some((rel.clone(), text))
                }
                (None, Some(dir)) => {
                    let found =
                        super::codeowners::locate(|loc| read(&base.join(dir).join(loc)).ok());
                    if found.is_none() {
                        warnings.push(format!(
                            "repos[{i}]: no CODEOWNERS in {dir} (.github/, root or docs/)"
                        ));
                    }
                    found.map(|(loc, text)| (format!("{}/{loc}", dir.trim_end_matches('/')), text))
                }
                (None, None) => None,
            };
            let codeowners = source.map(|(name, text)| {
                let flavor = if r.gitlab {
                    Flavor::GitLab
                } else {
                    Flavor::GitHub
                };
                let co = CodeOwners::parse(&text, flavor);
                for p in co.problems() {
                    warnings.push(format!("{name}:{}: {} ({:?})", p.line, p.message, p.text));
                }
                (name, Arc::new(co))
            });
            if repos
                .insert(
                    target.clone(),
                    RepoOwnership {
                        codeowners,
                        owner: r.owner.clone(),
                        fallback: r.fallback.clone(),
                    },
                )
                .is_some()
            {
                return Err(invalid(
                    format!("repos[{i}].target"),
                    format!("{target} is configured twice"),
                ));
            }
        }
        let mappings = |list: &[RawMapping], name: &str| -> Result<Vec<Mapping>, OwnershipError> {
            list.iter()
                .enumerate()
                .map(|(i, m)| {
                    let key = format!("{name}[{i}]");
                    let glob = Glob::new(&m.pattern)
                        .map_err(|e| invalid(format!("{key}.pattern"), format!("{e}")))?;
                    let to = match (&m.team, &m.service) {
                        (Some(t), None) => MappingTarget::Team(t.clone()),
                        (None, Some(s)) => MappingTarget::Service(s.clone()),
                        _ => {
                            return Err(invalid(
                                key,
                                "needs exactly one of `team` and `service`".into(),
                            ))
                        }
                    };
                    Ok(Mapping {
                        pattern: m.pattern.clone(),
                        matcher: glob.compile_matcher(),
                        to,
                        key,
                    })
                })
                .collect()
        };
        let images = mappings(&raw.images, "images")?;
        let cloud = mappings(&raw.cloud, "cloud")?;
        let mut catalog = super::catalog::Catalog::default();
        for (i, rel) in raw.catalog.iter().enumerate() {
            let path = base.join(rel);
            let text = read(&path).map_err(|e| {
                invalid(
                    format!("catalog[{i}]"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            catalog
                .add_file(rel, &text)
                .map_err(|e| invalid(format!("catalog[{i}]"), e))?;
        }
        let mut own = Ownership {
            origin: origin.to_string(),
            teams,
            aliases,
            repos,
            images,
            cloud,
            catalog,
            fallback: raw.fallback.clone(),
            warnings,
        };
        // Handles that no team claims still attribute (to the handle), but
        // are worth a warning: they are usually a missing alias.
        let mut unknown: Vec<String> = Vec::new();
        let note = |unknown: &mut Vec<String>, h: &str, whr: String| {
            if own.team_of(h).is_none() {
                unknown.push(format!("{whr}: owner {h:?} is not a known team or alias"));
            }
        };
        for (t, r) in &own.repos {
            for h in r.owner.iter().chain(r.fallback.iter()) {
                note(&mut unknown, h, format!("{t}"));
            }
            if let Some((file, co)) = &r.codeowners {
                let mut seen = std::collections::BTreeSet::new();
                for rule in co.rules() {
                    for o in &rule.owners {
                        if seen.insert(o.clone()) {
                            note(&mut unknown, o, format!("{file}:{}", rule.line));
                        }
                    }
                }
            }
        }
        for m in own.images.iter().chain(own.cloud.iter()) {
            match &m.to {
                MappingTarget::Team(t) => note(&mut unknown, t, m.key.clone()),
                MappingTarget::Service(s) => {
                    if own.catalog.lookup(s, "component").is_none() {
                        unknown.push(format!("{}: service {s:?} is not in the catalog", m.key));
                    }
                }
            }
        }
        if let Some(f) = &own.fallback {
            note(&mut unknown, f, "fallback".into());
        }
        own.warnings.extend(unknown);
        Ok(own)
    }

    /// The team an owner handle names, if the alias table knows it.
    pub fn team_of(&self, handle: &str) -> Option<&str> {
        self.aliases
            .get(&normalize_alias(handle))
            .map(String::as_str)
    }

    /// A path's configuration entry for a target, if any.
    pub fn repo(&self, target: &Target) -> Option<&RepoOwnership> {
        self.repos.get(target)
    }
}
