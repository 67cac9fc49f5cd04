//! Reading a CODEOWNERS file: lines, comments, owners, GitLab sections and
//! headers, flavours, and the problems (warnings) reported for what is
//! skipped. One pass over the text; a section header is found again by a
//! hash look-up on its lower-cased name, so a file's parsing time grows
//! with its length only.

use super::pattern::Canon;
use super::{Flavor, Problem, Rule, Section, MAX_SIZE};
use std::collections::HashMap;

/// What a file parses into, rule by rule.
pub(super) struct Parsed {
    pub(super) rules: Vec<Rule>,
    pub(super) problems: Vec<Problem>,
    pub(super) sections: Vec<Section>,
    /// Per rule: its canonical pattern.
    pub(super) canon: Vec<Canon>,
    /// Per rule: its section (0: none, else index into `sections` + 1).
    pub(super) section_of: Vec<u32>,
}

/// Parses `text`; never fails. Skipped lines become problems.
pub(super) fn parse(text: &str, flavor: Flavor) -> Parsed {
    let mut p = Parser {
        flavor,
        rules: Vec::new(),
        problems: Vec::new(),
        sections: Vec::new(),
        by_name: HashMap::new(),
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
                "the file is {} bytes; GitHub ignores CODEOWNERS files of 3 MB or more and requests no code owner reviews from them (parsed anyway)",
                text.len()
            ),
        });
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in text.split('\n').enumerate() {
        let line = u32::try_from(i + 1).unwrap_or(u32::MAX);
        p.line(line, raw.strip_suffix('\r').unwrap_or(raw));
    }
    Parsed {
        rules: p.rules,
        problems: p.problems,
        sections: p.sections,
        canon: p.canon,
        section_of: p.section_of,
    }
}

struct Parser {
    flavor: Flavor,
    rules: Vec<Rule>,
    problems: Vec<Problem>,
    sections: Vec<Section>,
    /// Section index by lower-cased name.
    by_name: HashMap<String, usize>,
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
        let index = match self.by_name.get(&key) {
            Some(&i) => i,
            None => {
                self.by_name.insert(key, self.sections.len());
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
