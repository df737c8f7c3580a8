//! Calling the crate's C++ (`src/*.cpp`, compiled by build.rs). Its entry points never unwind
//! into Rust: they return non-zero and write a NUL-terminated message into a buffer we pass.

use std::ffi::{c_char, c_int, CStr};

use anyhow::{bail, Result};
use tch::Tensor;
use torch_sys::C_tensor;

/// The raw handle of `t` for the C++ side; valid while `t` lives.
pub(crate) fn raw(t: &Tensor) -> *mut C_tensor {
    t.as_ptr() as *mut _
}

/// Runs `call(err, err_len)` and turns a non-zero return into the error `what: <message>`.
pub(crate) fn check(what: &str, call: impl FnOnce(*mut c_char, i64) -> c_int) -> Result<()> {
    let mut err = [0 as c_char; 1024];
    if call(err.as_mut_ptr(), err.len() as i64) != 0 {
        // SAFETY: the C++ side NUL-terminates what it writes into `err`, which starts zeroed.
        let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
        bail!("{what}: {msg}");
    }
    Ok(())
}
