//! The partitions the consumer loop holds, each with its processor
//! ([`PartitionProcessor`]): assigned and revoked by rebalances, restored,
//! given what is consumed, stepped (in parallel on the rayon pool when
//! several have work) with their effects carried out by a [`KafkaEdge`],
//! and committed.

use super::context::Cons;
use super::edge::{KafkaEdge, Output};
use super::restore::{restore, Restored, RESTORE_CLIENTS};
use crate::service::health::{lock, Health};
use crate::service::partition::{DecodeResult, Env, Incoming, PartitionProcessor, Shared};
use chrono::Utc;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a step of every partition may go on decoding (see
/// [`PartitionProcessor::step`]) before the loop polls again.
const STEP_BUDGET: Duration = Duration::from_millis(100);

/// Everything the loop and the rebalance callbacks share.
pub struct Core {
    pub(super) cx: Shared,
    pub(super) out: Output,
    pub(super) parts: HashMap<(String, i32), PartitionProcessor>,
    pub(super) generation: u64,
    pub(super) restores: mpsc::Sender<Restored>,
    pub(super) decodes: Decodes,
    pub(super) client_config: ClientConfig,
}

/// Decodes run ahead on the rayon pool (see
/// [`PartitionProcessor::decode_ahead`]), their results coming back to be
/// handed to their partitions.
pub(super) struct Decodes {
    tx: mpsc::Sender<((String, i32), DecodeResult)>,
    rx: mpsc::Receiver<((String, i32), DecodeResult)>,
}

impl Decodes {
    pub(super) fn new() -> Decodes {
        let (tx, rx) = mpsc::channel();
        Decodes { tx, rx }
    }

    /// Starts the decodes `part` hands out on the pool.
    fn start(&self, tp: &(String, i32), part: &mut PartitionProcessor) {
        for task in part.decode_ahead() {
            let tx = self.tx.clone();
            let tp = tp.clone();
            rayon::spawn(move || {
                let _ = tx.send((tp, task.run()));
            });
        }
    }

    /// Hands the results back that have come, to the partitions still
    /// held (a revoked one's are let go).
    fn deliver(&self, parts: &mut HashMap<(String, i32), PartitionProcessor>) {
        while let Ok((tp, result)) = self.rx.try_recv() {
            if let Some(part) = parts.get_mut(&tp) {
                part.on_decoded(result);
            }
        }
    }
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

    pub(super) fn restored(&mut self, consumer: &Cons, r: Restored) -> Result<(), String> {
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
        if self.parts.values().all(|p| p.restored()) {
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
                self.step_partition(consumer, tp, &|| false);
                std::thread::sleep(Duration::from_millis(1));
            }
            self.commit_partition(consumer, tp);
            self.parts.remove(tp);
            lock(&self.cx.health.partitions).remove(tp);
            self.cx.metrics.forget_partition(&tp.0, tp.1);
        }
        self.update_gauges();
    }

    /// Background decoding: a few targets per loop iteration, for
    /// `budget`. `idle`: no message waits, so every core decodes (the
    /// partitions in parallel); otherwise this thread alone does, and the
    /// pool goes on with the decodes of the reports ahead.
    pub(super) fn decode_some(&mut self, consumer: &Cons, budget: Duration, idle: bool) {
        // Restoring comes first: readiness waits for it, decoding does not.
        if !self.undecoded() || self.parts.values().any(|p| !p.restored()) {
            return;
        }
        let started = Instant::now();
        let spent = move || started.elapsed() >= budget;
        // Once the budget is spent, each partition left returns at once.
        self.each_part(
            consumer,
            idle,
            |p| !p.raw.is_empty(),
            |p, env| {
                p.decode_some(env, &spent);
            },
        );
        self.update_gauges();
    }

    /// Whether some partition holds restored targets not decoded yet.
    pub(super) fn undecoded(&self) -> bool {
        self.parts.values().any(|p| !p.raw.is_empty())
    }

    pub(super) fn commit_partition(&self, consumer: &Cons, tp: &(String, i32)) {
        if let Err(e) = self.commit_partitions(consumer, std::slice::from_ref(tp)) {
            tracing::warn!("{e}");
        }
    }

    /// Commits what is done in `tps`, in one request (exactly-once: the
    /// open transaction).
    pub(super) fn commit_partitions(
        &self,
        consumer: &Cons,
        tps: &[(String, i32)],
    ) -> Result<(), String> {
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
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => Ok(()),
            // The group moved on (a rebalance under way, this member gone):
            // the partitions are no longer this instance's to commit. Nothing
            // is lost: their next owner gets the messages again, and passes
            // over those the changelog already holds.
            Err(e) if group_moved_on(&e) => {
                tracing::warn!(
                    partitions = %list_partitions(tps),
                    "offsets of {} not committed, the group moved on ({e}): their next owner passes over what the changelog holds",
                    list_partitions(tps)
                );
                Ok(())
            }
            Err(e) => Err(format!(
                "committing offsets of {}: {e}",
                list_partitions(tps)
            )),
        }
    }

    /// Commits the open transaction (exactly-once).
    pub(super) fn commit_txn(&self, consumer: &Cons) {
        self.out.commit_txn(
            consumer,
            self.parts.values(),
            &self.cx.health,
            self.cx.settings.shutdown_timeout,
        );
    }

    pub(super) fn update_gauges(&self) {
        let restoring = self.parts.values().filter(|p| !p.restored()).count();
        let paused = self.parts.values().filter(|p| p.paused).count();
        self.cx
            .metrics
            .partitions(self.parts.len(), restoring, paused);
        self.cx
            .metrics
            .in_flight_bytes(self.parts.values().map(|p| p.bytes).sum());
        self.cx
            .metrics
            .targets_undecoded(self.parts.values().map(|p| p.raw.targets()).sum());
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
    pub(super) fn take(&mut self, consumer: &Cons, topic: &str, partition: i32, msg: Incoming) {
        let Some(part) = self.parts.get_mut(&(topic.to_string(), partition)) else {
            return;
        };
        part.on_message(&self.cx, msg, Instant::now());
        if part.restored() {
            return;
        }
        let mut held = 0;
        let mut tpl = TopicPartitionList::new();
        for p in self.parts.values().filter(|p| !p.restored()) {
            held += p.bytes;
            if !p.paused {
                tpl.add_partition(&p.topic, p.partition);
            }
        }
        if held < self.cx.settings.max_in_flight_bytes || tpl.count() == 0 {
            return;
        }
        if consumer.pause(&tpl).is_ok() {
            for p in self.parts.values_mut().filter(|p| !p.restored()) {
                p.paused = true;
            }
        }
    }

    /// Steps one partition (see [`PartitionProcessor::step`]).
    pub(super) fn step_partition(
        &mut self,
        consumer: &Cons,
        tp: &(String, i32),
        spent: &dyn Fn() -> bool,
    ) {
        self.decodes.deliver(&mut self.parts);
        let Some(mut part) = self.parts.remove(tp) else {
            return;
        };
        {
            let edge = self.edge(consumer);
            part.step(&self.env(&edge), spent);
        }
        self.parts.insert(tp.clone(), part);
    }

    /// Steps every partition, in parallel on the rayon pool: partitions
    /// share nothing but the producer.
    pub(super) fn step_all(&mut self, consumer: &Cons) {
        let busy = self
            .parts
            .values()
            .filter(|p| p.restored() && p.in_flight() > 0)
            .count();
        // Partitions with messages to apply: when fewer than the pool's
        // threads, their decodes start ahead so every core has work.
        let applying = self
            .parts
            .values()
            .filter(|p| p.restored() && p.has_jobs())
            .count();
        self.decodes.deliver(&mut self.parts);
        if applying < rayon::current_num_threads() {
            for (tp, part) in self.parts.iter_mut() {
                if part.restored() {
                    self.decodes.start(tp, part);
                }
            }
        }
        // The loop must come back to polling (rebalances, the stop): each
        // partition decodes at least one message per step, then no more
        // once the step has lasted STEP_BUDGET.
        let until = Instant::now() + STEP_BUDGET;
        let spent = move || Instant::now() >= until;
        // Only partitions a step would change are stepped: with hundreds
        // assigned, most have nothing to do at any one turn of the loop.
        if busy < 2 {
            let keys: Vec<(String, i32)> = self
                .parts
                .iter()
                .filter(|(_, p)| p.wants_step())
                .map(|(tp, _)| tp.clone())
                .collect();
            for tp in &keys {
                self.step_partition(consumer, tp, &spent);
            }
        } else {
            // In place: the processors stay in the map, which is neither
            // emptied nor rebuilt at every turn.
            self.each_part(
                consumer,
                true,
                PartitionProcessor::wants_step,
                |part, env| part.step(env, &spent),
            );
        }
        // Backpressure may have paused or resumed partitions.
        self.update_gauges();
    }

    /// Advances the SLA clock over every partition.
    pub(super) fn tick(&mut self, consumer: &Cons) {
        self.for_each_part(consumer, PartitionProcessor::tick);
        self.update_gauges();
    }

    /// Re-attributes every partition after an ownership change.
    pub(super) fn reattribute(&mut self, consumer: &Cons) {
        self.for_each_part(consumer, PartitionProcessor::reattribute);
        self.update_gauges();
    }

    /// Runs `f` on every partition, on the pool (see [`Core::each_part`]).
    pub(super) fn for_each_part(
        &mut self,
        consumer: &Cons,
        f: impl Fn(&mut PartitionProcessor, &Env<'_>) + Sync,
    ) {
        self.each_part(consumer, true, |_| true, f);
    }

    /// Runs `f` on every partition `which` picks, in place, under one
    /// clock reading: on the pool when `parallel`, else on this thread.
    /// Partitions share nothing but what a step already shares, so the
    /// decoding of restored targets, the clock's pass and a
    /// re-attribution, which hold up the loop while they run, can take
    /// every core rather than one.
    fn each_part(
        &mut self,
        consumer: &Cons,
        parallel: bool,
        which: impl Fn(&PartitionProcessor) -> bool + Sync,
        f: impl Fn(&mut PartitionProcessor, &Env<'_>) + Sync,
    ) {
        use rayon::prelude::*;
        let edge = KafkaEdge {
            output: &self.out,
            consumer,
            health: &self.cx.health,
            settings: &self.cx.settings,
        };
        let env = Env {
            cx: &self.cx,
            edge: &edge,
            wall: Utc::now(),
            now: Instant::now(),
        };
        if parallel {
            self.parts
                .par_iter_mut()
                .filter(|(_, p)| which(p))
                .for_each(|(_, p)| f(p, &env));
        } else {
            self.parts
                .values_mut()
                .filter(|p| which(p))
                .for_each(|p| f(p, &env));
        }
    }

    pub(super) fn state_gauges(&mut self) {
        // Evicted targets are counted from their summaries.
        let now = Utc::now();
        let mut pass = self.cx.metrics.state_pass(now);
        for p in self.parts.values_mut() {
            p.summarize(&mut pass, now);
        }
        pass.finish();
    }

    pub(super) fn lag_gauges(&self) {
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

/// A commit refused because the group's membership changed under it.
fn group_moved_on(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::IllegalGeneration
                | C::RebalanceInProgress
                | C::UnknownMemberId
                | C::FencedInstanceId
                | C::AssignmentLost
        )
    )
}

/// "topic/0, topic/1" for a message.
fn list_partitions(tps: &[(String, i32)]) -> String {
    tps.iter()
        .map(|(t, p)| format!("{t}/{p}"))
        .collect::<Vec<_>>()
        .join(", ")
}
