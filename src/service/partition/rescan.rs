//! What a partition remembers of each target's last scan, so that a
//! rescan sending the same report again is applied without decoding it;
//! and the decode itself, run when the partition is stepped, or handed to
//! the edge to run ahead and handed back.

use super::super::changelog;
use super::super::meta::MessageMeta;
use super::Bytes;
use crate::lifecycle::Fingerprints;
use crate::normalize::{self, DecodeError, Format, Report};
use std::collections::HashMap;

/// The digest of a report's bytes ([`normalize::report_digest`]; of the
/// joined chunks, for a chunked scan). Digests of BLAKE3's length, which
/// versions before wrote, do not read back: such a target's next scan is
/// decoded in full, once.
pub(super) type Digest = [u8; 16];

/// What a report is recognized by: the digest of its bytes and, for a
/// format that has one, the digest of what its decoder reads
/// ([`normalize::sarif::content_digest`]: a SARIF log restamped with a new
/// run time is the same report). The content digest is computed for a
/// target's first scan and when a report's bytes differ from its target's
/// last scan's, not for a report sent again byte for byte; once a rescan
/// of a target was recognized by it, its bytes differing, the target's
/// next report goes by it alone and its bytes are not hashed (see
/// [`Known::by_content`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Digests {
    pub(super) bytes: Option<Digest>,
    pub(super) content: Option<Digest>,
}

impl Digests {
    /// Whether a report with `new` is the report these digests are of.
    pub(super) fn same_report(&self, new: &Digests) -> bool {
        self.bytes.is_some_and(|b| new.bytes == Some(b))
            || new.content.is_some_and(|c| self.content == Some(c))
    }
}

/// A decoded report, its scan id and its digests.
pub(super) struct DecodedReport {
    pub(super) report: Report,
    pub(super) scan_id: ScanId,
    pub(super) digests: Digests,
}

pub(super) type Decoded = Result<DecodedReport, DecodeError>;

/// What a decode gives: the report decoded, or its input undecoded, with
/// its digest, when the digest is the one the decode was told its target's
/// last scan had (see [`LastScan`]), or when the decode was told to leave
/// that question to the apply.
// A decoded report is the common case: boxing it would allocate once per
// report to spare moving a few hundred bytes.
#[allow(clippy::large_enum_variant)]
pub(super) enum Prepared {
    Decoded(Decoded),
    Undecoded(Box<DecodeInput>, Digests),
}

/// What a decode knows of its target's last scan.
#[derive(Clone, Copy)]
pub(super) enum Known {
    /// Nothing remembered: the report is decoded.
    Nothing,
    /// The digests of its report.
    Last(Digests),
    /// Not yet: a message before this one, not applied yet, scans the same
    /// target. The decode only hashes, and the apply decides. With the
    /// digests of the target's last scan as known when the decode started:
    /// they say which digest the apply will most likely compare.
    Pending(Option<Digests>),
}

impl Known {
    /// Whether the report is to be recognized by its content digest alone:
    /// the target's last scan was recognized by it, its bytes differing
    /// (a scanner that restamps every report), so this report's bytes
    /// would differ too, and hashing them would only add a fifth to the
    /// content digest's cost (a 200 KB report: 30 us of 150). A report
    /// decoded (its content changed) has both digests taken, and the
    /// target's next report is compared by its bytes first again.
    pub(super) fn by_content(self) -> bool {
        match self {
            Known::Last(d) | Known::Pending(Some(d)) => d.bytes.is_none() && d.content.is_some(),
            Known::Nothing | Known::Pending(None) => false,
        }
    }
}

/// A scan's id: the publisher's, or, when it gave none, derived from the
/// report's bytes. Deriving hashes the whole report (with SHA-256, as
/// `custody process` does), so it is done only when an event carries the
/// id: a rescan that changes nothing never needs it.
pub(super) enum ScanId {
    Given(String),
    Content(Bytes),
}

/// What a partition remembers of a target's last scan, so that a rescan
/// sending the same report again is applied without decoding it (see
/// [`Engine::rescan_unchanged`]): the report's digest and the metadata that
/// shapes how it is applied. It is forgotten when anything else changes
/// the target's state (another scan, a decision, an SLA or ownership
/// change). It is kept in the changelog too ([`changelog::ScanRecord`]),
/// so a restore or a rebalance does not forget it.
pub(super) struct LastScan {
    pub(super) digests: Digests,
    pub(super) format: Option<Format>,
    pub(super) scanner: Option<String>,
    pub(super) complete: bool,
    /// Findings the report held (for the findings-consumed count).
    pub(super) findings: usize,
    /// The ownership generation read before the scan was applied: a
    /// report sent again under another ownership is applied in full, as
    /// its findings may be attributed otherwise.
    pub(super) ownership: u64,
    /// The fingerprints it observed.
    pub(super) observed: Observed,
    /// Read from the changelog, and its attributions not yet checked
    /// against the ownership in force.
    pub(super) restored: bool,
}

impl LastScan {
    /// Remembers how a rescan was recognized: by its content digest, its
    /// bytes differing, the target's scanner restamps its reports, and its
    /// next report is judged by the content digest alone (see
    /// [`Known::by_content`]). Recognized by its bytes, it changes nothing.
    pub(super) fn recognized_by(&mut self, digests: &Digests) {
        if !(self.digests.bytes.is_some() && self.digests.bytes == digests.bytes) {
            self.digests.bytes = None;
        }
    }

    /// The changelog's record of this scan.
    pub(super) fn record(&self, settings: &str) -> changelog::ScanRecord {
        let hex = |d: Option<Digest>| d.map(|d| crate::fingerprint::hex(&d));
        changelog::ScanRecord {
            bytes: hex(self.digests.bytes),
            content: hex(self.digests.content),
            format: self.format.map(|f| f.name().to_string()),
            scanner: self.scanner.clone(),
            complete: self.complete,
            findings: self.findings,
            observed: self.observed.to_strings(),
            settings: settings.to_string(),
        }
    }

    /// A scan as the changelog recorded it, under the ownership
    /// `generation`; `None` when the record does not read back.
    pub(super) fn restored(scan: changelog::ScanRecord, ownership: u64) -> Option<LastScan> {
        let digest = |h: Option<String>| -> Option<Option<Digest>> {
            let Some(h) = h else {
                return Some(None);
            };
            let mut d = Digest::default();
            hex::decode_to_slice(h, &mut d).ok()?;
            Some(Some(d))
        };
        let format = match scan.format {
            Some(name) => Some(Format::from_name(&name)?),
            None => None,
        };
        Some(LastScan {
            digests: Digests {
                bytes: digest(scan.bytes)?,
                content: digest(scan.content)?,
            },
            format,
            scanner: scan.scanner,
            complete: scan.complete,
            findings: scan.findings,
            ownership,
            observed: Observed::new(scan.observed),
            restored: true,
        })
    }

    /// Whether a message with `meta` applies its report the same way.
    pub(super) fn same_meta(&self, meta: &MessageMeta) -> bool {
        self.format == meta.format && self.scanner == meta.scanner && self.complete == meta.complete
    }
}

/// What is remembered of the last scan of `meta`'s target, if a report
/// sent again would be applied the same way.
pub(super) fn known(last: &HashMap<String, LastScan>, meta: &MessageMeta) -> Known {
    last_scan(last, meta).map_or(Known::Nothing, |l| Known::Last(l.digests))
}

/// Whether a message with `meta` and `digests` sends its target's last
/// scan again.
pub(super) fn remembered(
    last: &HashMap<String, LastScan>,
    meta: &MessageMeta,
    digests: &Digests,
) -> bool {
    last_scan(last, meta).is_some_and(|l| l.digests.same_report(digests))
}

/// The last scan of the target `meta` names, if its report sent again
/// would be applied the same way.
pub(super) fn last_scan<'a>(
    last: &'a HashMap<String, LastScan>,
    meta: &MessageMeta,
) -> Option<&'a LastScan> {
    let target = meta.target.as_ref()?;
    last.get(&target.to_string()).filter(|l| l.same_meta(meta))
}

/// A report's decode. It normally runs when its partition is stepped, on
/// the thread that then applies it: the report is decoded, applied and
/// freed while it is in that core's cache, and partitions give the
/// parallelism. When fewer partitions have work than the edge has threads,
/// the edge takes decodes ahead ([`PartitionProcessor::decode_ahead`]),
/// runs them where it likes, and hands each result back
/// ([`PartitionProcessor::on_decoded`]), so one busy partition still
/// decodes on every core.
///
/// [`PartitionProcessor::decode_ahead`]: super::PartitionProcessor::decode_ahead
/// [`PartitionProcessor::on_decoded`]: super::PartitionProcessor::on_decoded
pub(super) enum Decode {
    /// Not started.
    Lazy(Box<DecodeInput>),
    /// Handed to the edge, its result not back yet.
    Away,
    /// Its result, back from the edge.
    Done(Box<Prepared>),
    /// Taken by the step.
    Taken,
}

impl Decode {
    /// The input of a decode not started yet, which is then taken.
    pub(super) fn take_lazy(&mut self) -> Option<Box<DecodeInput>> {
        match std::mem::replace(self, Decode::Taken) {
            Decode::Lazy(input) => Some(input),
            other => {
                *self = other;
                None
            }
        }
    }

    /// The result of a decode handed back, which is then taken.
    pub(super) fn take_done(&mut self) -> Option<Prepared> {
        match std::mem::replace(self, Decode::Taken) {
            Decode::Done(prepared) => Some(*prepared),
            other => {
                *self = other;
                None
            }
        }
    }
}

/// A decode the edge runs for a partition: what it is given by
/// [`PartitionProcessor::decode_ahead`](super::PartitionProcessor::decode_ahead).
/// Running it is pure work (hashing and decoding a report), with no effect.
pub struct DecodeTask {
    /// The assignment of the partition that handed it out.
    pub(super) generation: u64,
    pub(super) offset: i64,
    pub(super) input: Box<DecodeInput>,
    pub(super) known: Known,
}

impl DecodeTask {
    /// Hashes the report and decodes it (unless it is its target's last
    /// scan again): the result to hand back to the partition.
    pub fn run(self) -> DecodeResult {
        DecodeResult {
            generation: self.generation,
            offset: self.offset,
            prepared: Box::new(self.input.run(self.known)),
        }
    }
}

/// A decode's result, for
/// [`PartitionProcessor::on_decoded`](super::PartitionProcessor::on_decoded).
pub struct DecodeResult {
    pub(super) generation: u64,
    pub(super) offset: i64,
    pub(super) prepared: Box<Prepared>,
}

/// What a decode needs.
pub(super) struct DecodeInput {
    pub(super) format: Option<Format>,
    pub(super) scan_id: Option<String>,
    pub(super) bytes: Bytes,
    pub(super) ctx: normalize::DecodeContext,
}

impl DecodeInput {
    /// Hashes the report and decodes it, unless it is the target's last
    /// scan again or that is not known yet.
    pub(super) fn run(self: Box<Self>, known: Known) -> Prepared {
        let by_content = known.by_content();
        let bytes: Option<Digest> = (!by_content).then(|| normalize::report_digest(&self.bytes));
        let mut digests = Digests {
            bytes,
            content: None,
        };
        match known {
            // Sent again byte for byte: nothing else to compute.
            Known::Last(d) if bytes.is_some() && d.bytes == bytes => {
                return Prepared::Undecoded(self, digests);
            }
            // The apply compares; it takes the content digest itself
            // should the bytes not be its target's last scan's (most often
            // they are: a rescan sends the same report again).
            Known::Pending(_) if !by_content => return Prepared::Undecoded(self, digests),
            _ => {}
        }
        // Every other case needs the content digest. A target's first scan
        // (or the first after one whose record did not hold at a restore)
        // takes it too, so that a second scan restamped is recognized
        // rather than decoded again (a fourth of a SARIF decode's cost,
        // against a whole decode).
        digests.content = self.content_digest();
        match known {
            Known::Last(d) if d.same_report(&digests) => Prepared::Undecoded(self, digests),
            Known::Nothing | Known::Last(_) => Prepared::Decoded((*self).decode(digests)),
            Known::Pending(_) => Prepared::Undecoded(self, digests),
        }
    }

    /// The digest of what the decoder reads, for a format that has one.
    pub(super) fn content_digest(&self) -> Option<Digest> {
        let format = match self.format {
            Some(f) => f,
            None => normalize::sniff::sniff(&self.bytes).ok()?,
        };
        match format {
            Format::Sarif => normalize::sarif::content_digest(&self.bytes),
            _ => None,
        }
    }

    /// Decodes the report. A report decoded becomes its target's last
    /// scan, and the next report is compared by its bytes first (a target
    /// goes by content alone only once a rescan was recognized by it, its
    /// bytes differing): the digest of the bytes is taken if it was not.
    pub(super) fn decode(self, mut digests: Digests) -> Decoded {
        if digests.bytes.is_none() {
            digests.bytes = Some(normalize::report_digest(&self.bytes));
        }
        let (format, report) = normalize::decode(&self.bytes, self.format, &self.ctx)?;
        warn_weak_fingerprints(format, &report, self.scan_id.as_deref());
        let scan_id = match self.scan_id {
            Some(id) => ScanId::Given(id),
            None => ScanId::Content(self.bytes),
        };
        Ok(DecodedReport {
            report,
            scan_id,
            digests,
        })
    }
}

/// Warns, once per report, of SARIF results fingerprinted by their message
/// alone: the service has no checkout to read their lines from, so only
/// snippets or the line hashes `custody publish --source` writes give them
/// fingerprints that notice a rewritten line.
fn warn_weak_fingerprints(format: Format, report: &normalize::Report, scan_id: Option<&str>) {
    if format != Format::Sarif {
        return;
    }
    let weak = report
        .findings
        .iter()
        .filter(|f| crate::fingerprint::by_message(f))
        .count();
    if weak > 0 {
        let scanners: std::collections::BTreeSet<&str> =
            report.coverage.iter().map(|(s, _)| s.as_str()).collect();
        tracing::warn!(
            weak,
            findings = report.findings.len(),
            scan_id = scan_id.unwrap_or(""),
            scanners = ?scanners,
            "SARIF results without source snippets or line hashes are fingerprinted by their message and order; publish the report with `custody publish --source DIR` for line-based fingerprints"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Log lines written while `f` runs.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn input(path: &str) -> Box<DecodeInput> {
        let bytes = std::fs::read(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        Box::new(DecodeInput {
            format: None,
            scan_id: Some("s1".into()),
            bytes: super::super::Payload::owned(bytes),
            ctx: normalize::DecodeContext::default(),
        })
    }

    /// The service decodes Ruff's snippetless SARIF with one warning for
    /// the report; Bandit's, with snippets, warns of the one result whose
    /// snippet is blank (a B106 whose snippet Bandit 1.9.4 wrote as
    /// `"\n"`); Ruff's with line hashes written in, of none.
    #[test]
    fn snippetless_sarif_is_warned_about_once_per_report() {
        let digests = || Digests {
            bytes: None,
            content: None,
        };
        let text = logged(|| {
            input("tests/fixtures/churn/ruff-6.5.sarif")
                .decode(digests())
                .unwrap();
        });
        assert_eq!(text.matches("WARN").count(), 1, "{text}");
        assert!(text.contains("weak=247 findings=247"), "{text}");
        assert!(text.contains("scan_id=\"s1\""), "{text}");
        assert!(text.contains("--source"), "{text}");
        let text = logged(|| {
            input("tests/fixtures/churn/bandit-6.5.sarif")
                .decode(digests())
                .unwrap();
        });
        assert_eq!(text.matches("WARN").count(), 1, "{text}");
        assert!(text.contains("weak=1 findings=269"), "{text}");
        let mut ruff = input("tests/fixtures/churn/ruff-6.5.sarif");
        let (hashed, _) =
            normalize::sarif::add_line_hashes(&ruff.bytes, &mut |_, n| Some(format!("line {n}")))
                .unwrap();
        ruff.bytes = super::super::Payload::owned(hashed);
        let text = logged(|| {
            ruff.decode(digests()).unwrap();
        });
        assert_eq!(text, "");
    }

    /// A last scan reads back from the changelog with the digests it was
    /// written with; one written with BLAKE3's digests (by versions
    /// before XXH3) does not, so its target's next scan is decoded.
    #[test]
    fn a_last_scan_reads_back_with_its_digests_and_not_with_blake3s() {
        let bytes = normalize::report_digest(b"a report");
        let scan = |bytes: String| changelog::ScanRecord {
            bytes: Some(bytes),
            content: None,
            format: Some("sarif".to_string()),
            scanner: Some("semgrep".to_string()),
            complete: true,
            findings: 1,
            observed: Vec::new(),
            settings: "s".to_string(),
        };
        let last = LastScan::restored(scan(crate::fingerprint::hex(&bytes)), 0)
            .expect("an XXH3 digest reads back");
        assert!(last.digests.same_report(&Digests {
            bytes: Some(bytes),
            content: None,
        }));
        assert!(!last.digests.same_report(&Digests {
            bytes: Some(normalize::report_digest(b"another report")),
            content: None,
        }));
        let blake3 = blake3::hash(b"a report").to_hex().to_string();
        assert!(LastScan::restored(scan(blake3), 0).is_none());
    }
}

/// The fingerprints a scan observed, sorted, kept compact: `v1:`
/// fingerprints (the prefix and 32 lowercase hex digits) as their 16
/// bytes, 16 bytes each rather than a string of 35 and its header; any
/// other list as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Observed {
    Digests(Box<[[u8; 16]]>),
    Texts(Vec<String>),
}

/// The prefix of a fingerprint [`Observed`] keeps as bytes.
const V1: &str = "v1:";

impl Observed {
    /// `fps`, compact when every one is a `v1:` fingerprint.
    pub(super) fn new(fps: Vec<String>) -> Observed {
        let digest = |fp: &String| -> Option<[u8; 16]> {
            let h = fp.strip_prefix(V1)?;
            if h.len() != 32
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return None;
            }
            let mut d = [0u8; 16];
            hex::decode_to_slice(h, &mut d).ok()?;
            Some(d)
        };
        match fps.iter().map(digest).collect::<Option<Vec<_>>>() {
            Some(d) => Observed::Digests(d.into_boxed_slice()),
            None => Observed::Texts(fps),
        }
    }

    /// The fingerprints as strings.
    pub(super) fn to_strings(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.each(&mut |fp| {
            out.push(fp.to_string());
            true
        });
        out
    }
}

impl crate::lifecycle::Fingerprints for Observed {
    fn each(&self, f: &mut dyn FnMut(&str) -> bool) -> bool {
        match self {
            Observed::Texts(fps) => fps.each(f),
            Observed::Digests(ds) => {
                // Spelled out at once, and checked as text once.
                const LEN: usize = V1.len() + 32;
                let mut buf = vec![0u8; ds.len() * LEN];
                for (d, out) in ds.iter().zip(buf.chunks_exact_mut(LEN)) {
                    out[..V1.len()].copy_from_slice(V1.as_bytes());
                    // Cannot fail: 32 hex digits fit the 32 bytes left.
                    let _ = hex::encode_to_slice(d, &mut out[V1.len()..]);
                }
                let text = String::from_utf8(buf).unwrap_or_default();
                (0..ds.len()).all(|i| f(text.get(i * LEN..(i + 1) * LEN).unwrap_or_default()))
            }
        }
    }
}
