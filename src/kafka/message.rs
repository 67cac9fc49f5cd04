//! A consumed message, its payload read in place in librdkafka's fetch
//! buffer (see [`Payload`]).

use super::context::Cons;
use crate::service::partition::{InPlace, Incoming, Payload};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use std::sync::Arc;

/// A message kept as consumed, with the consumer it came from.
pub(super) struct Fetched {
    /// Borrowed from `*consumer`, which the `Arc` beside it keeps alive and
    /// in place for as long as the message lives. Declared first, so it
    /// is dropped before that `Arc`.
    msg: BorrowedMessage<'static>,
    _consumer: Arc<Cons>,
}

impl Fetched {
    fn new(m: BorrowedMessage<'_>, consumer: &Arc<Cons>) -> Fetched {
        // SAFETY: `m` borrows from the consumer in `consumer`'s allocation
        // (it was polled from `**consumer`). The clone of that `Arc` held
        // beside it keeps the consumer alive and unmoved until the message
        // is dropped, and the message is dropped first (field order), so
        // the lifetime it claims is never outlived. Only the lifetime
        // parameter changes; the layout is the same.
        let msg =
            unsafe { std::mem::transmute::<BorrowedMessage<'_>, BorrowedMessage<'static>>(m) };
        Fetched {
            msg,
            _consumer: Arc::clone(consumer),
        }
    }
}

impl InPlace for Fetched {
    fn bytes(&self) -> &[u8] {
        self.msg.payload().unwrap_or_default()
    }
}

/// A consumed message, its payload read in place.
pub(super) fn incoming(m: BorrowedMessage<'_>, consumer: &Arc<Cons>) -> Incoming {
    let headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    let offset = m.offset();
    let timestamp = m.timestamp().to_millis();
    let key = m.key().map(<[u8]>::to_vec);
    let payload = m
        .payload()
        .is_some()
        .then(|| Arc::new(Payload::InPlace(Box::new(Fetched::new(m, consumer)))));
    Incoming {
        offset,
        timestamp,
        key,
        payload,
        headers,
    }
}
