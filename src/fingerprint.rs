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
//! - Distinct installs stay distinct: where one report lists the same
//!   vulnerability in the same package (ecosystem and name) at more than
//!   one install location (two jars of `avro` at two paths, two copies of
//!   `urllib3` in two `site-packages`, one package in two lockfiles), each
//!   install's fingerprint also holds its location ([`install_location`]:
//!   the path without a leading `/`, so Trivy's `PkgPath` and Grype's
//!   location agree, and with the installed version cut out where it
//!   stands as a word of the path, so `avro-1.9.2.jar` upgraded in place to
//!   `avro-1.9.3.jar` keeps its fingerprint). A package reported at one
//!   location keeps the fingerprint without location, so a report of
//!   single installs, and the fingerprints already in a state, are as
//!   before, and one scanner that names a location and another that names
//!   none still agree.
//!
//!   With a state at hand ([`assign_in_place_known`], what the engine
//!   uses), the fingerprint a package already has is kept when installs
//!   come and go: a single install whose plain fingerprint is unknown but
//!   whose located one is known keeps the located one (the other copy was
//!   removed), and when a second install appears, the copy at the location
//!   of a known plain fingerprint keeps it. Without a state (a report on
//!   its own), the rule above is all.
//!
//! The version prefix (`v1:`) lets a later algorithm coexist with this one.

use crate::model::{Category, Finding, Severity, Target};
use crate::TextMap;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::hash_map::Entry;

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
    hex(&framed_sha256(parts)[..bytes])
}

/// SHA-256 of `parts`, each preceded by its length as 8 little-endian
/// bytes. The framed parts are laid out in one buffer (on the stack when
/// small) and hashed at once: the same bytes as handing the hash a length
/// and a part at a time, without the small copy into its block buffer
/// each of those costs, which showed in profiles of a report of 100,000
/// findings (a fingerprint and an event id each).
pub fn framed_sha256(parts: &[&[u8]]) -> [u8; 32] {
    let len: usize = parts.iter().map(|p| 8 + p.len()).sum();
    let mut stack = [0u8; 512];
    let mut heap = Vec::new();
    let buf: &mut [u8] = match stack.get_mut(..len) {
        Some(buf) => buf,
        None => {
            heap.resize(len, 0);
            &mut heap
        }
    };
    let mut at = 0;
    for p in parts {
        buf[at..at + 8].copy_from_slice(&(p.len() as u64).to_le_bytes());
        at += 8;
        buf[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    Sha256::digest(buf).into()
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

/// Whether a finding is fingerprinted by its message alone: a code
/// finding with no real tool fingerprint, no secret hash and no source
/// line content (a SARIF result without snippet or line hash, processed
/// without the checkout). Such fingerprints tell identical messages of one
/// file apart only by their order, and miss a line rewritten under an
/// unchanged message.
pub fn by_message(f: &Finding) -> bool {
    if f.category.is_dependency() && f.package.is_some() {
        return false;
    }
    code_basis(f).0 == "msg"
}

/// The fingerprint of a dependency finding, or `None` when it names no
/// package (it is then treated as a code finding).
pub fn dependency_fingerprint(f: &Finding, target: &Target) -> Option<String> {
    dependency_digest(f, target, None)
}

/// The install location of a dependency finding as it enters a
/// fingerprint: its path with no leading `/`, and with the installed
/// version cut out wherever it stands as a word of the path (not inside a
/// longer run of letters and digits), so an upgrade in place keeps it:
/// `/opt/kafka/libs/avro-1.9.2.jar` at 1.9.2 gives
/// `opt/kafka/libs/avro-.jar`, as the same jar at 1.9.3 does.
pub fn install_location(f: &Finding) -> String {
    let path = f.path().unwrap_or("").trim_start_matches('/');
    let version = f
        .package
        .as_ref()
        .and_then(|p| p.version.as_deref())
        .filter(|v| !v.is_empty());
    let Some(version) = version else {
        return path.to_string();
    };
    // A version stands as a word when neither side continues it: no
    // letter or digit next to it, and no `.` that joins another number
    // (`1.2` in `1.2.5` or `1.1.2` is not a word).
    let b = path.as_bytes();
    let joins = |dot: Option<&u8>, digit: Option<&u8>| {
        dot == Some(&b'.') && digit.is_some_and(u8::is_ascii_digit)
    };
    let mut out = String::with_capacity(path.len());
    let mut from = 0;
    let mut search = 0;
    while let Some(found) = path[search..].find(version) {
        let at = search + found;
        let end = at + version.len();
        let before = at.checked_sub(1).map(|i| &b[i]);
        let after = b.get(end);
        let word = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_alphanumeric() || *c >= 0x80);
        let open_before = !word(before) && !joins(before, at.checked_sub(2).map(|i| &b[i]));
        let open_after = !word(after) && !joins(after, b.get(end + 1));
        if open_before && open_after {
            out.push_str(&path[from..at]);
            from = end;
        }
        search = end;
    }
    out.push_str(&path[from..]);
    out
}

/// The fingerprint of a dependency finding at one install location, for a
/// package a report lists at more than one (see the module's rules).
fn dependency_fingerprint_at(f: &Finding, target: &Target, location: &str) -> Option<String> {
    dependency_digest(f, target, Some(location))
}

/// A dependency fingerprint: rule, ecosystem, package name and target, and
/// the install location when one is given (a different domain tag, so no
/// fingerprint of one kind can equal one of the other).
fn dependency_digest(f: &Finding, target: &Target, location: Option<&str>) -> Option<String> {
    if !f.category.is_dependency() {
        return None;
    }
    let pkg = f.package.as_ref()?;
    let t = target.to_string();
    let mut parts: Vec<&[u8]> = vec![
        if location.is_some() {
            b"v1-dep-at"
        } else {
            b"v1-dep"
        },
        f.rule_id.as_bytes(),
        pkg.ecosystem.as_bytes(),
        pkg.name.as_bytes(),
        t.as_bytes(),
    ];
    if let Some(l) = location {
        parts.push(l.as_bytes());
    }
    Some(format!("{VERSION}:{}", digest(&parts, 16)))
}

/// What a state knows of a fingerprint, for [`assign_in_place_known`]:
/// `None` when it has no record of it, else the install location
/// ([`install_location`]) of the finding it recorded.
pub type Known<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Chooses the fingerprint of each dependency finding: plain, or with its
/// install location where the report lists its package at several, with
/// what the state knows keeping fingerprints as installs come and go.
fn dependency_fingerprints(
    findings: &[Finding],
    target: &Target,
    known: Option<Known<'_>>,
) -> Vec<Option<String>> {
    let mut fps: Vec<Option<String>> = findings
        .iter()
        .map(|f| dependency_fingerprint(f, target))
        .collect();
    // Members of each (vulnerability, ecosystem, name), with locations.
    type Package<'f> = (&'f str, &'f str, &'f str);
    let mut groups: TextMap<Package<'_>, Vec<(usize, String)>> = TextMap::default();
    for (i, f) in findings.iter().enumerate() {
        if let (Some(_), Some(p)) = (&fps[i], &f.package) {
            groups
                .entry((f.rule_id.as_str(), p.ecosystem.as_str(), p.name.as_str()))
                .or_default()
                .push((i, install_location(f)));
        }
    }
    let is_known = |fp: &str| known.is_some_and(|k| k(fp).is_some());
    for members in groups.into_values() {
        let first = &members[0].1;
        let several = members.iter().any(|(_, l)| l != first);
        if !several {
            // One install: plain, unless only its located fingerprint is
            // known (the other installs went away).
            let (i, loc) = &members[0];
            let plain_known = fps[*i].as_deref().is_some_and(is_known);
            if !plain_known {
                let at = dependency_fingerprint_at(&findings[*i], target, loc);
                if at.as_deref().is_some_and(is_known) {
                    for (j, _) in &members {
                        fps[*j].clone_from(&at);
                    }
                }
            }
            continue;
        }
        let plain = fps[members[0].0].clone();
        let located: Vec<Option<String>> = members
            .iter()
            .map(|(i, loc)| dependency_fingerprint_at(&findings[*i], target, loc))
            .collect();
        // The install the plain fingerprint was recorded at keeps it, when
        // no install has a located fingerprint known yet.
        let keeps_plain = match (known, &plain) {
            (Some(k), Some(p)) if !located.iter().flatten().any(|fp| is_known(fp)) => k(p),
            _ => None,
        };
        for ((i, loc), at) in members.iter().zip(located) {
            if keeps_plain.as_deref() != Some(loc.as_str()) {
                fps[*i] = at;
            }
        }
    }
    fps
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
    assign_with(findings, target, None)
}

/// Like [`assign_in_place`], keeping the fingerprints a state already has
/// for packages whose installs come and go (see the module's rules):
/// `known` says what the target's state knows of a fingerprint.
pub fn assign_in_place_known(
    findings: &mut Vec<Finding>,
    target: &Target,
    known: Known<'_>,
) -> Vec<String> {
    assign_with(findings, target, Some(known))
}

/// A report with at least this many code findings has their digests made
/// on all cores; a smaller one on the calling thread.
const PARALLEL_DIGESTS: usize = 4096;

fn assign_with(
    findings: &mut Vec<Finding>,
    target: &Target,
    known: Option<Known<'_>>,
) -> Vec<String> {
    let t = target.to_string();
    // Group code findings by identity, then number each group in line order.
    let mut fps: Vec<Option<String>> = dependency_fingerprints(findings, target, known);
    {
        type Key<'f> = (&'f str, &'f str, &'f str, (&'static str, Cow<'f, str>));
        // Each group is a chain through `next` from its first member
        // (most groups have one member: no vector each), and the table is
        // sized once.
        const END: usize = usize::MAX;
        let mut groups: TextMap<Key<'_>, (usize, usize)> =
            TextMap::with_capacity_and_hasher(findings.len(), Default::default());
        let mut next = vec![END; findings.len()];
        for (i, f) in findings.iter().enumerate() {
            if fps[i].is_none() {
                let key = (
                    f.scanner.as_str(),
                    f.rule_id.as_str(),
                    f.path().unwrap_or(""),
                    code_basis(f),
                );
                match groups.entry(key) {
                    Entry::Occupied(mut e) => {
                        let (_, last) = e.get_mut();
                        next[*last] = i;
                        *last = i;
                    }
                    Entry::Vacant(e) => {
                        e.insert((i, i));
                    }
                }
            }
        }
        // Each member's place (finding, group, occurrence) is settled here;
        // the digests, independent of one another, are made after.
        let mut members = Vec::new();
        let mut keys: Vec<Key<'_>> = Vec::with_capacity(groups.len());
        let mut places: Vec<(usize, usize, usize)> = Vec::with_capacity(findings.len());
        for (key, (first, _)) in groups {
            let pos = |i: usize| {
                let loc = findings[i].location.as_ref();
                (
                    loc.and_then(|l| l.start_line).unwrap_or(0),
                    loc.and_then(|l| l.start_column).unwrap_or(0),
                    i,
                )
            };
            members.clear();
            let mut at = first;
            while at != END {
                members.push(at);
                at = next[at];
            }
            members.sort_by_key(|&i| pos(i));
            let g = keys.len();
            places.extend(members.iter().enumerate().map(|(occ, &i)| (i, g, occ)));
            keys.push(key);
        }
        let code = |&(i, g, occurrence): &(usize, usize, usize)| {
            let (scanner, rule, path, (basis_kind, basis)) = &keys[g];
            let occ = occurrence.to_string();
            let fp = format!(
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
            );
            (i, fp)
        };
        let made: Vec<(usize, String)> = if places.len() >= PARALLEL_DIGESTS {
            use rayon::prelude::*;
            places.par_iter().with_min_len(1024).map(code).collect()
        } else {
            places.iter().map(code).collect()
        };
        for (i, fp) in made {
            fps[i] = Some(fp);
        }
    }
    let fps: Vec<String> = fps.into_iter().map(Option::unwrap_or_default).collect();
    let mut index: TextMap<&str, usize> =
        TextMap::with_capacity_and_hasher(findings.len(), Default::default());
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
    prefixed_hex("", bytes)
}

/// `prefix` followed by `bytes` in lowercase hex, in one allocation (the
/// `hex` crate's `encode` goes a character at a time: a restore decodes a
/// fingerprint this way for every finding).
pub fn prefixed_hex(prefix: &str, bytes: &[u8]) -> String {
    let mut buf = vec![0u8; prefix.len() + bytes.len() * 2];
    buf[..prefix.len()].copy_from_slice(prefix.as_bytes());
    // The rest of the buffer is exactly twice the input, so this cannot
    // fail.
    let _ = ::hex::encode_to_slice(bytes, &mut buf[prefix.len()..]);
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {

    /// The framed hash is that of the lengths and parts handed over one
    /// at a time, whether the parts fit the stack buffer or not.
    #[test]
    fn framed_sha256_is_the_hash_of_each_length_and_part_in_turn() {
        let long = "x".repeat(700);
        for parts in [
            vec![],
            vec![&b""[..]],
            vec![&b"v1-code"[..], b"bandit", b"B101", b"", b"0"],
            vec![b"line".as_slice(), long.as_bytes()],
        ] {
            let mut h = Sha256::new();
            for p in &parts {
                h.update((p.len() as u64).to_le_bytes());
                h.update(p);
            }
            let plain: [u8; 32] = h.finalize().into();
            assert_eq!(framed_sha256(&parts), plain);
        }
    }

    #[test]
    fn hex_is_lowercase_hex() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(hex(&bytes), ::hex::encode(&bytes));
        assert_eq!(hex(&[]), "");
        assert_eq!(prefixed_hex("v1:", &[0xab, 0x01]), "v1:ab01");
    }

    use super::*;
    use crate::model::{Location, Package};
    use proptest::prelude::*;
    use std::collections::HashMap;

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

    /// A report large enough to have its digests made on all cores gives
    /// every finding the fingerprint it has in a report of its group
    /// alone (a code fingerprint depends on its group, nothing else).
    #[test]
    fn a_large_reports_fingerprints_are_its_groups_alone() {
        let all: Vec<Finding> = (0..PARALLEL_DIGESTS + 500)
            .map(|i| {
                let text = if i % 3 == 0 {
                    "eval(x)".to_string()
                } else {
                    format!("f({i})")
                };
                code(
                    &format!("B{}", i % 7),
                    &format!("m{}.py", i % 50),
                    1 + (i % 97) as u32,
                    &text,
                )
            })
            .collect();
        let whole = assign(all.clone(), &target());
        let mut one_by_one = Vec::new();
        let mut groups: HashMap<(String, String), Vec<Finding>> = HashMap::new();
        for f in all {
            let key = (f.rule_id.clone(), f.path().unwrap_or("").to_string());
            groups.entry(key).or_default().push(f);
        }
        for (_, group) in groups {
            one_by_one.extend(assign(group, &target()));
        }
        let mut whole_fps: Vec<&String> = whole.iter().map(|(fp, _)| fp).collect();
        let mut alone_fps: Vec<&String> = one_by_one.iter().map(|(fp, _)| fp).collect();
        whole_fps.sort();
        alone_fps.sort();
        assert_eq!(whole_fps.len(), PARALLEL_DIGESTS + 500);
        assert_eq!(whole_fps, alone_fps);
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

    #[test]
    fn install_location_cuts_the_version_where_it_is_a_word() {
        let jar = |path: &str, version: &str| {
            let mut f = dep("grype", "maven");
            f.package.as_mut().unwrap().version = Some(version.into());
            f.location = Some(Location {
                path: path.into(),
                ..Location::default()
            });
            install_location(&f)
        };
        // The two avro jars of Grype's report issue_9618 (corpus).
        assert_eq!(
            jar("/opt/kafka/libs/avro/avro-1.9.2.jar", "1.9.2"),
            "opt/kafka/libs/avro/avro-.jar"
        );
        assert_eq!(
            jar("/opt/kafka/plugins/apicurio/avro-1.11.1.jar", "1.11.1"),
            "opt/kafka/plugins/apicurio/avro-.jar"
        );
        // Upgraded in place: the same location.
        assert_eq!(
            jar("/opt/kafka/libs/avro/avro-1.9.3.jar", "1.9.3"),
            jar("/opt/kafka/libs/avro/avro-1.9.2.jar", "1.9.2")
        );
        // Inside a longer word, or a longer version, it stays.
        assert_eq!(jar("/lib/x1.2/y-1.2.5.jar", "1.2"), "lib/x1.2/y-1.2.5.jar");
        assert_eq!(jar("/v/1.2/a-1.2.jar", "1.2"), "v//a-.jar");
        assert_eq!(jar("", "1.0"), "");
    }

    fn fixture(rel: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Trivy's report of web-api 1.4 (urllib3 installed twice) with both
    /// copies of urllib3 upgraded in place, as the next release's scan
    /// would list them: every fingerprint stays.
    #[test]
    fn upgrading_a_package_in_place_keeps_its_fingerprint() {
        use crate::normalize::{DecodeContext, Format};
        let before = fixture("trivy/trivy-image-web-api-1.4.json");
        let text = String::from_utf8(before.clone()).unwrap();
        let after = text
            .replace("urllib3-2.0.7.dist-info", "urllib3-2.2.2.dist-info")
            .replace(
                "\"InstalledVersion\": \"2.0.7\"",
                "\"InstalledVersion\": \"2.2.2\"",
            )
            .replace("pkg:pypi/urllib3@2.0.7", "pkg:pypi/urllib3@2.2.2");
        assert_ne!(after, text, "the fixture lists urllib3 2.0.7");
        let fps = |bytes: &[u8]| -> Vec<(String, Option<String>)> {
            let r = Format::Trivy
                .decode(bytes, &DecodeContext::default())
                .unwrap();
            let t = r.target.clone().unwrap();
            assign(r.findings, &t)
                .into_iter()
                .map(|(fp, f)| (fp, f.package.and_then(|p| p.version)))
                .collect()
        };
        let (a, b) = (fps(&before), fps(after.as_bytes()));
        assert_eq!(a.len(), 12, "two installs of urllib3, two fingerprints");
        let names =
            |v: &[(String, Option<String>)]| v.iter().map(|p| p.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&a), names(&b));
        assert_eq!(
            b.iter().filter(|p| p.1.as_deref() == Some("2.2.2")).count(),
            2,
            "both copies upgraded"
        );
    }

    /// The fingerprint a state knows is kept as installs come and go:
    /// Grype's report of web-api 1.4 lists urllib3 in /opt/venv and in
    /// /usr/local. Scanned first without the /opt/venv copy, urllib3 has
    /// the plain fingerprint; when the second copy appears, the /usr/local
    /// copy keeps it and only the new one is new.
    #[test]
    fn a_second_install_leaves_the_first_its_fingerprint() {
        use crate::normalize::{DecodeContext, Format};
        let bytes = fixture("grype/grype-image-web-api-1.4.json");
        let full = Format::Grype
            .decode(&bytes, &DecodeContext::default())
            .unwrap();
        let t = full.target.clone().unwrap();
        let venv = |f: &Finding| {
            f.path().is_some_and(|p| p.starts_with("/opt/venv/")) && f.rule_id == "CVE-2024-37891"
        };
        let single: Vec<Finding> = full.findings.iter().filter(|f| !venv(f)).cloned().collect();
        let first = assign(single, &t);
        let (plain, recorded) = first
            .iter()
            .find(|(_, f)| f.rule_id == "CVE-2024-37891")
            .map(|(fp, f)| (fp.clone(), f.clone()))
            .unwrap();
        assert_eq!(Some(&plain), dependency_fingerprint(&recorded, &t).as_ref());
        let known_fps: HashMap<String, String> = first
            .iter()
            .map(|(fp, f)| (fp.clone(), install_location(f)))
            .collect();
        let known = |fp: &str| known_fps.get(fp).cloned();
        let mut second = full.findings.clone();
        let fps = assign_in_place_known(&mut second, &t, &known);
        let urllib3: Vec<(&String, &Finding)> = fps
            .iter()
            .zip(&second)
            .filter(|(_, f)| f.rule_id == "CVE-2024-37891")
            .collect();
        assert_eq!(urllib3.len(), 2);
        for (fp, f) in &urllib3 {
            if venv(f) {
                assert!(!known_fps.contains_key(*fp), "the new copy is new");
            } else {
                assert_eq!(**fp, plain, "the first copy keeps its fingerprint");
            }
        }
        // Without the state, both are located and neither is plain.
        let mut alone = full.findings;
        let fps = assign_in_place(&mut alone, &t);
        assert!(!fps.contains(&plain));
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
