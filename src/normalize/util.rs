//! Small helpers the decoders share: paths, ecosystems, vulnerability ids.

use crate::fingerprint;
use crate::model::{Category, Finding};

/// Turns a scanner's file reference into a target-relative path with `/`
/// separators: drops `file://`, a leading `./` or `/` base, decodes `%xx`.
pub fn clean_path(raw: &str, base: Option<&str>) -> String {
    let mut s = raw.trim();
    if let Some(rest) = s.strip_prefix("file://") {
        s = rest;
    }
    let decoded = percent_decode(s);
    let mut p = decoded.replace('\\', "/");
    while let Some(rest) = p.strip_prefix("./") {
        p = rest.to_string();
    }
    match base {
        Some(base) => strip_base(&p, base),
        None => p,
    }
}

/// Makes a cleaned path relative to a base URI (`file:///src/` and
/// `/src/app/x.py` give `app/x.py`); other paths are returned as they are.
pub fn strip_base(path: &str, base: &str) -> String {
    let base = percent_decode(base.trim().trim_start_matches("file://")).replace('\\', "/");
    let base = base.trim_end_matches('/');
    if !base.is_empty() {
        if let Some(rest) = path.strip_prefix(base) {
            if rest.starts_with('/') {
                return rest.trim_start_matches('/').to_string();
            }
        }
    }
    path.to_string()
}

/// Decodes `%xx` escapes; leaves malformed escapes as they are.
pub(crate) fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Maps a tool's package type (Trivy `Type`, Grype `artifact.type`) or a
/// package-URL type to the package-URL type, so that tools agree on the
/// ecosystem of the same package.
pub fn ecosystem(kind: &str) -> String {
    let k = kind.trim().to_ascii_lowercase();
    let mapped = match k.as_str() {
        "npm" | "yarn" | "pnpm" | "node-pkg" | "bun" => "npm",
        "python" | "pip" | "pipenv" | "poetry" | "python-pkg" | "uv" | "conda-pkg" | "pypi" => {
            "pypi"
        }
        "deb" | "debian" | "ubuntu" | "dpkg" => "deb",
        "apk" | "alpine" | "wolfi" | "chainguard" => "apk",
        "rpm" | "redhat" | "centos" | "rocky" | "alma" | "amazon" | "oracle" | "fedora"
        | "suse" | "opensuse" | "opensuse.leap" | "sles" | "cbl-mariner" | "azurelinux"
        | "photon" => "rpm",
        "go-module" | "gobinary" | "gomod" | "golang" | "go" => "golang",
        "java-archive" | "jar" | "pom" | "gradle" | "maven" | "sbt" | "jenkins-plugin" => "maven",
        "gem" | "gemspec" | "bundler" | "ruby" => "gem",
        "cargo" | "rust-binary" | "rust-crate" | "rustbinary" => "cargo",
        "nuget" | "dotnet-core" | "dotnet" | "packages-lock" | "dotnet-deps" => "nuget",
        "composer" | "php-composer" | "php-pecl" | "composer-vendor" => "composer",
        "swift" | "cocoapods" | "pod" => "cocoapods",
        "hex" | "mix" | "erlang-otp" => "hex",
        "pub" | "dart" => "pub",
        "conan" | "conan-lock" => "conan",
        _ => k.as_str(),
    };
    mapped.to_string()
}

/// The package-URL type of a purl such as `pkg:npm/lodash@4.17.20`.
pub fn purl_type(purl: &str) -> Option<&str> {
    let rest = purl.strip_prefix("pkg:")?;
    let end = rest.find('/')?;
    Some(&rest[..end])
}

/// Chooses the canonical id among a vulnerability's ids (CVE first, then
/// GHSA, then the rest in order) and returns it with the other ids as
/// aliases, deduplicated. Ids are uppercased for CVE/GHSA so spellings agree.
pub fn canonical_vuln_id<'a>(
    ids: impl IntoIterator<Item = &'a str>,
) -> Option<(String, Vec<String>)> {
    let mut all: Vec<String> = Vec::new();
    for id in ids {
        let id = id.trim();
        if id.is_empty() {
            continue;
        }
        let norm = match id.get(..5) {
            Some(p) if p.eq_ignore_ascii_case("ghsa-") => {
                format!("GHSA-{}", id[5..].to_ascii_lowercase())
            }
            _ => match id.get(..4) {
                Some(p) if p.eq_ignore_ascii_case("cve-") => id.to_ascii_uppercase(),
                _ => id.to_string(),
            },
        };
        if !all.contains(&norm) {
            all.push(norm);
        }
    }
    let rank = |id: &str| {
        if id.starts_with("CVE-") {
            0
        } else if id.starts_with("GHSA-") {
            1
        } else {
            2
        }
    };
    let best = (0..all.len()).min_by_key(|&i| (rank(&all[i]), i))?;
    let canonical = all.remove(best);
    Some((canonical, all))
}

/// Sets the content hash from the snippet's first line when the decoder has
/// the line text; secrets get a salted hash and lose the snippet.
pub fn set_line_content(f: &mut Finding, line: Option<&str>, salt: &str) {
    if let Some(line) = line {
        if !line.trim().is_empty() {
            f.content_hash = Some(if f.category == Category::Secret {
                fingerprint::line_hash_salted(line, salt)
            } else {
                fingerprint::line_hash(line)
            });
        }
    }
    if f.category == Category::Secret {
        f.evidence.snippet = None;
    }
}

/// Picks a category from a tool's name, for formats (SARIF) that carry many
/// tools.
pub fn category_for_tool(tool: &str) -> Category {
    let t = tool.to_ascii_lowercase();
    let has = |w: &str| t.contains(w);
    if has("gitleaks") || has("trufflehog") || has("detect-secrets") || has("secret") {
        Category::Secret
    } else if has("checkov")
        || has("tfsec")
        || has("kics")
        || has("terrascan")
        || has("hadolint")
        || has("kube-linter")
        || has("kubesec")
        || has("cfn")
        || has("dockle")
    {
        Category::Iac
    } else if has("grype")
        || has("dependency-check")
        || has("dependency check")
        || has("osv")
        || has("snyk")
        || has("npm audit")
        || has("retire")
        || has("dependabot")
        || has("trivy")
    {
        Category::Sca
    } else if has("zap") || has("burp") || has("nuclei") || has("nikto") || has("arachni") {
        Category::Dast
    } else {
        Category::Sast
    }
}

/// The trimmed text of an optional field, if it has any.
pub fn non_empty<S: std::ops::Deref<Target = str>>(s: &Option<S>) -> Option<&str> {
    s.as_deref().and_then(non_empty_str)
}

/// The trimmed text, if there is any.
pub fn non_empty_str(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

/// At most `max` characters, cut at a character boundary with an ellipsis.
pub fn shorten(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max.saturating_sub(1)) {
        Some((cut, _)) if s.chars().nth(max).is_some() => {
            let mut out = s[..cut].trim_end().to_string();
            out.push('…');
            out
        }
        _ => s.to_string(),
    }
}

/// CWE ids from the ways scanners write them (`CWE-79`,
/// `cwe-79: Cross-site Scripting`), deduplicated; other ids such as
/// `NVD-CWE-Other` are dropped.
pub fn cwe_ids<'s>(raw: impl IntoIterator<Item = &'s str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in raw {
        let head = r.trim().split([':', ' ']).next().unwrap_or("");
        let Some(num) = head
            .get(..4)
            .filter(|p| p.eq_ignore_ascii_case("cwe-"))
            .and_then(|_| head.get(4..))
        else {
            continue;
        };
        let digits: String = num.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse::<u32>() {
            let id = format!("CWE-{n}");
            if !out.contains(&id) {
                out.push(id);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let table = [
            (
                "file:///src/app/main.py",
                Some("file:///src/app/"),
                "main.py",
            ),
            ("./pkg/a%20b.py", None, "pkg/a b.py"),
            ("src\\win\\x.cs", None, "src/win/x.cs"),
            ("/abs/x.py", Some("/other"), "/abs/x.py"),
            ("%zz", None, "%zz"),
            ("a%2", None, "a%2"),
        ];
        for (raw, base, want) in table {
            assert_eq!(clean_path(raw, base), want, "raw {raw}");
        }
    }

    #[test]
    fn ecosystems_agree_between_tools() {
        assert_eq!(ecosystem("python"), ecosystem("pip"));
        assert_eq!(ecosystem("deb"), ecosystem("debian"));
        assert_eq!(ecosystem("go-module"), ecosystem("gobinary"));
        assert_eq!(ecosystem("java-archive"), ecosystem("jar"));
        assert_eq!(purl_type("pkg:npm/lodash@1"), Some("npm"));
        assert_eq!(purl_type("nonsense"), None);
    }

    #[test]
    fn canonical_ids() {
        let (id, aliases) =
            canonical_vuln_id(["GHSA-ABCD-1234-wxyz", "cve-2021-1234", "CVE-2021-1234"]).unwrap();
        assert_eq!(id, "CVE-2021-1234");
        assert_eq!(aliases, vec!["GHSA-abcd-1234-wxyz".to_string()]);
        let (id, aliases) = canonical_vuln_id(["DSA-1", "GHSA-x"]).unwrap();
        assert_eq!(id, "GHSA-x");
        assert_eq!(aliases, vec!["DSA-1".to_string()]);
        assert!(canonical_vuln_id([" ", ""]).is_none());
    }
}
