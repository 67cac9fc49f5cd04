//! The compact binary form of changelog values (format 1).
//!
//! A binary value starts with [`MAGIC`] then [`VERSION`]; a JSON value
//! starts with `{` or `[`, so a reader tells them apart by the first byte
//! and reads both. There are no field names: fields come in a fixed order,
//! optional ones behind a bit of a flags word. Integers are LEB128 varints
//! (signed ones zigzagged). Texts are of two kinds:
//!
//! - *interned*: a varint id into the target's string dictionary, whose
//!   entries travel in records of their own (`d\0<target>\0<first id>`,
//!   see [`encode_chunk`]): rule ids, paths, titles, messages, teams,
//!   ticket keys, commits... anything findings repeat;
//! - *inline*: [`put_text`], which stores a lowercase hex digest (a
//!   fingerprint, a content or evidence hash) as its raw bytes, and any
//!   other text as UTF-8.
//!
//! Times are seconds and a sub-second part (none, milliseconds or
//! nanoseconds, so every time round-trips exactly), the first sighting in
//! full and the others as differences from it, which are mostly zero or
//! small.
//!
//! The layout is written by hand rather than through a serde format
//! because nearly every field needs a mapping of its own (an id, a
//! digest's bytes, a time difference), which a serde data format would
//! need mirror types for; the primitive (a varint) is a few lines, and the
//! reader checks every length against what is left, so a hostile length
//! allocates nothing. Decoding never panics: a value that does not decode
//! is an error saying what was being read and at which byte.

use crate::lifecycle::{FindingRecord, ScanRecord, Sources};
use crate::model::ticket::TicketRecord;
use crate::model::{
    Attribution, Category, Disposition, DispositionState, Evidence, Finding, Location, Origin,
    Package, Provenance, Severity, Status,
};
use crate::TextMap;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;

/// First byte of a binary value: not `{`, `[` or whitespace, which start
/// JSON values.
pub const MAGIC: u8 = 0xB1;
/// The binary format's version, the value's second byte.
pub const VERSION: u8 = 1;

/// Whether a value is in the binary form (else it is JSON).
pub fn is_binary(value: &[u8]) -> bool {
    value.first() == Some(&MAGIC)
}

/// Gives the dictionary id of a text, adding it when new.
pub trait Intern {
    /// The id of `text`.
    fn id(&mut self, text: &str) -> u64;
}

/// A target's string dictionary as read back: chunks of consecutive ids,
/// by their first id.
#[derive(Debug, Default, Clone)]
pub struct Strings {
    chunks: BTreeMap<u64, Vec<Arc<str>>>,
}

impl Strings {
    /// Adds (or, with `None`, removes) the chunk starting at `base`.
    pub fn set(&mut self, base: u64, chunk: Option<Vec<Arc<str>>>) {
        match chunk {
            Some(c) => {
                self.chunks.insert(base, c);
            }
            None => {
                self.chunks.remove(&base);
            }
        }
    }

    /// The text of `id`.
    pub fn get(&self, id: u64) -> Option<&Arc<str>> {
        let (base, chunk) = self.chunks.range(..=id).next_back()?;
        chunk.get(usize::try_from(id - base).ok()?)
    }

    /// Every chunk's first id.
    pub fn bases(&self) -> impl Iterator<Item = u64> + '_ {
        self.chunks.keys().copied()
    }

    /// Every entry, with its id.
    pub fn entries(&self) -> impl Iterator<Item = (u64, &Arc<str>)> {
        self.chunks.iter().flat_map(|(base, c)| {
            c.iter()
                .enumerate()
                .map(move |(i, s)| (base.saturating_add(i as u64), s))
        })
    }

    /// No chunk.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

/// Appends the binary header.
fn header(out: &mut Vec<u8>) {
    out.push(MAGIC);
    out.push(VERSION);
}

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Text modes of [`put_text`].
const TEXT_UTF8: u64 = 0;
const TEXT_HEX: u64 = 1;
const TEXT_FINGERPRINT: u64 = 2;
/// The fingerprint prefix [`TEXT_FINGERPRINT`] stands for.
const FINGERPRINT_PREFIX: &str = "v1:";

/// Lowercase hex of an even length: what a digest printed in hex is.
fn lower_hex(s: &str) -> bool {
    !s.is_empty()
        && s.len() % 2 == 0
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Appends a text inline: a hex digest (bare or a `v1:` fingerprint) as
/// its bytes, else as UTF-8; a varint `length << 2 | mode` first.
pub fn put_text(out: &mut Vec<u8>, s: &str) {
    let (mode, digits) = match s.strip_prefix(FINGERPRINT_PREFIX) {
        Some(h) if lower_hex(h) => (TEXT_FINGERPRINT, h),
        _ if lower_hex(s) => (TEXT_HEX, s),
        _ => {
            put_varint(out, (s.len() as u64) << 2 | TEXT_UTF8);
            out.extend_from_slice(s.as_bytes());
            return;
        }
    };
    put_varint(out, ((digits.len() / 2) as u64) << 2 | mode);
    let start = out.len();
    out.resize(start + digits.len() / 2, 0);
    // Cannot fail: checked to be hex of an even length.
    let _ = hex::decode_to_slice(digits, &mut out[start..]);
}

/// A time's reference: the seconds and sub-second nanoseconds others are
/// written against.
#[derive(Clone, Copy)]
struct Base {
    secs: i64,
    nanos: u32,
}

impl Base {
    const ZERO: Base = Base { secs: 0, nanos: 0 };

    fn of(t: &DateTime<Utc>) -> Base {
        Base {
            secs: t.timestamp(),
            nanos: t.timestamp_subsec_nanos(),
        }
    }
}

/// Appends a time as seconds after `base` (zigzagged) and its sub-second
/// part: `secs << 2 | mode`, mode 0 none, 1 milliseconds follow, 2
/// nanoseconds follow, 3 the same as `base`'s (times of one step share
/// it: the message's time).
fn put_time(out: &mut Vec<u8>, t: &DateTime<Utc>, base: Base) {
    let secs = zigzag(t.timestamp().wrapping_sub(base.secs));
    let nanos = t.timestamp_subsec_nanos();
    let (mode, sub) = match nanos {
        0 => (0, None),
        n if n == base.nanos => (3, None),
        n if n % 1_000_000 == 0 => (1, Some(n / 1_000_000)),
        n => (2, Some(n)),
    };
    put_varint(out, secs << 2 | mode);
    if let Some(s) = sub {
        put_varint(out, u64::from(s));
    }
}

/// A reader of one binary value: every read checks what is left and says
/// what it was reading and where when it cannot.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader past the header, which must be there.
    pub fn new(buf: &'a [u8]) -> Result<Reader<'a>, String> {
        match buf {
            [MAGIC, VERSION, ..] => Ok(Reader { buf, pos: 2 }),
            [MAGIC, v, ..] => Err(format!(
                "binary format version {v} is not known to this version of custody (it reads {VERSION})"
            )),
            _ => Err("not a binary changelog value".to_string()),
        }
    }

    fn err(&self, what: &str, why: &str) -> String {
        format!("{what} at byte {}: {why}", self.pos)
    }

    /// A byte.
    pub fn byte(&mut self, what: &str) -> Result<u8, String> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.err(what, "value ends"))?;
        self.pos += 1;
        Ok(b)
    }

    /// A varint.
    pub fn varint(&mut self, what: &str) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte(what)?;
            if shift == 63 && b > 1 {
                return Err(self.err(what, "varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err(what, "varint overflows 64 bits"))
    }

    /// A varint that must fit a `u32`.
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let v = self.varint(what)?;
        u32::try_from(v).map_err(|_| self.err(what, &format!("{v} is larger than 2^32")))
    }

    /// `n` bytes.
    pub fn bytes(&mut self, n: u64, what: &str) -> Result<&'a [u8], String> {
        let left = self.buf.len() - self.pos;
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= left)
            .ok_or_else(|| self.err(what, &format!("length {n} is past the end ({left} left)")))?;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A count of items of at least one byte each: no more than what is
    /// left, so that it bounds what a caller allocates for them.
    pub fn count(&mut self, what: &str) -> Result<usize, String> {
        let n = self.varint(what)?;
        let left = self.buf.len() - self.pos;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= left)
            .ok_or_else(|| {
                self.err(
                    what,
                    &format!("count {n} is more than the {left} bytes left"),
                )
            })
    }

    /// A text written by [`put_text`].
    pub fn text(&mut self, what: &str) -> Result<String, String> {
        let h = self.varint(what)?;
        let (len, mode) = (h >> 2, h & 3);
        let raw = self.bytes(len, what)?;
        match mode {
            TEXT_UTF8 => std::str::from_utf8(raw)
                .map(str::to_string)
                .map_err(|_| self.err(what, "not UTF-8")),
            TEXT_HEX => Ok(crate::fingerprint::hex(raw)),
            TEXT_FINGERPRINT => Ok(crate::fingerprint::prefixed_hex(FINGERPRINT_PREFIX, raw)),
            m => Err(self.err(what, &format!("unknown text mode {m}"))),
        }
    }

    /// A time written by [`put_time`] against `base`.
    fn time(&mut self, base: Base, what: &str) -> Result<DateTime<Utc>, String> {
        let h = self.varint(what)?;
        let secs = base.secs.wrapping_add(unzigzag(h >> 2));
        let nanos = match h & 3 {
            0 => 0,
            1 => self
                .u32(what)?
                .checked_mul(1_000_000)
                .ok_or_else(|| self.err(what, "milliseconds out of range"))?,
            2 => self.u32(what)?,
            _ => base.nanos,
        };
        DateTime::from_timestamp(secs, nanos)
            .ok_or_else(|| self.err(what, &format!("{secs} s {nanos} ns is not a time")))
    }

    /// An interned text: its id, looked up in `strings`.
    fn id(&mut self, strings: &Strings, what: &str) -> Result<Arc<str>, String> {
        self.lookup(strings, what).cloned()
    }

    /// An interned text as an owned string: one exact allocation
    /// (`to_string` on an `Arc<str>` goes through `Display`, which grows
    /// the string as it writes).
    fn string(&mut self, strings: &Strings, what: &str) -> Result<String, String> {
        self.lookup(strings, what).map(|s| String::from(&**s))
    }

    fn lookup<'s>(&mut self, strings: &'s Strings, what: &str) -> Result<&'s Arc<str>, String> {
        let id = self.varint(what)?;
        strings.get(id).ok_or_else(|| {
            self.err(
                what,
                &format!("string id {id} is in no dictionary record of the target"),
            )
        })
    }

    /// The value is read whole.
    pub fn end(&self, what: &str) -> Result<(), String> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(self.err(what, &format!("{n} bytes left over"))),
        }
    }

    /// What is left.
    fn rest(&mut self) -> &'a [u8] {
        let r = &self.buf[self.pos..];
        self.pos = self.buf.len();
        r
    }
}

fn severity_byte(s: Severity) -> u8 {
    match s {
        Severity::Info => 0,
        Severity::Low => 1,
        Severity::Medium => 2,
        Severity::High => 3,
        Severity::Critical => 4,
    }
}

fn severity_of(b: u8) -> Option<Severity> {
    Some(match b {
        0 => Severity::Info,
        1 => Severity::Low,
        2 => Severity::Medium,
        3 => Severity::High,
        4 => Severity::Critical,
        _ => return None,
    })
}

fn status_byte(s: Status) -> u8 {
    match s {
        Status::Open => 0,
        Status::Resolved => 1,
        Status::Accepted => 2,
        Status::FalsePositive => 3,
        Status::Suppressed => 4,
        Status::NotAffected => 5,
    }
}

fn status_of(b: u8) -> Option<Status> {
    Some(match b {
        0 => Status::Open,
        1 => Status::Resolved,
        2 => Status::Accepted,
        3 => Status::FalsePositive,
        4 => Status::Suppressed,
        5 => Status::NotAffected,
        _ => return None,
    })
}

fn category_byte(c: Category) -> u8 {
    match c {
        Category::Sast => 0,
        Category::Sca => 1,
        Category::Container => 2,
        Category::Iac => 3,
        Category::Secret => 4,
        Category::Dast => 5,
    }
}

fn category_of(b: u8) -> Option<Category> {
    Some(match b {
        0 => Category::Sast,
        1 => Category::Sca,
        2 => Category::Container,
        3 => Category::Iac,
        4 => Category::Secret,
        5 => Category::Dast,
        _ => return None,
    })
}

/// One enum byte, mapped by `of`.
fn enum_byte<T>(r: &mut Reader<'_>, of: fn(u8) -> Option<T>, what: &str) -> Result<T, String> {
    let at = r.pos;
    let b = r.byte(what)?;
    of(b).ok_or_else(|| format!("{what} at byte {at}: unknown value {b}"))
}

// The flags word of a finding record: which optional fields follow.
// The ones most findings have come first, so the word is mostly two
// bytes.
const F_DUE: u64 = 1;
const F_ORIGIN: u64 = 1 << 1;
const F_TEAM: u64 = 1 << 2;
/// `sources` is exactly the finding's own scanner at the finding's
/// severity (most findings): not written.
const F_OWN_SOURCE: u64 = 1 << 3;
const F_SEVERITY_SOURCE: u64 = 1 << 4;
const F_LOCATION: u64 = 1 << 5;
const F_TITLE: u64 = 1 << 6;
const F_CONTENT_HASH: u64 = 1 << 7;
const F_HELP_URI: u64 = 1 << 8;
const F_PACKAGE: u64 = 1 << 9;
const F_RESOLVED: u64 = 1 << 10;
const F_BREACHED: u64 = 1 << 11;
const F_TOOL_FINGERPRINT: u64 = 1 << 12;
const F_SECRET_HASH: u64 = 1 << 13;
const F_ACCEPTED: u64 = 1 << 14;
const F_VEX: u64 = 1 << 15;
const F_TARGET: u64 = 1 << 16;
const F_SNIPPET: u64 = 1 << 17;
const F_OWNER: u64 = 1 << 18;
const F_DISPOSITION: u64 = 1 << 19;
const F_ALL: u64 = (1 << 20) - 1;

/// Appends a list of interned texts.
fn put_ids<'s>(
    out: &mut Vec<u8>,
    dict: &mut impl Intern,
    items: impl ExactSizeIterator<Item = &'s str>,
) {
    put_varint(out, items.len() as u64);
    for s in items {
        put_varint(out, dict.id(s));
    }
}

fn get_ids(r: &mut Reader<'_>, strings: &Strings, what: &str) -> Result<Vec<String>, String> {
    let n = r.count(what)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(r.string(strings, what)?);
    }
    Ok(v)
}

/// Appends optional interned texts behind a flags byte (bit i: the i-th
/// is there).
fn put_opt_ids(out: &mut Vec<u8>, dict: &mut impl Intern, items: &[Option<&str>]) {
    let flags = items
        .iter()
        .enumerate()
        .fold(0u8, |f, (i, s)| f | (u8::from(s.is_some()) << i));
    out.push(flags);
    for s in items.iter().flatten() {
        put_varint(out, dict.id(s));
    }
}

fn get_opt_ids<const N: usize>(
    r: &mut Reader<'_>,
    strings: &Strings,
    what: &str,
) -> Result<[Option<String>; N], String> {
    let flags = r.byte(what)?;
    if u32::from(flags) >> N != 0 {
        return Err(r.err(what, &format!("unknown flags {flags:#x}")));
    }
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    for (i, slot) in out.iter_mut().enumerate() {
        if flags & (1 << i) != 0 {
            *slot = Some(r.string(strings, what)?);
        }
    }
    Ok(out)
}

fn put_disposition(out: &mut Vec<u8>, dict: &mut impl Intern, d: &Disposition) {
    out.push(match d.state {
        DispositionState::Suppressed => 0,
        DispositionState::NotAffected => 1,
    });
    put_opt_ids(
        out,
        dict,
        &[
            d.kind.as_deref(),
            d.status.as_deref(),
            d.justification.as_deref(),
        ],
    );
}

fn get_disposition(r: &mut Reader<'_>, strings: &Strings) -> Result<Disposition, String> {
    let state = enum_byte(
        r,
        |b| match b {
            0 => Some(DispositionState::Suppressed),
            1 => Some(DispositionState::NotAffected),
            _ => None,
        },
        "disposition state",
    )?;
    let [kind, status, justification] = get_opt_ids(r, strings, "disposition texts")?;
    Ok(Disposition {
        state,
        kind,
        status,
        justification,
    })
}

/// Appends a finding record's value.
pub fn encode_finding(out: &mut Vec<u8>, dict: &mut impl Intern, rec: &FindingRecord) {
    let f = &rec.finding;
    let own_source = {
        let mut names = rec.sources.names();
        names.next() == Some(f.scanner.as_str())
            && names.next().is_none()
            && rec.sources.max() == Some(f.severity)
    };
    let flags = [
        (rec.due_at.is_some(), F_DUE),
        (rec.sla_breached, F_BREACHED),
        (rec.resolved_at.is_some(), F_RESOLVED),
        (rec.accepted_until.is_some(), F_ACCEPTED),
        (rec.vex.is_some(), F_VEX),
        (rec.origin.is_some(), F_ORIGIN),
        (rec.team.is_some(), F_TEAM),
        (own_source, F_OWN_SOURCE),
        (f.severity_source.is_some(), F_SEVERITY_SOURCE),
        (f.target.is_some(), F_TARGET),
        (f.location.is_some(), F_LOCATION),
        (f.package.is_some(), F_PACKAGE),
        (f.title.is_some(), F_TITLE),
        (f.evidence.snippet.is_some(), F_SNIPPET),
        (f.evidence.secret_hash.is_some(), F_SECRET_HASH),
        (f.content_hash.is_some(), F_CONTENT_HASH),
        (f.tool_fingerprint.is_some(), F_TOOL_FINGERPRINT),
        (f.help_uri.is_some(), F_HELP_URI),
        (f.owner.is_some(), F_OWNER),
        (f.disposition.is_some(), F_DISPOSITION),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |acc, (_, bit)| acc | bit);
    header(out);
    put_varint(out, flags);
    out.push(status_byte(rec.status));
    put_varint(out, rec.seq);
    let base = Base::of(&rec.first_seen);
    put_time(out, &rec.first_seen, Base::ZERO);
    put_time(out, &rec.last_seen, base);
    put_time(out, &rec.opened_at, base);
    for t in [&rec.due_at, &rec.resolved_at, &rec.accepted_until]
        .into_iter()
        .flatten()
    {
        put_time(out, t, base);
    }
    put_text(out, &rec.evidence);
    put_varint(out, dict.id(&rec.ticket_key));
    if let Some(t) = &rec.team {
        put_varint(out, dict.id(t));
    }
    // Attribution: its source, optional texts, line and owners.
    let a = &rec.attribution;
    put_varint(out, dict.id(&a.source));
    put_opt_ids(
        out,
        dict,
        &[a.team.as_deref(), a.file.as_deref(), a.rule.as_deref()],
    );
    put_varint(out, a.line.map_or(0, |l| u64::from(l) + 1));
    put_ids(out, dict, a.owners.iter().map(String::as_str));
    if !own_source {
        put_varint(out, rec.sources.iter().len() as u64);
        for (name, sev) in rec.sources.iter() {
            put_varint(out, dict.id(name));
            out.push(severity_byte(sev));
        }
    }
    // The finding.
    put_varint(out, dict.id(&f.scanner));
    out.push(category_byte(f.category));
    put_varint(out, dict.id(&f.rule_id));
    put_ids(out, dict, f.aliases.iter().map(String::as_str));
    out.push(severity_byte(f.severity));
    if let Some(s) = &f.severity_source {
        put_varint(out, dict.id(s));
    }
    if let Some(t) = &f.target {
        // Rare (the state keeps none): as its JSON text.
        let text = serde_json::to_string(t).unwrap_or_default();
        put_varint(out, dict.id(&text));
    }
    if let Some(l) = &f.location {
        put_varint(out, dict.id(&l.path));
        // Each position plus one, zero for none; the end line as its
        // difference from the start line (zigzagged) when both are known.
        put_varint(out, l.start_line.map_or(0, |p| u64::from(p) + 1));
        put_varint(out, l.start_column.map_or(0, |p| u64::from(p) + 1));
        match (l.start_line, l.end_line) {
            (Some(s), Some(e)) => put_varint(out, zigzag(i64::from(e) - i64::from(s)) + 1),
            (_, e) => put_varint(out, e.map_or(0, |p| u64::from(p) + 1)),
        }
        put_varint(out, l.end_column.map_or(0, |p| u64::from(p) + 1));
    }
    if let Some(p) = &f.package {
        put_varint(out, dict.id(&p.ecosystem));
        put_varint(out, dict.id(&p.name));
        put_opt_ids(
            out,
            dict,
            &[p.version.as_deref(), p.fixed_version.as_deref()],
        );
    }
    if let Some(t) = &f.title {
        put_varint(out, dict.id(t));
    }
    put_varint(out, dict.id(&f.message));
    if let Some(s) = &f.evidence.snippet {
        put_varint(out, dict.id(s));
    }
    for t in [
        &f.evidence.secret_hash,
        &f.content_hash,
        &f.tool_fingerprint,
    ]
    .into_iter()
    .flatten()
    {
        put_text(out, t);
    }
    put_ids(out, dict, f.cwe.iter().map(String::as_str));
    if let Some(h) = &f.help_uri {
        put_varint(out, dict.id(h));
    }
    if let Some(o) = &f.owner {
        put_varint(out, dict.id(o));
    }
    if let Some(d) = &f.disposition {
        put_disposition(out, dict, d);
    }
    if let Some(v) = &rec.vex {
        put_disposition(out, dict, v);
    }
    if let Some(o) = &rec.origin {
        out.push(match o.provenance {
            Provenance::Inherited => 0,
            Provenance::Introduced => 1,
        });
        put_time(out, &o.at, base);
        put_opt_ids(
            out,
            dict,
            &[
                o.commit.as_deref(),
                o.git_ref.as_deref(),
                o.scan_id.as_deref(),
            ],
        );
    }
}

/// What the finding records of one target share, decoded once: the
/// findings one ownership rule attributes share one [`Attribution`], as
/// they do when custody attributes them, rather than a copy each (about a
/// third of a record's allocations). Valid with one dictionary only: a
/// decode of one target's records.
#[derive(Debug, Default)]
pub struct Shared {
    /// By the bytes that encode them (dictionary ids, a line).
    attributions: TextMap<Box<[u8]>, Arc<Attribution>>,
    /// Origins (the scan that first saw a finding), by the bytes that
    /// encode them; their time is written against each record's first
    /// sighting, so a hit is checked for the same time too.
    origins: TextMap<Box<[u8]>, Arc<Origin>>,
}

/// An origin: its provenance, time and optional texts, the same one for
/// the same scan.
fn get_origin(
    r: &mut Reader<'_>,
    strings: &Strings,
    base: Base,
    shared: &mut Shared,
) -> Result<Arc<Origin>, String> {
    let start = r.pos;
    let provenance = enum_byte(
        r,
        |b| match b {
            0 => Some(Provenance::Inherited),
            1 => Some(Provenance::Introduced),
            _ => None,
        },
        "provenance",
    )?;
    let at = r.time(base, "origin at")?;
    let texts = r.pos;
    for _ in 0..r.byte("origin texts")?.count_ones() {
        r.varint("origin texts")?;
    }
    let (encoded, end) = (&r.buf[start..r.pos], r.pos);
    if let Some(o) = shared.origins.get(encoded).filter(|o| o.at == at) {
        return Ok(Arc::clone(o));
    }
    r.pos = texts;
    let [commit, git_ref, scan_id] = get_opt_ids(r, strings, "origin texts")?;
    debug_assert_eq!(r.pos, end);
    let o = Arc::new(Origin {
        provenance,
        at,
        commit,
        git_ref,
        scan_id,
    });
    shared.origins.insert(encoded.into(), Arc::clone(&o));
    Ok(o)
}

/// An attribution: its source, optional texts, line and owners, the same
/// one for the same ids.
fn get_attribution(
    r: &mut Reader<'_>,
    strings: &Strings,
    shared: &mut Shared,
) -> Result<Arc<Attribution>, String> {
    let start = r.pos;
    r.varint("attribution source")?;
    for _ in 0..r.byte("attribution texts")?.count_ones() {
        r.varint("attribution texts")?;
    }
    r.varint("attribution line")?;
    for _ in 0..r.count("attribution owners")? {
        r.varint("attribution owners")?;
    }
    let (encoded, end) = (&r.buf[start..r.pos], r.pos);
    if let Some(a) = shared.attributions.get(encoded) {
        return Ok(Arc::clone(a));
    }
    r.pos = start;
    let source = r.string(strings, "attribution source")?;
    let [team, file, rule] = get_opt_ids(r, strings, "attribution texts")?;
    let line = match r.varint("attribution line")? {
        0 => None,
        l => Some(u32::try_from(l - 1).map_err(|_| r.err("attribution line", "out of range"))?),
    };
    let owners = get_ids(r, strings, "attribution owners")?;
    debug_assert_eq!(r.pos, end);
    let a = Arc::new(Attribution {
        team,
        source,
        file,
        line,
        rule,
        owners,
    });
    shared.attributions.insert(encoded.into(), Arc::clone(&a));
    Ok(a)
}

/// Reads a finding record's value, its texts looked up in `strings`.
pub fn decode_finding(
    value: &[u8],
    strings: &Strings,
    shared: &mut Shared,
) -> Result<FindingRecord, String> {
    let r = &mut Reader::new(value)?;
    let flags = r.varint("flags")?;
    if flags & !F_ALL != 0 {
        return Err(r.err("flags", &format!("unknown flags {flags:#x}")));
    }
    let on = |bit: u64| flags & bit != 0;
    let status = enum_byte(r, status_of, "status")?;
    let seq = r.varint("seq")?;
    let first_seen = r.time(Base::ZERO, "first_seen")?;
    let base = Base::of(&first_seen);
    let last_seen = r.time(base, "last_seen")?;
    let opened_at = r.time(base, "opened_at")?;
    let due_at = on(F_DUE).then(|| r.time(base, "due_at")).transpose()?;
    let resolved_at = on(F_RESOLVED)
        .then(|| r.time(base, "resolved_at"))
        .transpose()?;
    let accepted_until = on(F_ACCEPTED)
        .then(|| r.time(base, "accepted_until"))
        .transpose()?;
    let evidence = r.text("evidence")?;
    let ticket_key = r.id(strings, "ticket_key")?;
    let team = on(F_TEAM).then(|| r.string(strings, "team")).transpose()?;
    let attribution = get_attribution(r, strings, shared)?;
    let mut sources = Vec::new();
    if !on(F_OWN_SOURCE) {
        let n = r.count("sources")?;
        sources.reserve(n);
        for _ in 0..n {
            let name = r.string(strings, "source scanner")?;
            sources.push((name, enum_byte(r, severity_of, "source severity")?));
        }
    }
    let scanner = r.string(strings, "scanner")?;
    let category = enum_byte(r, category_of, "category")?;
    let rule_id = r.string(strings, "rule_id")?;
    let aliases = get_ids(r, strings, "aliases")?;
    let severity = enum_byte(r, severity_of, "severity")?;
    let severity_source = on(F_SEVERITY_SOURCE)
        .then(|| r.id(strings, "severity_source"))
        .transpose()?;
    let target = match on(F_TARGET) {
        true => {
            let text = r.id(strings, "target")?;
            Some(
                serde_json::from_str(&text)
                    .map_err(|e| r.err("target", &format!("not a target: {e}")))?,
            )
        }
        false => None,
    };
    let location = match on(F_LOCATION) {
        true => {
            let path = r.string(strings, "path")?;
            let mut pos = [None; 4];
            for p in &mut pos {
                *p = match r.varint("position")? {
                    0 => None,
                    v => Some(v - 1),
                };
            }
            if let (Some(start), Some(d)) = (pos[0], pos[2]) {
                // The end line, as a difference from the start line.
                let end = i64::try_from(start)
                    .ok()
                    .map(|s| s.wrapping_add(unzigzag(d)));
                pos[2] = Some(end.and_then(|e| u64::try_from(e).ok()).unwrap_or(u64::MAX));
            }
            let mut lines = [None; 4];
            for (l, p) in lines.iter_mut().zip(pos) {
                *l = p
                    .map(u32::try_from)
                    .transpose()
                    .map_err(|_| r.err("position", "out of range"))?;
            }
            let pos = lines;
            Some(Location {
                path,
                start_line: pos[0],
                start_column: pos[1],
                end_line: pos[2],
                end_column: pos[3],
            })
        }
        false => None,
    };
    let package = match on(F_PACKAGE) {
        true => {
            let ecosystem = r.string(strings, "package ecosystem")?;
            let name = r.string(strings, "package name")?;
            let [version, fixed_version] = get_opt_ids(r, strings, "package versions")?;
            Some(Package {
                ecosystem,
                name,
                version,
                fixed_version,
            })
        }
        false => None,
    };
    let title = on(F_TITLE).then(|| r.id(strings, "title")).transpose()?;
    let message = r.string(strings, "message")?;
    let snippet = on(F_SNIPPET)
        .then(|| r.string(strings, "snippet"))
        .transpose()?;
    let secret_hash = on(F_SECRET_HASH)
        .then(|| r.text("secret_hash"))
        .transpose()?;
    let content_hash = on(F_CONTENT_HASH)
        .then(|| r.text("content_hash"))
        .transpose()?;
    let tool_fingerprint = on(F_TOOL_FINGERPRINT)
        .then(|| r.text("tool_fingerprint"))
        .transpose()?;
    let cwe = get_ids(r, strings, "cwe")?;
    let help_uri = on(F_HELP_URI)
        .then(|| r.id(strings, "help_uri"))
        .transpose()?;
    let owner = on(F_OWNER)
        .then(|| r.string(strings, "owner"))
        .transpose()?;
    let disposition = on(F_DISPOSITION)
        .then(|| get_disposition(r, strings).map(Box::new))
        .transpose()?;
    let vex = on(F_VEX)
        .then(|| get_disposition(r, strings).map(Box::new))
        .transpose()?;
    let origin = on(F_ORIGIN)
        .then(|| get_origin(r, strings, base, shared))
        .transpose()?;
    r.end("finding record")?;
    let sources = if on(F_OWN_SOURCE) {
        Sources::one(scanner.clone(), severity)
    } else {
        let mut s = Sources::default();
        for (name, sev) in sources {
            s.insert(&name, sev);
        }
        s
    };
    Ok(FindingRecord {
        status,
        finding: Finding {
            scanner,
            category,
            rule_id,
            aliases,
            severity,
            severity_source,
            target,
            location,
            package,
            title,
            message,
            evidence: Evidence {
                snippet,
                secret_hash,
            },
            content_hash,
            tool_fingerprint,
            cwe,
            help_uri,
            owner,
            disposition,
        },
        sources,
        evidence,
        team,
        attribution,
        ticket_key,
        first_seen,
        last_seen,
        opened_at,
        due_at,
        sla_breached: on(F_BREACHED),
        resolved_at,
        accepted_until,
        seq,
        vex,
        origin,
    })
}

/// Appends a dictionary chunk's value: its texts, whose ids follow from
/// the first id its key names.
pub fn encode_chunk<'s>(out: &mut Vec<u8>, texts: impl ExactSizeIterator<Item = &'s str>) {
    header(out);
    put_varint(out, texts.len() as u64);
    for t in texts {
        put_varint(out, t.len() as u64);
        out.extend_from_slice(t.as_bytes());
    }
}

/// Reads a dictionary chunk's value.
pub fn decode_chunk(value: &[u8]) -> Result<Vec<Arc<str>>, String> {
    let r = &mut Reader::new(value)?;
    let n = r.count("dictionary entries")?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.varint("dictionary entry")?;
        let raw = r.bytes(len, "dictionary entry")?;
        let s = std::str::from_utf8(raw).map_err(|_| r.err("dictionary entry", "not UTF-8"))?;
        out.push(Arc::from(s));
    }
    r.end("dictionary record")?;
    Ok(out)
}

/// How many entries a dictionary chunk's value holds, if it says.
pub fn chunk_len(value: &[u8]) -> Option<u64> {
    Reader::new(value).ok()?.varint("dictionary entries").ok()
}

/// The fields of a ticket record this form writes itself; any other (a
/// field added to tickets later) is kept as JSON after them, so a ticket
/// needs no new format to grow.
const TICKET_FIELDS: [&str; 16] = [
    "team",
    "target",
    "group",
    "grouping",
    "commit",
    "git_ref",
    "category",
    "title",
    "status",
    "severity",
    "due_at",
    "open_members",
    "counts",
    "breached",
    "route",
    "seq",
];

// The flags byte of a ticket record.
const T_TEAM: u8 = 1;
/// The target is not the one its key names (written as JSON).
const T_TARGET: u8 = 1 << 1;
const T_COMMIT: u8 = 1 << 2;
const T_GIT_REF: u8 = 1 << 3;
const T_DUE: u8 = 1 << 4;
const T_BREACHED: u8 = 1 << 5;
const T_OPEN: u8 = 1 << 6;
const T_EXTRA: u8 = 1 << 7;

/// Appends a ticket record's value (`target`: the target its key names).
/// Its fields in a fixed order, the fingerprints of its open members (most
/// of its size) as bytes; fields this form does not know as JSON last.
pub fn encode_ticket(out: &mut Vec<u8>, rec: &TicketRecord, target: &str) {
    use crate::model::ticket::{Grouping, TicketStatus};
    // Fields this version does not know of (none, unless tickets grew).
    let extra = extra_ticket_fields(rec);
    let own_target = rec.target.to_string() == target
        && target.parse::<crate::model::Target>().ok().as_ref() == Some(&rec.target);
    let flags = [
        (rec.team.is_some(), T_TEAM),
        (!own_target, T_TARGET),
        (rec.commit.is_some(), T_COMMIT),
        (rec.git_ref.is_some(), T_GIT_REF),
        (rec.due_at.is_some(), T_DUE),
        (rec.breached, T_BREACHED),
        (rec.status == TicketStatus::Open, T_OPEN),
        (!extra.is_empty(), T_EXTRA),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |acc, (_, bit)| acc | bit);
    header(out);
    out.push(flags);
    if let Some(t) = &rec.team {
        put_text(out, t);
    }
    if !own_target {
        put_text(out, &serde_json::to_string(&rec.target).unwrap_or_default());
    }
    put_text(out, &rec.group);
    out.push(match rec.grouping {
        Grouping::TeamTargetRule => 0,
        Grouping::TeamTarget => 1,
        Grouping::Finding => 2,
        Grouping::TeamRule => 3,
    });
    for t in [&rec.commit, &rec.git_ref].into_iter().flatten() {
        put_text(out, t);
    }
    out.push(category_byte(rec.category));
    put_text(out, &rec.title);
    out.push(severity_byte(rec.severity));
    if let Some(d) = &rec.due_at {
        put_time(out, d, Base::ZERO);
    }
    let c = &rec.counts;
    for n in [
        c.open,
        c.accepted,
        c.resolved,
        c.false_positive,
        c.suppressed,
        c.not_affected,
    ] {
        put_varint(out, u64::from(n));
    }
    put_text(out, &rec.route);
    put_varint(out, rec.seq);
    put_varint(out, rec.open_members.len() as u64);
    for m in &rec.open_members {
        put_text(out, m);
    }
    if !extra.is_empty() {
        // Cannot fail: a map of JSON values.
        let _ = serde_json::to_writer(&mut *out, &extra);
    }
}

/// A ticket record's fields besides [`TICKET_FIELDS`], as JSON: the map
/// `serde_json::to_value` gives for the record, those fields removed.
fn extra_ticket_fields(rec: &TicketRecord) -> serde_json::Map<String, serde_json::Value> {
    use serde::Serialize;
    rec.serialize(ExtraFields)
        .or_else(|_| match serde_json::to_value(rec) {
            Ok(serde_json::Value::Object(mut m)) => {
                TICKET_FIELDS.iter().for_each(|f| {
                    m.remove(*f);
                });
                Ok(m)
            }
            _ => Ok::<_, serde_json::Error>(serde_json::Map::new()),
        })
        .unwrap_or_default()
}

/// Serializes a struct into the JSON map of its fields besides
/// [`TICKET_FIELDS`], the others passed over unread: what
/// `serde_json::to_value` and removing them gives, without putting
/// every ticket's members together as JSON only to drop them. Anything
/// but a struct is an error (the caller then takes that way).
struct ExtraFields;

/// See [`ExtraFields`].
struct ExtraStruct(serde_json::Map<String, serde_json::Value>);

impl serde::ser::SerializeStruct for ExtraStruct {
    type Ok = serde_json::Map<String, serde_json::Value>;
    type Error = serde_json::Error;

    fn serialize_field<T: ?Sized + serde::Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), serde_json::Error> {
        if !TICKET_FIELDS.contains(&key) {
            self.0.insert(key.to_string(), serde_json::to_value(value)?);
        }
        Ok(())
    }

    fn end(self) -> Result<Self::Ok, serde_json::Error> {
        Ok(self.0)
    }
}

/// Serializer methods of [`ExtraFields`] for what is not a struct.
macro_rules! not_a_struct {
    ($($name:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $name(self, $(_: $arg),*) -> Result<Self::Ok, serde_json::Error> {
            Err(serde::ser::Error::custom("not a struct"))
        })*
    };
}

impl serde::Serializer for ExtraFields {
    type Ok = serde_json::Map<String, serde_json::Value>;
    type Error = serde_json::Error;
    type SerializeSeq = serde::ser::Impossible<Self::Ok, serde_json::Error>;
    type SerializeTuple = serde::ser::Impossible<Self::Ok, serde_json::Error>;
    type SerializeTupleStruct = serde::ser::Impossible<Self::Ok, serde_json::Error>;
    type SerializeTupleVariant = serde::ser::Impossible<Self::Ok, serde_json::Error>;
    type SerializeMap = serde::ser::Impossible<Self::Ok, serde_json::Error>;
    type SerializeStruct = ExtraStruct;
    type SerializeStructVariant = serde::ser::Impossible<Self::Ok, serde_json::Error>;

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<ExtraStruct, serde_json::Error> {
        Ok(ExtraStruct(serde_json::Map::new()))
    }

    not_a_struct!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    fn serialize_some<T: ?Sized + serde::Serialize>(
        self,
        _: &T,
    ) -> Result<Self::Ok, serde_json::Error> {
        Err(serde::ser::Error::custom("not a struct"))
    }

    fn serialize_newtype_struct<T: ?Sized + serde::Serialize>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<Self::Ok, serde_json::Error> {
        Err(serde::ser::Error::custom("not a struct"))
    }

    fn serialize_newtype_variant<T: ?Sized + serde::Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Self::Ok, serde_json::Error> {
        Err(serde::ser::Error::custom("not a struct"))
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, serde_json::Error> {
        Err(serde::ser::Error::custom("not a struct"))
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, serde_json::Error> {
        Err(serde::ser::Error::custom("not a struct"))
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, serde_json::Error> {
        Err(serde::ser::Error::custom("not a struct"))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, serde_json::Error> {
        Err(serde::ser::Error::custom("not a struct"))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, serde_json::Error> {
        Err(serde::ser::Error::custom("not a struct"))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, serde_json::Error> {
        Err(serde::ser::Error::custom("not a struct"))
    }
}

/// Reads a ticket record's value (`target`: the target its key names).
/// The fields this form writes are read into the record directly; the
/// JSON after them, if any, gives the others this version knows
/// ([`TicketExtra`]), and a field it does not know is passed over.
pub fn decode_ticket(value: &[u8], target: &str) -> Result<TicketRecord, String> {
    use crate::model::ticket::{Grouping, TicketStatus};
    let r = &mut Reader::new(value)?;
    let flags = r.byte("ticket flags")?;
    let on = |bit: u8| flags & bit != 0;
    let team = on(T_TEAM).then(|| r.text("team")).transpose()?;
    let target: crate::model::Target = match on(T_TARGET) {
        true => serde_json::from_str(&r.text("target")?)
            .map_err(|e| r.err("target", &format!("not a target: {e}")))?,
        false => target
            .parse()
            .map_err(|e| format!("ticket record: the key's target {target:?}: {e}"))?,
    };
    let group = r.text("group")?;
    let grouping = match r.byte("grouping")? {
        0 => Grouping::TeamTargetRule,
        1 => Grouping::TeamTarget,
        2 => Grouping::Finding,
        3 => Grouping::TeamRule,
        g => return Err(r.err("grouping", &format!("unknown value {g}"))),
    };
    let commit = on(T_COMMIT).then(|| r.text("commit")).transpose()?;
    let git_ref = on(T_GIT_REF).then(|| r.text("git_ref")).transpose()?;
    let category = enum_byte(r, category_of, "category")?;
    let title = r.text("title")?;
    let status = if on(T_OPEN) {
        TicketStatus::Open
    } else {
        TicketStatus::Resolved
    };
    let severity = enum_byte(r, severity_of, "severity")?;
    let due_at = on(T_DUE)
        .then(|| r.time(Base::ZERO, "due_at"))
        .transpose()?;
    let mut c = [0u32; 6];
    for n in &mut c {
        *n = r.u32("counts")?;
    }
    let [open, accepted, resolved, false_positive, suppressed, not_affected] = c;
    let counts = crate::model::TicketCounts {
        open,
        accepted,
        resolved,
        false_positive,
        suppressed,
        not_affected,
    };
    let route = r.text("route")?;
    let seq = r.varint("seq")?;
    let n = r.count("open members")?;
    let mut members = Vec::with_capacity(n);
    for _ in 0..n {
        members.push(r.text("open member")?);
    }
    let extra = if on(T_EXTRA) {
        let at = r.pos;
        serde_json::from_slice::<TicketExtra>(r.rest())
            .map_err(|e| format!("ticket fields at byte {at}: {e}"))?
    } else {
        TicketExtra::default()
    };
    r.end("ticket record")?;
    Ok(TicketRecord {
        team,
        target,
        group,
        grouping,
        // A field this form writes is taken from it; one it did not
        // write may come from the JSON after it.
        commit: commit.or(extra.commit),
        git_ref: git_ref.or(extra.git_ref),
        category,
        title,
        help: extra.help,
        status,
        severity,
        due_at,
        // Written in order (from a set), so collected without a sort.
        open_members: members.into_iter().collect(),
        counts,
        breached: on(T_BREACHED),
        route,
        seq,
    })
}

/// The fields of a ticket record that the JSON after its value may give:
/// those past [`TICKET_FIELDS`] (the rule's help), and those of them that
/// the form writes only when they are set. Any other field in that JSON
/// (one a later version added) is passed over.
#[derive(serde::Deserialize, Default)]
struct TicketExtra {
    #[serde(default)]
    help: Option<Arc<str>>,
    #[serde(default)]
    commit: Option<String>,
    #[serde(default)]
    git_ref: Option<String>,
}

/// The fields of a ticket record past [`TICKET_FIELDS`] that
/// [`TicketExtra`] reads back.
#[cfg(test)]
const EXTRA_TICKET_FIELDS: [&str; 1] = ["help"];

// The flags byte of a scan record.
const S_BYTES: u8 = 1;
const S_CONTENT: u8 = 1 << 1;
const S_FORMAT: u8 = 1 << 2;
const S_SCANNER: u8 = 1 << 3;
const S_COMPLETE: u8 = 1 << 4;
/// The observed fingerprints are a bitmap over the target's findings.
const S_BITMAP: u8 = 1 << 5;

/// A check of a list of fingerprints: the first bytes of their BLAKE3.
fn list_check(fps: &[String]) -> [u8; 4] {
    let mut h = blake3::Hasher::new();
    for fp in fps {
        h.update(&(fp.len() as u64).to_le_bytes());
        h.update(fp.as_bytes());
    }
    let mut out = [0; 4];
    out.copy_from_slice(&h.finalize().as_bytes()[..4]);
    out
}

/// Which of `findings` (sorted, distinct) are `observed` (sorted,
/// distinct), as a bitmap; `None` when one observed is not among them.
fn bitmap<'a>(
    findings: impl ExactSizeIterator<Item = &'a str>,
    observed: &[String],
) -> Option<(usize, Vec<u8>)> {
    let n = findings.len();
    let mut bits = vec![0u8; n.div_ceil(8)];
    let mut next = observed.iter().peekable();
    for (i, fp) in findings.enumerate() {
        if next.peek().is_some_and(|o| o.as_str() == fp) {
            bits[i / 8] |= 1 << (i % 8);
            next.next();
        }
    }
    next.peek().is_none().then_some((n, bits))
}

/// A last scan record's value: digests as bytes; the fingerprints it
/// observed as a bitmap over `findings` (the target's, sorted, as they
/// are when the record is written) when they are all among them, else as
/// a list of fingerprints as bytes. A scan record holds only while no
/// record of its target follows it, so a reader finds the same findings.
pub fn encode_scan<'a>(
    scan: &ScanRecord,
    findings: impl ExactSizeIterator<Item = &'a str>,
) -> Vec<u8> {
    let bitmap = bitmap(findings, &scan.observed);
    let mut out = Vec::with_capacity(
        64 + bitmap
            .as_ref()
            .map_or(scan.observed.len() * 18, |b| b.1.len()),
    );
    header(&mut out);
    let flags = [
        (scan.bytes.is_some(), S_BYTES),
        (scan.content.is_some(), S_CONTENT),
        (scan.format.is_some(), S_FORMAT),
        (scan.scanner.is_some(), S_SCANNER),
        (scan.complete, S_COMPLETE),
        (bitmap.is_some(), S_BITMAP),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |acc, (_, bit)| acc | bit);
    out.push(flags);
    for t in [&scan.bytes, &scan.content, &scan.format, &scan.scanner]
        .into_iter()
        .flatten()
    {
        put_text(&mut out, t);
    }
    put_varint(&mut out, scan.findings as u64);
    put_text(&mut out, &scan.settings);
    match bitmap {
        Some((n, bits)) => {
            put_varint(&mut out, n as u64);
            out.extend_from_slice(&bits);
            out.extend_from_slice(&list_check(&scan.observed));
        }
        None => {
            put_varint(&mut out, scan.observed.len() as u64);
            for fp in &scan.observed {
                put_text(&mut out, fp);
            }
        }
    }
    out
}

/// Whether a last scan record's value needs its target's findings to be
/// read (see [`decode_scan`]).
pub fn scan_needs_findings(value: &[u8]) -> bool {
    is_binary(value) && value.get(2).is_some_and(|f| f & S_BITMAP != 0)
}

/// Reads a last scan record's value; `findings`: the target's findings
/// (sorted), for a record that names them by a bitmap. An error when
/// they are not those it was written against.
pub fn decode_scan(value: &[u8], findings: &[&str]) -> Result<ScanRecord, String> {
    let r = &mut Reader::new(value)?;
    let flags = r.byte("scan flags")?;
    if flags >> 6 != 0 {
        return Err(r.err("scan flags", &format!("unknown flags {flags:#x}")));
    }
    let mut opt = |bit: u8, what: &str| (flags & bit != 0).then(|| r.text(what)).transpose();
    let bytes = opt(S_BYTES, "bytes digest")?;
    let content = opt(S_CONTENT, "content digest")?;
    let format = opt(S_FORMAT, "format")?;
    let scanner = opt(S_SCANNER, "scanner")?;
    let findings_n =
        usize::try_from(r.varint("findings")?).map_err(|_| r.err("findings", "out of range"))?;
    let settings = r.text("settings")?;
    let observed = if flags & S_BITMAP != 0 {
        let n = r.varint("bitmap length")?;
        if usize::try_from(n).ok() != Some(findings.len()) {
            return Err(r.err(
                "bitmap length",
                &format!(
                    "written over {n} findings, the target has {}",
                    findings.len()
                ),
            ));
        }
        let bits = r.bytes(n.div_ceil(8), "bitmap")?;
        let observed: Vec<String> = findings
            .iter()
            .enumerate()
            .filter(|(i, _)| bits[i / 8] & (1 << (i % 8)) != 0)
            .map(|(_, fp)| fp.to_string())
            .collect();
        if r.bytes(4, "check")? != list_check(&observed) {
            return Err(r.err(
                "check",
                "the target's findings are not those it was written over",
            ));
        }
        observed
    } else {
        let n = r.count("observed")?;
        let mut observed = Vec::with_capacity(n);
        for _ in 0..n {
            observed.push(r.text("observed fingerprint")?);
        }
        observed
    };
    r.end("scan record")?;
    Ok(ScanRecord {
        bytes,
        content,
        format,
        scanner,
        complete: flags & S_COMPLETE != 0,
        findings: findings_n,
        observed,
        settings,
    })
}

/// The writer's side of a target's dictionary: each text's id, the next
/// id to give, and the chunk records in the changelog.
#[derive(Debug, Default)]
pub struct Dict {
    ids: TextMap<Arc<str>, u64>,
    /// Ids are never given twice for a target, so that a record left in
    /// the changelog by a step cut short cannot be read with another
    /// step's texts.
    next: u64,
    /// First ids of the chunk records in the changelog (with texts, or
    /// left by a step cut short), tombstoned when the target is rewritten.
    pub chunks: Vec<u64>,
    /// Entries in use when last counted.
    pub used: usize,
    /// The target's records in the changelog include binary ones.
    pub binary: bool,
}

impl Dict {
    /// The dictionary restored from the target's chunk records; `floor`:
    /// the first id no record in the changelog uses; `cut`: chunk records
    /// of steps cut short.
    pub fn restored(strings: &Strings, floor: u64, cut: &[u64], binary: bool) -> Dict {
        let mut ids = TextMap::default();
        let mut next = floor;
        for (id, s) in strings.entries() {
            ids.entry(Arc::clone(s)).or_insert(id);
            next = next.max(id.saturating_add(1));
        }
        let mut chunks: Vec<u64> = strings.bases().chain(cut.iter().copied()).collect();
        chunks.sort_unstable();
        chunks.dedup();
        Dict {
            used: ids.len(),
            ids,
            next,
            chunks,
            binary,
        }
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// No entry.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// A fresh dictionary continuing this one's ids.
    pub fn fresh(&self) -> Dict {
        Dict {
            next: self.next,
            binary: true,
            ..Dict::default()
        }
    }

    /// An interner adding to this dictionary, and collecting the texts it
    /// adds (for the step's chunk record).
    pub fn adding(&mut self) -> Adding<'_> {
        Adding {
            base: self.next,
            dict: self,
            added: Vec::new(),
        }
    }
}

/// Texts of consecutive ids from the first.
pub type Chunk = (u64, Vec<Arc<str>>);

/// What a target's dictionary holds besides its texts, kept while the
/// target is evicted from memory (see [`super::cold`]): with the texts
/// its chunk records carry, [`Dict::thawed`] gives the same dictionary
/// back, so the records written after the target is decoded again are
/// those written had it stayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DictMeta {
    next: u64,
    chunks: Vec<u64>,
    used: usize,
    binary: bool,
}

impl DictMeta {
    /// The next id the dictionary gives.
    pub fn next(&self) -> u64 {
        self.next
    }
}

impl Dict {
    /// The id of `text`, when the dictionary holds it.
    pub fn lookup(&self, text: &str) -> Option<u64> {
        self.ids.get(text).copied()
    }

    /// The texts as chunks of consecutive ids, each starting at one of the
    /// dictionary's chunk records (or where ids resume after a gap), and
    /// what else it holds: see [`DictMeta`].
    pub fn freeze(&self) -> (Vec<Chunk>, DictMeta) {
        let mut by_id: Vec<(u64, &Arc<str>)> = self.ids.iter().map(|(s, &id)| (id, s)).collect();
        by_id.sort_unstable_by_key(|&(id, _)| id);
        let mut out: Vec<Chunk> = Vec::new();
        let mut bases = self.chunks.iter().copied().peekable();
        for (id, s) in by_id {
            // A chunk record starts at `id`: a new run.
            let mut starts = false;
            while bases.peek().is_some_and(|&b| b <= id) {
                starts |= bases.next() == Some(id);
            }
            match out.last_mut() {
                Some((base, texts)) if !starts && *base + texts.len() as u64 == id => {
                    texts.push(Arc::clone(s));
                }
                _ => out.push((id, vec![Arc::clone(s)])),
            }
        }
        let meta = DictMeta {
            next: self.next,
            chunks: self.chunks.clone(),
            used: self.used,
            binary: self.binary,
        };
        (out, meta)
    }

    /// The dictionary [`Dict::freeze`] gave: its texts read back from the
    /// chunks it gave (`strings`, nothing else), and `meta`.
    pub fn thawed(strings: &Strings, meta: DictMeta) -> Dict {
        let ids = strings
            .entries()
            .map(|(id, s)| (Arc::clone(s), id))
            .collect();
        Dict {
            ids,
            next: meta.next,
            chunks: meta.chunks,
            used: meta.used,
            binary: meta.binary,
        }
    }
}

/// Names texts by a target's dictionary where it holds them, and the
/// others by ids from `base` on (past every id the dictionary gives),
/// collected in `extra`: what an evicted target's records are written
/// with (see [`super::cold`]).
pub struct Freezing<'a> {
    pub dict: Option<&'a Dict>,
    pub base: u64,
    pub extra: Vec<Arc<str>>,
    extra_ids: TextMap<Arc<str>, u64>,
}

impl<'a> Freezing<'a> {
    /// Texts of `dict` by its ids, the others from `base`.
    pub fn new(dict: Option<&'a Dict>, base: u64) -> Freezing<'a> {
        Freezing {
            dict,
            base,
            extra: Vec::new(),
            extra_ids: TextMap::default(),
        }
    }
}

impl Intern for Freezing<'_> {
    fn id(&mut self, text: &str) -> u64 {
        if let Some(id) = self.dict.and_then(|d| d.lookup(text)) {
            return id;
        }
        if let Some(&id) = self.extra_ids.get(text) {
            return id;
        }
        let id = self.base.saturating_add(self.extra.len() as u64);
        let s: Arc<str> = Arc::from(text);
        self.extra_ids.insert(Arc::clone(&s), id);
        self.extra.push(s);
        id
    }
}

/// See [`Dict::adding`].
pub struct Adding<'a> {
    dict: &'a mut Dict,
    /// The first id given.
    pub base: u64,
    /// Texts added, in id order from `base`.
    pub added: Vec<Arc<str>>,
}

impl Intern for Adding<'_> {
    fn id(&mut self, text: &str) -> u64 {
        if let Some(&id) = self.dict.ids.get(text) {
            return id;
        }
        let id = self.dict.next;
        self.dict.next = id.saturating_add(1);
        let s: Arc<str> = Arc::from(text);
        self.dict.ids.insert(Arc::clone(&s), id);
        self.added.push(s);
        id
    }
}

/// An interner that only collects the distinct texts asked for.
#[derive(Default)]
pub struct Counting {
    /// The texts.
    pub seen: std::collections::HashSet<Box<str>>,
}

impl Intern for Counting {
    fn id(&mut self, text: &str) -> u64 {
        if !self.seen.contains(text) {
            self.seen.insert(text.into());
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_texts_round_trip() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut out = vec![MAGIC, VERSION];
            put_varint(&mut out, v);
            let mut r = Reader::new(&out).unwrap();
            assert_eq!(r.varint("v").unwrap(), v);
            r.end("v").unwrap();
        }
        for v in [0i64, 1, -1, i64::MAX, i64::MIN, 1_800_000_000] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        for (text, len) in [
            ("", 1),
            ("v1:00ff", 3),
            ("00ff", 3),
            ("00FF", 5),
            ("abc", 4),
            ("v1:abc", 7),
            ("héllo", 7),
        ] {
            let mut out = vec![MAGIC, VERSION];
            put_text(&mut out, text);
            assert_eq!(out.len() - 2, len, "{text}");
            let mut r = Reader::new(&out).unwrap();
            assert_eq!(r.text("t").unwrap(), text);
        }
    }

    /// A record with every optional field set, and unusual values
    /// (sub-second times, times before the first sighting, texts that
    /// look like digests and ones that do not), round-trips exactly.
    #[test]
    fn a_finding_record_with_every_field_round_trips() {
        use chrono::TimeZone;
        let t = |s: i64, n: u32| Utc.timestamp_opt(s, n).single().unwrap();
        let mut f = Finding::new(
            "trivy",
            Category::Container,
            "CVE-2026-1",
            Severity::High,
            "m",
        );
        f.aliases = vec!["GHSA-x".into(), "OSV-y".into()];
        f.severity_source = Some("cvss:7.5".into());
        f.target = Some("image:registry/app".parse().unwrap());
        f.location = Some(Location {
            path: "usr/lib/x.so".into(),
            start_line: Some(0),
            start_column: None,
            end_line: Some(u32::MAX),
            end_column: Some(7),
        });
        f.package = Some(Package {
            ecosystem: "deb".into(),
            name: "openssl".into(),
            version: None,
            fixed_version: Some("3.0.1".into()),
        });
        f.title = Some("Title".into());
        f.evidence = Evidence {
            snippet: Some("let x = 1;".into()),
            secret_hash: Some("00ab".into()),
        };
        f.content_hash = Some("ABCDEF".into());
        f.tool_fingerprint = Some("v1:0123".into());
        f.cwe = vec!["CWE-78".into()];
        f.help_uri = Some("https://x".into());
        f.owner = Some("@acme/a".into());
        let d = Disposition {
            state: DispositionState::NotAffected,
            kind: Some("vendor".into()),
            status: None,
            justification: Some("j".into()),
        };
        f.disposition = Some(Box::new(d.clone()));
        let mut sources = Sources::one("trivy".into(), Severity::High);
        sources.insert("grype", Severity::Critical);
        let rec = FindingRecord {
            status: Status::NotAffected,
            finding: f,
            sources,
            evidence: "0011223344556677".into(),
            team: Some("payments".into()),
            attribution: Arc::new(Attribution {
                team: Some("payments".into()),
                source: "codeowners".into(),
                file: Some(".github/CODEOWNERS".into()),
                line: Some(0),
                rule: Some("/usr/ @acme/a".into()),
                owners: vec!["@acme/a".into(), "@acme/b".into()],
            }),
            ticket_key: "tk".into(),
            first_seen: t(1_800_000_000, 123_456_789),
            last_seen: t(1_800_000_100, 5_000_000),
            opened_at: t(1_700_000_000, 0),
            due_at: Some(t(1_900_000_000, 0)),
            sla_breached: true,
            resolved_at: Some(t(-5, 1)),
            accepted_until: Some(t(1_800_000_000, 999_999_999)),
            seq: u64::MAX,
            vex: Some(Box::new(d)),
            origin: Some(Arc::new(Origin {
                provenance: Provenance::Introduced,
                at: t(1_800_000_000, 123_456_789),
                commit: Some("c".into()),
                git_ref: None,
                scan_id: Some("s".into()),
            })),
        };
        let mut dict = Dict::default();
        let mut out = Vec::new();
        let mut adding = dict.adding();
        encode_finding(&mut out, &mut adding, &rec);
        let mut strings = Strings::default();
        strings.set(adding.base, Some(adding.added));
        assert_eq!(
            decode_finding(&out, &strings, &mut Shared::default()).unwrap(),
            rec
        );
        // A second record adds no text it shares.
        let mut adding = dict.adding();
        encode_finding(&mut Vec::new(), &mut adding, &rec);
        assert!(adding.added.is_empty());
        // Every prefix is an error, never a panic.
        for n in 0..out.len() {
            assert!(
                decode_finding(&out[..n], &strings, &mut Shared::default()).is_err(),
                "{n}"
            );
        }
        // The records of one decode that one ownership rule attributes
        // share one attribution, as custody built them; another rule's
        // stays apart. Those one scan first saw share its origin; one
        // written alike against another first sighting (so another time)
        // does not.
        let mut other = rec.clone();
        Arc::make_mut(&mut other.attribution).line = Some(7);
        let mut later = rec.clone();
        later.first_seen += chrono::Duration::hours(1);
        Arc::make_mut(later.origin.as_mut().unwrap()).at += chrono::Duration::hours(1);
        let (mut out_other, mut out_later) = (Vec::new(), Vec::new());
        encode_finding(&mut out_other, &mut dict.adding(), &other);
        encode_finding(&mut out_later, &mut dict.adding(), &later);
        let shared = &mut Shared::default();
        let a = decode_finding(&out, &strings, shared).unwrap();
        let b = decode_finding(&out, &strings, shared).unwrap();
        let c = decode_finding(&out_other, &strings, shared).unwrap();
        let d = decode_finding(&out_later, &strings, shared).unwrap();
        assert!(Arc::ptr_eq(&a.attribution, &b.attribution));
        assert!(!Arc::ptr_eq(&a.attribution, &c.attribution));
        let origin = |r: &FindingRecord| Arc::clone(r.origin.as_ref().unwrap());
        assert!(Arc::ptr_eq(&origin(&a), &origin(&c)));
        assert!(!Arc::ptr_eq(&origin(&a), &origin(&d)));
        assert_eq!((b, c, d), (rec, other, later));
    }

    /// A ticket record round-trips; fields after the ones this form
    /// writes (as a later version would add) are read, and a target other
    /// than its key's is kept.
    #[test]
    fn ticket_records_round_trip_and_keep_fields_added_later() {
        use crate::model::ticket::{Grouping, TicketStatus};
        use chrono::TimeZone;
        let rec = TicketRecord {
            team: Some("payments".into()),
            target: "repo:github.com/acme/api".parse().unwrap(),
            group: "B101".into(),
            grouping: Grouping::TeamTarget,
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            git_ref: None,
            category: Category::Sast,
            title: "Use of assert".into(),
            status: TicketStatus::Open,
            severity: Severity::Medium,
            due_at: Some(
                Utc.timestamp_opt(1_800_000_000, 250_000_000)
                    .single()
                    .unwrap(),
            ),
            open_members: [format!("v1:{}", "ab".repeat(16)), "odd".to_string()].into(),
            counts: crate::model::TicketCounts {
                open: 2,
                resolved: 7,
                ..Default::default()
            },
            breached: true,
            route: "custody.tickets.payments".into(),
            seq: 9,
            // Written after the fields this form knows, as JSON.
            help: Some("Rule help".into()),
        };
        // A record written under the target its key names reads back as
        // it was; its bytes.
        let round_trip = |r: &TicketRecord| {
            let mut out = Vec::new();
            encode_ticket(&mut out, r, "repo:github.com/acme/api");
            assert_eq!(&decode_ticket(&out, "repo:github.com/acme/api").unwrap(), r);
            out
        };
        let out = round_trip(&rec);
        // Every grouping, a target's part of a ticket across targets
        // among them.
        for grouping in [
            Grouping::TeamTargetRule,
            Grouping::TeamTarget,
            Grouping::Finding,
            Grouping::TeamRule,
        ] {
            round_trip(&TicketRecord {
                grouping,
                ..rec.clone()
            });
        }
        // Each optional field the other way: no team, a ref but no
        // commit, resolved, no due date, not breached, no members.
        round_trip(&TicketRecord {
            team: None,
            commit: None,
            git_ref: Some("refs/heads/main".into()),
            status: TicketStatus::Resolved,
            due_at: None,
            breached: false,
            open_members: Default::default(),
            ..rec.clone()
        });
        // The fields past those this form knows are those of the record
        // as JSON, whether it has any or not.
        for r in [
            &rec,
            &TicketRecord {
                help: None,
                ..rec.clone()
            },
        ] {
            let mut whole = match serde_json::to_value(r).unwrap() {
                serde_json::Value::Object(m) => m,
                v => panic!("{v}"),
            };
            TICKET_FIELDS.iter().for_each(|f| {
                whole.remove(*f);
            });
            assert_eq!(extra_ticket_fields(r), whole);
        }
        assert_eq!(extra_ticket_fields(&rec).len(), 1);
        // A field tickets gain must be read back: by the form itself, or
        // from the JSON after it through TicketExtra.
        for field in extra_ticket_fields(&rec).keys() {
            assert!(
                EXTRA_TICKET_FIELDS.contains(&field.as_str()),
                "a ticket's field {field:?} is written as JSON but TicketExtra does not read it"
            );
        }
        let mut other = Vec::new();
        encode_ticket(&mut other, &rec, "repo:github.com/acme/web");
        assert!(other.len() > out.len());
        assert_eq!(
            decode_ticket(&other, "repo:github.com/acme/web").unwrap(),
            rec
        );
        // A field a later version adds, which this one does not know.
        let without = TicketRecord {
            help: None,
            ..rec.clone()
        };
        let mut out = Vec::new();
        encode_ticket(&mut out, &without, "repo:github.com/acme/api");
        out[2] |= T_EXTRA;
        out.extend_from_slice(br#"{"later":"x"}"#);
        assert_eq!(
            decode_ticket(&out, "repo:github.com/acme/api").unwrap(),
            without
        );
        for n in 0..out.len() - 20 {
            assert!(
                decode_ticket(&out[..n], "repo:github.com/acme/api").is_err(),
                "{n}"
            );
        }
    }

    #[test]
    fn hostile_values_are_errors_that_say_what_and_where() {
        let strings = Strings::default();
        for (value, says) in [
            (&b""[..], "not a binary"),
            (&[MAGIC, 9][..], "version 9"),
            (&[MAGIC, VERSION][..], "flags at byte 2: value ends"),
            (
                &[
                    MAGIC, VERSION, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
                ][..],
                "overflows",
            ),
            (
                &[MAGIC, VERSION, 0x80, 0x80, 0x80, 0x40][..],
                "unknown flags",
            ),
            (
                &[MAGIC, VERSION, 0, 9][..],
                "status at byte 3: unknown value 9",
            ),
        ] {
            let err = decode_finding(value, &strings, &mut Shared::default()).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
        // A count far past the value's end allocates nothing.
        let mut v = vec![MAGIC, VERSION];
        put_varint(&mut v, u64::MAX >> 1);
        let err = decode_chunk(&v).unwrap_err();
        assert!(err.contains("count"), "{err}");
        let mut v = vec![MAGIC, VERSION, 1];
        put_varint(&mut v, 1 << 40);
        let err = decode_chunk(&v).unwrap_err();
        assert!(err.contains("past the end"), "{err}");
        let err = decode_ticket(&[MAGIC, VERSION, T_EXTRA], "repo:a/b").unwrap_err();
        assert!(err.contains("team") || err.contains("group"), "{err}");
        let err = decode_scan(&[MAGIC, VERSION, 0x80], &[]).unwrap_err();
        assert!(err.contains("unknown flags"), "{err}");
    }
}
