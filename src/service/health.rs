//! What the HTTP endpoints, the front ends and the consumer loop share:
//! liveness, readiness, the stop and reload flags, the first failure.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

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
    /// The run's failure, if a record could not be delivered or the
    /// state could not be kept.
    pub fn failure(&self) -> Option<String> {
        self.failed
            .load(Ordering::Acquire)
            .then(|| lock(&self.last_error).clone().unwrap_or_default())
    }

    /// Whether the run has failed (see [`Health::failure`]), without
    /// copying its error.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Records a failure: the service stops without storing further
    /// offsets.
    pub fn fail(&self, e: String) {
        *lock(&self.last_error) = Some(e);
        self.failed.store(true, Ordering::Release);
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

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
