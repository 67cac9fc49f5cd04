//! Topics the service reads and writes: checked at start, and created when
//! missing (`kafka.create_topics`, the default) with the right settings:
//! the changelog compacted and with as many partitions as its reports
//! topic, the ownership topic compacted with one. Otherwise the error
//! names every missing topic. The changelog and ownership topics that
//! exist must keep every key's newest record (`kafka.check_topic_configs`):
//! a changelog with `cleanup.policy=delete`, say, would lose the state of
//! every finding unchanged for longer than its retention.

use crate::config::Config;
use crate::kafka::client_config;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Every topic the configuration names, by role.
pub fn wanted(config: &Config) -> Vec<(String, &'static str)> {
    let s = &config.service;
    let mut out: Vec<(String, &'static str)> = Vec::new();
    for t in &s.reports_topics {
        out.push((t.clone(), "reports"));
    }
    out.push((s.findings_topic.clone(), "findings"));
    out.push((s.dead_letter_topic.clone(), "dead letters"));
    out.push((config.default_topic.clone(), "tickets"));
    for r in &config.routes {
        out.push((r.topic.clone(), "tickets"));
    }
    for t in &s.reports_topics {
        out.push((s.changelog_for(t), "changelog"));
    }
    if let Some(t) = &s.ownership_topic {
        out.push((t.clone(), "ownership"));
    }
    if config.tickets.team_rule_users().is_some() {
        out.push((s.ticket_parts_topic(), "ticket parts"));
        out.push((s.published_tickets_topic(), "published tickets"));
    }
    let mut seen = BTreeSet::new();
    out.retain(|(t, _)| seen.insert(t.clone()));
    out
}

/// Partition counts of existing topics.
fn existing(config: &Config) -> Result<BTreeMap<String, usize>, String> {
    let consumer: BaseConsumer = client_config(&config.service)
        .create()
        .map_err(|e| format!("cannot create a client: {e}"))?;
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(30))
        .map_err(|e| {
            format!(
                "cannot read cluster metadata from {}: {e}",
                config.service.brokers
            )
        })?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect())
}

/// The partition count of `topic`.
pub fn partitions(config: &Config, topic: &str) -> Result<i32, String> {
    let have = existing(config)?;
    have.get(topic)
        .and_then(|n| i32::try_from(*n).ok())
        .ok_or_else(|| format!("topic {topic} is missing"))
}

/// The partition counts of `topics`, read in one metadata request; a
/// topic missing is left out, with a warning.
pub fn partition_counts(
    config: &Config,
    topics: &[String],
) -> Result<BTreeMap<String, i32>, String> {
    let have = existing(config)?;
    let mut out = BTreeMap::new();
    for t in topics {
        match have.get(t).and_then(|n| i32::try_from(*n).ok()) {
            Some(n) => {
                out.insert(t.clone(), n);
            }
            None => tracing::warn!(topic = %t, "events spread by their key: the topic is missing"),
        }
    }
    Ok(out)
}

/// Checks that every topic exists, creating missing ones when allowed, and
/// that each changelog has at least as many partitions as its reports
/// topic.
pub fn ensure(config: &Config) -> Result<(), String> {
    let s = &config.service;
    let mut have = existing(config)?;
    let missing: Vec<(String, &'static str)> = wanted(config)
        .into_iter()
        .filter(|(t, _)| !have.contains_key(t))
        .collect();
    if !missing.is_empty() {
        if !s.create_topics {
            let list: Vec<String> = missing.iter().map(|(t, r)| format!("{t} ({r})")).collect();
            return Err(format!(
                "missing topics: {}; create them or set kafka.create_topics = true",
                list.join(", ")
            ));
        }
        let mut plan: Vec<(String, i32, bool)> = Vec::new();
        for (t, role) in &missing {
            match *role {
                "changelog" => {}
                // One partition, compacted: the newest version of each
                // file is kept.
                "ownership" => plan.push((t.clone(), 1, true)),
                // Compacted: a target's newest part of each ticket, the
                // newest record of each ticket, partitioned alike.
                "ticket parts" | "published tickets" => plan.push((t.clone(), s.partitions, true)),
                _ => plan.push((t.clone(), s.partitions, false)),
            }
        }
        create(config, &plan)?;
        have = existing(config)?;
        let mut plan = Vec::new();
        for rt in &s.reports_topics {
            let cl = s.changelog_for(rt);
            if !have.contains_key(&cl) {
                let n = have.get(rt).copied().unwrap_or(s.partitions as usize);
                plan.push((cl, n as i32, true));
            }
        }
        create(config, &plan)?;
        // Metadata can lag creation briefly.
        for _ in 0..50 {
            have = existing(config)?;
            if wanted(config).iter().all(|(t, _)| have.contains_key(t)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for rt in &s.reports_topics {
        let cl = s.changelog_for(rt);
        if let (Some(r), Some(c)) = (have.get(rt), have.get(&cl)) {
            if c < r {
                return Err(format!(
                    "changelog topic {cl} has {c} partitions but reports topic {rt} has {r}: \
                     the changelog needs at least as many"
                ));
            }
        }
    }
    if s.check_topic_configs {
        check_kept(config, &|m| tracing::warn!("{m}"))?;
    }
    Ok(())
}

/// What a topic's configuration means for the records custody keeps on
/// it.
#[derive(Debug, PartialEq, Eq)]
pub enum Keeping {
    /// Nothing deleted by retention (compacted, or no finite limit):
    /// every key's newest record stays.
    Kept,
    /// Records can be deleted: why, and what to set.
    Lost(String),
    /// The broker did not say: no `cleanup.policy` among the entries, or
    /// a `delete` policy without `retention.ms`.
    Unknown,
}

/// Judges a topic's configuration entries (name -> value, as
/// DescribeConfigs gives them, defaults included) for a topic whose every
/// key's newest record must stay: the changelog (the state of a finding
/// unchanged for months is its one record) and the ownership topic (a
/// version in force for months is its files and manifest). Records are
/// lost only to a `delete` policy (alone or with `compact`) with a finite
/// `retention.ms` or `retention.bytes`; an empty policy keeps everything
/// (Kafka 4.2 and later).
pub fn keeping(entries: &BTreeMap<String, Option<String>>) -> Keeping {
    let Some(Some(policy)) = entries.get("cleanup.policy") else {
        return Keeping::Unknown;
    };
    let deletes = policy.split(',').any(|p| p.trim() == "delete");
    if !deletes {
        return Keeping::Kept;
    }
    let advice = if policy.split(',').any(|p| p.trim() == "compact") {
        "set cleanup.policy=compact"
    } else {
        "set cleanup.policy=compact (the topic is not compacted either)"
    };
    for limit in ["retention.ms", "retention.bytes"] {
        match entries.get(limit) {
            Some(Some(v)) if v.trim() == "-1" => {}
            Some(Some(v)) => {
                return Keeping::Lost(format!(
                    "cleanup.policy={policy} with {limit}={v} deletes records past that limit, a key's newest among them; {advice}"
                ))
            }
            // Kafka's default retention.bytes is -1 (none).
            _ if limit == "retention.bytes" => {}
            // Its default retention.ms is seven days: only the broker
            // knows what applies.
            _ => return Keeping::Unknown,
        }
    }
    Keeping::Kept
}

/// Checks that the changelog topics and the ownership topic keep every
/// key's newest record (see [`keeping`]): an error names each that does
/// not; a broker that does not answer, or does not say, gets a warning
/// through `warn`, and the start goes on.
pub fn check_kept(config: &Config, warn: &dyn Fn(&str)) -> Result<(), String> {
    let s = &config.service;
    let mut topics: Vec<(String, &'static str)> = s
        .reports_topics
        .iter()
        .map(|t| (s.changelog_for(t), "changelog"))
        .collect();
    if let Some(t) = &s.ownership_topic {
        topics.push((t.clone(), "ownership"));
    }
    let admin: AdminClient<DefaultClientContext> = client_config(s)
        .create()
        .map_err(|e| format!("cannot create an admin client: {e}"))?;
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(15)))
        .request_timeout(Some(Duration::from_secs(15)));
    let specs: Vec<ResourceSpecifier<'_>> = topics
        .iter()
        .map(|(t, _)| ResourceSpecifier::Topic(t))
        .collect();
    let unchecked = |names: &[&str], why: &str| {
        warn(&format!(
            "cannot check that {} keep every record (DescribeConfigs: {why}); make sure they are compacted (cleanup.policy=compact), or state and ownership are lost to retention",
            names.join(", ")
        ));
    };
    let all: Vec<&str> = topics.iter().map(|(t, _)| t.as_str()).collect();
    let results = match block_on(admin.describe_configs(specs.iter(), &opts)) {
        Ok(r) => r,
        Err(e) => {
            unchecked(&all, &e);
            return Ok(());
        }
    };
    if results.len() != topics.len() {
        unchecked(
            &all,
            &format!("{} answers for {} topics", results.len(), topics.len()),
        );
    }
    let mut lost = Vec::new();
    for ((topic, role), r) in topics.iter().zip(results) {
        match r {
            Err(code) => unchecked(&[topic.as_str()], &code.to_string()),
            Ok(resource) => {
                let entries: BTreeMap<String, Option<String>> = resource
                    .entries
                    .into_iter()
                    .map(|e| (e.name, e.value))
                    .collect();
                match keeping(&entries) {
                    Keeping::Kept => {}
                    Keeping::Lost(why) => lost.push(format!(
                        "{role} topic {topic}: {why} ({})",
                        match *role {
                            "changelog" => "a restart would forget the findings unchanged for longer, and open them again",
                            "ownership" => "a version in force for longer would be gone at the next start",
                            _ => "records custody needs would be gone",
                        }
                    )),
                    Keeping::Unknown => warn(&format!(
                        "the broker does not say whether {role} topic {topic} keeps every record (no cleanup.policy, or a delete policy without retention.ms); make sure it is compacted"
                    )),
                }
            }
        }
    }
    if lost.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} (to start anyway, set kafka.check_topic_configs = false)",
            lost.join("; ")
        ))
    }
}

/// Runs an admin client's future to its end. The admin client answers
/// through futures; they run on a private runtime on a thread of their own,
/// so callers inside a runtime are fine too.
fn block_on<T: Send, F: std::future::Future<Output = rdkafka::error::KafkaResult<T>> + Send>(
    f: F,
) -> Result<T, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(f).map_err(|e| e.to_string())
            })
            .join()
            .unwrap_or_else(|_| Err("the admin request panicked".into()))
    })
}

fn create(config: &Config, plan: &[(String, i32, bool)]) -> Result<(), String> {
    let s = &config.service;
    create_with(&client_config(s), s.replication_factor, plan)
}

/// The largest message custody produces, and the largest its topics take
/// (`max.message.bytes`): 16 MiB. A broker's default is about 1 MB; a
/// topic created beforehand needs as much for tickets of many findings.
pub const LARGEST_MESSAGE: &str = "16777216";

/// Creates topics `(name, partitions, compacted)` with a replication
/// factor (-1: the broker's default), taking messages of up to
/// [`LARGEST_MESSAGE`]; one that exists already is fine.
pub fn create_with(
    client: &rdkafka::ClientConfig,
    replication_factor: i32,
    plan: &[(String, i32, bool)],
) -> Result<(), String> {
    if plan.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = client
        .create()
        .map_err(|e| format!("cannot create an admin client: {e}"))?;
    let topics: Vec<NewTopic<'_>> = plan
        .iter()
        .map(|(name, parts, compact)| {
            let t = NewTopic::new(name, *parts, TopicReplication::Fixed(replication_factor))
                .set("max.message.bytes", LARGEST_MESSAGE);
            if *compact {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = block_on(admin.create_topics(topics.iter(), &opts))?;
    for r in results {
        if let Err((name, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                return Err(format!("cannot create topic {name}: {code}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(kv: &[(&str, &str)]) -> BTreeMap<String, Option<String>> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }

    #[test]
    fn only_a_topic_that_keeps_every_newest_record_is_kept() {
        let kept = |kv: &[(&str, &str)]| keeping(&entries(kv));
        assert_eq!(
            kept(&[("cleanup.policy", "compact"), ("retention.ms", "604800000")]),
            Keeping::Kept,
            "compaction alone ignores retention.ms"
        );
        assert_eq!(
            kept(&[
                ("cleanup.policy", "compact,delete"),
                ("retention.ms", "-1"),
                ("retention.bytes", "-1")
            ]),
            Keeping::Kept
        );
        let lost = |kv: &[(&str, &str)], says: &str| match kept(kv) {
            Keeping::Lost(why) => assert!(why.contains(says), "{why}"),
            other => panic!("{kv:?}: {other:?}"),
        };
        assert_eq!(
            kept(&[
                ("cleanup.policy", "delete"),
                ("retention.ms", "-1"),
                ("retention.bytes", "-1")
            ]),
            Keeping::Kept,
            "nothing is ever deleted"
        );
        assert_eq!(
            kept(&[("cleanup.policy", ""), ("retention.ms", "604800000")]),
            Keeping::Kept,
            "an empty policy keeps everything"
        );
        // Kafka's defaults for a topic created without settings.
        lost(
            &[
                ("cleanup.policy", "delete"),
                ("retention.ms", "604800000"),
                ("retention.bytes", "-1"),
            ],
            "cleanup.policy=delete with retention.ms=604800000 deletes records past that limit, a key's newest among them; set cleanup.policy=compact (the topic is not compacted either)",
        );
        lost(
            &[
                ("cleanup.policy", "compact, delete"),
                ("retention.ms", "86400000"),
            ],
            "retention.ms=86400000",
        );
        lost(
            &[
                ("cleanup.policy", "delete,compact"),
                ("retention.ms", "-1"),
                ("retention.bytes", "1073741824"),
            ],
            "retention.bytes=1073741824",
        );
        // The broker did not say which retention applies.
        assert_eq!(
            kept(&[("cleanup.policy", "compact,delete")]),
            Keeping::Unknown
        );
        assert_eq!(kept(&[("retention.ms", "-1")]), Keeping::Unknown);
        assert_eq!(
            keeping(&[("cleanup.policy".to_string(), None)].into_iter().collect()),
            Keeping::Unknown
        );
    }
}
