//! custody gives every security finding an owner.
//!
//! Scanner reports (SARIF, Trivy, Grype, Gitleaks, Semgrep, detect-secrets,
//! custody's native JSON) are decoded into normalized [`model::Finding`]s,
//! fingerprinted so that one finding keeps one name across scans and tools,
//! attributed to a team, tracked through a lifecycle (open, resolved,
//! reopened, accepted, SLA breached) and grouped into routed tickets. Every
//! stage from decode to tickets is a pure function of its input, the current
//! state and an injected clock; files, Kafka and HTTP live at the edges.
//!
//! # Layout
//!
//! Imports go one way: [`app`] (and [`cli`]) above [`kafka`], above
//! [`service`], above the core; within the core, no two modules import each
//! other outside their tests.
//!
//! - [`model`]: findings, targets, severities, scans, ticket records and the
//!   published events.
//! - [`normalize`]: one decoder per report format behind one trait, and
//!   format sniffing.
//! - [`fingerprint`]: versioned fingerprints, stable when code moves.
//! - [`lifecycle`]: per-target finding state and the pure transition
//!   functions (scan, decision, clock tick).
//! - [`ticket`]: grouping findings into tickets, ticket transitions and
//!   routing to topics.
//! - [`cli`]: the command-line flags (raw; validated by the front ends).
//! - [`app`]: the front ends, one per command: each validates its flags
//!   and runs the library; nothing below it reads the flags.
//! - [`ownership`]: CODEOWNERS, service catalog, aliases, and the resolver
//!   that explains every answer.
//! - [`config`]: the validated configuration (SLA policy, routes, limits),
//!   the service's settings among it.
//! - [`engine`]: wires the stages into one step per scan, decision or tick.
//! - [`process`]: `custody process`, the engine over report files.
//! - [`source`]: a scanned checkout's source lines, for reports without
//!   snippets (`process --source`, `publish --source`).
//! - [`schema`]: JSON Schemas of the native finding, events and decisions.
//! - [`service`]: the service's own logic, free of Kafka clients: the
//!   partition processor (a state machine: messages in, effects out), the
//!   changelog, message metadata, health, the HTTP endpoints and the
//!   server-rendered team scorecard pages.
//! - [`kafka`]: the Kafka edge, the only module that names librdkafka: the
//!   consumer loop that drives the partition processors and carries out
//!   their effects, restores, transactions, topics, the publishers, the
//!   mock cluster.
//! - [`metrics`]: the Prometheus registry.
//! - [`logging`]: the service's logs through `tracing` (text or JSON lines).
//! - [`testing`]: test support: the shared corpus, skipped without it.

pub mod app;
pub mod cli;
pub mod config;
pub mod engine;
pub mod fingerprint;
pub mod kafka;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod normalize;
pub mod ownership;
pub mod process;
pub mod schema;
pub mod service;
pub mod source;
#[doc(hidden)]
pub mod testing;
pub mod ticket;

/// A map keyed by texts of a report or a record (or by encodings of
/// them): hashed with a fast, randomly seeded hash rather than SipHash,
/// which showed in profiles of first scans. The seed is the process's own,
/// so no report can choose texts that collide on every instance.
pub(crate) type TextMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
