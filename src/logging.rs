//! Logs of the service (`custody run`, `custody demo`) through `tracing`:
//! levels, a span per partition, `RUST_LOG` filtering, and JSON lines for
//! Kubernetes. What the command-line tools print for their user (the
//! `process` summary, rejected files) is their output, not logs.
//!
//! Nothing of a report's content is logged above debug level: errors name
//! what was wrong and where, never a value (see
//! [`crate::normalize::json_error`]).

use tracing_subscriber::EnvFilter;

/// The log format.
/// The log format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// Installs the subscriber that writes the logs to standard error:
/// filtered by `RUST_LOG` (default `info`), as text or one JSON object a
/// line. A second call (tests start several services) changes nothing.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(true);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
}
