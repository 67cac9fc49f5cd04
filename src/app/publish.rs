//! `custody publish`: report files (and decisions) onto the reports topic.

use crate::kafka::publish::{properties, PublishOptions, Publisher};
use crate::model::Target;
use crate::normalize::Format;
use std::time::Duration;

/// `custody publish`: exit 0 when every file was delivered, 1 when some
/// file could not be read, 2 when delivery failed.
pub fn command(args: crate::cli::PublishArgs) -> u8 {
    let target: Option<Target> = match args.target.as_deref().map(str::parse::<Target>) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            eprintln!("custody publish: --target: {e}");
            return 2;
        }
    };
    let format = match &args.format {
        Some(f) => match Format::from_name(f) {
            Some(f) => Some(f),
            None => {
                eprintln!("custody publish: --format: unknown format {f:?}");
                return 2;
            }
        },
        None => None,
    };
    let props = match properties(&args.property) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("custody publish: {e}");
            return 2;
        }
    };
    let publisher = match Publisher::new(
        &args.brokers,
        props.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("custody publish: {e}");
            return 2;
        }
    };
    let mut code = 0;
    if args.decisions {
        for path in &args.files {
            match decisions(&publisher, &args.topic, path, target.as_ref()) {
                Ok(n) => println!("{}\t{n} decision(s)", path.display()),
                Err(e) => {
                    eprintln!("custody publish: {}: {e}", path.display());
                    code = 1;
                }
            }
        }
        if let Err(e) = publisher.flush(Duration::from_secs(args.timeout_secs)) {
            eprintln!("custody publish: {e}");
            return 2;
        }
        return code;
    }
    let Some(target) = target else {
        eprintln!("custody publish: --target is required for reports");
        return 2;
    };
    if let Some(dir) = &args.source {
        if !dir.is_dir() {
            eprintln!(
                "custody publish: --source: {} is not a directory",
                dir.display()
            );
            return 2;
        }
    }
    let multiple = args.files.len() > 1;
    for path in &args.files {
        let mut bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("custody publish: cannot read {}: {e}", path.display());
                code = 1;
                continue;
            }
        };
        if let Some(dir) = &args.source {
            match with_line_hashes(&bytes, format, dir) {
                Ok(Some((annotated, did))) => {
                    bytes = annotated;
                    report_line_hashes(path, dir, did);
                }
                Ok(None) => eprintln!(
                    "custody publish: {}: not SARIF; --source adds line hashes to SARIF reports only, sent as it is",
                    path.display()
                ),
                Err(e) => {
                    eprintln!("custody publish: {}: {e}", path.display());
                    code = 1;
                    continue;
                }
            }
        }
        let opts = PublishOptions {
            topic: args.topic.clone(),
            target: target.clone(),
            scanner: args.scanner.clone(),
            commit: args.commit.clone(),
            git_ref: args.git_ref.clone(),
            format,
            // One scan id for several files would merge them into one scan.
            scan_id: if multiple { None } else { args.scan_id.clone() },
            complete: !args.partial,
            chunk_bytes: args.chunk_bytes,
        };
        match publisher.send(&opts, &bytes) {
            Ok(p) => println!(
                "{}\tscan {}\t{} bytes in {} message(s)",
                path.display(),
                p.scan_id,
                p.bytes,
                p.chunks
            ),
            Err(e) => {
                eprintln!("custody publish: {}: {e}", path.display());
                return 2;
            }
        }
    }
    if let Err(e) = publisher.flush(Duration::from_secs(args.timeout_secs)) {
        eprintln!("custody publish: {e}");
        return 2;
    }
    code
}

/// Publishes every decision of a JSON Lines file; nothing is sent when a
/// line is not a valid decision.
/// Sends a file of decisions: JSON Lines of decision records, each keyed
/// by its target, or a VEX document (CycloneDX VEX or OpenVEX), keyed by
/// `target`, the one it is about. Returns how many were sent.
fn decisions(
    p: &Publisher,
    topic: &str,
    path: &std::path::Path,
    target: Option<&Target>,
) -> Result<usize, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    if crate::normalize::vex::parse(&bytes)?.is_some() {
        let Some(target) = target else {
            return Err(
                "a VEX document is applied to one target: pass --target (publish it once per target)"
                    .into(),
            );
        };
        p.send_vex(topic, target, &bytes)?;
        return Ok(1);
    }
    let records = crate::lifecycle::read_decisions(path)?;
    for (line, d) in &records {
        d.validate().map_err(|e| format!("line {line}: {e}"))?;
    }
    for (_, d) in &records {
        p.send_decision(topic, d)?;
    }
    Ok(records.len())
}

/// A SARIF report with the hash of each result's flagged line, read from
/// the checkout at `dir`, written in (`None` for other formats).
fn with_line_hashes(
    bytes: &[u8],
    format: Option<Format>,
    dir: &std::path::Path,
) -> Result<Option<(Vec<u8>, crate::normalize::sarif::LineHashes)>, String> {
    let format = match format {
        Some(f) => f,
        None => crate::normalize::sniff::sniff(bytes).map_err(|e| e.to_string())?,
    };
    if format != Format::Sarif {
        return Ok(None);
    }
    let mut files = crate::source::SourceFiles::new(dir);
    let mut line = |path: &str, n: u32| files.line(path, n).map(str::to_string);
    crate::normalize::sarif::add_line_hashes(bytes, &mut line)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Says how many results got a line hash, and warns when results with a
/// location got none (a checkout that is not the scanned one).
fn report_line_hashes(
    path: &std::path::Path,
    dir: &std::path::Path,
    did: crate::normalize::sarif::LineHashes,
) {
    let missed = did.located - did.hashed - did.secret;
    eprintln!(
        "custody publish: {}: line hashes for {} of {} located results{}",
        path.display(),
        did.hashed,
        did.located,
        if did.secret > 0 {
            format!(" ({} of a secret scanner left without)", did.secret)
        } else {
            String::new()
        }
    );
    if missed > 0 {
        eprintln!(
            "custody publish: warning: {}: {missed} results name a line that {} does not hold (a file missing, a line out of range or blank): is it the scanned checkout?",
            path.display(),
            dir.display()
        );
    }
}
