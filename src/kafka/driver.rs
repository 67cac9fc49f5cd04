//! The consumer loop: one thread owns the consumer; reports decode on the
//! rayon pool and are applied by their partition's processor
//! ([`PartitionProcessor`]) in offset order; the effects it asks for are
//! carried out here ([`KafkaEdge`]). Rebalances hand partitions to and from
//! the loop, and each assigned partition's state is restored first.

use super::config::client_config;
use super::context::{Cons, Delivery, Prod, Rebalancer};
use super::edge::{KafkaEdge, Output};
use super::message::incoming;
use super::restore::{restore, Restored, RESTORE_CLIENTS};
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::service::health::{lock, Health};
use crate::service::partition::{Env, Incoming, PartitionProcessor, Shared};
use crate::service::settings::ServiceSettings;
use chrono::Utc;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a step of every partition may go on decoding (see
/// [`PartitionProcessor::step`]) before the loop polls again.
const STEP_BUDGET: Duration = Duration::from_millis(100);

/// Everything the loop and the rebalance callbacks share.
pub struct Core {
    cx: Shared,
    out: Output,
    parts: HashMap<(String, i32), PartitionProcessor>,
    generation: u64,
    restores: mpsc::Sender<Restored>,
    client_config: ClientConfig,
}

impl Core {
    pub(super) fn health(&self) -> &Arc<Health> {
        &self.cx.health
    }

    /// What carries out the processors' effects.
    fn edge<'a>(&'a self, consumer: &'a Cons) -> KafkaEdge<'a> {
        KafkaEdge {
            output: &self.out,
            consumer,
            health: &self.cx.health,
            settings: &self.cx.settings,
        }
    }

    /// A processor's environment now.
    fn env<'a>(&'a self, edge: &'a KafkaEdge<'a>) -> Env<'a> {
        Env {
            cx: &self.cx,
            edge,
            wall: Utc::now(),
            now: Instant::now(),
        }
    }

    pub(super) fn assign(&mut self, consumer: &Cons, tps: &[(String, i32)]) {
        let mut tpl = TopicPartitionList::new();
        let mut batch = Vec::new();
        for (topic, partition) in tps {
            self.generation += 1;
            let changelog_topic = self.cx.settings.changelog_for(topic);
            let part = PartitionProcessor::new(
                topic,
                *partition,
                &changelog_topic,
                self.generation,
                Instant::now(),
            );
            self.parts.insert((topic.clone(), *partition), part);
            lock(&self.cx.health.partitions).insert((topic.clone(), *partition), false);
            tpl.add_partition(topic, *partition);
            batch.push((
                (topic.clone(), *partition),
                changelog_topic,
                self.generation,
            ));
        }
        // Each restored partition is handed over as soon as it reaches its
        // end.
        // A few clients share the partitions round-robin: one connection
        // per client keeps several fetches in flight.
        let clients = RESTORE_CLIENTS.min(batch.len());
        let mut groups: Vec<Vec<_>> = (0..clients).map(|_| Vec::new()).collect();
        for (i, b) in batch.into_iter().enumerate() {
            groups[i % clients].push(b);
        }
        for group in groups {
            let tx = self.restores.clone();
            let cfg = self.client_config.clone();
            let metrics = Arc::clone(&self.cx.metrics);
            let deadline = self
                .cx
                .settings
                .shutdown_timeout
                .max(Duration::from_secs(600));
            std::thread::spawn(move || {
                let mut client = None;
                restore(&cfg, group, &metrics, deadline, &tx, &mut client);
                // Closing a client waits on its threads: after the results
                // are handed over.
                drop(client);
            });
        }
        if !tps.is_empty() {
            tracing::info!(
                partitions = %list_partitions(tps),
                "assigned {}: restoring their state",
                list_partitions(tps)
            );
        }
        // Messages are fetched and held (not applied) while the state is
        // restored, up to the in-flight bounds, past which the partition
        // pauses like any other (see `step`). Pausing every partition at
        // assignment and resuming it after its restore held the first
        // messages back for about a second after a restart (measured; the
        // cause inside librdkafka is not pinned down). A pause from an
        // earlier assignment of the same partition (backpressure while it
        // restored, then a revoke) outlives the revoke in librdkafka: lift
        // it, so `paused` says what is true (a no-op otherwise).
        let _ = consumer.resume(&tpl);
        self.update_gauges();
    }

    fn restored(&mut self, consumer: &Cons, r: Restored) -> Result<(), String> {
        let Some(mut part) = self.parts.remove(&r.tp) else {
            return Ok(());
        };
        if part.generation != r.generation {
            self.parts.insert(r.tp, part);
            return Ok(());
        }
        let (raw, scans) = match r.result {
            Ok(restored) => restored,
            Err(e) => {
                let e = format!(
                    "restoring {}/{} from {}: {e}",
                    r.tp.0, r.tp.1, part.changelog_topic
                );
                self.parts.insert(r.tp, part);
                return Err(e);
            }
        };
        {
            let edge = self.edge(consumer);
            part.on_restore(&self.env(&edge), raw, scans);
        }
        self.parts.insert(r.tp.clone(), part);
        lock(&self.cx.health.partitions).insert(r.tp.clone(), true);
        if self.parts.values().all(|p| p.state.is_some()) {
            let records: usize = self.parts.values().map(|p| p.raw.len()).sum();
            let slowest = self.parts.values().map(|p| p.assigned.elapsed()).max();
            tracing::info!(
                partitions = self.parts.len(),
                records,
                ms = slowest.unwrap_or_default().as_millis() as u64,
                "state of {} partitions restored ({records} changelog records), the last after {} ms",
                self.parts.len(),
                slowest.unwrap_or_default().as_millis()
            );
        }
        self.update_gauges();
        Ok(())
    }

    pub(super) fn revoke(&mut self, consumer: &Cons, tps: &[(String, i32)]) {
        if !tps.is_empty() {
            tracing::info!(partitions = %list_partitions(tps), "revoked {}", list_partitions(tps));
        }
        let deadline = Instant::now() + self.cx.settings.shutdown_timeout;
        // What is consumed and not applied is left to the next owner (it
        // is redelivered to it), so a rebalance under a backlog does not
        // wait for it.
        let mut left = 0;
        for tp in tps {
            if let Some(p) = self.parts.get_mut(tp) {
                left += p.drop_unapplied();
            }
        }
        if left > 0 {
            tracing::info!(
                messages = left,
                "{left} consumed messages of the revoked partitions were not applied: their next owner applies them"
            );
        }
        for tp in tps {
            // Settle what was applied, within the deadline; commit what is
            // done; then forget the partition.
            while Instant::now() < deadline {
                let busy = self.parts.get(tp).is_some_and(PartitionProcessor::busy);
                if !busy {
                    break;
                }
                self.step_partition(consumer, tp, true, &|| false);
                std::thread::sleep(Duration::from_millis(1));
            }
            self.commit_partition(consumer, tp);
            self.parts.remove(tp);
            lock(&self.cx.health.partitions).remove(tp);
            self.cx.metrics.forget_partition(&tp.0, tp.1);
        }
        self.update_gauges();
    }

    /// Background decoding: a few targets per loop iteration.
    fn decode_some(&mut self, consumer: &Cons, budget: Duration) {
        // Restoring comes first: readiness waits for it, decoding does not.
        if self.parts.values().any(|p| p.state.is_none()) {
            return;
        }
        let started = Instant::now();
        let spent = move || started.elapsed() >= budget;
        let keys: Vec<(String, i32)> = self
            .parts
            .iter()
            .filter(|(_, p)| !p.raw.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for tp in keys {
            let Some(mut part) = self.parts.remove(&tp) else {
                continue;
            };
            {
                let edge = self.edge(consumer);
                part.decode_some(&self.env(&edge), &spent);
            }
            self.parts.insert(tp, part);
            if spent() {
                break;
            }
        }
    }

    fn commit_partition(&self, consumer: &Cons, tp: &(String, i32)) {
        if let Err(e) = self.commit_partitions(consumer, std::slice::from_ref(tp)) {
            tracing::warn!("{e}");
        }
    }

    /// Commits what is done in `tps`, in one request (exactly-once: the
    /// open transaction).
    fn commit_partitions(&self, consumer: &Cons, tps: &[(String, i32)]) -> Result<(), String> {
        if self.out.eos {
            self.commit_txn(consumer);
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for tp in tps {
            if let Some(next) = self.parts.get(tp).and_then(|p| p.next_offset) {
                let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(next));
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| format!("committing offsets of {}: {e}", list_partitions(tps)))
    }

    /// Commits the open transaction (exactly-once).
    fn commit_txn(&self, consumer: &Cons) {
        self.out.commit_txn(
            consumer,
            self.parts.values(),
            &self.cx.health,
            self.cx.settings.shutdown_timeout,
        );
    }

    fn update_gauges(&self) {
        let restoring = self.parts.values().filter(|p| p.state.is_none()).count();
        let paused = self.parts.values().filter(|p| p.paused).count();
        self.cx
            .metrics
            .partitions(self.parts.len(), restoring, paused);
        self.cx
            .metrics
            .in_flight_bytes(self.parts.values().map(|p| p.bytes).sum());
    }

    /// Takes a consumed message into its partition's queue. Partitions
    /// still restoring share one bound, `max_in_flight_bytes` in all (each
    /// restored partition has that bound of its own): a replica taking
    /// over many partitions with backlogs holds about one partition's worth
    /// while it reads their changelogs (a message more, and one more for
    /// each partition assigned after the bound was reached). Once it is
    /// reached, every partition still restoring is paused at once
    /// (librdkafka drops what it fetched for them beyond and fetches it
    /// again on resume), until its restore ends.
    fn take(&mut self, consumer: &Cons, topic: &str, partition: i32, msg: Incoming) {
        let Some(part) = self.parts.get_mut(&(topic.to_string(), partition)) else {
            return;
        };
        part.on_message(&self.cx, msg, Instant::now());
        if part.state.is_some() {
            return;
        }
        let mut held = 0;
        let mut tpl = TopicPartitionList::new();
        for p in self.parts.values().filter(|p| p.state.is_none()) {
            held += p.bytes;
            if !p.paused {
                tpl.add_partition(&p.topic, p.partition);
            }
        }
        if held < self.cx.settings.max_in_flight_bytes || tpl.count() == 0 {
            return;
        }
        if consumer.pause(&tpl).is_ok() {
            for p in self.parts.values_mut().filter(|p| p.state.is_none()) {
                p.paused = true;
            }
        }
    }

    /// Steps one partition (see [`PartitionProcessor::step`]).
    fn step_partition(
        &mut self,
        consumer: &Cons,
        tp: &(String, i32),
        block: bool,
        spent: &dyn Fn() -> bool,
    ) {
        let Some(mut part) = self.parts.remove(tp) else {
            return;
        };
        {
            let edge = self.edge(consumer);
            part.step(&self.env(&edge), block, spent);
        }
        self.parts.insert(tp.clone(), part);
    }

    /// Steps every partition, in parallel on the rayon pool: partitions
    /// share nothing but the producer.
    fn step_all(&mut self, consumer: &Cons) {
        use rayon::prelude::*;
        let busy = self
            .parts
            .values()
            .filter(|p| p.state.is_some() && p.in_flight() > 0)
            .count();
        // Partitions with messages to apply: when fewer than the pool's
        // threads, their decodes start ahead so every core has work.
        let applying = self
            .parts
            .values()
            .filter(|p| p.state.is_some() && p.has_jobs())
            .count();
        if applying < rayon::current_num_threads() {
            for part in self.parts.values_mut() {
                if part.state.is_some() {
                    part.decode_ahead();
                }
            }
        }
        // The loop must come back to polling (rebalances, the stop): each
        // partition decodes at least one message per step, then no more
        // once the step has lasted STEP_BUDGET.
        let until = Instant::now() + STEP_BUDGET;
        let spent = move || Instant::now() >= until;
        if busy < 2 {
            let keys: Vec<(String, i32)> = self.parts.keys().cloned().collect();
            for tp in &keys {
                self.step_partition(consumer, tp, false, &spent);
            }
        } else {
            let mut parts: Vec<((String, i32), PartitionProcessor)> = self.parts.drain().collect();
            {
                let edge = self.edge(consumer);
                let env = self.env(&edge);
                parts
                    .par_iter_mut()
                    .for_each(|(_, part)| part.step(&env, false, &spent));
            }
            self.parts.extend(parts);
        }
        // Backpressure may have paused or resumed partitions.
        self.update_gauges();
    }

    /// Advances the SLA clock over every partition.
    fn tick(&mut self, consumer: &Cons) {
        self.for_each_part(consumer, PartitionProcessor::tick);
    }

    /// Re-attributes every partition after an ownership change.
    fn reattribute(&mut self, consumer: &Cons) {
        self.for_each_part(consumer, PartitionProcessor::reattribute);
    }

    /// Runs `f` on every partition in turn.
    fn for_each_part(&mut self, consumer: &Cons, f: impl Fn(&mut PartitionProcessor, &Env<'_>)) {
        let keys: Vec<(String, i32)> = self.parts.keys().cloned().collect();
        for tp in keys {
            if let Some(mut part) = self.parts.remove(&tp) {
                {
                    let edge = self.edge(consumer);
                    f(&mut part, &self.env(&edge));
                }
                self.parts.insert(tp, part);
            }
        }
    }

    fn state_gauges(&self) {
        self.cx.metrics.set_state(
            self.parts.values().filter_map(|p| p.state.as_ref()),
            Utc::now(),
        );
    }

    fn lag_gauges(&self) {
        let highs = lock(&self.cx.health.high_watermarks);
        for part in self.parts.values() {
            let tp = (part.topic.clone(), part.partition);
            if let (Some(high), Some(next)) = (highs.get(&tp), part.next_offset) {
                self.cx
                    .metrics
                    .lag(&part.topic, part.partition, high - next);
            }
        }
    }
}

pub struct Worker {
    /// Shared with every message read in place (see [`message`](super::message)).
    consumer: Arc<Cons>,
    core: Arc<Mutex<Core>>,
    restored_rx: Receiver<Restored>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    settings: ServiceSettings,
    ownership: Option<Arc<crate::ownership::Reloadable>>,
}

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A Kafka client could not be created or subscribed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// Restoring a partition's state failed.
    #[error("{0}")]
    Restore(String),
    /// An event could not be delivered.
    #[error("delivery failed: {0}")]
    Delivery(String),
}

impl Worker {
    /// Creates the clients (no network traffic until [`Worker::run`]).
    pub fn new(
        settings: &ServiceSettings,
        engine: Engine,
        max_report_bytes: u64,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        ownership: Option<Arc<crate::ownership::Reloadable>>,
    ) -> Result<Worker, RunError> {
        if let Some(own) = &ownership {
            metrics.set_teams(
                own.current().ownership().teams.iter().map(String::as_str),
                settings.max_teams,
            );
        }
        let base = client_config(settings);
        let mut pcfg = base.clone();
        for (k, v) in [
            ("enable.idempotence", "true"),
            ("linger.ms", "5"),
            ("queue.buffering.max.messages", "1000000"),
            // Changelog records and events are repetitive JSON: lz4 cuts
            // what the broker stores and what a restore reads several
            // times over, for little CPU.
            ("compression.type", "lz4"),
            // A ticket of many findings (one rule matching tens of
            // thousands of lines) lists them all, in its event and in its
            // changelog record: well past librdkafka's 1 MB default. The
            // topics custody creates take as much (see `topics`).
            ("message.max.bytes", crate::service::topics::LARGEST_MESSAGE),
        ] {
            if !settings.properties.contains_key(k) {
                pcfg.set(k, v);
            }
        }
        let eos = settings.delivery == crate::service::settings::Delivery::ExactlyOnce;
        if eos && !settings.properties.contains_key("transactional.id") {
            // Unique per process: fencing of a previous owner of the same
            // partitions goes through the consumer group (KIP-447).
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            pcfg.set(
                "transactional.id",
                format!("{}-{}-{nanos}", settings.group_id, std::process::id()),
            );
        }
        let producer: Prod = pcfg
            .create_with_context(Delivery {
                health: Arc::clone(&health),
            })
            .map_err(|e| RunError::Kafka(format!("producer: {e}")))?;
        if eos {
            producer
                .init_transactions(settings.shutdown_timeout.max(Duration::from_secs(30)))
                .map_err(|e| {
                    RunError::Kafka(format!(
                        "exactly-once needs a broker with transactions: {e}"
                    ))
                })?;
        }
        let (tx, rx) = mpsc::channel();
        let core = Arc::new(Mutex::new(Core {
            cx: Shared {
                settings: settings.clone(),
                settings_digest: engine.settings_digest(),
                engine,
                ownership: ownership.clone(),
                metrics: Arc::clone(&metrics),
                health: Arc::clone(&health),
                max_report_bytes,
                eos,
            },
            out: Output::new(producer, eos),
            parts: HashMap::new(),
            generation: 0,
            restores: tx,
            client_config: base.clone(),
        }));
        let mut ccfg = base;
        ccfg.set("group.id", &settings.group_id);
        for (k, v) in [
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("enable.auto.commit", "true"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            ("statistics.interval.ms", "5000"),
            // librdkafka stops fetching for this long (1 s by default) once
            // its queue holds queued.max.messages.kbytes; custody drains
            // that queue at every turn of its loop and bounds what it holds
            // itself (max_in_flight_*), so a long pause only idles it.
            ("fetch.queue.backoff.ms", "10"),
        ] {
            // enable.auto.offset.store must stay false: offsets are stored
            // only after acknowledgement.
            if k == "enable.auto.offset.store" || !settings.properties.contains_key(k) {
                ccfg.set(k, v);
            }
        }
        let consumer: Cons = ccfg
            .create_with_context(Rebalancer {
                core: Arc::clone(&core),
            })
            .map_err(|e| RunError::Kafka(format!("consumer: {e}")))?;
        Ok(Worker {
            consumer: Arc::new(consumer),
            core,
            restored_rx: rx,
            health,
            metrics,
            settings: settings.clone(),
            ownership,
        })
    }

    /// Runs until [`Health::stop`] is set or delivery fails; then stops
    /// fetching, finishes in-flight work, flushes and commits, each step
    /// bounded by the shutdown timeout.
    pub fn run(self) -> Result<(), RunError> {
        let topics: Vec<&str> = self
            .settings
            .reports_topics
            .iter()
            .map(String::as_str)
            .collect();
        self.consumer
            .subscribe(&topics)
            .map_err(|e| RunError::Kafka(format!("subscribe: {e}")))?;
        self.health.alive.store(true, Ordering::Relaxed);
        let mut last_tick = Instant::now();
        let mut last_gauges = Instant::now();
        let mut gauges_every = Duration::from_secs(1);
        let mut last_lag = Instant::now();
        let mut last_commit = Instant::now();
        let mut last_background = Instant::now();
        let mut result = Ok(());
        while !self.health.stop.load(Ordering::Relaxed) {
            if let Some(e) = self.health.failure() {
                result = Err(RunError::Delivery(e));
                break;
            }
            let busy = {
                let core = lock(&self.core);
                core.parts.values().any(|p| p.in_flight() > 0)
            };
            let wait = if busy { 2 } else { 50 };
            // Take what has arrived (up to a batch) before stepping, so
            // decodes of many messages run in parallel.
            let mut timeout = Duration::from_millis(wait);
            let mut polled = false;
            for _ in 0..256 {
                match self.consumer.poll(timeout) {
                    Some(Ok(m)) => {
                        polled = true;
                        let topic = m.topic().to_string();
                        let partition = m.partition();
                        let incoming = incoming(m, &self.consumer);
                        lock(&self.core).take(&self.consumer, &topic, partition, incoming);
                    }
                    Some(Err(e)) => {
                        tracing::warn!("consumer: {e}");
                        break;
                    }
                    None => break,
                }
                timeout = Duration::ZERO;
            }
            while let Ok(r) = self.restored_rx.try_recv() {
                if let Err(e) = lock(&self.core).restored(&self.consumer, r) {
                    result = Err(RunError::Restore(e));
                    self.health.stop.store(true, Ordering::Relaxed);
                }
            }
            {
                let mut core = lock(&self.core);
                core.step_all(&self.consumer);
                // Restored records not needed yet are decoded while the
                // loop has nothing else to do. While messages flow it would
                // hold them up (the loop and the pool wait for it), and
                // applying a message decodes its own target, so it then
                // gets a short slice a few times a second.
                let background = if !busy && !polled {
                    Duration::from_millis(20)
                } else if last_background.elapsed() >= Duration::from_millis(100) {
                    Duration::from_millis(5)
                } else {
                    Duration::ZERO
                };
                if !background.is_zero() {
                    last_background = Instant::now();
                    core.decode_some(&self.consumer, background);
                }
                if core.out.eos && last_commit.elapsed() >= Duration::from_millis(100) {
                    last_commit = Instant::now();
                    core.commit_txn(&self.consumer);
                }
                let mut changed = self.health.ownership_changed.swap(false, Ordering::Acquire);
                if self.health.reload.swap(false, Ordering::Relaxed) {
                    if let Some(own) = &self.ownership {
                        match own.reload() {
                            Ok(true) => changed = true,
                            Ok(false) => tracing::warn!(
                                "SIGHUP: ownership comes from the ownership topic; there are no files to reload"
                            ),
                            Err(e) => {
                                self.metrics.ownership_reload(false);
                                tracing::warn!("ownership reload refused: {e}");
                            }
                        }
                    }
                }
                if changed {
                    if let Some(own) = &self.ownership {
                        // The engine attributes through the same
                        // Reloadable, so only re-attribution is left.
                        self.metrics.ownership_reload(true);
                        self.metrics.set_teams(
                            own.current().ownership().teams.iter().map(String::as_str),
                            self.settings.max_teams,
                        );
                        core.reattribute(&self.consumer);
                    }
                }
                if last_tick.elapsed() >= self.settings.tick_interval {
                    last_tick = Instant::now();
                    core.tick(&self.consumer);
                }
                // Lag every second. The state's gauges too, but a state so
                // large that counting it takes longer than 50 ms is counted
                // less often, so the count never takes more than a
                // twentieth of the loop.
                if last_lag.elapsed() >= Duration::from_secs(1) {
                    last_lag = Instant::now();
                    core.lag_gauges();
                }
                if last_gauges.elapsed() >= gauges_every {
                    last_gauges = Instant::now();
                    core.state_gauges();
                    gauges_every = (last_gauges.elapsed() * 20).max(Duration::from_secs(1));
                }
            }
        }
        let stopped = self.shutdown();
        result.and(stopped)
    }

    /// Stops: fetching stops, what is consumed and not applied is dropped
    /// (redelivered after the restart), what is applied is settled (its
    /// events, then its changelog records acknowledged), the producer
    /// flushed and the offsets of what is done committed, each step within
    /// the shutdown timeout. Records of applied messages left
    /// unacknowledged, or a commit that fails, make the stop an error, so
    /// the exit code says it was not clean.
    fn shutdown(&self) -> Result<(), RunError> {
        let mut undone = None;
        let deadline = *lock(&self.core).out.stop_seen.get_or_init(Instant::now)
            + self.settings.shutdown_timeout;
        // Stop fetching.
        if let Ok(tpl) = self.consumer.assignment() {
            let _ = self.consumer.pause(&tpl);
        }
        // What is consumed and not applied is dropped: it is redelivered
        // after the restart, and nothing of it was produced. Waiting for it
        // under a backlog would outlast the deadline at every rolling
        // restart. What is applied is settled below.
        let left: usize = lock(&self.core)
            .parts
            .values_mut()
            .map(PartitionProcessor::drop_unapplied)
            .sum();
        if left > 0 {
            tracing::info!(
                messages = left,
                "stopping: {left} consumed messages not yet applied are left to be redelivered"
            );
        }
        if !self.health.failed.load(Ordering::Acquire) {
            loop {
                let mut core = lock(&self.core);
                let keys: Vec<(String, i32)> = core.parts.keys().cloned().collect();
                for tp in &keys {
                    core.step_partition(&self.consumer, tp, false, &|| false);
                }
                let busy = core.parts.values().any(PartitionProcessor::busy);
                drop(core);
                if !busy {
                    break;
                }
                if Instant::now() >= deadline {
                    undone = Some(format!(
                        "events or changelog records of applied messages not acknowledged within the shutdown timeout of {} s; those messages are redelivered after the restart",
                        self.settings.shutdown_timeout.as_secs()
                    ));
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        // Flush and commit what is done. Acknowledgements that arrive during
        // the flush settle after it: changelog records go out behind
        // acknowledged events (flushed in turn), then the offsets of what is
        // done are stored.
        let mut core = lock(&self.core);
        let mut flushed = core
            .out
            .producer
            .flush(deadline.saturating_duration_since(Instant::now()));
        core.for_each_part(&self.consumer, PartitionProcessor::settle_only);
        if flushed.is_ok() && core.out.producer.in_flight_count() > 0 {
            flushed = core
                .out
                .producer
                .flush(deadline.saturating_duration_since(Instant::now()));
            core.for_each_part(&self.consumer, PartitionProcessor::settle_only);
        }
        if let Err(e) = flushed {
            undone.get_or_insert(format!(
                "flushing the producer: {e}; {} records unacknowledged, their messages are redelivered after the restart",
                core.out.producer.in_flight_count()
            ));
        }
        if core.out.eos {
            if self.health.failed.load(Ordering::Acquire) {
                let _ = core
                    .out
                    .producer
                    .abort_transaction(self.settings.shutdown_timeout);
            } else {
                core.commit_txn(&self.consumer);
            }
        } else {
            let keys: Vec<(String, i32)> = core.parts.keys().cloned().collect();
            if let Err(e) = core.commit_partitions(&self.consumer, &keys) {
                undone.get_or_insert(e);
            }
        }
        drop(core);
        self.health.alive.store(false, Ordering::Relaxed);
        // Leaving the group runs the revoke callback, which finds nothing
        // left to do.
        self.consumer.unsubscribe();
        if let Some(e) = self.health.failure() {
            return Err(RunError::Delivery(e));
        }
        match undone {
            Some(e) => Err(RunError::Delivery(e)),
            None => Ok(()),
        }
    }
}

impl Drop for Worker {
    /// The messages still held keep the consumer (see [`Payload`]), which
    /// keeps the core through its context: they are dropped here, after a
    /// clean stop and after a panic alike, so the consumer closes (and
    /// leaves the group) with the worker. A decode still running on the
    /// pool holds its report too; it is waited for (up to the shutdown
    /// timeout, at most 5 s), so the close happens here rather than on a
    /// pool thread after the service is reported stopped.
    fn drop(&mut self) {
        lock(&self.core).parts.clear();
        let until = Instant::now() + self.settings.shutdown_timeout.min(Duration::from_secs(5));
        while Arc::strong_count(&self.consumer) > 1 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// "topic/0, topic/1" for a message.
fn list_partitions(tps: &[(String, i32)]) -> String {
    tps.iter()
        .map(|(t, p)| format!("{t}/{p}"))
        .collect::<Vec<_>>()
        .join(", ")
}
