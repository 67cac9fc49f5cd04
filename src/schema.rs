//! JSON Schemas of what custody reads and writes, generated from the Rust
//! types so they cannot drift (a test compares them with `schemas/`).

use crate::lifecycle::DecisionRecord;
use crate::model::{Finding, FindingEvent, TicketEvent};

/// Every schema custody publishes, as (file name, pretty JSON).
pub fn all() -> Vec<(&'static str, String)> {
    let render = |s: schemars::Schema| {
        let mut text = serde_json::to_string_pretty(&s).unwrap_or_default();
        text.push('\n');
        text
    };
    vec![
        (
            "finding.schema.json",
            render(schemars::schema_for!(Finding)),
        ),
        (
            "finding-event.schema.json",
            render(schemars::schema_for!(FindingEvent)),
        ),
        (
            "ticket-event.schema.json",
            render(schemars::schema_for!(TicketEvent)),
        ),
        (
            "envelope.schema.json",
            render(schemars::schema_for!(
                crate::service::meta::Envelope<serde_json::Value>
            )),
        ),
        (
            "decision.schema.json",
            render(schemars::schema_for!(DecisionRecord)),
        ),
        (
            "process-summary.schema.json",
            render(schemars::schema_for!(
                crate::process::ProcessSummary<'static>
            )),
        ),
    ]
}
