//! The stage that sums tickets across targets (grouping `team_rule`) in
//! `custody run`: a consumer of its own group (`<group_id>.tickets`) on the
//! topic of the targets' parts, where every part of one ticket meets in
//! one partition ([`crate::service::tickets`]). Each partition it is given
//! is read from its beginning (the group commits no offset: the compacted
//! topic is the stage's state), with the tickets as last published read
//! back from their own compacted topic first; once at the end it publishes
//! what differs (nothing after a plain restart), then each part's record
//! as it comes. Ticket events go to their routed topics, keyed by ticket,
//! with ids derived from the ticket and its sequence; each ticket's record
//! is written once its events are acknowledged, so a crash between the
//! two sends the same events, with the same ids, again. Under exactly-once
//! delivery a partition's events and records go in one transaction of the
//! partition's own transactional producer.

use super::client_config;
use super::worker::RunError;
use crate::config::Config;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::service::health::{lock, Health};
use crate::service::tickets::{Published, Stage};
use chrono::Utc;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Counts the records the broker refused.
#[derive(Default)]
struct Deliveries {
    failed: AtomicUsize,
}

impl ClientContext for Deliveries {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        super::config::say_librdkafka(level, fac, log_message);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            tracing::error!(topic = m.topic(), "a ticket record was not delivered: {e}");
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One partition of the parts topic.
struct Held {
    stage: Stage,
    /// The partition's end when it was given: read to here, it is
    /// restored.
    end: i64,
    live: bool,
    /// Exactly-once: the partition's own transactional producer (its id
    /// names the partition, so whoever takes the partition next fences
    /// it, and a transaction it left open is aborted).
    producer: Option<BaseProducer<Deliveries>>,
}

struct Run {
    engine: Engine,
    consumer: BaseConsumer,
    reader: BaseConsumer,
    producer: BaseProducer<Deliveries>,
    /// The producers' settings, for the partitions' own under
    /// exactly-once.
    pcfg: rdkafka::ClientConfig,
    eos: bool,
    group_id: String,
    parts_topic: String,
    published_topic: String,
    held: HashMap<i32, Held>,
    /// Partitions to read again from their beginning when next taken: let
    /// go to be restored again (a publish that failed), or not taken when
    /// a record of theirs came (the record was passed over).
    rewind: HashSet<i32>,
    /// What the batch publishes, by partition.
    pending: HashMap<i32, Published>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

/// Most records taken in one batch.
const BATCH: usize = 500;

/// Starts the stage on a thread of its own; it ends at the service's stop.
pub(super) fn spawn(
    config: &Config,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> Result<JoinHandle<()>, RunError> {
    let s = &config.service;
    let k = |what: &str, e: KafkaError| RunError::Kafka(format!("ticket stage: {what}: {e}"));
    let mut cfg = client_config(s);
    cfg.set("group.id", format!("{}.tickets", s.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer = cfg.create().map_err(|e| k("consumer", e))?;
    let parts_topic = s.ticket_parts_topic();
    consumer
        .subscribe(&[&parts_topic])
        .map_err(|e| k("subscribe", e))?;
    let mut rcfg = client_config(s);
    rcfg.set("group.id", format!("{}.tickets-reader", s.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed");
    let reader: BaseConsumer = rcfg.create().map_err(|e| k("reader", e))?;
    let mut pcfg = client_config(s);
    pcfg.set("enable.idempotence", "true")
        .set("message.max.bytes", super::topics::LARGEST_MESSAGE);
    let producer: BaseProducer<Deliveries> = pcfg
        .create_with_context(Deliveries::default())
        .map_err(|e| k("producer", e))?;
    let mut run = Run {
        engine: Engine::new(config),
        consumer,
        reader,
        producer,
        pcfg,
        eos: s.delivery == crate::config::service::Delivery::ExactlyOnce,
        group_id: s.group_id.clone(),
        parts_topic,
        published_topic: s.published_tickets_topic(),
        held: HashMap::new(),
        rewind: HashSet::new(),
        pending: HashMap::new(),
        health,
        metrics,
    };
    std::thread::Builder::new()
        .name("custody-tickets".into())
        .spawn(move || run.run())
        .map_err(|e| RunError::Kafka(format!("cannot start the ticket stage: {e}")))
}

impl Run {
    fn run(&mut self) {
        tracing::info!(topic = %self.parts_topic, "ticket stage started");
        while !self.health.stop.load(Ordering::Relaxed) {
            self.follow_assignment();
            // What has arrived, up to a batch, published together: one
            // wait for the broker's acknowledgements per batch.
            let mut wait = Duration::from_millis(100);
            for _ in 0..BATCH {
                let Some(r) = self.consumer.poll(wait).map(|r| r.map(|m| m.detach())) else {
                    break;
                };
                wait = Duration::ZERO;
                match r {
                    Ok(m) => self.take_record(&m),
                    Err(KafkaError::PartitionEOF(p)) => {
                        if self.held.get(&p).is_some_and(|h| !h.live) {
                            self.settle(p);
                        }
                    }
                    Err(e) => tracing::warn!("ticket stage: {e}"),
                }
            }
            self.publish();
        }
        let _ = self.producer.flush(Duration::from_secs(10));
        self.consumer.unsubscribe();
        tracing::info!("ticket stage stopped");
    }

    /// One record of the parts topic: restored, or applied.
    fn take_record(&mut self, m: &rdkafka::message::OwnedMessage) {
        let p = m.partition();
        if !self.held.contains_key(&p) {
            // A partition read again from its beginning: this record, from
            // before the rewind, comes again.
            let rewound = self.rewind.contains(&p);
            self.take(p);
            if rewound || !self.held.contains_key(&p) {
                self.rewind.insert(p);
                return;
            }
        }
        let (offset, key, value) = (m.offset(), m.key().unwrap_or_default(), m.payload());
        let Some(h) = self.held.get_mut(&p) else {
            return;
        };
        if h.live {
            match h.stage.apply(key, value, &self.engine, Utc::now()) {
                Ok(out) => self.pending.entry(p).or_default().extend(out),
                Err(e) => tracing::warn!(partition = p, offset, "ticket part skipped: {e}"),
            }
        } else {
            if let Err(e) = h.stage.restore_part(key, value) {
                tracing::warn!(partition = p, offset, "ticket part skipped: {e}");
            }
            if offset + 1 >= h.end {
                self.settle(p);
            }
        }
    }

    /// Takes the partitions newly given, forgets those taken away.
    fn follow_assignment(&mut self) {
        let Ok(tpl) = self.consumer.assignment() else {
            return;
        };
        let now: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let gone: Vec<i32> = self
            .held
            .keys()
            .filter(|p| !now.contains(p))
            .copied()
            .collect();
        for p in gone {
            self.drop_partition(p);
            // Given again later, it starts from the beginning anyway.
            self.rewind.remove(&p);
        }
        for p in now {
            if !self.held.contains_key(&p) {
                self.take(p);
            }
        }
    }

    /// Lets partition `p` go to be restored again: read from its
    /// beginning when next taken.
    fn restore_again(&mut self, p: i32) {
        self.drop_partition(p);
        self.rewind.insert(p);
    }

    /// Lets partition `p` go (taken away, or to be restored again): the
    /// instance's readiness no longer waits for it.
    fn drop_partition(&mut self, p: i32) {
        self.held.remove(&p);
        lock(&self.health.partitions).remove(&(self.parts_topic.clone(), p));
    }

    /// A partition given: under exactly-once its producer made first
    /// (fencing the previous owner's), its published tickets read back,
    /// its end noted.
    fn take(&mut self, p: i32) {
        if self.rewind.contains(&p) {
            if let Err(e) = self.consumer.seek(
                &self.parts_topic,
                p,
                Offset::Beginning,
                Duration::from_secs(10),
            ) {
                // Tried again at the next look at the assignment.
                tracing::warn!(
                    partition = p,
                    "ticket stage: cannot read again from the beginning: {e}"
                );
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
            self.rewind.remove(&p);
        }
        let producer = if self.eos {
            match self.transactional(p) {
                Ok(t) => Some(t),
                Err(e) => {
                    // Taken again at the next look at the assignment.
                    tracing::error!(partition = p, "ticket stage: {e}");
                    std::thread::sleep(Duration::from_millis(500));
                    return;
                }
            }
        } else {
            None
        };
        // The instance is not ready while the partition restores.
        lock(&self.health.partitions).insert((self.parts_topic.clone(), p), false);
        let mut stage = Stage::new();
        match self.read_published(p, &mut stage) {
            Ok(n) => tracing::info!(partition = p, tickets = n, "ticket stage: restoring"),
            Err(e) => {
                // Not taken without them: it would publish every ticket
                // again as new. Taken again at the next look at the
                // assignment; the instance is not ready meanwhile.
                tracing::error!(
                    partition = p,
                    "ticket stage: published tickets not read: {e}; trying again"
                );
                std::thread::sleep(Duration::from_millis(500));
                return;
            }
        }
        let end =
            match self
                .consumer
                .fetch_watermarks(&self.parts_topic, p, Duration::from_secs(10))
            {
                Ok((low, high)) if high <= low => 0,
                Ok((_, high)) => high,
                Err(e) => {
                    tracing::warn!(partition = p, "ticket stage: {e}");
                    i64::MAX
                }
            };
        self.held.insert(
            p,
            Held {
                stage,
                end,
                live: false,
                producer,
            },
        );
        if end == 0 {
            self.settle(p);
        }
    }

    /// The transactional producer of partition `p`.
    fn transactional(&self, p: i32) -> Result<BaseProducer<Deliveries>, String> {
        let mut cfg = self.pcfg.clone();
        cfg.set(
            "transactional.id",
            format!("{}.tickets.{}", self.group_id, p),
        );
        let producer: BaseProducer<Deliveries> = cfg
            .create_with_context(Deliveries::default())
            .map_err(|e| format!("producer: {e}"))?;
        producer
            .init_transactions(Duration::from_secs(30))
            .map_err(|e| format!("transactions: {e}"))?;
        Ok(producer)
    }

    /// Reads partition `p` of the published tickets to its end.
    fn read_published(&mut self, p: i32, stage: &mut Stage) -> Result<usize, String> {
        let topic = self.published_topic.clone();
        let (low, high) = self
            .reader
            .fetch_watermarks(&topic, p, Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        if high <= low {
            return Ok(0);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
        self.reader.assign(&tpl).map_err(|e| e.to_string())?;
        let mut n = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "{topic} partition {p}: not read to its end in time"
                ));
            }
            match self.reader.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    if let Err(e) =
                        stage.restore_published(m.key().unwrap_or_default(), m.payload())
                    {
                        tracing::warn!(partition = p, offset = m.offset(), "{e}");
                    }
                    n += 1;
                    if m.offset() + 1 >= high {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(e.to_string()),
                None => {}
            }
        }
        let _ = self.reader.unassign();
        Ok(n)
    }

    /// Restored: publishes what differs from what was published.
    fn settle(&mut self, p: i32) {
        let Some(h) = self.held.get_mut(&p) else {
            return;
        };
        h.live = true;
        lock(&self.health.partitions).insert((self.parts_topic.clone(), p), true);
        let out = h.stage.settle(&self.engine, Utc::now());
        tracing::info!(
            partition = p,
            events = out.events.len(),
            "ticket stage: partition restored"
        );
        self.pending.entry(p).or_default().extend(out);
    }

    /// Sends the events of the batch, waits for them, then writes their
    /// tickets' records.
    fn publish(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if pending
            .values()
            .all(|o| o.events.is_empty() && o.records.is_empty())
        {
            return;
        }
        if self.eos {
            for (p, out) in pending {
                self.publish_transaction(p, &out);
            }
            return;
        }
        let failed = self.producer.context().failed.load(Ordering::Relaxed);
        for e in pending.values().flat_map(|o| &o.events) {
            let Ok(payload) = serde_json::to_vec(e) else {
                continue;
            };
            self.send(
                BaseRecord::to(&e.route)
                    .key(e.ticket_key.as_bytes())
                    .payload(&payload[..]),
            );
        }
        let flushed = self.producer.flush(Duration::from_secs(30));
        if flushed.is_err() || self.producer.context().failed.load(Ordering::Relaxed) != failed {
            // Their partitions are restored again, which sends them again
            // with the same ids: what was published is what their records
            // say, and these records are not written.
            tracing::error!(
                "ticket events not acknowledged; their tickets' records are not written, and their partitions are restored again"
            );
            for p in pending.keys() {
                self.restore_again(*p);
            }
            return;
        }
        for e in pending.values().flat_map(|o| &o.events) {
            self.metrics.event("ticket", &e.route);
        }
        for (p, out) in &pending {
            for (key, value) in &out.records {
                self.send(
                    BaseRecord::to(&self.published_topic)
                        .partition(*p)
                        .key(key.as_bytes())
                        .payload(&value[..]),
                );
            }
        }
        let _ = self.producer.flush(Duration::from_secs(30));
    }

    /// Exactly-once: a partition's events and its tickets' records in one
    /// transaction. A transaction that fails is aborted and the partition
    /// restored again, which sends them again.
    fn publish_transaction(&mut self, p: i32, out: &Published) {
        if out.events.is_empty() && out.records.is_empty() {
            return;
        }
        let Some(producer) = self.held.get(&p).and_then(|h| h.producer.as_ref()) else {
            // Taken away: its next owner publishes what differs.
            return;
        };
        let failed = producer.context().failed.load(Ordering::Relaxed);
        let result = (|| -> Result<(), String> {
            producer.begin_transaction().map_err(|e| e.to_string())?;
            for e in &out.events {
                let Ok(payload) = serde_json::to_vec(e) else {
                    continue;
                };
                send_with(
                    producer,
                    BaseRecord::to(&e.route)
                        .key(e.ticket_key.as_bytes())
                        .payload(&payload[..]),
                );
            }
            for (key, value) in &out.records {
                send_with(
                    producer,
                    BaseRecord::to(&self.published_topic)
                        .partition(p)
                        .key(key.as_bytes())
                        .payload(&value[..]),
                );
            }
            producer
                .flush(Duration::from_secs(30))
                .map_err(|e| e.to_string())?;
            if producer.context().failed.load(Ordering::Relaxed) != failed {
                return Err("a record was refused".into());
            }
            producer
                .commit_transaction(Duration::from_secs(30))
                .map_err(|e| e.to_string())
        })();
        match result {
            Ok(()) => {
                for e in &out.events {
                    self.metrics.event("ticket", &e.route);
                }
            }
            Err(e) => {
                tracing::error!(
                    partition = p,
                    "ticket stage: transaction failed: {e}; restoring the partition again"
                );
                let _ = producer.abort_transaction(Duration::from_secs(30));
                self.restore_again(p);
            }
        }
    }

    fn send(&self, record: BaseRecord<'_, [u8], [u8]>) {
        send_with(&self.producer, record);
    }
}

/// Sends a record, waiting while the producer's queue is full.
fn send_with(producer: &BaseProducer<Deliveries>, mut record: BaseRecord<'_, [u8], [u8]>) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                r,
            )) => {
                producer.poll(Duration::from_millis(100));
                record = r;
            }
            Err((e, _)) => {
                tracing::error!("a ticket record not sent: {e}");
                producer.context().failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}
