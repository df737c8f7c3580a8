//! How the host allocator treats libtorch's CPU tensors.
//!
//! libtorch allocates CPU tensors with the C library's `malloc`, with no caching allocator of its
//! own. glibc serves blocks over 128 KiB (dynamically raised up to 32 MiB) with fresh `mmap`s and
//! gives freed heap tops back to the kernel, so every training step faults in and zeroes the pages
//! of its activations, gradients and logit chunks again: on `tiny` on CPU a fifth of a step went
//! to page faults. Keeping freed memory in the process makes a step reuse the last step's pages.

/// Serve blocks up to 32 MiB (glibc's ceiling for this setting) from the heap and keep up to
/// 1 GiB of freed memory at its top instead of trimming it. Costs that much resident memory at
/// most; a no-op where the C library is not glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before training allocates.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
