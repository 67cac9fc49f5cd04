//! Ownership: who owns the code a finding points at, and why.
//!
//! - [`codeowners`]: CODEOWNERS files with GitHub's semantics (and GitLab's
//!   sections as an option), compiled into a fast matcher.
//! - [`explain_codeowners`]: `custody owners explain --codeowners`.

pub mod codeowners;
pub mod explain_codeowners;

use crate::cli::{CheckArgs, ExplainArgs};
use std::io::{BufRead, Write};

/// `custody owners explain`; returns the exit status.
pub fn explain(
    args: ExplainArgs,
    stdin: impl BufRead,
    stdout: impl Write,
    mut stderr: impl Write,
) -> u8 {
    match &args.codeowners {
        Some(file) => explain_codeowners::run(
            file,
            args.gitlab,
            &args.paths,
            args.paths_from.as_deref(),
            stdin,
            stdout,
            stderr,
        ),
        None => {
            let _ = writeln!(stderr, "custody owners explain: pass --codeowners FILE");
            2
        }
    }
}

/// `custody owners check`; returns the exit status.
pub fn check(args: CheckArgs, _stdout: impl Write, mut stderr: impl Write) -> u8 {
    let _ = writeln!(
        stderr,
        "custody owners check: cannot read {}",
        args.owners.display()
    );
    2
}
