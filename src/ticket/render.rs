//! What a tracker shows of a ticket: its title, a Markdown body and labels,
//! written from the ticket's record and its open members, so that an
//! adapter (Jira, GitHub Issues, ServiceNow, Slack) renders a ticket
//! without reading the findings topic.
//!
//! Every text is bounded: the body lists at most `tickets.max_locations`
//! locations and says how many more there are, each line and the whole
//! body are cut at a fixed size. No source snippet enters a body, nor the
//! scanner's message of a secret finding (decoders redact secrets, but a
//! ticket is copied to more places than an event, so it takes no chance).

use super::{Grouping, TicketRecord};
use crate::config::TicketSettings;
use crate::lifecycle::FindingRecord;
use crate::model::{
    bound_text, Attribution, Category, Finding, Target, TargetKind, TicketEventKind, TicketReason,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

pub use crate::config::links::{check_link_template, LINK_PLACEHOLDERS};

/// Longest title, in bytes.
pub const MAX_TITLE_BYTES: usize = 256;
/// Longest body, in bytes (GitHub takes 65,536 characters; an adapter for
/// a tracker that takes less lowers `tickets.max_locations`).
pub const MAX_BODY_BYTES: usize = 60 * 1024;
/// Longest line of a body (a location, an evidence item), in bytes.
const MAX_LINE_BYTES: usize = 1024;
/// Most lines of a rule's help quoted in a body.
const MAX_HELP_LINES: usize = 80;
/// Longest scanner message quoted in a body, in bytes.
const MAX_MESSAGE_BYTES: usize = 2048;
/// Longest label, in bytes (Jira's limit).
const MAX_LABEL_BYTES: usize = 255;
/// Most distinct rules a ticket spanning rules lists.
const MAX_RULES: usize = 10;
/// Most scanner labels.
const MAX_SCANNER_LABELS: usize = 16;

/// A ticket's title under `grouping`, described by its member `f`.
pub fn title(grouping: Grouping, target: &Target, f: &Finding) -> String {
    let rule = match &f.package {
        Some(p) => format!("{} in {}", f.rule_id, p.name),
        None => f.title.as_deref().unwrap_or(&f.rule_id).to_string(),
    };
    let mut t = match grouping {
        Grouping::TeamTargetRule | Grouping::TeamRule => rule,
        Grouping::TeamTarget => format!("Security findings in {}", target.name()),
        Grouping::Finding => match (&f.package, &f.location) {
            (None, Some(l)) => match l.start_line {
                Some(n) => format!("{rule} at {}:{n}", l.path),
                None => format!("{rule} at {}", l.path),
            },
            _ => rule,
        },
    };
    if t.contains(char::is_control) {
        t = t.replace(char::is_control, " ");
    }
    bound_text(&mut t, MAX_TITLE_BYTES);
    t
}

/// The title of a ticket of `team` across targets
/// ([`Grouping::TeamRule`]): its parts' title (the rule) and the team.
pub fn team_rule_title(part_title: &str, team: Option<&str>) -> String {
    let mut t = format!("{part_title} ({})", team.unwrap_or("unattributed"));
    if t.contains(char::is_control) {
        t = t.replace(char::is_control, " ");
    }
    bound_text(&mut t, MAX_TITLE_BYTES);
    t
}

/// Most targets a ticket across targets names in its summary.
const MAX_TARGETS: usize = 10;

/// What a body is written from.
pub struct BodyInput<'a> {
    /// The ticket.
    pub rec: &'a TicketRecord,
    /// Its key.
    pub key: &'a str,
    /// The transition.
    pub kind: TicketEventKind,
    /// Why, when the kind does not say.
    pub reason: Option<TicketReason>,
    /// On `reassigned`: the ticket the findings moved to.
    pub moved_to: Option<&'a str>,
    /// The team of the event (the new team, on `reassigned`).
    pub team: Option<&'a str>,
    /// The open members.
    pub members: Vec<&'a FindingRecord>,
    /// Why the team owns it.
    pub attribution: &'a Attribution,
    /// For a ticket across targets ([`Grouping::TeamRule`]): the open
    /// members each target's part lists (its first
    /// `tickets.max_locations`), with that part, for the locations, each
    /// naming its target and linked at its part's commit. `members` then
    /// holds the same members, and the record's open members count them
    /// all.
    pub across: Option<Vec<(&'a TicketRecord, &'a FindingRecord)>>,
}

/// The Markdown body of a ticket event.
pub fn body(input: &BodyInput<'_>, settings: &TicketSettings) -> String {
    let rec = input.rec;
    if let Some(across) = &input.across {
        return body_across(input, across, settings);
    }
    let total = input.members.len();
    let mut members = input.members.clone();
    // By place, so a body reads file by file and stays the same between
    // runs; only the listed ones are sorted (a ticket may hold 100,000).
    let order = |a: &&FindingRecord, b: &&FindingRecord| {
        place(&a.finding)
            .cmp(&place(&b.finding))
            .then_with(|| a.finding.rule_id.cmp(&b.finding.rule_id))
    };
    let listed = settings.max_locations.min(total);
    if listed < total && listed > 0 {
        members.select_nth_unstable_by(listed - 1, order);
    }
    members[..listed].sort_by(order);
    let mut out = head(input, settings);
    let _ = write!(out, "**Target:** {}", code(&rec.target.to_string()));
    match (&rec.commit, &rec.git_ref) {
        (Some(c), Some(r)) => {
            let _ = write!(out, " at {} ({})", code(c), code(r));
        }
        (Some(c), None) => {
            let _ = write!(out, " at {}", code(c));
        }
        (None, Some(r)) => {
            let _ = write!(out, " at {}", code(r));
        }
        (None, None) => {}
    }
    out.push_str("\n\n");

    rule_section(&mut out, rec, &members);

    // Locations.
    if !members.is_empty() {
        out.push_str("### Locations\n\n");
        let with_rule = rec.grouping == Grouping::TeamTarget;
        for m in &members[..listed] {
            let _ = writeln!(
                out,
                "- {}",
                line(&location(&m.finding, rec, settings, with_rule))
            );
        }
        if total > listed {
            let _ = writeln!(
                out,
                "- and {} more (every fingerprint is in the event)",
                total - listed
            );
        }
        out.push('\n');
    }

    tail(&mut out, input);
    bound_text(&mut out, MAX_BODY_BYTES);
    out
}

/// What happened (a resolution, reassignment or breach says so first),
/// then the severity, category, open count and due date.
fn head(input: &BodyInput<'_>, settings: &TicketSettings) -> String {
    let rec = input.rec;
    let mut out = String::new();
    match (input.kind, input.reason) {
        (TicketEventKind::Resolved, Some(TicketReason::Regrouped)) => {
            let now = settings.grouping_for(rec.team.as_deref());
            let _ = writeln!(
                out,
                "**Resolved:** the team's tickets are now grouped by `{}`; the open findings of this ticket moved to tickets of that grouping.\n",
                now.as_str()
            );
        }
        (TicketEventKind::Resolved, _) => {
            out.push_str("**Resolved:** no open finding is left.\n\n")
        }
        (TicketEventKind::Reassigned, _) => {
            let _ = writeln!(
                out,
                "**Reassigned** to {}: the findings moved to ticket `{}`.\n",
                team_name(input.team),
                input.moved_to.unwrap_or("")
            );
        }
        (TicketEventKind::SlaBreached, _) => {
            out.push_str("**SLA breached:** an open finding is past its due date.\n\n");
        }
        _ => {}
    }

    // Summary.
    let _ = write!(
        out,
        "**Severity:** {} · **Category:** {} · **Open findings:** {}",
        rec.severity,
        rec.category.as_str(),
        rec.counts.open
    );
    match rec.due_at {
        Some(d) => {
            let _ = write!(out, " · **SLA due:** {}", d.format("%Y-%m-%d"));
            if rec.breached {
                out.push_str(" (breached)");
            }
        }
        None => out.push_str(" · **SLA due:** none"),
    }
    out.push_str("\n\n");
    out
}

/// The rule, or the rules of a ticket that spans them, described by
/// `members` (the listed ones, in order).
fn rule_section(out: &mut String, rec: &TicketRecord, members: &[&FindingRecord]) {
    let rules: Vec<&Finding> = {
        let mut seen = BTreeSet::new();
        let mut v: Vec<&Finding> = members
            .iter()
            .map(|m| &m.finding)
            .filter(|f| seen.insert(f.rule_id.as_str()))
            .collect();
        v.sort_by(|a, b| a.rule_id.cmp(&b.rule_id));
        v
    };
    if rec.grouping == Grouping::TeamTarget {
        out.push_str("### Rules\n\n");
        for f in rules.iter().take(MAX_RULES) {
            let _ = writeln!(out, "- {}", line(&rule_line(f)));
        }
        if rules.len() > MAX_RULES {
            let _ = writeln!(out, "- and {} more", rules.len() - MAX_RULES);
        }
        out.push('\n');
    } else if let Some(f) = members.first().map(|m| &m.finding) {
        let _ = writeln!(out, "### Rule {}\n", rule_line(f));
        if f.category == Category::Secret {
            out.push_str(
                "A secret was committed. Its value is not shown here: rotate it, then remove it from the code and its history.\n",
            );
        } else {
            let mut m = md(&f.message);
            bound_text(&mut m, MAX_MESSAGE_BYTES);
            let _ = writeln!(out, "> {m}");
        }
        out.push('\n');
        let mut facts = Vec::new();
        if !f.cwe.is_empty() {
            facts.push(format!("**CWE:** {}", md(&f.cwe.join(", "))));
        }
        if !f.aliases.is_empty() {
            facts.push(format!("**Aliases:** {}", md(&f.aliases.join(", "))));
        }
        if let Some(u) = f.help_uri.as_deref().filter(|u| is_http(u)) {
            facts.push(format!("**Help:** <{}>", url_text(u)));
        }
        if !facts.is_empty() {
            let mut l = facts.join(" · ");
            bound_text(&mut l, MAX_LINE_BYTES * 2);
            out.push_str(&l);
            out.push_str("\n\n");
        }
        // The rule's documentation, when the report gave more than the
        // message or the title already says (a secret's rule gets the
        // advice above).
        if let Some(h) = rec.help.as_deref().filter(|h| {
            let h = h.trim();
            f.category != Category::Secret
                && h != f.message.trim()
                && Some(h) != f.title.as_deref().map(str::trim)
        }) {
            out.push_str("**About this rule:**\n\n");
            out.push_str(&quote(h));
            out.push('\n');
        }
    } else {
        let _ = writeln!(out, "### Rule {}\n", code(&rec.group));
    }
}

/// Why this team, and the ticket's key and grouping.
fn tail(out: &mut String, input: &BodyInput<'_>) {
    let rec = input.rec;
    // Why this team.
    out.push_str("### Ownership\n\n");
    out.push_str(&ownership(input.attribution));
    let _ = write!(
        out,
        "\n---\ncustody ticket {} · grouping {}\n",
        code(input.key),
        code(rec.grouping.as_str())
    );
}

/// The body of a ticket across targets: as [`body`], with the targets
/// holding open members named in the summary and each location naming
/// its target (linked at that target's commit).
fn body_across(
    input: &BodyInput<'_>,
    across: &[(&TicketRecord, &FindingRecord)],
    settings: &TicketSettings,
) -> String {
    let rec = input.rec;
    // Each target's members in turn (each target's first by place), so
    // that every target shows while there is room; then by target and
    // place.
    let mut by_target: BTreeMap<String, Vec<(&TicketRecord, &FindingRecord)>> = BTreeMap::new();
    for (part, m) in across {
        by_target
            .entry(part.target.to_string())
            .or_default()
            .push((part, m));
    }
    for members in by_target.values_mut() {
        members.sort_by(|a, b| {
            (place(&a.1.finding), &a.1.finding.rule_id)
                .cmp(&(place(&b.1.finding), &b.1.finding.rule_id))
        });
    }
    let mut listed: Vec<(&str, &TicketRecord, &FindingRecord)> = Vec::new();
    let mut round = 0;
    while listed.len() < settings.max_locations {
        let before = listed.len();
        for (target, members) in &by_target {
            if listed.len() == settings.max_locations {
                break;
            }
            if let Some((part, m)) = members.get(round) {
                listed.push((target.as_str(), part, m));
            }
        }
        if listed.len() == before {
            break;
        }
        round += 1;
    }
    listed.sort_by(|a, b| {
        (a.0, place(&a.2.finding), &a.2.finding.rule_id).cmp(&(
            b.0,
            place(&b.2.finding),
            &b.2.finding.rule_id,
        ))
    });
    let mut out = head(input, settings);
    // The targets holding open members (none once resolved).
    let targets: Vec<&String> = by_target.keys().collect();
    if !targets.is_empty() {
        let _ = write!(out, "**Targets:** {}", targets.len());
        for (i, t) in targets.iter().take(MAX_TARGETS).enumerate() {
            out.push_str(if i == 0 { " · " } else { ", " });
            out.push_str(&code(t));
        }
        if targets.len() > MAX_TARGETS {
            let _ = write!(out, " and {} more", targets.len() - MAX_TARGETS);
        }
        out.push_str("\n\n");
    }
    let members: Vec<&FindingRecord> = listed.iter().map(|(_, _, m)| *m).collect();
    rule_section(&mut out, rec, &members);
    if !listed.is_empty() {
        out.push_str("### Locations\n\n");
        for (target, part, m) in &listed {
            let l = format!(
                "{} {}",
                code(target),
                location(&m.finding, part, settings, false)
            );
            let _ = writeln!(out, "- {}", line(&l));
        }
        let total = rec.open_members.len();
        if total > listed.len() {
            let _ = writeln!(
                out,
                "- and {} more (every fingerprint is in the event)",
                total - listed.len()
            );
        }
        out.push('\n');
    }
    tail(&mut out, input);
    bound_text(&mut out, MAX_BODY_BYTES);
    out
}

/// The labels of a ticket event: team, severity, and the categories and
/// scanners of its open members (the ticket's own category without any).
pub fn labels(rec: &TicketRecord, team: Option<&str>, members: &[&FindingRecord]) -> Vec<String> {
    let mut out = vec![
        label("team", team.unwrap_or("unattributed")),
        label("severity", rec.severity.as_str()),
    ];
    let mut categories: BTreeSet<&str> = members
        .iter()
        .map(|m| m.finding.category.as_str())
        .collect();
    if categories.is_empty() {
        categories.insert(rec.category.as_str());
    }
    out.extend(categories.into_iter().map(|c| label("category", c)));
    let scanners: BTreeSet<&str> = members.iter().flat_map(|m| m.sources.names()).collect();
    out.extend(
        scanners
            .into_iter()
            .take(MAX_SCANNER_LABELS)
            .map(|s| label("scanner", s)),
    );
    out
}

fn label(key: &str, value: &str) -> String {
    // Trackers split labels at whitespace.
    let mut l = String::with_capacity(key.len() + 1 + value.len());
    for c in key.chars().chain([':']).chain(value.chars()) {
        l.push(if c.is_whitespace() || c.is_control() {
            '-'
        } else {
            c
        });
    }
    bound_text(&mut l, MAX_LABEL_BYTES);
    l
}

/// The link to `path` at `line` in the ticket's repository, when the
/// target is a repository whose host has a template.
pub fn link(
    settings: &TicketSettings,
    rec: &TicketRecord,
    path: &str,
    line: Option<u32>,
) -> Option<String> {
    if rec.target.kind() != TargetKind::Repo {
        return None;
    }
    let (host, rest) = rec.target.name().split_once('/')?;
    let template = settings.links.get(host)?;
    let (org, repo) = rest.rsplit_once('/').unwrap_or(("", rest));
    let commit = rec
        .commit
        .as_deref()
        .or(rec.git_ref.as_deref())
        .unwrap_or(&settings.default_ref);
    let template = match (line, template.find("{line}")) {
        (None, Some(p)) => template[..p]
            .rfind('#')
            .map_or(template.as_str(), |h| &template[..h]),
        _ => template.as_str(),
    };
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else {
            out.push_str(&rest[i..]);
            rest = "";
            break;
        };
        match &after[..j] {
            "host" => encode(&mut out, host, false),
            "org" => encode(&mut out, org, true),
            "repo" => encode(&mut out, repo, false),
            "commit" => encode(&mut out, commit, true),
            "path" => encode(&mut out, path, true),
            "line" => {
                if let Some(n) = line {
                    let _ = write!(out, "{n}");
                }
            }
            other => {
                out.push('{');
                out.push_str(other);
                out.push('}');
            }
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Percent-encodes all but unreserved characters (and `/` when kept).
fn encode(out: &mut String, s: &str, keep_slash: bool) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Sort key: path, line, then package.
pub(crate) fn place(f: &Finding) -> (&str, u32, &str, &str) {
    (
        f.path().unwrap_or(""),
        f.start_line().unwrap_or(0),
        f.package.as_ref().map_or("", |p| p.name.as_str()),
        f.package
            .as_ref()
            .and_then(|p| p.version.as_deref())
            .unwrap_or(""),
    )
}

fn location(f: &Finding, rec: &TicketRecord, settings: &TicketSettings, with_rule: bool) -> String {
    let mut out = String::new();
    if with_rule {
        out.push_str(&code(&f.rule_id));
        out.push(' ');
    }
    if let Some(p) = &f.package {
        let pkg = match &p.version {
            Some(v) => format!("{}@{v}", p.name),
            None => p.name.clone(),
        };
        let _ = write!(out, "{} ({})", code(&pkg), md(&p.ecosystem));
        if let Some(fix) = &p.fixed_version {
            let _ = write!(out, ", fixed in {}", code(fix));
        }
        if let Some(path) = f.path() {
            let _ = write!(out, " at {}", code(path));
        }
        if rec.target.kind() == TargetKind::Image {
            let _ = write!(out, " in image {}", code(rec.target.name()));
        }
        return out;
    }
    match &f.location {
        Some(l) => {
            let text = match l.start_line {
                Some(n) => format!("{}:{n}", l.path),
                None => l.path.clone(),
            };
            match link(settings, rec, &l.path, l.start_line) {
                Some(url) => {
                    let _ = write!(out, "[{}]({})", md(&text), url_text(&url));
                }
                None => out.push_str(&code(&text)),
            }
        }
        None => {
            let _ = write!(out, "{}", code(&rec.target.to_string()));
        }
    }
    out
}

fn rule_line(f: &Finding) -> String {
    let mut s = code(&f.rule_id);
    if let Some(t) = f.title.as_deref().filter(|t| *t != f.rule_id) {
        let _ = write!(s, " {}", md(t));
    }
    s
}

fn ownership(a: &Attribution) -> String {
    let mut out = match &a.team {
        Some(t) => format!("Owned by **{}**, decided by {}.\n\n", md(t), md(&a.source)),
        None => "Unattributed: no ownership source names an owner.\n\n".to_string(),
    };
    let mut items = Vec::new();
    match (&a.file, a.line) {
        (Some(f), Some(n)) => items.push(format!("File: {} line {n}", code(f))),
        (Some(f), None) => items.push(format!("File: {}", code(f))),
        _ => {}
    }
    if let Some(r) = &a.rule {
        items.push(format!("Rule: {}", code(r)));
    }
    if !a.owners.is_empty() {
        items.push(format!("Owners: {}", md(&a.owners.join(", "))));
    }
    for i in items {
        let _ = writeln!(out, "- {}", line(&i));
    }
    out
}

fn team_name(team: Option<&str>) -> String {
    team.map_or_else(
        || "no team (unattributed)".to_string(),
        |t| format!("**{}**", md(t)),
    )
}

/// One bounded line.
fn line(s: &str) -> String {
    let mut s = s.to_string();
    bound_text(&mut s, MAX_LINE_BYTES);
    s
}

/// Text of several lines (a rule's help) as a Markdown block quote, each
/// line escaped as [`md`] does and cut at [`MAX_LINE_BYTES`], with at most
/// [`MAX_HELP_LINES`] lines: paragraphs and indentation stay, but the
/// text cannot add links, HTML, headings or a break out of the quote.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut paragraph = false;
    for (i, l) in text.lines().map(str::trim_end).enumerate() {
        if i == MAX_HELP_LINES {
            let more = text.lines().count() - i;
            let _ = writeln!(out, ">\n> \\[{more} more lines\\]");
            break;
        }
        if l.is_empty() {
            // One empty quoted line between paragraphs, none at the ends.
            paragraph = !out.is_empty();
            continue;
        }
        if std::mem::take(&mut paragraph) {
            out.push_str(">\n");
        }
        let body = l.trim_start();
        let indent: String = l[..l.len() - body.len()]
            .chars()
            .map(|c| if c == '\t' { "    " } else { " " })
            .collect();
        let mut l = format!("> {indent}{}", md(body));
        bound_text(&mut l, MAX_LINE_BYTES);
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// A code span: backticks and line breaks cannot end it early.
fn code(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('`');
    push_mapped(&mut out, s, |c, out| match c {
        '`' => out.push('\''),
        c if c.is_control() => out.push(' '),
        c => out.push(c),
    });
    out.push('`');
    out
}

/// Text with Markdown's inline syntax escaped and line breaks folded, so a
/// scanner's message cannot add links, images, HTML or headings.
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 16);
    let mut chars = s.chars();
    // A leading `-`, `+` or `=` would start a list or underline a heading.
    if let Some(c @ ('-' | '+' | '=')) = chars.clone().next() {
        out.push('\\');
        out.push(c);
        chars.next();
    }
    push_mapped(&mut out, chars.as_str(), |c, out| match c {
        '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '|' | '~' | '!' | '&' => {
            out.push('\\');
            out.push(c);
        }
        '\n' | '\r' | '\t' => out.push(' '),
        c if c.is_control() => {}
        c => out.push(c),
    });
    out
}

/// Appends `s` to `out`, each character that is not a plain byte
/// ([`plain_markdown_byte`]) through `map`: the runs of plain bytes
/// between them are copied whole.
fn push_mapped(out: &mut String, s: &str, map: impl Fn(char, &mut String)) {
    let mut rest = s;
    while let Some(at) = rest.bytes().position(|b| !plain_markdown_byte(b)) {
        out.push_str(&rest[..at]);
        let mut tail = rest[at..].chars();
        if let Some(c) = tail.next() {
            map(c, out);
        }
        rest = tail.as_str();
    }
    out.push_str(rest);
}

/// An ASCII byte that neither [`md`] nor [`code`] changes: a printable
/// character without meaning in Markdown's inline syntax.
fn plain_markdown_byte(b: u8) -> bool {
    (b.is_ascii_graphic() || b == b' ')
        && !matches!(
            b,
            b'\\'
                | b'`'
                | b'*'
                | b'_'
                | b'['
                | b']'
                | b'<'
                | b'>'
                | b'#'
                | b'|'
                | b'~'
                | b'!'
                | b'&'
        )
}

fn is_http(u: &str) -> bool {
    (u.starts_with("https://") || u.starts_with("http://"))
        && !u.contains(|c: char| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>'))
}

/// A URL as Markdown link text: `(`, `)` encoded so it cannot end early.
fn url_text(u: &str) -> String {
    u.replace('(', "%28").replace(')', "%29")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TicketCounts;
    use crate::ticket::TicketStatus;

    fn record(target: &str, commit: Option<&str>, git_ref: Option<&str>) -> TicketRecord {
        TicketRecord {
            team: Some("web".into()),
            target: target.parse().unwrap(),
            group: "B101".into(),
            grouping: Grouping::TeamTargetRule,
            commit: commit.map(Into::into),
            git_ref: git_ref.map(Into::into),
            category: Category::Sast,
            title: "t".into(),
            help: None,
            status: TicketStatus::Open,
            severity: crate::model::Severity::Low,
            due_at: None,
            open_members: BTreeSet::new(),
            counts: TicketCounts::default(),
            breached: false,
            route: "r".into(),
            seq: 1,
        }
    }

    fn settings() -> TicketSettings {
        let mut s = TicketSettings::default();
        s.links.insert(
            "github.com".into(),
            "https://github.com/{org}/{repo}/blob/{commit}/{path}#L{line}".into(),
        );
        s.links.insert(
            "gitlab.example".into(),
            "https://{host}/{org}/{repo}/-/blob/{commit}/{path}#L{line}".into(),
        );
        s
    }

    #[test]
    fn links_pin_the_commit_else_the_ref_else_the_default() {
        let s = settings();
        let table = [
            (
                "repo:github.com/acme/api",
                Some("abc123"),
                Some("main"),
                "a b/x.py",
                Some(7),
                Some("https://github.com/acme/api/blob/abc123/a%20b/x.py#L7"),
            ),
            (
                "repo:github.com/acme/api",
                None,
                Some("release/1.2"),
                "x.py",
                None,
                Some("https://github.com/acme/api/blob/release/1.2/x.py"),
            ),
            (
                "repo:github.com/acme/api",
                None,
                None,
                "x.py",
                Some(1),
                Some("https://github.com/acme/api/blob/HEAD/x.py#L1"),
            ),
            (
                "repo:gitlab.example/group/sub/api",
                Some("c0ffee"),
                None,
                "src/(x).py",
                Some(3),
                Some("https://gitlab.example/group/sub/api/-/blob/c0ffee/src/%28x%29.py#L3"),
            ),
            (
                "repo:bitbucket.org/acme/api",
                None,
                None,
                "x.py",
                Some(1),
                None,
            ),
            ("image:ghcr.io/acme/api", None, None, "x.py", Some(1), None),
        ];
        for (target, commit, git_ref, path, line, want) in table {
            let rec = record(target, commit, git_ref);
            assert_eq!(
                link(&s, &rec, path, line).as_deref(),
                want,
                "{target} {path}"
            );
        }
    }

    #[test]
    fn link_templates_are_checked() {
        for (t, ok) in [
            (
                "https://github.com/{org}/{repo}/blob/{commit}/{path}#L{line}",
                true,
            ),
            ("https://{host}/{org}", true),
            ("ftp://x/{path}", false),
            ("https://x/{branch}", false),
            ("https://x/{path", false),
            ("https://x/path}", false),
            ("https://x/a b", false),
        ] {
            assert_eq!(check_link_template(t).is_ok(), ok, "{t}");
        }
    }

    #[test]
    fn escaping_is_the_character_by_character_definition() {
        // The definitions, one character at a time.
        fn plain_md(s: &str) -> String {
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                match c {
                    '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '|' | '~' | '!'
                    | '&' => {
                        out.push('\\');
                        out.push(c);
                    }
                    '-' | '+' | '=' if i == 0 => {
                        out.push('\\');
                        out.push(c);
                    }
                    '\n' | '\r' | '\t' => out.push(' '),
                    c if c.is_control() => {}
                    c => out.push(c),
                }
            }
            out
        }
        fn plain_code(s: &str) -> String {
            let inner: String = s
                .chars()
                .map(|c| match c {
                    '`' => '\'',
                    c if c.is_control() => ' ',
                    c => c,
                })
                .collect();
            format!("`{inner}`")
        }
        for s in [
            "",
            "-",
            "- item",
            "+1 = 2",
            "=== heading",
            "a-b+c=d",
            "plain text with spaces",
            "`code` and *stars* _under_ [link](x) <b>&amp; #1 | ~x~ !",
            "back\\slash",
            "tab\tnew\nline\rcr\u{7}bell\u{7f}del",
            "C1 \u{85} next line, \u{9f} and \u{a0} no-break",
            "über 42ß, ½ and ٣ — “quoted” 🦀",
            "ends with a special *",
            "*",
            "\u{1b}[31mred\u{1b}[0m",
        ] {
            assert_eq!(md(s), plain_md(s), "md of {s:?}");
            assert_eq!(code(s), plain_code(s), "code of {s:?}");
        }
    }

    #[test]
    fn markdown_from_a_report_cannot_add_syntax() {
        assert_eq!(
            md("[click](http://evil) <img src=x> # h\n- `x`_*"),
            "\\[click\\](http://evil) \\<img src=x\\> \\# h - \\`x\\`\\_\\*"
        );
        assert_eq!(code("a`b\nc"), "`a'b c`");
        assert_eq!(url_text("https://x/(y)"), "https://x/%28y%29");
    }

    #[test]
    fn a_rules_help_is_quoted_line_by_line_and_cannot_add_syntax() {
        let table = [
            // Paragraphs stay, runs of empty lines fold, ends are trimmed.
            ("\n\na\nb\n\n\n\nc\n\n", "> a\n> b\n>\n> c\n"),
            // Headings (ATX and setext), lists, HTML, links, fences.
            (
                "# Title\n===\n- item\n<script>x</script>\n[a](http://x)\n```py",
                "> \\# Title\n> \\===\n> \\- item\n> \\<script\\>x\\</script\\>\n> \\[a\\](http://x)\n> \\`\\`\\`py\n",
            ),
            // Indentation stays (tabs as four spaces), inside the quote.
            ("a\n    b\n\tc", "> a\n>     b\n>     c\n"),
            // Carriage returns and controls cannot end the quote.
            ("a\r\nb\u{7}c\u{b}", "> a\n> bc\n"),
        ];
        for (text, want) in table {
            assert_eq!(quote(text), want, "{text:?}");
        }
        let long = "x\n".repeat(MAX_HELP_LINES + 5);
        let q = quote(&long);
        assert_eq!(q.lines().count(), MAX_HELP_LINES + 2, "{q}");
        assert!(q.ends_with("> \\[5 more lines\\]\n"), "{q}");
        let wide = quote(&"y".repeat(10 * MAX_LINE_BYTES));
        assert!(wide.len() <= MAX_LINE_BYTES + 1, "{}", wide.len());
    }

    #[test]
    fn labels_have_no_whitespace_and_are_bounded() {
        let rec = record("repo:github.com/acme/api", None, None);
        let l = labels(&rec, Some("web team"), &[]);
        assert_eq!(l, ["team:web-team", "severity:low", "category:sast"]);
        let long = "x".repeat(1000);
        assert!(labels(&rec, Some(&long), &[])[0].len() <= MAX_LABEL_BYTES);
    }
}
