//! Decoder for semgrep reports (being written).

use super::{DecodeContext, DecodeError, Decoder, Format, Report};

/// The semgrep decoder.
pub struct SemgrepDecoder;

impl Decoder for SemgrepDecoder {
    fn format(&self) -> Format {
        Format::Semgrep
    }

    fn decode(&self, _bytes: &[u8], _ctx: &DecodeContext) -> Result<Report, DecodeError> {
        Err(DecodeError::UnknownFormat("semgrep".into()))
    }
}
