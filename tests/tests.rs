//! The integration tests: one binary, one module per area.

mod broker;
mod churn;
mod cli;
mod codeowners;
#[path = "../benches/common/mod.rs"]
mod common;
mod corpus;
mod deploy;
mod dispositions;
mod lifecycle;
mod metrics;
mod ownership;
mod schemas;
mod scorecard;
mod service;
mod tickets;
