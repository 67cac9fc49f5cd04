//! Repository link templates (`[links]`), checked when the configuration
//! is read; [`crate::ticket::render`] fills them in.

/// The placeholders a link template (`[links]`) may hold: `{host}` (the
/// repository's host), `{org}` (everything between the host and the
/// repository's name, `/` kept: a GitLab group and its subgroups),
/// `{repo}` (the repository's name), `{commit}` (the commit of the last
/// scan that refreshed the ticket; its ref when it named no commit; else
/// `tickets.default_ref`), `{path}` (the finding's path) and `{line}` (its
/// first line; without one, the template's `#` fragment holding `{line}`
/// is left out).
pub const LINK_PLACEHOLDERS: [&str; 6] = ["host", "org", "repo", "commit", "path", "line"];

/// Refuses a link template with an unknown placeholder, an unclosed brace
/// or a scheme other than http(s).
pub fn check_link_template(t: &str) -> Result<(), String> {
    if !(t.starts_with("https://") || t.starts_with("http://")) {
        return Err("must start with https:// or http://".into());
    }
    if t.len() > 1024 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be at most 1024 characters, without whitespace".into());
    }
    let mut rest = t;
    while let Some(i) = rest.find(['{', '}']) {
        if rest[i..].starts_with('}') {
            return Err("has a `}` without its `{`".into());
        }
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else {
            return Err("has a `{` without its `}`".into());
        };
        let name = &after[..j];
        if !LINK_PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "has an unknown placeholder {{{name}}} (known: {})",
                LINK_PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
            ));
        }
        rest = &after[j + 1..];
    }
    Ok(())
}
