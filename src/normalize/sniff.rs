//! Format sniffing: tells a report's format from its first decisive keys.
//!
//! The sniffer reads top-level object keys with a tiny lexer and stops at
//! the first key that only one format has (`runs`, `SchemaVersion`,
//! `matches`, ...), skipping the values in between without building them.
//! Which keys tell which format is each decoder's to say
//! ([`super::Decoder::markers`]); formats are asked in [`Format::ALL`]'s
//! order.
//! It is iterative, so nesting depth cannot exhaust the stack, and it never
//! reads further than it must, so a 200 MB SARIF file costs a few bytes.

use super::{DecodeError, Format};

/// Guesses the format of a report.
pub fn sniff(bytes: &[u8]) -> Result<Format, DecodeError> {
    let mut lx = Lexer { b: bytes, i: 0 };
    if lx.b.starts_with(b"\xEF\xBB\xBF") {
        lx.i = 3;
    }
    lx.ws();
    match lx.peek() {
        None => Err(DecodeError::Syntax("empty input".into())),
        Some(b'{') => sniff_object(&mut lx),
        Some(b'[') => sniff_array(&mut lx),
        // `null` is what Trivy (legacy) and Gitleaks print for "nothing
        // found"; with no format named, it decodes as an empty native report.
        Some(b'n') if lx.b[lx.i..].starts_with(b"null") => Ok(Format::Native),
        Some(c) => Err(DecodeError::Syntax(format!(
            "expected a JSON object or array at byte {}, found {:?}",
            lx.i,
            char::from(c)
        ))),
    }
}

/// The format whose markers hold `key` among its top-level object keys.
fn by_object_key(key: &[u8]) -> Option<Format> {
    Format::ALL
        .iter()
        .copied()
        .find(|f| f.markers().object_keys.iter().any(|k| k.as_bytes() == key))
}

/// The first format, in [`Format::ALL`]'s order, `pick` chooses.
fn first(pick: impl Fn(&super::Markers) -> bool) -> Option<Format> {
    Format::ALL.iter().copied().find(|f| pick(&f.markers()))
}

fn any_of(keys: &[String], markers: &[&str]) -> bool {
    keys.iter().any(|k| markers.contains(&k.as_str()))
}

fn sniff_object(lx: &mut Lexer<'_>) -> Result<Format, DecodeError> {
    let mut seen: Vec<String> = Vec::new();
    let mut empty_results = false;
    let verdict = lx.keys(|lx, key| {
        let fmt = match key {
            b"$schema" => match lx.string_value()? {
                Some(s) => {
                    let s = s.to_ascii_lowercase();
                    first(|m| m.schema_holds.is_some_and(|h| s.contains(h)))
                }
                None => None,
            },
            b"results" => match lx.peek() {
                Some(b'[') => {
                    let keys = lx.first_element_keys()?;
                    empty_results = keys.is_empty();
                    first(|m| any_of(&keys, m.result_keys))
                }
                // An object: the format whose keys it has, else the one
                // that takes any.
                Some(b'{') => {
                    let keys = lx.first_object_keys()?;
                    first(|m| {
                        m.results_object_keys
                            .is_some_and(|ks| !ks.is_empty() && any_of(&keys, ks))
                    })
                    .or_else(|| first(|m| m.results_object_keys.is_some_and(<[_]>::is_empty)))
                }
                _ => None,
            },
            key => by_object_key(key),
        };
        if fmt.is_none() && seen.len() < 12 {
            seen.push(String::from_utf8_lossy(key).into_owned());
        }
        Ok(fmt)
    })?;
    if let Some(f) = verdict {
        return Ok(f);
    }
    // A report with an empty `results` array, told by another of its keys.
    let told = empty_results
        .then(|| {
            first(|m| {
                m.empty_results_key
                    .is_some_and(|k| seen.iter().any(|s| s == k))
            })
        })
        .flatten();
    told.ok_or_else(|| {
        DecodeError::UnknownFormat(format!("no known format has an object with keys {seen:?}"))
    })
}

fn sniff_array(lx: &mut Lexer<'_>) -> Result<Format, DecodeError> {
    let keys = lx.first_element_keys()?;
    if keys.is_empty() {
        // An empty array: nothing to decode, any decoder agrees.
        return Ok(Format::Native);
    }
    first(|m| !m.element_keys.is_empty() && m.element_keys.iter().all(|group| any_of(&keys, group)))
        .ok_or_else(|| {
            DecodeError::UnknownFormat(format!(
                "no known format is an array of objects with keys {:?}",
                keys.iter().take(12).collect::<Vec<_>>()
            ))
        })
}

struct Lexer<'a> {
    b: &'a [u8],
    i: usize,
}

type Step<T> = Result<T, DecodeError>;

impl<'a> Lexer<'a> {
    fn eof(&self) -> DecodeError {
        DecodeError::Syntax(format!("input ends early, at byte {}", self.b.len()))
    }

    fn unexpected(&self, wanted: &str) -> DecodeError {
        match self.b.get(self.i) {
            None => self.eof(),
            Some(&c) => DecodeError::Syntax(format!(
                "expected {wanted} at byte {}, found {:?}",
                self.i,
                char::from(c)
            )),
        }
    }

    fn ws(&mut self) {
        while let Some(c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Step<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.unexpected(&format!("{:?}", char::from(c))))
        }
    }

    /// Reads a string's raw bytes (escapes left as written).
    fn raw_string(&mut self) -> Step<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.i;
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'"' => {
                    self.i += 1;
                    return Ok(&self.b[start..self.i - 1]);
                }
                b'\\' => self.i += 2,
                _ => self.i += 1,
            }
        }
        Err(self.eof())
    }

    /// If the next value is a string, reads it; otherwise skips the value.
    fn string_value(&mut self) -> Step<Option<String>> {
        if self.peek() == Some(b'"') {
            let s = self.raw_string()?;
            Ok(Some(String::from_utf8_lossy(s).into_owned()))
        } else {
            self.skip_value()?;
            Ok(None)
        }
    }

    /// Skips one value of any depth, without recursion.
    fn skip_value(&mut self) -> Step<()> {
        let mut depth = 0usize;
        loop {
            match self.peek() {
                None => return Err(self.eof()),
                Some(b'"') => {
                    self.raw_string()?;
                }
                Some(b'{' | b'[') => {
                    depth += 1;
                    self.i += 1;
                }
                Some(b'}' | b']') => {
                    if depth == 0 {
                        return Err(self.unexpected("a value"));
                    }
                    depth -= 1;
                    self.i += 1;
                }
                Some(b',' | b':') if depth > 0 => self.i += 1,
                Some(_) => {
                    let start = self.i;
                    while let Some(&c) = self.b.get(self.i) {
                        if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r' | b':') {
                            break;
                        }
                        self.i += 1;
                    }
                    if self.i == start {
                        return Err(self.unexpected("a value"));
                    }
                }
            }
            if depth == 0 {
                return Ok(());
            }
        }
    }

    /// Walks an object's keys; `on_key` may look into the value and either
    /// decide (the walk stops) or not (the walk skips the value).
    fn keys<T>(
        &mut self,
        mut on_key: impl FnMut(&mut Self, &[u8]) -> Step<Option<T>>,
    ) -> Step<Option<T>> {
        self.expect(b'{')?;
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(None);
        }
        loop {
            let key = self.raw_string()?;
            self.expect(b':')?;
            self.ws();
            let value_start = self.i;
            if let Some(v) = on_key(self, key)? {
                return Ok(Some(v));
            }
            // Whatever `on_key` peeked at, skip the whole value from its start.
            self.i = value_start;
            self.skip_value()?;
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(None);
                }
                _ => return Err(self.unexpected("',' or '}'")),
            }
        }
    }

    /// The keys of the object at the cursor (values skipped).
    fn first_object_keys(&mut self) -> Step<Vec<String>> {
        let mut keys = Vec::new();
        self.keys::<()>(|_, k| {
            if keys.len() < 64 {
                keys.push(String::from_utf8_lossy(k).into_owned());
            }
            Ok(None)
        })?;
        Ok(keys)
    }

    /// The keys of the first element of the array at the cursor, or nothing
    /// when it is empty or its first element is not an object.
    fn first_element_keys(&mut self) -> Step<Vec<String>> {
        self.expect(b'[')?;
        match self.peek() {
            Some(b'{') => self.first_object_keys(),
            Some(_) => Ok(Vec::new()),
            None => Err(self.eof()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let table: &[(&str, Format)] = &[
            (
                r#"{"$schema":"https://json.schemastore.org/sarif-2.1.0.json","version":"2.1.0","runs":[]}"#,
                Format::Sarif,
            ),
            (r#"{"version":"2.1.0","runs":[]}"#, Format::Sarif),
            (r#"{"SchemaVersion":2,"ArtifactName":"x"}"#, Format::Trivy),
            (r#"{"ClusterName":"","Vulnerabilities":[]}"#, Format::Trivy),
            (
                r#"[{"Target":"x","Type":"npm","Vulnerabilities":null}]"#,
                Format::Trivy,
            ),
            (r#"{"matches":[],"source":{}}"#, Format::Grype),
            (
                r#"[{"Description":"AWS","RuleID":"aws","Secret":"s"}]"#,
                Format::Gitleaks,
            ),
            (
                r#"[{"line":"x","offender":"s","rule":"r"}]"#,
                Format::Gitleaks,
            ),
            (
                r#"{"errors":[],"results":[{"check_id":"r","path":"a"}]}"#,
                Format::Semgrep,
            ),
            (
                r#"{"errors":[],"results":[],"paths":{"scanned":[]}}"#,
                Format::Semgrep,
            ),
            (
                r#"{"version":"1.5","plugins_used":[],"results":{}}"#,
                Format::DetectSecrets,
            ),
            (
                r#"{"version":"1.5","results":{"a.py":[]}}"#,
                Format::DetectSecrets,
            ),
            (r#"{"scanner":"x","category":"sast"}"#, Format::Native),
            (r#"[{"scanner":"x"}]"#, Format::Native),
            ("[]", Format::Native),
            (
                r#"{"errors":[],"generated_at":"x","metrics":{"_totals":{}},"results":[{"code":"1 x","test_id":"B101"}]}"#,
                Format::Bandit,
            ),
            (
                r#"{"errors":[],"generated_at":"x","metrics":{"_totals":{}},"results":[]}"#,
                Format::Bandit,
            ),
            (
                r#"{"check_type":"terraform","results":{"failed_checks":[]}}"#,
                Format::Checkov,
            ),
            (
                r#"{"results":{"passed_checks":[],"failed_checks":[]}}"#,
                Format::Checkov,
            ),
            (r#"[{"check_type":"kubernetes"}]"#, Format::Checkov),
            (
                r#"{"passed":0,"failed":0,"checkov_version":"3.3.30"}"#,
                Format::Checkov,
            ),
            (
                "{\"SourceMetadata\":{},\"DetectorName\":\"AWS\"}\n{\"SourceMetadata\":{}}\n",
                Format::Trufflehog,
            ),
            (
                r#"{"branch":"main","commit":"m","commitHash":"abc","stringsFound":[]}"#,
                Format::Trufflehog,
            ),
            (r#"[{"SourceMetadata":{},"Raw":"x"}]"#, Format::Trufflehog),
            ("null", Format::Native),
            ("\u{feff}  {\"runs\": []}", Format::Sarif),
            (r#"{"a":{"b":[1,2,{"c":"}"}]},"runs":[]}"#, Format::Sarif),
        ];
        for (input, want) in table {
            assert_eq!(sniff(input.as_bytes()).unwrap(), *want, "input {input}");
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        let table: &[(&str, &str)] = &[
            ("", "empty"),
            ("hello", "expected a JSON object"),
            (r#"{"foo":1,"bar":2}"#, "\"foo\""),
            (r#"{"foo":"#, "ends early"),
        ];
        for (input, want) in table {
            let err = sniff(input.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "input {input}: {err}");
        }
    }

    #[test]
    fn deep_nesting_is_skipped_without_recursion() {
        let mut s = String::from("{\"x\":");
        s.push_str(&"[".repeat(100_000));
        s.push_str(&"]".repeat(100_000));
        s.push_str(",\"runs\":[]}");
        assert_eq!(sniff(s.as_bytes()).unwrap(), Format::Sarif);
    }
}
