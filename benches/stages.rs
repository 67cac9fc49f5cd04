//! Criterion benches for each hot stage, in findings per second: every
//! decoder on real reports, fingerprinting, and the lifecycle step.

mod common;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use custody::config::Config;
use custody::engine::Engine;
use custody::lifecycle::State;
use custody::model::{Finding, ScanMeta, Target};
use custody::normalize::{DecodeContext, Format};
use std::path::Path;

fn corpus(rel: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/corpus/scans")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn decoders(c: &mut Criterion) {
    let ctx = DecodeContext::default();
    let synthetic = common::sarif(10_000).into_bytes();
    let cases: Vec<(&str, Format, Vec<u8>)> = vec![
        ("sarif-synthetic-10k", Format::Sarif, synthetic),
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
    ];
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

fn lifecycle(c: &mut Criterion) {
    let engine = Engine::new(&Config::default());
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
    };
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
    g.finish();
}

criterion_group!(benches, decoders, fingerprinting, lifecycle);
criterion_main!(benches);
