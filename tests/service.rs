//! The Kafka service end to end against librdkafka's mock cluster
//! (in-process, real Kafka protocol over TCP): publish -> run -> consume.

use custody::config::Config;
use custody::kafka::mock::{create_mock_topics, read_all};
use custody::kafka::publish::{PublishOptions, Publisher, DEFAULT_CHUNK_BYTES};
use custody::kafka::service::Service;
use custody::model::{FindingEvent, FindingEventKind, Target, TicketEvent, TicketEventKind};
use custody::ownership::Reloadable;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::ClientConfig;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TORNADO: &str = "repo:github.com/tornadoweb/tornado";

pub struct Harness {
    pub cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    pub config: Config,
}

impl Harness {
    pub fn new(partitions: i32) -> Harness {
        Harness::with_brokers(partitions, 1)
    }

    /// Two brokers: the reports, the outputs and the group on broker 1, the
    /// changelog on broker 2, which [`Harness::slow_changelog`] slows
    /// down: a restore then lasts seconds, while messages are there to
    /// fetch from broker 1 at once.
    pub fn with_slow_changelog(partitions: i32) -> Harness {
        let h = Harness::with_brokers(partitions, 2);
        let s = &h.config.service;
        let changelog = s.changelog_for(&s.reports_topics[0]);
        for (topic, _) in custody::kafka::topics::wanted(&h.config) {
            let leader = if topic == changelog { 2 } else { 1 };
            for p in 0..partitions {
                h.cluster.partition_leader(&topic, p, Some(leader)).unwrap();
            }
        }
        h.cluster
            .coordinator(
                rdkafka::mocking::MockCoordinator::Group(s.group_id.clone()),
                1,
            )
            .unwrap();
        h
    }

    /// Every answer of the changelog's broker `late` late (a restore asks
    /// four times).
    pub fn slow_changelog(&self, late: Duration) {
        self.cluster.broker_round_trip_time(2, late).unwrap();
    }

    /// A cluster of `brokers` brokers (ids 1 to `brokers`).
    pub fn with_brokers(partitions: i32, brokers: i32) -> Harness {
        let cluster = MockCluster::new(brokers).expect("mock cluster");
        let mut config = Config::default();
        config.service.brokers = cluster.bootstrap_servers();
        config.service.partitions = partitions;
        config.service.replication_factor = 1;
        config.service.group_id = "custody-test".into();
        config.service.shutdown_timeout = Duration::from_secs(10);
        // The mock coordinator holds a restarted member's JoinGroup until
        // the session timeout of the member that left (45 s by default).
        config
            .service
            .properties
            .insert("session.timeout.ms".into(), "6000".into());
        create_mock_topics(&cluster, &mut config).expect("topics");
        Harness { cluster, config }
    }

    fn start(&self) -> Service {
        Service::start(&self.config, None).expect("service starts")
    }

    pub fn start_owned(&self) -> Service {
        let own = Reloadable::load(Path::new("tests/fixtures/ownership/owners.toml")).unwrap();
        Service::start(&self.config, Some(Arc::new(own))).expect("service starts")
    }

    pub fn publisher(&self) -> Publisher {
        Publisher::new(&self.cluster.bootstrap_servers(), std::iter::empty()).unwrap()
    }

    pub fn publish(&self, target: &str, scanner: &str, file: &str, chunk_bytes: usize) -> usize {
        let p = self.publisher();
        let bytes = std::fs::read(file).unwrap();
        let n = p
            .send(&self.opts(target, scanner, chunk_bytes), &bytes)
            .unwrap()
            .chunks;
        p.flush(Duration::from_secs(30)).unwrap();
        n
    }

    fn opts(&self, target: &str, scanner: &str, chunk_bytes: usize) -> PublishOptions {
        PublishOptions {
            scanner: Some(scanner.into()),
            chunk_bytes,
            ..PublishOptions::new(
                &self.config.service.reports_topics[0],
                target.parse::<Target>().unwrap(),
            )
        }
    }

    /// Raw message with the given key, headers and payload.
    fn send_raw(&self, key: Option<&str>, headers: &[(&str, &str)], payload: &[u8]) {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.cluster.bootstrap_servers())
            .create()
            .unwrap();
        let mut hs = OwnedHeaders::new();
        for (k, v) in headers {
            hs = hs.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        let mut rec: BaseRecord<'_, str, [u8]> =
            BaseRecord::to(&self.config.service.reports_topics[0])
                .payload(payload)
                .headers(hs);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        producer.send(rec).map_err(|(e, _)| e).unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
    }

    pub fn findings(&self) -> Vec<FindingEvent> {
        read_all(
            &self.cluster.bootstrap_servers(),
            &self.config.service.findings_topic,
        )
        .unwrap()
        .iter()
        .map(|b| serde_json::from_slice(b).expect("finding event JSON"))
        .collect()
    }

    pub fn tickets(&self) -> Vec<TicketEvent> {
        read_all(
            &self.cluster.bootstrap_servers(),
            &self.config.default_topic,
        )
        .unwrap()
        .iter()
        .map(|b| serde_json::from_slice(b).expect("ticket event JSON"))
        .collect()
    }

    /// Commits `offset` for the group on every reports partition, as a
    /// crash before the last commit leaves it.
    fn commit_at(&self, offset: i64) {
        let s = &self.config.service;
        // A member of the group: the mock refuses commits from outside it.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.cluster.bootstrap_servers())
            .set("group.id", &s.group_id)
            .set("enable.auto.commit", "false")
            // The mock holds the next member's join for the session
            // timeout of the one that left (see `with_brokers`).
            .set("session.timeout.ms", "6000")
            .create()
            .unwrap();
        consumer.subscribe(&[&s.reports_topics[0]]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while consumer.assignment().unwrap().count() < s.partitions as usize {
            assert!(Instant::now() < deadline, "not assigned");
            let _ = consumer.poll(Duration::from_millis(100));
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..s.partitions {
            tpl.add_partition_offset(&s.reports_topics[0], p, rdkafka::Offset::Offset(offset))
                .unwrap();
        }
        consumer
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .unwrap();
        consumer.unsubscribe();
    }

    /// Committed offset sum of the group over the reports topic.
    fn committed(&self) -> i64 {
        crate::broker::committed(
            &self.cluster.bootstrap_servers(),
            &self.config.service.group_id,
            &self.config.service.reports_topics[0],
            self.config.service.partitions,
        )
    }
}

pub fn wait_done(service: &Service, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while service.health.done_messages.load(Ordering::Relaxed) < n {
        if Instant::now() >= deadline {
            // Where the missing messages are: not consumed (lag, paused
            // partitions), consumed but not applied, or applied and waiting
            // for acknowledgements (messages consumed vs events produced).
            let text = service.metrics.render();
            let said: Vec<&str> = text
                .lines()
                .filter(|l| {
                    !l.starts_with('#')
                        && [
                            "custody_messages_consumed_total",
                            "custody_partitions_",
                            "custody_consumer_lag",
                            "custody_events_produced_total",
                            "custody_dead_lettered_total",
                        ]
                        .iter()
                        .any(|m| l.starts_with(m))
                })
                .collect();
            panic!(
                "only {} of {n} messages processed; the service's metrics:\n{}",
                service.health.done_messages.load(Ordering::Relaxed),
                said.join("\n")
            );
        }
        assert!(!service.finished(), "service stopped early");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn count(events: &[FindingEvent], kind: FindingEventKind) -> usize {
    events.iter().filter(|e| e.event == kind).count()
}

fn unique_ids(events: &[FindingEvent]) -> HashMap<String, &FindingEvent> {
    events.iter().map(|e| (e.event_id.clone(), e)).collect()
}

/// Waits until the service's metrics hold `line`.
fn wait_metric(service: &Service, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !service.metrics.render().contains(line) {
        assert!(Instant::now() < deadline, "metrics never said {line}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether an event is of a finding in `tornado/iostream.py`, the file the
/// ownership tests move between teams.
fn in_iostream(e: &FindingEvent) -> bool {
    e.location
        .as_ref()
        .is_some_and(|l| l.path == "tornado/iostream.py")
}

/// Asserts how many reports the service applied as unchanged.
fn assert_unchanged(service: &Service, n: usize) {
    let text = service.metrics.render();
    assert!(
        text.contains(&format!("custody_reports_unchanged_total {n}\n")),
        "{n} reports applied unchanged expected: {text}"
    );
}

pub fn old_new(scanner: &str) -> (String, String) {
    let ext = if scanner == "semgrep" {
        "json"
    } else {
        "sarif"
    };
    (
        format!("tests/fixtures/churn/{scanner}-6.4.2.{ext}"),
        format!("tests/fixtures/churn/{scanner}-6.5.{ext}"),
    )
}

#[test]
fn publish_run_consume_matches_the_real_change() {
    let h = Harness::new(4);
    let service = h.start();
    let (old, new) = old_new("bandit");
    let mut n = h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    let first = h.findings();
    assert_eq!(count(&first, FindingEventKind::Opened), 272);
    n += h.publish(TORNADO, "bandit", &new, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    let all = h.findings();
    let ids = unique_ids(&all);
    assert_eq!(ids.len(), all.len(), "event ids are unique");
    // The fixture's expectation: 14 new, 17 gone, the 138 moved ones quiet.
    assert_eq!(count(&all, FindingEventKind::Opened), 272 + 14);
    assert_eq!(count(&all, FindingEventKind::Resolved), 17);
    assert_eq!(all.len(), 272 + 14 + 17);
    let tickets = h.tickets();
    assert!(tickets.iter().any(|t| t.event == TicketEventKind::Opened));
    // Every finding event names its ticket, and the ticket exists.
    let keys: HashSet<&str> = tickets.iter().map(|t| t.ticket_key.as_str()).collect();
    assert!(all.iter().all(|e| keys.contains(e.ticket_key.as_str())));
    // HTTP-facing state: ready, metrics count the messages. Ready within
    // a deadline: on a loaded machine the group may rebalance meanwhile,
    // and a partition assigned again is restored again before it is.
    let deadline = Instant::now() + Duration::from_secs(60);
    while service.health.ready().is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(service.health.ready(), Ok(()));
    let text = service.metrics.render();
    assert!(
        text.contains("custody_messages_consumed_total{outcome=\"processed\"} 2"),
        "{text}"
    );
    service.stop().unwrap();
}

/// Ruff's SARIF has no snippets and the service no checkout: published
/// with `custody publish --source` (the scanned release unpacked), each
/// result carries its line's hash, and the rescan of the next release
/// opens and resolves exactly the findings that changed (`expected.json`),
/// as `process --source` does, though 131 of them moved.
#[test]
fn ruff_published_with_source_lines_gives_the_real_change() {
    let h = Harness::new(2);
    let service = h.start();
    let tmp = tempfile::tempdir().unwrap();
    let mut n = 0;
    let mut first = Vec::new();
    for version in ["6.4.2", "6.5"] {
        let checkout = crate::churn::unpack(version, tmp.path());
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_custody"))
            .args(["publish", "--brokers", &h.cluster.bootstrap_servers()])
            .args(["--topic", &h.config.service.reports_topics[0]])
            .args(["--target", TORNADO, "--source"])
            .arg(&checkout)
            .arg(format!("tests/fixtures/churn/ruff-{version}.sarif"))
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        assert!(!stderr.contains("warning"), "{stderr}");
        let messages: usize = stdout
            .split(" bytes in ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("no message count in {stdout}"));
        n += messages;
        wait_done(&service, n);
        if first.is_empty() {
            first = h.findings();
        }
    }
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("tests/fixtures/churn/expected.json").unwrap(),
    )
    .unwrap();
    let old_total = v["ruff_sarif"]["old_total"].as_u64().unwrap() as usize;
    let (only_new, only_old, _) = crate::churn::expected("ruff_sarif");
    assert_eq!(count(&first, FindingEventKind::Opened), old_total);
    let all = h.findings();
    assert_eq!(
        count(&all, FindingEventKind::Opened),
        old_total + only_new as usize
    );
    assert_eq!(count(&all, FindingEventKind::Resolved), only_old as usize);
    assert_eq!(count(&all, FindingEventKind::Reopened), 0);
    assert_eq!(all.len(), old_total + (only_new + only_old) as usize);
    service.stop().unwrap();
}

/// A rescan that sends its target's last report again is applied without
/// decoding it, and changes nothing an event tells of; a report that
/// differs, or the old one after it, is decoded and applied in full.
#[test]
fn a_report_sent_again_is_applied_without_decoding_it() {
    let h = Harness::new(2);
    let service = h.start();
    let (old, new) = old_new("bandit");
    let mut n = h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    n += h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    assert_eq!(h.findings().len(), 272, "only the first opened anything");
    assert_unchanged(&service, 1);
    // The real change, then the old report again: the memory of the last
    // scan is the new report's, so the old one is decoded and reopens what
    // the new one resolved.
    n += h.publish(TORNADO, "bandit", &new, DEFAULT_CHUNK_BYTES);
    n += h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    let all = h.findings();
    assert_eq!(count(&all, FindingEventKind::Resolved), 17 + 14);
    assert_eq!(count(&all, FindingEventKind::Reopened), 17);
    assert_unchanged(&service, 1);
    // Sent again in chunks: the joined report is the same one.
    n += h.publish(TORNADO, "bandit", &old, 64 * 1024);
    assert!(n > 5, "the report went in several chunks");
    wait_done(&service, n);
    assert_unchanged(&service, 2);
    assert_eq!(h.findings().len(), all.len(), "no event from the rescan");
    // Under another target the same bytes are a first scan.
    n += h.publish(
        "repo:github.com/other/tornado",
        "bandit",
        &old,
        DEFAULT_CHUNK_BYTES,
    );
    wait_done(&service, n);
    assert_eq!(h.findings().len(), all.len() + 272);
    assert_unchanged(&service, 2);
    let text = service.metrics.render();
    assert!(
        text.contains("custody_findings_consumed_total 1629\n"),
        "five old reports of 272 findings and the new one of 269, unchanged ones included: {text}"
    );
    service.stop().unwrap();
}

#[test]
fn chunked_and_enveloped_reports_give_the_same_events() {
    let h = Harness::new(2);
    let service = h.start();
    let (old, _) = old_new("bandit");
    // 381 KB in 20 KB chunks.
    let p = h.publisher();
    let report = std::fs::read(&old).unwrap();
    let published = p.send(&h.opts(TORNADO, "bandit", 20_000), &report).unwrap();
    p.flush(Duration::from_secs(30)).unwrap();
    let chunks = published.chunks;
    assert!(chunks > 10, "{chunks} chunks");
    wait_done(&service, chunks);
    let events = h.findings();
    assert_eq!(count(&events, FindingEventKind::Opened), 272);
    // Every event names the scan that caused it: the publisher's id.
    assert!(events
        .iter()
        .all(|e| e.scan_id.as_deref() == Some(published.scan_id.as_str())));
    // The same scan again, in an envelope, on another target.
    let mut env = br#"{"custody_envelope": 1, "target": "repo:github.com/other/tornado", "scanner": "bandit", "report": "#.to_vec();
    env.extend_from_slice(&report);
    env.extend_from_slice(b"}");
    h.send_raw(Some("repo:github.com/other/tornado"), &[], &env);
    wait_done(&service, chunks + 1);
    let events = h.findings();
    let other: Vec<&FindingEvent> = events
        .iter()
        .filter(|e| e.target.to_string() == "repo:github.com/other/tornado")
        .collect();
    assert_eq!(other.len(), 272);
    // No scan id was given: it is derived from the report's bytes (the
    // envelope's `report` value, without the file's final newline).
    let derived = custody::model::ScanMeta::content_id(report.trim_ascii_end());
    assert!(other
        .iter()
        .all(|e| e.scan_id.as_deref() == Some(derived.as_str())));
    service.stop().unwrap();
}

#[test]
fn restart_restores_state_from_the_changelog() {
    let h = Harness::new(3);
    let (old, new) = old_new("bandit");
    let service = h.start_owned();
    let n = h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    service.stop().unwrap();
    let before = h.findings().len();
    let tickets_before = h.tickets().len();
    assert_eq!(before, 272);
    assert_eq!(h.committed(), 1, "the processed message is committed");

    // A new instance restores, and a rescan of the same report is quiet:
    // the changelog remembers the last scan, so it is recognized without
    // a decode.
    let service = h.start_owned();
    // Restored records are decoded in the background once every partition
    // is back: the state gauges then count them all.
    wait_metric(&service, "custody_state_findings{status=\"open\"} 272");
    // And the gauge of targets still to decode says none is left.
    wait_metric(&service, "custody_targets_undecoded 0");
    let m = h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, m);
    assert_eq!(
        h.findings().len(),
        before,
        "no event for an unchanged rescan"
    );
    assert_unchanged(&service, 1);
    assert_eq!(h.tickets().len(), tickets_before, "no ticket re-opened");
    // The new release: exactly the real change.
    let k = h.publish(TORNADO, "bandit", &new, DEFAULT_CHUNK_BYTES);
    wait_done(&service, m + k);
    let all = h.findings();
    assert_eq!(count(&all, FindingEventKind::Opened), 272 + 14);
    assert_eq!(count(&all, FindingEventKind::Resolved), 17);
    let reopened_tickets = h
        .tickets()
        .iter()
        .filter(|t| t.event == TicketEventKind::Reopened)
        .count();
    assert_eq!(reopened_tickets, 0);
    // Ownership survived the restart: every event has a team.
    assert!(all.iter().all(|e| e.team.is_some()));
    service.stop().unwrap();
    assert_eq!(h.committed(), 3);
}

/// Regression (chaos run, 2026-12-06): the changelog can be ahead of the
/// committed offsets (offsets are committed after the changelog is
/// acknowledged, by auto-commit every 5 s), so a crash redelivered
/// messages already in the restored state, and applying the old release
/// again on top of the new one reopened and resolved findings that had
/// not changed. Here the group's offsets are moved back to the start, as
/// a crash before the commit leaves them: the redelivered messages
/// produce no event at all, and are committed.
#[test]
fn messages_redelivered_behind_the_changelog_produce_no_other_events() {
    let h = Harness::new(3);
    let (old, new) = old_new("bandit");
    let service = h.start_owned();
    let n = h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES)
        + h.publish(TORNADO, "bandit", &new, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    service.stop().unwrap();
    let (findings, tickets) = (h.findings().len(), h.tickets().len());
    assert_eq!(h.committed(), 2);
    h.commit_at(0);
    assert_eq!(h.committed(), 0);

    let service = h.start_owned();
    wait_done(&service, n);
    let text = service.metrics.render();
    service.stop().unwrap();
    let after = h.findings();
    assert_eq!(
        after.len(),
        findings,
        "events of redelivered messages: {:?}",
        after[findings..]
            .iter()
            .map(|e| (&e.event, &e.fingerprint))
            .collect::<Vec<_>>()
    );
    assert_eq!(h.tickets().len(), tickets);
    assert_eq!(h.committed(), 2, "the redelivered messages are committed");
    // Both passed over: the changelog's last group of records, the
    // second message's, is whole.
    assert_eq!(
        metric(
            &text,
            "custody_messages_consumed_total{outcome=\"already_applied\"}"
        ),
        2.0
    );
}

/// Reports published while custody was down wait, fetched, while the
/// restarted instance restores its state, and are then applied against it:
/// the old report again changes nothing, the new one exactly the real
/// change.
#[test]
fn a_backlog_from_while_down_is_applied_against_the_restored_state() {
    let h = Harness::new(2);
    let (old, new) = old_new("bandit");
    let service = h.start_owned();
    let n = h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    service.stop().unwrap();
    assert_eq!(h.findings().len(), 272);
    let mut m = h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    m += h.publish(TORNADO, "bandit", &new, DEFAULT_CHUNK_BYTES);
    let service = h.start_owned();
    wait_done(&service, m);
    // The old report again is recognized, its target not even decoded
    // when it comes.
    assert_unchanged(&service, 1);
    let all = h.findings();
    assert_eq!(count(&all, FindingEventKind::Opened), 272 + 14);
    assert_eq!(count(&all, FindingEventKind::Resolved), 17);
    assert_eq!(count(&all, FindingEventKind::Reopened), 0);
    assert_eq!(all.len(), 272 + 14 + 17);
    service.stop().unwrap();
    assert_eq!(h.committed(), 3);
}

/// The changelog's record of a target's last scan holds only under the
/// settings that scan was applied with: restarted under another SLA
/// policy, custody decodes the same report again, and remembers it anew.
#[test]
fn a_remembered_scan_is_decoded_again_under_other_settings() {
    let h = Harness::new(1);
    let (old, _) = old_new("bandit");
    let service = h.start();
    let n = h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    service.stop().unwrap();
    let mut config = h.config.clone();
    config.sla.business_days = !config.sla.business_days;
    let restart = || Service::start(&config, None).expect("service starts");
    let service = restart();
    let mut m = h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, m);
    assert_unchanged(&service, 0);
    m += h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, m);
    assert_unchanged(&service, 1);
    service.stop().unwrap();
    // Under the same settings again: recognized from the changelog.
    let service = restart();
    let m = h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, m);
    assert_unchanged(&service, 1);
    service.stop().unwrap();
    assert_eq!(
        h.findings().len(),
        272,
        "only the first scan opened anything"
    );
}

/// A finding marked false positive is re-attributed by a scan that
/// observes it, not by re-attribution (which passes over it). Its owner
/// moving while custody was down, the rescan after the restart must still
/// reassign it, though the changelog remembers the report as the last
/// scan: the remembered scan's attributions are checked first.
#[test]
fn a_remembered_scan_does_not_hide_a_false_positives_new_owner() {
    let h = Harness::new(1);
    let (old, _) = old_new("bandit");
    let networking = ownership_dir("@acme/networking");
    let qa = ownership_dir("@acme/qa");
    let start = |dir: &tempfile::TempDir| {
        let own = Reloadable::load(&dir.path().join("owners.toml")).unwrap();
        Service::start(&h.config, Some(Arc::new(own))).expect("service starts")
    };
    let service = start(&networking);
    let mut n = h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    let moving: HashSet<String> = h
        .findings()
        .iter()
        .filter(|e| in_iostream(e))
        .map(|e| e.fingerprint.clone())
        .collect();
    assert!(!moving.is_empty());
    for fp in &moving {
        let d = serde_json::json!({
            "target": TORNADO, "fingerprint": fp, "decision": "false_positive",
            "reason": "test code", "author": "a@example.com",
            "decided_at": "2026-01-01T00:00:00Z"
        });
        h.send_raw(
            Some(TORNADO),
            &[("custody-kind", "decision")],
            d.to_string().as_bytes(),
        );
        n += 1;
    }
    wait_done(&service, n);
    // Rescanned: applied in full after the decisions, so the changelog's
    // record of the last scan comes after them and holds.
    n += h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    service.stop().unwrap();
    let seen: HashSet<String> = h.findings().into_iter().map(|e| e.event_id).collect();

    let service = start(&qa);
    let m = h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, m);
    assert_unchanged(&service, 0);
    service.stop().unwrap();
    let reassigned: Vec<FindingEvent> = h
        .findings()
        .into_iter()
        .filter(|e| !seen.contains(&e.event_id))
        .collect();
    assert_eq!(reassigned.len(), moving.len());
    assert!(reassigned
        .iter()
        .all(|e| e.event == FindingEventKind::Reassigned
            && e.team.as_deref() == Some("qa")
            && moving.contains(&e.fingerprint)));
}

/// A report so large that the record of its scan would not fit in a Kafka
/// message is applied all the same; its scan is remembered in memory only.
/// A ticket of 29,000 findings is produced whole (its event and its
/// changelog record are larger than librdkafka's default largest message).
#[test]
fn a_report_too_large_to_remember_in_the_changelog_is_applied() {
    let h = Harness::new(1);
    let service = h.start();
    let dir = tempfile::tempdir().unwrap();
    // 30,000 findings: the observed fingerprints alone are over 1 MB, and
    // so are the event and the changelog record of the ticket that 29,000
    // of them share (one rule); the others make 1,000 tickets.
    let results: Vec<serde_json::Value> = (0..30_000)
        .map(|i| {
            let rule = if i < 29_000 {
                "B101".to_string()
            } else {
                format!("B{i}")
            };
            serde_json::json!({
                "ruleId": rule, "level": "warning",
                "message": {"text": "assert used"},
                "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": format!("pkg/f{i}.py")},
                    "region": {"startLine": 1}}}]
            })
        })
        .collect();
    let log = serde_json::json!({"version": "2.1.0", "runs": [{
        "tool": {"driver": {"name": "bandit", "rules": []}},
        "results": results}]});
    let path = dir.path().join("big.sarif");
    std::fs::write(&path, log.to_string()).unwrap();
    let path = path.to_str().unwrap();
    let mut n = h.publish(TORNADO, "bandit", path, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    assert!(!service.health.failed.load(Ordering::Acquire));
    assert_eq!(h.findings().len(), 30_000);
    let big = h
        .tickets()
        .into_iter()
        .find(|t| t.group == "B101")
        .expect("the ticket of rule B101");
    assert_eq!(big.fingerprints.len(), 29_000);
    // Remembered in memory all the same.
    n += h.publish(TORNADO, "bandit", path, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    assert_unchanged(&service, 1);
    service.stop().unwrap();
    assert_eq!(h.committed(), n as i64);
}

/// A changelog record of a target that does not decode stops the
/// service when the target is needed, even when a rescan would be
/// recognized as its last scan: nothing is applied to a state restored in
/// part, and the message is not committed.
#[test]
fn a_target_whose_changelog_does_not_decode_is_never_applied_to() {
    let h = Harness::new(1);
    let (old, _) = old_new("bandit");
    let service = h.start();
    while service.health.ready().is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let settings = &h.config.service;
    let changelog = settings.changelog_for(&settings.reports_topics[0]);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", h.cluster.bootstrap_servers())
        .create()
        .unwrap();
    let key = format!("f\0{TORNADO}\0zzz");
    producer
        .send(
            BaseRecord::<'_, [u8], [u8]>::to(&changelog)
                .partition(0)
                .key(key.as_bytes())
                .payload(&b"not json"[..]),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    // Applied in memory (the bad record is only read at a restore), and
    // remembered in the changelog after the bad record.
    let n = h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    service.stop().unwrap();
    let before = h.findings().len();
    let committed = h.committed();
    h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    let service = h.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !service.finished() {
        assert!(Instant::now() < deadline, "the service did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let error = service.health.last_error.lock().unwrap().clone();
    assert!(
        error.as_deref().is_some_and(|e| e.contains("zzz")),
        "{error:?}"
    );
    let _ = service.stop();
    assert_eq!(h.findings().len(), before, "nothing applied");
    assert_eq!(h.committed(), committed, "nothing committed");
}

/// The ownership example in a folder of its own, with `iostream.py` owned
/// by `owner`.
fn ownership_dir(owner: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir("tests/fixtures/ownership").unwrap() {
        let path = entry.unwrap().path();
        let to = dir.path().join(path.file_name().unwrap());
        std::fs::copy(&path, &to).unwrap();
    }
    let co = dir.path().join("tornado.CODEOWNERS");
    let text = std::fs::read_to_string(&co).unwrap();
    let line = "/tornado/iostream.py    @acme/networking";
    assert!(
        text.contains(line),
        "the example still names iostream.py's owner"
    );
    std::fs::write(
        &co,
        text.replace(line, &format!("/tornado/iostream.py    {owner}")),
    )
    .unwrap();
    dir
}

/// A rescan whose SARIF differs only in what the decoder skips (Bandit
/// writes when its run ended) is recognized too, from the second report on
/// (the first report's content digest is taken with its decode).
#[test]
fn a_restamped_sarif_rescan_is_applied_without_decoding_it() {
    let h = Harness::new(1);
    let service = h.start();
    let dir = tempfile::tempdir().unwrap();
    // Publishes `file` once per hour in `hours`, its run's end time
    // `stamp` moved to that hour; returns the messages sent.
    let publish_restamped = |file: &str, stamp: &str, hours: std::ops::Range<u32>| {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.contains(stamp), "{file}: the run says when it ended");
        let mut n = 0;
        for hour in hours {
            let path = dir.path().join(format!("{hour}.sarif"));
            std::fs::write(
                &path,
                text.replace(stamp, &format!("{}{hour}{}", &stamp[..11], &stamp[13..])),
            )
            .unwrap();
            n += h.publish(
                TORNADO,
                "bandit",
                path.to_str().unwrap(),
                DEFAULT_CHUNK_BYTES,
            );
        }
        n
    };
    let (old, changed) = old_new("bandit");
    let mut n = publish_restamped(&old, "2026-11-24T16:25:14Z", 16..20);
    wait_done(&service, n);
    assert_eq!(h.findings().len(), 272, "only the first opened anything");
    // The second, third and fourth are recognized: the first scan's
    // content digest was taken with its decode.
    assert_unchanged(&service, 3);
    // A scan whose findings changed, its run stamped too, is decoded and
    // applied in full: the target is recognized by content alone by now,
    // so the content digest is all that tells the change.
    n += publish_restamped(&changed, "2026-11-24T16:25:28Z", 20..22);
    wait_done(&service, n);
    let all = h.findings();
    assert_eq!(count(&all, FindingEventKind::Opened), 272 + 14);
    assert_eq!(count(&all, FindingEventKind::Resolved), 17);
    assert_eq!(all.len(), 272 + 14 + 17, "the change's events, once");
    // The second of them is recognized.
    assert_unchanged(&service, 4);
    service.stop().unwrap();
}

/// A report remembered under one ownership is applied in full under
/// another, even before the re-attribution a reload starts has run (the
/// ownership topic's follower puts a version in force at any moment): its
/// scan gives the `reassigned` events.
#[test]
fn a_report_sent_again_under_new_ownership_is_decoded_again() {
    let h = Harness::new(1);
    let (old, _) = old_new("bandit");
    let networking = ownership_dir("@acme/networking");
    let own = Arc::new(Reloadable::load(&networking.path().join("owners.toml")).unwrap());
    let service = Service::start(&h.config, Some(Arc::clone(&own))).expect("service starts");
    let mut n = h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    let first = h.findings();
    let moving = first.iter().filter(|e| in_iostream(e)).count();
    assert!(moving > 0);
    // iostream.py now belongs to qa, put in force without telling the
    // service's loop (no re-attribution runs).
    let qa = ownership_dir("@acme/qa");
    own.set(custody::ownership::Ownership::load(&qa.path().join("owners.toml")).unwrap());
    n += h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    let all = h.findings();
    let reassigned: Vec<&FindingEvent> = all
        .iter()
        .filter(|e| e.event == FindingEventKind::Reassigned)
        .collect();
    assert_eq!(
        reassigned.len(),
        moving,
        "the rescan moved iostream.py's findings"
    );
    assert!(reassigned.iter().all(|e| e.team.as_deref() == Some("qa")));
    assert_unchanged(&service, 0);
    // Sent once more under the same ownership, it is recognized.
    n += h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    assert_eq!(h.findings().len(), all.len());
    assert_unchanged(&service, 1);
    service.stop().unwrap();
}

#[test]
fn ownership_changed_while_down_reassigns_the_restored_state() {
    let h = Harness::new(3);
    let (old, _) = old_new("bandit");
    let start = |dir: &tempfile::TempDir| {
        let own = Reloadable::load(&dir.path().join("owners.toml")).unwrap();
        Service::start(&h.config, Some(Arc::new(own))).expect("service starts")
    };
    let networking = ownership_dir("@acme/networking");
    let service = start(&networking);
    let n = h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    service.stop().unwrap();
    let first = h.findings();
    let moving: HashSet<String> = first
        .iter()
        .filter(|e| in_iostream(e))
        .map(|e| e.fingerprint.clone())
        .collect();
    assert!(!moving.is_empty(), "bandit reports findings in iostream.py");
    assert!(first
        .iter()
        .filter(|e| moving.contains(&e.fingerprint))
        .all(|e| e.team.as_deref() == Some("networking")));

    // iostream.py now belongs to qa. Nothing is published: the restored
    // state is re-attributed as it is decoded.
    let qa = ownership_dir("@acme/qa");
    let service = start(&qa);
    let deadline = Instant::now() + Duration::from_secs(60);
    // Events of every partition of the findings topic, in partition order:
    // the new ones are told apart by id.
    let seen: HashSet<String> = first.iter().map(|e| e.event_id.clone()).collect();
    let reassigned = loop {
        let r: Vec<FindingEvent> = h
            .findings()
            .into_iter()
            .filter(|e| !seen.contains(&e.event_id))
            .collect();
        if r.len() >= moving.len() {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} reassigned",
            r.len(),
            moving.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        reassigned.len(),
        moving.len(),
        "only iostream.py's findings move"
    );
    for e in &reassigned {
        assert_eq!(e.event, FindingEventKind::Reassigned);
        assert!(moving.contains(&e.fingerprint));
        assert_eq!(e.team.as_deref(), Some("qa"));
        assert_eq!(e.previous_team.as_deref(), Some("networking"));
        assert_eq!(
            e.attribution
                .file
                .as_deref()
                .map(|f| f.ends_with("tornado.CODEOWNERS")),
            Some(true)
        );
    }
    let tickets = h.tickets();
    assert!(tickets
        .iter()
        .any(|t| t.team.as_deref() == Some("qa") && t.event == TicketEventKind::Opened));
    // Wait for the changelog to hold the change: the state counts qa's
    // findings, and the events' records are written once they are acked.
    std::thread::sleep(Duration::from_secs(2));
    service.stop().unwrap();

    // Restarted again under the same ownership, then rescanned: the
    // reassignment was kept in the changelog, so nothing moves again and
    // the rescan is quiet. It is decoded: the reassignment's records came
    // after the changelog's record of the last scan, which they void.
    let service = start(&qa);
    let m = h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, m);
    assert_unchanged(&service, 0);
    service.stop().unwrap();
    // On failure, the events past those expected say what moved again.
    let extra = |all: Vec<String>, expected: usize| all[expected.min(all.len())..].join("\n");
    let findings = h.findings();
    assert_eq!(
        findings.len(),
        first.len() + moving.len(),
        "finding events after the rescan:\n{}",
        extra(
            findings
                .iter()
                .map(|e| format!("{:?} {} {:?}", e.event, e.fingerprint, e.team))
                .collect(),
            first.len() + moving.len()
        )
    );
    let after = h.tickets();
    assert_eq!(
        after.len(),
        tickets.len(),
        "ticket events after the rescan:\n{}",
        extra(
            after
                .iter()
                .map(|t| format!("{:?} {} {:?}", t.event, t.ticket_key, t.team))
                .collect(),
            tickets.len()
        )
    );
}

#[test]
fn poison_messages_are_dead_lettered_while_good_ones_flow() {
    let h = Harness::new(1);
    let service = h.start();
    let (old, _) = old_new("semgrep");
    let good = std::fs::read(&old).unwrap();
    h.send_raw(Some(TORNADO), &[], b"not json at all");
    h.send_raw(Some(TORNADO), &[("custody-scanner", "semgrep")], &good);
    h.send_raw(Some(TORNADO), &[("custody-format", "pdf")], &good);
    h.send_raw(Some(TORNADO), &[("custody-chunk", "1/2")], &good);
    h.send_raw(None, &[], &good);
    h.send_raw(Some(TORNADO), &[], br#"{"version": "2.1.0", "runs": 7}"#);
    h.send_raw(Some(TORNADO), &[], &"[".repeat(100_000).into_bytes());
    h.send_raw(Some(TORNADO), &[("custody-scanner", "semgrep")], &good);
    wait_done(&service, 8);
    // Every message is counted as applied once: the good ones and the
    // dead-lettered alike.
    assert_eq!(service.health.applied_messages.load(Ordering::Relaxed), 8);
    let letters = dead_letters(&h, 6);
    for l in &letters {
        assert_eq!(l.header("custody-dlq-topic"), Some("custody.reports"));
        assert_eq!(l.header("custody-dlq-partition"), Some("0"));
        assert!(l.header("custody-dlq-error").is_some_and(|e| !e.is_empty()));
    }
    let mut reasons: Vec<(i64, String)> = letters
        .iter()
        .map(|l| {
            (
                l.offset,
                l.header("custody-dlq-reason").unwrap().to_string(),
            )
        })
        .collect();
    reasons.sort();
    let reasons: Vec<(i64, &str)> = reasons.iter().map(|(o, r)| (*o, r.as_str())).collect();
    assert_eq!(
        reasons,
        vec![
            (0, "syntax"),
            (2, "bad_metadata"),
            (3, "bad_metadata"),
            (4, "no_target"),
            (5, "shape"),
            (6, "shape"),
        ]
    );
    // The good ones went through: 10 semgrep findings, opened once.
    let events = h.findings();
    assert_eq!(count(&events, FindingEventKind::Opened), 10);
    let text = service.metrics.render();
    assert!(
        text.contains("custody_dead_lettered_total{reason=\"shape\"} 2"),
        "{text}"
    );
    service.stop().unwrap();
    assert_eq!(h.committed(), 8, "dead-lettered messages are committed too");
}

/// Messages applied behind a chunk whose scan is still incomplete wait
/// only for it before their offsets are stored: they are not work in
/// flight, so they do not pause the partition and keep out the scan's
/// last chunk.
#[test]
fn messages_behind_an_incomplete_chunked_scan_do_not_stall_it() {
    let mut h = Harness::new(1);
    h.config.service.max_in_flight_messages = 2;
    let service = h.start();
    let (old, _) = old_new("semgrep");
    let good = std::fs::read(&old).unwrap();
    let (head, tail) = good.split_at(good.len() / 2);
    let chunk = |i: &'static str| {
        [
            ("custody-chunk", i),
            ("custody-scan-id", "nightly-8"),
            ("custody-scanner", "semgrep"),
            ("custody-target", "repo:github.com/other/tornado"),
        ]
    };
    h.send_raw(Some("repo:github.com/other/tornado"), &chunk("1/2"), head);
    for _ in 0..6 {
        h.send_raw(Some(TORNADO), &[("custody-scanner", "semgrep")], &good);
    }
    // All six applied, their offsets waiting behind the held chunk, before
    // the last chunk is sent: a partition paused for them would never read
    // it.
    wait_metric(
        &service,
        "custody_messages_consumed_total{outcome=\"processed\"} 6",
    );
    h.send_raw(Some("repo:github.com/other/tornado"), &chunk("2/2"), tail);
    wait_done(&service, 8);
    let events = h.findings();
    assert_eq!(
        count(&events, FindingEventKind::Opened),
        20,
        "10 per target"
    );
    service.stop().unwrap();
    assert_eq!(h.committed(), 8);
}

/// A message of the dead-letter topic.
struct DeadLetter {
    /// The offset it had in the reports topic.
    offset: i64,
    headers: Vec<(String, String)>,
    payload: Vec<u8>,
}

impl DeadLetter {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The first `n` dead letters, by their offset in the reports topic.
fn dead_letters(h: &Harness, n: usize) -> Vec<DeadLetter> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", h.cluster.bootstrap_servers())
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer
        .subscribe(&[&h.config.service.dead_letter_topic])
        .unwrap();
    let mut letters = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while letters.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let headers: Vec<(String, String)> = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            let v = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                            (h.key.to_string(), v.into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            let offset = headers
                .iter()
                .find(|(k, _)| k == "custody-dlq-offset")
                .and_then(|(_, v)| v.parse().ok())
                .expect("a dead letter names its offset");
            letters.push(DeadLetter {
                offset,
                headers,
                payload: m.payload().unwrap_or_default().to_vec(),
            });
        }
    }
    assert_eq!(letters.len(), n, "dead letters");
    letters.sort_by_key(|l| l.offset);
    letters
}

/// The chunks of a scan that never completes are dead-lettered as they
/// came (headers and payload, so they can be replayed) once the chunk
/// timeout passes, a publisher's retried duplicate too; the messages
/// behind them are applied and every offset is committed.
#[test]
fn an_incomplete_chunked_scan_is_dead_lettered_as_it_came() {
    let mut h = Harness::new(1);
    h.config.service.chunk_timeout = Duration::from_secs(1);
    let service = h.start();
    let (old, _) = old_new("semgrep");
    let good = std::fs::read(&old).unwrap();
    let chunk = [
        ("custody-chunk", "1/3"),
        ("custody-scan-id", "nightly-7"),
        ("custody-scanner", "semgrep"),
    ];
    h.send_raw(Some(TORNADO), &chunk, &good[..1000]);
    // The publisher retried: the same chunk again.
    h.send_raw(Some(TORNADO), &chunk, &good[..1000]);
    h.send_raw(Some(TORNADO), &[("custody-scanner", "semgrep")], &good);
    wait_done(&service, 3);
    let letters = dead_letters(&h, 2);
    assert_eq!(
        letters.iter().map(|l| l.offset).collect::<Vec<_>>(),
        vec![0, 1]
    );
    for l in &letters {
        assert_eq!(l.header("custody-dlq-reason"), Some("incomplete_scan"));
        assert!(l
            .header("custody-dlq-error")
            .is_some_and(|e| e.contains("1 of 3 chunks")));
        assert_eq!(l.header("custody-chunk"), Some("1/3"));
        assert_eq!(l.header("custody-scan-id"), Some("nightly-7"));
        assert_eq!(l.payload, &good[..1000]);
    }
    assert_eq!(count(&h.findings(), FindingEventKind::Opened), 10);
    let text = service.metrics.render();
    assert!(
        text.contains("custody_dead_lettered_total{reason=\"incomplete_scan\"} 2"),
        "each chunk dead-lettered once: {text}"
    );
    service.stop().unwrap();
    assert_eq!(h.committed(), 3);
}

/// A chunked scan that fails, because its joined report does not decode,
/// it grows past the report size limit or a chunk's count disagrees with
/// the others', is dead-lettered whole: every chunk as it came, so it can
/// be replayed, not only the chunk that finished or broke it.
#[test]
fn a_failed_chunked_scan_is_dead_lettered_whole() {
    let mut h = Harness::new(1);
    h.config.max_report_bytes = 2500;
    let service = h.start();
    let chunk = |i: &'static str, scan: &'static str| {
        [
            ("custody-chunk", i),
            ("custody-scan-id", scan),
            ("custody-scanner", "semgrep"),
        ]
    };
    // Two chunks that join into something that is not JSON.
    h.send_raw(Some(TORNADO), &chunk("1/2", "bad"), b"{\"results\": [");
    h.send_raw(Some(TORNADO), &chunk("2/2", "bad"), b"oops");
    // Three chunks of 1000 bytes: the third passes the 2500-byte limit.
    let kb = vec![b' '; 1000];
    h.send_raw(Some(TORNADO), &chunk("1/3", "big"), &kb);
    h.send_raw(Some(TORNADO), &chunk("2/3", "big"), &kb);
    h.send_raw(Some(TORNADO), &chunk("3/3", "big"), &kb);
    // A chunk whose count disagrees with its scan's earlier chunks.
    h.send_raw(Some(TORNADO), &chunk("1/3", "odd"), b"{");
    h.send_raw(Some(TORNADO), &chunk("2/4", "odd"), b"[]");
    wait_done(&service, 7);
    let letters = dead_letters(&h, 7);
    let got: Vec<(i64, &str, &str, usize)> = letters
        .iter()
        .map(|l| {
            (
                l.offset,
                l.header("custody-dlq-reason").unwrap(),
                l.header("custody-chunk").unwrap(),
                l.payload.len(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (0, "syntax", "1/2", 13),
            (1, "syntax", "2/2", 4),
            (2, "too_large", "1/3", 1000),
            (3, "too_large", "2/3", 1000),
            (4, "too_large", "3/3", 1000),
            (5, "bad_metadata", "1/3", 1),
            (6, "bad_metadata", "2/4", 2),
        ]
    );
    let text = service.metrics.render();
    for (reason, n) in [("syntax", 2), ("too_large", 3), ("bad_metadata", 2)] {
        assert!(
            text.contains(&format!(
                "custody_dead_lettered_total{{reason=\"{reason}\"}} {n}"
            )),
            "{reason}: {text}"
        );
    }
    service.stop().unwrap();
    assert_eq!(h.committed(), 7);
}

/// A stop asked while the brokers refuse every event ends within its
/// deadlines, instead of waiting for the producer's full queue to drain
/// (up to librdkafka's message.timeout.ms, five minutes by default): the
/// run ends with the delivery error, nothing unacknowledged is committed,
/// and the restart processes the message whole.
#[test]
fn a_stop_while_brokers_refuse_events_ends_in_time_and_loses_nothing() {
    let mut h = Harness::new(1);
    h.config.service.shutdown_timeout = Duration::from_secs(2);
    // A producer queue far smaller than one report's events.
    h.config
        .service
        .properties
        .insert("queue.buffering.max.messages".into(), "20".into());
    let (old, _) = old_new("bandit");
    let n = h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    // From now on every produce request fails, with an error librdkafka
    // retries until the message times out.
    h.cluster.request_errors(
        RDKafkaApiKey::Produce,
        &vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 100_000],
    );
    let service = h.start();
    wait_metric(
        &service,
        "custody_messages_consumed_total{outcome=\"processed\"} 1",
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(service.stop());
    });
    let stopped = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the stop ends within its deadlines");
    let err = stopped.expect_err("the run ends with the delivery error");
    assert!(err.to_string().contains("queue stayed full"), "{err}");
    assert_eq!(h.committed(), 0, "nothing unacknowledged is committed");
    h.cluster.clear_request_errors(RDKafkaApiKey::Produce);
    let service = h.start();
    wait_done(&service, n);
    let events = h.findings();
    let ids = unique_ids(&events);
    assert_eq!(
        ids.values()
            .filter(|e| e.event == FindingEventKind::Opened)
            .count(),
        272
    );
    service.stop().unwrap();
    assert_eq!(h.committed(), n as i64);
}

#[test]
fn two_instances_split_partitions_and_rebalance() {
    let h = Harness::new(4);
    let a = h.start();
    let b = h.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Both own partitions once the group settles, and both are ready.
    loop {
        let pa = a.health.partitions.lock().unwrap().len();
        let pb = b.health.partitions.lock().unwrap().len();
        if pa > 0 && pb > 0 && pa + pb == 4 && a.health.ready().is_ok() && b.health.ready().is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "group did not settle: {pa} + {pb}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Eight targets spread over the partitions.
    let (old, new) = old_new("bandit");
    let targets: Vec<String> = (0..8)
        .map(|i| format!("repo:github.com/acme/service-{i}"))
        .collect();
    for t in &targets {
        h.publish(t, "bandit", &old, DEFAULT_CHUNK_BYTES);
    }
    let done = |s: &Service| s.health.done_messages.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    while done(&a) + done(&b) < 8 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(done(&a) > 0 && done(&b) > 0, "both instances worked");
    // B leaves; A takes over B's partitions with their state.
    b.stop().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.health.partitions.lock().unwrap().len() < 4 || a.health.ready().is_err() {
        assert!(Instant::now() < deadline, "A did not take over");
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = done(&a);
    for t in &targets {
        h.publish(t, "bandit", &new, DEFAULT_CHUNK_BYTES);
    }
    wait_done(&a, before + 8);
    let events = h.findings();
    assert_eq!(unique_ids(&events).len(), events.len());
    // Per target: 272 opened by the first scan, 14 opened and 17 resolved
    // by the second, whoever processed it; nothing opened twice.
    for t in &targets {
        let mine: Vec<FindingEvent> = events
            .iter()
            .filter(|e| &e.target.to_string() == t)
            .cloned()
            .collect();
        assert_eq!(count(&mine, FindingEventKind::Opened), 272 + 14, "{t}");
        assert_eq!(count(&mine, FindingEventKind::Resolved), 17, "{t}");
    }
    a.stop().unwrap();
}

#[test]
fn backpressure_pauses_without_losing_messages() {
    let mut h = Harness::new(1);
    h.config.service.max_in_flight_messages = 2;
    let service = h.start();
    let (old, new) = old_new("bandit");
    let (old, new) = (std::fs::read(old).unwrap(), std::fs::read(new).unwrap());
    let p = h.publisher();
    for i in 0..10 {
        let bytes = if i % 2 == 0 { &old } else { &new };
        p.send(&h.opts(TORNADO, "bandit", DEFAULT_CHUNK_BYTES), bytes)
            .unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
    wait_done(&service, 10);
    let events = h.findings();
    // Alternating releases, applied in order: 272 opened, 14 more at the
    // first switch; each of the 9 switches resolves what the other
    // release lacks (17 or 14), and each after the first reopens it.
    assert_eq!(count(&events, FindingEventKind::Opened), 272 + 14);
    assert_eq!(count(&events, FindingEventKind::Resolved), 17 * 5 + 14 * 4);
    assert_eq!(count(&events, FindingEventKind::Reopened), 17 * 4 + 14 * 4);
    service.stop().unwrap();
    assert_eq!(h.committed(), 10);
}

/// The value of a gauge or counter without labels in rendered metrics.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// Partitions still restoring share one in-flight bound: a replica that
/// takes over partitions with backlogs, while it reads their changelogs,
/// holds about `max_in_flight_bytes` of their messages in all, not that
/// much per partition. Nothing is lost: the held and the paused messages
/// are all applied once the restore ends.
#[test]
fn partitions_restoring_hold_one_in_flight_bound_together() {
    let mut h = Harness::with_slow_changelog(4);
    let (old, _) = old_new("bandit");
    let report = std::fs::metadata(&old).unwrap().len() as usize;
    // Two and a half reports in all, where each partition alone may hold
    // that much once restored.
    h.config.service.max_in_flight_bytes = report * 5 / 2;
    // A backlog of 24 reports over 8 targets, spread over the partitions.
    let targets: Vec<String> = (0..8)
        .map(|i| format!("repo:github.com/acme/backlog-{i}"))
        .collect();
    let mut n = 0;
    for _ in 0..3 {
        for t in &targets {
            n += h.publish(t, "bandit", &old, DEFAULT_CHUNK_BYTES);
        }
    }
    assert_eq!(n, 24, "one message per report");
    h.slow_changelog(Duration::from_millis(1500));
    let service = h.start();
    wait_assigned(&service, 4);
    // While every partition restores: the most they held (once one is
    // restored, it holds up to the bound on its own).
    let bound = h.config.service.max_in_flight_bytes as f64;
    let mut most = 0.0f64;
    let mut paused = 0.0f64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while service.health.ready().is_err() {
        assert!(Instant::now() < deadline, "never restored");
        // One rendering: the gauges are set together.
        let text = service.metrics.render();
        if metric(&text, "custody_partitions_restoring") == 4.0 {
            most = most.max(metric(&text, "custody_in_flight_bytes"));
            paused = paused.max(metric(&text, "custody_partitions_paused"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    h.slow_changelog(Duration::ZERO);
    assert!(
        most >= bound,
        "the backlog was held while restoring: {most} of {bound}"
    );
    // Passed by one message at most (the one that went over pauses every
    // partition still restoring; a message's bytes are its payload, key
    // and headers).
    assert!(
        most <= bound + report as f64 + 4096.0,
        "{most} bytes held while restoring, over the bound of {bound}"
    );
    assert_eq!(paused, 4.0, "the bound paused every partition");
    wait_done(&service, n);
    let events = h.findings();
    // Each target's first report opens its 272 findings; the two after it
    // find them unchanged.
    assert_eq!(count(&events, FindingEventKind::Opened), 8 * 272);
    assert_eq!(events.len(), 8 * 272);
    service.stop().unwrap();
    assert_eq!(h.committed(), 24);
}

/// Waits until the service holds `n` partitions, restored or not.
fn wait_assigned(service: &Service, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while service.health.partitions.lock().unwrap().len() < n {
        assert!(Instant::now() < deadline, "never assigned {n} partitions");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A chunked scan's clock starts when its partition's restore ends: a
/// chunk held through a restore longer than the chunk timeout is still
/// completed by a chunk that comes right after it.
#[test]
fn a_chunk_held_through_a_long_restore_is_not_expired_by_it() {
    let mut h = Harness::with_slow_changelog(1);
    let timeout = Duration::from_secs(3);
    h.config.service.chunk_timeout = timeout;
    let (old, _) = old_new("semgrep");
    let good = std::fs::read(&old).unwrap();
    let (head, tail) = good.split_at(good.len() / 2);
    let chunk = |i: &'static str| {
        [
            ("custody-chunk", i),
            ("custody-scan-id", "nightly-9"),
            ("custody-scanner", "semgrep"),
            ("custody-target", TORNADO),
        ]
    };
    h.send_raw(Some(TORNADO), &chunk("1/2"), head);
    h.slow_changelog(Duration::from_millis(2500));
    let service = h.start();
    wait_assigned(&service, 1);
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut held = 0.0f64;
    while service.health.ready().is_err() {
        assert!(Instant::now() < deadline, "never restored");
        let text = service.metrics.render();
        if metric(&text, "custody_partitions_restoring") == 1.0 {
            held = held.max(metric(&text, "custody_in_flight_bytes"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let restore = started.elapsed();
    assert!(
        held >= head.len() as f64,
        "the first chunk was held while restoring: {held} bytes"
    );
    h.slow_changelog(Duration::ZERO);
    assert!(
        restore > timeout * 2,
        "the restore outlasts the chunk timeout twice: {restore:?}"
    );
    h.send_raw(Some(TORNADO), &chunk("2/2"), tail);
    wait_done(&service, 2);
    let events = h.findings();
    assert_eq!(
        count(&events, FindingEventKind::Opened),
        10,
        "the scan applied"
    );
    let dead = read_all(
        &h.cluster.bootstrap_servers(),
        &h.config.service.dead_letter_topic,
    )
    .unwrap();
    assert!(dead.is_empty(), "the first chunk was not dead-lettered");
    service.stop().unwrap();
    assert_eq!(h.committed(), 2);
}

/// Chunks held for a scan's missing chunks are not work in flight: limits
/// far below one scan's chunks neither stall the scan (the missing chunks
/// come after the partition would pause) nor keep the partition paused
/// once the scan is applied.
#[test]
fn chunked_scans_larger_than_the_in_flight_limits_complete() {
    let mut h = Harness::new(1);
    h.config.service.max_in_flight_messages = 2;
    h.config.service.max_in_flight_bytes = 30_000;
    let service = h.start();
    let (old, new) = old_new("bandit");
    // 381 KB in 20 KB chunks: 20 messages, ten times the message limit.
    let first = h.publish(TORNADO, "bandit", &old, 20_000);
    let second = h.publish(TORNADO, "bandit", &new, 20_000);
    assert!(first >= 10 && second >= 10, "{first} and {second} chunks");
    // A whole report after them, in an envelope.
    let report = std::fs::read(&old).unwrap();
    let mut env = br#"{"custody_envelope": 1, "target": "repo:github.com/other/tornado", "scanner": "bandit", "report": "#.to_vec();
    env.extend_from_slice(&report);
    env.extend_from_slice(b"}");
    h.send_raw(Some("repo:github.com/other/tornado"), &[], &env);
    wait_done(&service, first + second + 1);
    let events = h.findings();
    let tornado: Vec<FindingEvent> = events
        .iter()
        .filter(|e| e.target.to_string() == TORNADO)
        .cloned()
        .collect();
    assert_eq!(count(&tornado, FindingEventKind::Opened), 272 + 14);
    assert_eq!(count(&tornado, FindingEventKind::Resolved), 17);
    assert_eq!(events.len() - tornado.len(), 272);
    let text = service.metrics.render();
    assert!(!text.contains("custody_dead_lettered_total{"), "{text}");
    service.stop().unwrap();
    assert_eq!(h.committed(), (first + second + 1) as i64);
}

#[test]
fn exactly_once_commits_events_state_and_offsets_in_transactions() {
    let mut h = Harness::new(2);
    h.config.service.delivery = custody::config::service::Delivery::ExactlyOnce;
    let (old, new) = old_new("bandit");
    let service = h.start();
    let n = h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    service.stop().unwrap();
    assert_eq!(count(&h.findings(), FindingEventKind::Opened), 272);
    // The mock accepts transactional offset commits but does not store
    // them (librdkafka's mock handler reads TxnOffsetCommit and drops it),
    // so the next instance reads the topic again from the start: the
    // restored state makes the replay silent. A chunked report then spans
    // transactions, and the next release is exactly the real change.
    let service = h.start();
    let k = h.publish(TORNADO, "bandit", &new, 50_000);
    assert!(k > 1);
    wait_done(&service, n + k);
    service.stop().unwrap();
    let all = h.findings();
    assert_eq!(unique_ids(&all).len(), all.len());
    assert_eq!(count(&all, FindingEventKind::Opened), 272 + 14);
    assert_eq!(count(&all, FindingEventKind::Resolved), 17);
}

#[test]
fn missing_topics_are_named_when_creation_is_off() {
    let cluster = MockCluster::new(1).unwrap();
    let mut config = Config::default();
    config.service.brokers = cluster.bootstrap_servers();
    config.service.create_topics = false;
    cluster.create_topic("custody.reports", 2, 1).unwrap();
    let err = Service::start(&config, None).err().expect("refused");
    let text = err.to_string();
    for t in [
        "custody.findings (findings)",
        "custody.dlq",
        "custody.state (changelog)",
        "custody.tickets",
    ] {
        assert!(text.contains(t), "{text}");
    }
    assert!(!text.contains("custody.reports"), "{text}");
}

/// `service`'s HTTP endpoints served on a free local port: the runtime
/// serving them (they stop when it is dropped) and their address.
pub fn serve_http(service: &Service) -> (tokio::runtime::Runtime, std::net::SocketAddr) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(custody::service::http::serve(
        listener,
        custody::service::http::AppState {
            health: Arc::clone(&service.health),
            metrics: Arc::clone(&service.metrics),
        },
    ));
    (rt, addr)
}

pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn http_serves_metrics_health_and_readiness() {
    let h = Harness::new(2);
    let service = h.start();
    // Kept alive while the test runs: it serves the endpoints.
    let (_rt, addr) = serve_http(&service);
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(addr, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_get(addr, "/healthz").0, 200);
    let (old, _) = old_new("semgrep");
    let n = h.publish(TORNADO, "semgrep", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    // The gauges refresh every second.
    std::thread::sleep(Duration::from_millis(1500));
    let (code, text) = http_get(addr, "/metrics");
    assert_eq!(code, 200);
    for want in [
        "custody_messages_consumed_total{outcome=\"processed\"} 1",
        "custody_findings_consumed_total 10",
        "custody_partitions_assigned 2",
        "custody_partitions_restoring 0",
        "custody_state_findings{status=\"open\"} 10",
        "custody_events_produced_total{kind=\"finding\",route=\"custody.findings\"} 10",
    ] {
        assert!(text.contains(want), "missing {want}:\n{text}");
    }
    // The scorecard for tools that do not speak PromQL.
    let (code, body) = http_get(addr, "/api/teams");
    assert_eq!(code, 200);
    let card: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(card["teams"]["unattributed"]["open_total"], 10);
    assert_eq!(card["unattributed_share"], 1.0);
    service.stop().unwrap();
    // The loop has ended: not alive.
    assert_eq!(http_get(addr, "/healthz").0, 503);
}

/// A report published with a given message timestamp (the service's clock
/// for that scan).
pub fn send_raw_at(h: &Harness, target: &str, payload: &[u8], ts_ms: i64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", h.cluster.bootstrap_servers())
        .create()
        .unwrap();
    let hs = OwnedHeaders::new().insert(Header {
        key: "custody-scanner",
        value: Some("bandit"),
    });
    let rec: BaseRecord<'_, str, [u8]> = BaseRecord::to(&h.config.service.reports_topics[0])
        .key(target)
        .payload(payload)
        .headers(hs)
        .timestamp(ts_ms);
    producer.send(rec).map_err(|(e, _)| e).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// A changelog whose start has moved (retention, DeleteRecords, or here
/// the mock's 5 MiB cap dropping the oldest records) is restored from its
/// first record: the restore asks for offset 0 and is reset to the start.
#[test]
fn restore_reads_a_changelog_whose_start_has_moved() {
    let h = Harness::new(1);
    // One real finding record, its message padded to 100 KB.
    let rec = crate::common::tornado_changelog_json(&h.config).remove(0);
    let mut value: serde_json::Value = serde_json::from_slice(&rec.value.unwrap()).unwrap();
    value["finding"]["message"] = serde_json::Value::String("padding ".repeat(12_800));
    let value = serde_json::to_vec(&value).unwrap();

    let topic = &h.config.service.changelog_topic;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", h.cluster.bootstrap_servers())
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    let records = 80;
    for i in 0..records {
        let key = format!("f\0repo:github.com/acme/filler-{i}\0v1:{i:032x}");
        let rec: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic)
            .partition(0)
            .key(key.as_str())
            .payload(value.as_slice());
        producer.send(rec).map_err(|(e, _)| e).unwrap();
        // One record per batch, so the oldest can be dropped one by one.
        producer.flush(Duration::from_secs(10)).unwrap();
    }
    let (low, high) = producer
        .client()
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    assert!(
        low > 0,
        "the changelog's start has moved (low watermark {low})"
    );
    assert_eq!(high, records);

    let service = h.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    let want = format!("custody_state_findings{{status=\"open\"}} {}", high - low);
    while !service.metrics.render().contains(&want) {
        assert!(
            Instant::now() < deadline,
            "restored state is not the {} records left: {:?}",
            high - low,
            service.health.ready()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(service.health.ready().is_ok());
    service.stop().unwrap();
}

/// New events since `seen` (by id), waiting until there are `n`.
fn new_findings(h: &Harness, seen: &HashSet<String>, n: usize) -> Vec<FindingEvent> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r: Vec<FindingEvent> = h
            .findings()
            .into_iter()
            .filter(|e| !seen.contains(&e.event_id))
            .collect();
        if r.len() >= n {
            return r;
        }
        assert!(Instant::now() < deadline, "{} of {n} new events", r.len());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A publish whose files are not all delivered sends no manifest: the
/// version in force stays the newest, and an instance starting later still
/// loads it.
#[test]
fn a_publish_whose_files_fail_leaves_the_version_in_force() {
    use custody::kafka::ownership_topic;
    let mut h = Harness::new(1);
    let topic = "custody.ownership";
    h.cluster.create_topic(topic, 1, 1).unwrap();
    h.config.service.ownership_topic = Some(topic.into());
    h.config.service.ownership_wait = Duration::from_secs(2);
    let brokers = h.cluster.bootstrap_servers();
    // A message per produce request, so a failed file does not take the
    // messages after it down with it.
    let one = [("batch.num.messages".to_string(), "1".to_string())];
    let publish = |dir: &Path| {
        ownership_topic::publish(&brokers, &one, topic, dir, 1, Duration::from_secs(10))
    };
    let v1 = publish(ownership_dir("@acme/networking").path()).unwrap();
    // The next produce request fails for good: the one file the new
    // version changes is refused.
    h.cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    let err = publish(ownership_dir("@acme/web").path()).expect_err("files refused");
    h.cluster.clear_request_errors(RDKafkaApiKey::Produce);
    // What an instance starting now loads: the first version.
    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", &brokers);
    let mut feed = ownership_topic::Feed::open(&base, topic, Duration::from_secs(10)).unwrap();
    let own = feed
        .load(Duration::from_secs(3), &|m| eprintln!("{m}"))
        .expect("the version in force loads");
    assert_eq!(own.origin, format!("{topic}@{}/owners.toml", v1.id));
    assert!(Service::start(&h.config, None).is_ok(), "custody starts");
    assert!(
        err.to_string().contains("the manifest was not sent"),
        "{err}"
    );
}

/// Ownership published on its topic: the start waits for a version, each
/// newer version is put in force (the state re-attributed), a broken one
/// is refused while the one in force stays, and a restart reads the newest.
#[test]
fn ownership_from_its_topic_is_followed_and_broken_versions_are_refused() {
    use custody::kafka::ownership_topic::{self, MANIFEST_KEY};
    let mut h = Harness::new(2);
    let topic = "custody.ownership";
    h.cluster.create_topic(topic, 1, 1).unwrap();
    h.config.service.ownership_topic = Some(topic.into());
    h.config.service.ownership_wait = Duration::from_secs(2);
    // Nothing published yet: the start says so and names the topic.
    let err = Service::start(&h.config, None)
        .err()
        .expect("no ownership yet");
    let err = err.to_string();
    assert!(
        err.contains("custody.ownership") && err.contains("publish-ownership"),
        "{err}"
    );

    let p = h.publisher();
    let brokers = h.cluster.bootstrap_servers();
    let publish = |dir: &Path| {
        ownership_topic::publish(&brokers, &[], topic, dir, 1, Duration::from_secs(10))
    };
    let networking = ownership_dir("@acme/networking");
    let v1 = publish(networking.path()).unwrap();
    assert_eq!(
        v1.files,
        ["owners.toml", "tornado.CODEOWNERS", "catalog-info.yaml"]
    );
    assert_eq!((v1.sent, v1.pruned), (3, 0));
    let service = Service::start(&h.config, None).expect("service starts");
    let (old, _) = old_new("bandit");
    let n = h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, n);
    let first = h.findings();
    assert_eq!(count(&first, FindingEventKind::Opened), 272);
    let moving: HashSet<String> = first
        .iter()
        .filter(|e| in_iostream(e))
        .map(|e| e.fingerprint.clone())
        .collect();
    assert!(!moving.is_empty());
    assert!(first
        .iter()
        .filter(|e| moving.contains(&e.fingerprint))
        .all(|e| e.team.as_deref() == Some("networking")));
    let mut seen: HashSet<String> = first.iter().map(|e| e.event_id.clone()).collect();

    // A new version while running: iostream.py's findings move to qa.
    let qa = ownership_dir("@acme/qa");
    let v2 = publish(qa.path()).unwrap();
    // Only the CODEOWNERS file changed; v1's stays, as the version before.
    assert_eq!((v2.sent, v2.pruned), (1, 0));
    let moved = new_findings(&h, &seen, moving.len());
    assert_eq!(
        moved.len(),
        moving.len(),
        "only iostream.py's findings move"
    );
    assert!(moved.iter().all(|e| e.event == FindingEventKind::Reassigned
        && moving.contains(&e.fingerprint)
        && e.team.as_deref() == Some("qa")
        && e.previous_team.as_deref() == Some("networking")));
    wait_metric(&service, "custody_ownership_reloads_total{result=\"ok\"} 1");
    seen.extend(moved.iter().map(|e| e.event_id.clone()));

    // A broken version (sent by hand: the publisher refuses to send one)
    // is refused; qa stays in force.
    let broken = vec![(
        "owners.toml".to_string(),
        b"[[teams]]\nid = \"two words\"\n".to_vec(),
    )];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("owners.toml"), &broken[0].1).unwrap();
    let e = publish(dir.path()).unwrap_err();
    assert!(
        matches!(e, ownership_topic::PublishError::Invalid(_))
            && e.to_string().contains("teams[0].id"),
        "{e}"
    );
    let bad = ownership_topic::manifest_of(&broken);
    let manifest = serde_json::to_vec(&bad).unwrap();
    let key = ownership_topic::file_key("owners.toml", &bad.files["owners.toml"]);
    p.send_keyed(topic, &key, Some(&broken[0].1)).unwrap();
    p.send_keyed(topic, MANIFEST_KEY, Some(&manifest)).unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
    wait_metric(
        &service,
        "custody_ownership_reloads_total{result=\"refused\"} 1",
    );
    // Rescanned under the version in force: nothing moves.
    let m = n + h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, m);
    let after: Vec<FindingEvent> = h
        .findings()
        .into_iter()
        .filter(|e| !seen.contains(&e.event_id))
        .collect();
    assert!(after.is_empty(), "{} events after the refusal", after.len());
    service.stop().unwrap();

    // The newest version on the topic is the broken one: a restart refuses
    // to start on it, naming why, rather than attributing without it.
    let err = Service::start(&h.config, None)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("teams[0].id"), "{err}");
    // Published again, qa is what a restart reads: nothing moves. Its files
    // are all on the topic already; networking's CODEOWNERS, named by
    // neither qa nor the broken version, is deleted.
    let v3 = publish(qa.path()).unwrap();
    assert_eq!((v3.id.as_str(), v3.sent, v3.pruned), (v2.id.as_str(), 0, 1));
    // A publish that died before its manifest left a file behind: the
    // version in force is untouched by it.
    let stray: &[u8] = b"* @acme/payments\n";
    let stray_key = ownership_topic::file_key(
        "tornado.CODEOWNERS",
        &custody::fingerprint::hex(&<sha2::Sha256 as sha2::Digest>::digest(stray)),
    );
    p.send_keyed(topic, &stray_key, Some(stray)).unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
    let service = Service::start(&h.config, None).expect("service starts");
    let m = h.publish(TORNADO, "bandit", &old, DEFAULT_CHUNK_BYTES);
    wait_done(&service, m);
    let after: Vec<FindingEvent> = h
        .findings()
        .into_iter()
        .filter(|e| !seen.contains(&e.event_id))
        .collect();
    assert!(after.is_empty(), "{} events after the restart", after.len());
    service.stop().unwrap();
}
