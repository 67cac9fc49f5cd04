//! Memory per open finding, counted by the allocator (not timed): first
//! scans of 20 targets of 1,000 findings each through one partition's
//! processor, as the service applies them, and the heap they leave behind
//! divided by the findings they opened. A binary of its own, since the
//! counting allocator counts every allocation of the process.
//!
//! The bound is generous (about twice today's figure) so that it catches
//! a regression, not noise; #21 aims much lower (300 bytes of RSS per
//! finding), and the bound should come down with it.

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

/// Heap bytes per open finding may not exceed this. Measured when it was
/// written: 1,640 bytes (the state, its tickets, the remembered last
/// scan; the scale bench measures about 1,950 bytes of RSS per finding).
const BOUND: f64 = 3_300.0;

#[test]
fn an_open_finding_keeps_at_most_the_bound_of_heap() {
    let shapes = load::shapes();
    let mut part = Partition::new();
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
    println!("{per:.0} heap bytes per open finding");
    assert!(
        per <= BOUND,
        "{per:.0} heap bytes per open finding, over the bound of {BOUND}"
    );
    // Sanity: the state really is in the heap counted.
    assert!(per > 100.0, "{per:.0} bytes per finding: nothing counted?");
    drop(part);
}
