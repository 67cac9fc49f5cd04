//! The `custody process` floor: on one SARIF report of 100,000 results,
//! custody's whole run (a process of its own) against a process that only
//! reads the file and parses it once into `serde_json::Value`, which is
//! this bench's own executable started again with [`FLOOR_FLAG`] (see
//! [`serve_floor`]). Each is run three times, the best time kept; peak
//! memory of each is read with wait4. Target (#21): time ratio <= 1.0.
//!
//! `CUSTODY_BENCH_RESULTS` changes the size (e.g. 300000 for a ~200 MB
//! report).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The argument that makes a bench executable the floor process:
/// `--parse-floor=<report>`.
pub const FLOOR_FLAG: &str = "--parse-floor=";

/// When this process was started as the floor ([`FLOOR_FLAG`]): reads the
/// report, parses it into `serde_json::Value`, and exits, failing if the
/// report has no results. Call first thing in `main`.
pub fn serve_floor() {
    let Some(path) = std::env::args().find_map(|a| a.strip_prefix(FLOOR_FLAG).map(PathBuf::from))
    else {
        return;
    };
    let bytes = std::fs::read(&path).expect("read the report");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("parse the report");
    let n = v["runs"][0]["results"].as_array().map_or(0, Vec::len);
    std::process::exit(if n > 0 { 0 } else { 1 });
}

/// Runs `cmd` to its end: whether it succeeded, how long it took, and its
/// peak resident set in bytes, read with wait4 for that one child.
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which std cannot do
fn run(cmd: &mut Command) -> (bool, Duration, u64) {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    let mut status: libc::c_int = 0;
    // SAFETY: wait4 writes into the zeroed struct and int we own; the child
    // is ours and not yet waited for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let took = start.elapsed();
    assert_eq!(rc, pid, "wait4 failed");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    // Linux reports ru_maxrss in kilobytes.
    (ok, took, u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024)
}

/// Best time and largest peak memory of three runs; panics if one fails.
fn best_of_three(what: &str, mut cmd: impl FnMut() -> Command) -> (Duration, u64) {
    let mut best = Duration::MAX;
    let mut peak = 0;
    for _ in 0..3 {
        let (ok, took, rss) = run(&mut cmd());
        assert!(ok, "{what} failed");
        best = best.min(took);
        peak = peak.max(rss);
    }
    (best, peak)
}

/// The report of `results` results, written once into the target dir.
fn report(results: usize) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("bench-{results}.sarif"));
    if !path.exists() {
        std::fs::write(&path, crate::common::sarif(results)).expect("write bench report");
    }
    path
}

/// Measures both processes and prints them; returns custody's time over
/// the floor's.
pub fn floor_ratio() -> f64 {
    let results: usize = std::env::var("CUSTODY_BENCH_RESULTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let path = report(results);
    let size = std::fs::metadata(&path).expect("stat").len();
    println!(
        "report: {} results, {:.1} MiB",
        results,
        size as f64 / 1048576.0
    );
    let (custody, custody_rss) = best_of_three("custody process", || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_custody"));
        c.args([
            "process",
            "--target",
            "repo:github.com/acme/bench",
            "--at",
            "2026-01-01T00:00:00Z",
        ])
        .arg(&path);
        c
    });
    let (floor, floor_rss) = best_of_three("the read + parse process", || {
        let mut c = Command::new(std::env::current_exe().expect("this executable"));
        c.arg(format!("{FLOOR_FLAG}{}", path.display()));
        c
    });
    let ratio = custody.as_secs_f64() / floor.as_secs_f64();
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "read + parse into serde_json::Value (whole process): {:.3} s, peak RSS {:.1} MiB",
        floor.as_secs_f64(),
        mib(floor_rss)
    );
    println!(
        "custody process (whole process, events to /dev/null): {:.3} s, peak RSS {:.1} MiB = {:.2} x file size",
        custody.as_secs_f64(),
        mib(custody_rss),
        custody_rss as f64 / size as f64
    );
    println!("time ratio custody / read + parse: {ratio:.2} (target <= 1.00)");
    ratio
}
