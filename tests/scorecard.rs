//! The team scorecard pages (`/`, `/teams/<team>`) in a real browser:
//! Debian's chromium, headless, against the service on the mock cluster.
//! Without chromium the test skips, saying so, unless
//! `CUSTODY_REQUIRE_BROWSER` is set (CI sets it), when it fails.

use crate::service::{http_get, old_new, serve_http, wait_done, Harness};
use custody::kafka::publish::DEFAULT_CHUNK_BYTES;
use custody::model::TicketEventKind;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const TORNADO: &str = "repo:github.com/tornadoweb/tornado";

/// The chromium binary, or `None` (the test then skips) when it is absent
/// and the browser is not required.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CUSTODY_REQUIRE_BROWSER").is_none(),
            "CUSTODY_REQUIRE_BROWSER is set but chromium is not installed (scripts/setup.sh installs it)"
        );
        eprintln!("skipped: chromium is not installed (scripts/setup.sh installs it as root)");
    }
    found
}

/// Runs headless chromium with `args` on `url`, returning its stdout.
fn browse(chromium: &Path, args: &[&str], url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium {args:?} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The cells of the row `<tr data-team="team">` in a DOM: column -> text.
fn row_cells(dom: &str, team: &str) -> Option<BTreeMap<String, String>> {
    let start = dom.find(&format!("<tr data-team=\"{team}\">"))?;
    let row = &dom[start..start + dom[start..].find("</tr>")?];
    let mut cells = BTreeMap::new();
    for part in row.split("data-col=\"").skip(1) {
        let (col, rest) = part.split_once('"').unwrap();
        let text = rest.split_once('>').unwrap().1.split('<').next().unwrap();
        cells.insert(col.to_string(), text.to_string());
    }
    Some(cells)
}

/// The values of one attribute in a DOM.
fn attrs(dom: &str, name: &str) -> BTreeSet<String> {
    dom.split(&format!("{name}=\""))
        .skip(1)
        .map(|p| p.split('"').next().unwrap().to_string())
        .collect()
}

#[test]
fn the_scorecard_shows_every_team_and_each_team_only_its_own_tickets_in_a_browser() {
    let Some(chromium) = chromium() else {
        return;
    };
    let h = Harness::new(2);
    let service = h.start_owned();
    // Kept alive while the test runs: it serves the endpoints.
    let (_rt, addr) = serve_http(&service);
    // tornado 6.4.2, then 6.5: inherited, then introduced and fixed.
    let mut n = 0;
    for scanner in ["bandit", "semgrep"] {
        let (old, _) = old_new(scanner);
        n += h.publish(TORNADO, scanner, &old, DEFAULT_CHUNK_BYTES);
    }
    wait_done(&service, n);
    for scanner in ["bandit", "semgrep"] {
        let (_, new) = old_new(scanner);
        n += h.publish(TORNADO, scanner, &new, DEFAULT_CHUNK_BYTES);
    }
    wait_done(&service, n);
    // The scorecard is recomputed with the gauges, every second: wait for
    // one computed after the last scan was applied. (An event's time is
    // its report's, which comes before the report is applied: a card
    // computed in between would be later than it and still not count the
    // scan.)
    let last = chrono::Utc::now();
    let events = h.findings();
    let deadline = Instant::now() + Duration::from_secs(60);
    let card = loop {
        let (code, body) = http_get(addr, "/api/teams");
        assert_eq!(code, 200);
        let card: serde_json::Value = serde_json::from_str(&body).unwrap();
        let at = card["at"]
            .as_str()
            .and_then(|a| a.parse::<chrono::DateTime<chrono::Utc>>().ok());
        if at.is_some_and(|at| at > last) {
            break card;
        }
        assert!(Instant::now() < deadline, "no scorecard after the scans");
        std::thread::sleep(Duration::from_millis(100));
    };
    let teams = card["teams"].as_object().unwrap();
    assert!(teams.len() >= 2, "{card}");

    let dom = browse(&chromium, &["--dump-dom"], &format!("http://{addr}/"));
    assert!(dom.contains("team scorecard"), "{dom}");
    // Every team's row, with the counts /api/teams gives.
    let shown = attrs(&dom, "data-team");
    assert_eq!(
        shown,
        teams.keys().cloned().collect::<BTreeSet<_>>(),
        "one row per team"
    );
    let mut introduced = 0;
    for (team, t) in teams {
        let cells = row_cells(&dom, team).unwrap_or_else(|| panic!("no row for {team}"));
        for sev in ["critical", "high", "medium", "low", "info"] {
            assert_eq!(
                cells[sev],
                t["open"][sev].as_u64().unwrap_or(0).to_string(),
                "{team} {sev}"
            );
        }
        for (col, field) in [
            ("open", "open_total"),
            ("breached", "breached"),
            ("introduced_open", "open_introduced"),
            ("introduced_week", "introduced_week"),
            ("introduced_month", "introduced_month"),
            ("resolved", "resolved"),
            ("suppressed", "suppressed"),
            ("accepted", "accepted"),
        ] {
            assert_eq!(cells[col], t[field].to_string(), "{team} {col}");
        }
        introduced += t["introduced_week"].as_u64().unwrap();
    }
    assert!(introduced > 0, "6.5 introduced findings: {card}");
    // And the rows agree with the findings themselves.
    let mut latest = BTreeMap::new();
    for e in &events {
        latest.insert(e.fingerprint.clone(), e);
    }
    let mut open_by_team: BTreeMap<String, u64> = BTreeMap::new();
    for e in latest
        .values()
        .filter(|e| e.status == custody::model::Status::Open)
    {
        *open_by_team
            .entry(e.team.clone().unwrap_or_else(|| "unattributed".into()))
            .or_default() += 1;
    }
    for (team, n) in &open_by_team {
        assert_eq!(
            row_cells(&dom, team).unwrap()["open"],
            n.to_string(),
            "{team}"
        );
    }

    // Each team's page: its own open tickets, none of another team's.
    let mut open_tickets: BTreeMap<String, (String, bool)> = BTreeMap::new();
    for t in h.tickets() {
        let team = t.team.clone().unwrap_or_else(|| "unattributed".into());
        let open = !matches!(
            t.event,
            TicketEventKind::Resolved | TicketEventKind::Reassigned
        );
        open_tickets.insert(t.ticket_key.clone(), (team, open));
    }
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for team in teams.keys() {
        let url = format!(
            "http://{addr}/teams/{}",
            custody::service::scorecard::path_segment(team)
        );
        let page = browse(&chromium, &["--dump-dom"], &url);
        let listed = attrs(&page, "data-ticket");
        let own: BTreeSet<String> = open_tickets
            .iter()
            .filter(|(_, (t, open))| t == team && *open)
            .map(|(k, _)| k.clone())
            .collect();
        assert!(listed.is_subset(&own), "{team} lists tickets not its own");
        assert_eq!(
            listed.len(),
            own.len().min(custody::metrics::TICKETS_PER_TEAM),
            "{team}"
        );
        assert_eq!(
            attrs(&page, "data-team"),
            BTreeSet::from([team.clone()]),
            "{team}"
        );
        for other in teams.keys().filter(|o| *o != team) {
            for key in open_tickets
                .iter()
                .filter(|(_, (t, _))| t == other)
                .map(|(k, _)| k)
            {
                assert!(
                    !page.contains(key.as_str()),
                    "{team}'s page shows {other}'s ticket {key}"
                );
            }
        }
        if !listed.is_empty() {
            // The evidence of ownership is there.
            assert!(
                page.contains("codeowners") || page.contains("catalog"),
                "{page}"
            );
        }
    }
    assert_eq!(http_get(addr, "/teams/no-such-team").0, 404);

    // Screenshots, kept in the target directory as artifacts.
    for (name, path) in [
        ("scorecard.png", "/".to_string()),
        (
            "scorecard-team.png",
            format!("/teams/{}", teams.keys().next().unwrap()),
        ),
    ] {
        let file = shot.join(name);
        let _ = std::fs::remove_file(&file);
        browse(
            &chromium,
            &[
                &format!("--screenshot={}", file.display()),
                "--window-size=1400,900",
            ],
            &format!("http://{addr}{path}"),
        );
        let png = std::fs::read(&file).expect("chromium wrote the screenshot");
        assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
        eprintln!("screenshot: {}", file.display());
    }
    service.stop().unwrap();
}
