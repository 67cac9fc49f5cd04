//! Settings of the Kafka service (`[kafka]`, `[http]`, `[ownership]` in
//! `custody.toml`), with environment overrides.
//!
//! Every librdkafka setting can be passed through `[kafka.properties]` or
//! an environment variable `CUSTODY_RDKAFKA_<NAME>` (dots as underscores:
//! `CUSTODY_RDKAFKA_SASL_PASSWORD` sets `sasl.password`), so TLS and SASL
//! need no custody-specific keys.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Default budget of findings each partition keeps decoded
/// (`[kafka] decoded_findings_per_partition`): about 40 MiB of decoded
/// state a partition, the rest kept compact.
pub const DEFAULT_DECODED_FINDINGS: usize = 20_000;

/// Default cap on distinct team label values of the metrics.
pub const DEFAULT_MAX_TEAMS: usize = 500;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKafka {
    brokers: Option<String>,
    group_id: Option<String>,
    reports_topics: Option<Vec<String>>,
    findings_topic: Option<String>,
    changelog_topic: Option<String>,
    dead_letter_topic: Option<String>,
    delivery: Option<Delivery>,
    create_topics: Option<bool>,
    check_topic_configs: Option<bool>,
    partitions: Option<i32>,
    replication_factor: Option<i32>,
    max_in_flight_messages: Option<usize>,
    max_in_flight_bytes: Option<usize>,
    chunk_timeout_secs: Option<u64>,
    shutdown_timeout_secs: Option<u64>,
    tick_interval_secs: Option<u64>,
    last_seen_resolution_secs: Option<u64>,
    changelog_format: Option<ChangelogFormat>,
    decoded_findings_per_partition: Option<usize>,
    #[serde(default)]
    properties: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    listen: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    max_teams: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOwnership {
    config: Option<PathBuf>,
    topic: Option<String>,
    wait_secs: Option<u64>,
}

/// Delivery guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Offsets stored after every event a message caused is acknowledged;
    /// redeliveries carry the same event ids.
    AtLeastOnce,
    /// Kafka transactions: events, state and offsets commit together.
    ExactlyOnce,
}

/// How changelog values are written (both are always read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangelogFormat {
    /// The compact binary form, with a dictionary of texts per target
    /// (see `service::changelog`).
    #[default]
    Binary,
    /// JSON, as versions before the binary form wrote: set it before
    /// rolling back to such a version (see the README), and every
    /// target's records are rewritten as JSON when it is restored.
    Json,
}

/// The validated service settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSettings {
    /// Bootstrap servers.
    pub brokers: String,
    /// Consumer group.
    pub group_id: String,
    /// Topics carrying scanner reports.
    pub reports_topics: Vec<String>,
    /// Topic for finding events.
    pub findings_topic: String,
    /// Compacted changelog topic of the state (per reports topic when
    /// there are several: `<changelog_topic>.<reports topic>`).
    pub changelog_topic: String,
    /// Dead-letter topic.
    pub dead_letter_topic: String,
    /// Delivery guarantee.
    pub delivery: Delivery,
    /// Create missing topics (else fail naming them).
    pub create_topics: bool,
    /// Check at start that the changelog and ownership topics keep every
    /// key's newest record (compacted, nothing deleted by retention); a
    /// broker that cannot answer gets a warning.
    pub check_topic_configs: bool,
    /// Partitions of topics custody creates (the changelog always gets as
    /// many as its reports topic).
    pub partitions: i32,
    /// Replication factor of created topics (-1: the broker's default).
    pub replication_factor: i32,
    /// Messages in flight per partition before it is paused.
    pub max_in_flight_messages: usize,
    /// Bytes in flight per partition before it is paused.
    pub max_in_flight_bytes: usize,
    /// How long a chunked scan may wait for its missing chunks.
    pub chunk_timeout: Duration,
    /// Deadline of each shutdown step.
    pub shutdown_timeout: Duration,
    /// How often the SLA clock advances.
    pub tick_interval: Duration,
    /// A rescan rewrites an unchanged finding's changelog record only when
    /// its `last_seen` enters a new period of this length (zero: at every
    /// scan), so steady rescans write next to nothing; a restart may find
    /// `last_seen` up to one period old.
    pub last_seen_resolution: Duration,
    /// How changelog values are written.
    pub changelog_format: ChangelogFormat,
    /// Findings each partition keeps decoded in memory: past it, the
    /// targets used least recently are evicted into a compact form and
    /// decoded again when a message, the SLA clock or a re-attribution
    /// needs them. Zero: no bound, every target stays decoded.
    pub decoded_findings_per_partition: usize,
    /// librdkafka settings passed through.
    pub properties: BTreeMap<String, String>,
    /// HTTP listen address.
    pub http_listen: String,
    /// Ownership configuration (file or directory).
    pub ownership: Option<PathBuf>,
    /// Compacted topic the ownership configuration is read from and
    /// followed on (instead of files; see `custody publish-ownership`).
    pub ownership_topic: Option<String>,
    /// How long the start waits for a complete version on the ownership
    /// topic.
    pub ownership_wait: Duration,
    /// Most distinct team label values; the rest fold into `other`.
    pub max_teams: usize,
}

impl Default for ServiceSettings {
    fn default() -> ServiceSettings {
        ServiceSettings {
            brokers: "localhost:9092".into(),
            group_id: "custody".into(),
            reports_topics: vec!["custody.reports".into()],
            findings_topic: "custody.findings".into(),
            changelog_topic: "custody.state".into(),
            dead_letter_topic: "custody.dlq".into(),
            delivery: Delivery::AtLeastOnce,
            create_topics: true,
            check_topic_configs: true,
            partitions: 12,
            replication_factor: -1,
            max_in_flight_messages: 256,
            max_in_flight_bytes: 64 << 20,
            chunk_timeout: Duration::from_secs(600),
            shutdown_timeout: Duration::from_secs(20),
            tick_interval: Duration::from_secs(60),
            last_seen_resolution: Duration::from_secs(3600),
            changelog_format: ChangelogFormat::Binary,
            decoded_findings_per_partition: DEFAULT_DECODED_FINDINGS,
            properties: BTreeMap::new(),
            http_listen: "0.0.0.0:9464".into(),
            ownership: None,
            ownership_topic: None,
            ownership_wait: Duration::from_secs(60),
            max_teams: DEFAULT_MAX_TEAMS,
        }
    }
}

impl ServiceSettings {
    /// The compacted topic that carries each target's part of a ticket
    /// across targets (grouping `team_rule`) to the partition that sums
    /// the ticket: `<changelog_topic>.ticket-parts`.
    pub fn ticket_parts_topic(&self) -> String {
        format!("{}.ticket-parts", self.changelog_topic)
    }

    /// The compacted topic of the tickets across targets as last
    /// published, one record per ticket: `<changelog_topic>.tickets`.
    pub fn published_tickets_topic(&self) -> String {
        format!("{}.tickets", self.changelog_topic)
    }

    /// The changelog topic of a reports topic.
    pub fn changelog_for(&self, reports_topic: &str) -> String {
        if self.reports_topics.len() <= 1 {
            self.changelog_topic.clone()
        } else {
            format!("{}.{reports_topic}", self.changelog_topic)
        }
    }

    /// Applies environment overrides: `CUSTODY_KAFKA_BROKERS`,
    /// `CUSTODY_KAFKA_GROUP_ID`, `CUSTODY_HTTP_LISTEN`,
    /// `CUSTODY_OWNERSHIP_CONFIG`, `CUSTODY_OWNERSHIP_TOPIC` and
    /// `CUSTODY_RDKAFKA_*`.
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        for (k, v) in vars {
            match k.as_str() {
                "CUSTODY_KAFKA_BROKERS" => self.brokers = v,
                "CUSTODY_KAFKA_GROUP_ID" => self.group_id = v,
                "CUSTODY_HTTP_LISTEN" => self.http_listen = v,
                "CUSTODY_OWNERSHIP_CONFIG" => self.ownership = Some(PathBuf::from(v)),
                "CUSTODY_OWNERSHIP_TOPIC" => self.ownership_topic = Some(v),
                _ => {
                    if let Some(name) = k.strip_prefix("CUSTODY_RDKAFKA_") {
                        let name = name.to_ascii_lowercase().replace('_', ".");
                        self.properties.insert(name, v);
                    }
                }
            }
        }
    }
}

pub(crate) fn validate(
    kafka: RawKafka,
    http: RawHttp,
    ownership: RawOwnership,
    metrics: RawMetrics,
    invalid: &dyn Fn(String, &str) -> crate::config::ConfigError,
    check_topic: &dyn Fn(&str) -> Result<(), String>,
) -> Result<ServiceSettings, crate::config::ConfigError> {
    let mut s = ServiceSettings::default();
    let topic = |key: &str, t: String| -> Result<String, crate::config::ConfigError> {
        check_topic(&t).map_err(|m| invalid(format!("kafka.{key}"), &m))?;
        Ok(t)
    };
    if let Some(b) = kafka.brokers {
        if b.trim().is_empty() {
            return Err(invalid("kafka.brokers".into(), "must not be empty"));
        }
        s.brokers = b;
    }
    if let Some(g) = kafka.group_id {
        if g.trim().is_empty() {
            return Err(invalid("kafka.group_id".into(), "must not be empty"));
        }
        s.group_id = g;
    }
    if let Some(ts) = kafka.reports_topics {
        if ts.is_empty() {
            return Err(invalid(
                "kafka.reports_topics".into(),
                "must name at least one topic",
            ));
        }
        s.reports_topics = ts
            .into_iter()
            .enumerate()
            .map(|(i, t)| topic(&format!("reports_topics[{i}]"), t))
            .collect::<Result<_, _>>()?;
    }
    if let Some(t) = kafka.findings_topic {
        s.findings_topic = topic("findings_topic", t)?;
    }
    if let Some(t) = kafka.changelog_topic {
        s.changelog_topic = topic("changelog_topic", t)?;
    }
    if let Some(t) = kafka.dead_letter_topic {
        s.dead_letter_topic = topic("dead_letter_topic", t)?;
    }
    if let Some(d) = kafka.delivery {
        s.delivery = d;
    }
    if let Some(c) = kafka.create_topics {
        s.create_topics = c;
    }
    if let Some(c) = kafka.check_topic_configs {
        s.check_topic_configs = c;
    }
    if let Some(p) = kafka.partitions {
        if !(1..=10_000).contains(&p) {
            return Err(invalid("kafka.partitions".into(), "must be 1 to 10000"));
        }
        s.partitions = p;
    }
    if let Some(r) = kafka.replication_factor {
        if r == 0 || r < -1 {
            return Err(invalid(
                "kafka.replication_factor".into(),
                "must be positive, or -1 for the broker's default",
            ));
        }
        s.replication_factor = r;
    }
    if let Some(m) = kafka.max_in_flight_messages {
        if m == 0 {
            return Err(invalid(
                "kafka.max_in_flight_messages".into(),
                "must be positive",
            ));
        }
        s.max_in_flight_messages = m;
    }
    if let Some(m) = kafka.max_in_flight_bytes {
        if m == 0 {
            return Err(invalid(
                "kafka.max_in_flight_bytes".into(),
                "must be positive",
            ));
        }
        s.max_in_flight_bytes = m;
    }
    for (key, v, slot) in [
        (
            "chunk_timeout_secs",
            kafka.chunk_timeout_secs,
            &mut s.chunk_timeout,
        ),
        (
            "shutdown_timeout_secs",
            kafka.shutdown_timeout_secs,
            &mut s.shutdown_timeout,
        ),
        (
            "tick_interval_secs",
            kafka.tick_interval_secs,
            &mut s.tick_interval,
        ),
    ] {
        if let Some(v) = v {
            if v == 0 {
                return Err(invalid(format!("kafka.{key}"), "must be positive"));
            }
            *slot = Duration::from_secs(v);
        }
    }
    if let Some(v) = kafka.last_seen_resolution_secs {
        s.last_seen_resolution = Duration::from_secs(v);
    }
    if let Some(f) = kafka.changelog_format {
        s.changelog_format = f;
    }
    if let Some(n) = kafka.decoded_findings_per_partition {
        s.decoded_findings_per_partition = n;
    }
    for (k, v) in kafka.properties {
        let text = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            _ => {
                return Err(invalid(
                    format!("kafka.properties.{k}"),
                    "must be a string, number or boolean",
                ))
            }
        };
        s.properties.insert(k, text);
    }
    if let Some(l) = http.listen {
        if l.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "http.listen".into(),
                "must be an address and port such as 0.0.0.0:9464",
            ));
        }
        s.http_listen = l;
    }
    if ownership.config.is_some() && ownership.topic.is_some() {
        return Err(invalid(
            "ownership".into(),
            "names both `config` and `topic`; give one",
        ));
    }
    if let Some(t) = &ownership.topic {
        check_topic(t).map_err(|e| invalid("ownership.topic".into(), &e))?;
    }
    s.ownership = ownership.config;
    s.ownership_topic = ownership.topic;
    if let Some(w) = ownership.wait_secs {
        if w == 0 || w > 3600 {
            return Err(invalid("ownership.wait_secs".into(), "must be 1 to 3600"));
        }
        s.ownership_wait = Duration::from_secs(w);
    }
    if let Some(m) = metrics.max_teams {
        if m == 0 || m > 100_000 {
            return Err(invalid("metrics.max_teams".into(), "must be 1 to 100000"));
        }
        s.max_teams = m;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn service_sections_parse_and_env_overrides() {
        let mut cfg = Config::parse(
            r#"
            [kafka]
            brokers = "k1:9092,k2:9092"
            group_id = "g"
            reports_topics = ["a.reports", "b.reports"]
            partitions = 6
            replication_factor = 3
            shutdown_timeout_secs = 5
            last_seen_resolution_secs = 0
            changelog_format = "json"
            decoded_findings_per_partition = 5000
            [kafka.properties]
            "security.protocol" = "SASL_SSL"
            "fetch.wait.max.ms" = 100
            [http]
            listen = "127.0.0.1:9000"
            [ownership]
            config = "owners.toml"
            "#,
            "/etc/custody/custody.toml",
        )
        .unwrap();
        let s = &cfg.service;
        assert_eq!(s.brokers, "k1:9092,k2:9092");
        assert_eq!(s.changelog_for("b.reports"), "custody.state.b.reports");
        assert_eq!(s.properties["fetch.wait.max.ms"], "100");
        assert_eq!(s.last_seen_resolution, std::time::Duration::ZERO);
        assert_eq!(s.changelog_format, super::ChangelogFormat::Json);
        assert_eq!(s.decoded_findings_per_partition, 5000);
        assert_eq!(
            crate::config::Config::default()
                .service
                .decoded_findings_per_partition,
            super::DEFAULT_DECODED_FINDINGS
        );
        assert_eq!(
            crate::config::Config::default().service.changelog_format,
            super::ChangelogFormat::Binary
        );
        assert_eq!(
            crate::config::Config::default()
                .service
                .last_seen_resolution,
            std::time::Duration::from_secs(3600)
        );
        assert_eq!(
            s.ownership.as_deref(),
            Some(std::path::Path::new("/etc/custody/owners.toml"))
        );
        cfg.service.apply_env([
            ("CUSTODY_KAFKA_BROKERS".to_string(), "k9:9092".to_string()),
            (
                "CUSTODY_RDKAFKA_SASL_PASSWORD".to_string(),
                "s3cret".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ]);
        assert_eq!(cfg.service.brokers, "k9:9092");
        assert_eq!(cfg.service.properties["sasl.password"], "s3cret");
        assert_eq!(cfg.service.properties.len(), 3);
        let cfg = Config::parse(
            "[ownership]\ntopic = \"custody.ownership\"\nwait_secs = 5",
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            cfg.service.ownership_topic.as_deref(),
            Some("custody.ownership")
        );
        assert_eq!(
            cfg.service.ownership_wait,
            std::time::Duration::from_secs(5)
        );
        let mut s = Config::default().service;
        s.apply_env([("CUSTODY_OWNERSHIP_TOPIC".to_string(), "own".to_string())]);
        assert_eq!(s.ownership_topic.as_deref(), Some("own"));
    }

    #[test]
    fn bad_service_settings_name_the_key() {
        for (text, want) in [
            ("[kafka]\nreports_topics = []", "kafka.reports_topics"),
            (
                "[kafka]\nreports_topics = [\"a b\"]",
                "kafka.reports_topics[0]",
            ),
            ("[kafka]\npartitions = 0", "kafka.partitions"),
            (
                "[kafka]\nreplication_factor = 0",
                "kafka.replication_factor",
            ),
            ("[kafka]\ndelivery = \"twice\"", "twice"),
            ("[kafka.properties]\nx = [1]", "kafka.properties.x"),
            ("[http]\nlisten = \"everywhere\"", "http.listen"),
            ("[kafka]\nbrokerz = \"x\"", "brokerz"),
            (
                "[ownership]\nconfig = \"o.toml\"\ntopic = \"custody.ownership\"",
                "give one",
            ),
            ("[ownership]\ntopic = \"a b\"", "ownership.topic"),
            (
                "[ownership]\ntopic = \"t\"\nwait_secs = 0",
                "ownership.wait_secs",
            ),
        ] {
            let err = Config::parse(text, "t.toml").unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
