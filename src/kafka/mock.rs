//! An embedded Kafka-protocol broker for `custody demo` and the fast tests:
//! librdkafka's mock cluster (in-process, real TCP; no compaction, about
//! 5 MiB kept per partition), and reading a topic back whole.

use crate::config::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Starts a mock cluster of one broker; its address is
/// `bootstrap_servers()`. It stops when dropped.
pub fn start() -> Result<MockCluster<'static, DefaultProducerContext>, String> {
    MockCluster::new(1).map_err(|e| format!("cannot start the mock cluster: {e}"))
}

/// Creates every topic `config` names on a mock cluster (the mock does
/// not implement CreateTopics; it has its own call), and turns the check
/// of their settings off. The mock has no compaction, so the changelog is
/// a plain topic there.
pub fn create_mock_topics<C: rdkafka::ClientContext>(
    cluster: &MockCluster<'_, C>,
    config: &mut Config,
) -> Result<(), String> {
    // The mock answers no DescribeConfigs (a request waits for its
    // timeout), and has no compaction to check for anyway.
    config.service.check_topic_configs = false;
    for (topic, role) in super::topics::wanted(config) {
        // As topics::ensure creates them (the mock has no compaction).
        let partitions = if role == "ownership" {
            1
        } else {
            config.service.partitions
        };
        cluster
            .create_topic(&topic, partitions, 1)
            .map_err(|e| format!("cannot create topic {topic} on the mock cluster: {e}"))?;
    }
    Ok(())
}

/// Every message payload of `topic`, read from the beginning to the high
/// watermarks.
pub fn read_all(brokers: &str, topic: &str) -> Result<Vec<Vec<u8>>, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "custody-demo-reader")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0i64;
    let mut highs = HashMap::new();
    for t in md.topics() {
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            if high > low {
                remaining += high - low;
                highs.insert(p.id(), high);
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    let mut out = Vec::new();
    if remaining == 0 {
        return Ok(out);
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done: HashMap<i32, bool> = HashMap::new();
    while done.len() < highs.len() && Instant::now() < deadline {
        if let Some(r) = consumer.poll(Duration::from_millis(100)) {
            let m = r.map_err(|e| e.to_string())?;
            out.push(m.payload().unwrap_or_default().to_vec());
            if highs
                .get(&m.partition())
                .is_some_and(|h| m.offset() + 1 >= *h)
            {
                done.insert(m.partition(), true);
            }
        }
    }
    Ok(out)
}
