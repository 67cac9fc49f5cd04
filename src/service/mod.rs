//! The service's own logic, free of any Kafka client: what `custody run`
//! does with each partition, and what it keeps.
//!
//! - [`partition`]: one partition's processing as a state machine
//!   (messages in, effects out), which [`crate::kafka`] drives;
//! - [`changelog`]: the compacted state changelog's records and restore;
//! - [`meta`]: scan metadata from headers or the JSON envelope;
//! - [`health`]: liveness, readiness and the stop flags the loop, the
//!   HTTP endpoints and the front ends share;
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`tickets`]: tickets across targets: the records of each target's
//!   part and the stage that sums them.
//!
//! Its settings (`[kafka]`, `[http]`, `[ownership]` and environment
//! overrides) are [`crate::config::service`].

pub mod changelog;
pub mod health;
pub mod http;
pub mod meta;
pub mod partition;
pub mod scorecard;
pub mod tickets;
