//! `custody process`: the engine over report files, for CI pipelines and
//! backfills. Each file is one complete scan of its target, or of each
//! target its records name (see [`crate::normalize::Report::split`]); a
//! partial one with `--partial`, which resolves nothing. Events go to
//! standard output as JSON Lines and a per-team summary to standard error.
//!
//! Exit status: 0 on success, 1 when any input was rejected (each named on
//! standard error, the others still processed), 2 for usage or
//! configuration errors (nothing processed, the state file untouched), 3
//! when `--fail-on` found the run opened or reopened findings at or above
//! its severity (3 wins over 1: both fail a CI job, and the rejected
//! inputs are named all the same).

use crate::config::Config;
use crate::engine::{Engine, FindingEventRef, Output, Sink};
use crate::lifecycle::{ScanRecord, State};
use crate::model::{FindingEvent, ScanMeta, Severity, Status, Target, TicketEvent};
use crate::normalize::{self, DecodeError, Format};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Validated settings of one `process` run.
#[derive(Debug)]
pub struct Settings {
    /// Report files (`-` is standard input).
    pub files: Vec<PathBuf>,
    /// Target override.
    pub target: Option<Target>,
    /// Scanner override.
    pub scanner: Option<String>,
    /// Format override.
    pub format: Option<Format>,
    /// State file.
    pub state: Option<PathBuf>,
    /// Decision files.
    pub decisions: Vec<PathBuf>,
    /// Checkout to read source lines from.
    pub source: Option<PathBuf>,
    /// Configuration.
    pub config: Config,
    /// Ownership configuration, if any.
    pub owners: Option<std::sync::Arc<crate::ownership::Ownership>>,
    /// Which configuration that is, recorded in the state.
    pub owners_used: Option<crate::lifecycle::OwnershipUsed>,
    /// `--owners none`: no ownership, on purpose, even on a state built
    /// with one.
    pub owners_none: bool,
    /// Fail (exit 3) on findings opened or reopened at or above this.
    pub fail_on: Option<Severity>,
    /// The files are partial scans: nothing is resolved.
    pub partial: bool,
    /// How the summary is printed.
    pub summary: SummaryFormat,
    /// Which events to print.
    pub emit: Emit,
    /// The commit scanned, for reports that name none.
    pub commit: Option<String>,
    /// The branch or tag scanned, for reports that name none.
    pub git_ref: Option<String>,
    /// The clock.
    pub now: DateTime<Utc>,
}

/// A usage or configuration error (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// A flag's value is invalid.
    #[error("--{flag}: {message}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The configuration or ownership file was refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The state file exists but cannot be used.
    #[error("state file {path}: {message}")]
    State {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Which events `process` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    /// Finding events only.
    Findings,
    /// Ticket events only.
    Tickets,
    /// Both.
    All,
}

/// How `process` prints its summary on standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SummaryFormat {
    /// A table per team, with a legend of its columns.
    Text,
    /// One line of JSON, the last line of standard error.
    Json,
    /// No summary.
    None,
}

/// Why one input was rejected (exit status 1; the rest go on).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Could not be read.
    #[error("cannot read: {0}")]
    Read(#[from] std::io::Error),
    /// Could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// No target given and the report (or some of its records) names
    /// none.
    #[error("{0}; pass --target")]
    NoTarget(#[from] normalize::NoTarget),
}

/// Runs a validated `process`; returns the exit status.
pub fn run(s: &Settings, mut stdin: impl Read, stdout: impl Write, mut stderr: impl Write) -> u8 {
    let mut state = match &s.state {
        Some(path) => match load_state(path) {
            Ok(st) => st,
            Err(e) => {
                let _ = writeln!(stderr, "custody process: {e}");
                return 2;
            }
        },
        None => State::new(),
    };
    if let (Some(used), None, false) = (&state.ownership, &s.owners, s.owners_none) {
        let _ = writeln!(
            stderr,
            "custody process: state file {} was built with the ownership configuration {} (version {}); pass --owners CONFIG to go on attributing findings, or --owners none to process without ownership",
            s.state.as_deref().map(Path::display).map(|d| d.to_string()).unwrap_or_default(),
            used.config,
            used.version
        );
        return 2;
    }
    let mut stdin_bytes: Option<Vec<u8>> = None;
    if let Some(name) = &s.scanner {
        match check_scanner(s, name, &mut stdin, &mut stdin_bytes) {
            Ok(()) => {}
            Err(e) => {
                let _ = writeln!(stderr, "custody process: {e}");
                return 2;
            }
        }
    }
    let mut engine = Engine::new(&s.config);
    if let Some(own) = &s.owners {
        for w in &own.warnings {
            let _ = writeln!(stderr, "custody process: ownership: {w}");
        }
        engine.set_attribution(Box::new(crate::ownership::Resolver::new(
            std::sync::Arc::clone(own),
        )));
    }
    let mut out = JsonLines {
        out: BufWriter::with_capacity(1 << 16, stdout),
        emit: s.emit,
        fail_on: s.fail_on,
        tally: Tally::default(),
        error: None,
    };
    let mut rejected = 0usize;

    // Ownership may have changed since the state was saved: open findings
    // whose team changed are reassigned before anything else happens.
    if s.owners.is_some() {
        let moved = engine.reattribute(&mut state, s.now);
        forget_scans(&mut state, &moved);
        out.feed(moved);
    }
    // So may the grouping of tickets: tickets of the old grouping resolve
    // as `regrouped`, and the new ones open, once.
    out.feed(engine.regroup_all(&mut state, s.now));
    let engine = engine;

    // VEX documents are statements about vulnerabilities and products, not
    // fingerprints: they are applied after the scans, so they also reach
    // the findings this run opens.
    let mut vex_docs = Vec::new();
    for path in &s.decisions {
        match std::fs::read(path)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|bytes| crate::normalize::vex::parse(&bytes))
        {
            Ok(Some(doc)) => {
                vex_docs.push((path, doc));
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                rejected += 1;
                let _ = writeln!(stderr, "custody process: rejected {}: {e}", path.display());
                continue;
            }
        }
        match crate::lifecycle::read_decisions(path) {
            Ok(records) => {
                for (line, d) in records {
                    match engine.decide(&mut state, &d, s.now) {
                        Ok(o) => {
                            forget_scans(&mut state, &o);
                            out.feed(o)
                        }
                        Err(e) => {
                            rejected += 1;
                            let _ = writeln!(
                                stderr,
                                "custody process: rejected {}:{line}: {e}",
                                path.display()
                            );
                        }
                    }
                }
            }
            Err(e) => {
                rejected += 1;
                let _ = writeln!(stderr, "custody process: rejected {}: {e}", path.display());
            }
        }
    }

    for path in &s.files {
        let shown = if path.as_os_str() == "-" {
            "<stdin>".to_string()
        } else {
            path.display().to_string()
        };
        let bytes = read_input(s, path, &mut stdin, &mut stdin_bytes);
        match bytes.and_then(|bytes| scan_file(s, &engine, &mut state, bytes, &mut out)) {
            Ok(Scanned { findings, weak }) => {
                if weak > 0 {
                    let _ = writeln!(
                        stderr,
                        "custody process: warning: {shown}: {weak} of {findings} SARIF results have no source snippet and no line hash, so they are fingerprinted by their message and their order in the file: a rewritten line with the same message goes unnoticed. Pass --source DIR (the scanned checkout), or publish the report with `custody publish --source DIR`"
                    );
                }
                out.tally.scans.push((shown, findings));
            }
            Err(e) => {
                rejected += 1;
                let _ = writeln!(stderr, "custody process: rejected {shown}: {e}");
            }
        }
    }
    for (path, doc) in &vex_docs {
        let (o, matched) = engine.vex(&mut state, doc, s.now);
        forget_scans(&mut state, &o);
        out.feed(o);
        let _ = writeln!(
            stderr,
            "custody process: {} ({}): {} statements, about {matched} findings",
            path.display(),
            doc.kind,
            doc.statements.len()
        );
    }
    let ticked = engine.tick(&mut state, s.now);
    forget_scans(&mut state, &ticked);
    out.feed(ticked);
    // Tickets across targets are the sum of the targets' parts: published
    // once the run's steps are done, as they differ from the last run's.
    out.feed(engine.aggregate(&mut state, s.now));
    let tally = match out.finish() {
        Ok(tally) => tally,
        Err(e) => {
            let _ = writeln!(stderr, "custody process: writing events: {e}");
            return 2;
        }
    };
    state.ownership.clone_from(&s.owners_used);
    if let Some(path) = &s.state {
        if let Err(e) = save_state(path, &state) {
            let _ = writeln!(
                stderr,
                "custody process: cannot save state {}: {e}",
                path.display()
            );
            return 2;
        }
    }
    if let Some(at) = s.fail_on {
        if !tally.failing.is_empty() {
            let _ = writeln!(
                stderr,
                "custody process: --fail-on {at}: this run opened or reopened {} findings at or above {at} (severity, rule, location, team):",
                tally.failing.len()
            );
            for f in &tally.failing {
                let _ = writeln!(
                    stderr,
                    "{}\t{}\t{}\t{}",
                    f.severity,
                    f.rule,
                    f.location,
                    f.team.as_deref().unwrap_or("(unattributed)")
                );
            }
        }
    }
    let rows = summary_rows(&state, &tally);
    let _ = match s.summary {
        SummaryFormat::Text => summary(&mut stderr, &rows),
        SummaryFormat::Json => summary_json(&mut stderr, &rows, s.fail_on),
        SummaryFormat::None => Ok(()),
    };
    // The process is about to exit: freeing a large state record by record
    // costs a tenth of the run and returns nothing useful.
    std::mem::forget(state);
    if s.fail_on.is_some() && !tally.failing.is_empty() {
        3
    } else {
        u8::from(rejected > 0)
    }
}

/// The bytes of one input: a file, or standard input (read once, kept
/// when `--scanner` had it read first).
fn read_input(
    s: &Settings,
    path: &Path,
    stdin: &mut impl Read,
    stdin_bytes: &mut Option<Vec<u8>>,
) -> Result<Vec<u8>, InputError> {
    let limit = s.config.max_report_bytes;
    if path.as_os_str() == "-" {
        return match stdin_bytes.take() {
            Some(bytes) => Ok(bytes),
            None => read_capped(stdin, limit, 0),
        };
    }
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size > limit {
        return Err(DecodeError::TooLarge { size, limit }.into());
    }
    read_capped(file, limit, size)
}

/// Refuses a `--scanner` that contradicts a report's own tool name,
/// before anything is processed: every report that decodes must name no
/// tool, or `name` alone. Inputs that cannot be read or decoded are left
/// for the run to reject.
fn check_scanner(
    s: &Settings,
    name: &str,
    stdin: &mut impl Read,
    stdin_bytes: &mut Option<Vec<u8>>,
) -> Result<(), String> {
    let ctx = crate::normalize::DecodeContext::default();
    for path in &s.files {
        let Ok(bytes) = read_input(s, path, stdin, stdin_bytes) else {
            continue;
        };
        let decoded = normalize::decode(&bytes, s.format, &ctx);
        if path.as_os_str() == "-" {
            *stdin_bytes = Some(bytes);
        }
        let Ok((_, report)) = decoded else {
            continue;
        };
        let tools: BTreeSet<String> = report
            .coverage
            .iter()
            .map(|(t, _)| t.as_str())
            .chain(report.findings.iter().map(|f| f.scanner.as_str()))
            .filter(|t| !t.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        if tools.iter().any(|t| t != name) {
            let shown = if path.as_os_str() == "-" {
                "<stdin>".to_string()
            } else {
                path.display().to_string()
            };
            let names: Vec<&str> = tools.iter().map(String::as_str).collect();
            return Err(format!(
                "--scanner {name} contradicts {shown}, whose own tool name is {}; drop --scanner or name the tool that wrote the report",
                names.join(", ")
            ));
        }
    }
    Ok(())
}

fn scan_file(
    s: &Settings,
    engine: &Engine,
    state: &mut State,
    bytes: Vec<u8>,
    sink: &mut dyn Sink,
) -> Result<Scanned, InputError> {
    // A target's last scan sent again (the same bytes, under the same
    // flags and settings) is applied without decoding it, as the service
    // does: only `last_seen` moves (see `Engine::rescan_unchanged`). Not
    // with `--source`, whose checkout the fingerprints also read. Nor when
    // nothing could read the record: no state file is saved, and no later
    // file of this run can be the same report again; the report's bytes
    // are then not hashed for it, nor are the fingerprints it observed
    // and the records it changed listed.
    let remembering = s.source.is_none() && (s.state.is_some() || s.files.len() > 1);
    let record = |bytes: String| ScanRecord {
        bytes: Some(bytes),
        content: None,
        format: s.format.map(|f| f.name().to_string()),
        scanner: s.scanner.clone(),
        complete: !s.partial,
        findings: 0,
        observed: Vec::new(),
        settings: scan_settings(s, engine),
    };
    let bytes_hash = |bytes: &[u8]| crate::fingerprint::hex(&normalize::report_digest(bytes));
    // The hash of the bytes is needed before decoding only when the
    // target has a last scan to compare with; otherwise it is taken while
    // the report is decoded.
    let last = match &s.target {
        Some(target) if remembering => {
            let spec = target.to_string();
            state.last_scans.remove(&spec).map(|last| (spec, last))
        }
        _ => None,
    };
    let mut remembered = None;
    if let (Some((spec, last)), Some(target)) = (last, &s.target) {
        let now = record(bytes_hash(&bytes));
        // The same report under the same flags and settings.
        let same = last.bytes == now.bytes
            && last.format == now.format
            && last.scanner == now.scanner
            && last.complete == now.complete
            && last.settings == now.settings;
        if same
            && engine
                .rescan_unchanged(
                    state,
                    target,
                    &last.observed,
                    s.now,
                    std::time::Duration::ZERO,
                )
                .is_some()
        {
            tracing::debug!(target = %spec, "the target's last scan again: not decoded");
            let findings = last.findings;
            state.last_scans.insert(spec, last);
            return Ok(Scanned { findings, weak: 0 });
        }
        remembered = Some(now);
    }
    // The scan id (a SHA-256 of the bytes) and, when still wanted, the
    // digest that remembers them, are taken on another thread while
    // the report is decoded: a report of 60 MB costs some 50 ms of
    // hashing, which then no longer waits for the decoding, nor it for
    // them.
    let want_hash = remembering && remembered.is_none();
    let (decoded, (scan_id, hashed)) = std::thread::scope(|scope| {
        let hashes = scope.spawn(|| {
            let id = ScanMeta::content_id(&bytes);
            (id, want_hash.then(|| bytes_hash(&bytes)))
        });
        let decoded = normalize::decode(&bytes, s.format, engine.decode_context());
        let hashes = hashes
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (decoded, hashes)
    });
    let remembered = remembered.or_else(|| hashed.map(record));
    let (format, mut report) = decoded?;
    drop(bytes);
    if let Some(name) = &s.scanner {
        report.set_scanner(name);
    }
    if let Some(dir) = &s.source {
        let salt = &engine.decode_context().secret_salt;
        let mut files = crate::source::SourceFiles::new(dir);
        for f in &mut report.findings {
            let (Some(path), Some(line)) = (f.path(), f.start_line()) else {
                continue;
            };
            if let Some(text) = files.line(path, line) {
                let text = text.to_string();
                normalize::util::set_line_content(f, Some(&text), salt);
            }
        }
    }
    let n = report.findings.len();
    let weak = if format == Format::Sarif && s.source.is_none() {
        report
            .findings
            .iter()
            .filter(|f| crate::fingerprint::by_message(f))
            .count()
    } else {
        0
    };
    // One scan per target the report's records name (`--target` is the
    // default for those that name none).
    let parts = report.split(s.target.clone())?;
    // Remembered only where the report is one scan of `--target` alone.
    let alone = parts.len() == 1 && s.target.as_ref() == Some(&parts[0].target);
    for part in parts {
        let target = part.target.to_string();
        state.last_scans.remove(&target);
        let scan = ScanMeta {
            scan_id: scan_id.clone(),
            target: part.target,
            commit: report.commit.clone().or_else(|| s.commit.clone()),
            git_ref: report.git_ref.clone().or_else(|| s.git_ref.clone()),
            complete: !s.partial,
            coverage: report.coverage.clone(),
            rule_help: report.rule_help.clone(),
        };
        let Some(record) = remembered.as_ref().filter(|_| alone) else {
            engine.scan_into(state, &scan, part.findings, s.now, sink);
            continue;
        };
        let touched = engine.scan_touched(
            state,
            &scan,
            part.findings,
            s.now,
            sink,
            std::time::Duration::ZERO,
        );
        state.last_scans.insert(
            target,
            ScanRecord {
                findings: n,
                observed: touched.observed,
                ..record.clone()
            },
        );
    }
    Ok(Scanned { findings: n, weak })
}

/// What, besides a report's bytes, shapes how it is applied: the engine's
/// settings and the ownership configuration in force.
fn scan_settings(s: &Settings, engine: &Engine) -> String {
    match &s.owners_used {
        Some(o) => format!("{}|{}", engine.settings_digest(), o.version),
        None => engine.settings_digest(),
    }
}

/// Forgets the last scans of the targets a step changed (a decision, a
/// VEX document, the clock): a rescan must then be applied in full.
fn forget_scans(state: &mut State, o: &Output) {
    for t in o
        .findings
        .iter()
        .map(|e| &e.target)
        .chain(o.tickets.iter().map(|e| &e.target))
    {
        state.last_scans.remove(&t.to_string());
    }
}

/// What one report file gave.
struct Scanned {
    findings: usize,
    /// SARIF results fingerprinted by their message alone (no snippet, no
    /// line hash, no `--source`).
    weak: usize,
}

/// Reads at most `limit` bytes; more is an error, so endless input cannot
/// exhaust memory.
/// `size_hint` (a file's length) sizes the buffer exactly, so a report
/// does not cost up to twice its size while it is read.
pub fn read_capped(r: impl Read, limit: u64, size_hint: u64) -> Result<Vec<u8>, InputError> {
    let mut buf =
        Vec::with_capacity(usize::try_from(size_hint.min(limit).saturating_add(1)).unwrap_or(0));
    r.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(DecodeError::TooLarge {
            size: buf.len() as u64,
            limit,
        }
        .into());
    }
    Ok(buf)
}

fn load_state(path: &Path) -> Result<State, UsageError> {
    let err = |message: String| UsageError::State {
        path: path.display().to_string(),
        message,
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let mut st: State = serde_json::from_slice(&bytes)
                .map_err(|e| err(format!("not a custody state file: {e}")))?;
            if st.version != 1 {
                return Err(err(format!(
                    "state version {} is not supported (expected 1)",
                    st.version
                )));
            }
            // A state file of a version that kept no origins.
            for ts in st.targets.values_mut() {
                ts.settle_baseline();
            }
            Ok(st)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::new()),
        Err(e) => Err(err(e.to_string())),
    }
}

/// Writes the state next to its final place, syncs it, then renames it
/// over the old one, so a crash leaves either the old or the new state.
fn save_state(path: &Path, state: &State) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut w = BufWriter::new(file);
        serde_json::to_writer(&mut w, state)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[derive(Default)]
struct Tally {
    scans: Vec<(String, usize)>,
    /// Per team: opened, resolved, reopened findings; tickets opened.
    events: BTreeMap<Option<String>, [u64; 4]>,
    /// Findings opened or reopened at or above `--fail-on`, in event order.
    failing: Vec<Failing>,
}

/// A finding that fails the run (`--fail-on`).
#[derive(serde::Serialize, JsonSchema)]
struct Failing {
    /// Its severity (at or above `--fail-on`).
    severity: Severity,
    /// Its rule or vulnerability id.
    rule: String,
    /// `path:line`, the path, or the target when the finding has none.
    location: String,
    /// Its team; null while unattributed.
    #[schemars(required, extend("type" = ["string", "null"]))]
    team: Option<String>,
    /// Its fingerprint.
    fingerprint: String,
}

/// Writes each event as one JSON line as it comes, and counts them for the
/// summary. The first write error is kept and reported at the end.
struct JsonLines<W: Write> {
    out: BufWriter<W>,
    emit: Emit,
    fail_on: Option<Severity>,
    tally: Tally,
    error: Option<std::io::Error>,
}

impl<W: Write> JsonLines<W> {
    fn write(&mut self, event: &impl serde::Serialize) {
        if self.error.is_some() {
            return;
        }
        let result = serde_json::to_writer(&mut self.out, event)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        if let Err(e) = result {
            self.error = Some(e);
        }
    }

    fn feed(&mut self, o: Output) {
        for e in o.findings {
            self.finding(e);
        }
        for e in o.tickets {
            self.ticket(e);
        }
    }

    fn finish(mut self) -> Result<Tally, std::io::Error> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.out.flush()?;
        Ok(self.tally)
    }
}

/// What the summary and `--fail-on` read of a finding event, owned or
/// borrowed.
struct Counted<'a> {
    event: crate::model::FindingEventKind,
    team: Option<&'a str>,
    severity: Severity,
    location: Option<&'a crate::model::Location>,
    target: &'a Target,
    rule_id: &'a str,
    fingerprint: &'a str,
}

impl<'a> From<&'a FindingEvent> for Counted<'a> {
    fn from(e: &'a FindingEvent) -> Counted<'a> {
        Counted {
            event: e.event,
            team: e.team.as_deref(),
            severity: e.severity,
            location: e.location.as_ref(),
            target: &e.target,
            rule_id: &e.rule_id,
            fingerprint: &e.fingerprint,
        }
    }
}

impl<'a> From<&'a FindingEventRef<'_>> for Counted<'a> {
    fn from(e: &'a FindingEventRef<'_>) -> Counted<'a> {
        Counted {
            event: e.event,
            team: e.team,
            severity: e.severity,
            location: e.location,
            target: e.target,
            rule_id: e.rule_id,
            fingerprint: e.fingerprint,
        }
    }
}

impl<W: Write> JsonLines<W> {
    /// Counts a finding event for the summary and `--fail-on`.
    fn count(&mut self, e: Counted<'_>) {
        use crate::model::FindingEventKind as F;
        let slot = match e.event {
            F::Opened => Some(0),
            F::Resolved => Some(1),
            F::Reopened => Some(2),
            _ => None,
        };
        if let Some(i) = slot {
            self.tally
                .events
                .entry(e.team.map(str::to_string))
                .or_default()[i] += 1;
        }
        let fails = matches!(e.event, F::Opened | F::Reopened)
            && self.fail_on.is_some_and(|at| e.severity >= at);
        if fails {
            let location = match e.location {
                Some(l) if !l.path.is_empty() => match l.start_line {
                    Some(n) => format!("{}:{n}", l.path),
                    None => l.path.clone(),
                },
                _ => e.target.to_string(),
            };
            self.tally.failing.push(Failing {
                severity: e.severity,
                rule: e.rule_id.to_string(),
                location,
                team: e.team.map(str::to_string),
                fingerprint: e.fingerprint.to_string(),
            });
        }
    }
}

/// How many finding events one task serializes into one buffer when a
/// step hands over many at once.
const SERIALIZE_RUN: usize = 512;

impl<W: Write> Sink for JsonLines<W> {
    fn finding(&mut self, e: FindingEvent) {
        self.count(Counted::from(&e));
        if self.emit != Emit::Tickets {
            self.write(&e);
        }
    }

    /// Counts the events in order, then serializes them on all cores,
    /// each run of them into its own buffer, and writes the buffers in
    /// order: the bytes of one event at a time.
    fn finding_refs(&mut self, events: Vec<FindingEventRef<'_>>) {
        use rayon::prelude::*;
        for e in &events {
            self.count(Counted::from(e));
        }
        if self.emit == Emit::Tickets || self.error.is_some() {
            return;
        }
        let lines: Vec<serde_json::Result<Vec<u8>>> = events
            .par_chunks(SERIALIZE_RUN)
            .map(|run| {
                let mut buf = Vec::with_capacity(run.len() * 1024);
                for e in run {
                    serde_json::to_writer(&mut buf, e)?;
                    buf.push(b'\n');
                }
                Ok(buf)
            })
            .collect();
        for buf in lines {
            let result = buf
                .map_err(std::io::Error::from)
                .and_then(|buf| self.out.write_all(&buf));
            if let Err(e) = result {
                self.error = Some(e);
                return;
            }
        }
    }

    fn ticket(&mut self, e: TicketEvent) {
        if e.event == crate::model::TicketEventKind::Opened {
            self.tally.events.entry(e.team.clone()).or_default()[3] += 1;
        }
        if self.emit != Emit::Findings {
            self.write(&e);
        }
    }
}

/// One row of the summary: a team, or the unattributed findings.
#[derive(serde::Serialize, JsonSchema)]
struct Row {
    /// The team; null for the unattributed findings.
    #[schemars(required, extend("type" = ["string", "null"]))]
    team: Option<String>,
    /// Open findings in the whole state (this run's and earlier ones), by
    /// severity.
    #[schemars(with = "OpenBySeverity")]
    open: BTreeMap<Severity, u64>,
    /// Findings this run opened.
    opened: u64,
    /// Findings this run resolved.
    resolved: u64,
    /// Findings this run reopened.
    reopened: u64,
    /// Open tickets in the whole state.
    tickets_open: u64,
}

/// A row's open findings by severity: every severity is there, zero or not.
#[derive(JsonSchema)]
#[allow(dead_code)] // The shape of a schema, never built.
struct OpenBySeverity {
    critical: u64,
    high: u64,
    medium: u64,
    low: u64,
    info: u64,
}

/// What the summary says, whichever way it is printed.
#[derive(serde::Serialize, JsonSchema)]
struct Rows<'a> {
    /// Files scanned and how many findings each gave.
    scans: Vec<ScanRow<'a>>,
    /// One row per team with open findings or events of this run.
    teams: Vec<Row>,
    /// Unattributed open findings per target.
    unattributed: BTreeMap<String, u64>,
    #[serde(skip)]
    failing: &'a [Failing],
}

/// One report file of the run.
#[derive(serde::Serialize, JsonSchema)]
struct ScanRow<'a> {
    /// The file as named on the command line (`<stdin>`: standard input).
    file: &'a str,
    /// The findings its report gave.
    findings: usize,
}

/// The findings that fail the run under `--fail-on`.
#[derive(serde::Serialize, JsonSchema)]
struct FailOn<'a> {
    /// The `--fail-on` severity.
    severity: Severity,
    /// The findings this run opened or reopened at or above it.
    findings: &'a [Failing],
}

/// What `custody process --summary json` prints: one line of JSON, the last
/// of standard error (`schemas/process-summary.schema.json`).
#[derive(serde::Serialize, JsonSchema)]
pub struct ProcessSummary<'a> {
    #[serde(flatten)]
    rows: &'a Rows<'a>,
    /// With `--fail-on` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    fail_on: Option<FailOn<'a>>,
}

/// Open findings by team (borrowed) and severity.
type OpenCounts<'s> = BTreeMap<Option<&'s str>, BTreeMap<Severity, u64>>;

/// A target with at least this many records has its open findings
/// counted on all cores (the summary of a large report is otherwise a
/// walk of its records on one core, at the end of the run).
const PARALLEL_COUNT: usize = 4096;

/// Adds a target's open findings to `open`, by team and severity, on all
/// cores from `parallel_from` records; returns how many have no team.
fn count_open<'s>(
    findings: &'s BTreeMap<String, Box<crate::lifecycle::FindingRecord>>,
    open: &mut OpenCounts<'s>,
    parallel_from: usize,
) -> u64 {
    use rayon::prelude::*;
    let add = |mut counts: OpenCounts<'s>, rec: &'s crate::lifecycle::FindingRecord| {
        *counts
            .entry(rec.team.as_deref())
            .or_default()
            .entry(rec.severity())
            .or_default() += 1;
        counts
    };
    let merge = |mut into: OpenCounts<'s>, from: OpenCounts<'s>| {
        for (team, by) in from {
            let slot = into.entry(team).or_default();
            for (severity, n) in by {
                *slot.entry(severity).or_default() += n;
            }
        }
        into
    };
    let counts = if findings.len() >= parallel_from {
        findings
            .par_iter()
            .map(|(_, rec)| &**rec)
            .filter(|rec| rec.status == Status::Open)
            .fold(OpenCounts::new, add)
            .reduce(OpenCounts::new, merge)
    } else {
        findings
            .values()
            .map(|rec| &**rec)
            .filter(|rec| rec.status == Status::Open)
            .fold(OpenCounts::new(), add)
    };
    let none = counts.get(&None).map_or(0, |by| by.values().sum());
    *open = merge(std::mem::take(open), counts);
    none
}

/// Counts the summary's rows: open findings by severity and open tickets
/// from the whole state, opened, resolved and reopened from this run.
fn summary_rows<'a>(state: &State, tally: &'a Tally) -> Rows<'a> {
    // Keyed by borrowed team names: a state of 100,000 findings is
    // counted without copying a name (or a target) per finding.
    let mut open: BTreeMap<Option<&str>, BTreeMap<Severity, u64>> = BTreeMap::new();
    let mut tickets_open: BTreeMap<Option<&str>, u64> = BTreeMap::new();
    let mut unattributed: BTreeMap<String, u64> = BTreeMap::new();
    for (target, ts) in &state.targets {
        let none = count_open(&ts.findings, &mut open, PARALLEL_COUNT);
        if none > 0 {
            unattributed.insert(target.clone(), none);
        }
        // A target's part of a ticket across targets is no ticket: those
        // are counted from the state's aggregates below.
        for t in ts.tickets.values().filter(|t| {
            t.status == crate::ticket::TicketStatus::Open
                && t.grouping != crate::ticket::Grouping::TeamRule
        }) {
            *tickets_open.entry(t.team.as_deref()).or_default() += 1;
        }
    }
    for t in state
        .aggregates
        .values()
        .filter(|t| t.status == crate::ticket::TicketStatus::Open)
    {
        *tickets_open.entry(t.team.as_deref()).or_default() += 1;
    }
    let teams: BTreeSet<Option<String>> = open
        .keys()
        .map(|t| t.map(str::to_string))
        .chain(tally.events.keys().cloned())
        .collect();
    let teams = teams
        .into_iter()
        .map(|team| {
            let ev = tally.events.get(&team).copied().unwrap_or_default();
            let by = open.get(&team.as_deref());
            Row {
                open: Severity::ALL_DESC
                    .into_iter()
                    .map(|s| (s, by.and_then(|m| m.get(&s)).copied().unwrap_or(0)))
                    .collect(),
                opened: ev[0],
                resolved: ev[1],
                reopened: ev[2],
                tickets_open: tickets_open.get(&team.as_deref()).copied().unwrap_or(0),
                team,
            }
        })
        .collect();
    Rows {
        scans: tally
            .scans
            .iter()
            .map(|(file, n)| ScanRow { file, findings: *n })
            .collect(),
        teams,
        unattributed,
        failing: &tally.failing,
    }
}

/// The per-team table on standard error, after a legend of its columns.
fn summary(w: &mut impl Write, rows: &Rows<'_>) -> std::io::Result<()> {
    for scan in &rows.scans {
        writeln!(w, "scanned {}: {} findings", scan.file, scan.findings)?;
    }
    writeln!(
        w,
        "per team: critical..info = open findings by severity in the whole state (this run's and earlier ones); opened, resolved, reopened = what this run changed; tickets = open tickets"
    )?;
    writeln!(
        w,
        "{:<24} {:>8} {:>6} {:>6} {:>6} {:>6} {:>7} {:>8} {:>8} {:>8}",
        "team",
        "critical",
        "high",
        "medium",
        "low",
        "info",
        "opened",
        "resolved",
        "reopened",
        "tickets"
    )?;
    for row in &rows.teams {
        let n = |s: Severity| row.open.get(&s).copied().unwrap_or(0);
        let name = row.team.as_deref().unwrap_or("(unattributed)");
        writeln!(
            w,
            "{:<24} {:>8} {:>6} {:>6} {:>6} {:>6} {:>7} {:>8} {:>8} {:>8}",
            name,
            n(Severity::Critical),
            n(Severity::High),
            n(Severity::Medium),
            n(Severity::Low),
            n(Severity::Info),
            row.opened,
            row.resolved,
            row.reopened,
            row.tickets_open,
        )?;
    }
    for (target, n) in &rows.unattributed {
        writeln!(w, "unattributed open findings on {target}: {n}")?;
    }
    Ok(())
}

/// The summary as one line of JSON (see README: `--summary json`).
fn summary_json(
    w: &mut impl Write,
    rows: &Rows<'_>,
    fail_on: Option<Severity>,
) -> std::io::Result<()> {
    let summary = ProcessSummary {
        rows,
        fail_on: fail_on.map(|severity| FailOn {
            severity,
            findings: rows.failing,
        }),
    };
    serde_json::to_writer(&mut *w, &summary)?;
    writeln!(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Category, Finding, Location};

    fn sink(out: &mut Vec<u8>) -> JsonLines<&mut Vec<u8>> {
        JsonLines {
            out: BufWriter::new(out),
            emit: Emit::All,
            fail_on: Some(Severity::High),
            tally: Tally::default(),
            error: None,
        }
    }

    /// Finding events handed over many at once, borrowed from their
    /// records (serialized on all cores), are written as the same bytes,
    /// in the same order, and counted the same, as owned events handed
    /// over one at a time.
    #[test]
    fn events_written_many_at_once_are_those_written_one_at_a_time() {
        let findings: Vec<Finding> = (0..3000)
            .map(|i| {
                let severity = [Severity::Low, Severity::High, Severity::Critical][i % 3];
                let mut f = Finding::new(
                    "bandit",
                    Category::Sast,
                    format!("B{}", i % 9),
                    severity,
                    format!("\"m\" {i}\n"),
                );
                f.location = Some(Location {
                    path: format!("a{}.py", i % 13),
                    start_line: Some(u32::try_from(i + 1).unwrap()),
                    ..Location::default()
                });
                f
            })
            .collect();
        let scan = complete_scan();
        let engine = Engine::new(&Config::default());
        let mut state = State::new();
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let events = engine.scan(&mut state, &scan, findings, now).findings;
        // The same events borrowed from the records they were made of.
        let records = &state.targets[&scan.target.to_string()].findings;
        let transitions: Vec<crate::lifecycle::Transition> = events
            .iter()
            .map(|e| crate::lifecycle::Transition {
                fingerprint: e.fingerprint.clone(),
                kind: e.event,
                previous_team: None,
                seq: records[&e.fingerprint].seq,
                previous_ticket: None,
                previous_status: None,
            })
            .collect();
        let refs: Vec<FindingEventRef<'_>> = transitions
            .iter()
            .map(|t| {
                let rec = &records[&t.fingerprint];
                FindingEventRef::new(rec, t, &scan.target, now, Some("s"))
            })
            .collect();
        let (mut one, mut many) = (Vec::new(), Vec::new());
        let (mut a, mut b) = (sink(&mut one), sink(&mut many));
        for e in events {
            a.finding(e);
        }
        b.finding_refs(refs);
        let (a, b) = (a.finish().unwrap(), b.finish().unwrap());
        assert_eq!(one.iter().filter(|&&c| c == b'\n').count(), 3000);
        assert!(one == many);
        assert_eq!(a.events, b.events);
        let fails = |t: &Tally| {
            t.failing
                .iter()
                .map(|f| f.fingerprint.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(fails(&a).len(), 2000);
        assert_eq!(fails(&a), fails(&b));
    }

    /// A complete scan of `repo:github.com/acme/a`.
    fn complete_scan() -> ScanMeta {
        ScanMeta {
            scan_id: "s".into(),
            target: "repo:github.com/acme/a".parse().unwrap(),
            commit: None,
            git_ref: None,
            complete: true,
            coverage: Default::default(),
            rule_help: Default::default(),
        }
    }

    /// A target's open findings counted on all cores are those counted on
    /// one, by team and severity, with the same number unattributed.
    #[test]
    fn open_findings_counted_on_all_cores_are_those_counted_on_one() {
        let findings: Vec<Finding> = (0..6000)
            .map(|i| {
                let severity = [Severity::Low, Severity::High, Severity::Critical][i % 3];
                let mut f = Finding::new("bandit", Category::Sast, "B1", severity, "m");
                f.location = Some(Location {
                    path: format!("a{i}.py"),
                    start_line: Some(1),
                    ..Location::default()
                });
                f
            })
            .collect();
        let scan = complete_scan();
        let mut state = State::new();
        let engine = Engine::new(&Config::default());
        engine.scan(&mut state, &scan, findings, DateTime::<Utc>::UNIX_EPOCH);
        let ts = state.targets.values_mut().next().unwrap();
        for (i, rec) in ts.findings.values_mut().enumerate() {
            match i % 7 {
                0 => rec.status = Status::Resolved,
                1 | 2 => rec.team = Some("web".into()),
                3 => rec.team = Some("payments".into()),
                _ => {}
            }
        }
        let mut one = OpenCounts::new();
        one.insert(Some("web"), [(Severity::Info, 2)].into_iter().collect());
        let mut all = one.clone();
        let none_one = count_open(&ts.findings, &mut one, usize::MAX);
        let none_all = count_open(&ts.findings, &mut all, 0);
        assert_eq!(one, all);
        assert_eq!(none_one, none_all);
        assert!(none_one > 2000, "{none_one}");
        assert_eq!(one.len(), 3);
    }
}
