//! The Kafka service against librdkafka's mock cluster (or Apache Kafka,
//! `CUSTODY_BENCH_BROKERS=host:port`): throughput against a plain consumer
//! on several workloads, latency at half the maximum rate, restore. The
//! measurements live in `common/service.rs`, shared with the scale bench.
//!
//! `cargo bench --bench service [-- throughput|new|rescans|primed|restamped|latency|restore]`

// The allocator the custody binary uses (see `custody::app::alloc`).
custody::allocator!();

mod common;
#[path = "common/service.rs"]
mod service;

fn main() {
    // As `custody run` sets glibc's allocator up (custody runs in this
    // process).
    custody::app::reserve_heap();
    // `cargo bench` passes --bench; `cargo test --benches` does not run this.
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    service::run(only.as_deref());
}
