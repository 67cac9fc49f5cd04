//! Decoder for trivy reports (being written).

use super::{DecodeContext, DecodeError, Decoder, Format, Report};

/// The trivy decoder.
pub struct TrivyDecoder;

impl Decoder for TrivyDecoder {
    fn format(&self) -> Format {
        Format::Trivy
    }

    fn decode(&self, _bytes: &[u8], _ctx: &DecodeContext) -> Result<Report, DecodeError> {
        Err(DecodeError::UnknownFormat("trivy".into()))
    }
}
