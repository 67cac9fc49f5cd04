//! Ownership on a compacted topic (`[ownership] topic`), so every instance
//! of a cluster attributes with the same configuration, and a change
//! reaches all of them without files to deploy or signals to send.
//!
//! The topic holds a set of files: each message is keyed by a file's path
//! relative to the configuration (`owners.toml`, `repos/tornado.CODEOWNERS`,
//! `catalog-info.yaml`), its value the file's bytes. A manifest, keyed
//! [`MANIFEST_KEY`], names every file of one version with its SHA-256. A
//! version is put in force once its manifest and every file it names, with
//! those hashes, have been read, so a reader never mixes two versions
//! however their messages interleave across partitions. Compaction keeps
//! the newest value of each key: the newest version survives whole.
//!
//! `custody publish-ownership` validates a configuration as `custody run`
//! would, then publishes it: each file the configuration read, then the
//! manifest. The service reads the topic to its end before it starts
//! consuming reports, then follows it; a version that fails validation is
//! refused (logged and counted) and the one in force stays.

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

/// The files read from the topic so far, and the newest manifest.
#[derive(Debug, Default)]
pub struct FileSet {
    files: BTreeMap<String, Vec<u8>>,
    manifest: Option<Manifest>,
}

impl FileSet {
    /// Takes one message: a file, a manifest, or a tombstone (no value)
    /// that deletes its key. A message that is not one of those is an
    /// error naming what is wrong with it; the set is then unchanged.
    pub fn put(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<(), String> {
        let key = key.ok_or("a message without a key (keys are file paths)")?;
        let key = std::str::from_utf8(key)
            .map_err(|_| "a message whose key is not UTF-8 (keys are file paths)".to_string())?;
        if key == MANIFEST_KEY {
            self.manifest = match value {
                None => None,
                Some(v) => {
                    let m: Manifest = serde_json::from_slice(v)
                        .map_err(|e| format!("the manifest is not a manifest: {e}"))?;
                    if m.version != 1 {
                        return Err(format!(
                            "manifest version {} is not supported (1 is)",
                            m.version
                        ));
                    }
                    if !m.files.contains_key(ENTRY) {
                        return Err(format!("the manifest names no {ENTRY}"));
                    }
                    Some(m)
                }
            };
            return Ok(());
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
                self.files.insert(key.to_string(), v.to_vec());
            }
        }
        Ok(())
    }

    /// The newest manifest's version, when it and every file it names
    /// (with its hash) are here: its id and files. `None` while a version
    /// is still arriving (or none was published).
    pub fn complete(&self) -> Option<(String, BTreeMap<&str, &[u8]>)> {
        let m = self.manifest.as_ref()?;
        let mut files = BTreeMap::new();
        for (path, hash) in &m.files {
            let bytes = self.files.get(path)?;
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
    let entry = if path.is_dir() {
        path.join(ENTRY)
    } else {
        path.to_path_buf()
    };
    let shown = entry.display().to_string();
    let text = std::fs::read_to_string(&entry).map_err(|source| OwnershipError::Read {
        path: shown.clone(),
        source,
    })?;
    let base = entry.parent().map(Path::to_path_buf).unwrap_or_default();
    let read: RefCell<Files> = RefCell::new(Vec::new());
    let own = Ownership::parse(&text, &shown, &base, &|p| {
        let t = std::fs::read_to_string(p)?;
        let rel = p.strip_prefix(&base).unwrap_or(p);
        read.borrow_mut()
            .push((key_of(rel), t.clone().into_bytes()));
        Ok(t)
    })?;
    let mut files = vec![(ENTRY.to_string(), text.into_bytes())];
    for (k, v) in read.into_inner() {
        if !files.iter().any(|(have, _)| *have == k) {
            files.push((k, v));
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

/// What [`publish`] sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedOwnership {
    /// The version's id (as the service logs it).
    pub id: String,
    /// The files sent, by key.
    pub files: Vec<String>,
}

/// Validates the configuration at `path` (file or directory) and queues
/// each file it read, then the manifest, on `topic` (call
/// [`super::publish::Publisher::flush`] to wait for delivery). Nothing is
/// sent when the configuration is invalid or a file is too large.
pub fn publish(
    p: &super::publish::Publisher,
    topic: &str,
    path: &Path,
) -> Result<PublishedOwnership, String> {
    let (_, files) = files_of(path).map_err(|e| e.to_string())?;
    if let Some((k, v)) = files.iter().find(|(_, v)| v.len() > MAX_FILE_BYTES) {
        return Err(format!(
            "{k} is {} bytes, over the limit of {MAX_FILE_BYTES} for one ownership file",
            v.len()
        ));
    }
    let manifest = manifest_of(&files);
    for (k, v) in &files {
        p.send_keyed(topic, k, Some(v))?;
    }
    let m = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    p.send_keyed(topic, MANIFEST_KEY, Some(&m))?;
    Ok(PublishedOwnership {
        id: manifest.id(),
        files: files.into_iter().map(|(k, _)| k).collect(),
    })
}

/// `custody publish-ownership`: exit 0 when the configuration was valid
/// and delivered, 1 when it is invalid (nothing sent), 2 when delivery
/// failed.
pub fn command(args: crate::cli::PublishOwnershipArgs) -> u8 {
    let publisher = match super::publish::Publisher::new(&args.brokers, std::iter::empty()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("custody publish-ownership: {e}");
            return 2;
        }
    };
    let sent = match publish(&publisher, &args.topic, &args.path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("custody publish-ownership: {e}; nothing was published");
            return 1;
        }
    };
    if let Err(e) = publisher.flush(Duration::from_secs(args.timeout_secs)) {
        eprintln!("custody publish-ownership: {e}");
        return 2;
    }
    println!(
        "ownership version {} published to {}: {}",
        sent.id,
        args.topic,
        sent.files.join(", ")
    );
    0
}

/// A reader of the ownership topic: every partition from the beginning,
/// no consumer group (every instance reads all of it).
pub struct Feed {
    consumer: BaseConsumer,
    topic: String,
    set: FileSet,
    /// The version in force.
    applied: Option<String>,
}

impl Feed {
    /// Opens the topic.
    pub fn open(base: &ClientConfig, topic: &str) -> Result<Feed, String> {
        let mut cfg = base.clone();
        cfg.set("group.id", "custody-ownership-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer = cfg
            .create()
            .map_err(|e| format!("ownership topic {topic}: cannot create a consumer: {e}"))?;
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .map_err(|e| format!("ownership topic {topic}: cannot read its metadata: {e}"))?;
        let parts: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if parts.is_empty() {
            return Err(format!("ownership topic {topic} does not exist"));
        }
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition_offset(topic, *p, Offset::Beginning)
                .map_err(|e| format!("ownership topic {topic}: {e}"))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| format!("ownership topic {topic}: cannot assign it: {e}"))?;
        Ok(Feed {
            consumer,
            topic: topic.to_string(),
            set: FileSet::default(),
            applied: None,
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
                    if let Err(e) = self.set.put(m.key(), m.payload()) {
                        warn(&format!(
                            "ownership topic {} partition {} offset {}: {e}; skipped",
                            self.topic,
                            m.partition(),
                            m.offset()
                        ));
                    }
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

    /// Whether every partition has been read to the end it had when asked.
    fn at_end(&self) -> Result<bool, String> {
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
                let why = if self.set.has_manifest() {
                    "its newest version is incomplete (a file it names is missing or differs)"
                } else {
                    "it holds no ownership (publish one with `custody publish-ownership`)"
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
            set.put(Some(k.as_bytes()), Some(v)).unwrap();
        }
    }

    #[test]
    fn a_version_is_complete_only_with_its_manifest_and_every_file_it_names() {
        let files = files();
        let manifest = serde_json::to_vec(&manifest_of(&files)).unwrap();
        let mut set = FileSet::default();
        // The manifest first (another partition may deliver it first).
        set.put(Some(MANIFEST_KEY.as_bytes()), Some(&manifest))
            .unwrap();
        assert!(set.complete().is_none());
        put_all(&mut set, &files[..1]);
        assert!(set.complete().is_none(), "one file still missing");
        put_all(&mut set, &files[1..]);
        let (id, got) = set.complete().expect("complete");
        assert_eq!(id, manifest_of(&files).id());
        let own = ownership_of(&got, "t").unwrap();
        assert_eq!(own.teams, vec!["web".to_string()]);
        // A file of the next version, not yet its manifest: the version in
        // the set no longer matches its hashes, so nothing is complete.
        set.put(Some(b"co/b.CODEOWNERS"), Some(b"* @other\n"))
            .unwrap();
        assert!(set.complete().is_none());
        // A tombstone removes a file.
        set.put(Some(b"co/b.CODEOWNERS"), None).unwrap();
        assert!(set.complete().is_none());
    }

    #[test]
    fn bad_messages_are_refused_with_what_is_wrong() {
        let mut set = FileSet::default();
        let e = set.put(None, Some(b"x")).unwrap_err();
        assert!(e.contains("without a key"), "{e}");
        let e = set
            .put(Some(MANIFEST_KEY.as_bytes()), Some(b"{\"version\": 1}"))
            .unwrap_err();
        assert!(e.contains("not a manifest"), "{e}");
        let e = set
            .put(
                Some(MANIFEST_KEY.as_bytes()),
                Some(b"{\"version\": 2, \"files\": {}}"),
            )
            .unwrap_err();
        assert!(e.contains("version 2"), "{e}");
        let e = set
            .put(
                Some(MANIFEST_KEY.as_bytes()),
                Some(b"{\"version\": 1, \"files\": {\"x\": \"00\"}}"),
            )
            .unwrap_err();
        assert!(e.contains("names no owners.toml"), "{e}");
        let big = vec![b'a'; MAX_FILE_BYTES + 1];
        let e = set.put(Some(b"big"), Some(&big)).unwrap_err();
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
}
