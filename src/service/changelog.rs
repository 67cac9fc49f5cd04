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
//!
//! # Values: binary or JSON
//!
//! Values are written in the compact binary form of [`binary`] (the
//! default) or as JSON (`changelog_format = "json"`, what earlier
//! versions wrote); a reader tells them by the first byte and reads both,
//! mixed in any order. In the binary form a finding record names its texts
//! (rule, path, title, message, team, ticket key, commit...) by ids into
//! its target's dictionary, carried by records of their own under
//! `d\0<target>\0<first id>`: each holds the texts a step added, with
//! consecutive ids from the one its key names. They live on the target's
//! partition like its other records, and a restore reads a target's
//! dictionary records before its findings (it decodes only the last
//! record of each key: earlier ones are superseded). A step writes its
//! dictionary record before the records that use it, so any prefix of a
//! step cut short is consistent. Ids are never given twice for a target
//! (the next id is past every dictionary record read, a cut step's too),
//! so a record a cut step left behind cannot be read with another step's
//! texts.
//!
//! A dictionary only grows as steps add texts; what no record uses any
//! more stays until the target is *rewritten*: once a target's dictionary
//! holds more than twice the texts its records use (plus
//! [`DICT_SLACK`]), the step that notices writes a fresh dictionary
//! record with only the texts in use, every finding record of the target
//! again against it, and then tombstones for the old dictionary records
//! (last, so a step cut short never leaves a record whose texts are
//! gone). A target's dictionary records so hold at most about twice what
//! its findings use.
//!
//! Ticket records are few (one per ticket) and use no dictionary: their
//! binary form writes the fields it knows and keeps any other (should
//! tickets grow one) as JSON at its end, so a field added to tickets needs
//! no new format. Heads (`o`) and baselines (`b`) stay JSON. A last scan
//! record's binary form names the fingerprints it observed by a bitmap
//! over its target's findings: it holds only while no record of its
//! target follows it, so a restore finds the same findings (checked).
//!
//! Under `changelog_format = "json"`, a target whose changelog holds
//! binary records is rewritten whole as JSON when it is restored (and its
//! dictionary records tombstoned), so that a version that reads only
//! JSON can be rolled back to once the log is compacted (see the README).

pub mod binary;

pub use crate::config::service::ChangelogFormat;
use crate::lifecycle::{FindingRecord, State, TargetState};
use crate::ticket::TicketRecord;
use binary::{Dict, Strings};
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
/// no longer has) and the named tickets it has, or all its tickets, as
/// JSON (what `changelog_format = "json"` and earlier versions write; a
/// service writes through a [`Writer`]).
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

/// How many texts a target's dictionary may hold past twice what its
/// records use before the target is rewritten (see the module's
/// documentation): small targets are not rewritten for a few texts.
pub const DICT_SLACK: usize = 256;

/// Writes a partition's changelog records in the configured format,
/// keeping each target's dictionary for the binary form (the texts its
/// records in the changelog refer to, and the next id to give).
#[derive(Debug, Default)]
pub struct Writer {
    format: ChangelogFormat,
    dicts: HashMap<String, Dict>,
    buf: Vec<u8>,
}

impl Writer {
    /// A writer of `format`.
    pub fn new(format: ChangelogFormat) -> Writer {
        Writer {
            format,
            ..Writer::default()
        }
    }

    /// The format it writes.
    pub fn format(&self) -> ChangelogFormat {
        self.format
    }

    /// Takes what a restore read of `target`'s dictionary: its texts
    /// (`decoded`, when the target had records) and its marks.
    pub fn restored(&mut self, target: &str, decoded: Option<&Decoded>, marks: &DictMarks) {
        let none = Strings::default();
        let strings = decoded.map_or(&none, |d| &d.strings);
        let binary = decoded.is_some_and(|d| d.binary);
        if strings.is_empty() && marks == &DictMarks::default() && !binary {
            return;
        }
        self.dicts.insert(
            target.to_string(),
            Dict::restored(strings, marks.floor, &marks.cut, binary),
        );
    }

    /// Under the JSON format, a target restored with binary records is
    /// rewritten whole as JSON: its records, the tombstones of its
    /// dictionary records last. `None` when there is nothing to rewrite.
    pub fn migrate(&mut self, state: &State, target: &str) -> Option<Vec<Record>> {
        if self.format != ChangelogFormat::Json {
            return None;
        }
        let dict = self.dicts.remove(target)?;
        let ts = state.targets.get(target);
        let mut out = ts.map_or_else(Vec::new, |ts| whole_json(ts, target));
        out.extend(dict_tombstones(target, &dict.chunks));
        (!out.is_empty()).then_some(out)
    }

    /// The records for the named findings of `target` (a tombstone for one
    /// it no longer has) and the named tickets it has, or all its tickets,
    /// in the writer's format; in the binary form, a dictionary record
    /// first when the findings use texts the target's dictionary did not
    /// hold, or the whole target rewritten (see the module's
    /// documentation).
    pub fn records(
        &mut self,
        state: &State,
        target: &str,
        fingerprints: &[String],
        tickets: Option<&[String]>,
    ) -> Vec<Record> {
        if self.format == ChangelogFormat::Json {
            let mut out = records(state, target, fingerprints, tickets);
            // Restored with binary records and not migrated yet: all of
            // the target again, as JSON.
            out.extend(self.migrate(state, target).into_iter().flatten());
            return out;
        }
        let Some(ts) = state.targets.get(target) else {
            return Vec::new();
        };
        let dict = self.dicts.entry(target.to_string()).or_default();
        dict.binary = true;
        let buf = &mut self.buf;
        let mut adding = dict.adding();
        let mut findings = Vec::with_capacity(fingerprints.len());
        for fp in fingerprints {
            let value = ts.findings.get(fp).map(|rec| {
                buf.clear();
                binary::encode_finding(buf, &mut adding, rec);
                buf.as_slice().to_vec()
            });
            findings.push(Record {
                key: key(b'f', target, fp),
                value,
            });
        }
        let (base, added) = (adding.base, adding.added);
        let mut out = Vec::with_capacity(findings.len() + 2);
        if !added.is_empty() {
            dict.chunks.push(base);
            out.push(chunk_record(buf, target, base, &added));
        }
        out.append(&mut findings);
        out.extend(binary_tickets(buf, ts, target, tickets));
        if dict.len() > 2 * dict.used + DICT_SLACK {
            let mut counting = binary::Counting::default();
            for rec in ts.findings.values() {
                buf.clear();
                binary::encode_finding(buf, &mut counting, rec);
            }
            let used = counting.seen.len();
            if dict.len() > 2 * used + DICT_SLACK {
                return self.rewrite(state, target, fingerprints, tickets);
            }
            dict.used = used;
        }
        out
    }

    /// Every record of `target` again in the binary form, against a fresh
    /// dictionary holding only the texts they use (ids continuing the old
    /// ones): the new dictionary record, every finding, tombstones for the
    /// named findings it no longer has, the named tickets, then the
    /// tombstones of the old dictionary records.
    fn rewrite(
        &mut self,
        state: &State,
        target: &str,
        fingerprints: &[String],
        tickets: Option<&[String]>,
    ) -> Vec<Record> {
        let Some(ts) = state.targets.get(target) else {
            return Vec::new();
        };
        let old = self.dicts.remove(target).unwrap_or_default();
        let mut dict = old.fresh();
        let buf = &mut self.buf;
        let mut adding = dict.adding();
        let mut findings = Vec::with_capacity(ts.findings.len());
        for (fp, rec) in &ts.findings {
            buf.clear();
            binary::encode_finding(buf, &mut adding, rec);
            findings.push(Record {
                key: key(b'f', target, fp),
                value: Some(buf.as_slice().to_vec()),
            });
        }
        let (base, added) = (adding.base, adding.added);
        let mut out = Vec::with_capacity(findings.len() + old.chunks.len() + 2);
        if !added.is_empty() {
            dict.chunks.push(base);
            out.push(chunk_record(buf, target, base, &added));
        }
        out.append(&mut findings);
        for fp in fingerprints {
            if !ts.findings.contains_key(fp) {
                out.push(Record {
                    key: key(b'f', target, fp),
                    value: None,
                });
            }
        }
        out.extend(binary_tickets(buf, ts, target, tickets));
        out.extend(dict_tombstones(target, &old.chunks));
        dict.used = dict.len();
        tracing::debug!(
            target = %target,
            texts = dict.len(),
            dropped = old.len().saturating_sub(dict.len()),
            "changelog dictionary of a target rewritten"
        );
        self.dicts.insert(target.to_string(), dict);
        out
    }

    /// The record of `target`'s last scan in the writer's format (in the
    /// binary form, its observed fingerprints as a bitmap over the
    /// target's findings in `state`); a tombstone when it would be larger
    /// than [`MAX_SCAN_RECORD_BYTES`].
    pub fn scan_record(&self, state: &State, target: &str, scan: &ScanRecord) -> Record {
        match self.format {
            ChangelogFormat::Json => scan_record(target, scan),
            ChangelogFormat::Binary => {
                let none = std::collections::BTreeMap::new();
                let findings = state.targets.get(target).map_or(&none, |ts| &ts.findings);
                let value = binary::encode_scan(scan, findings.keys().map(String::as_str));
                Record {
                    key: key(b's', target, ""),
                    value: Some(value).filter(|v| v.len() <= MAX_SCAN_RECORD_BYTES),
                }
            }
        }
    }
}

/// A dictionary record of `target`: `texts`, ids from `base`.
fn chunk_record(buf: &mut Vec<u8>, target: &str, base: u64, texts: &[Arc<str>]) -> Record {
    buf.clear();
    binary::encode_chunk(buf, texts.iter().map(|t| &**t));
    Record {
        key: key(b'd', target, &base.to_string()),
        value: Some(buf.as_slice().to_vec()),
    }
}

/// Tombstones for the dictionary records of `target` at `bases`.
fn dict_tombstones<'a>(target: &'a str, bases: &'a [u64]) -> impl Iterator<Item = Record> + 'a {
    bases.iter().map(move |b| Record {
        key: key(b'd', target, &b.to_string()),
        value: None,
    })
}

/// The named tickets of a target (or all), in the binary form.
fn binary_tickets(
    buf: &mut Vec<u8>,
    ts: &TargetState,
    target: &str,
    tickets: Option<&[String]>,
) -> Vec<Record> {
    let mut one = |k: &str, rec: &TicketRecord| {
        buf.clear();
        binary::encode_ticket(buf, rec, target);
        Record {
            key: key(b't', target, k),
            value: Some(buf.as_slice().to_vec()),
        }
    };
    match tickets {
        Some(keys) => keys
            .iter()
            .filter_map(|k| ts.tickets.get(k).map(|rec| one(k, rec)))
            .collect(),
        None => ts.tickets.iter().map(|(k, rec)| one(k, rec)).collect(),
    }
}

/// Every finding and ticket record of a target, as JSON.
fn whole_json(ts: &TargetState, target: &str) -> Vec<Record> {
    let mut buf = Vec::with_capacity(4096);
    let findings = ts.findings.iter().map(|(fp, rec)| Record {
        key: key(b'f', target, fp),
        value: json(&mut buf, rec),
    });
    let mut out: Vec<Record> = findings.collect();
    out.extend(ts.tickets.iter().map(|(k, rec)| Record {
        key: key(b't', target, k),
        value: json(&mut buf, rec),
    }));
    out
}

/// Why a changelog record could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A key of an unknown shape.
    #[error("changelog key {0:?} is not f\\0target\\0id, t\\0target\\0id, d\\0target\\0id, b\\0target\\0, s\\0target\\0 or o\\0topic\\0partition")]
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
    /// A dictionary record of a target (see the module's documentation).
    Strings {
        /// Target spec.
        target: String,
        /// The id of its first text.
        base: u64,
        /// The texts; `None` deletes.
        strings: Option<Vec<Arc<str>>>,
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
        (Some(b"f" | b"t" | b"s" | b"b" | b"d"), Some(target), Some(_)) => {
            std::str::from_utf8(target)
                .map_err(|_| RestoreError::Key(String::from_utf8_lossy(key).into_owned()))
        }
        _ => Err(RestoreError::Key(String::from_utf8_lossy(key).into_owned())),
    }
}

/// Decodes one changelog record that needs no dictionary (a JSON one, or
/// a binary one that is not a finding's).
pub fn parse(key: &[u8], value: Option<&[u8]>) -> Result<Parsed, RestoreError> {
    parse_in(key, value, &Strings::default())
}

/// Decodes one changelog record, a binary finding record's texts looked
/// up in `strings` (its target's dictionary).
pub fn parse_in(
    key: &[u8],
    value: Option<&[u8]>,
    strings: &Strings,
) -> Result<Parsed, RestoreError> {
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
    let bad_binary = |what: &str, e: String| RestoreError::Value {
        key: shown(),
        message: format!("binary {what} record: {e}"),
    };
    let (target, id) = (target.to_string(), id.to_string());
    match kind {
        b"f" => Ok(Parsed::Finding {
            target,
            id,
            record: value
                .map(|v| match binary::is_binary(v) {
                    true => binary::decode_finding(v, strings)
                        .map(Box::new)
                        .map_err(|e| bad_binary("finding", e)),
                    false => serde_json::from_slice(v).map_err(bad),
                })
                .transpose()?,
        }),
        b"t" => {
            let record = value
                .map(|v| match binary::is_binary(v) {
                    true => binary::decode_ticket(v, &target)
                        .map(Box::new)
                        .map_err(|e| bad_binary("ticket", e)),
                    false => serde_json::from_slice(v).map_err(bad),
                })
                .transpose()?;
            Ok(Parsed::Ticket { target, id, record })
        }
        b"d" => Ok(Parsed::Strings {
            base: id.parse().map_err(|_| RestoreError::Key(shown()))?,
            target,
            strings: value
                .map(|v| binary::decode_chunk(v).map_err(|e| bad_binary("dictionary", e)))
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

/// A last scan record's value, binary or JSON (`findings`: the target's
/// findings, sorted, for a binary one that names them by a bitmap);
/// `None` when it does not decode (its target's next scan is then
/// decoded, as without it).
fn decode_scan(value: &[u8], findings: &[&str]) -> Option<ScanRecord> {
    match binary::is_binary(value) {
        true => binary::decode_scan(value, findings)
            .map_err(|e| tracing::debug!("a last scan record is passed over: {e}"))
            .ok(),
        false => serde_json::from_slice(value).ok(),
    }
}

/// A target's records as a restore decodes them (see [`decode_target`]).
#[derive(Debug)]
pub struct Decoded {
    /// The last record of each key, in log order; dictionary records
    /// left out.
    pub parsed: Vec<Parsed>,
    /// The target's dictionary.
    pub strings: Strings,
    /// Whether any of its records is binary.
    pub binary: bool,
}

/// Decodes the records of one target (as [`RawLog::take`] hands them):
/// only the last record of each key (the earlier ones are superseded, and
/// may name texts no dictionary record holds any more), dictionary
/// records first, the rest in parallel when there are many. An error
/// names `topic`, the offset and the key.
pub fn decode_target(recs: &[RawRecord<'_>], topic: &str) -> Result<Decoded, String> {
    let mut last: HashMap<&[u8], usize> = HashMap::with_capacity(recs.len());
    for (i, r) in recs.iter().enumerate() {
        last.insert(r.key, i);
    }
    let latest = || {
        recs.iter()
            .enumerate()
            .filter(|(i, r)| last.get(r.key) == Some(i))
            .map(|(_, r)| r)
    };
    let at = |r: &RawRecord<'_>, e: RestoreError| format!("{topic} offset {}: {e}", r.offset);
    let is_dict = |r: &&RawRecord<'_>| r.key.starts_with(b"d\0");
    let mut strings = Strings::default();
    let mut binary = false;
    for r in latest().filter(is_dict) {
        binary = true;
        if let Parsed::Strings {
            base, strings: s, ..
        } = parse(r.key, r.value).map_err(|e| at(r, e))?
        {
            strings.set(base, s);
        }
    }
    let rest: Vec<&RawRecord<'_>> = latest().filter(|r| !is_dict(r)).collect();
    binary |= rest.iter().any(|r| r.value.is_some_and(binary::is_binary));
    let parse = |r: &&RawRecord<'_>| parse_in(r.key, r.value, &strings).map_err(|e| at(r, e));
    let parsed = if rest.len() > 256 {
        use rayon::prelude::*;
        rest.par_iter().map(parse).collect::<Result<Vec<_>, _>>()
    } else {
        rest.iter().map(parse).collect()
    }?;
    Ok(Decoded {
        parsed,
        strings,
        binary,
    })
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
    /// Per target, what its dictionary records say of its ids, cut
    /// groups' too.
    marks: HashMap<Box<str>, DictMarks>,
}

/// What a target's dictionary records in a changelog say of its ids,
/// whether or not their group was cut short: a writer continuing the
/// target gives no id twice, and tombstones what cut groups left.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DictMarks {
    /// Past every id of every dictionary record read.
    pub floor: u64,
    /// First ids of the dictionary records of groups cut short.
    pub cut: Vec<u64>,
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
        for r in &self.recs[t.start..] {
            let buf = &self.blocks[r.block as usize];
            let key = &buf[r.start as usize..r.start as usize + r.key_len as usize];
            if let Some((target, base)) = dict_key(key) {
                self.marks.entry(target.into()).or_default().cut.push(base);
            }
        }
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
        if let Some((target, base)) = dict_key(key) {
            let n = value.and_then(binary::chunk_len).unwrap_or(0).max(1);
            let m = self.marks.entry(target.into()).or_default();
            m.floor = m.floor.max(base.saturating_add(n));
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
                let value = value?;
                let findings = match binary::scan_needs_findings(&value) {
                    true => self.live_findings(&target),
                    false => Vec::new(),
                };
                let findings: Vec<&str> = findings.iter().map(String::as_str).collect();
                let scan = decode_scan(&value, &findings)?;
                Some((target.into(), scan))
            })
            .collect()
    }

    /// The fingerprints of `target`'s findings in the log (the last
    /// record of each key not a tombstone), sorted.
    fn live_findings(&self, target: &str) -> Vec<String> {
        let mut live: std::collections::BTreeMap<&[u8], bool> = std::collections::BTreeMap::new();
        for &(a, b) in self.runs.get(target).into_iter().flatten() {
            for r in &self.recs[a as usize..b as usize] {
                let buf = &self.blocks[r.block as usize];
                let key = &buf[r.start as usize..r.start as usize + r.key_len as usize];
                if key.first() == Some(&b'f') {
                    let fp = key.splitn(3, |&c| c == 0).nth(2).unwrap_or_default();
                    live.insert(fp, r.value_len != u32::MAX);
                }
            }
        }
        live.into_iter()
            .filter(|(_, alive)| *alive)
            .map(|(fp, _)| String::from_utf8_lossy(fp).into_owned())
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

    /// Takes what `target`'s dictionary records say of its ids (see
    /// [`DictMarks`]); call it before [`RawLog::take`].
    pub fn take_marks(&mut self, target: &str) -> DictMarks {
        self.marks.remove(target).unwrap_or_default()
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
                marks: std::mem::take(&mut self.marks),
                ..RawLog::default()
            };
        }
        Some(out)
    }
}

/// The target and first id a dictionary record's key names.
fn dict_key(key: &[u8]) -> Option<(&str, u64)> {
    let rest = key.strip_prefix(b"d\0")?;
    let mut parts = rest.splitn(2, |&b| b == 0);
    let target = std::str::from_utf8(parts.next()?).ok()?;
    let base = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    Some((target, base))
}

/// Builds a state from changelog records, applied in order. Attributions
/// that are equal are shared again, as they were before the restart.
#[derive(Default)]
pub struct Restorer {
    state: State,
    attributions: HashMap<Arc<crate::model::Attribution>, ()>,
    /// Each target's dictionary, as read so far.
    strings: HashMap<String, Strings>,
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
        let none = Strings::default();
        let strings = target_of(key)
            .ok()
            .and_then(|t| self.strings.get(t))
            .unwrap_or(&none);
        let parsed = parse_in(key, value, strings)?;
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
            Parsed::Strings {
                target,
                base,
                strings,
            } => self.strings.entry(target).or_default().set(base, strings),
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

    const TORNADO: &str = "repo:github.com/tornadoweb/tornado";

    /// A scan of the tornado fixture (Bandit 6.4.2) applied to `state` at
    /// `now`, `keep` of its findings reported, at commit `commit`.
    fn tornado_scan(
        state: &mut State,
        now: chrono::DateTime<chrono::Utc>,
        keep: usize,
        commit: &str,
    ) -> crate::engine::Touched {
        let engine = Engine::new(&Config::default());
        let bytes = std::fs::read("tests/fixtures/churn/bandit-6.4.2.sarif").unwrap();
        let (_, mut report) =
            crate::normalize::decode(&bytes, None, engine.decode_context()).unwrap();
        report.findings.truncate(keep);
        let scan = ScanMeta {
            rule_help: Default::default(),
            scan_id: format!("scan-{commit}"),
            target: TORNADO.parse().unwrap(),
            commit: Some(commit.into()),
            git_ref: Some("refs/heads/master".into()),
            complete: true,
            coverage: report.coverage,
        };
        engine.scan_touched(
            state,
            &scan,
            report.findings,
            now,
            &mut crate::engine::Output::default(),
            std::time::Duration::ZERO,
        )
    }

    fn at(h: u32) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
            + chrono::Duration::hours(i64::from(h))
            + chrono::Duration::milliseconds(i64::from(h) * 37)
    }

    /// Restores `log` as a partition does: through a [`RawLog`], each
    /// target decoded by [`decode_target`]; and, as a check, by applying
    /// every record in order.
    fn restore_both(log: &[Record]) -> State {
        let mut raw = RawLog::new();
        for (i, r) in log.iter().enumerate() {
            raw.push(i as i64, &r.key, r.value.as_deref()).unwrap();
        }
        raw.seal();
        let mut state = State::new();
        while let Some(t) = raw.any_target() {
            let d = raw
                .take(&t, |recs| decode_target(&recs, "t"))
                .unwrap()
                .unwrap();
            let mut r = Restorer::resume(state);
            d.parsed.into_iter().for_each(|p| r.apply_parsed(p));
            state = r.finish();
        }
        let mut r = Restorer::new();
        for rec in log {
            r.apply(&rec.key, rec.value.as_deref()).unwrap();
        }
        assert_eq!(r.finish(), state, "in order and last-of-each-key agree");
        state
    }

    /// What compaction leaves of a log: the last record of each key,
    /// tombstones dropped.
    fn compacted(log: &[Record]) -> Vec<Record> {
        let mut last: HashMap<&[u8], usize> = HashMap::new();
        for (i, r) in log.iter().enumerate() {
            last.insert(&r.key, i);
        }
        log.iter()
            .enumerate()
            .filter(|(i, r)| last[r.key.as_slice()] == *i && r.value.is_some())
            .map(|(_, r)| r.clone())
            .collect()
    }

    #[test]
    fn binary_records_restore_the_state_json_ones_do_mixed_in_any_order() {
        let mut state = State::new();
        // First scan written as JSON (as the version before wrote it).
        let touched = tornado_scan(&mut state, at(1), usize::MAX, "aaa");
        let mut log = records(&state, TORNADO, &touched.findings, Some(&touched.tickets));
        log.extend(baseline_record(&state, TORNADO));
        // JSON -> state -> binary -> state: equal.
        let from_json = restore_both(&log);
        assert_eq!(from_json, state);
        let mut w = Writer::new(ChangelogFormat::Binary);
        let ts = &from_json.targets[TORNADO];
        let fps: Vec<String> = ts.findings.keys().cloned().collect();
        let binary_log = w.records(&from_json, TORNADO, &fps, None);
        assert!(binary_log[0].key.starts_with(b"d\0"));
        assert!(binary_log
            .iter()
            .all(|r| r.value.as_deref().is_some_and(binary::is_binary)));
        let mut again = binary_log.clone();
        again.extend(baseline_record(&from_json, TORNADO));
        assert_eq!(restore_both(&again), from_json);
        // Then binary records of later scans over the JSON log: a rescan
        // that reports fewer (resolving some), one that reports them again
        // (reopened) at another commit.
        let mut w = Writer::new(ChangelogFormat::Binary);
        for (h, keep, commit) in [(2, 20, "bbb"), (3, usize::MAX, "ccc")] {
            let touched = tornado_scan(&mut state, at(h), keep, commit);
            log.extend(w.records(&state, TORNADO, &touched.findings, Some(&touched.tickets)));
        }
        assert!(log
            .iter()
            .any(|r| r.value.as_deref().is_some_and(binary::is_binary)));
        assert!(log
            .iter()
            .any(|r| r.value.as_deref().is_some_and(|v| v[0] == b'{')));
        assert_eq!(restore_both(&log), state);
        // And once compacted.
        assert_eq!(restore_both(&compacted(&log)), state);
    }

    /// The records a first scan of `fixture` (a real scanner's report) of
    /// `target` writes in `format`, as the partition processor writes
    /// them (head, dictionary, findings, tickets, baseline, last scan
    /// record), and the open findings it leaves.
    fn first_scan_records(
        fixture: &str,
        target: &str,
        format: ChangelogFormat,
    ) -> (Vec<Record>, usize) {
        let engine = Engine::new(&Config::default());
        let bytes = std::fs::read(fixture).unwrap();
        let (_, mut report) =
            crate::normalize::decode(&bytes, None, engine.decode_context()).unwrap();
        report.findings.iter_mut().for_each(|f| f.target = None);
        let scan = ScanMeta {
            rule_help: Default::default(),
            scan_id: "scan-1".into(),
            target: target.parse().unwrap(),
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            git_ref: Some("refs/heads/main".into()),
            complete: true,
            coverage: report.coverage,
        };
        let mut state = State::new();
        let touched = engine.scan_touched(
            &mut state,
            &scan,
            report.findings,
            at(1),
            &mut crate::engine::Output::default(),
            std::time::Duration::ZERO,
        );
        let open = state.targets[target]
            .findings
            .values()
            .filter(|r| r.status == crate::model::Status::Open)
            .count();
        let hex64 = "0123456789abcdef".repeat(4);
        let last = ScanRecord {
            bytes: Some(hex64.clone()),
            content: Some(hex64.clone()),
            format: None,
            scanner: None,
            complete: true,
            findings: touched.observed.len(),
            observed: touched.observed.clone(),
            settings: hex64,
        };
        let mut w = Writer::new(format);
        let mut recs = w.records(&state, target, &touched.findings, Some(&touched.tickets));
        recs.extend(baseline_record(&state, target));
        recs.push(w.scan_record(&state, target, &last));
        recs.insert(0, applied_record("custody.reports", 3, 12345, recs.len()));
        (recs, open)
    }

    /// Bytes of changelog (keys and values of every record of the step)
    /// per open finding for real first scans: Bandit on tornado (SAST),
    /// Trivy and Grype on images (dependencies). Prints both forms; bounds
    /// the binary one generously.
    #[test]
    fn a_first_scan_costs_a_fraction_of_the_json_bytes_per_open_finding() {
        // (fixture, target, bound on binary bytes, least JSON / binary):
        // a dependency finding carries its advisory's text (title,
        // description), which is no less in the dictionary, and these
        // images have a ticket per vulnerability.
        for (fixture, target, bound, ratio) in [
            (
                "tests/fixtures/churn/bandit-6.4.2.sarif",
                TORNADO,
                220.0,
                5.0,
            ),
            (
                "tests/fixtures/trivy/trivy-image-web-api-1.4.json",
                "image:registry.acme.io/web-api",
                800.0,
                2.0,
            ),
            (
                "tests/fixtures/grype/grype-image-web-api-1.4.json",
                "image:registry.acme.io/web-api",
                800.0,
                2.0,
            ),
        ] {
            let per_finding = |format| {
                let (recs, open) = first_scan_records(fixture, target, format);
                let bytes: usize = recs
                    .iter()
                    .map(|r| r.key.len() + r.value.as_ref().map_or(0, Vec::len))
                    .sum();
                (bytes as f64 / open as f64, open)
            };
            let ((json, open), (bin, _)) = (
                per_finding(ChangelogFormat::Json),
                per_finding(ChangelogFormat::Binary),
            );
            let (recs, _) = first_scan_records(fixture, target, ChangelogFormat::Binary);
            let texts: Vec<Arc<str>> = recs
                .iter()
                .filter(|r| r.key.starts_with(b"d\0"))
                .flat_map(|r| binary::decode_chunk(r.value.as_deref().unwrap_or_default()))
                .flatten()
                .collect();
            eprintln!(
                "{fixture}: changelog bytes per open finding ({open} open): json {json:.0}, binary {bin:.0}; dictionary {} texts, {} bytes",
                texts.len(),
                texts.iter().map(|t| t.len()).sum::<usize>()
            );
            assert!(open >= 10, "{open}");
            assert!(bin < bound, "{bin:.0} bytes per open finding");
            assert!(bin < json / ratio, "binary {bin:.0}, json {json:.0}");
            // They restore the state JSON restores.
            let (recs, _) = first_scan_records(fixture, target, ChangelogFormat::Binary);
            let (json_recs, _) = first_scan_records(fixture, target, ChangelogFormat::Json);
            assert_eq!(restore_both(&recs), restore_both(&json_recs));
        }
    }

    /// Texts no record uses any more do not pile up: once a target's
    /// dictionary holds more than twice what its records use (plus the
    /// slack), the target is rewritten against a fresh one, and the
    /// compacted changelog holds only about what is in use.
    #[test]
    fn a_dictionary_is_rewritten_before_it_holds_twice_what_is_used() {
        let mut state = State::new();
        let mut w = Writer::new(ChangelogFormat::Binary);
        let mut log = Vec::new();
        let mut rewrites = 0;
        for h in 1..=24 {
            // Every finding's message changes at each scan (an update,
            // written again): the last scan's messages go out of use.
            let engine = Engine::new(&Config::default());
            let bytes = std::fs::read("tests/fixtures/churn/bandit-6.4.2.sarif").unwrap();
            let (_, mut report) =
                crate::normalize::decode(&bytes, None, engine.decode_context()).unwrap();
            for f in &mut report.findings {
                f.message = format!("{} (scan {h})", f.message);
            }
            let scan = ScanMeta {
                rule_help: Default::default(),
                scan_id: format!("s{h}"),
                target: TORNADO.parse().unwrap(),
                commit: Some(format!("c{h}")),
                git_ref: None,
                complete: true,
                coverage: report.coverage,
            };
            let touched = engine.scan_touched(
                &mut state,
                &scan,
                report.findings,
                at(h),
                &mut crate::engine::Output::default(),
                std::time::Duration::ZERO,
            );
            let mut recs = w.records(&state, TORNADO, &touched.findings, Some(&touched.tickets));
            if touched.baseline {
                recs.extend(baseline_record(&state, TORNADO));
            }
            if recs
                .iter()
                .any(|r| r.key.starts_with(b"d\0") && r.value.is_none())
            {
                rewrites += 1;
                // The tombstones come last.
                let first_tombstone = recs
                    .iter()
                    .position(|r| r.key.starts_with(b"d\0") && r.value.is_none())
                    .unwrap();
                assert!(recs[first_tombstone..]
                    .iter()
                    .all(|r| r.key.starts_with(b"d\0") && r.value.is_none()
                        || r.key.starts_with(b"b\0")));
                // Any prefix of the rewrite (what a crash leaves, should
                // compaction drop its head) reads back, compacted or not:
                // no finding record is left naming a text whose
                // dictionary record is gone.
                for k in (0..=recs.len()).step_by(37).chain([first_tombstone + 1]) {
                    let mut cut = log.clone();
                    cut.extend(recs[..k.min(recs.len())].iter().cloned());
                    restore_both(&cut);
                    restore_both(&compacted(&cut));
                }
            }
            log.extend(recs);
        }
        assert!(rewrites > 0, "never rewritten");
        let compact = compacted(&log);
        assert_eq!(restore_both(&compact), state);
        assert_eq!(restore_both(&log), state);
        let texts: usize = compact
            .iter()
            .filter(|r| r.key.starts_with(b"d\0"))
            .map(|r| {
                binary::decode_chunk(r.value.as_deref().unwrap())
                    .unwrap()
                    .len()
            })
            .sum();
        let mut counting = binary::Counting::default();
        let mut buf = Vec::new();
        for rec in state.targets[TORNADO].findings.values() {
            binary::encode_finding(&mut buf, &mut counting, rec);
        }
        let used = counting.seen.len();
        assert!(
            texts <= 2 * used + DICT_SLACK,
            "{texts} texts in the compacted log, {used} used"
        );
    }

    /// A dictionary record left by a group cut short: its ids are not
    /// given again, and it is tombstoned at the next rewrite.
    #[test]
    fn ids_of_a_group_cut_short_are_not_given_again() {
        let mut state = State::new();
        let touched = tornado_scan(&mut state, at(1), 10, "aaa");
        let mut w = Writer::new(ChangelogFormat::Binary);
        let mut first = w.records(&state, TORNADO, &touched.findings, Some(&touched.tickets));
        first.extend(baseline_record(&state, TORNADO));
        let touched2 = tornado_scan(&mut state, at(2), 20, "bbb");
        let second = w.records(&state, TORNADO, &touched2.findings, Some(&touched2.tickets));
        let mut raw = RawLog::new();
        let mut offset = 0;
        let mut push = |raw: &mut RawLog, r: &Record| {
            raw.push(offset, &r.key, r.value.as_deref()).unwrap();
            offset += 1;
        };
        let head = applied_record("custody.reports", 0, 1, first.len());
        push(&mut raw, &head);
        first.iter().for_each(|r| push(&mut raw, r));
        // The second group, cut after its dictionary record and a finding.
        let head = applied_record("custody.reports", 0, 2, second.len());
        push(&mut raw, &head);
        second[..2].iter().for_each(|r| push(&mut raw, r));
        raw.seal();
        let (cut_base, cut_len) = match parse(&second[0].key, second[0].value.as_deref()) {
            Ok(Parsed::Strings {
                base,
                strings: Some(s),
                ..
            }) => (base, s.len() as u64),
            other => panic!("{other:?}"),
        };
        let marks = raw.take_marks(TORNADO);
        assert_eq!(marks.floor, cut_base + cut_len);
        assert_eq!(marks.cut, vec![cut_base]);
        let decoded = raw
            .take(TORNADO, |recs| decode_target(&recs, "t"))
            .unwrap()
            .unwrap();
        let mut r = Restorer::new();
        let mut restored_w = Writer::new(ChangelogFormat::Binary);
        restored_w.restored(TORNADO, Some(&decoded), &marks);
        decoded.parsed.into_iter().for_each(|p| r.apply_parsed(p));
        let mut restored = r.finish();
        // The message is applied again: a new dictionary record, past the
        // cut one's ids.
        let touched2 = tornado_scan(&mut restored, at(2), 20, "bbb");
        let again = restored_w.records(
            &restored,
            TORNADO,
            &touched2.findings,
            Some(&touched2.tickets),
        );
        match parse(&again[0].key, again[0].value.as_deref()) {
            Ok(Parsed::Strings { base, .. }) => assert!(base >= cut_base + cut_len, "{base}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(restored, state);
    }

    /// Under `changelog_format = "json"`, a target restored with binary
    /// records is rewritten as JSON, its dictionary records tombstoned:
    /// once compacted, the log is what a version reading only JSON reads.
    #[test]
    fn the_json_format_rewrites_a_binary_target_as_json() {
        let mut state = State::new();
        let touched = tornado_scan(&mut state, at(1), usize::MAX, "aaa");
        let mut log = Writer::new(ChangelogFormat::Binary).records(
            &state,
            TORNADO,
            &touched.findings,
            Some(&touched.tickets),
        );
        log.extend(baseline_record(&state, TORNADO));
        let mut raw = RawLog::new();
        for (i, r) in log.iter().enumerate() {
            raw.push(i as i64, &r.key, r.value.as_deref()).unwrap();
        }
        let marks = raw.take_marks(TORNADO);
        let decoded = raw
            .take(TORNADO, |recs| decode_target(&recs, "t"))
            .unwrap()
            .unwrap();
        assert!(decoded.binary);
        let mut w = Writer::new(ChangelogFormat::Json);
        w.restored(TORNADO, Some(&decoded), &marks);
        let migrated = w.migrate(&state, TORNADO).unwrap();
        assert!(w.migrate(&state, TORNADO).is_none(), "once");
        assert!(migrated
            .last()
            .is_some_and(|r| r.key.starts_with(b"d\0") && r.value.is_none()));
        log.extend(migrated);
        let compact = compacted(&log);
        assert!(compact
            .iter()
            .all(|r| r.value.as_deref().is_some_and(|v| !binary::is_binary(v))));
        assert!(!compact.iter().any(|r| r.key.starts_with(b"d\0")));
        assert_eq!(restore_both(&compact), state);
        // What an earlier version's reader does: JSON only.
        let mut old = State::new();
        for r in &compact {
            let rec: FindingRecord = match r.key[0] {
                b'f' => serde_json::from_slice(r.value.as_deref().unwrap()).unwrap(),
                _ => continue,
            };
            let fp = String::from_utf8_lossy(&r.key[r.key.len() - 35..]).into_owned();
            old.targets
                .entry(TORNADO.into())
                .or_default()
                .findings
                .insert(fp, Box::new(rec));
        }
        assert_eq!(
            old.targets[TORNADO].findings,
            state.targets[TORNADO].findings
        );
    }

    /// A binary record that does not decode is an error naming its key and
    /// what could not be read, and where.
    #[test]
    fn a_corrupt_binary_record_is_an_error_naming_it() {
        let mut state = State::new();
        let touched = tornado_scan(&mut state, at(1), 3, "aaa");
        let log = Writer::new(ChangelogFormat::Binary).records(
            &state,
            TORNADO,
            &touched.findings,
            Some(&touched.tickets),
        );
        let finding = &log[1];
        let value = finding.value.clone().unwrap();
        // Cut short.
        let mut r = Restorer::new();
        r.apply(&log[0].key, log[0].value.as_deref()).unwrap();
        let err = r
            .apply(&finding.key, Some(&value[..value.len() / 2]))
            .unwrap_err()
            .to_string();
        let fp = String::from_utf8_lossy(&finding.key[finding.key.len() - 35..]).into_owned();
        assert!(err.contains(&fp), "{err}");
        assert!(
            err.contains("binary finding record") && err.contains("at byte"),
            "{err}"
        );
        // Its dictionary missing.
        let mut r = Restorer::new();
        let err = r.apply(&finding.key, Some(&value)).unwrap_err().to_string();
        assert!(err.contains("string id"), "{err}");
        // Through a restore: the offset too.
        let mut raw = RawLog::new();
        raw.push(7, &finding.key, Some(&value)).unwrap();
        let err = raw
            .take(TORNADO, |recs| decode_target(&recs, "custody.state"))
            .unwrap()
            .unwrap_err();
        assert!(err.starts_with("custody.state offset 7:"), "{err}");
        // A dictionary record whose key names no id.
        let err = parse(b"d\0repo:x/y\0abc", log[0].value.as_deref()).unwrap_err();
        assert!(err.to_string().contains("abc"), "{err}");
    }

    #[test]
    fn scan_records_round_trip_in_both_forms() {
        let scan = ScanRecord {
            bytes: Some("ab".repeat(32)),
            content: None,
            format: Some("sarif".into()),
            scanner: Some("bandit".into()),
            complete: true,
            findings: 2,
            observed: vec![format!("v1:{}", "0f".repeat(16)), "other".into()],
            settings: "s".into(),
        };
        for format in [ChangelogFormat::Json, ChangelogFormat::Binary] {
            let r = Writer::new(format).scan_record(&State::new(), "repo:a/b", &scan);
            let mut log = RawLog::new();
            log.push(0, &r.key, r.value.as_deref()).unwrap();
            assert_eq!(
                log.take_scans(),
                vec![("repo:a/b".to_string(), scan.clone())]
            );
        }
        // Binary, over a target's findings: a bitmap, read back against
        // the findings the log holds.
        let mut state = State::new();
        let touched = tornado_scan(&mut state, at(1), 40, "aaa");
        let mut w = Writer::new(ChangelogFormat::Binary);
        let mut recs = w.records(&state, TORNADO, &touched.findings, Some(&touched.tickets));
        let scan = ScanRecord {
            observed: touched.observed[..30].to_vec(),
            ..scan
        };
        let r = w.scan_record(&state, TORNADO, &scan);
        assert!(r.value.as_ref().unwrap().len() < 100, "a bitmap");
        recs.push(r);
        let mut log = RawLog::new();
        for (i, r) in recs.iter().enumerate() {
            log.push(i as i64, &r.key, r.value.as_deref()).unwrap();
        }
        assert_eq!(log.take_scans(), vec![(TORNADO.to_string(), scan.clone())]);
        // Against other findings (a finding record missing): left out.
        let mut log = RawLog::new();
        for (i, r) in recs.iter().enumerate().filter(|(i, _)| *i != 3) {
            log.push(i as i64, &r.key, r.value.as_deref()).unwrap();
        }
        assert!(log.take_scans().is_empty());
    }

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
