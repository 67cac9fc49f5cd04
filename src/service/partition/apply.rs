//! Jobs applied in offset order: reports through the engine (or
//! recognized as their target's last scan again), decisions, dead letters;
//! events produced at once, changelog records queued behind them.

use super::super::changelog;
use super::super::meta::{header, MessageMeta};
use super::rescan::{
    known, last_scan, remembered, Decode, DecodedReport, Digests, LastScan, Observed, Prepared,
    ScanId,
};
use super::{Ack, Decided, Env, Failure, HeldChunk, Incoming, Job, PartitionProcessor, Pending};
use crate::engine::Output;
use crate::model::{Origin, ScanMeta};
use crate::normalize::{DecodeError, Format};
use std::sync::Arc;

impl PartitionProcessor {
    pub(super) fn apply_ready(&mut self, env: &Env<'_>, spent: &dyn Fn() -> bool) {
        let mut inline = 0;
        while let Some(job) = self.jobs.front_mut() {
            let decoded = match job {
                Job::Decoding { decode, meta, .. } => match decode {
                    Decode::Done(_) => decode.take_done(),
                    // Out with the edge: applied when it is handed back.
                    Decode::Away => return,
                    Decode::Lazy(_) => {
                        if inline > 0 && spent() {
                            return;
                        }
                        inline += 1;
                        let known = known(&self.last_scans, meta);
                        decode.take_lazy().map(|input| input.run(known))
                    }
                    Decode::Taken => None,
                }
                .or_else(|| {
                    Some(Prepared::Decoded(Err(DecodeError::Syntax(
                        "decoder stopped unexpectedly".into(),
                    ))))
                }),
                _ => None,
            };
            let Some(job) = self.jobs.pop_front() else {
                return;
            };
            let offset = job.msg().offset;
            // What is logged while the message is applied says which, and
            // the target it is about.
            let target = job.target();
            let _message = tracing::info_span!(
                "message",
                topic = %self.topic,
                partition = self.partition,
                offset,
                target = target.as_deref().unwrap_or("")
            )
            .entered();
            let job = match self.replayed(env, job) {
                Some(job) => job,
                None => continue,
            };
            match (job, decoded) {
                (
                    Job::Decoding {
                        msg, meta, held, ..
                    },
                    Some(prepared),
                ) => self.apply_prepared(env, msg, meta, prepared, held),
                (
                    Job::Poison {
                        msg,
                        reason,
                        error,
                        held,
                    },
                    _,
                ) => self.dead_letter(env, msg, reason, &error, held),
                (Job::Decision { msg, decision }, _) => match decision {
                    Decided::One(d) => self.apply_decision(env, msg, &d),
                    Decided::Vex(doc, target) => self.apply_vex(env, msg, &doc, &target),
                },
                (Job::Held { msg, ack }, _) => {
                    env.count_message("chunk");
                    let bytes = msg.len();
                    self.pending.push_back(Pending {
                        offset: Some(msg.offset),
                        timestamp: msg.timestamp,
                        events: Arc::new(Ack::default()),
                        changelog: None,
                        changelog_ack: ack,
                        held: Vec::new(),
                        hold: true,
                        bytes,
                        source: None,
                        dead_letter: None,
                    });
                }
                (Job::Decoding { .. }, None) => {}
            }
            self.quiet = false;
        }
    }

    /// A message redelivered after a crash, as the changelog's last whole
    /// group says (see [`changelog::Applied`]): one up to the message it
    /// names was applied whole, and is passed over (`None`). Under a head
    /// an earlier version wrote, the message it names is applied again
    /// quietly instead (its events were delivered, its records maybe not
    /// all written). A chunk is held as ever: the scan it belongs to is
    /// judged by its last chunk.
    fn replayed(&mut self, env: &Env<'_>, job: Job) -> Option<Job> {
        let Some(applied) = self.replay else {
            return Some(job);
        };
        let offset = match &job {
            Job::Held { .. } => return Some(job),
            Job::Decoding { msg, .. } | Job::Poison { msg, .. } | Job::Decision { msg, .. } => {
                msg.offset
            }
        };
        let legacy = applied.records.is_none();
        if offset > applied.offset || (legacy && offset == applied.offset) {
            self.replay = None;
            self.quiet = legacy && offset == applied.offset;
            return Some(job);
        }
        let (msg, held) = match job {
            Job::Decoding { msg, held, .. } | Job::Poison { msg, held, .. } => (msg, held),
            Job::Decision { msg, .. } | Job::Held { msg, .. } => (msg, Vec::new()),
        };
        self.pass_over(env, msg, held);
        None
    }

    /// A redelivered message applied before the crash: done once the
    /// messages before it are, with nothing produced; the earlier chunks of
    /// its scan are released with it.
    fn pass_over(&mut self, env: &Env<'_>, msg: Incoming, held: Vec<HeldChunk>) {
        let offset = msg.offset;
        env.count_message("already_applied");
        self.last_applied = Some(offset);
        self.pending.push_back(Pending {
            offset: Some(offset),
            timestamp: msg.timestamp,
            events: Arc::new(Ack::default()),
            changelog: Some(Vec::new()),
            changelog_ack: Arc::new(Ack::default()),
            held: held.into_iter().map(|h| h.ack).collect(),
            hold: false,
            bytes: msg.len(),
            source: None,
            dead_letter: None,
        });
    }

    /// Applies a report: decoded, or the same as its target's last scan.
    fn apply_prepared(
        &mut self,
        env: &Env<'_>,
        msg: Incoming,
        meta: MessageMeta,
        prepared: Prepared,
        held: Vec<HeldChunk>,
    ) {
        let decoded = match prepared {
            Prepared::Decoded(d) => d,
            Prepared::Undecoded(input, mut digests) => {
                // Decoded now after all if the report is not its target's
                // last scan (the decode compared digests before earlier
                // messages were applied, or did not compare them). A decode
                // that left the comparing to the apply took only the
                // digest of the bytes: the content digest is taken here
                // when the bytes differ, for the comparison and for the
                // next scan's.
                let content_wanted = |d: &Digests| {
                    d.content.is_none()
                        && last_scan(&self.last_scans, &meta)
                            .is_none_or(|l| !l.digests.same_report(d))
                };
                if content_wanted(&digests) {
                    digests.content = input.content_digest();
                }
                if remembered(&self.last_scans, &meta, &digests) {
                    match self.rescan_unchanged(env, &msg, &meta, &digests) {
                        Ok(Some(records)) => {
                            let bytes = msg.len();
                            let held = held.into_iter().map(|h| h.ack).collect();
                            self.emit(env, Some(msg), Output::default(), records, held, bytes);
                            return;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            env.fail(e);
                            return;
                        }
                    }
                }
                if digests.content.is_none() {
                    digests.content = input.content_digest();
                }
                (*input).decode(digests)
            }
        };
        match decoded {
            Ok(d) => self.apply_scan(env, msg, meta, d, held),
            Err(e) => {
                let format = meta.format.map_or("unknown", Format::name);
                env.cx.metrics.decode_error(format, e.reason());
                self.dead_letter(env, msg, e.reason(), &e.to_string(), held);
            }
        }
    }

    /// Applies a decoded report: one scan per target its records name (the
    /// message's target is the default for those that name none; see
    /// [`crate::normalize::Report::split`]), in one step whose events and
    /// changelog records are those of every part. Only a report of the
    /// one target its message names is remembered as that target's last
    /// scan; a split report is decoded whenever it comes (its parts'
    /// memories are forgotten, as any scan of their targets forgets them).
    fn apply_scan(
        &mut self,
        env: &Env<'_>,
        msg: Incoming,
        meta: MessageMeta,
        decoded: DecodedReport,
        held: Vec<HeldChunk>,
    ) {
        let DecodedReport {
            mut report,
            scan_id,
            digests,
        } = decoded;
        if let Some(name) = &meta.scanner {
            report.set_scanner(name);
        }
        let findings = report.findings.len();
        let parts = match report.split(meta.target.clone()) {
            Ok(parts) => parts,
            Err(e) => {
                let err = format!("{e}: set the message key or the custody-target header");
                self.dead_letter(env, msg, "no_target", &err, held);
                return;
            }
        };
        // Every part's target restored before anything is applied: a
        // target that cannot be restored stops the whole report.
        for part in &parts {
            if let Err(e) = self.materialize(env, &part.target.to_string()) {
                env.fail(e);
                return;
            }
        }
        let remember = match parts.as_slice() {
            [one] => meta.target.as_ref() == Some(&one.target),
            _ => false,
        };
        env.cx.metrics.findings_consumed(findings);
        env.count_message("processed");
        let (scan_id, content) = match scan_id {
            ScanId::Given(id) => (id, None),
            ScanId::Content(bytes) => (String::new(), Some(bytes)),
        };
        let commit = meta.commit.clone().or(report.commit.take());
        let git_ref = meta.git_ref.clone().or(report.git_ref.take());
        let now = msg.time(env.wall);
        let ownership = env.cx.ownership_generation();
        let Some(state) = self.state.as_mut() else {
            return;
        };
        let mut out = Output::default();
        let mut applied = Vec::with_capacity(parts.len());
        for part in parts {
            let spec = part.target.to_string();
            let scan = ScanMeta {
                scan_id: scan_id.clone(),
                target: part.target,
                commit: commit.clone(),
                git_ref: git_ref.clone(),
                complete: meta.complete,
                coverage: report.coverage.clone(),
                rule_help: report.rule_help.clone(),
            };
            let touched = env.cx.engine.scan_touched(
                state,
                &scan,
                part.findings,
                now,
                &mut out,
                env.cx.settings.last_seen_resolution,
            );
            applied.push((spec, touched));
        }
        // A scan id the publisher did not give is derived from the report
        // (as `custody process` derives it) only when an event carries it:
        // the events, and the origin of the findings the scan first saw,
        // before their records are written.
        if let (Some(bytes), false) = (content, out.findings.is_empty()) {
            let id = ScanMeta::content_id(&bytes);
            for e in &mut out.findings {
                e.scan_id = Some(id.clone());
                if e.origin.scan_id.is_none() && e.origin.at == now {
                    e.origin.scan_id = Some(id.clone());
                }
            }
            // The findings a scan first saw share its origin: each origin
            // given the id once, and shared again.
            let mut given: Vec<(Arc<Origin>, Arc<Origin>)> = Vec::new();
            for (spec, touched) in &applied {
                let Some(ts) = state.targets.get_mut(spec) else {
                    continue;
                };
                for fp in &touched.findings {
                    let Some(origin) = ts.findings.get_mut(fp).and_then(|r| r.origin.as_mut())
                    else {
                        continue;
                    };
                    if origin.scan_id.is_some() || origin.at != now {
                        continue;
                    }
                    *origin = match given.iter().find(|(old, _)| Arc::ptr_eq(old, origin)) {
                        Some((_, new)) => Arc::clone(new),
                        None => {
                            let mut new = Origin::clone(origin);
                            new.scan_id = Some(id.clone());
                            let new = Arc::new(new);
                            given.push((Arc::clone(origin), Arc::clone(&new)));
                            new
                        }
                    };
                }
            }
        }
        let mut records = Vec::new();
        let mut last = None;
        for (spec, mut touched) in applied {
            records.extend(self.writer.records(
                state,
                &spec,
                &touched.findings,
                Some(&touched.tickets),
            ));
            // The scanners whose first complete scan of the target is done
            // (what tells introduced findings from inherited ones), before
            // the last scan record, which no record of its target may
            // follow.
            if touched.baseline {
                records.extend(changelog::baseline_record(state, &spec));
            }
            self.last_scans.remove(&spec);
            if remember {
                // What the next rescan of the target needs to skip its
                // decode when it sends this report again (only a target
                // named by the message: the check comes before the report
                // is read), kept in the changelog too, after the scan's
                // records.
                let scan = LastScan {
                    digests,
                    format: meta.format,
                    scanner: meta.scanner.clone(),
                    complete: meta.complete,
                    findings,
                    ownership,
                    observed: Observed::new(std::mem::take(&mut touched.observed)),
                    restored: false,
                };
                records.push(self.writer.scan_record(
                    state,
                    &spec,
                    &scan.record(&env.cx.settings_digest),
                ));
                last = Some((spec, scan));
            }
        }
        if let Some((spec, scan)) = last {
            self.last_scans.insert(spec, scan);
        }
        let bytes = msg.len();
        let held = held.into_iter().map(|h| h.ack).collect();
        self.emit(env, Some(msg), out, records, held, bytes);
    }

    /// A report that is its target's last scan again (see [`LastScan`]):
    /// only `last_seen` moves. Returns the changelog records to write;
    /// `Ok(None)` when the state is not as that scan left it (the report
    /// is then applied in full); an error when the target's state could
    /// not be restored (nothing may be applied to it).
    fn rescan_unchanged(
        &mut self,
        env: &Env<'_>,
        msg: &Incoming,
        meta: &MessageMeta,
        digests: &Digests,
    ) -> Result<Option<Vec<changelog::Record>>, Failure> {
        let Some(target) = meta.target.as_ref() else {
            return Ok(None);
        };
        let spec = target.to_string();
        // A target known from the changelog's record of its last scan may
        // not be decoded yet; decoding it re-attributes it, which forgets
        // the scan should a finding move.
        self.materialize(env, &spec)?;
        let (Some(last), Some(state)) = (self.last_scans.get_mut(&spec), self.state.as_mut())
        else {
            return Ok(None);
        };
        if last.ownership != env.cx.ownership_generation() {
            self.last_scans.remove(&spec);
            return Ok(None);
        }
        // A scan known from the changelog: the ownership may have changed
        // since. Re-attribution covers open and accepted findings; a full
        // apply would re-attribute the others it observes too (false
        // positives), so each of those must be attributed as it would be.
        if last.restored {
            if !env
                .cx
                .engine
                .attribution_holds(state, target, &last.observed)
            {
                self.last_scans.remove(&spec);
                return Ok(None);
            }
            last.restored = false;
        }
        let now = msg.time(env.wall);
        let Some(touched) = env.cx.engine.rescan_unchanged(
            state,
            target,
            &last.observed,
            now,
            env.cx.settings.last_seen_resolution,
        ) else {
            self.last_scans.remove(&spec);
            return Ok(None);
        };
        env.cx.metrics.findings_consumed(last.findings);
        env.count_message("processed");
        env.cx.metrics.report_unchanged();
        last.recognized_by(digests);
        // No ticket changed (`None` would write every ticket of the target).
        let mut records = self
            .writer
            .records(state, &spec, &touched.findings, Some(&[]));
        // Records of the target void the changelog's record of its last
        // scan unless it comes after them again.
        if !records.is_empty() {
            records.push(self.writer.scan_record(
                state,
                &spec,
                &last.record(&env.cx.settings_digest),
            ));
        }
        Ok(Some(records))
    }

    fn apply_decision(
        &mut self,
        env: &Env<'_>,
        msg: Incoming,
        d: &crate::lifecycle::DecisionRecord,
    ) {
        let spec = d.target.to_string();
        self.last_scans.remove(&spec);
        if let Err(e) = self.materialize(env, &spec) {
            env.fail(e);
            return;
        }
        let now = msg.time(env.wall);
        let Some(state) = self.state.as_mut() else {
            return;
        };
        match env.cx.engine.decide(state, d, now) {
            Ok(out) => {
                env.count_message("decision");
                let records =
                    self.writer
                        .records(state, &spec, std::slice::from_ref(&d.fingerprint), None);
                let bytes = msg.len();
                self.emit(env, Some(msg), out, records, Vec::new(), bytes);
            }
            Err(e) => self.dead_letter(env, msg, "bad_decision", &e.to_string(), Vec::new()),
        }
    }

    /// A VEX document about `target`: its statements mark the target's
    /// matching findings not affected, or keep them open (see
    /// [`crate::lifecycle::apply_vex`]).
    fn apply_vex(
        &mut self,
        env: &Env<'_>,
        msg: Incoming,
        doc: &crate::normalize::vex::VexDocument,
        target: &crate::model::Target,
    ) {
        let spec = target.to_string();
        self.last_scans.remove(&spec);
        if let Err(e) = self.materialize(env, &spec) {
            env.fail(e);
            return;
        }
        let now = msg.time(env.wall);
        let Some(state) = self.state.as_mut() else {
            return;
        };
        let (out, matched) = env.cx.engine.vex_on(state, target, doc, now);
        env.count_message("decision");
        tracing::info!(
            target = %spec,
            statements = doc.statements.len(),
            findings = matched,
            "VEX document ({}) applied: about {matched} findings",
            doc.kind
        );
        let fingerprints: Vec<String> =
            out.findings.iter().map(|e| e.fingerprint.clone()).collect();
        let records = self.writer.records(state, &spec, &fingerprints, None);
        let bytes = msg.len();
        self.emit(env, Some(msg), out, records, Vec::new(), bytes);
    }

    /// Produces a step's events now and queues its changelog records.
    pub(super) fn emit(
        &mut self,
        env: &Env<'_>,
        msg: Option<Incoming>,
        mut out: Output,
        mut records: Vec<changelog::Record>,
        held: Vec<Arc<Ack>>,
        bytes: usize,
    ) {
        if !records.is_empty() {
            // The group's head: the message applied (a step no message
            // caused names the last one applied before it).
            let offset = msg
                .as_ref()
                .map(|m| m.offset)
                .or(self.last_applied)
                .or(self.replay.map(|a| a.offset))
                .unwrap_or(-1);
            let n = records.len();
            records.insert(
                0,
                changelog::applied_record(&self.topic, self.partition, offset, n),
            );
        }
        if self.quiet {
            // Delivered before the crash (see `replayed`).
            out.findings.clear();
            out.tickets.clear();
        }
        let ack = Arc::new(Ack::default());
        // A guard, so the count cannot reach zero while records are sent.
        ack.add(1);
        // One buffer for every payload: librdkafka copies what it is given.
        let mut payload = Vec::with_capacity(4096);
        let topic = &env.cx.settings.findings_topic;
        let partition = env.cx.event_partition(topic, self.partition);
        env.cx.metrics.finding_events(&out.findings);
        let mut produced = 0;
        for e in &out.findings {
            payload.clear();
            if serde_json::to_writer(&mut payload, e).is_ok() {
                env.produce(
                    topic,
                    partition,
                    e.fingerprint.as_bytes(),
                    Some(&payload),
                    Vec::new(),
                    &ack,
                );
                produced += 1;
            }
        }
        env.cx.metrics.events("finding", topic, produced);
        // A per-target ticket's events come from its target's partition
        // alone, so they go to that partition of their route's topic, as
        // finding events do; counted once per route.
        let mut per_route: Vec<(&str, u64)> = Vec::new();
        for e in &out.tickets {
            payload.clear();
            if serde_json::to_writer(&mut payload, e).is_ok() {
                env.produce(
                    &e.route,
                    env.cx.event_partition(&e.route, self.partition),
                    e.ticket_key.as_bytes(),
                    Some(&payload),
                    Vec::new(),
                    &ack,
                );
                match per_route.iter_mut().find(|(route, _)| *route == e.route) {
                    Some((_, n)) => *n += 1,
                    None => per_route.push((&e.route, 1)),
                }
            }
        }
        for (route, n) in per_route {
            env.cx.metrics.events("ticket", route, n);
        }
        // The targets' parts of tickets across targets, to the partition
        // that sums each ticket (sent again on a replay: a part's record
        // replaces the one before it).
        if let Some((parts_topic, n)) = &env.cx.ticket_parts {
            for change in &out.parts {
                match crate::service::tickets::part_record(change) {
                    Ok(r) => env.produce(
                        parts_topic,
                        Some(crate::service::tickets::partition_of(&r.ticket, *n)),
                        &r.key,
                        r.value.as_deref(),
                        Vec::new(),
                        &ack,
                    ),
                    Err(e) => tracing::error!("a ticket part not sent: {e}"),
                }
            }
        }
        ack.add(-1);
        if let Some(m) = &msg {
            self.last_applied = Some(m.offset);
        }
        self.pending.push_back(Pending {
            offset: msg.as_ref().map(|m| m.offset),
            timestamp: msg.as_ref().and_then(|m| m.timestamp),
            events: ack,
            changelog: Some(records),
            changelog_ack: Arc::new(Ack::default()),
            held,
            hold: false,
            bytes,
            source: msg,
            dead_letter: None,
        });
    }

    fn dead_letter(
        &mut self,
        env: &Env<'_>,
        msg: Incoming,
        reason: &'static str,
        error: &str,
        held: Vec<HeldChunk>,
    ) {
        if self.quiet {
            // Dead-lettered before the crash (see `replayed`).
            self.pass_over(env, msg, held);
            return;
        }
        // The earlier chunks of a failed scan go first, so the whole scan
        // can be replayed from the dead-letter topic. Their dead letters are
        // this message's events: no later message's changelog is written
        // before they are acknowledged (a restore would pass over the
        // scan, its dead letters lost). Their offsets are done with this
        // message's: stored one by one, a crash between them would
        // redeliver the scan's last chunks alone, to wait for the chunk
        // timeout and be dead-lettered again.
        env.count_message("dead_lettered");
        env.cx.metrics.dead_letter(reason);
        let ack = Arc::new(Ack::default());
        ack.add(1);
        let guards = self.send_held_dead_letters(env, held, reason, error, &ack);
        self.send_dead_letter(env, &msg, reason, error, &ack);
        ack.add(-1);
        self.last_applied = Some(msg.offset);
        self.pending.push_back(Pending {
            offset: Some(msg.offset),
            timestamp: msg.timestamp,
            events: ack,
            changelog: Some(Vec::new()),
            changelog_ack: Arc::new(Ack::default()),
            held: guards,
            hold: false,
            bytes: msg.len(),
            source: None,
            dead_letter: None,
        });
    }

    pub(super) fn send_dead_letter(
        &self,
        env: &Env<'_>,
        msg: &Incoming,
        reason: &str,
        error: &str,
        ack: &Arc<Ack>,
    ) {
        let partition = self.partition.to_string();
        let offset = msg.offset.to_string();
        let error: String = error.chars().take(1000).collect();
        let mut hs: Vec<(&str, Option<&[u8]>)> = msg
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        for (k, v) in [
            (header::DLQ_REASON, reason),
            (header::DLQ_ERROR, error.as_str()),
            (header::DLQ_TOPIC, self.topic.as_str()),
            (header::DLQ_PARTITION, partition.as_str()),
            (header::DLQ_OFFSET, offset.as_str()),
        ] {
            hs.push((k, Some(v.as_bytes())));
        }
        let topic = env.cx.settings.dead_letter_topic.clone();
        env.produce(
            &topic,
            None,
            msg.key.as_deref().unwrap_or(b""),
            msg.payload.as_deref().map(|p| &**p),
            hs,
            ack,
        );
    }

    /// Dead-letters held chunks as they came; each one's offset is done
    /// once its dead letter is acknowledged. (Each was counted as a
    /// message when it was held.)
    /// Dead-letters held chunks as they came, counted in `ack`; returns
    /// the acks that hold their offsets, to be released once `ack` is done.
    /// (Each was counted as a message when it was held.)
    pub(super) fn send_held_dead_letters(
        &self,
        env: &Env<'_>,
        held: Vec<HeldChunk>,
        reason: &str,
        error: &str,
        ack: &Arc<Ack>,
    ) -> Vec<Arc<Ack>> {
        held.into_iter()
            .map(|h| {
                env.cx.metrics.dead_letter(reason);
                self.send_dead_letter(env, &h.msg, reason, error, ack);
                h.ack
            })
            .collect()
    }
}
