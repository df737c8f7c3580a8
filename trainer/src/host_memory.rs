//! How the host allocator treats libtorch's CPU tensors, and how they reach a GPU.
//!
//! libtorch allocates CPU tensors with the C library's `malloc`, with no caching allocator of its
//! own. glibc serves blocks over 128 KiB (dynamically raised up to 32 MiB) with fresh `mmap`s and
//! gives freed heap tops back to the kernel, so every training step faults in and zeroes the pages
//! of its activations, gradients and logit chunks again: on `tiny` on CPU a fifth of a step went
//! to page faults. Keeping freed memory in the process makes a step reuse the last step's pages.

use std::ffi::{c_char, c_int};

use anyhow::{bail, Result};
use tch::{Device, Tensor};
use torch_sys::C_tensor;

use crate::cpp::{check, raw};

extern "C" {
    fn whale_upload(
        host: *mut C_tensor,
        index: c_int,
        result: *mut *mut C_tensor,
        err: *mut c_char,
        err_len: i64,
    ) -> c_int;
}

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

/// `host` (a CPU tensor) on `device`. On a GPU the copy goes from page-locked memory and is
/// queued without waiting (a plain `to_device` synchronizes with the GPU: one stall per batch);
/// on the CPU it is `host` itself.
pub fn upload(host: &Tensor, device: Device) -> Result<Tensor> {
    let Device::Cuda(index) = device else {
        return Ok(host.shallow_clone());
    };
    let mut result: *mut C_tensor = std::ptr::null_mut();
    check("copying a batch to the GPU", |err, len| unsafe {
        // SAFETY: `host` is a live tensor for the call; the result is a new tensor we own.
        whale_upload(raw(host), index as c_int, &mut result, err, len)
    })?;
    if result.is_null() {
        bail!("copying a batch to the GPU returned no tensor");
    }
    // SAFETY: `result` was allocated by `new at::Tensor` and is owned by us from here on.
    Ok(unsafe { Tensor::from_ptr(result) })
}
