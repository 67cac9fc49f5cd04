//! What is applied, settled: changelog records produced behind
//! acknowledged events, offsets stored behind changelog records, refused
//! events dead-lettered; backpressure by the work in flight; chunked scans
//! that did not complete in time dead-lettered.

use super::{Ack, Effect, Env, Failure, PartitionProcessor, Pending};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Messages done but for their offset, which waits behind a held chunk,
/// that a partition keeps per message of `max_in_flight_messages` before it
/// pauses: each holds a few hundred bytes, its payload gone.
const WAITING_PER_MESSAGE: usize = 256;

impl PartitionProcessor {
    /// Produces changelog records behind acknowledged events, stores the
    /// offsets of what is done, in order.
    pub fn settle(&mut self, env: &Env<'_>) {
        // Changelog records of a message go out only when its events and
        // those of every earlier message are acknowledged.
        let mut idx = 0;
        while idx < self.pending.len() {
            let p = &self.pending[idx];
            if !env.cx.eos && !p.hold && !p.events.done() {
                break;
            }
            if p.events.has_failed() {
                // Not stored: redelivered after the restart.
                return;
            }
            if p.events.done() && p.dead_letter.is_none() {
                match p.events.refusal() {
                    Some(why) => self.dead_letter_refused(env, idx, &why),
                    // Delivered: the report is not needed any more.
                    None => self.pending[idx].source = None,
                }
            }
            if let Some(records) = self.pending[idx].changelog.take() {
                let ack = Arc::clone(&self.pending[idx].changelog_ack);
                ack.add(1);
                for r in &records {
                    env.produce(
                        &self.changelog_topic,
                        Some(self.partition),
                        &r.key,
                        r.value.as_deref(),
                        Vec::new(),
                        &ack,
                    );
                }
                ack.add(-1);
            }
            idx += 1;
        }
        // A finished scan releases its earlier chunks, which sit before it
        // in the queue.
        for p in self.pending.iter_mut() {
            if !p.held.is_empty() && p.complete() {
                for h in p.held.drain(..) {
                    h.add(-1);
                }
            }
        }
        let mut stored = None;
        while let Some(p) = self.pending.front() {
            if let Some(why) = p.changelog_ack.refusal() {
                // The state cannot be kept: running on would lose it at the
                // next restart.
                env.fail(Failure::Fatal(format!(
                    "changelog record refused for good: {why}"
                )));
                return;
            }
            if !p.complete() {
                break;
            }
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            if let Some(why) = p.dead_letter.as_ref().and_then(|a| a.refusal()) {
                env.cx.metrics.dead_letter("refused_unsaved");
                tracing::error!(
                    topic = %self.topic,
                    partition = self.partition,
                    offset = p.offset.unwrap_or(-1),
                    "the dead letter was refused too ({why}): the dead-letter topic must take messages as large as the reports topic"
                );
            }
            self.bytes = self.bytes.saturating_sub(p.bytes);
            if let Some(off) = p.offset {
                stored = Some(off);
                env.cx.health.done_messages.fetch_add(1, Ordering::Relaxed);
                if let Some(ts) = p.timestamp {
                    let now = env.wall.timestamp_millis();
                    env.cx.metrics.latency((now - ts) as f64 / 1000.0);
                }
            }
        }
        if let Some(off) = stored {
            if !env.cx.eos {
                env.edge.effect(Effect::StoreOffset {
                    topic: &self.topic,
                    partition: self.partition,
                    done: off,
                });
            }
            self.next_offset = Some(off + 1);
        }
    }

    /// An event (or a dead letter) of the work at `idx` that the broker
    /// refused for good (see [`refused_for_good`]): the report that caused
    /// it goes to the dead-letter topic with the reason, and the service
    /// goes on. Its state and changelog records stay as applied: the
    /// events that were taken are true, and only the refused one is
    /// missing downstream, which the dead letter says. A clock tick or a
    /// re-attribution has no report: the refusal is logged and counted.
    fn dead_letter_refused(&mut self, env: &Env<'_>, idx: usize, why: &str) {
        let ack = Arc::new(Ack::default());
        let offset = self.pending[idx].offset;
        match self.pending[idx].source.take() {
            Some(msg) => {
                env.cx.metrics.dead_letter("event_refused");
                tracing::warn!(
                    topic = %self.topic,
                    partition = self.partition,
                    offset = msg.offset,
                    "{why}; the report is dead-lettered"
                );
                ack.add(1);
                self.send_dead_letter(env, &msg, "event_refused", why, &ack);
                ack.add(-1);
            }
            None => {
                env.cx.metrics.dead_letter("refused_unsaved");
                tracing::error!(
                    topic = %self.topic,
                    partition = self.partition,
                    offset = offset.unwrap_or(-1),
                    "{why}; nothing is left to dead-letter (a dead letter itself, a clock tick or a re-attribution)"
                );
            }
        }
        self.pending[idx].dead_letter = Some(ack);
    }

    /// Pauses a partition whose work in flight reaches the limits, resumes
    /// it at half of them. Work in flight is what is consumed and not yet
    /// applied, and what is applied with events or changelog records still
    /// unacknowledged. Two kinds of message are not work, since pausing for
    /// them would keep out the chunks they wait for:
    /// - chunks held for a scan still missing chunks; they have their own
    ///   bound, the larger of `max_in_flight_bytes` and the largest report
    ///   accepted;
    /// - messages done but for their offset, which waits for a held chunk
    ///   before them; their payloads are gone, and they have their own
    ///   bound, [`WAITING_PER_MESSAGE`] times `max_in_flight_messages`.
    ///
    /// Beyond either bound the partition pauses until the chunk timeout
    /// dead-letters the oldest incomplete scan.
    pub(super) fn backpressure(&mut self, env: &Env<'_>) {
        let max_msgs = env.cx.settings.max_in_flight_messages;
        let max_bytes = env.cx.settings.max_in_flight_bytes;
        // Held messages, duplicates and keys included, leave the in-flight
        // count; the distinct chunks' bytes (a scan's size, which stays
        // under the report limit) count against the held bound.
        let (held_msgs, held_len) = self
            .chunks
            .values()
            .flat_map(|c| &c.held)
            .fold((0, 0), |(m, b), h| (m + 1, b + h.msg.len()));
        let held_bytes: usize = self.chunks.values().map(|c| c.bytes).sum();
        let (waiting_msgs, waiting_bytes) = if self.chunks.is_empty() {
            (0, 0)
        } else {
            self.pending
                .iter()
                .filter(|p| p.complete())
                .fold((0, 0), |(m, b), p| (m + 1, b + p.bytes))
        };
        let msgs = self.in_flight().saturating_sub(held_msgs + waiting_msgs);
        let bytes = self.bytes.saturating_sub(held_len + waiting_bytes);
        let held_limit =
            max_bytes.max(usize::try_from(env.cx.max_report_bytes).unwrap_or(usize::MAX));
        let waiting_limit = max_msgs.saturating_mul(WAITING_PER_MESSAGE);
        let over = msgs >= max_msgs
            || bytes >= max_bytes
            || held_bytes > held_limit
            || waiting_msgs >= waiting_limit;
        let under = msgs <= max_msgs / 2
            && bytes <= max_bytes / 2
            && held_bytes <= held_limit
            && waiting_msgs < waiting_limit;
        let (topic, partition) = (self.topic.as_str(), self.partition);
        if over && !self.paused {
            if env.edge.effect(Effect::Pause { topic, partition }) {
                self.paused = true;
            }
        } else if under
            && self.paused
            && self.state.is_some()
            && env.edge.effect(Effect::Resume { topic, partition })
        {
            self.paused = false;
        }
    }

    /// Chunked scans whose missing chunks did not arrive in time: every
    /// chunk message that came, duplicates too, is dead-lettered as it
    /// came (headers and payload, so the scan can be replayed), and the
    /// scan is dropped.
    pub(super) fn expire_chunks(&mut self, env: &Env<'_>) {
        let timeout = env.cx.settings.chunk_timeout;
        let expired: Vec<(String, String)> = self
            .chunks
            .iter()
            .filter(|(_, c)| env.now.saturating_duration_since(c.first) > timeout)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            let Some(buf) = self.chunks.remove(&k) else {
                continue;
            };
            let n = buf.parts.len();
            let have = buf.parts.iter().filter(|p| p.is_some()).count();
            let error = format!(
                "scan {} of {}: {have} of {n} chunks arrived within {}s",
                k.1,
                k.0,
                timeout.as_secs()
            );
            // The dead letters are a step of their own, in the queue's
            // order: no later message's changelog is written before they
            // are acknowledged, and the chunks' offsets are done together.
            let ack = Arc::new(Ack::default());
            ack.add(1);
            let guards =
                self.send_held_dead_letters(env, buf.held, "incomplete_scan", &error, &ack);
            ack.add(-1);
            self.pending.push_back(Pending {
                offset: None,
                timestamp: None,
                events: ack,
                changelog: Some(Vec::new()),
                changelog_ack: Arc::new(Ack::default()),
                held: guards,
                hold: false,
                bytes: 0,
                source: None,
                dead_letter: None,
            });
        }
    }
}
