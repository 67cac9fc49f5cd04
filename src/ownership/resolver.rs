//! The resolver: who owns a finding, in DESIGN.md's order, first hit wins,
//! and every answer says which source and rule decided it.
//!
//! 1. an owner stated by the finding itself (e.g. a cloud resource tag), or
//!    configured for the whole repository;
//! 2. the repository's CODEOWNERS, matched on the finding's path (a rule
//!    with no owners leaves the path to the next source);
//! 3. the service catalog (the Backstage entity built from the repository,
//!    its owner or its system's, groups resolved up their hierarchy to a
//!    configured team), and image and cloud mappings (to a team, or to a
//!    catalog service whose owner owns the image);
//! 4. the repository's fallback, then the global fallback;
//! 5. otherwise unattributed.
//!
//! Owner handles map to team ids through the alias table; a handle no team
//! claims is used as it is (lowercased, without `@`), and `owners check`
//! lists it.

use super::config::{normalize_alias, MappingTarget, Ownership};
use crate::engine::Attribute;
use crate::model::{Attribution, Finding, Target, TargetKind};
use std::collections::HashMap;
use std::sync::Arc;

/// Attributes findings with an [`Ownership`] configuration.
pub struct Resolver {
    own: Arc<Ownership>,
    /// One shared answer per CODEOWNERS rule (by target and line).
    by_rule: HashMap<(Target, u32), Arc<Attribution>>,
    none: Arc<Attribution>,
}

impl Resolver {
    /// Compiles the answers of every rule once.
    pub fn new(own: Arc<Ownership>) -> Resolver {
        let mut by_rule = HashMap::new();
        for (target, repo) in &own.repos {
            if let Some((file, co)) = &repo.codeowners {
                for rule in co.rules() {
                    if let Some(team) = team_for(&own, &rule.owners) {
                        let a = Attribution {
                            team: Some(team),
                            source: "codeowners".into(),
                            file: Some(file.clone()),
                            line: Some(rule.line),
                            rule: Some(rule.pattern.clone()),
                            owners: rule.owners.clone(),
                        };
                        by_rule.insert((target.clone(), rule.line), Arc::new(a));
                    }
                }
            }
        }
        Resolver {
            own,
            by_rule,
            none: Arc::new(Attribution::unattributed()),
        }
    }

    /// The configuration it resolves with.
    pub fn ownership(&self) -> &Ownership {
        &self.own
    }

    /// Who owns `path` (if any) on `target`, given an owner the finding
    /// states itself (if any).
    pub fn explain(
        &self,
        target: &Target,
        path: Option<&str>,
        stated: Option<&str>,
    ) -> Arc<Attribution> {
        let own = &*self.own;
        let repo = own.repo(target);
        let simple = |source: &str, owner: &str, file: Option<String>| {
            Arc::new(Attribution {
                team: team_for(own, std::slice::from_ref(&owner.to_string())),
                source: source.into(),
                file,
                line: None,
                rule: None,
                owners: vec![owner.to_string()],
            })
        };
        if let Some(o) = stated.filter(|o| !o.trim().is_empty()) {
            return simple("finding", o, None);
        }
        if let Some(o) = repo.and_then(|r| r.owner.as_deref()) {
            return simple("target", o, Some(own.origin.clone()));
        }
        if let (Some((file, co)), Some(path)) = (repo.and_then(|r| r.codeowners.as_ref()), path) {
            if let Some(d) = co.lookup(path) {
                if d.rules.len() == 1 {
                    if let Some(a) = self.by_rule.get(&(target.clone(), d.line())) {
                        return Arc::clone(a);
                    }
                } else if !d.owners.is_empty() {
                    // GitLab: owners united across sections.
                    let owners: Vec<String> = d.owners.iter().map(|o| o.to_string()).collect();
                    return Arc::new(Attribution {
                        team: team_for(own, &owners),
                        source: "codeowners".into(),
                        file: Some(file.clone()),
                        line: Some(d.line()),
                        rule: Some(
                            d.rules
                                .iter()
                                .map(|r| r.pattern.as_str())
                                .collect::<Vec<_>>()
                                .join(" | "),
                        ),
                        owners,
                    });
                }
            }
        }
        if target.kind() == TargetKind::Repo {
            if let Some(e) = own.catalog.for_repo(target) {
                if let Some(owner) = own.catalog.owner_of(e) {
                    return Arc::new(Attribution {
                        team: Some(self.catalog_team(owner)),
                        source: "catalog".into(),
                        file: Some(e.source.clone()),
                        line: None,
                        rule: Some(e.reference()),
                        owners: vec![owner.to_string()],
                    });
                }
            }
        }
        let mappings = match target.kind() {
            TargetKind::Image => own.images.as_slice(),
            // A cluster is a cloud resource: cloud patterns match the
            // names of its resources' targets too.
            TargetKind::Cloud | TargetKind::K8s => own.cloud.as_slice(),
            TargetKind::Repo => &[],
        };
        if let Some(m) = mappings.iter().find(|m| m.matcher.is_match(target.name())) {
            let (team, owner, rule) = match &m.to {
                MappingTarget::Team(t) => (
                    team_for(own, std::slice::from_ref(t)),
                    t.clone(),
                    format!("{} = {}", m.key, m.pattern),
                ),
                MappingTarget::Service(svc) => {
                    let owner = own
                        .catalog
                        .lookup(svc, "component")
                        .and_then(|e| own.catalog.owner_of(e))
                        .map(str::to_string);
                    match owner {
                        Some(o) => (
                            Some(self.catalog_team(&o)),
                            o,
                            format!("{} = {} -> {svc}", m.key, m.pattern),
                        ),
                        None => (None, String::new(), String::new()),
                    }
                }
            };
            if team.is_some() {
                return Arc::new(Attribution {
                    team,
                    source: "mapping".into(),
                    file: Some(own.origin.clone()),
                    line: None,
                    rule: Some(rule),
                    owners: vec![owner],
                });
            }
        }
        if let Some(o) = repo.and_then(|r| r.fallback.as_deref()) {
            return simple("fallback", o, Some(own.origin.clone()));
        }
        if let Some(o) = own.fallback.as_deref() {
            return simple("fallback", o, Some(own.origin.clone()));
        }
        Arc::clone(&self.none)
    }
}

impl Resolver {
    /// The team of a catalog owner: a configured team or alias, else the
    /// nearest ancestor group that is one, else the owner itself.
    fn catalog_team(&self, owner: &str) -> String {
        let own = &*self.own;
        if let Some(t) = own.team_of(owner) {
            return t.to_string();
        }
        let mut current = owner.to_string();
        for _ in 0..32 {
            let Some(parent) = own.catalog.parent_of(&current) else {
                break;
            };
            if let Some(t) = own
                .team_of(&format!("group:{parent}"))
                .or_else(|| own.team_of(&parent))
            {
                return t.to_string();
            }
            current = parent;
        }
        normalize_alias(owner)
    }
}

/// The team of a list of owners: the first that names a known team, else
/// the first handle itself.
fn team_for(own: &Ownership, owners: &[String]) -> Option<String> {
    owners
        .iter()
        .find_map(|o| own.team_of(o).map(str::to_string))
        .or_else(|| owners.first().map(|o| normalize_alias(o)))
        .filter(|t| !t.is_empty())
}

impl Attribute for Resolver {
    fn attribute(&self, target: &Target, finding: &Finding) -> Arc<Attribution> {
        self.explain(target, finding.path(), finding.owner.as_deref())
    }
}

/// An attribution whose configuration can change while the service runs:
/// reloaded from its files, or replaced by a version read from the
/// ownership topic. A reload that fails keeps the configuration in force.
/// After a change, call [`crate::engine::Engine::reattribute`]: findings
/// whose team changed are then `reassigned`.
pub struct Reloadable {
    /// The files it was loaded from (none when it came from a topic).
    path: Option<std::path::PathBuf>,
    current: std::sync::RwLock<Arc<Resolver>>,
    /// Counts the configurations put in force (see [`Reloadable::generation`]).
    generation: std::sync::atomic::AtomicU64,
}

impl Reloadable {
    /// Loads the configuration at `path` (file or directory).
    pub fn load(path: &std::path::Path) -> Result<Reloadable, super::OwnershipError> {
        let own = Ownership::load(path)?;
        Ok(Reloadable {
            path: Some(path.to_path_buf()),
            current: std::sync::RwLock::new(Arc::new(Resolver::new(Arc::new(own)))),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// A configuration that did not come from files (the ownership topic):
    /// [`Reloadable::set`] changes it, [`Reloadable::reload`] does nothing.
    pub fn of(own: Ownership) -> Reloadable {
        Reloadable {
            path: None,
            current: std::sync::RwLock::new(Arc::new(Resolver::new(Arc::new(own)))),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Reads the configuration's files again and, if it is valid, puts it
    /// in force: true. Without files (it came from a topic), leaves it as
    /// it is: false.
    pub fn reload(&self) -> Result<bool, super::OwnershipError> {
        match &self.path {
            Some(path) => {
                self.set(Ownership::load(path)?);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Puts a validated configuration in force.
    pub fn set(&self, own: Ownership) {
        let next = Arc::new(Resolver::new(Arc::new(own)));
        // A poisoned lock only means a reader panicked; the value is whole.
        let mut slot = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = next;
        drop(slot);
        // After the swap: whoever reads the new generation attributes with
        // the new configuration.
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// How many configurations were put in force after the first. Read
    /// before attributing, it tells whether what was attributed may be
    /// out of date: if it changed since, it may.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The resolver in force.
    pub fn current(&self) -> Arc<Resolver> {
        let slot = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&slot)
    }
}

impl Attribute for Reloadable {
    fn attribute(&self, target: &Target, finding: &Finding) -> Arc<Attribution> {
        self.current().attribute(target, finding)
    }
}
