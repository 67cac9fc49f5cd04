//! The Kafka service (`custody run`), its publisher (`custody publish`)
//! and the self-contained demo (`custody demo`).
//!
//! - [`settings`]: `[kafka]`, `[http]`, `[ownership]` and environment
//!   overrides;
//! - [`meta`]: scan metadata from headers or the JSON envelope;
//! - [`changelog`]: the compacted state changelog and restore;
//! - [`partition`]: one partition's processing as a state machine
//!   (messages in, effects out), which [`crate::kafka`] drives;
//! - [`health`]: liveness, readiness and the stop flags the loop, the
//!   HTTP endpoints and the front ends share;
//! - [`topics`]: checking and creating topics;
//! - [`ownership_topic`]: ownership published on a compacted topic;
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`;
//! - [`publish`] and [`demo`].

pub mod changelog;
pub mod demo;
pub mod health;
pub mod http;
pub mod meta;
pub mod ownership_topic;
pub mod partition;
pub mod publish;
pub mod settings;
pub mod topics;

use crate::config::Config;
use crate::engine::Engine;
use crate::kafka::{RunError, Worker};
use crate::metrics::Metrics;
use crate::ownership::Reloadable;
use health::Health;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A running service: the worker thread and what HTTP reads.
pub struct Service {
    /// Liveness, readiness, stop and reload flags.
    pub health: Arc<Health>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    handle: Option<std::thread::JoinHandle<Result<(), RunError>>>,
    /// The thread following the ownership topic, if ownership comes from
    /// one.
    follower: Option<std::thread::JoinHandle<()>>,
}

impl Service {
    /// Checks (and creates) topics, then starts the consumer loop on its own
    /// thread. With `[ownership] topic` (and no `ownership` given), the
    /// topic is read to its end first, and followed from then on.
    pub fn start(config: &Config, ownership: Option<Arc<Reloadable>>) -> Result<Service, RunError> {
        let settings = &config.service;
        topics::ensure(config).map_err(RunError::Kafka)?;
        let health = Arc::new(Health::default());
        let metrics = Arc::new(Metrics::new());
        let (ownership, follower) = match (ownership, &settings.ownership_topic) {
            (None, Some(topic)) => {
                let (own, follower) = follow_ownership(settings, topic, &health, &metrics)?;
                (Some(own), Some(follower))
            }
            (own, _) => (own, None),
        };
        // The pool that decodes and applies reports, its threads named so
        // `top -H` and profiles tell them from the consumer thread. It is
        // the process's global pool: built once, by the first service
        // (an error here only says it exists already).
        let _ = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("custody-work-{i}"))
            .build_global();
        let mut engine = Engine::new(config);
        if let Some(own) = &ownership {
            engine.set_attribution(Box::new(Arc::clone(own)));
        }
        let started = Worker::new(
            settings,
            engine,
            config.max_report_bytes,
            Arc::clone(&metrics),
            Arc::clone(&health),
            ownership,
        )
        .and_then(|worker| {
            std::thread::Builder::new()
                .name("custody-consumer".into())
                .spawn(move || worker.run())
                .map_err(|e| RunError::Kafka(format!("cannot start the consumer thread: {e}")))
        });
        let handle = match started {
            Ok(h) => h,
            Err(e) => {
                // The ownership follower, if any, stops with the start.
                health.stop.store(true, Ordering::Relaxed);
                if let Some(f) = follower {
                    let _ = f.join();
                }
                return Err(e);
            }
        };
        Ok(Service {
            health,
            metrics,
            handle: Some(handle),
            follower,
        })
    }

    /// Whether the worker thread has ended.
    pub fn finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Asks the worker to stop and waits for it.
    pub fn stop(mut self) -> Result<(), RunError> {
        self.health.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    fn join(&mut self) -> Result<(), RunError> {
        if let Some(f) = self.follower.take() {
            let _ = f.join();
        }
        match self.handle.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(RunError::Kafka("the consumer thread panicked".into()))),
            None => Ok(()),
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.health.stop.store(true, Ordering::Relaxed);
        let _ = self.join();
    }
}

/// Reads the ownership topic to its end (waiting up to
/// `ownership_wait` for a complete version), then follows it on a thread
/// until the stop: each newer version is validated and put in force (the
/// worker then re-attributes), or refused and counted.
fn follow_ownership(
    settings: &settings::ServiceSettings,
    topic: &str,
    health: &Arc<Health>,
    metrics: &Arc<Metrics>,
) -> Result<(Arc<Reloadable>, std::thread::JoinHandle<()>), RunError> {
    let warn = |m: &str| tracing::warn!("{m}");
    let mut feed = ownership_topic::Feed::open(
        &crate::kafka::client_config(settings),
        topic,
        settings.ownership_wait,
    )
    .map_err(|e| RunError::Kafka(e.to_string()))?;
    let own = feed
        .load(settings.ownership_wait, &warn)
        .map_err(RunError::Kafka)?;
    tracing::info!("ownership from topic {topic}: {}", own.origin);
    let own = Arc::new(Reloadable::of(own));
    let (h, m, r) = (Arc::clone(health), Arc::clone(metrics), Arc::clone(&own));
    let follower = std::thread::Builder::new()
        .name("custody-ownership".into())
        .spawn(move || {
            let mut refusals = feed.refusals;
            while !h.stop.load(Ordering::Relaxed) {
                let warn = |m: &str| tracing::warn!("{m}");
                let next = feed.next(std::time::Duration::from_millis(200), &warn);
                // Messages refused on the way (a bad manifest, a file too
                // large) are refusals too.
                for _ in refusals..feed.refusals {
                    m.ownership_reload(false);
                }
                refusals = feed.refusals;
                match next {
                    Some((id, Ok(own))) => {
                        tracing::info!("ownership version {id} in force");
                        r.set(own);
                        h.ownership_changed.store(true, Ordering::Release);
                    }
                    Some((id, Err(e))) => {
                        m.ownership_reload(false);
                        tracing::warn!("ownership version {id} refused: {e}");
                    }
                    None => {}
                }
            }
        })
        .map_err(|e| RunError::Kafka(format!("cannot start the ownership thread: {e}")))?;
    Ok((own, follower))
}

/// `custody run`: loads the configuration, serves HTTP, runs until SIGTERM
/// or Ctrl-C (SIGHUP reloads the ownership configuration). Exit codes: 0
/// after a clean shutdown, 2 on a configuration or runtime error.
pub fn run_command(config_path: Option<&std::path::Path>) -> u8 {
    let mut config = match config_path {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{e}");
                return 2;
            }
        },
        None => Config::default(),
    };
    config.service.apply_env(std::env::vars());
    if config.service.ownership.is_some() && config.service.ownership_topic.is_some() {
        tracing::error!(
            "ownership comes from both a file and a topic (ownership.config or CUSTODY_OWNERSHIP_CONFIG, and ownership.topic or CUSTODY_OWNERSHIP_TOPIC); give one"
        );
        return 2;
    }
    let ownership = match &config.service.ownership {
        Some(p) => match Reloadable::load(p) {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                tracing::error!("ownership: {e}");
                return 2;
            }
        },
        None => None,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return 2;
        }
    };
    let service = match Service::start(&config, ownership) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return 2;
        }
    };
    let listen = config.service.http_listen.clone();
    let state = http::AppState {
        health: Arc::clone(&service.health),
        metrics: Arc::clone(&service.metrics),
    };
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        tracing::info!("serving /metrics, /healthz, /readyz on {listen}");
        tokio::spawn(http::serve(listener, state));
        wait_for_signal(&service).await;
        Ok::<(), String>(())
    });
    if let Err(e) = served {
        tracing::error!("{e}");
        let _ = service.stop();
        return 2;
    }
    tracing::info!("shutting down");
    match service.stop() {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            2
        }
    }
}

/// Waits for SIGTERM, Ctrl-C or the worker's end; SIGHUP sets the reload
/// flag.
async fn wait_for_signal(service: &Service) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            Some(()) = async { match term.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => return,
            Some(()) = async { match hup.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                tracing::info!("SIGHUP: reloading the ownership configuration");
                service.health.reload.store(true, Ordering::Relaxed);
            }
            _ = tick.tick() => {
                if service.finished() {
                    return;
                }
            }
        }
    }
}
