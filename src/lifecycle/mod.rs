//! Finding lifecycle: the per-target state and the pure transition
//! functions.
//!
//! Each function takes the state of one target, its input and `now`, and
//! returns the transitions it made; nothing here reads a clock or does IO.
//! The rules (DESIGN.md, Lifecycle):
//!
//! - a finding is opened when first seen, reopened when seen after it was
//!   resolved, and updated when its severity changes or the same scanner
//!   reports different evidence (numbers in messages ignored, so a message
//!   quoting a line number does not change when code moves);
//! - absence resolves only after a *complete* scan of the same target by a
//!   scanner that reported the finding, covering its category; a finding
//!   reported by two tools resolves when both have stopped reporting it;
//! - a rescan that reports the same findings makes no transition;
//! - `sla_breached` fires once per SLA clock; risk acceptance always has an
//!   expiry, after which the finding is open again (`acceptance_expired`);
//! - a finding its report says is suppressed (SARIF `suppressions`) or not
//!   affected (a vendor's status) is recorded `suppressed` or
//!   `not_affected`, with that event, instead of being opened (or when an
//!   open one gets so); when a later report of its primary scanner says so
//!   no more, it is `reopened`. Such findings are not open, and resolve by
//!   absence like open ones;
//! - a VEX statement (see [`apply_vex`]) makes a finding `not_affected`
//!   whatever later scans say, until a statement says it is affected
//!   (`reopened`). Human decisions (accepted, false positive) are not
//!   overridden by what a report says;
//! - every finding records its [`Origin`]: the scan that first saw it, and
//!   whether it was `inherited` (seen before its scanner's first complete
//!   scan of the target finished) or `introduced` (by a later scan). A
//!   record written by a version that kept no origin counts as inherited.

mod decision;

pub use decision::{read_decisions, DecisionError, DecisionKind, DecisionRecord};

use crate::config::SlaPolicy;
use crate::model::ticket::TicketRecord;
use crate::model::{
    Attribution, Disposition, DispositionState, Finding, FindingEventKind, Origin, Provenance,
    ScanMeta, Severity, Status, Target,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

/// Everything custody remembers about one finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingRecord {
    /// Current status.
    pub status: Status,
    /// The latest report of it (from its primary scanner).
    pub finding: Finding,
    /// Severity reported by each scanner currently reporting it; the
    /// finding's severity is the highest.
    pub sources: Sources,
    /// Hash of the evidence last reported by its primary scanner (the
    /// snippet itself is not kept, to keep state small).
    pub evidence: String,
    /// Owning team, if attributed.
    pub team: Option<String>,
    /// Why (shared between the findings one rule attributes).
    pub attribution: Arc<Attribution>,
    /// The ticket it belongs to.
    pub ticket_key: Arc<str>,
    /// First seen.
    pub first_seen: DateTime<Utc>,
    /// Last seen by any scanner.
    pub last_seen: DateTime<Utc>,
    /// Start of the current SLA clock.
    pub opened_at: DateTime<Utc>,
    /// SLA due date, if the policy gives one for its severity.
    pub due_at: Option<DateTime<Utc>>,
    /// Whether `sla_breached` fired for the current clock.
    pub sla_breached: bool,
    /// When it was last resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// End of the risk acceptance, while accepted.
    pub accepted_until: Option<DateTime<Utc>>,
    /// Number of transitions so far: part of each event's id.
    pub seq: u64,
    /// A VEX statement that the finding does not affect its target, which
    /// holds whatever later scans report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vex: Option<Box<Disposition>>,
    /// The scan that first saw it; absent in a record written by a version
    /// that did not keep it, which counts as inherited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Arc<Origin>>,
}

impl FindingRecord {
    /// The severity: highest among current sources, else the last known.
    pub fn severity(&self) -> Severity {
        self.sources.max().unwrap_or(self.finding.severity)
    }

    /// Inherited or introduced (inherited when not known).
    pub fn provenance(&self) -> Provenance {
        self.origin
            .as_ref()
            .map_or(Provenance::Inherited, |o| o.provenance)
    }

    /// Its origin: the recorded one, or, for a record from a version that
    /// kept none, an inherited one at its first sighting.
    pub fn origin_or_inherited(&self) -> Origin {
        self.origin.as_deref().cloned().unwrap_or(Origin {
            provenance: Provenance::Inherited,
            at: self.first_seen,
            commit: None,
            git_ref: None,
            scan_id: None,
        })
    }

    /// Why it is suppressed or not affected, while it is.
    pub fn disposition(&self) -> Option<&Disposition> {
        match self.status {
            Status::NotAffected => self.vex.as_deref().or(self.finding.disposition.as_deref()),
            Status::Suppressed => self.finding.disposition.as_deref(),
            _ => None,
        }
    }
}

/// The event a disposition's state is told by.
fn disposition_event(state: DispositionState) -> FindingEventKind {
    match state {
        DispositionState::Suppressed => FindingEventKind::Suppressed,
        DispositionState::NotAffected => FindingEventKind::NotAffected,
    }
}

/// The scanners currently reporting a finding, with the severity each
/// gives, sorted by scanner. A finding rarely has more than two, so a
/// sorted vector is smaller and faster than a map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sources(Vec<(String, Severity)>);

impl Sources {
    /// One scanner.
    pub fn one(scanner: String, severity: Severity) -> Sources {
        Sources(vec![(scanner, severity)])
    }

    /// Adds or updates a scanner; true when that changed anything.
    pub fn insert(&mut self, scanner: &str, severity: Severity) -> bool {
        match self.0.binary_search_by(|(s, _)| s.as_str().cmp(scanner)) {
            Ok(i) => std::mem::replace(&mut self.0[i].1, severity) != severity,
            Err(i) => {
                self.0.insert(i, (scanner.to_string(), severity));
                true
            }
        }
    }

    /// Removes a scanner.
    pub fn remove(&mut self, scanner: &str) {
        self.0.retain(|(s, _)| s != scanner);
    }

    /// Whether a scanner reports it.
    pub fn contains(&self, scanner: &str) -> bool {
        self.0.iter().any(|(s, _)| s == scanner)
    }

    /// The scanners, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(s, _)| s.as_str())
    }

    /// The scanners with the severity each gives, sorted by scanner.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, Severity)> {
        self.0.iter().map(|(s, v)| (s.as_str(), *v))
    }

    /// The highest severity, if any scanner reports it.
    pub fn max(&self) -> Option<Severity> {
        self.0.iter().map(|(_, v)| *v).max()
    }

    /// True when no scanner reports it.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The state of one target: its findings and tickets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetState {
    /// Findings by fingerprint (boxed: records are large, and a B-tree
    /// node keeps room for eleven).
    pub findings: BTreeMap<String, Box<FindingRecord>>,
    /// Tickets by key.
    pub tickets: BTreeMap<String, TicketRecord>,
    /// The scanners that completed a scan of the target: a finding they
    /// report from then on was introduced, not inherited.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub baselined: BTreeSet<String>,
}

impl TargetState {
    /// Fills in [`TargetState::baselined`] for state written by a version
    /// that did not keep it (a record with no origin tells): every scanner
    /// of a record had scanned the target, so what it reports next was
    /// introduced.
    pub fn settle_baseline(&mut self) {
        if !self.findings.values().any(|r| r.origin.is_none()) {
            return;
        }
        for rec in self.findings.values() {
            if !self.baselined.contains(&rec.finding.scanner) {
                self.baselined.insert(rec.finding.scanner.clone());
            }
            for s in rec.sources.names() {
                if !self.baselined.contains(s) {
                    self.baselined.insert(s.to_string());
                }
            }
        }
    }
}

/// All lifecycle state, by target spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// State format version.
    #[serde(default = "state_version")]
    pub version: u32,
    /// Per target.
    pub targets: BTreeMap<String, TargetState>,
    /// The ownership configuration `custody process` last attributed
    /// findings with (`None`: none, or a state saved before it was
    /// recorded), so a rescan cannot silently drop it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ownership: Option<OwnershipUsed>,
    /// `custody process`: each target's last scan, by target, where it
    /// was one report of that target alone.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_scans: BTreeMap<String, ScanRecord>,
    /// `custody process`: the tickets across targets (grouping
    /// `team_rule`) as last published, by key; each target keeps its part
    /// of them in `targets`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aggregates: BTreeMap<String, crate::model::ticket::TicketRecord>,
}

/// What is known of a target's last scan: enough to recognize the same
/// report sent again and apply it without decoding it (see
/// [`crate::engine::Engine::rescan_unchanged`]). The service keeps it in
/// its changelog; `custody process` in its state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRecord {
    /// The digest of the report's bytes
    /// ([`crate::normalize::report_digest`]), in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
    /// The digest of what the report's decoder reads, in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The format the message named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The scanner the message named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanner: Option<String>,
    /// Whether the scan was complete.
    pub complete: bool,
    /// Findings the report held.
    pub findings: usize,
    /// The fingerprints the scan observed, sorted.
    pub observed: Vec<String>,
    /// The digest of the engine's settings and custody's version the scan
    /// was applied under ([`crate::engine::Engine::settings_digest`]):
    /// under others, the same report may be applied otherwise.
    pub settings: String,
}

/// Which ownership configuration a state was built with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnershipUsed {
    /// The configuration as it was named (`--owners`).
    pub config: String,
    /// Its version: the id of the manifest of its files (the SHA-256 of
    /// each file it read), as `publish-ownership` and the service name it.
    pub version: String,
}

fn state_version() -> u32 {
    1
}

impl State {
    /// An empty state.
    pub fn new() -> State {
        State {
            version: state_version(),
            targets: BTreeMap::new(),
            ownership: None,
            last_scans: BTreeMap::new(),
            aggregates: BTreeMap::new(),
        }
    }

    /// The state of `target`, created empty on first use.
    pub fn target_mut(&mut self, target: &Target) -> &mut TargetState {
        self.targets.entry(target.to_string()).or_default()
    }
}

/// One transition of one finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The finding.
    pub fingerprint: String,
    /// What happened.
    pub kind: FindingEventKind,
    /// The team before, for `reassigned`.
    pub previous_team: Option<String>,
    /// The record's sequence number after this transition.
    pub seq: u64,
    /// The ticket it left, when a reassignment moved it to another.
    pub previous_ticket: Option<Arc<str>>,
    /// The status before a `resolved` transition: whether it was fixed
    /// while open, or while accepted, suppressed or not affected.
    pub previous_status: Option<Status>,
}

/// A finding as seen in one scan, fingerprinted and attributed.
#[derive(Debug, Clone)]
pub struct Observation {
    /// Its fingerprint.
    pub fingerprint: String,
    /// The finding (with its target set).
    pub finding: Finding,
    /// The attribution's answer.
    pub attribution: Arc<Attribution>,
    /// The ticket its group maps to.
    pub ticket_key: Arc<str>,
}

/// The due date of a record's current SLA clock.
fn due(policy: &SlaPolicy, rec: &FindingRecord) -> Option<DateTime<Utc>> {
    policy.due(
        rec.severity(),
        rec.team.as_deref(),
        rec.finding.category,
        rec.opened_at,
    )
}

/// Hash of the evidence compared for `updated`: the message with digit
/// runs folded, so line numbers quoted in messages do not count, and the
/// snippet.
fn evidence_hash(f: &Finding) -> String {
    // The message with each run of digits as one '#', then a NUL and the
    // trimmed snippet, hashed as it is scanned. Bytes, not chars: an ASCII
    // digit is never part of a multi-byte UTF-8 sequence.
    let mut h = Sha256::new();
    let msg = f.message.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < msg.len() {
        if msg[i].is_ascii_digit() {
            h.update(&msg[start..i]);
            h.update(b"#");
            while i < msg.len() && msg[i].is_ascii_digit() {
                i += 1;
            }
            start = i;
        } else {
            i += 1;
        }
    }
    h.update(&msg[start..]);
    h.update(b"\0");
    h.update(
        f.evidence
            .snippet
            .as_deref()
            .map_or("", str::trim)
            .as_bytes(),
    );
    crate::fingerprint::hex(&h.finalize()[..8])
}

/// What the state keeps of a reported finding: not the snippet (its hash
/// is kept) nor the target (the state is per target).
fn stored(mut f: Finding) -> Finding {
    f.evidence.snippet = None;
    f.target = None;
    f
}

fn push(
    rec: &mut FindingRecord,
    fp: &str,
    kind: FindingEventKind,
    prev: Option<String>,
    out: &mut Vec<Transition>,
) {
    out.push(transition(rec, fp, kind, prev));
}

/// The record's next transition (its sequence number moves on).
fn transition(
    rec: &mut FindingRecord,
    fp: &str,
    kind: FindingEventKind,
    prev: Option<String>,
) -> Transition {
    rec.seq += 1;
    Transition {
        fingerprint: fp.to_string(),
        kind,
        previous_team: prev,
        seq: rec.seq,
        previous_ticket: None,
        previous_status: None,
    }
}

/// What a state changelog needs to know of a scan: every record it
/// changed, including changes no transition tells of.
#[derive(Debug, Default)]
pub struct Changes {
    /// `last_seen` is written once per period of this many milliseconds
    /// (0: at every scan). A rescan within the period that changes nothing
    /// else leaves the record out, so a restart may find `last_seen` up to
    /// one period old.
    pub seen_resolution_ms: i64,
    /// Fingerprints of known records the scan changed, with or without a
    /// transition: a moved location, a new explanation of the owner,
    /// another scanner's severity, a scanner dropped, `last_seen` in a new
    /// period. New records are not listed (each has an `opened`
    /// transition), and a fingerprint may be listed twice.
    pub changed: Vec<String>,
    /// Whether a scanner completed its first scan of the target
    /// ([`TargetState::baselined`] changed).
    pub baseline: bool,
    /// The last period [`Changes::seen_moved`] worked out.
    period: std::cell::Cell<Option<Period>>,
}

/// The period of `last_seen` writes that `now` falls in: `from` (included)
/// to `until` (excluded), either `None` past what a time can hold.
#[derive(Debug, Clone, Copy)]
struct Period {
    now: DateTime<Utc>,
    from: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

impl Period {
    /// Whether `t` is in the period: its milliseconds since the epoch,
    /// divided by the period's length (rounding down), give `now`'s.
    fn contains(&self, t: DateTime<Utc>) -> bool {
        self.from.is_none_or(|f| f <= t) && self.until.is_none_or(|u| t < u)
    }
}

impl Changes {
    /// Nothing changed yet; `last_seen` written once per `seen_resolution`.
    pub fn new(seen_resolution: std::time::Duration) -> Changes {
        Changes {
            seen_resolution_ms: i64::try_from(seen_resolution.as_millis()).unwrap_or(i64::MAX),
            changed: Vec::new(),
            baseline: false,
            period: std::cell::Cell::new(None),
        }
    }

    /// The fingerprints changed, sorted, each once (on all cores when
    /// they are many, as after a large first scan; a few on the calling
    /// thread).
    pub fn into_sorted(self) -> Vec<String> {
        use rayon::slice::ParallelSliceMut;
        let mut changed = self.changed;
        changed.par_sort_unstable();
        changed.dedup();
        changed
    }

    /// Whether moving `last_seen` from `before` to `now` must be written:
    /// whether `before` is out of `now`'s period.
    fn seen_moved(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        !self.period_of(now).contains(before)
    }

    /// The period `now` is in (its bounds are worked out once per `now`:
    /// a scan checks every record it sees against the same one).
    fn period_of(&self, now: DateTime<Utc>) -> Period {
        if let Some(p) = self.period.get().filter(|p| p.now == now) {
            return p;
        }
        let len = self.seen_resolution_ms.max(1);
        let k = now.timestamp_millis().div_euclid(len);
        let at = |k: i64| {
            k.checked_mul(len)
                .and_then(DateTime::<Utc>::from_timestamp_millis)
        };
        let p = Period {
            now,
            from: at(k),
            until: k.checked_add(1).and_then(at),
        };
        self.period.set(Some(p));
        p
    }
}

/// A target's first scan with at least this many findings builds its
/// records on all cores ([`first_scan_in_parallel`]); a smaller one (the
/// service's usual report) stays on its thread.
const PARALLEL_FIRST_SCAN: usize = 4096;

/// Applies one scan of a target: opens, updates, reopens and reassigns what
/// it reports, then, if the scan is complete, resolves what it covers and
/// did not report. With `changes`, the known records it changed are listed
/// there.
pub fn apply_scan(
    ts: &mut TargetState,
    scan: &ScanMeta,
    observed: impl IntoIterator<Item = Observation>,
    now: DateTime<Utc>,
    policy: &SlaPolicy,
    changes: Option<&mut Changes>,
) -> Vec<Transition> {
    apply_scan_from(
        ts,
        scan,
        observed,
        now,
        policy,
        changes,
        PARALLEL_FIRST_SCAN,
    )
}

/// [`apply_scan`], building the records of a target's first scan on all
/// cores when it has at least `parallel_from` findings, each with a
/// fingerprint of its own (tests set it out of reach to compare with the
/// records built one at a time).
fn apply_scan_from(
    ts: &mut TargetState,
    scan: &ScanMeta,
    observed: impl IntoIterator<Item = Observation>,
    now: DateTime<Utc>,
    policy: &SlaPolicy,
    mut changes: Option<&mut Changes>,
    parallel_from: usize,
) -> Vec<Transition> {
    let mut out = Vec::new();
    let mut observed = observed.into_iter();
    // Only a record the target had before this scan can be resolved by
    // its absence: the target's first scan (every record new) needs no
    // list of what it saw.
    let had_records = !ts.findings.is_empty();
    let mut seen: HashSet<String> = HashSet::new();
    let mut scanners: BTreeSet<String> = BTreeSet::new();
    // A first scan of many findings, each fingerprint once, is built on
    // all cores; any other scan is applied one observation at a time.
    let mut collected;
    let one_at_a_time: Option<&mut dyn Iterator<Item = Observation>> = if had_records {
        seen.reserve(observed.size_hint().0);
        Some(&mut observed)
    } else {
        let all: Vec<Observation> = observed.collect();
        match distinct_order(&all, parallel_from) {
            Some(order) => {
                out = first_scan_in_parallel(ts, scan, all, &order, now, policy, &mut scanners);
                None
            }
            None => {
                collected = all.into_iter();
                Some(&mut collected)
            }
        }
    };
    if let Some(observed) = one_at_a_time {
        observe_each(
            ts,
            scan,
            observed,
            now,
            policy,
            changes.as_deref_mut(),
            &mut seen,
            &mut scanners,
            &mut out,
        );
    }
    if scan.complete {
        // Its scanners' baselines end with it: what they report from now
        // on was introduced.
        scanners.extend(scan.coverage.iter().map(|(s, _)| s.clone()));
        for s in scanners {
            if !ts.baselined.contains(&s) {
                ts.baselined.insert(s);
                if let Some(c) = changes.as_deref_mut() {
                    c.baseline = true;
                }
            }
        }
        if had_records {
            resolve_absent(ts, scan, &seen, now, policy, &mut out, changes);
        }
    }
    out
}

/// The observations of a scan applied one at a time, in order: each finds
/// its record, or opens one. Fingerprints go to `seen` when the target had
/// records before (those not seen are resolved), and the scanners of a
/// complete scan to `scanners`.
#[allow(clippy::too_many_arguments)]
fn observe_each(
    ts: &mut TargetState,
    scan: &ScanMeta,
    observed: impl Iterator<Item = Observation>,
    now: DateTime<Utc>,
    policy: &SlaPolicy,
    mut changes: Option<&mut Changes>,
    seen: &mut HashSet<String>,
    scanners: &mut BTreeSet<String>,
    out: &mut Vec<Transition>,
) {
    let had_records = !ts.findings.is_empty();
    let origins = ScanOrigins::new(&ts.baselined, scan, now);
    for obs in observed {
        let Observation {
            fingerprint: fp,
            finding,
            attribution,
            ticket_key,
        } = obs;
        if scan.complete && !scanners.contains(&finding.scanner) {
            scanners.insert(finding.scanner.clone());
        }
        // A known record is looked up by reference; a new one (every
        // record of a target's first scan) is placed with the one search
        // that found its slot.
        if had_records {
            if let Some(rec) = ts.findings.get_mut(&fp) {
                let known = (finding, attribution, ticket_key);
                observe_listed(rec, &fp, known, now, policy, changes.as_deref_mut(), out);
                seen.insert(fp);
                continue;
            }
        }
        match ts.findings.entry(fp) {
            // Reported twice in the target's first scan (in a later one,
            // found above); nothing to remember for `resolve_absent`.
            Entry::Occupied(mut known) => {
                let fp = known.key().clone();
                let again = (finding, attribution, ticket_key);
                let rec = known.get_mut();
                observe_listed(rec, &fp, again, now, policy, changes.as_deref_mut(), out);
            }
            Entry::Vacant(slot) => {
                let (rec, t) = opened(
                    &origins,
                    slot.key(),
                    (finding, attribution, ticket_key),
                    now,
                    policy,
                );
                out.push(t);
                if had_records {
                    seen.insert(slot.key().clone());
                }
                slot.insert(rec);
            }
        }
    }
}

/// The origins a scan gives the findings it sees first: introduced when
/// their scanner completed a scan of the target before, inherited
/// otherwise. Made once per scan and shared by those findings' records.
struct ScanOrigins<'a> {
    baselined: &'a BTreeSet<String>,
    introduced: Arc<Origin>,
    inherited: Arc<Origin>,
}

impl<'a> ScanOrigins<'a> {
    fn new(baselined: &'a BTreeSet<String>, scan: &ScanMeta, now: DateTime<Utc>) -> Self {
        let origin = |provenance| {
            Arc::new(Origin {
                provenance,
                at: now,
                commit: scan.commit.clone(),
                git_ref: scan.git_ref.clone(),
                scan_id: Some(scan.scan_id.clone()).filter(|s| !s.is_empty()),
            })
        };
        ScanOrigins {
            baselined,
            introduced: origin(Provenance::Introduced),
            inherited: origin(Provenance::Inherited),
        }
    }

    /// The origin of a finding `scanner` reports.
    fn of(&self, scanner: &str) -> Arc<Origin> {
        Arc::clone(match self.baselined.contains(scanner) {
            true => &self.introduced,
            false => &self.inherited,
        })
    }
}

/// The record a finding seen for the first time opens, and its transition
/// (opened, or its disposition's): what both ways of applying a scan
/// build, on whichever thread.
fn opened(
    origins: &ScanOrigins<'_>,
    fp: &str,
    (finding, attribution, ticket_key): (Finding, Arc<Attribution>, Arc<str>),
    now: DateTime<Utc>,
    policy: &SlaPolicy,
) -> (Box<FindingRecord>, Transition) {
    let sev = finding.severity;
    let due_at = policy.due(sev, attribution.team.as_deref(), finding.category, now);
    let state = finding.disposition.as_ref().map(|d| d.state);
    let origin = origins.of(&finding.scanner);
    let mut rec = Box::new(FindingRecord {
        status: state.map_or(Status::Open, Status::of),
        sources: Sources::one(finding.scanner.clone(), sev),
        evidence: evidence_hash(&finding),
        team: attribution.team.clone(),
        attribution,
        ticket_key,
        first_seen: now,
        last_seen: now,
        opened_at: now,
        due_at,
        sla_breached: false,
        resolved_at: None,
        accepted_until: None,
        seq: 0,
        vex: None,
        origin: Some(origin),
        finding: stored(finding),
    });
    let kind = state.map_or(FindingEventKind::Opened, disposition_event);
    let t = transition(&mut rec, fp, kind, None);
    (rec, t)
}

/// The order of `observed` by fingerprint, when they are at least
/// `parallel_from` and no fingerprint is there twice (a finding reported
/// twice in a first scan is opened, then observed again: one at a time).
fn distinct_order(observed: &[Observation], parallel_from: usize) -> Option<Vec<usize>> {
    if observed.len() < parallel_from.max(2) {
        return None;
    }
    let order = text_order(observed, |o| &o.fingerprint);
    let twice = order
        .windows(2)
        .any(|w| observed[w[0]].fingerprint == observed[w[1]].fingerprint);
    (!twice).then_some(order)
}

/// The indices of `items` in the order of their texts (`text`), sorted on
/// all cores; equal texts in no particular order.
///
/// The sort compares each text's first 16 bytes as one integer held beside
/// its index, and reads the texts themselves only where those are equal:
/// the order of the strings without a string comparison, and its cache
/// misses, at each step of the sort. Fingerprints differ within their
/// first 16 bytes all but always.
pub(crate) fn text_order<T: Sync>(items: &[T], text: impl Fn(&T) -> &str + Sync) -> Vec<usize> {
    use rayon::prelude::*;
    let mut keyed: Vec<(u128, usize)> = items
        .par_iter()
        .map(|item| sort_prefix(text(item).as_bytes()))
        .zip(0..items.len())
        .collect();
    keyed.par_sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| text(&items[a.1]).cmp(text(&items[b.1])))
    });
    keyed.into_iter().map(|(_, i)| i).collect()
}

/// A text's first 16 bytes as a big-endian integer, padded with zeros:
/// where two prefixes differ, they order as the texts do.
fn sort_prefix(text: &[u8]) -> u128 {
    let mut head = [0u8; 16];
    let n = text.len().min(16);
    head[..n].copy_from_slice(&text[..n]);
    u128::from_be_bytes(head)
}

/// A large first scan of a target whose fingerprints are all distinct
/// (`order` sorts them): every finding opens a record, so the records and
/// their transitions are built on all cores, in the order the findings
/// came, and the target's tree of records is built from them in key
/// order at once, rather than searched for each one's slot. The same
/// records and transitions as [`observe_each`] builds one at a time.
fn first_scan_in_parallel(
    ts: &mut TargetState,
    scan: &ScanMeta,
    observed: Vec<Observation>,
    order: &[usize],
    now: DateTime<Utc>,
    policy: &SlaPolicy,
    scanners: &mut BTreeSet<String>,
) -> Vec<Transition> {
    use rayon::prelude::*;
    if scan.complete {
        for obs in &observed {
            if !scanners.contains(&obs.finding.scanner) {
                scanners.insert(obs.finding.scanner.clone());
            }
        }
    }
    let origins = ScanOrigins::new(&ts.baselined, scan, now);
    let mut records: Vec<Option<(String, Box<FindingRecord>)>> = Vec::new();
    let mut out: Vec<Transition> = Vec::new();
    observed
        .into_par_iter()
        .with_min_len(256)
        .map(|obs| {
            let Observation {
                fingerprint: fp,
                finding,
                attribution,
                ticket_key,
            } = obs;
            let (rec, t) = opened(
                &origins,
                &fp,
                (finding, attribution, ticket_key),
                now,
                policy,
            );
            (Some((fp, rec)), t)
        })
        .unzip_into_vecs(&mut records, &mut out);
    ts.findings = order.iter().filter_map(|&i| records[i].take()).collect();
    out
}

/// [`observe_known`], listing the record in `changes` when it changed
/// in a way no transition tells of.
fn observe_listed(
    rec: &mut FindingRecord,
    fp: &str,
    (finding, attribution, ticket_key): (Finding, Arc<Attribution>, Arc<str>),
    now: DateTime<Utc>,
    policy: &SlaPolicy,
    changes: Option<&mut Changes>,
    out: &mut Vec<Transition>,
) {
    let silent = observe_known(
        rec,
        fp,
        finding,
        attribution,
        ticket_key,
        now,
        policy,
        changes.as_deref(),
        out,
    );
    if silent {
        if let Some(c) = changes {
            c.changed.push(fp.to_string());
        }
    }
}

/// A scan known to report exactly what the target's last scan reported,
/// nothing having changed the target's state since: the same report, byte
/// for byte, with the same metadata. Applying it in full would change only
/// `last_seen` (every observation finds its record as that scan left it,
/// and that scan already resolved what it did not report), so only that
/// is done, on the records of `observed`, the fingerprints that scan
/// observed, sorted and each once. Returns `false`, changing nothing, when
/// `observed` is not sorted or a record is missing or resolved: the state
/// is not what that scan left, and the scan must be applied in full.
pub fn observe_unchanged(
    ts: &mut TargetState,
    observed: &(impl Fingerprints + ?Sized),
    now: DateTime<Utc>,
    mut changes: Option<&mut Changes>,
) -> bool {
    // Both sides sorted: one walk through the target's records, rather
    // than a search of the tree for each fingerprint, and one through the
    // fingerprints (a compact list spells each out as it goes). The records
    // are only changed once every one is found.
    let mut records = ts.findings.iter_mut();
    let mut found: Vec<(&String, &mut Box<FindingRecord>)> = Vec::new();
    let all = observed.each(&mut |fp| {
        if found.last().is_some_and(|(p, _)| p.as_str() >= fp) {
            return false;
        }
        match records.find(|(k, _)| k.as_str() >= fp) {
            Some((k, rec)) if k == fp && rec.status != Status::Resolved => {
                found.push((k, rec));
                true
            }
            _ => false,
        }
    });
    if !all {
        return false;
    }
    for (fp, rec) in found {
        let before = std::mem::replace(&mut rec.last_seen, now);
        if let Some(c) = changes.as_deref_mut() {
            if c.seen_moved(before, now) {
                c.changed.push(fp.clone());
            }
        }
    }
    true
}

/// Fingerprints a scan observed, sorted, however they are kept.
pub trait Fingerprints {
    /// Calls `f` on each in order while it returns true; whether it did
    /// on every one.
    fn each(&self, f: &mut dyn FnMut(&str) -> bool) -> bool;
}

impl Fingerprints for [String] {
    fn each(&self, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.iter().all(|fp| f(fp))
    }
}

impl Fingerprints for Vec<String> {
    fn each(&self, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.as_slice().each(f)
    }
}

/// A known finding reported again: updates its record, pushing what
/// happened to it (reopened, reassigned, updated). Returns whether the
/// record changed in a way no transition tells of (see [`Changes`]).
#[allow(clippy::too_many_arguments)]
fn observe_known(
    rec: &mut FindingRecord,
    fp: &str,
    finding: Finding,
    attribution: Arc<Attribution>,
    ticket_key: Arc<str>,
    now: DateTime<Utc>,
    policy: &SlaPolicy,
    changes: Option<&Changes>,
    out: &mut Vec<Transition>,
) -> bool {
    let before_sev = rec.severity();
    let same_primary =
        rec.finding.scanner == finding.scanner || !rec.sources.contains(&rec.finding.scanner);
    let mut evidence_changed = false;
    let mut silent = false;
    let sev = finding.severity;
    silent |= rec.sources.insert(&finding.scanner, sev);
    if same_primary {
        let evidence = evidence_hash(&finding);
        // An empty hash means "not known" (the primary scanner changed).
        evidence_changed = !rec.evidence.is_empty() && evidence != rec.evidence;
        let finding = stored(finding);
        let same = finding == rec.finding;
        silent |= evidence != rec.evidence || !same;
        if evidence != rec.evidence {
            rec.evidence = evidence;
        }
        // An unchanged finding keeps the stored copy and drops the one
        // just decoded: freeing that one is cheap (it is in the cache),
        // the stored one's memory mostly is not.
        if !same {
            rec.finding = finding;
        }
    }
    let seen_before = std::mem::replace(&mut rec.last_seen, now);
    if let Some(c) = changes {
        silent |= c.seen_moved(seen_before, now);
    }
    if !Arc::ptr_eq(&rec.attribution, &attribution) {
        silent |= rec.attribution != attribution;
        rec.attribution = attribution;
    }
    // The ticket left, for a reassignment (the same key when it did not
    // move).
    let previous_ticket = if rec.ticket_key == ticket_key {
        ticket_key
    } else {
        silent = true;
        std::mem::replace(&mut rec.ticket_key, ticket_key)
    };
    // What the primary scanner's report says of it now (its latest
    // report when another scanner reported this time).
    let said = rec.finding.disposition.as_ref().map(|d| d.state);
    if rec.status == Status::Resolved {
        rec.resolved_at = None;
        rec.team.clone_from(&rec.attribution.team);
        if policy.restart_on_reopen {
            rec.opened_at = now;
            rec.sla_breached = false;
        }
        rec.due_at = due(policy, rec);
        // Back as it is now: not affected by a standing VEX statement,
        // suppressed or not affected as its report says, or open.
        let kind = if rec.vex.is_some() {
            rec.status = Status::NotAffected;
            FindingEventKind::NotAffected
        } else if let Some(state) = said {
            rec.status = Status::of(state);
            disposition_event(state)
        } else {
            rec.status = Status::Open;
            FindingEventKind::Reopened
        };
        push(rec, fp, kind, None, out);
        return silent;
    }
    // A report's suppression or vendor status is followed, unless a human
    // (risk accepted, false positive) or a VEX statement decided.
    let follows_report = match rec.status {
        Status::Open | Status::Suppressed => true,
        Status::NotAffected => rec.vex.is_none(),
        Status::Accepted | Status::FalsePositive | Status::Resolved => false,
    };
    if follows_report {
        let now_status = said.map_or(Status::Open, Status::of);
        if now_status != rec.status {
            rec.status = now_status;
            let kind = match said {
                Some(state) => disposition_event(state),
                None => {
                    // No longer suppressed, or affected after all: open
                    // again, on a new SLA clock if the policy says so.
                    if policy.restart_on_reopen {
                        rec.opened_at = now;
                        rec.sla_breached = false;
                    }
                    rec.due_at = due(policy, rec);
                    FindingEventKind::Reopened
                }
            };
            push(rec, fp, kind, None, out);
        }
    }
    if rec.attribution.team != rec.team {
        let previous_team = std::mem::replace(&mut rec.team, rec.attribution.team.clone());
        push(rec, fp, FindingEventKind::Reassigned, previous_team, out);
        if let Some(last) = out.last_mut() {
            last.previous_ticket = Some(previous_ticket);
        }
    }
    let after_sev = rec.severity();
    if after_sev != before_sev {
        rec.due_at = due(policy, rec);
    }
    if rec.status == Status::Open && (after_sev != before_sev || evidence_changed) {
        push(rec, fp, FindingEventKind::Updated, None, out);
    }
    silent
}

fn resolve_absent(
    ts: &mut TargetState,
    scan: &ScanMeta,
    seen: &HashSet<String>,
    now: DateTime<Utc>,
    policy: &SlaPolicy,
    out: &mut Vec<Transition>,
    changes: Option<&mut Changes>,
) {
    let mut changed = Vec::new();
    for (fp, rec) in ts.findings.iter_mut() {
        if !matches!(
            rec.status,
            Status::Open | Status::Accepted | Status::Suppressed | Status::NotAffected
        ) || seen.contains(fp)
        {
            continue;
        }
        let category = rec.finding.category;
        let before = rec.severity();
        let dropped: Vec<String> = rec
            .sources
            .names()
            .filter(|s| scan.coverage.contains(&(s.to_string(), category)))
            .map(str::to_string)
            .collect();
        if dropped.is_empty() {
            continue;
        }
        for s in &dropped {
            rec.sources.remove(s);
        }
        changed.push(fp.clone());
        if rec.sources.is_empty() {
            let previous = std::mem::replace(&mut rec.status, Status::Resolved);
            rec.resolved_at = Some(now);
            rec.accepted_until = None;
            push(rec, fp, FindingEventKind::Resolved, None, out);
            if let Some(last) = out.last_mut() {
                last.previous_status = Some(previous);
            }
        } else {
            // Another tool still reports it; follow its view.
            if !rec.sources.contains(&rec.finding.scanner) {
                if let Some(primary) = rec.sources.names().next() {
                    rec.finding.scanner = primary.to_string();
                    rec.evidence.clear();
                }
            }
            let after = rec.severity();
            if after != before {
                rec.due_at = due(policy, rec);
                if rec.status == Status::Open {
                    push(rec, fp, FindingEventKind::Updated, None, out);
                }
            }
        }
    }
    if let Some(c) = changes {
        c.changed.append(&mut changed);
    }
}

/// Applies a decision to the target's state.
pub fn apply_decision(
    ts: &mut TargetState,
    d: &DecisionRecord,
    now: DateTime<Utc>,
    policy: &SlaPolicy,
) -> Result<Vec<Transition>, DecisionError> {
    d.validate()?;
    let rec = ts
        .findings
        .get_mut(&d.fingerprint)
        .ok_or_else(|| DecisionError::UnknownFinding {
            target: d.target.to_string(),
            fingerprint: d.fingerprint.clone(),
        })?;
    let not_applicable = |decision: &'static str, status: Status| DecisionError::NotApplicable {
        fingerprint: d.fingerprint.clone(),
        decision,
        status: status.as_str(),
    };
    let mut out = Vec::new();
    match (d.decision, rec.status) {
        (DecisionKind::AcceptRisk, Status::Open | Status::Accepted) => {
            if rec.status == Status::Accepted && rec.accepted_until == d.expires_at {
                return Ok(out); // the same decision again
            }
            rec.status = Status::Accepted;
            rec.accepted_until = d.expires_at;
            push(
                rec,
                &d.fingerprint,
                FindingEventKind::Accepted,
                None,
                &mut out,
            );
        }
        (DecisionKind::AcceptRisk, s) => return Err(not_applicable("accept the risk of", s)),
        (DecisionKind::FalsePositive, Status::FalsePositive) => {}
        (DecisionKind::FalsePositive, _) => {
            rec.status = Status::FalsePositive;
            rec.accepted_until = None;
            push(
                rec,
                &d.fingerprint,
                FindingEventKind::FalsePositive,
                None,
                &mut out,
            );
        }
        (DecisionKind::Revoke, Status::Accepted | Status::FalsePositive) => {
            rec.status = Status::Open;
            rec.accepted_until = None;
            rec.due_at = due(policy, rec);
            push(
                rec,
                &d.fingerprint,
                FindingEventKind::Reopened,
                None,
                &mut out,
            );
            breach_if_due(rec, &d.fingerprint, now, &mut out);
        }
        (DecisionKind::Revoke, s) => return Err(not_applicable("revoke a decision on", s)),
    }
    Ok(out)
}

/// Applies the statements of a VEX document to the findings of one target
/// (see [`crate::normalize::vex`]): for each finding, the last statement
/// about it decides. Returns the transitions and how many findings a
/// statement was about.
pub fn apply_vex(
    ts: &mut TargetState,
    target: &Target,
    doc: &crate::normalize::vex::VexDocument,
    now: DateTime<Utc>,
    policy: &SlaPolicy,
) -> (Vec<Transition>, usize) {
    use crate::normalize::vex::VexDecision;
    let mut out = Vec::new();
    let mut matched = 0;
    for (fp, rec) in ts.findings.iter_mut() {
        let Some(st) = doc
            .statements
            .iter()
            .rev()
            .find(|st| st.matches(target, &rec.finding))
        else {
            continue;
        };
        matched += 1;
        match &st.decision {
            VexDecision::NotAffected(status) => {
                let d = Disposition {
                    state: DispositionState::NotAffected,
                    kind: Some(doc.kind.to_string()),
                    status: Some(status.clone()),
                    justification: st.justification.clone(),
                };
                let same = rec.vex.as_deref() == Some(&d);
                rec.vex = Some(Box::new(d));
                match rec.status {
                    // Gone: recorded, so it comes back not affected.
                    Status::Resolved | Status::FalsePositive => {}
                    Status::NotAffected if same => {}
                    _ => {
                        rec.status = Status::NotAffected;
                        rec.accepted_until = None;
                        push(rec, fp, FindingEventKind::NotAffected, None, &mut out);
                    }
                }
            }
            VexDecision::Affected => {
                if rec.vex.take().is_some() && rec.status == Status::NotAffected {
                    rec.status = Status::Open;
                    rec.due_at = due(policy, rec);
                    push(rec, fp, FindingEventKind::Reopened, None, &mut out);
                    breach_if_due(rec, fp, now, &mut out);
                }
            }
            VexDecision::FalsePositive => {
                if rec.status != Status::FalsePositive && rec.status != Status::Resolved {
                    rec.vex = None;
                    rec.status = Status::FalsePositive;
                    rec.accepted_until = None;
                    push(rec, fp, FindingEventKind::FalsePositive, None, &mut out);
                }
            }
            VexDecision::Investigating => {}
        }
    }
    (out, matched)
}

fn breach_if_due(rec: &mut FindingRecord, fp: &str, now: DateTime<Utc>, out: &mut Vec<Transition>) {
    if rec.status == Status::Open && !rec.sla_breached {
        if let Some(due) = rec.due_at {
            if due <= now {
                rec.sla_breached = true;
                push(rec, fp, FindingEventKind::SlaBreached, None, out);
            }
        }
    }
}

/// Re-runs attribution over the open and accepted findings of a target
/// (after the ownership configuration changed): a finding whose team
/// changes is `reassigned` and moves to its new ticket; a changed
/// explanation with the same team is recorded silently. With `changed`,
/// the fingerprints of every record it changed are listed there.
/// `decide` gives a finding's attribution; `ticket_key` the key of its
/// ticket under its new team, asked only for a finding whose team changed.
pub fn reattribute(
    ts: &mut TargetState,
    decide: impl Fn(&Finding) -> Arc<Attribution>,
    ticket_key: impl Fn(&str, &Finding, Option<&str>) -> String,
    mut changed: Option<&mut Vec<String>>,
) -> Vec<Transition> {
    let mut out = Vec::new();
    for (fp, rec) in ts.findings.iter_mut() {
        if !matches!(rec.status, Status::Open | Status::Accepted) {
            continue;
        }
        let attribution = decide(&rec.finding);
        if !Arc::ptr_eq(&rec.attribution, &attribution) && rec.attribution != attribution {
            if let Some(c) = changed.as_deref_mut() {
                c.push(fp.clone());
            }
        }
        if attribution.team == rec.team {
            rec.attribution = attribution;
            continue;
        }
        let key = ticket_key(fp, &rec.finding, attribution.team.as_deref());
        let previous_team = std::mem::replace(&mut rec.team, attribution.team.clone());
        rec.attribution = attribution;
        let previous_ticket = std::mem::replace(&mut rec.ticket_key, key.into());
        push(
            rec,
            fp,
            FindingEventKind::Reassigned,
            previous_team,
            &mut out,
        );
        if let Some(last) = out.last_mut() {
            last.previous_ticket = Some(previous_ticket);
        }
    }
    out
}

/// The first moment [`tick`] has something to do on `ts`: the earliest
/// acceptance to expire and SLA to breach; `None` while nothing would
/// ever change by the clock alone.
pub fn next_tick(ts: &TargetState) -> Option<DateTime<Utc>> {
    ts.findings
        .values()
        .filter_map(|rec| match rec.status {
            Status::Accepted => rec.accepted_until,
            Status::Open if !rec.sla_breached => rec.due_at,
            _ => None,
        })
        .min()
}

/// Advances the clock: expired acceptances reopen, open findings past their
/// due date breach (once).
pub fn tick(ts: &mut TargetState, now: DateTime<Utc>) -> Vec<Transition> {
    let mut out = Vec::new();
    for (fp, rec) in ts.findings.iter_mut() {
        if rec.status == Status::Accepted {
            if let Some(until) = rec.accepted_until {
                if until <= now {
                    rec.status = Status::Open;
                    rec.accepted_until = None;
                    push(rec, fp, FindingEventKind::AcceptanceExpired, None, &mut out);
                }
            }
        }
        breach_if_due(rec, fp, now, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Category;

    /// A target's first scan keeps no list of what it saw (none of its
    /// records can be resolved by their absence): a fingerprint reported
    /// twice in it is one record opened once, and the next complete scan
    /// still resolves what it no longer reports, and only that.
    #[test]
    fn a_first_scan_opens_each_fingerprint_once_and_the_next_resolves_what_went() {
        let target: Target = "repo:github.com/acme/x".parse().unwrap();
        let scan = ScanMeta {
            scan_id: "s".into(),
            target: target.clone(),
            commit: None,
            git_ref: None,
            complete: true,
            coverage: [("bandit".to_string(), Category::Sast)].into(),
            rule_help: Default::default(),
        };
        let obs = |fp: &str| Observation {
            fingerprint: fp.to_string(),
            finding: Finding::new("bandit", Category::Sast, "B101", Severity::Low, "m"),
            attribution: Arc::new(Attribution::unattributed()),
            ticket_key: "tk".into(),
        };
        let policy = SlaPolicy::default();
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let mut ts = TargetState::default();
        let mut changes = Changes::new(std::time::Duration::ZERO);
        let first = apply_scan(
            &mut ts,
            &scan,
            [obs("a"), obs("b"), obs("a")],
            now,
            &policy,
            Some(&mut changes),
        );
        let kinds = |t: &[Transition]| {
            t.iter()
                .map(|t| (t.fingerprint.clone(), t.kind))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(&first),
            [
                ("a".to_string(), FindingEventKind::Opened),
                ("b".to_string(), FindingEventKind::Opened)
            ]
        );
        assert_eq!(ts.findings.len(), 2);
        assert!(changes.baseline);
        let later = now + chrono::Duration::days(1);
        let second = apply_scan(&mut ts, &scan, [obs("b")], later, &policy, None);
        assert_eq!(
            kinds(&second),
            [("a".to_string(), FindingEventKind::Resolved)]
        );
        assert_eq!(ts.findings["a"].status, Status::Resolved);
        assert_eq!(ts.findings["b"].status, Status::Open);
    }

    proptest::proptest! {
        /// The order of a first scan's fingerprints is their order as
        /// texts, whether they differ within their first 16 bytes or only
        /// after them, are shorter, or hold zero bytes; and there is none
        /// when a fingerprint is there twice.
        #[test]
        fn distinct_order_is_the_order_of_the_fingerprints_as_texts(
            fps in proptest::collection::vec("(v1:0123456789abc)?[ab\\x00]{0,3}", 2..40),
        ) {
            let observed: Vec<Observation> = fps
                .iter()
                .map(|fp| Observation {
                    fingerprint: fp.clone(),
                    finding: Finding::new("bandit", Category::Sast, "B1", Severity::Low, "m"),
                    attribution: Arc::new(Attribution::unattributed()),
                    ticket_key: "tk".into(),
                })
                .collect();
            let mut sorted: Vec<usize> = (0..fps.len()).collect();
            sorted.sort_by(|&a, &b| fps[a].cmp(&fps[b]));
            let twice = sorted.windows(2).any(|w| fps[w[0]] == fps[w[1]]);
            match distinct_order(&observed, 2) {
                Some(order) => {
                    proptest::prop_assert!(!twice);
                    proptest::prop_assert_eq!(order, sorted);
                }
                None => proptest::prop_assert!(twice),
            }
        }
    }

    /// A large first scan builds its records on all cores: the
    /// transitions, their order, the records and what `changes` lists are
    /// those of the records built one at a time, with fingerprints each
    /// seen once, and with some seen twice (which goes one at a time).
    #[test]
    fn a_large_first_scan_is_the_first_scan_applied_one_at_a_time() {
        let target: Target = "repo:github.com/acme/x".parse().unwrap();
        let scan = ScanMeta {
            scan_id: "s".into(),
            target: target.clone(),
            commit: Some("abc".into()),
            git_ref: Some("main".into()),
            complete: true,
            coverage: [("bandit".to_string(), Category::Sast)].into(),
            rule_help: Default::default(),
        };
        let team = Arc::new(Attribution {
            team: Some("payments".into()),
            ..Attribution::unattributed()
        });
        let observed = |n: usize, twice: bool| -> Vec<Observation> {
            (0..n)
                .map(|i| {
                    let scanner = if i % 3 == 0 { "semgrep" } else { "bandit" };
                    let severity = [Severity::Low, Severity::High, Severity::Critical][i % 3];
                    let mut finding = Finding::new(
                        scanner,
                        Category::Sast,
                        format!("R{}", i % 7),
                        severity,
                        format!("call {i} at line {}", i * 3),
                    );
                    finding.evidence.snippet = Some(format!("  call({i})\n"));
                    if i % 50 == 0 {
                        finding.disposition = Some(Box::new(crate::model::Disposition {
                            state: crate::model::DispositionState::Suppressed,
                            kind: Some("in_source".into()),
                            status: None,
                            justification: None,
                        }));
                    }
                    // Fingerprints out of key order, as a report gives them.
                    let k = if twice && i % 97 == 5 { i - 1 } else { i };
                    Observation {
                        fingerprint: format!(
                            "{:016x}",
                            (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                        ),
                        finding,
                        attribution: if i % 2 == 0 {
                            Arc::clone(&team)
                        } else {
                            Arc::new(Attribution::unattributed())
                        },
                        ticket_key: format!("tk{}", i % 11).into(),
                    }
                })
                .collect()
        };
        let policy = SlaPolicy::default();
        let now = DateTime::<Utc>::UNIX_EPOCH;
        for twice in [false, true] {
            let obs = observed(3 * PARALLEL_FIRST_SCAN, twice);
            assert_eq!(distinct_order(&obs, PARALLEL_FIRST_SCAN).is_some(), !twice);
            let mut states = Vec::new();
            for parallel_from in [PARALLEL_FIRST_SCAN, usize::MAX] {
                let mut ts = TargetState::default();
                ts.baselined.insert("semgrep".into());
                let mut changes = Changes::new(std::time::Duration::ZERO);
                let transitions = apply_scan_from(
                    &mut ts,
                    &scan,
                    obs.clone(),
                    now,
                    &policy,
                    Some(&mut changes),
                    parallel_from,
                );
                // The records the scan opened share its origins (one per
                // provenance), on either path.
                let mut origins: Vec<&Arc<crate::model::Origin>> = Vec::new();
                for rec in ts.findings.values() {
                    let o = rec.origin.as_ref().unwrap();
                    if !origins.iter().any(|p| Arc::ptr_eq(p, o)) {
                        origins.push(o);
                    }
                }
                assert!(origins.len() <= 2, "{} origins", origins.len());
                let state = serde_json::to_string(&ts).unwrap();
                states.push((transitions, state, changes.baseline, changes.into_sorted()));
            }
            assert!(states[0].0.len() > 2 * PARALLEL_FIRST_SCAN);
            assert_eq!(states[0], states[1], "twice: {twice}");
        }
    }

    #[test]
    fn last_seen_moves_when_its_millisecond_period_changes() {
        // The definition: milliseconds since the epoch, divided by the
        // period (rounding down), differ.
        let plain = |ms: i64, before: DateTime<Utc>, now: DateTime<Utc>| {
            let p = ms.max(1);
            before.timestamp_millis().div_euclid(p) != now.timestamp_millis().div_euclid(p)
        };
        let at = |ms: i64, ns: u32| {
            DateTime::<Utc>::from_timestamp_millis(ms).unwrap()
                + chrono::Duration::nanoseconds(i64::from(ns))
        };
        let times = [
            at(0, 0),
            at(-1, 0),
            at(-1, 999_999),
            at(-3_600_000, 1),
            at(1_764_000_000_000, 0),
            at(1_764_000_000_000, 999_999),
            at(1_764_000_000_001, 0),
            at(1_764_003_599_999, 500_000),
            at(1_764_003_600_000, 0),
            at(1_764_086_400_000, 0),
        ];
        for ms in [0, 1, 7, 1000, 3_600_000, 86_400_000] {
            let c = Changes::new(std::time::Duration::from_millis(ms as u64));
            for &now in &times {
                for &before in &times {
                    assert_eq!(
                        c.seen_moved(before, now),
                        plain(ms, before, now),
                        "period {ms} ms, {before} -> {now}"
                    );
                }
            }
        }
    }

    #[test]
    fn evidence_hash_is_the_hash_of_the_digit_folded_message_and_snippet() {
        // The plain definition, char by char: the hash must not change
        // between versions, or every finding would look changed.
        fn plain(message: &str, snippet: Option<&str>) -> String {
            let mut out = String::new();
            let mut in_digits = false;
            for c in message.chars() {
                if c.is_ascii_digit() {
                    if !in_digits {
                        out.push('#');
                    }
                    in_digits = true;
                } else {
                    in_digits = false;
                    out.push(c);
                }
            }
            out.push('\0');
            out.push_str(snippet.map_or("", str::trim));
            hex::encode(&Sha256::digest(out.as_bytes())[..8])
        }
        let mut f = Finding::new("bandit", Category::Sast, "B101", Severity::Low, "x");
        for (m, snip) in [
            ("Use of assert detected.", Some("  assert x\n")),
            ("line 12 of 3400: 7 bad", None),
            ("0", Some("")),
            ("über 42ß, ½ and ٣ (Arabic-Indic three) 9", Some("\tcode 1")),
            ("", None),
            ("trailing 123", Some("x")),
        ] {
            f.message = m.to_string();
            f.evidence.snippet = snip.map(str::to_string);
            assert_eq!(evidence_hash(&f), plain(m, snip), "{m:?}");
        }
    }
}
