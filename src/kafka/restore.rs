//! A partition's state restored: its changelog partition read from the
//! beginning to its end (past any transaction still open below it, under
//! exactly-once) on a thread of its own, and handed to the loop.

use crate::metrics::Metrics;
use crate::service::changelog;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A partition's changelog, read to its end (or the error that stopped
/// the read).
pub(super) struct Restored {
    pub(super) tp: (String, i32),
    pub(super) generation: u64,
    /// The records, and the last scan records that hold (parsed on the
    /// restore's thread).
    pub(super) result: Result<(changelog::RawLog, Vec<(String, changelog::ScanRecord)>), String>,
}

/// Restoring clients per assignment.
pub(super) const RESTORE_CLIENTS: usize = 4;

/// Reads the changelog partitions of an assignment from the beginning to
/// their ends, sending each partition's records as soon as it is complete.
pub(super) fn restore(
    cfg: &ClientConfig,
    batch: Vec<((String, i32), String, u64)>,
    metrics: &Metrics,
    deadline: Duration,
    tx: &mpsc::Sender<Restored>,
    client: &mut Option<BaseConsumer>,
) {
    let started = Instant::now();
    // A few partitions per client: a list is searched without allocating.
    let mut open: Vec<Reading> = batch
        .into_iter()
        .map(|(tp, changelog_topic, generation)| Reading {
            at: (changelog_topic, tp.1),
            tp,
            generation,
            high: None,
            raw: changelog::RawLog::new(),
        })
        .collect();
    let fail = |open: Vec<Reading>, e: String| {
        for r in open {
            let _ = tx.send(Restored {
                tp: r.tp,
                generation: r.generation,
                result: Err(e.clone()),
            });
        }
    };
    let done = |mut r: Reading| {
        r.raw.seal();
        let scans = r.raw.take_scans();
        let _ = tx.send(Restored {
            tp: r.tp,
            generation: r.generation,
            result: Ok((r.raw, scans)),
        });
    };
    let mut cfg = cfg.clone();
    cfg.set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        // Reading as fast as it arrives: when the prefetch queue is full,
        // look again soon rather than after the default second.
        .set("fetch.queue.backoff.ms", "10");
    // A group id is required by librdkafka, though nothing is committed.
    if cfg.get("group.id").is_none() {
        cfg.set("group.id", "custody-restore");
    }
    let consumer: &BaseConsumer = match cfg.create() {
        Ok(c) => client.insert(c),
        Err(e) => return fail(open, e.to_string()),
    };
    // Where each changelog partition starts and ends, asked in one
    // ListOffsets request per broker for each end. Reading from an
    // explicit offset skips the lookup a logical one needs, which a new
    // client puts off by 500 ms until it knows the leader; and an empty
    // partition is not fetched at all.
    if let Err(e) = no_open_transactions(&cfg, consumer, &open, started + deadline) {
        return fail(open, e);
    }
    let ends = watermarks(consumer, &open, Duration::from_secs(30));
    let mut from = TopicPartitionList::new();
    let mut i = 0;
    while i < open.len() {
        let start = match ends.get(&open[i].at) {
            Some(&(low, high)) if high <= low => {
                done(open.swap_remove(i));
                continue;
            }
            Some(&(low, high)) => {
                open[i].high = Some(high);
                Offset::Offset(low)
            }
            // Not known: read to the end the consumer reports.
            None => Offset::Beginning,
        };
        let (t, p) = &open[i].at;
        if let Err(e) = from.add_partition_offset(t, *p, start) {
            return fail(open, e.to_string());
        }
        i += 1;
    }
    if open.is_empty() {
        return;
    }
    if let Err(e) = consumer.assign(&from) {
        return fail(open, e.to_string());
    }
    let mut reported = 0usize;
    let mut total = 0usize;
    let mut last_word = Instant::now();
    while !open.is_empty() {
        if started.elapsed() > deadline {
            let e = format!(
                "timed out after {}s at {}",
                started.elapsed().as_secs(),
                where_reading(consumer, &open)
            );
            return fail(open, e);
        }
        if last_word.elapsed() > RESTORE_WORD {
            last_word = Instant::now();
            tracing::info!(
                "still restoring after {}s: {}",
                started.elapsed().as_secs(),
                where_reading(consumer, &open)
            );
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let (topic, partition) = (m.topic(), m.partition());
                let Some(i) = open
                    .iter()
                    .position(|o| o.at.1 == partition && o.at.0 == topic)
                else {
                    continue;
                };
                let slot = &mut open[i];
                if let Some(key) = m.key() {
                    if let Err(e) = slot.raw.push(m.offset(), key, m.payload()) {
                        let e = format!("{topic} offset {}: {e}", m.offset());
                        return fail(open, e);
                    }
                    total += 1;
                    if total - reported >= 10_000 {
                        metrics.restored(total - reported);
                        reported = total;
                    }
                }
                // The end known at the start is reached: anything later
                // was written after the assignment.
                if slot.high.is_some_and(|h| m.offset() + 1 >= h) {
                    done(open.swap_remove(i));
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                // The error names only the partition: finish the entries
                // with this partition number that stand at their end.
                // Trusted when only one entry can be meant; else the
                // position says (transaction markers at the end of a log
                // leave the position short of the end).
                let pos = consumer.position().ok();
                let unique = open.iter().filter(|x| x.at.1 == p).count() == 1;
                finish_if(&mut open, &done, |o| {
                    o.at.1 == p
                        && (unique
                            || match (offset_in(pos.as_ref(), &o.at), o.high) {
                                (Some(a), Some(h)) => a >= h,
                                (Some(a), None) => consumer
                                    .fetch_watermarks(&o.at.0, o.at.1, Duration::from_secs(10))
                                    .is_ok_and(|(_, h)| a >= h),
                                _ => false,
                            })
                });
            }
            Some(Err(e)) => return fail(open, e.to_string()),
            None => {
                // Nothing arrived: a partition whose last offsets are
                // control records (transaction markers) or compacted away
                // may stand at its end without a message reaching it.
                if let Ok(pos) = consumer.position() {
                    finish_if(
                        &mut open,
                        &done,
                        |o| matches!((offset_in(Some(&pos), &o.at), o.high), (Some(a), Some(h)) if a >= h),
                    );
                }
            }
        }
    }
    metrics.restored(total - reported);
}

/// How often a restore that has not finished says where it stands.
const RESTORE_WORD: Duration = Duration::from_secs(30);

/// A changelog partition being read.
struct Reading {
    /// (changelog topic, partition).
    at: (String, i32),
    /// The reports partition it restores.
    tp: (String, i32),
    generation: u64,
    /// The end of the changelog partition when the restore began.
    high: Option<i64>,
    raw: changelog::RawLog,
}

/// Waits until no transaction is open below the end of the changelog
/// partitions in `open`. An instance killed mid-transaction (exactly-once)
/// leaves it open until the broker aborts it, up to its
/// `transaction.timeout.ms`; meanwhile a `read_committed` reader stops at
/// the transaction's start (the last stable offset), short of what
/// transactions committed after it, which the group's offsets already
/// count as applied. A state restored that far would miss them, and apply
/// later reports against an older state. So the restore waits until every
/// partition's last stable offset reaches the end the partition had when
/// the wait began (read uncommitted). Without transactions the two are
/// the same and nothing waits.
fn no_open_transactions(
    cfg: &ClientConfig,
    committed: &BaseConsumer,
    open: &[Reading],
    until: Instant,
) -> Result<(), String> {
    let mut probe_cfg = cfg.clone();
    probe_cfg.set("isolation.level", "read_uncommitted");
    let probe: BaseConsumer = probe_cfg.create().map_err(|e| e.to_string())?;
    let ends = watermarks(&probe, open, Duration::from_secs(30));
    let mut said = false;
    loop {
        let stable = watermarks(committed, open, Duration::from_secs(30));
        let held: Vec<String> = ends
            .iter()
            .filter(|(at, &(_, end))| stable.get(*at).is_none_or(|&(_, lso)| lso < end))
            .map(|((t, p), &(_, end))| {
                let lso = stable.get(&(t.clone(), *p)).map_or(-1, |&(_, l)| l);
                format!("{t}/{p} (stable to {lso} of {end})")
            })
            .collect();
        if held.is_empty() {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!(
                "transactions still open in {} (their producer gone?); the broker aborts them after their transaction.timeout.ms",
                held.join(", ")
            ));
        }
        if !said {
            said = true;
            tracing::warn!(
                "restoring waits for transactions still open in {}: a killed instance's, aborted by the broker after its transaction.timeout.ms",
                held.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The low and high watermarks of the partitions in `open`, those the
/// broker answered for.
fn watermarks(
    consumer: &BaseConsumer,
    open: &[Reading],
    timeout: Duration,
) -> HashMap<(String, i32), (i64, i64)> {
    let ask = |at: Offset| {
        let mut tpl = TopicPartitionList::new();
        for r in open {
            // ListOffsets reads -2 as the earliest offset, -1 as the end.
            let _ = tpl.add_partition_offset(&r.at.0, r.at.1, at);
        }
        consumer.offsets_for_times(tpl, timeout)
    };
    let (low, high) = match (ask(Offset::Beginning), ask(Offset::End)) {
        (Ok(l), Ok(h)) => (l, h),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(
                "cannot ask where the changelog partitions end ({e}); reading each to its end-of-partition event"
            );
            return HashMap::new();
        }
    };
    let mut out = HashMap::new();
    for h in high.elements() {
        if h.error().is_err() {
            continue;
        }
        let l = low
            .find_partition(h.topic(), h.partition())
            .filter(|l| l.error().is_ok())
            .map(|l| l.offset());
        if let (Some(Offset::Offset(l)), Offset::Offset(h2)) = (l, h.offset()) {
            out.insert((h.topic().to_string(), h.partition()), (l, h2));
        }
    }
    out
}

/// Hands over (and removes) the entries of `open` that `is_done` says are
/// at their end.
fn finish_if(open: &mut Vec<Reading>, done: &impl Fn(Reading), is_done: impl Fn(&Reading) -> bool) {
    let mut i = 0;
    while i < open.len() {
        if is_done(&open[i]) {
            done(open.swap_remove(i));
        } else {
            i += 1;
        }
    }
}

/// The consumer's position in `at` (changelog topic, partition), when it
/// is a real offset.
fn offset_in(pos: Option<&TopicPartitionList>, at: &(String, i32)) -> Option<i64> {
    match pos?.find_partition(&at.0, at.1)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// Each open partition's position and end, for a message.
fn where_reading(consumer: &BaseConsumer, open: &[Reading]) -> String {
    let pos = consumer.position().ok();
    open.iter()
        .map(|o| {
            let at = offset_in(pos.as_ref(), &o.at).map_or("?".into(), |a| a.to_string());
            let high = o.high.map_or("?".into(), |h| h.to_string());
            format!(
                "{}/{} at {at} of {high} ({} records)",
                o.at.0,
                o.at.1,
                o.raw.len()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
