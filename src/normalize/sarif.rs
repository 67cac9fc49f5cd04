//! Decoder for SARIF 2.1.0 (being written).

use super::{DecodeContext, DecodeError, Decoder, Format, Report};

/// The SARIF decoder.
pub struct SarifDecoder;

impl Decoder for SarifDecoder {
    fn format(&self) -> Format {
        Format::Sarif
    }

    fn decode(&self, _bytes: &[u8], _ctx: &DecodeContext) -> Result<Report, DecodeError> {
        Err(DecodeError::UnknownFormat("sarif".into()))
    }
}
