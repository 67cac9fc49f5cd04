//! Machine scale (#21): every row of the table, each ending with
//! one line `RESULT <measure> <value> target <target>`, each ratio
//! measured in the same run as its baseline.
//!
//! | row (argument) | measure | how |
//! |---|---|---|
//! | `memory` | `bytes_per_finding` | RSS growth of this process per open finding, 10 M findings over 10 k targets, with the curve at 1 M and 3 M, under the default settings (20,000 findings decoded, the rest evicted) |
//! | `changelog` | `changelog_bytes_per_finding` | key + value bytes of the changelog records the partition processor writes for new findings, per finding |
//! | `first_scans` | `first_scan_ratio` | every report a new target: custody's sustained rate / a plain consumer's |
//! | `rescans` | `rescan_ratio` | known targets rescanned with the same report, custody primed: median of 3 runs |
//! | `restore` | `restore_ratio` | custody's restore / plain consumers reading the same changelog: three of each, in turn, the median of custody's over the median of theirs |
//! | `latency` | `p99_ms_half_max` | publish -> ticket event at half the first scans' maximum rate, after a warm-up (1 s on the mock, 5 s on Apache Kafka, whose new topics are slow for the first seconds: the warm-up's first tickets' latency is printed) |
//! | `process` | `process_floor_ratio` | `custody process`, whole process / read + parse into `serde_json::Value`, whole process |
//!
//! `cargo bench --bench scale` runs them all; `cargo bench --bench scale --
//! restore` one (or several, named). The service rows run on librdkafka's mock cluster, or on
//! Apache Kafka with `CUSTODY_BENCH_BROKERS=host:port` (see
//! `common/service.rs`). `CUSTODY_BENCH_FINDINGS` lowers the memory row's
//! top (10,000,000 by default: about 2 GB of state today) for a quick run;
//! `CUSTODY_BENCH_TARGETS` sets its targets (10,000). The memory row
//! measures the default `decoded_findings_per_partition`: the partition
//! keeps that many findings decoded and the targets beyond them evicted,
//! in their compact form.
//! `CUSTODY_BENCH_LATENCY_RATE=<reports/s>` measures the latency row at
//! that rate instead of half the first scans' maximum (which is then not
//! measured).
//!
//! Where a first scan's time went when this bench was written (mock
//! cluster, 200-finding SARIF reports, a shared 2-core machine): about 50
//! us of CPU per new finding in all. Half in custody's workers (decode
//! and fingerprint a fifth of it; lifecycle and tickets a third; the
//! finding event's and the changelog record's JSON nearly half), a third
//! in librdkafka's broker thread (per-record buffers, locks and wake-ups
//! for the 2.2 records and 2.2 KB produced per finding, lz4 a tenth of
//! it), the rest the mock broker storing them and delivery reports. The
//! `changelog` row prints those bytes by topic and record kind.

// custody's allocator, as in the binary (see `custody::app::alloc`),
// except in the floor process (see `process::BenchAllocator`).
custody::allocator_options!();
#[global_allocator]
static ALLOCATOR: process::BenchAllocator = process::BenchAllocator;

mod common;
#[path = "common/process.rs"]
mod process;
// The rows judged; the service bench runs its other parts.
#[allow(dead_code)]
#[path = "common/service.rs"]
mod service;

use common::load::{self, Partition};
use std::time::Instant;

/// The rows, in the order (`process` runs first).
const ROWS: [&str; 7] = [
    "memory",
    "changelog",
    "first_scans",
    "rescans",
    "restore",
    "latency",
    "process",
];

fn result(measure: &str, value: String, target: &str) {
    println!("RESULT {measure} {value} target {target}");
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// This process's resident set, in bytes (Linux: VmRSS of
/// /proc/self/status).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Open findings built through one partition's processor under the
/// default settings (its budget of decoded findings among them), `top` of
/// them over `targets` targets (each a first scan of `top / targets`
/// findings); RSS read at 1 M, 3 M and the top. Returns bytes per finding
/// at the top.
fn memory() -> f64 {
    let top = env_usize("CUSTODY_BENCH_FINDINGS", 10_000_000);
    let targets = env_usize("CUSTODY_BENCH_TARGETS", 10_000).max(1);
    let per_target = (top / targets).max(1);
    println!(
        "== memory: {top} open findings over {targets} targets ({per_target} per first scan), through the partition processor"
    );
    let shapes = load::shapes();
    let mut part = Partition::new();
    let findings_topic = part.findings_topic().to_string();
    let mut marks: Vec<usize> = [1_000_000, 3_000_000]
        .into_iter()
        .filter(|m| *m < per_target * targets)
        .collect();
    marks.push(per_target * targets);
    let base = rss();
    println!("  RSS before: {:.1} MiB", base as f64 / 1048576.0);
    let start = Instant::now();
    let mut fed = 0;
    let mut at_top = 0.0;
    let mut next = 0;
    for t in 0..targets {
        part.scan(&load::target(t), load::report(&shapes, t, per_target));
        fed += per_target;
        if next < marks.len() && fed >= marks[next] {
            next += 1;
            let open = part.produced(&findings_topic).records;
            let now = rss();
            let per = now.saturating_sub(base) as f64 / open.max(1) as f64;
            println!(
                "  {open:>10} open findings, {:>6} targets: RSS {:8.1} MiB, growth {:8.1} MiB = {per:6.0} bytes per finding ({:.1} s, {:.1} us per finding)",
                t + 1,
                now as f64 / 1048576.0,
                now.saturating_sub(base) as f64 / 1048576.0,
                start.elapsed().as_secs_f64(),
                start.elapsed().as_secs_f64() * 1e6 / fed as f64
            );
            assert_eq!(open as usize, fed, "every finding fed opened once");
            at_top = per;
        }
    }
    at_top
}

/// Changelog bytes per new open finding: first scans of 100 targets of
/// 1,000 findings each through the partition processor, every record it
/// writes to the changelog counted (findings, tickets, last scans, heads).
fn changelog() -> f64 {
    let targets = 100;
    let per_target = 1000;
    println!("== changelog: first scans of {targets} targets of {per_target} findings");
    let shapes = load::shapes();
    let reports: Vec<Vec<u8>> = (0..targets)
        .map(|t| load::report(&shapes, t, per_target))
        .collect();
    let report_bytes: usize = reports.iter().map(Vec::len).sum();
    let mut part = Partition::new();
    let start = Instant::now();
    for (t, report) in reports.into_iter().enumerate() {
        part.scan(&load::target(t), report);
    }
    let took = start.elapsed().as_secs_f64();
    let open = part.produced(part.findings_topic()).records as f64;
    // Where a first scan's time goes without Kafka: decode, fingerprint,
    // lifecycle, tickets, events and changelog records serialized.
    println!(
        "  reports: {:.0} bytes per finding; applied in {took:.2} s, {:.1} us per finding (this process, no broker)",
        report_bytes as f64 / open,
        took * 1e6 / open
    );
    let changelog = part.produced(&part.changelog_topic());
    let events = part.produced(part.findings_topic());
    println!(
        "  {open} findings opened: {} changelog records, {:.1} MB ({:.0} bytes per finding); finding events {:.0} bytes per finding",
        changelog.records,
        changelog.bytes as f64 / 1e6,
        changelog.bytes as f64 / open,
        events.bytes as f64 / open
    );
    for (kind, p) in part.produced_by_kind(&part.changelog_topic()) {
        println!(
            "    changelog records {kind:?}: {} records, {:.0} bytes per finding",
            p.records,
            p.bytes as f64 / open
        );
    }
    for topic in part.topics() {
        let p = part.produced(&topic);
        println!(
            "    topic {topic}: {} records, {:.0} bytes per finding",
            p.records,
            p.bytes as f64 / open
        );
    }
    changelog.bytes as f64 / open
}

fn main() {
    process::serve_floor();
    // As `custody run` and `custody process` set glibc's allocator up (the
    // service rows run custody in this process).
    custody::app::reserve_heap();
    // `cargo bench` passes --bench; `cargo test --benches` does not run this.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for o in &only {
        assert!(
            ROWS.contains(&o.as_str()),
            "unknown row {o:?}; the rows are {}",
            ROWS.join(", ")
        );
    }
    let want = |row: &str| only.is_empty() || only.iter().any(|o| o == row);
    println!(
        "load: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    // First, while this process is small: the peak RSS wait4 reports for
    // a child counts its parent's from before the exec.
    if want("process") {
        let ratio = process::floor_ratio();
        result("process_floor_ratio", format!("{ratio:.2}"), "1.0");
    }
    if want("memory") {
        let v = memory();
        result("bytes_per_finding", format!("{v:.0}"), "300");
    }
    if want("changelog") {
        let v = changelog();
        result("changelog_bytes_per_finding", format!("{v:.0}"), "200");
    }
    let mut max_rate = None;
    if want("first_scans") {
        let (rate, ratio) = service::first_scans();
        max_rate = Some(rate);
        result("first_scan_ratio", format!("{ratio:.3}"), "0.25");
    }
    if want("rescans") {
        let ratio = service::primed_rescans();
        result("rescan_ratio", format!("{ratio:.3}"), "0.8");
    }
    if want("restore") {
        let (custody, raw) = service::restore();
        result("restore_ratio", format!("{:.3}", custody / raw), "0.9");
    }
    if want("latency") {
        // Half of the first scans' maximum rate, measured now if that row
        // did not run and no rate is given (CUSTODY_BENCH_LATENCY_RATE).
        let given = std::env::var("CUSTODY_BENCH_LATENCY_RATE")
            .is_ok_and(|r| r.parse::<f64>().is_ok_and(|r| r > 0.0));
        let max = match max_rate {
            Some(rate) => rate,
            None if given => 0.0,
            None => service::first_scans().0,
        };
        let p99 = service::latency_at_half(max);
        result("p99_ms_half_max", format!("{p99:.1}"), "250");
    }
    println!(
        "load: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
