//! Topics the service reads and writes: checked at start, and created when
//! missing (`kafka.create_topics`, the default) with the right settings:
//! the changelog compacted and with as many partitions as its reports
//! topic, the ownership topic compacted with one. Otherwise the error
//! names every missing topic.

use super::worker::client_config;
use crate::config::Config;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
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
    Ok(())
}

fn create(config: &Config, plan: &[(String, i32, bool)]) -> Result<(), String> {
    let s = &config.service;
    create_with(&client_config(s), s.replication_factor, plan)
}

/// Creates topics `(name, partitions, compacted)` with a replication
/// factor (-1: the broker's default); one that exists already is fine.
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
            let t = NewTopic::new(name, *parts, TopicReplication::Fixed(replication_factor));
            if *compact {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    // The admin client answers through futures; run them on a private
    // runtime on its own thread so callers inside a runtime are fine too.
    let results = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(admin.create_topics(topics.iter(), &opts))
                    .map_err(|e| e.to_string())
            })
            .join()
            .unwrap_or_else(|_| Err("topic creation panicked".into()))
    })?;
    for r in results {
        if let Err((name, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                return Err(format!("cannot create topic {name}: {code}"));
            }
        }
    }
    Ok(())
}
