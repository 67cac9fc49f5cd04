//! The state changelog: one compacted topic, co-partitioned with the
//! reports topic. Partition p of the changelog holds the state of
//! partition p of the reports topic, one record per finding and per ticket,
//! so compaction keeps exactly the latest version of each.
//!
//! Keys: `f\0<target>\0<fingerprint>` for findings, `t\0<target>\0<ticket
//! key>` for tickets. Values: the record as JSON; no value (a tombstone)
//! removes it.
//!
//! One more key per target, `s\0<target>\0`, holds what is known of its
//! last scan ([`ScanRecord`]), so that after a restart or a rebalance a
//! rescan sending the same report again is recognized without decoding
//! it. It is written after the records of the scan it describes, and it
//! holds only while no record of its target comes after it in the log:
//! anything else that changes the target (a decision, the SLA clock, a
//! re-attribution, a scan that is not remembered) writes records of the
//! target and so voids it, with no tombstone needed.
//!
//! One more key per target, `b\0<target>\0`, holds its baseline: the
//! scanners that completed a scan of it (so that what they report next is
//! introduced, not inherited), written when one completes its first. A
//! changelog written before there was one restores it from the records
//! (see [`crate::lifecycle::TargetState::settle_baseline`]).
//!
//! One key per partition, `o\0<reports topic>\0<partition>`, heads every
//! group of records one step wrote ([`Applied`]): the offset of the last
//! reports message applied (the one that caused the group, or the one
//! before a step no message caused), and how many records follow. A
//! group goes out only once all the events of its message and of every
//! message before it are acknowledged. A restore keeps a group only when
//! all its records follow its head; a group cut short by a crash is left
//! out whole, as if its message had never been applied, and the message
//! is applied again when it is redelivered (its events are sent again
//! with the same ids). Applying the message on a state holding part of
//! its records would not rewrite the rest (a ticket whose findings were
//! already there would be lost). Compaction keeps only the last head, and
//! nothing after the last head can be compacted away (each group writes
//! a key once, and every later write has a head of its own), so the count
//! holds. The offset committed to the group may lag behind (it is
//! committed after the records are acknowledged, and auto-commit runs
//! every few seconds): a redelivered message up to the applied one is
//! passed over. A redelivered message produces the same events or none,
//! whatever the moment of a crash.
//!
//! A head written by an earlier version has no count: its records were
//! written after it and may be there in part. The message it names is
//! then applied again with its events dropped, as that version did.

use crate::lifecycle::{FindingRecord, State};
use crate::ticket::TicketRecord;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// What is known of a target's last scan, as the changelog keeps it (see
/// the module's documentation, and [`crate::lifecycle::ScanRecord`]).
pub use crate::lifecycle::ScanRecord;

/// The largest last scan record written, in bytes (about 13,000 observed
/// fingerprints): well under librdkafka's and brokers' default largest
/// message of 1 MB.
pub const MAX_SCAN_RECORD_BYTES: usize = 512 * 1024;

/// The record of `target`'s last scan; a tombstone when it would be larger
/// than [`MAX_SCAN_RECORD_BYTES`] (an older one must not hold either).
pub fn scan_record(target: &str, scan: &ScanRecord) -> Record {
    Record {
        key: key(b's', target, ""),
        value: serde_json::to_vec(scan)
            .ok()
            .filter(|v| v.len() <= MAX_SCAN_RECORD_BYTES),
    }
}

/// The baseline record of `target` ([`crate::lifecycle::TargetState::baselined`]
/// as a JSON array), when it has any.
pub fn baseline_record(state: &State, target: &str) -> Option<Record> {
    let ts = state.targets.get(target)?;
    if ts.baselined.is_empty() {
        return None;
    }
    Some(Record {
        key: key(b'b', target, ""),
        value: serde_json::to_vec(&ts.baselined).ok(),
    })
}

/// The value under the `o` key: the last reports message whose records
/// were written (see the module's documentation).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Its offset in the reports partition; -1 before any.
    pub offset: i64,
    /// The records of the group this heads; absent in a head written by
    /// an earlier version (see the module's documentation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
}

/// The head of a group of `records` records written when `offset` of
/// `topic`'s `partition` was applied (see the module's documentation).
pub fn applied_record(topic: &str, partition: i32, offset: i64, records: usize) -> Record {
    Record {
        key: key(b'o', topic, &partition.to_string()),
        value: serde_json::to_vec(&Applied {
            offset,
            records: Some(records as u64),
        })
        .ok(),
    }
}

/// One changelog record ready to produce.
#[derive(Debug, Clone)]
pub struct Record {
    /// The key.
    pub key: Vec<u8>,
    /// The value; `None` deletes.
    pub value: Option<Vec<u8>>,
}

fn key(kind: u8, target: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + target.len() + 1 + id.len());
    k.push(kind);
    k.push(0);
    k.extend_from_slice(target.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The records for the named findings of `target` (a tombstone for one it
/// no longer has) and the named tickets it has, or all its tickets.
pub fn records(
    state: &State,
    target: &str,
    fingerprints: &[String],
    tickets: Option<&[String]>,
) -> Vec<Record> {
    let Some(ts) = state.targets.get(target) else {
        return Vec::new();
    };
    let mut out =
        Vec::with_capacity(fingerprints.len() + tickets.map_or(ts.tickets.len(), <[_]>::len));
    let mut buf = Vec::with_capacity(4096);
    for fp in fingerprints {
        let value = ts.findings.get(fp).and_then(|rec| json(&mut buf, rec));
        out.push(Record {
            key: key(b'f', target, fp),
            value,
        });
    }
    let mut ticket = |k: &str, rec: &TicketRecord| {
        let value = json(&mut buf, rec);
        out.push(Record {
            key: key(b't', target, k),
            value,
        });
    };
    match tickets {
        Some(keys) => keys
            .iter()
            .filter_map(|k| ts.tickets.get(k).map(|rec| (k, rec)))
            .for_each(|(k, rec)| ticket(k, rec)),
        None => ts.tickets.iter().for_each(|(k, rec)| ticket(k, rec)),
    }
    out
}

/// `value` as JSON, written into `buf` (cleared first) and copied out at
/// its size: cheaper than growing a new vector from empty for every record.
fn json(buf: &mut Vec<u8>, value: &impl serde::Serialize) -> Option<Vec<u8>> {
    buf.clear();
    serde_json::to_writer(&mut *buf, value).ok()?;
    Some(buf.as_slice().to_vec())
}

/// Why a changelog record could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A key of an unknown shape.
    #[error("changelog key {0:?} is not f\\0target\\0id, t\\0target\\0id, b\\0target\\0, s\\0target\\0 or o\\0topic\\0partition")]
    Key(String),
    /// A value that does not decode.
    #[error("changelog record {key:?}: {message}")]
    Value {
        /// The key.
        key: String,
        /// The decoder's message.
        message: String,
    },
}

/// One decoded changelog record.
#[derive(Debug)]
pub enum Parsed {
    /// A finding record, or its tombstone.
    Finding {
        /// Target spec.
        target: String,
        /// Fingerprint.
        id: String,
        /// The record; `None` deletes.
        record: Option<Box<FindingRecord>>,
    },
    /// A ticket record, or its tombstone.
    Ticket {
        /// Target spec.
        target: String,
        /// Ticket key.
        id: String,
        /// The record; `None` deletes.
        record: Option<Box<TicketRecord>>,
    },
    /// A target's baseline: the scanners that completed a scan of it.
    Baseline {
        /// Target spec.
        target: String,
        /// The scanners; `None` deletes.
        scanners: Option<std::collections::BTreeSet<String>>,
    },
    /// A target's last scan: not part of the state (see [`RawLog::take_scans`]).
    Scan,
    /// The partition's applied offset: not part of the state (see
    /// [`RawLog::applied`]).
    Applied,
}

/// The target a changelog key belongs to, checking the key's shape.
pub fn target_of(key: &[u8]) -> Result<&str, RestoreError> {
    let mut parts = key.splitn(3, |&b| b == 0);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(b"f" | b"t" | b"s" | b"b"), Some(target), Some(_)) => std::str::from_utf8(target)
            .map_err(|_| RestoreError::Key(String::from_utf8_lossy(key).into_owned())),
        _ => Err(RestoreError::Key(String::from_utf8_lossy(key).into_owned())),
    }
}

/// Decodes one changelog record.
pub fn parse(key: &[u8], value: Option<&[u8]>) -> Result<Parsed, RestoreError> {
    let shown = || String::from_utf8_lossy(key).into_owned();
    let mut parts = key.splitn(3, |&b| b == 0);
    let (Some(kind), Some(target), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(RestoreError::Key(shown()));
    };
    let (Ok(target), Ok(id)) = (std::str::from_utf8(target), std::str::from_utf8(id)) else {
        return Err(RestoreError::Key(shown()));
    };
    let bad = |e: serde_json::Error| RestoreError::Value {
        key: shown(),
        message: e.to_string(),
    };
    let (target, id) = (target.to_string(), id.to_string());
    match kind {
        b"f" => Ok(Parsed::Finding {
            target,
            id,
            record: value
                .map(|v| serde_json::from_slice(v).map_err(bad))
                .transpose()?,
        }),
        b"t" => Ok(Parsed::Ticket {
            target,
            id,
            record: value
                .map(|v| serde_json::from_slice(v).map_err(bad))
                .transpose()?,
        }),
        b"b" => Ok(Parsed::Baseline {
            target,
            scanners: value
                .map(|v| serde_json::from_slice(v).map_err(bad))
                .transpose()?,
        }),
        b"s" => Ok(Parsed::Scan),
        b"o" => Ok(Parsed::Applied),
        _ => Err(RestoreError::Key(shown())),
    }
}

/// Bytes per block of a [`RawLog`].
const BLOCK: usize = 1 << 20;

/// One record of a [`RawLog`]: where its key and value sit.
#[derive(Debug, Clone, Copy)]
struct RawRec {
    offset: i64,
    block: u32,
    start: u32,
    key_len: u32,
    /// `u32::MAX` for a tombstone.
    value_len: u32,
}

/// The changelog records of one partition as read at restore, undecoded:
/// keys and values copied back to back into large blocks (no allocation
/// per record), indexed by target as runs of consecutive records (a
/// target's records mostly come together, as one scan wrote them). A
/// target's records are decoded when it is first needed, or in the
/// background.
#[derive(Debug, Default)]
pub struct RawLog {
    blocks: Vec<Vec<u8>>,
    recs: Vec<RawRec>,
    /// Per target, its runs in log order: `recs[start..end]`.
    runs: HashMap<Box<str>, Vec<(u32, u32)>>,
    /// Per target, its last scan record read, undecoded, with its offset.
    scans: HashMap<Box<str>, ScanEntry>,
    /// The head of the last group read whole.
    applied: Option<Applied>,
    /// The last group read while its records are not all there yet: read
    /// into the log as they come, and taken out again should the group
    /// turn out cut short.
    tail: Option<Tail>,
    /// Records of groups cut short, left out.
    cut: usize,
}

/// A target's last scan record in a [`RawLog`]: its offset and value.
type ScanEntry = (i64, Option<Vec<u8>>);

/// A group of records whose head was read, not all its records yet, and
/// what the log was before it, to take it out again.
#[derive(Debug, Default)]
struct Tail {
    head: Applied,
    /// Records of the group read so far.
    seen: u64,
    /// `recs.len()` at the head.
    start: usize,
    /// Each target the group wrote, with its runs before the group (`None`:
    /// the target was not in the log).
    runs: HashMap<Box<str>, Option<Vec<(u32, u32)>>>,
    /// Each target whose scan record the group wrote, with the one before.
    scans: HashMap<Box<str>, Option<ScanEntry>>,
}

/// A record taken out of a [`RawLog`].
pub struct RawRecord<'a> {
    /// Its offset in the changelog partition.
    pub offset: i64,
    /// The key.
    pub key: &'a [u8],
    /// The value; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
}

impl RawLog {
    /// An empty log.
    pub fn new() -> RawLog {
        RawLog::default()
    }

    /// Appends a record read at `offset`; the key must name a target.
    pub fn push(
        &mut self,
        offset: i64,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), RestoreError> {
        if key.first() == Some(&b'o') && key.get(1) == Some(&0) {
            // A group still short is left out: its message was applied
            // again after the crash that cut it.
            self.cut_tail();
            // A tombstone (none is written) forgets it.
            let Some(v) = value else {
                self.applied = None;
                return Ok(());
            };
            let head = serde_json::from_slice::<Applied>(v).map_err(|e| RestoreError::Value {
                key: String::from_utf8_lossy(key).into_owned(),
                message: e.to_string(),
            })?;
            match head.records {
                Some(n) if n > 0 => {
                    self.tail = Some(Tail {
                        head,
                        start: self.recs.len(),
                        ..Tail::default()
                    })
                }
                _ => self.applied = Some(head),
            }
            return Ok(());
        }
        if let Some(t) = &mut self.tail {
            // What the log was before the group, the first time the group
            // writes a target.
            let target = target_of(key)?;
            if key.first() == Some(&b's') {
                if !t.scans.contains_key(target) {
                    t.scans
                        .insert(target.into(), self.scans.get(target).cloned());
                }
            } else if !t.runs.contains_key(target) {
                t.runs.insert(target.into(), self.runs.get(target).cloned());
            }
        }
        self.push_record(offset, key, value)?;
        if let Some(t) = &mut self.tail {
            t.seen += 1;
            if t.seen >= t.head.records.unwrap_or(0) {
                self.applied = self.tail.take().map(|t| t.head);
            }
        }
        Ok(())
    }

    /// Ends the read: a last group cut short is taken out (see
    /// [`RawLog::push`]).
    pub fn seal(&mut self) {
        self.cut_tail();
    }

    /// Takes the group still short out of the log, as if it had never
    /// been written.
    fn cut_tail(&mut self) {
        let Some(t) = self.tail.take() else {
            return;
        };
        self.cut += self.recs.len() - t.start;
        self.recs.truncate(t.start);
        for (target, runs) in t.runs {
            match runs {
                Some(runs) => {
                    self.runs.insert(target, runs);
                }
                None => {
                    self.runs.remove(&target);
                }
            }
        }
        for (target, scan) in t.scans {
            match scan {
                Some(scan) => {
                    self.scans.insert(target, scan);
                }
                None => {
                    self.scans.remove(&target);
                }
            }
        }
    }

    /// Appends a record of a target.
    fn push_record(
        &mut self,
        offset: i64,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), RestoreError> {
        let target = target_of(key)?;
        if key.first() == Some(&b's') {
            self.scans
                .insert(target.into(), (offset, value.map(<[u8]>::to_vec)));
            return Ok(());
        }
        let len = key.len() + value.map_or(0, <[u8]>::len);
        let (Ok(key_len), Ok(value_len)) = (
            u32::try_from(key.len()),
            u32::try_from(value.map_or(0, <[u8]>::len)),
        ) else {
            return Err(RestoreError::Key(format!(
                "record at offset {offset} is larger than 4 GiB"
            )));
        };
        let fits = self
            .blocks
            .last()
            .is_some_and(|b| b.capacity() - b.len() >= len);
        if !fits {
            self.blocks.push(Vec::with_capacity(len.max(BLOCK)));
        }
        let block = self.blocks.len() - 1;
        let buf = &mut self.blocks[block];
        let start = buf.len();
        buf.extend_from_slice(key);
        if let Some(v) = value {
            buf.extend_from_slice(v);
        }
        let index = self.recs.len() as u32;
        self.recs.push(RawRec {
            offset,
            block: block as u32,
            start: start as u32,
            key_len,
            value_len: if value.is_some() { value_len } else { u32::MAX },
        });
        // The target's last run goes on if it ends at this record.
        match self.runs.get_mut(target) {
            Some(runs) => match runs.last_mut() {
                Some(run) if run.1 == index => run.1 = index + 1,
                _ => runs.push((index, index + 1)),
            },
            None => {
                self.runs.insert(target.into(), vec![(index, index + 1)]);
            }
        }
        Ok(())
    }

    /// Takes the last scan records that still hold: those no record of
    /// their target follows in the log. One that does not decode is left
    /// out (its target's next scan is then decoded, as without it).
    pub fn take_scans(&mut self) -> Vec<(String, ScanRecord)> {
        let scans = std::mem::take(&mut self.scans);
        scans
            .into_iter()
            .filter_map(|(target, (offset, value))| {
                let last = self
                    .runs
                    .get(&target)
                    .and_then(|runs| runs.last())
                    .map(|&(_, end)| self.recs[end as usize - 1].offset);
                if last.is_some_and(|l| l > offset) {
                    return None;
                }
                let scan = serde_json::from_slice(&value?).ok()?;
                Some((target.into(), scan))
            })
            .collect()
    }

    /// The head of the last group read whole: the offset of the last
    /// reports message whose records were all written, if the log says.
    pub fn applied(&self) -> Option<Applied> {
        self.applied
    }

    /// Records of groups cut short by a crash, left out (the last group
    /// only once the read is sealed: see [`RawLog::seal`]).
    pub fn cut(&self) -> usize {
        self.cut
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.recs.len()
    }

    /// No target left to decode.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Some target still to decode.
    pub fn any_target(&self) -> Option<String> {
        self.runs.keys().next().map(|t| t.to_string())
    }

    /// Takes `target`'s records, in log order, handing them to `f`; the
    /// bytes are freed once no target is left.
    pub fn take<R>(&mut self, target: &str, f: impl FnOnce(Vec<RawRecord<'_>>) -> R) -> Option<R> {
        let runs = self.runs.remove(target)?;
        let recs: Vec<RawRecord<'_>> = runs
            .iter()
            .flat_map(|&(a, b)| &self.recs[a as usize..b as usize])
            .map(|r| {
                let buf = &self.blocks[r.block as usize];
                let k = r.start as usize;
                let v = k + r.key_len as usize;
                RawRecord {
                    offset: r.offset,
                    key: &buf[k..v],
                    value: (r.value_len != u32::MAX).then(|| &buf[v..v + r.value_len as usize]),
                }
            })
            .collect();
        let out = f(recs);
        if self.runs.is_empty() {
            *self = RawLog {
                applied: self.applied,
                ..RawLog::default()
            };
        }
        Some(out)
    }
}

/// Builds a state from changelog records, applied in order. Attributions
/// that are equal are shared again, as they were before the restart.
#[derive(Default)]
pub struct Restorer {
    state: State,
    attributions: HashMap<Arc<crate::model::Attribution>, ()>,
    /// Records applied.
    pub records: usize,
}

impl Restorer {
    /// An empty restorer.
    pub fn new() -> Restorer {
        Restorer {
            state: State::new(),
            ..Restorer::default()
        }
    }

    /// A restorer that continues `state` (records decoded later than the
    /// rest).
    pub fn resume(state: State) -> Restorer {
        Restorer {
            state,
            ..Restorer::default()
        }
    }

    /// Applies one record.
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), RestoreError> {
        let parsed = parse(key, value)?;
        self.apply_parsed(parsed);
        Ok(())
    }

    /// Applies a record [`parse`]d beforehand (parsing is the costly part,
    /// and can run in parallel; applying must follow the log's order).
    pub fn apply_parsed(&mut self, p: Parsed) {
        self.records += 1;
        match p {
            Parsed::Finding {
                target,
                id,
                record: None,
            } => {
                if let Some(ts) = self.state.targets.get_mut(&target) {
                    ts.findings.remove(&id);
                }
            }
            Parsed::Ticket {
                target,
                id,
                record: None,
            } => {
                if let Some(ts) = self.state.targets.get_mut(&target) {
                    ts.tickets.remove(&id);
                }
            }
            Parsed::Finding {
                target,
                id,
                record: Some(mut rec),
            } => {
                rec.attribution = self.share(Arc::clone(&rec.attribution));
                self.target(target).findings.insert(id, rec);
            }
            Parsed::Ticket {
                target,
                id,
                record: Some(rec),
            } => {
                self.target(target).tickets.insert(id, *rec);
            }
            Parsed::Baseline { target, scanners } => {
                self.target(target).baselined = scanners.unwrap_or_default();
            }
            Parsed::Scan | Parsed::Applied => {}
        }
    }

    fn target(&mut self, target: String) -> &mut crate::lifecycle::TargetState {
        self.state.targets.entry(target).or_default()
    }

    fn share(&mut self, a: Arc<crate::model::Attribution>) -> Arc<crate::model::Attribution> {
        if let Some((k, ())) = self.attributions.get_key_value(&a) {
            return Arc::clone(k);
        }
        self.attributions.insert(Arc::clone(&a), ());
        a
    }

    /// The restored state.
    pub fn finish(mut self) -> State {
        for ts in self.state.targets.values_mut() {
            ts.settle_baseline();
        }
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::Engine;
    use crate::model::ScanMeta;
    use chrono::TimeZone;

    #[test]
    fn records_round_trip_through_a_restorer() {
        let engine = Engine::new(&Config::default());
        let mut state = State::new();
        let bytes = std::fs::read("tests/fixtures/churn/bandit-6.4.2.sarif").unwrap();
        let (_, report) = crate::normalize::decode(&bytes, None, engine.decode_context()).unwrap();
        let target: crate::model::Target = "repo:github.com/tornadoweb/tornado".parse().unwrap();
        let scan = ScanMeta {
            scan_id: "s".into(),
            target: target.clone(),
            commit: None,
            git_ref: None,
            complete: true,
            coverage: report.coverage,
            rule_help: Default::default(),
        };
        let now = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut out = crate::engine::Output::default();
        let touched = engine.scan_touched(
            &mut state,
            &scan,
            report.findings,
            now,
            &mut out,
            std::time::Duration::ZERO,
        );
        assert!(!touched.findings.is_empty());
        let mut recs = records(
            &state,
            &target.to_string(),
            &touched.findings,
            Some(&touched.tickets),
        );
        // The target's first complete scan: its baseline is written too,
        // as the partition processor does.
        assert!(touched.baseline);
        recs.extend(baseline_record(&state, &target.to_string()));
        let mut r = Restorer::new();
        for rec in &recs {
            r.apply(&rec.key, rec.value.as_deref()).unwrap();
        }
        assert_eq!(r.finish(), state);
        // A tombstone removes the finding.
        let mut r = Restorer::new();
        for rec in &recs {
            r.apply(&rec.key, rec.value.as_deref()).unwrap();
        }
        r.apply(&recs[0].key, None).unwrap();
        let restored = r.finish();
        assert_eq!(
            restored.targets[&target.to_string()].findings.len(),
            touched.findings.len() - 1
        );
        // A bad key or value is an error naming the key.
        let mut r = Restorer::new();
        assert!(r.apply(b"nonsense", Some(b"{}")).is_err());
        let err = r.apply(b"f\0repo:x/y\0abc", Some(b"{")).unwrap_err();
        assert!(err.to_string().contains("abc"), "{err}");
    }

    #[test]
    fn a_scan_record_holds_while_no_record_of_its_target_follows() {
        let scan = |n: usize| ScanRecord {
            bytes: Some("ab".repeat(32)),
            content: None,
            format: Some("sarif".into()),
            scanner: Some("bandit".into()),
            complete: true,
            findings: n,
            observed: vec!["one".into()],
            settings: "s".into(),
        };
        let rec = |target: &str, n: usize| scan_record(target, &scan(n));
        let state = |key: &[u8]| Record {
            key: key.to_vec(),
            value: Some(b"{}".to_vec()),
        };
        let in_log_order = [
            // a/b: its scan's records, then the scan record: it holds.
            state(b"f\0repo:a/b\0one"),
            rec("repo:a/b", 1),
            // c/d: a scan record, then a record of c/d (a decision, say):
            // void.
            rec("repo:c/d", 2),
            state(b"t\0repo:c/d\0tk"),
            // e/f: void, then a later scan record: the later one holds.
            rec("repo:e/f", 3),
            state(b"f\0repo:e/f\0x"),
            rec("repo:e/f", 4),
            // g/h: a record of another target after it changes nothing.
            rec("repo:g/h", 5),
            state(b"f\0repo:k/l\0two"),
            // i/j: a value that does not decode is left out.
            Record {
                key: b"s\0repo:i/j\0".to_vec(),
                value: Some(b"{\"bytes\":".to_vec()),
            },
        ];
        let mut log = RawLog::new();
        for (offset, r) in in_log_order.iter().enumerate() {
            log.push(offset as i64, &r.key, r.value.as_deref()).unwrap();
        }
        // Scan records are not state records.
        assert_eq!(log.len(), 4);
        let mut got: Vec<(String, usize)> = log
            .take_scans()
            .into_iter()
            .map(|(t, s)| (t, s.findings))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("repo:a/b".to_string(), 1),
                ("repo:e/f".to_string(), 4),
                ("repo:g/h".to_string(), 5)
            ]
        );
        // The records round-trip.
        let r = rec("repo:a/b", 7);
        let back: ScanRecord = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(back, scan(7));
        // Too large for a Kafka message: a tombstone, which voids an
        // earlier record of the target too.
        let mut big = scan(8);
        big.observed = (0..20_000).map(|i| format!("{i:064x}")).collect();
        let t = scan_record("repo:a/b", &big);
        assert_eq!(t.value, None);
        let mut log = RawLog::new();
        log.push(0, &r.key, r.value.as_deref()).unwrap();
        log.push(1, &t.key, None).unwrap();
        assert!(log.take_scans().is_empty());
        // A restorer passes over them.
        let mut restorer = Restorer::new();
        restorer.apply(&r.key, r.value.as_deref()).unwrap();
        assert!(restorer.finish().targets.is_empty());
    }

    #[test]
    fn the_applied_offset_is_the_last_whole_groups_and_outlives_the_decode() {
        let mut log = RawLog::new();
        assert_eq!(log.applied(), None);
        let a = applied_record("custody.reports", 3, 41, 1);
        assert_eq!(a.key, b"o\0custody.reports\x003");
        log.push(0, &a.key, a.value.as_deref()).unwrap();
        log.push(1, b"f\0repo:x/y/z\0v1:aa", None).unwrap();
        let b = applied_record("custody.reports", 3, 42, 0);
        log.push(2, &b.key, b.value.as_deref()).unwrap();
        assert_eq!(log.applied().map(|a| a.offset), Some(42));
        // Not a record of any target, and not state.
        assert_eq!(log.len(), 1);
        assert!(matches!(
            parse(&b.key, b.value.as_deref()),
            Ok(Parsed::Applied)
        ));
        // Decoding every target leaves it.
        log.take("repo:x/y/z", |_| ()).unwrap();
        assert_eq!(log.applied().map(|a| a.offset), Some(42));
        // A value that does not decode is an error naming the key.
        let err = log.push(3, &b.key, Some(b"{")).unwrap_err().to_string();
        assert!(err.contains("custody.reports"), "{err}");
    }

    #[test]
    fn a_group_cut_short_by_a_crash_is_left_out_whole() {
        let whole = applied_record("custody.reports", 0, 7, 2);
        let cut = applied_record("custody.reports", 0, 8, 3);
        let start = |log: &mut RawLog| {
            log.push(0, &whole.key, whole.value.as_deref()).unwrap();
            log.push(1, b"f\0repo:x/y/z\0v1:aa", Some(b"{}")).unwrap();
            log.push(2, b"t\0repo:x/y/z\0tk", Some(b"{}")).unwrap();
            // Message 8 wrote two records of its three (one of a new
            // target, and its scan record) before the crash.
            log.push(3, &cut.key, cut.value.as_deref()).unwrap();
            log.push(4, b"f\0repo:x/y/z\0v1:bb", Some(b"{}")).unwrap();
            log.push(5, b"f\0repo:a/b/c\0v1:cc", Some(b"{}")).unwrap();
        };
        // The log ends there.
        let mut log = RawLog::new();
        start(&mut log);
        log.seal();
        assert_eq!(log.applied().map(|a| a.offset), Some(7));
        assert_eq!(log.len(), 2, "the cut group's records are not state");
        assert_eq!(log.cut(), 2);
        assert_eq!(log.any_target().as_deref(), Some("repo:x/y/z"));
        let offsets = log
            .take("repo:x/y/z", |recs| {
                recs.iter().map(|r| r.offset).collect::<Vec<_>>()
            })
            .unwrap();
        assert_eq!(offsets, [1, 2]);
        assert!(log.is_empty(), "no record of repo:a/b/c is left");
        // The next instance applied message 8 again, whole: the cut group
        // stays out, the whole one is in.
        let mut log = RawLog::new();
        start(&mut log);
        log.push(6, &cut.key, cut.value.as_deref()).unwrap();
        for (o, k) in [
            (7, &b"f\0repo:x/y/z\0v1:bb"[..]),
            (8, b"f\0repo:x/y/z\0v1:dd"),
            (9, b"t\0repo:x/y/z\0tk"),
        ] {
            log.push(o, k, Some(b"{}")).unwrap();
        }
        log.seal();
        assert_eq!(log.applied().map(|a| a.offset), Some(8));
        assert_eq!(log.len(), 5);
        assert_eq!(log.cut(), 2);
        let offsets = log
            .take("repo:x/y/z", |recs| {
                recs.iter().map(|r| r.offset).collect::<Vec<_>>()
            })
            .unwrap();
        assert_eq!(offsets, [1, 2, 7, 8, 9]);
        assert!(log.is_empty());
        // A head an earlier version wrote (no count) stands as read.
        let mut log = RawLog::new();
        log.push(0, &whole.key, Some(br#"{"offset":9}"#)).unwrap();
        assert_eq!(
            log.applied(),
            Some(Applied {
                offset: 9,
                records: None
            })
        );
    }

    #[test]
    fn raw_log_keeps_each_targets_records_in_log_order() {
        let mut log = RawLog::new();
        let big = vec![b'x'; BLOCK + 10];
        let recs: [(&[u8], Option<&[u8]>); 6] = [
            (b"f\0repo:a/b\0one", Some(b"1")),
            (b"f\0repo:a/b\0two", Some(b"2")),
            (b"t\0repo:c/d\0tk", Some(&big)),
            (b"f\0repo:a/b\0one", None),
            (b"f\0repo:c/d\0three", Some(b"")),
            (b"t\0repo:a/b\0tk", Some(b"4")),
        ];
        for (i, (k, v)) in recs.iter().enumerate() {
            log.push(i as i64 * 10, k, *v).unwrap();
        }
        assert_eq!(log.len(), 6);
        let a = log
            .take("repo:a/b", |rs| {
                rs.iter()
                    .map(|r| (r.offset, r.key.to_vec(), r.value.map(<[u8]>::to_vec)))
                    .collect::<Vec<_>>()
            })
            .unwrap();
        let want: Vec<(i64, Vec<u8>, Option<Vec<u8>>)> = [0, 1, 3, 5]
            .iter()
            .map(|&i| {
                (
                    i as i64 * 10,
                    recs[i].0.to_vec(),
                    recs[i].1.map(<[u8]>::to_vec),
                )
            })
            .collect();
        assert_eq!(a, want);
        assert!(log.take("repo:a/b", |_| ()).is_none());
        assert_eq!(log.any_target().as_deref(), Some("repo:c/d"));
        let c = log
            .take("repo:c/d", |rs| {
                rs.iter()
                    .map(|r| (r.offset, r.value.map(<[u8]>::len)))
                    .collect::<Vec<_>>()
            })
            .unwrap();
        assert_eq!(c, vec![(20, Some(BLOCK + 10)), (40, Some(0))]);
        // Nothing left: the bytes are gone.
        assert!(log.is_empty());
        assert_eq!(log.len(), 0);
        // A key that names no target is refused, naming it.
        let err = log.push(7, b"junk", Some(b"{}")).unwrap_err();
        assert!(err.to_string().contains("junk"), "{err}");
    }
}
