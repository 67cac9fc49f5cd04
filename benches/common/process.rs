//! The `custody process` floor: on one SARIF report of 100,000 results,
//! custody's whole run (a process of its own) against a process that only
//! reads the file and parses it once into `serde_json::Value`, which is
//! this bench's own executable started again with [`FLOOR_VAR`] set (see
//! [`serve_floor`]). Each is run three times, the best time kept; peak
//! memory of each is read with wait4. Target (#21): time ratio <= 1.0.
//!
//! The floor is a plain program: Rust's default allocator, the system's
//! ([`BenchAllocator`]; jemalloc is linked in and starts, but serves no
//! allocation). custody links jemalloc (`custody::app::alloc`);
//! the yardstick does not move with custody's own build. The floor is
//! also run with custody's allocator, and that ratio printed beside.
//!
//! `CUSTODY_BENCH_RESULTS` changes the size (e.g. 300000 for a ~200 MB
//! report).

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// The variable that makes a bench executable the floor process: the
/// report to read and parse.
const FLOOR_VAR: &CStr = c"CUSTODY_BENCH_FLOOR";
/// Set beside [`FLOOR_VAR`]: the floor allocates with custody's allocator
/// rather than the system's.
const FLOOR_JEMALLOC_VAR: &CStr = c"CUSTODY_BENCH_FLOOR_JEMALLOC";

/// A variable's name, for `std::env` and `Command`.
fn var(name: &CStr) -> &str {
    name.to_str().expect("an ASCII name")
}

/// The global allocator of the benches that start themselves again as
/// the floor: custody's (jemalloc, as the binary; the scale bench runs
/// custody's service in its own process) unless this process is the
/// floor, which then allocates as a plain Rust program does, from the
/// system allocator (unless [`FLOOR_JEMALLOC_VAR`] is set too). Chosen at
/// the process's first allocation, from its environment, and kept: every
/// block is freed by the allocator that gave it.
pub struct BenchAllocator;

/// custody's allocator (see `custody::app::alloc`): jemalloc on Linux.
#[cfg(target_os = "linux")]
use custody::app::alloc::Jemalloc as Custody;
#[cfg(not(target_os = "linux"))]
use System as Custody;

/// 0 not chosen yet, 1 the system's, 2 jemalloc.
static CHOSEN: AtomicU8 = AtomicU8::new(0);

fn system_chosen() -> bool {
    let mut c = CHOSEN.load(Ordering::Relaxed);
    if c == 0 {
        let set = |name: &CStr| {
            // SAFETY: getenv reads the environment without allocating;
            // the first allocation comes before any thread could set it.
            !unsafe { libc::getenv(name.as_ptr()) }.is_null()
        };
        c = if set(FLOOR_VAR) && !set(FLOOR_JEMALLOC_VAR) {
            1
        } else {
            2
        };
        // Two threads choosing at once choose the same.
        CHOSEN.store(c, Ordering::Relaxed);
    }
    c == 1
}

// SAFETY: each call goes to one allocator for the whole process (see
// `system_chosen`), which upholds GlobalAlloc's contract itself.
unsafe impl GlobalAlloc for BenchAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if system_chosen() {
            System.alloc(layout)
        } else {
            Custody.alloc(layout)
        }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if system_chosen() {
            System.dealloc(ptr, layout)
        } else {
            Custody.dealloc(ptr, layout)
        }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if system_chosen() {
            System.alloc_zeroed(layout)
        } else {
            Custody.alloc_zeroed(layout)
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if system_chosen() {
            System.realloc(ptr, layout, new_size)
        } else {
            Custody.realloc(ptr, layout, new_size)
        }
    }
}

/// When this process was started as the floor ([`FLOOR_VAR`]): reads the
/// report, parses it into `serde_json::Value`, and exits, failing if the
/// report has no results. Call first thing in `main`.
pub fn serve_floor() {
    let Some(path) = std::env::var_os(var(FLOOR_VAR)).map(PathBuf::from) else {
        return;
    };
    let bytes = std::fs::read(&path).expect("read the report");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("parse the report");
    let n = v["runs"][0]["results"].as_array().map_or(0, Vec::len);
    std::process::exit(if n > 0 { 0 } else { 1 });
}

/// What one run of a child cost.
struct Run {
    ok: bool,
    /// Wall time from spawn to exit.
    took: Duration,
    /// User and system CPU time, all its threads.
    cpu: Duration,
    /// Peak resident set, in bytes.
    peak: u64,
}

/// Runs `cmd` to its end, its usage read with wait4 for that one child.
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which std cannot do
fn run(cmd: &mut Command) -> Run {
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
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Run {
        ok,
        took,
        cpu: time(usage.ru_utime) + time(usage.ru_stime),
        // Linux reports ru_maxrss in kilobytes.
        peak: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
    }
}

/// Best wall time, least CPU time and largest peak memory of three runs;
/// panics if one fails.
fn best_of_three(what: &str, mut cmd: impl FnMut() -> Command) -> Run {
    let mut best = Run {
        ok: true,
        took: Duration::MAX,
        cpu: Duration::MAX,
        peak: 0,
    };
    for _ in 0..3 {
        let r = run(&mut cmd());
        assert!(r.ok, "{what} failed");
        best.took = best.took.min(r.took);
        best.cpu = best.cpu.min(r.cpu);
        best.peak = best.peak.max(r.peak);
    }
    best
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
    let custody = best_of_three("custody process", || {
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
    let floor_with = |jemalloc: bool| {
        let mut c = Command::new(std::env::current_exe().expect("this executable"));
        c.env(var(FLOOR_VAR), &path);
        if jemalloc {
            c.env(var(FLOOR_JEMALLOC_VAR), "1");
        } else {
            c.env_remove(var(FLOOR_JEMALLOC_VAR));
        }
        c
    };
    let floor = best_of_three("the read + parse process", || floor_with(false));
    let floor_jemalloc = best_of_three("the read + parse process, with jemalloc", || {
        floor_with(true)
    });
    let ratio = custody.took.as_secs_f64() / floor.took.as_secs_f64();
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "read + parse into serde_json::Value (whole process): {:.3} s ({:.3} s CPU), peak RSS {:.1} MiB",
        floor.took.as_secs_f64(),
        floor.cpu.as_secs_f64(),
        mib(floor.peak)
    );
    println!(
        "custody process (whole process, events to /dev/null): {:.3} s ({:.3} s CPU), peak RSS {:.1} MiB = {:.2} x file size",
        custody.took.as_secs_f64(),
        custody.cpu.as_secs_f64(),
        mib(custody.peak),
        custody.peak as f64 / size as f64
    );
    println!(
        "the same floor with custody's allocator (jemalloc, huge pages): {:.3} s ({:.3} s CPU), peak RSS {:.1} MiB; custody / it: {:.2}",
        floor_jemalloc.took.as_secs_f64(),
        floor_jemalloc.cpu.as_secs_f64(),
        mib(floor_jemalloc.peak),
        custody.took.as_secs_f64() / floor_jemalloc.took.as_secs_f64()
    );
    // The floor the bench judged before, for comparison with its figures:
    // read + parse in this process, best of three.
    let inside = (0..3)
        .map(|_| {
            let start = Instant::now();
            let bytes = std::fs::read(&path).expect("read");
            let v: serde_json::Value = serde_json::from_slice(&bytes).expect("parse");
            assert!(v["runs"][0]["results"].is_array());
            start.elapsed()
        })
        .min()
        .unwrap_or(Duration::MAX);
    println!(
        "read + parse in this process (the former floor; this process allocates as custody does): {:.3} s, ratio {:.2}",
        inside.as_secs_f64(),
        custody.took.as_secs_f64() / inside.as_secs_f64()
    );
    // Wall time is judged; CPU time, steadier on a shared machine, beside it.
    println!(
        "time ratio custody / read + parse: {ratio:.2} (target <= 1.00); CPU time ratio {:.2}",
        custody.cpu.as_secs_f64() / floor.cpu.as_secs_f64()
    );
    ratio
}
