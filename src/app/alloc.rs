//! The allocator custody's own allocations come from, on Linux: jemalloc,
//! asked to back its memory with transparent huge pages.
//!
//! `custody process` and the service allocate hundreds of megabytes of
//! short-lived buffers and small records. Under glibc's allocator, a seventh
//! of `process`'s CPU went to the kernel zeroing fresh 4 KiB pages on
//! first touch, and another tenth to `malloc` and `free` themselves. With
//! jemalloc keeping its memory in 2 MiB pages (`thp:always`, honoured
//! where the kernel's `transparent_hugepage` setting is `madvise`,
//! Debian's and Ubuntu's default, or `always`) the same report of 100,000 results took a fifth to a third less
//! wall time and a fifth less CPU, measured in turn with glibc's (jemalloc
//! without huge pages, glibc with them and mimalloc each gained less). The
//! price: memory is taken from the system in huge pages, so a small
//! process's resident set starts about 10 MiB higher (`custody process`
//! on a report of 25 results peaked at 22 MiB rather than 11).
//!
//! Only custody's Rust allocations move: librdkafka (C) keeps glibc's
//! allocator, tuned by [`super::reserve_heap`]. Operators can change the
//! options when the process starts with jemalloc's own variable,
//! `_RJEM_MALLOC_CONF` (e.g. `thp:default` to leave the kernel's choice
//! alone, should page faults stall to compact memory on a fragmented
//! host).
//!
//! A binary or bench selects it with [`crate::allocator!`]; the library
//! itself does not, so a test binary may install an allocator of its own
//! (the memory test counts every allocation).

use std::ffi::{c_char, CStr};

/// The allocator type [`crate::allocator!`] installs.
#[cfg(target_os = "linux")]
pub use tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once when it starts (before `main`): its
/// memory in transparent huge pages, its own metadata too once it is large
/// enough to be worth it.
pub const OPTIONS: &CStr = c"thp:always,metadata_thp:auto";

/// A pointer to a `'static` C string, as jemalloc reads its options at
/// startup ([`crate::allocator_options!`]).
#[repr(transparent)]
pub struct Options(*const c_char);

impl Options {
    /// The pointer to `text`.
    pub const fn new(text: &'static CStr) -> Options {
        Options(text.as_ptr())
    }
}

// SAFETY: built only from a `'static` C string (see `Options::new`),
// which no one can change: other threads can only read the address.
unsafe impl Sync for Options {}

/// Makes jemalloc the global allocator of the crate it is invoked in
/// (once, at the top level of a binary or bench), with [`OPTIONS`]. Does
/// nothing off Linux.
#[macro_export]
macro_rules! allocator {
    () => {
        $crate::allocator_options!();

        #[cfg(target_os = "linux")]
        #[global_allocator]
        static CUSTODY_ALLOCATOR: $crate::app::alloc::Jemalloc = $crate::app::alloc::Jemalloc;
    };
}

/// Gives jemalloc [`OPTIONS`] in the binary it is invoked in, for one
/// that installs jemalloc through an allocator of its own ([`allocator!`]
/// does both).
#[macro_export]
macro_rules! allocator_options {
    () => {
        // jemalloc's `malloc_conf` (under the prefix the Rust build of it
        // gives its symbols): a string of options it reads when it starts.
        #[cfg(target_os = "linux")]
        #[export_name = "_rjem_malloc_conf"]
        static CUSTODY_ALLOCATOR_OPTIONS: $crate::app::alloc::Options =
            $crate::app::alloc::Options::new($crate::app::alloc::OPTIONS);
    };
}
