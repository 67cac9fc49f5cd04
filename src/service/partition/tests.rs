//! The processor alone: its effects recorded, acknowledgements given by
//! hand, the clock moved by hand. Unit tests of each rule, then a property
//! test of random interleavings of messages, acknowledgements and crashes.

use super::*;
use crate::config::service::{ChangelogFormat, ServiceSettings};
use crate::config::Config;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::service::health::lock;
use crate::service::health::Health;
use crate::service::meta::header;
use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// An effect as recorded.
#[derive(Debug, Clone)]
enum Rec {
    Produce {
        topic: String,
        partition: Option<i32>,
        key: Vec<u8>,
        payload: Option<Vec<u8>>,
        headers: Vec<(String, Option<Vec<u8>>)>,
        ack: Arc<Ack>,
    },
    Store(i64),
    Pause,
    Resume,
    Fail(String),
}

impl Rec {
    fn header(&self, name: &str) -> Option<String> {
        match self {
            Rec::Produce { headers, .. } => headers
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.as_ref())
                .map(|v| String::from_utf8_lossy(v).into_owned()),
            _ => None,
        }
    }
}

/// An edge that records what is asked of it.
#[derive(Default)]
struct Recorder {
    effects: Mutex<Vec<Rec>>,
    /// Pauses and resumes fail.
    refuse_pause: AtomicBool,
}

impl Edge for Recorder {
    fn effect(&self, effect: Effect<'_>) -> bool {
        let rec = match effect {
            Effect::Produce {
                topic,
                partition,
                key,
                payload,
                headers,
                ack,
            } => Rec::Produce {
                topic: topic.to_string(),
                partition,
                key: key.to_vec(),
                payload: payload.map(<[u8]>::to_vec),
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
                    .collect(),
                ack: Arc::clone(ack),
            },
            Effect::StoreOffset { done, .. } => Rec::Store(done),
            Effect::Pause { .. } => Rec::Pause,
            Effect::Resume { .. } => Rec::Resume,
            Effect::Fail(e) => Rec::Fail(e.to_string()),
        };
        let took =
            !matches!(rec, Rec::Pause | Rec::Resume) || !self.refuse_pause.load(Ordering::Relaxed);
        lock(&self.effects).push(rec);
        took
    }
}

impl Recorder {
    fn take(&self) -> Vec<Rec> {
        std::mem::take(&mut *lock(&self.effects))
    }
}

const REPORTS: &str = "custody.reports";

fn shared(tune: impl FnOnce(&mut ServiceSettings)) -> Shared {
    let mut settings = ServiceSettings::default();
    tune(&mut settings);
    let engine = Engine::new(&Config::default());
    Shared {
        ticket_parts: None,
        event_partitions: Default::default(),
        settings_digest: engine.settings_digest(),
        settings,
        engine,
        ownership: None,
        metrics: Arc::new(Metrics::new()),
        health: Arc::new(Health::default()),
        max_report_bytes: 1 << 20,
        eos: false,
    }
}

/// A test's clocks and edge.
struct Bench {
    cx: Shared,
    edge: Recorder,
    start: Instant,
    /// Time since `start`.
    elapsed: Duration,
}

impl Bench {
    fn new(tune: impl FnOnce(&mut ServiceSettings)) -> Bench {
        Bench {
            cx: shared(tune),
            edge: Recorder::default(),
            start: Instant::now(),
            elapsed: Duration::ZERO,
        }
    }

    fn env(&self) -> Env<'_> {
        Env {
            cx: &self.cx,
            edge: &self.edge,
            wall: Utc
                .timestamp_opt(1_800_000_000, 0)
                .single()
                .unwrap_or_default(),
            now: self.start + self.elapsed,
        }
    }

    /// A partition with its state restored from `log` (key, value).
    fn restored(&self, log: &[(Vec<u8>, Option<Vec<u8>>)]) -> PartitionProcessor {
        self.restored_on(0, log)
    }

    /// Partition `partition` of the reports topic, restored from `log`.
    fn restored_on(
        &self,
        partition: i32,
        log: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> PartitionProcessor {
        let changelog = self.cx.settings.changelog_for(REPORTS);
        let mut p = PartitionProcessor::new(REPORTS, partition, &changelog, 1, self.start);
        let mut raw = changelog::RawLog::new();
        for (i, (k, v)) in log.iter().enumerate() {
            raw.push(i as i64, k, v.as_deref())
                .expect("a changelog record");
        }
        raw.seal();
        let scans = raw.take_scans();
        p.on_restore(&self.env(), raw, scans);
        p
    }

    fn feed(&self, p: &mut PartitionProcessor, msg: Incoming) {
        p.on_message(&self.cx, msg, self.start + self.elapsed);
        p.step(&self.env(), &|| false);
    }

    fn step(&self, p: &mut PartitionProcessor) {
        p.step(&self.env(), &|| false);
    }
}

/// A native report of `findings` (numbers standing for distinct findings).
fn report(findings: &[u8]) -> Vec<u8> {
    let mut out = String::new();
    for i in findings {
        out.push_str(&format!(
            "{{\"scanner\":\"t\",\"category\":\"sast\",\"rule_id\":\"R{i}\",\"severity\":\"high\",\"message\":\"m{i}\",\"location\":{{\"path\":\"src/f{i}.py\"}}}}\n"
        ));
    }
    out.into_bytes()
}

fn message(offset: i64, target: &str, payload: Vec<u8>, headers: &[(&str, &str)]) -> Incoming {
    let mut hs = vec![(header::FORMAT.to_string(), Some(b"native".to_vec()))];
    hs.extend(
        headers
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.as_bytes().to_vec()))),
    );
    Incoming {
        offset,
        timestamp: Some(1_790_000_000_000 + offset * 1000),
        key: Some(target.as_bytes().to_vec()),
        payload: Some(Payload::owned(payload)),
        headers: hs,
    }
}

const TARGET: &str = "repo:github.com/acme/api";

fn produced<'a>(effects: &'a [Rec], topic: &str) -> Vec<&'a Rec> {
    effects
        .iter()
        .filter(|e| matches!(e, Rec::Produce { topic: t, .. } if t == topic))
        .collect()
}

fn deliver(effects: &[Rec]) {
    for e in effects {
        if let Rec::Produce { ack, .. } = e {
            ack.delivered();
        }
    }
}

fn stores(effects: &[Rec]) -> Vec<i64> {
    effects
        .iter()
        .filter_map(|e| match e {
            Rec::Store(o) => Some(*o),
            _ => None,
        })
        .collect()
}

#[test]
fn a_reports_changelog_waits_for_its_events_and_its_offset_for_its_changelog() {
    let b = Bench::new(|_| {});
    let mut p = b.restored(&[]);
    assert!(matches!(b.edge.take()[..], [Rec::Resume]));
    b.feed(&mut p, message(0, TARGET, report(&[1, 2]), &[]));
    let events = b.edge.take();
    let findings = produced(&events, &b.cx.settings.findings_topic);
    assert_eq!(findings.len(), 2, "two findings opened: {events:?}");
    let changelog = b.cx.settings.changelog_for(REPORTS);
    assert!(
        produced(&events, &changelog).is_empty(),
        "no changelog record before the events are acknowledged"
    );
    assert!(stores(&events).is_empty());
    // One event of two acknowledged: still nothing.
    if let Rec::Produce { ack, .. } = findings[0] {
        ack.delivered();
    }
    b.step(&mut p);
    assert!(b.edge.take().is_empty());
    deliver(&events);
    b.step(&mut p);
    let records = b.edge.take();
    let written = produced(&records, &changelog);
    assert!(
        written.len() > 2,
        "the findings' and the ticket's records: {records:?}"
    );
    assert!(
        written.iter().all(|r| matches!(
            r,
            Rec::Produce {
                partition: Some(0),
                ..
            }
        )),
        "to the changelog partition of the reports partition"
    );
    // The record of the applied offset comes first.
    assert!(matches!(written[0], Rec::Produce { key, .. } if key.starts_with(b"o\0")));
    assert!(
        stores(&records).is_empty(),
        "no offset before the changelog is acknowledged"
    );
    deliver(&records);
    b.step(&mut p);
    assert_eq!(stores(&b.edge.take()), [0]);
    assert_eq!(p.next_offset, Some(1));
    assert_eq!(p.in_flight(), 0);
}

/// A report's finding events go to the findings partition of the report's
/// number, modulo the findings topic's count.
#[test]
fn a_reports_finding_events_go_to_the_findings_partition_of_its_own_number() {
    // Reports partition 6: with a findings topic of 4 partitions, every
    // event of the report goes to partition 2, whatever its fingerprint;
    // with the count not known, the producer's partitioner spreads them
    // by key.
    for (count, want) in [(Some(4), Some(2)), (None, None)] {
        let mut b = Bench::new(|_| {});
        if let Some(n) = count {
            b.cx.event_partitions = [(b.cx.settings.findings_topic.clone(), n)].into();
        }
        let mut p = b.restored_on(6, &[]);
        b.edge.take();
        b.feed(&mut p, message(0, TARGET, report(&[1, 2, 3, 4, 5]), &[]));
        let events = b.edge.take();
        let findings = produced(&events, &b.cx.settings.findings_topic);
        assert_eq!(findings.len(), 5, "five findings opened: {events:?}");
        assert!(
            findings
                .iter()
                .all(|r| matches!(r, Rec::Produce { partition, .. } if *partition == want)),
            "{count:?} partitions: {findings:?}"
        );
    }
}

/// The ticket events of a report's targets' own tickets go to the
/// partition of the report's number in each route's topic, modulo that
/// topic's count; a topic whose count is not known leaves them to the
/// producer's partitioner.
#[test]
fn a_reports_ticket_events_go_to_the_partition_of_its_own_number_in_their_route() {
    let mut b = Bench::new(|_| {});
    let cfg = Config::parse(
        "[[tickets.routes]]\ntopic = \"custody.tickets.urgent\"\nmin_severity = \"high\"\n",
        "t.toml",
    )
    .expect("a route");
    b.cx.engine = Engine::new(&cfg);
    b.cx.settings_digest = b.cx.engine.settings_digest();
    // Reports partition 7: urgent tickets (3 partitions) to partition 1,
    // the others to the default topic, whose count is not known.
    b.cx.event_partitions = [
        (b.cx.settings.findings_topic.clone(), 4),
        ("custody.tickets.urgent".to_string(), 3),
    ]
    .into();
    let mut p = b.restored_on(7, &[]);
    b.edge.take();
    let mut payload = report(&[1, 2, 3]);
    payload.extend_from_slice(
        b"{\"scanner\":\"t\",\"category\":\"sast\",\"rule_id\":\"L1\",\"severity\":\"medium\",\"message\":\"l\",\"location\":{\"path\":\"src/l.py\"}}\n",
    );
    b.feed(&mut p, message(0, TARGET, payload, &[]));
    let events = b.edge.take();
    let partitions = |topic: &str| -> Vec<Option<i32>> {
        produced(&events, topic)
            .iter()
            .filter_map(|r| match r {
                Rec::Produce { partition, .. } => Some(*partition),
                _ => None,
            })
            .collect()
    };
    assert_eq!(partitions(&b.cx.settings.findings_topic), vec![Some(3); 4]);
    assert_eq!(partitions("custody.tickets.urgent"), vec![Some(1); 3]);
    assert_eq!(partitions("custody.tickets"), vec![None]);
}

/// The targets of the finding events among `effects`, in order.
fn event_targets(b: &Bench, effects: &[Rec]) -> Vec<String> {
    produced(effects, &b.cx.settings.findings_topic)
        .iter()
        .filter_map(|r| match r {
            Rec::Produce {
                payload: Some(p), ..
            } => serde_json::from_slice::<serde_json::Value>(p).ok(),
            _ => None,
        })
        .map(|v| v["target"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn decodes_handed_out_are_applied_in_order_once_handed_back() {
    const OTHER: &str = "repo:github.com/acme/web";
    let b = Bench::new(|_| {});
    let mut p = b.restored(&[]);
    b.edge.take();
    let now = b.start;
    p.on_message(&b.cx, message(0, TARGET, report(&[1]), &[]), now);
    p.on_message(&b.cx, message(1, OTHER, report(&[2]), &[]), now);
    let mut tasks = p.decode_ahead();
    assert_eq!(tasks.len(), 2);
    assert!(
        p.decode_ahead().is_empty(),
        "each decode is handed out once"
    );
    // Nothing is applied while the first message's decode is out, even
    // when the second's is back.
    b.step(&mut p);
    let second = tasks.pop().unwrap();
    let first = tasks.pop().unwrap();
    p.on_decoded(second.run());
    b.step(&mut p);
    assert!(event_targets(&b, &b.edge.take()).is_empty());
    p.on_decoded(first.run());
    b.step(&mut p);
    assert_eq!(
        event_targets(&b, &b.edge.take()),
        [TARGET.to_string(), OTHER.to_string()]
    );
    assert_eq!(p.in_flight(), 2, "both applied, their records in flight");
}

#[test]
fn a_decode_result_of_another_assignment_or_a_dropped_message_is_let_go() {
    let b = Bench::new(|_| {});
    let mut old = b.restored(&[]);
    let changelog = b.cx.settings.changelog_for(REPORTS);
    let mut p = PartitionProcessor::new(REPORTS, 0, &changelog, 2, b.start);
    p.on_restore(&b.env(), changelog::RawLog::new(), Vec::new());
    b.edge.take();
    // The same message in the partition's earlier assignment and now.
    old.on_message(&b.cx, message(0, TARGET, report(&[1]), &[]), b.start);
    p.on_message(&b.cx, message(0, TARGET, report(&[1, 2]), &[]), b.start);
    let stale = old.decode_ahead().pop().unwrap().run();
    let task = p.decode_ahead().pop().unwrap();
    p.on_decoded(stale);
    b.step(&mut p);
    assert!(
        event_targets(&b, &b.edge.take()).is_empty(),
        "the earlier assignment's result is not this message's"
    );
    // Dropped at a revoke, then consumed again: decoded afresh, and the
    // result handed back late changes nothing.
    assert_eq!(p.drop_unapplied(), 1);
    p.on_message(&b.cx, message(0, TARGET, report(&[1, 2]), &[]), b.start);
    p.on_decoded(task.run());
    b.step(&mut p);
    assert_eq!(
        event_targets(&b, &b.edge.take()).len(),
        2,
        "two findings, once"
    );
}

#[test]
fn a_report_that_does_not_decode_is_dead_lettered_as_it_came_with_its_reason() {
    let b = Bench::new(|_| {});
    let mut p = b.restored(&[]);
    b.edge.take();
    let bad = b"{\"not\": a report";
    b.feed(&mut p, message(0, TARGET, bad.to_vec(), &[]));
    let effects = b.edge.take();
    let dead = produced(&effects, &b.cx.settings.dead_letter_topic);
    assert_eq!(dead.len(), 1, "{effects:?}");
    // The reason and the error the decoder gives.
    let ctx = b.cx.engine.decode_context();
    let Err(e) = crate::normalize::decode(bad, Some(crate::normalize::Format::Native), ctx) else {
        panic!("the report decodes");
    };
    assert_eq!(
        dead[0].header(header::DLQ_REASON).as_deref(),
        Some(e.reason())
    );
    assert_eq!(dead[0].header(header::DLQ_ERROR), Some(e.to_string()));
    assert_eq!(dead[0].header(header::DLQ_OFFSET).as_deref(), Some("0"));
    assert_eq!(dead[0].header(header::FORMAT).as_deref(), Some("native"));
    assert!(matches!(dead[0], Rec::Produce { payload: Some(p), key, .. }
        if p == b"{\"not\": a report" && key == TARGET.as_bytes()));
    assert!(produced(&effects, &b.cx.settings.findings_topic).is_empty());
    b.step(&mut p);
    assert!(
        stores(&b.edge.take()).is_empty(),
        "stored only once the dead letter is"
    );
    deliver(&effects);
    b.step(&mut p);
    assert_eq!(stores(&b.edge.take()), [0]);
}

#[test]
fn chunks_are_joined_in_any_order_and_their_offsets_stored_once_the_scan_is_done() {
    let b = Bench::new(|_| {});
    let mut p = b.restored(&[]);
    b.edge.take();
    let whole = report(&[1, 2, 3]);
    let (first, second) = whole.split_at(whole.len() / 2);
    let chunk = |offset, i: &str, bytes: &[u8]| {
        message(
            offset,
            TARGET,
            bytes.to_vec(),
            &[(header::CHUNK, i), (header::SCAN_ID, "s1")],
        )
    };
    b.feed(&mut p, chunk(0, "2/2", second));
    b.step(&mut p);
    assert!(
        b.edge.take().is_empty(),
        "a chunk waits for the rest of its scan"
    );
    b.feed(&mut p, chunk(1, "1/2", first));
    let events = b.edge.take();
    assert_eq!(
        produced(&events, &b.cx.settings.findings_topic).len(),
        3,
        "{events:?}"
    );
    deliver(&events);
    b.step(&mut p);
    let records = b.edge.take();
    deliver(&records);
    b.step(&mut p);
    assert_eq!(stores(&b.edge.take()), [1], "both chunks' offsets, at once");
}

#[test]
fn a_chunked_scan_missing_a_chunk_past_the_timeout_is_dead_lettered() {
    let mut b = Bench::new(|s| s.chunk_timeout = Duration::from_secs(60));
    let mut p = b.restored(&[]);
    b.edge.take();
    let m = message(
        0,
        TARGET,
        report(&[1]),
        &[(header::CHUNK, "1/2"), (header::SCAN_ID, "s1")],
    );
    b.feed(&mut p, m);
    b.elapsed = Duration::from_secs(59);
    b.step(&mut p);
    assert!(b.edge.take().is_empty(), "not yet");
    b.elapsed = Duration::from_secs(61);
    b.step(&mut p);
    let effects = b.edge.take();
    let dead = produced(&effects, &b.cx.settings.dead_letter_topic);
    assert_eq!(dead.len(), 1, "{effects:?}");
    assert_eq!(
        dead[0].header(header::DLQ_REASON).as_deref(),
        Some("incomplete_scan")
    );
    deliver(&effects);
    b.step(&mut p);
    assert_eq!(stores(&b.edge.take()), [0]);
    assert!(p.chunks.is_empty());
}

#[test]
fn an_event_the_broker_refuses_dead_letters_its_report_and_the_partition_goes_on() {
    let b = Bench::new(|_| {});
    let mut p = b.restored(&[]);
    b.edge.take();
    b.feed(&mut p, message(0, TARGET, report(&[1]), &[]));
    let events = b.edge.take();
    for (i, e) in events.iter().enumerate() {
        if let Rec::Produce { ack, .. } = e {
            if i == 0 {
                ack.refused("too large".into());
            } else {
                ack.delivered();
            }
        }
    }
    b.step(&mut p);
    let effects = b.edge.take();
    let dead = produced(&effects, &b.cx.settings.dead_letter_topic);
    assert_eq!(dead.len(), 1, "{effects:?}");
    assert_eq!(
        dead[0].header(header::DLQ_REASON).as_deref(),
        Some("event_refused")
    );
    assert!(!effects.iter().any(|e| matches!(e, Rec::Fail(_))));
    deliver(&effects);
    b.step(&mut p);
    assert_eq!(stores(&b.edge.take()), [0]);
    // The next report is applied as ever.
    b.feed(&mut p, message(1, TARGET, report(&[1, 2]), &[]));
    assert_eq!(
        produced(&b.edge.take(), &b.cx.settings.findings_topic).len(),
        1
    );
}

#[test]
fn a_refused_changelog_record_stops_the_service() {
    let b = Bench::new(|_| {});
    let mut p = b.restored(&[]);
    b.edge.take();
    b.feed(&mut p, message(0, TARGET, report(&[1]), &[]));
    deliver(&b.edge.take());
    b.step(&mut p);
    for e in b.edge.take() {
        if let Rec::Produce { ack, .. } = e {
            ack.refused("too large".into());
        }
    }
    b.step(&mut p);
    let effects = b.edge.take();
    assert!(
        matches!(&effects[..], [Rec::Fail(e)] if e.contains("changelog record refused")),
        "{effects:?}"
    );
}

#[test]
fn a_partition_pauses_at_its_bound_and_resumes_at_half() {
    let b = Bench::new(|s| s.max_in_flight_messages = 4);
    let mut p = b.restored(&[]);
    b.edge.take();
    let mut all = Vec::new();
    for o in 0..4 {
        b.feed(&mut p, message(o, TARGET, report(&[o as u8]), &[]));
        all.extend(b.edge.take());
    }
    assert!(matches!(all.last(), Some(Rec::Pause)), "{all:?}");
    assert_eq!(all.iter().filter(|e| matches!(e, Rec::Pause)).count(), 1);
    // Everything acknowledged: records, then offsets, then the resume.
    for _ in 0..3 {
        let effects: Vec<Rec> = std::mem::take(&mut all);
        deliver(&effects);
        b.step(&mut p);
        all = b.edge.take();
        if all.iter().any(|e| matches!(e, Rec::Resume)) {
            break;
        }
        deliver(&effects);
    }
    assert!(all.iter().any(|e| matches!(e, Rec::Resume)), "{all:?}");
    assert!(!p.paused);
}

/// Acknowledges every record the edge holds, keeping them in `log` (the
/// changelog as the broker holds it).
fn deliver_into(b: &Bench, log: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>) {
    for e in b.edge.take() {
        if let Rec::Produce {
            key, payload, ack, ..
        } = e
        {
            ack.delivered();
            log.push((key, payload));
        }
    }
}

#[test]
fn after_a_crash_what_the_changelog_says_was_applied_is_not_sent_again() {
    let b = Bench::new(|_| {});
    let mut p = b.restored(&[]);
    b.edge.take();
    let mut log = Vec::new();
    let mut first_events = BTreeSet::new();
    for (o, f) in [(0, &[1u8][..]), (1, &[1, 2][..])] {
        b.feed(&mut p, message(o, TARGET, report(f), &[]));
        let events = b.edge.take();
        first_events.extend(event_ids(&events));
        deliver(&events);
        b.step(&mut p);
        deliver_into(&b, &mut log);
    }
    // The process died before its offsets were committed: both messages
    // come again, then a new one.
    let mut p = b.restored(&log);
    b.edge.take();
    b.feed(&mut p, message(0, TARGET, report(&[1]), &[]));
    b.feed(&mut p, message(1, TARGET, report(&[1, 2]), &[]));
    let again = b.edge.take();
    assert!(
        event_ids(&again).is_empty(),
        "nothing sent again: {again:?}"
    );
    b.feed(&mut p, message(2, TARGET, report(&[2]), &[]));
    let next = event_ids(&b.edge.take());
    assert!(!next.is_empty(), "the new report resolves finding 1");
    assert!(next.is_disjoint(&first_events));
}

/// Feeds `msgs` (offset, findings) one by one, delivering every event
/// and changelog record; returns the changelog records produced.
fn applied_log(
    b: &Bench,
    p: &mut PartitionProcessor,
    msgs: &[(i64, &[u8])],
) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut log = Vec::new();
    let settle = |p: &mut PartitionProcessor, log: &mut Vec<_>| {
        deliver(&b.edge.take());
        b.step(p);
        deliver_into(b, log);
    };
    // What a restore rewrote (under the JSON format).
    p.decode_some(&b.env(), &|| false);
    settle(p, &mut log);
    for &(o, f) in msgs {
        b.feed(p, message(o, TARGET, report(f), &[]));
        settle(p, &mut log);
    }
    log
}

/// The state a processor holds, every target decoded.
fn state_of(b: &Bench, p: &mut PartitionProcessor) -> crate::lifecycle::State {
    p.decode_some(&b.env(), &|| false);
    p.state.clone().unwrap_or_default()
}

/// A changelog written as JSON (by a processor under
/// `changelog_format = "json"`, as the version before the binary form
/// wrote it) restores under the binary format, which goes on with binary
/// records; the mixed log restores the same state as a processor that
/// applied everything itself; and under the JSON format again, a restore
/// rewrites the target as JSON, so that once compacted no binary record
/// or dictionary key is left.
#[test]
fn a_json_changelog_goes_on_in_binary_and_back_to_json() {
    // Every scan writes every finding it sees, so restored states are
    // exact (`last_seen` included).
    let json = Bench::new(|s| {
        s.changelog_format = ChangelogFormat::Json;
        s.last_seen_resolution = Duration::ZERO;
    });
    let binary = Bench::new(|s| s.last_seen_resolution = Duration::ZERO);
    let msgs: [(i64, &[u8]); 4] = [(0, &[1, 2, 3]), (1, &[1, 2]), (2, &[2, 3, 4]), (3, &[4, 5])];
    let mut p = json.restored(&[]);
    let mut log = applied_log(&json, &mut p, &msgs[..2]);
    let is_binary = |v: &Option<Vec<u8>>| v.as_deref().is_some_and(|v| v.first() == Some(&0xB1));
    assert!(!log.iter().any(|(_, v)| is_binary(v)), "JSON only");
    let mut p = binary.restored(&log);
    let more = applied_log(&binary, &mut p, &msgs[2..]);
    assert!(more.iter().any(|(_, v)| is_binary(v)), "binary records");
    assert!(
        more.iter().any(|(k, _)| k.starts_with(b"d\0")),
        "a dictionary"
    );
    log.extend(more);
    let mut calm = binary.restored(&[]);
    applied_log(&binary, &mut calm, &msgs);
    let want = state_of(&binary, &mut calm);
    assert!(!want.targets.is_empty());
    let mut p = binary.restored(&log);
    assert_eq!(state_of(&binary, &mut p), want);
    // Back to JSON.
    let mut p = json.restored(&log);
    let rewritten = applied_log(&json, &mut p, &[]);
    assert!(!rewritten.is_empty(), "the target is rewritten as JSON");
    log.extend(rewritten);
    // Compacted: the last record of each key, in log order (tombstones
    // kept, as the broker keeps them a while).
    let mut last: HashMap<&[u8], usize> = HashMap::new();
    for (i, (k, _)) in log.iter().enumerate() {
        last.insert(k, i);
    }
    let compacted: Vec<(Vec<u8>, Option<Vec<u8>>)> = log
        .iter()
        .enumerate()
        .filter(|(i, (k, _))| last.get(k.as_slice()) == Some(i))
        .map(|(_, r)| r.clone())
        .collect();
    // A last scan record that does not decode is passed over by any
    // version; nothing else is binary, and dictionary keys are tombstones.
    assert!(!compacted
        .iter()
        .any(|(k, v)| is_binary(v) && !k.starts_with(b"s\0")));
    assert!(!compacted
        .iter()
        .any(|(k, v)| k.starts_with(b"d\0") && v.is_some()));
    let mut p = json.restored(&compacted);
    assert_eq!(state_of(&json, &mut p), want);
}

/// Event ids of the events produced (to any topic but the changelog and
/// the dead letters).
fn event_ids(effects: &[Rec]) -> BTreeSet<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Rec::Produce {
                payload: Some(p),
                topic,
                ..
            } if !topic.contains("changelog") => serde_json::from_slice::<serde_json::Value>(p)
                .ok()?
                .get("event_id")?
                .as_str()
                .map(String::from),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------
// Random interleavings.

/// What the property test does next.
#[derive(Debug, Clone)]
enum Op {
    /// Consume the next message (unless the partition is paused).
    Consume,
    /// The broker acknowledges some events (any of them, by the selector)
    /// and the first `n` changelog records outstanding (in order: one
    /// partition).
    Ack { events: u8, changelog: u8 },
    /// The process dies: unacknowledged records are lost, the offsets
    /// committed are some of those stored, and a new processor restores
    /// from the changelog acknowledged so far.
    Crash { committed_lag: u8 },
    /// A record is lost for good (the broker failed it): the service
    /// stops, and restarts as after a crash.
    Lose { which: u8 },
    /// The partition moves to another instance: what is consumed and not
    /// applied is dropped, what is applied is settled and committed, and
    /// the next owner restores from the changelog.
    Rebalance,
    /// The edge takes the decodes not started yet, to run ahead.
    DecodeAhead,
    /// One decode taken ahead is done and handed back.
    DecodeBack { which: u8 },
    /// Exactly-once: the open transaction commits, with the offset the
    /// processor says is applied (at-least-once: nothing).
    Commit,
    /// A target's state is evicted from memory (decoded again when next
    /// needed).
    Evict { which: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Consume),
        4 => (any::<u8>(), 0u8..6).prop_map(|(events, changelog)| Op::Ack { events, changelog }),
        1 => (0u8..3).prop_map(|committed_lag| Op::Crash { committed_lag }),
        1 => any::<u8>().prop_map(|which| Op::Lose { which }),
        1 => Just(Op::Rebalance),
        1 => Just(Op::DecodeAhead),
        2 => any::<u8>().prop_map(|which| Op::DecodeBack { which }),
        2 => Just(Op::Commit),
        1 => any::<u8>().prop_map(|which| Op::Evict { which }),
    ]
}

/// A produced record waiting for its acknowledgement, with the message it
/// belongs to.
struct Outstanding {
    rec: Rec,
    /// The offset of the message whose record this is.
    offset: i64,
    changelog: bool,
}

/// The world around one partition: the reports topic, the changelog, the
/// topics events go to, and the processor.
struct World<'a> {
    bench: &'a Bench,
    input: Vec<Incoming>,
    p: PartitionProcessor,
    /// The next message the consumer reads.
    next: usize,
    outstanding: Vec<Outstanding>,
    /// The changelog as the broker holds it (acknowledged records).
    log: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Event id -> payload, of every event acknowledged.
    delivered: BTreeMap<String, Vec<u8>>,
    /// Offsets stored since the last crash.
    stored: Vec<i64>,
    committed: i64,
    /// The message whose changelog records come next (from the applied
    /// record that precedes them).
    changelog_of: i64,
    /// The message being consumed (events produced now are its).
    consuming: i64,
    /// Decodes the edge took ahead and has not handed back.
    away: Vec<DecodeTask>,
    /// Exactly-once: what is acknowledged goes into the open transaction,
    /// and reaches the changelog and the consumers only when it commits.
    eos: bool,
    /// The open transaction's changelog records and events, acknowledged.
    txn_log: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    txn_events: Vec<Vec<u8>>,
}

impl World<'_> {
    fn collect(&mut self) {
        let changelog = self.bench.cx.settings.changelog_for(REPORTS);
        for rec in self.bench.edge.take() {
            match &rec {
                Rec::Produce {
                    topic,
                    key,
                    payload,
                    ..
                } if *topic == changelog => {
                    if key.starts_with(b"o\0") {
                        let applied: changelog::Applied =
                            serde_json::from_slice(payload.as_deref().unwrap_or_default())
                                .expect("an applied record");
                        self.changelog_of = applied.offset;
                    }
                    // Rule: no changelog record of a message before the
                    // events of it and of every message before it are
                    // acknowledged (under exactly-once both go in one
                    // transaction, and the rule is the transaction's).
                    let o = self.changelog_of;
                    assert!(
                        self.eos || !self.outstanding.iter().any(|x| !x.changelog && x.offset <= o),
                        "a changelog record of message {o} was produced while events of messages up to it were unacknowledged"
                    );
                    self.outstanding.push(Outstanding {
                        rec,
                        offset: o,
                        changelog: true,
                    });
                }
                Rec::Produce { .. } => {
                    let offset = self.consuming;
                    self.outstanding.push(Outstanding {
                        rec,
                        offset,
                        changelog: false,
                    });
                }
                Rec::Store(done) => {
                    assert!(!self.eos, "offset {done} stored under exactly-once");
                    // Rule: no offset before the changelog records of every
                    // message up to it are acknowledged.
                    assert!(
                        !self
                            .outstanding
                            .iter()
                            .any(|x| x.changelog && x.offset <= *done),
                        "offset {done} stored while changelog records up to it were unacknowledged"
                    );
                    assert!(
                        self.stored.last().is_none_or(|l| l < done),
                        "offsets stored in order"
                    );
                    self.stored.push(*done);
                }
                Rec::Fail(e) => panic!("the processor failed: {e}"),
                Rec::Pause | Rec::Resume => {}
            }
        }
    }

    fn step(&mut self) {
        self.bench.step(&mut self.p);
        self.collect();
    }

    fn consume(&mut self) {
        if self.p.paused || self.next >= self.input.len() {
            return;
        }
        let msg = self.input[self.next].clone();
        self.consuming = msg.offset;
        self.next += 1;
        self.bench.feed(&mut self.p, msg);
        self.collect();
        // Rule: the in-flight bound holds (a message more than the bound:
        // the one that reached it), held chunks aside, which have a bound
        // of their own: the larger of the in-flight bytes and the largest
        // report.
        let max = self.bench.cx.settings.max_in_flight_messages;
        // Held chunks, and messages done but for an offset that waits for
        // them, have bounds of their own.
        let held = self.p.chunks.values().map(|c| c.held.len()).sum::<usize>();
        let waiting = if self.p.chunks.is_empty() {
            0
        } else {
            self.p.pending.iter().filter(|p| p.complete()).count()
        };
        assert!(
            self.p.in_flight() <= max + 1 + held + waiting,
            "{} in flight, {held} of them held chunks, {waiting} waiting for them",
            self.p.in_flight()
        );
        let held_bytes: usize = self.p.chunks.values().map(|c| c.bytes).sum();
        let limit = self
            .bench
            .cx
            .settings
            .max_in_flight_bytes
            .max(self.bench.cx.max_report_bytes as usize);
        assert!(held_bytes <= limit, "{held_bytes} bytes of chunks held");
    }

    fn ack(&mut self, events: u8, changelog: u8) {
        let mut kept = Vec::new();
        let mut n_changelog = 0;
        for (i, x) in std::mem::take(&mut self.outstanding)
            .into_iter()
            .enumerate()
        {
            let take = if x.changelog {
                n_changelog += 1;
                n_changelog <= changelog
            } else {
                (events >> (i % 8)) & 1 == 1
            };
            if !take {
                kept.push(x);
                continue;
            }
            if let Rec::Produce {
                ack, key, payload, ..
            } = &x.rec
            {
                ack.delivered();
                match (x.changelog, payload, self.eos) {
                    (true, _, false) => self.log.push((key.clone(), payload.clone())),
                    (true, _, true) => self.txn_log.push((key.clone(), payload.clone())),
                    (false, Some(p), false) => self.remember(p),
                    (false, Some(p), true) => self.txn_events.push(p.clone()),
                    (false, None, _) => {}
                }
            }
        }
        self.outstanding = kept;
        self.step();
    }

    /// An event acknowledged: the same id must always carry the same
    /// event.
    fn remember(&mut self, payload: &[u8]) {
        let Some(id) = serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v.get("event_id")?.as_str().map(String::from))
        else {
            return;
        };
        if let Some(earlier) = self.delivered.get(&id) {
            assert_eq!(
                String::from_utf8_lossy(earlier),
                String::from_utf8_lossy(payload),
                "two different events share the id {id}"
            );
        }
        self.delivered.insert(id, payload.to_vec());
    }

    /// One decode taken ahead handed back (they finish in any order).
    fn decode_back(&mut self, which: u8) {
        if self.away.is_empty() {
            return;
        }
        let task = self.away.remove(which as usize % self.away.len());
        self.p.on_decoded(task.run());
        self.step();
    }

    /// Exactly-once: the edge commits the open transaction as the Kafka
    /// edge does: the offset the processor says is applied, then every
    /// record produced is flushed (acknowledged) and the whole commits.
    fn commit(&mut self) {
        if !self.eos {
            return;
        }
        let frontier = self.p.eos_frontier();
        for x in std::mem::take(&mut self.outstanding) {
            if let Rec::Produce {
                ack, key, payload, ..
            } = x.rec
            {
                ack.delivered();
                if x.changelog {
                    self.txn_log.push((key, payload));
                } else if let Some(p) = payload {
                    self.txn_events.push(p);
                }
            }
        }
        self.log.append(&mut self.txn_log);
        for e in std::mem::take(&mut self.txn_events) {
            self.remember(&e);
        }
        if let Some(next) = frontier {
            assert!(next >= self.committed, "the committed offset went back");
            self.committed = next;
        }
    }

    fn crash(&mut self, committed_lag: u8) {
        // Decodes out with the edge die with it, and so does the open
        // transaction: the broker aborts it.
        self.away.clear();
        self.txn_log.clear();
        self.txn_events.clear();
        // Some of the stored offsets were committed (auto-commit lags).
        let keep = self.stored.len().saturating_sub(committed_lag as usize);
        if let Some(done) = keep.checked_sub(1).map(|i| self.stored[i]) {
            self.committed = self.committed.max(done + 1);
        }
        self.outstanding.clear();
        self.stored.clear();
        self.p = self.bench.restored(&self.log);
        self.collect();
        self.next = usize::try_from(self.committed).unwrap_or(0);
    }

    /// One outstanding record lost: nothing at or after its message may
    /// be stored, and the service stops.
    fn lose(&mut self, which: u8) {
        if self.outstanding.is_empty() {
            return;
        }
        let i = which as usize % self.outstanding.len();
        let lost = self.outstanding.remove(i);
        if let Rec::Produce { ack, .. } = &lost.rec {
            ack.lost();
        }
        self.step();
        assert!(
            self.stored.iter().all(|&o| o < lost.offset),
            "offset stored past a lost record of message {}",
            lost.offset
        );
        self.crash(0);
    }

    /// A graceful handoff to the next owner of the partition.
    fn rebalance(&mut self) {
        self.p.drop_unapplied();
        // Settle what is applied: everything outstanding is acknowledged.
        for _ in 0..100 {
            if !self.p.busy() {
                break;
            }
            self.ack(u8::MAX, u8::MAX);
        }
        assert!(!self.p.busy(), "applied work left unsettled at a revoke");
        self.commit();
        self.crash(0);
    }

    /// Consumes and acknowledges everything left.
    fn finish(&mut self) {
        for _ in 0..10_000 {
            if self.next >= self.input.len() && self.p.in_flight() == 0 {
                self.commit();
                return;
            }
            while !self.away.is_empty() {
                self.decode_back(0);
            }
            self.consume();
            self.ack(u8::MAX, u8::MAX);
            self.commit();
        }
        panic!(
            "the partition never drained: {} in flight",
            self.p.in_flight()
        );
    }
}

/// Messages: reports of two targets, rescans, the same report again, a
/// report that does not decode.
fn inputs() -> impl Strategy<Value = Vec<Incoming>> {
    let one = (
        0u8..2,
        prop::collection::btree_set(0u8..6, 0..4),
        0u8..10,
        any::<bool>(),
    );
    prop::collection::vec(one, 1..12).prop_map(|ms| {
        let mut out = Vec::new();
        for (n, (t, findings, bad, chunked)) in ms.into_iter().enumerate() {
            let target = if t == 0 {
                TARGET
            } else {
                "repo:github.com/acme/web"
            };
            let f: Vec<u8> = findings.into_iter().collect();
            let payload = if bad == 0 {
                b"{oops".to_vec()
            } else {
                report(&f)
            };
            let offset = out.len() as i64;
            if chunked && payload.len() > 1 {
                // Two chunks of one scan, the second first.
                let (a, b) = payload.split_at(payload.len() / 2);
                let id = format!("scan-{n}");
                out.push(message(
                    offset,
                    target,
                    b.to_vec(),
                    &[(header::CHUNK, "2/2"), (header::SCAN_ID, id.as_str())],
                ));
                out.push(message(
                    offset + 1,
                    target,
                    a.to_vec(),
                    &[(header::CHUNK, "1/2"), (header::SCAN_ID, id.as_str())],
                ));
            } else {
                out.push(message(offset, target, payload, &[]));
            }
        }
        out
    })
}

fn run(input: Vec<Incoming>, ops: &[Op], eos: bool) -> BTreeMap<String, Vec<u8>> {
    let mut bench = Bench::new(|s| s.max_in_flight_messages = 3);
    bench.cx.eos = eos;
    let p = bench.restored(&[]);
    bench.edge.take();
    let mut w = World {
        bench: &bench,
        input,
        p,
        next: 0,
        outstanding: Vec::new(),
        log: Vec::new(),
        delivered: BTreeMap::new(),
        stored: Vec::new(),
        committed: 0,
        changelog_of: -1,
        consuming: -1,
        away: Vec::new(),
        eos,
        txn_log: Vec::new(),
        txn_events: Vec::new(),
    };
    let mut crashes = 0;
    for op in ops {
        match op {
            Op::Consume => w.consume(),
            Op::Ack { events, changelog } => w.ack(*events, *changelog),
            Op::Crash { committed_lag } if crashes < 3 => {
                crashes += 1;
                w.crash(*committed_lag);
            }
            Op::Crash { .. } => {}
            Op::Lose { which } if crashes < 3 => {
                crashes += 1;
                w.lose(*which);
            }
            Op::Lose { .. } => {}
            Op::Rebalance => w.rebalance(),
            Op::DecodeAhead => {
                let tasks = w.p.decode_ahead();
                w.away.extend(tasks);
            }
            Op::DecodeBack { which } => w.decode_back(*which),
            Op::Commit => w.commit(),
            Op::Evict { which } => {
                let target = if which % 2 == 0 {
                    TARGET
                } else {
                    "repo:github.com/acme/web"
                };
                w.p.evict(target, w.bench.env().wall);
            }
        }
    }
    w.finish();
    w.delivered
}

/// The events delivered when `ops` happen (under exactly-once or not) are
/// those of an at-least-once run where nothing failed.
fn same_as_calm(input: Vec<Incoming>, ops: &[Op], eos: bool) -> Result<(), TestCaseError> {
    let calm = run(input.clone(), &[], false);
    let stormy = run(input, ops, eos);
    let calm_ids: Vec<&String> = calm.keys().collect();
    let stormy_ids: Vec<&String> = stormy.keys().collect();
    prop_assert_eq!(calm_ids, stormy_ids);
    prop_assert_eq!(calm, stormy);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Whatever the interleaving of messages (chunked scans among them),
    /// acknowledgements, lost records, crashes, rebalances, decodes run
    /// ahead and handed back in any order and targets evicted, the ordering
    /// rules hold at every effect (checked as they
    /// come, see `World::collect`), the in-flight bound holds, no two
    /// different events share an id, and the events delivered in the end
    /// are those of a run where nothing failed.
    #[test]
    fn crashes_and_acknowledgements_in_any_order_deliver_the_same_events(
        input in inputs(),
        ops in prop::collection::vec(op(), 0..60),
    ) {
        same_as_calm(input, &ops, false)?;
    }

    /// The same under exactly-once: records go into transactions that
    /// commit at random moments with the offset the processor says is
    /// applied ([`PartitionProcessor::eos_frontier`]), and a crash aborts
    /// the open one. What consumers read (committed events) is then that
    /// of a run where nothing failed: nothing lost, nothing twice.
    #[test]
    fn exactly_once_transactions_and_crashes_deliver_the_same_events(
        input in inputs(),
        ops in prop::collection::vec(op(), 0..60),
    ) {
        same_as_calm(input, &ops, true)?;
    }
}

use crate::testing::fixture;

/// A message with no format header: the format is sniffed.
fn sniffed(offset: i64, target: &str, payload: Vec<u8>, headers: &[(&str, &str)]) -> Incoming {
    let mut m = message(offset, target, payload, headers);
    m.headers.retain(|(k, _)| k != header::FORMAT);
    m
}

fn finding_events(effects: &[Rec], topic: &str) -> Vec<serde_json::Value> {
    produced(effects, topic)
        .into_iter()
        .filter_map(|r| match r {
            Rec::Produce {
                payload: Some(p), ..
            } => serde_json::from_slice(p).ok(),
            _ => None,
        })
        .collect()
}

#[test]
fn a_vex_document_published_as_a_decision_marks_its_targets_findings_not_affected() {
    let b = Bench::new(|_| {});
    let mut p = b.restored(&[]);
    b.edge.take();
    let report = fixture("trivy/trivy-image-web-api-1.4.json");
    let ctx = b.cx.engine.decode_context();
    let target = crate::normalize::decode(&report, None, ctx)
        .ok()
        .and_then(|(_, r)| r.target)
        .expect("the report names its image")
        .to_string();
    b.feed(&mut p, sniffed(0, &target, report.clone(), &[]));
    let opened = b.edge.take();
    deliver(&opened);
    let vex = fixture("vex/cyclonedx-web-api.json");
    b.feed(
        &mut p,
        sniffed(1, &target, vex.clone(), &[(header::KIND, "decision")]),
    );
    let effects = b.edge.take();
    let events = finding_events(&effects, &b.cx.settings.findings_topic);
    let not_affected: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "not_affected")
        .collect();
    assert_eq!(not_affected.len(), 2, "{events:?}");
    assert!(not_affected
        .iter()
        .all(|e| e["package"]["name"] == "urllib3" && e["disposition"]["kind"] == "cyclonedx_vex"));
    deliver(&effects);
    b.step(&mut p);
    let records = b.edge.take();
    assert!(
        !produced(&records, &b.cx.settings.changelog_for(REPORTS)).is_empty(),
        "the decision is kept in the changelog"
    );
    deliver(&records);
    b.step(&mut p);
    assert_eq!(stores(&b.edge.take()), [1]);
    // The next scan of the image leaves them not affected.
    b.feed(&mut p, sniffed(2, &target, report, &[]));
    let again = finding_events(&b.edge.take(), &b.cx.settings.findings_topic);
    assert!(
        again.iter().all(|e| e["package"]["name"] != "urllib3"),
        "{again:?}"
    );
    // Without a key, the document names no target: dead-lettered.
    b.feed(&mut p, {
        let mut m = sniffed(3, &target, vex, &[(header::KIND, "decision")]);
        m.key = None;
        m
    });
    let effects = b.edge.take();
    let dead = produced(&effects, &b.cx.settings.dead_letter_topic);
    assert_eq!(dead.len(), 1, "{effects:?}");
    assert_eq!(
        dead[0].header(header::DLQ_REASON).as_deref(),
        Some("bad_decision")
    );
    assert!(dead[0]
        .header(header::DLQ_ERROR)
        .is_some_and(|e| e.contains("VEX")));
}

/// Log lines, captured.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn what_is_logged_while_a_message_is_applied_names_its_partition_offset_and_target() {
    // The process-wide subscriber: a scoped one would race the callsite
    // interest other tests' threads cache meanwhile. Lines of other tests
    // come too; the one sought is told by its offset.
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_writer(move || sink.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("no other test sets one");
    let b = Bench::new(|_| {});
    let mut p = b.restored(&[]);
    let report = fixture("trivy/trivy-image-web-api-1.4.json");
    let target = crate::normalize::decode(&report, None, b.cx.engine.decode_context())
        .ok()
        .and_then(|(_, r)| r.target)
        .expect("the report names its image")
        .to_string();
    b.feed(&mut p, sniffed(0, &target, report, &[]));
    let vex = fixture("vex/cyclonedx-web-api.json");
    b.feed(
        &mut p,
        sniffed(7_777, &target, vex, &[(header::KIND, "decision")]),
    );
    let text = String::from_utf8(lock(&captured.0).clone()).unwrap_or_default();
    let line = text
        .lines()
        .find(|l| l.contains("VEX document") && l.contains("7777"))
        .unwrap_or_else(|| panic!("no line about the VEX document: {text}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    let span = &v["span"];
    assert_eq!(span["name"], "message", "{line}");
    assert_eq!(span["topic"], REPORTS);
    assert_eq!(span["partition"], 0);
    assert_eq!(span["offset"], 7_777);
    assert_eq!(span["target"], target.as_str());
    // Nothing of the findings' content at info: no package, path or
    // vulnerability of the report in what was logged about its target.
    for l in text.lines().filter(|l| l.contains(target.as_str())) {
        assert!(!l.contains("urllib3") && !l.contains("CVE-"), "{l}");
    }
}

/// The finding and ticket events `custody process` prints for `files`, one
/// run per file at each time, the state kept between runs in `state`.
fn process_events(state: &std::path::Path, runs: &[(&str, i64)]) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for (rel, ms) in runs {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel);
        let settings = crate::process::Settings {
            files: vec![path],
            target: None,
            scanner: None,
            format: None,
            state: Some(state.to_path_buf()),
            decisions: Vec::new(),
            source: None,
            config: Config::default(),
            owners: None,
            owners_used: None,
            owners_none: false,
            fail_on: None,
            partial: false,
            summary: crate::process::SummaryFormat::None,
            emit: crate::process::Emit::All,
            commit: None,
            git_ref: None,
            now: Utc.timestamp_millis_opt(*ms).single().unwrap_or_default(),
        };
        let mut out = Vec::new();
        let status = crate::process::run(&settings, std::io::empty(), &mut out, std::io::sink());
        assert_eq!(status, 0, "custody process {rel}");
        all.extend(
            out.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice::<serde_json::Value>(l).expect("an event")),
        );
    }
    all
}

#[test]
fn a_cluster_report_applied_by_the_processor_gives_the_events_custody_process_gives() {
    let b = Bench::new(|_| {});
    let mut p = b.restored(&[]);
    b.edge.take();
    let scans = [
        "trivy/k8s/trivy-k8s-minikube-1.json",
        "trivy/k8s/trivy-k8s-minikube-2.json",
    ];
    // Keyed by the cluster: the key is the default of records naming no
    // target, and no record of these reports is without one.
    let key = "cloud:minikube";
    let mut findings = Vec::new();
    let mut tickets = Vec::new();
    let mut runs = Vec::new();
    for (offset, rel) in scans.iter().enumerate() {
        let offset = offset as i64;
        let msg = sniffed(offset, key, fixture(rel), &[]);
        runs.push((*rel, msg.timestamp.unwrap_or_default()));
        b.feed(&mut p, msg);
        let effects = b.edge.take();
        assert!(
            produced(&effects, &b.cx.settings.dead_letter_topic).is_empty(),
            "{effects:?}"
        );
        findings.extend(finding_events(&effects, &b.cx.settings.findings_topic));
        tickets.extend(finding_events(&effects, "custody.tickets"));
        deliver(&effects);
        b.step(&mut p);
        deliver(&b.edge.take());
        b.step(&mut p);
        assert_eq!(stores(&b.edge.take()), [offset]);
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let want = process_events(&dir.path().join("state.json"), &runs);
    let key = |e: &serde_json::Value| e["event_id"].as_str().map(str::to_string);
    let mut got: Vec<_> = findings
        .iter()
        .chain(&tickets)
        .map(|e| (key(e), e.to_string()))
        .collect();
    let mut want: Vec<_> = want.iter().map(|e| (key(e), e.to_string())).collect();
    got.sort();
    want.sort();
    assert!(!tickets.is_empty());
    assert_eq!(got, want);
    // Each resource is its own target; the second scan, of the default
    // namespace only, resolved bash in the app and nothing of payments.
    let targets: BTreeSet<&str> = findings
        .iter()
        .filter_map(|e| e["target"].as_str())
        .collect();
    assert!(
        targets.contains("k8s:minikube/default/Deployment/app")
            && targets.contains("k8s:minikube/payments/Deployment/api"),
        "{targets:?}"
    );
    assert_eq!(targets.len(), 2, "no scan of the key's target: {targets:?}");
    let resolved: Vec<(&str, &str)> = findings
        .iter()
        .filter(|e| e["event"] == "resolved")
        .filter_map(|e| Some((e["target"].as_str()?, e["rule_id"].as_str()?)))
        .collect();
    assert_eq!(
        resolved,
        [("k8s:minikube/default/Deployment/app", "CVE-2022-3715")]
    );
}

#[test]
fn a_split_report_is_not_remembered_and_forgets_what_its_targets_remembered() {
    let b = Bench::new(|_| {});
    let mut p = b.restored(&[]);
    b.edge.take();
    let app = "k8s:minikube/default/Deployment/app";
    // A report of the app alone, keyed by it: remembered.
    b.feed(&mut p, message(0, app, report(&[1]), &[]));
    deliver(&b.edge.take());
    assert!(p.last_scans.contains_key(app));
    // The cluster's report scans the app too: the app's memory is
    // forgotten, and the split report is remembered for no target.
    let cluster = fixture("trivy/k8s/trivy-k8s-minikube-1.json");
    b.feed(&mut p, sniffed(1, "cloud:minikube", cluster.clone(), &[]));
    let first = finding_events(&b.edge.take(), &b.cx.settings.findings_topic);
    assert_eq!(first.len(), 5, "{first:?}");
    assert!(p.last_scans.is_empty());
    // Sent again, it is decoded again and changes nothing.
    b.feed(&mut p, sniffed(2, "cloud:minikube", cluster, &[]));
    let effects = b.edge.take();
    assert!(finding_events(&effects, &b.cx.settings.findings_topic).is_empty());
    assert!(produced(&effects, &b.cx.settings.dead_letter_topic).is_empty());
    assert!(p.last_scans.is_empty());
}

#[test]
fn native_findings_keep_their_target_and_the_key_takes_the_others() {
    let b = Bench::new(|_| {});
    let mut p = b.restored(&[]);
    b.edge.take();
    let own = r#"{"scanner":"t","category":"sast","rule_id":"R9","severity":"high","message":"m9","target":"repo:github.com/acme/other","location":{"path":"src/f9.py"}}"#;
    let mut payload = report(&[1]);
    payload.extend_from_slice(own.as_bytes());
    b.feed(&mut p, message(0, TARGET, payload, &[]));
    let events = finding_events(&b.edge.take(), &b.cx.settings.findings_topic);
    let targets: Vec<(&str, &str)> = events
        .iter()
        .filter_map(|e| Some((e["target"].as_str()?, e["rule_id"].as_str()?)))
        .collect();
    assert_eq!(
        targets,
        [
            ("repo:github.com/acme/api", "R1"),
            ("repo:github.com/acme/other", "R9")
        ]
    );
    // Without a key, a record naming no target has none: dead-lettered,
    // saying why.
    b.feed(&mut p, {
        let mut m = message(1, TARGET, report(&[2]), &[]);
        m.key = None;
        m
    });
    let effects = b.edge.take();
    let dead = produced(&effects, &b.cx.settings.dead_letter_topic);
    assert_eq!(dead.len(), 1, "{effects:?}");
    assert_eq!(
        dead[0].header(header::DLQ_REASON).as_deref(),
        Some("no_target")
    );
    assert!(dead[0]
        .header(header::DLQ_ERROR)
        .is_some_and(|e| e.contains("1 of its findings")));
    // A report whose every record names its target needs no key.
    b.feed(&mut p, {
        let mut m = message(2, TARGET, own.as_bytes().to_vec(), &[]);
        m.key = None;
        m
    });
    let effects = b.edge.take();
    assert!(produced(&effects, &b.cx.settings.dead_letter_topic).is_empty());
}

/// Issue 23: a restart partway through a target's first chunked scan must
/// not count the rest of the scan's findings as introduced. The scan's
/// chunks come with another target's report between them, the process
/// dies, a new one restores the changelog and gets what was not
/// committed again, then the scan's last chunk: every finding of the
/// scan opens once, inherited (the scanner's first complete scan of the
/// target), with the scan's id.
#[test]
fn a_restart_between_the_chunks_of_a_first_scan_leaves_its_findings_inherited() {
    let b = Bench::new(|_| {});
    let changelog_topic = b.cx.settings.changelog_for(REPORTS);
    let findings_topic = b.cx.settings.findings_topic.clone();
    let whole = report(&[1, 2, 3, 4]);
    let third = whole.len() / 3;
    let pieces = [
        whole[..third].to_vec(),
        whole[third..2 * third].to_vec(),
        whole[2 * third..].to_vec(),
    ];
    let chunk = |offset, i: usize| {
        message(
            offset,
            TARGET,
            pieces[i - 1].clone(),
            &[(header::CHUNK, &format!("{i}/3")), (header::SCAN_ID, "s1")],
        )
    };
    const OTHER: &str = "repo:github.com/acme/other";
    let messages = [
        chunk(0, 1),
        message(1, OTHER, report(&[9]), &[]),
        chunk(2, 2),
        chunk(3, 3),
    ];
    // Everything produced acknowledged; the changelog as written and the
    // last offset stored.
    let settle = |p: &mut PartitionProcessor,
                  log: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>,
                  stored: &mut Option<i64>,
                  events: &mut Vec<serde_json::Value>| loop {
        let effects = b.edge.take();
        if effects.is_empty() {
            return;
        }
        events.extend(finding_events(&effects, &findings_topic));
        for e in effects {
            match e {
                Rec::Produce {
                    topic,
                    key,
                    payload,
                    ack,
                    ..
                } => {
                    if topic == changelog_topic {
                        log.push((key, payload));
                    }
                    ack.delivered();
                }
                Rec::Store(o) => *stored = Some(o),
                _ => {}
            }
        }
        b.step(p);
    };

    // Without a restart: the reference.
    let mut p = b.restored(&[]);
    b.edge.take();
    let (mut log, mut stored, mut want) = (Vec::new(), None, Vec::new());
    for m in &messages {
        b.feed(&mut p, m.clone());
        settle(&mut p, &mut log, &mut stored, &mut want);
    }
    let of_target = |evs: &[serde_json::Value]| -> BTreeMap<String, String> {
        evs.iter()
            .filter(|e| e["target"] == TARGET)
            .map(|e| {
                assert_eq!(e["event"], "opened", "{e}");
                assert_eq!(e["origin"]["scan_id"], "s1", "{e}");
                (
                    e["fingerprint"].as_str().unwrap_or_default().to_string(),
                    e["origin"]["provenance"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    };
    let reference = of_target(&want);
    assert_eq!(reference.len(), 4, "{want:?}");
    assert!(
        reference.values().all(|p| p == "inherited"),
        "{reference:?}"
    );

    // A restart after the scan's second chunk.
    let mut p = b.restored(&[]);
    b.edge.take();
    let (mut log, mut stored, mut got) = (Vec::new(), None, Vec::new());
    for m in &messages[..3] {
        b.feed(&mut p, m.clone());
        settle(&mut p, &mut log, &mut stored, &mut got);
    }
    assert!(
        of_target(&got).is_empty(),
        "nothing of the scan before its last chunk"
    );
    // The other target's report is applied and its changelog written,
    // but no offset is stored past the scan's first chunk.
    assert!(log
        .iter()
        .any(|(k, _)| k.windows(OTHER.len()).any(|w| w == OTHER.as_bytes())));
    assert_eq!(stored, None);
    drop(p);
    let mut p = b.restored(&log);
    b.edge.take();
    let from = stored.map_or(0, |o| o + 1);
    for m in messages.iter().filter(|m| m.offset >= from) {
        b.feed(&mut p, m.clone());
        settle(&mut p, &mut log, &mut stored, &mut got);
    }
    assert_eq!(of_target(&got), reference, "{got:?}");
    assert_eq!(stored, Some(3));
}

/// The service's ticket events quote the rules' help a report gives, as
/// `custody process` does (the report's rule table reaches the tickets).
#[test]
fn the_services_ticket_events_quote_the_rules_help() {
    let b = Bench::new(|_| {});
    let mut p = b.restored(&[]);
    b.edge.take();
    let report = crate::testing::fixture("churn/ruff-6.4.2.sarif");
    b.feed(&mut p, sniffed(0, TARGET, report, &[]));
    let tickets = finding_events(&b.edge.take(), "custody.tickets");
    assert!(!tickets.is_empty());
    for t in &tickets {
        let body = t["body"].as_str().unwrap_or_default();
        assert!(body.contains("**About this rule:**"), "{body}");
    }
}

// ---------------------------------------------------------------------
// The decoded state as a cache: targets evicted and decoded again.

/// What the cache property test does next.
#[derive(Debug, Clone)]
enum CacheOp {
    /// A report of target `target` with `findings`, `hours` after the
    /// last step.
    Scan {
        target: u8,
        findings: Vec<u8>,
        hours: u8,
    },
    /// The risk of the `which`-th finding opened so far accepted for
    /// `days` days.
    Accept { which: u8, days: u8 },
    /// The SLA clock advances `days` days and ticks.
    Tick { days: u8 },
    /// Target `target` evicted (by the evicting processor only).
    Evict { target: u8 },
    /// Both processors restart from their changelogs (under the binary
    /// format from then on, when the run began under JSON).
    Restart,
}

fn cache_op() -> impl Strategy<Value = CacheOp> {
    prop_oneof![
        6 => (0u8..3, prop::collection::vec(0u8..6, 0..5), 0u8..72)
            .prop_map(|(target, findings, hours)| CacheOp::Scan { target, findings, hours }),
        2 => (any::<u8>(), 1u8..20).prop_map(|(which, days)| CacheOp::Accept { which, days }),
        2 => (0u8..20).prop_map(|days| CacheOp::Tick { days }),
        3 => (0u8..3).prop_map(|target| CacheOp::Evict { target }),
        1 => Just(CacheOp::Restart),
    ]
}

const CACHE_TARGETS: [&str; 3] = [
    TARGET,
    "repo:github.com/acme/web",
    "image:ghcr.io/acme/web-api",
];

/// The bench's environment with the wall clock at `wall`.
fn env_at(b: &Bench, wall: chrono::DateTime<Utc>) -> Env<'_> {
    Env { wall, ..b.env() }
}

/// One processor of the cache test, with its changelog.
struct Cached {
    bench: Bench,
    p: PartitionProcessor,
    log: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Every record produced: topic, key, payload.
    produced: Vec<(String, String, String)>,
}

impl Cached {
    fn new(budget: usize, json: bool) -> Cached {
        Cached::grouped(budget, json, "team_target_rule")
    }

    /// With tickets grouped by `grouping`; under `team_rule` the targets'
    /// parts of the tickets are produced to a parts topic of 6 partitions.
    fn grouped(budget: usize, json: bool, grouping: &str) -> Cached {
        let mut bench = Bench::new(|s| {
            s.decoded_findings_per_partition = budget;
            if json {
                s.changelog_format = ChangelogFormat::Json;
            }
        });
        let cfg = Config::parse(&format!("[tickets]\ngrouping = \"{grouping}\"\n"), "t.toml")
            .expect("a grouping");
        bench.cx.engine = Engine::new(&cfg);
        bench.cx.settings_digest = bench.cx.engine.settings_digest();
        if grouping == "team_rule" {
            bench.cx.ticket_parts = Some((PARTS.to_string(), 6));
        }
        let p = bench.restored(&[]);
        bench.edge.take();
        Cached {
            bench,
            p,
            log: Vec::new(),
            produced: Vec::new(),
        }
    }

    /// Steps, acknowledging everything produced, until nothing more is.
    fn settle(&mut self, wall: chrono::DateTime<Utc>) {
        for _ in 0..10 {
            self.p.step(&env_at(&self.bench, wall), &|| false);
            let effects = self.bench.edge.take();
            if effects.is_empty() {
                break;
            }
            self.deliver(&effects);
        }
    }

    /// Acknowledges the records of `effects`, in order, and keeps them.
    fn deliver(&mut self, effects: &[Rec]) {
        let changelog = self.bench.cx.settings.changelog_for(REPORTS);
        for e in effects {
            if let Rec::Fail(e) = e {
                panic!("the processor failed: {e}");
            }
            if let Rec::Produce {
                topic,
                key,
                payload,
                ack,
                ..
            } = e
            {
                ack.delivered();
                if *topic == changelog {
                    self.log.push((key.clone(), payload.clone()));
                }
                self.produced.push((
                    topic.clone(),
                    String::from_utf8_lossy(key).into_owned(),
                    payload.as_deref().map_or_else(String::new, hex::encode),
                ));
            }
        }
    }
}

/// Every series but the cache's own counters (of evictions and decodes
/// again), which only an evicting processor moves.
fn but_the_cache(m: &Metrics) -> String {
    m.render()
        .lines()
        .filter(|l| !l.starts_with("custody_state_evictions_total"))
        .filter(|l| !l.starts_with("custody_state_thaws_total"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The topic of the targets' parts of tickets across targets.
const PARTS: &str = "custody.ticket-parts";

/// Runs `ops` on a processor that never evicts and on one whose budget
/// is `budget` findings and that evicts when told, tickets grouped by
/// `grouping`; their records (events, changelog records and the targets'
/// parts of tickets across targets) are compared after each op.
fn evicted_as_never(
    ops: &[CacheOp],
    budget: usize,
    json: bool,
    grouping: &str,
) -> Result<(), TestCaseError> {
    let mut never = Cached::grouped(0, json, grouping);
    let mut evicting = Cached::grouped(budget, json, grouping);
    let mut wall = Utc
        .timestamp_opt(1_790_000_000, 0)
        .single()
        .unwrap_or_default();
    let mut offset = 0i64;
    let mut opened: Vec<(String, String)> = Vec::new();
    for op in ops {
        match op {
            CacheOp::Scan {
                target,
                findings,
                hours,
            } => {
                wall += chrono::Duration::hours(i64::from(*hours));
                let target = CACHE_TARGETS[*target as usize % CACHE_TARGETS.len()];
                for c in [&mut never, &mut evicting] {
                    let mut msg = message(offset, target, report(findings), &[]);
                    msg.timestamp = Some(wall.timestamp_millis());
                    c.p.on_message(&c.bench.cx, msg, c.bench.start);
                    c.settle(wall);
                }
                offset += 1;
            }
            CacheOp::Accept { which, days } => {
                if opened.is_empty() {
                    continue;
                }
                let (target, fp) = &opened[*which as usize % opened.len()];
                let d = crate::lifecycle::DecisionRecord {
                    target: target.parse().expect("a target"),
                    fingerprint: fp.clone(),
                    decision: crate::lifecycle::DecisionKind::AcceptRisk,
                    expires_at: Some(wall + chrono::Duration::days(i64::from(*days))),
                    reason: "r".into(),
                    author: "a".into(),
                    decided_at: wall,
                };
                let payload = serde_json::to_vec(&d).expect("a decision");
                for c in [&mut never, &mut evicting] {
                    let mut msg = sniffed(
                        offset,
                        target,
                        payload.clone(),
                        &[(header::KIND, "decision")],
                    );
                    msg.timestamp = Some(wall.timestamp_millis());
                    c.p.on_message(&c.bench.cx, msg, c.bench.start);
                    c.settle(wall);
                }
                offset += 1;
            }
            CacheOp::Tick { days } => {
                wall += chrono::Duration::days(i64::from(*days));
                for c in [&mut never, &mut evicting] {
                    c.p.tick(&env_at(&c.bench, wall));
                    c.settle(wall);
                }
            }
            CacheOp::Evict { target } => {
                let target = CACHE_TARGETS[*target as usize % CACHE_TARGETS.len()];
                evicting.p.evict(target, wall);
            }
            CacheOp::Restart => {
                for c in [&mut never, &mut evicting] {
                    c.bench.cx.settings.changelog_format = ChangelogFormat::Binary;
                    c.p = c.bench.restored(&c.log);
                    c.bench.edge.take();
                    c.settle(wall);
                }
            }
        }
        prop_assert_eq!(&never.produced, &evicting.produced, "after {:?}", op);
        // The gauges and the scorecard count evicted targets as decoded
        // ones, later too.
        for at in [wall, wall + chrono::Duration::days(9)] {
            for c in [&mut never, &mut evicting] {
                let mut pass = c.bench.cx.metrics.state_pass(at);
                c.p.summarize(&mut pass, at);
                pass.finish();
            }
            prop_assert_eq!(
                never.bench.cx.metrics.scorecard(),
                evicting.bench.cx.metrics.scorecard()
            );
            prop_assert_eq!(
                but_the_cache(&never.bench.cx.metrics),
                but_the_cache(&evicting.bench.cx.metrics)
            );
        }
        opened = never
            .produced
            .iter()
            .filter(|(topic, _, _)| *topic == never.bench.cx.settings.findings_topic)
            .filter_map(|(_, _, payload)| {
                let v: serde_json::Value =
                    serde_json::from_slice(&hex::decode(payload).ok()?).ok()?;
                (v["event"] == "opened").then(|| {
                    (
                        v["target"].as_str().unwrap_or_default().to_string(),
                        v["fingerprint"].as_str().unwrap_or_default().to_string(),
                    )
                })
            })
            .collect();
    }
    // The same state in the end, every target decoded.
    for c in [&mut never, &mut evicting] {
        for t in CACHE_TARGETS {
            c.p.materialize(&c.bench.env(), t).expect("decoded");
        }
    }
    prop_assert_eq!(never.p.state.as_ref(), evicting.p.state.as_ref());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Targets evicted at any moment (told to, or past a budget of a few
    /// findings) and decoded again by the next report, decision, tick or
    /// restart give exactly the events and changelog records a processor
    /// that never evicts gives, under either changelog format and any
    /// ticket grouping; under `team_rule`, the same parts of the tickets
    /// across targets too.
    #[test]
    fn an_evicted_target_gives_the_events_and_records_it_gives_when_never_evicted(
        ops in prop::collection::vec(cache_op(), 1..40),
        budget in prop_oneof![Just(0usize), 1usize..8],
        json in any::<bool>(),
        grouping in prop_oneof![
            2 => Just("team_target_rule"),
            2 => Just("team_rule"),
            1 => Just("team_target"),
            1 => Just("finding"),
        ],
    ) {
        evicted_as_never(&ops, budget, json, grouping)?;
    }
}

/// A target evicted while the records of the steps that changed it are in
/// flight (its events not acknowledged, so its changelog records not
/// produced yet; under exactly-once, produced and not acknowledged), and
/// decoded again for a message before any of them is acknowledged, gives
/// the events and changelog records a processor that never evicts gives,
/// under either changelog format and delivery; restored from those
/// records, the same state and the same events for the messages after.
#[test]
fn a_target_evicted_with_its_records_in_flight_is_decoded_again_as_never_evicted() {
    const OTHER: &str = "repo:github.com/acme/web";
    let t0 = Utc
        .timestamp_opt(1_790_000_000, 0)
        .single()
        .unwrap_or_default();
    for (json, eos) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut never = Cached::new(0, json);
        let mut evicting = Cached::new(1, json);
        let mut in_flight: [Vec<Rec>; 2] = Default::default();
        for c in [&mut never, &mut evicting] {
            c.bench.cx.eos = eos;
        }
        // Nothing acknowledged: TARGET is evicted past the budget by
        // OTHER's scan, decoded again by its own next one (which resolves
        // finding 2 and evicts OTHER), and evicted again by OTHER's next.
        let scans: [(&str, &[u8]); 4] = [
            (TARGET, &[1, 2]),
            (OTHER, &[3]),
            (TARGET, &[1]),
            (OTHER, &[3, 4]),
        ];
        for (offset, (target, findings)) in scans.into_iter().enumerate() {
            for (c, held) in [&mut never, &mut evicting].into_iter().zip(&mut in_flight) {
                let mut msg = message(offset as i64, target, report(findings), &[]);
                msg.timestamp = Some(t0.timestamp_millis() + offset as i64);
                c.p.on_message(&c.bench.cx, msg, c.bench.start);
                c.p.step(&env_at(&c.bench, t0), &|| false);
                held.extend(c.bench.edge.take());
            }
            let evicted = if offset % 2 == 0 { OTHER } else { TARGET };
            if offset > 0 {
                assert!(
                    evicting.p.cold.contains(evicted),
                    "{evicted} evicted after message {offset} (json {json}, eos {eos})"
                );
            }
        }
        let changelog = never.bench.cx.settings.changelog_for(REPORTS);
        let written = |held: &[Rec]| {
            held.iter()
                .filter(|r| matches!(r, Rec::Produce { topic, .. } if *topic == changelog))
                .count()
        };
        assert_eq!(
            written(&in_flight[1]),
            if eos { written(&in_flight[0]) } else { 0 },
            "changelog records wait for the events under at-least-once"
        );
        assert!(evicting.p.in_flight() > 0, "the steps are still in flight");
        for (c, held) in [&mut never, &mut evicting].into_iter().zip(&in_flight) {
            c.deliver(held);
            c.settle(t0);
        }
        assert_eq!(never.produced, evicting.produced, "json {json}, eos {eos}");
        // Restored from the changelog written so: the same state, and the
        // same events for the next scans.
        for c in [&mut never, &mut evicting] {
            c.p = c.bench.restored(&c.log);
            c.bench.edge.take();
            c.settle(t0);
            for (offset, (target, findings)) in [(TARGET, &[2u8, 5][..]), (OTHER, &[][..])]
                .into_iter()
                .enumerate()
            {
                let mut msg = message(10 + offset as i64, target, report(findings), &[]);
                msg.timestamp = Some(t0.timestamp_millis() + 10 + offset as i64);
                c.p.on_message(&c.bench.cx, msg, c.bench.start);
                c.settle(t0);
            }
            for t in [TARGET, OTHER] {
                c.p.materialize(&c.bench.env(), t).expect("decoded");
            }
        }
        assert_eq!(never.produced, evicting.produced, "json {json}, eos {eos}");
        assert_eq!(never.p.state, evicting.p.state, "json {json}, eos {eos}");
    }
}

/// The SLA clock decodes an evicted target only once its first deadline
/// has come: before, the target stays evicted and nothing happens; at it,
/// its findings breach as they do on a target never evicted (and once
/// evicted again, it has no deadline left).
#[test]
fn the_clock_decodes_an_evicted_target_at_its_first_deadline_and_not_before() {
    const OTHER: &str = "repo:github.com/acme/web";
    let mut never = Cached::new(0, false);
    let mut evicting = Cached::new(1, false);
    let t0 = Utc
        .timestamp_opt(1_790_000_000, 0)
        .single()
        .unwrap_or_default();
    for c in [&mut never, &mut evicting] {
        for (offset, target, findings, at) in [
            (0, TARGET, &[1u8, 2][..], t0),
            (1, OTHER, &[3][..], t0 + chrono::Duration::days(3)),
        ] {
            let mut msg = message(offset, target, report(findings), &[]);
            msg.timestamp = Some(at.timestamp_millis());
            c.p.on_message(&c.bench.cx, msg, c.bench.start);
            c.settle(at);
        }
    }
    assert!(evicting.p.cold.contains(TARGET), "evicted past the budget");
    let due = evicting
        .p
        .cold
        .meta(TARGET)
        .and_then(|m| m.wake)
        .expect("open findings have a deadline");
    let breaches = |c: &Cached| {
        c.produced
            .iter()
            .filter(|(topic, _, _)| *topic == c.bench.cx.settings.findings_topic)
            .filter_map(|(_, _, p)| {
                serde_json::from_slice::<serde_json::Value>(&hex::decode(p).ok()?).ok()
            })
            .filter(|v| v["event"] == "sla_breached")
            .map(|v| v["target"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    let before = due - chrono::Duration::seconds(1);
    for c in [&mut never, &mut evicting] {
        c.p.tick(&env_at(&c.bench, before));
        c.settle(before);
        assert!(breaches(c).is_empty());
    }
    assert!(evicting.p.cold.contains(TARGET), "not decoded before");
    for c in [&mut never, &mut evicting] {
        c.p.tick(&env_at(&c.bench, due));
        c.settle(due);
    }
    assert_eq!(breaches(&evicting), [TARGET, TARGET]);
    assert_eq!(never.produced, evicting.produced);
    // The target the clock used is the last used: the other is evicted,
    // with its own deadline, three days later.
    assert!(evicting.p.cold.contains(OTHER));
    assert!(!evicting.p.cold.contains(TARGET));
    let later = due + chrono::Duration::days(3);
    for c in [&mut never, &mut evicting] {
        c.p.tick(&env_at(&c.bench, later));
        c.settle(later);
    }
    assert_eq!(breaches(&evicting), [TARGET, TARGET, OTHER]);
    assert_eq!(never.produced, evicting.produced);
    // Evicted again, with no deadline left.
    assert_eq!(evicting.p.cold.meta(TARGET).map(|m| m.wake), Some(None));
}

/// What a last scan observed is kept as 16 bytes a `v1:` fingerprint and
/// reads back the same; a list with any other fingerprint is kept as it is.
#[test]
fn observed_fingerprints_are_kept_as_digests_and_read_back_the_same() {
    use super::rescan::Observed;
    let v1: Vec<String> = (0..5u32).map(|i| format!("v1:{:032x}", i * 7919)).collect();
    let kept = Observed::new(v1.clone());
    assert!(matches!(kept, Observed::Digests(_)));
    assert_eq!(kept.to_strings(), v1);
    for odd in [
        "v1:ABCDEF00000000000000000000000000",
        "v2:00",
        "plain",
        "v1:00",
    ] {
        let mut fps = v1.clone();
        fps.push(odd.to_string());
        let kept = Observed::new(fps.clone());
        assert!(matches!(kept, Observed::Texts(_)), "{odd}");
        assert_eq!(kept.to_strings(), fps);
    }
}

/// A pass of the gauges lists an evicted target's rows by decoding it
/// again only when the scorecard may list them: past full lists, the
/// rows its summary left out count as those beyond the lists, as they
/// would decoded; either way the gauges and the page are those of a
/// partition that never evicts.
#[test]
fn the_scorecard_decodes_an_evicted_target_only_for_rows_it_may_list() {
    const LATER: &str = "repo:github.com/acme/web";
    let mut never = Cached::new(0, false);
    let mut evicting = Cached::new(1, false);
    let t0 = Utc
        .timestamp_opt(1_790_000_000, 0)
        .single()
        .unwrap_or_default();
    let many: Vec<u8> = (0..60).collect();
    for c in [&mut never, &mut evicting] {
        // The later target (by spec) first: it is the one evicted.
        for (offset, target, findings) in [(0, LATER, &[1u8, 2, 3][..]), (1, TARGET, &many[..])] {
            let mut msg = message(offset, target, report(findings), &[]);
            msg.timestamp = Some(t0.timestamp_millis());
            c.p.on_message(&c.bench.cx, msg, c.bench.start);
            c.settle(t0);
        }
    }
    assert!(evicting.p.cold.contains(LATER));
    for c in [&mut never, &mut evicting] {
        let mut pass = c.bench.cx.metrics.state_pass(t0);
        c.p.summarize(&mut pass, t0);
        pass.finish();
    }
    let card = evicting.bench.cx.metrics.scorecard();
    assert_eq!(card.unattributed.len(), crate::metrics::UNATTRIBUTED_LISTED);
    assert_eq!(card.unattributed_more, 63 - 25);
    assert_eq!(card, never.bench.cx.metrics.scorecard());
    assert_eq!(
        but_the_cache(&evicting.bench.cx.metrics),
        but_the_cache(&never.bench.cx.metrics)
    );
    assert!(
        evicting.p.summaries[LATER].stripped(),
        "the lists were full before it: not decoded for them"
    );
    // Once the earlier target is evicted too, the later one is needed
    // again... only if the lists are not full before it: they are, by
    // the earlier one's own rows, read back from its copy.
    evicting.p.evict(TARGET, t0);
    for c in [&mut never, &mut evicting] {
        let mut pass = c.bench.cx.metrics.state_pass(t0);
        c.p.summarize(&mut pass, t0);
        pass.finish();
    }
    assert_eq!(
        evicting.bench.cx.metrics.scorecard(),
        never.bench.cx.metrics.scorecard()
    );
    assert!(!evicting.p.summaries[TARGET].stripped(), "its rows listed");
    assert!(evicting.p.summaries[LATER].stripped());
}
