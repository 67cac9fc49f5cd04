//! The consumer loop: one thread owns the consumer; reports decode on the
//! rayon pool and are applied to their partition's state in offset order;
//! events and state changelog records are produced; offsets are stored only
//! once everything a message caused is acknowledged.
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
//! and consumers drop them.

use super::changelog::{self, Restorer};
use super::meta::{self, header, MessageMeta};
use super::settings::ServiceSettings;
use crate::engine::{Engine, Output};
use crate::lifecycle::State;
use crate::metrics::Metrics;
use crate::model::ScanMeta;
use crate::normalize::{self, DecodeError, Format, Report};
use chrono::{DateTime, TimeZone, Utc};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What the HTTP endpoints and the front ends read.
#[derive(Default)]
pub struct Health {
    /// The consumer loop is running.
    pub alive: AtomicBool,
    /// Assigned partitions, restoring or not: `(topic, partition) -> restored`.
    pub partitions: Mutex<BTreeMap<(String, i32), bool>>,
    /// A subscription exists and at least one rebalance happened.
    pub joined: AtomicBool,
    /// Set to stop the loop.
    pub stop: AtomicBool,
    /// Set to reload the ownership configuration.
    pub reload: AtomicBool,
    /// Set when a new ownership version was put in force (read from the
    /// ownership topic): what is known is re-attributed.
    pub ownership_changed: AtomicBool,
    /// Report messages fully processed (offsets stored).
    pub done_messages: AtomicUsize,
    /// Report messages applied to the state, or dead-lettered: counted
    /// when their events are sent, before they are acknowledged.
    pub applied_messages: AtomicUsize,
    /// Set when an event could not be delivered: the loop stops without
    /// storing further offsets.
    pub failed: AtomicBool,
    /// The last delivery error.
    pub last_error: Mutex<Option<String>>,
    /// High watermarks of assigned partitions, from the client's statistics.
    pub high_watermarks: Mutex<HashMap<(String, i32), i64>>,
}

impl Health {
    /// The run's failure, if an event could not be delivered.
    fn delivery_error(&self) -> Option<RunError> {
        self.failed
            .load(Ordering::Acquire)
            .then(|| RunError::Delivery(lock(&self.last_error).clone().unwrap_or_default()))
    }

    /// Ready: joined, every assigned partition restored, not failed.
    pub fn ready(&self) -> Result<(), String> {
        if self.failed.load(Ordering::Relaxed) {
            return Err("event delivery failed".into());
        }
        if !self.joined.load(Ordering::Acquire) {
            return Err("not yet joined the consumer group".into());
        }
        let parts = lock(&self.partitions);
        let restoring: Vec<String> = parts
            .iter()
            .filter(|(_, restored)| !**restored)
            .map(|((t, p), _)| format!("{t}/{p}"))
            .collect();
        if restoring.is_empty() {
            Ok(())
        } else {
            Err(format!("restoring {}", restoring.join(", ")))
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts the records a message caused that are not yet acknowledged.
#[derive(Debug, Default)]
pub struct Ack {
    remaining: AtomicI64,
    failed: AtomicBool,
    /// Why a record was refused for good (see [`refused_for_good`]): the
    /// first such refusal.
    refused: Mutex<Option<String>>,
}

impl Ack {
    fn add(&self, n: i64) {
        self.remaining.fetch_add(n, Ordering::AcqRel);
    }
    fn done(&self) -> bool {
        self.remaining.load(Ordering::Acquire) <= 0
    }
    fn refuse(&self, why: String) {
        lock(&self.refused).get_or_insert(why);
    }
    fn refused(&self) -> Option<String> {
        lock(&self.refused).clone()
    }
}

/// A produce error that refuses the record for good (too large for the
/// broker or the topic, invalid): sending it again can never succeed, so
/// it costs the report that caused it, not the service. Any other error
/// (brokers unreachable, a timeout, no authorization) stops the service,
/// and the report is redelivered after the restart.
fn refused_for_good(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::PolicyViolation
        )
    )
}

/// The producer's context: delivery reports settle [`Ack`]s.
pub struct Delivery {
    health: Arc<Health>,
}

impl ClientContext for Delivery {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        say_librdkafka(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", "{error}: {reason}");
    }
}

impl ProducerContext for Delivery {
    type DeliveryOpaque = Box<Arc<Ack>>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Self::DeliveryOpaque) {
        if let Err((e, m)) = result {
            if refused_for_good(e) {
                ack.refuse(format!("{} refused a record: {e}", m.topic()));
                ack.remaining.fetch_sub(1, Ordering::AcqRel);
                return;
            }
            ack.failed.store(true, Ordering::Release);
            self.health.failed.store(true, Ordering::Release);
            *lock(&self.health.last_error) = Some(format!("producing to {}: {e}", m.topic()));
        }
        ack.remaining.fetch_sub(1, Ordering::AcqRel);
    }
}

type Prod = ThreadedProducer<Delivery>;

/// The consumer's context: rebalances hand partitions to and from the core.
pub struct Rebalancer {
    core: Arc<Mutex<Core>>,
}

impl ClientContext for Rebalancer {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        say_librdkafka(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", "{error}: {reason}");
    }

    fn stats(&self, stats: rdkafka::Statistics) {
        let health = Arc::clone(&lock(&self.core).health);
        let mut highs = lock(&health.high_watermarks);
        for (name, topic) in stats.topics {
            for (p, part) in topic.partitions {
                if p >= 0 && part.hi_offset >= 0 {
                    highs.insert((name.clone(), p), part.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for Rebalancer {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let tps: Vec<(String, i32)> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect();
            let mut core = lock(&self.core);
            core.revoke(consumer, &tps);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let tps: Vec<(String, i32)> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect();
            let mut core = lock(&self.core);
            core.assign(consumer, &tps);
            // After the partitions are listed as restoring: readiness must
            // not see the group joined and nothing to restore.
            core.health.joined.store(true, Ordering::Release);
        }
    }
}

type Cons = BaseConsumer<Rebalancer>;

/// A report's bytes, shared by the message, its decode and its scan id.
type Bytes = Arc<Payload>;

/// A consumed message's payload: read in place in librdkafka's fetch
/// buffer, or owned.
///
/// Copying every report out of the fetch buffer took a quarter of the
/// consuming thread's time at full speed (200 KB reports, the copy into
/// fresh pages), time in which the pool waited for the next batch. A
/// payload that may be kept long is owned instead (see
/// [`Incoming::owned`]): a message read in place keeps its whole fetch
/// response in memory.
enum Payload {
    Fetched(Fetched),
    Owned(Box<[u8]>),
}

/// A message kept as consumed, with the consumer it came from.
struct Fetched {
    /// Borrowed from `*consumer`, which the `Arc` beside it keeps alive and
    /// in place for as long as the message lives. Declared first, so it
    /// is dropped before that `Arc`.
    msg: BorrowedMessage<'static>,
    _consumer: Arc<Cons>,
}

impl Fetched {
    fn new(m: BorrowedMessage<'_>, consumer: &Arc<Cons>) -> Fetched {
        // SAFETY: `m` borrows from the consumer in `consumer`'s allocation
        // (it was polled from `**consumer`). The clone of that `Arc` held
        // beside it keeps the consumer alive and unmoved until the message
        // is dropped, and the message is dropped first (field order), so
        // the lifetime it claims is never outlived. Only the lifetime
        // parameter changes; the layout is the same.
        let msg =
            unsafe { std::mem::transmute::<BorrowedMessage<'_>, BorrowedMessage<'static>>(m) };
        Fetched {
            msg,
            _consumer: Arc::clone(consumer),
        }
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Payload::Fetched(f) => f.msg.payload().unwrap_or_default(),
            Payload::Owned(b) => b,
        }
    }
}

impl Payload {
    fn owned(bytes: impl Into<Box<[u8]>>) -> Bytes {
        Arc::new(Payload::Owned(bytes.into()))
    }
}

/// A consumed message: its payload read in place (see [`Payload`]), the
/// rest copied out.
#[derive(Clone)]
struct Incoming {
    offset: i64,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    /// Shared with the decoder, and kept for a dead letter.
    payload: Option<Bytes>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Incoming {
    fn from(m: BorrowedMessage<'_>, consumer: &Arc<Cons>) -> Incoming {
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        let offset = m.offset();
        let timestamp = m.timestamp().to_millis();
        let key = m.key().map(<[u8]>::to_vec);
        let payload = m
            .payload()
            .is_some()
            .then(|| Arc::new(Payload::Fetched(Fetched::new(m, consumer))));
        Incoming {
            offset,
            timestamp,
            key,
            payload,
            headers,
        }
    }

    /// The message with its payload copied out of the fetch buffer, for a
    /// message that may wait long (a chunk waiting for the rest of its
    /// scan, a message of a partition still restoring): read in place, it
    /// would keep a whole fetch response in memory, out of the in-flight
    /// bounds' sight.
    fn owned(mut self) -> Incoming {
        if let Some(p) = &self.payload {
            if matches!(**p, Payload::Fetched(_)) {
                self.payload = Some(Payload::owned(&***p));
            }
        }
        self
    }

    fn len(&self) -> usize {
        self.payload.as_ref().map_or(0, |p| p.len()) + self.key.as_ref().map_or(0, Vec::len)
    }

    /// The message's time (the time of its processing when it has none):
    /// the time its scan or decision is applied at.
    fn time(&self) -> DateTime<Utc> {
        self.timestamp
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .unwrap_or_else(Utc::now)
    }
}

/// BLAKE3 hash of a report's bytes (of the joined chunks, for a chunked
/// scan): a cryptographic hash, so no report can be made to pass for
/// another, and fast (a 200 KB report hashes in a quarter of SHA-256's
/// time on this project's machines).
type Digest = [u8; 32];

/// What a report is recognized by: the digest of its bytes and, for a
/// format that has one, the digest of what its decoder reads
/// ([`normalize::sarif::content_digest`]: a SARIF log restamped with a new
/// run time is the same report). The content digest is computed for a
/// target's first scan and when a report's bytes differ from its target's
/// last scan's, not for a report sent again byte for byte; once a rescan
/// of a target was recognized by it, its bytes differing, the target's
/// next report goes by it alone and its bytes are not hashed (see
/// [`Known::by_content`]).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Digests {
    bytes: Option<Digest>,
    content: Option<Digest>,
}

impl Digests {
    /// Whether a report with `new` is the report these digests are of.
    fn same_report(&self, new: &Digests) -> bool {
        self.bytes.is_some_and(|b| new.bytes == Some(b))
            || new.content.is_some_and(|c| self.content == Some(c))
    }
}

/// A decoded report, its scan id and its digests.
struct DecodedReport {
    report: Report,
    scan_id: ScanId,
    digests: Digests,
}

type Decoded = Result<DecodedReport, DecodeError>;

/// What a decode gives: the report decoded, or its input undecoded, with
/// its digest, when the digest is the one the decode was told its target's
/// last scan had (see [`LastScan`]), or when the decode was told to leave
/// that question to the apply.
enum Prepared {
    Decoded(Decoded),
    Undecoded(Box<DecodeInput>, Digests),
}

/// What a decode knows of its target's last scan.
#[derive(Clone, Copy)]
enum Known {
    /// Nothing remembered: the report is decoded.
    Nothing,
    /// The digests of its report.
    Last(Digests),
    /// Not yet: a message before this one, not applied yet, scans the same
    /// target. The decode only hashes, and the apply decides. With the
    /// digests of the target's last scan as known when the decode started:
    /// they say which digest the apply will most likely compare.
    Pending(Option<Digests>),
}

impl Known {
    /// Whether the report is to be recognized by its content digest alone:
    /// the target's last scan was recognized by it, its bytes differing
    /// (a scanner that restamps every report), so this report's bytes
    /// would differ too, and hashing them would only add a fifth to the
    /// content digest's cost (a 200 KB report: 30 us of 150). A report
    /// decoded (its content changed) has both digests taken, and the
    /// target's next report is compared by its bytes first again.
    fn by_content(self) -> bool {
        match self {
            Known::Last(d) | Known::Pending(Some(d)) => d.bytes.is_none() && d.content.is_some(),
            Known::Nothing | Known::Pending(None) => false,
        }
    }
}

/// A scan's id: the publisher's, or, when it gave none, derived from the
/// report's bytes. Deriving hashes the whole report (with SHA-256, as
/// `custody process` does), so it is done only when an event carries the
/// id: a rescan that changes nothing never needs it.
enum ScanId {
    Given(String),
    Content(Bytes),
}

/// What a partition remembers of a target's last scan, so that a rescan
/// sending the same report again is applied without decoding it (see
/// [`Engine::rescan_unchanged`]): the report's digest and the metadata that
/// shapes how it is applied. It is forgotten when anything else changes
/// the target's state (another scan, a decision, an SLA or ownership
/// change). It is kept in the changelog too ([`changelog::ScanRecord`]),
/// so a restore or a rebalance does not forget it.
struct LastScan {
    digests: Digests,
    format: Option<Format>,
    scanner: Option<String>,
    complete: bool,
    /// Findings the report held (for the findings-consumed count).
    findings: usize,
    /// The ownership generation read before the scan was applied: a
    /// report sent again under another ownership is applied in full, as
    /// its findings may be attributed otherwise.
    ownership: u64,
    /// The fingerprints it observed.
    observed: Vec<String>,
    /// Read from the changelog, and its attributions not yet checked
    /// against the ownership in force.
    restored: bool,
}

impl LastScan {
    /// Remembers how a rescan was recognized: by its content digest, its
    /// bytes differing, the target's scanner restamps its reports, and its
    /// next report is judged by the content digest alone (see
    /// [`Known::by_content`]). Recognized by its bytes, it changes nothing.
    fn recognized_by(&mut self, digests: &Digests) {
        if !(self.digests.bytes.is_some() && self.digests.bytes == digests.bytes) {
            self.digests.bytes = None;
        }
    }

    /// The changelog's record of this scan.
    fn record(&self, settings: &str) -> changelog::ScanRecord {
        let hex = |d: Option<Digest>| d.map(|d| crate::fingerprint::hex(&d));
        changelog::ScanRecord {
            bytes: hex(self.digests.bytes),
            content: hex(self.digests.content),
            format: self.format.map(|f| f.name().to_string()),
            scanner: self.scanner.clone(),
            complete: self.complete,
            findings: self.findings,
            observed: self.observed.clone(),
            settings: settings.to_string(),
        }
    }

    /// A scan as the changelog recorded it, under the ownership
    /// `generation`; `None` when the record does not read back.
    fn restored(scan: changelog::ScanRecord, ownership: u64) -> Option<LastScan> {
        let digest = |h: Option<String>| -> Option<Option<Digest>> {
            let Some(h) = h else {
                return Some(None);
            };
            let mut d = [0u8; 32];
            hex::decode_to_slice(h, &mut d).ok()?;
            Some(Some(d))
        };
        let format = match scan.format {
            Some(name) => Some(Format::from_name(&name)?),
            None => None,
        };
        Some(LastScan {
            digests: Digests {
                bytes: digest(scan.bytes)?,
                content: digest(scan.content)?,
            },
            format,
            scanner: scan.scanner,
            complete: scan.complete,
            findings: scan.findings,
            ownership,
            observed: scan.observed,
            restored: true,
        })
    }

    /// Whether a message with `meta` applies its report the same way.
    fn same_meta(&self, meta: &MessageMeta) -> bool {
        self.format == meta.format && self.scanner == meta.scanner && self.complete == meta.complete
    }
}

/// What is remembered of the last scan of `meta`'s target, if a report
/// sent again would be applied the same way.
fn known(last: &HashMap<String, LastScan>, meta: &MessageMeta) -> Known {
    last_scan(last, meta).map_or(Known::Nothing, |l| Known::Last(l.digests))
}

/// Whether a message with `meta` and `digests` sends its target's last
/// scan again.
fn remembered(last: &HashMap<String, LastScan>, meta: &MessageMeta, digests: &Digests) -> bool {
    last_scan(last, meta).is_some_and(|l| l.digests.same_report(digests))
}

/// The last scan of the target `meta` names, if its report sent again
/// would be applied the same way.
fn last_scan<'a>(last: &'a HashMap<String, LastScan>, meta: &MessageMeta) -> Option<&'a LastScan> {
    let target = meta.target.as_ref()?;
    last.get(&target.to_string()).filter(|l| l.same_meta(meta))
}

/// A report's decode. It normally runs when its partition is stepped, on
/// the thread that then applies it: the report is decoded, applied and
/// freed while it is in that core's cache, and partitions give the
/// parallelism. When fewer partitions have work than the pool has threads,
/// decodes are started ahead on the pool, so one busy partition still
/// decodes on every core.
enum Decode {
    /// Not started.
    Lazy(Box<DecodeInput>),
    /// Running on the rayon pool.
    Spawned(Receiver<Prepared>),
    /// Taken by the step.
    Taken,
}

impl Decode {
    /// The input of a decode not started yet, which is then taken.
    fn take_lazy(&mut self) -> Option<Box<DecodeInput>> {
        match std::mem::replace(self, Decode::Taken) {
            Decode::Lazy(input) => Some(input),
            other => {
                *self = other;
                None
            }
        }
    }

    /// Starts a lazy decode on the rayon pool.
    fn spawn(&mut self, known: Known) {
        if let Some(input) = self.take_lazy() {
            let (tx, rx) = mpsc::sync_channel(1);
            rayon::spawn(move || {
                let _ = tx.send(input.run(known));
            });
            *self = Decode::Spawned(rx);
        }
    }
}

/// What a decode needs.
struct DecodeInput {
    format: Option<Format>,
    scan_id: Option<String>,
    bytes: Bytes,
    ctx: normalize::DecodeContext,
}

impl DecodeInput {
    /// Hashes the report and decodes it, unless it is the target's last
    /// scan again or that is not known yet.
    fn run(self: Box<Self>, known: Known) -> Prepared {
        let by_content = known.by_content();
        let bytes: Option<Digest> = (!by_content).then(|| blake3::hash(&self.bytes).into());
        let mut digests = Digests {
            bytes,
            content: None,
        };
        match known {
            // Sent again byte for byte: nothing else to compute.
            Known::Last(d) if bytes.is_some() && d.bytes == bytes => {
                return Prepared::Undecoded(self, digests);
            }
            // The apply compares; it takes the content digest itself
            // should the bytes not be its target's last scan's (most often
            // they are: a rescan sends the same report again).
            Known::Pending(_) if !by_content => return Prepared::Undecoded(self, digests),
            _ => {}
        }
        // Every other case needs the content digest. A target's first scan
        // (or the first after one whose record did not hold at a restore)
        // takes it too, so that a second scan restamped is recognized
        // rather than decoded again (a fourth of a SARIF decode's cost,
        // against a whole decode).
        digests.content = self.content_digest();
        match known {
            Known::Last(d) if d.same_report(&digests) => Prepared::Undecoded(self, digests),
            Known::Nothing | Known::Last(_) => Prepared::Decoded((*self).decode(digests)),
            Known::Pending(_) => Prepared::Undecoded(self, digests),
        }
    }

    /// The digest of what the decoder reads, for a format that has one.
    fn content_digest(&self) -> Option<Digest> {
        let format = match self.format {
            Some(f) => f,
            None => normalize::sniff::sniff(&self.bytes).ok()?,
        };
        match format {
            Format::Sarif => normalize::sarif::content_digest(&self.bytes),
            _ => None,
        }
    }

    /// Decodes the report. A report decoded becomes its target's last
    /// scan, and the next report is compared by its bytes first (a target
    /// goes by content alone only once a rescan was recognized by it, its
    /// bytes differing): the digest of the bytes is taken if it was not.
    fn decode(self, mut digests: Digests) -> Decoded {
        if digests.bytes.is_none() {
            digests.bytes = Some(blake3::hash(&self.bytes).into());
        }
        let (_, report) = normalize::decode(&self.bytes, self.format, &self.ctx)?;
        let scan_id = match self.scan_id {
            Some(id) => ScanId::Given(id),
            None => ScanId::Content(self.bytes),
        };
        Ok(DecodedReport {
            report,
            scan_id,
            digests,
        })
    }
}

/// A message on its way to the state.
enum Job {
    /// Decoding on the rayon pool.
    Decoding {
        msg: Incoming,
        meta: MessageMeta,
        /// In a mutex only so partitions can be stepped in parallel.
        decode: Mutex<Decode>,
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
    /// A decision about a finding.
    Decision {
        msg: Incoming,
        decision: Box<crate::lifecycle::DecisionRecord>,
    },
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
            && !self.changelog_ack.failed.load(Ordering::Acquire)
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

struct Part {
    topic: String,
    partition: i32,
    changelog_topic: String,
    generation: u64,
    state: Option<State>,
    /// Changelog records read at restore and not decoded yet, by target:
    /// decoded when the target is first needed, or in the background.
    raw: changelog::RawLog,
    jobs: VecDeque<Job>,
    pending: VecDeque<Pending>,
    chunks: HashMap<(String, String), ChunkBuf>,
    /// By target spec.
    last_scans: HashMap<String, LastScan>,
    /// Targets whose restored records did not decode, with the error.
    broken: HashMap<String, String>,
    bytes: usize,
    paused: bool,
    /// Offset of the next message to process (for commits and lag).
    next_offset: Option<i64>,
    /// Offset of the last message applied (exactly-once commits).
    last_applied: Option<i64>,
    /// The offset the changelog said was applied last, at restore, while
    /// no later message has come: a redelivered message before it is
    /// passed over, and this one is applied again without its events (see
    /// [`changelog::Applied`]).
    replay: Option<i64>,
    /// The message being applied is the one [`Part::replay`] names: its
    /// events were delivered before the crash, only its records are
    /// written.
    quiet: bool,
    /// When the partition was assigned (the restore's duration).
    assigned: Instant,
}

impl Part {
    fn in_flight(&self) -> usize {
        self.jobs.len() + self.pending.len()
    }

    /// Forgets the messages consumed and not yet applied (a stop, a
    /// revoke): they are redelivered to whoever consumes the partition
    /// next, and nothing of them was produced. What is applied stays, to
    /// be settled and committed. Returns how many were forgotten.
    fn drop_unapplied(&mut self) -> usize {
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

    /// Starts every waiting decode on the rayon pool.
    fn decode_ahead(&mut self) {
        // Targets of the messages before, whose scans will have changed
        // what is known of the last scan by the time a message is applied.
        let mut before: HashSet<String> = HashSet::new();
        for job in &mut self.jobs {
            if let Job::Decoding { decode, meta, .. } = job {
                let Some(target) = meta.target.as_ref().map(ToString::to_string) else {
                    lock(decode).spawn(Known::Nothing);
                    continue;
                };
                let known = if before.contains(&target) {
                    Known::Pending(last_scan(&self.last_scans, meta).map(|l| l.digests))
                } else {
                    known(&self.last_scans, meta)
                };
                lock(decode).spawn(known);
                before.insert(target);
            }
        }
    }
}

/// Everything the loop and the rebalance callbacks share.
pub struct Core {
    settings: ServiceSettings,
    engine: Engine,
    /// The ownership the engine attributes with, when it can change.
    ownership: Option<Arc<crate::ownership::Reloadable>>,
    producer: Prod,
    parts: HashMap<(String, i32), Part>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    generation: u64,
    restores: mpsc::Sender<Restored>,
    client_config: ClientConfig,
    max_report_bytes: u64,
    /// Exactly-once: everything goes through transactions.
    eos: bool,
    /// A transaction is open.
    txn_open: Mutex<bool>,
    /// [`Engine::settings_digest`], for the changelog's last scan records.
    settings_digest: String,
    /// When the stop was first seen: every shutdown step, a wait for room
    /// in the producer's queue included, ends by this plus the shutdown
    /// timeout.
    stop_seen: std::sync::OnceLock<Instant>,
}

struct Restored {
    tp: (String, i32),
    generation: u64,
    /// The records, and the last scan records that hold (parsed on the
    /// restore's thread).
    result: Result<(changelog::RawLog, Vec<(String, changelog::ScanRecord)>), String>,
}

impl Core {
    fn assign(&mut self, consumer: &Cons, tps: &[(String, i32)]) {
        let mut tpl = TopicPartitionList::new();
        let mut batch = Vec::new();
        for (topic, partition) in tps {
            self.generation += 1;
            let changelog_topic = self.settings.changelog_for(topic);
            let part = Part {
                topic: topic.clone(),
                partition: *partition,
                changelog_topic: changelog_topic.clone(),
                generation: self.generation,
                state: None,
                raw: changelog::RawLog::new(),
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
                assigned: Instant::now(),
            };
            self.parts.insert((topic.clone(), *partition), part);
            lock(&self.health.partitions).insert((topic.clone(), *partition), false);
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
            let metrics = Arc::clone(&self.metrics);
            let deadline = self.settings.shutdown_timeout.max(Duration::from_secs(600));
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
        let ownership = self.ownership_generation();
        let Some(part) = self.parts.get_mut(&r.tp) else {
            return Ok(());
        };
        if part.generation != r.generation {
            return Ok(());
        }
        let (raw, scans) = r.result.map_err(|e| {
            format!(
                "restoring {}/{} from {}: {e}",
                r.tp.0, r.tp.1, part.changelog_topic
            )
        })?;
        part.state = Some(State::new());
        part.replay = raw.applied();
        part.raw = raw;
        // What the changelog knows of each target's last scan, when it was
        // applied under the settings in force. The ownership may have
        // changed since: the target's re-attribution, when it is decoded,
        // forgets the scan if any finding moved.
        part.last_scans = scans
            .into_iter()
            .filter(|(_, scan)| scan.settings == self.settings_digest)
            .filter_map(|(target, scan)| Some((target, LastScan::restored(scan, ownership)?)))
            .collect();
        // A chunked scan's clock starts now: its missing chunks could not
        // come while the partition was paused for what the restore held.
        let now = Instant::now();
        for c in part.chunks.values_mut() {
            c.first = now;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&r.tp.0, r.tp.1);
        // A resume that fails leaves the partition paused, for backpressure
        // to resume later (it resumes restored partitions only).
        part.paused = consumer.resume(&tpl).is_err();
        lock(&self.health.partitions).insert(r.tp.clone(), true);
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

    fn revoke(&mut self, consumer: &Cons, tps: &[(String, i32)]) {
        if !tps.is_empty() {
            tracing::info!(partitions = %list_partitions(tps), "revoked {}", list_partitions(tps));
        }
        let deadline = Instant::now() + self.settings.shutdown_timeout;
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
                let busy = match self.parts.get(tp) {
                    Some(p) => p.state.is_some() && p.in_flight() > 0 && !only_held(p),
                    None => false,
                };
                if !busy {
                    break;
                }
                self.step_partition(consumer, tp, true, None);
                std::thread::sleep(Duration::from_millis(1));
            }
            self.commit_partition(consumer, tp);
            self.parts.remove(tp);
            lock(&self.health.partitions).remove(tp);
            self.metrics.forget_partition(&tp.0, tp.1);
        }
        self.update_gauges();
    }

    /// Decodes the restored records of `target`, if any are left. A
    /// target whose records did not decode stays an error: its state is
    /// incomplete, and nothing may be applied to it.
    fn materialize(&self, part: &mut Part, target: &str) -> Result<(), String> {
        if let Some(e) = part.broken.get(target) {
            return Err(e.clone());
        }
        let topic = &part.changelog_topic;
        let Some(parsed) = part.raw.take(target, |recs| {
            let parse = |r: &changelog::RawRecord<'_>| {
                changelog::parse(r.key, r.value)
                    .map_err(|e| format!("{topic} offset {}: {e}", r.offset))
            };
            if recs.len() > 256 {
                use rayon::prelude::*;
                recs.par_iter().map(parse).collect::<Vec<_>>()
            } else {
                recs.iter().map(parse).collect()
            }
        }) else {
            return Ok(());
        };
        let mut r = Restorer::resume(part.state.take().unwrap_or_default());
        for p in parsed {
            match p {
                Ok(p) => r.apply_parsed(p),
                Err(e) => {
                    part.state = Some(r.finish());
                    part.broken.insert(target.to_string(), e.clone());
                    return Err(e);
                }
            }
        }
        part.state = Some(r.finish());
        // The ownership in force may not be the one the state was written
        // under (changed while custody was down, or by the instance that
        // held the partition before).
        self.reattribute_target(part, target, Utc::now());
        Ok(())
    }

    /// Re-attributes one target of a partition under the ownership in
    /// force: `reassigned` events for findings whose team changed, and
    /// changelog records for every record that changed, silent changes of
    /// explanation included.
    fn reattribute_target(&self, part: &mut Part, spec: &str, now: DateTime<Utc>) {
        let (Some(state), Ok(target)) = (part.state.as_mut(), spec.parse::<crate::model::Target>())
        else {
            return;
        };
        let mut out = Output::default();
        let touched = self
            .engine
            .reattribute_target(state, &target, now, &mut out);
        if touched.findings.is_empty() && touched.tickets.is_empty() {
            return;
        }
        part.last_scans.remove(spec);
        let records = changelog::records(state, spec, &touched.findings, Some(&touched.tickets));
        self.emit(part, None, out, records, Vec::new(), 0);
    }

    /// Decodes every restored record of a partition.
    fn materialize_all(&self, part: &mut Part) -> Result<(), String> {
        while let Some(t) = part.raw.any_target() {
            self.materialize(part, &t)?;
        }
        Ok(())
    }

    /// Background decoding: a few targets per loop iteration.
    fn decode_some(&mut self, budget: Duration) {
        // Restoring comes first: readiness waits for it, decoding does not.
        if self.parts.values().any(|p| p.state.is_none()) {
            return;
        }
        let started = Instant::now();
        let keys: Vec<(String, i32)> = self
            .parts
            .iter()
            .filter(|(_, p)| p.state.is_some() && !p.raw.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for tp in keys {
            let Some(mut part) = self.parts.remove(&tp) else {
                continue;
            };
            while started.elapsed() < budget {
                let Some(t) = part.raw.any_target() else {
                    break;
                };
                if let Err(e) = self.materialize(&mut part, &t) {
                    self.fail(e);
                    break;
                }
            }
            self.parts.insert(tp, part);
            if started.elapsed() >= budget {
                break;
            }
        }
    }

    /// A state that cannot be decoded stops the service: running on
    /// without it would reopen what was already reported.
    fn fail(&self, e: String) {
        *lock(&self.health.last_error) = Some(e);
        self.health.failed.store(true, Ordering::Release);
    }

    fn commit_partition(&self, consumer: &Cons, tp: &(String, i32)) {
        if let Err(e) = self.commit_partitions(consumer, std::slice::from_ref(tp)) {
            tracing::warn!("{e}");
        }
    }

    /// Commits what is done in `tps`, in one request (exactly-once: the
    /// open transaction).
    fn commit_partitions(&self, consumer: &Cons, tps: &[(String, i32)]) -> Result<(), String> {
        if self.eos {
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

    /// Opens a transaction if none is (exactly-once).
    fn ensure_txn(&self) {
        if !self.eos {
            return;
        }
        let mut open = lock(&self.txn_open);
        if !*open {
            match self.producer.begin_transaction() {
                Ok(()) => *open = true,
                Err(e) => self.fail(format!("begin transaction: {e}")),
            }
        }
    }

    /// Commits the open transaction with the consumed offsets of every
    /// partition up to what was applied (exactly-once).
    fn commit_txn(&self, consumer: &Cons) {
        if !self.eos {
            return;
        }
        let mut open = lock(&self.txn_open);
        if !*open || self.health.failed.load(Ordering::Acquire) {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for part in self.parts.values() {
            if let Some(next) = eos_frontier(part) {
                let _ = tpl.add_partition_offset(&part.topic, part.partition, Offset::Offset(next));
            }
        }
        let timeout = self.settings.shutdown_timeout;
        if tpl.count() > 0 {
            let Some(cgm) = consumer.group_metadata() else {
                self.fail("no consumer group metadata for the transaction".into());
                return;
            };
            if let Err(e) = self
                .producer
                .send_offsets_to_transaction(&tpl, &cgm, timeout)
            {
                self.fail(format!("send offsets to transaction: {e}"));
                let _ = self.producer.abort_transaction(timeout);
                *open = false;
                return;
            }
        }
        match self.producer.commit_transaction(timeout) {
            Ok(()) => {
                *open = false;
            }
            Err(e) => {
                // The in-memory state is ahead of what committed: stop, and
                // let the restart restore the committed state.
                self.fail(format!("commit transaction: {e}"));
                let _ = self.producer.abort_transaction(timeout);
                *open = false;
            }
        }
    }

    fn update_gauges(&self) {
        let restoring = self.parts.values().filter(|p| p.state.is_none()).count();
        let paused = self.parts.values().filter(|p| p.paused).count();
        self.metrics.partitions(self.parts.len(), restoring, paused);
        self.metrics
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
        let max_report = self.max_report_bytes;
        let Some(part) = self.parts.get_mut(&(topic.to_string(), partition)) else {
            return;
        };
        // A message of a partition still restoring waits for the restore,
        // out of its fetch buffer (see [`Payload`]).
        let msg = if part.state.is_none() {
            msg.owned()
        } else {
            msg
        };
        part.bytes += msg.len();
        let job = classify(part, msg, max_report, self.engine.decode_context());
        part.jobs.push_back(job);
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
        if held < self.settings.max_in_flight_bytes || tpl.count() == 0 {
            return;
        }
        if consumer.pause(&tpl).is_ok() {
            for p in self.parts.values_mut().filter(|p| p.state.is_none()) {
                p.paused = true;
            }
        }
    }

    /// Applies decoded jobs in order, produces, settles acks, stores
    /// offsets. `block` waits for the decode at the head of the queue.
    fn step_partition(
        &mut self,
        consumer: &Cons,
        tp: &(String, i32),
        block: bool,
        until: Option<Instant>,
    ) {
        let Some(mut part) = self.parts.remove(tp) else {
            return;
        };
        self.step(consumer, &mut part, block, until);
        self.parts.insert(tp.clone(), part);
    }

    /// One step of a partition; decodes it runs itself (see [`Decode`])
    /// start only until `until`, past the first.
    fn step(&self, consumer: &Cons, part: &mut Part, block: bool, until: Option<Instant>) {
        if part.state.is_some() {
            self.apply_ready(part, block, until);
            self.expire_chunks(part);
            self.settle(consumer, part);
        }
        // Restoring too: what it holds meanwhile is bounded.
        self.backpressure(consumer, part);
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
            .filter(|p| p.state.is_some() && !p.jobs.is_empty())
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
        let until = Some(Instant::now() + STEP_BUDGET);
        if busy < 2 {
            let keys: Vec<(String, i32)> = self.parts.keys().cloned().collect();
            for tp in &keys {
                self.step_partition(consumer, tp, false, until);
            }
        } else {
            let mut parts: Vec<((String, i32), Part)> = self.parts.drain().collect();
            let this = &*self;
            parts
                .par_iter_mut()
                .for_each(|(_, part)| this.step(consumer, part, false, until));
            self.parts.extend(parts);
        }
        // Backpressure may have paused or resumed partitions.
        self.update_gauges();
    }

    fn apply_ready(&self, part: &mut Part, block: bool, until: Option<Instant>) {
        let mut inline = 0;
        while let Some(job) = part.jobs.front_mut() {
            let decoded = match job {
                Job::Decoding { decode, meta, .. } => {
                    let mut slot = lock(decode);
                    let r = match &mut *slot {
                        Decode::Spawned(rx) if block => {
                            rx.recv().map_err(|_| TryRecvError::Disconnected)
                        }
                        Decode::Spawned(rx) => rx.try_recv(),
                        Decode::Lazy(_) => {
                            if inline > 0 && until.is_some_and(|u| Instant::now() >= u) {
                                return;
                            }
                            inline += 1;
                            let known = known(&part.last_scans, meta);
                            slot.take_lazy()
                                .map(|input| input.run(known))
                                .ok_or(TryRecvError::Disconnected)
                        }
                        Decode::Taken => Err(TryRecvError::Disconnected),
                    };
                    match r {
                        Ok(d) => Some(d),
                        Err(TryRecvError::Empty) => return,
                        Err(TryRecvError::Disconnected) => Some(Prepared::Decoded(Err(
                            DecodeError::Syntax("decoder stopped unexpectedly".into()),
                        ))),
                    }
                }
                _ => None,
            };
            let Some(job) = part.jobs.pop_front() else {
                return;
            };
            let offset = match &job {
                Job::Decoding { msg, .. }
                | Job::Poison { msg, .. }
                | Job::Held { msg, .. }
                | Job::Decision { msg, .. } => msg.offset,
            };
            // What is logged while the message is applied says which.
            let _message =
                tracing::info_span!("message", topic = %part.topic, partition = part.partition, offset)
                    .entered();
            let job = match self.replayed(part, job) {
                Some(job) => job,
                None => continue,
            };
            match (job, decoded) {
                (
                    Job::Decoding {
                        msg, meta, held, ..
                    },
                    Some(prepared),
                ) => self.apply_prepared(part, msg, meta, prepared, held),
                (
                    Job::Poison {
                        msg,
                        reason,
                        error,
                        held,
                    },
                    _,
                ) => self.dead_letter(part, msg, reason, &error, held),
                (Job::Decision { msg, decision }, _) => self.apply_decision(part, msg, &decision),
                (Job::Held { msg, ack }, _) => {
                    self.count_message("chunk");
                    let bytes = msg.len();
                    part.pending.push_back(Pending {
                        offset: Some(msg.offset),
                        timestamp: msg.timestamp,
                        events: Arc::new(Ack::default()),
                        changelog: None,
                        changelog_ack: ack,
                        held: Vec::new(),
                        hold: true,
                        bytes,
                        source: None,
                        dead_letter: None,
                    });
                }
                (Job::Decoding { .. }, None) => {}
            }
            part.quiet = false;
        }
    }

    /// A message redelivered after a crash, as the changelog's applied
    /// offset says (see [`changelog::Applied`]): one before it was applied
    /// whole, and is passed over (`None`); the one it names is applied
    /// again quietly (its events were delivered, its records maybe not
    /// all written). A chunk is held as ever: the scan it belongs to is
    /// judged by its last chunk.
    fn replayed(&self, part: &mut Part, job: Job) -> Option<Job> {
        let Some(applied) = part.replay else {
            return Some(job);
        };
        let offset = match &job {
            Job::Held { .. } => return Some(job),
            Job::Decoding { msg, .. } | Job::Poison { msg, .. } | Job::Decision { msg, .. } => {
                msg.offset
            }
        };
        if offset >= applied {
            part.replay = None;
            part.quiet = offset == applied;
            return Some(job);
        }
        let (msg, held) = match job {
            Job::Decoding { msg, held, .. } | Job::Poison { msg, held, .. } => (msg, held),
            Job::Decision { msg, .. } | Job::Held { msg, .. } => (msg, Vec::new()),
        };
        self.pass_over(part, msg, held);
        None
    }

    /// A redelivered message applied before the crash: done once the
    /// messages before it are, with nothing produced; the earlier chunks of
    /// its scan are released with it.
    fn pass_over(&self, part: &mut Part, msg: Incoming, held: Vec<HeldChunk>) {
        let offset = msg.offset;
        self.count_message("already_applied");
        part.last_applied = Some(offset);
        part.pending.push_back(Pending {
            offset: Some(offset),
            timestamp: msg.timestamp,
            events: Arc::new(Ack::default()),
            changelog: Some(Vec::new()),
            changelog_ack: Arc::new(Ack::default()),
            held: held.into_iter().map(|h| h.ack).collect(),
            hold: false,
            bytes: msg.len(),
            source: None,
            dead_letter: None,
        });
    }

    /// Applies a report: decoded, or the same as its target's last scan.
    fn apply_prepared(
        &self,
        part: &mut Part,
        msg: Incoming,
        meta: MessageMeta,
        prepared: Prepared,
        held: Vec<HeldChunk>,
    ) {
        let decoded = match prepared {
            Prepared::Decoded(d) => d,
            Prepared::Undecoded(input, mut digests) => {
                // Decoded now after all if the report is not its target's
                // last scan (the decode compared digests before earlier
                // messages were applied, or did not compare them). A decode
                // that left the comparing to the apply took only the
                // digest of the bytes: the content digest is taken here
                // when the bytes differ, for the comparison and for the
                // next scan's.
                let content_wanted = |d: &Digests| {
                    d.content.is_none()
                        && last_scan(&part.last_scans, &meta)
                            .is_none_or(|l| !l.digests.same_report(d))
                };
                if content_wanted(&digests) {
                    digests.content = input.content_digest();
                }
                if remembered(&part.last_scans, &meta, &digests) {
                    match self.rescan_unchanged(part, &msg, &meta, &digests) {
                        Ok(Some(records)) => {
                            let bytes = msg.len();
                            let held = held.into_iter().map(|h| h.ack).collect();
                            self.emit(part, Some(msg), Output::default(), records, held, bytes);
                            return;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            self.fail(e);
                            return;
                        }
                    }
                }
                if digests.content.is_none() {
                    digests.content = input.content_digest();
                }
                (*input).decode(digests)
            }
        };
        match decoded {
            Ok(d) => self.apply_scan(part, msg, meta, d, held),
            Err(e) => {
                let format = meta.format.map_or("unknown", Format::name);
                self.metrics.decode_error(format, e.reason());
                self.dead_letter(part, msg, e.reason(), &e.to_string(), held);
            }
        }
    }

    fn apply_scan(
        &self,
        part: &mut Part,
        msg: Incoming,
        meta: MessageMeta,
        decoded: DecodedReport,
        held: Vec<HeldChunk>,
    ) {
        let DecodedReport {
            mut report,
            scan_id,
            digests,
        } = decoded;
        let Some(target) = meta.target.clone().or(report.target.take()) else {
            let err = meta::MetaError::NoTarget;
            self.dead_letter(part, msg, "no_target", &err.to_string(), held);
            return;
        };
        if let Some(name) = &meta.scanner {
            report.set_scanner(name);
        }
        self.metrics.findings_consumed(report.findings.len());
        self.count_message("processed");
        let (scan_id, content) = match scan_id {
            ScanId::Given(id) => (id, None),
            ScanId::Content(bytes) => (String::new(), Some(bytes)),
        };
        let scan = ScanMeta {
            scan_id,
            target: target.clone(),
            commit: meta.commit.clone().or(report.commit.take()),
            git_ref: meta.git_ref.clone().or(report.git_ref.take()),
            complete: meta.complete,
            coverage: std::mem::take(&mut report.coverage),
        };
        let now = msg.time();
        let spec = target.to_string();
        if let Err(e) = self.materialize(part, &spec) {
            self.fail(e);
            return;
        }
        let Some(state) = part.state.as_mut() else {
            return;
        };
        let ownership = self.ownership_generation();
        let mut out = Output::default();
        let findings = report.findings.len();
        let mut touched = self.engine.scan_touched(
            state,
            &scan,
            report.findings,
            now,
            &mut out,
            self.settings.last_seen_resolution,
        );
        if let (Some(bytes), false) = (content, out.findings.is_empty()) {
            let id = ScanMeta::content_id(&bytes);
            for e in &mut out.findings {
                e.scan_id = Some(id.clone());
            }
        }
        let mut records =
            changelog::records(state, &spec, &touched.findings, Some(&touched.tickets));
        // What the next rescan of the target needs to skip its decode when
        // it sends this report again (only a target named by the message:
        // the check comes before the report is read), kept in the
        // changelog too, after the scan's records.
        part.last_scans.remove(&spec);
        if meta.target.is_some() {
            let last = LastScan {
                digests,
                format: meta.format,
                scanner: meta.scanner.clone(),
                complete: meta.complete,
                findings,
                ownership,
                observed: std::mem::take(&mut touched.observed),
                restored: false,
            };
            records.push(changelog::scan_record(
                &spec,
                &last.record(&self.settings_digest),
            ));
            part.last_scans.insert(spec, last);
        }
        let bytes = msg.len();
        let held = held.into_iter().map(|h| h.ack).collect();
        self.emit(part, Some(msg), out, records, held, bytes);
    }

    /// A report that is its target's last scan again (see [`LastScan`]):
    /// only `last_seen` moves. Returns the changelog records to write;
    /// `Ok(None)` when the state is not as that scan left it (the report
    /// is then applied in full); an error when the target's state could
    /// not be restored (nothing may be applied to it).
    fn rescan_unchanged(
        &self,
        part: &mut Part,
        msg: &Incoming,
        meta: &MessageMeta,
        digests: &Digests,
    ) -> Result<Option<Vec<changelog::Record>>, String> {
        let Some(target) = meta.target.as_ref() else {
            return Ok(None);
        };
        let spec = target.to_string();
        // A target known from the changelog's record of its last scan may
        // not be decoded yet; decoding it re-attributes it, which forgets
        // the scan should a finding move.
        self.materialize(part, &spec)?;
        let (Some(last), Some(state)) = (part.last_scans.get_mut(&spec), part.state.as_mut())
        else {
            return Ok(None);
        };
        if last.ownership != self.ownership_generation() {
            part.last_scans.remove(&spec);
            return Ok(None);
        }
        // A scan known from the changelog: the ownership may have changed
        // since. Re-attribution covers open and accepted findings; a full
        // apply would re-attribute the others it observes too (false
        // positives), so each of those must be attributed as it would be.
        if last.restored {
            if !self.engine.attribution_holds(state, target, &last.observed) {
                part.last_scans.remove(&spec);
                return Ok(None);
            }
            last.restored = false;
        }
        let now = msg.time();
        let Some(touched) = self.engine.rescan_unchanged(
            state,
            target,
            &last.observed,
            now,
            self.settings.last_seen_resolution,
        ) else {
            part.last_scans.remove(&spec);
            return Ok(None);
        };
        self.metrics.findings_consumed(last.findings);
        self.count_message("processed");
        self.metrics.report_unchanged();
        last.recognized_by(digests);
        // No ticket changed (`None` would write every ticket of the target).
        let mut records = changelog::records(state, &spec, &touched.findings, Some(&[]));
        // Records of the target void the changelog's record of its last
        // scan unless it comes after them again.
        if !records.is_empty() {
            records.push(changelog::scan_record(
                &spec,
                &last.record(&self.settings_digest),
            ));
        }
        Ok(Some(records))
    }

    /// See [`crate::ownership::Reloadable::generation`]; 0 when the
    /// ownership cannot change.
    fn ownership_generation(&self) -> u64 {
        self.ownership.as_ref().map_or(0, |o| o.generation())
    }

    fn apply_decision(&self, part: &mut Part, msg: Incoming, d: &crate::lifecycle::DecisionRecord) {
        let spec = d.target.to_string();
        part.last_scans.remove(&spec);
        if let Err(e) = self.materialize(part, &spec) {
            self.fail(e);
            return;
        }
        let now = msg.time();
        let Some(state) = part.state.as_mut() else {
            return;
        };
        match self.engine.decide(state, d, now) {
            Ok(out) => {
                self.count_message("decision");
                let records =
                    changelog::records(state, &spec, std::slice::from_ref(&d.fingerprint), None);
                let bytes = msg.len();
                self.emit(part, Some(msg), out, records, Vec::new(), bytes);
            }
            Err(e) => self.dead_letter(part, msg, "bad_decision", &e.to_string(), Vec::new()),
        }
    }

    /// Counts a message taken through, by its outcome.
    fn count_message(&self, outcome: &str) {
        self.metrics.message(outcome);
        self.health.applied_messages.fetch_add(1, Ordering::Relaxed);
    }

    /// Produces a step's events now and queues its changelog records.
    fn emit(
        &self,
        part: &mut Part,
        msg: Option<Incoming>,
        mut out: Output,
        mut records: Vec<changelog::Record>,
        held: Vec<Arc<Ack>>,
        bytes: usize,
    ) {
        if let (Some(m), false) = (&msg, records.is_empty()) {
            records.insert(
                0,
                changelog::applied_record(&part.topic, part.partition, m.offset),
            );
        }
        if part.quiet {
            // Delivered before the crash (see `replayed`).
            out.findings.clear();
            out.tickets.clear();
        }
        let ack = Arc::new(Ack::default());
        // A guard, so the count cannot reach zero while records are sent.
        ack.add(1);
        // One buffer for every payload: librdkafka copies what it is given.
        let mut payload = Vec::with_capacity(4096);
        let topic = &self.settings.findings_topic;
        for e in &out.findings {
            self.metrics.finding_event(e);
            payload.clear();
            if serde_json::to_writer(&mut payload, e).is_ok() {
                self.send(
                    topic,
                    None,
                    e.fingerprint.as_bytes(),
                    Some(&payload),
                    None,
                    &ack,
                );
                self.metrics.event("finding", topic);
            }
        }
        for e in &out.tickets {
            payload.clear();
            if serde_json::to_writer(&mut payload, e).is_ok() {
                self.send(
                    &e.route,
                    None,
                    e.ticket_key.as_bytes(),
                    Some(&payload),
                    None,
                    &ack,
                );
                self.metrics.event("ticket", &e.route);
            }
        }
        ack.add(-1);
        if let Some(m) = &msg {
            part.last_applied = Some(m.offset);
        }
        part.pending.push_back(Pending {
            offset: msg.as_ref().map(|m| m.offset),
            timestamp: msg.as_ref().and_then(|m| m.timestamp),
            events: ack,
            changelog: Some(records),
            changelog_ack: Arc::new(Ack::default()),
            held,
            hold: false,
            bytes,
            source: msg,
            dead_letter: None,
        });
    }

    /// Sends one record, waiting while the producer's queue is full. The
    /// wait ends without sending when the run has already failed, or when
    /// a stop was asked and the queue stayed full for the shutdown timeout
    /// (brokers unreachable): the record's ack fails, so its message's
    /// offset is not stored and the message is redelivered after the
    /// restart.
    fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
        ack: &Arc<Ack>,
    ) {
        self.ensure_txn();
        ack.add(1);
        let mut record: BaseRecord<'_, [u8], [u8], Box<Arc<Ack>>> =
            BaseRecord::with_opaque_to(topic, Box::new(Arc::clone(ack))).key(key);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    if self.health.failed.load(Ordering::Acquire) {
                        // Another record already failed: the run stops, and
                        // this message is redelivered anyway.
                        self.give_up(ack, None);
                        return;
                    }
                    if self.health.stop.load(Ordering::Relaxed)
                        && self.stop_seen.get_or_init(Instant::now).elapsed()
                            >= self.settings.shutdown_timeout
                    {
                        self.give_up(ack, Some(format!(
                            "producing to {topic}: the producer's queue stayed full for {} s after the stop was asked (brokers unreachable?); the message is redelivered after the restart",
                            self.settings.shutdown_timeout.as_secs()
                        )));
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) if refused_for_good(&e) => {
                    // Larger than the producer takes: as a broker's refusal.
                    ack.refuse(format!("{topic} refused a record: {e}"));
                    ack.add(-1);
                    return;
                }
                Err((e, _)) => {
                    // Not retriable otherwise (unknown topic...): the run
                    // stops without storing this offset.
                    self.give_up(ack, Some(format!("producing to {topic}: {e}")));
                    return;
                }
            }
        }
    }

    /// A record that is not sent: its ack fails (the message's offset is
    /// never stored) and the run stops, saying why unless it already did.
    fn give_up(&self, ack: &Ack, error: Option<String>) {
        ack.failed.store(true, Ordering::Release);
        match error {
            Some(e) => self.fail(e),
            None => self.health.failed.store(true, Ordering::Release),
        }
        ack.add(-1);
    }

    fn dead_letter(
        &self,
        part: &mut Part,
        msg: Incoming,
        reason: &'static str,
        error: &str,
        held: Vec<HeldChunk>,
    ) {
        if part.quiet {
            // Dead-lettered before the crash (see `replayed`).
            self.pass_over(part, msg, held);
            return;
        }
        // The earlier chunks of a failed scan go first, so the whole scan
        // can be replayed from the dead-letter topic.
        self.dead_letter_held(part, held, reason, error);
        self.count_message("dead_lettered");
        self.metrics.dead_letter(reason);
        let ack = Arc::new(Ack::default());
        ack.add(1);
        self.send_dead_letter(part, &msg, reason, error, &ack);
        ack.add(-1);
        part.last_applied = Some(msg.offset);
        part.pending.push_back(Pending {
            offset: Some(msg.offset),
            timestamp: msg.timestamp,
            events: ack,
            changelog: Some(Vec::new()),
            changelog_ack: Arc::new(Ack::default()),
            held: Vec::new(),
            hold: false,
            bytes: msg.len(),
            source: None,
            dead_letter: None,
        });
    }

    fn send_dead_letter(
        &self,
        part: &Part,
        msg: &Incoming,
        reason: &str,
        error: &str,
        ack: &Arc<Ack>,
    ) {
        let mut hs = OwnedHeaders::new();
        for (k, v) in &msg.headers {
            hs = hs.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        let partition = part.partition.to_string();
        let offset = msg.offset.to_string();
        let error: String = error.chars().take(1000).collect();
        for (k, v) in [
            (header::DLQ_REASON, reason),
            (header::DLQ_ERROR, error.as_str()),
            (header::DLQ_TOPIC, part.topic.as_str()),
            (header::DLQ_PARTITION, partition.as_str()),
            (header::DLQ_OFFSET, offset.as_str()),
        ] {
            hs = hs.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let topic = self.settings.dead_letter_topic.clone();
        self.send(
            &topic,
            None,
            msg.key.as_deref().unwrap_or(b""),
            msg.payload.as_deref().map(|p| &**p),
            Some(hs),
            ack,
        );
    }

    /// Chunked scans whose missing chunks did not arrive in time: every
    /// chunk message that came, duplicates too, is dead-lettered as it
    /// came (headers and payload, so the scan can be replayed), and the
    /// scan is dropped.
    fn expire_chunks(&self, part: &mut Part) {
        let timeout = self.settings.chunk_timeout;
        let expired: Vec<(String, String)> = part
            .chunks
            .iter()
            .filter(|(_, c)| c.first.elapsed() > timeout)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            let Some(buf) = part.chunks.remove(&k) else {
                continue;
            };
            let n = buf.parts.len();
            let have = buf.parts.iter().filter(|p| p.is_some()).count();
            let error = format!(
                "scan {} of {}: {have} of {n} chunks arrived within {}s",
                k.1,
                k.0,
                timeout.as_secs()
            );
            self.dead_letter_held(part, buf.held, "incomplete_scan", &error);
        }
    }

    /// Dead-letters held chunks as they came; each one's offset is done
    /// once its dead letter is acknowledged. (Each was counted as a
    /// message when it was held.)
    fn dead_letter_held(&self, part: &Part, held: Vec<HeldChunk>, reason: &str, error: &str) {
        for h in held {
            self.metrics.dead_letter(reason);
            self.send_dead_letter(part, &h.msg, reason, error, &h.ack);
            h.ack.add(-1);
        }
    }

    /// Produces changelog records behind acknowledged events, stores the
    /// offsets of what is done, in order.
    fn settle(&self, consumer: &Cons, part: &mut Part) {
        // Changelog records of a message go out only when its events and
        // those of every earlier message are acknowledged.
        let mut idx = 0;
        while idx < part.pending.len() {
            let p = &part.pending[idx];
            if !self.eos && !p.hold && !p.events.done() {
                break;
            }
            if p.events.failed.load(Ordering::Acquire) {
                // Not stored: redelivered after the restart.
                return;
            }
            if p.events.done() && p.dead_letter.is_none() {
                match p.events.refused() {
                    Some(why) => self.dead_letter_refused(part, idx, &why),
                    // Delivered: the report is not needed any more.
                    None => part.pending[idx].source = None,
                }
            }
            if let Some(records) = part.pending[idx].changelog.take() {
                let ack = Arc::clone(&part.pending[idx].changelog_ack);
                ack.add(1);
                for r in &records {
                    self.send(
                        &part.changelog_topic,
                        Some(part.partition),
                        &r.key,
                        r.value.as_deref(),
                        None,
                        &ack,
                    );
                }
                ack.add(-1);
            }
            idx += 1;
        }
        // A finished scan releases its earlier chunks, which sit before it
        // in the queue.
        for p in part.pending.iter_mut() {
            if !p.held.is_empty() && p.complete() {
                for h in p.held.drain(..) {
                    h.add(-1);
                }
            }
        }
        let mut stored = None;
        while let Some(p) = part.pending.front() {
            if let Some(why) = p.changelog_ack.refused() {
                // The state cannot be kept: running on would lose it at the
                // next restart.
                self.fail(format!("changelog record refused for good: {why}"));
                return;
            }
            if !p.complete() {
                break;
            }
            let Some(p) = part.pending.pop_front() else {
                break;
            };
            if let Some(why) = p.dead_letter.as_ref().and_then(|a| a.refused()) {
                self.metrics.dead_letter("refused_unsaved");
                tracing::error!(
                    topic = %part.topic,
                    partition = part.partition,
                    offset = p.offset.unwrap_or(-1),
                    "the dead letter was refused too ({why}): the dead-letter topic must take messages as large as the reports topic"
                );
            }
            part.bytes = part.bytes.saturating_sub(p.bytes);
            if let Some(off) = p.offset {
                stored = Some(off);
                self.health.done_messages.fetch_add(1, Ordering::Relaxed);
                if let Some(ts) = p.timestamp {
                    let now = Utc::now().timestamp_millis();
                    self.metrics.latency((now - ts) as f64 / 1000.0);
                }
            }
        }
        if let Some(off) = stored {
            if !self.eos {
                let _ = consumer.store_offset(&part.topic, part.partition, off);
            }
            part.next_offset = Some(off + 1);
        }
    }

    /// An event (or a dead letter) of the work at `idx` that the broker
    /// refused for good (see [`refused_for_good`]): the report that caused
    /// it goes to the dead-letter topic with the reason, and the service
    /// goes on. Its state and changelog records stay as applied: the
    /// events that were taken are true, and only the refused one is
    /// missing downstream, which the dead letter says. A clock tick or a
    /// re-attribution has no report: the refusal is logged and counted.
    fn dead_letter_refused(&self, part: &mut Part, idx: usize, why: &str) {
        let ack = Arc::new(Ack::default());
        let offset = part.pending[idx].offset;
        match part.pending[idx].source.take() {
            Some(msg) => {
                self.metrics.dead_letter("event_refused");
                tracing::warn!(
                    topic = %part.topic,
                    partition = part.partition,
                    offset = msg.offset,
                    "{why}; the report is dead-lettered"
                );
                ack.add(1);
                self.send_dead_letter(part, &msg, "event_refused", why, &ack);
                ack.add(-1);
            }
            None => {
                self.metrics.dead_letter("refused_unsaved");
                tracing::error!(
                    topic = %part.topic,
                    partition = part.partition,
                    offset = offset.unwrap_or(-1),
                    "{why}; nothing is left to dead-letter (a dead letter itself, a clock tick or a re-attribution)"
                );
            }
        }
        part.pending[idx].dead_letter = Some(ack);
    }

    /// Pauses a partition whose work in flight reaches the limits, resumes
    /// it at half of them. Work in flight is what is consumed and not yet
    /// applied, and what is applied with events or changelog records still
    /// unacknowledged. Two kinds of message are not work, since pausing for
    /// them would keep out the chunks they wait for:
    /// - chunks held for a scan still missing chunks; they have their own
    ///   bound, the larger of `max_in_flight_bytes` and the largest report
    ///   accepted;
    /// - messages done but for their offset, which waits for a held chunk
    ///   before them; their payloads are gone, and they have their own
    ///   bound, [`WAITING_PER_MESSAGE`] times `max_in_flight_messages`.
    ///
    /// Beyond either bound the partition pauses until the chunk timeout
    /// dead-letters the oldest incomplete scan.
    fn backpressure(&self, consumer: &Cons, part: &mut Part) {
        let max_msgs = self.settings.max_in_flight_messages;
        let max_bytes = self.settings.max_in_flight_bytes;
        // Held messages, duplicates and keys included, leave the in-flight
        // count; the distinct chunks' bytes (a scan's size, which stays
        // under the report limit) count against the held bound.
        let (held_msgs, held_len) = part
            .chunks
            .values()
            .flat_map(|c| &c.held)
            .fold((0, 0), |(m, b), h| (m + 1, b + h.msg.len()));
        let held_bytes: usize = part.chunks.values().map(|c| c.bytes).sum();
        let (waiting_msgs, waiting_bytes) = if part.chunks.is_empty() {
            (0, 0)
        } else {
            part.pending
                .iter()
                .filter(|p| p.complete())
                .fold((0, 0), |(m, b), p| (m + 1, b + p.bytes))
        };
        let msgs = part.in_flight().saturating_sub(held_msgs + waiting_msgs);
        let bytes = part.bytes.saturating_sub(held_len + waiting_bytes);
        let held_limit =
            max_bytes.max(usize::try_from(self.max_report_bytes).unwrap_or(usize::MAX));
        let waiting_limit = max_msgs.saturating_mul(WAITING_PER_MESSAGE);
        let over = msgs >= max_msgs
            || bytes >= max_bytes
            || held_bytes > held_limit
            || waiting_msgs >= waiting_limit;
        let under = msgs <= max_msgs / 2
            && bytes <= max_bytes / 2
            && held_bytes <= held_limit
            && waiting_msgs < waiting_limit;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&part.topic, part.partition);
        if over && !part.paused {
            if consumer.pause(&tpl).is_ok() {
                part.paused = true;
            }
        } else if under && part.paused && part.state.is_some() && consumer.resume(&tpl).is_ok() {
            part.paused = false;
        }
    }

    /// Advances the SLA clock over every restored partition.
    fn tick(&mut self, now: DateTime<Utc>) {
        self.each_part(|core, part| {
            if let Some(state) = part.state.as_mut() {
                let out = core.engine.tick(state, now);
                if !out.findings.is_empty() || !out.tickets.is_empty() {
                    // A rescan would find these records as the tick left
                    // them, which no rescan decoded yet has seen.
                    part.last_scans.clear();
                }
                core.emit_step(part, out);
            }
        });
    }

    /// Re-attributes every restored partition after an ownership reload.
    fn reattribute(&mut self, now: DateTime<Utc>) {
        self.each_part(|core, part| {
            // Also covered by the ownership generation; re-attribution
            // skips records a rescan would still re-attribute (false
            // positives), so nothing remembered survives it.
            part.last_scans.clear();
            let targets: Vec<String> = part
                .state
                .as_ref()
                .map(|s| s.targets.keys().cloned().collect())
                .unwrap_or_default();
            for spec in &targets {
                core.reattribute_target(part, spec, now);
            }
        });
    }

    /// Runs a step no message caused over every partition, its restored
    /// records all decoded first.
    fn each_part(&mut self, mut step: impl FnMut(&Core, &mut Part)) {
        self.for_each_part(|core, part| {
            if let Err(e) = core.materialize_all(part) {
                core.fail(e);
            }
            step(core, part);
        });
    }

    /// Runs `f` on every partition in turn, each taken out of the map
    /// while it runs (so `f` can read the rest of the core).
    fn for_each_part(&mut self, mut f: impl FnMut(&Core, &mut Part)) {
        let keys: Vec<(String, i32)> = self.parts.keys().cloned().collect();
        for tp in keys {
            if let Some(mut part) = self.parts.remove(&tp) {
                f(self, &mut part);
                self.parts.insert(tp, part);
            }
        }
    }

    /// Emits a step that no message caused (tick, re-attribution).
    fn emit_step(&self, part: &mut Part, out: Output) {
        if out.findings.is_empty() && out.tickets.is_empty() {
            return;
        }
        let Some(state) = part.state.as_ref() else {
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
            records.extend(changelog::records(state, target, fps, None));
        }
        self.emit(part, None, out, records, Vec::new(), 0);
    }

    fn state_gauges(&self) {
        self.metrics.set_state(
            self.parts.values().filter_map(|p| p.state.as_ref()),
            Utc::now(),
        );
    }

    fn lag_gauges(&self) {
        let highs = lock(&self.health.high_watermarks);
        for part in self.parts.values() {
            let tp = (part.topic.clone(), part.partition);
            if let (Some(high), Some(next)) = (highs.get(&tp), part.next_offset) {
                self.metrics.lag(&part.topic, part.partition, high - next);
            }
        }
    }
}

/// A job that dead-letters `msg`.
fn poison(msg: Incoming, reason: &'static str, error: impl Into<String>) -> Job {
    Job::Poison {
        msg,
        reason,
        error: error.into(),
        held: Vec::new(),
    }
}

/// Sorts a new message into a job: poison, a held chunk, or a decode.
fn classify(
    part: &mut Part,
    msg: Incoming,
    max_report: u64,
    ctx: &normalize::DecodeContext,
) -> Job {
    let meta = match meta::from_headers(
        msg.key.as_deref(),
        msg.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
    ) {
        Ok(m) => m,
        Err(e) => return poison(msg, "bad_metadata", e.to_string()),
    };
    // A chunk may wait long for the rest of its scan: out of its fetch
    // buffer (see [`Payload`]).
    let msg = if meta.chunk.is_some() {
        msg.owned()
    } else {
        msg
    };
    // A chunk's scan: a chunk that is bad fails its whole scan, so the
    // chunks held for it are dead-lettered with it, not 10 minutes later.
    let chunk_key = meta.chunk.map(|_| {
        let target = meta
            .target
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        (target, meta.scan_id.clone().unwrap_or_default())
    });
    let fail = |part: &mut Part, msg: Incoming, reason: &'static str, error: String| {
        let held = chunk_key
            .as_ref()
            .and_then(|k| part.chunks.remove(k))
            .map(|b| b.held)
            .unwrap_or_default();
        Job::Poison {
            msg,
            reason,
            error,
            held,
        }
    };
    let Some(shared) = msg.payload.clone() else {
        return fail(part, msg, "empty", "message has no payload".into());
    };
    let payload: &[u8] = &shared;
    if meta.decision {
        return match serde_json::from_slice::<crate::lifecycle::DecisionRecord>(payload) {
            Ok(d) if meta.target.as_ref().is_some_and(|t| *t != d.target) => poison(
                msg,
                "bad_decision",
                format!(
                    "decision for {} sent with key {}: the key must be the decision's target",
                    d.target,
                    meta.target
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ),
            ),
            Ok(d) => Job::Decision {
                msg,
                decision: Box::new(d),
            },
            Err(e) => poison(
                msg,
                "bad_decision",
                format!("not a decision record: {}", normalize::json_error(&e)),
            ),
        };
    }
    if payload.len() as u64 > max_report {
        let error = DecodeError::TooLarge {
            size: payload.len() as u64,
            limit: max_report,
        }
        .to_string();
        return fail(part, msg, "too_large", error);
    }
    if let (Some((i, n)), Some(key)) = (meta.chunk, chunk_key.clone()) {
        let scan_id = key.1.clone();
        let buf = part.chunks.entry(key.clone()).or_insert_with(|| ChunkBuf {
            parts: vec![None; n as usize],
            bytes: 0,
            held: Vec::new(),
            first: Instant::now(),
        });
        if buf.parts.len() != n as usize {
            let error = format!(
                "chunk {i}/{n} of scan {scan_id} disagrees with the earlier count of {}; every chunk of the scan is dead-lettered",
                buf.parts.len()
            );
            return fail(part, msg, "bad_metadata", error);
        }
        let slot = (i - 1) as usize;
        // A retried duplicate is held (its offset waits with the others)
        // but the first copy is the one joined.
        if buf.parts[slot].is_none() {
            if buf.bytes as u64 + payload.len() as u64 > max_report {
                let error = format!(
                    "chunked scan {scan_id} exceeds the limit of {max_report} bytes; every chunk of it is dead-lettered"
                );
                return fail(part, msg, "too_large", error);
            }
            buf.bytes += payload.len();
            buf.parts[slot] = Some(Arc::clone(&shared));
        }
        if buf.parts.iter().any(Option::is_none) {
            let ack = Arc::new(Ack::default());
            ack.add(1);
            buf.held.push(HeldChunk {
                msg: msg.clone(),
                ack: Arc::clone(&ack),
            });
            return Job::Held { msg, ack };
        }
        // The last missing chunk: the scan is complete.
        let Some(buf) = part.chunks.remove(&key) else {
            return poison(msg, "bad_metadata", "chunk buffer vanished");
        };
        let mut whole = Vec::with_capacity(buf.bytes);
        for p in buf.parts.iter().flatten() {
            whole.extend_from_slice(p);
        }
        return decode_job(
            msg,
            meta,
            Some(scan_id),
            Payload::owned(whole),
            buf.held,
            ctx,
        );
    }
    match meta::unwrap_envelope(payload, &meta) {
        Ok(Some((m, report))) => {
            let bytes = Payload::owned(report);
            let scan_id = m.scan_id.clone();
            decode_job(msg, m, scan_id, bytes, Vec::new(), ctx)
        }
        Ok(None) => {
            let bytes = Arc::clone(&shared);
            let scan_id = meta.scan_id.clone();
            decode_job(msg, meta, scan_id, bytes, Vec::new(), ctx)
        }
        Err(e) => poison(msg, "bad_envelope", e.to_string()),
    }
}

/// A report to decode (see [`Decode`]); a scan id the publisher did not
/// give is derived from the report's bytes there too, off the consumer
/// thread.
fn decode_job(
    msg: Incoming,
    meta: MessageMeta,
    scan_id: Option<String>,
    bytes: Bytes,
    held: Vec<HeldChunk>,
    ctx: &normalize::DecodeContext,
) -> Job {
    let input = DecodeInput {
        format: meta.format,
        // An empty id (`"scan_id": ""` in an envelope) is none.
        scan_id: scan_id.filter(|id| !id.is_empty()),
        bytes,
        ctx: ctx.clone(),
    };
    Job::Decoding {
        msg,
        meta,
        decode: Mutex::new(Decode::Lazy(Box::new(input))),
        held,
    }
}

/// Messages done but for their offset, which waits behind a held chunk,
/// that a partition keeps per message of `max_in_flight_messages` before it
/// pauses: each holds a few hundred bytes, its payload gone.
const WAITING_PER_MESSAGE: usize = 256;

/// How long a step of every partition may go on decoding (see
/// [`Core::step`]) before the loop polls again.
const STEP_BUDGET: Duration = Duration::from_millis(100);

/// Restoring clients per assignment.
const RESTORE_CLIENTS: usize = 4;

/// Reads the changelog partitions of an assignment from the beginning to
/// their ends, sending each partition's records as soon as it is complete.
fn restore(
    cfg: &ClientConfig,
    batch: Vec<((String, i32), String, u64)>,
    metrics: &Metrics,
    deadline: Duration,
    tx: &mpsc::Sender<Restored>,
    client: &mut Option<BaseConsumer>,
) {
    let started = Instant::now();
    // A few partitions per client: a list is searched without allocating.
    let mut open: Vec<Reading> = batch
        .into_iter()
        .map(|(tp, changelog_topic, generation)| Reading {
            at: (changelog_topic, tp.1),
            tp,
            generation,
            high: None,
            raw: changelog::RawLog::new(),
        })
        .collect();
    let fail = |open: Vec<Reading>, e: String| {
        for r in open {
            let _ = tx.send(Restored {
                tp: r.tp,
                generation: r.generation,
                result: Err(e.clone()),
            });
        }
    };
    let done = |mut r: Reading| {
        let scans = r.raw.take_scans();
        let _ = tx.send(Restored {
            tp: r.tp,
            generation: r.generation,
            result: Ok((r.raw, scans)),
        });
    };
    let mut cfg = cfg.clone();
    cfg.set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        // Reading as fast as it arrives: when the prefetch queue is full,
        // look again soon rather than after the default second.
        .set("fetch.queue.backoff.ms", "10");
    // A group id is required by librdkafka, though nothing is committed.
    if cfg.get("group.id").is_none() {
        cfg.set("group.id", "custody-restore");
    }
    let consumer: &BaseConsumer = match cfg.create() {
        Ok(c) => client.insert(c),
        Err(e) => return fail(open, e.to_string()),
    };
    // Where each changelog partition starts and ends, asked in one
    // ListOffsets request per broker for each end. Reading from an
    // explicit offset skips the lookup a logical one needs, which a new
    // client puts off by 500 ms until it knows the leader; and an empty
    // partition is not fetched at all.
    if let Err(e) = no_open_transactions(&cfg, consumer, &open, started + deadline) {
        return fail(open, e);
    }
    let ends = watermarks(consumer, &open, Duration::from_secs(30));
    let mut from = TopicPartitionList::new();
    let mut i = 0;
    while i < open.len() {
        let start = match ends.get(&open[i].at) {
            Some(&(low, high)) if high <= low => {
                done(open.swap_remove(i));
                continue;
            }
            Some(&(low, high)) => {
                open[i].high = Some(high);
                Offset::Offset(low)
            }
            // Not known: read to the end the consumer reports.
            None => Offset::Beginning,
        };
        let (t, p) = &open[i].at;
        if let Err(e) = from.add_partition_offset(t, *p, start) {
            return fail(open, e.to_string());
        }
        i += 1;
    }
    if open.is_empty() {
        return;
    }
    if let Err(e) = consumer.assign(&from) {
        return fail(open, e.to_string());
    }
    let mut reported = 0usize;
    let mut total = 0usize;
    let mut last_word = Instant::now();
    while !open.is_empty() {
        if started.elapsed() > deadline {
            let e = format!(
                "timed out after {}s at {}",
                started.elapsed().as_secs(),
                where_reading(consumer, &open)
            );
            return fail(open, e);
        }
        if last_word.elapsed() > RESTORE_WORD {
            last_word = Instant::now();
            tracing::info!(
                "still restoring after {}s: {}",
                started.elapsed().as_secs(),
                where_reading(consumer, &open)
            );
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let (topic, partition) = (m.topic(), m.partition());
                let Some(i) = open
                    .iter()
                    .position(|o| o.at.1 == partition && o.at.0 == topic)
                else {
                    continue;
                };
                let slot = &mut open[i];
                if let Some(key) = m.key() {
                    if let Err(e) = slot.raw.push(m.offset(), key, m.payload()) {
                        let e = format!("{topic} offset {}: {e}", m.offset());
                        return fail(open, e);
                    }
                    total += 1;
                    if total - reported >= 10_000 {
                        metrics.restored(total - reported);
                        reported = total;
                    }
                }
                // The end known at the start is reached: anything later
                // was written after the assignment.
                if slot.high.is_some_and(|h| m.offset() + 1 >= h) {
                    done(open.swap_remove(i));
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                // The error names only the partition: finish the entries
                // with this partition number that stand at their end.
                // Trusted when only one entry can be meant; else the
                // position says (transaction markers at the end of a log
                // leave the position short of the end).
                let pos = consumer.position().ok();
                let unique = open.iter().filter(|x| x.at.1 == p).count() == 1;
                finish_if(&mut open, &done, |o| {
                    o.at.1 == p
                        && (unique
                            || match (offset_in(pos.as_ref(), &o.at), o.high) {
                                (Some(a), Some(h)) => a >= h,
                                (Some(a), None) => consumer
                                    .fetch_watermarks(&o.at.0, o.at.1, Duration::from_secs(10))
                                    .is_ok_and(|(_, h)| a >= h),
                                _ => false,
                            })
                });
            }
            Some(Err(e)) => return fail(open, e.to_string()),
            None => {
                // Nothing arrived: a partition whose last offsets are
                // control records (transaction markers) or compacted away
                // may stand at its end without a message reaching it.
                if let Ok(pos) = consumer.position() {
                    finish_if(
                        &mut open,
                        &done,
                        |o| matches!((offset_in(Some(&pos), &o.at), o.high), (Some(a), Some(h)) if a >= h),
                    );
                }
            }
        }
    }
    metrics.restored(total - reported);
}

/// How often a restore that has not finished says where it stands.
const RESTORE_WORD: Duration = Duration::from_secs(30);

/// A changelog partition being read.
struct Reading {
    /// (changelog topic, partition).
    at: (String, i32),
    /// The reports partition it restores.
    tp: (String, i32),
    generation: u64,
    /// The end of the changelog partition when the restore began.
    high: Option<i64>,
    raw: changelog::RawLog,
}

/// Waits until no transaction is open below the end of the changelog
/// partitions in `open`. An instance killed mid-transaction (exactly-once)
/// leaves it open until the broker aborts it, up to its
/// `transaction.timeout.ms`; meanwhile a `read_committed` reader stops at
/// the transaction's start (the last stable offset), short of what
/// transactions committed after it, which the group's offsets already
/// count as applied. A state restored that far would miss them, and apply
/// later reports against an older state. So the restore waits until every
/// partition's last stable offset reaches the end the partition had when
/// the wait began (read uncommitted). Without transactions the two are
/// the same and nothing waits.
fn no_open_transactions(
    cfg: &ClientConfig,
    committed: &BaseConsumer,
    open: &[Reading],
    until: Instant,
) -> Result<(), String> {
    let mut probe_cfg = cfg.clone();
    probe_cfg.set("isolation.level", "read_uncommitted");
    let probe: BaseConsumer = probe_cfg.create().map_err(|e| e.to_string())?;
    let ends = watermarks(&probe, open, Duration::from_secs(30));
    let mut said = false;
    loop {
        let stable = watermarks(committed, open, Duration::from_secs(30));
        let held: Vec<String> = ends
            .iter()
            .filter(|(at, &(_, end))| stable.get(*at).is_none_or(|&(_, lso)| lso < end))
            .map(|((t, p), &(_, end))| {
                let lso = stable.get(&(t.clone(), *p)).map_or(-1, |&(_, l)| l);
                format!("{t}/{p} (stable to {lso} of {end})")
            })
            .collect();
        if held.is_empty() {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!(
                "transactions still open in {} (their producer gone?); the broker aborts them after their transaction.timeout.ms",
                held.join(", ")
            ));
        }
        if !said {
            said = true;
            tracing::warn!(
                "restoring waits for transactions still open in {}: a killed instance's, aborted by the broker after its transaction.timeout.ms",
                held.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The low and high watermarks of the partitions in `open`, those the
/// broker answered for.
fn watermarks(
    consumer: &BaseConsumer,
    open: &[Reading],
    timeout: Duration,
) -> HashMap<(String, i32), (i64, i64)> {
    let ask = |at: Offset| {
        let mut tpl = TopicPartitionList::new();
        for r in open {
            // ListOffsets reads -2 as the earliest offset, -1 as the end.
            let _ = tpl.add_partition_offset(&r.at.0, r.at.1, at);
        }
        consumer.offsets_for_times(tpl, timeout)
    };
    let (low, high) = match (ask(Offset::Beginning), ask(Offset::End)) {
        (Ok(l), Ok(h)) => (l, h),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(
                "cannot ask where the changelog partitions end ({e}); reading each to its end-of-partition event"
            );
            return HashMap::new();
        }
    };
    let mut out = HashMap::new();
    for h in high.elements() {
        if h.error().is_err() {
            continue;
        }
        let l = low
            .find_partition(h.topic(), h.partition())
            .filter(|l| l.error().is_ok())
            .map(|l| l.offset());
        if let (Some(Offset::Offset(l)), Offset::Offset(h2)) = (l, h.offset()) {
            out.insert((h.topic().to_string(), h.partition()), (l, h2));
        }
    }
    out
}

/// Hands over (and removes) the entries of `open` that `is_done` says are
/// at their end.
fn finish_if(open: &mut Vec<Reading>, done: &impl Fn(Reading), is_done: impl Fn(&Reading) -> bool) {
    let mut i = 0;
    while i < open.len() {
        if is_done(&open[i]) {
            done(open.swap_remove(i));
        } else {
            i += 1;
        }
    }
}

/// The consumer's position in `at` (changelog topic, partition), when it
/// is a real offset.
fn offset_in(pos: Option<&TopicPartitionList>, at: &(String, i32)) -> Option<i64> {
    match pos?.find_partition(&at.0, at.1)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// Each open partition's position and end, for a message.
fn where_reading(consumer: &BaseConsumer, open: &[Reading]) -> String {
    let pos = consumer.position().ok();
    open.iter()
        .map(|o| {
            let at = offset_in(pos.as_ref(), &o.at).map_or("?".into(), |a| a.to_string());
            let high = o.high.map_or("?".into(), |h| h.to_string());
            format!(
                "{}/{} at {at} of {high} ({} records)",
                o.at.0,
                o.at.1,
                o.raw.len()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The consumer loop with its producer, built from settings.
pub struct Worker {
    /// Shared with every message read in place (see [`Payload`]).
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

/// The librdkafka settings every custody client starts from.
pub fn client_config(settings: &ServiceSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.brokers);
    c.set("client.id", "custody");
    for (k, v) in &settings.properties {
        c.set(k, v);
    }
    // librdkafka's warnings and errors reach stderr; its debug lines too
    // when the `debug` property asks for some.
    c.set_log_level(if settings.properties.contains_key("debug") {
        RDKafkaLogLevel::Debug
    } else {
        RDKafkaLogLevel::Warning
    });
    c
}

/// A librdkafka log line on stderr.
fn say_librdkafka(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", fac, "{message}")
        }
        // Only when its `debug` property asks for them: shown as asked.
        RDKafkaLogLevel::Debug => tracing::info!(target: "librdkafka", fac, "{message}"),
    }
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
            ("message.max.bytes", super::topics::LARGEST_MESSAGE),
        ] {
            if !settings.properties.contains_key(k) {
                pcfg.set(k, v);
            }
        }
        let eos = settings.delivery == super::settings::Delivery::ExactlyOnce;
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
            settings: settings.clone(),
            settings_digest: engine.settings_digest(),
            engine,
            ownership: ownership.clone(),
            producer,
            parts: HashMap::new(),
            metrics: Arc::clone(&metrics),
            health: Arc::clone(&health),
            generation: 0,
            restores: tx,
            client_config: base.clone(),
            max_report_bytes,
            eos,
            txn_open: Mutex::new(false),
            stop_seen: std::sync::OnceLock::new(),
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
            if let Some(e) = self.health.delivery_error() {
                result = Err(e);
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
                        let incoming = Incoming::from(m, &self.consumer);
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
                    core.decode_some(background);
                }
                if core.eos && last_commit.elapsed() >= Duration::from_millis(100) {
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
                        core.reattribute(Utc::now());
                    }
                }
                if last_tick.elapsed() >= self.settings.tick_interval {
                    last_tick = Instant::now();
                    core.tick(Utc::now());
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
        let deadline =
            *lock(&self.core).stop_seen.get_or_init(Instant::now) + self.settings.shutdown_timeout;
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
            .map(Part::drop_unapplied)
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
                    core.step_partition(&self.consumer, tp, false, None);
                }
                let busy = core
                    .parts
                    .values()
                    .any(|p| p.state.is_some() && p.in_flight() > 0 && !only_held(p));
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
            .producer
            .flush(deadline.saturating_duration_since(Instant::now()));
        core.for_each_part(|core, part| core.settle(&self.consumer, part));
        if flushed.is_ok() && core.producer.in_flight_count() > 0 {
            flushed = core
                .producer
                .flush(deadline.saturating_duration_since(Instant::now()));
            core.for_each_part(|core, part| core.settle(&self.consumer, part));
        }
        if let Err(e) = flushed {
            undone.get_or_insert(format!(
                "flushing the producer: {e}; {} records unacknowledged, their messages are redelivered after the restart",
                core.producer.in_flight_count()
            ));
        }
        if core.eos {
            if self.health.failed.load(Ordering::Acquire) {
                let _ = core
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
        if let Some(e) = self.health.delivery_error() {
            return Err(e);
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

/// The offset up to which a partition's messages are applied: the first
/// held chunk of an incomplete scan or the first message not yet applied,
/// else the one after the last applied.
fn eos_frontier(part: &Part) -> Option<i64> {
    let held = part
        .pending
        .iter()
        .filter(|p| p.hold && !p.changelog_ack.done())
        .filter_map(|p| p.offset)
        .min();
    let unapplied = part.jobs.front().map(|j| match j {
        Job::Decoding { msg, .. }
        | Job::Poison { msg, .. }
        | Job::Held { msg, .. }
        | Job::Decision { msg, .. } => msg.offset,
    });
    match (held, unapplied) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (Some(a), None) | (None, Some(a)) => Some(a),
        (None, None) => part.last_applied.map(|o| o + 1),
    }
}

/// Only held chunks remain, and messages done but for an offset that waits
/// for them: waiting for them would wait for chunks that are not coming
/// before the deadline.
fn only_held(p: &Part) -> bool {
    p.jobs.iter().all(|j| matches!(j, Job::Held { .. }))
        && p.pending.iter().all(|x| x.hold || x.complete())
}

/// "topic/0, topic/1" for a message.
fn list_partitions(tps: &[(String, i32)]) -> String {
    tps.iter()
        .map(|(t, p)| format!("{t}/{p}"))
        .collect::<Vec<_>>()
        .join(", ")
}
