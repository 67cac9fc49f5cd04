//! The effects partition processors ask for, carried out with the
//! producer and the consumer; exactly-once transactions.

use super::context::{failure, Cons, Prod};
use crate::config::service::ServiceSettings;
use crate::service::health::{lock, Health};
use crate::service::partition::{Ack, Edge, Effect, Failure, PartitionProcessor};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The producer's side of the loop: what a step's [`KafkaEdge`] sends
/// with, and the exactly-once transaction.
pub(super) struct Output {
    pub(super) producer: Prod,
    /// Exactly-once: everything goes through transactions.
    pub(super) eos: bool,
    /// A transaction is open.
    txn_open: Mutex<bool>,
    /// When the stop was first seen: every shutdown step, a wait for room
    /// in the producer's queue included, ends by this plus the shutdown
    /// timeout.
    pub(super) stop_seen: OnceLock<Instant>,
}

impl Output {
    pub(super) fn new(producer: Prod, eos: bool) -> Output {
        Output {
            producer,
            eos,
            txn_open: Mutex::new(false),
            stop_seen: OnceLock::new(),
        }
    }

    /// Opens a transaction if none is (exactly-once).
    fn ensure_txn(&self, health: &Health) {
        if !self.eos {
            return;
        }
        let mut open = lock(&self.txn_open);
        if !*open {
            match self.producer.begin_transaction() {
                Ok(()) => *open = true,
                Err(e) => health.fail(format!("begin transaction: {e}")),
            }
        }
    }

    /// Commits the open transaction with the consumed offsets of every
    /// partition up to what was applied (exactly-once).
    pub(super) fn commit_txn<'a>(
        &self,
        consumer: &Cons,
        parts: impl Iterator<Item = &'a PartitionProcessor>,
        health: &Health,
        timeout: Duration,
    ) {
        if !self.eos {
            return;
        }
        let mut open = lock(&self.txn_open);
        if !*open || health.has_failed() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for part in parts {
            if let Some(next) = part.eos_frontier() {
                let _ = tpl.add_partition_offset(&part.topic, part.partition, Offset::Offset(next));
            }
        }
        if tpl.count() > 0 {
            let Some(cgm) = consumer.group_metadata() else {
                health.fail("no consumer group metadata for the transaction".into());
                return;
            };
            if let Err(e) = self
                .producer
                .send_offsets_to_transaction(&tpl, &cgm, timeout)
            {
                health.fail(format!("send offsets to transaction: {e}"));
                let _ = self.producer.abort_transaction(timeout);
                *open = false;
                return;
            }
        }
        match self.producer.commit_transaction(timeout) {
            Ok(()) => *open = false,
            Err(e) => {
                // The in-memory state is ahead of what committed: stop, and
                // let the restart restore the committed state.
                health.fail(format!("commit transaction: {e}"));
                let _ = self.producer.abort_transaction(timeout);
                *open = false;
            }
        }
    }
}

/// Carries out one step's effects.
pub(super) struct KafkaEdge<'a> {
    pub(super) output: &'a Output,
    pub(super) consumer: &'a Cons,
    pub(super) health: &'a Health,
    pub(super) settings: &'a ServiceSettings,
}

impl Edge for KafkaEdge<'_> {
    fn effect(&self, effect: Effect<'_>) -> bool {
        match effect {
            Effect::Produce {
                topic,
                partition,
                key,
                payload,
                headers,
                ack,
            } => {
                self.send(topic, partition, key, payload, headers, ack);
                true
            }
            Effect::StoreOffset {
                topic,
                partition,
                done,
            } => {
                // librdkafka stores the offset after the one given.
                let _ = self.consumer.store_offset(topic, partition, done);
                true
            }
            Effect::Pause { topic, partition } => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(topic, partition);
                self.consumer.pause(&tpl).is_ok()
            }
            Effect::Resume { topic, partition } => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(topic, partition);
                self.consumer.resume(&tpl).is_ok()
            }
            Effect::Fail(e) => {
                self.health.fail(e.to_string());
                true
            }
        }
    }
}

impl KafkaEdge<'_> {
    /// Sends one record (counted in `ack` already), waiting while the
    /// producer's queue is full. The wait ends without sending when the
    /// run has already failed, or when a stop was asked and the queue
    /// stayed full for the shutdown timeout (brokers unreachable): the
    /// record is lost, so its message's offset is not stored and the
    /// message is redelivered after the restart.
    fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: Option<&[u8]>,
        headers: Vec<(&str, Option<&[u8]>)>,
        ack: &std::sync::Arc<Ack>,
    ) {
        self.output.ensure_txn(self.health);
        let mut record: BaseRecord<'_, [u8], [u8], Box<std::sync::Arc<Ack>>> =
            BaseRecord::with_opaque_to(topic, Box::new(std::sync::Arc::clone(ack))).key(key);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if !headers.is_empty() {
            let mut hs = OwnedHeaders::new_with_capacity(headers.len());
            for (key, value) in headers {
                hs = hs.insert(Header { key, value });
            }
            record = record.headers(hs);
        }
        loop {
            let e = match self.output.producer.send(record) {
                Ok(()) => return,
                Err((e, r)) => {
                    record = r;
                    e
                }
            };
            match failure(&e, topic) {
                Failure::Retryable(error) => {
                    if self.health.has_failed() {
                        // Another record already failed: the run stops, and
                        // this message is redelivered anyway.
                        ack.lost();
                        return;
                    }
                    if self.health.stop.load(std::sync::atomic::Ordering::Relaxed)
                        && self.output.stop_seen.get_or_init(Instant::now).elapsed()
                            >= self.settings.shutdown_timeout
                    {
                        self.health.fail(format!(
                            "{error}: the producer's queue stayed full for {} s after the stop was asked (brokers unreachable?); the message is redelivered after the restart",
                            self.settings.shutdown_timeout.as_secs()
                        ));
                        ack.lost();
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                // Larger than the producer takes: as a broker's refusal.
                Failure::Poison { error, .. } => {
                    ack.refused(error);
                    return;
                }
                // Not retriable otherwise (unknown topic...): the run stops
                // without storing this offset.
                Failure::Fatal(error) => {
                    self.health.fail(error);
                    ack.lost();
                    return;
                }
            }
        }
    }
}
