//! `custody process`: its flags validated into [`Settings`], then run.

use crate::cli::ProcessArgs;
use crate::config::Config;
use crate::lifecycle::OwnershipUsed;
use crate::model::{Severity, Target};
use crate::normalize::Format;
use crate::process::{run, Settings, UsageError};
use chrono::{DateTime, Utc};
use std::io::{Read, Write};

/// Validates raw flags; `now` is the clock used when `--at` is absent.
pub fn settings(args: ProcessArgs, now: DateTime<Utc>) -> Result<Settings, UsageError> {
    let flag = |flag, message: String| UsageError::Flag { flag, message };
    let target = args
        .target
        .map(|t| t.parse::<Target>())
        .transpose()
        .map_err(|e| flag("target", e.to_string()))?;
    let format = args
        .format
        .map(|f| {
            Format::from_name(&f).ok_or_else(|| {
                let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
                flag(
                    "format",
                    format!("unknown format {f:?}; known: {}", names.join(", ")),
                )
            })
        })
        .transpose()?;
    let scanner = match args.scanner {
        Some(s) if s.trim().is_empty() || s.chars().any(char::is_whitespace) => {
            return Err(flag("scanner", format!("{s:?} must be one word")))
        }
        s => s.map(|s| s.to_ascii_lowercase()),
    };
    let now = match args.at {
        Some(at) => DateTime::parse_from_rfc3339(&at)
            .map_err(|e| flag("at", format!("{at:?} is not an RFC 3339 time: {e}")))?
            .with_timezone(&Utc),
        None => now,
    };
    for (name, value) in [("commit", &args.commit), ("ref", &args.git_ref)] {
        if let Some(v) = value {
            if v.is_empty()
                || v.len() > 255
                || v.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(flag(
                    name,
                    format!("{v:?} must be 1 to 255 characters, without whitespace"),
                ));
            }
        }
    }
    if let Some(dir) = &args.source {
        if !dir.is_dir() {
            return Err(flag(
                "source",
                format!("{} is not a directory", dir.display()),
            ));
        }
    }
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let fail_on = args
        .fail_on
        .map(|f| {
            Severity::ALL_DESC
                .into_iter()
                .find(|s| s.as_str() == f.to_ascii_lowercase())
                .ok_or_else(|| {
                    flag(
                        "fail-on",
                        format!("unknown severity {f:?}; known: critical, high, medium, low, info"),
                    )
                })
        })
        .transpose()?;
    // `--owners none` says no ownership on purpose; `./none` names a file.
    let owners_none = args.owners.as_deref() == Some(std::path::Path::new("none"));
    let (owners, owners_used) = match args.owners.as_deref().filter(|_| !owners_none) {
        Some(path) => {
            let (own, files) = crate::kafka::ownership_topic::files_of(path)?;
            let used = OwnershipUsed {
                config: path.display().to_string(),
                version: crate::kafka::ownership_topic::manifest_of(&files).id(),
            };
            (Some(std::sync::Arc::new(own)), Some(used))
        }
        None => (None, None),
    };
    Ok(Settings {
        owners,
        owners_used,
        owners_none,
        fail_on,
        partial: args.partial,
        summary: args.summary,
        files: args.files,
        target,
        scanner,
        format,
        state: args.state,
        decisions: args.decisions,
        source: args.source,
        config,
        emit: args.emit,
        commit: args.commit,
        git_ref: args.git_ref,
        now,
    })
}

/// Runs `custody process` with raw flags; returns the exit status.
pub fn command(
    args: ProcessArgs,
    stdin: impl Read,
    stdout: impl Write,
    mut stderr: impl Write,
) -> u8 {
    match settings(args, Utc::now()) {
        Ok(settings) => run(&settings, stdin, stdout, stderr),
        Err(e) => {
            let _ = writeln!(stderr, "custody process: {e}");
            2
        }
    }
}
