//! Decoder for SARIF 2.1.0, the format of CodeQL, Semgrep, Bandit, Ruff,
//! Checkov, Gitleaks, Flawfinder, SpotBugs and many more.
//!
//! Every run is read; rule metadata comes from `tool.driver.rules` and
//! `tool.extensions[].rules` (by `ruleIndex`, `rule.index` or id). Severity
//! is taken, in order, from `security-severity` (a CVSS-like score, as
//! GitHub code scanning reads it), from tool-specific result properties
//! (Bandit's `issue_severity`, dependency-check's `severity`, Black Duck's
//! `securityRisk`), and from the SARIF `level` (result, then rule default,
//! then the spec's default `warning`). Results whose `kind` says they are
//! not failures (`pass`, `notApplicable`, `informational`) are skipped and
//! recorded in `Report::skipped`. A result with a suppression in force
//! (`suppressions[]` with `status` `accepted`, `underReview` or none; a
//! `rejected` suppression is none, and an empty array means none apply) is
//! a finding with a [`Disposition`] `suppressed` carrying the first such
//! suppression's `kind` (`in_source`, `external`), `status` (`accepted`,
//! `under_review`) and `justification`.
//! A result with several locations is one finding at its first location.
//!
//! Line hashes: many tools (Ruff, ESLint, ...) write no snippet, so a
//! result's fingerprint would rest on its message and its order among
//! identical messages. `custody publish --source DIR` reads each result's
//! flagged line from the checkout and writes its hash into the result's
//! `partialFingerprints` under [`LINE_HASH_KEY`] ([`add_line_hashes`]);
//! the decoder takes that hash as the finding's line content, as
//! `custody process --source` would have read it (the same
//! [`fingerprint::line_hash`], so both front ends give one fingerprint).
//! The key is custody's own rather than GitHub's
//! `primaryLocationLineHash`, whose value GitHub computes its own way (a
//! rolling hash of the line's context with an occurrence count) and which
//! the decoder takes, where a tool writes it, as the tool's fingerprint.
//! Results of secret scanners get no line hash (their line holds the
//! secret, and only a hash salted by the service may stand for it), and
//! the key is never taken as a tool fingerprint.

use super::util::{category_for_tool, clean_path, set_line_content, strip_base};
use super::{DecodeContext, DecodeError, Decoder, Format, Markers, Report, secret_hash};
use crate::fingerprint;
use crate::model::{
    Category, Disposition, DispositionState, Finding, Location, Severity, Target, TargetKind,
};
use serde::de::{
    DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use xxhash_rust::xxh3::Xxh3;

/// The SARIF decoder.
pub struct SarifDecoder;

type Str<'a> = super::text::Text<'a>;

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(borrow)]
    driver: Component<'a>,
    #[serde(borrow, default)]
    extensions: Option<Vec<Component<'a>>>,
}

#[derive(Deserialize)]
struct Component<'a> {
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
    #[serde(borrow, default)]
    rules: Option<Vec<Rule<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule<'a> {
    #[serde(borrow, default)]
    id: Option<Str<'a>>,
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
    #[serde(borrow, default)]
    short_description: Option<Message<'a>>,
    #[serde(borrow, default)]
    full_description: Option<Message<'a>>,
    #[serde(borrow, default)]
    help: Option<Message<'a>>,
    #[serde(borrow, default)]
    help_uri: Option<Str<'a>>,
    #[serde(borrow, default)]
    default_configuration: Option<RuleConfig<'a>>,
    #[serde(borrow, default)]
    properties: Option<Properties<'a>>,
    #[serde(borrow, default)]
    message_strings: Option<HashMap<Str<'a>, Message<'a>>>,
}

#[derive(Deserialize)]
struct RuleConfig<'a> {
    #[serde(borrow, default)]
    level: Option<Str<'a>>,
}

/// The property-bag entries custody reads; everything else is skipped.
#[derive(Deserialize, Default)]
struct Properties<'a> {
    #[serde(borrow, default, rename = "security-severity")]
    security_severity: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    issue_severity: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    severity: Option<Scalar<'a>>,
    #[serde(borrow, default, rename = "securityRisk")]
    security_risk: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    tags: Option<Vec<Scalar<'a>>>,
    #[serde(borrow, default)]
    cwe: Option<OneOrMany<'a>>,
    #[serde(borrow, default)]
    offender: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    secret: Option<Scalar<'a>>,
}

/// A property value that may be a string, a number or something else.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar<'a> {
    Str(#[serde(borrow)] Str<'a>),
    Num(f64),
    Other(serde::de::IgnoredAny),
}

impl Scalar<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::Str(s) => s.trim().parse().ok(),
            Scalar::Num(n) => Some(*n),
            Scalar::Other(_) => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<'a> {
    One(#[serde(borrow)] Scalar<'a>),
    Many(Vec<Scalar<'a>>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SarifResult<'a> {
    #[serde(borrow, default)]
    rule_id: Option<Str<'a>>,
    #[serde(default)]
    rule_index: Option<i64>,
    #[serde(borrow, default)]
    rule: Option<RuleRef<'a>>,
    #[serde(borrow, default)]
    level: Option<Str<'a>>,
    #[serde(borrow, default)]
    kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    message: Option<Message<'a>>,
    #[serde(borrow, default)]
    locations: Option<Vec<ResultLocation<'a>>>,
    #[serde(borrow, default)]
    partial_fingerprints: Option<BTreeMap<Str<'a>, FingerprintValue<'a>>>,
    #[serde(borrow, default)]
    fingerprints: Option<BTreeMap<Str<'a>, FingerprintValue<'a>>>,
    #[serde(borrow, default)]
    properties: Option<Properties<'a>>,
    #[serde(borrow, default)]
    suppressions: Option<Vec<Suppression<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleRef<'a> {
    #[serde(borrow, default)]
    id: Option<Str<'a>>,
    #[serde(default)]
    index: Option<i64>,
    #[serde(default)]
    tool_component: Option<ToolComponentRef>,
}

#[derive(Deserialize)]
struct ToolComponentRef {
    #[serde(default)]
    index: Option<i64>,
}

/// Fingerprint values are strings, though some tools write `{"value": ..}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum FingerprintValue<'a> {
    Str(#[serde(borrow)] Str<'a>),
    Wrapped {
        #[serde(borrow)]
        value: Str<'a>,
    },
    Other(serde::de::IgnoredAny),
}

impl FingerprintValue<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            FingerprintValue::Str(s) | FingerprintValue::Wrapped { value: s } => Some(s),
            FingerprintValue::Other(_) => None,
        }
    }
}

#[derive(Deserialize)]
struct Suppression<'a> {
    #[serde(borrow, default)]
    kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    status: Option<Str<'a>>,
    #[serde(borrow, default)]
    justification: Option<Str<'a>>,
}

/// The first suppression in force among a result's, as a disposition: a
/// `rejected` suppression is not one.
fn suppression(list: &[Suppression<'_>]) -> Option<Disposition> {
    let s = list.iter().find(|s| {
        !s.status
            .as_deref()
            .is_some_and(|st| st.trim().eq_ignore_ascii_case("rejected"))
    })?;
    let word = |v: &Option<Str<'_>>| {
        v.as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
    };
    let kind = word(&s.kind).map(|k| match k.as_str() {
        "inSource" => "in_source".to_string(),
        _ => k,
    });
    let status = word(&s.status).map(|st| match st.as_str() {
        "underReview" => "under_review".to_string(),
        _ => st,
    });
    Some(Disposition {
        state: DispositionState::Suppressed,
        kind,
        status,
        justification: word(&s.justification),
    })
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    text: Option<Str<'a>>,
    #[serde(borrow, default)]
    markdown: Option<Str<'a>>,
    #[serde(borrow, default)]
    id: Option<Str<'a>>,
    #[serde(borrow, default)]
    arguments: Option<Vec<Str<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResultLocation<'a> {
    #[serde(borrow, default)]
    physical_location: Option<PhysicalLocation<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PhysicalLocation<'a> {
    #[serde(borrow, default)]
    artifact_location: Option<ArtifactLocation<'a>>,
    #[serde(borrow, default)]
    region: Option<Region<'a>>,
    #[serde(borrow, default)]
    context_region: Option<Region<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactLocation<'a> {
    #[serde(borrow, default)]
    uri: Option<Str<'a>>,
    #[serde(borrow, default)]
    uri_base_id: Option<Str<'a>>,
    #[serde(default)]
    index: Option<i64>,
}

#[derive(Deserialize)]
struct Artifact<'a> {
    #[serde(borrow, default)]
    location: Option<ArtifactLocation<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Region<'a> {
    #[serde(default)]
    start_line: Option<i64>,
    #[serde(default)]
    start_column: Option<i64>,
    #[serde(default)]
    end_line: Option<i64>,
    #[serde(default)]
    end_column: Option<i64>,
    #[serde(borrow, default)]
    snippet: Option<Snippet<'a>>,
}

#[derive(Deserialize)]
struct Snippet<'a> {
    #[serde(borrow, default)]
    text: Option<Str<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Provenance<'a> {
    #[serde(borrow, default)]
    repository_uri: Option<Str<'a>>,
    #[serde(borrow, default)]
    revision_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    branch: Option<Str<'a>>,
}

impl Decoder for SarifDecoder {
    fn format(&self) -> Format {
        Format::Sarif
    }

    fn markers(&self) -> Markers {
        Markers {
            object_keys: &["runs"],
            schema_holds: Some("sarif"),
            ..Markers::default()
        }
    }

    fn decode(&self, bytes: &[u8], ctx: &DecodeContext) -> Result<Report, DecodeError> {
        let mut report = Report::default();
        let mut de = serde_json::Deserializer::from_slice(bytes);
        LogSeed {
            ctx,
            report: &mut report,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| DecodeError::from_json(Format::Sarif, e))?;
        Ok(report)
    }
}

/// The members of a run the decoder reads (see `RunSeed`); everything else
/// in a run (`invocations`, `automationDetails`, `properties`, ...) and
/// everything in the log but `runs` is skipped. Keep in step with
/// `RunSeed::visit_map`.
const RUN_KEYS: [&str; 5] = [
    "tool",
    "results",
    "originalUriBaseIds",
    "artifacts",
    "versionControlProvenance",
];

/// An XXH3-128 digest of what the decoder reads of a SARIF log: each run's
/// [`RUN_KEYS`] members, as they are written, in order. Two logs with the
/// same digest decode to the same report, however their invocations,
/// timestamps and other run metadata differ, so a rescan that only
/// restamps them can be recognized as unchanged. `None` when the bytes are
/// not a SARIF log the decoder would read (the decode then says why).
///
/// It costs a pass of serde_json over the bytes that checks and skips
/// them, and the hash of the members kept: about a quarter of a decode.
pub fn content_digest(bytes: &[u8]) -> Option<[u8; 16]> {
    let mut hasher = Xxh3::new();
    hasher.update(b"custody sarif content v2\0");
    let mut de = serde_json::Deserializer::from_slice(bytes);
    DigestLog {
        hasher: &mut hasher,
    }
    .deserialize(&mut de)
    .and_then(|runs| {
        if runs {
            de.end()
        } else {
            Err(serde_json::Error::missing_field("runs"))
        }
    })
    .ok()?;
    Some(hasher.digest128().to_le_bytes())
}

/// The log object, for [`content_digest`]: true when it had `runs`.
struct DigestLog<'h> {
    hasher: &'h mut Xxh3,
}

impl<'de> DeserializeSeed<'de> for DigestLog<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DigestLog<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a SARIF log object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut runs = false;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            if key == "runs" {
                self.hasher.update(b"runs\0");
                map.next_value_seed(DigestRuns {
                    hasher: &mut *self.hasher,
                })?;
                runs = true;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(runs)
    }
}

struct DigestRuns<'h> {
    hasher: &'h mut Xxh3,
}

impl<'de> DeserializeSeed<'de> for DigestRuns<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for DigestRuns<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of runs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            self.hasher.update(b"run\0");
            let more = seq.next_element_seed(DigestRun {
                hasher: &mut *self.hasher,
            })?;
            if more.is_none() {
                return Ok(());
            }
        }
    }
}

struct DigestRun<'h> {
    hasher: &'h mut Xxh3,
}

impl<'de> DeserializeSeed<'de> for DigestRun<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DigestRun<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a SARIF run object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Str<'de>>()? {
            if RUN_KEYS.contains(&key.as_ref()) {
                let raw: &'de RawValue = map.next_value()?;
                let raw = raw.get().as_bytes();
                self.hasher.update(key.as_bytes());
                self.hasher.update(b"\0");
                self.hasher.update(&(raw.len() as u64).to_le_bytes());
                self.hasher.update(raw);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// The scanner name custody uses for a SARIF driver: lowercase, words
/// joined by `-`, a trailing " OSS" edition dropped (so Semgrep's SARIF and
/// JSON reports name the same scanner).
pub fn scanner_name(driver: &str) -> String {
    let lower = driver.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix(" oss").unwrap_or(&lower);
    let name = lower.split_whitespace().collect::<Vec<_>>().join("-");
    if name.is_empty() {
        "unknown".to_string()
    } else {
        name
    }
}

// Streaming: a report of 100,000 results is never held as 100,000 parsed
// results. Each run is read key by key; once its `tool` is known (every
// producer writes it before `results`), each result becomes a finding as
// soon as it is parsed. A run that lists `results` first keeps them as an
// unparsed slice until the rules arrive. Paths are completed after the run,
// since `originalUriBaseIds` and `artifacts` may follow the results.

/// The log object: only `runs` is read.
struct LogSeed<'c> {
    ctx: &'c DecodeContext,
    report: &'c mut Report,
}

impl<'de> DeserializeSeed<'de> for LogSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LogSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a SARIF log object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut runs = false;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            if key == "runs" {
                map.next_value_seed(RunsSeed {
                    ctx: self.ctx,
                    report: &mut *self.report,
                })?;
                runs = true;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if runs {
            Ok(())
        } else {
            Err(A::Error::missing_field("runs"))
        }
    }
}

struct RunsSeed<'c> {
    ctx: &'c DecodeContext,
    report: &'c mut Report,
}

impl<'de> DeserializeSeed<'de> for RunsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RunsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of runs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut n = 0;
        while seq
            .next_element_seed(RunSeed {
                ctx: self.ctx,
                report: &mut *self.report,
                n,
            })?
            .is_some()
        {
            n += 1;
        }
        Ok(())
    }
}

struct RunSeed<'c> {
    ctx: &'c DecodeContext,
    report: &'c mut Report,
    n: usize,
}

impl<'de> DeserializeSeed<'de> for RunSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

/// A path that can only be completed once the whole run is read.
struct Fixup {
    /// Index of the finding in the report.
    finding: usize,
    /// Index into the run's distinct `uriBaseId`s.
    base: Option<usize>,
    /// The artifact the location points to, when it gives no URI.
    artifact: Option<usize>,
}

/// What converting a run's results needs and collects: what converting
/// one result reads ([`RunRules`]), and what the results add to, in their
/// order ([`RunBooks`]).
struct RunState<'r, 'de> {
    rules: RunRules<'r, 'de>,
    books: RunBooks,
}

/// What converting one result reads, never changed by it: a large run's
/// results are converted on another thread while this one parses.
struct RunRules<'r, 'de> {
    ctx: &'r DecodeContext,
    scanner: String,
    category: Category,
    tool: Tool<'de>,
    by_id: HashMap<String, (usize, usize)>,
    /// Per component and rule: title and help link, shared by its findings.
    meta: Vec<Vec<RuleMeta>>,
    n: usize,
    /// Whether its rules' `help` describes one result rather than the
    /// rule: Checkov writes its first result's resource there.
    help_of_a_result: bool,
}

/// What a run's results add to, one after the other in their order.
#[derive(Default)]
struct RunBooks {
    /// Distinct severity sources, shared by the findings that give them.
    sources: HashMap<String, Arc<str>>,
    base_ids: Vec<String>,
    fixups: Vec<Fixup>,
    /// Per component and rule: whether its help was taken (once per rule,
    /// not looked up per result).
    helped: Vec<Vec<bool>>,
}

/// One result converted, before it takes its place in the report.
// Nearly every result is a finding: boxing it would allocate once per
// result to spare moving a skipped one's few bytes.
#[allow(clippy::large_enum_variant)]
enum Converted {
    /// Not a failure (its `kind`): recorded as skipped.
    Skipped(String),
    /// A finding, with where its severity came from, the `uriBaseId` its
    /// path is relative to, the artifact its location points to, and its
    /// rule (component and index).
    Finding {
        finding: Finding,
        source: String,
        base: Option<String>,
        artifact: Option<usize>,
        at: Option<(usize, usize)>,
    },
}

impl<'r, 'de> RunState<'r, 'de> {
    fn new(tool: Tool<'de>, ctx: &'r DecodeContext, n: usize) -> RunState<'r, 'de> {
        let driver_name = tool.driver.name.as_deref().unwrap_or("");
        let mut rules = RunRules {
            ctx,
            scanner: scanner_name(driver_name),
            category: category_for_tool(driver_name),
            by_id: HashMap::new(),
            meta: Vec::new(),
            n,
            help_of_a_result: scanner_name(driver_name) == "checkov",
            tool,
        };
        let mut by_id = HashMap::new();
        let mut meta = Vec::new();
        for c in 0..=rules.tool.extensions.as_ref().map_or(0, Vec::len) {
            let component = rules.component(c);
            for (i, r) in component.iter().enumerate() {
                if let Some(id) = r.id.as_deref() {
                    by_id.entry(id.to_string()).or_insert((c, i));
                }
            }
            meta.push(component.iter().map(RuleMeta::of).collect());
        }
        let books = RunBooks {
            helped: meta.iter().map(|m: &Vec<RuleMeta>| vec![false; m.len()]).collect(),
            ..RunBooks::default()
        };
        rules.by_id = by_id;
        rules.meta = meta;
        RunState { rules, books }
    }

    /// Converts one result (or records why it is skipped).
    fn push(&mut self, i: usize, res: &SarifResult<'_>, report: &mut Report) {
        let converted = self.rules.convert(res);
        self.books.take(&self.rules, i, converted, report);
    }
}

impl<'de> RunRules<'_, 'de> {
    /// The rules of the driver (component 0) or of extension `c - 1`.
    fn component(&self, c: usize) -> &[Rule<'de>] {
        let comp = match c {
            0 => Some(&self.tool.driver),
            c => self.tool.extensions.as_ref().and_then(|e| e.get(c - 1)),
        };
        comp.and_then(|c| c.rules.as_deref()).unwrap_or(&[])
    }

    /// The rule a result refers to (component and index): by index (in the
    /// driver or the named extension), else by id.
    fn rule(&self, res: &SarifResult<'_>) -> Option<(usize, usize)> {
        let comp = res
            .rule
            .as_ref()
            .and_then(|r| r.tool_component.as_ref())
            .and_then(|t| t.index)
            .map_or(0, |i| {
                usize::try_from(i).map_or(usize::MAX, |i| i.saturating_add(1))
            });
        let index = res
            .rule
            .as_ref()
            .and_then(|r| r.index)
            .or(res.rule_index)
            .and_then(|i| usize::try_from(i).ok());
        if let Some(i) = index.filter(|&i| i < self.component(comp).len()) {
            return Some((comp, i));
        }
        let id = res
            .rule_id
            .as_deref()
            .or_else(|| res.rule.as_ref()?.id.as_deref())?;
        self.by_id.get(id).copied()
    }

    /// Converts one result on its own: what does not depend on the
    /// results before it.
    fn convert(&self, res: &SarifResult<'_>) -> Converted {
        let kind = res.kind.as_deref().unwrap_or("fail");
        if matches!(kind, "pass" | "notApplicable" | "informational") {
            return Converted::Skipped(kind.to_string());
        }
        let at = self.rule(res);
        let rule = at.and_then(|(c, i)| self.component(c).get(i));
        let meta = at.and_then(|(c, i)| self.meta.get(c)?.get(i));
        let (mut finding, source, base, artifact) =
            to_finding(res, rule, meta, &self.scanner, self.category, self.ctx);
        finding.disposition = res
            .suppressions
            .as_deref()
            .and_then(suppression)
            .map(Box::new);
        Converted::Finding {
            finding,
            source,
            base: base.map(str::to_string),
            artifact,
            at,
        }
    }
}

impl RunBooks {
    /// Places result `i`, converted, in the report: what depends on the
    /// results before it (the rule's help taken by its first result,
    /// shared severity sources, paths to complete after the run).
    fn take(&mut self, rules: &RunRules<'_, '_>, i: usize, c: Converted, report: &mut Report) {
        let (mut f, source, base, artifact, at) = match c {
            Converted::Skipped(kind) => {
                report
                    .skipped
                    .push(format!("run {} result {i}: kind {kind}", rules.n));
                return;
            }
            Converted::Finding {
                finding,
                source,
                base,
                artifact,
                at,
            } => (finding, source, base, artifact, at),
        };
        // The rule's first result takes its help.
        let first = at
            .and_then(|(c, i)| self.helped.get_mut(c)?.get_mut(i))
            .is_some_and(|taken| !std::mem::replace(taken, true));
        let rule = at.and_then(|(c, i)| rules.component(c).get(i));
        if let Some(text) = rule
            .filter(|_| first)
            .and_then(|r| help_text(r, rules.help_of_a_result))
        {
            report.rule_help.insert(&f.rule_id, text);
        }
        let shared = match self.sources.get(&source) {
            Some(s) => Arc::clone(s),
            None => {
                let s: Arc<str> = source.as_str().into();
                self.sources.insert(source, Arc::clone(&s));
                s
            }
        };
        f.severity_source = Some(shared);
        let base = base.map(|b| match self.base_ids.iter().position(|x| *x == b) {
            Some(p) => p,
            None => {
                self.base_ids.push(b);
                self.base_ids.len() - 1
            }
        });
        if base.is_some() || artifact.is_some() {
            self.fixups.push(Fixup {
                finding: report.findings.len(),
                base,
                artifact,
            });
        }
        report.findings.push(f);
    }
}

/// Results parsed before a run's results are converted on a thread of
/// their own: a run of fewer is converted as it is parsed.
const PIPELINE_BATCH: usize = 1024;

struct ResultsSeed<'a, 'r, 'de> {
    run: &'a mut RunState<'r, 'de>,
    report: &'a mut Report,
}

impl<'de2> DeserializeSeed<'de2> for ResultsSeed<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de2>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de2> Visitor<'de2> for ResultsSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of results")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de2>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }

    /// A run of more than [`PIPELINE_BATCH`] results is parsed here and
    /// converted on another thread, batch by batch, the converted batches
    /// taken back in order: the report is the same as converted in line.
    fn visit_seq<A: SeqAccess<'de2>>(self, mut seq: A) -> Result<(), A::Error> {
        use std::sync::mpsc::sync_channel;
        let ResultsSeed { run, report } = self;
        let mut batch = Vec::new();
        while batch.len() < PIPELINE_BATCH {
            match seq.next_element::<SarifResult<'de2>>()? {
                Some(res) => batch.push(res),
                None => {
                    for (i, res) in batch.iter().enumerate() {
                        run.push(i, res, report);
                    }
                    return Ok(());
                }
            }
        }
        let RunState { rules, books } = run;
        let rules = &*rules;
        std::thread::scope(|s| {
            // At most two batches away: one converting, one waiting.
            let (to_convert, batches) = sync_channel::<Vec<SarifResult<'de2>>>(2);
            let (converted, back) = sync_channel::<Vec<Converted>>(2);
            s.spawn(move || {
                for batch in batches {
                    let out: Vec<Converted> = batch.iter().map(|r| rules.convert(r)).collect();
                    drop(batch);
                    if converted.send(out).is_err() {
                        return;
                    }
                }
            });
            let lost = || A::Error::custom("the thread converting SARIF results stopped");
            let mut i = 0;
            let mut away = 0usize;
            let mut ended = false;
            loop {
                if !batch.is_empty() {
                    to_convert.send(batch).map_err(|_| lost())?;
                    away += 1;
                }
                // Parse the next batch while the last one converts.
                batch = Vec::with_capacity(PIPELINE_BATCH);
                while !ended && batch.len() < PIPELINE_BATCH {
                    match seq.next_element::<SarifResult<'de2>>()? {
                        Some(res) => batch.push(res),
                        None => ended = true,
                    }
                }
                let keep_away = usize::from(!ended || !batch.is_empty());
                while away > keep_away {
                    for c in back.recv().map_err(|_| lost())? {
                        books.take(rules, i, c, report);
                        i += 1;
                    }
                    away -= 1;
                }
                if ended && batch.is_empty() && away == 0 {
                    return Ok(());
                }
            }
        })
    }
}

impl<'de> Visitor<'de> for RunSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a SARIF run object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let RunSeed { ctx, report, n } = self;
        let mut run: Option<RunState<'_, 'de>> = None;
        let mut bases: Option<HashMap<Str<'de>, ArtifactLocation<'de>>> = None;
        let mut artifacts: Option<Vec<Artifact<'de>>> = None;
        let mut provenance: Option<Vec<Provenance<'de>>> = None;
        let mut deferred: Option<&'de RawValue> = None;
        // The members read here are RUN_KEYS (content_digest hashes them).
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match key.as_ref() {
                "tool" => {
                    if run.is_some() {
                        return Err(A::Error::duplicate_field("tool"));
                    }
                    run = Some(RunState::new(map.next_value()?, ctx, n));
                }
                "results" => match run.as_mut() {
                    Some(state) => map.next_value_seed(ResultsSeed {
                        run: state,
                        report: &mut *report,
                    })?,
                    None => deferred = map.next_value()?,
                },
                "originalUriBaseIds" => bases = map.next_value()?,
                "artifacts" => artifacts = map.next_value()?,
                "versionControlProvenance" => provenance = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let Some(mut run) = run else {
            return Err(A::Error::missing_field("tool"));
        };
        if let Some(raw) = deferred {
            let mut de = serde_json::Deserializer::from_str(raw.get());
            ResultsSeed {
                run: &mut run,
                report: &mut *report,
            }
            .deserialize(&mut de)
            .map_err(A::Error::custom)?;
        }
        report.coverage.insert((run.rules.scanner.clone(), run.rules.category));
        if let Some(p) = provenance.as_ref().and_then(|v| v.first()) {
            if report.target.is_none() {
                report.target = p
                    .repository_uri
                    .as_deref()
                    .and_then(|u| Target::new(TargetKind::Repo, u).ok());
            }
            if report.commit.is_none() {
                report.commit = p.revision_id.as_deref().map(str::to_string);
            }
            if report.git_ref.is_none() {
                report.git_ref = p.branch.as_deref().map(str::to_string);
            }
        }
        complete_paths(
            &run,
            bases.as_ref(),
            artifacts.as_deref().unwrap_or(&[]),
            report,
        );
        Ok(())
    }
}

/// Completes paths relative to `originalUriBaseIds` and from `artifacts`.
fn complete_paths(
    run: &RunState<'_, '_>,
    bases: Option<&HashMap<Str<'_>, ArtifactLocation<'_>>>,
    artifacts: &[Artifact<'_>],
    report: &mut Report,
) {
    let base_uri = |id: &str| bases?.get(id)?.uri.as_deref();
    for fix in &run.books.fixups {
        let Some(f) = report.findings.get_mut(fix.finding) else {
            continue;
        };
        if let Some(a) = fix.artifact {
            let loc = artifacts.get(a).and_then(|a| a.location.as_ref());
            let uri = loc.and_then(|l| l.uri.as_deref());
            let base = loc
                .and_then(|l| l.uri_base_id.as_deref())
                .and_then(base_uri);
            match (uri, f.location.as_mut()) {
                (Some(uri), Some(l)) => l.path = clean_path(uri, base),
                _ => f.location = None,
            }
        }
        let base = fix
            .base
            .and_then(|b| run.books.base_ids.get(b))
            .and_then(|id| base_uri(id));
        if let (Some(base), Some(l)) = (base, f.location.as_mut()) {
            l.path = strip_base(&l.path, base);
        }
    }
}

/// A rule's title and help link, made once and shared by its findings.
struct RuleMeta {
    title: Option<Arc<str>>,
    help_uri: Option<Arc<str>>,
    /// CWE ids from the rule's properties.
    cwe: Vec<String>,
}

impl RuleMeta {
    fn of(r: &Rule<'_>) -> RuleMeta {
        RuleMeta {
            title: r
                .short_description
                .as_ref()
                .and_then(|m| m.text.as_deref())
                .or(r.name.as_deref())
                .map(|t| t.trim().into()),
            help_uri: r.help_uri.as_deref().map(Into::into),
            cwe: cwes(r.properties.as_ref()),
        }
    }
}

/// Converts a result; also returns where its severity came from, the
/// `uriBaseId` its path is relative to and the artifact index when the
/// location names no URI, for [`complete_paths`].
fn to_finding<'r>(
    res: &'r SarifResult<'_>,
    rule: Option<&Rule<'_>>,
    meta: Option<&RuleMeta>,
    scanner: &str,
    category: Category,
    ctx: &DecodeContext,
) -> (Finding, String, Option<&'r str>, Option<usize>) {
    let rule_id = res
        .rule_id
        .as_deref()
        .or_else(|| res.rule.as_ref()?.id.as_deref())
        .or_else(|| rule?.id.as_deref())
        .unwrap_or("unknown");
    let rprops = rule.and_then(|r| r.properties.as_ref());
    let props = res.properties.as_ref();
    let (severity, source) = severity(res, rule, props, rprops);
    let message = message_text(res.message.as_ref(), rule)
        .or_else(|| {
            rule?
                .short_description
                .as_ref()
                .and_then(|m| m.text.as_deref())
                .map(str::to_string)
        })
        .unwrap_or_else(|| rule_id.to_string());

    let mut f = Finding::new(scanner, category, rule_id, severity, message);
    f.title = meta.and_then(|m| m.title.clone());
    f.help_uri = meta.and_then(|m| m.help_uri.clone());
    // The result's own CWE ids, then its rule's (read once per rule).
    f.cwe = cwes(props);
    for id in meta.map_or(&[][..], |m| m.cwe.as_slice()) {
        if !f.cwe.contains(id) {
            f.cwe.push(id.clone());
        }
    }

    let phys = res
        .locations
        .as_ref()
        .and_then(|l| l.first())
        .and_then(|l| l.physical_location.as_ref());
    let mut line_text: Option<String> = None;
    let mut base_id = None;
    let mut artifact = None;
    if let Some(p) = phys {
        let art = p.artifact_location.as_ref();
        let uri = art.and_then(|a| a.uri.as_deref());
        if uri.is_none() {
            artifact = art.and_then(|a| usize::try_from(a.index?).ok());
        }
        if uri.is_some() || artifact.is_some() {
            base_id = art
                .and_then(|a| a.uri_base_id.as_deref())
                .filter(|_| uri.is_some());
            let region = p.region.as_ref();
            let line = |v: Option<i64>| v.and_then(|n| u32::try_from(n).ok());
            f.location = Some(Location {
                path: uri.map(|u| clean_path(u, None)).unwrap_or_default(),
                start_line: line(region.and_then(|r| r.start_line)),
                start_column: line(region.and_then(|r| r.start_column)),
                end_line: line(region.and_then(|r| r.end_line)),
                end_column: line(region.and_then(|r| r.end_column)),
            });
            line_text = snippet_line(p);
            if let Some(s) = region.and_then(|r| r.snippet.as_ref()?.text.as_deref()) {
                f.evidence.snippet = Some(s.trim_end().to_string());
            }
        }
    }

    f.tool_fingerprint = tool_fingerprint(res);
    let published_line = (category != Category::Secret)
        .then(|| published_line_hash(res))
        .flatten();
    if category == Category::Secret {
        let secret = props
            .and_then(|p| p.secret.as_ref().or(p.offender.as_ref()))
            .and_then(Scalar::as_str)
            .filter(|s| !s.is_empty());
        if let Some(secret) = secret {
            f.evidence.secret_hash = Some(secret_hash(&ctx.secret_salt, secret));
            if f.message.contains(secret) {
                f.message = f.message.replace(secret, "[REDACTED]");
            }
        }
    }
    set_line_content(&mut f, line_text.as_deref(), &ctx.secret_salt);
    // The checkout's line, hashed by the publisher, over the snippet's (as
    // `process --source` prefers the checkout too).
    if let Some(h) = published_line {
        f.content_hash = Some(h);
    }
    (f, source, base_id, artifact)
}

/// The `partialFingerprints` key under which `custody publish --source`
/// writes the hash of a result's flagged line ([`fingerprint::line_hash`]
/// of the line at the result's start, whitespace-normalized; no line
/// number, so it holds while the line moves).
pub const LINE_HASH_KEY: &str = "custodyLineHash/v1";

/// The line hash a publisher wrote into a result, when it is one: hex
/// digits, at most 64. Anything else under the key is ignored.
fn published_line_hash(res: &SarifResult<'_>) -> Option<String> {
    let v = res
        .partial_fingerprints
        .as_ref()?
        .get(LINE_HASH_KEY)?
        .as_str()?;
    let ok = !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| v.to_ascii_lowercase())
}

/// The source line at the result's start: the region snippet's first line,
/// or the matching line of the context region's snippet.
fn snippet_line(p: &PhysicalLocation<'_>) -> Option<String> {
    if let Some(text) = p
        .region
        .as_ref()
        .and_then(|r| r.snippet.as_ref()?.text.as_deref())
    {
        return text.lines().next().map(str::to_string);
    }
    let ctx = p.context_region.as_ref()?;
    let text = ctx.snippet.as_ref()?.text.as_deref()?;
    let start = p.region.as_ref()?.start_line?;
    let offset = usize::try_from(start.checked_sub(ctx.start_line?)?).ok()?;
    text.lines().nth(offset).map(str::to_string)
}

/// The tool's fingerprint, if it has a real one: `fingerprints` before
/// `partialFingerprints`, known stable keys first, then the first key.
fn tool_fingerprint(res: &SarifResult<'_>) -> Option<String> {
    const PREFERRED: [&str; 4] = [
        "primaryLocationLineHash",
        "matchBasedId/v1",
        "contextHash/v1",
        "primaryLocationStartColumnFingerprint",
    ];
    for map in [&res.fingerprints, &res.partial_fingerprints]
        .into_iter()
        .flatten()
    {
        let real = |k: &str| {
            map.get(k)
                .and_then(FingerprintValue::as_str)
                .filter(|v| !fingerprint::is_placeholder(v))
        };
        if let Some((k, v)) = PREFERRED.iter().find_map(|k| Some((*k, real(k)?))) {
            return Some(format!("{k}={v}"));
        }
        if let Some((k, v)) = map
            .keys()
            .filter(|k| k.as_ref() != LINE_HASH_KEY)
            .find_map(|k| Some((k.as_ref(), real(k)?)))
        {
            return Some(format!("{k}={v}"));
        }
    }
    None
}

fn severity(
    res: &SarifResult<'_>,
    rule: Option<&Rule<'_>>,
    props: Option<&Properties<'_>>,
    rprops: Option<&Properties<'_>>,
) -> (Severity, String) {
    for p in [props, rprops].into_iter().flatten() {
        if let Some(score) = p.security_severity.as_ref().and_then(Scalar::as_f64) {
            return (
                Severity::from_cvss(score),
                format!("security-severity:{score}"),
            );
        }
    }
    for p in [props, rprops].into_iter().flatten() {
        for (name, v) in [
            ("issue_severity", &p.issue_severity),
            ("severity", &p.severity),
            ("securityRisk", &p.security_risk),
        ] {
            if let Some(label) = v.as_ref().and_then(Scalar::as_str) {
                if let Some(s) = Severity::from_label(label) {
                    return (s, format!("{name}:{label}"));
                }
            }
        }
    }
    let level = res
        .level
        .as_deref()
        .or_else(|| rule?.default_configuration.as_ref()?.level.as_deref())
        .unwrap_or("warning");
    let sev = Severity::from_label(level).unwrap_or(Severity::Medium);
    (sev, format!("level:{level}"))
}

/// A rule's help for a ticket: the longest of its `help` and its
/// `fullDescription` (tools put their documentation in either: Ruff's
/// `help` is one line and its `fullDescription` the whole page), as plain
/// text, else as Markdown (tickets escape it either way).
/// With `result_help`, the rule's `help` describes a result, not the rule,
/// and is left out.
fn help_text<'r>(r: &'r Rule<'_>, result_help: bool) -> Option<&'r str> {
    let text = |m: Option<&'r Message<'_>>| {
        let m = m?;
        m.text.as_deref().or(m.markdown.as_deref())
    };
    let help = if result_help {
        None
    } else {
        text(r.help.as_ref())
    };
    [help, text(r.full_description.as_ref())]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .max_by_key(|t| t.len())
}

/// The result message: text, else markdown, else the rule's message string
/// named by `id`, with `{0}`-style placeholders filled from `arguments`.
fn message_text(m: Option<&Message<'_>>, rule: Option<&Rule<'_>>) -> Option<String> {
    let m = m?;
    let template = m.text.as_deref().or(m.markdown.as_deref()).or_else(|| {
        let id = m.id.as_deref()?;
        let strings = rule?.message_strings.as_ref()?;
        let s = strings.get(id)?;
        s.text.as_deref().or(s.markdown.as_deref())
    })?;
    let args = m.arguments.as_deref().unwrap_or(&[]);
    if args.is_empty() || !template.contains('{') {
        return Some(template.to_string());
    }
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after
            .find('}')
            .map(|close| (close, after[..close].parse::<usize>()))
        {
            Some((close, Ok(n))) if n < args.len() => {
                out.push_str(&args[n]);
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Some(out)
}

/// CWE ids from a `cwe` property or CodeQL-style tags (`external/cwe/cwe-079`).
fn cwes(props: Option<&Properties<'_>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |raw: &str| {
        let raw = raw.trim();
        let tail = raw.rsplit('/').next().unwrap_or(raw);
        let cwe = tail
            .get(..4)
            .filter(|p| p.eq_ignore_ascii_case("cwe-") || p.eq_ignore_ascii_case("cwe:"));
        if cwe.is_some() {
            let num = &tail[4..];
            let len = num.bytes().take_while(u8::is_ascii_digit).count();
            if let Ok(n) = num[..len].parse::<u32>() {
                let id = format!("CWE-{n}");
                if !out.contains(&id) {
                    out.push(id);
                }
            }
        }
    };
    if let Some(p) = props {
        match &p.cwe {
            Some(OneOrMany::One(s)) => {
                if let Some(s) = s.as_str() {
                    push(s);
                } else if let Some(n) = s.as_f64() {
                    push(&format!("cwe-{n}"));
                }
            }
            Some(OneOrMany::Many(v)) => v.iter().filter_map(Scalar::as_str).for_each(&mut push),
            None => {}
        }
        for t in p.tags.iter().flatten().filter_map(Scalar::as_str) {
            push(t);
        }
    }
    out
}

/// What [`add_line_hashes`] did to a SARIF log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineHashes {
    /// Results that name a file and a start line.
    pub located: usize,
    /// Results given a line hash (their line was found, and not blank).
    pub hashed: usize,
    /// Results of secret scanners, left without one.
    pub secret: usize,
}

/// Writes into every result of a SARIF log the hash of its flagged line
/// under `partialFingerprints.`[`LINE_HASH_KEY`] (see the module's notes):
/// `line(path, n)` gives line `n` (1-based) of `path` as the decoder will
/// name the path (relative to `originalUriBaseIds`, from `artifacts`),
/// or `None` when it cannot be read. A hash already there is replaced;
/// nothing else of the log changes in meaning (its members may come out in
/// another order, and without the original whitespace).
pub fn add_line_hashes(
    bytes: &[u8],
    line: &mut dyn FnMut(&str, u32) -> Option<String>,
) -> Result<(Vec<u8>, LineHashes), DecodeError> {
    use serde_json::Value;
    let shape = |detail: &str| DecodeError::Shape {
        format: Format::Sarif,
        detail: detail.to_string(),
    };
    let mut log: Value =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::from_json(Format::Sarif, e))?;
    let runs = log
        .get_mut("runs")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| shape("`runs` is not a list of runs"))?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let mut did = LineHashes::default();
    for run in runs.iter_mut().filter_map(Value::as_object_mut) {
        let driver = run
            .get("tool")
            .and_then(|t| t.get("driver"))
            .and_then(|d| d.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let secret = category_for_tool(driver) == Category::Secret;
        let bases: HashMap<String, String> = run
            .get("originalUriBaseIds")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), text(v.get("uri"))?)))
                    .collect()
            })
            .unwrap_or_default();
        let base_uri = |id: Option<String>| id.and_then(|id| bases.get(&id).cloned());
        // Each artifact's path, as `complete_paths` completes it.
        let artifacts: Vec<Option<String>> = run
            .get("artifacts")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|a| {
                        let loc = a.get("location")?;
                        let uri = text(loc.get("uri"))?;
                        let base = base_uri(text(loc.get("uriBaseId")));
                        Some(clean_path(&uri, base.as_deref()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let Some(results) = run.get_mut("results").and_then(Value::as_array_mut) else {
            continue;
        };
        for res in results.iter_mut().filter_map(Value::as_object_mut) {
            let kind = res.get("kind").and_then(Value::as_str).unwrap_or("fail");
            if matches!(kind, "pass" | "notApplicable" | "informational") {
                continue;
            }
            let phys = res
                .get("locations")
                .and_then(|l| l.get(0))
                .and_then(|l| l.get("physicalLocation"));
            let art = phys.and_then(|p| p.get("artifactLocation"));
            let path = match text(art.and_then(|a| a.get("uri"))) {
                Some(uri) => {
                    let path = clean_path(&uri, None);
                    match base_uri(text(art.and_then(|a| a.get("uriBaseId")))) {
                        Some(base) => strip_base(&path, &base),
                        None => path,
                    }
                }
                None => {
                    let index = art
                        .and_then(|a| a.get("index"))
                        .and_then(Value::as_u64)
                        .and_then(|i| usize::try_from(i).ok());
                    match index.and_then(|i| artifacts.get(i)).cloned().flatten() {
                        Some(p) => p,
                        None => continue,
                    }
                }
            };
            let start = phys
                .and_then(|p| p.get("region"))
                .and_then(|r| r.get("startLine"))
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok());
            let Some(start) = start else { continue };
            did.located += 1;
            if secret {
                did.secret += 1;
                continue;
            }
            let Some(content) = line(&path, start).filter(|l| !l.trim().is_empty()) else {
                continue;
            };
            let hash = Value::String(fingerprint::line_hash(&content));
            let partial = res
                .entry("partialFingerprints")
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            if let Some(partial) = partial.as_object_mut() {
                partial.insert(LINE_HASH_KEY.to_string(), hash);
                did.hashed += 1;
            }
        }
    }
    let out = serde_json::to_vec(&log).map_err(|e| shape(&e.to_string()))?;
    Ok((out, did))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report of the shared corpus; `None` (the test skips) without it.
    fn corpus(name: &str) -> Option<Vec<u8>> {
        crate::testing::shared_bytes(&format!("scans/sarif/{name}"), name)
    }

    #[test]
    fn a_rules_help_is_its_longest_description_but_checkovs_result_help() {
        let rules = |help: &str, full: &str| {
            format!(
                r#"{{"version":"2.1.0","runs":[{{"tool":{{"driver":{{"name":"DRIVER","rules":[{{"id":"R1","help":{{"text":"{help}"}},"fullDescription":{{"text":"{full}"}}}}]}}}},"results":[{{"ruleId":"R1","message":{{"text":"m"}},"locations":[{{"physicalLocation":{{"artifactLocation":{{"uri":"a.py"}},"region":{{"startLine":1}}}}}}]}}]}}]}}"#
            )
        };
        let table = [
            ("ruff", "Use of x", r"## What it does\nChecks x.", Some("## What it does\nChecks x.")),
            ("semgrep", "Same text.", "Same text.", Some("Same text.")),
            ("tool", "The long help of the rule.", "Short.", Some("The long help of the rule.")),
            ("tool", "", "", None),
            ("Checkov", r"Memory requests\nResource: Deployment.a", "Memory requests", Some("Memory requests")),
        ];
        for (driver, help, full, want) in table {
            let r = decode(rules(help, full).replace("DRIVER", driver).as_bytes()).unwrap();
            assert_eq!(r.rule_help.get("R1").map(|h| &**h), want, "{driver}");
        }
    }

    fn decode(bytes: &[u8]) -> Result<Report, DecodeError> {
        crate::testing::decode_with(&SarifDecoder, bytes)
    }

    /// A run of `n` results from `from`, each with its own message: every
    /// seventh passes, rules alternate (each with help), paths are
    /// relative to a base id or given by an artifact.
    fn numbered_run(from: usize, n: usize) -> String {
        let results: Vec<String> = (from..from + n)
            .map(|i| {
                let kind = if i % 7 == 0 { "pass" } else { "fail" };
                let location = if i % 2 == 0 {
                    r#"{"uri":"a/f.py","uriBaseId":"SRC"}"#.to_string()
                } else {
                    format!(r#"{{"index":{}}}"#, i % 3)
                };
                format!(
                    r#"{{"ruleId":"R{}","kind":"{kind}","message":{{"text":"m{i}"}},"locations":[{{"physicalLocation":{{"artifactLocation":{location},"region":{{"startLine":{},"snippet":{{"text":"x = {i}"}}}}}}}}]}}"#,
                    i % 5,
                    1 + i % 40
                )
            })
            .collect();
        let rules: Vec<String> = (0..5)
            .map(|r| format!(r#"{{"id":"R{r}","help":{{"text":"help of R{r}"}}}}"#))
            .collect();
        format!(
            r#"{{"tool":{{"driver":{{"name":"Semgrep","rules":[{}]}}}},"originalUriBaseIds":{{"SRC":{{"uri":"file:///src/"}}}},"artifacts":[{{"location":{{"uri":"file:///src/b/0.py"}}}},{{"location":{{"uri":"file:///src/b/1.py"}}}},{{"location":{{"uri":"file:///src/b/2.py"}}}}],"results":[{}]}}"#,
            rules.join(","),
            results.join(",")
        )
    }

    /// A run too large to convert as it is parsed (its results converted
    /// on another thread, batch by batch) gives the findings, in the same
    /// order, that the same results give in runs small enough to be
    /// converted in line; and the same skipped results and rule help.
    #[test]
    fn a_large_run_decodes_as_small_runs_do() {
        let n = PIPELINE_BATCH * 3 + 17;
        let whole = format!(r#"{{"version":"2.1.0","runs":[{}]}}"#, numbered_run(0, n));
        let whole = decode(whole.as_bytes()).unwrap();
        let mut parts = Vec::new();
        let mut skipped = 0;
        let mut from = 0;
        while from < n {
            let len = (n - from).min(PIPELINE_BATCH - 1);
            let run = format!(r#"{{"version":"2.1.0","runs":[{}]}}"#, numbered_run(from, len));
            let r = decode(run.as_bytes()).unwrap();
            skipped += r.skipped.len();
            parts.extend(r.findings);
            from += len;
        }
        assert_eq!(whole.findings.len(), n - n.div_ceil(7));
        assert_eq!(whole.findings, parts);
        assert_eq!(whole.skipped.len(), skipped);
        assert_eq!(whole.skipped[1], "run 0 result 7: kind pass");
        let messages: Vec<&str> = whole.findings.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(&messages[..3], ["m1", "m2", "m3"]);
        assert_eq!(whole.findings[1].path(), Some("a/f.py"));
        assert_eq!(whole.findings[2].path(), Some("/src/b/0.py"));
        assert_eq!(whole.rule_help.get("R3").map(|h| &**h), Some("help of R3"));
    }

    /// A run whose results cannot be parsed past its first batches is
    /// refused, as a small one is, while its results are converted.
    #[test]
    fn a_large_run_broken_after_its_first_batches_is_refused() {
        let run = numbered_run(0, PIPELINE_BATCH * 2 + 5);
        let broken = format!(
            r#"{{"version":"2.1.0","runs":[{}"#,
            &run[..run.len() - 40]
        );
        assert!(decode(broken.as_bytes()).is_err());
        let wrong = format!(
            r#"{{"version":"2.1.0","runs":[{}]}}"#,
            run.replacen(r#""message":{"text":"m2000"}"#, r#""message":7"#, 1)
        );
        assert!(decode(wrong.as_bytes()).is_err());
    }

    fn ruff_fixture() -> Vec<u8> {
        crate::testing::fixture("ruff/ruff-werkzeug-3.1.0.sarif")
    }

    /// A stand-in checkout: every line of every file is the same text
    /// but for its file and a label that does not depend on the line
    /// number, so moving a result keeps its line.
    fn source_line(path: &str, n: u32) -> Option<String> {
        Some(format!("  assert {path}  # {}", n % 3))
    }

    fn fingerprints(bytes: &[u8]) -> Vec<String> {
        let r = decode(bytes).unwrap();
        let t: Target = "repo:github.com/pallets/werkzeug".parse().unwrap();
        let mut fps: Vec<String> = fingerprint::assign(r.findings, &t)
            .into_iter()
            .map(|p| p.0)
            .collect();
        fps.sort();
        fps
    }

    /// Ruff's SARIF has no snippets: its findings are fingerprinted by
    /// message until a publisher writes line hashes in; then each finding
    /// carries the hash `process --source` would compute from the same
    /// line, and the key is not taken for a tool fingerprint.
    #[test]
    fn line_hashes_give_snippetless_results_their_line() {
        let bytes = ruff_fixture();
        let plain = decode(&bytes).unwrap();
        assert!(!plain.findings.is_empty());
        assert!(plain.findings.iter().all(fingerprint::by_message));
        let (annotated, did) = add_line_hashes(&bytes, &mut |p, n| source_line(p, n)).unwrap();
        assert_eq!(did.located, plain.findings.len());
        assert_eq!(did.hashed, did.located);
        let hashed = decode(&annotated).unwrap();
        assert_eq!(hashed.findings.len(), plain.findings.len());
        for f in &hashed.findings {
            let line = source_line(f.path().unwrap(), f.start_line().unwrap()).unwrap();
            assert_eq!(f.content_hash, Some(fingerprint::line_hash(&line)));
            assert_eq!(f.tool_fingerprint, None);
            assert!(!fingerprint::by_message(f));
        }
        assert_ne!(fingerprints(&bytes), fingerprints(&annotated));
    }

    /// The hash is of the line's content: results moved down by three
    /// lines (the stand-in checkout's lines repeat every three) keep
    /// their fingerprints, and a result whose line was rewritten does not.
    #[test]
    fn line_hashes_survive_moves_and_notice_rewrites() {
        let bytes = ruff_fixture();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let mut log: serde_json::Value = serde_json::from_str(&text).unwrap();
        for res in log["runs"][0]["results"].as_array_mut().unwrap() {
            let region = &mut res["locations"][0]["physicalLocation"]["region"];
            for key in ["startLine", "endLine"] {
                if let Some(n) = region[key].as_u64() {
                    region[key] = (n + 3).into();
                }
            }
        }
        let moved = serde_json::to_vec(&log).unwrap();
        let (a, _) = add_line_hashes(&bytes, &mut |p, n| source_line(p, n)).unwrap();
        let (b, _) = add_line_hashes(&moved, &mut |p, n| source_line(p, n)).unwrap();
        assert_eq!(fingerprints(&a), fingerprints(&b));
        let first = decode(&bytes).unwrap().findings[0].clone();
        let (p0, l0) = (first.path().unwrap().to_string(), first.start_line().unwrap());
        let mut rewritten = |p: &str, n: u32| {
            if p == p0 && n == l0 {
                Some("assert something_else".to_string())
            } else {
                source_line(p, n)
            }
        };
        let (c, _) = add_line_hashes(&bytes, &mut rewritten).unwrap();
        let (fa, fc) = (fingerprints(&a), fingerprints(&c));
        assert_eq!(fa.iter().filter(|fp| !fc.contains(fp)).count(), 1);
    }

    /// Paths are the decoder's: relative to `originalUriBaseIds`, and
    /// from `artifacts` when a location gives only an index; a secret
    /// scanner's results get no hash, and a malformed hash is ignored.
    #[test]
    fn line_hashes_follow_the_decoders_paths() {
        let log = br#"{"version":"2.1.0","runs":[
          {"tool":{"driver":{"name":"CodeQL"}},
           "originalUriBaseIds":{"SRC":{"uri":"file:///work/src/"}},
           "artifacts":[{"location":{"uri":"file:///work/src/lib/b.js","uriBaseId":"SRC"}}],
           "results":[
             {"ruleId":"r1","message":{"text":"m"},"locations":[{"physicalLocation":{"artifactLocation":{"uri":"file:///work/src/app/a.js","uriBaseId":"SRC"},"region":{"startLine":4}}}]},
             {"ruleId":"r2","message":{"text":"m"},"locations":[{"physicalLocation":{"artifactLocation":{"index":0},"region":{"startLine":7}}}]},
             {"ruleId":"r3","message":{"text":"m"},"partialFingerprints":{"custodyLineHash/v1":"not hex"},"locations":[{"physicalLocation":{"artifactLocation":{"uri":"c.js"}}}]}
           ]},
          {"tool":{"driver":{"name":"gitleaks"}},"results":[
             {"ruleId":"aws","message":{"text":"m"},"locations":[{"physicalLocation":{"artifactLocation":{"uri":"k.env"},"region":{"startLine":1}}}]}
          ]}]}"#;
        let mut asked = Vec::new();
        let (out, did) = add_line_hashes(log, &mut |p, n| {
            asked.push(format!("{p}:{n}"));
            Some(format!("line of {p}"))
        })
        .unwrap();
        assert_eq!(asked, ["app/a.js:4", "lib/b.js:7"]);
        assert_eq!(
            did,
            LineHashes {
                located: 3,
                hashed: 2,
                secret: 1
            }
        );
        let r = decode(&out).unwrap();
        let hash = |rule: &str| {
            r.findings
                .iter()
                .find(|f| f.rule_id == rule)
                .unwrap()
                .content_hash
                .clone()
        };
        assert_eq!(hash("r1"), Some(fingerprint::line_hash("line of app/a.js")));
        assert_eq!(hash("r2"), Some(fingerprint::line_hash("line of lib/b.js")));
        assert_eq!(hash("r3"), None);
        assert_eq!(hash("aws"), None);
        assert!(matches!(
            add_line_hashes(b"{\"runs\": 1}", &mut |_, _| None),
            Err(DecodeError::Shape { .. })
        ));
    }

    /// The content digest covers what the decoder reads and nothing else:
    /// a rescan that only restamps the run (Bandit writes when it ended)
    /// or changes skipped metadata keeps it, and decodes to the same
    /// findings; a moved result or a changed rule does not keep it.
    #[test]
    fn content_digest_ignores_what_the_decoder_skips() {
        let text = String::from_utf8(crate::testing::fixture("churn/bandit-6.4.2.sarif"))
            .expect("UTF-8");
        let base = content_digest(text.as_bytes()).expect("a SARIF log");
        let findings =
            |t: &str| serde_json::to_string(&decode(t.as_bytes()).unwrap().findings).unwrap();
        for (what, from, to) in [
            ("end time", "2026-11-24T16:25:14Z", "2026-11-24T17:25:14Z"),
            ("run metrics", "\"loc\": 32329", "\"loc\": 32330"),
            (
                "log version",
                "\"version\": \"2.1.0\"",
                "\"version\": \"2.1.0\", \"x\": [1]",
            ),
        ] {
            let other = text.replacen(from, to, 1);
            assert_ne!(other, text, "{what}: the fixture has {from}");
            assert_eq!(content_digest(other.as_bytes()), Some(base), "{what}");
            assert_eq!(findings(&other), findings(&text), "{what}");
        }
        for (what, from, to) in [
            ("a result's line", "\"startLine\": ", "\"startLine\": 1"),
            ("a rule's name", "\"assert_used\"", "\"assert\""),
        ] {
            let other = text.replacen(from, to, 1);
            assert_ne!(other, text, "{what}: the fixture has {from}");
            assert_ne!(content_digest(other.as_bytes()), Some(base), "{what}");
            assert_ne!(findings(&other), findings(&text), "{what}");
        }
        assert_eq!(content_digest(br#"{"version":"2.1.0"}"#), None, "no runs");
        assert_eq!(content_digest(format!("{text} x").as_bytes()), None);
        assert_eq!(content_digest(b"[1, 2"), None);
    }

    /// Counts of `MANIFEST.tsv` (raw results), less the results SARIF itself
    /// marks as not failures (suppressed results are findings).
    #[test]
    fn corpus_counts() {
        let table: &[(&str, usize, usize)] = &[
            (
                "DefectDojo_django-DefectDojo__2020-12-11_13 42 10__export.sarif",
                510,
                0,
            ),
            ("SuppressionTestCurrent.sarif", 4, 0),
            ("appendix_k.sarif", 1, 0),
            ("appendix_k1.sarif", 0, 0),
            ("appendix_k1_double.sarif", 0, 0),
            ("appendix_k2.sarif", 1, 0),
            ("appendix_k3.sarif", 1, 0),
            ("appendix_k4.sarif", 1, 0),
            ("bash-report.sarif", 27, 0),
            ("blackduck_nested_fingerprints.sarif", 5, 0),
            ("codeQL-output.sarif", 72, 0),
            ("cxf-3.4.6.sarif", 22, 0),
            ("dependency_check.sarif", 13, 0),
            ("dockle_0_3_15.sarif", 4, 0),
            ("flawfinder.sarif", 54, 1),
            ("gitleaks_7.5.0.sarif", 8, 0),
            ("issue_10191.json", 77, 0),
            ("mobsfscan.json", 9, 0),
            ("njsscan.sarif", 2, 0),
            ("no_runs.sarif", 0, 0),
            ("semgrepowasp-benchmark-sample.sarif", 1768, 0),
            ("spotbugs.sarif", 56, 0),
            ("suppression_test.sarif", 5, 0),
            ("taint-python-report.sarif", 11, 0),
        ];
        for &(name, raw, skipped) in table {
            let Some(bytes) = corpus(name) else {
                return;
            };
            let r = decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(r.skipped.len(), skipped, "{name}: skipped {:?}", r.skipped);
            assert_eq!(
                r.findings.len() + r.skipped.len(),
                raw,
                "{name}: findings + skipped = raw"
            );
            assert!(!r.coverage.is_empty() || name == "no_runs.sarif", "{name}");
        }
    }

    /// Suppressed results are findings marked suppressed, with the
    /// suppression's kind: `suppression_test.sarif` has two external
    /// suppressions, one in source, one result without `suppressions` and
    /// one with an empty array (none apply).
    #[test]
    fn suppressed_results_are_findings_marked_suppressed() {
        let Some(bytes) = corpus("suppression_test.sarif") else {
            return;
        };
        let r = decode(&bytes).unwrap();
        let got: Vec<(&str, Option<&str>)> = r
            .findings
            .iter()
            .map(|f| {
                let d = f.disposition.as_ref();
                assert!(d.is_none_or(|d| d.state == DispositionState::Suppressed));
                (f.rule_id.as_str(), d.and_then(|d| d.kind.as_deref()))
            })
            .collect();
        assert_eq!(
            got,
            [
                ("TST0001", Some("external")),
                ("TST0002", Some("external")),
                ("TST0003", Some("in_source")),
                ("TST0004", None),
                ("TST0005", None),
            ]
        );
    }

    /// The SARIF 2.1.0 `suppression` object (spec section 3.35): `kind`,
    /// `status` and `justification`; a rejected suppression is none, and
    /// the first one in force is the one recorded.
    #[test]
    fn suppression_status_and_justification() {
        let log = |suppressions: &str| {
            format!(
                r#"{{"version":"2.1.0","runs":[{{"tool":{{"driver":{{"name":"CodeScanner"}}}},
                "results":[{{"ruleId":"C2001","message":{{"text":"x"}},"suppressions":{suppressions}}}]}}]}}"#
            )
        };
        let one = |suppressions: &str| {
            let r = decode(log(suppressions).as_bytes()).unwrap();
            assert_eq!(r.findings.len(), 1, "{suppressions}");
            r.findings[0].disposition.clone()
        };
        assert_eq!(one(r#"[{"kind":"external","status":"rejected"}]"#), None);
        let d = one(
            r#"[{"kind":"external","status":"rejected","justification":"no"},
                {"kind":"inSource","status":"underReview","justification":"Safe: input is a constant."}]"#,
        )
        .expect("the second suppression is in force");
        assert_eq!(d.state, DispositionState::Suppressed);
        assert_eq!(d.kind.as_deref(), Some("in_source"));
        assert_eq!(d.status.as_deref(), Some("under_review"));
        assert_eq!(
            d.justification.as_deref(),
            Some("Safe: input is a constant.")
        );
        let d = one(r#"[{"kind":"external","status":"accepted"}]"#).unwrap();
        assert_eq!(
            (d.kind.as_deref(), d.status.as_deref(), d.justification),
            (Some("external"), Some("accepted"), None)
        );
        assert_eq!(one("[]"), None);
    }

    #[test]
    fn codeql_fields() {
        let Some(bytes) = corpus("codeQL-output.sarif") else {
            return;
        };
        let r = decode(&bytes).unwrap();
        let f = &r.findings[0];
        assert_eq!(f.scanner, "codeql");
        assert_eq!(f.category, Category::Sast);
        assert_eq!(f.rule_id, "py/empty-except");
        assert_eq!(f.path(), Some("good/db_init.py"));
        assert_eq!(f.start_line(), Some(39));
        assert_eq!(
            f.tool_fingerprint.as_deref(),
            Some("primaryLocationLineHash=9cbc869fbfffeb60:1")
        );
        // The context region's snippet supplies the start line's text.
        assert_eq!(
            f.content_hash,
            Some(fingerprint::line_hash("    except FileNotFoundError:"))
        );
    }

    #[test]
    fn severity_sources() {
        // Bandit-style issue_severity in result properties.
        let Some(bytes) = corpus("bash-report.sarif") else {
            return;
        };
        let r = decode(&bytes).unwrap();
        assert_eq!(r.findings[0].severity, Severity::Low);
        assert_eq!(
            r.findings[0].severity_source.as_deref(),
            Some("issue_severity:LOW")
        );
        // Level only.
        let Some(bytes) = corpus("dockle_0_3_15.sarif") else {
            return;
        };
        let r = decode(&bytes).unwrap();
        assert_eq!(r.findings[0].severity, Severity::High);
        assert_eq!(r.findings[0].category, Category::Iac);
        // security-severity wins over level.
        let doc = br#"{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"CodeQL","rules":[{"id":"js/x","properties":{"security-severity":"9.8"},"defaultConfiguration":{"level":"note"}}]}},"results":[{"ruleId":"js/x","ruleIndex":0,"message":{"text":"m"}}]}]}"#;
        let r = decode(doc).unwrap();
        assert_eq!(r.findings[0].severity, Severity::Critical);
        // No level anywhere: SARIF's default is warning.
        let doc = br#"{"runs":[{"tool":{"driver":{"name":"t"}},"results":[{"ruleId":"r","message":{"text":"m"}}]}]}"#;
        assert_eq!(decode(doc).unwrap().findings[0].severity, Severity::Medium);
    }

    #[test]
    fn secrets_never_in_clear() {
        let Some(bytes) = corpus("gitleaks_7.5.0.sarif") else {
            return;
        };
        let r = decode(&bytes).unwrap();
        assert_eq!(r.findings.len(), 8);
        for f in &r.findings {
            assert_eq!(f.category, Category::Secret);
            assert!(f.evidence.secret_hash.is_some());
            let dump = format!("{f:?}");
            assert!(!dump.contains("AKIAIOSFODNN7EXAMPLE"), "{dump}");
            assert!(!dump.contains("PRIVATE KEY"), "{dump}");
        }
    }

    #[test]
    fn message_arguments_and_strings() {
        let doc = br#"{"runs":[{"tool":{"driver":{"name":"t","rules":[{"id":"r","messageStrings":{"default":{"text":"{0} flows to {1} ({2})"}}}]}},"results":[{"ruleId":"r","message":{"id":"default","arguments":["input","sink"]}}]}]}"#;
        let r = decode(doc).unwrap();
        assert_eq!(r.findings[0].message, "input flows to sink ({2})");
    }

    #[test]
    fn wrapped_and_placeholder_fingerprints() {
        let Some(bytes) = corpus("blackduck_nested_fingerprints.sarif") else {
            return;
        };
        let r = decode(&bytes).unwrap();
        // "aaaa..." style values are placeholders, not fingerprints.
        assert!(r.findings.iter().all(|f| f.tool_fingerprint.is_none()));
        let Some(bytes) = corpus("issue_10191.json") else {
            return;
        };
        let r = decode(&bytes).unwrap();
        assert!(r.findings[0]
            .tool_fingerprint
            .as_deref()
            .unwrap()
            .starts_with("matchBasedId/v1="));
        assert_eq!(r.findings[0].scanner, "semgrep");
    }

    #[test]
    fn provenance_gives_target() {
        let Some(bytes) = corpus("appendix_k.sarif") else {
            return;
        };
        let r = decode(&bytes).unwrap();
        assert!(r.target.is_some() || r.commit.is_some());
    }

    #[test]
    fn bad_shapes() {
        let err = decode(br#"{"version":"2.1.0"}"#).unwrap_err();
        assert!(err.to_string().contains("runs"), "{err}");
        let err = decode(br#"{"runs":[{"tool":5}]}"#).unwrap_err();
        assert_eq!(err.reason(), "shape");
        let err = decode(br#"{"runs":[{"tool":{"driver":{}},"results":[{"#).unwrap_err();
        assert_eq!(err.reason(), "syntax");
        let deep = format!(
            "{{\"runs\":[{{\"tool\":{{\"driver\":{{\"x\":{}}}}}}}]}}",
            "[".repeat(10_000)
        );
        assert_eq!(decode(deep.as_bytes()).unwrap_err().reason(), "syntax");
    }
}
