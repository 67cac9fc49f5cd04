//! Decoder for detect_secrets reports (being written).

use super::{DecodeContext, DecodeError, Decoder, Format, Report};

/// The detect_secrets decoder.
pub struct DetectSecretsDecoder;

impl Decoder for DetectSecretsDecoder {
    fn format(&self) -> Format {
        Format::DetectSecrets
    }

    fn decode(&self, _bytes: &[u8], _ctx: &DecodeContext) -> Result<Report, DecodeError> {
        Err(DecodeError::UnknownFormat("detect_secrets".into()))
    }
}
