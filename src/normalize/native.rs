//! Decoder for custody's native finding JSON: one finding object, an array
//! of them, or JSON Lines (one object per line). `null` is an empty report.
//! A finding's `target`, when given, is the target it belongs to: a report
//! whose findings name several is split into one scan per target (see
//! [`Report::split`]); the others fall to the scan's target.

use super::{DecodeContext, DecodeError, Decoder, Format, Markers, Report};
use crate::model::Finding;

/// The native format decoder.
pub struct NativeDecoder;

impl Decoder for NativeDecoder {
    fn format(&self) -> Format {
        Format::Native
    }

    fn markers(&self) -> Markers {
        Markers {
            object_keys: &["rule_id", "scanner"],
            element_keys: &[&["rule_id", "scanner"]],
            ..Markers::default()
        }
    }

    fn decode(&self, bytes: &[u8], ctx: &DecodeContext) -> Result<Report, DecodeError> {
        let mut report = Report::default();
        let skip = if bytes.starts_with(b"\xEF\xBB\xBF") {
            3
        } else {
            0
        };
        let bytes = &bytes[skip..];
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            report.findings = serde_json::from_slice(bytes).map_err(|e| match e.is_data() {
                true => DecodeError::Shape {
                    format: Format::Native,
                    detail: format!("array element: {}", super::json_error(&e)),
                },
                false => DecodeError::from_json(Format::Native, e),
            })?;
        } else {
            let stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Option<Finding>>();
            for (record, item) in stream.enumerate() {
                match item {
                    Ok(Some(f)) => report.findings.push(f),
                    Ok(None) => {}
                    Err(e) if e.is_data() => {
                        return Err(DecodeError::Shape {
                            format: Format::Native,
                            detail: format!("record {}: {}", record + 1, super::json_error(&e)),
                        })
                    }
                    Err(e) => return Err(DecodeError::from_json(Format::Native, e)),
                }
            }
        }
        for f in &mut report.findings {
            // A native producer may carry a snippet but no hash; secrets never
            // keep their snippet.
            if f.content_hash.is_none() {
                let first = f.evidence.snippet.as_deref().and_then(|s| s.lines().next());
                let first = first.map(str::to_string);
                super::util::set_line_content(f, first.as_deref(), &ctx.secret_salt);
            } else if f.category == crate::model::Category::Secret {
                f.evidence.snippet = None;
            }
            report.coverage.insert((f.scanner.clone(), f.category));
            if let Some(t) = &f.target {
                report.targets.insert(t.clone());
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &str) -> Result<Report, DecodeError> {
        crate::testing::decode_with(&NativeDecoder, s.as_bytes())
    }

    const ONE: &str = r#"{"scanner":"zap","category":"dast","rule_id":"10020","severity":"medium","message":"X-Frame-Options missing","location":{"path":"/login"}}"#;

    #[test]
    fn one_array_and_lines() {
        assert_eq!(decode(ONE).unwrap().findings.len(), 1);
        assert_eq!(decode(&format!("[{ONE},{ONE}]")).unwrap().findings.len(), 2);
        assert_eq!(
            decode(&format!("{ONE}\n{ONE}\n\n{ONE}\n"))
                .unwrap()
                .findings
                .len(),
            3
        );
        assert_eq!(decode("null").unwrap().findings.len(), 0);
        let r = decode(ONE).unwrap();
        assert!(r
            .coverage
            .contains(&("zap".to_string(), crate::model::Category::Dast)));
    }

    #[test]
    fn wrong_shapes_are_named() {
        let err = decode(r#"{"scanner":"x"}"#).unwrap_err().to_string();
        assert!(err.contains("missing field"), "{err}");
        let err = decode(&format!("{ONE}\n{{\"scanner\":1}}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("record 2"), "{err}");
        let err = decode(&format!("[{ONE}, {{\"bogus\":1}}]"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("array element"), "{err}");
        let err = decode(r#"{"scanner":"x","#).unwrap_err();
        assert_eq!(err.reason(), "syntax");
    }

    #[test]
    fn secrets_lose_their_snippet() {
        let s = r#"{"scanner":"custom","category":"secret","rule_id":"aws","severity":"high","message":"key","evidence":{"snippet":"key = AKIAIOSFODNN7EXAMPLE"}}"#;
        let r = decode(s).unwrap();
        assert!(r.findings[0].evidence.snippet.is_none());
        assert!(r.findings[0].content_hash.is_some());
    }
}
