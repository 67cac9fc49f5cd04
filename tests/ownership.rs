//! Ownership configuration, the resolver's order and explanations, and
//! reassignment when ownership changes.

use custody::model::Target;
use custody::ownership::{Ownership, Resolver};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ownership")
}

fn tornado() -> Target {
    "repo:github.com/tornadoweb/tornado".parse().unwrap()
}

fn parse(text: &str, files: &[(&str, &str)]) -> Result<Ownership, String> {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let read = move |p: &Path| {
        files
            .iter()
            .find(|(name, _)| p.ends_with(name))
            .map(|(_, t)| t.clone())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
    };
    Ownership::parse(text, "owners.toml", Path::new("/cfg"), &read).map_err(|e| e.to_string())
}

#[test]
fn resolution_order_and_evidence() {
    let own = Ownership::load(&fixture()).unwrap();
    let r = Resolver::new(Arc::new(own));
    let t = tornado();
    /// (path, stated owner, team, source, line)
    type Case<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        &'a str,
        Option<u32>,
    );
    let table: &[Case] = &[
        (
            Some("tornado/web.py"),
            None,
            Some("web-platform"),
            "codeowners",
            Some(2),
        ),
        (
            Some("tornado/iostream.py"),
            None,
            Some("networking"),
            "codeowners",
            Some(3),
        ),
        (
            Some("tornado/tcpserver.py"),
            None,
            Some("networking"),
            "codeowners",
            Some(5),
        ),
        (
            Some("tornado/test/web_test.py"),
            None,
            Some("qa"),
            "codeowners",
            Some(6),
        ),
        (
            Some("tornado/test/netutil_test.py"),
            None,
            Some("networking"),
            "codeowners",
            Some(7),
        ),
        // A rule without owners leaves the path to the fallback.
        (
            Some("tornado/speedups.c"),
            None,
            Some("appsec"),
            "fallback",
            None,
        ),
        // No rule at all: fallback.
        (Some("setup.cfg"), None, Some("appsec"), "fallback", None),
        // An owner stated by the finding wins over everything.
        (
            Some("tornado/web.py"),
            Some("security@acme.example"),
            Some("appsec"),
            "finding",
            None,
        ),
        // A handle no team claims is used as it is.
        (
            Some("docs/index.rst"),
            None,
            Some("docs-team@acme.example"),
            "codeowners",
            Some(10),
        ),
    ];
    for &(path, stated, team, source, line) in table {
        let a = r.explain(&t, path, stated);
        assert_eq!(a.team.as_deref(), team, "{path:?}");
        assert_eq!(a.source, source, "{path:?}");
        assert_eq!(a.line, line, "{path:?}");
    }
    let a = r.explain(&t, Some("tornado/netutil.py"), None);
    assert_eq!(
        a.owners,
        vec!["@acme/networking".to_string(), "@alice".to_string()]
    );
    assert_eq!(a.rule.as_deref(), Some("/tornado/netutil.py"));
    assert_eq!(a.file.as_deref(), Some("tornado.CODEOWNERS"));
}

#[test]
fn catalog_owners_systems_and_group_hierarchy() {
    let own = Ownership::load(&fixture()).unwrap();
    let r = Resolver::new(Arc::new(own));
    // Owned by a sub-team that is not a configured team: its parent group.
    let api: Target = "repo:github.com/acme/payments-api".parse().unwrap();
    let a = r.explain(&api, Some("src/main.go"), None);
    assert_eq!(a.team.as_deref(), Some("payments"));
    assert_eq!(a.source, "catalog");
    assert_eq!(a.rule.as_deref(), Some("component:default/payments-api"));
    assert_eq!(a.file.as_deref(), Some("catalog-info.yaml#4"));
    assert_eq!(a.owners, vec!["group:default/payments-backend".to_string()]);
    // No owner of its own: its system's (linked by source location).
    let ledger: Target = "repo:github.com/acme/ledger".parse().unwrap();
    let a = r.explain(&ledger, None, None);
    assert_eq!(
        (a.team.as_deref(), a.source.as_str()),
        (Some("payments"), "catalog")
    );
    // An image mapped to a catalog service.
    let img: Target = "image:ghcr.io/acme/payments-api:3.1".parse().unwrap();
    let a = r.explain(&img, None, None);
    assert_eq!(
        (a.team.as_deref(), a.source.as_str()),
        (Some("payments"), "mapping")
    );
    assert!(a.rule.as_deref().unwrap().contains("payments-api"));
}

#[test]
fn images_cloud_and_unattributed() {
    let own = parse(
        r#"
        [[teams]]
        id = "web"
        aliases = ["@acme/web"]
        [[images]]
        pattern = "ghcr.io/acme/web-*"
        team = "@acme/web"
        [[cloud]]
        pattern = "aws/1111*"
        team = "web"
        "#,
        &[],
    )
    .unwrap();
    let r = Resolver::new(Arc::new(own));
    let img: Target = "image:ghcr.io/acme/web-frontend:1.2".parse().unwrap();
    let a = r.explain(&img, Some("usr/lib/libssl.so"), None);
    assert_eq!(
        (a.team.as_deref(), a.source.as_str()),
        (Some("web"), "mapping")
    );
    let cloud: Target = "cloud:aws/111122223333".parse().unwrap();
    assert_eq!(r.explain(&cloud, None, None).team.as_deref(), Some("web"));
    let other: Target = "image:docker.io/library/nginx".parse().unwrap();
    let a = r.explain(&other, None, None);
    assert_eq!((a.team.as_deref(), a.source.as_str()), (None, "none"));
}

#[test]
fn cloud_patterns_own_the_resources_of_a_cluster() {
    let own = parse(
        r#"
        [[teams]]
        id = "payments"
        [[cloud]]
        pattern = "minikube/payments/**"
        team = "payments"
        "#,
        &[],
    )
    .unwrap();
    let r = Resolver::new(Arc::new(own));
    let api: Target = "k8s:minikube/payments/Deployment/api".parse().unwrap();
    let a = r.explain(&api, Some("payments/Deployment/api"), None);
    assert_eq!(
        (a.team.as_deref(), a.source.as_str()),
        (Some("payments"), "mapping")
    );
    let app: Target = "k8s:minikube/default/Deployment/app".parse().unwrap();
    assert_eq!(r.explain(&app, None, None).team, None);
}

#[test]
fn aliases_are_case_insensitive_and_backstage_aware() {
    let own = parse(
        "[[teams]]\nid = \"payments\"\naliases = [\"@Acme/Payments\", \"group:default/payments\", \"Pay@Acme.example\"]\n",
        &[],
    )
    .unwrap();
    for handle in [
        "@acme/payments",
        "acme/PAYMENTS",
        "group:payments",
        "group:default/payments",
        "pay@acme.example",
        "payments",
    ] {
        assert_eq!(own.team_of(handle), Some("payments"), "{handle}");
    }
    assert_eq!(own.team_of("@acme/other"), None);
}

#[test]
fn configuration_errors_name_the_key() {
    let table: &[(&str, &str)] = &[
        ("[[teams]]\nid = \"a b\"", "teams[0].id"),
        (
            "[[teams]]\nid = \"a\"\naliases=[\"@x\"]\n[[teams]]\nid = \"b\"\naliases=[\"@X\"]",
            "teams[1].aliases",
        ),
        ("[[repos]]\ntarget = \"image:x\"", "repos[0].target"),
        (
            "[[repos]]\ntarget = \"repo:a/b/c\"\ncodeowners = \"missing\"",
            "repos[0].codeowners",
        ),
        (
            "[[repos]]\ntarget = \"repo:a/b/c\"\n[[repos]]\ntarget = \"repo:A/b/c\"",
            "repos[1].target",
        ),
        (
            "[[images]]\npattern = \"a[\"\nteam = \"t\"",
            "images[0].pattern",
        ),
        ("[[teams]]\nidd = \"x\"", "idd"),
        ("[[images]]\npattern = \"x\"", "images[0]"),
        ("catalog = [\"missing.yaml\"]", "catalog[0]"),
    ];
    for (text, want) in table {
        let err = parse(text, &[]).unwrap_err();
        assert!(err.contains(want), "{text:?}: {err}");
    }
}

fn custody(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_custody"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn owners_check_and_explain_commands() {
    let cfg = fixture();
    let cfg = cfg.to_str().unwrap();
    let out = custody(&["owners", "check", "--owners", cfg]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "docs-team@acme.example is an unknown alias"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("tornado.CODEOWNERS:10") && text.contains("docs-team@acme.example"),
        "{text}"
    );

    let out = custody(&[
        "owners",
        "explain",
        "--owners",
        cfg,
        "--target",
        "repo:github.com/tornadoweb/tornado",
        "--path",
        "tornado/iostream.py",
        "--path",
        "README.rst",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["team"], "networking");
    assert_eq!(lines[0]["line"], 3);
    assert_eq!(lines[1]["source"], "fallback");

    let out = custody(&["owners", "check", "--owners", "/nonexistent/owners.toml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn process_attributes_and_reassigns_when_ownership_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.json");
    let report =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/churn/bandit-6.5.sarif");
    let run = |cfg: &Path| {
        custody(&[
            "process",
            "--owners",
            cfg.to_str().unwrap(),
            "--target",
            "repo:github.com/tornadoweb/tornado",
            "--state",
            state.to_str().unwrap(),
            "--at",
            "2026-01-01T00:00:00Z",
            report.to_str().unwrap(),
        ])
    };
    let out = run(&fixture());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let findings: Vec<&Value> = events.iter().filter(|e| e["kind"] == "finding").collect();
    assert_eq!(findings.len(), 269);
    assert!(
        findings.iter().all(|e| e["team"].is_string()),
        "every finding attributed (fallback exists)"
    );
    let qa = findings.iter().filter(|e| e["team"] == "qa").count();
    assert!(qa > 100, "tornado/test/ findings belong to qa: {qa}");
    assert!(findings
        .iter()
        .any(|e| e["attribution"]["source"] == "codeowners" && e["attribution"]["line"] == 6));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("qa") && stderr.contains("networking"),
        "{stderr}"
    );

    // The qa team hands tornado/test/ to web-platform: a changed
    // CODEOWNERS reassigns exactly those findings, and nothing else moves.
    let changed = tmp.path().join("changed");
    std::fs::create_dir(&changed).unwrap();
    for f in ["owners.toml", "catalog-info.yaml"] {
        std::fs::copy(fixture().join(f), changed.join(f)).unwrap();
    }
    let co = std::fs::read_to_string(fixture().join("tornado.CODEOWNERS")).unwrap();
    std::fs::write(
        changed.join("tornado.CODEOWNERS"),
        co.replace(
            "/tornado/test/          @acme/qa",
            "/tornado/test/          @acme/web-platform",
        ),
    )
    .unwrap();
    let out = run(&changed);
    assert_eq!(out.status.code(), Some(0));
    let events: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reassigned: Vec<&Value> = events.iter().filter(|e| e["kind"] == "finding").collect();
    assert_eq!(reassigned.len(), qa);
    assert!(reassigned.iter().all(|e| e["event"] == "reassigned"
        && e["previous_team"] == "qa"
        && e["team"] == "web-platform"));
    // Each of qa's tickets is reassigned to the web-platform ticket of the
    // same rule, which opens or grows; no ticket is left with qa.
    let tickets: Vec<&Value> = events.iter().filter(|e| e["kind"] == "ticket").collect();
    let moved: Vec<&&Value> = tickets
        .iter()
        .filter(|t| t["event"] == "reassigned")
        .collect();
    assert!(!moved.is_empty());
    for t in &moved {
        assert_eq!(
            (t["previous_team"].as_str(), t["team"].as_str()),
            (Some("qa"), Some("web-platform"))
        );
        let to = t["reassigned_to"].as_str().unwrap();
        assert!(
            tickets
                .iter()
                .any(|n| n["ticket_key"] == to && n["event"] != "reassigned"),
            "{to}"
        );
    }
    assert!(tickets.iter().all(|t| t["team"] != "qa"));
}

#[test]
fn reload_without_restart_reassigns_open_findings() {
    use custody::config::Config;
    use custody::engine::Engine;
    use custody::lifecycle::State;
    use custody::model::{Category, Finding, Location, ScanMeta, Severity};
    use custody::ownership::Reloadable;

    let dir = tempfile::tempdir().unwrap();
    let write = |team: &str| {
        std::fs::write(
            dir.path().join("owners.toml"),
            format!("[[teams]]\nid = \"{team}\"\naliases = [\"@acme/{team}\"]\n[[repos]]\ntarget = \"repo:github.com/acme/api\"\ncodeowners = \"CODEOWNERS\"\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("CODEOWNERS"), format!("* @acme/{team}\n")).unwrap();
    };
    write("alpha");
    let owners = Arc::new(Reloadable::load(dir.path()).unwrap());
    let engine = Engine::new(&Config::default()).with_attribution(Box::new(Arc::clone(&owners)));
    let mut state = State::new();
    let target: Target = "repo:github.com/acme/api".parse().unwrap();
    let mut f = Finding::new("bandit", Category::Sast, "B101", Severity::Low, "assert");
    f.location = Some(Location {
        path: "app.py".into(),
        start_line: Some(3),
        ..Location::default()
    });
    let meta = ScanMeta {
        scan_id: "s".into(),
        target: target.clone(),
        commit: None,
        git_ref: None,
        complete: true,
        coverage: [("bandit".to_string(), Category::Sast)].into(),
        rule_help: Default::default(),
    };
    let now = chrono::Utc::now();
    let o = engine.scan(&mut state, &meta, vec![f], now);
    assert_eq!(o.findings[0].team.as_deref(), Some("alpha"));

    // A broken configuration is refused and the old one stays in force.
    std::fs::write(dir.path().join("owners.toml"), "[[teams]]\nid = ").unwrap();
    assert!(owners.reload().is_err());
    assert!(engine.reattribute(&mut state, now).findings.is_empty());

    write("beta");
    owners.reload().unwrap();
    let o = engine.reattribute(&mut state, now);
    assert_eq!(o.findings.len(), 1);
    assert_eq!(o.findings[0].team.as_deref(), Some("beta"));
    assert_eq!(o.findings[0].previous_team.as_deref(), Some("alpha"));
    let kinds: Vec<_> = o
        .tickets
        .iter()
        .map(|t| (t.event, t.team.clone()))
        .collect();
    assert!(
        kinds.contains(&(
            custody::model::TicketEventKind::Reassigned,
            Some("beta".into())
        )),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(custody::model::TicketEventKind::Opened, Some("beta".into()))),
        "{kinds:?}"
    );
    // Nothing more to say on a second pass.
    assert!(engine.reattribute(&mut state, now).findings.is_empty());
}

#[test]
fn checkout_codeowners_found_in_github_order() {
    let cfg = "[[teams]]\nid = \"a\"\naliases = [\"@o/a\"]\n[[teams]]\nid = \"b\"\naliases = [\"@o/b\"]\n\
               [[repos]]\ntarget = \"repo:github.com/o/r\"\ncheckout = \"src/r\"\n";
    let t: Target = "repo:github.com/o/r".parse().unwrap();
    /// (files in the checkout, team, deciding file)
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, &'a str);
    let cases: &[Case] = &[
        // .github/ before the root before docs/.
        (
            &[
                ("r/.github/CODEOWNERS", "* @o/a\n"),
                ("r/CODEOWNERS", "* @o/b\n"),
            ],
            Some("a"),
            "src/r/.github/CODEOWNERS",
        ),
        (
            &[
                ("r/docs/CODEOWNERS", "* @o/a\n"),
                ("r/CODEOWNERS", "* @o/b\n"),
            ],
            Some("b"),
            "src/r/CODEOWNERS",
        ),
        (
            &[("r/docs/CODEOWNERS", "* @o/a\n")],
            Some("a"),
            "src/r/docs/CODEOWNERS",
        ),
    ];
    for (files, team, file) in cases {
        let own = parse(cfg, files).unwrap();
        let a = Resolver::new(Arc::new(own)).explain(&t, Some("x.py"), None);
        assert_eq!(a.team.as_deref(), *team, "{files:?}");
        assert_eq!(a.file.as_deref(), Some(*file), "{files:?}");
    }
    let own = parse(cfg, &[]).unwrap();
    assert!(
        own.warnings
            .iter()
            .any(|w| w.contains("no CODEOWNERS in src/r")),
        "{:?}",
        own.warnings
    );
}
