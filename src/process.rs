//! `custody process`: the engine over report files, for CI pipelines and
//! backfills. Each file is one complete scan of its target; events go to
//! standard output as JSON Lines and a per-team summary to standard error.
//!
//! Exit status: 0 on success, 1 when any input was rejected (each named on
//! standard error, the others still processed), 2 for usage or
//! configuration errors (nothing processed, the state file untouched).

use crate::config::Config;
use crate::engine::{Engine, Output, Sink};
use crate::lifecycle::State;
use crate::model::{FindingEvent, ScanMeta, Severity, Status, Target, TicketEvent};
use crate::normalize::{self, DecodeError, Format};
use chrono::{DateTime, Utc};
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
    /// Which events to print.
    pub emit: Emit,
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

/// Why one input was rejected (exit status 1; the rest go on).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Could not be read.
    #[error("cannot read: {0}")]
    Read(#[from] std::io::Error),
    /// Could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// No target given and the report names none.
    #[error("the report names no target; pass --target")]
    NoTarget,
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
        tally: Tally::default(),
        error: None,
    };
    let mut rejected = 0usize;

    // Ownership may have changed since the state was saved: open findings
    // whose team changed are reassigned before anything else happens.
    if s.owners.is_some() {
        out.feed(engine.reattribute(&mut state, s.now));
    }
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
                        Ok(o) => out.feed(o),
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
        match scan_file(s, &engine, &mut state, path, &mut stdin, &mut out) {
            Ok(n) => out.tally.scans.push((shown, n)),
            Err(e) => {
                rejected += 1;
                let _ = writeln!(stderr, "custody process: rejected {shown}: {e}");
            }
        }
    }
    for (path, doc) in &vex_docs {
        let (o, matched) = engine.vex(&mut state, doc, s.now);
        out.feed(o);
        let _ = writeln!(
            stderr,
            "custody process: {} ({}): {} statements, about {matched} findings",
            path.display(),
            doc.kind,
            doc.statements.len()
        );
    }
    out.feed(engine.tick(&mut state, s.now));
    let tally = match out.finish() {
        Ok(tally) => tally,
        Err(e) => {
            let _ = writeln!(stderr, "custody process: writing events: {e}");
            return 2;
        }
    };
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
    let _ = summary(&mut stderr, &state, &tally);
    // The process is about to exit: freeing a large state record by record
    // costs a tenth of the run and returns nothing useful.
    std::mem::forget(state);
    u8::from(rejected > 0)
}

fn scan_file(
    s: &Settings,
    engine: &Engine,
    state: &mut State,
    path: &Path,
    stdin: &mut impl Read,
    sink: &mut dyn Sink,
) -> Result<usize, InputError> {
    let limit = s.config.max_report_bytes;
    let bytes = if path.as_os_str() == "-" {
        read_capped(stdin, limit, 0)?
    } else {
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        if size > limit {
            return Err(DecodeError::TooLarge { size, limit }.into());
        }
        read_capped(file, limit, size)?
    };
    let (_format, mut report) = normalize::decode(&bytes, s.format, engine.decode_context())?;
    let scan_id = ScanMeta::content_id(&bytes);
    drop(bytes);
    let target = s
        .target
        .clone()
        .or(report.target.take())
        .ok_or(InputError::NoTarget)?;
    if let Some(name) = &s.scanner {
        report.set_scanner(name);
    }
    if let Some(dir) = &s.source {
        let salt = &engine.decode_context().secret_salt;
        let mut files = SourceFiles::new(dir);
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
    let scan = ScanMeta {
        scan_id,
        target,
        commit: report.commit,
        git_ref: report.git_ref,
        complete: true,
        coverage: report.coverage,
    };
    engine.scan_into(state, &scan, report.findings, s.now, sink);
    Ok(n)
}

/// Source files of a checkout, read once each, for line lookups. Paths
/// that would leave the checkout (absolute, `..`) and files over 16 MiB are
/// not read.
struct SourceFiles<'a> {
    root: &'a Path,
    files: std::collections::HashMap<String, Option<String>>,
}

impl<'a> SourceFiles<'a> {
    const MAX_FILE: u64 = 16 << 20;

    fn new(root: &'a Path) -> SourceFiles<'a> {
        SourceFiles {
            root,
            files: std::collections::HashMap::new(),
        }
    }

    /// Line `n` (1-based) of `path`, if the file exists inside the root.
    fn line(&mut self, path: &str, n: u32) -> Option<&str> {
        let root = self.root;
        let text = self.files.entry(path.to_string()).or_insert_with(|| {
            let rel = Path::new(path);
            let inside = rel.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::CurDir
                )
            });
            if !inside {
                return None;
            }
            let full = root.join(rel);
            let size = std::fs::metadata(&full).ok()?.len();
            if size > Self::MAX_FILE {
                return None;
            }
            let bytes = std::fs::read(full).ok()?;
            Some(String::from_utf8_lossy(&bytes).into_owned())
        });
        let index = usize::try_from(n.checked_sub(1)?).ok()?;
        text.as_deref()?.lines().nth(index)
    }
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
}

/// Writes each event as one JSON line as it comes, and counts them for the
/// summary. The first write error is kept and reported at the end.
struct JsonLines<W: Write> {
    out: BufWriter<W>,
    emit: Emit,
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

impl<W: Write> Sink for JsonLines<W> {
    fn finding(&mut self, e: FindingEvent) {
        use crate::model::FindingEventKind as F;
        let slot = match e.event {
            F::Opened => Some(0),
            F::Resolved => Some(1),
            F::Reopened => Some(2),
            _ => None,
        };
        if let Some(i) = slot {
            self.tally.events.entry(e.team.clone()).or_default()[i] += 1;
        }
        if self.emit != Emit::Tickets {
            self.write(&e);
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

/// The per-team table on standard error: open findings by severity (from
/// the whole state), and what this run opened, resolved and reopened.
fn summary(w: &mut impl Write, state: &State, tally: &Tally) -> std::io::Result<()> {
    let mut open: BTreeMap<Option<String>, BTreeMap<Severity, u64>> = BTreeMap::new();
    let mut tickets_open: BTreeMap<Option<String>, u64> = BTreeMap::new();
    let mut unattributed: BTreeMap<&str, u64> = BTreeMap::new();
    for (target, ts) in &state.targets {
        for rec in ts.findings.values().filter(|r| r.status == Status::Open) {
            *open
                .entry(rec.team.clone())
                .or_default()
                .entry(rec.severity())
                .or_default() += 1;
            if rec.team.is_none() {
                *unattributed.entry(target).or_default() += 1;
            }
        }
        for t in ts
            .tickets
            .values()
            .filter(|t| t.status == crate::ticket::TicketStatus::Open)
        {
            *tickets_open.entry(t.team.clone()).or_default() += 1;
        }
    }
    for (file, n) in &tally.scans {
        writeln!(w, "scanned {file}: {n} findings")?;
    }
    let teams: BTreeSet<Option<String>> = open.keys().chain(tally.events.keys()).cloned().collect();
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
    for team in teams {
        let sev = open.get(&team);
        let n = |s: Severity| sev.and_then(|m| m.get(&s)).copied().unwrap_or(0);
        let ev = tally.events.get(&team).copied().unwrap_or_default();
        let name = team.as_deref().unwrap_or("(unattributed)");
        writeln!(
            w,
            "{:<24} {:>8} {:>6} {:>6} {:>6} {:>6} {:>7} {:>8} {:>8} {:>8}",
            name,
            n(Severity::Critical),
            n(Severity::High),
            n(Severity::Medium),
            n(Severity::Low),
            n(Severity::Info),
            ev[0],
            ev[1],
            ev[2],
            tickets_open.get(&team).copied().unwrap_or(0),
        )?;
    }
    for (target, n) in unattributed {
        writeln!(w, "unattributed open findings on {target}: {n}")?;
    }
    Ok(())
}
