//! What a processor is given (the shared parts, the time) and what it asks
//! of the Kafka edge ([`Effect`]), each record counted in an [`Ack`] that
//! the edge settles.

use super::super::health::{lock, Health};
use crate::config::service::ServiceSettings;
use crate::engine::Engine;
use crate::metrics::Metrics;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What every partition's processor reads and nothing changes while it
/// runs: the engine, the settings, the metrics.
pub struct Shared {
    pub settings: ServiceSettings,
    pub engine: Engine,
    /// The ownership the engine attributes with, when it can change.
    pub ownership: Option<Arc<crate::ownership::Reloadable>>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub max_report_bytes: u64,
    /// Exactly-once: everything goes through transactions, and offsets are
    /// the edge's to commit ([`PartitionProcessor::eos_frontier`]).
    pub eos: bool,
    /// The topic of the targets' parts of tickets across targets and its
    /// partition count, when a team's tickets are grouped so.
    pub ticket_parts: Option<(String, i32)>,
    /// The partition counts of the topics events go to (the findings
    /// topic, the ticket routes' topics), read at start. A report's finding
    /// events, and the events of its targets' own tickets, go to the
    /// partition of the same number as the report's, modulo their topic's
    /// count: a target's events all in one partition of each topic, in
    /// order (a target's reports all come in one partition), and a step's
    /// events in one batch per topic, not one batch per event. A topic
    /// missing here (its count could not be read) leaves them to the
    /// producer's partitioner, which spreads them by their key (the
    /// fingerprint, the ticket key).
    pub event_partitions: BTreeMap<String, i32>,
    /// [`Engine::settings_digest`], for the changelog's last scan records.
    pub settings_digest: String,
}

impl Shared {
    /// See [`crate::ownership::Reloadable::generation`]; 0 when the
    /// ownership cannot change.
    pub fn ownership_generation(&self) -> u64 {
        self.ownership.as_ref().map_or(0, |o| o.generation())
    }

    /// The partition of `topic` that the events of a report read from
    /// partition `from` go to (see [`Shared::event_partitions`]); `None`
    /// leaves them to the producer's partitioner.
    pub fn event_partition(&self, topic: &str, from: i32) -> Option<i32> {
        self.event_partitions
            .get(topic)
            .filter(|n| **n > 0)
            .map(|n| from.rem_euclid(*n))
    }
}

/// What a failure costs: the message, a wait, or the service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The message can never be applied (bad metadata, a report that does
    /// not decode, a record the broker refuses for good): it goes to the
    /// dead-letter topic with `reason`, and the partition goes on.
    #[error("{error}")]
    Poison { reason: &'static str, error: String },
    /// It may succeed later (the producer's queue full): wait and try
    /// again, within the shutdown timeout once a stop is asked.
    #[error("{0}")]
    Retryable(String),
    /// The service cannot go on (a state that cannot be restored or kept,
    /// a record lost): it stops without storing further offsets, and the
    /// restart restores what was committed and gets the messages again.
    #[error("{0}")]
    Fatal(String),
}

/// What the Kafka edge does for a processor, asked in order.
#[derive(Debug)]
pub enum Effect<'a> {
    /// Produce a record. `ack` counts it already: the edge settles it when
    /// the broker acknowledges or refuses the record ([`Ack::delivered`],
    /// [`Ack::refused`], [`Ack::lost`]), or at once when it cannot be sent.
    Produce {
        topic: &'a str,
        partition: Option<i32>,
        key: &'a [u8],
        payload: Option<&'a [u8]>,
        headers: Vec<(&'a str, Option<&'a [u8]>)>,
        ack: &'a Arc<Ack>,
    },
    /// Store the offset of the last message done, every message before it
    /// done too (at-least-once; the edge commits stored offsets).
    StoreOffset {
        topic: &'a str,
        partition: i32,
        done: i64,
    },
    /// Stop fetching the partition.
    Pause { topic: &'a str, partition: i32 },
    /// Fetch the partition again.
    Resume { topic: &'a str, partition: i32 },
    /// The service cannot go on ([`Failure::Fatal`], or a failure the
    /// processor cannot handle itself): it stops without storing further
    /// offsets.
    Fail(Failure),
}

/// The Kafka edge, as a processor sees it: it carries out effects.
pub trait Edge: Sync {
    /// Carries out `effect`; for a pause or a resume, whether it took.
    fn effect(&self, effect: Effect<'_>) -> bool;
}

/// What a processor's step is given: the shared parts, the edge, and the
/// time.
pub struct Env<'a> {
    pub cx: &'a Shared,
    pub edge: &'a dyn Edge,
    /// The wall clock now: the time of a message that has none, and of
    /// re-attributions.
    pub wall: DateTime<Utc>,
    /// The monotonic clock now: chunked scans time out by it.
    pub now: Instant,
}

impl Env<'_> {
    pub(super) fn fail(&self, e: Failure) {
        self.edge.effect(Effect::Fail(e));
    }

    /// Counts a message taken through, by its outcome.
    pub(super) fn count_message(&self, outcome: &str) {
        self.cx.metrics.message(outcome);
        self.cx
            .health
            .applied_messages
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Produces one record, counted in `ack`.
    pub(super) fn produce(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: Option<&[u8]>,
        headers: Vec<(&str, Option<&[u8]>)>,
        ack: &Arc<Ack>,
    ) {
        ack.add(1);
        self.edge.effect(Effect::Produce {
            topic,
            partition,
            key,
            payload,
            headers,
            ack,
        });
    }
}

/// Counts the records a message caused that are not yet acknowledged: the
/// processor counts each record it asks to produce, the edge settles it.
#[derive(Debug, Default)]
pub struct Ack {
    remaining: AtomicI64,
    failed: AtomicBool,
    /// Why a record was refused for good: the first such refusal.
    refused: Mutex<Option<String>>,
}

impl Ack {
    pub(super) fn add(&self, n: i64) {
        self.remaining.fetch_add(n, Ordering::AcqRel);
    }
    pub(super) fn done(&self) -> bool {
        self.remaining.load(Ordering::Acquire) <= 0
    }
    pub(super) fn refusal(&self) -> Option<String> {
        lock(&self.refused).clone()
    }
    pub(super) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// A record acknowledged by the broker.
    pub fn delivered(&self) {
        self.add(-1);
    }

    /// A record the broker refused for good (too large, invalid): sending
    /// it again can never succeed, so it costs the report that caused it
    /// (dead-lettered), not the service.
    pub fn refused(&self, why: String) {
        lock(&self.refused).get_or_insert(why);
        self.add(-1);
    }

    /// A record lost (not sent, or not delivered for another reason): the
    /// message that caused it is never settled, and is redelivered after
    /// the restart.
    pub fn lost(&self) {
        self.failed.store(true, Ordering::Release);
        self.add(-1);
    }
}
