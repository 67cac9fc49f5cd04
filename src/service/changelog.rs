//! The state changelog: one compacted topic, co-partitioned with the
//! reports topic. Partition p of the changelog holds the state of
//! partition p of the reports topic, one record per finding and per ticket,
//! so compaction keeps exactly the latest version of each.
//!
//! Keys: `f\0<target>\0<fingerprint>` for findings, `t\0<target>\0<ticket
//! key>` for tickets. Values: the record as JSON; no value (a tombstone)
//! removes it.

use crate::lifecycle::{FindingRecord, State};
use crate::ticket::TicketRecord;
use std::collections::HashMap;
use std::sync::Arc;

/// One changelog record ready to produce.
#[derive(Debug, Clone)]
pub struct Record {
    /// The key.
    pub key: Vec<u8>,
    /// The value; `None` deletes.
    pub value: Option<Vec<u8>>,
}

fn key(kind: u8, target: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + target.len() + 1 + id.len());
    k.push(kind);
    k.push(0);
    k.extend_from_slice(target.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The records for the named findings of `target` and all its tickets.
pub fn records(state: &State, target: &str, fingerprints: &[String]) -> Vec<Record> {
    let Some(ts) = state.targets.get(target) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(fingerprints.len() + ts.tickets.len());
    for fp in fingerprints {
        let value = ts
            .findings
            .get(fp)
            .and_then(|rec| serde_json::to_vec(rec).ok());
        out.push(Record {
            key: key(b'f', target, fp),
            value,
        });
    }
    for (k, rec) in &ts.tickets {
        out.push(Record {
            key: key(b't', target, k),
            value: serde_json::to_vec(rec).ok(),
        });
    }
    out
}

/// Why a changelog record could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A key of an unknown shape.
    #[error("changelog key {0:?} is not f\\0target\\0id or t\\0target\\0id")]
    Key(String),
    /// A value that does not decode.
    #[error("changelog record {key:?}: {message}")]
    Value {
        /// The key.
        key: String,
        /// The decoder's message.
        message: String,
    },
}

/// One decoded changelog record.
#[derive(Debug)]
pub enum Parsed {
    /// A finding record, or its tombstone.
    Finding {
        /// Target spec.
        target: String,
        /// Fingerprint.
        id: String,
        /// The record; `None` deletes.
        record: Option<Box<FindingRecord>>,
    },
    /// A ticket record, or its tombstone.
    Ticket {
        /// Target spec.
        target: String,
        /// Ticket key.
        id: String,
        /// The record; `None` deletes.
        record: Option<Box<TicketRecord>>,
    },
}

/// The target a changelog key belongs to, checking the key's shape.
pub fn target_of(key: &[u8]) -> Result<&str, RestoreError> {
    let mut parts = key.splitn(3, |&b| b == 0);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(b"f" | b"t"), Some(target), Some(_)) => std::str::from_utf8(target)
            .map_err(|_| RestoreError::Key(String::from_utf8_lossy(key).into_owned())),
        _ => Err(RestoreError::Key(String::from_utf8_lossy(key).into_owned())),
    }
}

/// Decodes one changelog record.
pub fn parse(key: &[u8], value: Option<&[u8]>) -> Result<Parsed, RestoreError> {
    let shown = || String::from_utf8_lossy(key).into_owned();
    let mut parts = key.splitn(3, |&b| b == 0);
    let (Some(kind), Some(target), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(RestoreError::Key(shown()));
    };
    let (Ok(target), Ok(id)) = (std::str::from_utf8(target), std::str::from_utf8(id)) else {
        return Err(RestoreError::Key(shown()));
    };
    let bad = |e: serde_json::Error| RestoreError::Value {
        key: shown(),
        message: e.to_string(),
    };
    let (target, id) = (target.to_string(), id.to_string());
    match kind {
        b"f" => Ok(Parsed::Finding {
            target,
            id,
            record: value
                .map(|v| serde_json::from_slice(v).map_err(bad))
                .transpose()?,
        }),
        b"t" => Ok(Parsed::Ticket {
            target,
            id,
            record: value
                .map(|v| serde_json::from_slice(v).map_err(bad))
                .transpose()?,
        }),
        _ => Err(RestoreError::Key(shown())),
    }
}

/// Builds a state from changelog records, applied in order. Attributions
/// that are equal are shared again, as they were before the restart.
#[derive(Default)]
pub struct Restorer {
    state: State,
    attributions: HashMap<Arc<crate::model::Attribution>, ()>,
    /// Records applied.
    pub records: usize,
}

impl Restorer {
    /// An empty restorer.
    pub fn new() -> Restorer {
        Restorer {
            state: State::new(),
            ..Restorer::default()
        }
    }

    /// A restorer that continues `state` (records decoded later than the
    /// rest).
    pub fn resume(state: State) -> Restorer {
        Restorer {
            state,
            ..Restorer::default()
        }
    }

    /// Applies one record.
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), RestoreError> {
        let parsed = parse(key, value)?;
        self.apply_parsed(parsed);
        Ok(())
    }

    /// Applies a record [`parse`]d beforehand (parsing is the costly part,
    /// and can run in parallel; applying must follow the log's order).
    pub fn apply_parsed(&mut self, p: Parsed) {
        self.records += 1;
        match p {
            Parsed::Finding {
                target,
                id,
                record: None,
            } => {
                if let Some(ts) = self.state.targets.get_mut(&target) {
                    ts.findings.remove(&id);
                }
            }
            Parsed::Ticket {
                target,
                id,
                record: None,
            } => {
                if let Some(ts) = self.state.targets.get_mut(&target) {
                    ts.tickets.remove(&id);
                }
            }
            Parsed::Finding {
                target,
                id,
                record: Some(mut rec),
            } => {
                rec.attribution = self.share(Arc::clone(&rec.attribution));
                self.target(target).findings.insert(id, rec);
            }
            Parsed::Ticket {
                target,
                id,
                record: Some(rec),
            } => {
                self.target(target).tickets.insert(id, *rec);
            }
        }
    }

    fn target(&mut self, target: String) -> &mut crate::lifecycle::TargetState {
        self.state.targets.entry(target).or_default()
    }

    fn share(&mut self, a: Arc<crate::model::Attribution>) -> Arc<crate::model::Attribution> {
        if let Some((k, ())) = self.attributions.get_key_value(&a) {
            return Arc::clone(k);
        }
        self.attributions.insert(Arc::clone(&a), ());
        a
    }

    /// The restored state.
    pub fn finish(self) -> State {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::Engine;
    use crate::model::ScanMeta;
    use chrono::TimeZone;

    #[test]
    fn records_round_trip_through_a_restorer() {
        let engine = Engine::new(&Config::default());
        let mut state = State::new();
        let bytes = std::fs::read("tests/fixtures/churn/bandit-6.4.2.sarif").unwrap();
        let (_, report) = crate::normalize::decode(&bytes, None, engine.decode_context()).unwrap();
        let target: crate::model::Target = "repo:github.com/tornadoweb/tornado".parse().unwrap();
        let scan = ScanMeta {
            scan_id: "s".into(),
            target: target.clone(),
            commit: None,
            git_ref: None,
            complete: true,
            coverage: report.coverage,
        };
        let now = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut out = crate::engine::Output::default();
        let touched = engine.scan_touched(&mut state, &scan, report.findings, now, &mut out);
        assert!(!touched.is_empty());
        let recs = records(&state, &target.to_string(), &touched);
        let mut r = Restorer::new();
        for rec in &recs {
            r.apply(&rec.key, rec.value.as_deref()).unwrap();
        }
        assert_eq!(r.finish(), state);
        // A tombstone removes the finding.
        let mut r = Restorer::new();
        for rec in &recs {
            r.apply(&rec.key, rec.value.as_deref()).unwrap();
        }
        r.apply(&recs[0].key, None).unwrap();
        let restored = r.finish();
        assert_eq!(
            restored.targets[&target.to_string()].findings.len(),
            touched.len() - 1
        );
        // A bad key or value is an error naming the key.
        let mut r = Restorer::new();
        assert!(r.apply(b"nonsense", Some(b"{}")).is_err());
        let err = r.apply(b"f\0repo:x/y\0abc", Some(b"{")).unwrap_err();
        assert!(err.to_string().contains("abc"), "{err}");
    }
}
