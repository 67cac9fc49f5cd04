//! Test support shared by the unit tests, the integration tests and the
//! benches: where the shared corpus is, and skipping politely without it.
//!
//! The shared corpus (`../shared/corpus`: DefectDojo's parser samples and
//! real CODEOWNERS files) sits beside the repository in this project's
//! workspace and in CI, and is absent from a user's clone. Tests that need
//! it skip there, saying so on the terminal; with `CUSTODY_REQUIRE_SHARED`
//! set (CI sets it), its absence fails them instead, so a CI run cannot
//! pass by skipping.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The environment variable that turns a skip into a failure.
pub const REQUIRE_SHARED: &str = "CUSTODY_REQUIRE_SHARED";

/// `rel` under `../shared/corpus`, or `None` (said on the terminal, naming
/// `test`, the test or the case that skips) when the corpus is absent.
///
/// # Panics
/// When the corpus is absent and [`REQUIRE_SHARED`] is set.
pub fn shared_corpus(rel: &str, test: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    if root.is_dir() {
        return Some(root.join(rel));
    }
    assert!(
        std::env::var_os(REQUIRE_SHARED).is_none(),
        "{test}: {} is absent and {REQUIRE_SHARED} is set",
        root.display()
    );
    // Written to the terminal itself: the test harness keeps what a passing
    // test prints through `eprintln!` to itself.
    let _ = writeln!(
        std::io::stderr(),
        "skipped {test}: it reads ../shared/corpus/{rel}, absent beside this clone"
    );
    None
}

/// The bytes of `rel` under `../shared/corpus`, or `None` as
/// [`shared_corpus`] says.
///
/// # Panics
/// When the corpus is there but the file cannot be read.
pub fn shared_bytes(rel: &str, test: &str) -> Option<Vec<u8>> {
    let path = shared_corpus(rel, test)?;
    Some(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// The bytes of `rel` under the repository's `tests/fixtures`.
///
/// # Panics
/// When the file cannot be read, naming it.
pub fn fixture(rel: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Decodes `bytes` with `decoder` and the default context (the default
/// secret salt): what the decoders' unit tests do.
pub fn decode_with(
    decoder: &dyn crate::normalize::Decoder,
    bytes: &[u8],
) -> Result<crate::normalize::Report, crate::normalize::DecodeError> {
    decoder.decode(bytes, &crate::normalize::DecodeContext::default())
}

/// Asserts that `bytes` (a whole report, `name` in messages) cut short at
/// four places is a syntax error for `decode`, never a report or a panic:
/// what every decoder's truncation test checks.
///
/// # Panics
/// When a cut decodes, or fails for another reason.
pub fn assert_truncations_are_syntax_errors<T: std::fmt::Debug>(
    name: &str,
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, crate::normalize::DecodeError>,
) {
    let end = bytes.trim_ascii_end().len();
    for cut in [1, end / 3, end / 2, end - 1] {
        let err = decode(&bytes[..cut]).expect_err(name);
        assert_eq!(err.reason(), "syntax", "{name} cut at {cut}: {err}");
    }
}
