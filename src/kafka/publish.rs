//! `custody publish`: what a CI job runs after a scanner. Each file is one
//! scan: the message key is the target, the metadata travels in headers,
//! and a report larger than one message is split into chunks of one scan
//! id (`custody-chunk: i/n`; the scan is complete when all n arrived).

use crate::model::Target;
use crate::normalize::Format;
use crate::service::meta::header;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use sha2::{Digest, Sha256};
use std::sync::Mutex;
use std::time::Duration;

/// What to publish with each report.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Reports topic.
    pub topic: String,
    /// The scanned target.
    pub target: Target,
    /// Scanner override.
    pub scanner: Option<String>,
    /// Commit scanned.
    pub commit: Option<String>,
    /// Branch or tag.
    pub git_ref: Option<String>,
    /// Format, when known.
    pub format: Option<Format>,
    /// Scan id (default: derived from target, commit and content).
    pub scan_id: Option<String>,
    /// Whether the scan covered the whole target.
    pub complete: bool,
    /// Largest message payload; larger reports are chunked.
    pub chunk_bytes: usize,
}

impl PublishOptions {
    /// A complete scan of `target` to `topic`, default chunking, nothing
    /// else known.
    pub fn new(topic: &str, target: Target) -> PublishOptions {
        PublishOptions {
            topic: topic.to_string(),
            target,
            scanner: None,
            commit: None,
            git_ref: None,
            format: None,
            scan_id: None,
            complete: true,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
    }
}

/// The default chunk size: under Kafka's default 1 MB message limit with
/// room for headers.
pub const DEFAULT_CHUNK_BYTES: usize = 900 * 1024;

/// One published report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Its scan id.
    pub scan_id: String,
    /// Messages it took.
    pub chunks: usize,
    /// Bytes.
    pub bytes: usize,
}

struct Failures(Mutex<Vec<String>>);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{} [{}]: {e}", m.topic(), m.partition()));
        }
    }
}

/// A producer for publishing reports.
pub struct Publisher {
    producer: BaseProducer<Failures>,
}

impl Publisher {
    /// Connects to `brokers`, with extra librdkafka `properties`.
    pub fn new<'a>(
        brokers: &str,
        properties: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Publisher, String> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", brokers)
            .set("client.id", "custody-publish")
            .set("enable.idempotence", "true")
            .set("message.max.bytes", "1048576")
            .set("linger.ms", "5");
        for (k, v) in properties {
            cfg.set(k, v);
        }
        let producer = cfg
            .create_with_context(Failures(Mutex::new(Vec::new())))
            .map_err(|e| format!("cannot create a producer: {e}"))?;
        Ok(Publisher { producer })
    }

    /// Queues one report (call [`Publisher::flush`] to wait for delivery).
    pub fn send(&self, opts: &PublishOptions, report: &[u8]) -> Result<Published, String> {
        let scan_id = opts.scan_id.clone().unwrap_or_else(|| {
            let mut h = Sha256::new();
            h.update(opts.target.to_string().as_bytes());
            h.update([0]);
            h.update(opts.commit.as_deref().unwrap_or("").as_bytes());
            h.update([0]);
            h.update(report);
            crate::fingerprint::hex(&h.finalize()[..12])
        });
        let size = opts.chunk_bytes.max(1);
        let pieces: Vec<&[u8]> = if report.len() <= size {
            vec![report]
        } else {
            report.chunks(size).collect()
        };
        let n = pieces.len();
        let key = opts.target.to_string();
        let complete = if opts.complete { "true" } else { "false" };
        for (i, piece) in pieces.iter().enumerate() {
            let mut hs = OwnedHeaders::new()
                .insert(Header {
                    key: header::TARGET,
                    value: Some(key.as_str()),
                })
                .insert(Header {
                    key: header::SCAN_ID,
                    value: Some(scan_id.as_str()),
                })
                .insert(Header {
                    key: header::COMPLETE,
                    value: Some(complete),
                });
            for (name, v) in [
                (header::SCANNER, opts.scanner.as_deref()),
                (header::COMMIT, opts.commit.as_deref()),
                (header::REF, opts.git_ref.as_deref()),
                (header::FORMAT, opts.format.map(Format::name)),
            ] {
                if let Some(v) = v {
                    hs = hs.insert(Header {
                        key: name,
                        value: Some(v),
                    });
                }
            }
            let chunk = format!("{}/{n}", i + 1);
            if n > 1 {
                hs = hs.insert(Header {
                    key: header::CHUNK,
                    value: Some(chunk.as_str()),
                });
            }
            let mut record: BaseRecord<'_, str, [u8], ()> = BaseRecord::to(&opts.topic)
                .key(key.as_str())
                .payload(*piece)
                .headers(hs);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        r,
                    )) => {
                        record = r;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(format!("cannot send to {}: {e}", opts.topic)),
                }
            }
            self.producer.poll(Duration::ZERO);
        }
        Ok(Published {
            scan_id,
            chunks: n,
            bytes: report.len(),
        })
    }

    /// Queues one message with a key and a value (none: a tombstone).
    pub fn send_keyed(&self, topic: &str, key: &str, value: Option<&[u8]>) -> Result<(), String> {
        let mut record: BaseRecord<'_, str, [u8], ()> = BaseRecord::to(topic).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        self.producer
            .send(record)
            .map_err(|(e, _)| format!("cannot send {key} to {topic}: {e}"))?;
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Queues one decision, keyed by its target, on `topic`.
    pub fn send_decision(
        &self,
        topic: &str,
        d: &crate::lifecycle::DecisionRecord,
    ) -> Result<(), String> {
        d.validate().map_err(|e| e.to_string())?;
        let payload = serde_json::to_vec(d).map_err(|e| e.to_string())?;
        self.send_decision_bytes(topic, &d.target, &payload)
    }

    /// Queues a VEX document (CycloneDX VEX or OpenVEX, as read) about
    /// `target` on `topic`, keyed by the target, as a decision.
    pub fn send_vex(&self, topic: &str, target: &Target, document: &[u8]) -> Result<(), String> {
        self.send_decision_bytes(topic, target, document)
    }

    fn send_decision_bytes(
        &self,
        topic: &str,
        target: &Target,
        payload: &[u8],
    ) -> Result<(), String> {
        let key = target.to_string();
        let hs = OwnedHeaders::new().insert(Header {
            key: header::KIND,
            value: Some("decision"),
        });
        let record: BaseRecord<'_, str, [u8], ()> = BaseRecord::to(topic)
            .key(key.as_str())
            .payload(payload)
            .headers(hs);
        self.producer
            .send(record)
            .map_err(|(e, _)| format!("cannot send to {topic}: {e}"))?;
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Waits until every queued message is delivered (or `timeout`
    /// passes); the errors of messages that were not.
    pub fn flush(&self, timeout: Duration) -> Result<(), String> {
        self.producer
            .flush(timeout)
            .map_err(|e| format!("not all messages were delivered within {timeout:?}: {e}"))?;
        let failures = std::mem::take(
            &mut *self
                .producer
                .context()
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        if failures.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} messages were not delivered: {}",
                failures.len(),
                failures.join("; ")
            ))
        }
    }
}

/// `-X name=value` flags as pairs; the first one without `=` is an error.
pub fn properties(flags: &[String]) -> Result<Vec<(String, String)>, String> {
    flags
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(format!("-X {p:?}: expected name=value")),
        })
        .collect()
}
