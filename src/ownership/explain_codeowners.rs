//! `custody owners explain --codeowners` (being written).

use std::io::{BufRead, Write};
use std::path::Path;

/// Prints one JSON object per path; returns the exit status.
pub fn run(
    _codeowners: &Path,
    _gitlab: bool,
    _paths: &[String],
    _paths_from: Option<&Path>,
    _stdin: impl BufRead,
    _stdout: impl Write,
    mut stderr: impl Write,
) -> u8 {
    let _ = writeln!(stderr, "custody owners explain: not available yet");
    2
}
