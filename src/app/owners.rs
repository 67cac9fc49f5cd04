//! `custody owners explain` and `custody owners check`.

use crate::cli::{CheckArgs, ExplainArgs};
use crate::ownership::{explain_codeowners, Ownership, Resolver};
use std::io::{BufRead, Write};

/// `custody owners explain`; returns the exit status.
pub fn explain(
    args: ExplainArgs,
    stdin: impl BufRead,
    stdout: impl Write,
    mut stderr: impl Write,
) -> u8 {
    if let Some(file) = &args.codeowners {
        return explain_codeowners::run(
            file,
            args.gitlab,
            &args.paths,
            args.paths_from.as_deref(),
            stdin,
            stdout,
            stderr,
        );
    }
    let (Some(config), Some(target)) = (&args.owners, &args.target) else {
        let _ = writeln!(
            stderr,
            "custody owners explain: pass --codeowners FILE, or --owners CONFIG --target SPEC"
        );
        return 2;
    };
    let target: crate::model::Target = match target.parse() {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(stderr, "custody owners explain: --target: {e}");
            return 2;
        }
    };
    let own = match Ownership::load(config) {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(stderr, "custody owners explain: {e}");
            return 2;
        }
    };
    let mut paths: Vec<String> = args.path.iter().chain(args.paths.iter()).cloned().collect();
    if let Some(from) = &args.paths_from {
        match read_paths(from, stdin) {
            Ok(more) => paths.extend(more),
            Err(e) => {
                let _ = writeln!(
                    stderr,
                    "custody owners explain: --paths-from {}: {e}",
                    from.display()
                );
                return 2;
            }
        }
    }
    let resolver = Resolver::new(std::sync::Arc::new(own));
    let mut out = std::io::BufWriter::new(stdout);
    let mut write = |path: Option<&str>| {
        let a = resolver.explain(&target, path, None);
        let line = serde_json::json!({
            "target": target.to_string(),
            "path": path,
            "team": a.team,
            "source": a.source,
            "file": a.file,
            "line": a.line,
            "rule": a.rule,
            "owners": a.owners,
        });
        writeln!(out, "{line}")
    };
    let result = if paths.is_empty() {
        write(None)
    } else {
        paths.iter().try_for_each(|p| write(Some(p)))
    };
    match result.and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(stderr, "custody owners explain: {e}");
            2
        }
    }
}

/// Paths one per line from a file or `-` (standard input); a trailing
/// `\r` is dropped and empty lines skipped.
pub fn read_paths(from: &std::path::Path, stdin: impl BufRead) -> std::io::Result<Vec<String>> {
    let reader: Box<dyn BufRead> = if from.as_os_str() == "-" {
        Box::new(stdin)
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(from)?))
    };
    let mut out = Vec::new();
    for line in reader.lines() {
        let line = line?;
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if !line.is_empty() {
            out.push(line.to_string());
        }
    }
    Ok(out)
}

/// `custody owners check`: validates a configuration and lists problems
/// (invalid CODEOWNERS lines, owner handles no team claims, rules that can
/// never decide). Exit 0 when clean, 1 when problems are listed, 2 when the
/// configuration cannot be used.
pub fn check(args: CheckArgs, stdout: impl Write, mut stderr: impl Write) -> u8 {
    let own = match Ownership::load(&args.owners) {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(stderr, "custody owners check: {e}");
            return 2;
        }
    };
    let mut problems = own.warnings.clone();
    for (target, repo) in &own.repos {
        if let Some((file, co)) = &repo.codeowners {
            for rule in co.unreachable() {
                problems.push(format!(
                    "{file}:{}: rule {:?} for {target} can never decide (a later rule always wins)",
                    rule.line, rule.pattern
                ));
            }
        }
    }
    let mut out = std::io::BufWriter::new(stdout);
    for p in &problems {
        let _ = writeln!(out, "{p}");
    }
    let _ = writeln!(
        out,
        "{}: {} teams, {} repositories, {} problems",
        own.origin,
        own.teams.len(),
        own.repos.len(),
        problems.len()
    );
    let _ = out.flush();
    u8::from(!problems.is_empty())
}
