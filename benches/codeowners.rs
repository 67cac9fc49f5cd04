//! CODEOWNERS lookups per second: synthetic files shaped like large real
//! ones (10 to 10,000 rules) and the largest corpus file; plus the cost of
//! compiling a file.

// The allocator the custody binary uses (see `custody::app::alloc`).
custody::allocator!();

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use custody::ownership::codeowners::{CodeOwners, Flavor};
use std::hint::black_box;
use std::path::Path;

/// A small deterministic generator (64-bit LCG), so every run sees the
/// same file and paths.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.next() % xs.len()]
    }
}

const AREAS: [&str; 8] = [
    "src",
    "pkg",
    "apps",
    "packages",
    "homeassistant/components",
    "x-pack/plugins",
    "public/app/features",
    "tools",
];
const WORDS: [&str; 12] = [
    "auth", "billing", "search", "alerting", "storage", "api", "ui", "core", "sync", "mqtt",
    "zwave", "render",
];
const EXTS: [&str; 10] = [
    "py", "ts", "tsx", "go", "rs", "md", "json", "yaml", "scss", "sh",
];
const FILES: [&str; 6] = ["__init__", "index", "main", "config", "manifest", "README"];

/// A CODEOWNERS file of `n` rules mixing what large real files hold:
/// mostly root-anchored component directories and files, some unanchored
/// directories and extensions, and wildcard patterns.
fn synthetic(n: usize) -> String {
    let mut rng = Rng(n as u64);
    let mut out = String::from("# synthetic\n* @org/everyone\n");
    for i in 0..n.saturating_sub(1) {
        let area = rng.pick(&AREAS);
        let word = rng.pick(&WORDS);
        let owner = format!("@org/team-{}", rng.next() % 200);
        let rule = match i % 10 {
            0..=3 => format!("/{area}/{word}{i}/ {owner}"),
            4 => format!(
                "/{area}/{word}{i}/{}.{} {owner}",
                rng.pick(&FILES),
                rng.pick(&EXTS)
            ),
            5 => format!("{word}{i}/ {owner}"),
            6 => format!("*.{}{} {owner}", rng.pick(&EXTS), i % 40),
            7 => format!("/{area}/{word}{i}/*.ts {owner}"),
            8 => format!("/{area}/**/{word}{i}/*_test.go {owner}"),
            _ => format!("docs/{word}{i}/* {owner}"),
        };
        out.push_str(&rule);
        out.push('\n');
    }
    out
}

/// Paths that hit the file's rules (or just miss them), like a repository's
/// files: `count` of them.
fn paths(n: usize, count: usize) -> Vec<String> {
    let mut rng = Rng(7 + n as u64);
    (0..count)
        .map(|_| {
            let i = rng.next() % n.max(1);
            let area = rng.pick(&AREAS);
            let word = rng.pick(&WORDS);
            let file = format!("{}.{}", rng.pick(&FILES), rng.pick(&EXTS));
            match rng.next() % 6 {
                0 => format!("{area}/{word}{i}/{file}"),
                1 => format!("{area}/{word}{i}/sub/dir/{file}"),
                2 => format!("lib/{word}{i}/{file}"),
                3 => format!("docs/{word}{i}/{file}"),
                4 => format!("{area}/x/{word}{i}/a_test.go"),
                _ => format!("{area}/{word}/{}/{file}", rng.next() % 1000),
            }
        })
        .collect()
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("codeowners_lookup");
    for n in [10usize, 100, 1_000, 5_000, 10_000] {
        let co = CodeOwners::parse(&synthetic(n), Flavor::GitHub);
        let ps = paths(n, 10_000);
        g.throughput(Throughput::Elements(ps.len() as u64));
        g.bench_with_input(BenchmarkId::new("synthetic_rules", n), &ps, |b, ps| {
            b.iter(|| {
                let mut owned = 0usize;
                for p in ps {
                    owned += co.lookup(black_box(p)).map_or(0, |d| d.owners.len());
                }
                owned
            })
        });
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = custody::testing::shared_corpus(
        "codeowners/home-assistant__core.CODEOWNERS",
        "lookup/corpus",
    );
    let fixture = dir.join("tests/fixtures/codeowners/home-assistant__core.oracle.jsonl");
    if let (Some(Ok(text)), Ok(answers)) = (
        file.map(std::fs::read_to_string),
        std::fs::read_to_string(fixture),
    ) {
        let co = CodeOwners::parse(&text, Flavor::GitHub);
        let ps: Vec<String> = answers
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["path"].as_str().map(str::to_string))
            .collect();
        g.throughput(Throughput::Elements(ps.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("corpus", "home-assistant"),
            &ps,
            |b, ps| {
                b.iter(|| {
                    ps.iter()
                        .filter(|p| co.lookup(black_box(p)).is_some())
                        .count()
                })
            },
        );
    }
    g.finish();
}

fn compile(c: &mut Criterion) {
    let mut g = c.benchmark_group("codeowners_parse");
    for n in [1_000usize, 10_000] {
        let text = synthetic(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("synthetic_rules", n), &text, |b, text| {
            b.iter(|| {
                CodeOwners::parse(black_box(text), Flavor::GitHub)
                    .rules()
                    .len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lookups, compile);
criterion_main!(benches);
