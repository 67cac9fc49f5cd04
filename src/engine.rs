//! The engine: one pure step per scan, decision or clock tick, from
//! findings to finding and ticket events. The batch front end
//! (`custody process`) and the Kafka service drive the same engine.

use crate::config::{Config, SlaPolicy, TicketSettings};
use crate::fingerprint;
use crate::lifecycle::{
    self, DecisionError, DecisionRecord, FindingRecord, Observation, State, Transition,
};
use crate::model::{Attribution, EventClass, Finding, FindingEvent, ScanMeta, Target, TicketEvent};
use crate::normalize::DecodeContext;
use crate::ticket::{self, render, RefreshContext, Router, TicketRecord, TicketTransition};
use chrono::{DateTime, Utc};
use std::collections::{btree_map, BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Decides which team owns a finding. The ownership module implements it;
/// [`Unattributed`] is the answer when no ownership is configured.
pub trait Attribute: Send + Sync {
    /// The owner of `finding` on `target`, with the evidence. Answers are
    /// shared: every finding one rule decides can hold the same `Arc`.
    fn attribute(&self, target: &Target, finding: &Finding) -> Arc<Attribution>;
}

impl<T: Attribute + ?Sized> Attribute for Arc<T> {
    fn attribute(&self, target: &Target, finding: &Finding) -> Arc<Attribution> {
        (**self).attribute(target, finding)
    }
}

/// Attributes nothing: every finding is unattributed.
pub struct Unattributed(Arc<Attribution>);

impl Default for Unattributed {
    fn default() -> Unattributed {
        Unattributed(Arc::new(Attribution::unattributed()))
    }
}

impl Attribute for Unattributed {
    fn attribute(&self, _: &Target, _: &Finding) -> Arc<Attribution> {
        Arc::clone(&self.0)
    }
}

/// The events one step produced, finding events first in the order of
/// their transitions.
#[derive(Debug, Default, Clone)]
pub struct Output {
    /// Finding events.
    pub findings: Vec<FindingEvent>,
    /// Ticket events.
    pub tickets: Vec<TicketEvent>,
    /// The changes of targets' parts of tickets across targets (grouping
    /// `team_rule`), which publish no event of their own: what the service
    /// sends to the stage that sums them.
    pub parts: Vec<ticket::aggregate::PartChange>,
}

impl Output {
    /// Appends another step's events.
    pub fn extend(&mut self, other: Output) {
        self.findings.extend(other.findings);
        self.tickets.extend(other.tickets);
        self.parts.extend(other.parts);
    }
}

/// Receives events one at a time, so a step over 100,000 findings never
/// holds 100,000 events (the batch front end writes each as it comes).
pub trait Sink {
    /// A finding event.
    fn finding(&mut self, event: FindingEvent);
    /// A ticket event.
    fn ticket(&mut self, event: TicketEvent);
    /// Finding events in order, many at once, borrowed from the records
    /// (a large step hands them over in runs, built on all cores); by
    /// default each is made an owned event and taken one at a time.
    fn finding_refs(&mut self, events: Vec<FindingEventRef<'_>>) {
        for e in events {
            self.finding(e.to_event());
        }
    }
    /// Whether it takes the changes of parts of tickets across targets
    /// ([`Sink::part`]); they cost a walk of each changed part's members.
    fn wants_parts(&self) -> bool {
        false
    }
    /// A change of a target's part of a ticket across targets.
    fn part(&mut self, _change: ticket::aggregate::PartChange) {}
}

/// A step with at least this many transitions builds its finding events
/// on all cores, in runs of [`EVENT_RUN`]; a smaller one (every step of
/// the service's usual reports) stays on its thread.
const PARALLEL_EVENTS: usize = 4096;

/// How many finding events a large step builds and hands over at once:
/// enough to keep both halves of a split busy, few enough that a step
/// over 100,000 findings never holds all of its events.
const EVENT_RUN: usize = 8192;

impl Sink for Output {
    fn finding(&mut self, event: FindingEvent) {
        self.findings.push(event);
    }

    fn ticket(&mut self, event: TicketEvent) {
        self.tickets.push(event);
    }

    fn wants_parts(&self) -> bool {
        true
    }

    fn part(&mut self, change: ticket::aggregate::PartChange) {
        self.parts.push(change);
    }
}

/// The configured pipeline from findings to events.
pub struct Engine {
    sla: SlaPolicy,
    router: Router,
    tickets: TicketSettings,
    decode: DecodeContext,
    attribute: Box<dyn Attribute>,
    /// Steps with at least this many transitions build their finding
    /// events on all cores ([`PARALLEL_EVENTS`]; tests set it out of
    /// reach to compare with the events built one at a time).
    parallel_events: usize,
}

impl Engine {
    /// An engine for `config`, attributing nothing.
    pub fn new(config: &Config) -> Engine {
        Engine {
            sla: config.sla.clone(),
            router: Router {
                routes: config.routes.clone(),
                default_topic: config.default_topic.clone(),
            },
            tickets: config.tickets.clone(),
            decode: DecodeContext {
                secret_salt: config.secret_salt.clone(),
            },
            attribute: Box::new(Unattributed::default()),
            parallel_events: PARALLEL_EVENTS,
        }
    }

    /// A digest of the settings that shape how a report is applied (the
    /// SLA policy, the routes) and of custody's version: a record of how a
    /// scan was applied holds only under the same. The secret salt is left
    /// out: with the rest known, a digest of it would let a weak salt be
    /// found offline. (A new salt changes the fingerprints of secrets; a
    /// report recognized as its target's last scan keeps the old ones until
    /// the report changes.)
    pub fn settings_digest(&self) -> String {
        // `targets:split`: reports whose records name their own targets are
        // split into one scan per target; a report remembered before that
        // was applied whole to its key, and must be decoded again.
        // The groupings decide every finding's ticket; the rest of the
        // ticket settings shape only what events say.
        let said = format!(
            "{}\0targets:split\0{:?}\0{:?}\0{:?}\0{:?}\0{:?}",
            env!("CARGO_PKG_VERSION"),
            self.sla,
            self.router.routes,
            self.router.default_topic,
            self.tickets.grouping,
            self.tickets.team_grouping,
        );
        crate::fingerprint::hex(blake3::hash(said.as_bytes()).as_bytes())
    }

    /// Whether each finding of `observed` (fingerprints of `target`) is
    /// attributed, and ticketed, as the ownership in force would: what a
    /// full apply of a scan observing them would leave as it is. Any
    /// status counts (re-attribution passes over resolved and false
    /// positive findings; an observation does not).
    pub fn attribution_holds(
        &self,
        state: &State,
        target: &Target,
        observed: &(impl lifecycle::Fingerprints + ?Sized),
    ) -> bool {
        let spec = target.to_string();
        let Some(ts) = state.targets.get(&spec) else {
            return false;
        };
        let mut keys = ScanTicketKeys::new();
        observed.each(&mut |fp| {
            ts.findings.get(fp).is_some_and(|rec| {
                let attribution = self.attribute.attribute(target, &rec.finding);
                let key =
                    self.kept_ticket_key(&spec, &attribution.team, fp, &rec.finding, &mut keys);
                *key == *rec.ticket_key
                    && (Arc::ptr_eq(&attribution, &rec.attribution)
                        || attribution == rec.attribution)
            })
        })
    }

    /// Replaces the attribution.
    pub fn with_attribution(mut self, attribute: Box<dyn Attribute>) -> Engine {
        self.attribute = attribute;
        self
    }

    /// Replaces the attribution of a running engine (a reloaded ownership
    /// configuration); follow with [`Engine::reattribute`].
    pub fn set_attribution(&mut self, attribute: Box<dyn Attribute>) {
        self.attribute = attribute;
    }

    /// Re-attributes every open and accepted finding: `reassigned` events
    /// for those whose team changed, and the ticket events that follow.
    pub fn reattribute(&self, state: &mut State, now: DateTime<Utc>) -> Output {
        let mut out = Output::default();
        let targets: Vec<Target> = state
            .targets
            .keys()
            .filter_map(|s| s.parse().ok())
            .collect();
        for target in &targets {
            self.reattribute_target(state, target, now, &mut out);
        }
        out
    }

    /// Re-attributes the open and accepted findings of one target, handing
    /// events to `sink`, and returns the records changed: reassigned
    /// findings, findings whose explanation changed, and the tickets
    /// touched. A service runs this on every target it restores, so an
    /// ownership change made while it was down (or while another instance
    /// held the partition) takes effect without waiting for a rescan.
    pub fn reattribute_target(
        &self,
        state: &mut State,
        target: &Target,
        now: DateTime<Utc>,
        sink: &mut dyn Sink,
    ) -> Touched {
        let spec = target.to_string();
        let Some(ts) = state.targets.get_mut(&spec) else {
            return Touched::default();
        };
        let mut findings = Vec::new();
        let transitions = lifecycle::reattribute(
            ts,
            |f| self.attribute.attribute(target, f),
            |fp, f, team| self.ticket_key(&spec, team, fp, f),
            Some(&mut findings),
        );
        let regroup = self.regroup(ts, &spec, &mut findings);
        findings.extend(transitions.iter().map(|t| t.fingerprint.clone()));
        findings.sort_unstable();
        findings.dedup();
        let tickets = if transitions.is_empty() && regroup.keys.is_empty() {
            BTreeSet::new()
        } else {
            self.finish(state, target, transitions, now, None, sink, &regroup)
        };
        Touched {
            findings,
            tickets: tickets.into_iter().collect(),
            observed: Vec::new(),
            baseline: false,
        }
    }

    /// A scan's finding as the observation the lifecycle applies: its
    /// attribution under the current ownership, and the key of its ticket
    /// under the grouping in force, kept in `keys` (see
    /// [`Engine::kept_ticket_key`]: a report of 100,000 results has a few
    /// hundred keys).
    fn observe_in_scan(
        &self,
        target: &Target,
        spec: &str,
        fingerprint: String,
        finding: Finding,
        keys: &mut ScanTicketKeys,
    ) -> Observation {
        let attribution = self.attribute.attribute(target, &finding);
        let ticket_key =
            self.kept_ticket_key(spec, &attribution.team, &fingerprint, &finding, keys);
        Observation {
            fingerprint,
            finding,
            attribution,
            ticket_key,
        }
    }

    /// [`Engine::ticket_key`], kept in `keys` for the next finding of the
    /// same team and rule or vulnerability (the key of any grouping but
    /// `finding` is a hash of those and the target alone).
    fn kept_ticket_key(
        &self,
        spec: &str,
        team: &Option<String>,
        fp: &str,
        f: &Finding,
        keys: &mut ScanTicketKeys,
    ) -> Arc<str> {
        let t = team.as_deref();
        if self.tickets.grouping_for(t) == ticket::Grouping::Finding {
            return self.ticket_key(spec, t, fp, f).into();
        }
        if let Some(key) = keys.get(team).and_then(|g| g.get(f.group_id())) {
            return Arc::clone(key);
        }
        let key: Arc<str> = self.ticket_key(spec, t, fp, f).into();
        keys.entry(team.clone())
            .or_default()
            .insert(f.group_id().to_string(), key.clone());
        key
    }

    fn ticket_key(&self, spec: &str, team: Option<&str>, fp: &str, f: &Finding) -> String {
        let grouping = self.tickets.grouping_for(team);
        ticket::group_key(grouping, team, spec, f.group_id(), fp)
    }

    /// Moves the findings of open tickets made under a grouping no longer
    /// in force (the configuration changed) to the tickets of the grouping
    /// in force, listing in `changed` the finding records it changed.
    /// Returns those stale tickets and every ticket to refresh; nothing
    /// when every open ticket is of the grouping in force, which costs one
    /// pass over the target's tickets.
    fn regroup(
        &self,
        ts: &mut lifecycle::TargetState,
        spec: &str,
        changed: &mut Vec<String>,
    ) -> Regroup {
        let stale: BTreeSet<String> = ts
            .tickets
            .iter()
            .filter(|(_, r)| {
                r.status == ticket::TicketStatus::Open
                    && r.grouping != self.tickets.grouping_for(r.team.as_deref())
            })
            .map(|(k, _)| k.clone())
            .collect();
        if stale.is_empty() {
            return Regroup::default();
        }
        let mut keys = stale.clone();
        // Findings a scan moved already point to their new ticket; the
        // others still point to a stale one.
        for k in &stale {
            if let Some(r) = ts.tickets.get(k) {
                for fp in &r.open_members {
                    if let Some(f) = ts.findings.get(fp) {
                        keys.insert(f.ticket_key.to_string());
                    }
                }
            }
        }
        for (fp, rec) in ts.findings.iter_mut() {
            if !stale.contains(&*rec.ticket_key) {
                continue;
            }
            let key = self.ticket_key(spec, rec.attribution.team.as_deref(), fp, &rec.finding);
            if *key != *rec.ticket_key {
                rec.ticket_key = key.as_str().into();
                keys.insert(key);
                changed.push(fp.clone());
            }
        }
        Regroup { stale, keys }
    }

    /// Regroups every target's findings when a grouping changed (see
    /// [`Engine::reattribute_target`], which does this too): the stale
    /// tickets resolve as `regrouped`, the new ones open.
    pub fn regroup_all(&self, state: &mut State, now: DateTime<Utc>) -> Output {
        self.each_target_regrouped(state, now, |ts, _, spec| {
            (Vec::new(), self.regroup(ts, spec, &mut Vec::new()))
        })
    }

    /// Runs `step` over every target's state and finishes its transitions
    /// into events.
    fn each_target(
        &self,
        state: &mut State,
        now: DateTime<Utc>,
        mut step: impl FnMut(&mut lifecycle::TargetState, &Target) -> Vec<Transition>,
    ) -> Output {
        self.each_target_regrouped(state, now, |ts, target, _| {
            (step(ts, target), Regroup::default())
        })
    }

    /// Runs `step` over every target's state (given its spec) and finishes
    /// the transitions and the tickets to regroup it gives into events.
    fn each_target_regrouped(
        &self,
        state: &mut State,
        now: DateTime<Utc>,
        mut step: impl FnMut(&mut lifecycle::TargetState, &Target, &str) -> (Vec<Transition>, Regroup),
    ) -> Output {
        let mut out = Output::default();
        let targets: Vec<String> = state.targets.keys().cloned().collect();
        for spec in targets {
            let Ok(target) = spec.parse::<Target>() else {
                continue;
            };
            let Some(ts) = state.targets.get_mut(&spec) else {
                continue;
            };
            let (transitions, regroup) = step(ts, &target, &spec);
            if !transitions.is_empty() || !regroup.keys.is_empty() {
                let _ = self.finish(state, &target, transitions, now, None, &mut out, &regroup);
            }
        }
        out
    }

    /// Publishes the tickets across targets ([`ticket::Grouping::TeamRule`])
    /// that the targets' parts in `state` make, as they differ from their
    /// records in `state.aggregates` (the tickets as last published),
    /// which it updates: run after each run's steps, it says once what
    /// the run changed, and nothing when it changed nothing.
    pub fn aggregate(&self, state: &mut State, now: DateTime<Utc>) -> Output {
        // The parts without their members: most runs change few tickets,
        // and only those need members, for their events' bodies.
        let parts = ticket::aggregate::parts_of(&state.targets, 0);
        let keys: BTreeSet<String> = parts
            .keys()
            .chain(
                state
                    .aggregates
                    .iter()
                    .filter(|(_, r)| r.status == ticket::TicketStatus::Open)
                    .map(|(k, _)| k),
            )
            .cloned()
            .collect();
        let mut out = Output::default();
        for key in &keys {
            let p = parts.get(key);
            let transitions = ticket::aggregate::derive(
                key,
                p,
                &mut state.aggregates,
                &self.router,
                &self.tickets,
            );
            let Some(rec) = state
                .aggregates
                .get(key)
                .filter(|_| !transitions.is_empty())
            else {
                continue;
            };
            let full: Option<BTreeMap<String, ticket::aggregate::Contribution>> = p.map(|p| {
                p.iter()
                    .filter_map(|(spec, c)| {
                        let ts = state.targets.get(spec)?;
                        let part = ticket::group_key(
                            ticket::Grouping::TeamRule,
                            c.part.team.as_deref(),
                            spec,
                            &c.part.group,
                            "",
                        );
                        let (_, c) =
                            ticket::aggregate::contribution(ts, &part, self.tickets.max_locations)?;
                        Some((spec.clone(), c))
                    })
                    .collect()
            });
            for t in &transitions {
                out.ticket(across_event(rec, t, now, full.as_ref(), &self.tickets));
            }
        }
        out
    }

    /// Derives the ticket across targets `key` from its targets' parts
    /// (`parts`, by target spec; None when no target has one) and its
    /// record as last published in `published`, which it updates, and
    /// hands its events to `sink` (see [`ticket::aggregate::derive`]).
    pub fn publish_across(
        &self,
        key: &str,
        parts: Option<&BTreeMap<String, ticket::aggregate::Contribution>>,
        published: &mut BTreeMap<String, TicketRecord>,
        now: DateTime<Utc>,
        sink: &mut dyn Sink,
    ) {
        let transitions =
            ticket::aggregate::derive(key, parts, published, &self.router, &self.tickets);
        let Some(rec) = published.get(key) else {
            return;
        };
        for t in &transitions {
            sink.ticket(across_event(rec, t, now, parts, &self.tickets));
        }
    }

    /// The ticket settings (groupings, locations a body lists).
    pub fn ticket_settings(&self) -> &TicketSettings {
        &self.tickets
    }

    /// What decoders need (the secret salt).
    pub fn decode_context(&self) -> &DecodeContext {
        &self.decode
    }

    /// Processes one scan of `scan.target`, collecting the events.
    pub fn scan(
        &self,
        state: &mut State,
        scan: &ScanMeta,
        findings: Vec<Finding>,
        now: DateTime<Utc>,
    ) -> Output {
        let mut out = Output::default();
        self.scan_into(state, scan, findings, now, &mut out);
        out
    }

    /// Processes one scan of `scan.target`, handing each event to `sink`.
    pub fn scan_into(
        &self,
        state: &mut State,
        scan: &ScanMeta,
        findings: Vec<Finding>,
        now: DateTime<Utc>,
        sink: &mut dyn Sink,
    ) {
        self.scan_step(state, scan, findings, now, sink, None);
    }

    /// Like [`Engine::scan_into`], and returns the records the scan
    /// changed: what a state changelog must write. A known finding whose
    /// record changed only in `last_seen` is left out unless `last_seen`
    /// entered a new period of `seen_resolution` (zero: every scan).
    pub fn scan_touched(
        &self,
        state: &mut State,
        scan: &ScanMeta,
        findings: Vec<Finding>,
        now: DateTime<Utc>,
        sink: &mut dyn Sink,
        seen_resolution: std::time::Duration,
    ) -> Touched {
        let mut changes = lifecycle::Changes::new(seen_resolution);
        let mut observed = Vec::new();
        let tickets = self.scan_step(
            state,
            scan,
            findings,
            now,
            sink,
            Some((&mut changes, &mut observed)),
        );
        let baseline = changes.baseline;
        let findings = changes.into_sorted();
        Touched {
            findings,
            tickets: tickets.into_iter().collect(),
            observed,
            baseline,
        }
    }

    /// A rescan of `target` that reports exactly what its last scan did,
    /// nothing else having changed the target since (see
    /// [`lifecycle::observe_unchanged`]): it changes only `last_seen` of the
    /// findings that scan `observed`, so it is applied without decoding
    /// the report again. Returns what [`Engine::scan_touched`] would (no
    /// events, only the records whose `last_seen` entered a new period),
    /// or `None`, changing nothing, when the state is not as that scan
    /// left it; the report must then be applied in full.
    pub fn rescan_unchanged(
        &self,
        state: &mut State,
        target: &Target,
        observed: &(impl lifecycle::Fingerprints + ?Sized),
        now: DateTime<Utc>,
        seen_resolution: std::time::Duration,
    ) -> Option<Touched> {
        let ts = state.targets.get_mut(&target.to_string())?;
        let mut changes = lifecycle::Changes::new(seen_resolution);
        if !lifecycle::observe_unchanged(ts, observed, now, Some(&mut changes)) {
            return None;
        }
        let findings = changes.into_sorted();
        Some(Touched {
            findings,
            tickets: Vec::new(),
            observed: Vec::new(),
            baseline: false,
        })
    }

    /// Applies a scan; returns the keys of the tickets it refreshed, and
    /// with `changes` lists every finding record it changed there.
    fn scan_step(
        &self,
        state: &mut State,
        scan: &ScanMeta,
        findings: Vec<Finding>,
        now: DateTime<Utc>,
        sink: &mut dyn Sink,
        touched: Option<(&mut lifecycle::Changes, &mut Vec<String>)>,
    ) -> BTreeSet<String> {
        let target = &scan.target;
        let spec = target.to_string();
        let mut findings = findings;
        let mut fps = {
            // What the target's state knows, so that a package keeps its
            // fingerprint as its installs come and go.
            let ts = state.targets.get(&spec);
            let known = |fp: &str| {
                ts.and_then(|ts| ts.findings.get(fp))
                    .map(|rec| fingerprint::install_location(&rec.finding))
            };
            fingerprint::assign_in_place_known(&mut findings, target, &known)
        };
        let mut changes = match touched {
            Some((changes, observed)) => {
                // Sorted on all cores: a report of 100,000 findings has as
                // many fingerprints (a small one is sorted on its thread).
                use rayon::slice::ParallelSliceMut;
                observed.clone_from(&fps);
                observed.par_sort_unstable();
                observed.dedup();
                Some(changes)
            }
            None => None,
        };
        let spec_ref = spec.as_str();
        let first = state
            .targets
            .get(&spec)
            .is_none_or(|ts| ts.findings.is_empty());
        let ts = state.target_mut(target);
        let transitions = if first && findings.len() >= self.parallel_events {
            // A target's first large scan: `lifecycle::apply_scan` collects
            // every observation to build the records on all cores, so they
            // are made on all cores too (owners and ticket keys each with
            // a cache per run, a pure function of team and rule), in order,
            // and the report's findings are freed as a whole once moved.
            use rayon::prelude::*;
            let observed: Vec<Observation> = findings
                .into_par_iter()
                .zip(fps.into_par_iter())
                .with_min_len(256)
                .map_init(ScanTicketKeys::new, |keys, (finding, fingerprint)| {
                    self.observe_in_scan(target, spec_ref, fingerprint, finding, keys)
                })
                .collect();
            lifecycle::apply_scan(ts, scan, observed, now, &self.sla, changes.as_deref_mut())
        } else {
            // Hand findings over one at a time from the back of a reversed
            // vector, shrinking it as it empties, so the report's findings
            // and the state built from them are not both held in full.
            findings.reverse();
            fps.reverse();
            let mut keys = ScanTicketKeys::new();
            // An iterator that knows its length: a first scan collects the
            // observations into a vector sized once (see
            // `lifecycle::apply_scan`), not grown by copying.
            let n = findings.len().min(fps.len());
            let observed = (0..n).map(move |_| {
                let finding = findings.pop().expect("n findings");
                let fingerprint = fps.pop().expect("n fingerprints");
                if findings.capacity() > 1024 && findings.len() < findings.capacity() / 4 {
                    findings.shrink_to_fit();
                    fps.shrink_to_fit();
                }
                self.observe_in_scan(target, spec_ref, fingerprint, finding, &mut keys)
            });
            lifecycle::apply_scan(ts, scan, observed, now, &self.sla, changes.as_deref_mut())
        };
        let mut regrouped = Vec::new();
        let regroup = self.regroup(ts, &spec, &mut regrouped);
        if let Some(c) = changes {
            c.changed
                .extend(transitions.iter().map(|t| t.fingerprint.clone()));
            c.changed.extend(regrouped);
        }
        self.finish(state, target, transitions, now, Some(scan), sink, &regroup)
    }

    /// Applies a decision record.
    pub fn decide(
        &self,
        state: &mut State,
        d: &DecisionRecord,
        now: DateTime<Utc>,
    ) -> Result<Output, DecisionError> {
        d.validate()?;
        let ts = state
            .targets
            .get_mut(&d.target.to_string())
            .ok_or_else(|| DecisionError::UnknownFinding {
                target: d.target.to_string(),
                fingerprint: d.fingerprint.clone(),
            })?;
        let transitions = lifecycle::apply_decision(ts, d, now, &self.sla)?;
        let mut out = Output::default();
        let _ = self.finish(
            state,
            &d.target,
            transitions,
            now,
            None,
            &mut out,
            &Regroup::default(),
        );
        Ok(out)
    }

    /// Applies a VEX document to every target's findings (see
    /// [`lifecycle::apply_vex`]); returns the events and how many findings
    /// its statements were about.
    pub fn vex(
        &self,
        state: &mut State,
        doc: &crate::normalize::vex::VexDocument,
        now: DateTime<Utc>,
    ) -> (Output, usize) {
        let mut matched = 0;
        let out = self.each_target(state, now, |ts, target| {
            let (transitions, n) = lifecycle::apply_vex(ts, target, doc, now, &self.sla);
            matched += n;
            transitions
        });
        (out, matched)
    }

    /// Applies a VEX document to one target's findings (a document
    /// published for that target); returns the events and how many
    /// findings its statements were about.
    pub fn vex_on(
        &self,
        state: &mut State,
        target: &Target,
        doc: &crate::normalize::vex::VexDocument,
        now: DateTime<Utc>,
    ) -> (Output, usize) {
        let mut out = Output::default();
        let Some(ts) = state.targets.get_mut(&target.to_string()) else {
            return (out, 0);
        };
        let (transitions, matched) = lifecycle::apply_vex(ts, target, doc, now, &self.sla);
        if !transitions.is_empty() {
            let _ = self.finish(
                state,
                target,
                transitions,
                now,
                None,
                &mut out,
                &Regroup::default(),
            );
        }
        (out, matched)
    }

    /// Advances the clock over every target: SLA breaches and expired
    /// acceptances.
    pub fn tick(&self, state: &mut State, now: DateTime<Utc>) -> Output {
        self.each_target(state, now, |ts, _| lifecycle::tick(ts, now))
    }

    /// Refreshes the tickets `transitions` (and a regrouping) touched and
    /// hands the events to `sink`; returns the keys of those tickets.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        state: &mut State,
        target: &Target,
        transitions: Vec<Transition>,
        now: DateTime<Utc>,
        scan: Option<&ScanMeta>,
        sink: &mut dyn Sink,
        regroup: &Regroup,
    ) -> BTreeSet<String> {
        // An empty id: none known (yet; see the service's lazy scan id).
        let scan_id = scan.map(|s| s.scan_id.as_str()).filter(|id| !id.is_empty());
        let ts = state.target_mut(target);
        let ctx = RefreshContext {
            router: &self.router,
            settings: &self.tickets,
            scan: scan.map(|s| (s.commit.as_deref(), s.git_ref.as_deref())),
            rule_help: scan.map(|s| &s.rule_help),
            regrouped: &regroup.stale,
        };
        // One look-up per transition gives both its event and the ticket
        // it touched (with the ticket a reassignment left). The events go
        // out before the tickets are refreshed, which changes no finding
        // record: the sink sees what it always did, finding events and
        // then ticket events.
        let mut keys = regroup.keys.clone();
        let ticket_events = if transitions.len() < self.parallel_events {
            for t in &transitions {
                if let Some(rec) = ts.findings.get(&t.fingerprint) {
                    touch(&mut keys, &rec.ticket_key);
                    sink.finding(finding_event(rec, t, target, now, scan_id));
                }
                if let Some(k) = &t.previous_ticket {
                    touch(&mut keys, k);
                }
            }
            let ticket_transitions = ticket::refresh(ts, target, &keys, &ctx);
            ticket_events(
                &ts.findings,
                &ts.tickets,
                &ticket_transitions,
                now,
                &self.tickets,
            )
        } else {
            self.events_in_parallel(
                ts,
                target,
                &transitions,
                now,
                scan_id,
                sink,
                &ctx,
                &mut keys,
            )
        };
        if sink.wants_parts() {
            let spec = target.to_string();
            for key in &keys {
                if ts
                    .tickets
                    .get(key)
                    .is_some_and(|r| r.grouping == ticket::Grouping::TeamRule)
                {
                    if let Some(change) =
                        ticket::aggregate::part_change(ts, &spec, key, self.tickets.max_locations)
                    {
                        sink.part(change);
                    }
                }
            }
        }
        for e in ticket_events {
            sink.ticket(e);
        }
        keys
    }
}

impl Engine {
    /// The finding events of a large step (see [`Engine::finish`]), built
    /// on all cores in runs and handed to `sink` in order, while another
    /// thread refreshes the tickets the transitions touched and builds
    /// their events: the refresh changes only the tickets, and the
    /// finding events read only the records. The tickets touched are
    /// added to `keys` first, from one look-up of each transition's record
    /// (on all cores) that also serves its event. Returns the ticket
    /// events, to go out after the finding events.
    #[allow(clippy::too_many_arguments)]
    fn events_in_parallel(
        &self,
        ts: &mut lifecycle::TargetState,
        target: &Target,
        transitions: &[Transition],
        now: DateTime<Utc>,
        scan_id: Option<&str>,
        sink: &mut dyn Sink,
        ctx: &RefreshContext<'_>,
        keys: &mut BTreeSet<String>,
    ) -> Vec<TicketEvent> {
        use rayon::prelude::*;
        let lifecycle::TargetState {
            findings, tickets, ..
        } = ts;
        let findings = &*findings;
        let records = records_of(findings, transitions);
        for (t, rec) in transitions.iter().zip(&records) {
            if let Some(rec) = rec {
                touch(keys, &rec.ticket_key);
            }
            if let Some(k) = &t.previous_ticket {
                touch(keys, k);
            }
        }
        let keys = &*keys;
        let settings = &self.tickets;
        std::thread::scope(|scope| {
            let refreshed = scope.spawn(move || {
                let transitions = ticket::refresh_tickets(findings, tickets, target, keys, ctx);
                ticket_events(findings, tickets, &transitions, now, settings)
            });
            // The same events in the same order as one at a time.
            for (run, records) in transitions.chunks(EVENT_RUN).zip(records.chunks(EVENT_RUN)) {
                let events: Vec<FindingEventRef<'_>> = run
                    .par_iter()
                    .zip(records.par_iter())
                    .with_min_len(256)
                    .filter_map(|(t, rec)| {
                        rec.map(|rec| FindingEventRef::new(rec, t, target, now, scan_id))
                    })
                    .collect();
                sink.finding_refs(events);
            }
            refreshed
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

/// The record of each transition, if it has one. When the transitions are
/// many beside the records (a large first scan, a full rescan), they are
/// sorted by fingerprint (on all cores) and the records walked once in key
/// order beside them, rather than searched for one by one: each search
/// compares a fingerprint with about twenty keys scattered in memory. A
/// few transitions are searched for, on all cores.
fn records_of<'s>(
    findings: &'s BTreeMap<String, Box<FindingRecord>>,
    transitions: &[Transition],
) -> Vec<Option<&'s FindingRecord>> {
    use rayon::prelude::*;
    if transitions.len() < findings.len() / 8 {
        return transitions
            .par_iter()
            .with_min_len(256)
            .map(|t| findings.get(&t.fingerprint).map(|r| &**r))
            .collect();
    }
    let mut out = vec![None; transitions.len()];
    let mut records = findings.iter().peekable();
    for i in lifecycle::text_order(transitions, |t| &t.fingerprint) {
        let fp = transitions[i].fingerprint.as_str();
        while records.next_if(|(key, _)| key.as_str() < fp).is_some() {}
        if let Some((key, rec)) = records.peek() {
            if key.as_str() == fp {
                out[i] = Some(&***rec);
            }
        }
    }
    out
}

/// Adds a ticket key to those a step touched.
fn touch(keys: &mut BTreeSet<String>, key: &str) {
    if !keys.contains(key) {
        keys.insert(key.to_string());
    }
}

/// The events of a target's ticket transitions, from its records and its
/// refreshed tickets. A target's part of a ticket across targets
/// publishes nothing: the ticket is the sum of the parts
/// ([`Engine::aggregate`]).
fn ticket_events(
    findings: &BTreeMap<String, Box<FindingRecord>>,
    tickets: &BTreeMap<String, TicketRecord>,
    transitions: &[TicketTransition],
    now: DateTime<Utc>,
    settings: &TicketSettings,
) -> Vec<TicketEvent> {
    let gathered = gathered_members(findings, tickets, transitions);
    let mut out = Vec::new();
    for t in transitions {
        let Some(rec) = tickets.get(&t.key) else {
            continue;
        };
        if rec.grouping == ticket::Grouping::TeamRule {
            continue;
        }
        let members: Vec<&FindingRecord> = match gathered.get(t.key.as_str()) {
            Some(members) => members.clone(),
            None => rec
                .open_members
                .iter()
                .filter_map(|fp| findings.get(fp).map(|r| &**r))
                .collect(),
        };
        let attribution = members.first().map_or_else(
            || Arc::new(Attribution::unattributed()),
            |r| Arc::clone(&r.attribution),
        );
        out.push(ticket_event(
            rec,
            t,
            now,
            attribution,
            members,
            settings,
            None,
        ));
    }
    out
}

/// The open members of the tickets that changed, gathered in one walk
/// through the target's records when they are a good part of them (a
/// target's first scan: its tickets hold every finding), where searching
/// the tree for each member costs more; empty when they are few. A
/// refreshed ticket's `open_members` are exactly the open records that
/// name it, so the walk finds the same records in the same order
/// (fingerprint order); a ticket for which it found another count is left
/// out, and its members are looked up.
fn gathered_members<'t>(
    findings: &'t BTreeMap<String, Box<FindingRecord>>,
    tickets: &'t BTreeMap<String, TicketRecord>,
    transitions: &[ticket::TicketTransition],
) -> BTreeMap<&'t str, Vec<&'t FindingRecord>> {
    let mut wanted: BTreeMap<&str, Vec<&FindingRecord>> = BTreeMap::new();
    let mut total = 0usize;
    for t in transitions {
        if let Some((key, rec)) = tickets.get_key_value(&t.key) {
            if let btree_map::Entry::Vacant(slot) = wanted.entry(key.as_str()) {
                total += rec.open_members.len();
                slot.insert(Vec::with_capacity(rec.open_members.len()));
            }
        }
    }
    if total == 0 || total.saturating_mul(4) < findings.len() {
        return BTreeMap::new();
    }
    for rec in findings.values() {
        if rec.status == crate::model::Status::Open {
            if let Some(members) = wanted.get_mut(&*rec.ticket_key) {
                members.push(rec);
            }
        }
    }
    wanted.retain(|key, members| {
        tickets
            .get(*key)
            .is_some_and(|t| t.open_members.len() == members.len())
    });
    wanted
}

/// Ticket keys made in one scan, by team and rule or vulnerability.
type ScanTicketKeys = HashMap<Option<String>, HashMap<String, Arc<str>>>;

/// Tickets a change of grouping touches.
#[derive(Debug, Default)]
struct Regroup {
    /// Open tickets of a grouping no longer in force.
    stale: BTreeSet<String>,
    /// Every ticket to refresh: the stale ones and their findings' new
    /// ones.
    keys: BTreeSet<String>,
}

/// The records a scan changed: what a state changelog must write.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Touched {
    /// Fingerprints of the finding records, sorted.
    pub findings: Vec<String>,
    /// Keys of the ticket records, sorted.
    pub tickets: Vec<String>,
    /// For a scan: the fingerprints it observed, sorted, each once (what
    /// [`Engine::rescan_unchanged`] takes). Empty otherwise.
    pub observed: Vec<String>,
    /// For a scan: whether a scanner completed its first scan of the
    /// target, so the target's baseline record must be written
    /// ([`crate::service::changelog::baseline_record`]).
    pub baseline: bool,
}

/// A deterministic event id: the same transition of the same finding or
/// ticket always gets the same id, so consumers can drop redeliveries.
pub fn event_id(class: &str, key: &str, seq: u64, kind: &str) -> String {
    let hash = fingerprint::framed_sha256(&[
        class.as_bytes(),
        key.as_bytes(),
        &seq.to_le_bytes(),
        kind.as_bytes(),
    ]);
    crate::fingerprint::hex(&hash[..16])
}

fn finding_event(
    rec: &FindingRecord,
    t: &Transition,
    target: &Target,
    now: DateTime<Utc>,
    scan_id: Option<&str>,
) -> FindingEvent {
    FindingEventRef::new(rec, t, target, now, scan_id).to_event()
}

/// A finding event that borrows what it says from the finding's record,
/// its transition and the step: what a large step hands its sink, which
/// serializes it to the bytes the [`FindingEvent`] it stands for would
/// give, without copying each record's strings into an event first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FindingEventRef<'a> {
    kind: EventClass,
    /// What happened.
    pub event: crate::model::FindingEventKind,
    event_id: String,
    #[serde(serialize_with = "crate::model::time::serialize")]
    at: DateTime<Utc>,
    /// The finding's fingerprint.
    pub fingerprint: &'a str,
    /// Owning team id, `None` when unattributed.
    pub team: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_team: Option<&'a str>,
    /// Its severity.
    pub severity: crate::model::Severity,
    /// The target.
    pub target: &'a Target,
    status: crate::model::Status,
    category: crate::model::Category,
    #[serde(serialize_with = "scanner_names")]
    scanners: &'a lifecycle::Sources,
    /// Rule id or canonical vulnerability id.
    pub rule_id: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    aliases: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a Arc<str>>,
    message: &'a str,
    /// Latest location.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<&'a crate::model::Location>,
    #[serde(skip_serializing_if = "Option::is_none")]
    package: Option<&'a crate::model::Package>,
    #[serde(serialize_with = "crate::model::time::serialize")]
    first_seen: DateTime<Utc>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::model::time::serialize_opt"
    )]
    due_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accepted_until: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disposition: Option<&'a crate::model::Disposition>,
    ticket_key: &'a str,
    attribution: &'a Arc<Attribution>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scan_id: Option<&'a str>,
    origin: std::borrow::Cow<'a, crate::model::Origin>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_status: Option<crate::model::Status>,
}

/// The scanners of a record, as the list of names an event holds.
fn scanner_names<S: serde::Serializer>(
    sources: &&lifecycle::Sources,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(sources.names())
}

impl<'a> FindingEventRef<'a> {
    /// The event of transition `t` of record `rec` on `target`.
    pub fn new(
        rec: &'a FindingRecord,
        t: &'a Transition,
        target: &'a Target,
        now: DateTime<Utc>,
        scan_id: Option<&'a str>,
    ) -> FindingEventRef<'a> {
        let f = &rec.finding;
        FindingEventRef {
            kind: EventClass::Finding,
            event: t.kind,
            event_id: event_id("finding", &t.fingerprint, t.seq, t.kind.as_str()),
            at: now,
            fingerprint: &t.fingerprint,
            team: rec.team.as_deref(),
            previous_team: t.previous_team.as_deref(),
            severity: rec.severity(),
            target,
            status: rec.status,
            category: f.category,
            scanners: &rec.sources,
            rule_id: &f.rule_id,
            aliases: &f.aliases,
            title: f.title.as_ref(),
            message: &f.message,
            location: f.location.as_ref(),
            package: f.package.as_ref(),
            first_seen: rec.first_seen,
            due_at: rec
                .due_at
                .filter(|_| rec.status == crate::model::Status::Open),
            accepted_until: rec.accepted_until,
            disposition: rec.disposition(),
            ticket_key: &rec.ticket_key,
            attribution: &rec.attribution,
            scan_id,
            origin: match &rec.origin {
                Some(o) => std::borrow::Cow::Borrowed(o),
                None => std::borrow::Cow::Owned(rec.origin_or_inherited()),
            },
            previous_status: t.previous_status,
        }
    }

    /// The event it stands for, owning its strings.
    pub fn to_event(&self) -> FindingEvent {
        FindingEvent {
            kind: self.kind,
            event: self.event,
            event_id: self.event_id.clone(),
            at: self.at,
            fingerprint: self.fingerprint.to_string(),
            team: self.team.map(str::to_string),
            previous_team: self.previous_team.map(str::to_string),
            severity: self.severity,
            target: self.target.clone(),
            status: self.status,
            category: self.category,
            scanners: self.scanners.names().map(str::to_string).collect(),
            rule_id: self.rule_id.to_string(),
            aliases: self.aliases.to_vec(),
            title: self.title.cloned(),
            message: self.message.to_string(),
            location: self.location.cloned(),
            package: self.package.cloned(),
            first_seen: self.first_seen,
            due_at: self.due_at,
            accepted_until: self.accepted_until,
            disposition: self.disposition.cloned(),
            ticket_key: self.ticket_key.to_string(),
            attribution: Arc::clone(self.attribution),
            scan_id: self.scan_id.map(str::to_string),
            origin: self.origin.clone().into_owned(),
            previous_status: self.previous_status,
        }
    }
}

/// The event of a transition of a ticket across targets, from its record
/// and its targets' contributions.
fn across_event(
    rec: &TicketRecord,
    t: &TicketTransition,
    now: DateTime<Utc>,
    parts: Option<&BTreeMap<String, ticket::aggregate::Contribution>>,
    settings: &TicketSettings,
) -> TicketEvent {
    let open: Vec<&ticket::aggregate::Contribution> = parts
        .map(|p| p.values().filter(|c| c.is_open()).collect())
        .unwrap_or_default();
    let across: Vec<(&TicketRecord, &FindingRecord)> = open
        .iter()
        .flat_map(|c| c.members.iter().map(move |m| (&c.part, m)))
        .collect();
    let members: Vec<&FindingRecord> = across.iter().map(|(_, m)| *m).collect();
    let attribution = members.first().map_or_else(
        || Arc::new(Attribution::unattributed()),
        |r| Arc::clone(&r.attribution),
    );
    let targets = open.iter().map(|c| c.part.target.clone()).collect();
    ticket_event(
        rec,
        t,
        now,
        attribution,
        members,
        settings,
        Some(Across {
            members: across,
            targets,
        }),
    )
}

/// A ticket across targets' members with the target each is of, and the
/// targets with open findings.
struct Across<'a> {
    members: Vec<(&'a TicketRecord, &'a FindingRecord)>,
    targets: Vec<Target>,
}

/// The event of a ticket's transition, from its record and the members
/// its body lists (with their targets, for a ticket across targets).
fn ticket_event(
    rec: &TicketRecord,
    t: &TicketTransition,
    now: DateTime<Utc>,
    attribution: Arc<Attribution>,
    members: Vec<&FindingRecord>,
    settings: &TicketSettings,
    across: Option<Across<'_>>,
) -> TicketEvent {
    let (across, targets) = across.map_or((None, Vec::new()), |a| (Some(a.members), a.targets));
    let team = match &t.moved_to {
        Some((team, _)) => team.clone(),
        None => rec.team.clone(),
    };
    let labels = render::labels(rec, team.as_deref(), &members);
    let body = render::body(
        &render::BodyInput {
            rec,
            key: &t.key,
            kind: t.kind,
            reason: t.reason,
            moved_to: t.moved_to.as_ref().map(|(_, k)| k.as_str()),
            team: team.as_deref(),
            members,
            attribution: &attribution,
            across,
        },
        settings,
    );
    TicketEvent {
        kind: EventClass::Ticket,
        event: t.kind,
        event_id: event_id("ticket", &t.key, t.seq, t.kind.as_str()),
        at: now,
        ticket_key: t.key.clone(),
        team,
        previous_team: t.moved_to.as_ref().and(rec.team.clone()),
        reassigned_to: t.moved_to.as_ref().map(|(_, key)| key.clone()),
        reason: t.reason,
        grouping: rec.grouping,
        severity: rec.severity,
        target: rec.target.clone(),
        targets,
        category: rec.category,
        group: rec.group.clone(),
        title: rec.title.clone(),
        body,
        labels,
        route: rec.route.clone(),
        due_at: rec.due_at,
        counts: rec.counts,
        fingerprints: rec.open_members.iter().cloned().collect(),
        attribution,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Category, Location, ScanMeta, Severity};

    fn target() -> Target {
        "repo:github.com/acme/payments".parse().unwrap()
    }

    /// `n` code findings over 40 rules and 300 files, every tenth line
    /// repeated in its file (occurrence counters), from `from`.
    fn findings(from: usize, n: usize, severity: impl Fn(usize) -> Severity) -> Vec<Finding> {
        (from..from + n)
            .map(|i| {
                let mut f = Finding::new(
                    "bandit",
                    Category::Sast,
                    format!("B{}", i % 40),
                    severity(i),
                    format!("call at {i}"),
                );
                f.location = Some(Location {
                    path: format!("src/m{}.py", i % 300),
                    start_line: Some(u32::try_from(i).unwrap()),
                    ..Location::default()
                });
                let line = if i % 10 == 0 {
                    "eval(x)".to_string()
                } else {
                    format!("call({i})")
                };
                f.content_hash = Some(crate::fingerprint::line_hash(&line));
                f
            })
            .collect()
    }

    fn scan(id: &str) -> ScanMeta {
        ScanMeta {
            scan_id: id.into(),
            target: target(),
            commit: Some("abc".into()),
            git_ref: None,
            complete: true,
            coverage: [("bandit".to_string(), Category::Sast)]
                .into_iter()
                .collect(),
            rule_help: Default::default(),
        }
    }

    /// Each transition's record is the one a search for its fingerprint
    /// finds, whether the records are walked beside the sorted transitions
    /// (many transitions) or searched for each (few): with fingerprints
    /// that have no record, fingerprints there twice, and transitions out
    /// of key order.
    #[test]
    fn each_transitions_record_is_the_one_its_fingerprint_finds() {
        let now = Utc::now();
        let mut ts = lifecycle::TargetState::default();
        let observed = (0..500).map(|i| lifecycle::Observation {
            // Fingerprints alike in their first 16 bytes: the sort reads
            // the texts themselves.
            fingerprint: format!("v1:0123456789abcd{:05}", (i * 7919) % 100_000),
            finding: Finding::new("bandit", Category::Sast, "B1", Severity::Low, "m"),
            attribution: Arc::new(Attribution::unattributed()),
            ticket_key: format!("tk{}", i % 3).into(),
        });
        let opened = lifecycle::apply_scan(
            &mut ts,
            &scan("s"),
            observed,
            now,
            &SlaPolicy::default(),
            None,
        );
        assert_eq!(ts.findings.len(), 500);
        let absent = |t: &Transition, k: usize| Transition {
            fingerprint: format!("{}{k}", t.fingerprint),
            ..t.clone()
        };
        let many: Vec<Transition> = opened
            .iter()
            .rev()
            .enumerate()
            .flat_map(|(k, t)| match k % 4 {
                0 => vec![t.clone(), t.clone()],
                1 => vec![absent(t, k)],
                _ => vec![t.clone()],
            })
            .collect();
        let few: Vec<Transition> = many.iter().step_by(40).cloned().collect();
        for transitions in [many, few, Vec::new()] {
            let found = records_of(&ts.findings, &transitions);
            assert_eq!(found.len(), transitions.len());
            for (t, rec) in transitions.iter().zip(found) {
                let expected = ts.findings.get(&t.fingerprint).map(|r| &**r);
                assert_eq!(
                    rec.map(std::ptr::from_ref),
                    expected.map(std::ptr::from_ref)
                );
            }
        }
    }

    /// A step of thousands of transitions builds its finding events on all
    /// cores: the events (finding events, then ticket events), their order
    /// and the state left are those of the events built one at a time, for
    /// a first scan (all opened) and a rescan that resolves, updates and
    /// opens.
    #[test]
    fn a_large_steps_events_are_those_built_one_at_a_time() {
        let config = Config::default();
        let parallel = Engine::new(&config);
        let mut serial = Engine::new(&config);
        serial.parallel_events = usize::MAX;
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let first = findings(0, 6000, |_| Severity::Medium);
        let mut second: Vec<Finding> = findings(0, 6000, |i| {
            if i % 2 == 0 {
                Severity::High
            } else {
                Severity::Medium
            }
        })
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 5 != 0)
        .map(|(_, f)| f)
        .collect();
        second.extend(findings(6000, 1000, |_| Severity::Low));
        let (mut a, mut b) = (State::new(), State::new());
        for (id, report) in [("s1", first), ("s2", second)] {
            let from_parallel = parallel.scan(&mut a, &scan(id), report.clone(), now);
            let from_serial = serial.scan(&mut b, &scan(id), report, now);
            assert!(from_parallel.findings.len() >= PARALLEL_EVENTS, "{id}");
            assert_eq!(from_parallel.findings, from_serial.findings, "{id}");
            assert_eq!(from_parallel.tickets, from_serial.tickets, "{id}");
            assert_eq!(
                serde_json::to_string(&a).unwrap(),
                serde_json::to_string(&b).unwrap(),
                "{id}"
            );
        }
    }

    /// A finding event borrowed from its record serializes to the bytes of
    /// the owned event it stands for, whatever the record holds: package,
    /// aliases, title, a disposition, no location, a team, a record kept
    /// without its origin, and each transition's optional fields.
    #[test]
    fn a_borrowed_finding_event_serializes_as_the_owned_one() {
        use crate::model::{Disposition, DispositionState, FindingEventKind, Package, Status};
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut report = findings(0, 3, |_| Severity::High);
        report[0].aliases = vec!["CVE-2026-1".into(), "GHSA-x".into()];
        report[0].title = Some(Arc::from("A \"quoted\" title\n"));
        report[1].location = None;
        report[1].category = Category::Sca;
        report[1].package = Some(Package {
            ecosystem: "pypi".into(),
            name: "urllib3".into(),
            version: Some("1.0".into()),
            ..Package::default()
        });
        report[2].disposition = Some(Box::new(Disposition {
            state: DispositionState::Suppressed,
            kind: Some("inSource".into()),
            status: None,
            justification: Some("tested".into()),
        }));
        let mut state = State::new();
        Engine::new(&Config::default()).scan(&mut state, &scan("s1"), report, now);
        let ts = state.targets.get_mut(&target().to_string()).unwrap();
        let mut records: Vec<(String, FindingRecord)> = ts
            .findings
            .iter()
            .map(|(fp, rec)| (fp.clone(), (**rec).clone()))
            .collect();
        let mut unowned = records[0].1.clone();
        unowned.origin = None;
        unowned.team = Some("payments".into());
        unowned.accepted_until = Some(now);
        unowned.status = Status::Accepted;
        records.push((records[0].0.clone(), unowned));
        let target = target();
        for (fp, rec) in &records {
            for (kind, previous_team, previous_status) in [
                (FindingEventKind::Opened, None, None),
                (FindingEventKind::Reassigned, Some("web".to_string()), None),
                (FindingEventKind::Resolved, None, Some(Status::Open)),
            ] {
                let t = Transition {
                    fingerprint: fp.clone(),
                    kind,
                    previous_team,
                    seq: 7,
                    previous_ticket: None,
                    previous_status,
                };
                for scan_id in [None, Some("s1")] {
                    let view = FindingEventRef::new(rec, &t, &target, now, scan_id);
                    assert_eq!(
                        serde_json::to_string(&view).unwrap(),
                        serde_json::to_string(&view.to_event()).unwrap()
                    );
                }
            }
        }
    }
}
