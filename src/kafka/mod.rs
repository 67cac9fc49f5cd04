//! The Kafka edge: the only part of custody that speaks to librdkafka.
//! Partition processors ([`crate::service::partition`]) decide; this module
//! consumes, produces, stores offsets, commits transactions, restores state
//! and follows rebalances for them, and publishes reports and ownership.
//!
//! - [`config`]: the client settings every client starts from, and
//!   librdkafka's logs through `tracing`;
//! - [`context`]: the clients' contexts (delivery reports, rebalances);
//! - [`message`]: a consumed message read in place;
//! - [`edge`]: the processors' effects carried out, and transactions;
//! - [`restore`]: a partition's changelog read back at assignment;
//! - [`partitions`]: the partitions the loop holds, assigned, restored,
//!   stepped and committed;
//! - [`worker`]: the clients and the consumer loop;
//! - [`shutdown`]: the stop, within its timeout;
//! - [`service`]: a running service (topics checked, ownership followed,
//!   the loop on its thread);
//! - [`topics`]: checking and creating topics;
//! - [`ticket_stage`]: the stage that sums tickets across targets;
//! - [`ownership_topic`]: ownership published on a compacted topic, and
//!   followed;
//! - [`publish`]: reports onto the reports topic, chunked or enveloped;
//! - [`mock`]: librdkafka's mock cluster, for the demo and fast tests.

pub mod config;
pub mod context;
pub mod edge;
pub mod message;
pub mod mock;
pub mod ownership_topic;
pub mod partitions;
pub mod publish;
pub mod restore;
pub mod service;
pub mod shutdown;
pub mod ticket_stage;
pub mod topics;
pub mod worker;

pub use config::client_config;
pub use worker::{RunError, Worker};
