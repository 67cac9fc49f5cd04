//! The librdkafka settings every client starts from, and librdkafka's log
//! lines through `tracing`.

use crate::config::service::ServiceSettings;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};

/// The librdkafka settings every custody client starts from.
pub fn client_config(settings: &ServiceSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.brokers);
    c.set("client.id", "custody");
    for (k, v) in &settings.properties {
        c.set(k, v);
    }
    // librdkafka's warnings and errors reach stderr; its debug lines too
    // when the `debug` property asks for some.
    c.set_log_level(if settings.properties.contains_key("debug") {
        RDKafkaLogLevel::Debug
    } else {
        RDKafkaLogLevel::Warning
    });
    c
}

/// A librdkafka log line on stderr.
pub(crate) fn say_librdkafka(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", fac, "{message}")
        }
        // Only when its `debug` property asks for them: shown as asked.
        RDKafkaLogLevel::Debug => tracing::info!(target: "librdkafka", fac, "{message}"),
    }
}
