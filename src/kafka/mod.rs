//! The Kafka edge of `custody run`: the only part of the service that
//! speaks to librdkafka. Partition processors
//! ([`crate::service::partition`]) decide; this module consumes, produces,
//! stores offsets, commits transactions, restores state and follows
//! rebalances for them.
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
//! - [`shutdown`]: the stop, within its timeout.

pub mod config;
pub mod context;
pub mod edge;
pub mod message;
pub mod partitions;
pub mod restore;
pub mod shutdown;
pub mod worker;

pub use config::client_config;
pub use worker::{RunError, Worker};
