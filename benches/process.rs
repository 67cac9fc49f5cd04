//! The `custody process` target: on one SARIF report of 100,000 results,
//! custody's whole run must take at most 2x the time `serde_json` needs to
//! parse the same file into `serde_json::Value`, and peak memory at most 3x
//! the file size. Prints both times, the ratio, and the memory ratio.
//!
//! `cargo bench --bench process` (set CUSTODY_BENCH_RESULTS to change the
//! size, e.g. 300000 for a ~200 MB report).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        let v = f();
        best = best.min(start.elapsed());
        last = Some(v);
    }
    (best, last.expect("at least one run"))
}

/// Runs custody on the report and returns (success, its own peak resident
/// set in bytes), read with wait4 for that one child.
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which std cannot do
fn run_custody(path: &Path) -> (bool, u64) {
    let child = Command::new(env!("CARGO_BIN_EXE_custody"))
        .args([
            "process",
            "--target",
            "repo:github.com/acme/bench",
            "--at",
            "2026-01-01T00:00:00Z",
        ])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn custody");
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    let mut status: libc::c_int = 0;
    // SAFETY: wait4 writes into the zeroed struct and int we own; the child
    // is ours and not yet waited for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4 failed");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    // Linux reports ru_maxrss in kilobytes.
    (ok, u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024)
}

fn main() {
    let results: usize = std::env::var("CUSTODY_BENCH_RESULTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("bench-{results}.sarif"));
    if !path.exists() {
        std::fs::write(&path, common::sarif(results)).expect("write bench report");
    }
    let size = std::fs::metadata(&path).expect("stat").len();
    println!(
        "report: {} results, {:.1} MiB",
        results,
        size as f64 / 1048576.0
    );

    // custody first, while this process is small.
    let mut rss = 0;
    let (custody, ok) = best_of(3, || {
        let (ok, peak) = run_custody(&path);
        rss = rss.max(peak);
        ok
    });
    assert!(ok, "custody process failed");

    let (parse, n) = best_of(3, || {
        let bytes = std::fs::read(&path).expect("read");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("parse");
        v["runs"][0]["results"].as_array().map_or(0, Vec::len)
    });
    assert_eq!(n, results);

    let ratio = custody.as_secs_f64() / parse.as_secs_f64();
    let mem = rss as f64 / size as f64;
    println!(
        "serde_json::Value parse (read + parse): {:.3} s",
        parse.as_secs_f64()
    );
    println!(
        "custody process (whole run, events to /dev/null): {:.3} s",
        custody.as_secs_f64()
    );
    println!("time ratio custody/parse: {ratio:.2} (target <= 2.00)");
    println!(
        "custody peak RSS: {:.1} MiB = {mem:.2} x file size (target <= 3.00)",
        rss as f64 / 1048576.0
    );
}
