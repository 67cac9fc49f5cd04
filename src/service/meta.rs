//! Scan metadata on a Kafka message: from `custody-*` headers, or from a
//! JSON envelope around the report (for publishers that cannot set
//! headers). The message key is the target.
//!
//! Headers (all UTF-8):
//!
//! | header | meaning |
//! |---|---|
//! | `custody-target` | `repo:host/org/name`, `image:name` or `cloud:account` (else the key) |
//! | `custody-scanner` | scanner name, overriding the report's |
//! | `custody-format` | report format (else sniffed) |
//! | `custody-commit`, `custody-ref` | what was scanned |
//! | `custody-scan-id` | the scan (chunks of one scan share it) |
//! | `custody-complete` | `true` (default) when the scan covered the whole target |
//! | `custody-chunk` | `i/n`: chunk i (from 1) of n; the scan is applied when all n arrived |
//! | `custody-kind` | `report` (default) or `decision`: a decision record (JSON) about a finding of the target |

use crate::model::Target;
use crate::normalize::Format;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Header names.
pub mod header {
    /// Target spec.
    pub const TARGET: &str = "custody-target";
    /// Scanner name.
    pub const SCANNER: &str = "custody-scanner";
    /// Report format.
    pub const FORMAT: &str = "custody-format";
    /// Commit.
    pub const COMMIT: &str = "custody-commit";
    /// Branch or tag.
    pub const REF: &str = "custody-ref";
    /// Scan id.
    pub const SCAN_ID: &str = "custody-scan-id";
    /// Whether the scan covered the whole target.
    pub const COMPLETE: &str = "custody-complete";
    /// `i/n`.
    pub const CHUNK: &str = "custody-chunk";
    /// `report` (the default) or `decision` (a risk decision, JSON).
    pub const KIND: &str = "custody-kind";
    /// Dead letters: the reason (a fixed word).
    pub const DLQ_REASON: &str = "custody-dlq-reason";
    /// Dead letters: the error message.
    pub const DLQ_ERROR: &str = "custody-dlq-error";
    /// Dead letters: source topic.
    pub const DLQ_TOPIC: &str = "custody-dlq-topic";
    /// Dead letters: source partition.
    pub const DLQ_PARTITION: &str = "custody-dlq-partition";
    /// Dead letters: source offset.
    pub const DLQ_OFFSET: &str = "custody-dlq-offset";
}

/// A report wrapped with its scan metadata, for publishers that cannot set
/// Kafka headers. Recognized by its first key, `custody_envelope`, which
/// must come first so a report is never parsed twice to find out.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Envelope<R> {
    /// Envelope version: 1.
    pub custody_envelope: u32,
    /// `repo:host/org/name`, `image:name` or `cloud:account`.
    pub target: Option<String>,
    /// Scanner name, overriding the report's.
    pub scanner: Option<String>,
    /// Report format (sniffed when absent).
    pub format: Option<String>,
    /// Commit scanned.
    pub commit: Option<String>,
    /// Branch or tag scanned.
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// Scan id.
    pub scan_id: Option<String>,
    /// Whether the scan covered the whole target (default true).
    pub complete: Option<bool>,
    /// The scanner's report, as the scanner wrote it.
    pub report: R,
}

/// Scan metadata of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageMeta {
    /// The target.
    pub target: Option<Target>,
    /// Scanner override.
    pub scanner: Option<String>,
    /// Format, when named.
    pub format: Option<Format>,
    /// Commit.
    pub commit: Option<String>,
    /// Branch or tag.
    pub git_ref: Option<String>,
    /// Scan id.
    pub scan_id: Option<String>,
    /// Whether the scan covered the whole target.
    pub complete: bool,
    /// `(i, n)` for a chunk.
    pub chunk: Option<(u32, u32)>,
    /// The message is a decision (accept risk, false positive, revoke)
    /// about a finding of the target, not a report.
    pub decision: bool,
}

/// Why a message's metadata was refused (the message is dead-lettered).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetaError {
    /// A header or envelope field has a bad value.
    #[error("{field}: {message}")]
    Bad {
        /// The header or field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Neither header, envelope nor key names a target.
    #[error("no target: set the message key or the custody-target header")]
    NoTarget,
}

fn bad(field: &str, message: impl Into<String>) -> MetaError {
    MetaError::Bad {
        field: field.to_string(),
        message: message.into(),
    }
}

/// Reads the metadata from `(name, value)` headers and the key. The
/// target header wins over the key.
pub fn from_headers<'a>(
    key: Option<&[u8]>,
    headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> Result<MessageMeta, MetaError> {
    let mut m = MessageMeta {
        complete: true,
        ..MessageMeta::default()
    };
    let mut target_text: Option<String> = None;
    for (name, value) in headers {
        if !name.starts_with("custody-") {
            continue;
        }
        let Some(value) = value else { continue };
        let text = std::str::from_utf8(value).map_err(|_| bad(name, "not UTF-8"))?;
        let text = text.trim();
        match name {
            header::TARGET => target_text = Some(text.to_string()),
            header::SCANNER => m.scanner = non_empty(text),
            header::FORMAT => {
                m.format = Some(
                    Format::from_name(text)
                        .ok_or_else(|| bad(name, format!("unknown format {text:?}")))?,
                )
            }
            header::COMMIT => m.commit = non_empty(text),
            header::REF => m.git_ref = non_empty(text),
            header::SCAN_ID => m.scan_id = non_empty(text),
            header::COMPLETE => m.complete = parse_bool(name, text)?,
            header::CHUNK => m.chunk = Some(parse_chunk(text)?),
            header::KIND => {
                m.decision = match text {
                    "report" => false,
                    "decision" => true,
                    _ => {
                        return Err(bad(
                            name,
                            format!("expected report or decision, got {text:?}"),
                        ))
                    }
                }
            }
            _ => {}
        }
    }
    if target_text.is_none() {
        if let Some(k) = key {
            let k = std::str::from_utf8(k).map_err(|_| bad("key", "not UTF-8"))?;
            target_text = non_empty(k.trim());
        }
    }
    if let Some(t) = target_text {
        m.target = Some(
            t.parse::<Target>()
                .map_err(|e| bad(header::TARGET, e.to_string()))?,
        );
    }
    if m.chunk.is_some() && m.scan_id.is_none() {
        return Err(bad(header::CHUNK, "a chunk needs a custody-scan-id header"));
    }
    Ok(m)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn parse_bool(name: &str, text: &str) -> Result<bool, MetaError> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(bad(name, format!("expected true or false, got {text:?}"))),
    }
}

/// Parses `i/n` with 1 <= i <= n <= 100,000.
pub fn parse_chunk(text: &str) -> Result<(u32, u32), MetaError> {
    let err = || {
        bad(
            header::CHUNK,
            format!("expected i/n with 1 <= i <= n, got {text:?}"),
        )
    };
    let (i, n) = text.split_once('/').ok_or_else(err)?;
    let i: u32 = i.trim().parse().map_err(|_| err())?;
    let n: u32 = n.trim().parse().map_err(|_| err())?;
    if i == 0 || i > n || n > 100_000 {
        return Err(err());
    }
    Ok((i, n))
}

/// If `payload` is an envelope, its metadata (merged over `meta`: envelope
/// fields win) and the report's bytes; otherwise `None`. Only an unchunked
/// message can be an envelope.
pub fn unwrap_envelope<'p>(
    payload: &'p [u8],
    meta: &MessageMeta,
) -> Result<Option<(MessageMeta, &'p [u8])>, MetaError> {
    if meta.chunk.is_some() || !looks_like_envelope(payload) {
        return Ok(None);
    }
    let env: Envelope<&'p RawValue> = serde_json::from_slice(payload)
        .map_err(|e| bad("envelope", crate::normalize::json_error(&e)))?;
    if env.custody_envelope != 1 {
        return Err(bad(
            "envelope.custody_envelope",
            format!("version {} is not supported (1 is)", env.custody_envelope),
        ));
    }
    let mut m = meta.clone();
    if let Some(t) = env.target {
        m.target = Some(
            t.parse::<Target>()
                .map_err(|e| bad("envelope.target", e.to_string()))?,
        );
    }
    if let Some(f) = env.format {
        m.format = Some(
            Format::from_name(&f)
                .ok_or_else(|| bad("envelope.format", format!("unknown format {f:?}")))?,
        );
    }
    m.scanner = env.scanner.or(m.scanner);
    m.commit = env.commit.or(m.commit);
    m.git_ref = env.git_ref.or(m.git_ref);
    m.scan_id = env.scan_id.or(m.scan_id);
    if let Some(c) = env.complete {
        m.complete = c;
    }
    let raw = env.report.get().as_bytes();
    // The raw value borrows from the payload: find it there so the bytes
    // handed on are the payload's own.
    let start = raw.as_ptr() as usize - payload.as_ptr() as usize;
    Ok(Some((m, &payload[start..start + raw.len()])))
}

/// True when the first key of a top-level object is `custody_envelope`
/// (custody publish writes it first; other writers must too).
fn looks_like_envelope(payload: &[u8]) -> bool {
    let mut rest = payload;
    while let [b, tail @ ..] = rest {
        if b.is_ascii_whitespace() {
            rest = tail;
        } else {
            break;
        }
    }
    let Some(rest) = rest.strip_prefix(b"{") else {
        return false;
    };
    let rest = rest.trim_ascii_start();
    rest.starts_with(b"\"custody_envelope\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs<'a>(pairs: &'a [(&'a str, &'a str)]) -> Vec<(&'a str, Option<&'a [u8]>)> {
        pairs
            .iter()
            .map(|(k, v)| (*k, Some(v.as_bytes())))
            .collect()
    }

    #[test]
    fn headers_and_key() {
        let m = from_headers(
            Some(b"repo:github.com/a/b"),
            hs(&[
                ("custody-scanner", "bandit"),
                ("custody-format", "sarif"),
                ("custody-scan-id", "s1"),
                ("custody-chunk", "2/3"),
                ("custody-complete", "false"),
                ("unrelated", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(m.target.unwrap().to_string(), "repo:github.com/a/b");
        assert_eq!(m.scanner.as_deref(), Some("bandit"));
        assert_eq!(m.format, Some(Format::Sarif));
        assert_eq!(m.chunk, Some((2, 3)));
        assert!(!m.complete);
    }

    #[test]
    fn bad_headers_name_the_header() {
        for (pairs, want) in [
            (
                vec![("custody-chunk", "0/3"), ("custody-scan-id", "s")],
                "custody-chunk",
            ),
            (
                vec![("custody-chunk", "4/3"), ("custody-scan-id", "s")],
                "custody-chunk",
            ),
            (vec![("custody-chunk", "1/3")], "custody-scan-id"),
            (vec![("custody-format", "pdf")], "custody-format"),
            (vec![("custody-complete", "maybe")], "custody-complete"),
            (vec![("custody-target", "ftp:x")], "custody-target"),
        ] {
            let err = from_headers(None, hs(&pairs)).unwrap_err().to_string();
            assert!(err.contains(want), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn envelope_round_trip() {
        let payload =
            br#" { "custody_envelope": 1, "target": "image:nginx:1.25", "scanner": "trivy",
            "complete": false, "report": {"SchemaVersion": 2, "Results": []} }"#;
        let (m, report) = unwrap_envelope(payload, &MessageMeta::default())
            .unwrap()
            .unwrap();
        // Images are identified without their tag.
        assert_eq!(m.target.unwrap().to_string(), "image:nginx");
        assert_eq!(m.scanner.as_deref(), Some("trivy"));
        assert!(!m.complete);
        assert_eq!(report, br#"{"SchemaVersion": 2, "Results": []}"#);
        // Not an envelope: a plain report.
        assert!(unwrap_envelope(b"{\"runs\": []}", &MessageMeta::default())
            .unwrap()
            .is_none());
        // An envelope of an unknown version is refused by name.
        let err = unwrap_envelope(
            br#"{"custody_envelope": 2, "report": {}}"#,
            &MessageMeta::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("custody_envelope"), "{err}");
    }
}
