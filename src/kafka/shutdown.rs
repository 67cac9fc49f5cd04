//! The stop: fetching stops, what is consumed and not applied is left to
//! be redelivered, what is applied is settled, the producer flushed and
//! what is done committed, each step within the shutdown timeout.

use super::worker::{RunError, Worker};
use crate::service::health::lock;
use crate::service::partition::PartitionProcessor;
use rdkafka::consumer::Consumer;
use rdkafka::producer::Producer;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Worker {
    /// Stops: fetching stops, what is consumed and not applied is dropped
    /// (redelivered after the restart), what is applied is settled (its
    /// events, then its changelog records acknowledged), the producer
    /// flushed and the offsets of what is done committed, each step within
    /// the shutdown timeout. Records of applied messages left
    /// unacknowledged, or a commit that fails, make the stop an error, so
    /// the exit code says it was not clean.
    pub(super) fn shutdown(&self) -> Result<(), RunError> {
        let mut undone = None;
        let deadline = *lock(&self.core).out.stop_seen.get_or_init(Instant::now)
            + self.settings.shutdown_timeout;
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
            .map(PartitionProcessor::drop_unapplied)
            .sum();
        if left > 0 {
            tracing::info!(
                messages = left,
                "stopping: {left} consumed messages not yet applied are left to be redelivered"
            );
        }
        if !self.health.has_failed() {
            loop {
                let mut core = lock(&self.core);
                let keys: Vec<(String, i32)> = core.parts.keys().cloned().collect();
                for tp in &keys {
                    core.step_partition(&self.consumer, tp, &|| false);
                }
                let busy = core.parts.values().any(PartitionProcessor::busy);
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
            .out
            .producer
            .flush(deadline.saturating_duration_since(Instant::now()));
        core.for_each_part(&self.consumer, PartitionProcessor::settle);
        if flushed.is_ok() && core.out.producer.in_flight_count() > 0 {
            flushed = core
                .out
                .producer
                .flush(deadline.saturating_duration_since(Instant::now()));
            core.for_each_part(&self.consumer, PartitionProcessor::settle);
        }
        if let Err(e) = flushed {
            undone.get_or_insert(format!(
                "flushing the producer: {e}; {} records unacknowledged, their messages are redelivered after the restart",
                core.out.producer.in_flight_count()
            ));
        }
        if core.out.eos {
            if self.health.has_failed() {
                let _ = core
                    .out
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
        if let Some(e) = self.health.failure() {
            return Err(RunError::Delivery(e));
        }
        match undone {
            Some(e) => Err(RunError::Delivery(e)),
            None => Ok(()),
        }
    }
}
