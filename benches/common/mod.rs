//! Realistic inputs for the benches (and the service tests, which include
//! this module): a SARIF report shaped like Bandit's (rules with metadata,
//! results with regions, snippets and `issue_severity` properties), of any
//! size, and the changelog of a real scan; and, in [`load`], state at
//! machine scale built through one partition's processor.

#![allow(dead_code)]

pub mod load;

use custody::config::Config;
use custody::engine::{Engine, Output};
use custody::lifecycle::State;
use custody::model::ScanMeta;
use custody::service::changelog;
use std::fmt::Write as _;

/// The target of [`tornado_changelog`].
pub const TORNADO: &str = "repo:github.com/tornadoweb/tornado";

/// The changelog records custody writes for a real first scan, Bandit
/// 6.4.2 on tornado (the churn fixture), in the format `config` names:
/// (in the binary form, the target's dictionary record first) one per
/// finding, in the order the scan touched them, then the target's
/// tickets.
pub fn tornado_changelog(config: &Config) -> Vec<changelog::Record> {
    let (state, touched) = tornado_scan(config);
    changelog::Writer::new(config.service.changelog_format).records(
        &state,
        TORNADO,
        &touched.findings,
        Some(&touched.tickets),
    )
}

/// The same as JSON, the format earlier versions wrote.
pub fn tornado_changelog_json(config: &Config) -> Vec<changelog::Record> {
    let (state, touched) = tornado_scan(config);
    changelog::records(&state, TORNADO, &touched.findings, Some(&touched.tickets))
}

/// The state of a real first scan, Bandit 6.4.2 on tornado, and what it
/// touched.
pub fn tornado_scan(config: &Config) -> (State, custody::engine::Touched) {
    let engine = Engine::new(config);
    let bytes = std::fs::read("tests/fixtures/churn/bandit-6.4.2.sarif").expect("fixture");
    let (_, report) =
        custody::normalize::decode(&bytes, None, engine.decode_context()).expect("decode");
    let scan = ScanMeta {
        scan_id: "s".into(),
        target: TORNADO.parse().expect("target"),
        commit: None,
        git_ref: None,
        complete: true,
        coverage: report.coverage,
        rule_help: Default::default(),
    };
    let mut state = State::new();
    let touched = engine.scan_touched(
        &mut state,
        &scan,
        report.findings,
        chrono::Utc::now(),
        &mut Output::default(),
        std::time::Duration::ZERO,
    );
    (state, touched)
}

/// A SARIF 2.1.0 report with `results` results over `results / 20` files
/// and 60 rules.
pub fn sarif(results: usize) -> String {
    sarif_padded(results, 0)
}

/// Like [`sarif`], each result's message longer by `pad` bytes (a result
/// is about 620 bytes unpadded).
pub fn sarif_padded(results: usize, pad: usize) -> String {
    let padding = " details".repeat(pad / 8);
    let mut s = String::with_capacity(results * (700 + pad) + 20_000);
    s.push_str(r#"{"$schema":"https://json.schemastore.org/sarif-2.1.0.json","version":"2.1.0","runs":[{"tool":{"driver":{"name":"Bandit","version":"1.8.6","rules":["#);
    for r in 0..60 {
        if r > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            r#"{{"id":"B{:03}","name":"rule_{r}","shortDescription":{{"text":"Rule {r}: a check for a risky call pattern"}},"helpUri":"https://bandit.readthedocs.io/en/latest/plugins/b{:03}.html","properties":{{"tags":["security","external/cwe/cwe-{}"]}}}}"#,
            100 + r,
            100 + r,
            20 + r
        );
    }
    s.push_str(r#"]}},"results":["#);
    let sev = ["LOW", "MEDIUM", "HIGH"];
    for i in 0..results {
        if i > 0 {
            s.push(',');
        }
        let rule = i % 60;
        let file = i / 20;
        let line = 10 + (i % 20) * 7;
        let _ = write!(
            s,
            r#"{{"ruleId":"B{:03}","ruleIndex":{rule},"level":"warning","message":{{"text":"Possible risky call in function handler_{i} with tainted argument; consider validating input{padding}"}},"locations":[{{"physicalLocation":{{"artifactLocation":{{"uri":"src/pkg{}/module_{file}.py"}},"region":{{"startLine":{line},"startColumn":9,"endLine":{line},"endColumn":48,"snippet":{{"text":"        result = subprocess.call(cmd_{i}, shell=True)\n"}}}},"contextRegion":{{"startLine":{},"endLine":{},"snippet":{{"text":"    def handler_{i}(self):\n        result = subprocess.call(cmd_{i}, shell=True)\n        return result\n"}}}}}}}}],"properties":{{"issue_severity":"{}","issue_confidence":"HIGH"}}}}"#,
            100 + rule,
            file % 50,
            line - 1,
            line + 1,
            sev[i % 3]
        );
    }
    s.push_str("]}]}\n");
    s
}
