//! The decoded state as a cache: with a budget of decoded findings
//! (`decoded_findings_per_partition`), the targets used least recently are
//! evicted past it, their records kept compact in the partition's
//! [`changelog::ColdStore`] with the first moment the SLA clock needs
//! them, and decoded again, as a restored target is, when a message (or
//! the clock, or a re-attribution) needs them.

use super::{changelog, Env, Failure, PartitionProcessor};
use crate::lifecycle::{self, State};
use crate::metrics::{StatePass, TargetSummary};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The decoded targets in order of use.
#[derive(Debug, Default)]
pub(crate) struct Lru {
    clock: u64,
    /// By target: when it was last used, and its findings when last
    /// counted.
    used: HashMap<String, (u64, usize)>,
    /// Targets by when they were last used.
    order: BTreeMap<u64, String>,
    /// Findings of the decoded targets, as last counted.
    findings: usize,
    /// Targets used since their findings were counted.
    dirty: HashSet<String>,
}

impl Lru {
    /// `target` is used (decoded, or about to be).
    pub(crate) fn touch(&mut self, target: &str) {
        self.clock += 1;
        match self.used.get_mut(target) {
            Some((stamp, _)) => {
                self.order.remove(stamp);
                *stamp = self.clock;
            }
            None => {
                self.used.insert(target.to_string(), (self.clock, 0));
            }
        }
        self.order.insert(self.clock, target.to_string());
        if !self.dirty.contains(target) {
            self.dirty.insert(target.to_string());
        }
    }

    /// Counts again the findings of the targets used since last counted;
    /// one the state does not have (a decision about a target never
    /// scanned) is forgotten.
    fn recount(&mut self, state: &State) {
        for t in std::mem::take(&mut self.dirty) {
            match state.targets.get(&t) {
                Some(ts) => {
                    if let Some(e) = self.used.get_mut(&t) {
                        let n = ts.findings.len();
                        self.findings = self.findings - e.1 + n;
                        e.1 = n;
                    }
                }
                None => self.forget(&t),
            }
        }
    }

    /// `target` is no longer decoded.
    pub(super) fn forget(&mut self, target: &str) {
        if let Some((stamp, n)) = self.used.remove(target) {
            self.order.remove(&stamp);
            self.findings -= n;
        }
        self.dirty.remove(target);
    }

    /// The target used least recently.
    fn oldest(&self) -> Option<String> {
        self.order.values().next().cloned()
    }
}

impl PartitionProcessor {
    /// Evicts the targets used least recently while the decoded findings
    /// are over the budget (the last target used stays, however large).
    pub(super) fn evict_over_budget(&mut self, env: &Env<'_>) {
        let budget = env.cx.settings.decoded_findings_per_partition;
        if budget == 0 {
            return;
        }
        let Some(state) = self.state.as_ref() else {
            return;
        };
        self.hot.recount(state);
        while self.hot.findings > budget && self.hot.used.len() > 1 {
            let Some(t) = self.hot.oldest() else {
                break;
            };
            if self.evict(&t, env.wall) {
                env.cx.metrics.state_evicted();
            }
        }
    }

    /// Moves `target`'s state out of memory into the compact store, and
    /// its dictionary out of the writer; what the gauges count of it is
    /// summed up at `now`. False when it was not decoded.
    pub(crate) fn evict(&mut self, target: &str, now: DateTime<Utc>) -> bool {
        self.hot.forget(target);
        let Some(ts) = self.state.as_mut().and_then(|s| s.targets.remove(target)) else {
            return false;
        };
        let wake = lifecycle::next_tick(&ts);
        tracing::debug!(
            target = %target,
            findings = ts.findings.len(),
            "a target's state evicted from memory past decoded_findings_per_partition"
        );
        let mut summary = TargetSummary::of(target, &ts, now);
        summary.strip_rows();
        self.summaries.insert(target.to_string(), summary);
        let frozen = self.writer.freeze(target, &ts);
        self.cold.put(target, frozen, wake, ts.findings.len());
        true
    }

    /// Decodes `target` again from the compact store, when it is there
    /// (`Ok(false)` when not). A copy that does not decode leaves the
    /// target broken, as a restored one is.
    pub(super) fn thaw(&mut self, target: &str) -> Result<bool, Failure> {
        let Some(thawed) = self.cold.take(target, &self.changelog_topic) else {
            return Ok(false);
        };
        self.summaries.remove(target);
        let mut thawed = match thawed {
            Ok(t) => t,
            Err(e) => {
                self.hot.forget(target);
                self.broken.insert(target.to_string(), e.clone());
                return Err(Failure::Fatal(e));
            }
        };
        self.writer.thaw(
            target,
            &mut thawed.decoded.strings,
            thawed.dict,
            thawed.extra,
        );
        let mut r = changelog::Restorer::new();
        for p in thawed.decoded.parsed {
            r.apply_parsed(p);
        }
        let mut restored = r.finish();
        // A target with no record at all was there too, empty.
        let ts = restored.targets.remove(target).unwrap_or_default();
        if let Some(state) = self.state.as_mut() {
            state.targets.insert(target.to_string(), ts);
        }
        Ok(true)
    }

    /// Adds what the gauges and the scorecard count of every target of the
    /// partition, decoded or evicted, in the order of their specs (evicted
    /// ones by the summary taken when they were evicted, its rows decoded
    /// again, and kept, when the pass may list them).
    pub fn summarize(&mut self, pass: &mut StatePass<'_>, now: DateTime<Utc>) {
        let Some(state) = self.state.as_ref() else {
            return;
        };
        let mut cold: Vec<String> = self.summaries.keys().cloned().collect();
        cold.sort_unstable();
        let mut cold = cold.into_iter().peekable();
        let mut order: Vec<(String, bool)> = Vec::with_capacity(state.targets.len() + cold.len());
        for spec in state.targets.keys() {
            while let Some(c) = cold.next_if(|c| c < spec) {
                order.push((c, true));
            }
            order.push((spec.clone(), false));
        }
        order.extend(cold.map(|c| (c, true)));
        for (spec, is_cold) in order {
            if !is_cold {
                if let Some(ts) = self.state.as_ref().and_then(|s| s.targets.get(&spec)) {
                    pass.add(&TargetSummary::of(&spec, ts, now));
                }
                continue;
            }
            let needs = self
                .summaries
                .get(&spec)
                .is_some_and(|s| pass.needs_rows(s));
            if needs {
                let full = self.cold_summary(&spec, now);
                if let (Some(s), Some(full)) = (self.summaries.get_mut(&spec), full) {
                    s.restore_rows(full);
                }
            }
            if let Some(s) = self.summaries.get(&spec) {
                pass.add(s);
            }
        }
    }

    /// The summary of an evicted target, decoded for it and let go.
    fn cold_summary(&self, target: &str, now: DateTime<Utc>) -> Option<TargetSummary> {
        let decoded = match self.cold.peek(target, &self.changelog_topic)? {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(target = %target, "an evicted target does not decode: {e}");
                return None;
            }
        };
        let mut r = changelog::Restorer::new();
        for p in decoded.parsed {
            r.apply_parsed(p);
        }
        let ts = r.finish().targets.remove(target).unwrap_or_default();
        Some(TargetSummary::of(target, &ts, now))
    }
}
