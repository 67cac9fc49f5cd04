//! The `custody process` target (issue 21): on one SARIF report of 100,000
//! results, custody's whole run must take at most the time a whole process
//! needs to read the same file and parse it once into `serde_json::Value`
//! (ratio <= 1.0), and peak memory at most 3x the file size. Prints both
//! times, the ratio, the memory ratio, and the same ratio in CPU time
//! (user + system), which a machine shared with other work disturbs less
//! than wall time.
//!
//! `cargo bench --bench process` (set CUSTODY_BENCH_RESULTS to change the
//! size, e.g. 300000 for a ~200 MB report; CUSTODY_BENCH_RUNS for the
//! number of runs of each side, best kept, default 3).
//!
//! The last line is `RESULT process_floor_ratio <ratio> target 1.0`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One run's wall time and CPU time (user + system).
#[derive(Clone, Copy)]
struct Took {
    wall: Duration,
    cpu: Duration,
}

fn cpu_of(usage: &libc::rusage) -> Duration {
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// This process's CPU time so far.
fn own_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    cpu_of(&usage)
}

/// The least disturbed wall time and the least disturbed CPU time of
/// some runs (each the best of its kind).
fn best(runs: &[Took]) -> Took {
    Took {
        wall: runs.iter().map(|t| t.wall).min().unwrap_or_default(),
        cpu: runs.iter().map(|t| t.cpu).min().unwrap_or_default(),
    }
}

/// Runs custody on the report and returns its times, success and its own
/// peak resident set in bytes, read with wait4 for that one child.
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which std cannot do
fn run_custody(path: &Path) -> (Took, (bool, u64)) {
    let start = Instant::now();
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
    let wall = start.elapsed();
    assert_eq!(rc, pid, "wait4 failed");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    // Linux reports ru_maxrss in kilobytes.
    let rss = u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024;
    let cpu = cpu_of(&usage);
    (Took { wall, cpu }, (ok, rss))
}

/// The floor: read the file and parse it once into `serde_json::Value`
/// (and free it), in this process; returns the number of results, to
/// check the parse saw them all.
fn parse_once(path: &Path) -> (Took, usize) {
    let (start, cpu) = (Instant::now(), own_cpu());
    let n = {
        let bytes = std::fs::read(path).expect("read");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("parse");
        v["runs"][0]["results"].as_array().map_or(0, Vec::len)
    };
    let took = Took {
        wall: start.elapsed(),
        cpu: own_cpu().saturating_sub(cpu),
    };
    (took, n)
}

fn main() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let results = env("CUSTODY_BENCH_RESULTS", 100_000);
    let runs = env("CUSTODY_BENCH_RUNS", 3).max(1);
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

    // The two sides alternate, so that a change in the machine's load
    // falls on both. A child's peak RSS counts from its parent's size at
    // the fork: custody's peak is taken from the first run, before this
    // process has parsed anything.
    let mut rss = None;
    let mut all_ok = true;
    let mut custody_runs = Vec::new();
    let mut parse_runs = Vec::new();
    for _ in 0..runs {
        let (took, (ok, peak)) = run_custody(&path);
        all_ok &= ok;
        rss.get_or_insert(peak);
        custody_runs.push(took);
        let (took, n) = parse_once(&path);
        assert_eq!(n, results);
        parse_runs.push(took);
    }
    assert!(all_ok, "custody process failed");
    let (custody, parse) = (best(&custody_runs), best(&parse_runs));

    let ratio = custody.wall.as_secs_f64() / parse.wall.as_secs_f64();
    let cpu_ratio = custody.cpu.as_secs_f64() / parse.cpu.as_secs_f64();
    let rss = rss.unwrap_or(0);
    let mem = rss as f64 / size as f64;
    println!(
        "serde_json::Value parse (read + parse): {:.3} s wall, {:.3} s CPU (best of {runs})",
        parse.wall.as_secs_f64(),
        parse.cpu.as_secs_f64()
    );
    println!(
        "custody process (whole run, events to /dev/null): {:.3} s wall, {:.3} s CPU (best of {runs})",
        custody.wall.as_secs_f64(),
        custody.cpu.as_secs_f64()
    );
    println!("time ratio custody/parse: {ratio:.2} (target <= 1.00)");
    println!("CPU time ratio custody/parse: {cpu_ratio:.2}");
    println!(
        "custody peak RSS: {:.1} MiB = {mem:.2} x file size (target <= 3.00)",
        rss as f64 / 1048576.0
    );
    println!("RESULT process_floor_ratio {ratio:.2} target 1.0");
}
