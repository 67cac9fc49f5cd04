//! Ownership on a compacted topic (`[ownership] topic`), so every instance
//! of a cluster attributes with the same configuration, and a change
//! reaches all of them without files to deploy or signals to send.
//!
//! The topic holds files by content: each message is keyed by a file's
//! path relative to the configuration and its SHA-256
//! (`repos/tornado.CODEOWNERS@<sha256>`), its value the file's bytes. A
//! manifest, keyed [`MANIFEST_KEY`], names every file of one version with
//! its SHA-256. A version is put in force once its manifest and every file
//! it names have been read, so a reader never mixes two versions however
//! their messages interleave. A new version's files never overwrite the
//! version in force (their keys differ), so a publish that dies midway, or
//! two that race, leave the topic with a complete version; compaction keeps
//! every key's newest value.
//!
//! `custody publish-ownership` validates a configuration as `custody run`
//! would, reads the topic, sends the files it does not hold yet, then the
//! manifest, and then deletes (tombstones) the files that neither the new
//! version nor the one before it names. The service reads the topic to its
//! end before it starts consuming reports, then follows it; a version that
//! fails validation is refused (logged and counted) and the one in force
//! stays.

use crate::ownership::{Ownership, OwnershipError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Component, Path};
use std::time::{Duration, Instant};

/// The manifest's key: not a relative path, so no file can take it.
pub const MANIFEST_KEY: &str = "/manifest";

/// The configuration's entry point in the file set.
pub const ENTRY: &str = "owners.toml";

/// Files larger than this are refused (by the publisher, and by a reader
/// that meets one): ownership files are text, and a message must stay
/// under the broker's default limit of 1 MiB.
pub const MAX_FILE_BYTES: usize = 900 * 1024;

/// One published version: every file's SHA-256 (hex), by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version (1).
    pub version: u32,
    /// Path relative to the configuration -> SHA-256 of its bytes.
    pub files: BTreeMap<String, String>,
}

impl Manifest {
    /// A short id of the version: the hash of the manifest's files.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        for (path, hash) in &self.files {
            h.update(path.as_bytes());
            h.update([0]);
            h.update(hash.as_bytes());
            h.update([0]);
        }
        crate::fingerprint::hex(&h.finalize()[..8])
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    crate::fingerprint::hex(&Sha256::digest(bytes))
}

/// A path as a key: its components joined with `/`, `.` dropped (so
/// `./repos/x` and `repos/x` are one file).
pub fn key_of(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => parts.push("..".into()),
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::RootDir | Component::Prefix(_) => {}
        }
    }
    parts.join("/")
}

/// The key of a file: its path and its content's SHA-256.
pub fn file_key(path: &str, sha256: &str) -> String {
    format!("{path}@{sha256}")
}

/// Where a message was: partition and offset.
pub type At = (i32, i64);

/// The files read from the topic so far, and the newest manifest.
#[derive(Debug, Default)]
pub struct FileSet {
    files: BTreeMap<String, (At, Vec<u8>)>,
    manifest: Option<(At, Manifest)>,
    /// Why the newest manifest message was refused, if it was.
    refused: Option<String>,
}

impl FileSet {
    /// Takes one message: a file, a manifest, or a tombstone (no value)
    /// that deletes its key. A message that is not one of those is an
    /// error naming what is wrong with it; the set is then unchanged.
    pub fn put(&mut self, at: At, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<(), String> {
        let key = key.ok_or("a message without a key (keys are file paths)")?;
        let key = std::str::from_utf8(key)
            .map_err(|_| "a message whose key is not UTF-8 (keys are file paths)".to_string())?;
        if key == MANIFEST_KEY {
            let parsed = match value {
                None => Ok(None),
                Some(v) => parse_manifest(v).map(Some),
            };
            return match parsed {
                Ok(m) => {
                    self.manifest = m.map(|m| (at, m));
                    self.refused = None;
                    Ok(())
                }
                Err(e) => {
                    self.refused = Some(e.clone());
                    Err(e)
                }
            };
        }
        match value {
            None => {
                self.files.remove(key);
            }
            Some(v) if v.len() > MAX_FILE_BYTES => {
                return Err(format!(
                    "file {key} is {} bytes, over the limit of {MAX_FILE_BYTES}",
                    v.len()
                ));
            }
            Some(v) => {
                self.files.insert(key.to_string(), (at, v.to_vec()));
            }
        }
        Ok(())
    }

    /// The newest manifest's version, when it and every file it names
    /// (with its hash) are here: its id and files. `None` while a version
    /// is still arriving (or none was published).
    pub fn complete(&self) -> Option<(String, BTreeMap<&str, &[u8]>)> {
        let (_, m) = self.manifest.as_ref()?;
        let mut files = BTreeMap::new();
        for (path, hash) in &m.files {
            let (_, bytes) = self.files.get(&file_key(path, hash))?;
            if sha256_hex(bytes) != *hash {
                return None;
            }
            files.insert(path.as_str(), bytes.as_slice());
        }
        Some((m.id(), files))
    }

    /// Whether any manifest was read.
    pub fn has_manifest(&self) -> bool {
        self.manifest.is_some()
    }

    /// The newest manifest.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref().map(|(_, m)| m)
    }

    /// Keys of the files held.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// Keys a publisher of the next version may delete: files written
    /// before the newest manifest (on its partition) that it does not
    /// name. Files after it may belong to a publish under way, and are
    /// kept.
    pub fn stale(&self, keep: &std::collections::BTreeSet<String>) -> Vec<String> {
        let Some(((mp, mo), m)) = &self.manifest else {
            return Vec::new();
        };
        let named: std::collections::BTreeSet<String> =
            m.files.iter().map(|(p, h)| file_key(p, h)).collect();
        self.files
            .iter()
            .filter(|(k, ((p, o), _))| {
                p == mp && o < mo && !named.contains(*k) && !keep.contains(*k)
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Why the newest manifest message was refused, if it was (the one
    /// before it, if any, is the newest then).
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }
}

fn parse_manifest(v: &[u8]) -> Result<Manifest, String> {
    let m: Manifest =
        serde_json::from_slice(v).map_err(|e| format!("the manifest is not a manifest: {e}"))?;
    if m.version != 1 {
        return Err(format!(
            "manifest version {} is not supported (1 is)",
            m.version
        ));
    }
    if !m.files.contains_key(ENTRY) {
        return Err(format!("the manifest names no {ENTRY}"));
    }
    Ok(m)
}

/// Builds and validates the ownership of one version's files.
pub fn ownership_of(
    files: &BTreeMap<&str, &[u8]>,
    origin: &str,
) -> Result<Ownership, OwnershipError> {
    let text = |key: &str| -> std::io::Result<String> {
        let bytes = files.get(key).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{key} is not in the published version"),
            )
        })?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
    };
    let entry = text(ENTRY).map_err(|source| OwnershipError::Read {
        path: format!("{origin}/{ENTRY}"),
        source,
    })?;
    Ownership::parse(&entry, &format!("{origin}/{ENTRY}"), Path::new(""), &|p| {
        text(&key_of(p))
    })
}

/// Files by key, in publishing order.
pub type Files = Vec<(String, Vec<u8>)>;

/// A configuration and every file it read, as the topic holds them: the
/// entry point keyed [`ENTRY`], the others by their path relative to it.
/// The configuration is validated as the service would: a broken one is
/// an error, and nothing is returned to publish.
pub fn files_of(path: &Path) -> Result<(Ownership, Files), OwnershipError> {
    let crate::ownership::config::Entry { text, shown, base } =
        crate::ownership::config::Entry::read(path)?;
    // Parsed against an empty base, as the service parses the published
    // files: the paths the configuration names are the keys, the same on
    // both sides (an absolute one too).
    let read: RefCell<Files> = RefCell::new(Vec::new());
    let own = Ownership::parse(&text, &shown, Path::new(""), &|p| {
        let t = std::fs::read_to_string(base.join(p))?;
        read.borrow_mut().push((key_of(p), t.clone().into_bytes()));
        Ok(t)
    })?;
    let mut files = vec![(ENTRY.to_string(), text.into_bytes())];
    for (k, v) in read.into_inner() {
        match files.iter().find(|(have, _)| *have == k) {
            None => files.push((k, v)),
            Some((_, same)) if *same == v => {}
            Some(_) => {
                return Err(OwnershipError::Invalid {
                    path: shown,
                    key: "ownership".into(),
                    message: format!(
                        "two different files are both {k} on the ownership topic (the configuration itself is {ENTRY} there, and a path is keyed without its leading /); rename one"
                    ),
                })
            }
        }
    }
    Ok((own, files))
}

/// The manifest of a set of files.
pub fn manifest_of(files: &[(String, Vec<u8>)]) -> Manifest {
    Manifest {
        version: 1,
        files: files
            .iter()
            .map(|(k, v)| (k.clone(), sha256_hex(v)))
            .collect(),
    }
}

/// What [`publish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedOwnership {
    /// The version's id (as the service logs it).
    pub id: String,
    /// Its files, by path.
    pub files: Vec<String>,
    /// Files sent (the others were on the topic already).
    pub sent: usize,
    /// Files of older versions deleted.
    pub pruned: usize,
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The configuration is invalid: nothing was sent.
    #[error("{0}; nothing was published")]
    Invalid(String),
    /// Kafka failed: some messages may have been sent, but a version is
    /// in force only once its manifest is, and it is sent last.
    #[error("{0}")]
    Kafka(String),
}

/// Validates the configuration at `path` (file or directory) and publishes
/// it on `topic` (created compacted with one partition when missing, with
/// `replication_factor`, -1 for the broker's default): the files the topic
/// does not hold yet, then, once they are all delivered, the manifest; once
/// that is delivered, the files neither this version nor the one before it
/// names are deleted.
pub fn publish(
    brokers: &str,
    properties: &[(String, String)],
    topic: &str,
    path: &Path,
    replication_factor: i32,
    timeout: Duration,
) -> Result<PublishedOwnership, PublishError> {
    let (_, files) = files_of(path).map_err(|e| PublishError::Invalid(e.to_string()))?;
    if let Some((k, v)) = files.iter().find(|(_, v)| v.len() > MAX_FILE_BYTES) {
        return Err(PublishError::Invalid(format!(
            "{k} is {} bytes, over the limit of {MAX_FILE_BYTES} for one ownership file",
            v.len()
        )));
    }
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        client.set(k, v);
    }
    let kafka = PublishError::Kafka;
    let mut feed = match Feed::open(&client, topic, timeout) {
        Ok(f) => f,
        Err(FeedError::Missing(_)) => {
            super::topics::create_with(
                &client,
                replication_factor,
                &[(topic.to_string(), 1, true)],
            )
            .map_err(kafka)?;
            let until = Instant::now() + timeout;
            loop {
                match Feed::open(&client, topic, timeout) {
                    Ok(f) => break f,
                    Err(FeedError::Missing(_)) if Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => return Err(kafka(e.to_string())),
                }
            }
        }
        Err(e) => return Err(kafka(e.to_string())),
    };
    feed.read_to_end(timeout, &|m| eprintln!("custody publish-ownership: {m}"))
        .map_err(kafka)?;
    let held: std::collections::BTreeSet<String> = feed.set.keys().map(str::to_string).collect();
    let p = super::publish::Publisher::new(
        brokers,
        properties.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .map_err(kafka)?;
    let manifest = manifest_of(&files);
    let mut sent = 0;
    for (path, bytes) in &files {
        let key = file_key(path, &manifest.files[path]);
        if !held.contains(&key) {
            p.send_keyed(topic, &key, Some(bytes)).map_err(kafka)?;
            sent += 1;
        }
    }
    // Every file delivered before the manifest goes: a manifest naming a
    // file that never arrived would be a version no instance starting
    // later could load, and it would hide the one in force.
    p.flush(timeout).map_err(|e| {
        kafka(format!(
            "{e}; the manifest was not sent, the version in force stays"
        ))
    })?;
    let m = serde_json::to_vec(&manifest).map_err(|e| kafka(e.to_string()))?;
    p.send_keyed(topic, MANIFEST_KEY, Some(&m)).map_err(kafka)?;
    p.flush(timeout).map_err(kafka)?;
    // Delivered: the files of older versions can go, those written before
    // the version before this one and named by neither (a file written
    // after it may belong to another publish under way).
    let keep: std::collections::BTreeSet<String> =
        manifest.files.iter().map(|(p, h)| file_key(p, h)).collect();
    let stale = feed.set.stale(&keep);
    for key in &stale {
        p.send_keyed(topic, key, None).map_err(kafka)?;
    }
    let pruned = stale.len();
    p.flush(timeout).map_err(kafka)?;
    Ok(PublishedOwnership {
        id: manifest.id(),
        files: files.into_iter().map(|(k, _)| k).collect(),
        sent,
        pruned,
    })
}

/// Why the topic could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// It does not exist.
    #[error("{0}")]
    Missing(String),
    /// Anything else.
    #[error("{0}")]
    Kafka(String),
}

/// A reader of the ownership topic: every partition from the beginning,
/// no consumer group (every instance reads all of it).
pub struct Feed {
    consumer: BaseConsumer,
    topic: String,
    partitions: usize,
    /// Partitions read to their end (and nothing newer since).
    eof: std::collections::HashSet<i32>,
    set: FileSet,
    /// The version in force.
    applied: Option<String>,
    /// Messages refused so far (a bad manifest, an oversized file, ...).
    pub refusals: usize,
}

impl Feed {
    /// Opens the topic.
    pub fn open(base: &ClientConfig, topic: &str, wait: Duration) -> Result<Feed, FeedError> {
        let k = FeedError::Kafka;
        let mut cfg = base.clone();
        cfg.set("group.id", "custody-ownership-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true");
        let consumer: BaseConsumer = cfg.create().map_err(|e| {
            k(format!(
                "ownership topic {topic}: cannot create a consumer: {e}"
            ))
        })?;
        let md = consumer
            .fetch_metadata(Some(topic), wait.min(Duration::from_secs(30)))
            .map_err(|e| {
                k(format!(
                    "ownership topic {topic}: cannot read its metadata: {e}"
                ))
            })?;
        let mut parts: Vec<i32> = Vec::new();
        for t in md.topics().iter().filter(|t| t.name() == topic) {
            match t.error() {
                None => parts.extend(t.partitions().iter().map(|p| p.id())),
                Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {}
                Some(e) => {
                    return Err(k(format!(
                        "ownership topic {topic}: {}",
                        rdkafka::types::RDKafkaErrorCode::from(e)
                    )))
                }
            }
        }
        if parts.is_empty() {
            return Err(FeedError::Missing(format!(
                "ownership topic {topic} does not exist"
            )));
        }
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition_offset(topic, *p, Offset::Beginning)
                .map_err(|e| k(format!("ownership topic {topic}: {e}")))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| k(format!("ownership topic {topic}: cannot assign it: {e}")))?;
        Ok(Feed {
            consumer,
            topic: topic.to_string(),
            partitions: parts.len(),
            eof: std::collections::HashSet::new(),
            set: FileSet::default(),
            applied: None,
            refusals: 0,
        })
    }

    /// Reads what has arrived, waiting up to `wait` for the first message;
    /// bad messages are reported through `warn` and skipped.
    fn read(&mut self, wait: Duration, warn: &dyn Fn(&str)) -> usize {
        let mut n = 0;
        let mut timeout = wait;
        while let Some(r) = self.consumer.poll(timeout) {
            timeout = Duration::ZERO;
            match r {
                Ok(m) => {
                    n += 1;
                    self.eof.remove(&m.partition());
                    let at = (m.partition(), m.offset());
                    if let Err(e) = self.set.put(at, m.key(), m.payload()) {
                        self.refusals += 1;
                        warn(&format!(
                            "ownership topic {} partition {} offset {}: {e}; skipped",
                            self.topic,
                            m.partition(),
                            m.offset()
                        ));
                    }
                }
                Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                    self.eof.insert(p);
                }
                Err(e) => {
                    warn(&format!("ownership topic {}: {e}", self.topic));
                    break;
                }
            }
            if n >= 10_000 {
                break;
            }
        }
        n
    }

    /// Whether every partition has been read to its end: librdkafka said so
    /// (end-of-partition events), or the position is at the high
    /// watermark.
    fn at_end(&self) -> Result<bool, String> {
        if self.eof.len() >= self.partitions {
            return Ok(true);
        }
        let pos = self
            .consumer
            .position()
            .map_err(|e| format!("ownership topic {}: {e}", self.topic))?;
        for e in pos.elements() {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.topic, e.partition(), Duration::from_secs(10))
                .map_err(|err| format!("ownership topic {}: {err}", self.topic))?;
            let at = match e.offset() {
                Offset::Offset(o) => o,
                _ => low,
            };
            if at < high {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads the topic to the end it has now, within `wait`.
    pub fn read_to_end(&mut self, wait: Duration, warn: &dyn Fn(&str)) -> Result<(), String> {
        let until = Instant::now() + wait;
        loop {
            self.read(Duration::from_millis(100), warn);
            if self.at_end()? {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!(
                    "ownership topic {}: not read to its end within {} s",
                    self.topic,
                    wait.as_secs()
                ));
            }
        }
    }

    /// Reads the topic to its end and builds the newest complete version;
    /// waits for one (a publisher may be midway) until `deadline`.
    pub fn load(&mut self, deadline: Duration, warn: &dyn Fn(&str)) -> Result<Ownership, String> {
        let until = Instant::now() + deadline;
        loop {
            self.read(Duration::from_millis(100), warn);
            if self.at_end()? {
                if let Some((id, files)) = self.set.complete() {
                    let own =
                        ownership_of(&files, &format!("{}@{id}", self.topic)).map_err(|e| {
                            format!("ownership topic {}: version {id}: {e}", self.topic)
                        })?;
                    self.applied = Some(id);
                    return Ok(own);
                }
            }
            if Instant::now() >= until {
                let why = match (self.set.refused(), self.set.has_manifest()) {
                    (Some(e), _) => format!("its newest manifest was refused: {e}"),
                    (None, true) => {
                        "its newest version is incomplete (a file it names is missing or differs)"
                            .to_string()
                    }
                    (None, false) => {
                        "it holds no ownership (publish one with `custody publish-ownership`)"
                            .to_string()
                    }
                };
                return Err(format!(
                    "ownership topic {}: {why}, after waiting {} s",
                    self.topic,
                    deadline.as_secs()
                ));
            }
        }
    }

    /// Reads what arrived within `wait`; returns a newer complete version
    /// when there is one: its id, and the ownership or why it was refused.
    /// A refused version is not offered again.
    pub fn next(
        &mut self,
        wait: Duration,
        warn: &dyn Fn(&str),
    ) -> Option<(String, Result<Ownership, String>)> {
        if self.read(wait, warn) == 0 {
            return None;
        }
        let (id, files) = self.set.complete()?;
        if self.applied.as_deref() == Some(id.as_str()) {
            return None;
        }
        let built = ownership_of(&files, &format!("{}@{id}", self.topic))
            .map_err(|e| format!("ownership topic {}: version {id}: {e}", self.topic));
        self.applied = Some(id.clone());
        Some((id, built))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<(String, Vec<u8>)> {
        vec![
            (
                ENTRY.to_string(),
                b"[[teams]]\nid = \"web\"\n\n[[repos]]\ntarget = \"repo:github.com/a/b\"\ncodeowners = \"./co/b.CODEOWNERS\"\n".to_vec(),
            ),
            ("co/b.CODEOWNERS".to_string(), b"* @web\n".to_vec()),
        ]
    }

    fn put_all(set: &mut FileSet, files: &[(String, Vec<u8>)]) {
        for (k, v) in files {
            let key = file_key(k, &sha256_hex(v));
            set.put((0, 0), Some(key.as_bytes()), Some(v)).unwrap();
        }
    }

    #[test]
    fn a_version_is_complete_only_with_its_manifest_and_every_file_it_names() {
        let files = files();
        let manifest = serde_json::to_vec(&manifest_of(&files)).unwrap();
        let mut set = FileSet::default();
        // The manifest first (another partition may deliver it first).
        set.put((0, 0), Some(MANIFEST_KEY.as_bytes()), Some(&manifest))
            .unwrap();
        assert!(set.complete().is_none());
        put_all(&mut set, &files[..1]);
        assert!(set.complete().is_none(), "one file still missing");
        put_all(&mut set, &files[1..]);
        let (id, got) = set.complete().expect("complete");
        assert_eq!(id, manifest_of(&files).id());
        let own = ownership_of(&got, "t").unwrap();
        assert_eq!(own.teams, vec!["web".to_string()]);
        // A file of the next version, without its manifest yet: the
        // version in force is untouched (the new file has its own key).
        let next = vec![("co/b.CODEOWNERS".to_string(), b"* @other\n".to_vec())];
        put_all(&mut set, &next);
        assert_eq!(set.complete().unwrap().0, id);
        // Its manifest: the next version is complete, and in it only.
        let mut v2 = files.clone();
        v2[1] = next[0].clone();
        let m2 = serde_json::to_vec(&manifest_of(&v2)).unwrap();
        set.put((0, 0), Some(MANIFEST_KEY.as_bytes()), Some(&m2))
            .unwrap();
        let (id2, got) = set.complete().unwrap();
        assert_ne!(id2, id);
        assert_eq!(got["co/b.CODEOWNERS"], b"* @other\n");
        // A tombstone removes a file, and the version is incomplete.
        let gone = file_key("co/b.CODEOWNERS", &sha256_hex(b"* @other\n"));
        set.put((0, 0), Some(gone.as_bytes()), None).unwrap();
        assert!(set.complete().is_none());
        // A file whose bytes do not match its key's hash does not count.
        set.put((0, 0), Some(gone.as_bytes()), Some(b"* @forged\n"))
            .unwrap();
        assert!(set.complete().is_none());
    }

    #[test]
    fn bad_messages_are_refused_with_what_is_wrong() {
        let mut set = FileSet::default();
        let e = set.put((0, 0), None, Some(b"x")).unwrap_err();
        assert!(e.contains("without a key"), "{e}");
        for (manifest, want) in [
            (&b"{\"version\": 1}"[..], "not a manifest"),
            (b"{\"version\": 2, \"files\": {}}", "version 2"),
            (
                b"{\"version\": 1, \"files\": {\"x\": \"00\"}}",
                "names no owners.toml",
            ),
        ] {
            let e = set
                .put((0, 0), Some(MANIFEST_KEY.as_bytes()), Some(manifest))
                .unwrap_err();
            assert!(e.contains(want), "{e}");
            assert_eq!(set.refused(), Some(e.as_str()));
        }
        let big = vec![b'a'; MAX_FILE_BYTES + 1];
        let e = set.put((0, 0), Some(b"big"), Some(&big)).unwrap_err();
        assert!(e.contains("over the limit"), "{e}");
        assert!(!set.has_manifest());
    }

    #[test]
    fn the_publisher_collects_every_file_the_configuration_read() {
        let (own, files) = files_of(Path::new("tests/fixtures/ownership/owners.toml")).unwrap();
        let keys: Vec<&str> = files.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys[0], ENTRY);
        assert!(keys.contains(&"tornado.CODEOWNERS"), "{keys:?}");
        assert!(keys.contains(&"catalog-info.yaml"), "{keys:?}");
        // Built back from the files alone, it is the same configuration.
        let map: BTreeMap<&str, &[u8]> = files
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let back = ownership_of(&map, "topic").unwrap();
        assert_eq!(back.teams, own.teams);
        assert_eq!(back.repos.len(), own.repos.len());
        assert_eq!(back.fallback, own.fallback);
    }

    #[test]
    fn files_named_by_absolute_or_parent_paths_are_found_by_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf");
        std::fs::create_dir(&conf).unwrap();
        std::fs::write(dir.path().join("a.CODEOWNERS"), "* @web\n").unwrap();
        let abs = dir.path().join("b.CODEOWNERS");
        std::fs::write(&abs, "* @web\n").unwrap();
        std::fs::write(
            conf.join(ENTRY),
            format!(
                "[[teams]]\nid = \"web\"\n\n[[repos]]\ntarget = \"repo:github.com/a/a\"\ncodeowners = \"../a.CODEOWNERS\"\n\n[[repos]]\ntarget = \"repo:github.com/a/b\"\ncodeowners = {:?}\n",
                abs.display().to_string()
            ),
        )
        .unwrap();
        let (_, files) = files_of(&conf).unwrap();
        let map: BTreeMap<&str, &[u8]> = files
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        assert!(map.contains_key("../a.CODEOWNERS"), "{:?}", map.keys());
        let back = ownership_of(&map, "topic").unwrap();
        assert_eq!(back.repos.len(), 2);
        assert!(back.repos.values().all(|r| r.codeowners.is_some()));
    }
}
