//! The Kafka service against librdkafka's mock cluster, three figures in
//! one run:
//!
//! 1. throughput: custody's sustained processing rate over reports of
//!    1 KB findings, against the raw consume rate of a plain rdkafka
//!    consumer reading the same topic on the same broker, as a ratio (the
//!    scale bench's `RESULT` lines give each row's target: 0.25 for first
//!    scans, 0.8 for primed rescans): each rate from the moment a quarter of the messages
//!    are received (custody: applied) to the last, the rate from the start
//!    printed beside it. The
//!    workloads (see [`Workload`]): every report a new target (each finding
//!    opens), targets scanned again and again (the steady state), the
//!    same with reports restamped, and both from a restart;
//! 2. latency: publish -> ticket event at half the maximum rate, p50/p99
//!    (target p99 <= 250 ms);
//! 3. restore: changelog records per second when a partition set is
//!    assigned (target >= 500,000/s).
//!
//! The mock keeps only about 5 MiB per partition, so data is spread over
//! enough partitions to stay under it. `cargo bench --bench service` runs
//! them all ([`run`]); `cargo bench --bench scale` the rows of them it
//! judges.
//!
//! `CUSTODY_BENCH_BROKERS=host:port` runs the same on an external broker
//! instead (Apache Kafka from `KAFKA_PROFILE=server scripts/kafka.sh
//! start`, the JVM as Kafka's own scripts run it): the topics of each
//! run are made there and deleted after it, the plain consumer reads the
//! same topic from the same broker, and each partition gets 16 times the
//! reports (`CUSTODY_BENCH_SCALE`) over 24 partitions
//! (`CUSTODY_BENCH_PARTITIONS`), as a broker has no 5 MiB cap.

use custody::config::Config;
use custody::kafka::mock::create_mock_topics;
use custody::kafka::service::Service;
use custody::model::TicketEvent;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The broker a run measures on: librdkafka's mock cluster (in-process,
/// the default), or an external one (`CUSTODY_BENCH_BROKERS=host:port`,
/// such as the Apache Kafka `scripts/kafka.sh` starts), whose topics for
/// the run are made and, at the end, deleted.
enum Cluster {
    Mock(MockCluster<'static, rdkafka::producer::DefaultProducerContext>),
    Kafka {
        brokers: String,
        topics: Vec<String>,
    },
}

impl Cluster {
    fn bootstrap_servers(&self) -> String {
        match self {
            Cluster::Mock(m) => m.bootstrap_servers(),
            Cluster::Kafka { brokers, .. } => brokers.clone(),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Cluster::Kafka { brokers, topics } = self {
            let admin: Result<
                rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>,
                _,
            > = ClientConfig::new()
                .set("bootstrap.servers", &*brokers)
                .create();
            if let (Ok(admin), Ok(rt)) = (
                admin,
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build(),
            ) {
                let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                let _ =
                    rt.block_on(admin.delete_topics(&names, &rdkafka::admin::AdminOptions::new()));
            }
        }
    }
}

/// The external broker to measure on, if any.
fn external_brokers() -> Option<String> {
    std::env::var("CUSTODY_BENCH_BROKERS")
        .ok()
        .filter(|b| !b.is_empty())
}

/// How many times the mock's reports per partition an external broker
/// gets (it has no 5 MiB cap per partition, and fewer partitions):
/// `CUSTODY_BENCH_SCALE`, 16 by default there, 1 on the mock.
fn scale() -> usize {
    std::env::var("CUSTODY_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if external_brokers().is_some() { 16 } else { 1 })
}

fn cluster_and_config(partitions: i32, tag: &str) -> (Cluster, Config) {
    let mut config = Config::default();
    config.service.partitions = partitions;
    config.service.replication_factor = 1;
    config.service.group_id = format!("custody-bench-{tag}");
    let cluster = match external_brokers() {
        Some(brokers) => {
            // Topics of this run only.
            let run = format!(
                "bench-{tag}-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis())
            );
            let s = &mut config.service;
            s.brokers = brokers.clone();
            s.group_id = format!("custody-{run}");
            s.reports_topics = vec![format!("{run}.reports")];
            s.changelog_topic = format!("{run}.state");
            s.findings_topic = format!("{run}.findings");
            s.dead_letter_topic = format!("{run}.dlq");
            config.default_topic = format!("{run}.tickets");
            let topics = custody::kafka::topics::wanted(&config)
                .into_iter()
                .map(|(t, _)| t)
                .collect();
            custody::kafka::topics::ensure(&config).expect("topics");
            Cluster::Kafka { brokers, topics }
        }
        None => {
            let cluster = MockCluster::new(1).expect("mock cluster");
            config.service.brokers = cluster.bootstrap_servers();
            // The mock broker holds an empty fetch for the whole
            // fetch.wait.max.ms (500 ms by default) even when data arrives
            // meanwhile; a real broker answers as soon as fetch.min.bytes
            // (1) is there. A short wait makes the mock behave like a
            // broker here.
            config
                .service
                .properties
                .insert("fetch.wait.max.ms".into(), "5".into());
            // The mock coordinator holds a restarted member's JoinGroup
            // until the session timeout of the member that left (45 s by
            // default), where a broker lets it in at once: the primed runs
            // restart custody.
            config
                .service
                .properties
                .insert("session.timeout.ms".into(), "6000".into());
            create_mock_topics(&cluster, &mut config).expect("topics");
            Cluster::Mock(cluster)
        }
    };
    // CUSTODY_BENCH_PROPERTIES="k=v,k=v": librdkafka settings for custody's
    // clients, as [kafka.properties] would give them.
    for kv in std::env::var("CUSTODY_BENCH_PROPERTIES")
        .unwrap_or_default()
        .split(',')
        .filter(|kv| !kv.is_empty())
    {
        if let Some((k, v)) = kv.split_once('=') {
            config.service.properties.insert(k.into(), v.into());
        }
    }
    (cluster, config)
}

/// A producer; `compression` as custody's own producer sets it for what it
/// writes (lz4), or `none` for reports as any scanner's CI job sends them.
fn producer(brokers: &str, compression: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "2")
        .set("compression.type", compression)
        .set("message.max.bytes", "10000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

fn send(p: &BaseProducer, topic: &str, partition: i32, target: &str, payload: &[u8]) {
    let hs = OwnedHeaders::new()
        .insert(Header {
            key: "custody-target",
            value: Some(target),
        })
        .insert(Header {
            key: "custody-format",
            value: Some("sarif"),
        });
    let rec: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic)
        .partition(partition)
        .key(target)
        .payload(payload)
        .headers(hs);
    send_record(p, rec);
}

/// Sends, waiting while the producer's queue is full.
fn send_record(p: &BaseProducer, mut rec: BaseRecord<'_, str, [u8]>) {
    loop {
        match p.send(rec) {
            Ok(()) => return,
            Err((_, r)) => {
                rec = r;
                p.poll(Duration::from_millis(5));
            }
        }
    }
}

/// Reports topic filled with `per_partition` reports of `findings` 1 KB
/// findings on each of `partitions` partitions: for rescans, every report
/// of a partition scans one target (the first opens its findings, the
/// others find them unchanged); else each report its own target.
fn fill_reports(
    cluster: &Cluster,
    config: &Config,
    per_partition: usize,
    findings: usize,
    workload: Workload,
) -> (usize, usize) {
    let report = crate::common::sarif_padded(findings, 400);
    let p = producer(&cluster.bootstrap_servers(), "none");
    let topic = &config.service.reports_topics[0];
    let mut n = 0;
    let mut bytes = 0;
    for part in 0..config.service.partitions {
        for i in 0..per_partition {
            let target = match workload {
                Workload::New => format!("repo:github.com/acme/svc-{part}-{i}"),
                _ => format!("repo:github.com/acme/svc-{part}-0"),
            };
            // A real scanner's rescan differs in its run's metadata (here
            // the time it ended) even when its findings do not.
            let report = match workload {
                Workload::RescansRestamped => report.replacen(
                    r#""runs":[{"#,
                    &format!(
                        r#""runs":[{{"invocations":[{{"executionSuccessful":true,"endTimeUtc":"2026-11-29T10:{:02}:{:02}Z"}}],"#,
                        i / 60,
                        i % 60
                    ),
                    1,
                ),
                _ => report.clone(),
            };
            send(&p, topic, part, &target, report.as_bytes());
            n += 1;
            bytes += report.len();
        }
    }
    p.flush(Duration::from_secs(60)).expect("flush");
    (n, bytes)
}

/// A consumer's rates over one pass of a topic, in messages per second.
#[derive(Clone, Copy)]
pub struct Rates {
    /// From the first message (custody: from the first partition
    /// restored) to the last.
    pub whole: f64,
    /// From the moment a quarter of the messages were received (custody:
    /// applied) to the last done: the rate a consumer keeps up once it
    /// runs, without what its start costs (custody's restore, the plain
    /// consumer's first fetches).
    pub sustained: f64,
}

/// Where the sustained rate's clock starts: when this many of `expect`
/// messages are received (custody: applied).
fn warm_at(expect: usize) -> usize {
    (expect / 4).max(1)
}

/// A plain rdkafka consumer reading every message of the topic, three
/// times (a fresh group each time): the median of each rate. One pass
/// lasts a fraction of a second, so a single one swings with whatever else
/// the machine does.
fn raw_consume(config: &Config, topic: &str, expect: usize, findings: usize) -> Rates {
    let passes: Vec<Rates> = (0..3)
        .map(|i| raw_consume_once(config, topic, expect, findings, i))
        .collect();
    let sorted = |f: fn(&Rates) -> f64| {
        let mut v: Vec<f64> = passes.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (whole, sustained) = (sorted(|r| r.whole), sorted(|r| r.sustained));
    eprintln!(
        "  raw consumer: {:.0}, {:.0}, {:.0} messages/s (sustained {:.0}, {:.0}, {:.0}); medians {:.0} ({:.0})",
        whole[0], whole[1], whole[2], sustained[0], sustained[1], sustained[2], whole[1], sustained[1]
    );
    Rates {
        whole: whole[1],
        sustained: sustained[1],
    }
}

fn raw_consume_once(
    config: &Config,
    topic: &str,
    expect: usize,
    findings: usize,
    pass: usize,
) -> Rates {
    let threads0 = thread_cpu_secs();
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.service.brokers)
        .set("group.id", format!("raw-consumer-{pass}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    let mut first = None;
    let mut warm = None;
    let mut n = 0usize;
    let mut bytes = 0usize;
    let mut last = Instant::now();
    while n < expect {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            first.get_or_insert_with(Instant::now);
            bytes += m.payload().map_or(0, <[u8]>::len);
            n += 1;
            last = Instant::now();
            if n == warm_at(expect) {
                warm = Some(last);
            }
        }
    }
    let secs = (last - first.unwrap_or(last)).as_secs_f64().max(1e-9);
    let warm_secs = (last - warm.unwrap_or(last)).as_secs_f64().max(1e-9);
    // What fetching alone costs, to set beside custody's figures (coarse:
    // the kernel counts in hundredths of a second).
    let threads = thread_cpu_secs();
    eprintln!(
        "  raw consumer: {n} messages, {:.1} MB in {secs:.3} s; CPU by thread, us per finding: {}",
        bytes as f64 / 1e6,
        cpu_by_thread(&threads0, &threads, (n * findings) as f64)
    );
    Rates {
        whole: (n - 1) as f64 / secs,
        sustained: (n - warm_at(expect)) as f64 / warm_secs,
    }
}

/// custody over the same topic: messages per second from the first
/// processed message to the last.
/// CPU time of this whole process (every thread: custody, librdkafka and
/// the mock broker), in seconds, from /proc (Linux; 0 elsewhere).
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line; the clock
    // tick is 100 Hz on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of each thread of this process, by thread name (Linux;
/// empty elsewhere).
fn thread_cpu_secs() -> HashMap<String, f64> {
    let mut by_name = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for t in tasks.flatten() {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let rest = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        *by_name.entry(name.trim().to_string()).or_insert(0.0) += (ticks(11) + ticks(12)) / 100.0;
    }
    by_name
}

/// Where the CPU went between two [`thread_cpu_secs`] readings, in
/// microseconds per finding, by thread name, largest first. Threads that
/// ended meanwhile are missing from the second reading, so their share is
/// not counted.
fn cpu_by_thread(
    before: &HashMap<String, f64>,
    after: &HashMap<String, f64>,
    findings: f64,
) -> String {
    let mut v: Vec<(String, f64)> = after
        .iter()
        .map(|(k, a)| (k.clone(), a - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.iter()
        .map(|(k, d)| format!("{k} {:.1}", d * 1e6 / findings.max(1.0)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn custody_consume(config: &Config, expect: usize, findings: usize) -> Rates {
    let service = Service::start(config, None).expect("service");
    let give_up = Instant::now() + Duration::from_secs(300);
    let check = |seen: usize| {
        assert!(
            !service.health.failed.load(Ordering::Acquire),
            "custody failed: {:?}",
            service.health.last_error.lock().unwrap()
        );
        assert!(
            Instant::now() < give_up,
            "custody stuck at {seen} of {expect} messages; ready: {:?}; partitions: {:?}",
            service.health.ready(),
            service.health.partitions.lock().unwrap()
        );
    };
    // The clock starts when the first partition is restored, the first
    // moment custody may process: joining the group is not processing.
    // (Starting it at the first finished message would flatter custody: a
    // message is finished only once the events of every earlier message of
    // its partition are acknowledged, and by then later messages are mostly
    // processed already. Waiting for every partition would too: partitions
    // restored early are processed while the others restore.)
    while !service
        .health
        .partitions
        .lock()
        .unwrap()
        .values()
        .any(|restored| *restored)
    {
        check(0);
        std::thread::sleep(Duration::from_millis(1));
    }
    let t0 = Instant::now();
    let cpu0 = process_cpu_secs();
    let threads0 = thread_cpu_secs();
    eprintln!(
        "  custody: a first partition restored, processing ({} messages already done)",
        service.health.done_messages.load(Ordering::Relaxed)
    );
    let mut last = t0;
    let mut seen = 0;
    let mut warm: Option<(Instant, usize, f64)> = None;
    let mut all_restored = false;
    // CUSTODY_BENCH_TIMELINE: progress every 20 ms (rendering the metrics
    // costs custody some CPU, so only when asked).
    let timeline = std::env::var_os("CUSTODY_BENCH_TIMELINE").is_some();
    let mut last_sample = t0;
    // Checked every millisecond: finer polling showed up as a tenth of the
    // process's CPU, taken from custody.
    while seen < expect {
        check(seen);
        if !all_restored && service.health.ready().is_ok() {
            all_restored = true;
            eprintln!(
                "  custody: every partition restored after {} ms, {} messages done by then",
                t0.elapsed().as_millis(),
                service.health.done_messages.load(Ordering::Relaxed)
            );
        }
        if timeline && last_sample.elapsed() >= Duration::from_millis(20) {
            last_sample = Instant::now();
            let text = service.metrics.render();
            let said: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.starts_with("custody_messages_consumed_total")
                        || l.starts_with("custody_events_produced_total")
                        || l.starts_with("custody_reports_unchanged_total")
                        || l.starts_with("custody_partitions_paused")
                })
                .collect();
            eprintln!(
                "  timeline {:5} ms: {} done; {}",
                t0.elapsed().as_millis(),
                service.health.done_messages.load(Ordering::Relaxed),
                said.join(" ")
            );
        }
        // The sustained clock starts when a quarter of the messages are
        // applied, not done: a message is done only once every earlier
        // message of its partition is acknowledged, so done counts come
        // in bursts behind a first scan's hundreds of events, and a burst
        // past the quarter would leave a window of a few milliseconds.
        if warm.is_none() {
            let applied = service.health.applied_messages.load(Ordering::Relaxed);
            if applied >= warm_at(expect) {
                warm = Some((Instant::now(), applied, process_cpu_secs()));
            }
        }
        let done = service.health.done_messages.load(Ordering::Relaxed);
        if done > seen {
            seen = done;
            last = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let cpu_end = process_cpu_secs();
    let cpu = cpu_end - cpu0;
    let threads = thread_cpu_secs();
    let secs = (last - t0).as_secs_f64().max(1e-9);
    let msgs = seen as f64;
    let (warm_t, warm_n, warm_cpu) = warm.unwrap_or((t0, 0, cpu0));
    let warm_secs = (last - warm_t).as_secs_f64().max(1e-9);
    let warm_msgs = (seen - warm_n) as f64;
    // custody's threads are named custody-*, librdkafka's rdk:*; the mock
    // broker's is rdk:mock, and the main thread is this bench's.
    eprintln!(
        "  CPU by thread, us per finding: {}",
        cpu_by_thread(&threads0, &threads, msgs * findings as f64)
    );
    // Steadier than the rate when the machine is shared: CPU spent per
    // finding by the whole process (custody, librdkafka, the mock broker).
    eprintln!(
        "  CPU: {:.1} us per finding ({:.2} cores busy); sustained {:.1} us ({:.2} cores)",
        cpu * 1e6 / (msgs * findings as f64).max(1.0),
        cpu / secs,
        (cpu_end - warm_cpu) * 1e6 / (warm_msgs * findings as f64).max(1.0),
        (cpu_end - warm_cpu) / warm_secs
    );
    eprintln!(
        "  custody: {seen} messages ({} findings) in {secs:.3} s = {:.0} findings/s; sustained {:.0} findings/s",
        seen * findings,
        msgs * findings as f64 / secs,
        warm_msgs * findings as f64 / warm_secs
    );
    let text = service.metrics.render();
    let unchanged = text
        .lines()
        .find_map(|l| l.strip_prefix("custody_reports_unchanged_total "))
        .unwrap_or("0");
    eprintln!("  custody: {unchanged} reports applied as unchanged, without a decode");

    service.stop().expect("clean stop");
    Rates {
        whole: msgs / secs,
        sustained: warm_msgs / warm_secs,
    }
}

/// Workload of the throughput phase.
#[derive(Clone, Copy, PartialEq)]
pub enum Workload {
    /// Every report the first scan of its target: each finding opens, so
    /// each one is an event and a changelog record.
    New,
    /// Each partition's reports scan one target: the first opens its
    /// findings, the next 17 find them unchanged (the steady state of a
    /// service whose targets are scanned again and again). The reports are
    /// the same bytes, so custody applies all but the first without
    /// decoding them.
    Rescans,
    /// As `Rescans`, but each report carries another end time in its run's
    /// `invocations`, as a real scanner's would: each is skimmed for the
    /// digest of what the decoder reads, which recognizes all but the
    /// first.
    RescansRestamped,
}

/// Custody's rate over a topic of 18 reports per partition, against a
/// plain consumer's. `primed`: custody applies each partition's first
/// report in a run of its own, stops, and is measured from its restart
/// (state restored from the changelog) over the other 17: the steady state
/// of a service whose targets' findings are known, without the first
/// scans that open them.
pub fn throughput(workload: Workload, primed: bool) -> (Rates, Rates) {
    let (name, tag) = match (workload, primed) {
        (Workload::New, _) => ("every report a new target", "tp"),
        (Workload::Rescans, false) => ("one target per partition, rescanned", "tp-rescan"),
        (Workload::Rescans, true) => (
            "one target per partition, rescanned, findings known before",
            "tp-primed",
        ),
        (Workload::RescansRestamped, false) => (
            "one target per partition, rescanned, each report restamped",
            "tp-restamp",
        ),
        (Workload::RescansRestamped, true) => (
            "one target per partition, rescanned, each report restamped, findings known before",
            "tp-restamp-primed",
        ),
    };
    eprintln!("== throughput ({name}): custody vs a plain consumer, 1 KB findings");
    // 384 partitions of 18 reports (4 MB each, under the mock's cap), 1.5
    // GB in all: custody's sustained rate is then measured over a second or
    // more, not a few tenths (CUSTODY_BENCH_PARTITIONS sets another count).
    let partitions = std::env::var("CUSTODY_BENCH_PARTITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if external_brokers().is_some() {
            24
        } else {
            384
        });
    let (cluster, config) = cluster_and_config(partitions, tag);
    let findings = 200;
    let (n, bytes, measured) = if primed {
        let (first, first_bytes) = fill_reports(&cluster, &config, 1, findings, workload);
        let service = Service::start(&config, None).expect("service");
        let give_up = Instant::now() + Duration::from_secs(300);
        while service.health.done_messages.load(Ordering::Relaxed) < first {
            assert!(Instant::now() < give_up, "the first scans never finished");
            std::thread::sleep(Duration::from_millis(5));
        }
        service.stop().expect("clean stop");
        eprintln!("  primed: {first} first scans applied, custody stopped");
        let (rest, bytes) = fill_reports(&cluster, &config, 17 * scale(), findings, workload);
        (first + rest, first_bytes + bytes, rest)
    } else {
        let (n, bytes) = fill_reports(&cluster, &config, 18 * scale(), findings, workload);
        (n, bytes, n)
    };
    eprintln!(
        "  topic: {n} reports of {findings} findings, {:.1} MB over {partitions} partitions",
        bytes as f64 / 1e6
    );
    let raw = raw_consume(&config, &config.service.reports_topics[0], n, findings);
    let custody = custody_consume(&config, measured, findings);
    println!(
        "throughput ({name}): sustained: custody {:.1} reports/s ({:.0} findings/s), raw consume {:.1} reports/s; ratio {:.3}; from the start: custody {:.1}, raw {:.1}, ratio {:.3}",
        custody.sustained,
        custody.sustained * findings as f64,
        raw.sustained,
        custody.sustained / raw.sustained,
        custody.whole,
        raw.whole,
        custody.whole / raw.whole
    );
    (custody, raw)
}

/// Publish -> ticket event latency at half of `max_rate` reports per
/// second: prints p50, p99 and the maximum, and returns p99 in ms.
pub fn latency(max_rate: f64) -> f64 {
    let rate = max_rate / 2.0;
    eprintln!("== latency: publish -> ticket event at {rate:.1} reports/s");
    if std::env::var("RUST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let partitions = 32;
    let (cluster, config) = cluster_and_config(partitions, "lat");
    let service = Service::start(&config, None).expect("service");
    while service.health.ready().is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let findings = 200;
    let report = crate::common::sarif_padded(findings, 400);
    // Three seconds of reports after the warm-up.
    let count = ((rate * 3.0) as usize).clamp(50, partitions as usize * 20);
    let p = producer(&cluster.bootstrap_servers(), "none");
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "latency-reader")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "5")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for part in 0..config.service.partitions {
        tpl.add_partition_offset(&config.default_topic, part, rdkafka::Offset::Beginning)
            .expect("partition");
    }
    reader.assign(&tpl).expect("assign");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = std::sync::Arc::clone(&stop);
    let reading = std::thread::spawn(move || {
        // Per target, the latest of its ticket events: when custody
        // produced it (the record's create time) and when it was read,
        // each in ms after the report's time. A target is done when all
        // its tickets are out.
        let mut done: HashMap<String, (f64, f64)> = HashMap::new();
        // Every event's split: report -> produced (custody), produced ->
        // read (librdkafka, the broker and this reader).
        let mut split: Vec<(f64, f64)> = Vec::new();
        let mut idle_since = Instant::now();
        while !stop2.load(Ordering::Relaxed) || idle_since.elapsed() < Duration::from_secs(1) {
            if let Some(Ok(m)) = reader.poll(Duration::from_millis(20)) {
                idle_since = Instant::now();
                let now = chrono::Utc::now();
                if let Some(ev) = m
                    .payload()
                    .and_then(|b| serde_json::from_slice::<TicketEvent>(b).ok())
                {
                    let ms = (now - ev.at).num_microseconds().unwrap_or(0) as f64 / 1000.0;
                    let produced = m
                        .timestamp()
                        .to_millis()
                        .map_or(0.0, |t| (t - ev.at.timestamp_millis()) as f64);
                    let slot = done.entry(ev.target.to_string()).or_insert((0.0, 0.0));
                    *slot = (slot.0.max(produced), slot.1.max(ms));
                    if ev.target.to_string().contains("/lat-") {
                        split.push((produced, ms - produced));
                    }
                }
            }
        }
        (done, split)
    });
    // Warm-up: the first second after start is not steady state (fetch
    // sessions and the ticket reader settle); its reports are excluded.
    let send_report = |name: &str, i: usize| {
        let target = format!("repo:github.com/acme/{name}-{i}");
        let part = (i % partitions as usize) as i32;
        send(
            &p,
            &config.service.reports_topics[0],
            part,
            &target,
            report.as_bytes(),
        );
    };
    // On Apache Kafka the first seconds of a run's new topics are slow
    // (the run's first ticket events are read seconds after they were
    // produced; printed below): five seconds there
    // (`CUSTODY_BENCH_WARMUP_S` sets it).
    let warmup_s: f64 = std::env::var("CUSTODY_BENCH_WARMUP_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if external_brokers().is_some() {
            5.0
        } else {
            1.0
        });
    let warmup = ((rate * warmup_s) as usize).max(10);
    for i in 0..warmup {
        send_report("warm", i);
        std::thread::sleep(Duration::from_secs_f64(1.0 / rate));
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    eprintln!("  sending {count} reports");
    let start = Instant::now();
    let cpu0 = process_cpu_secs();
    for i in 0..count {
        let due = start + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        send_report("lat", i);
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    let sending = start.elapsed().as_secs_f64();
    eprintln!(
        "  CPU while sending: {:.2} cores busy, {:.1} us per finding (custody, librdkafka, the mock, and this bench's producer and reader)",
        (process_cpu_secs() - cpu0) / sending,
        (process_cpu_secs() - cpu0) * 1e6 / (count * findings) as f64
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while service.health.done_messages.load(Ordering::Relaxed) < count + warmup
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let (done, mut split) = reading.join().expect("reader");
    // The warm-up's start: how long its first reports' tickets took.
    let first_warm: Vec<f64> = (0..warmup.min(10))
        .filter_map(|i| done.get(&format!("repo:github.com/acme/warm-{i}")))
        .map(|(_, read)| *read)
        .collect();
    eprintln!(
        "  warm-up ({warmup_s} s, excluded): its first 10 reports' tickets read after {} ms",
        first_warm
            .iter()
            .map(|l| format!("{l:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let pct = |v: &mut Vec<f64>, f: f64| {
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(((v.len() as f64 * f).ceil() as usize).clamp(1, v.len().max(1)) - 1)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let (mut custody, mut kafka): (Vec<f64>, Vec<f64>) = split.drain(..).unzip();
    eprintln!(
        "  per ticket event: report -> produced by custody p50 {:.0} p99 {:.0} ms; produced -> read p50 {:.0} p99 {:.0} ms",
        pct(&mut custody, 0.5),
        pct(&mut custody, 0.99),
        pct(&mut kafka, 0.5),
        pct(&mut kafka, 0.99)
    );
    if std::env::var("CUSTODY_BENCH_LATENCY_TRACE").is_ok() {
        let mut by_i: Vec<(usize, (f64, f64))> = done
            .iter()
            .filter_map(|(t, l)| Some((t.split("/lat-").nth(1)?.parse().ok()?, *l)))
            .collect();
        by_i.sort_by_key(|x| x.0);
        let line: Vec<String> = by_i
            .iter()
            .map(|(_, (p, r))| format!("{p:.0}/{r:.0}"))
            .collect();
        eprintln!("  by report (produced/read, ms): {}", line.join(" "));
    }
    let mut lat: Vec<f64> = done
        .iter()
        .filter(|(t, _)| t.contains("/lat-"))
        .map(|(_, l)| l.1)
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let q = |f: f64| lat[((lat.len() as f64 * f).ceil() as usize).clamp(1, lat.len()) - 1];
    let slow: Vec<f64> = lat.iter().copied().filter(|l| *l > 250.0).collect();
    eprintln!("  {} reports over 250 ms", slow.len());
    println!(
        "latency publish -> ticket event at {rate:.1} reports/s ({:.0} findings/s): {} reports, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 <= 250 ms)",
        rate * findings as f64,
        lat.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
    service.stop().expect("clean stop");
    drop(cluster);
    q(0.99)
}

/// Restore of a changelog of real records: custody's rate, then a plain
/// consumer's over the same changelog, in records per second.
pub fn restore() -> (f64, f64) {
    eprintln!("== restore: changelog records per second");
    let partitions = 96;
    let (cluster, config) = cluster_and_config(partitions, "restore");
    // Real records: the state of a real bandit scan of tornado, copied to
    // many targets.
    let records = crate::common::tornado_changelog(&config);
    let per_record: usize = records
        .iter()
        .map(|r| r.key.len() + r.value.as_ref().map_or(0, Vec::len))
        .sum::<usize>()
        / records.len();
    // Stay under the mock's 5 MiB per partition.
    let targets_per_partition = (4_500_000 / (per_record * records.len())).max(1);
    let p = producer(&cluster.bootstrap_servers(), "lz4");
    let spec = crate::common::TORNADO;
    let mut total = 0usize;
    for part in 0..partitions {
        for t in 0..targets_per_partition {
            let other = format!("repo:github.com/acme/r-{part}-{t}");
            // As the service writes them: a head before each message's
            // group of records, counting them.
            let head = custody::service::changelog::applied_record(
                "custody.reports",
                part,
                t as i64,
                records.len(),
            );
            let head_key = String::from_utf8_lossy(&head.key).into_owned();
            let mut rec: BaseRecord<'_, str, [u8]> =
                BaseRecord::to(&config.service.changelog_topic)
                    .partition(part)
                    .key(head_key.as_str());
            if let Some(v) = &head.value {
                rec = rec.payload(v.as_slice());
            }
            send_record(&p, rec);
            for r in &records {
                let key = String::from_utf8_lossy(&r.key).replace(spec, &other);
                let mut rec: BaseRecord<'_, str, [u8]> =
                    BaseRecord::to(&config.service.changelog_topic)
                        .partition(part)
                        .key(key.as_str());
                if let Some(v) = &r.value {
                    rec = rec.payload(v.as_slice());
                }
                send_record(&p, rec);
                total += 1;
            }
        }
    }
    p.flush(Duration::from_secs(120)).expect("flush");
    eprintln!("  changelog: {total} records of ~{per_record} bytes over {partitions} partitions");
    // Custody's restore and the plain consumers' read, in turn, three
    // times each: one read's rate ranges over 0.8-4 M records/s on a
    // shared 2-core machine, so each side is the median of three, taken
    // beside the other's as the machine's speed drifts. The first restore
    // also waits for the background decoding.
    let mut restores = Vec::new();
    let mut reads = Vec::new();
    for round in 0..3 {
        let decoding = (round == 0).then_some(partitions as usize * targets_per_partition);
        restores.push(restore_once(&config, partitions, total, decoding));
        // For scale: plain consumers reading the same changelog, as many
        // clients as custody's restore uses for an assignment (4), each
        // reading its share of the partitions.
        reads.push(raw_read_parallel(
            &config,
            &config.service.changelog_topic,
            total,
            4,
        ));
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (custody, raw) = (median(&restores), median(&reads));
    let list = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "restore: custody restored {custody:.0} records/s, the median of {} (in turn with the plain reads; custody stops its clock when every partition is ready; targets are decoded lazily after)",
        list(&restores)
    );
    println!(
        "restore: 4 plain consumers read the same changelog at {raw:.0} records/s, the median of {}",
        list(&reads)
    );
    (custody, raw)
}

/// One instance started on the changelog of [`restore`]: its records per
/// second from the assignment (every partition known, none restored) to
/// ready; with `decoding` (the number of targets), it also says when the
/// restored targets were all decoded in the background.
fn restore_once(config: &Config, partitions: i32, total: usize, decoding: Option<usize>) -> f64 {
    let service = Service::start(config, None).expect("service");
    let mut t0 = None;
    loop {
        let (n, restored) = {
            let parts = service.health.partitions.lock().unwrap();
            (parts.len(), parts.values().filter(|r| **r).count())
        };
        if t0.is_none() && n == partitions as usize {
            t0 = Some(Instant::now());
            eprintln!("  assigned {n} partitions: restoring");
        }
        if n == partitions as usize && restored == n {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = t0.map_or(0.0, |t| t.elapsed().as_secs_f64()).max(1e-9);
    println!(
        "restore: {total} changelog records over {partitions} partitions in {secs:.3} s = {:.0} records/s (target >= 500,000/s)",
        total as f64 / secs
    );
    if let Some(targets) = decoding {
        // Then, with no message to apply, the loop decodes the restored
        // targets in the background: until every one is, the per-team
        // figures leave the others out.
        let ready = Instant::now();
        let undecoded = || {
            service
                .metrics
                .render()
                .lines()
                .find_map(|l| l.strip_prefix("custody_targets_undecoded "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let give_up = ready + Duration::from_secs(120);
        // The gauge is set as the loop goes round: seen above zero first,
        // unless the decoding was done by then.
        while undecoded().is_none_or(|n| n == 0.0) && ready.elapsed() < Duration::from_millis(200) {
            std::thread::sleep(Duration::from_millis(1));
        }
        while undecoded() != Some(0.0) {
            assert!(Instant::now() < give_up, "restored targets never decoded");
            std::thread::sleep(Duration::from_millis(2));
        }
        let decoded = ready.elapsed().as_secs_f64().max(1e-9);
        println!(
            "restore: every restored target decoded {decoded:.3} s after ready, in the background ({targets} targets, {:.0} records/s)",
            total as f64 / decoded
        );
    }
    service.stop().expect("clean stop");
    total as f64 / secs
}

/// Plain consumers, `clients` of them on threads of their own, each
/// assigned every `clients`-th partition of `topic` from its start, read
/// `expect` records in all: records per second from the first record any
/// of them read to the last.
fn raw_read_parallel(config: &Config, topic: &str, expect: usize, clients: usize) -> f64 {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.service.brokers)
        .create()
        .expect("consumer");
    let md = probe
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = md.topics()[0].partitions().len() as i32;
    let read = AtomicUsize::new(0);
    let spans: Vec<(Option<Instant>, Instant)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let read = &read;
                scope.spawn(move || {
                    let c: BaseConsumer = ClientConfig::new()
                        .set("bootstrap.servers", &config.service.brokers)
                        .set("group.id", format!("raw-reader-{i}"))
                        .set("enable.auto.commit", "false")
                        .create()
                        .expect("consumer");
                    let mut tpl = rdkafka::TopicPartitionList::new();
                    for p in (0..partitions).filter(|p| *p as usize % clients == i) {
                        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
                            .expect("partition");
                    }
                    c.assign(&tpl).expect("assign");
                    let (mut first, mut last) = (None, Instant::now());
                    while read.load(Ordering::Relaxed) < expect {
                        if let Some(Ok(_)) = c.poll(Duration::from_millis(50)) {
                            first.get_or_insert_with(Instant::now);
                            last = Instant::now();
                            read.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    (first, last)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("reader"))
            .collect()
    });
    let first = spans.iter().filter_map(|s| s.0).min();
    let last = spans.iter().map(|s| s.1).max();
    match (first, last) {
        (Some(a), Some(b)) => (expect - 1) as f64 / (b - a).as_secs_f64().max(1e-9),
        _ => 0.0,
    }
}

/// The maximum sustained rate of first scans, in reports per second, and
/// the throughput ratio it was measured with.
pub fn first_scans() -> (f64, f64) {
    let (custody, raw) = throughput(Workload::New, false);
    (custody.sustained, custody.sustained / raw.sustained)
}

/// Known targets rescanned with the same report (custody primed, measured
/// from its restart), three runs each on a fresh cluster: the median
/// sustained ratio to a plain consumer.
pub fn primed_rescans() -> f64 {
    // One run's ratio swings by a tenth either way (the plain consumer's
    // rate alone ranges over 9,000-12,500 reports/s here), so three runs
    // and their median.
    let mut runs: Vec<(f64, f64, f64)> = (0..3)
        .map(|_| {
            let (custody, raw) = throughput(Workload::Rescans, true);
            (
                custody.sustained / raw.sustained,
                custody.sustained,
                raw.sustained,
            )
        })
        .collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let said: Vec<String> = runs.iter().map(|r| format!("{:.3}", r.0)).collect();
    println!(
        "throughput (known targets rescanned, median of 3 runs): sustained ratio {:.3} (custody {:.1}, raw {:.1} reports/s); runs {}",
        runs[1].0,
        runs[1].1,
        runs[1].2,
        said.join(", ")
    );
    runs[1].0
}

/// Latency at half the given maximum rate, or at
/// `CUSTODY_BENCH_LATENCY_RATE` reports per second when set: p99 in ms.
pub fn latency_at_half(max_rate: f64) -> f64 {
    match std::env::var("CUSTODY_BENCH_LATENCY_RATE")
        .ok()
        .and_then(|r| r.parse::<f64>().ok())
    {
        Some(rate) => latency(rate * 2.0),
        None => latency(max_rate),
    }
}

/// Every part of the service bench, or the one `only` names:
/// `throughput` (all workloads), `new`, `rescans`, `primed`, `restamped`,
/// `latency`, `restore`.
pub fn run(only: Option<&str>) {
    let want = |name: &str| only.is_none_or(|o| o == name);
    let mut max_rate = 20.0;
    if want("throughput") || want("latency") || want("new") {
        max_rate = first_scans().0;
    }
    if want("throughput") || want("rescans") {
        throughput(Workload::Rescans, false);
    }
    if want("throughput") || want("rescans") || want("primed") {
        // The steady state the target is judged on: known targets rescanned,
        // custody's restore outside the sustained window.
        primed_rescans();
    }
    if want("throughput") || want("restamped") {
        throughput(Workload::RescansRestamped, false);
        throughput(Workload::RescansRestamped, true);
    }
    if want("latency") {
        // CUSTODY_BENCH_LATENCY_RATE=<reports/s> measures at a given rate
        // instead of half the maximum.
        latency_at_half(max_rate);
    }
    if want("restore") {
        restore();
    }
}
