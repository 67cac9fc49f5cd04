//! The clients' contexts: delivery reports settle each record's [`Ack`];
//! rebalances hand partitions to and from the loop's [`Core`].

use super::config::say_librdkafka;
use super::partitions::Core;
use crate::service::health::{lock, Health};
use crate::service::partition::{Ack, Failure};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// What a produce error costs. One that refuses the record for good (too
/// large for the broker or the topic, invalid) can never succeed: it costs
/// the report that caused it, dead-lettered, not the service. A full queue
/// is waited out. Any other (brokers unreachable past librdkafka's own
/// retries, a timeout, no authorization, an unknown topic) stops the
/// service, and the report is redelivered after the restart.
pub(super) fn failure(e: &KafkaError, topic: &str) -> Failure {
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::PolicyViolation,
        ) => Failure::Poison {
            reason: "event_refused",
            error: format!("{topic} refused a record: {e}"),
        },
        Some(RDKafkaErrorCode::QueueFull) => {
            Failure::Retryable(format!("producing to {topic}: {e}"))
        }
        _ => Failure::Fatal(format!("producing to {topic}: {e}")),
    }
}

/// The producer's context: delivery reports settle [`Ack`]s.
pub struct Delivery {
    pub(super) health: Arc<Health>,
}

impl ClientContext for Delivery {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        say_librdkafka(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", "{error}: {reason}");
    }
}

impl ProducerContext for Delivery {
    type DeliveryOpaque = Box<Arc<Ack>>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Self::DeliveryOpaque) {
        match result {
            Ok(_) => ack.delivered(),
            Err((e, m)) => match failure(e, m.topic()) {
                Failure::Poison { error, .. } => ack.refused(error),
                // librdkafka retried already: what is left is final.
                Failure::Retryable(error) | Failure::Fatal(error) => {
                    self.health.fail(error);
                    ack.lost();
                }
            },
        }
    }
}

pub(super) type Prod = ThreadedProducer<Delivery>;

/// The consumer's context: rebalances hand partitions to and from the core.
pub struct Rebalancer {
    pub(super) core: Arc<Mutex<Core>>,
}

impl ClientContext for Rebalancer {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        say_librdkafka(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", "{error}: {reason}");
    }

    fn stats(&self, stats: rdkafka::Statistics) {
        let health = Arc::clone(lock(&self.core).health());
        let mut highs = lock(&health.high_watermarks);
        for (name, topic) in stats.topics {
            for (p, part) in topic.partitions {
                if p >= 0 && part.hi_offset >= 0 {
                    highs.insert((name.clone(), p), part.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for Rebalancer {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            lock(&self.core).revoke(consumer, &partitions_of(tpl));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut core = lock(&self.core);
            core.assign(consumer, &partitions_of(tpl));
            // After the partitions are listed as restoring: readiness must
            // not see the group joined and nothing to restore.
            core.health().joined.store(true, Ordering::Release);
        }
    }
}

pub(super) type Cons = BaseConsumer<Rebalancer>;

/// The `(topic, partition)` pairs of a rebalance's list.
fn partitions_of(tpl: &rdkafka::TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}
