//! Memory per open finding, counted by the allocator (not timed): first
//! scans of 20 targets of 1,000 findings each through one partition's
//! processor, as the service applies them, and the heap they leave behind
//! divided by the findings they opened: with every target decoded, and
//! with targets evicted past a budget of decoded findings (what a
//! partition holds beyond its budget). A binary of its own, since the
//! counting allocator counts every allocation of the process.
//!
//! The bounds are generous (about twice the figures measured) so that
//! they catch a regression, not noise.

#[path = "../benches/common/mod.rs"]
mod common;

use common::load::{self, Partition};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only a
// counter is updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap bytes per open finding, every target decoded
/// (`decoded_findings_per_partition = 0`), may not exceed this. Measured
/// when it was written: 1,645 bytes (the state, its tickets, the
/// remembered last scan; the scale bench measures about 1,950 bytes of
/// RSS per finding).
const DECODED_BOUND: f64 = 3_300.0;

/// Heap bytes per open finding of targets evicted from the decoded state
/// may not exceed this: their records in the binary form, what the gauges
/// count of them, the remembered last scan. Measured when it was written:
/// about 195 bytes (with one target of the 20 decoded, 80 of them).
const EVICTED_BOUND: f64 = 500.0;

/// Heap bytes per finding left by first scans of 20 targets of 1,000
/// findings each, through a partition whose budget of decoded findings is
/// `budget`.
fn heap_per_finding(budget: usize) -> f64 {
    let shapes = load::shapes();
    let mut part = Partition::with(|s| s.decoded_findings_per_partition = budget);
    // A first target, so that what is allocated once (the decoder pool,
    // metrics' series) is not counted against the findings.
    part.scan(&load::target(0), load::report(&shapes, 0, 1000));
    let opened_before = part.produced(part.findings_topic()).records;
    let before = LIVE.load(Ordering::Relaxed);
    for t in 1..=20 {
        part.scan(&load::target(t), load::report(&shapes, t, 1000));
    }
    let after = LIVE.load(Ordering::Relaxed);
    let opened = part.produced(part.findings_topic()).records - opened_before;
    assert_eq!(opened, 20_000, "every finding opened");
    let per = (after - before) as f64 / opened as f64;
    // Sanity: the state really is in the heap counted.
    assert!(per > 100.0, "{per:.0} bytes per finding: nothing counted?");
    drop(part);
    per
}

/// One test, the two measures in turn: the allocator counts the whole
/// process.
#[test]
fn an_open_finding_keeps_at_most_the_bound_of_heap() {
    let decoded = heap_per_finding(0);
    println!("{decoded:.0} heap bytes per open finding, every target decoded");
    assert!(
        decoded <= DECODED_BOUND,
        "{decoded:.0} heap bytes per open finding decoded, over the bound of {DECODED_BOUND}"
    );
    let evicted = heap_per_finding(1000);
    println!(
        "{evicted:.0} heap bytes per open finding, targets evicted past 1,000 decoded findings"
    );
    assert!(
        evicted <= EVICTED_BOUND,
        "{evicted:.0} heap bytes per open finding evicted, over the bound of {EVICTED_BOUND}"
    );
}
