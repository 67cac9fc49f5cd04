//! The allocator of the scale bench's process. mimalloc, as custody's
//! binary runs with (see `src/main.rs`), so that what the bench measures
//! in its own process (the service, the state's memory) is what a
//! deployment runs; the system allocator instead when the process is
//! started with [`SYSTEM_ALLOC`] in its environment: the `process` row
//! runs its floor (a plain read and parse) both ways.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};

/// The variable that, set in a bench process's environment, makes it
/// allocate with the system allocator.
pub const SYSTEM_ALLOC: &std::ffi::CStr = c"CUSTODY_BENCH_SYSTEM_ALLOC";

/// mimalloc, or the system allocator (see the module).
pub struct BenchAlloc;

/// 0 until the first allocation decides, then 1 (mimalloc) or 2 (system).
static CHOICE: AtomicU8 = AtomicU8::new(0);

/// Whether this process allocates with the system allocator: read from
/// the environment at the first allocation (before `main`, with one
/// thread), without allocating, and kept, so that every block is freed
/// by the allocator that gave it.
fn system() -> bool {
    match CHOICE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            // SAFETY: the name is a NUL-terminated constant; getenv only
            // reads the environment, which no thread changes this early.
            let set = unsafe { !libc::getenv(SYSTEM_ALLOC.as_ptr()).is_null() };
            CHOICE.store(if set { 2 } else { 1 }, Ordering::Relaxed);
            set
        }
    }
}

// SAFETY: every call goes to one allocator, the same for the whole
// process (see `system`), which upholds GlobalAlloc's contract itself.
unsafe impl GlobalAlloc for BenchAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if system() {
            unsafe { System.alloc(layout) }
        } else {
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if system() {
            unsafe { System.alloc_zeroed(layout) }
        } else {
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if system() {
            unsafe { System.dealloc(ptr, layout) }
        } else {
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if system() {
            unsafe { System.realloc(ptr, layout, new_size) }
        } else {
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}
