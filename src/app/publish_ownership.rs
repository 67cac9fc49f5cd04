//! `custody publish-ownership`: ownership files onto the ownership topic.

use crate::kafka::ownership_topic::publish;
use crate::kafka::ownership_topic::PublishError;
use crate::kafka::publish::properties;
use std::time::Duration;

/// `custody publish-ownership`: exit 0 when the configuration was valid
/// and its version delivered, 1 when it is invalid (nothing sent), 2 when
/// Kafka failed.
pub fn command(args: crate::cli::PublishOwnershipArgs) -> u8 {
    let props = match properties(&args.property) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("custody publish-ownership: {e}");
            return 2;
        }
    };
    match publish(
        &args.brokers,
        &props,
        &args.topic,
        &args.path,
        args.replication_factor,
        Duration::from_secs(args.timeout_secs),
    ) {
        Ok(p) => {
            println!(
                "ownership version {} published to {}: {} ({} file(s) sent, {} of older versions deleted)",
                p.id,
                args.topic,
                p.files.join(", "),
                p.sent,
                p.pruned
            );
            0
        }
        Err(e) => {
            eprintln!("custody publish-ownership: {e}");
            match e {
                PublishError::Invalid(_) => 1,
                PublishError::Kafka(_) => 2,
            }
        }
    }
}
