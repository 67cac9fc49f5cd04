//! Targets evicted from a partition's memory: each one's records in the
//! binary form ([`super::Writer::freeze`]), kept compact (the target spec
//! left out of the keys, fingerprints as bytes) back to back in large
//! blocks, and decoded again, as a restored target is, when a message
//! needs the target. A target decoded again leaves its bytes behind as
//! garbage; a block mostly garbage has what is still live in it moved to
//! the block being filled, and is freed, so the store stays in proportion
//! to what it holds however often targets come and go.

use super::binary::{self, DictMeta};
use super::restore::BLOCK;
use super::{decode_target, Decoded, Frozen, RawRecord};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// Bytes of an entry's header in its block: the target's length and the
/// image's, as a little-endian `u32` and `u64`.
const HEADER: usize = 12;

/// What is kept of an evicted target besides its records.
#[derive(Debug, Clone)]
pub struct ColdMeta {
    /// The first moment the SLA clock has something to do on the target
    /// (see [`crate::lifecycle::next_tick`]); `None`: never, until a
    /// message changes it.
    pub wake: Option<DateTime<Utc>>,
    /// Its findings.
    pub findings: usize,
    dict: Option<DictMeta>,
    extra: u64,
}

/// A target's place in the store.
#[derive(Debug)]
struct Entry {
    block: u32,
    /// Where its header starts in the block.
    start: usize,
    /// Header, target and image.
    len: usize,
    meta: ColdMeta,
}

#[derive(Debug, Default)]
struct Block {
    bytes: Vec<u8>,
    /// Bytes of entries still in use.
    live: usize,
}

/// The evicted targets of one partition (see the module's documentation).
#[derive(Debug, Default)]
pub struct ColdStore {
    blocks: HashMap<u32, Block>,
    next_block: u32,
    /// The block entries are appended to.
    open: Option<u32>,
    targets: HashMap<Box<str>, Entry>,
    /// Bytes of entries in use.
    live: usize,
    /// Bytes held but not in use: entries taken out, and the unused end of
    /// each closed block (an entry that did not fit there opened the next
    /// block). Counting the ends too keeps the store within about twice
    /// what is live however large the entries are next to a block.
    garbage: usize,
}

/// A target's records taken back out of a [`ColdStore`], decoded.
#[derive(Debug)]
pub struct Thawed {
    pub decoded: Decoded,
    pub dict: Option<DictMeta>,
    /// The first id of texts its dictionary did not hold (see
    /// [`super::Writer::thaw`]).
    pub extra: u64,
}

impl ColdStore {
    /// An empty store.
    pub fn new() -> ColdStore {
        ColdStore::default()
    }

    /// Keeps `target`'s records (which must all be of `target`, as
    /// [`super::Writer::freeze`] gives them) with when the SLA clock next
    /// needs it, in place of anything kept of it before.
    pub fn put(
        &mut self,
        target: &str,
        frozen: Frozen,
        wake: Option<DateTime<Utc>>,
        findings: usize,
    ) {
        self.remove(target);
        let prefix_len = 2 + target.len() + 1;
        let mut image = vec![binary::MAGIC, binary::VERSION];
        for r in &frozen.records {
            let kind = r.key.first().copied().unwrap_or(0);
            let id = r.key.get(prefix_len..).unwrap_or_default();
            image.push(kind);
            binary::put_text(&mut image, &String::from_utf8_lossy(id));
            match &r.value {
                Some(v) => {
                    binary::put_varint(&mut image, v.len() as u64 + 1);
                    image.extend_from_slice(v);
                }
                None => binary::put_varint(&mut image, 0),
            }
        }
        let meta = ColdMeta {
            wake,
            findings,
            dict: frozen.dict,
            extra: frozen.extra,
        };
        self.append(target, &image, meta);
    }

    /// Appends an entry to the open block (a new one when it is full).
    fn append(&mut self, target: &str, image: &[u8], meta: ColdMeta) {
        let len = HEADER + target.len() + image.len();
        let fits = self
            .open
            .and_then(|b| self.blocks.get(&b))
            .is_some_and(|b| b.bytes.capacity() - b.bytes.len() >= len);
        if !fits {
            let id = self.next_block;
            self.next_block = self.next_block.wrapping_add(1);
            self.blocks.insert(
                id,
                Block {
                    bytes: Vec::with_capacity(len.max(BLOCK)),
                    live: 0,
                },
            );
            // The block closed is freed if nothing in it is live; else its
            // unused end is garbage from now on.
            if let Some(old) = self.open.replace(id) {
                if self.blocks.get(&old).is_some_and(|b| b.live == 0) {
                    if let Some(b) = self.blocks.remove(&old) {
                        self.garbage = self.garbage.saturating_sub(b.bytes.len());
                    }
                } else if let Some(b) = self.blocks.get(&old) {
                    self.garbage += b.bytes.capacity() - b.bytes.len();
                }
            }
        }
        let Some(id) = self.open else {
            return;
        };
        let Some(block) = self.blocks.get_mut(&id) else {
            return;
        };
        let start = block.bytes.len();
        // A target's spec is a message's key or header: far below 4 GiB.
        block
            .bytes
            .extend_from_slice(&(target.len() as u32).to_le_bytes());
        block
            .bytes
            .extend_from_slice(&(image.len() as u64).to_le_bytes());
        block.bytes.extend_from_slice(target.as_bytes());
        block.bytes.extend_from_slice(image);
        block.live += len;
        self.live += len;
        self.targets.insert(
            target.into(),
            Entry {
                block: id,
                start,
                len,
                meta,
            },
        );
    }

    /// Forgets what is kept of `target`: its bytes become garbage.
    fn remove(&mut self, target: &str) -> Option<ColdMeta> {
        let e = self.targets.remove(target)?;
        let len = e.len;
        self.live -= len;
        self.garbage += len;
        let empty = match self.blocks.get_mut(&e.block) {
            Some(b) => {
                b.live -= len;
                b.live == 0
            }
            None => false,
        };
        if empty && self.open != Some(e.block) {
            // Closed: its entries and its unused end were garbage.
            if let Some(b) = self.blocks.remove(&e.block) {
                self.garbage = self.garbage.saturating_sub(b.bytes.capacity());
            }
        }
        self.compact();
        Some(e.meta)
    }

    /// When garbage outweighs what is live (and is more than a block),
    /// every closed block at least half garbage has its live entries
    /// moved to the open block, and is freed.
    fn compact(&mut self) {
        if self.garbage <= self.live || self.garbage < BLOCK {
            return;
        }
        let sparse: Vec<u32> = self
            .blocks
            .iter()
            .filter(|(id, b)| Some(**id) != self.open && b.live * 2 <= b.bytes.capacity())
            .map(|(id, _)| *id)
            .collect();
        for id in sparse {
            let Some(block) = self.blocks.remove(&id) else {
                continue;
            };
            self.garbage = self
                .garbage
                .saturating_sub(block.bytes.capacity() - block.live);
            let bytes = &block.bytes;
            let mut pos = 0;
            while pos + HEADER <= bytes.len() {
                let mut w = [0u8; 4];
                w.copy_from_slice(&bytes[pos..pos + 4]);
                let tlen = u32::from_le_bytes(w) as usize;
                let mut w = [0u8; 8];
                w.copy_from_slice(&bytes[pos + 4..pos + HEADER]);
                let ilen = usize::try_from(u64::from_le_bytes(w)).unwrap_or(usize::MAX);
                let t = pos + HEADER;
                let i = t.saturating_add(tlen);
                let end = i.saturating_add(ilen);
                if end > bytes.len() {
                    break;
                }
                let target = String::from_utf8_lossy(&bytes[t..i]);
                let live = self
                    .targets
                    .get(&*target)
                    .is_some_and(|e| e.block == id && e.start == pos);
                if live {
                    if let Some(e) = self.targets.remove(&*target) {
                        self.live -= e.len;
                        self.append(&target, &bytes[i..end], e.meta);
                    }
                }
                pos = end;
            }
        }
    }

    /// Takes `target`'s records out, decoded (an error names `topic`):
    /// `None` when none are kept.
    pub fn take(&mut self, target: &str, topic: &str) -> Option<Result<Thawed, String>> {
        let e = self.targets.get(target)?;
        let decoded = self
            .blocks
            .get(&e.block)
            .ok_or_else(|| format!("the evicted target {target}'s block is gone"))
            .and_then(|b| {
                let start = e.start + HEADER + target.len();
                let end = e.start + e.len;
                let image = b.bytes.get(start..end).unwrap_or_default();
                read_image(target, image, topic)
            });
        let meta = self.remove(target)?;
        Some(decoded.map(|decoded| Thawed {
            decoded,
            dict: meta.dict,
            extra: meta.extra,
        }))
    }

    /// `target`'s records decoded, left in the store: `None` when none
    /// are kept.
    pub fn peek(&self, target: &str, topic: &str) -> Option<Result<Decoded, String>> {
        let e = self.targets.get(target)?;
        let b = self.blocks.get(&e.block)?;
        let start = e.start + HEADER + target.len();
        let end = e.start + e.len;
        let image = b.bytes.get(start..end).unwrap_or_default();
        Some(read_image(target, image, topic))
    }

    /// Whether `target` is kept here.
    pub fn contains(&self, target: &str) -> bool {
        self.targets.contains_key(target)
    }

    /// What is kept of `target` besides its records.
    pub fn meta(&self, target: &str) -> Option<&ColdMeta> {
        self.targets.get(target).map(|e| &e.meta)
    }

    /// The targets kept.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.targets.keys().map(|t| &**t)
    }

    /// The targets the SLA clock has something to do on at `now`.
    pub fn due(&self, now: DateTime<Utc>) -> Vec<String> {
        self.targets
            .iter()
            .filter(|(_, e)| e.meta.wake.is_some_and(|w| w <= now))
            .map(|(t, _)| t.to_string())
            .collect()
    }

    /// Targets kept.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// No target kept.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Bytes of the blocks held (live and garbage).
    pub fn bytes(&self) -> usize {
        self.blocks.values().map(|b| b.bytes.capacity()).sum()
    }

    /// Bytes of the entries in use.
    pub fn live_bytes(&self) -> usize {
        self.live
    }
}

/// Reads an entry's records back (keys completed with `target`) and
/// decodes them as a restore does.
fn read_image(target: &str, image: &[u8], topic: &str) -> Result<Decoded, String> {
    let mut r = binary::Reader::new(image)?;
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut values: Vec<Option<&[u8]>> = Vec::new();
    while r.end("evicted target").is_err() {
        let kind = r.byte("record kind")?;
        let id = r.text("record key")?;
        let mut key = Vec::with_capacity(3 + target.len() + id.len());
        key.extend_from_slice(&[kind, 0]);
        key.extend_from_slice(target.as_bytes());
        key.push(0);
        key.extend_from_slice(id.as_bytes());
        keys.push(key);
        let value = match r.varint("value length")? {
            0 => None,
            n => Some(r.bytes(n - 1, "value")?),
        };
        values.push(value);
    }
    let recs: Vec<RawRecord<'_>> = keys
        .iter()
        .zip(values)
        .map(|(key, value)| RawRecord {
            offset: -1,
            key,
            value,
        })
        .collect();
    decode_target(&recs, &format!("{topic} (evicted target's copy)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::changelog::{Parsed, Record};
    use std::collections::BTreeSet;

    /// A target's records: its baseline, `n` scanners named after `round`.
    fn frozen(target: &str, round: usize, n: usize) -> (Frozen, BTreeSet<String>) {
        let scanners: BTreeSet<String> = (0..n)
            .map(|j| format!("scanner-{round}-{j}-of-{target}"))
            .collect();
        let mut key = vec![b'b', 0];
        key.extend_from_slice(target.as_bytes());
        key.push(0);
        let records = vec![Record {
            key,
            value: serde_json::to_vec(&scanners).ok(),
        }];
        let frozen = Frozen {
            records,
            dict: None,
            extra: 0,
        };
        (frozen, scanners)
    }

    fn baseline(thawed: Thawed) -> Option<BTreeSet<String>> {
        thawed.decoded.parsed.into_iter().find_map(|p| match p {
            Parsed::Baseline { scanners, .. } => scanners,
            _ => None,
        })
    }

    /// Targets taken out and put back over and over (each put a new copy,
    /// the old one garbage), some much more often than others, leave the
    /// store in proportion to what it holds, and every target reads back
    /// as it was last put.
    #[test]
    fn targets_decoded_again_leave_garbage_that_is_reclaimed() {
        let mut store = ColdStore::new();
        let mut want = HashMap::new();
        let targets: Vec<String> = (0..64)
            .map(|i| format!("repo:github.com/acme/{i}"))
            .collect();
        let mut most = 0;
        for round in 0..30 {
            for (i, t) in targets.iter().enumerate() {
                // Most are taken out every round or two, a few stay for
                // up to eight: blocks hold a few long-lived copies among
                // garbage.
                if round > 0 && round % (1 + i % 8) != 0 {
                    continue;
                }
                if round > 0 {
                    let thawed = store.take(t, "changelog").expect("kept").expect("decodes");
                    assert_eq!(baseline(thawed).as_ref(), want.get(t));
                    assert!(!store.contains(t));
                }
                let (f, scanners) = frozen(t, round, 2000 + i * 40);
                store.put(t, f, None, 0);
                want.insert(t.clone(), scanners);
            }
            most = most.max(store.bytes());
            // Every byte held is live, garbage, or room left in the open
            // block: compaction sees all the garbage (the bound below
            // depended, before ends of blocks were counted, on the order
            // blocks were compacted in).
            let open_room = store
                .open
                .and_then(|b| store.blocks.get(&b))
                .map_or(0, |b| b.bytes.capacity() - b.bytes.len());
            assert_eq!(
                store.bytes(),
                store.live + store.garbage + open_room,
                "round {round}"
            );
            assert!(
                store.bytes() <= 2 * store.live_bytes() + 2 * BLOCK,
                "round {round}: {} bytes held for {} live",
                store.bytes(),
                store.live_bytes()
            );
        }
        assert!(store.live_bytes() > 2 * BLOCK, "several blocks' worth");
        assert!(most <= 2 * store.live_bytes() + 2 * BLOCK);
        assert_eq!(store.len(), targets.len());
        for t in &targets {
            let thawed = store.take(t, "changelog").expect("kept").expect("decodes");
            assert_eq!(baseline(thawed).as_ref(), want.get(t));
        }
        assert!(store.is_empty());
        assert!(store.bytes() <= BLOCK, "all freed but the open block");
    }

    /// A copy that does not read back is an error naming the target's
    /// copy, not a panic.
    #[test]
    fn a_copy_that_does_not_decode_is_an_error() {
        let mut store = ColdStore::new();
        let t = "repo:github.com/acme/api";
        let (mut f, _) = frozen(t, 0, 3);
        f.records[0].value = Some(b"{not json".to_vec());
        store.put(t, f, None, 0);
        let e = store
            .take(t, "custody.state")
            .expect("kept")
            .expect_err("does not decode");
        assert!(e.contains("custody.state (evicted target's copy)"), "{e}");
    }
}
