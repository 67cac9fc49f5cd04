//! The deployment files in `deploy/` agree with what custody exports and
//! serves: every metric a dashboard panel or a Prometheus rule names is a
//! series custody declares (or a recording rule of
//! `deploy/prometheus/rules.yml`), the dashboard covers the team scorecard,
//! the trends and the pipeline, and the Kubernetes probes and ports point at
//! what `custody run` listens on.
//!
//! Which families custody declares: `Metrics::render` cannot say on its own,
//! because the prometheus crate leaves families without any series out of
//! the exposition (every labelled family of a fresh registry), so the names
//! are read from the string literals of `src/metrics/mod.rs`, and the rendered
//! `# TYPE` lines confirm the kinds of those that are exposed.

use custody::metrics::Metrics;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Metric families custody declares, `name -> is a histogram`.
fn families() -> BTreeMap<String, bool> {
    let src = read("src/metrics/mod.rs");
    let mut out = BTreeMap::new();
    for (at, _) in src.match_indices("\"custody_") {
        let rest = &src[at + 1..];
        let end = rest.find('"').expect("closed string literal");
        let name = &rest[..end];
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            continue;
        }
        // A histogram's name is the first argument of `HistogramOpts::new(`.
        let before = src[..at].trim_end();
        let histogram = before.ends_with("HistogramOpts::new(");
        out.insert(name.to_string(), histogram);
    }
    assert!(
        out.len() >= 20,
        "expected custody's metric families in src/metrics/mod.rs, found {out:?}"
    );
    // What a fresh registry does expose must agree.
    let rendered = Metrics::new().render();
    for line in rendered.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            let histogram = out.get(name).unwrap_or_else(|| {
                panic!("{name} is rendered but not found in src/metrics/mod.rs")
            });
            assert_eq!(
                *histogram,
                kind == "histogram",
                "{name}: kind {kind} disagrees with src/metrics/mod.rs"
            );
        }
    }
    out
}

/// Every series name custody can expose.
fn series(families: &BTreeMap<String, bool>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (name, histogram) in families {
        out.insert(name.clone());
        if *histogram {
            for suffix in ["_bucket", "_sum", "_count"] {
                out.insert(format!("{name}{suffix}"));
            }
        }
    }
    out
}

/// `record:` names of rules.yml.
fn recorded(rules: &str) -> BTreeSet<String> {
    rules
        .lines()
        .filter_map(|l| {
            let l = l.trim_start().trim_start_matches("- ");
            l.strip_prefix("record:").map(|n| n.trim().to_string())
        })
        .collect()
}

/// `(record or alert name, expr)` of every rule of rules.yml; an `expr` is
/// one line or a `|` / `>` block scalar.
fn rule_exprs(rules: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = rules.lines().collect();
    let mut out = Vec::new();
    let mut name = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start().trim_start_matches("- ");
        i += 1;
        if let Some(n) = trimmed
            .strip_prefix("record:")
            .or_else(|| trimmed.strip_prefix("alert:"))
        {
            name = n.trim().to_string();
            continue;
        }
        let Some(value) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        let expr = if value.starts_with('|') || value.starts_with('>') {
            let mut block = Vec::new();
            while i < lines.len() {
                let l = lines[i];
                let deeper = l.len() - l.trim_start().len() > indent;
                if !l.trim().is_empty() && !deeper {
                    break;
                }
                block.push(l.trim());
                i += 1;
            }
            block.join(" ")
        } else {
            value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .unwrap_or(value)
                .to_string()
        };
        out.push((std::mem::take(&mut name), expr));
    }
    out
}

/// Keywords of PromQL's binary operators and modifiers.
const KEYWORDS: [&str; 13] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
];

/// Keywords followed by a list of label names.
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The metric names a PromQL expression selects: identifiers that are not
/// functions, keywords, label names, label values, durations, numbers or
/// Grafana variables.
fn metric_names(expr: &str) -> Vec<String> {
    // Drop string literals (label values, regexes, label_replace arguments).
    let mut plain = String::new();
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' || c == '`' {
            while let Some(d) = chars.next() {
                if d == '\\' && c != '`' {
                    chars.next();
                } else if d == c {
                    break;
                }
            }
            plain.push_str("\"\"");
        } else {
            plain.push(c);
        }
    }
    // Drop label matchers `{...}` and ranges `[...]`.
    let mut stripped = String::new();
    let (mut braces, mut brackets) = (0i32, 0i32);
    for c in plain.chars() {
        match c {
            '{' => braces += 1,
            '}' => braces -= 1,
            '[' => brackets += 1,
            ']' => brackets -= 1,
            _ if braces == 0 && brackets == 0 => stripped.push(c),
            _ => {}
        }
    }
    // Drop `by (...)`, `without (...)`, `on (...)` and the like, keyword
    // and label names, so that an aggregation is followed by its `(`.
    let chars: Vec<char> = stripped.chars().collect();
    let next_non_space = |mut at: usize| {
        while at < chars.len() && chars[at].is_whitespace() {
            at += 1;
        }
        (at, chars.get(at).copied())
    };
    let mut ungrouped = String::new();
    let mut i = 0;
    while i < chars.len() {
        if is_ident(chars[i]) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let (paren_at, next) = next_non_space(i);
            if GROUPING.contains(&word.to_ascii_lowercase().as_str()) && next == Some('(') {
                let close = chars[paren_at..]
                    .iter()
                    .position(|&d| d == ')')
                    .expect("a closed label list");
                i = paren_at + close + 1;
                ungrouped.push(' ');
            } else {
                ungrouped.push_str(&word);
            }
        } else {
            ungrouped.push(chars[i]);
            i += 1;
        }
    }
    // The identifiers that are neither keywords nor called.
    let chars: Vec<char> = ungrouped.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let token: String = chars[start..i].iter().collect();
            let mut at = i;
            while at < chars.len() && chars[at].is_whitespace() {
                at += 1;
            }
            let called = chars.get(at) == Some(&'(');
            if !called && !KEYWORDS.contains(&token.to_ascii_lowercase().as_str()) {
                out.push(token);
            }
        } else if c.is_ascii_digit() || c == '.' || c == '$' {
            // Numbers, durations (5m), Grafana variables ($team).
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The family a series or recording rule name stands for.
fn family_of(name: &str, families: &BTreeMap<String, bool>) -> Option<String> {
    let metric = match name.split(':').collect::<Vec<_>>()[..] {
        [_, metric, _] => metric.to_string(),
        _ => name.to_string(),
    };
    let candidates = [
        metric.clone(),
        format!("{metric}_total"),
        metric.trim_end_matches("_bucket").to_string(),
        metric.trim_end_matches("_sum").to_string(),
        metric.trim_end_matches("_count").to_string(),
    ];
    candidates.into_iter().find(|c| families.contains_key(c))
}

/// Every `expr` anywhere under `v` (panels, rows' nested panels, targets).
fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/custody-dashboard.json"))
        .expect("the dashboard is JSON")
}

fn check_names(
    what: &str,
    expr: &str,
    series: &BTreeSet<String>,
    recorded: &BTreeSet<String>,
    also: &[&str],
) {
    let names = metric_names(expr);
    assert!(!names.is_empty(), "{what}: no metric found in `{expr}`");
    for name in names {
        assert!(
            series.contains(&name) || recorded.contains(&name) || also.contains(&name.as_str()),
            "{what}: `{name}` in `{expr}` is neither a series custody exports nor a recording rule of deploy/prometheus/rules.yml"
        );
    }
}

#[test]
fn metric_name_extraction() {
    assert_eq!(
        metric_names(
            r#"sum by (team, severity) (rate(custody_findings_opened_total{team=~"$team"}[$__rate_interval])) * 3600"#
        ),
        ["custody_findings_opened_total"]
    );
    assert_eq!(
        metric_names(
            r#"sum by (t) (label_replace(a:custody_x:sum{severity=~"a|b"}, "s", "$1", "severity", "(.*)")) > 0 and on (instance) up{job="custody"} == 1 offset 5m"#
        ),
        ["a:custody_x:sum", "up"]
    );
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum(rate(m_bucket[5m])) by (le)) / ignoring(x) group_left n"
        ),
        ["m_bucket", "n"]
    );
}

#[test]
fn rules_name_only_what_custody_exports() {
    let families = families();
    let series = series(&families);
    let rules = read("deploy/prometheus/rules.yml");
    let recorded = recorded(&rules);
    assert!(recorded.len() >= 10, "recording rules: {recorded:?}");
    // level:metric:operations, the metric being one of custody's.
    for name in &recorded {
        assert!(
            name.split(':').count() == 3 && family_of(name, &families).is_some(),
            "recording rule `{name}` is not level:<custody metric>:operations"
        );
    }
    let exprs = rule_exprs(&rules);
    let rule_count = rules
        .lines()
        .filter(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with("record:") || t.starts_with("alert:")
        })
        .count();
    assert_eq!(exprs.len(), rule_count, "one expr per rule");
    for (name, expr) in &exprs {
        assert!(!name.is_empty(), "an expr without a record or alert name");
        // `up` is Prometheus's own, for instances that cannot be scraped.
        check_names(name, expr, &series, &recorded, &["up"]);
    }
    // The alerts the service needs, on the metrics that say so.
    for (alert, needs) in [
        ("CustodyFindingsPastSLA", "custody_findings_sla_breached"),
        (
            "CustodyUnattributedShareHigh",
            "custody_findings_unattributed",
        ),
        ("CustodyDeadLetters", "custody_dead_lettered_total"),
        ("CustodyConsumerLagHigh", "custody_consumer_lag"),
        ("CustodyConsumerLagGrowing", "custody_consumer_lag"),
        ("CustodyRestoreStuck", "custody_partitions_restoring"),
        ("CustodyNoPartitionsAssigned", "custody_partitions_assigned"),
        ("CustodyDown", "up"),
    ] {
        let (_, expr) = exprs
            .iter()
            .find(|(n, _)| n == alert)
            .unwrap_or_else(|| panic!("rules.yml has no alert {alert}"));
        let used: BTreeSet<String> = metric_names(expr)
            .iter()
            .map(|n| family_of(n, &families).unwrap_or_else(|| n.clone()))
            .collect();
        assert!(
            used.contains(needs),
            "alert {alert} does not look at {needs}: `{expr}`"
        );
    }
}

#[test]
fn dashboard_names_only_what_custody_exports() {
    let families = families();
    let series = series(&families);
    let recorded = recorded(&read("deploy/prometheus/rules.yml"));
    let dash = dashboard();
    let mut exprs = Vec::new();
    collect_exprs(&dash["panels"], &mut exprs);
    assert!(exprs.len() >= 20, "dashboard exprs: {exprs:?}");
    for expr in &exprs {
        check_names("dashboard", expr, &series, &recorded, &[]);
    }
    // The variables: a datasource to pick, teams from custody's own labels.
    let vars = dash["templating"]["list"].as_array().expect("templating");
    assert!(vars
        .iter()
        .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"));
    let team = vars
        .iter()
        .find(|v| v["name"] == "team")
        .expect("a team variable");
    assert_eq!(
        team["definition"].as_str(),
        Some("label_values(custody_findings_open, team)")
    );
    // Every query goes to the selected datasource.
    let text = dash.to_string();
    assert!(
        !text.contains("\"uid\":\"prometheus\""),
        "hard-coded datasource"
    );
}

/// The dashboard's panels, grouped under the row that precedes them (or
/// nested in a collapsed row).
fn areas(dash: &Value) -> Vec<(String, Vec<Value>)> {
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            let nested = p["panels"].as_array().cloned().unwrap_or_default();
            out.push((p["title"].as_str().unwrap_or("").to_lowercase(), nested));
        } else if let Some(last) = out.last_mut() {
            last.1.push(p.clone());
        } else {
            out.push((String::new(), vec![p.clone()]));
        }
    }
    out
}

#[test]
fn dashboard_covers_scorecard_trends_and_pipeline() {
    let families = families();
    let all_series = series(&families);
    let recorded = recorded(&read("deploy/prometheus/rules.yml"));
    let dash = dashboard();
    let areas = areas(&dash);
    for (area, needs) in [
        (
            "scorecard",
            &[
                "custody_findings_open",
                "custody_findings_sla_breached",
                "custody_findings_accepted",
                "custody_findings_suppressed",
                "custody_findings_not_affected",
                "custody_time_to_remediate_seconds",
                "custody_findings_unattributed",
                "custody_findings_introduced_open",
                "custody_findings_introduced_excused",
                "custody_time_to_fix_introduced_seconds",
            ][..],
        ),
        (
            "trends",
            &[
                "custody_findings_opened_total",
                "custody_findings_resolved_total",
            ][..],
        ),
        (
            "pipeline",
            &[
                "custody_messages_consumed_total",
                "custody_decode_errors_total",
                "custody_dead_lettered_total",
                "custody_events_produced_total",
                "custody_consumer_lag",
                "custody_processing_latency_seconds",
                "custody_partitions_restoring",
                "custody_partitions_assigned",
                "custody_state_findings",
            ][..],
        ),
    ] {
        let key = area.trim_end_matches('s');
        let (_, panels) = areas
            .iter()
            .find(|(title, _)| title.contains(key))
            .unwrap_or_else(|| panic!("no dashboard row titled with `{key}`"));
        let mut exprs = Vec::new();
        for p in panels {
            assert!(
                p["title"].as_str().is_some_and(|t| !t.is_empty()),
                "an untitled panel under {area}"
            );
            collect_exprs(p, &mut exprs);
        }
        assert!(!exprs.is_empty(), "no panel with a query under {area}");
        let used: BTreeSet<String> = exprs
            .iter()
            .flat_map(|e| metric_names(e))
            .filter(|n| all_series.contains(n) || recorded.contains(n))
            .filter_map(|n| family_of(&n, &families))
            .collect();
        for family in needs {
            assert!(
                used.contains(*family),
                "the {area} panels show nothing of {family} (they use {used:?})"
            );
        }
    }
    // Latency p99 comes from the histogram's buckets.
    let mut exprs = Vec::new();
    collect_exprs(&dash["panels"], &mut exprs);
    assert!(exprs.iter().any(|e| e.contains("histogram_quantile(0.99")
        && e.contains("custody_processing_latency_seconds_bucket")));
}

#[test]
fn dashboard_panels_do_not_overlap() {
    let dash = dashboard();
    let mut boxes: Vec<(String, [i64; 4])> = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        let g = &p["gridPos"];
        let b = ["x", "y", "w", "h"].map(|k| g[k].as_i64().expect("gridPos"));
        assert!(b[0] + b[2] <= 24, "{} is wider than the grid", p["title"]);
        let title = p["title"].to_string();
        for (other, o) in &boxes {
            let apart = b[0] + b[2] <= o[0]
                || o[0] + o[2] <= b[0]
                || b[1] + b[3] <= o[1]
                || o[1] + o[3] <= b[1];
            assert!(apart, "panels {title} and {other} overlap");
        }
        boxes.push((title, b));
    }
}

#[test]
fn prometheusrule_is_rules_yml_wrapped() {
    let rules = read("deploy/prometheus/rules.yml");
    let wrapped = read("deploy/kubernetes/prometheusrule.yaml");
    let spec = wrapped
        .split_once("\nspec:\n")
        .expect("a PrometheusRule with spec:")
        .1;
    let indented: String = rules
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("  {l}\n")
            }
        })
        .collect();
    assert!(
        spec == indented,
        "deploy/kubernetes/prometheusrule.yaml is stale: run bash deploy/check.sh --regenerate"
    );
}

/// The lines under `key:` (deeper indented), from its first occurrence.
fn block<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    let mut lines = text.lines();
    let start = lines
        .by_ref()
        .find(|l| l.trim_start().starts_with(key))
        .unwrap_or_else(|| panic!("no `{key}`"));
    let indent = start.len() - start.trim_start().len();
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .collect()
}

#[test]
fn kubernetes_probes_and_ports_match_the_service() {
    let deployment = read("deploy/kubernetes/deployment.yaml");
    for (probe, path) in [
        ("startupProbe:", "/healthz"),
        ("livenessProbe:", "/healthz"),
        ("readinessProbe:", "/readyz"),
    ] {
        let b = block(&deployment, probe);
        assert!(
            b.iter().any(|l| l.trim() == format!("path: {path}")),
            "{probe} does not probe {path}: {b:?}"
        );
        assert!(
            b.iter()
                .any(|l| l.trim() == "port: http-metrics" || l.trim() == "port: 9464"),
            "{probe} does not probe port 9464: {b:?}"
        );
    }
    let ports = block(&deployment, "ports:");
    let named = ports
        .windows(2)
        .any(|w| w[0].trim() == "- name: http-metrics" && w[1].trim() == "containerPort: 9464");
    assert!(named, "container port http-metrics is not 9464: {ports:?}");
    assert!(deployment.contains(r#"args: ["run", "--config", "/etc/custody/custody.toml"]"#));
    assert!(deployment.contains("mountPath: /etc/custody\n"));
    assert!(deployment.contains("name: CUSTODY_RDKAFKA_SASL_PASSWORD"));

    // custody listens where the probes and the Service look.
    let config = read("deploy/kubernetes/config/custody.toml");
    assert!(config.contains("listen = \"0.0.0.0:9464\""));
    let service = read("deploy/kubernetes/service.yaml");
    assert!(service.contains("- name: http-metrics\n      port: 9464\n"));
    let monitor = read("deploy/kubernetes/servicemonitor.yaml");
    assert!(monitor.contains("- port: http-metrics\n      path: /metrics\n"));
    let dockerfile = read("deploy/Dockerfile");
    assert!(dockerfile.contains("\nEXPOSE 9464\n"));
    assert!(dockerfile.contains(r#"CMD ["run", "--config", "/etc/custody/custody.toml"]"#));
}
