//! `custody run` as a child process against Apache Kafka in another
//! process (a single-node KRaft broker, installed from Maven Central and
//! started by `scripts/test.sh` through `scripts/kafka.sh`, which sets
//! `CUSTODY_TEST_KAFKA` to its bootstrap address). custody is killed with
//! SIGKILL mid-stream and restarted: no finding is lost, and after dropping
//! redelivered duplicates (same event id, same content) every event is
//! unique.

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

/// Rewrites the configuration file at `path` with `f`.
fn edit(path: &Path, f: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, f(text)).unwrap();
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

/// Waits until custody has created its topics (before publishing: the
/// broker creates none by itself).
fn wait_for_topics(brokers: &str, names: &Names, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    loop {
        let md = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap();
        let have = |name: &str| md.topics().iter().any(|t| t.name() == name);
        if have(&names.findings) && have(&names.tickets) && have(&names.reports) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "custody did not create its topics: {}",
            tail(log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every message of `topic` a `read_committed` consumer sees, to the end
/// of each partition (a transactional topic's last offsets are markers no
/// consumer receives, so the end is the end-of-partition event); asked
/// again while the broker is not ready to say (a topic just created has no
/// leader for a moment).
fn read(brokers: &str, topic: &str) -> Vec<Vec<u8>> {
    use rdkafka::message::Message;
    let deadline = Instant::now() + Duration::from_secs(60);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "custody-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let partitions = loop {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
            Ok(md) => {
                let n = md.topics().first().map_or(0, |t| t.partitions().len());
                if n > 0 && md.topics()[0].error().is_none() {
                    break n as i32;
                }
            }
            Err(e) => eprintln!("reading {topic}: {e}; again"),
        }
        assert!(Instant::now() < deadline, "{topic} has no partitions");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut at_end = BTreeSet::new();
    while (at_end.len() as i32) < partitions {
        assert!(Instant::now() < deadline, "reading {topic}: not at its end");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(m.payload().unwrap_or_default().to_vec()),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => eprintln!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// What `custody run` logs once every assigned partition is restored.
const RESTORED: &str = "partitions restored";

/// Waits until `log` holds `line` (the child still running).
fn wait_for_line(log: &Path, line: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(line)
    {
        assert!(Instant::now() < deadline, "no {line:?} in: {}", tail(log));
        assert!(
            child.try_wait().unwrap().is_none(),
            "custody exited: {}",
            tail(log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Creates topics on the broker, as an operator's script would, before
/// custody starts.
fn create_topics(brokers: &str, topics: &[rdkafka::admin::NewTopic<'_>]) {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .unwrap();
    let made = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(admin.create_topics(topics, &rdkafka::admin::AdminOptions::new()))
        .unwrap();
    assert!(made.iter().all(|r| r.is_ok()), "{made:?}");
}

/// `custody publish` of one report, as a CI job runs it.
fn publish(brokers: &str, topic: &str, target: &str, file: &str) {
    let status = Command::new(env!("CARGO_BIN_EXE_custody"))
        .args(["publish", "--brokers", brokers, "--topic", topic])
        .args(["--target", target, "--scanner", "bandit"])
        .arg(file)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "publish failed");
}

/// A run id unique to this process and moment.
fn run_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    )
}

/// SIGTERM to a child, and its exit status.
fn terminate(mut child: Child) -> std::process::ExitStatus {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    child.wait().unwrap()
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

/// A small random number generator for kill moments (xorshift), seeded
/// from the clock; the seed is printed so a failing run can be replayed.
struct Moments(u64);

impl Moments {
    fn new() -> Moments {
        let seed = match std::env::var("CUSTODY_TEST_SEED") {
            Ok(s) => s.parse().expect("CUSTODY_TEST_SEED is a number"),
            Err(_) => {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            }
        };
        eprintln!("kill moments from seed {seed} (CUSTODY_TEST_SEED={seed} replays them)");
        Moments(seed)
    }

    /// A duration up to `max_ms`.
    fn next(&mut self, max_ms: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(self.0 % (max_ms + 1))
    }
}

/// What one event says, for comparing custody's stream with `custody
/// process`: its kind, its subject (fingerprint or ticket key), what
/// happened and its target.
type Said = (String, String, String, String);

fn said(v: &serde_json::Value) -> Said {
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let subject = if s("kind") == "ticket" {
        s("ticket_key")
    } else {
        s("fingerprint")
    };
    (s("target"), s("kind"), subject, s("event"))
}

/// Waits until no transaction is open in `topic`: its last stable offset
/// (what a read_committed reader reaches) is its end in every partition.
fn wait_for_open_transactions(brokers: &str, topic: &str) {
    let ends = |isolation: &str| -> Vec<i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "custody-test-reader")
            .set("isolation.level", isolation)
            .create()
            .unwrap();
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..md.topics()[0].partitions().len() as i32 {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::End)
                .unwrap();
        }
        let got = consumer
            .offsets_for_times(tpl, Duration::from_secs(10))
            .unwrap();
        got.elements()
            .iter()
            .map(|e| match e.offset() {
                rdkafka::Offset::Offset(o) => o,
                _ => -1,
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (stable, end) = (ends("read_committed"), ends("read_uncommitted"));
        if stable == end {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: transactions still open (stable {stable:?}, end {end:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every event of `topics`, redelivered copies (same event id) dropped
/// once checked to be the same event byte for byte; with the number of
/// copies dropped.
fn unique_events(brokers: &str, topics: &[&str]) -> (Vec<serde_json::Value>, usize) {
    let mut by_id: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = Vec::new();
    let mut copies = 0;
    for topic in topics {
        for b in read(brokers, topic) {
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            let id = v["event_id"].as_str().expect("event_id").to_string();
            match by_id.get(&id) {
                Some(prev) => {
                    assert_eq!(
                        String::from_utf8_lossy(prev),
                        String::from_utf8_lossy(&b),
                        "two different events share the id {id}"
                    );
                    copies += 1;
                }
                None => {
                    by_id.insert(id, b);
                    out.push(v);
                }
            }
        }
    }
    (out, copies)
}

/// Real rescans in order (tornado 6.4.2, 6.5, 6.4.2, 6.5 under bandit, for
/// each of 10 targets: 40 reports), published in five waves, one per run
/// of `custody run`, each run SIGKILLed at a random moment once it has
/// produced events; a sixth run finishes and is stopped with SIGTERM. Per
/// target, the events are those `custody process` gives for the same
/// reports in the same order: none missing, none extra once redelivered
/// copies (same event id, byte for byte the same) are dropped; every
/// ticket a finding names has events; the offsets are committed to the end.
#[test]
fn sigkill_at_random_moments_gives_the_events_process_gives() {
    let Some(brokers) = broker() else { return };
    let copies = sigkill_at_random_moments(&brokers, "at-least-once", None);
    eprintln!("at-least-once: {copies} redelivered copies");
}

/// The same kills with `delivery = "exactly-once"`: a `read_committed`
/// consumer sees every event exactly once (not one event id twice; nothing
/// of the transactions the kills left open, which the broker aborts), and
/// the same events as `custody process`.
#[test]
fn exactly_once_under_sigkill_gives_every_event_once() {
    let Some(brokers) = broker() else { return };
    let copies = sigkill_at_random_moments(&brokers, "exactly-once", None);
    assert_eq!(copies, 0, "a read_committed consumer saw events twice");
}

/// The same kills with `decoded_findings_per_partition = 50`, far below
/// one target's findings (a scan has about 270): each partition keeps one
/// target decoded, the others evicted into their compact form (their
/// changelog records written from it, and restored after the kills) and
/// decoded again for a message; the last run gets a wave of its own once
/// every target is evicted or decoded. The events are still those
/// `custody process` gives, and `/metrics` shows the evictions and the
/// decodes again.
#[test]
fn sigkill_with_state_evicted_gives_the_events_process_gives() {
    let Some(brokers) = broker() else { return };
    let copies = sigkill_at_random_moments(&brokers, "at-least-once", Some(50));
    eprintln!("at-least-once, evicting: {copies} redelivered copies");
}

/// The evicting kills under exactly-once: still every event once, the
/// same as `custody process` gives.
#[test]
fn exactly_once_with_state_evicted_gives_every_event_once() {
    let Some(brokers) = broker() else { return };
    let copies = sigkill_at_random_moments(&brokers, "exactly-once", Some(50));
    assert_eq!(copies, 0, "a read_committed consumer saw events twice");
}

/// The kill test under `delivery`, with `budget` decoded findings per
/// partition when given (then the state is evicted and decoded again,
/// which `/metrics` must show); returns the redelivered copies seen.
fn sigkill_at_random_moments(brokers: &str, delivery: &str, budget: Option<usize>) -> usize {
    const SCANS: [&str; 4] = ["6.4.2", "6.5", "6.4.2", "6.5"];
    const CHAOS_TARGETS: usize = 10;
    const KILLS: usize = 5;
    let brokers = brokers.to_string();
    let dir = tempfile::tempdir().unwrap();
    let names = Names::new(&format!("chaos-{delivery}"), &run_id());
    let cfg = config(dir.path(), &brokers, &names);
    edit(&cfg, |text| {
        text.replace(
            "shutdown_timeout_secs = 10",
            &format!("shutdown_timeout_secs = 10\ndelivery = \"{delivery}\""),
        )
        .replace(
            "[kafka.properties]",
            // A killed instance's open transaction blocks read_committed
            // readers (the restore too) until the broker aborts it.
            "[kafka.properties]\n\"transaction.timeout.ms\" = 10000",
        )
    });
    // One port for every run (each one dead before the next starts), for
    // its cache counters just before it is killed.
    let port = free_port();
    if let Some(budget) = budget {
        edit(&cfg, |text| {
            text.replace(
                "partitions = 4\n",
                &format!("partitions = 4\ndecoded_findings_per_partition = {budget}\n"),
            )
            .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        });
    }
    // The running instance's evictions and decodes again.
    let counters = || {
        let (code, body) = crate::service::http_get(([127, 0, 0, 1], port).into(), "/metrics");
        assert_eq!(code, 200);
        (
            crate::service::metric(&body, "custody_state_evictions_total"),
            crate::service::metric(&body, "custody_state_thaws_total"),
        )
    };
    // Those of each run, in order.
    let mut cache: Vec<(f64, f64)> = Vec::new();
    let scrape = |cache: &mut Vec<(f64, f64)>| {
        if budget.is_some() {
            cache.push(counters());
        }
    };
    let targets: Vec<String> = (0..CHAOS_TARGETS)
        .map(|i| format!("repo:github.com/acme/chaos-{i}"))
        .collect();
    let file = |release: &str| format!("tests/fixtures/churn/bandit-{release}.sarif");
    // In publish order: every target's first scan, then every second...
    let reports: Vec<(&str, String)> = SCANS
        .iter()
        .flat_map(|r| targets.iter().map(move |t| (t.as_str(), file(r))))
        .collect();
    let total = reports.len() as i64;
    // Evicting, the last run has a wave too (see below).
    let runs_with_reports = KILLS + usize::from(budget.is_some());
    let mut waves = reports.chunks(reports.len().div_ceil(runs_with_reports));
    let mut moments = Moments::new();
    let mut at_kill = Vec::new();
    // Reports published so far, at each kill.
    let mut published: i64 = 0;
    let mut published_at_kill = Vec::new();
    for run in 0..KILLS {
        let log = dir.path().join(format!("run{run}.log"));
        let mut child = spawn_run(&cfg, &log);
        wait_for_topics(&brokers, &names, &log);
        let before = read(&brokers, &names.findings).len();
        let wave = waves.next().unwrap_or_default();
        // Under exactly-once, events are seen only once their transaction
        // commits: there the wave is published once the run is restored,
        // and the run is killed as it is seen in the midst of a
        // transaction: when a reader of uncommitted records has seen a
        // number of the wave's finding events picked at random (a kill at
        // a random time found the run idle, all of it committed, more
        // often the faster it applies reports). The rest of the wave is
        // published while the run is down.
        if delivery == "exactly-once" {
            wait_for_line(&log, RESTORED, &mut child);
            let watcher: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", "custody-test-watcher")
                .set("isolation.level", "read_uncommitted")
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
            let mut tpl = rdkafka::TopicPartitionList::new();
            for p in 0..4 {
                tpl.add_partition_offset(&names.findings, p, rdkafka::Offset::End)
                    .unwrap();
            }
            watcher.assign(&tpl).unwrap();
            let wanted = 1 + moments.next(40).as_millis() as usize;
            let sent = std::sync::atomic::AtomicI64::new(0);
            let all_sent = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|s| {
                let publisher = s.spawn(|| {
                    for (target, report) in wave {
                        publish(&brokers, &names.reports, target, report);
                        sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    all_sent.store(true, std::sync::atomic::Ordering::SeqCst);
                });
                // Or, should the wave's events never come, once it is all
                // published and the run had ten seconds more.
                let mut seen = 0;
                let mut idle_until = None;
                while seen < wanted {
                    if let Some(Ok(_)) = watcher.poll(Duration::from_millis(5)) {
                        seen += 1;
                    }
                    if all_sent.load(std::sync::atomic::Ordering::SeqCst) {
                        let until =
                            *idle_until.get_or_insert(Instant::now() + Duration::from_secs(10));
                        if Instant::now() > until {
                            break;
                        }
                    }
                }
                scrape(&mut cache);
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                let c = committed(&brokers, &names.group, &names.reports, 4);
                at_kill.push(c);
                published_at_kill.push(published + sent.load(std::sync::atomic::Ordering::SeqCst));
                publisher.join().unwrap();
            });
            published += wave.len() as i64;
            continue;
        }
        for (target, report) in wave {
            publish(&brokers, &names.reports, target, report);
            published += 1;
        }
        published_at_kill.push(published);
        // Once this run has produced events, a random moment later.
        let deadline = Instant::now() + Duration::from_secs(120);
        while read(&brokers, &names.findings).len() <= before {
            assert!(
                Instant::now() < deadline,
                "run {run}: no events: {}",
                tail(&log)
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "run {run} exited: {}",
                tail(&log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(moments.next(400));
        scrape(&mut cache);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        at_kill.push(committed(&brokers, &names.group, &names.reports, 4));
    }
    eprintln!("offsets committed at each kill: {at_kill:?} of {published_at_kill:?} published");
    let mid_work = at_kill
        .iter()
        .zip(&published_at_kill)
        .filter(|(c, p)| c < p)
        .count();
    assert!(
        mid_work >= 3,
        "most kills must come with work not yet committed: {at_kill:?} of {published_at_kill:?}"
    );

    let log = dir.path().join("last.log");
    let mut child = spawn_run(&cfg, &log);
    // Started (its SIGTERM handler set) before it is stopped.
    wait_for_line(&log, RESTORED, &mut child);
    let last_wave = waves.next().unwrap_or_default();
    if budget.is_some() {
        // Once the reports published so far are done and all targets but
        // one a partition are evicted (one target's findings are past the
        // budget; this run's evictions less its decodes again are the
        // targets evicted now), the last wave: at least one of its five
        // targets is decoded again from its compact form.
        let floor = (CHAOS_TARGETS - 4) as f64;
        let evicted_now = || {
            let (evicted, thawed) = counters();
            evicted - thawed
        };
        let deadline = Instant::now() + Duration::from_secs(240);
        while committed(&brokers, &names.group, &names.reports, 4) < published
            || evicted_now() < floor
        {
            assert!(
                Instant::now() < deadline,
                "the last run did not evict all targets but one a partition ({:?}): {}",
                counters(),
                tail(&log)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        for (target, report) in last_wave {
            publish(&brokers, &names.reports, target, report);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    while committed(&brokers, &names.group, &names.reports, 4) < total {
        assert!(
            Instant::now() < deadline,
            "the last run did not finish: {}",
            tail(&log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    scrape(&mut cache);
    let status = terminate(child);
    assert!(status.success(), "exit {status}: {}", tail(&log));
    assert_eq!(committed(&brokers, &names.group, &names.reports, 4), total);
    if budget.is_some() {
        eprintln!("(evictions, decodes again) of each run: {cache:?}");
        assert!(
            cache[..KILLS].iter().any(|(evicted, _)| *evicted > 0.0),
            "the killed runs must evict: {cache:?}"
        );
        assert!(
            cache[KILLS].1 > 0.0,
            "the last run must decode evicted targets again: {cache:?}"
        );
    }

    // How many restores found a killed run's transaction still open and
    // waited for the broker to abort it (exactly-once only).
    let waited = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .filter(|text| text.contains("restoring waits for transactions still open"))
        .count();
    eprintln!("restores that waited for an open transaction: {waited}");
    let files: Vec<String> = SCANS.iter().map(|r| file(r)).collect();
    let (events, copies) = same_events_as_process(&brokers, &names, &targets, &files);
    eprintln!(
        "{KILLS} kills survived; {events} events compared, {copies} redelivered copies dropped"
    );
    copies
}

/// Checks that custody's events, redelivered copies (same id, byte for
/// byte the same) dropped, are per target exactly those `custody process`
/// gives for `files` in order, that every ticket a finding event names
/// has ticket events, and that a target's finding and ticket events are
/// all in the partition of its reports' number of their topics. Returns
/// the events compared and the copies dropped.
fn same_events_as_process(
    brokers: &str,
    names: &Names,
    targets: &[String],
    files: &[String],
) -> (usize, usize) {
    // A killed run's transaction may still be open in the event topics
    // (its events sent, its changelog records not yet): read_committed
    // readers stop at it until the broker aborts it, short of what later
    // runs committed. Nothing is lost; the read waits for it.
    for topic in [&names.findings, &names.tickets] {
        wait_for_open_transactions(brokers, topic);
    }
    let (events, copies) = unique_events(brokers, &[&names.findings, &names.tickets]);
    let mut got: BTreeMap<Said, usize> = BTreeMap::new();
    for e in &events {
        *got.entry(said(e)).or_default() += 1;
    }
    let mut want: BTreeMap<Said, usize> = BTreeMap::new();
    for t in targets {
        let out = Command::new(env!("CARGO_BIN_EXE_custody"))
            .args(["process", "--target", t, "--scanner", "bandit"])
            .args(files)
            .output()
            .unwrap();
        for line in crate::cli::succeeded(&out).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            *want.entry(said(&v)).or_default() += 1;
        }
    }
    let diff: Vec<(&Said, usize, usize)> = want
        .keys()
        .chain(got.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|k| (k, *want.get(k).unwrap_or(&0), *got.get(k).unwrap_or(&0)))
        .filter(|(_, w, g)| w != g)
        .collect();
    assert!(
        diff.is_empty(),
        "{} events differ from custody process (event, want, got): {:?}",
        diff.len(),
        &diff[..diff.len().min(20)]
    );
    // A target's finding events, and the events of its own tickets, are
    // all in the partition of its reports' number of their topic (all
    // three have 4), whatever their fingerprints and ticket keys.
    let reports_in: BTreeMap<Vec<u8>, i32> = records(brokers, &names.reports, 4)
        .into_iter()
        .map(|(p, _, key, _)| (key, p))
        .collect();
    for (topic, what) in [(&names.findings, "finding"), (&names.tickets, "ticket")] {
        let mut events_in: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
        for (p, _, _, payload) in records(brokers, topic, 4) {
            let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            let target = v["target"].as_str().unwrap_or_default().to_string();
            events_in.entry(target).or_default().insert(p);
        }
        assert_eq!(events_in.len(), targets.len(), "{what}: {events_in:?}");
        for (target, parts) in &events_in {
            let want = reports_in.get(target.as_bytes());
            assert!(
                want.is_some_and(|p| parts.len() == 1 && parts.contains(p)),
                "{target}'s {what} events are in partitions {parts:?}, its reports in {want:?}"
            );
        }
    }
    let tickets: BTreeSet<&str> = events
        .iter()
        .filter(|e| e["kind"] == "ticket")
        .filter_map(|e| e["ticket_key"].as_str())
        .collect();
    for e in events.iter().filter(|e| e["kind"] == "finding") {
        let key = e["ticket_key"].as_str().unwrap_or_default();
        assert!(tickets.contains(key), "no ticket events for {key}");
    }
    (events.len(), copies)
}

/// One `custody run` of a group, with its own HTTP port.
struct Instance {
    child: Child,
    log: std::path::PathBuf,
    port: u16,
}

impl Instance {
    /// Starts an instance named `name` from the configuration `text`.
    fn start(dir: &Path, text: &str, name: &str) -> Instance {
        let port = free_port();
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            text.replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        Instance {
            child: spawn_run(&cfg, &log),
            log,
            port,
        }
    }

    /// What `/readyz` answered, in order (each answer once when it
    /// repeats), until it answered 200.
    fn readiness(&mut self) -> Vec<(u16, String)> {
        let mut seen: Vec<(u16, String)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(
                Instant::now() < deadline,
                "never ready: {:?}: {}",
                seen,
                tail(&self.log)
            );
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "exited: {}",
                tail(&self.log)
            );
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                let (code, body) =
                    crate::service::http_get(([127, 0, 0, 1], self.port).into(), "/readyz");
                // What is restoring changes; the kind of answer is kept.
                let kind = body.split(' ').take(3).collect::<Vec<_>>().join(" ");
                if seen.last() != Some(&(code, kind.clone())) {
                    seen.push((code, kind));
                }
                if code == 200 {
                    return seen;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM; the exit must be clean.
    fn stop(self) {
        let status = terminate(self.child);
        assert!(status.success(), "exit {status}: {}", tail(&self.log));
    }
}

/// Three instances of one group while reports flow (the same 40 real
/// rescans over 10 targets): one is SIGKILLed, one is added, then all
/// three are restarted one after the other, each waited for until ready.
/// `/readyz` says not ready until an instance has joined and restored its
/// partitions; per target the events, redelivered copies dropped, are
/// exactly `custody process`'s (two instances applying one partition at
/// once would apply reports twice or out of order, and differ); every
/// stop is clean; the offsets are committed to the end.
#[test]
fn three_instances_through_a_kill_an_addition_and_a_rolling_restart() {
    let Some(brokers) = broker() else { return };
    const SCANS: [&str; 4] = ["6.4.2", "6.5", "6.4.2", "6.5"];
    let dir = tempfile::tempdir().unwrap();
    let names = Names::new("group", &run_id());
    let text = std::fs::read_to_string(config(dir.path(), &brokers, &names)).unwrap();
    let targets: Vec<String> = (0..10)
        .map(|i| format!("repo:github.com/acme/group-{i}"))
        .collect();
    let files: Vec<String> = SCANS
        .iter()
        .map(|r| format!("tests/fixtures/churn/bandit-{r}.sarif"))
        .collect();
    let reports: Vec<(&String, &String)> = files
        .iter()
        .flat_map(|f| targets.iter().map(move |t| (t, f)))
        .collect();
    let mut waves = reports.chunks(8);
    let mut wave = |brokers: &str| {
        for (t, f) in waves.next().unwrap_or_default() {
            publish(brokers, &names.reports, t, f);
        }
    };
    let mut readiness = Vec::new();
    let mut group = Vec::new();
    for name in ["a", "b", "c"] {
        let mut i = Instance::start(dir.path(), &text, name);
        readiness.push(i.readiness());
        group.push(i);
    }
    let (a, mut b, c) = {
        let mut g = group.into_iter();
        (g.next().unwrap(), g.next().unwrap(), g.next().unwrap())
    };
    wait_for_topics(&brokers, &names, &a.log);
    wave(&brokers);
    let deadline = Instant::now() + Duration::from_secs(120);
    while read(&brokers, &names.findings).is_empty() {
        assert!(Instant::now() < deadline, "no events");
        std::thread::sleep(Duration::from_millis(50));
    }
    b.child.kill().unwrap(); // SIGKILL
    b.child.wait().unwrap();
    wave(&brokers);
    let mut d = Instance::start(dir.path(), &text, "d");
    readiness.push(d.readiness());
    wave(&brokers);
    // A rolling restart.
    let mut running = Vec::new();
    for (i, old) in [a, c, d].into_iter().enumerate() {
        old.stop();
        let mut new = Instance::start(dir.path(), &text, &format!("restarted-{i}"));
        readiness.push(new.readiness());
        if i < 2 {
            wave(&brokers);
        }
        running.push(new);
    }
    let total = reports.len() as i64;
    let deadline = Instant::now() + Duration::from_secs(240);
    while committed(&brokers, &names.group, &names.reports, 4) < total {
        assert!(
            Instant::now() < deadline,
            "not done: {}",
            tail(&running[0].log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in running {
        i.stop();
    }
    assert_eq!(committed(&brokers, &names.group, &names.reports, 4), total);
    eprintln!("readiness seen: {readiness:?}");
    for seen in &readiness {
        assert!(
            seen.len() >= 2 && seen[0].0 == 503,
            "not ready before it joined and restored: {seen:?}"
        );
    }
    let (events, copies) = same_events_as_process(&brokers, &names, &targets, &files);
    eprintln!("three instances: {events} events compared, {copies} redelivered copies dropped");
}

/// Regression (chaos run, 2026-12-06): a SIGTERM with a backlog consumed
/// and not yet applied (about 150 MB there) waited out the shutdown
/// timeout, then exited 2 ("in-flight messages not finished"), which a
/// rolling deploy would log every time. Now what is not applied is left
/// to be redelivered: the stop exits 0, and the next run applies the
/// rest, each finding opened once.
#[test]
fn sigterm_under_a_backlog_exits_cleanly_and_loses_nothing() {
    let Some(brokers) = broker() else { return };
    const REPORTS: usize = 30;
    const FINDINGS: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let names = Names::new("backlog", &run_id());
    let cfg = config(dir.path(), &brokers, &names);
    edit(&cfg, |text| {
        text.replace("shutdown_timeout_secs = 10", "shutdown_timeout_secs = 1")
    });
    // Reports of 3,000 findings (about 1.9 MB, three chunks each): 57 MB
    // in all, seconds of work.
    let report = dir.path().join("report.sarif");
    std::fs::write(&report, crate::common::sarif(FINDINGS)).unwrap();
    let report = report.to_str().unwrap();
    // The topics made by a first run, stopped before anything is
    // published: the reports then wait for the next run, which finds the
    // whole backlog when it starts, however slowly they were published.
    let log = dir.path().join("run0.log");
    let mut child = spawn_run(&cfg, &log);
    wait_for_topics(&brokers, &names, &log);
    wait_for_line(&log, RESTORED, &mut child);
    let status = terminate(child);
    assert!(status.success(), "exit {status}: {}", tail(&log));
    for i in 0..REPORTS {
        let target = format!("repo:github.com/acme/backlog-{i}");
        publish(&brokers, &names.reports, &target, report);
    }
    let log = dir.path().join("run1.log");
    let child = spawn_run(&cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(120);
    while read(&brokers, &names.findings).is_empty() {
        assert!(Instant::now() < deadline, "no events: {}", tail(&log));
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = terminate(child);
    let said = tail(&log);
    assert!(status.success(), "exit {status}: {said}");
    assert!(
        said.contains("left to be redelivered"),
        "the stop came with nothing consumed and not applied: {said}"
    );
    let messages: i64 = ends(&brokers, &names.reports, 4).iter().sum();
    let at_stop = committed(&brokers, &names.group, &names.reports, 4);
    assert!(at_stop < messages, "{at_stop} of {messages} committed");

    let log = dir.path().join("run2.log");
    let child = spawn_run(&cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(240);
    while committed(&brokers, &names.group, &names.reports, 4) < messages {
        assert!(
            Instant::now() < deadline,
            "the rest was not applied: {}",
            tail(&log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = terminate(child);
    assert!(status.success(), "exit {status}: {}", tail(&log));
    let (events, copies) = unique_events(&brokers, &[&names.findings]);
    let opened: BTreeSet<(String, String)> = events
        .iter()
        .filter(|e| e["event"] == "opened")
        .map(|e| (e["target"].to_string(), e["fingerprint"].to_string()))
        .collect();
    eprintln!(
        "stopped with {at_stop} of {messages} messages committed; {} events, {copies} redelivered copies",
        events.len()
    );
    assert_eq!(
        events.len(),
        REPORTS * FINDINGS,
        "each finding opened once, nothing else"
    );
    assert_eq!(opened.len(), REPORTS * FINDINGS);
}

/// A port free on 127.0.0.1 now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every record of `topic`'s partitions: (partition, offset, key,
/// payload), in log order per partition (a compacted log keeps gaps where
/// records were cleaned away).
fn records(brokers: &str, topic: &str, partitions: i32) -> Vec<(i32, i64, Vec<u8>, Vec<u8>)> {
    use rdkafka::message::Message;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "custody-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut at_end = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (at_end.len() as i32) < partitions && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push((
                m.partition(),
                m.offset(),
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            )),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            _ => {}
        }
    }
    out
}

/// The high watermark of each of `topic`'s partitions.
fn ends(brokers: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .collect()
}

/// A changelog the log cleaner has really compacted restores to the same
/// state: the earliest records of each key are gone (shown: offsets
/// missing from the log), a tombstone is gone after `delete.retention.ms`
/// (the last-scan record of a target whose scan grew too large to
/// remember); after the restart, a rescan with the target's last report
/// is recognized without a decode and produces nothing, a changed one
/// produces exactly what `custody process` gives, and the target whose
/// last-scan record was tombstoned, and one whose last-scan record a later
/// record of it voids (a decision), are decoded again, producing nothing.
/// In the binary format (the default) the large scan's record holds its
/// findings as a bitmap, small enough to keep: that target is recognized
/// too.
#[test]
fn a_compacted_changelog_restores_to_the_same_state() {
    compacted_changelog_restores("binary");
}

/// The same with the changelog written as JSON (`changelog_format`),
/// where the large scan's record becomes a tombstone.
#[test]
fn a_compacted_json_changelog_restores_to_the_same_state() {
    compacted_changelog_restores("json");
}

fn compacted_changelog_restores(format: &str) {
    let Some(brokers) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let names = Names::new(&format!("compact-{format}"), &run_id());
    let cfg = config(dir.path(), &brokers, &names);
    let port = free_port();
    edit(&cfg, |text| {
        text.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
            .replace(
                "partitions = 4\n",
                &format!("partitions = 4\nchangelog_format = \"{format}\"\n"),
            )
    });
    let json = format == "json";
    let changelog = format!("{}.state", names.reports);
    // A changelog that compacts within seconds: segments roll after a
    // second, any dirt is worth cleaning, tombstones live two seconds.
    create_topics(
        &brokers,
        &[
            rdkafka::admin::NewTopic::new(
                &changelog,
                4,
                rdkafka::admin::TopicReplication::Fixed(1),
            )
            .set("cleanup.policy", "compact")
            .set("segment.ms", "1000")
            .set("min.cleanable.dirty.ratio", "0.001")
            .set("delete.retention.ms", "2000")
            .set("max.message.bytes", "16777216"),
        ],
    );
    let bandit = |r: &str| format!("tests/fixtures/churn/bandit-{r}.sarif");
    let a = "repo:github.com/acme/compact-a";
    let b = "repo:github.com/acme/compact-b";
    let v = "repo:github.com/acme/compact-v";
    let paramiko = "tests/fixtures/bandit/bandit-paramiko-4.0.0.sarif";
    // B: a small first scan, then one too large to remember (its last-scan
    // record becomes a tombstone).
    let small = dir.path().join("small.sarif");
    std::fs::write(&small, crate::common::sarif(100)).unwrap();
    let large = dir.path().join("large.sarif");
    std::fs::write(&large, crate::common::sarif(16_000)).unwrap();
    let (small, large) = (small.to_str().unwrap(), large.to_str().unwrap());
    let mut sent: Vec<(&str, String)> = Vec::new();
    let mut send = |target: &'static str, file: &str| {
        publish(&brokers, &names.reports, target, file);
        sent.push((target, file.to_string()));
    };
    let run = |name: &str| {
        let log = dir.path().join(format!("{name}.log"));
        let mut child = spawn_run(&cfg, &log);
        wait_for_line(&log, RESTORED, &mut child);
        (child, log)
    };
    let finish = |child: Child, log: &Path, messages: i64| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while committed(&brokers, &names.group, &names.reports, 4) < messages {
            assert!(Instant::now() < deadline, "not done: {}", tail(log));
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = terminate(child);
        assert!(status.success(), "exit {status}: {}", tail(log));
    };
    let reports_end = || ends(&brokers, &names.reports, 4).iter().sum::<i64>();

    let (child, log) = run("first");
    wait_for_topics(&brokers, &names, &log);
    send(a, &bandit("6.4.2"));
    send(a, &bandit("6.5"));
    send(a, &bandit("6.4.2"));
    send(b, small);
    send(b, large);
    // V: a scan, then a decision on one of its findings, whose record
    // follows the scan's last-scan record and so voids it.
    send(v, paramiko);
    let out = Command::new(env!("CARGO_BIN_EXE_custody"))
        .args(["process", "--target", v, "--scanner", "bandit", paramiko])
        .output()
        .unwrap();
    let first: serde_json::Value =
        serde_json::from_str(crate::cli::succeeded(&out).lines().next().unwrap()).unwrap();
    let decisions = dir.path().join("decisions.jsonl");
    std::fs::write(
        &decisions,
        serde_json::json!({
            "target": v, "fingerprint": first["fingerprint"], "decision": "false_positive",
            "reason": "test code", "author": "sec@example.com",
            "decided_at": "2026-01-01T00:00:00Z"
        })
        .to_string(),
    )
    .unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_custody"))
        .args([
            "publish",
            "--brokers",
            &brokers,
            "--topic",
            &names.reports,
            "--decisions",
        ])
        .arg(&decisions)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    finish(child, &log, reports_end());
    // Three more runs, each after the segments' time is up, writing to
    // every changelog partition, so the segments written before roll and
    // are cleaned (the active segment never is), more than once: a pass
    // after delete.retention.ms removes the tombstones an earlier pass
    // kept. Each run scans new targets until every partition has grown.
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(2500));
        let (child, log) = run(&format!("roll{i}"));
        let before = ends(&brokers, &changelog, 4);
        let mut j = 0;
        while ends(&brokers, &changelog, 4)
            .iter()
            .zip(&before)
            .any(|(now, then)| now == then)
        {
            assert!(j < 60, "60 targets did not reach every partition");
            publish(
                &brokers,
                &names.reports,
                &format!("repo:github.com/acme/roll-{i}-{j}"),
                "tests/fixtures/bandit/bandit-paramiko-4.0.0.sarif",
            );
            j += 1;
            let deadline = Instant::now() + Duration::from_secs(60);
            while committed(&brokers, &names.group, &names.reports, 4) < reports_end() {
                assert!(Instant::now() < deadline, "not done: {}", tail(&log));
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        finish(child, &log, reports_end());
    }
    // The cleaner has had its seconds: wait until the log shows it. As
    // JSON, B's last-scan key had a value, then a tombstone: once both are
    // gone, the tombstone outlived delete.retention.ms and a second
    // cleaning. In binary, B's record is kept: records gone from the
    // start of every partition show the cleaning.
    let written: i64 = ends(&brokers, &changelog, 4).iter().sum();
    let scan_key_of_b = format!("s\0{b}\0").into_bytes();
    let deadline = Instant::now() + Duration::from_secs(90);
    let kept = loop {
        let kept = records(&brokers, &changelog, 4);
        let b_kept = kept.iter().any(|(_, _, k, _)| *k == scan_key_of_b);
        let cleaned = (0..4).all(|p| {
            kept.iter()
                .filter(|(q, _, _, _)| *q == p)
                .map(|(_, o, _, _)| *o)
                .min()
                .is_some_and(|o| o > 0)
        });
        if (json && !b_kept) || (!json && b_kept && cleaned) {
            break kept;
        }
        assert!(
            Instant::now() < deadline,
            "the changelog was not compacted: {} of {written} records kept",
            kept.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!((kept.len() as i64) < written);
    let first: BTreeMap<i32, i64> = kept.iter().fold(BTreeMap::new(), |mut m, (p, o, _, _)| {
        m.entry(*p).or_insert(*o);
        m
    });
    assert!(
        first.values().any(|&o| o > 0),
        "the earliest offsets are gone: {first:?}"
    );
    eprintln!(
        "changelog compacted: {} of {written} records kept; first offsets {first:?}",
        kept.len()
    );

    // Restart on the compacted changelog.
    let (child, log) = run("after");
    let restored = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!(
        "{}",
        restored
            .lines()
            .find(|l| l.contains(RESTORED))
            .unwrap_or_default()
    );
    let before = read(&brokers, &names.findings).len();
    let unchanged = || {
        let (code, body) = crate::service::http_get(([127, 0, 0, 1], port).into(), "/metrics");
        assert_eq!(code, 200);
        crate::service::metric(&body, "custody_reports_unchanged_total")
    };
    let at_start = unchanged();
    // A's last report again: recognized, nothing produced.
    send(a, &bandit("6.4.2"));
    // B's last again: as JSON too large to remember, so decoded; in
    // binary recognized. Nothing produced either way.
    send(b, large);
    // V's last scan, voided by the decision after it: decoded, nothing
    // produced (the false positive stays one).
    send(v, paramiko);
    let messages = reports_end();
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed(&brokers, &names.group, &names.reports, 4) < messages {
        assert!(Instant::now() < deadline, "not done: {}", tail(&log));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        read(&brokers, &names.findings).len(),
        before,
        "a rescan after the restart produced events"
    );
    if json {
        assert_eq!(unchanged() - at_start, 1.0, "A recognized, B and V decoded");
    } else {
        assert_eq!(unchanged() - at_start, 2.0, "A and B recognized, V decoded");
    }
    // A changed report: exactly the real change.
    send(a, &bandit("6.5"));
    finish(child, &log, reports_end());

    // Every event of A and B, once, is what custody process gives for the
    // same reports in the same order.
    let (events, _) = unique_events(&brokers, &[&names.findings, &names.tickets]);
    for target in [a, b] {
        let files: Vec<&String> = sent
            .iter()
            .filter(|(t, _)| *t == target)
            .map(|(_, f)| f)
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_custody"))
            .args(["process", "--target", target, "--scanner", "bandit"])
            .args(files)
            .output()
            .unwrap();
        let mut want: BTreeMap<Said, usize> = BTreeMap::new();
        for line in crate::cli::succeeded(&out).lines() {
            *want
                .entry(said(&serde_json::from_str(line).unwrap()))
                .or_default() += 1;
        }
        let mut got: BTreeMap<Said, usize> = BTreeMap::new();
        for e in events.iter().filter(|e| e["target"] == target) {
            *got.entry(said(e)).or_default() += 1;
        }
        assert!(
            want == got,
            "{target}: the events differ from custody process"
        );
    }
}

/// The `custody-dlq-reason` header of every message of `topic`.
fn dead_letter_reasons(brokers: &str, topic: &str) -> Vec<String> {
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "custody-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (out.len() as i64) < high && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let reason = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "custody-dlq-reason"))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            out.push(reason);
        }
    }
    out
}

/// Regression (chaos run, 2026-12-06): a valid SARIF whose one result had
/// a 64 MiB message made a finding event the broker refused
/// (`MessageSizeTooLarge`), which stopped the service at every start.
/// Now a finding's texts are bounded, saying so, and a record the broker
/// refuses for good costs the report that caused it (dead-lettered with
/// the reason), never the service. Here: a report with a 20 MiB message is
/// applied, its message cut; a findings topic made beforehand taking
/// records of at most 8,000 bytes refuses the event of a 12 KB message, so
/// that report is dead-lettered; the next report is applied; the stop is
/// clean.
#[test]
fn a_record_the_broker_refuses_costs_its_report_not_the_service() {
    let Some(brokers) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let names = Names::new("refused", &run_id());
    let cfg = config(dir.path(), &brokers, &names);
    // The topic's limit is on record batches: custody's batches stay under
    // it (7,000 bytes before compression), so only a record larger than
    // that alone, in a batch of its own, is refused.
    edit(&cfg, |text| {
        text.replace(
            "[kafka.properties]",
            "[kafka.properties]\n\"batch.size\" = 7000",
        )
    });
    create_topics(
        &brokers,
        &[rdkafka::admin::NewTopic::new(
            &names.findings,
            4,
            rdkafka::admin::TopicReplication::Fixed(1),
        )
        .set("max.message.bytes", "8000")],
    );
    let sarif = |message: &str| {
        format!(
            r#"{{"version":"2.1.0","runs":[{{"tool":{{"driver":{{"name":"Bandit"}}}},"results":[{{"ruleId":"B101","level":"error","message":{{"text":"{message}"}},"locations":[{{"physicalLocation":{{"artifactLocation":{{"uri":"app/main.py"}},"region":{{"startLine":3,"snippet":{{"text":"assert user"}}}}}}}}]}}]}}]}}"#
        )
    };
    let huge = dir.path().join("huge.sarif");
    std::fs::write(&huge, sarif(&"x".repeat(20 << 20))).unwrap();
    let long = dir.path().join("long.sarif");
    // Text lz4 cannot shrink: the broker's limit is on compressed batches.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: String = (0..12_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    std::fs::write(&long, sarif(&noise)).unwrap();
    let log = dir.path().join("run.log");
    let child = spawn_run(&cfg, &log);
    wait_for_topics(&brokers, &names, &log);
    publish(
        &brokers,
        &names.reports,
        "repo:github.com/acme/huge",
        huge.to_str().unwrap(),
    );
    publish(
        &brokers,
        &names.reports,
        "repo:github.com/acme/long",
        long.to_str().unwrap(),
    );
    publish(
        &brokers,
        &names.reports,
        "repo:github.com/acme/after",
        "tests/fixtures/churn/bandit-6.4.2.sarif",
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut findings: Vec<serde_json::Value>;
    loop {
        findings = read(&brokers, &names.findings)
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect();
        // The reports are on partitions of their own, applied in no
        // order between them: the huge one (20 MB in chunks) often last.
        let of = |target: &str| findings.iter().filter(|e| e["target"] == target).count();
        let (after, huge) = (
            of("repo:github.com/acme/after"),
            of("repo:github.com/acme/huge"),
        );
        if after == 272 && huge >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{after} events of the last report, {huge} of the huge one: {}",
            tail(&log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let huge_events: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|e| e["target"] == "repo:github.com/acme/huge")
        .collect();
    assert_eq!(huge_events.len(), 1);
    let message = huge_events[0]["message"].as_str().unwrap();
    assert!(message.len() <= 16 * 1024, "{} bytes", message.len());
    assert!(
        message.ends_with(&format!("{} bytes in all]", 20 << 20)),
        "{}",
        &message[message.len() - 80..]
    );
    assert!(
        !findings
            .iter()
            .any(|e| e["target"] == "repo:github.com/acme/long"),
        "the refused event was not taken"
    );
    // The refusal comes back with the producer's delivery report, maybe
    // after the other reports' events.
    let reasons = loop {
        let reasons = dead_letter_reasons(&brokers, &format!("{}.dlq", names.reports));
        if !reasons.is_empty() || Instant::now() >= deadline {
            break reasons;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(reasons, ["event_refused"], "{}", tail(&log));
    let status = terminate(child);
    assert!(status.success(), "exit {status}: {}", tail(&log));
    assert_eq!(committed(&brokers, &names.group, &names.reports, 4), {
        // Every message, the huge report's chunks included.
        ends(&brokers, &names.reports, 4).iter().sum::<i64>()
    });
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
    edit(&cfg, |text| {
        format!("{text}\n[ownership]\ntopic = \"{ownership}\"\n")
    });
    // Made by hand with Kafka's default policy, as an operator's script or
    // a broker's auto-creation would make them.
    let changelog = format!("{}.state", names.reports);
    fn topic(name: &str, partitions: i32) -> rdkafka::admin::NewTopic<'_> {
        rdkafka::admin::NewTopic::new(name, partitions, rdkafka::admin::TopicReplication::Fixed(1))
            .set("cleanup.policy", "delete")
            .set("retention.ms", "604800000")
    }
    create_topics(&brokers, &[topic(&changelog, 4), topic(&ownership, 1)]);
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

/// Every event of `topic` so far, as JSON.
fn events_of(brokers: &str, topic: &str) -> Vec<serde_json::Value> {
    read(brokers, topic)
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect()
}

/// How many times `log` holds `line`.
fn count_lines(log: &Path, line: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(line)
        .count()
}

/// Tickets grouped by team and rule in the service: two targets on
/// different partitions of the reports topic each send their parts to the
/// partition that sums the ticket; each ticket opens once and is updated
/// with the second target. A restart restores the stage from its topics
/// and publishes nothing again; a fix of one target then updates each
/// ticket once, naming the other target alone. Dropping the grouping
/// resolves each ticket once as regrouped while the target's own tickets
/// open.
#[test]
fn team_rule_tickets_are_summed_across_partitions_once_through_a_restart_and_a_regrouping() {
    team_rule_tickets("at-least-once");
}

/// The same with `delivery = "exactly-once"`: the stage publishes each
/// partition's events and tickets' records in one transaction, with a
/// transactional id per partition.
#[test]
fn team_rule_tickets_under_exactly_once() {
    team_rule_tickets("exactly-once");
}

fn team_rule_tickets(delivery: &str) {
    let Some(brokers) = broker() else { return };
    // Both deliveries' tests run at once: their names differ.
    let names = Names::new(&format!("team-rule-{delivery}"), &run_id());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &brokers, &names);
    edit(&cfg, |t| {
        t.replace("[tickets]\n", "[tickets]\ngrouping = \"team_rule\"\n")
            .replace(
                "[kafka]\n",
                &format!("[kafka]\ndelivery = \"{delivery}\"\n"),
            )
    });
    let log = dir.path().join("custody-1.log");
    let mut child = spawn_run(&cfg, &log);
    wait_for_topics(&brokers, &names, &log);
    wait_for_line(&log, RESTORED, &mut child);
    let report = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/churn/bandit-6.5.json"
    );
    let (api, web) = ("repo:github.com/acme/api", "repo:github.com/acme/web2");
    publish(&brokers, &names.reports, api, report);
    publish(&brokers, &names.reports, web, report);
    let placed = records(&brokers, &names.reports, 4);
    let partition_of = |target: &str| {
        placed
            .iter()
            .find(|(_, _, k, _)| k == target.as_bytes())
            .map(|(p, _, _, _)| *p)
    };
    assert_ne!(
        partition_of(api),
        partition_of(web),
        "the two targets on different partitions: {placed:?}"
    );

    // Each ticket opened, then updated with both targets: one per rule the
    // report names (the findings are unattributed).
    let rules: BTreeSet<String> = {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["test_id"].as_str().unwrap().to_string())
            .collect()
    };
    let both = serde_json::json!([api, web]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let evs = loop {
        let evs = events_of(&brokers, &names.tickets);
        let keys: BTreeSet<&str> = evs
            .iter()
            .filter_map(|e| e["ticket_key"].as_str())
            .collect();
        let done = keys.len() == rules.len()
            && keys.iter().all(|k| {
                evs.iter()
                    .any(|e| e["ticket_key"] == *k && e["targets"] == both)
            });
        if done {
            break evs;
        }
        assert!(
            Instant::now() < deadline,
            "tickets not summed: {}",
            tail(&log)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &evs {
        assert_eq!(e["grouping"], "team_rule", "{e}");
        by_key
            .entry(e["ticket_key"].as_str().unwrap().to_string())
            .or_default()
            .push(e["event"].as_str().unwrap().to_string());
    }
    assert!(by_key.len() > 1, "{by_key:?}");
    // Opened once: with the first target's part, then updated with the
    // second's; or with both, when the stage was given the partition
    // after both parts were there.
    for (k, kinds) in &by_key {
        assert_eq!(kinds[0], "opened", "{k}: {kinds:?}");
        assert!(kinds[1..].iter().all(|e| e == "updated"), "{k}: {kinds:?}");
        assert!(kinds.len() <= 2, "{k}: {kinds:?}");
    }
    // Each ticket's latest event (its update, or its opening when the
    // stage had both parts at once) lists both targets' locations.
    for k in by_key.keys() {
        let last = evs
            .iter()
            .rev()
            .find(|e| e["ticket_key"] == k.as_str())
            .unwrap();
        let body = last["body"].as_str().unwrap();
        assert!(
            body.contains(&format!("`{api}`")) && body.contains(&format!("`{web}`")),
            "{k}: {body}"
        );
    }

    // A restart: the stage restores each partition it is given and says
    // nothing new.
    assert!(terminate(child).success());
    let log2 = dir.path().join("custody-2.log");
    let mut child = spawn_run(&cfg, &log2);
    let deadline = Instant::now() + Duration::from_secs(120);
    while count_lines(&log2, "ticket stage: partition restored") < 4 {
        assert!(
            Instant::now() < deadline,
            "stage not restored: {}",
            tail(&log2)
        );
        assert!(child.try_wait().unwrap().is_none(), "{}", tail(&log2));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Then one target fixed: one update per ticket, naming the other.
    let empty = dir.path().join("bandit-empty.json");
    std::fs::write(
        &empty,
        r#"{"errors":[],"generated_at":"2026-11-24T16:25:32Z","metrics":{},"results":[]}"#,
    )
    .unwrap();
    publish(&brokers, &names.reports, api, empty.to_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    let after = loop {
        let after = events_of(&brokers, &names.tickets);
        if after.len() >= evs.len() + by_key.len() {
            break after;
        }
        assert!(
            Instant::now() < deadline,
            "no update after the fix: {}",
            tail(&log2)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    std::thread::sleep(Duration::from_secs(2));
    let after_all = events_of(&brokers, &names.tickets);
    assert_eq!(after_all.len(), after.len(), "nothing more came");
    assert_eq!(
        after.len(),
        evs.len() + by_key.len(),
        "the restart published nothing again"
    );
    let ids: BTreeSet<&str> = after
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(ids.len(), after.len(), "no event id twice");
    // Read partition by partition: the new events are those not seen.
    let seen: BTreeSet<&str> = evs.iter().filter_map(|e| e["event_id"].as_str()).collect();
    let new: Vec<&serde_json::Value> = after
        .iter()
        .filter(|e| !seen.contains(e["event_id"].as_str().unwrap()))
        .collect();
    assert_eq!(new.len(), by_key.len());
    for e in new {
        assert_eq!(e["event"], "updated", "{e}");
        assert_eq!(e["targets"], serde_json::json!([web]), "{e}");
    }
    assert!(terminate(child).success());

    // The grouping dropped: at restore the parts are regrouped, and each
    // ticket resolves once as regrouped while the target's own tickets
    // open.
    edit(&cfg, |t| t.replace("grouping = \"team_rule\"\n", ""));
    let log3 = dir.path().join("custody-3.log");
    let child = spawn_run(&cfg, &log3);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (resolved, opened) = loop {
        let now = events_of(&brokers, &names.tickets);
        let opened = now
            .iter()
            .filter(|e| e["grouping"] == "team_target_rule" && e["event"] == "opened")
            .count();
        let resolved: Vec<serde_json::Value> = now
            .into_iter()
            .filter(|e| e["grouping"] == "team_rule" && e["event"] == "resolved")
            .collect();
        if resolved.len() >= by_key.len() && opened >= by_key.len() {
            break (resolved, opened);
        }
        assert!(Instant::now() < deadline, "not regrouped: {}", tail(&log3));
        std::thread::sleep(Duration::from_millis(300));
    };
    let keys: BTreeSet<&str> = resolved
        .iter()
        .map(|e| {
            assert_eq!(e["reason"], "regrouped", "{e}");
            e["ticket_key"].as_str().unwrap()
        })
        .collect();
    assert_eq!(keys.len(), resolved.len(), "each resolved once");
    assert_eq!(keys, by_key.keys().map(String::as_str).collect());
    assert_eq!(opened, by_key.len(), "web's own tickets, one per rule");
    assert!(terminate(child).success());
}
