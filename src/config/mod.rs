//! Configuration: the raw TOML shape, validated into [`Config`] with errors
//! that name the offending key. Nothing here reads files except
//! [`Config::load`]; everything is passed explicitly, never global.

use crate::model::ticket::Grouping;
use crate::model::{Category, Severity};
use crate::normalize::DEFAULT_SECRET_SALT;
pub mod links;
pub mod service;

use chrono::{DateTime, Datelike, Duration, Utc, Weekday};
use serde::Deserialize;
use service::ServiceSettings;
use std::collections::BTreeMap;
use std::path::Path;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// Not valid TOML, or an unknown or mistyped key.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, naming the key and line.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{path}: `{key}` {message}")]
    Invalid {
        /// The file.
        path: String,
        /// The key, dotted (`tickets.routes[2].topic`).
        key: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    fingerprint: RawFingerprint,
    #[serde(default)]
    sla: RawSla,
    #[serde(default)]
    tickets: RawTickets,
    #[serde(default)]
    links: BTreeMap<String, String>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    kafka: crate::config::service::RawKafka,
    #[serde(default)]
    http: crate::config::service::RawHttp,
    #[serde(default)]
    ownership: crate::config::service::RawOwnership,
    #[serde(default)]
    metrics: crate::config::service::RawMetrics,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFingerprint {
    secret_salt: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSla {
    critical: Option<u32>,
    high: Option<u32>,
    medium: Option<u32>,
    low: Option<u32>,
    info: Option<u32>,
    restart_on_reopen: Option<bool>,
    business_days: Option<bool>,
    #[serde(default)]
    teams: BTreeMap<String, RawSlaDays>,
    #[serde(default)]
    categories: BTreeMap<Category, RawSlaDays>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSlaDays {
    critical: Option<u32>,
    high: Option<u32>,
    medium: Option<u32>,
    low: Option<u32>,
    info: Option<u32>,
}

impl RawSlaDays {
    fn entries(&self) -> [(Severity, Option<u32>); 5] {
        [
            (Severity::Critical, self.critical),
            (Severity::High, self.high),
            (Severity::Medium, self.medium),
            (Severity::Low, self.low),
            (Severity::Info, self.info),
        ]
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTickets {
    default_topic: Option<String>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    grouping: Option<Grouping>,
    max_locations: Option<u32>,
    default_ref: Option<String>,
    #[serde(default)]
    teams: BTreeMap<String, RawTicketTeam>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTicketTeam {
    grouping: Option<Grouping>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    topic: String,
    #[serde(default)]
    teams: Vec<String>,
    #[serde(default)]
    unattributed: Option<bool>,
    #[serde(default)]
    min_severity: Option<Severity>,
    #[serde(default)]
    categories: Vec<Category>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_report_bytes: Option<u64>,
}

/// SLA policy: days to fix per severity, counted from when a finding opened,
/// overridable per team and per category (a team's override wins over a
/// category's, which wins over the default; 0 days means no SLA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaPolicy {
    /// Days per severity; a severity without an entry has no due date.
    pub days: BTreeMap<Severity, u32>,
    /// Whether a reopened finding starts a new SLA clock (true) or keeps
    /// its first due date (false).
    pub restart_on_reopen: bool,
    /// Count Monday to Friday only (UTC).
    pub business_days: bool,
    /// Per-team overrides (team id -> severity -> days, 0 = none).
    pub teams: BTreeMap<String, BTreeMap<Severity, u32>>,
    /// Per-category overrides.
    pub categories: BTreeMap<Category, BTreeMap<Severity, u32>>,
}

impl SlaPolicy {
    /// Days to fix a finding of `sev`, owned by `team`, of `category`.
    pub fn days_for(&self, sev: Severity, team: Option<&str>, category: Category) -> Option<u32> {
        let days = team
            .and_then(|t| self.teams.get(t))
            .and_then(|m| m.get(&sev))
            .or_else(|| self.categories.get(&category).and_then(|m| m.get(&sev)))
            .or_else(|| self.days.get(&sev))
            .copied()?;
        (days > 0).then_some(days)
    }

    /// The due date of a finding whose SLA clock started at `from`.
    pub fn due(
        &self,
        sev: Severity,
        team: Option<&str>,
        category: Category,
        from: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let days = self.days_for(sev, team, category)?;
        Some(if self.business_days {
            add_business_days(from, days)
        } else {
            from + Duration::days(i64::from(days))
        })
    }
}

/// `from` plus `n` working days (Monday to Friday): a clock that starts on
/// a weekend counts from the next Monday's time of day.
pub fn add_business_days(from: DateTime<Utc>, n: u32) -> DateTime<Utc> {
    let mut d = from;
    while matches!(d.weekday(), Weekday::Sat | Weekday::Sun) {
        d += Duration::days(1);
    }
    let weeks = i64::from(n / 5);
    d += Duration::days(7 * weeks);
    let mut left = n % 5;
    while left > 0 {
        d += Duration::days(1);
        if !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) {
            left -= 1;
        }
    }
    d
}

impl Default for SlaPolicy {
    /// Critical 7 days, high 30, medium 90, low 180, info none.
    fn default() -> SlaPolicy {
        SlaPolicy {
            days: BTreeMap::from([
                (Severity::Critical, 7),
                (Severity::High, 30),
                (Severity::Medium, 90),
                (Severity::Low, 180),
            ]),
            restart_on_reopen: true,
            business_days: false,
            teams: BTreeMap::new(),
            categories: BTreeMap::new(),
        }
    }
}

/// One routing rule: tickets matching every condition go to `topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination topic.
    pub topic: String,
    /// Teams it applies to (empty: any team).
    pub teams: Vec<String>,
    /// `Some(true)`: only unattributed tickets; `Some(false)`: only
    /// attributed ones; `None`: either.
    pub unattributed: Option<bool>,
    /// Lowest severity it applies to.
    pub min_severity: Option<Severity>,
    /// Categories it applies to (empty: any).
    pub categories: Vec<Category>,
}

/// How findings are grouped into tickets and how ticket bodies are
/// written (`[tickets]` and `[links]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketSettings {
    /// Grouping of teams without their own.
    pub grouping: Grouping,
    /// Per-team groupings (team id -> grouping); unattributed tickets take
    /// the default.
    pub team_grouping: BTreeMap<String, Grouping>,
    /// Most locations a ticket body lists; it says how many more there are.
    pub max_locations: usize,
    /// What `{commit}` stands for when a scan gave neither commit nor ref.
    pub default_ref: String,
    /// Source link templates by repository host (lowercase), see
    /// [`links::LINK_PLACEHOLDERS`].
    pub links: BTreeMap<String, String>,
}

/// Default of [`TicketSettings::max_locations`].
pub const DEFAULT_MAX_LOCATIONS: usize = 20;
/// Largest [`TicketSettings::max_locations`] accepted: a body stays far
/// below what trackers take (Jira's description holds 32,767 characters).
pub const MAX_MAX_LOCATIONS: u32 = 200;

impl Default for TicketSettings {
    fn default() -> TicketSettings {
        TicketSettings {
            grouping: Grouping::TeamTargetRule,
            team_grouping: BTreeMap::new(),
            max_locations: DEFAULT_MAX_LOCATIONS,
            default_ref: "HEAD".to_string(),
            links: BTreeMap::new(),
        }
    }
}

impl TicketSettings {
    /// Who is grouped by `team_rule` (tickets across targets): the
    /// configuration key that says so, first found; None when nobody is.
    pub fn team_rule_users(&self) -> Option<String> {
        if self.grouping == Grouping::TeamRule {
            return Some("tickets.grouping".to_string());
        }
        self.team_grouping
            .iter()
            .find(|(_, g)| **g == Grouping::TeamRule)
            .map(|(t, _)| format!("tickets.teams.{t}.grouping"))
    }

    /// The grouping of `team`'s tickets.
    pub fn grouping_for(&self, team: Option<&str>) -> Grouping {
        team.and_then(|t| self.team_grouping.get(t))
            .copied()
            .unwrap_or(self.grouping)
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Salt for secret hashes.
    pub secret_salt: String,
    /// SLA policy.
    pub sla: SlaPolicy,
    /// Topic for tickets no route matches.
    pub default_topic: String,
    /// Routing rules, first match wins.
    pub routes: Vec<Route>,
    /// Grouping and ticket bodies.
    pub tickets: TicketSettings,
    /// Largest report accepted, in bytes.
    pub max_report_bytes: u64,
    /// The Kafka service (`custody run`).
    pub service: ServiceSettings,
}

/// The default largest report: 512 MiB.
pub const DEFAULT_MAX_REPORT_BYTES: u64 = 512 * 1024 * 1024;

impl Default for Config {
    fn default() -> Config {
        Config {
            secret_salt: DEFAULT_SECRET_SALT.to_string(),
            sla: SlaPolicy::default(),
            default_topic: "custody.tickets".to_string(),
            routes: Vec::new(),
            tickets: TicketSettings::default(),
            max_report_bytes: DEFAULT_MAX_REPORT_BYTES,
            service: ServiceSettings::default(),
        }
    }
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Config::parse(&text, &shown)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid = |key: String, message: &str| ConfigError::Invalid {
            path: origin.to_string(),
            key,
            message: message.to_string(),
        };
        let mut cfg = Config::default();
        if let Some(salt) = raw.fingerprint.secret_salt {
            if salt.len() < 8 {
                return Err(invalid(
                    "fingerprint.secret_salt".into(),
                    "must be at least 8 characters",
                ));
            }
            cfg.secret_salt = salt;
        }
        for (sev, days) in [
            (Severity::Critical, raw.sla.critical),
            (Severity::High, raw.sla.high),
            (Severity::Medium, raw.sla.medium),
            (Severity::Low, raw.sla.low),
            (Severity::Info, raw.sla.info),
        ] {
            match days {
                Some(0) => {
                    cfg.sla.days.remove(&sev);
                }
                Some(d) if d > 3650 => {
                    return Err(invalid(
                        format!("sla.{sev}"),
                        "must be at most 3650 days (0 means no SLA)",
                    ))
                }
                Some(d) => {
                    cfg.sla.days.insert(sev, d);
                }
                None => {}
            }
        }
        if let Some(r) = raw.sla.restart_on_reopen {
            cfg.sla.restart_on_reopen = r;
        }
        if let Some(b) = raw.sla.business_days {
            cfg.sla.business_days = b;
        }
        let check = |key: String, d: u32| -> Result<u32, ConfigError> {
            if d > 3650 {
                Err(invalid(key, "must be at most 3650 days (0 means no SLA)"))
            } else {
                Ok(d)
            }
        };
        for (team, days) in &raw.sla.teams {
            let mut m = BTreeMap::new();
            for (sev, d) in days.entries() {
                if let Some(d) = d {
                    m.insert(sev, check(format!("sla.teams.{team}.{sev}"), d)?);
                }
            }
            cfg.sla.teams.insert(team.clone(), m);
        }
        for (cat, days) in &raw.sla.categories {
            let mut m = BTreeMap::new();
            for (sev, d) in days.entries() {
                if let Some(d) = d {
                    m.insert(
                        sev,
                        check(format!("sla.categories.{}.{sev}", cat.as_str()), d)?,
                    );
                }
            }
            cfg.sla.categories.insert(*cat, m);
        }
        if let Some(t) = raw.tickets.default_topic {
            check_topic(&t).map_err(|m| invalid("tickets.default_topic".into(), &m))?;
            cfg.default_topic = t;
        }
        for (i, r) in raw.tickets.routes.into_iter().enumerate() {
            check_topic(&r.topic).map_err(|m| invalid(format!("tickets.routes[{i}].topic"), &m))?;
            if r.unattributed == Some(true) && !r.teams.is_empty() {
                return Err(invalid(
                    format!("tickets.routes[{i}]"),
                    "cannot name teams and match only unattributed tickets",
                ));
            }
            cfg.routes.push(Route {
                topic: r.topic,
                teams: r.teams,
                unattributed: r.unattributed,
                min_severity: r.min_severity,
                categories: r.categories,
            });
        }
        if let Some(g) = raw.tickets.grouping {
            cfg.tickets.grouping = g;
        }
        for (team, t) in raw.tickets.teams {
            if let Some(g) = t.grouping {
                cfg.tickets.team_grouping.insert(team, g);
            }
        }
        if let Some(n) = raw.tickets.max_locations {
            if n == 0 || n > MAX_MAX_LOCATIONS {
                return Err(invalid(
                    "tickets.max_locations".into(),
                    &format!("must be 1 to {MAX_MAX_LOCATIONS}"),
                ));
            }
            cfg.tickets.max_locations = n as usize;
        }
        if let Some(r) = raw.tickets.default_ref {
            if r.is_empty()
                || r.len() > 255
                || r.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(invalid(
                    "tickets.default_ref".into(),
                    "must be 1 to 255 characters, without whitespace",
                ));
            }
            cfg.tickets.default_ref = r;
        }
        for (host, template) in raw.links {
            let key = format!("links.{host:?}");
            if host.is_empty() || host.contains(['/', ':']) || host.chars().any(char::is_whitespace)
            {
                return Err(invalid(key, "must be a host name such as \"github.com\""));
            }
            links::check_link_template(&template).map_err(|m| invalid(key, &m))?;
            cfg.tickets
                .links
                .insert(host.to_ascii_lowercase(), template);
        }
        if let Some(m) = raw.limits.max_report_bytes {
            if m == 0 {
                return Err(invalid(
                    "limits.max_report_bytes".into(),
                    "must be positive",
                ));
            }
            cfg.max_report_bytes = m;
        }
        cfg.service = crate::config::service::validate(
            raw.kafka,
            raw.http,
            raw.ownership,
            raw.metrics,
            &invalid,
            &check_topic,
        )?;
        if let Some(own) = &cfg.service.ownership {
            // Relative to the configuration file.
            if own.is_relative() {
                if let Some(dir) = Path::new(origin).parent() {
                    cfg.service.ownership = Some(dir.join(own));
                }
            }
        }
        Ok(cfg)
    }
}

/// Kafka's topic name rules: 1 to 249 of `[A-Za-z0-9._-]`, not `.` or `..`.
fn check_topic(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > 249 {
        return Err("must be 1 to 249 characters".into());
    }
    if t == "." || t == ".." {
        return Err("cannot be \".\" or \"..\"".into());
    }
    if let Some(c) = t
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "contains {c:?}; topics allow only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_example_parses() {
        let cfg = Config::parse(
            r#"
            [fingerprint]
            secret_salt = "0123456789abcdef"
            [sla]
            critical = 3
            info = 0
            low = 0
            restart_on_reopen = false
            [tickets]
            default_topic = "sec.tickets"
            [[tickets.routes]]
            topic = "sec.tickets.urgent"
            min_severity = "high"
            [[tickets.routes]]
            topic = "sec.tickets.triage"
            unattributed = true
            [limits]
            max_report_bytes = 1000
            "#,
            "t.toml",
        )
        .unwrap();
        assert_eq!(cfg.sla.days.get(&Severity::Critical), Some(&3));
        assert_eq!(cfg.sla.days.get(&Severity::High), Some(&30));
        assert_eq!(cfg.sla.days.get(&Severity::Low), None);
        assert!(!cfg.sla.restart_on_reopen);
        assert_eq!(cfg.routes.len(), 2);
        assert_eq!(cfg.routes[0].min_severity, Some(Severity::High));
        assert_eq!(cfg.max_report_bytes, 1000);
    }

    #[test]
    fn sla_overrides_team_over_category_over_default() {
        let cfg = Config::parse(
            r#"
            [sla]
            high = 30
            [sla.teams.payments]
            high = 10
            low = 0
            [sla.categories.secret]
            high = 2
            critical = 1
            "#,
            "t.toml",
        )
        .unwrap();
        let p = &cfg.sla;
        use Category::{Sast, Secret};
        assert_eq!(
            p.days_for(Severity::High, Some("payments"), Secret),
            Some(10)
        );
        assert_eq!(p.days_for(Severity::High, Some("web"), Secret), Some(2));
        assert_eq!(p.days_for(Severity::High, None, Sast), Some(30));
        assert_eq!(
            p.days_for(Severity::Critical, Some("payments"), Secret),
            Some(1)
        );
        assert_eq!(p.days_for(Severity::Critical, None, Sast), Some(7));
        // 0 switches the SLA off for that team.
        assert_eq!(p.days_for(Severity::Low, Some("payments"), Sast), None);
        assert_eq!(p.days_for(Severity::Low, None, Sast), Some(180));
        assert_eq!(p.days_for(Severity::Info, None, Sast), None);
    }

    #[test]
    fn business_days_skip_weekends() {
        use chrono::TimeZone;
        let at = |d: u32, h: u32| Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap();
        // 2026-11-20 is a Friday.
        assert_eq!(add_business_days(at(20, 9), 1), at(23, 9));
        assert_eq!(add_business_days(at(20, 9), 5), at(27, 9));
        assert_eq!(add_business_days(at(18, 9), 3), at(23, 9));
        assert_eq!(add_business_days(at(16, 9), 10), at(30, 9));
        // A clock started on Saturday counts from Monday.
        assert_eq!(add_business_days(at(21, 15), 1), at(24, 15));
        assert_eq!(add_business_days(at(21, 15), 0), at(23, 15));
        let mut p = SlaPolicy {
            business_days: true,
            ..SlaPolicy::default()
        };
        assert_eq!(
            p.due(Severity::Critical, None, Category::Sast, at(20, 9)),
            Some(at(20, 9) + Duration::days(11))
        );
        p.business_days = false;
        assert_eq!(
            p.due(Severity::Critical, None, Category::Sast, at(20, 9)),
            Some(at(27, 9))
        );
    }

    #[test]
    fn errors_name_the_key() {
        let table = [
            ("[sla]\nhigh = 99999", "sla.high"),
            ("[sla]\nhihg = 3", "hihg"),
            (
                "[[tickets.routes]]\ntopic = \"a b\"",
                "tickets.routes[0].topic",
            ),
            (
                "[[tickets.routes]]\ntopic = \"t\"\nmin_severity = \"urgent\"",
                "urgent",
            ),
            (
                "[[tickets.routes]]\ntopic = \"t\"\nteams=[\"a\"]\nunattributed = true",
                "tickets.routes[0]",
            ),
            (
                "[fingerprint]\nsecret_salt = \"x\"",
                "fingerprint.secret_salt",
            ),
            ("[limits]\nmax_report_bytes = 0", "limits.max_report_bytes"),
            (
                "[sla.teams.payments]\nhigh = 9999",
                "sla.teams.payments.high",
            ),
            (
                "[sla.categories.secret]\nhigh = 9999",
                "sla.categories.secret.high",
            ),
            ("[sla.categories.malware]\nhigh = 1", "malware"),
            ("[tickets]\nmax_locations = 0", "tickets.max_locations"),
            ("[tickets]\ngrouping = \"team_and_rule\"", "team_and_rule"),
            ("[tickets.teams.qa]\ngrouping = \"per_line\"", "per_line"),
            ("[tickets]\ndefault_ref = \"a b\"", "tickets.default_ref"),
            (
                "[links]\n\"github.com\" = \"https://x/{branch}\"",
                "links.\"github.com\"",
            ),
            (
                "[links]\n\"https://github.com\" = \"https://x/{path}\"",
                "links.\"https://github.com\"",
            ),
            ("not toml [", "t.toml"),
        ];
        for (text, want) in table {
            let err = Config::parse(text, "t.toml").unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    /// `team_rule` is a grouping like the others, globally or per team,
    /// and the key that asks for it is named (the service makes the
    /// stage's topics when one does).
    #[test]
    fn team_rule_groupings_parse_and_name_their_key() {
        let c = Config::parse("[tickets]\ngrouping = \"team_rule\"\n", "t.toml").unwrap();
        assert_eq!(c.tickets.grouping_for(Some("qa")), Grouping::TeamRule);
        assert_eq!(
            c.tickets.team_rule_users().as_deref(),
            Some("tickets.grouping")
        );
        let c = Config::parse(
            "[tickets.teams.qa]\ngrouping = \"team_rule\"\n[tickets.teams.web]\ngrouping = \"finding\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.tickets.grouping_for(Some("qa")), Grouping::TeamRule);
        assert_eq!(c.tickets.grouping_for(None), Grouping::TeamTargetRule);
        assert_eq!(
            c.tickets.team_rule_users().as_deref(),
            Some("tickets.teams.qa.grouping")
        );
        let c = Config::parse("[tickets.teams.web]\ngrouping = \"finding\"\n", "t.toml").unwrap();
        assert_eq!(c.tickets.team_rule_users(), None);
    }
}
