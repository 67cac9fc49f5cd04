//! `custody process` on a SARIF report of 100,000 results against a
//! process that reads and parses the same file once (see
//! `common/process.rs`; also the `process` row of the scale bench).
//!
//! `cargo bench --bench process` (`CUSTODY_BENCH_RESULTS` for another size).

mod common;
#[path = "common/process.rs"]
mod process;

fn main() {
    process::serve_floor();
    process::floor_ratio();
}
