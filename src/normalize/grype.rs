//! Decoder for grype reports (being written).

use super::{DecodeContext, DecodeError, Decoder, Format, Report};

/// The grype decoder.
pub struct GrypeDecoder;

impl Decoder for GrypeDecoder {
    fn format(&self) -> Format {
        Format::Grype
    }

    fn decode(&self, _bytes: &[u8], _ctx: &DecodeContext) -> Result<Report, DecodeError> {
        Err(DecodeError::UnknownFormat("grype".into()))
    }
}
