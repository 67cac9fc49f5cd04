//! A scanned checkout's source lines, for the fingerprints of findings
//! whose report carries no snippet: `process --source` reads the flagged
//! line of each finding from it, `publish --source` writes the line's hash
//! into the report before sending it.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// Source files of a checkout, read once each, for line lookups. Relative
/// paths that would leave the checkout (`..`), absolute paths outside it,
/// and files over 16 MiB are not read. An absolute path inside the
/// checkout (Ruff writes `file:///abs/path` URIs) is read relative to it.
pub struct SourceFiles {
    root: PathBuf,
    /// The root, absolute and without symbolic links, to take absolute
    /// paths apart.
    canonical: Option<PathBuf>,
    files: HashMap<String, Option<String>>,
}

impl SourceFiles {
    const MAX_FILE: u64 = 16 << 20;

    /// The checkout at `root`.
    pub fn new(root: &Path) -> SourceFiles {
        SourceFiles {
            root: root.to_path_buf(),
            canonical: std::fs::canonicalize(root).ok(),
            files: HashMap::new(),
        }
    }

    /// Line `n` (1-based) of `path`, if the file exists inside the root.
    pub fn line(&mut self, path: &str, n: u32) -> Option<&str> {
        let root = &self.root;
        let canonical = self.canonical.as_deref();
        let text = self.files.entry(path.to_string()).or_insert_with(|| {
            let mut rel = Path::new(path);
            if rel.is_absolute() {
                rel = rel.strip_prefix(canonical?).ok()?;
            }
            let inside = rel
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_inside_the_checkout_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pkg")).unwrap();
        std::fs::write(dir.path().join("pkg/a.py"), "import os\n  eval(x)\n").unwrap();
        let mut files = SourceFiles::new(dir.path());
        assert_eq!(files.line("pkg/a.py", 2), Some("  eval(x)"));
        assert_eq!(files.line("./pkg/a.py", 1), Some("import os"));
        assert_eq!(files.line("pkg/a.py", 3), None);
        assert_eq!(files.line("pkg/a.py", 0), None);
        assert_eq!(files.line("pkg/missing.py", 1), None);
        assert_eq!(files.line("../a.py", 1), None);
        let abs = std::fs::canonicalize(dir.path()).unwrap().join("pkg/a.py");
        assert_eq!(files.line(abs.to_str().unwrap(), 1), Some("import os"));
        assert_eq!(files.line("/etc/hostname", 1), None);
    }
}
