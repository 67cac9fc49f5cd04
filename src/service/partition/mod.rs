//! One partition's processing, as a synchronous state machine: messages
//! in, effects out, with no Kafka client, async runtime or clock inside.
//! The Kafka edge ([`crate::kafka`]) feeds it what it consumes
//! ([`PartitionProcessor::on_message`]), the changelog it restored
//! ([`PartitionProcessor::on_restore`]), the acknowledgements of what it
//! produced (through each record's [`Ack`]), the decodes it ran ahead for
//! it ([`PartitionProcessor::decode_ahead`] hands them out as
//! [`DecodeTask`]s, [`PartitionProcessor::on_decoded`] takes them back) and
//! the time ([`PartitionProcessor::step`], [`PartitionProcessor::tick`]);
//! it carries out the [`Effect`]s asked of it, in order.
//!
//! Ordering of writes for one partition, which keeps at-least-once honest
//! when the process dies at any point:
//!
//! 1. a message's finding and ticket events are produced when it is
//!    applied;
//! 2. its changelog records (serialized when it was applied) are produced
//!    only when the events of it and of every earlier message of the
//!    partition are acknowledged, so the changelog never holds a change
//!    whose events may be lost;
//! 3. its offset is stored once its changelog records are acknowledged.
//!
//! A crash between 1 and 3 redelivers the message; the restored state does
//! not have its change, so the same events (same ids) are produced again
//! and consumers drop them. Under exactly-once the edge commits
//! everything in transactions, up to [`PartitionProcessor::eos_frontier`].
//!
//! - `effect`: what a processor is given and what it asks of the edge;
//! - `message`: a consumed message, its payload read in place or owned;
//! - `intake`: a message sorted into a job (metadata, envelopes, decisions)
//!   and chunked scans put together;
//! - `rescan`: what is remembered of each target's last scan, so a report
//!   sent again is not decoded again, and the decode itself;
//! - `apply`: jobs applied in offset order, events emitted, dead letters;
//! - `settle`: changelog records behind acknowledged events, offsets behind
//!   changelog records, backpressure, chunk timeouts;
//! - `cache`: the decoded targets kept within a budget, the others
//!   evicted into a compact store and decoded again when needed.

mod apply;
mod cache;
mod effect;
mod intake;
mod message;
mod rescan;
mod settle;
#[cfg(test)]
mod tests;

pub use effect::{Ack, Edge, Effect, Env, Failure, Shared};
pub use message::{Bytes, InPlace, Incoming, Payload};
pub use rescan::{DecodeResult, DecodeTask};

use super::changelog::{self, Restorer};
use super::meta::MessageMeta;
use crate::engine::Output;
use crate::lifecycle::State;
use rescan::{known, last_scan, Decode, Known, LastScan};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// A decision taken from a message.
enum Decided {
    /// About one finding.
    One(Box<crate::lifecycle::DecisionRecord>),
    /// A VEX document's statements, about the target the key names.
    Vex(
        Box<crate::normalize::vex::VexDocument>,
        crate::model::Target,
    ),
}

/// A message on its way to the state.
enum Job {
    /// A report to decode and apply.
    Decoding {
        msg: Incoming,
        meta: MessageMeta,
        decode: Decode,
        /// Earlier chunks of the same scan: released with this one, or
        /// dead-lettered with it.
        held: Vec<HeldChunk>,
    },
    /// To be dead-lettered.
    Poison {
        msg: Incoming,
        reason: &'static str,
        error: String,
        /// Earlier chunks of the same scan, dead-lettered with it.
        held: Vec<HeldChunk>,
    },
    /// A decision: about a finding, or a VEX document about a target.
    Decision { msg: Incoming, decision: Decided },
    /// A chunk that waits for the rest of its scan.
    Held { msg: Incoming, ack: Arc<Ack> },
}

/// Work whose records are in flight.
struct Pending {
    /// The message, or `None` for a clock tick or re-attribution.
    offset: Option<i64>,
    timestamp: Option<i64>,
    events: Arc<Ack>,
    /// Changelog records not yet produced (produced when every earlier
    /// message's events are acknowledged).
    changelog: Option<Vec<changelog::Record>>,
    changelog_ack: Arc<Ack>,
    /// Chunk acks released when this is done.
    held: Vec<Arc<Ack>>,
    /// A held chunk: done only when released.
    hold: bool,
    bytes: usize,
    /// The report, kept until its events are acknowledged: should the
    /// broker refuse one for good, the report is dead-lettered.
    source: Option<Incoming>,
    /// That dead letter, when one was sent.
    dead_letter: Option<Arc<Ack>>,
}

impl Pending {
    /// Events and changelog records all acknowledged (for a held chunk:
    /// released by its scan's last chunk), and a dead letter sent for a
    /// refused event too.
    fn complete(&self) -> bool {
        self.changelog.is_none()
            && self.changelog_ack.done()
            && (self.hold || self.events.done())
            && self.dead_letter.as_ref().is_none_or(|a| a.done())
            && !self.changelog_ack.has_failed()
    }
}

/// A chunk that waits for the rest of its scan: the message as it came,
/// kept to be dead-lettered should the scan fail, and the ack that holds
/// its offset until the scan is done.
struct HeldChunk {
    msg: Incoming,
    ack: Arc<Ack>,
}

/// Chunks of one scan collected so far.
struct ChunkBuf {
    /// Each chunk's payload by its index (shared with its message).
    parts: Vec<Option<Bytes>>,
    /// Bytes of the distinct chunks: the scan's size so far.
    bytes: usize,
    /// Every chunk message that arrived, a publisher's retried duplicate
    /// too, in offset order.
    held: Vec<HeldChunk>,
    first: Instant,
}

pub struct PartitionProcessor {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) changelog_topic: String,
    pub(crate) generation: u64,
    pub(crate) state: Option<State>,
    /// Changelog records read at restore and not decoded yet, by target:
    /// decoded when the target is first needed, or in the background.
    pub(crate) raw: changelog::RawLog,
    /// Writes the changelog records, in the configured format (set at
    /// restore), with each target's dictionary.
    writer: changelog::Writer,
    /// Targets evicted from `state` (see `cache`).
    pub(crate) cold: changelog::ColdStore,
    /// The decoded targets in order of use.
    hot: cache::Lru,
    /// What the gauges count of each evicted target.
    summaries: HashMap<String, crate::metrics::TargetSummary>,
    jobs: VecDeque<Job>,
    pending: VecDeque<Pending>,
    chunks: HashMap<(String, String), ChunkBuf>,
    /// By target spec.
    last_scans: HashMap<String, LastScan>,
    /// Targets whose restored records did not decode, with the error.
    broken: HashMap<String, String>,
    pub(crate) bytes: usize,
    pub(crate) paused: bool,
    /// Offset of the next message to process (for commits and lag).
    pub(crate) next_offset: Option<i64>,
    /// Offset of the last message applied (exactly-once commits).
    last_applied: Option<i64>,
    /// The offset the changelog said was applied last, at restore, while
    /// no later message has come: a redelivered message before it is
    /// passed over, and this one is applied again without its events (see
    /// The changelog's last whole group, at restore, while no later
    /// message has come: a redelivered message up to the one it names is
    /// passed over (see [`changelog::Applied`]).
    replay: Option<changelog::Applied>,
    /// The message being applied is the one a head written by an earlier
    /// version names: its events were delivered before the crash, only
    /// its records are written.
    quiet: bool,
    /// When the partition was assigned (the restore's duration).
    pub(crate) assigned: Instant,
}

impl PartitionProcessor {
    pub fn in_flight(&self) -> usize {
        self.jobs.len() + self.pending.len()
    }

    /// Forgets the messages consumed and not yet applied (a stop, a
    /// revoke): they are redelivered to whoever consumes the partition
    /// next, and nothing of them was produced. What is applied stays, to
    /// be settled and committed. Returns how many were forgotten.
    pub fn drop_unapplied(&mut self) -> usize {
        let n = self.jobs.len();
        for job in self.jobs.drain(..) {
            let len = match &job {
                Job::Decoding { msg, .. }
                | Job::Poison { msg, .. }
                | Job::Held { msg, .. }
                | Job::Decision { msg, .. } => msg.len(),
            };
            self.bytes = self.bytes.saturating_sub(len);
        }
        n
    }

    /// Hands out every decode not started yet, for the edge to run ahead
    /// (on a thread pool, when fewer partitions have work than it has
    /// threads) and hand back through [`PartitionProcessor::on_decoded`].
    /// A message whose decode is out is applied once its result is back.
    pub fn decode_ahead(&mut self) -> Vec<DecodeTask> {
        // Targets of the messages before, whose scans will have changed
        // what is known of the last scan by the time a message is applied.
        let mut before: HashSet<String> = HashSet::new();
        let mut tasks = Vec::new();
        for job in &mut self.jobs {
            let Job::Decoding {
                decode, meta, msg, ..
            } = job
            else {
                continue;
            };
            let target = meta.target.as_ref().map(ToString::to_string);
            let known = match &target {
                None => Known::Nothing,
                Some(t) if before.contains(t) => {
                    Known::Pending(last_scan(&self.last_scans, meta).map(|l| l.digests))
                }
                Some(_) => known(&self.last_scans, meta),
            };
            if let Some(t) = target {
                before.insert(t);
            }
            if let Some(input) = decode.take_lazy() {
                *decode = Decode::Away;
                tasks.push(DecodeTask {
                    generation: self.generation,
                    offset: msg.offset,
                    input,
                    known,
                });
            }
        }
        tasks
    }

    /// A decode handed out by [`PartitionProcessor::decode_ahead`], done.
    /// A result for another assignment of the partition, or for a message
    /// no longer held (dropped at a revoke), is let go.
    pub fn on_decoded(&mut self, result: DecodeResult) {
        if result.generation != self.generation {
            return;
        }
        let waiting = self.jobs.iter_mut().find_map(|job| match job {
            Job::Decoding { msg, decode, .. }
                if msg.offset == result.offset && matches!(decode, Decode::Away) =>
            {
                Some(decode)
            }
            _ => None,
        });
        if let Some(decode) = waiting {
            *decode = Decode::Done(result.prepared);
        }
    }

    /// A partition just assigned, its state still to restore.
    pub fn new(
        topic: &str,
        partition: i32,
        changelog_topic: &str,
        generation: u64,
        now: Instant,
    ) -> PartitionProcessor {
        PartitionProcessor {
            topic: topic.to_string(),
            partition,
            changelog_topic: changelog_topic.to_string(),
            generation,
            state: None,
            raw: changelog::RawLog::new(),
            writer: changelog::Writer::default(),
            cold: changelog::ColdStore::new(),
            hot: cache::Lru::default(),
            summaries: HashMap::new(),
            jobs: VecDeque::new(),
            pending: VecDeque::new(),
            chunks: HashMap::new(),
            last_scans: HashMap::new(),
            broken: HashMap::new(),
            bytes: 0,
            paused: false,
            next_offset: None,
            last_applied: None,
            replay: None,
            quiet: false,
            assigned: now,
        }
    }

    /// The partition's changelog, read to its end: the records, and the
    /// last scan records that hold. Messages taken meanwhile are applied
    /// from the next step on; a paused partition is resumed.
    pub fn on_restore(
        &mut self,
        env: &Env<'_>,
        raw: changelog::RawLog,
        scans: Vec<(String, changelog::ScanRecord)>,
    ) {
        let ownership = env.cx.ownership_generation();
        self.state = Some(State::new());
        self.writer = changelog::Writer::new(env.cx.settings.changelog_format);
        self.replay = raw.applied().filter(|a| a.offset >= 0);
        if raw.cut() > 0 {
            tracing::info!(
                topic = %self.topic,
                partition = self.partition,
                records = raw.cut(),
                "{} changelog records of a step cut short by a crash are left out; its message is applied again",
                raw.cut()
            );
        }
        self.raw = raw;
        // What the changelog knows of each target's last scan, when it was
        // applied under the settings in force. The ownership may have
        // changed since: the target's re-attribution, when it is decoded,
        // forgets the scan if any finding moved.
        self.last_scans = scans
            .into_iter()
            .filter(|(_, scan)| scan.settings == env.cx.settings_digest)
            .filter_map(|(target, scan)| Some((target, LastScan::restored(scan, ownership)?)))
            .collect();
        // A chunked scan's clock starts now: its missing chunks could not
        // come while the partition was paused for what the restore held.
        for c in self.chunks.values_mut() {
            c.first = env.now;
        }
        // A resume that fails leaves the partition paused, for backpressure
        // to resume later (it resumes restored partitions only).
        self.paused = !env.edge.effect(Effect::Resume {
            topic: &self.topic,
            partition: self.partition,
        });
    }

    /// Takes a consumed message into the queue, sorted into a job (see
    /// `intake`). It is applied by a later [`PartitionProcessor::step`],
    /// once the state is restored.
    pub fn on_message(&mut self, cx: &Shared, msg: Incoming, now: Instant) {
        // A message of a partition still restoring waits for the restore,
        // out of its fetch buffer (see [`Payload`]).
        let msg = if self.state.is_none() {
            msg.owned()
        } else {
            msg
        };
        self.bytes += msg.len();
        let job = self.classify(msg, cx, now);
        self.jobs.push_back(job);
    }

    /// Whether messages wait to be applied.
    pub fn has_jobs(&self) -> bool {
        !self.jobs.is_empty()
    }

    /// Whether [`PartitionProcessor::step`] would do anything: it has
    /// messages to apply or settle, chunks to time out, or is paused (and
    /// may resume). A step of any other partition changes nothing.
    pub fn wants_step(&self) -> bool {
        !self.jobs.is_empty() || !self.pending.is_empty() || !self.chunks.is_empty() || self.paused
    }

    /// Whether the state is restored.
    pub fn restored(&self) -> bool {
        self.state.is_some()
    }

    /// One step: applies what is decoded, in order (up to a message whose
    /// decode is out with the edge), times out incomplete chunked scans,
    /// produces changelog records behind acknowledged events and stores
    /// offsets; then pauses or resumes the partition by the work in flight.
    /// Decodes the step runs itself (see [`Decode`]) start only while
    /// `spent` says no, past the first.
    pub fn step(&mut self, env: &Env<'_>, spent: &dyn Fn() -> bool) {
        if self.state.is_some() {
            self.apply_ready(env, spent);
            self.expire_chunks(env);
            self.settle(env);
            self.evict_over_budget(env);
        }
        // Restoring too: what it holds meanwhile is bounded.
        self.backpressure(env);
    }

    /// Advances the SLA clock to `env.wall`: on the decoded targets, and
    /// on the evicted ones whose first deadline has come (decoded again
    /// for it).
    pub fn tick(&mut self, env: &Env<'_>) {
        if let Err(e) = self.materialize_all(env) {
            env.fail(e);
        }
        for target in self.cold.due(env.wall) {
            if let Err(e) = self.materialize(env, &target) {
                env.fail(e);
            }
        }
        if let Some(state) = self.state.as_mut() {
            let out = env.cx.engine.tick(state, env.wall);
            if !out.findings.is_empty() || !out.tickets.is_empty() {
                // A rescan would find these records as the tick left
                // them, which no rescan decoded yet has seen.
                self.last_scans.clear();
            }
            self.emit_step(env, out);
        }
        self.evict_over_budget(env);
    }

    /// Re-attributes every target after an ownership change, decoding the
    /// evicted ones one at a time (evicted again past the budget).
    pub fn reattribute(&mut self, env: &Env<'_>) {
        if let Err(e) = self.materialize_all(env) {
            env.fail(e);
        }
        // Also covered by the ownership generation; re-attribution skips
        // records a rescan would still re-attribute (false positives), so
        // nothing remembered survives it.
        self.last_scans.clear();
        let mut targets: BTreeSet<String> = self
            .state
            .as_ref()
            .map(|s| s.targets.keys().cloned().collect())
            .unwrap_or_default();
        targets.extend(self.cold.targets().map(String::from));
        for spec in &targets {
            if let Err(e) = self.materialize(env, spec) {
                env.fail(e);
                continue;
            }
            self.reattribute_target(env, spec);
            self.evict_over_budget(env);
        }
    }

    /// Decodes restored records of targets no message needed yet, while
    /// `spent` says no. Returns false when none are left.
    pub fn decode_some(&mut self, env: &Env<'_>, spent: &dyn Fn() -> bool) -> bool {
        while !spent() {
            let Some(t) = self.raw.any_target() else {
                return false;
            };
            if let Err(e) = self.materialize(env, &t) {
                env.fail(e);
                return false;
            }
            self.evict_over_budget(env);
        }
        !self.raw.is_empty()
    }

    /// The offset up to which the partition's messages are applied (what
    /// an exactly-once transaction commits): the first held chunk of an
    /// incomplete scan or the first message not yet applied, else the one
    /// after the last applied.
    pub fn eos_frontier(&self) -> Option<i64> {
        let held = self
            .pending
            .iter()
            .filter(|p| p.hold && !p.changelog_ack.done())
            .filter_map(|p| p.offset)
            .min();
        let unapplied = self.jobs.front().map(|j| j.msg().offset);
        match (held, unapplied) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (Some(a), None) | (None, Some(a)) => Some(a),
            (None, None) => self.last_applied.map(|o| o + 1),
        }
    }

    /// Whether applied work is still unsettled. Held chunks, and messages
    /// done but for an offset that waits for them, do not count: waiting
    /// for them would wait for chunks that may not come before a deadline.
    pub fn busy(&self) -> bool {
        self.state.is_some()
            && self.in_flight() > 0
            && !(self.jobs.iter().all(|j| matches!(j, Job::Held { .. }))
                && self.pending.iter().all(|x| x.hold || x.complete()))
    }

    /// Decodes the restored records of `target`, if any are left. A
    /// target whose records did not decode stays an error: its state is
    /// incomplete, and nothing may be applied to it.
    fn materialize(&mut self, env: &Env<'_>, target: &str) -> Result<(), Failure> {
        if let Some(e) = self.broken.get(target) {
            return Err(Failure::Fatal(e.clone()));
        }
        self.hot.touch(target);
        // An evicted target: it was decoded before, under the ownership in
        // force (a change since re-attributed it), and its records are
        // written in the writer's format.
        if self.thaw(target)? {
            env.cx.metrics.state_thawed();
            return Ok(());
        }
        let topic = &self.changelog_topic;
        let marks = self.raw.take_marks(target);
        let Some(decoded) = self
            .raw
            .take(target, |recs| changelog::decode_target(&recs, topic))
        else {
            // No record of the target, but maybe dictionary records of a
            // group cut short: no id of theirs is given again.
            self.writer.restored(target, None, &marks);
            return Ok(());
        };
        let decoded = match decoded {
            Ok(d) => d,
            Err(e) => {
                self.hot.forget(target);
                self.broken.insert(target.to_string(), e.clone());
                return Err(Failure::Fatal(e));
            }
        };
        self.writer.restored(target, Some(&decoded), &marks);
        let mut r = Restorer::resume(self.state.take().unwrap_or_default(), target);
        for p in decoded.parsed {
            r.apply_parsed(p);
        }
        self.state = Some(r.finish());
        // Under the JSON format, binary records of the target are
        // rewritten as JSON now, so that rolling back to a version that
        // reads only JSON needs no traffic to each target.
        if let Some(records) = self
            .state
            .as_ref()
            .and_then(|state| self.writer.migrate(state, target))
        {
            tracing::info!(
                target = %target,
                records = records.len(),
                "changelog records of a target rewritten as JSON (changelog_format = \"json\")"
            );
            self.emit(env, None, Output::default(), records, Vec::new(), 0);
        }
        // The ownership in force may not be the one the state was written
        // under (changed while custody was down, or by the instance that
        // held the partition before).
        self.reattribute_target(env, target);
        Ok(())
    }

    /// Re-attributes one target of a partition under the ownership in
    /// force: `reassigned` events for findings whose team changed, and
    /// changelog records for every record that changed, silent changes of
    /// explanation included.
    fn reattribute_target(&mut self, env: &Env<'_>, spec: &str) {
        let (Some(state), Ok(target)) = (self.state.as_mut(), spec.parse::<crate::model::Target>())
        else {
            return;
        };
        let mut out = Output::default();
        let touched = env
            .cx
            .engine
            .reattribute_target(state, &target, env.wall, &mut out);
        if touched.findings.is_empty() && touched.tickets.is_empty() {
            return;
        }
        self.last_scans.remove(spec);
        let records = self
            .writer
            .records(state, spec, &touched.findings, Some(&touched.tickets));
        self.emit(env, None, out, records, Vec::new(), 0);
    }

    /// Decodes every restored record of a partition.
    fn materialize_all(&mut self, env: &Env<'_>) -> Result<(), Failure> {
        while let Some(t) = self.raw.any_target() {
            self.materialize(env, &t)?;
            self.evict_over_budget(env);
        }
        Ok(())
    }

    /// Emits a step that no message caused (tick, re-attribution).
    fn emit_step(&mut self, env: &Env<'_>, out: Output) {
        if out.findings.is_empty() && out.tickets.is_empty() {
            return;
        }
        let Some(state) = self.state.as_ref() else {
            return;
        };
        let mut by_target: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in &out.findings {
            by_target
                .entry(e.target.to_string())
                .or_default()
                .push(e.fingerprint.clone());
        }
        for e in &out.tickets {
            by_target.entry(e.target.to_string()).or_default();
        }
        let mut records = Vec::new();
        for (target, fps) in &by_target {
            records.extend(self.writer.records(state, target, fps, None));
        }
        self.emit(env, None, out, records, Vec::new(), 0);
    }
}

impl Job {
    /// The target the job is about, when it is known before it is applied.
    fn target(&self) -> Option<String> {
        match self {
            Job::Decoding { meta, .. } => meta.target.as_ref().map(ToString::to_string),
            Job::Decision {
                decision: Decided::One(d),
                ..
            } => Some(d.target.to_string()),
            Job::Decision {
                decision: Decided::Vex(_, t),
                ..
            } => Some(t.to_string()),
            Job::Poison { .. } | Job::Held { .. } => None,
        }
    }

    /// The message the job is of.
    fn msg(&self) -> &Incoming {
        match self {
            Job::Decoding { msg, .. }
            | Job::Poison { msg, .. }
            | Job::Held { msg, .. }
            | Job::Decision { msg, .. } => msg,
        }
    }
}
