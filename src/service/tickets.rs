//! Tickets across targets (grouping `team_rule`) in the service: the
//! records that carry each target's part of such a ticket from the
//! partition that keeps the target to the one that sums the ticket, and
//! the stage that sums them. Free of Kafka clients, like the rest of
//! [`crate::service`]: partition processors send the records of the parts
//! their steps changed, and [`crate::kafka::ticket_stage`] drives a
//! [`Stage`] per partition of the parts topic. (`custody process` sums the
//! parts of its one state directly.)
//!
//! A part's record is keyed `K\0target` (K the ticket's key,
//! [`crate::ticket::team_rule_key`]) and belongs in partition
//! [`partition_of`]`(K)` of the contributions topic, so that every part of
//! one ticket meets in one partition whatever partition keeps its target;
//! its value is the part's [`Contribution`] as JSON, or a tombstone once
//! the part holds no member at all (its findings were regrouped or
//! reassigned). The [`Stage`] of a partition keeps the latest part per
//! ticket and target (rebuilt by reading the compacted topic to its end,
//! nothing else kept) and each ticket as last published (a record per K,
//! [`Stage::restore_published`]); once restored it publishes only what
//! differs, so a restart says nothing that was said.

use crate::engine::{Engine, Output};
use crate::lifecycle::State;
use crate::model::{Target, TicketEvent};
use crate::ticket::aggregate::{self, Contribution, Parts};
use crate::ticket::TicketRecord;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// One record of the contributions topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContributionRecord {
    /// The ticket's key (K): what [`partition_of`] partitions by.
    pub ticket: String,
    /// `K\0target`.
    pub key: Vec<u8>,
    /// The part as JSON; None: a tombstone.
    pub value: Option<Vec<u8>>,
}

/// The partition of the contributions topic (of `partitions`) that holds
/// every part of ticket `ticket`: a hash of the key alone, the same on
/// every instance and version (the first eight bytes of its BLAKE3).
pub fn partition_of(ticket: &str, partitions: i32) -> i32 {
    let h = blake3::hash(ticket.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    let n = u64::try_from(partitions.max(1)).unwrap_or(1);
    i32::try_from(u64::from_le_bytes(b) % n).unwrap_or(0)
}

/// The record key of `target`'s part of ticket `ticket`.
pub fn record_key(ticket: &str, target: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ticket.len() + 1 + target.len());
    k.extend_from_slice(ticket.as_bytes());
    k.push(0);
    k.extend_from_slice(target.as_bytes());
    k
}

/// The ticket and target a record key names.
pub fn parse_record_key(key: &[u8]) -> Result<(&str, &str), String> {
    let text = std::str::from_utf8(key).map_err(|_| "a key not in UTF-8".to_string())?;
    text.split_once('\0')
        .filter(|(k, t)| !k.is_empty() && !t.is_empty())
        .ok_or_else(|| format!("a key not of the form ticket\\0target: {text:?}"))
}

/// The record of a part's change.
pub fn part_record(change: &aggregate::PartChange) -> Result<ContributionRecord, String> {
    let value = match &change.contribution {
        Some(c) => Some(serde_json::to_vec(c).map_err(|e| {
            format!(
                "part of ticket {} for {}: {e}",
                change.ticket, change.target
            )
        })?),
        None => None,
    };
    Ok(ContributionRecord {
        ticket: change.ticket.clone(),
        key: record_key(&change.ticket, &change.target),
        value,
    })
}

/// The records of `target`'s parts among the ticket records `tickets`:
/// one per part, its contribution, or a tombstone when it holds no member.
/// Other tickets give none.
pub fn contribution_records(
    state: &State,
    target: &Target,
    tickets: &[String],
    max_locations: usize,
) -> Vec<ContributionRecord> {
    let spec = target.to_string();
    let Some(ts) = state.targets.get(&spec) else {
        return Vec::new();
    };
    tickets
        .iter()
        .filter_map(|key| aggregate::part_change(ts, &spec, key, max_locations))
        .filter_map(|change| match part_record(&change) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!("a ticket part not written: {e}");
                None
            }
        })
        .collect()
}

/// What the stage publishes for one change: the ticket events, then the
/// records of the tickets as published (by key; JSON), to write once the
/// events are acknowledged (or in their transaction).
#[derive(Debug, Default)]
pub struct Published {
    /// Ticket events, in order.
    pub events: Vec<TicketEvent>,
    /// The published tickets' records.
    pub records: Vec<(String, Vec<u8>)>,
}

impl Published {
    /// Appends what a later change published.
    pub fn extend(&mut self, other: Published) {
        self.events.extend(other.events);
        self.records.extend(other.records);
    }
}

/// One partition of the contributions topic: the latest part per ticket
/// and target, and each ticket as last published.
#[derive(Debug, Default)]
pub struct Stage {
    parts: Parts,
    published: BTreeMap<String, TicketRecord>,
}

impl Stage {
    /// An empty stage.
    pub fn new() -> Stage {
        Stage::default()
    }

    /// Restores one record of the contributions topic (read from the
    /// beginning; a later record of a key replaces the earlier).
    pub fn restore_part(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        self.put(key, value).map(|_| ())
    }

    /// Restores one record of the published tickets (key K, the ticket's
    /// record as JSON; a tombstone forgets it).
    pub fn restore_published(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let key = std::str::from_utf8(key).map_err(|_| "a key not in UTF-8".to_string())?;
        match value {
            Some(v) => {
                let rec: TicketRecord = serde_json::from_slice(v)
                    .map_err(|e| format!("published ticket {key}: {e}"))?;
                self.published.insert(key.to_string(), rec);
            }
            None => {
                self.published.remove(key);
            }
        }
        Ok(())
    }

    /// After a restore: publishes every ticket whose parts differ from it
    /// as last published (nothing when nothing changed meanwhile).
    pub fn settle(&mut self, engine: &Engine, now: DateTime<Utc>) -> Published {
        let keys: Vec<String> = self
            .parts
            .keys()
            .chain(self.published.keys())
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut out = Published::default();
        for k in &keys {
            self.publish(k, engine, now, &mut out);
        }
        out
    }

    /// Applies one record of the contributions topic and publishes what it
    /// changed of its ticket.
    pub fn apply(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        engine: &Engine,
        now: DateTime<Utc>,
    ) -> Result<Published, String> {
        let ticket = self.put(key, value)?;
        let mut out = Published::default();
        self.publish(&ticket, engine, now, &mut out);
        Ok(out)
    }

    /// The tickets as last published.
    pub fn published(&self) -> &BTreeMap<String, TicketRecord> {
        &self.published
    }

    fn put(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<String, String> {
        let (ticket, target) = parse_record_key(key)?;
        match value {
            Some(v) => {
                let c: Contribution = serde_json::from_slice(v)
                    .map_err(|e| format!("part of {ticket} for {target}: {e}"))?;
                self.parts
                    .entry(ticket.to_string())
                    .or_default()
                    .insert(target.to_string(), c);
            }
            None => {
                if let Some(p) = self.parts.get_mut(ticket) {
                    p.remove(target);
                    if p.is_empty() {
                        self.parts.remove(ticket);
                    }
                }
            }
        }
        Ok(ticket.to_string())
    }

    fn publish(&mut self, ticket: &str, engine: &Engine, now: DateTime<Utc>, out: &mut Published) {
        let mut events = Output::default();
        let before = self.published.get(ticket).map(|r| r.seq);
        engine.publish_across(
            ticket,
            self.parts.get(ticket),
            &mut self.published,
            now,
            &mut events,
        );
        if let Some(rec) = self.published.get(ticket) {
            if Some(rec.seq) != before {
                match serde_json::to_vec(rec) {
                    Ok(v) => out.records.push((ticket.to_string(), v)),
                    Err(e) => tracing::error!(ticket, "a published ticket not written: {e}"),
                }
            }
        }
        out.events.extend(events.tickets);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::{ScanMeta, TicketEventKind};
    use crate::normalize::{self, Format};
    use chrono::TimeZone;

    const API: &str = "repo:github.com/acme/api";
    const WEB: &str = "repo:github.com/acme/web";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).single().unwrap()
    }

    fn engine(grouping: &str) -> Engine {
        let cfg =
            Config::parse(&format!("[tickets]\ngrouping = \"{grouping}\"\n"), "t.toml").unwrap();
        Engine::new(&cfg)
    }

    /// Scans `target` with findings of rules R1 and R2 at `paths`, and
    /// returns the records of the parts the scan touched.
    fn scan(
        engine: &Engine,
        state: &mut State,
        target: &str,
        paths: &[&str],
    ) -> Vec<ContributionRecord> {
        let mut text = String::new();
        for (i, p) in paths.iter().enumerate() {
            text.push_str(&format!(
                "{{\"scanner\":\"t\",\"category\":\"sast\",\"rule_id\":\"R{}\",\"severity\":\"high\",\"message\":\"m\",\"location\":{{\"path\":\"{p}\",\"start_line\":{}}}}}\n",
                1 + i % 2,
                i + 1
            ));
        }
        let (_, report) = normalize::decode(
            text.as_bytes(),
            Some(Format::Native),
            engine.decode_context(),
        )
        .unwrap();
        let target: Target = target.parse().unwrap();
        let meta = ScanMeta {
            scan_id: String::new(),
            target: target.clone(),
            commit: None,
            git_ref: None,
            complete: true,
            coverage: [("t".to_string(), crate::model::Category::Sast)].into(),
            rule_help: Default::default(),
        };
        let mut out = Output::default();
        let touched = engine.scan_touched(
            state,
            &meta,
            report.findings,
            now(),
            &mut out,
            std::time::Duration::ZERO,
        );
        let records = contribution_records(state, &target, &touched.tickets, 20);
        // The step's output carries the same changes of parts, as the
        // partition processor sends them.
        let sent: Vec<ContributionRecord> =
            out.parts.iter().map(|c| part_record(c).unwrap()).collect();
        assert_eq!(sent, records);
        assert!(out.tickets.is_empty(), "a part publishes no ticket event");
        records
    }

    fn apply_all(stage: &mut Stage, engine: &Engine, records: &[ContributionRecord]) -> Published {
        let mut out = Published::default();
        for r in records {
            let p = stage
                .apply(&r.key, r.value.as_deref(), engine, now())
                .unwrap();
            out.events.extend(p.events);
            out.records.extend(p.records);
        }
        out
    }

    fn kinds(p: &Published) -> Vec<TicketEventKind> {
        p.events.iter().map(|e| e.event).collect()
    }

    /// Two targets' parts, wherever their targets are kept, meet in one
    /// partition and make one ticket per rule: opened once, then updated
    /// with the second target; a stage restored from the records (parts
    /// and published tickets) publishes nothing more; the targets' fixes
    /// update, then resolve.
    #[test]
    fn parts_of_two_targets_make_one_ticket_and_a_restore_says_nothing_again() {
        let e = engine("team_rule");
        let mut state = State::new();
        let api = scan(&e, &mut state, API, &["a.py", "b.py"]);
        let web = scan(&e, &mut state, WEB, &["a.py", "b.py", "c.py"]);
        assert_eq!(api.len(), 2, "one part per rule");
        assert_eq!(web.len(), 2);
        for r in api.iter().chain(&web) {
            let ticket = &r.ticket;
            let same = api.iter().chain(&web).filter(|o| &o.ticket == ticket);
            for o in same {
                assert_eq!(partition_of(&o.ticket, 6), partition_of(ticket, 6));
            }
            assert!((0..6).contains(&partition_of(ticket, 6)));
        }

        let mut stage = Stage::new();
        let first = apply_all(&mut stage, &e, &api);
        assert_eq!(kinds(&first), [TicketEventKind::Opened; 2]);
        let second = apply_all(&mut stage, &e, &web);
        assert_eq!(kinds(&second), [TicketEventKind::Updated; 2]);
        for ev in &second.events {
            let targets: Vec<String> = ev.targets.iter().map(|t| t.to_string()).collect();
            assert_eq!(targets, [API, WEB]);
            assert!(ev.body.contains(&format!("`{API}`")) && ev.body.contains(&format!("`{WEB}`")));
        }
        let r1 = second
            .events
            .iter()
            .find(|ev| ev.group == "R1")
            .expect("R1's ticket");
        assert_eq!(
            r1.fingerprints.len(),
            1 + 2,
            "api's a.py, web's a.py and c.py"
        );
        let published: Vec<(String, Vec<u8>)> =
            first.records.into_iter().chain(second.records).collect();

        // A restart: both topics read back, nothing new to say.
        let mut restored = Stage::new();
        for r in api.iter().chain(&web) {
            restored.restore_part(&r.key, r.value.as_deref()).unwrap();
        }
        for (k, v) in &published {
            restored.restore_published(k.as_bytes(), Some(v)).unwrap();
        }
        let settled = restored.settle(&e, now());
        assert!(settled.events.is_empty(), "{:?}", kinds(&settled));
        assert!(settled.records.is_empty());
        assert_eq!(restored.published(), stage.published());

        // The same after a restore from parts alone would open them again:
        // the published tickets are what keeps a restart quiet.
        let mut parts_only = Stage::new();
        for r in api.iter().chain(&web) {
            parts_only.restore_part(&r.key, r.value.as_deref()).unwrap();
        }
        assert_eq!(
            kinds(&parts_only.settle(&e, now())),
            [TicketEventKind::Opened; 2]
        );

        // The targets fixed, one then the other.
        let fixed = scan(&e, &mut state, API, &[]);
        let p = apply_all(&mut restored, &e, &fixed);
        assert_eq!(kinds(&p), [TicketEventKind::Updated; 2]);
        let fixed = scan(&e, &mut state, WEB, &[]);
        let p = apply_all(&mut restored, &e, &fixed);
        assert_eq!(kinds(&p), [TicketEventKind::Resolved; 2]);
        assert!(p.events.iter().all(|ev| ev.reason.is_none()));
        assert_eq!(p.records.len(), 2);
    }

    /// A team moved off `team_rule`: its parts hold no member once
    /// regrouped, so their records are tombstones, and the ticket resolves
    /// once, saying `regrouped`, when the last one arrives.
    #[test]
    fn regrouped_parts_are_tombstones_and_the_last_resolves_as_regrouped() {
        let e = engine("team_rule");
        let mut state = State::new();
        let mut stage = Stage::new();
        let mut records = scan(&e, &mut state, API, &["a.py"]);
        records.extend(scan(&e, &mut state, WEB, &["a.py"]));
        assert_eq!(
            kinds(&apply_all(&mut stage, &e, &records)),
            [TicketEventKind::Opened, TicketEventKind::Updated]
        );

        let back = engine("team_target_rule");
        let mut tombstones = Vec::new();
        for target in [API, WEB] {
            let target: Target = target.parse().unwrap();
            let touched =
                back.reattribute_target(&mut state, &target, now(), &mut Output::default());
            let rs = contribution_records(&state, &target, &touched.tickets, 20);
            assert_eq!(rs.len(), 1);
            assert!(rs[0].value.is_none(), "a regrouped part is a tombstone");
            tombstones.extend(rs);
        }
        let p = stage.apply(&tombstones[0].key, None, &back, now()).unwrap();
        assert_eq!(kinds(&p), [TicketEventKind::Updated]);
        let p = stage.apply(&tombstones[1].key, None, &back, now()).unwrap();
        assert_eq!(kinds(&p), [TicketEventKind::Resolved]);
        assert_eq!(
            p.events[0].reason,
            Some(crate::model::TicketReason::Regrouped)
        );
    }

    /// Records that are not custody's are errors, never a panic.
    #[test]
    fn foreign_records_are_errors() {
        let e = engine("team_rule");
        let mut stage = Stage::new();
        for (key, value) in [
            (&b"no-separator"[..], Some(&b"{}"[..])),
            (&b"\0target"[..], None),
            (&b"tk2-x\0"[..], None),
            (&[0xff, 0, b'x'][..], None),
            (
                &b"tk2-x\0repo:github.com/a/b"[..],
                Some(&b"{\"part\":1}"[..]),
            ),
            (&b"tk2-x\0repo:github.com/a/b"[..], Some(&b"\xff"[..])),
        ] {
            assert!(stage.apply(key, value, &e, now()).is_err(), "{key:?}");
            assert!(stage.restore_part(key, value).is_err(), "{key:?}");
        }
        assert!(stage.restore_published(b"tk2-x", Some(b"[]")).is_err());
        assert!(stage.settle(&e, now()).events.is_empty());
    }
}
