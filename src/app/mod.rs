//! The command-line front ends: each takes its command's flags
//! ([`crate::cli`]) and runs it. Nothing below this module reads the flags.

pub mod alloc;
pub mod demo;
pub mod owners;
pub mod process;
pub mod publish;
pub mod publish_ownership;
pub mod run;

/// Lets glibc's allocator take memory from the system 64 MiB at a time
/// rather than a page or 128 KiB at a time. On Linux custody's own
/// allocations come from jemalloc ([`alloc`]); glibc's allocator serves
/// librdkafka, whose buffers for fetches of large reports, on several
/// threads, would otherwise each come from a mapping of their own or an
/// arena grown a page at a time, with a call to the kernel for each (before
/// jemalloc, when glibc served custody too, a seventh of the CPU spent
/// decoding restored state went to these calls). The price: each arena
/// may keep up to 64 MiB it no longer uses rather than give it back.
/// `custody run` calls it before its threads start (`custody process`
/// runs no librdkafka); elsewhere than glibc it does nothing.
///
/// Setting the pad also stops glibc from raising its threshold for
/// serving an allocation with a mapping of its own (128 KiB at first, up
/// to 32 MiB as such blocks are freed), so the threshold is set to that
/// ceiling too. Left at 128 KiB, every buffer over it (librdkafka's for a
/// fetch of large reports) was mapped, zeroed by the kernel a page at a
/// time and unmapped again: a plain consumer in the same process read
/// 200 KB reports at less than half its rate.
pub fn reserve_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt sets one tuning parameter of glibc's allocator, under
    // the allocator's own lock; it touches no memory of ours.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    /// glibc's count of blocks it serves with mappings of their own.
    fn mapped_blocks() -> usize {
        // SAFETY: mallinfo2 reads the allocator's statistics under its own
        // lock and returns them by value.
        unsafe { libc::mallinfo2() }.hblks
    }

    #[test]
    fn after_reserving_a_large_buffer_comes_from_the_heap_not_a_mapping_of_its_own() {
        super::reserve_heap();
        // Another test's thread may map or unmap a block meanwhile (one
        // over 32 MiB): the count must hold still across one of a few
        // tries. With the threshold left at 128 KiB, every try maps one.
        let held = (0..5).any(|_| {
            let before = mapped_blocks();
            let buffer = std::hint::black_box(vec![1u8; 4 << 20]);
            let during = mapped_blocks();
            drop(buffer);
            during == before
        });
        assert!(held, "a 4 MiB buffer was mapped on its own every time");
    }
}
