//! The command-line front ends: each takes its command's flags
//! ([`crate::cli`]) and runs it. Nothing below this module reads the flags.

pub mod demo;
pub mod owners;
pub mod process;
pub mod publish;
pub mod publish_ownership;
pub mod run;

/// Lets glibc's allocator take memory from the system 64 MiB at a time
/// rather than a page or 128 KiB at a time. `custody run` and `custody
/// process` build state of hundreds of megabytes on several threads, each
/// thread's allocations in an arena of its own; without it each such arena
/// grows a page at a time, with a call to the kernel for each (a seventh
/// of the CPU spent decoding restored state went to these calls, and a
/// third of `process`'s system time on a report of 100,000 results). The
/// price: each arena may keep up to 64 MiB it no longer uses rather than
/// give it back. Call before the threads start; elsewhere than glibc it
/// does nothing.
pub fn reserve_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt sets one tuning parameter of glibc's allocator, under
    // the allocator's own lock; it touches no memory of ours.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
