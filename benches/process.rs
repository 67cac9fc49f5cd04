//! `custody process` on a SARIF report of 100,000 results against a
//! process that reads and parses the same file once (see
//! `common/process.rs`; also the `process` row of the scale bench).
//!
//! `cargo bench --bench process` (`CUSTODY_BENCH_RESULTS` for another size).

// custody's allocator, as in the binary (see `custody::app::alloc`),
// except in the floor process (see `process::BenchAllocator`).
custody::allocator_options!();
#[global_allocator]
static ALLOCATOR: process::BenchAllocator = process::BenchAllocator;

mod common;
#[path = "common/process.rs"]
mod process;

fn main() {
    process::serve_floor();
    process::floor_ratio();
}
