//! `custody run` as a child process against Apache Kafka in another
//! process (a single-node KRaft broker, installed from Maven Central and
//! started by `scripts/test.sh` through `scripts/kafka.sh`, which sets
//! `CUSTODY_TEST_KAFKA` to its bootstrap address). custody is killed with
//! SIGKILL mid-stream and restarted: no finding is lost, and after dropping
//! redelivered duplicates (same event id, same content) every event is
//! unique.

use custody::model::{FindingEvent, FindingEventKind};
use custody::service::demo::read_all;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn broker() -> Option<String> {
    match std::env::var("CUSTODY_TEST_KAFKA") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs the suite through scripts/test.sh, which starts Kafka and sets CUSTODY_TEST_KAFKA"
            );
            // Written to the terminal itself: the harness keeps eprintln!.
            let _ = writeln!(
                std::io::stderr(),
                "skipped a broker test: CUSTODY_TEST_KAFKA is not set (bash scripts/test.sh starts Apache Kafka and sets it)"
            );
            None
        }
    }
}

const TARGETS: usize = 12;

struct Names {
    reports: String,
    findings: String,
    tickets: String,
    group: String,
}

impl Names {
    /// Topics and group of one test run: `<test>-<id>.<role>`.
    fn new(test: &str, id: &str) -> Names {
        Names {
            reports: format!("{test}-{id}.reports"),
            findings: format!("{test}-{id}.findings"),
            tickets: format!("{test}-{id}.tickets"),
            group: format!("custody-{test}-{id}"),
        }
    }
}

fn config(dir: &Path, brokers: &str, n: &Names) -> std::path::PathBuf {
    let text = format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
reports_topics = ["{reports}"]
findings_topic = "{findings}"
changelog_topic = "{reports}.state"
dead_letter_topic = "{reports}.dlq"
partitions = 4
replication_factor = 1
shutdown_timeout_secs = 10

[kafka.properties]
# The killed instance stays a group member until its session times out,
# and a rejoin waits for it up to the rebalance timeout
# (max.poll.interval.ms, 5 minutes by default): keep both short here.
"session.timeout.ms" = 10000
"max.poll.interval.ms" = 30000
# The group protocol in the log, for a failure's message.
"debug" = "cgrp"

[tickets]
default_topic = "{tickets}"

[http]
listen = "127.0.0.1:0"
"#,
        group = n.group,
        reports = n.reports,
        findings = n.findings,
        tickets = n.tickets,
    );
    let path = dir.join("custody.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The start and the end of a log, for a failure's message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    if text.len() <= 40_000 {
        return text;
    }
    let at = |mut i: usize| {
        while !text.is_char_boundary(i) {
            i += 1;
        }
        i
    };
    format!(
        "{}\n[...]\n{}",
        &text[..at(30_000)],
        &text[at(text.len() - 10_000)..]
    )
}

fn spawn_run(config: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_custody"))
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("custody run starts")
}

/// The sum of `group`'s committed offsets over partitions 0..`partitions`
/// of `topic` (0 when it has none).
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    match consumer.committed_offsets(tpl, Duration::from_secs(10)) {
        Ok(c) => c
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                rdkafka::Offset::Offset(o) => Some(o),
                _ => None,
            })
            .sum(),
        Err(_) => 0,
    }
}

#[test]
fn sigkill_mid_stream_loses_nothing() {
    let Some(brokers) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let id = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let names = Names::new("kill", &id);
    let cfg = config(dir.path(), &brokers, &names);
    let log1 = dir.path().join("run1.log");
    let mut run = spawn_run(&cfg, &log1);
    // custody creates the topics; wait for them before publishing.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        let md = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap();
        if md.topics().iter().any(|t| t.name() == names.findings) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "custody did not create its topics: {}",
            tail(&log1)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Two releases of tornado for each of 12 targets: 24 reports, published
    // while custody runs, as CI jobs would.
    let targets: Vec<String> = (0..TARGETS)
        .map(|i| format!("repo:github.com/acme/tornado-{i}"))
        .collect();
    let publisher = {
        let (brokers, topic) = (brokers.clone(), names.reports.clone());
        std::thread::spawn(move || {
            for release in ["6.4.2", "6.5"] {
                for t in &targets {
                    let status = Command::new(env!("CARGO_BIN_EXE_custody"))
                        .args(["publish", "--brokers", &brokers, "--topic", &topic])
                        .args(["--target", t, "--scanner", "bandit"])
                        .arg(format!("tests/fixtures/churn/bandit-{release}.sarif"))
                        .stdout(Stdio::null())
                        .status()
                        .unwrap();
                    assert!(status.success(), "publish failed");
                }
            }
        })
    };
    // Kill as soon as events flow: mid-stream, with reports still coming.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = read_all(&brokers, &names.findings).unwrap().len();
        if n > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no events: {}", tail(&log1));
        std::thread::sleep(Duration::from_millis(10));
    }
    run.kill().unwrap(); // SIGKILL
    run.wait().unwrap();
    publisher.join().expect("every report published");
    let at_kill = committed(&brokers, &names.group, &names.reports, 4);
    eprintln!("killed with {at_kill} of {} reports committed", 2 * TARGETS);

    assert!(
        at_kill < (2 * TARGETS) as i64,
        "the kill came after the stream was through"
    );

    let log2 = dir.path().join("run2.log");
    let mut run = spawn_run(&cfg, &log2);
    let deadline = Instant::now() + Duration::from_secs(240);
    while committed(&brokers, &names.group, &names.reports, 4) < (2 * TARGETS) as i64 {
        assert!(
            Instant::now() < deadline,
            "restarted custody did not finish: {}",
            tail(&log2)
        );
        assert!(run.try_wait().unwrap().is_none(), "custody exited");
        std::thread::sleep(Duration::from_millis(200));
    }
    // SIGTERM: a clean shutdown exits 0.
    let pid = run.id() as libc::pid_t;
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let status = run.wait().unwrap();
    assert!(status.success(), "exit {status}: {}", tail(&log2));

    let raw = read_all(&brokers, &names.findings).unwrap();
    let mut by_id: HashMap<String, serde_json::Value> = HashMap::new();
    let mut events: Vec<FindingEvent> = Vec::new();
    for b in &raw {
        let v: serde_json::Value = serde_json::from_slice(b).unwrap();
        let e: FindingEvent = serde_json::from_value(v.clone()).unwrap();
        match by_id.get(&e.event_id) {
            // A redelivered duplicate is the same event, byte for byte.
            Some(prev) => assert_eq!(prev, &v, "two different events share an id"),
            None => {
                by_id.insert(e.event_id.clone(), v);
                events.push(e);
            }
        }
    }
    eprintln!(
        "{} finding events read, {} after dropping redelivered duplicates",
        raw.len(),
        events.len()
    );
    let mut per_target: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for e in &events {
        let slot = per_target.entry(e.target.to_string()).or_default();
        match e.event {
            FindingEventKind::Opened => {
                assert!(
                    slot.0.insert(e.fingerprint.clone()),
                    "{} opened twice with different ids",
                    e.fingerprint
                );
            }
            FindingEventKind::Resolved => {
                slot.1.insert(e.fingerprint.clone());
            }
            _ => {}
        }
    }
    assert_eq!(per_target.len(), TARGETS);
    for (t, (opened, resolved)) in &per_target {
        assert_eq!(opened.len(), 272 + 14, "{t}: every finding opened once");
        assert_eq!(resolved.len(), 17, "{t}: every gone finding resolved");
    }
}

/// `custody publish-ownership` on a broker without its topic creates it,
/// publishes every file, and a second run sends nothing new.
#[test]
fn publish_ownership_creates_its_topic_and_sends_only_what_changed() {
    let Some(brokers) = broker() else {
        return;
    };
    let topic = format!("ownership-{}", std::process::id());
    // Runs it; its stdout, once it succeeded.
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_custody"))
            .args(["publish-ownership", "--brokers", &brokers])
            .args(["--topic", &topic, "--replication-factor", "1"])
            .arg("tests/fixtures/ownership")
            .output()
            .unwrap();
        crate::cli::succeeded(&out)
    };
    let stdout = run();
    assert!(
        stdout.contains("(3 file(s) sent, 0 of older versions deleted)"),
        "{stdout}"
    );
    let stdout = run();
    assert!(
        stdout.contains("(0 file(s) sent, 0 of older versions deleted)"),
        "{stdout}"
    );
}

#[test]
fn a_changelog_or_ownership_topic_that_retention_would_empty_stops_the_start() {
    let Some(brokers) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let id = format!("{}-{}", std::process::id(), line!());
    let names = Names::new("kept", &id);
    let cfg = config(dir.path(), &brokers, &names);
    let ownership = format!("kept-{id}.ownership");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!("\n[ownership]\ntopic = \"{ownership}\"\n"));
    std::fs::write(&cfg, text).unwrap();
    // Made by hand with Kafka's default policy, as an operator's script or
    // a broker's auto-creation would make them.
    let changelog = format!("{}.state", names.reports);
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
    fn topic(name: &str, partitions: i32) -> rdkafka::admin::NewTopic<'_> {
        rdkafka::admin::NewTopic::new(name, partitions, rdkafka::admin::TopicReplication::Fixed(1))
            .set("cleanup.policy", "delete")
            .set("retention.ms", "604800000")
    }
    let made = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(admin.create_topics(
            &[topic(&changelog, 4), topic(&ownership, 1)],
            &rdkafka::admin::AdminOptions::new(),
        ))
        .unwrap();
    assert!(made.iter().all(|r| r.is_ok()), "{made:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_custody"))
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for t in [&changelog, &ownership] {
        assert!(
            stderr.contains(&format!(
                "topic {t}: cleanup.policy=delete with retention.ms=604800000 deletes records"
            )),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("set kafka.check_topic_configs = false"),
        "{stderr}"
    );
}
