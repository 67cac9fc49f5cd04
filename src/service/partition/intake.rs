//! A consumed message sorted into a job: metadata read from its headers,
//! an envelope unwrapped, a decision parsed, a chunk held until its scan is
//! complete; what is malformed becomes a dead letter.

use super::super::meta::{self, MessageMeta};
use super::rescan::{Decode, DecodeInput};
use super::{
    Ack, Bytes, ChunkBuf, Decided, HeldChunk, Incoming, Job, PartitionProcessor, Payload, Shared,
};
use crate::normalize::{self, DecodeError};
use std::sync::Arc;
use std::time::Instant;

fn poison(msg: Incoming, reason: &'static str, error: impl Into<String>) -> Job {
    Job::Poison {
        msg,
        reason,
        error: error.into(),
        held: Vec::new(),
    }
}

impl PartitionProcessor {
    /// Sorts a new message into a job: poison, a held chunk, or a decode.
    pub(super) fn classify(&mut self, msg: Incoming, cx: &Shared, now: Instant) -> Job {
        let max_report = cx.max_report_bytes;
        let ctx = cx.engine.decode_context();
        let part = self;
        let meta = match meta::from_headers(
            msg.key.as_deref(),
            msg.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
        ) {
            Ok(m) => m,
            Err(e) => return poison(msg, "bad_metadata", e.to_string()),
        };
        // A chunk may wait long for the rest of its scan: out of its fetch
        // buffer (see [`Payload`]).
        let msg = if meta.chunk.is_some() {
            msg.owned()
        } else {
            msg
        };
        // A chunk's scan: a chunk that is bad fails its whole scan, so the
        // chunks held for it are dead-lettered with it, not 10 minutes later.
        let chunk_key = meta.chunk.map(|_| {
            let target = meta
                .target
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            (target, meta.scan_id.clone().unwrap_or_default())
        });
        let fail =
            |part: &mut PartitionProcessor, msg: Incoming, reason: &'static str, error: String| {
                let held = chunk_key
                    .as_ref()
                    .and_then(|k| part.chunks.remove(k))
                    .map(|b| b.held)
                    .unwrap_or_default();
                Job::Poison {
                    msg,
                    reason,
                    error,
                    held,
                }
            };
        let Some(shared) = msg.payload.clone() else {
            return fail(part, msg, "empty", "message has no payload".into());
        };
        let payload: &[u8] = &shared;
        if meta.decision {
            return match serde_json::from_slice::<crate::lifecycle::DecisionRecord>(payload) {
                Ok(d) if meta.target.as_ref().is_some_and(|t| *t != d.target) => poison(
                    msg,
                    "bad_decision",
                    format!(
                        "decision for {} sent with key {}: the key must be the decision's target",
                        d.target,
                        meta.target
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default()
                    ),
                ),
                Ok(d) => Job::Decision {
                    msg,
                    decision: Decided::One(Box::new(d)),
                },
                // Or a VEX document about the target the key names.
                Err(e) => match (normalize::vex::parse(payload), meta.target.clone()) {
                    (Ok(Some(doc)), Some(target)) => Job::Decision {
                        msg,
                        decision: Decided::Vex(Box::new(doc), target),
                    },
                    (Ok(Some(_)), None) => poison(
                        msg,
                        "bad_decision",
                        "a VEX document applies to the target its message's key names; this message has none",
                    ),
                    (Ok(None), _) => poison(
                        msg,
                        "bad_decision",
                        format!(
                            "neither a decision record ({}) nor a VEX document",
                            normalize::json_error(&e)
                        ),
                    ),
                    (Err(e), _) => poison(msg, "bad_decision", format!("VEX document: {e}")),
                },
            };
        }
        if payload.len() as u64 > max_report {
            let error = DecodeError::TooLarge {
                size: payload.len() as u64,
                limit: max_report,
            }
            .to_string();
            return fail(part, msg, "too_large", error);
        }
        if let (Some((i, n)), Some(key)) = (meta.chunk, chunk_key.clone()) {
            let scan_id = key.1.clone();
            let buf = part.chunks.entry(key.clone()).or_insert_with(|| ChunkBuf {
                parts: vec![None; n as usize],
                bytes: 0,
                held: Vec::new(),
                first: now,
            });
            if buf.parts.len() != n as usize {
                let error = format!(
                "chunk {i}/{n} of scan {scan_id} disagrees with the earlier count of {}; every chunk of the scan is dead-lettered",
                buf.parts.len()
            );
                return fail(part, msg, "bad_metadata", error);
            }
            let slot = (i - 1) as usize;
            // A retried duplicate is held (its offset waits with the others)
            // but the first copy is the one joined.
            if buf.parts[slot].is_none() {
                if buf.bytes as u64 + payload.len() as u64 > max_report {
                    let error = format!(
                    "chunked scan {scan_id} exceeds the limit of {max_report} bytes; every chunk of it is dead-lettered"
                );
                    return fail(part, msg, "too_large", error);
                }
                buf.bytes += payload.len();
                buf.parts[slot] = Some(Arc::clone(&shared));
            }
            if buf.parts.iter().any(Option::is_none) {
                let ack = Arc::new(Ack::default());
                ack.add(1);
                buf.held.push(HeldChunk {
                    msg: msg.clone(),
                    ack: Arc::clone(&ack),
                });
                return Job::Held { msg, ack };
            }
            // The last missing chunk: the scan is complete.
            let Some(buf) = part.chunks.remove(&key) else {
                return poison(msg, "bad_metadata", "chunk buffer vanished");
            };
            let mut whole = Vec::with_capacity(buf.bytes);
            for p in buf.parts.iter().flatten() {
                whole.extend_from_slice(p);
            }
            return decode_job(
                msg,
                meta,
                Some(scan_id),
                Payload::owned(whole),
                buf.held,
                ctx,
            );
        }
        match meta::unwrap_envelope(payload, &meta) {
            Ok(Some((m, report))) => {
                let bytes = Payload::owned(report);
                let scan_id = m.scan_id.clone();
                decode_job(msg, m, scan_id, bytes, Vec::new(), ctx)
            }
            Ok(None) => {
                let bytes = Arc::clone(&shared);
                let scan_id = meta.scan_id.clone();
                decode_job(msg, meta, scan_id, bytes, Vec::new(), ctx)
            }
            Err(e) => poison(msg, "bad_envelope", e.to_string()),
        }
    }
}

/// A report to decode (see [`Decode`]); a scan id the publisher did not
/// give is derived from the report's bytes there too, off the consumer
/// thread.
fn decode_job(
    msg: Incoming,
    meta: MessageMeta,
    scan_id: Option<String>,
    bytes: Bytes,
    held: Vec<HeldChunk>,
    ctx: &normalize::DecodeContext,
) -> Job {
    let input = DecodeInput {
        format: meta.format,
        // An empty id (`"scan_id": ""` in an envelope) is none.
        scan_id: scan_id.filter(|id| !id.is_empty()),
        bytes,
        ctx: ctx.clone(),
    };
    Job::Decoding {
        msg,
        meta,
        decode: Decode::Lazy(Box::new(input)),
        held,
    }
}
