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
