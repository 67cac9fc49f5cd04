//! CODEOWNERS files: who owns a path, by the rule that decides it.
//!
//! A CODEOWNERS file is parsed once into a [`CodeOwners`], which never fails:
//! lines GitHub would skip are skipped and listed as [`Problem`]s with their
//! line number. Lookups go through a compiled index, so their cost grows with
//! the length of the path, not with the number of rules.
//!
//! # Semantics (GitHub, [`Flavor::GitHub`])
//!
//! As documented for GitHub's CODEOWNERS ("About code owners"):
//!
//! - Lines are numbered by `\n` from 1; a trailing `\r` is dropped (Windows
//!   files), as is a UTF-8 byte-order mark. Blank lines and lines starting
//!   with `#` are ignored.
//! - A rule is a pattern followed by owners, separated by whitespace. An
//!   owner token starting with `#` starts an inline comment (GitHub accepts
//!   `*.js @js-owner # note`); the rest of the line is ignored.
//! - The **last** matching rule decides, and only it: its owners, in the
//!   order written. A rule without owners decides too: the path is then
//!   *unowned* (a [`Decision`] with no owners), which differs from no rule
//!   matching at all (`None`).
//! - Patterns are gitignore-like and case-sensitive. `*` matches any run of
//!   characters except `/` (dotfiles included), `?` one character except
//!   `/`; `**` as a whole segment matches any number of directories: a
//!   leading `**/` (any depth), a middle `/**/` (zero or more directories),
//!   a trailing `/**` (everything inside). `**` inside a segment is `*`.
//! - A pattern with a `/` at its start or in its middle is anchored at the
//!   repository root; otherwise it matches at any depth (`*.js` matches
//!   `a/b.js`, `apps/` matches `x/apps/y`).
//! - A trailing `/` makes a directory pattern: everything below a matching
//!   directory, never a file of that name. Without a trailing `/`, a
//!   pattern matches the path itself and everything below it (`docs` and
//!   `/docs` own `docs/a/b.md`; `*.js` owns `x.js/y`), except when its last
//!   segment is exactly `*`: `docs/*` owns `docs/x` but not `docs/x/y`, as
//!   GitHub documents.
//! - `\` escapes the next character: `\ ` is a space inside a pattern,
//!   `\*` a literal star. Escaping a leading `#` (`\#file`) is documented
//!   by GitHub as *not working*; such lines are reported and skipped.
//! - Unsupported by GitHub, reported and skipped (never fatal): `!`
//!   negation and `[ ]` character ranges (including a GitLab section header
//!   in a GitHub file).
//! - **Invalid owners.** GitHub documents that "if any line in your
//!   CODEOWNERS file contains invalid syntax, that line will be skipped".
//!   An owner token that is not `@user`, `@org/team` or an e-mail address
//!   is invalid syntax, so the whole line is skipped and reported: keeping
//!   the line with the valid owners only (as some parsers do) would make a
//!   typo silently reassign or un-own paths. Whether a well-formed handle
//!   exists or has write access cannot be known from the file and is not
//!   checked.
//! - GitHub ignores files of 3 MB or more; such a file is still parsed
//!   here, with a problem on line 0.
//!
//! Paths are repository-relative with `/` separators; a leading `./` or `/`
//! (as scanners often write them) is ignored by [`CodeOwners::lookup`].
//!
//! # GitLab ([`Flavor::GitLab`])
//!
//! On top of the above: section headers `[Name]`, optional sections
//! `^[Name]`, approval counts `[Name][2]`, and default owners on the header
//! line (`[Name][2] @owner`), which apply to the section's rules written
//! without owners (their [`Rule::owners`] hold the defaults). Section names
//! are compared without case and sections with the same name are combined,
//! as GitLab documents; rules before the first header form an unnamed
//! section. A path's owners are the union, in file order and without
//! repeats, of each section's last matching rule; every deciding rule is
//! reported. Owners may also be nested groups (`@group/sub/team`) and roles
//! (`@@maintainer`). Escaping a leading `#` (`\#file`) works, as GitLab
//! documents. Not implemented: exclusion patterns (`!path`, GitLab 17.10+)
//! and `[ ]` classes (reported and skipped), and GitLab's fnmatch matching
//! where it departs from GitHub's (GitLab floats every pattern that does
//! not start with `/`, e.g. `ee/docs`; here, as on GitHub, a middle `/`
//! anchors).
//!
//! # Matching
//!
//! Each rule is reduced to a canonical form (segments plus what it owns
//! below its last segment) and filed in the cheapest structure that can
//! answer it: root-anchored literal paths and directories are looked up by
//! the path's prefixes, unanchored names (`foo`, `foo/`, `**/logs`) by its
//! components, suffix patterns (`*.js`, `*_test.go`) by each component's
//! endings, and the remaining wildcard rules go to small
//! [`globset::GlobSet`]s filed by a literal every match must contain: a
//! component (`auth` for `/src/**/auth/*.go`), the start of a component
//! (`node_` for `/src/node_*`, `test_` for `test_*.py`) or a literal
//! prefix (`src` for `/src/*/x`), so a path only tries the few sets that
//! can match it. A lookup takes the highest matching rule and skips every
//! structure that cannot beat the best match found so far. globset's `?`
//! matches one byte, so the rare rules with `?` are matched by a direct
//! reading of the pattern instead, one character at a time.

use globset::{Candidate, Glob, GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};

/// Where GitHub looks for a CODEOWNERS file, in order; the first that
/// exists is used.
pub const LOCATIONS: [&str; 3] = [".github/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS"];

/// GitHub ignores CODEOWNERS files of this size or more (3 MB).
pub const MAX_SIZE: usize = 3 * 1024 * 1024;

/// The CODEOWNERS file of a checked-out repository at `dir`, by GitHub's
/// lookup order ([`LOCATIONS`]).
pub fn find_in(dir: &Path) -> Option<PathBuf> {
    LOCATIONS
        .iter()
        .map(|rel| dir.join(rel))
        .find(|p| p.is_file())
}

/// The first CODEOWNERS file that `read` returns, by GitHub's lookup order:
/// its location and text. `read` answers for a repository-relative path
/// (from a checkout, a Git tree or an API).
pub fn locate(mut read: impl FnMut(&str) -> Option<String>) -> Option<(&'static str, String)> {
    LOCATIONS
        .iter()
        .find_map(|rel| read(rel).map(|text| (*rel, text)))
}

/// Which product's CODEOWNERS rules to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    /// GitHub: one deciding rule, the last that matches.
    #[default]
    GitHub,
    /// GitLab: sections; the last matching rule of every section decides,
    /// and their owners are united.
    GitLab,
}

/// One rule of a CODEOWNERS file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// 1-based line number.
    pub line: u32,
    /// The pattern as written (escapes included).
    pub pattern: String,
    /// The owners as written, in order; empty for a rule that makes paths
    /// unowned. GitLab: a section's default owners when the rule has none.
    pub owners: Vec<String>,
    /// GitLab: the section's name (as first written); `None` before the
    /// first section and always on GitHub.
    pub section: Option<String>,
}

/// A line that was skipped (or a file-wide note on line 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line number; 0 for the file as a whole.
    pub line: u32,
    /// The line, without surrounding whitespace.
    pub text: String,
    /// What is wrong and what was done about it.
    pub message: String,
}

/// A GitLab section (combined over headers with the same name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name as first written.
    pub name: String,
    /// Line of the first header with this name.
    pub line: u32,
    /// `^[Name]`: approval is optional.
    pub optional: bool,
    /// `[Name][N]`: approvals required, when given.
    pub approvals: Option<u32>,
    /// Default owners from the first header that gives some.
    pub owners: Vec<String>,
}

/// Who owns a path, and the rule(s) that say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'a> {
    /// Owners as written, in file order (GitLab: united across sections,
    /// without repeats). Empty when the deciding rules have no owners.
    pub owners: Vec<&'a str>,
    /// The deciding rules, in file order: exactly one on GitHub, one per
    /// section with a matching rule on GitLab.
    pub rules: Vec<&'a Rule>,
}

impl Decision<'_> {
    /// Line of the last deciding rule.
    pub fn line(&self) -> u32 {
        self.rules.last().map_or(0, |r| r.line)
    }
}

/// A parsed CODEOWNERS file, compiled for lookups.
#[derive(Debug, Clone)]
pub struct CodeOwners {
    flavor: Flavor,
    rules: Vec<Rule>,
    problems: Vec<Problem>,
    sections: Vec<Section>,
    /// Per rule: its canonical pattern and its section (0: none, else
    /// index into `sections` + 1).
    canon: Vec<Canon>,
    section_of: Vec<u32>,
    index: Index,
}

impl CodeOwners {
    /// Parses `text`; never fails. Skipped lines are in [`Self::problems`].
    pub fn parse(text: &str, flavor: Flavor) -> CodeOwners {
        let mut p = Parser {
            flavor,
            rules: Vec::new(),
            problems: Vec::new(),
            sections: Vec::new(),
            canon: Vec::new(),
            section_of: Vec::new(),
            current: 0,
            defaults: Vec::new(),
        };
        if text.len() >= MAX_SIZE {
            p.problems.push(Problem {
                line: 0,
                text: String::new(),
                message: format!(
                    "the file is {} bytes; GitHub ignores CODEOWNERS files of 3 MB or more (parsed anyway)",
                    text.len()
                ),
            });
        }
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, raw) in text.split('\n').enumerate() {
            let line = u32::try_from(i + 1).unwrap_or(u32::MAX);
            p.line(line, raw.strip_suffix('\r').unwrap_or(raw));
        }
        let index = Index::build(&p.canon, &p.section_of);
        CodeOwners {
            flavor,
            rules: p.rules,
            problems: p.problems,
            sections: p.sections,
            canon: p.canon,
            section_of: p.section_of,
            index,
        }
    }

    /// The flavor it was parsed with.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The rules, in file order (skipped lines excluded).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The lines that were skipped, and why, in file order.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// GitLab sections, in order of first appearance (empty on GitHub).
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// Who owns `path`; `None` when no rule matches.
    pub fn lookup(&self, path: &str) -> Option<Decision<'_>> {
        let path = normalize(path);
        if path.is_empty() {
            return None;
        }
        match self.flavor {
            Flavor::GitHub => {
                let mut last = Last(None);
                self.index.visit(path, &mut last);
                let rule = &self.rules[last.0? as usize];
                Some(Decision {
                    owners: rule.owners.iter().map(String::as_str).collect(),
                    rules: vec![rule],
                })
            }
            Flavor::GitLab => {
                let mut all = All(Vec::new());
                self.index.visit(path, &mut all);
                let mut hits = all.0;
                if hits.is_empty() {
                    return None;
                }
                // The last matching rule of each section decides.
                hits.sort_unstable_by(|a, b| b.cmp(a));
                hits.dedup();
                let mut seen: Vec<u32> = Vec::new();
                let mut deciding: Vec<u32> = Vec::new();
                for r in hits {
                    let s = self.section_of[r as usize];
                    if !seen.contains(&s) {
                        seen.push(s);
                        deciding.push(r);
                    }
                }
                deciding.reverse();
                let rules: Vec<&Rule> = deciding.iter().map(|&r| &self.rules[r as usize]).collect();
                let mut owners: Vec<&str> = Vec::new();
                for o in rules.iter().flat_map(|r| r.owners.iter()) {
                    if !owners.contains(&o.as_str()) {
                        owners.push(o);
                    }
                }
                Some(Decision { owners, rules })
            }
        }
    }

    /// Rules that can never decide, in file order: for every path they
    /// match, a later rule (of the same section, on GitLab) matches too.
    ///
    /// Sound but not complete: every rule listed is unreachable, but only
    /// these shadows are recognized: a later rule with the same canonical
    /// pattern (`/docs/` and `docs/**` are the same), one that matches
    /// everything (`*`, `**`), a root-anchored literal directory or path
    /// that contains all the rule's matches (`/src/` shadows `/src/a/*.rs`),
    /// an unanchored name that every match contains (`vendor` shadows
    /// `/a/vendor/b/`), and an unanchored suffix that every match's
    /// component carries (`*.md` shadows `/docs/*.md`). A rule covered only
    /// by several later rules together, or by a later wildcard pattern
    /// other than those, is not found.
    pub fn unreachable(&self) -> Vec<&Rule> {
        let mut groups: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, &s) in self.section_of.iter().enumerate() {
            groups.entry(s).or_default().push(i);
        }
        let mut dead = vec![false; self.rules.len()];
        for members in groups.values() {
            let mut later = Shadows::default();
            for &i in members.iter().rev() {
                let c = &self.canon[i];
                if later.covers(c) {
                    dead[i] = true;
                }
                later.add(c);
            }
        }
        self.rules
            .iter()
            .zip(dead)
            .filter(|(_, d)| *d)
            .map(|(r, _)| r)
            .collect()
    }
}

/// Drops the leading `./` and `/` that scanners put before paths.
fn normalize(mut path: &str) -> &str {
    loop {
        if let Some(p) = path.strip_prefix("./") {
            path = p;
        } else if let Some(p) = path.strip_prefix('/') {
            path = p;
        } else {
            return path;
        }
    }
}

// ---------------------------------------------------------------- parsing

struct Parser {
    flavor: Flavor,
    rules: Vec<Rule>,
    problems: Vec<Problem>,
    sections: Vec<Section>,
    canon: Vec<Canon>,
    section_of: Vec<u32>,
    /// Current section: 0 for none, else index + 1.
    current: u32,
    defaults: Vec<String>,
}

impl Parser {
    fn skip(&mut self, line: u32, text: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            line,
            text: text.to_string(),
            message: message.into(),
        });
    }

    fn line(&mut self, line: u32, raw: &str) {
        // Trailing whitespace is left to the pattern scanner: `a\ ` keeps
        // its escaped space.
        let body = raw.trim_start();
        let text = body.trim_end();
        if text.is_empty() || text.starts_with('#') {
            return;
        }
        let gitlab = self.flavor == Flavor::GitLab;
        if text.starts_with('[') || text.starts_with("^[") {
            if gitlab {
                self.header(line, text);
            } else {
                self.skip(
                    line,
                    text,
                    "`[ ]` is not supported by GitHub (a GitLab section header? use the GitLab flavor); line skipped",
                );
            }
            return;
        }
        let (pattern, rest) = split_pattern(body);
        if pattern.starts_with('!') {
            let what = if gitlab {
                "`!` exclusion patterns are not supported"
            } else {
                "`!` negation is not supported by GitHub"
            };
            return self.skip(line, text, format!("{what}; line skipped"));
        }
        if pattern.starts_with("\\#") && !gitlab {
            return self.skip(
                line,
                text,
                "escaping a leading `#` with `\\` does not work on GitHub (documented); line skipped",
            );
        }
        if has_unescaped(pattern, '[') {
            let what = if gitlab {
                "not supported"
            } else {
                "not supported by GitHub"
            };
            return self.skip(
                line,
                text,
                format!("`[ ]` character ranges are {what}; line skipped"),
            );
        }
        let owners = match owners(rest, self.flavor) {
            Ok(o) => o,
            Err(bad) => {
                return self.skip(
                    line,
                    text,
                    format!(
                        "invalid owner {bad:?} ({}); line skipped",
                        expected(self.flavor)
                    ),
                )
            }
        };
        let canon = match Canon::parse(pattern) {
            Ok(c) => c,
            Err(why) => return self.skip(line, text, format!("{why}; line skipped")),
        };
        if let Err(e) = canon.globs().iter().try_for_each(|g| glob(g).map(drop)) {
            return self.skip(
                line,
                text,
                format!("pattern cannot be compiled ({e}); line skipped"),
            );
        }
        let owners = if owners.is_empty() && self.current != 0 {
            self.defaults.clone()
        } else {
            owners
        };
        let section = match self.current {
            0 => None,
            s => self.sections.get(s as usize - 1).map(|s| s.name.clone()),
        };
        self.rules.push(Rule {
            line,
            pattern: pattern.to_string(),
            owners,
            section,
        });
        self.canon.push(canon);
        self.section_of.push(self.current);
    }

    /// GitLab: `[Name]`, `^[Name]`, `[Name][N]`, each optionally followed
    /// by default owners.
    fn header(&mut self, line: u32, text: &str) {
        let (optional, body) = match text.strip_prefix('^') {
            Some(b) => (true, b),
            None => (false, text),
        };
        let Some(close) = body.find(']') else {
            return self.skip(line, text, "unterminated section header; line skipped");
        };
        let name = body[1..close].trim();
        if name.is_empty() {
            return self.skip(line, text, "section header without a name; line skipped");
        }
        let mut rest = &body[close + 1..];
        let mut approvals = None;
        if let Some(count) = rest.strip_prefix('[') {
            match count.find(']') {
                Some(end) => {
                    match count[..end].trim().parse::<u32>() {
                        Ok(n) if n > 0 => approvals = Some(n),
                        _ => self.skip(
                            line,
                            text,
                            "approval count is not a positive number; section kept without it",
                        ),
                    }
                    rest = &count[end + 1..];
                }
                None => {
                    return self.skip(line, text, "unterminated approval count; line skipped");
                }
            }
        }
        if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
            return self.skip(
                line,
                text,
                "unexpected text after the section header; line skipped",
            );
        }
        let defaults = match owners(rest, self.flavor) {
            Ok(o) => o,
            Err(bad) => {
                self.skip(
                    line,
                    text,
                    format!(
                        "invalid default owner {bad:?} ({}); section kept without default owners",
                        expected(self.flavor)
                    ),
                );
                Vec::new()
            }
        };
        let key = name.to_lowercase();
        let index = match self
            .sections
            .iter()
            .position(|s| s.name.to_lowercase() == key)
        {
            Some(i) => i,
            None => {
                self.sections.push(Section {
                    name: name.to_string(),
                    line,
                    optional,
                    approvals,
                    owners: Vec::new(),
                });
                self.sections.len() - 1
            }
        };
        if let Some(s) = self.sections.get_mut(index) {
            if s.owners.is_empty() {
                s.owners = defaults.clone();
            }
        }
        self.current = u32::try_from(index + 1).unwrap_or(u32::MAX);
        self.defaults = defaults;
    }
}

fn expected(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::GitHub => "expected @user, @org/team or an e-mail address",
        Flavor::GitLab => "expected @user, @group[/subgroup...], @@role or an e-mail address",
    }
}

/// The pattern (up to the first unescaped whitespace) and the rest.
fn split_pattern(text: &str) -> (&str, &str) {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c.is_whitespace() {
            return (&text[..i], &text[i..]);
        }
    }
    (text, "")
}

fn has_unescaped(pattern: &str, wanted: char) -> bool {
    let mut escaped = false;
    for c in pattern.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == wanted {
            return true;
        }
    }
    false
}

/// The owner tokens up to an inline comment, or the first invalid token.
fn owners(rest: &str, flavor: Flavor) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for token in rest.split_whitespace() {
        if token.starts_with('#') {
            break;
        }
        if !valid_owner(token, flavor) {
            return Err(token.to_string());
        }
        out.push(token.to_string());
    }
    Ok(out)
}

fn valid_owner(token: &str, flavor: Flavor) -> bool {
    // Handle characters are checked leniently (GitHub user names have no
    // `.` or `_`, but enterprise-managed ones have `_`, and an unknown
    // handle is GitHub's call, not a syntax error); the shape is strict.
    let name = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match token.strip_prefix('@') {
        Some(handle) => match flavor {
            Flavor::GitHub => match handle.split_once('/') {
                None => name(handle),
                Some((org, team)) => name(org) && name(team),
            },
            Flavor::GitLab => match handle.strip_prefix('@') {
                Some(role) => matches!(
                    role.to_ascii_lowercase().as_str(),
                    "developer" | "developers" | "maintainer" | "maintainers" | "owner" | "owners"
                ),
                None => handle.split('/').all(name),
            },
        },
        None => email(token),
    }
}

fn email(token: &str) -> bool {
    let Some((local, domain)) = token.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !"()<>[]\\,;:\"@".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    local_ok
        && labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-'))
}

// ---------------------------------------------------------------- patterns

/// One character class of a wildcard segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Tok {
    Lit(String),
    Star,
    Quest,
}

/// One `/`-separated segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Seg {
    /// `**`: zero or more whole components.
    Any,
    /// A literal component.
    Lit(String),
    /// A component with `*` or `?`.
    Glob(Vec<Tok>),
}

/// What a pattern owns beyond the components its segments match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Tail {
    /// Only paths its segments match entirely (`docs/*`).
    Exact,
    /// Those paths and everything below them (`docs`, `*.js`).
    SelfOrBelow,
    /// Only paths strictly below them (`docs/`, `docs/**`).
    Below,
}

/// A pattern reduced to what it matches: a path matches when `segs` match
/// its first k components (`Any` taking zero or more) and `tail` accepts
/// the remaining n - k (Exact: 0, SelfOrBelow: any, Below: at least 1).
/// An unanchored pattern starts with `Any`; `segs` never ends with `Any`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Canon {
    segs: Vec<Seg>,
    tail: Tail,
}

impl Canon {
    fn parse(pattern: &str) -> Result<Canon, String> {
        // (character, escaped); `\/` is a separator like `/`.
        let mut chars: Vec<(char, bool)> = Vec::with_capacity(pattern.len());
        let mut it = pattern.chars();
        while let Some(c) = it.next() {
            if c == '\\' {
                match it.next() {
                    Some('/') => chars.push(('/', false)),
                    Some(n) => chars.push((n, true)),
                    None => return Err("the pattern ends with a lone `\\`".into()),
                }
            } else {
                chars.push((c, false));
            }
        }
        let sep = |&(c, e): &(char, bool)| c == '/' && !e;
        let dir = chars.last().is_some_and(sep);
        while chars.last().is_some_and(sep) {
            chars.pop();
        }
        if chars.is_empty() {
            return Err("empty pattern".into());
        }
        let anchored = chars.iter().any(sep);
        let mut segs: Vec<Seg> = Vec::new();
        for raw in chars.split(sep).filter(|s| !s.is_empty()) {
            let seg = if raw == [('*', false), ('*', false)] {
                Seg::Any
            } else {
                let mut toks: Vec<Tok> = Vec::new();
                for &(c, escaped) in raw {
                    match (c, escaped) {
                        ('*', false) => {
                            if toks.last() != Some(&Tok::Star) {
                                toks.push(Tok::Star);
                            }
                        }
                        ('?', false) => toks.push(Tok::Quest),
                        _ => match toks.last_mut() {
                            Some(Tok::Lit(s)) => s.push(c),
                            _ => toks.push(Tok::Lit(c.to_string())),
                        },
                    }
                }
                match toks.as_slice() {
                    [Tok::Lit(s)] => Seg::Lit(s.clone()),
                    _ => Seg::Glob(toks),
                }
            };
            if !(seg == Seg::Any && segs.last() == Some(&Seg::Any)) {
                segs.push(seg);
            }
        }
        let star = Seg::Glob(vec![Tok::Star]);
        let tail = if segs.last() == Some(&Seg::Any) {
            // A trailing `**` matches everything inside, not the directory:
            // `docs/**` is `docs/`; `docs/**/` needs one directory more.
            segs.pop();
            if segs.is_empty() {
                segs.push(star.clone());
                if dir {
                    Tail::Below
                } else {
                    Tail::SelfOrBelow
                }
            } else {
                if dir {
                    segs.push(star.clone());
                }
                Tail::Below
            }
        } else if dir {
            Tail::Below
        } else if segs.last() == Some(&star) {
            Tail::Exact
        } else {
            Tail::SelfOrBelow
        };
        if !anchored && segs.first() != Some(&Seg::Any) {
            segs.insert(0, Seg::Any);
        }
        Ok(Canon { segs, tail })
    }

    /// Matches every non-empty path (`*`, `**`, `/**`).
    fn everything(&self) -> bool {
        let star = Seg::Glob(vec![Tok::Star]);
        match self.segs.as_slice() {
            [s] => *s == star && self.tail == Tail::SelfOrBelow,
            [Seg::Any, s] => *s == star && self.tail != Tail::Below,
            _ => false,
        }
    }

    /// Whether a segment has `?`.
    fn has_quest(&self) -> bool {
        self.segs
            .iter()
            .any(|s| matches!(s, Seg::Glob(t) if t.contains(&Tok::Quest)))
    }

    /// Matches `path` by the definition above, character by character.
    fn matches(&self, path: &str) -> bool {
        let comps: Vec<&str> = path.split('/').collect();
        segs_match(&self.segs, &comps, self.tail)
    }

    /// The glob(s) that match exactly what this pattern matches.
    fn globs(&self) -> Vec<String> {
        let mut g = String::new();
        for (i, seg) in self.segs.iter().enumerate() {
            if i > 0 {
                g.push('/');
            }
            match seg {
                Seg::Any => g.push_str("**"),
                Seg::Lit(s) => escape_into(&mut g, s),
                Seg::Glob(toks) => {
                    for t in toks {
                        match t {
                            Tok::Lit(s) => escape_into(&mut g, s),
                            Tok::Star => g.push('*'),
                            Tok::Quest => g.push('?'),
                        }
                    }
                }
            }
        }
        match self.tail {
            Tail::Exact => vec![g],
            Tail::Below => vec![g + "/**"],
            Tail::SelfOrBelow => {
                let below = format!("{g}/**");
                vec![g, below]
            }
        }
    }
}

fn segs_match(segs: &[Seg], comps: &[&str], tail: Tail) -> bool {
    match segs.split_first() {
        None => match tail {
            Tail::Exact => comps.is_empty(),
            Tail::SelfOrBelow => true,
            Tail::Below => !comps.is_empty(),
        },
        Some((Seg::Any, rest)) => (0..=comps.len()).any(|k| segs_match(rest, &comps[k..], tail)),
        Some((seg, rest)) => comps.split_first().is_some_and(|(comp, more)| {
            let ok = match seg {
                Seg::Lit(l) => l == comp,
                Seg::Glob(toks) => toks_match(toks, comp),
                Seg::Any => false,
            };
            ok && segs_match(rest, more, tail)
        }),
    }
}

fn toks_match(toks: &[Tok], s: &str) -> bool {
    match toks.split_first() {
        None => s.is_empty(),
        Some((Tok::Lit(l), rest)) => s
            .strip_prefix(l.as_str())
            .is_some_and(|r| toks_match(rest, r)),
        Some((Tok::Quest, rest)) => {
            let mut chars = s.chars();
            chars.next().is_some() && toks_match(rest, chars.as_str())
        }
        Some((Tok::Star, rest)) => s
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(s.len()))
            .any(|i| toks_match(rest, &s[i..])),
    }
}

fn escape_into(out: &mut String, literal: &str) {
    for c in literal.chars() {
        if matches!(c, '\\' | '*' | '?' | '[' | ']' | '{' | '}') {
            out.push('\\');
        }
        out.push(c);
    }
}

fn glob(g: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(g)
        .literal_separator(true)
        .backslash_escape(true)
        .case_insensitive(false)
        .build()
}

// ---------------------------------------------------------------- index

/// FNV-1a: the index hashes short path pieces, millions of times a second;
/// SipHash's flood resistance buys nothing against a CODEOWNERS file.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

type Map<V> = HashMap<Box<str>, V, BuildHasherDefault<Fnv>>;

/// Receives the rules that match a path.
trait Collect {
    fn hit(&mut self, rule: u32);
    /// Whether a structure whose highest rule is `max` can still matter.
    fn wants(&self, max: u32) -> bool;
}

/// GitHub: only the highest matching rule counts.
struct Last(Option<u32>);

impl Collect for Last {
    fn hit(&mut self, rule: u32) {
        if self.0.is_none_or(|b| rule > b) {
            self.0 = Some(rule);
        }
    }
    fn wants(&self, max: u32) -> bool {
        self.0.is_none_or(|b| max > b)
    }
}

/// GitLab: every matching rule (the best per section is picked after).
struct All(Vec<u32>);

impl Collect for All {
    fn hit(&mut self, rule: u32) {
        self.0.push(rule);
    }
    fn wants(&self, _max: u32) -> bool {
        true
    }
}

/// Rules filed under one key. Each list keeps, per section, only the
/// highest rule: a later rule with the same key and tail always wins.
#[derive(Debug, Clone, Default)]
struct Node {
    /// Rules owning the key itself and everything below it.
    own: Vec<u32>,
    /// Rules owning only what is below the key.
    below: Vec<u32>,
    /// Wildcard rules tried whenever the key is found (anchored: only
    /// below it).
    globs: Option<Globs>,
    /// Anchored: wildcard rules whose next segment starts with a literal
    /// (`/src/node_crypto*`), by that literal.
    stems: Option<Stems>,
    max: u32,
}

impl Node {
    fn add(list: &mut Vec<u32>, rule: u32, section_of: &[u32]) {
        let s = section_of[rule as usize];
        match list.iter_mut().find(|r| section_of[**r as usize] == s) {
            Some(r) => *r = rule,
            None => list.push(rule),
        }
    }
}

/// Wildcard rules tried together.
#[derive(Debug, Clone)]
enum Matchers {
    Set(GlobSet),
    /// When a set is too large for one automaton: one matcher per glob.
    Each(Vec<GlobMatcher>),
}

/// How a wildcard rule is matched.
#[derive(Debug, Clone)]
enum Pat {
    /// By globset (one of the rule's globs).
    Glob(String),
    /// By [`Canon::matches`]: rules with `?`, which globset matches against
    /// one byte where GitHub's "any character" means one character.
    Exact(Canon),
}

/// Wildcard rules tried together.
#[derive(Debug, Clone)]
struct Globs {
    matchers: Matchers,
    /// Glob index to rule.
    rule_of: Vec<u32>,
    exact: Vec<(Canon, u32)>,
    max: u32,
}

impl Globs {
    fn build(pats: Vec<(Pat, u32)>) -> Option<Globs> {
        let max = pats.iter().map(|(_, r)| *r).max()?;
        let mut compiled: Vec<(Glob, u32)> = Vec::new();
        let mut exact = Vec::new();
        for (p, r) in pats {
            match p {
                Pat::Glob(g) => compiled.extend(glob(&g).ok().map(|g| (g, r))),
                Pat::Exact(c) => exact.push((c, r)),
            }
        }
        let mut builder = GlobSetBuilder::new();
        for (g, _) in &compiled {
            builder.add(g.clone());
        }
        let matchers = match builder.build() {
            Ok(set) => Matchers::Set(set),
            Err(_) => Matchers::Each(compiled.iter().map(|(g, _)| g.compile_matcher()).collect()),
        };
        Some(Globs {
            matchers,
            rule_of: compiled.iter().map(|(_, r)| *r).collect(),
            exact,
            max,
        })
    }

    fn visit(&self, path: &str, c: &mut impl Collect) {
        if !c.wants(self.max) {
            return;
        }
        let candidate = Candidate::from_bytes(path.as_bytes());
        match &self.matchers {
            Matchers::Set(set) => {
                let mut hits = Vec::new();
                set.matches_candidate_into(&candidate, &mut hits);
                for i in hits {
                    c.hit(self.rule_of[i]);
                }
            }
            Matchers::Each(each) => {
                for (m, &r) in each.iter().zip(&self.rule_of) {
                    if m.is_match_candidate(&candidate) {
                        c.hit(r);
                    }
                }
            }
        }
        for (canon, r) in &self.exact {
            if canon.matches(path) {
                c.hit(*r);
            }
        }
    }
}

/// Wildcard rules by the literal start of one segment (`node_crypto` for
/// `/src/node_crypto*`, `test_` for `test_*.py`): tried on a component
/// only when it starts with that literal.
#[derive(Debug, Clone, Default)]
struct Stems {
    lens: Vec<usize>,
    by: Map<Globs>,
    max: u32,
}

impl Stems {
    fn build(groups: Groups) -> Option<Stems> {
        let mut lens: Vec<usize> = groups.keys().map(String::len).collect();
        lens.sort_unstable();
        lens.dedup();
        let mut by = Map::default();
        let mut max = None;
        for (stem, globs) in groups {
            if let Some(g) = Globs::build(globs) {
                max = max.max(Some(g.max));
                by.insert(stem.into(), g);
            }
        }
        Some(Stems {
            lens,
            by,
            max: max?,
        })
    }

    fn visit(&self, comp: &str, path: &str, c: &mut impl Collect) {
        if !c.wants(self.max) {
            return;
        }
        for &len in &self.lens {
            if len > comp.len() {
                break;
            }
            if comp.is_char_boundary(len) {
                if let Some(g) = self.by.get(&comp[..len]) {
                    g.visit(path, c);
                }
            }
        }
    }
}

/// All rules, filed for lookup.
#[derive(Debug, Clone, Default)]
struct Index {
    /// Rules matching every path.
    everything: Vec<u32>,
    /// Root-anchored, by literal path (`src/main.rs`, `docs`) or literal
    /// prefix of a wildcard pattern (`src` for `/src/*/x`).
    anchored: Map<Node>,
    anchored_max: Option<u32>,
    /// Root-anchored wildcard rules starting with a stem (`/foo*/`).
    root_stems: Option<Stems>,
    /// By a literal component: unanchored names (`logs` for `**/logs`) and
    /// wildcard rules with a literal segment past their first wildcard
    /// (`auth` for `/src/**/auth/*.go`).
    names: Map<Node>,
    names_max: Option<u32>,
    /// Unanchored single-segment suffix patterns (`.js` for `*.js`).
    suffixes: Map<Node>,
    suffix_lens: Vec<usize>,
    suffixes_max: Option<u32>,
    /// Unanchored wildcard rules with a stem (`test_*.py`).
    floating_stems: Option<Stems>,
    /// Everything else.
    rest: Option<Globs>,
}

type Groups = HashMap<String, Vec<(Pat, u32)>>;

impl Index {
    fn build(canon: &[Canon], section_of: &[u32]) -> Index {
        let mut ix = Index::default();
        let mut anchored_globs: Groups = HashMap::new();
        let mut anchored_stems: HashMap<String, Groups> = HashMap::new();
        let mut name_globs: Groups = HashMap::new();
        let mut root_stems: Groups = HashMap::new();
        let mut floating_stems: Groups = HashMap::new();
        let mut rest: Vec<(Pat, u32)> = Vec::new();
        let mut lens: HashSet<usize> = HashSet::new();
        let put = |map: &mut Map<Node>, key: &str, tail: Tail, rule: u32| {
            let node = map.entry(key.into()).or_default();
            match tail {
                Tail::Below => Node::add(&mut node.below, rule, section_of),
                _ => Node::add(&mut node.own, rule, section_of),
            }
            node.max = node.max.max(rule);
        };
        let touch = |map: &mut Map<Node>, key: &str, rule: u32| {
            let node = map.entry(key.into()).or_default();
            node.max = node.max.max(rule);
        };
        for (i, c) in canon.iter().enumerate() {
            let rule = u32::try_from(i).unwrap_or(u32::MAX);
            let literals = c
                .segs
                .iter()
                .take_while(|s| matches!(s, Seg::Lit(_)))
                .count();
            let globs = || -> Vec<(Pat, u32)> {
                if c.has_quest() {
                    vec![(Pat::Exact(c.clone()), rule)]
                } else {
                    c.globs()
                        .into_iter()
                        .map(|g| (Pat::Glob(g), rule))
                        .collect()
                }
            };
            if c.everything() {
                Node::add(&mut ix.everything, rule, section_of);
            } else if literals == c.segs.len() {
                put(&mut ix.anchored, &lits(&c.segs).join("/"), c.tail, rule);
                ix.anchored_max = Some(rule);
            } else if let [Seg::Any, Seg::Lit(name)] = c.segs.as_slice() {
                put(&mut ix.names, name, c.tail, rule);
                ix.names_max = Some(rule);
            } else if let Some(suffix) = suffix(c) {
                put(&mut ix.suffixes, suffix, c.tail, rule);
                lens.insert(suffix.len());
                ix.suffixes_max = Some(rule);
            } else if let Some(name) = inner_literal(c, literals) {
                // Usually more selective than a shared prefix like `src`.
                touch(&mut ix.names, name, rule);
                ix.names_max = Some(rule);
                name_globs
                    .entry(name.to_string())
                    .or_default()
                    .extend(globs());
            } else if let Some(stem) = stem(c.segs.get(literals)) {
                let key = lits(&c.segs[..literals]).join("/");
                let group = if literals > 0 {
                    touch(&mut ix.anchored, &key, rule);
                    ix.anchored_max = Some(rule);
                    anchored_stems.entry(key).or_default()
                } else {
                    &mut root_stems
                };
                group.entry(stem.to_string()).or_default().extend(globs());
            } else if let Some(stem) = stem(c.segs.get(1)).filter(|_| c.segs[0] == Seg::Any) {
                floating_stems
                    .entry(stem.to_string())
                    .or_default()
                    .extend(globs());
            } else if literals > 0 {
                let key = lits(&c.segs[..literals]).join("/");
                touch(&mut ix.anchored, &key, rule);
                ix.anchored_max = Some(rule);
                anchored_globs.entry(key).or_default().extend(globs());
            } else {
                rest.extend(globs());
            }
        }
        for (key, globs) in anchored_globs {
            if let Some(node) = ix.anchored.get_mut(key.as_str()) {
                node.globs = Globs::build(globs);
            }
        }
        for (key, groups) in anchored_stems {
            if let Some(node) = ix.anchored.get_mut(key.as_str()) {
                node.stems = Stems::build(groups);
            }
        }
        for (key, globs) in name_globs {
            if let Some(node) = ix.names.get_mut(key.as_str()) {
                node.globs = Globs::build(globs);
            }
        }
        ix.root_stems = Stems::build(root_stems);
        ix.floating_stems = Stems::build(floating_stems);
        ix.suffix_lens = lens.into_iter().collect();
        ix.suffix_lens.sort_unstable();
        ix.rest = Globs::build(rest);
        ix
    }

    fn visit(&self, path: &str, c: &mut impl Collect) {
        for &r in &self.everything {
            c.hit(r);
        }
        if let Some(s) = &self.root_stems {
            s.visit(path.split('/').next().unwrap_or(path), path, c);
        }
        let anchored = self.anchored_max.is_some_and(|m| c.wants(m));
        let names = self.names_max.is_some_and(|m| c.wants(m));
        let suffixes = self.suffixes_max.is_some_and(|m| c.wants(m));
        let stems = self.floating_stems.as_ref().filter(|s| c.wants(s.max));
        if anchored || names || suffixes || stems.is_some() {
            let mut start = 0;
            loop {
                let end = path[start..].find('/').map_or(path.len(), |i| start + i);
                let last = end == path.len();
                if anchored {
                    if let Some(node) = self.anchored.get(&path[..end]) {
                        visit_node(node, last, true, path, c);
                        if let (Some(s), false) = (&node.stems, last) {
                            let rest = &path[end + 1..];
                            s.visit(rest.split('/').next().unwrap_or(rest), path, c);
                        }
                    }
                }
                let comp = &path[start..end];
                if names {
                    if let Some(node) = self.names.get(comp) {
                        visit_node(node, last, false, path, c);
                    }
                }
                if suffixes {
                    for &len in &self.suffix_lens {
                        if len > comp.len() {
                            break;
                        }
                        let at = comp.len() - len;
                        if comp.is_char_boundary(at) {
                            if let Some(node) = self.suffixes.get(&comp[at..]) {
                                visit_node(node, last, false, path, c);
                            }
                        }
                    }
                }
                if let Some(s) = stems {
                    s.visit(comp, path, c);
                }
                if last {
                    break;
                }
                start = end + 1;
            }
        }
        if let Some(g) = &self.rest {
            g.visit(path, c);
        }
    }
}

/// `node` is keyed by the path's first components (anchored) or by one of
/// its components; `last` says whether that reaches the path's end.
/// Anchored wildcard rules only match strictly below their literal prefix;
/// a name's wildcard rules may end at it.
fn visit_node(node: &Node, last: bool, anchored: bool, path: &str, c: &mut impl Collect) {
    if !c.wants(node.max) {
        return;
    }
    for &r in &node.own {
        c.hit(r);
    }
    if !last {
        for &r in &node.below {
            c.hit(r);
        }
    }
    if let Some(g) = &node.globs {
        if !(last && anchored) {
            g.visit(path, c);
        }
    }
}

/// A literal segment of a wildcard pattern past its leading literals (the
/// last one, usually the most specific), when there is one.
fn inner_literal(c: &Canon, leading: usize) -> Option<&str> {
    c.segs[leading..].iter().rev().find_map(|s| match s {
        Seg::Lit(l) => Some(l.as_str()),
        _ => None,
    })
}

/// The literal a wildcard segment starts with (`node_` of `node_*.cc`).
fn stem(seg: Option<&Seg>) -> Option<&str> {
    match seg {
        Some(Seg::Glob(toks)) => match toks.first() {
            Some(Tok::Lit(l)) => Some(l.as_str()),
            _ => None,
        },
        _ => None,
    }
}

/// `S` of an unanchored single-segment `*S` with a literal `S`.
fn suffix(c: &Canon) -> Option<&str> {
    match c.segs.as_slice() {
        [Seg::Any, Seg::Glob(toks)] => match toks.as_slice() {
            [Tok::Star, Tok::Lit(s)] if c.tail != Tail::Exact => Some(s),
            _ => None,
        },
        _ => None,
    }
}

// ---------------------------------------------------------------- shadows

/// Later rules, filed to answer "does one of them match everything this
/// rule matches?" (see [`CodeOwners::unreachable`]).
#[derive(Default)]
struct Shadows {
    same: HashSet<Canon>,
    everything: bool,
    /// Root-anchored literal paths: true when they own the path itself too.
    anchored: HashMap<String, bool>,
    names: HashMap<String, bool>,
    suffixes: HashMap<String, bool>,
}

impl Shadows {
    fn add(&mut self, c: &Canon) {
        self.same.insert(c.clone());
        self.everything |= c.everything();
        let owns_self = c.tail == Tail::SelfOrBelow;
        let record = |map: &mut HashMap<String, bool>, key: String| {
            let e = map.entry(key).or_insert(false);
            *e |= owns_self;
        };
        if c.segs.iter().all(|s| matches!(s, Seg::Lit(_))) {
            let key = lits(&c.segs).join("/");
            record(&mut self.anchored, key);
        } else if let [Seg::Any, Seg::Lit(n)] = c.segs.as_slice() {
            record(&mut self.names, n.clone());
        } else if let Some(s) = suffix(c) {
            record(&mut self.suffixes, s.to_string());
        }
    }

    /// Whether the later rules recorded so far shadow `c` completely.
    fn covers(&self, c: &Canon) -> bool {
        if self.everything || self.same.contains(c) {
            return true;
        }
        let n = c.segs.len();
        // Whether every path c matches has a component below the one
        // matched by segment i, or (when not) the shadow owns the
        // component itself too.
        let ok = |i: usize, owns_self: bool| owns_self || i + 1 < n || c.tail == Tail::Below;
        let leading = c
            .segs
            .iter()
            .take_while(|s| matches!(s, Seg::Lit(_)))
            .count();
        let prefix = lits(&c.segs[..leading]);
        for k in 1..=leading {
            if let Some(&owns_self) = self.anchored.get(&prefix[..k].join("/")) {
                if ok(k - 1, owns_self) {
                    return true;
                }
            }
        }
        for (i, seg) in c.segs.iter().enumerate() {
            let text = match seg {
                Seg::Lit(l) => {
                    if self.names.get(l).is_some_and(|&o| ok(i, o)) {
                        return true;
                    }
                    l.as_str()
                }
                Seg::Glob(toks) => match toks.last() {
                    Some(Tok::Lit(l)) => l.as_str(),
                    _ => continue,
                },
                Seg::Any => continue,
            };
            for (s, &owns_self) in &self.suffixes {
                if text.ends_with(s.as_str()) && ok(i, owns_self) {
                    return true;
                }
            }
        }
        false
    }
}

fn lits(segs: &[Seg]) -> Vec<&str> {
    segs.iter()
        .filter_map(|s| match s {
            Seg::Lit(l) => Some(l.as_str()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Owners and line of the deciding rule (GitHub), or None.
    fn who(co: &CodeOwners, path: &str) -> Option<(Vec<String>, u32)> {
        co.lookup(path)
            .map(|d| (d.owners.iter().map(|o| o.to_string()).collect(), d.line()))
    }

    fn gh(text: &str) -> CodeOwners {
        CodeOwners::parse(text, Flavor::GitHub)
    }

    /// The last rule whose canonical form matches, read directly
    /// (character by character, rule by rule): the reference for the
    /// index and for globset in the property tests.
    fn spec_lookup(co: &CodeOwners, path: &str) -> Option<u32> {
        (0..co.rules.len())
            .rev()
            .find(|&i| co.canon[i].matches(path))
            .map(|i| co.rules[i].line)
    }

    #[test]
    fn github_documented_example() {
        // The example file from GitHub's "About code owners" (abridged
        // comments), with the paths its comments describe.
        let text = "\
# This is a comment.
*       @global-owner1 @global-owner2
*.js    @js-owner #This is an inline comment.
*.go docs@example.com
*.txt @octo-org/octocats
/build/logs/ @doctocat
docs/* docs@example.com
apps/ @octocat
/docs/ @doctocat
/scripts/ @doctocat @octocat
**/logs @octocat
/apps/ @octocat
/apps/github
";
        let co = gh(text);
        assert!(co.problems().is_empty(), "{:?}", co.problems());
        let table: &[(&str, &[&str], u32)] = &[
            ("README.md", &["@global-owner1", "@global-owner2"], 2),
            ("src/index.js", &["@js-owner"], 3),
            ("main.go", &["docs@example.com"], 4),
            ("notes/a.txt", &["@octo-org/octocats"], 5),
            ("build/logs/today.log", &["@octocat"], 11),
            ("build/logs2/x", &["@global-owner1", "@global-owner2"], 2),
            ("docs/getting-started.md", &["@doctocat"], 9),
            ("docs/build-app/troubleshooting.md", &["@doctocat"], 9),
            (
                "x/docs/getting-started.md",
                &["@global-owner1", "@global-owner2"],
                2,
            ),
            ("x/apps/main.c", &["@octocat"], 8),
            ("scripts/deploy.sh", &["@doctocat", "@octocat"], 10),
            ("deeply/nested/logs/x.txt", &["@octocat"], 11),
            ("apps/main.c", &["@octocat"], 12),
            ("apps/github/main.c", &[], 13),
            ("apps/github", &[], 13),
        ];
        for (path, owners, line) in table {
            let owners: Vec<String> = owners.iter().map(|s| s.to_string()).collect();
            assert_eq!(who(&co, path), Some((owners, *line)), "{path}");
        }
        let doc = gh("docs/* docs@example.com\n");
        assert!(doc.lookup("docs/getting-started.md").is_some());
        assert!(doc.lookup("docs/build-app/troubleshooting.md").is_none());
    }

    #[test]
    fn pattern_table() {
        // (pattern, path, matches)
        let table: &[(&str, &str, bool)] = &[
            ("*", "a", true),
            ("*", "a/b/c", true),
            ("**", "a/b", true),
            ("/**", "a/b", true),
            ("/*", "a", true),
            ("/*", "a/b", false),
            ("*.js", "a.js", true),
            ("*.js", "x/y/a.js", true),
            ("*.js", "a.jsx", false),
            ("*.js", ".js", true),
            ("*.js", "x.js/y.txt", true),
            ("docs", "docs", true),
            ("docs", "docs/a/b.md", true),
            ("docs", "x/docs/a.md", true),
            ("docs", "docsx/a", false),
            ("/docs", "docs/a/b.md", true),
            ("/docs", "x/docs/a", false),
            ("docs/", "docs", false),
            ("docs/", "docs/a", true),
            ("docs/", "x/docs/a/b", true),
            ("/docs/", "x/docs/a", false),
            ("docs/*", "docs/x", true),
            ("docs/*", "docs/x/y", false),
            ("docs/*", "x/docs/y", false),
            ("docs/*/", "docs/x/y", true),
            ("docs/*/", "docs/x", false),
            ("docs/**", "docs", false),
            ("docs/**", "docs/a/b", true),
            ("docs/**/", "docs/a", false),
            ("docs/**/", "docs/a/b", true),
            ("**/logs", "logs", true),
            ("**/logs", "a/b/logs/c", true),
            ("**/logs", "a/blogs", false),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/y/b/c", true),
            ("a/**/b", "x/a/b", false),
            ("a/b", "a/b/c", true),
            ("a/b", "x/a/b", false),
            ("a?c", "abc", true),
            ("a?c", "a/c", false),
            ("a?c", "ac", false),
            ("foo*", "foobar/x", true),
            ("*_test.go", "pkg/x_test.go", true),
            ("/src/**/*.ts", "src/a.ts", true),
            ("/src/**/*.ts", "src/a/b/c.ts", true),
            ("/src/**/*.ts", "lib/src/a.ts", false),
            ("Docs", "docs/a", false),
            ("\\*.md", "*.md", true),
            ("\\*.md", "a.md", false),
            ("with\\ space.md", "x/with space.md", true),
            ("a{b,c}", "a{b,c}", true),
            ("a{b,c}", "ab", false),
            ("?.md", "ü.md", true),
            ("?.md", "üü.md", false),
            ("/x/a?c/", "x/aüc/d", true),
            ("trail\\ ", "trail ", true),
            ("**/", "a", false),
            ("**/", "a/b", true),
            ("a//b", "a/b", true),
            ("/a\\/b", "a/b/c", true),
        ];
        for (pattern, path, expect) in table {
            let co = gh(&format!("{pattern} @o\n"));
            assert!(co.problems().is_empty(), "{pattern}: {:?}", co.problems());
            assert_eq!(co.lookup(path).is_some(), *expect, "{pattern} on {path}");
            assert_eq!(
                spec_lookup(&co, path).is_some(),
                *expect,
                "spec: {pattern} on {path}"
            );
        }
    }

    #[test]
    fn lines_comments_and_owners() {
        let co = gh("# c\r\n\r\n*.rs @a @org/t  a@b.example # tail @x\r\n  /x/ \t @b\r\n");
        assert!(co.problems().is_empty(), "{:?}", co.problems());
        assert_eq!(co.rules().len(), 2);
        assert_eq!(co.rules()[0].owners, ["@a", "@org/t", "a@b.example"]);
        assert_eq!(co.rules()[0].line, 3);
        assert_eq!(who(&co, "x/y.rs"), Some((vec!["@b".into()], 4)));
        let bom = gh("\u{feff}* @a\n");
        assert_eq!(who(&bom, "z"), Some((vec!["@a".into()], 1)));
        let no_owner = gh("* @a\nvendor # nobody\n");
        assert_eq!(who(&no_owner, "vendor/x"), Some((vec![], 2)));
        assert_eq!(gh("/a @x\n").lookup("b"), None);
    }

    #[test]
    fn problems_are_reported_and_skipped() {
        let text = "\
* @a
!*.md @b
*.[ch] @c
[Section] @d
\\#x @e
*.py team-without-at
*.rb @a,@b
*.go @a/b/c
docs\\
*.txt @ok
";
        let co = gh(text);
        let lines: Vec<u32> = co.problems().iter().map(|p| p.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(co.problems()[4]
            .message
            .contains("invalid owner \"team-without-at\""));
        assert_eq!(
            co.rules().iter().map(|r| r.line).collect::<Vec<_>>(),
            [1, 10]
        );
        // A skipped line does not decide: the earlier rule still does.
        assert_eq!(who(&co, "a.py"), Some((vec!["@a".into()], 1)));
        assert_eq!(co.problems()[0].text, "!*.md @b");
    }

    #[test]
    fn paths_are_normalized() {
        let co = gh("/src/ @a\n");
        for p in ["src/x", "./src/x", "/src/x", ".//src/x"] {
            assert!(co.lookup(p).is_some(), "{p}");
        }
        assert!(co.lookup("").is_none());
        assert!(co.lookup("/").is_none());
    }

    #[test]
    fn gitlab_sections() {
        let text = "\
* @general
docs/ @docs-root

[Documentation] @docs-team
docs/
*.md @writers

^[Database][2] @db
model/db/
docs/db/ @db-docs

[documentation]
README.md
[Broken
[Bad][x] @z
";
        let co = CodeOwners::parse(text, Flavor::GitLab);
        let lines: Vec<u32> = co.problems().iter().map(|p| p.line).collect();
        assert_eq!(lines, [14, 15], "{:?}", co.problems());
        let s = co.sections();
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].name.as_str(), s[0].optional, s[0].approvals),
            ("Documentation", false, None)
        );
        assert_eq!(
            (s[1].name.as_str(), s[1].optional, s[1].approvals),
            ("Database", true, Some(2))
        );
        assert_eq!(s[0].owners, ["@docs-team"]);
        let d = co.lookup("docs/db/x.sql").expect("match");
        assert_eq!(
            d.rules.iter().map(|r| r.line).collect::<Vec<_>>(),
            [2, 5, 10]
        );
        assert_eq!(d.owners, ["@docs-root", "@docs-team", "@db-docs"]);
        assert_eq!(d.line(), 10);
        let d = co.lookup("README.md").expect("match");
        // `[documentation]` continues `[Documentation]`; its header has no
        // default owners, so README.md there has none.
        assert_eq!(d.rules.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 13]);
        assert_eq!(d.rules[1].section.as_deref(), Some("Documentation"));
        assert_eq!(d.owners, ["@general"]);
        let d = co.lookup("model/db/a").expect("match");
        assert_eq!(d.owners, ["@general", "@db"]);
        // `[Bad][x]` still opens a section (problem on its line).
        assert_eq!(co.sections()[2].name, "Bad");
        let roles = CodeOwners::parse(
            "* @@maintainer @grp/sub/team a@b.c\n\\#x @a\n",
            Flavor::GitLab,
        );
        assert!(roles.problems().is_empty(), "{:?}", roles.problems());
        assert!(roles.lookup("#x").is_some());
    }

    #[test]
    fn unreachable_rules() {
        let text = "\
/src/a.rs @a
/docs/*.md @a
vendor/x/ @a
/deep/vendor/lib.c @a
*.md @b
/src/ @c
vendor @d
/build/**/*.o @e
/other/ @f
/other/**/x @g
docs/ @h
docs/** @i
";
        let co = gh(text);
        let dead: Vec<u32> = co.unreachable().iter().map(|r| r.line).collect();
        // 1: under /src/ (6); 2: *.md (5); 3, 4: contain `vendor` (7).
        // 11 and 12 differ (unanchored vs anchored); 9 is not shadowed by
        // the narrower 10.
        assert_eq!(dead, [1, 2, 3, 4]);
        assert!(gh("* @a\n* @b\n")
            .unreachable()
            .iter()
            .map(|r| r.line)
            .eq([1]));
        assert!(gh("/a/b @x\n/a/b/ @y\n").unreachable().is_empty());
        assert!(gh("/a/b/ @x\n/a/b @y\n")
            .unreachable()
            .iter()
            .map(|r| r.line)
            .eq([1]));
        assert!(gh("a @x\n* @y\n")
            .unreachable()
            .iter()
            .map(|r| r.line)
            .eq([1]));
        let same = gh("/docs/ @a\ndocs/** @b\n");
        assert_eq!(
            same.unreachable()
                .iter()
                .map(|r| r.line)
                .collect::<Vec<_>>(),
            [1]
        );
        let lab = CodeOwners::parse("a @x\n[S]\na @y\n", Flavor::GitLab);
        assert!(lab.unreachable().is_empty());
    }

    #[test]
    fn locations() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(find_in(dir.path()), None);
        std::fs::create_dir_all(dir.path().join("docs")).expect("mkdir");
        std::fs::write(dir.path().join("docs/CODEOWNERS"), "* @d\n").expect("write");
        std::fs::write(dir.path().join("CODEOWNERS"), "* @r\n").expect("write");
        assert_eq!(find_in(dir.path()), Some(dir.path().join("CODEOWNERS")));
        let got = locate(|p| (p != ".github/CODEOWNERS").then(|| format!("from {p}")));
        assert_eq!(got, Some(("CODEOWNERS", "from CODEOWNERS".into())));
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("ab".to_string()),
            Just("*".to_string()),
            Just("**".to_string()),
            Just("?".to_string()),
            Just("*.x".to_string()),
            Just("a*".to_string()),
            Just("b.x".to_string()),
            Just("*b*".to_string()),
        ]
    }

    fn pattern() -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            prop::collection::vec(segment(), 1..4),
            any::<bool>(),
        )
            .prop_map(|(lead, segs, trail)| {
                format!(
                    "{}{}{}",
                    if lead { "/" } else { "" },
                    segs.join("/"),
                    if trail { "/" } else { "" }
                )
            })
    }

    fn path() -> impl Strategy<Value = String> {
        let comp = prop_oneof![
            Just("a"),
            Just("b"),
            Just("ab"),
            Just("b.x"),
            Just("a.x"),
            Just("abx"),
            Just(".x"),
            Just("c"),
            Just("ü"),
            Just("aü.x")
        ];
        prop::collection::vec(comp, 1..5).prop_map(|c| c.join("/"))
    }

    proptest! {
        /// The index answers exactly as a rule-by-rule reading of the
        /// canonical patterns, and globset agrees with that reading.
        #[test]
        fn index_matches_spec(patterns in prop::collection::vec(pattern(), 1..12),
                              paths in prop::collection::vec(path(), 1..20)) {
            let text: String = patterns.iter().enumerate().map(|(i, p)| format!("{p} @o{i}\n")).collect();
            let co = gh(&text);
            prop_assert!(co.problems().is_empty());
            for p in &paths {
                prop_assert_eq!(co.lookup(p).map(|d| d.line()), spec_lookup(&co, p), "{}", p);
            }
            for (i, c) in co.canon.iter().enumerate() {
                let m: Vec<GlobMatcher> = c.globs().iter().map(|g| glob(g).expect("glob").compile_matcher()).collect();
                // globset's `?` is one byte: it is only used for `?`-free rules.
                for p in paths.iter().filter(|p| p.is_ascii() || !c.has_quest()) {
                    prop_assert_eq!(m.iter().any(|m| m.is_match(p)), c.matches(p),
                        "{} on {}", co.rules[i].pattern, p);
                }
            }
            // Unreachable rules never decide any path.
            let dead: Vec<u32> = co.unreachable().iter().map(|r| r.line).collect();
            for p in &paths {
                if let Some(d) = co.lookup(p) {
                    prop_assert!(!dead.contains(&d.line()));
                }
            }
        }

        /// A literal file pattern owns exactly that path (and what is
        /// below it), not a sibling.
        #[test]
        fn literal_owns_itself(dir in "[a-z]{1,6}", name in "[a-z]{1,6}\\.[a-z]{1,3}", other in "[a-z]{1,6}") {
            let co = gh(&format!("/{dir}/{name} @x\n"));
            let owns = |p: String| co.lookup(&p).is_some();
            let (itself, below) = (owns(format!("{dir}/{name}")), owns(format!("{dir}/{name}/below")));
            let sibling = owns(format!("{dir}/{other}"));
            let longer = owns(format!("{dir}/{name}x"));
            let nested = owns(format!("{other}/{dir}/{name}"));
            prop_assert!(itself && below);
            prop_assert!(!sibling && !longer && !nested);
        }

        /// The last of two matching rules decides.
        #[test]
        fn last_rule_wins(dir in "[a-z]{1,6}", file in "[a-z]{1,6}\\.rs", first_is_dir in any::<bool>()) {
            let (p1, p2) = if first_is_dir { (format!("/{dir}/"), "*.rs".to_string()) } else { ("*.rs".to_string(), format!("/{dir}/")) };
            let co = gh(&format!("{p1} @first\n{p2} @second\n"));
            let d = co.lookup(&format!("{dir}/{file}")).expect("match");
            prop_assert_eq!(&d.owners, &vec!["@second"]);
            prop_assert_eq!(d.line(), 2);
        }

        /// Unanchored names match at any depth, anchored ones at the root only.
        #[test]
        fn anchoring(name in "[a-z]{1,6}", above in "[a-z]{1,6}") {
            let floating = gh(&format!("{name} @x\n"));
            let anchored = gh(&format!("/{name} @x\n"));
            let nested = format!("{above}/{name}/f");
            prop_assert!(floating.lookup(&nested).is_some());
            let top = format!("{name}/f");
            prop_assert!(anchored.lookup(&top).is_some());
            prop_assert_eq!(anchored.lookup(&nested).is_some(), above == name);
        }
    }
}
