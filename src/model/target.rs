//! Targets: what a scan looked at (a repository, an image, a cloud account,
//! a Kubernetes resource).
//!
//! The target is the Kafka message key and the unit of lifecycle state, so
//! its spelling must be canonical: `https://GitHub.com/acme/api.git` and
//! `github.com/acme/api` are one repository, and `nginx:1.25` and
//! `nginx@sha256:...` are one image repository scanned at two versions.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What kind of thing a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TargetKind {
    /// A source repository, `repo:<host/org/name>`.
    Repo,
    /// A container image repository, `image:<registry/name>` (tag and digest
    /// are scan metadata, not part of the target).
    Image,
    /// A cloud account or cluster, `cloud:<account>`.
    Cloud,
    /// One resource of a Kubernetes cluster,
    /// `k8s:<cluster>/<namespace>/<Kind>/<name>` (`k8s:<cluster>/<Kind>/<name>`
    /// for a cluster-scoped resource): what a cluster scan's workload
    /// findings are about, each resource with its own absence semantics.
    K8s,
}

impl TargetKind {
    /// The spec prefix, without the colon.
    pub fn prefix(self) -> &'static str {
        match self {
            TargetKind::Repo => "repo",
            TargetKind::Image => "image",
            TargetKind::Cloud => "cloud",
            TargetKind::K8s => "k8s",
        }
    }
}

/// A canonical target spec such as `repo:github.com/acme/payments`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    kind: TargetKind,
    name: String,
}

/// Why a target spec was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// The spec has no `repo:`, `image:`, `cloud:` or `k8s:` prefix.
    #[error("target {0:?} must start with repo:, image:, cloud: or k8s:")]
    UnknownKind(String),
    /// Nothing after the prefix.
    #[error("target {0:?} has an empty name")]
    Empty(String),
    /// Control characters or whitespace in the name.
    #[error("target {0:?} contains whitespace or control characters")]
    BadCharacters(String),
}

impl Target {
    /// Builds a target of `kind` from a raw name, canonicalizing it.
    pub fn new(kind: TargetKind, raw: &str) -> Result<Target, TargetError> {
        let name = match kind {
            TargetKind::Repo => canonical_repo(raw),
            TargetKind::Image => canonical_image(raw),
            TargetKind::Cloud | TargetKind::K8s => raw.trim().to_string(),
        };
        let spec = || format!("{}:{}", kind.prefix(), raw);
        if name.is_empty() {
            return Err(TargetError::Empty(spec()));
        }
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TargetError::BadCharacters(spec()));
        }
        Ok(Target { kind, name })
    }

    /// The kind of target.
    pub fn kind(&self) -> TargetKind {
        self.kind
    }

    /// The canonical name after the prefix.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// `https://GitHub.com/Acme/API.git` -> `github.com/Acme/API`: scheme, user
/// info, `.git` and trailing slashes dropped, host lowercased (paths are
/// case-sensitive on most forges, so they are kept).
fn canonical_repo(raw: &str) -> String {
    let mut s = raw.trim();
    if let Some(i) = s.find("://") {
        s = &s[i + 3..];
    } else if let Some(rest) = s.strip_prefix("git@") {
        // scp-like syntax: git@github.com:acme/api.git
        let owned = rest.replacen(':', "/", 1);
        return canonical_repo(&owned);
    }
    if let Some(at) = s.find('@') {
        if s[..at].find('/').is_none() {
            s = &s[at + 1..];
        }
    }
    let s = s.trim_end_matches('/');
    let s = s.strip_suffix(".git").unwrap_or(s);
    match s.split_once('/') {
        Some((host, path)) => format!("{}/{}", host.to_ascii_lowercase(), path),
        None => s.to_ascii_lowercase(),
    }
}

/// `docker.io/library/nginx:1.25@sha256:...` -> `docker.io/library/nginx`.
fn canonical_image(raw: &str) -> String {
    let s = raw.trim();
    let s = s.split_once('@').map_or(s, |(name, _digest)| name);
    // A tag is a ':' after the last '/'; a ':' before it is a registry port.
    let last_slash = s.rfind('/').map_or(0, |i| i + 1);
    match s[last_slash..].find(':') {
        Some(i) => s[..last_slash + i].to_string(),
        None => s.to_string(),
    }
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(spec: &str) -> Result<Target, TargetError> {
        let (prefix, rest) = spec
            .split_once(':')
            .ok_or_else(|| TargetError::UnknownKind(spec.to_string()))?;
        let kind = match prefix {
            "repo" => TargetKind::Repo,
            "image" => TargetKind::Image,
            "cloud" => TargetKind::Cloud,
            "k8s" => TargetKind::K8s,
            _ => return Err(TargetError::UnknownKind(spec.to_string())),
        };
        Target::new(kind, rest)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.prefix(), self.name)
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Target, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Target {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Target".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A target spec: repo:<host/org/name>, image:<registry/name>, cloud:<account> or k8s:<cluster>/<namespace>/<Kind>/<name>.",
            "pattern": "^(repo|image|cloud|k8s):\\S+$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_spellings() {
        let table = [
            ("repo:github.com/acme/api", "repo:github.com/acme/api"),
            (
                "repo:https://GitHub.com/acme/api.git",
                "repo:github.com/acme/api",
            ),
            (
                "repo:git@github.com:acme/api.git",
                "repo:github.com/acme/api",
            ),
            (
                "repo:https://token@github.com/acme/api/",
                "repo:github.com/acme/api",
            ),
            ("image:nginx:1.25", "image:nginx"),
            (
                "image:registry.local:5000/team/app:v2",
                "image:registry.local:5000/team/app",
            ),
            (
                "image:ghcr.io/acme/app@sha256:abcd",
                "image:ghcr.io/acme/app",
            ),
            ("cloud:aws/123456789012", "cloud:aws/123456789012"),
            (
                "k8s: prod-eu/payments/Deployment/api ",
                "k8s:prod-eu/payments/Deployment/api",
            ),
            (
                "k8s:arn:aws:eks:us-east-1:1:cluster/prod/default/Service/web",
                "k8s:arn:aws:eks:us-east-1:1:cluster/prod/default/Service/web",
            ),
        ];
        for (input, want) in table {
            let t: Target = input.parse().unwrap();
            assert_eq!(t.to_string(), want, "input {input}");
        }
    }

    #[test]
    fn refused_specs() {
        assert!(matches!(
            "github.com/a/b".parse::<Target>(),
            Err(TargetError::UnknownKind(_))
        ));
        assert!(matches!(
            "svn:x".parse::<Target>(),
            Err(TargetError::UnknownKind(_))
        ));
        assert!(matches!(
            "repo:".parse::<Target>(),
            Err(TargetError::Empty(_))
        ));
        assert!(matches!(
            "repo:a b".parse::<Target>(),
            Err(TargetError::BadCharacters(_))
        ));
    }

    #[test]
    fn serde_round_trip() {
        let t: Target = "image:nginx:1.25".parse().unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"image:nginx\"");
        let back: Target = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert!(serde_json::from_str::<Target>("\"nope\"").is_err());
    }
}
