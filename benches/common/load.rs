//! State at machine scale, built through the service's own path: reports
//! of many targets fed to one partition's processor (decode, fingerprint,
//! lifecycle, tickets, changelog records, the last scan remembered), its
//! effects counted and acknowledged at once, as a broker would.
//!
//! The findings are synthetic but shaped like real ones: each is a finding
//! of a real scanner's report among the fixtures (Bandit, Ruff and Semgrep
//! over tornado, Checkov over kopf, Trivy and Grype over images), moved to
//! a path of its own target (code findings) or a package of its own
//! (dependency findings), so no two findings of a target share a
//! fingerprint and no two targets share a path.

use custody::config::service::ServiceSettings;
use custody::config::Config;
use custody::engine::Engine;
use custody::metrics::Metrics;
use custody::model::Finding;
use custody::service::health::Health;
use custody::service::meta::header;
use custody::service::partition::{
    Bytes, Edge, Effect, Env, Incoming, PartitionProcessor, Payload, Shared,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The real reports the findings are shaped after.
const FIXTURES: [&str; 7] = [
    "tests/fixtures/churn/bandit-6.4.2.sarif",
    "tests/fixtures/churn/ruff-6.4.2.sarif",
    "tests/fixtures/churn/semgrep-6.4.2.sarif",
    "tests/fixtures/checkov/checkov-kopf-1.45.2-quiet.json",
    "tests/fixtures/trivy/trivy-image-web-api-1.4.json",
    "tests/fixtures/grype/grype-dir-storefront.json",
    "tests/fixtures/trivy/trivy-fs-web-api.json",
];

/// The findings of [`FIXTURES`], decoded as custody decodes them.
pub fn shapes() -> Vec<Finding> {
    let engine = Engine::new(&Config::default());
    let mut out = Vec::new();
    for path in FIXTURES {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (_, report) = custody::normalize::decode(&bytes, None, engine.decode_context())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        out.extend(report.findings.into_iter().map(|mut f| {
            f.target = None;
            f
        }));
    }
    assert!(!out.is_empty(), "no findings in the fixtures");
    out
}

/// A report (custody's native format, one finding a line) of `findings`
/// distinct findings of target number `target`, drawn from `shapes`.
pub fn report(shapes: &[Finding], target: usize, findings: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(findings * 700);
    for j in 0..findings {
        // Each target starts elsewhere in the shapes; a round is one pass
        // over them.
        let k = (j + target * 131) % shapes.len();
        let round = (j + target * 131) / shapes.len();
        let mut f = shapes[k].clone();
        match (&mut f.location, &mut f.package) {
            (_, Some(p)) => p.name = format!("{}-{target}-{round}", p.name),
            (Some(l), None) => {
                l.path = format!("svc{}/m{round}/{}", target % 97, l.path);
                if let Some(line) = &mut l.start_line {
                    *line += (target % 13) as u32;
                }
            }
            (None, None) => f.rule_id = format!("{}-{target}-{round}", f.rule_id),
        }
        serde_json::to_writer(&mut out, &f).expect("a finding serializes");
        out.push(b'\n');
    }
    out
}

/// The spec of target number `i`.
pub fn target(i: usize) -> String {
    format!("repo:github.com/acme/service-{i:05}")
}

/// What the processor produced on one topic.
#[derive(Debug, Default, Clone, Copy)]
pub struct Produced {
    pub records: u64,
    /// Keys and values.
    pub bytes: u64,
}

/// An edge that counts what it is asked to produce, by topic, and
/// acknowledges each record at once; a failure is kept to be reported.
#[derive(Default)]
struct Counting {
    topics: Mutex<HashMap<String, Produced>>,
    /// By topic and the first byte of the key (a changelog record's kind).
    kinds: Mutex<HashMap<(String, u8), Produced>>,
    failed: Mutex<Option<String>>,
}

impl Edge for Counting {
    fn effect(&self, effect: Effect<'_>) -> bool {
        match effect {
            Effect::Produce {
                topic,
                key,
                payload,
                ack,
                ..
            } => {
                let mut topics = self.topics.lock().expect("lock");
                let p = topics.entry(topic.to_string()).or_default();
                let bytes = (key.len() + payload.map_or(0, <[u8]>::len)) as u64;
                p.records += 1;
                p.bytes += bytes;
                let kind = key.first().copied().unwrap_or(0);
                let mut kinds = self.kinds.lock().expect("lock");
                let k = kinds.entry((topic.to_string(), kind)).or_default();
                k.records += 1;
                k.bytes += bytes;
                ack.delivered();
            }
            Effect::Fail(e) => {
                self.failed
                    .lock()
                    .expect("lock")
                    .get_or_insert(e.to_string());
            }
            Effect::StoreOffset { .. } | Effect::Pause { .. } | Effect::Resume { .. } => {}
        }
        true
    }
}

/// One partition's processor under default settings, fed reports by hand.
pub struct Partition {
    cx: Shared,
    edge: Counting,
    part: PartitionProcessor,
    offset: i64,
    start: Instant,
}

impl Partition {
    /// A partition with an empty changelog, restored, under the default
    /// settings.
    pub fn new() -> Partition {
        Partition::with(|_| {})
    }

    /// A partition with an empty changelog, restored, under the default
    /// settings as `tune` changes them.
    pub fn with(tune: impl FnOnce(&mut ServiceSettings)) -> Partition {
        let mut config = Config::default();
        tune(&mut config.service);
        let engine = Engine::new(&config);
        let cx = Shared {
            ticket_parts: None,
            event_partitions: Default::default(),
            settings_digest: engine.settings_digest(),
            settings: config.service.clone(),
            engine,
            ownership: None,
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::default()),
            max_report_bytes: config.max_report_bytes,
            eos: false,
        };
        let start = Instant::now();
        let topic = &cx.settings.reports_topics[0];
        let changelog = cx.settings.changelog_for(topic);
        let mut part = PartitionProcessor::new(topic, 0, &changelog, 1, start);
        let edge = Counting::default();
        let mut raw = custody::service::changelog::RawLog::new();
        raw.seal();
        let scans = raw.take_scans();
        part.on_restore(&env(&cx, &edge, start), raw, scans);
        Partition {
            cx,
            edge,
            part,
            offset: 0,
            start,
        }
    }

    /// Applies one complete scan of `target` (a native report) and settles
    /// everything it produced.
    pub fn scan(&mut self, target: &str, report: Vec<u8>) {
        self.scan_as(target, report, "native");
    }

    /// Applies one complete scan of `target`, a report in `format` (its
    /// header's value), and settles everything it produced.
    pub fn scan_as(&mut self, target: &str, report: Vec<u8>, format: &str) {
        self.scan_bytes(target, Payload::owned(report), format);
    }

    /// Applies one complete scan of `target`, a report in `format` shared
    /// with the caller (as the service reads a report in place in its
    /// consumer's fetch buffer), and settles everything it produced.
    pub fn scan_bytes(&mut self, target: &str, report: Bytes, format: &str) {
        let msg = Incoming {
            offset: self.offset,
            timestamp: Some(1_790_000_000_000 + self.offset),
            key: Some(target.as_bytes().to_vec()),
            payload: Some(report),
            headers: vec![
                (header::FORMAT.to_string(), Some(format.as_bytes().to_vec())),
                (header::SCANNER.to_string(), Some(b"mixed".to_vec())),
            ],
        };
        self.offset += 1;
        self.part.on_message(&self.cx, msg, self.start);
        self.part
            .step(&env(&self.cx, &self.edge, self.start), &|| false);
        if let Some(e) = self.edge.failed.lock().expect("lock").as_ref() {
            panic!("the processor failed: {e}");
        }
        assert!(!self.part.busy(), "a scan left work unsettled");
    }

    /// What was produced on `topic` so far.
    pub fn produced(&self, topic: &str) -> Produced {
        self.edge
            .topics
            .lock()
            .expect("lock")
            .get(topic)
            .copied()
            .unwrap_or_default()
    }

    /// What was produced on `topic` by the first byte of the key (for the
    /// changelog: `f` findings, `t` tickets, `s` last scans, `b` baselines,
    /// `o` heads),
    /// sorted.
    pub fn produced_by_kind(&self, topic: &str) -> Vec<(char, Produced)> {
        let mut v: Vec<(char, Produced)> = self
            .edge
            .kinds
            .lock()
            .expect("lock")
            .iter()
            .filter(|((t, _), _)| t == topic)
            .map(|((_, k), p)| (char::from(*k), *p))
            .collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// Every topic written to, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .edge
            .topics
            .lock()
            .expect("lock")
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// The findings topic's name.
    pub fn findings_topic(&self) -> &str {
        &self.cx.settings.findings_topic
    }

    /// The changelog topic's name.
    pub fn changelog_topic(&self) -> String {
        self.cx
            .settings
            .changelog_for(&self.cx.settings.reports_topics[0])
    }
}

fn env<'a>(cx: &'a Shared, edge: &'a Counting, now: Instant) -> Env<'a> {
    Env {
        cx,
        edge,
        wall: chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default(),
        now,
    }
}
