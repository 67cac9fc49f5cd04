//! `custody owners explain --codeowners FILE`: who owns each path by a
//! CODEOWNERS file alone, one JSON object per path, in input order.
//!
//! Each line is `{"path":...,"owners":[...],"line":N}`: the deciding rule's
//! owners as written and its 1-based line; `"owners":[]` with the line when
//! that rule has no owners; `"owners":[],"line":null` when no rule matches.
//! With `--gitlab`, owners are united across sections, `line` is the last
//! deciding line and `"lines"` lists them all. The format is the one of
//! `shared/tools/codeowners_oracle.py`, so answers can be diffed against it.
//!
//! Paths come from the arguments, then from `--paths-from FILE` (or `-`,
//! standard input), one per line: a trailing `\n` then `\r` is stripped and
//! empty lines are skipped. Paths from a file are streamed, so a
//! `git ls-files` of any size needs no memory for the list.
//!
//! Problems in the CODEOWNERS file are listed on standard error with their
//! line numbers and do not stop the run. Exit status: 0 on success; 2 when
//! the CODEOWNERS file or the paths file cannot be read, when no path
//! source is given (neither PATH arguments nor `--paths-from`; an empty
//! paths file is not an error), or when output cannot be written.

use super::codeowners::{CodeOwners, Flavor};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

const NAME: &str = "custody owners explain";

/// Prints one JSON object per path; returns the exit status.
pub fn run(
    codeowners: &Path,
    gitlab: bool,
    paths: &[String],
    paths_from: Option<&Path>,
    stdin: impl BufRead,
    stdout: impl Write,
    mut stderr: impl Write,
) -> u8 {
    if paths.is_empty() && paths_from.is_none() {
        let _ = writeln!(
            stderr,
            "{NAME}: no paths: give PATH arguments or --paths-from FILE|-"
        );
        return 2;
    }
    let text = match std::fs::read(codeowners) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            let _ = writeln!(stderr, "{NAME}: cannot read {}: {e}", codeowners.display());
            return 2;
        }
    };
    let flavor = if gitlab {
        Flavor::GitLab
    } else {
        Flavor::GitHub
    };
    let co = CodeOwners::parse(&text, flavor);
    for p in co.problems() {
        let _ = writeln!(
            stderr,
            "{}:{}: {}: {}",
            codeowners.display(),
            p.line,
            p.message,
            p.text
        );
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout);
    let mut record = String::with_capacity(256);
    let mut emit = |path: &str, out: &mut dyn Write| -> std::io::Result<()> {
        record.clear();
        answer(&co, gitlab, path, &mut record);
        out.write_all(record.as_bytes())
    };
    for p in paths {
        if let Err(e) = emit(p, &mut out) {
            return write_failed(&mut stderr, &e);
        }
    }
    if let Some(from) = paths_from {
        let reader: Box<dyn BufRead> = if from.as_os_str() == "-" {
            Box::new(stdin)
        } else {
            match std::fs::File::open(from) {
                Ok(f) => Box::new(BufReader::with_capacity(1 << 16, f)),
                Err(e) => {
                    let _ = out.flush();
                    let _ = writeln!(stderr, "{NAME}: --paths-from {}: {e}", from.display());
                    return 2;
                }
            }
        };
        let result = for_each_path(reader, |p| emit(p, &mut out));
        if let Err(e) = result {
            let _ = out.flush();
            let _ = writeln!(stderr, "{NAME}: {}: {e}", from.display());
            return 2;
        }
    }
    match out.flush() {
        Ok(()) => 0,
        Err(e) => write_failed(&mut stderr, &e),
    }
}

fn write_failed(stderr: &mut impl Write, e: &std::io::Error) -> u8 {
    let _ = writeln!(stderr, "{NAME}: cannot write: {e}");
    2
}

/// Calls `f` with every non-empty line of `reader`, without its `\n` and
/// then `\r`; invalid UTF-8 is replaced, not fatal.
fn for_each_path(
    mut reader: impl BufRead,
    mut f: impl FnMut(&str) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        let mut line = buf.as_slice();
        line = line.strip_suffix(b"\n").unwrap_or(line);
        line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.is_empty() {
            f(&String::from_utf8_lossy(line))?;
        }
    }
}

/// One JSON line for `path`.
fn answer(co: &CodeOwners, gitlab: bool, path: &str, out: &mut String) {
    let decision = co.lookup(path);
    out.push_str("{\"path\":");
    push_json(out, path);
    out.push_str(",\"owners\":[");
    if let Some(d) = &decision {
        for (i, o) in d.owners.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json(out, o);
        }
    }
    out.push_str("],\"line\":");
    match &decision {
        Some(d) => out.push_str(&d.line().to_string()),
        None => out.push_str("null"),
    }
    if gitlab {
        out.push_str(",\"lines\":[");
        if let Some(d) = &decision {
            let lines: Vec<String> = d.rules.iter().map(|r| r.line.to_string()).collect();
            out.push_str(&lines.join(","));
        }
        out.push(']');
    }
    out.push_str("}\n");
}

fn push_json(out: &mut String, s: &str) {
    // Serializing a &str cannot fail; fall back to an empty string anyway.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explain(
        co: &str,
        gitlab: bool,
        args: &[&str],
        from: Option<&str>,
        stdin: &str,
    ) -> (u8, String, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("CODEOWNERS");
        std::fs::write(&file, co).expect("write");
        let paths: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let from = from.map(Path::new);
        let code = run(
            &file,
            gitlab,
            &paths,
            from,
            stdin.as_bytes(),
            &mut out,
            &mut err,
        );
        (
            code,
            String::from_utf8(out).expect("utf-8"),
            String::from_utf8(err).expect("utf-8"),
        )
    }

    #[test]
    fn records() {
        let (code, out, err) = explain(
            "* @a\n/vendor/\n!x @b\n",
            false,
            &["z.rs", "vendor/q\"uote"],
            Some("-"),
            "one\r\n\n./two\n",
        );
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "{\"path\":\"z.rs\",\"owners\":[\"@a\"],\"line\":1}\n\
             {\"path\":\"vendor/q\\\"uote\",\"owners\":[],\"line\":2}\n\
             {\"path\":\"one\",\"owners\":[\"@a\"],\"line\":1}\n\
             {\"path\":\"./two\",\"owners\":[\"@a\"],\"line\":1}\n"
        );
        assert!(err.contains("CODEOWNERS:3: `!` negation"), "{err}");
        let (_, out, _) = explain("/a @a\n", false, &["b"], None, "");
        assert_eq!(out, "{\"path\":\"b\",\"owners\":[],\"line\":null}\n");
        let (_, out, _) = explain("* @a\n[S] @s\n*.md\n", true, &["x.md", "y"], None, "");
        assert_eq!(
            out,
            "{\"path\":\"x.md\",\"owners\":[\"@a\",\"@s\"],\"line\":3,\"lines\":[1,3]}\n\
             {\"path\":\"y\",\"owners\":[\"@a\"],\"line\":1,\"lines\":[1]}\n"
        );
    }

    #[test]
    fn exit_codes() {
        assert_eq!(explain("* @a\n", false, &[], None, "").0, 2);
        assert_eq!(
            explain("* @a\n", false, &[], Some("/nonexistent/paths"), "").0,
            2
        );
        let (code, out, _) = explain("* @a\n", false, &[], Some("-"), "");
        assert_eq!((code, out.as_str()), (0, ""));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(
            Path::new("/nonexistent/CODEOWNERS"),
            false,
            &["a".into()],
            None,
            &b""[..],
            &mut out,
            &mut err,
        );
        assert_eq!(code, 2);
        assert!(String::from_utf8_lossy(&err).contains("cannot read"));
    }
}
