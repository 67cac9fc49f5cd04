//! Decoder for gitleaks reports (being written).

use super::{DecodeContext, DecodeError, Decoder, Format, Report};

/// The gitleaks decoder.
pub struct GitleaksDecoder;

impl Decoder for GitleaksDecoder {
    fn format(&self) -> Format {
        Format::Gitleaks
    }

    fn decode(&self, _bytes: &[u8], _ctx: &DecodeContext) -> Result<Report, DecodeError> {
        Err(DecodeError::UnknownFormat("gitleaks".into()))
    }
}
