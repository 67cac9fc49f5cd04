//! Fingerprints v1: the name of one finding across scans.
//!
//! - Code findings (SAST, IaC, secrets, DAST): scanner, rule, target, path
//!   and a *basis* that does not depend on line numbers: the tool's own
//!   fingerprint when it is real, else the salted hash of the secret, else a
//!   hash of the whitespace-normalized source line, else the message. An
//!   occurrence counter tells identical lines of one file apart, in line
//!   order. Moving code or editing other lines changes none of these.
//! - Dependency findings (SCA, container): canonical vulnerability id,
//!   package ecosystem, package name and target, and *not* the scanner, so
//!   Trivy and Grype reporting one CVE in one package are one finding.
//!
//! The version prefix (`v1:`) lets a later algorithm coexist with this one.

use crate::model::{Category, Finding, Severity, Target};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;

/// The algorithm version written at the front of every fingerprint.
pub const VERSION: &str = "v1";

/// Collapses whitespace runs and trims, so re-indenting a line keeps its
/// hash.
pub fn normalize_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for word in line.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Hash of a normalized source line.
pub fn line_hash(line: &str) -> String {
    digest(&[b"line", normalize_line(line).as_bytes()], 16)
}

/// Salted hash of a source line that holds a secret.
pub fn line_hash_salted(line: &str, salt: &str) -> String {
    digest(
        &[
            b"secret-line",
            salt.as_bytes(),
            normalize_line(line).as_bytes(),
        ],
        16,
    )
}

/// Whether a tool fingerprint is a placeholder rather than a real hash
/// (Semgrep writes "requires login" when logged out; test data and some
/// exporters write a run of one repeated character).
pub fn is_placeholder(tool_fp: &str) -> bool {
    let t = tool_fp.trim();
    t.is_empty()
        || t.eq_ignore_ascii_case("requires login")
        || t.eq_ignore_ascii_case("null")
        || t.eq_ignore_ascii_case("none")
        || t.bytes().all(|b| b == b'0')
        || (t.len() >= 8 && t.bytes().all(|b| b == t.as_bytes()[0]))
}

fn digest(parts: &[&[u8]], bytes: usize) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex(&h.finalize()[..bytes])
}

/// The occurrence-independent identity of a code finding: which kind of
/// basis, and its value.
fn code_basis(f: &Finding) -> (&'static str, Cow<'_, str>) {
    if let Some(fp) = f
        .tool_fingerprint
        .as_deref()
        .filter(|fp| !is_placeholder(fp))
    {
        ("tool", Cow::Borrowed(fp))
    } else if let Some(h) = &f.evidence.secret_hash {
        ("secret", Cow::Borrowed(h))
    } else if let Some(h) = &f.content_hash {
        ("line", Cow::Borrowed(h))
    } else {
        ("msg", Cow::Owned(normalize_line(&f.message)))
    }
}

/// The fingerprint of a dependency finding, or `None` when it names no
/// package (it is then treated as a code finding).
pub fn dependency_fingerprint(f: &Finding, target: &Target) -> Option<String> {
    if !f.category.is_dependency() {
        return None;
    }
    let pkg = f.package.as_ref()?;
    let t = target.to_string();
    Some(format!(
        "{VERSION}:{}",
        digest(
            &[
                b"v1-dep",
                f.rule_id.as_bytes(),
                pkg.ecosystem.as_bytes(),
                pkg.name.as_bytes(),
                t.as_bytes(),
            ],
            16
        )
    ))
}

/// Fingerprints every finding of one scan of `target` and merges findings
/// that share a fingerprint (one CVE in one package seen at two paths, the
/// same CVE from two tools in one report). Returns them in report order.
pub fn assign(mut findings: Vec<Finding>, target: &Target) -> Vec<(String, Finding)> {
    let fps = assign_in_place(&mut findings, target);
    fps.into_iter().zip(findings).collect()
}

/// Like [`assign`], but merges duplicates inside `findings` and returns the
/// fingerprints in the same order, without building a second vector of
/// findings (a large report's findings are its largest allocation).
pub fn assign_in_place(findings: &mut Vec<Finding>, target: &Target) -> Vec<String> {
    let t = target.to_string();
    // Group code findings by identity, then number each group in line order.
    let mut fps: Vec<Option<String>> = Vec::with_capacity(findings.len());
    {
        type Key<'f> = (&'f str, &'f str, &'f str, (&'static str, Cow<'f, str>));
        let mut groups: HashMap<Key<'_>, Vec<usize>> = HashMap::new();
        for (i, f) in findings.iter().enumerate() {
            let fp = dependency_fingerprint(f, target);
            if fp.is_none() {
                let key = (
                    f.scanner.as_str(),
                    f.rule_id.as_str(),
                    f.path().unwrap_or(""),
                    code_basis(f),
                );
                groups.entry(key).or_default().push(i);
            }
            fps.push(fp);
        }
        for ((scanner, rule, path, (basis_kind, basis)), mut members) in groups {
            let pos = |i: usize| {
                let loc = findings[i].location.as_ref();
                (
                    loc.and_then(|l| l.start_line).unwrap_or(0),
                    loc.and_then(|l| l.start_column).unwrap_or(0),
                    i,
                )
            };
            members.sort_by_key(|&i| pos(i));
            for (occurrence, i) in members.into_iter().enumerate() {
                let occ = occurrence.to_string();
                fps[i] = Some(format!(
                    "{VERSION}:{}",
                    digest(
                        &[
                            b"v1-code",
                            scanner.as_bytes(),
                            rule.as_bytes(),
                            t.as_bytes(),
                            path.as_bytes(),
                            basis_kind.as_bytes(),
                            basis.as_bytes(),
                            occ.as_bytes(),
                        ],
                        16
                    )
                ));
            }
        }
    }
    let fps: Vec<String> = fps.into_iter().map(Option::unwrap_or_default).collect();
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(findings.len());
    let mut keep = vec![true; findings.len()];
    for (i, fp) in fps.iter().enumerate() {
        match index.get(fp.as_str()) {
            Some(&first) => {
                let dup = std::mem::replace(
                    &mut findings[i],
                    Finding::new("", Category::Sast, "", Severity::Info, ""),
                );
                merge(&mut findings[first], dup);
                keep[i] = false;
            }
            None => {
                index.insert(fp, i);
            }
        }
    }
    drop(index);
    if keep.iter().all(|&k| k) {
        return fps;
    }
    let mut flags = keep.iter();
    findings.retain(|_| flags.next().copied().unwrap_or(true));
    fps.into_iter()
        .zip(keep)
        .filter_map(|(fp, k)| k.then_some(fp))
        .collect()
}

/// Folds a duplicate into the first finding: the higher severity wins and
/// aliases are united.
fn merge(into: &mut Finding, other: Finding) {
    if other.severity > into.severity {
        into.severity = other.severity;
        into.severity_source = other.severity_source;
    }
    for a in other.aliases {
        if !into.aliases.contains(&a) && a != into.rule_id {
            into.aliases.push(a);
        }
    }
    if into
        .package
        .as_ref()
        .and_then(|p| p.fixed_version.as_ref())
        .is_none()
    {
        if let (Some(p), Some(o)) = (into.package.as_mut(), other.package) {
            p.fixed_version = o.fixed_version;
        }
    }
}

/// Lowercase hex of `bytes`, through a byte table (`hex::encode` goes
/// through a `char` iterator, which showed in profiles of the service).
pub fn hex(bytes: &[u8]) -> String {
    let mut buf = vec![0u8; bytes.len() * 2];
    // The buffer is exactly twice the input, so this cannot fail.
    let _ = ::hex::encode_to_slice(bytes, &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {

    #[test]
    fn hex_is_lowercase_hex() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(hex(&bytes), ::hex::encode(&bytes));
        assert_eq!(hex(&[]), "");
    }

    use super::*;
    use crate::model::{Location, Package};
    use proptest::prelude::*;

    fn code(rule: &str, path: &str, line: u32, text: &str) -> Finding {
        let mut f = Finding::new("bandit", Category::Sast, rule, Severity::Medium, "msg");
        f.location = Some(Location {
            path: path.into(),
            start_line: Some(line),
            ..Location::default()
        });
        f.content_hash = Some(line_hash(text));
        f
    }

    fn target() -> Target {
        "repo:github.com/acme/api".parse().unwrap()
    }

    #[test]
    fn identical_lines_get_distinct_fingerprints() {
        let out = assign(
            vec![
                code("B1", "a.py", 10, "eval(x)"),
                code("B1", "a.py", 20, "eval(x)"),
            ],
            &target(),
        );
        assert_eq!(out.len(), 2);
        assert_ne!(out[0].0, out[1].0);
    }

    #[test]
    fn whitespace_and_line_numbers_do_not_matter() {
        let a = assign(vec![code("B1", "a.py", 10, "  eval(x)")], &target());
        let b = assign(vec![code("B1", "a.py", 99, "eval(x)\t")], &target());
        assert_eq!(a[0].0, b[0].0);
        assert!(a[0].0.starts_with("v1:"));
    }

    #[test]
    fn path_rule_and_target_matter() {
        let base = assign(vec![code("B1", "a.py", 1, "x")], &target())[0]
            .0
            .clone();
        assert_ne!(
            base,
            assign(vec![code("B2", "a.py", 1, "x")], &target())[0].0
        );
        assert_ne!(
            base,
            assign(vec![code("B1", "b.py", 1, "x")], &target())[0].0
        );
        let other: Target = "repo:github.com/acme/web".parse().unwrap();
        assert_ne!(base, assign(vec![code("B1", "a.py", 1, "x")], &other)[0].0);
    }

    #[test]
    fn placeholder_tool_fingerprints_are_ignored() {
        let mut a = code("R", "a.py", 1, "x");
        a.tool_fingerprint = Some("requires login".into());
        let b = code("R", "a.py", 5, "x");
        assert_eq!(
            assign(vec![a], &target())[0].0,
            assign(vec![b], &target())[0].0
        );
        let mut c = code("R", "a.py", 1, "x");
        c.tool_fingerprint = Some("5f1e0a".into());
        assert_ne!(
            assign(vec![c], &target())[0].0,
            assign(vec![code("R", "a.py", 1, "x")], &target())[0].0
        );
    }

    fn dep(scanner: &str, ecosystem: &str) -> Finding {
        let mut f = Finding::new(
            scanner,
            Category::Container,
            "CVE-2021-1",
            Severity::High,
            "m",
        );
        f.package = Some(Package {
            ecosystem: ecosystem.into(),
            name: "openssl".into(),
            version: Some("1.1".into()),
            fixed_version: None,
        });
        f
    }

    #[test]
    fn dependency_findings_of_two_tools_are_one() {
        let t: Target = "image:nginx".parse().unwrap();
        let a = assign(vec![dep("trivy", "deb")], &t);
        let b = assign(vec![dep("grype", "deb")], &t);
        assert_eq!(a[0].0, b[0].0);
        let merged = assign(vec![dep("trivy", "deb"), dep("grype", "deb")], &t);
        assert_eq!(merged.len(), 1);
        assert_ne!(a[0].0, assign(vec![dep("trivy", "apk")], &t)[0].0);
    }

    proptest! {
        /// Inserting or deleting lines above findings (every line number
        /// shifted by the same amount) never changes a fingerprint, and
        /// neither does the order the report lists them in.
        #[test]
        fn line_shifts_keep_fingerprints(
            lines in proptest::collection::vec((0u32..5, 1u32..500, 0usize..4), 1..40),
            shift in 0u32..10_000,
            reverse in any::<bool>(),
        ) {
            let texts = ["eval(x)", "os.system(cmd)", "pickle.loads(b)", "exec(s)"];
            let make = |shift: u32| -> Vec<Finding> {
                lines.iter().enumerate().map(|(i, &(file, line, text))| {
                    code("B1", &format!("f{file}.py"), line * 1000 + i as u32 + shift, texts[text])
                }).collect()
            };
            let mut before: Vec<String> = assign(make(0), &target()).into_iter().map(|p| p.0).collect();
            let mut moved_in = make(shift);
            if reverse { moved_in.reverse(); }
            let mut after: Vec<String> = assign(moved_in, &target()).into_iter().map(|p| p.0).collect();
            before.sort();
            after.sort();
            prop_assert_eq!(before, after);
        }
    }
}
