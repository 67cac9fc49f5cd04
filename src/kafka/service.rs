//! A running service: topics checked, the ownership topic followed if
//! ownership comes from one, the consumer loop on its own thread, and the
//! stage that sums tickets across targets on another when a team's
//! tickets are grouped so.

use super::ownership_topic;
use super::topics;
use super::worker::OutputLayout;
use super::{RunError, Worker};
use crate::config::Config;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::ownership::Reloadable;
use crate::service::health::Health;
use std::collections::BTreeMap;
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
    /// The stage that sums tickets across targets, when a team's tickets
    /// are grouped so.
    tickets: Option<std::thread::JoinHandle<()>>,
}

impl Service {
    /// Checks (and creates) topics, then starts the consumer loop on its own
    /// thread. With `[ownership] topic` (and no `ownership` given), the
    /// topic is read to its end first, and followed from then on.
    pub fn start(config: &Config, ownership: Option<Arc<Reloadable>>) -> Result<Service, RunError> {
        let settings = &config.service;
        let team_rule = config.tickets.team_rule_users();
        topics::ensure(config).map_err(RunError::Kafka)?;
        // The parts are sent and summed while a team is grouped so, and
        // after the last one left the grouping too (its parts topic is
        // there): its tickets resolve as regrouped once, not never.
        let parts_topic = settings.ticket_parts_topic();
        let ticket_parts = match (&team_rule, topics::partitions(config, &parts_topic)) {
            (_, Ok(n)) => Some((parts_topic, n)),
            (Some(_), Err(e)) => return Err(RunError::Kafka(e)),
            (None, Err(_)) => None,
        };
        // A report's finding events, and its targets' own ticket events,
        // go to the partition of its own number of their topics; a topic
        // whose count is not read leaves them to the partitioner.
        let mut event_topics = vec![
            settings.findings_topic.clone(),
            config.default_topic.clone(),
        ];
        event_topics.extend(config.routes.iter().map(|r| r.topic.clone()));
        let event_partitions = match topics::partition_counts(config, &event_topics) {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!("events spread by their key: {e}");
                BTreeMap::new()
            }
        };
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
            OutputLayout {
                ticket_parts: ticket_parts.clone(),
                event_partitions,
            },
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
        let tickets = match ticket_parts {
            Some(_) => {
                match super::ticket_stage::spawn(config, Arc::clone(&health), Arc::clone(&metrics))
                {
                    Ok(h) => Some(h),
                    Err(e) => {
                        health.stop.store(true, Ordering::Relaxed);
                        let _ = handle.join();
                        if let Some(f) = follower {
                            let _ = f.join();
                        }
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        Ok(Service {
            health,
            metrics,
            handle: Some(handle),
            follower,
            tickets,
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
        if let Some(t) = self.tickets.take() {
            let _ = t.join();
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
    settings: &crate::config::service::ServiceSettings,
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
