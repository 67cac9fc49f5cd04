//! Reading a changelog back: keys and values parsed (JSON or binary), a
//! partition's records held undecoded by target ([`RawLog`]) with groups
//! cut short by a crash left out, and a state rebuilt from them
//! ([`Restorer`]).

use super::*;

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
    parse_in(key, value, &Strings::default(), &mut Shared::default())
}

/// Decodes one changelog record, a binary finding record's texts looked
/// up in `strings` (its target's dictionary), what it shares with the
/// target's other records taken from `shared` (which serves that one
/// dictionary).
pub fn parse_in(
    key: &[u8],
    value: Option<&[u8]>,
    strings: &Strings,
    shared: &mut Shared,
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
                    true => binary::decode_finding(v, strings, shared)
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
    let mut last: crate::TextMap<&[u8], usize> =
        crate::TextMap::with_capacity_and_hasher(recs.len(), Default::default());
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
    let parse = |shared: &mut Shared, r: &&RawRecord<'_>| {
        parse_in(r.key, r.value, &strings, shared).map_err(|e| at(r, e))
    };
    let parsed = if rest.len() > 256 {
        use rayon::prelude::*;
        rest.par_iter()
            .map_init(Shared::default, parse)
            .collect::<Result<Vec<_>, _>>()
    } else {
        let mut shared = Shared::default();
        rest.iter().map(|r| parse(&mut shared, r)).collect()
    }?;
    Ok(Decoded {
        parsed,
        strings,
        binary,
    })
}

/// Bytes per block of a [`RawLog`].
pub(super) const BLOCK: usize = 1 << 20;

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

    /// Targets whose records are held, not decoded yet.
    pub fn targets(&self) -> usize {
        self.runs.len()
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
    attributions: crate::TextMap<Arc<crate::model::Attribution>, ()>,
    /// Each target's dictionary, as read so far.
    strings: crate::TextMap<String, Strings>,
    /// Records applied.
    pub records: usize,
    /// The one target whose records are applied, when resumed: taken out
    /// of the state while they are (each record then finds it without a
    /// search of the state's targets), and whether it was there.
    only: Option<(String, crate::lifecycle::TargetState, bool)>,
}

impl Restorer {
    /// An empty restorer.
    pub fn new() -> Restorer {
        Restorer {
            state: State::new(),
            ..Restorer::default()
        }
    }

    /// A restorer that continues `state` with the records of `target`
    /// (decoded later than the rest): [`Restorer::finish`] then settles
    /// that target alone, not every one `state` holds.
    pub fn resume(mut state: State, target: &str) -> Restorer {
        let held = state.targets.remove(target);
        let was = held.is_some();
        Restorer {
            state,
            only: Some((target.to_string(), held.unwrap_or_default(), was)),
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
        let parsed = parse_in(key, value, strings, &mut Shared::default())?;
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
                if let Some(ts) = self.existing(&target) {
                    ts.findings.remove(&id);
                }
            }
            Parsed::Ticket {
                target,
                id,
                record: None,
            } => {
                if let Some(ts) = self.existing(&target) {
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

    /// The state of `target`, made if it has none yet.
    fn target(&mut self, target: String) -> &mut crate::lifecycle::TargetState {
        match &mut self.only {
            Some((only, ts, was)) if *only == target => {
                *was = true;
                ts
            }
            _ => self.state.targets.entry(target).or_default(),
        }
    }

    /// The state of `target`, if it has one.
    fn existing(&mut self, target: &str) -> Option<&mut crate::lifecycle::TargetState> {
        match &mut self.only {
            Some((only, ts, was)) if only == target => was.then_some(ts),
            _ => self.state.targets.get_mut(target),
        }
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
        match self.only.take() {
            Some((t, mut ts, was)) => {
                if was {
                    ts.settle_baseline();
                    self.state.targets.insert(t, ts);
                }
            }
            None => {
                for ts in self.state.targets.values_mut() {
                    ts.settle_baseline();
                }
            }
        }
        self.state
    }
}
