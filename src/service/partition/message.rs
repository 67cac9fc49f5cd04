//! A consumed message as a processor holds it: its payload read in place in
//! the consumer's fetch buffer, or owned.

use chrono::{DateTime, TimeZone, Utc};
use std::sync::Arc;

/// A report's bytes, shared by the message, its decode and its scan id.
pub type Bytes = Arc<Payload>;

/// A consumed message's payload: read in place in the consumer's fetch
/// buffer, or owned.
///
/// Copying every report out of the fetch buffer took a quarter of the
/// consuming thread's time at full speed (200 KB reports, the copy into
/// fresh pages), time in which the pool waited for the next batch. A
/// payload that may be kept long is owned instead (see
/// [`Incoming::owned`]): a message read in place keeps its whole fetch
/// response in memory.
pub enum Payload {
    InPlace(Box<dyn InPlace>),
    Owned(Box<[u8]>),
}

/// A payload read in place: the edge's consumed message.
pub trait InPlace: Send + Sync {
    fn bytes(&self) -> &[u8];
}

impl std::ops::Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Payload::InPlace(m) => m.bytes(),
            Payload::Owned(b) => b,
        }
    }
}

impl Payload {
    pub fn owned(bytes: impl Into<Box<[u8]>>) -> Bytes {
        Arc::new(Payload::Owned(bytes.into()))
    }
}

/// A consumed message: its payload read in place (see [`Payload`]), the
/// rest copied out.
#[derive(Clone)]
pub struct Incoming {
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    /// Shared with the decoder, and kept for a dead letter.
    pub payload: Option<Bytes>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("offset", &self.offset)
            .field("key", &self.key.as_deref().map(String::from_utf8_lossy))
            .field("bytes", &self.payload.as_ref().map_or(0, |p| p.len()))
            .field("headers", &self.headers.len())
            .finish()
    }
}

impl Incoming {
    /// The message with its payload copied out of the fetch buffer, for a
    /// message that may wait long (a chunk waiting for the rest of its
    /// scan, a message of a partition still restoring): read in place, it
    /// would keep a whole fetch response in memory, out of the in-flight
    /// bounds' sight.
    pub fn owned(mut self) -> Incoming {
        if let Some(p) = &self.payload {
            if matches!(**p, Payload::InPlace(_)) {
                self.payload = Some(Payload::owned(&***p));
            }
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.payload.as_ref().map_or(0, |p| p.len()) + self.key.as_ref().map_or(0, Vec::len)
    }

    /// The message's time (`now`, the time of its processing, when it has
    /// none): the time its scan or decision is applied at.
    pub(super) fn time(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.timestamp
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .unwrap_or(now)
    }
}
