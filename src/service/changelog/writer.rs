//! Writing a partition's changelog records in the configured format: JSON,
//! or the binary form with each target's dictionary of texts kept, grown
//! and, when it holds too much that no record uses, rewritten.

use super::*;

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
        // A dictionary empty before the step (a target's first scan, say)
        // holds only texts its findings just used: none unused, nothing
        // to count.
        let fresh = dict.is_empty();
        let buf = &mut self.buf;
        let mut adding = dict.adding();
        let mut findings = Vec::with_capacity(fingerprints.len());
        for fp in fingerprints {
            findings.push(finding_record(
                buf,
                &mut adding,
                target,
                fp,
                ts.findings.get(fp).map(|rec| &**rec),
            ));
        }
        let (base, added) = (adding.base, adding.added);
        let mut out = Vec::with_capacity(findings.len() + 2);
        if !added.is_empty() {
            dict.chunks.push(base);
            out.push(chunk_record(buf, target, base, &added));
        }
        out.append(&mut findings);
        out.extend(binary_tickets(buf, ts, target, tickets));
        if fresh {
            // Every text was added encoding a finding the target has, so
            // its findings use at least these (a count would say so).
            dict.used = dict.used.max(dict.len());
        } else if dict.len() > 2 * dict.used + DICT_SLACK {
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
            findings.push(finding_record(buf, &mut adding, target, fp, Some(rec)));
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

    /// Every record of `target` (`ts`) in the binary form, for the target
    /// to leave memory (see [`super::cold`]): its dictionary's texts as
    /// chunk records under the ids the changelog knows them by (with the
    /// rest of the dictionary in [`Frozen::dict`]; the writer forgets it),
    /// then its findings, texts the dictionary lacks named from
    /// [`Frozen::extra`] on, its tickets and its baseline.
    pub fn freeze(&mut self, target: &str, ts: &TargetState) -> Frozen {
        let dict = self.dicts.remove(target);
        let (chunks, meta) = match dict.as_ref().map(Dict::freeze) {
            Some((chunks, meta)) => (chunks, Some(meta)),
            None => (Vec::new(), None),
        };
        let extra = meta.as_ref().map_or(0, binary::DictMeta::next);
        let buf = &mut self.buf;
        let mut texts = binary::Freezing::new(dict.as_ref(), extra);
        let mut findings = Vec::with_capacity(ts.findings.len());
        for (fp, rec) in &ts.findings {
            findings.push(finding_record(buf, &mut texts, target, fp, Some(rec)));
        }
        let mut out: Vec<Record> = chunks
            .iter()
            .map(|(base, texts)| chunk_record(buf, target, *base, texts))
            .collect();
        if !texts.extra.is_empty() {
            out.push(chunk_record(buf, target, extra, &texts.extra));
        }
        out.append(&mut findings);
        out.extend(binary_tickets(buf, ts, target, None));
        if !ts.baselined.is_empty() {
            out.push(Record {
                key: key(b'b', target, ""),
                value: serde_json::to_vec(&ts.baselined).ok(),
            });
        }
        Frozen {
            records: out,
            dict: meta,
            extra,
        }
    }

    /// Takes back the dictionary of a target [`Writer::freeze`] gave,
    /// whose records were decoded again with `strings`.
    pub fn thaw(
        &mut self,
        target: &str,
        strings: &mut Strings,
        dict: Option<binary::DictMeta>,
        extra: u64,
    ) {
        strings.set(extra, None);
        if let Some(meta) = dict {
            self.dicts
                .insert(target.to_string(), Dict::thawed(strings, meta));
        }
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

/// The binary record of finding `fp` of `target`, its texts named through
/// `texts`; a tombstone when the target no longer has it (`rec` is `None`).
fn finding_record(
    buf: &mut Vec<u8>,
    texts: &mut impl binary::Intern,
    target: &str,
    fp: &str,
    rec: Option<&FindingRecord>,
) -> Record {
    let value = rec.map(|rec| {
        buf.clear();
        binary::encode_finding(buf, texts, rec);
        buf.as_slice().to_vec()
    });
    Record {
        key: key(b'f', target, fp),
        value,
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

/// A target's records for it to leave memory (see [`Writer::freeze`]).
#[derive(Debug)]
pub struct Frozen {
    /// Its records.
    pub records: Vec<Record>,
    /// What its dictionary holds besides the texts of the records.
    pub dict: Option<binary::DictMeta>,
    /// The first id of texts the dictionary did not hold.
    pub extra: u64,
}
