//! The consumer loop: one thread owns the consumer; reports decode on the
//! rayon pool and are applied by their partition's processor in offset
//! order (see [`super::partitions`]).

use super::config::client_config;
use super::context::{Cons, Delivery, Prod, Rebalancer};
use super::edge::Output;
use super::message::incoming;
use super::partitions::{Core, Decodes};
use super::restore::Restored;
use crate::config::service::ServiceSettings;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::service::health::{lock, Health};
use crate::service::partition::Shared;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Worker {
    /// Shared with every message read in place (see [`message`](super::message)).
    pub(super) consumer: Arc<Cons>,
    pub(super) core: Arc<Mutex<Core>>,
    pub(super) restored_rx: Receiver<Restored>,
    pub(super) health: Arc<Health>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) settings: ServiceSettings,
    pub(super) ownership: Option<Arc<crate::ownership::Reloadable>>,
}

/// The output topics' partitions the processors send to themselves, read
/// from the brokers at start.
#[derive(Debug, Clone, Default)]
pub struct OutputLayout {
    /// The topic of the targets' parts of tickets across targets and its
    /// partition count, when it is there.
    pub ticket_parts: Option<(String, i32)>,
    /// The partition counts of the topics events go to (see
    /// [`Shared::event_partitions`]).
    pub event_partitions: BTreeMap<String, i32>,
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
    /// The configuration asks for something the service does not do.
    #[error("{0}")]
    Unsupported(String),
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
        layout: OutputLayout,
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
            ("message.max.bytes", crate::kafka::topics::LARGEST_MESSAGE),
        ] {
            if !settings.properties.contains_key(k) {
                pcfg.set(k, v);
            }
        }
        let eos = settings.delivery == crate::config::service::Delivery::ExactlyOnce;
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
                ticket_parts: layout.ticket_parts,
                event_partitions: layout.event_partitions,
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
            decodes: Decodes::new(),
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
            let (busy, undecoded) = {
                let core = lock(&self.core);
                (
                    core.parts.values().any(|p| p.in_flight() > 0),
                    core.undecoded(),
                )
            };
            // Idle with restored targets still to decode: a short wait, so
            // the loop comes back to decoding them (below) at once.
            let wait = if busy || undecoded { 2 } else { 50 };
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
                let idle = !busy && !polled;
                let background = if idle {
                    Duration::from_millis(20)
                } else if last_background.elapsed() >= Duration::from_millis(100) {
                    Duration::from_millis(5)
                } else {
                    Duration::ZERO
                };
                if !background.is_zero() {
                    last_background = Instant::now();
                    core.decode_some(&self.consumer, background, idle);
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
