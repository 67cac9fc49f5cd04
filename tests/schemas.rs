//! The JSON Schemas in `schemas/` are generated from the Rust types; this
//! test fails when they drift. Regenerate with
//! `cargo run -- schemas --out schemas`.

use std::path::Path;

#[test]
fn schemas_match_the_code() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    for (name, text) in custody::schema::all() {
        let path = dir.join(name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == text,
            "{} is out of date: run `cargo run -- schemas --out schemas`",
            path.display()
        );
    }
}

#[test]
fn native_finding_examples_validate_against_the_decoder() {
    // Every example in the README's native format section decodes.
    let one = r#"{"scanner":"zap","category":"dast","rule_id":"10038","severity":"medium","message":"Content Security Policy header not set","location":{"path":"/checkout"}}"#;
    let report = custody::normalize::native::NativeDecoder;
    use custody::normalize::Decoder;
    let r = report.decode(one.as_bytes(), &Default::default()).unwrap();
    assert_eq!(r.findings.len(), 1);
}

/// Checks `value` against `schema` (a schema of `schemas/`), for the
/// keywords schemars writes there: `$ref` into `$defs`, `type` (one or a
/// list), `properties`, `required`, `additionalProperties`, `items`,
/// `anyOf`, `oneOf`, `const`, `enum`, `minimum`, but not `pattern` (the
/// target's, which the decoders check). Returns where the first mismatch
/// is. (No schema validator is a dependency; this covers what the schemas
/// use, and fails on a keyword it does not know.)
pub fn validate(schema: &serde_json::Value, value: &serde_json::Value) -> Result<(), String> {
    check(schema, schema, value, "$")
}

fn check(
    root: &serde_json::Value,
    s: &serde_json::Value,
    v: &serde_json::Value,
    at: &str,
) -> Result<(), String> {
    use serde_json::Value;
    if s == &Value::Bool(true) {
        return Ok(());
    }
    let s = s
        .as_object()
        .ok_or_else(|| format!("{at}: schema is not an object"))?;
    for (k, want) in s {
        match k.as_str() {
            "$schema" | "title" | "description" | "format" | "$defs" | "default" | "pattern" => {}
            "$ref" => {
                let name = want
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/$defs/"))
                    .ok_or_else(|| format!("{at}: unknown $ref {want}"))?;
                check(root, &root["$defs"][name], v, at)?;
            }
            "type" => {
                let types: Vec<&str> = match want {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                    _ => return Err(format!("{at}: bad type {want}")),
                };
                let ok = types.iter().any(|t| match *t {
                    "object" => v.is_object(),
                    "array" => v.is_array(),
                    "string" => v.is_string(),
                    "integer" => v.is_i64() || v.is_u64(),
                    "number" => v.is_number(),
                    "boolean" => v.is_boolean(),
                    "null" => v.is_null(),
                    _ => false,
                });
                if !ok {
                    return Err(format!("{at}: {v} is not of type {want}"));
                }
            }
            "properties" => {
                if let (Some(props), Some(obj)) = (want.as_object(), v.as_object()) {
                    for (name, sub) in props {
                        if let Some(x) = obj.get(name) {
                            check(root, sub, x, &format!("{at}.{name}"))?;
                        }
                    }
                }
            }
            "required" => {
                if let Some(obj) = v.as_object() {
                    for name in want.as_array().into_iter().flatten() {
                        let name = name.as_str().unwrap_or_default();
                        if !obj.contains_key(name) {
                            return Err(format!("{at}: missing {name}"));
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Some(obj) = v.as_object() {
                    let known = s.get("properties").and_then(Value::as_object);
                    for (name, x) in obj {
                        if known.is_some_and(|p| p.contains_key(name)) {
                            continue;
                        }
                        if want == &Value::Bool(false) {
                            return Err(format!("{at}: unexpected {name}"));
                        }
                        check(root, want, x, &format!("{at}.{name}"))?;
                    }
                }
            }
            "items" => {
                for (i, x) in v.as_array().into_iter().flatten().enumerate() {
                    check(root, want, x, &format!("{at}[{i}]"))?;
                }
            }
            "anyOf" | "oneOf" => {
                let subs = want.as_array().cloned().unwrap_or_default();
                let matched = subs
                    .iter()
                    .filter(|sub| check(root, sub, v, at).is_ok())
                    .count();
                let ok = if k == "oneOf" {
                    matched == 1
                } else {
                    matched > 0
                };
                if !ok {
                    return Err(format!("{at}: {v} matches {matched} of {k} {want}"));
                }
            }
            "const" => {
                if v != want {
                    return Err(format!("{at}: {v} is not {want}"));
                }
            }
            "enum" => {
                if !want.as_array().is_some_and(|e| e.contains(v)) {
                    return Err(format!("{at}: {v} not in {want}"));
                }
            }
            "minimum" => {
                if let (Some(x), Some(min)) = (v.as_f64(), want.as_f64()) {
                    if x < min {
                        return Err(format!("{at}: {x} < {min}"));
                    }
                }
            }
            other => return Err(format!("{at}: schema keyword {other} not checked here")),
        }
    }
    Ok(())
}

/// The ticket events of the golden files follow
/// `schemas/ticket-event.schema.json`.
#[test]
fn golden_ticket_events_follow_their_schema() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("schemas/ticket-event.schema.json")).unwrap(),
    )
    .unwrap();
    for golden in ["tornado.tickets.jsonl", "tornado-ruff.tickets.jsonl"] {
        let text =
            std::fs::read_to_string(dir.join("tests/fixtures/tickets").join(golden)).unwrap();
        for line in text.lines() {
            let e: serde_json::Value = serde_json::from_str(line).unwrap();
            validate(&schema, &e).unwrap_or_else(|err| panic!("{golden}: {err}: {line}"));
        }
    }
}
