//! The service catalog: Backstage `catalog-info.yaml` entities, linked to
//! repositories by their `github.com/project-slug` and
//! `backstage.io/source-location` annotations.
//!
//! An entity's owner is its `spec.owner` (`group:payments`,
//! `group:default/payments`, `user:alice` or a bare name, which Backstage
//! reads as a group), else its system's owner. Group entities form a
//! hierarchy through `spec.parent` / `spec.children`; an owner group that
//! is not a configured team is attributed to its nearest ancestor that is.
//!
//! Catalog files are operator configuration, but are still read with
//! bounds: at most 8 MiB each, and YAML aliases are refused (their
//! expansion is how a small YAML file becomes a huge document).

use crate::model::{Target, TargetKind};
use std::collections::HashMap;
use yaml_rust2::parser::{Event, EventReceiver, Parser};
use yaml_rust2::{Yaml, YamlLoader};

/// The largest catalog file read.
pub const MAX_CATALOG_BYTES: usize = 8 << 20;

/// One catalog entity custody uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    /// `Component`, `System`, `Resource`, `API`, `Group`, ...
    pub kind: String,
    /// Namespace (`default` when absent).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.owner` as written.
    pub owner: Option<String>,
    /// `spec.system`, for components, resources and APIs.
    pub system: Option<String>,
    /// `spec.parent`, for groups.
    pub parent: Option<String>,
    /// `spec.children`, for groups.
    pub children: Vec<String>,
    /// The repository it is built from, from its annotations.
    pub repo: Option<Target>,
    /// The file it came from and its document index there (1-based).
    pub source: String,
}

impl Entity {
    /// `kind:namespace/name`, Backstage's entity reference.
    pub fn reference(&self) -> String {
        format!(
            "{}:{}/{}",
            self.kind.to_ascii_lowercase(),
            self.namespace,
            self.name
        )
    }
}

/// All entities of the configured catalog files.
#[derive(Debug, Default)]
pub struct Catalog {
    entities: Vec<Entity>,
    by_repo: HashMap<Target, usize>,
    /// (lowercase kind, name) -> entity index (namespace `default`).
    by_name: HashMap<(String, String), usize>,
}

/// Counts YAML aliases, to refuse documents that use them.
struct AliasCounter(usize);

impl EventReceiver for AliasCounter {
    fn on_event(&mut self, ev: Event) {
        if matches!(ev, Event::Alias(_)) {
            self.0 += 1;
        }
    }
}

/// Reads the repository a source location or project slug names.
fn repo_of(annotations: &Yaml) -> Option<Target> {
    if let Some(slug) = annotations["github.com/project-slug"].as_str() {
        return Target::new(TargetKind::Repo, &format!("github.com/{}", slug.trim())).ok();
    }
    let loc = annotations["backstage.io/source-location"].as_str()?;
    let url = loc.trim().strip_prefix("url:").unwrap_or(loc.trim());
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    // Cut at the forge's "tree/blob" markers: what precedes is the repo.
    let mut parts: Vec<&str> = Vec::new();
    for seg in rest.split('/') {
        if matches!(seg, "tree" | "blob" | "-" | "src" | "") && parts.len() >= 3 {
            break;
        }
        if !seg.is_empty() {
            parts.push(seg);
        }
    }
    if parts.len() < 3 {
        return None;
    }
    Target::new(TargetKind::Repo, &parts.join("/")).ok()
}

fn string(y: &Yaml) -> Option<String> {
    y.as_str()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

impl Catalog {
    /// Adds the entities of one file; `name` names it in errors. A document
    /// that is not an entity is skipped; a file that is not YAML, or uses
    /// aliases, or is too large, is an error.
    pub fn add_file(&mut self, name: &str, text: &str) -> Result<usize, String> {
        if text.len() > MAX_CATALOG_BYTES {
            return Err(format!("{name}: larger than {MAX_CATALOG_BYTES} bytes"));
        }
        let mut aliases = AliasCounter(0);
        Parser::new_from_str(text)
            .load(&mut aliases, true)
            .map_err(|e| format!("{name}: not YAML: {e}"))?;
        if aliases.0 > 0 {
            return Err(format!(
                "{name}: YAML aliases (*name) are not supported in catalog files"
            ));
        }
        let docs = YamlLoader::load_from_str(text).map_err(|e| format!("{name}: not YAML: {e}"))?;
        let mut added = 0;
        for (i, doc) in docs.iter().enumerate() {
            let (Some(kind), Some(meta_name)) =
                (string(&doc["kind"]), string(&doc["metadata"]["name"]))
            else {
                continue;
            };
            let spec = &doc["spec"];
            let entity = Entity {
                kind,
                namespace: string(&doc["metadata"]["namespace"])
                    .unwrap_or_else(|| "default".into()),
                name: meta_name,
                owner: string(&spec["owner"]),
                system: string(&spec["system"]),
                parent: string(&spec["parent"]),
                children: spec["children"]
                    .as_vec()
                    .map(|v| v.iter().filter_map(string).collect())
                    .unwrap_or_default(),
                repo: repo_of(&doc["metadata"]["annotations"]),
                source: format!("{name}#{}", i + 1),
            };
            let index = self.entities.len();
            if let Some(repo) = &entity.repo {
                if entity.kind != "Group" {
                    self.by_repo.entry(repo.clone()).or_insert(index);
                }
            }
            if entity.namespace == "default" {
                self.by_name
                    .entry((entity.kind.to_ascii_lowercase(), entity.name.clone()))
                    .or_insert(index);
            }
            self.entities.push(entity);
            added += 1;
        }
        Ok(added)
    }

    /// Every entity read.
    pub fn entities(&self) -> &[Entity] {
        &self.entities
    }

    /// The entity built from a repository, if any.
    pub fn for_repo(&self, repo: &Target) -> Option<&Entity> {
        self.by_repo.get(repo).map(|&i| &self.entities[i])
    }

    /// An entity by reference: `kind:name`, `kind:default/name`, or a bare
    /// name read as `default_kind`.
    pub fn lookup(&self, reference: &str, default_kind: &str) -> Option<&Entity> {
        let (kind, rest) = match reference.split_once(':') {
            Some((k, r)) => (k.to_ascii_lowercase(), r),
            None => (default_kind.to_string(), reference),
        };
        let name = rest.strip_prefix("default/").unwrap_or(rest);
        self.by_name
            .get(&(kind, name.to_string()))
            .map(|&i| &self.entities[i])
    }

    /// The owner of an entity: its own, else its system's (one level).
    pub fn owner_of<'a>(&'a self, e: &'a Entity) -> Option<&'a str> {
        e.owner.as_deref().or_else(|| {
            self.lookup(e.system.as_deref()?, "system")?
                .owner
                .as_deref()
        })
    }

    /// The parent group of a group (from its `parent`, or from a group that
    /// lists it among its `children`).
    pub fn parent_of(&self, group: &str) -> Option<String> {
        let name = group.rsplit_once('/').map_or(group, |(_, n)| n);
        let name = name.strip_prefix("group:").unwrap_or(name);
        if let Some(p) = self.lookup(name, "group").and_then(|g| g.parent.clone()) {
            return Some(p);
        }
        self.entities
            .iter()
            .find(|e| {
                e.kind == "Group"
                    && e.children.iter().any(|c| {
                        let c = c.strip_prefix("group:").unwrap_or(c);
                        c.strip_prefix("default/").unwrap_or(c) == name
                    })
            })
            .map(|e| e.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CATALOG: &str = r#"
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: payments-api
  annotations:
    github.com/project-slug: Acme/Payments-API
spec:
  type: service
  owner: group:default/payments-backend
  system: payments
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: ledger
  annotations:
    backstage.io/source-location: url:https://gitlab.example.com/fin/ledger/-/tree/main/
spec:
  system: payments
---
apiVersion: backstage.io/v1alpha1
kind: System
metadata:
  name: payments
spec:
  owner: payments
---
apiVersion: backstage.io/v1alpha1
kind: Group
metadata:
  name: payments
spec:
  type: team
  children: [payments-backend]
---
apiVersion: backstage.io/v1alpha1
kind: Group
metadata:
  name: payments-oncall
spec:
  type: team
  parent: payments
"#;

    #[test]
    fn entities_annotations_and_hierarchy() {
        let mut c = Catalog::default();
        assert_eq!(c.add_file("catalog-info.yaml", CATALOG).unwrap(), 5);
        let api = c
            .for_repo(&"repo:github.com/Acme/Payments-API".parse().unwrap())
            .unwrap();
        assert_eq!(api.name, "payments-api");
        assert_eq!(c.owner_of(api), Some("group:default/payments-backend"));
        let ledger = c
            .for_repo(&"repo:gitlab.example.com/fin/ledger".parse().unwrap())
            .unwrap();
        // No owner of its own: the system's.
        assert_eq!(c.owner_of(ledger), Some("payments"));
        assert_eq!(
            c.parent_of("group:default/payments-backend").as_deref(),
            Some("payments")
        );
        assert_eq!(c.parent_of("payments-oncall").as_deref(), Some("payments"));
        assert_eq!(c.parent_of("payments"), None);
        assert_eq!(api.reference(), "component:default/payments-api");
    }

    #[test]
    fn hostile_or_broken_files_are_refused() {
        let mut c = Catalog::default();
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n";
        assert!(c
            .add_file("bomb.yaml", bomb)
            .unwrap_err()
            .contains("aliases"));
        assert!(c
            .add_file("bad.yaml", "a: [unclosed")
            .unwrap_err()
            .contains("not YAML"));
        let big = "x".repeat(MAX_CATALOG_BYTES + 1);
        assert!(c.add_file("big.yaml", &big).unwrap_err().contains("larger"));
        // Documents that are not entities are skipped, not errors.
        assert_eq!(
            c.add_file("other.yaml", "just: data\n---\n- 1\n").unwrap(),
            0
        );
    }
}
