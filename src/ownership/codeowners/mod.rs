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
//! The code is split by job: [`parser`] reads lines, sections and owners
//! and reports problems; [`pattern`] turns one rule's pattern into a
//! canonical form and matches it; [`index`] files the rules so that a
//! lookup tries only the few that can match a path; [`shadows`] finds
//! rules that can never decide.
//!
//! A CODEOWNERS file is written by a repository's developers and read by
//! a service, so nothing in it may stall or bloat that service: patterns
//! are matched by automata over the path (no backtracking), whose work
//! grows with the path's length times the pattern's, never
//! exponentially; parsing and filing are one pass over the rules (plus a
//! sort per index list); and a rule costs memory in proportion to its own
//! length, with no per-rule compiled sets. [`CodeOwners::lookup_steps`]
//! and [`CodeOwners::states`] count that work and that size.

mod index;
mod parser;
mod pattern;
mod shadows;

use index::{All, Index, Last};
use pattern::Canon;
use shadows::Shadows;
use std::collections::{HashMap, HashSet};
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
        let p = parser::parse(text, flavor);
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
        self.decide(path).0
    }

    /// The work a lookup of `path` does, counted rather than timed: rules
    /// tried, path components and stems looked up, and automaton
    /// transitions (one per character of a component per live state of a
    /// wildcard segment, one per component per live state of a pattern).
    /// For a fixed file it grows at most linearly with the path's length.
    pub fn lookup_steps(&self, path: &str) -> u64 {
        self.decide(path).1
    }

    /// The states of all the rules' automata together: each rule has at
    /// most its pattern's length in characters plus 3.
    pub fn states(&self) -> usize {
        self.canon.iter().map(Canon::states).sum()
    }

    fn decide(&self, path: &str) -> (Option<Decision<'_>>, u64) {
        let path = normalize(path);
        if path.is_empty() {
            return (None, 0);
        }
        match self.flavor {
            Flavor::GitHub => {
                let mut last = Last::default();
                self.index.visit(&self.canon, path, &mut last);
                let decision = last
                    .best
                    .and_then(|r| self.rules.get(r as usize))
                    .map(|rule| Decision {
                        owners: rule.owners.iter().map(String::as_str).collect(),
                        rules: vec![rule],
                    });
                (decision, last.steps)
            }
            Flavor::GitLab => {
                let mut all = All::default();
                self.index.visit(&self.canon, path, &mut all);
                let mut hits = all.hits;
                let steps = all.steps + hits.len() as u64;
                if hits.is_empty() {
                    return (None, steps);
                }
                // The last matching rule of each section decides.
                hits.sort_unstable_by(|a, b| b.cmp(a));
                hits.dedup();
                let mut seen: HashSet<u32> = HashSet::new();
                hits.retain(|&r| {
                    seen.insert(self.section_of.get(r as usize).copied().unwrap_or(0))
                });
                hits.reverse();
                let rules: Vec<&Rule> = hits
                    .iter()
                    .filter_map(|&r| self.rules.get(r as usize))
                    .collect();
                let mut seen: HashSet<&str> = HashSet::new();
                let owners: Vec<&str> = rules
                    .iter()
                    .flat_map(|r| r.owners.iter())
                    .map(String::as_str)
                    .filter(|o| seen.insert(o))
                    .collect();
                (Some(Decision { owners, rules }), steps)
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

#[cfg(test)]
mod tests {
    use super::pattern::{Seg, Tail, Tok};
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
    /// (character by character, rule by rule, by [`reference`]): the
    /// reference for the index, the automata and globset in the property
    /// tests.
    fn spec_lookup(co: &CodeOwners, path: &str) -> Option<u32> {
        (0..co.rules.len())
            .rev()
            .find(|&i| reference(&co.canon[i], path))
            .map(|i| co.rules[i].line)
    }

    /// The definition of a match, read directly: which numbers of the
    /// path's components (characters) the segments (tokens) read so far
    /// can cover, one segment (token) at a time. Polynomial, so it can
    /// check long hostile inputs too.
    fn reference(c: &Canon, path: &str) -> bool {
        let comps: Vec<&str> = path.split('/').collect();
        let n = comps.len();
        let mut reach = vec![false; n + 1];
        reach[0] = true;
        for seg in &c.segs {
            let mut next = vec![false; n + 1];
            for j in 0..=n {
                next[j] = match seg {
                    Seg::Any => reach[..=j].contains(&true),
                    Seg::Lit(l) => j > 0 && reach[j - 1] && l == comps[j - 1],
                    Seg::Glob(g) => j > 0 && reach[j - 1] && toks_match(&g.toks, comps[j - 1]),
                };
            }
            reach = next;
        }
        match c.tail {
            Tail::Exact => reach[n],
            Tail::SelfOrBelow => reach.contains(&true),
            Tail::Below => reach[..n].contains(&true),
        }
    }

    fn toks_match(toks: &[Tok], s: &str) -> bool {
        let chars: Vec<char> = s.chars().collect();
        let n = chars.len();
        let mut reach = vec![false; n + 1];
        reach[0] = true;
        let step = |reach: &mut Vec<bool>, ok: &dyn Fn(char) -> bool| {
            let mut next = vec![false; n + 1];
            for j in 1..=n {
                next[j] = reach[j - 1] && ok(chars[j - 1]);
            }
            *reach = next;
        };
        for t in toks {
            match t {
                Tok::Star => {
                    for j in 1..=n {
                        reach[j] |= reach[j - 1];
                    }
                }
                Tok::Quest => step(&mut reach, &|_| true),
                Tok::Lit(l) => {
                    for want in l.chars() {
                        step(&mut reach, &|c| c == want);
                    }
                }
            }
        }
        reach[n]
    }

    /// The glob(s) (globset syntax) that match exactly what `c` matches: a
    /// second, independent reading for `?`-free patterns.
    fn globs(c: &Canon) -> Vec<String> {
        let escape_into = |out: &mut String, literal: &str| {
            for ch in literal.chars() {
                if matches!(ch, '\\' | '*' | '?' | '[' | ']' | '{' | '}') {
                    out.push('\\');
                }
                out.push(ch);
            }
        };
        let mut g = String::new();
        for (i, seg) in c.segs.iter().enumerate() {
            if i > 0 {
                g.push('/');
            }
            match seg {
                Seg::Any => g.push_str("**"),
                Seg::Lit(s) => escape_into(&mut g, s),
                Seg::Glob(glob) => {
                    for t in &glob.toks {
                        match t {
                            Tok::Lit(s) => escape_into(&mut g, s),
                            Tok::Star => g.push('*'),
                            Tok::Quest => g.push('?'),
                        }
                    }
                }
            }
        }
        match c.tail {
            Tail::Exact => vec![g],
            Tail::Below => vec![g + "/**"],
            Tail::SelfOrBelow => {
                let below = format!("{g}/**");
                vec![g, below]
            }
        }
    }

    fn glob_matcher(g: &str) -> globset::GlobMatcher {
        globset::GlobBuilder::new(g)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .expect("glob")
            .compile_matcher()
    }

    fn has_quest(c: &Canon) -> bool {
        c.segs
            .iter()
            .any(|s| matches!(s, Seg::Glob(g) if g.toks.contains(&Tok::Quest)))
    }

    /// Whether `c` matches `path` by its automata.
    fn nfa(c: &Canon, path: &str) -> bool {
        c.matches(path, &mut 0)
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
                let m: Vec<globset::GlobMatcher> = globs(c).iter().map(|g| glob_matcher(g)).collect();
                for p in &paths {
                    prop_assert_eq!(nfa(c, p), reference(c, p), "{} on {}", co.rules[i].pattern, p);
                    // globset's `?` is one byte: compared on `?`-free rules.
                    if p.is_ascii() || !has_quest(c) {
                        prop_assert_eq!(m.iter().any(|m| m.is_match(p)), reference(c, p),
                            "{} on {}", co.rules[i].pattern, p);
                    }
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

        /// A wildcard segment's automaton agrees with the direct reading,
        /// with up to 80 positions (more than one word of states) and
        /// non-ASCII characters, which `?` takes whole.
        #[test]
        fn glob_automaton_agrees_with_reference(head in "[ab?*ü]{0,8}", body in "[ab?*ü]{0,70}",
                                                fill in "[abü]{0,3}",
                                                others in prop::collection::vec("[abü]{0,40}", 0..4)) {
            let pattern = format!("{head}{body}x");
            let co = gh(&format!("{pattern} @o\n"));
            prop_assert!(co.problems().is_empty());
            let c = &co.canon[0];
            // Instances of the pattern (they match), the same one letter
            // short or long (near misses), and random components.
            let fill_in = |star: &str, quest: &str| pattern.replace('*', star).replace('?', quest);
            let mut comps = vec![fill_in("", "a"), fill_in(&fill, "ü"), fill_in(&fill, "b")];
            for i in 0..3 {
                let mut short = comps[i].clone();
                short.remove(0);
                comps.push(short);
                comps.push(format!("{}x", comps[i]));
            }
            comps.extend(others.iter().map(|o| format!("{o}x")));
            for p in &comps {
                prop_assert_eq!(nfa(c, p), reference(c, p), "{} on {}", pattern, p);
            }
            prop_assert!(nfa(c, &comps[0]));
        }

        /// Patterns of 64 segments or more (more than one word of
        /// states) agree with the direct reading.
        #[test]
        fn long_patterns_agree_with_reference(segs in prop::collection::vec(prop_oneof![Just("a"), Just("*"), Just("?")], 60..70),
                                              deep in any::<bool>(),
                                              lens in prop::collection::vec(55usize..75, 1..4)) {
            let mut pattern = format!("/{}", segs.join("/"));
            if deep {
                pattern.push_str("/**/b");
            }
            let co = gh(&format!("{pattern} @o\n"));
            let c = &co.canon[0];
            prop_assert!(c.segs.len() >= 60);
            for n in lens {
                let mut p = vec!["a"; n].join("/");
                for q in [p.clone(), format!("{p}/b"), { p.push_str("/x/b/c"); p }] {
                    prop_assert_eq!(nfa(c, &q), reference(c, &q), "{} on {}", pattern, q);
                }
            }
        }

        /// The counted work of a lookup is bounded by the path's length
        /// times the file's automaton states (plus the index's probes),
        /// whatever the patterns: no pattern makes it grow faster than
        /// the path.
        #[test]
        fn lookup_work_is_bounded(patterns in prop::collection::vec(pattern(), 1..12),
                                  hostile in prop::collection::vec("[a*?]{1,16}b?", 0..3),
                                  paths in prop::collection::vec(path(), 1..10),
                                  long in "[ab]{0,200}") {
            let text: String = patterns.iter().chain(&hostile).enumerate()
                .map(|(i, p)| format!("{p} @o{i}\n")).collect();
            for flavor in [Flavor::GitHub, Flavor::GitLab] {
                let co = CodeOwners::parse(&text, flavor);
                let per_char = (co.states() + 2 * co.rules().len() + 2) as u64;
                for p in paths.iter().chain([&long]) {
                    let steps = co.lookup_steps(p);
                    prop_assert!(steps <= (p.len() as u64 + 1) * per_char,
                        "{} steps for {} ({} states)", steps, p, co.states());
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
