//! Criterion benches for each hot stage, in findings per second: every
//! decoder on real reports, fingerprinting, and the lifecycle step.

// The allocator the custody binary uses (see `custody::app::alloc`).
custody::allocator!();

mod common;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use custody::config::Config;
use custody::engine::Engine;
use custody::lifecycle::State;
use custody::model::{Finding, ScanMeta, Target};
use custody::normalize::{DecodeContext, Format};

/// A report of the shared corpus; `None` (that case is left out, saying so)
/// without it.
fn corpus(rel: &str) -> Option<Vec<u8>> {
    custody::testing::shared_bytes(&format!("scans/{rel}"), rel)
}

/// A report of this repository's own fixtures (`tests/fixtures`, written
/// by hand after each tool's format): always present, so the bench has
/// these formats without the shared corpus.
fn fixture(rel: &str) -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/").to_string() + rel;
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn decoders(c: &mut Criterion) {
    let ctx = DecodeContext::default();
    let synthetic = common::sarif(10_000).into_bytes();
    let cases: Vec<(&str, Format, Vec<u8>)> = [
        ("sarif-synthetic-10k", Format::Sarif, Some(synthetic)),
        (
            "sarif-semgrep",
            Format::Sarif,
            corpus("sarif/semgrepowasp-benchmark-sample.sarif"),
        ),
        (
            "sarif-codeql",
            Format::Sarif,
            corpus("sarif/codeQL-output.sarif"),
        ),
        (
            "trivy",
            Format::Trivy,
            corpus("trivy/legacy_many_vulns.json"),
        ),
        ("trivy-k8s", Format::Trivy, corpus("trivy/kubernetes.json")),
        (
            "grype",
            Format::Grype,
            corpus("anchore_grype/many_vulns.json"),
        ),
        (
            "gitleaks",
            Format::Gitleaks,
            corpus("gitleaks/gitleaks8_many.json"),
        ),
        (
            "semgrep",
            Format::Semgrep,
            corpus("semgrep/many_findings.json"),
        ),
        // Vulnerabilities, misconfigurations and secrets in one report.
        (
            "trivy-fixture",
            Format::Trivy,
            Some(fixture("trivy/trivy-fs-web-api.json")),
        ),
        (
            "grype-fixture",
            Format::Grype,
            Some(fixture("grype/grype-image-web-api-1.4.json")),
        ),
        (
            "gitleaks-fixture",
            Format::Gitleaks,
            Some(fixture("gitleaks/gitleaks-web-api.json")),
        ),
    ]
    .into_iter()
    .filter_map(|(name, format, bytes)| Some((name, format, bytes?)))
    .collect();
    let mut g = c.benchmark_group("decode");
    for (name, format, bytes) in &cases {
        let n = format
            .decode(bytes, &ctx)
            .map(|r| r.findings.len())
            .unwrap_or(0);
        g.throughput(Throughput::Elements(n.max(1) as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), bytes, |b, bytes| {
            b.iter(|| format.decode(bytes, &ctx).map(|r| r.findings.len()))
        });
    }
    g.finish();
}

fn findings(n: usize) -> Vec<Finding> {
    let bytes = common::sarif(n).into_bytes();
    Format::Sarif
        .decode(&bytes, &DecodeContext::default())
        .map(|r| r.findings)
        .unwrap_or_default()
}

fn fingerprinting(c: &mut Criterion) {
    let target: Target = "repo:github.com/acme/bench"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("fingerprint");
    for n in [1_000usize, 10_000] {
        let fs = findings(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &fs, |b, fs| {
            b.iter(|| custody::fingerprint::assign(fs.clone(), &target).len())
        });
    }
    g.finish();
}

/// The target, clock and complete Bandit scan the lifecycle benches use.
fn bench_scan() -> (Target, chrono::DateTime<Utc>, ScanMeta) {
    let target: Target = "repo:github.com/acme/bench"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let meta = ScanMeta {
        scan_id: "bench".into(),
        target: target.clone(),
        commit: None,
        git_ref: None,
        complete: true,
        coverage: [("bandit".to_string(), custody::model::Category::Sast)].into(),
        rule_help: Default::default(),
    };
    (target, now, meta)
}

fn lifecycle(c: &mut Criterion) {
    let engine = Engine::new(&Config::default());
    let (_, now, meta) = bench_scan();
    let mut g = c.benchmark_group("lifecycle");
    for n in [1_000usize, 10_000] {
        let fs = findings(n);
        g.throughput(Throughput::Elements(n as u64));
        // First scan of a target: every finding opens, tickets open.
        g.bench_with_input(BenchmarkId::new("first-scan", n), &fs, |b, fs| {
            b.iter(|| {
                let mut state = State::new();
                engine
                    .scan(&mut state, &meta, fs.clone(), now)
                    .findings
                    .len()
            })
        });
        // Rescan with the same findings: the steady state.
        let mut warm = State::new();
        engine.scan(&mut warm, &meta, fs.clone(), now);
        g.bench_with_input(BenchmarkId::new("rescan", n), &fs, |b, fs| {
            b.iter(|| {
                engine
                    .scan(&mut warm, &meta, fs.clone(), now)
                    .findings
                    .len()
            })
        });
    }
    // The per-team gauges, counted from a state of 100,000 findings (10
    // targets of 10,000), as the service does every second.
    let fs = findings(10_000);
    let mut state = State::new();
    for i in 0..10 {
        let meta = ScanMeta {
            target: format!("repo:github.com/acme/bench-{i}")
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
            ..meta.clone()
        };
        engine.scan(&mut state, &meta, fs.clone(), now);
    }
    let metrics = custody::metrics::Metrics::new();
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("state-gauges-100000", |b| {
        b.iter(|| metrics.set_state([&state], now))
    });
    g.finish();
}

/// What the service does with one message besides Kafka: decode a report
/// of 200 findings of about 1 KB (the service bench's), apply it, serialize
/// its changelog records and its events. First scan of a new target, and a
/// rescan of a known one with the same findings.
fn service_step(c: &mut Criterion) {
    let engine = Engine::new(&Config::default());
    let ctx = DecodeContext::default();
    let bytes = common::sarif_padded(200, 400).into_bytes();
    let (target, now, meta) = bench_scan();
    let spec = target.to_string();
    let step = |state: &mut State| {
        let report = Format::Sarif.decode(&bytes, &ctx).expect("decode");
        let mut out = custody::engine::Output::default();
        let touched = engine.scan_touched(
            state,
            &meta,
            report.findings,
            now,
            &mut out,
            std::time::Duration::from_secs(3600),
        );
        // In the format the service writes by default (a fresh writer:
        // its dictionary holds nothing of the target yet).
        let records = custody::service::changelog::Writer::new(Default::default()).records(
            state,
            &spec,
            &touched.findings,
            Some(&touched.tickets),
        );
        // As the service does: one buffer for every event payload.
        let mut payload = Vec::with_capacity(4096);
        let mut events = 0;
        for e in &out.findings {
            payload.clear();
            let _ = serde_json::to_writer(&mut payload, e);
            events += payload.len();
        }
        for e in &out.tickets {
            payload.clear();
            let _ = serde_json::to_writer(&mut payload, e);
            events += payload.len();
        }
        records.len() + events
    };
    let mut g = c.benchmark_group("service-step");
    g.throughput(Throughput::Elements(200));
    // The floor of any decode: serde_json checking the report's syntax
    // and skipping every value.
    g.bench_function("json-skip", |b| {
        b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok())
    });
    g.bench_function("decode", |b| {
        b.iter(|| Format::Sarif.decode(&bytes, &ctx).map(|r| r.findings.len()))
    });
    // What the service pays to recognize a report sent again (XXH3-128),
    // and what the same check with BLAKE3 or SHA-256 would cost.
    g.bench_function("digest", |b| {
        b.iter(|| custody::normalize::report_digest(&bytes))
    });
    g.bench_function("digest-blake3", |b| b.iter(|| blake3::hash(&bytes)));
    // What recognizing a restamped rescan costs: a skim of the report and
    // the hash of what the decoder reads.
    g.bench_function("content-digest", |b| {
        b.iter(|| custody::normalize::sarif::content_digest(&bytes))
    });
    g.bench_function("digest-sha256", |b| {
        b.iter(|| <sha2::Sha256 as sha2::Digest>::digest(&bytes))
    });
    g.bench_function("first-scan", |b| {
        b.iter(|| {
            let mut state = State::new();
            step(&mut state)
        })
    });
    let mut warm = State::new();
    step(&mut warm);
    g.bench_function("rescan", |b| b.iter(|| step(&mut warm)));
    // As in the service bench: 32 partitions' states in turn, so each
    // rescan finds its state's records out of the cache.
    let mut states: Vec<State> = (0..32)
        .map(|_| {
            let mut s = State::new();
            step(&mut s);
            s
        })
        .collect();
    let mut turn = 0;
    g.bench_function("rescan-32-states", |b| {
        b.iter(|| {
            turn = (turn + 1) % states.len();
            step(&mut states[turn])
        })
    });
    g.finish();
}

/// The changelog records of a real first scan (Bandit on tornado: 272
/// findings, 14 tickets), as JSON and in the binary form: writing them
/// (a fresh writer, as for a new target), and a restore's decode of them
/// into state; in findings per second.
fn changelog_decode(c: &mut Criterion) {
    use custody::service::changelog;
    let config = Config::default();
    let (state, touched) = common::tornado_scan(&config);
    let mut g = c.benchmark_group("changelog_encode");
    g.throughput(Throughput::Elements(touched.findings.len() as u64));
    for (name, format) in [
        ("json", changelog::ChangelogFormat::Json),
        ("binary", changelog::ChangelogFormat::Binary),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                changelog::Writer::new(format).records(
                    &state,
                    common::TORNADO,
                    &touched.findings,
                    Some(&touched.tickets),
                )
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("changelog_decode");
    for (name, recs) in [
        ("json", common::tornado_changelog_json(&config)),
        ("binary", common::tornado_changelog(&config)),
    ] {
        let findings = recs.iter().filter(|r| r.key.starts_with(b"f\0")).count();
        g.throughput(Throughput::Elements(findings as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut raw = changelog::RawLog::new();
                for (i, r) in recs.iter().enumerate() {
                    raw.push(i as i64, &r.key, r.value.as_deref())
                        .expect("a record");
                }
                let decoded = raw
                    .take(common::TORNADO, |recs| changelog::decode_target(&recs, "t"))
                    .expect("the target")
                    .expect("decodes");
                let mut r = changelog::Restorer::new();
                decoded.parsed.into_iter().for_each(|p| r.apply_parsed(p));
                r.finish()
            })
        });
    }
    g.finish();
}

/// One partition's processor (no broker: each record acknowledged at once)
/// given the service bench's report (200 findings of about 1 KB, 221 KB)
/// again and again for one target: what custody itself spends on a rescan
/// that changes nothing, which the service bench's rescans row sets beside
/// a plain consumer.
fn partition_rescan(c: &mut Criterion) {
    let report = common::sarif_padded(200, 400).into_bytes();
    let target = "repo:github.com/acme/svc-0-0";
    let mut part = common::load::Partition::new();
    part.scan_as(target, report.clone(), "sarif");
    let mut g = c.benchmark_group("partition");
    g.throughput(Throughput::Elements(1));
    let shared = custody::service::partition::Payload::owned(report);
    g.bench_function("rescan-unchanged", |b| {
        b.iter(|| part.scan_bytes(target, std::sync::Arc::clone(&shared), "sarif"))
    });
    g.finish();
}

criterion_group!(
    benches,
    partition_rescan,
    decoders,
    fingerprinting,
    lifecycle,
    service_step,
    changelog_decode
);
criterion_main!(benches);
