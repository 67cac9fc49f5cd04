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
mod cold;
mod restore;
mod writer;

pub use cold::*;
pub use restore::*;
pub use writer::*;

pub use crate::config::service::ChangelogFormat;
use crate::lifecycle::{FindingRecord, State, TargetState};
use crate::ticket::TicketRecord;
use binary::{Dict, Shared, Strings};
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

#[cfg(test)]
mod tests {
    use super::restore::BLOCK;
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
            let mut r = Restorer::resume(state, &t);
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

    /// Records as the version before baselines wrote them (no origin on
    /// findings, no baseline record), of two targets decoded one after
    /// the other as a partition decodes them: each target's scanners are
    /// settled as having scanned it, the later target's too.
    #[test]
    fn records_without_origins_settle_each_targets_baseline_as_it_is_decoded() {
        let mut state = State::new();
        let touched = tornado_scan(&mut state, at(1), 20, "aaa");
        let old = |target: &str| -> Vec<Record> {
            records(&state, TORNADO, &touched.findings, Some(&[]))
                .into_iter()
                .filter(|r| r.key.first() == Some(&b'f'))
                .map(|r| {
                    let mut v: serde_json::Value =
                        serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
                    v.as_object_mut().unwrap().remove("origin");
                    Record {
                        key: String::from_utf8(r.key)
                            .unwrap()
                            .replace(TORNADO, target)
                            .into_bytes(),
                        value: Some(serde_json::to_vec(&v).unwrap()),
                    }
                })
                .collect()
        };
        let other = "repo:github.com/acme/other";
        let mut log = old(TORNADO);
        log.extend(old(other));
        let restored = restore_both(&log);
        for t in [TORNADO, other] {
            let ts = &restored.targets[t];
            assert_eq!(ts.findings.len(), 20);
            assert!(ts.findings.values().all(|r| r.origin.is_none()));
            assert_eq!(
                ts.baselined.iter().collect::<Vec<_>>(),
                vec!["bandit"],
                "{t}"
            );
        }
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

    /// A restorer resumed for one target continues that target's state
    /// where the state holds some of it already (records added, a
    /// tombstone removing one applied before), leaves the other targets as
    /// they are, and makes no target of one that only tombstones name.
    #[test]
    fn a_resumed_restorer_continues_its_target_and_leaves_the_others() {
        let mut state = State::new();
        let touched = tornado_scan(&mut state, at(1), 40, "aaa");
        let recs = records(&state, TORNADO, &touched.findings, Some(&touched.tickets));
        let (early, late) = recs.split_at(recs.len() / 2);
        let finding = early
            .iter()
            .find(|r| r.key.starts_with(b"f\0"))
            .expect("a finding record among the early ones");
        let apply = |r: &mut Restorer, recs: &[Record]| {
            for rec in recs {
                r.apply(&rec.key, rec.value.as_deref()).unwrap();
            }
        };
        // All in order, then the tombstone: what the resumed restore must
        // give for the target.
        let mut whole = Restorer::new();
        apply(&mut whole, &recs);
        whole.apply(&finding.key, None).unwrap();
        let whole = whole.finish();
        // The early records in a state that holds another target too.
        const OTHER: &str = "repo:github.com/acme/other";
        let mut first = Restorer::new();
        apply(&mut first, early);
        let mut partial = first.finish();
        let other = state.targets[TORNADO].clone();
        partial.targets.insert(OTHER.into(), other.clone());
        assert!(partial.targets[TORNADO]
            .findings
            .contains_key(std::str::from_utf8(&finding.key[2 + TORNADO.len() + 1..]).unwrap()));
        // The rest resumed (the early dictionary records read again, for
        // the texts the later records name).
        let mut resumed = Restorer::resume(partial, TORNADO);
        let dicts: Vec<Record> = early
            .iter()
            .filter(|r| r.key.starts_with(b"d\0"))
            .cloned()
            .collect();
        apply(&mut resumed, &dicts);
        apply(&mut resumed, late);
        resumed.apply(&finding.key, None).unwrap();
        let resumed = resumed.finish();
        assert_eq!(resumed.targets[TORNADO], whole.targets[TORNADO]);
        assert_eq!(resumed.targets[OTHER], other);
        assert_eq!(resumed.targets.len(), 2);
        // A target of no state that only a tombstone names is not made.
        let mut r = Restorer::resume(State::new(), TORNADO);
        r.apply(&finding.key, None).unwrap();
        assert!(r.finish().targets.is_empty());
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
