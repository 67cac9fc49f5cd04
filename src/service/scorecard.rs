//! The team scorecard as plain server-rendered HTML: `/` (one row per team
//! and the unattributed findings) and `/teams/<team>` (one team's row and
//! its open tickets with the evidence of why they are its own).
//!
//! Pages are rendered from the [`Scorecard`] the metrics keep (recomputed
//! with the gauges, with bounded ticket and unattributed lists), so a
//! request never walks the findings. No script, no external resource:
//! the pages work offline and in any browser. Every value is HTML-escaped,
//! and a team's page shows nothing of another team's tickets.

use crate::metrics::{Scorecard, TeamScore, TicketRow, OTHER, UNATTRIBUTED};
use crate::model::Severity;
use std::fmt::Write;

/// `s` with the characters HTML gives a meaning escaped, for text and for
/// attribute values in double quotes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` as one URL path segment: every byte but unreserved ones
/// percent-encoded.
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A duration in seconds as people read it.
fn duration(secs: Option<f64>) -> String {
    match secs {
        None => "–".to_string(),
        Some(s) if s < 3_600.0 => format!("{:.0} min", s / 60.0),
        Some(s) if s < 2.0 * 86_400.0 => format!("{:.1} h", s / 3_600.0),
        Some(s) => format!("{:.1} d", s / 86_400.0),
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1b1f24}\
table{border-collapse:collapse;margin:0.5rem 0 1.5rem}\
th,td{border:1px solid #d0d7de;padding:0.3rem 0.6rem;text-align:right}\
th{background:#f6f8fa}td.l,th.l{text-align:left}\
.critical{color:#8b0000;font-weight:bold}.high{color:#c62828}\
.breached{background:#ffebe9}small{color:#57606a}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n{body}</body></html>\n",
        escape(title)
    )
}

const COLUMNS: [&str; 14] = [
    "critical",
    "high",
    "medium",
    "low",
    "info",
    "open",
    "past SLA",
    "introduced (open)",
    "introduced 7 d",
    "introduced 30 d",
    "MTTR",
    "resolved",
    "suppressed",
    "accepted",
];

fn header(out: &mut String) {
    out.push_str("<tr><th class=\"l\">team</th>");
    for c in COLUMNS {
        let _ = write!(out, "<th>{c}</th>");
    }
    out.push_str("</tr>\n");
}

/// One team's row; `link`: whether its name links to its page.
fn row(out: &mut String, team: &str, t: &TeamScore, link: bool) {
    let name = if link {
        format!(
            "<a href=\"/teams/{}\">{}</a>",
            escape(&path_segment(team)),
            escape(team)
        )
    } else {
        escape(team)
    };
    let _ = write!(
        out,
        "<tr data-team=\"{}\"><td class=\"l\">{name}</td>",
        escape(team)
    );
    for sev in Severity::ALL_DESC {
        let n = t.open.get(sev.as_str()).copied().unwrap_or(0);
        let _ = write!(
            out,
            "<td data-col=\"{}\" class=\"{}\">{n}</td>",
            sev.as_str(),
            sev.as_str()
        );
    }
    let cells: [(&str, String); 9] = [
        ("open", t.open_total.to_string()),
        ("breached", t.breached.to_string()),
        ("introduced_open", t.open_introduced.to_string()),
        ("introduced_week", t.introduced_week.to_string()),
        ("introduced_month", t.introduced_month.to_string()),
        ("mttr", duration(t.mttr_seconds)),
        ("resolved", t.resolved.to_string()),
        ("suppressed", t.suppressed.to_string()),
        ("accepted", t.accepted.to_string()),
    ];
    for (col, v) in cells {
        let _ = write!(out, "<td data-col=\"{col}\">{}</td>", escape(&v));
    }
    out.push_str("</tr>\n");
}

fn as_of(card: &Scorecard) -> String {
    match card.at {
        Some(at) => format!(
            "<p><small>As of {} (UTC), for the partitions this instance owns. \
             Introduced: brought by a scan after the target's first; MTTR: from \
             first sighting to resolution, over the resolved findings the \
             state keeps. Accepted, suppressed and \
             not-affected findings are not open.</small></p>\n",
            escape(&at.format("%Y-%m-%d %H:%M:%S").to_string())
        ),
        None => "<p><small>No state yet: partitions are being assigned or restored.</small></p>\n"
            .to_string(),
    }
}

/// `/`: every team's row, then the unattributed open findings.
pub fn index(card: &Scorecard) -> String {
    let mut b = String::with_capacity(4096 + card.teams.len() * 512);
    b.push_str("<h1>custody: team scorecard</h1>\n");
    b.push_str(&as_of(card));
    b.push_str("<table id=\"teams\">\n");
    header(&mut b);
    for (team, t) in &card.teams {
        row(&mut b, team, t, true);
    }
    b.push_str("</table>\n");
    let _ = write!(
        b,
        "<h2 id=\"unattributed\">Unattributed open findings</h2>\n\
         <p>{:.1}% of open findings have no owner.</p>\n",
        card.unattributed_share * 100.0
    );
    if card.unattributed.is_empty() {
        b.push_str("<p>None.</p>\n");
    } else {
        b.push_str(
            "<table id=\"unowned\"><tr><th class=\"l\">severity</th><th class=\"l\">target</th>\
             <th class=\"l\">location</th><th class=\"l\">rule</th>\
             <th class=\"l\">why no team owns it</th></tr>\n",
        );
        for u in &card.unattributed {
            let _ = writeln!(
                b,
                "<tr><td class=\"l {sev}\">{sev}</td><td class=\"l\">{}</td><td class=\"l\">{}</td>\
                 <td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
                escape(&u.target),
                escape(&location(u.path.as_deref(), u.line)),
                escape(&u.rule),
                escape(&u.reason),
                sev = u.severity.as_str(),
            );
        }
        b.push_str("</table>\n");
        if card.unattributed_more > 0 {
            let _ = writeln!(
                b,
                "<p id=\"unowned-more\">and {} more.</p>",
                card.unattributed_more
            );
        }
    }
    page("custody: team scorecard", &b)
}

fn location(path: Option<&str>, line: Option<u32>) -> String {
    match (path, line) {
        (Some(p), Some(l)) => format!("{p}:{l}"),
        (Some(p), None) => p.to_string(),
        _ => "–".to_string(),
    }
}

/// `/teams/<team>`: the team's row and its open tickets with their
/// evidence; `None` for a team the scorecard does not have.
pub fn team(card: &Scorecard, team: &str) -> Option<String> {
    let t = card.teams.get(team)?;
    let mut b = String::with_capacity(4096 + t.tickets.len() * 768);
    let _ = writeln!(
        b,
        "<p><a href=\"/\">All teams</a></p>\n<h1>{}</h1>",
        escape(team)
    );
    b.push_str(&as_of(card));
    b.push_str("<table id=\"teams\">\n");
    header(&mut b);
    row(&mut b, team, t, false);
    b.push_str("</table>\n<h2>Open tickets</h2>\n");
    if team == OTHER {
        b.push_str(
            "<p>Teams beyond the configured set (or the label cap) share this row; \
             their tickets are not listed here.</p>\n",
        );
    } else if t.tickets.is_empty() {
        b.push_str("<p>None.</p>\n");
    } else {
        b.push_str(
            "<table id=\"tickets\"><tr><th class=\"l\">severity</th><th class=\"l\">ticket</th>\
             <th class=\"l\">target</th><th class=\"l\">location</th><th>open</th>\
             <th class=\"l\">due</th><th class=\"l\">owned by</th><th class=\"l\">file</th>\
             <th class=\"l\">line</th><th class=\"l\">ownership rule</th></tr>\n",
        );
        for k in &t.tickets {
            ticket(&mut b, k);
        }
        b.push_str("</table>\n");
        if t.tickets_more > 0 {
            let _ = writeln!(b, "<p id=\"tickets-more\">and {} more.</p>", t.tickets_more);
        }
    }
    let title = if team == UNATTRIBUTED {
        "custody: unattributed".to_string()
    } else {
        format!("custody: {team}")
    };
    Some(page(&title, &b))
}

fn ticket(b: &mut String, k: &TicketRow) {
    let due = k
        .due_at
        .map_or_else(|| "–".to_string(), |d| d.format("%Y-%m-%d").to_string());
    let _ = writeln!(
        b,
        "<tr data-ticket=\"{}\"{}><td class=\"l {sev}\">{sev}</td>\
         <td class=\"l\">{}<br><small>{} · {}</small></td><td class=\"l\">{}</td>\
         <td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}{}</td><td class=\"l\">{}</td>\
         <td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
        escape(&k.key),
        if k.breached {
            " class=\"breached\""
        } else {
            ""
        },
        escape(&k.title),
        escape(&k.rule),
        escape(&k.key),
        escape(&k.target),
        escape(&location(k.path.as_deref(), k.line)),
        k.open,
        escape(&due),
        if k.breached { " (past due)" } else { "" },
        escape(&k.source),
        escape(k.owner_file.as_deref().unwrap_or("–")),
        k.owner_line
            .map_or_else(|| "–".to_string(), |l| l.to_string()),
        escape(k.owner_rule.as_deref().unwrap_or("–")),
        sev = k.severity.as_str(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_and_path_segment_leave_no_markup_and_no_separator() {
        for (input, html, seg) in [
            ("web", "web", "web"),
            (
                "<script>alert('x')</script>",
                "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;",
                "%3Cscript%3Ealert%28%27x%27%29%3C%2Fscript%3E",
            ),
            ("a&b \"c\"", "a&amp;b &quot;c&quot;", "a%26b%20%22c%22"),
            ("../x", "../x", "..%2Fx"),
            ("ünï", "ünï", "%C3%BCn%C3%AF"),
        ] {
            assert_eq!(escape(input), html, "{input}");
            assert_eq!(path_segment(input), seg, "{input}");
        }
    }

    #[test]
    fn pages_escape_what_reports_and_ownership_say_and_a_team_page_is_its_own() {
        use crate::metrics::{TeamScore, TicketRow, UnownedRow};
        let evil = "<img src=x onerror=alert(1)>";
        let ticket = |key: &str, path: &str| TicketRow {
            key: key.into(),
            target: format!("repo:github.com/acme/{evil}"),
            rule: evil.into(),
            title: evil.into(),
            severity: Severity::High,
            open: 1,
            breached: true,
            due_at: None,
            path: Some(path.into()),
            line: Some(3),
            source: "codeowners".into(),
            owner_file: Some("CODEOWNERS".into()),
            owner_line: Some(7),
            owner_rule: Some(evil.into()),
        };
        let mut card = Scorecard::default();
        card.teams.insert(
            "web".into(),
            TeamScore {
                tickets: vec![ticket("tk-web", "web/app.py")],
                ..TeamScore::default()
            },
        );
        card.teams.insert(
            evil.into(),
            TeamScore {
                tickets: vec![ticket("tk-evil", "payments/secret.py")],
                tickets_more: 4,
                ..TeamScore::default()
            },
        );
        card.unattributed.push(UnownedRow {
            target: evil.into(),
            rule: evil.into(),
            severity: Severity::Low,
            path: None,
            line: None,
            reason: evil.into(),
        });
        let index = index(&card);
        let web = team(&card, "web").unwrap();
        let other = team(&card, evil).unwrap();
        for html in [&index, &web, &other] {
            assert!(!html.contains("<img"), "{html}");
        }
        assert!(index.contains("href=\"/teams/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E\""));
        // The team's page: its row and its ticket, nothing of the other.
        assert!(web.contains("tk-web") && web.contains("web/app.py"));
        assert!(!web.contains("tk-evil") && !web.contains("payments/secret.py"));
        assert!(web.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(other.contains("and 4 more."));
        assert!(team(&card, "nobody").is_none());
    }

    #[test]
    fn durations_read_in_minutes_hours_or_days() {
        for (secs, want) in [
            (None, "–"),
            (Some(90.0), "2 min"),
            (Some(5_400.0), "1.5 h"),
            (Some(3.5 * 86_400.0), "3.5 d"),
        ] {
            assert_eq!(duration(secs), want);
        }
    }
}
