//! The data custody passes between stages: findings, targets, scans,
//! severities and the events it publishes.

mod event;
mod finding;
mod scan;
mod severity;
mod target;
pub mod ticket;
pub mod time;

pub use event::{
    Attribution, EventClass, FindingEvent, FindingEventKind, TicketCounts, TicketEvent,
    TicketEventKind, TicketReason,
};
pub use finding::{
    bound_text, Category, Disposition, DispositionState, Evidence, Finding, Location, Package,
};
pub use scan::{Origin, Provenance, RuleHelp, ScanMeta, Status};
pub use severity::Severity;
pub use target::{Target, TargetError, TargetKind};
