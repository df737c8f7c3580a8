//! Autograd nodes whose backward is written in Rust.
//!
//! tch can build graphs only from libtorch's own differentiable ops, and every one of those has a
//! backward that is linear in the incoming gradient, so no composition of them (detach tricks
//! included) can quantize that gradient as the FP8 recipe requires. `custom_grad.cpp` (compiled by
//! build.rs) defines one generic `torch::autograd::Function` that returns an output we computed
//! without autograd and, when the engine reaches it, calls [`CustomGrad::backward`] through a
//! C trampoline. The node is a normal part of the graph: one `loss.backward()` runs everything, on
//! whatever thread the engine uses, and the saved tensors are freed with the graph.
//!
//! Alternatives weighed: straight-through detach tricks (`x + (q(x) - x).detach()`) quantize the
//! forward operands but leave Dgrad/Wgrad on an unquantized gradient, so they are not the recipe;
//! cutting the graph at every FP8 linear and running the backward GEMMs from the training loop
//! would need the loop to replay layers in reverse (and re-traverse the residual stream for every
//! cut), coupling the loop to the model. ~70 lines of C++ against headers torch-sys already uses
//! keep both the recipe and the loop intact.

use anyhow::{anyhow, bail, Result};
use std::ffi::{c_char, c_int};
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use tch::Tensor;
use torch_sys::C_tensor;

use crate::cpp::{check, raw};

type BackwardFn = extern "C" fn(
    i64,
    *const *mut C_tensor,
    i64,
    *mut C_tensor,
    *mut *mut C_tensor,
    i64,
    *mut c_char,
    i64,
) -> c_int;

extern "C" {
    fn whale_custom_grad_apply(
        inputs: *const *mut C_tensor,
        n_inputs: i64,
        output: *mut C_tensor,
        saved: *const *mut C_tensor,
        n_saved: i64,
        backward: BackwardFn,
        flags: i64,
        result: *mut *mut C_tensor,
        err: *mut c_char,
        err_len: i64,
    ) -> c_int;
}

/// Whether autograd records operations here (not inside `tch::no_grad` or a backward): a node
/// made when it does not would never run, so what it saves would be computed for nothing.
pub fn grad_enabled() -> bool {
    // SAFETY: sets the thread-local grad mode to what it was.
    unsafe {
        let previous = torch_sys::at_grad_set_enabled(1);
        torch_sys::at_grad_set_enabled(previous);
        previous != 0
    }
}

/// A backward pass: maps the saved tensors, the node's `flags` and the output gradient to one
/// gradient per input (`None` where an input needs none).
pub trait CustomGrad {
    fn backward(flags: i64, saved: &[Tensor], grad_output: &Tensor) -> Result<Vec<Option<Tensor>>>;
}

/// Attaches `output` (computed under no_grad from `inputs`) to the graph as a node whose backward
/// is `G::backward(flags, saved, grad)`. `saved` are kept alive by the node until it is freed.
pub fn apply<G: CustomGrad>(
    inputs: &[&Tensor],
    output: &Tensor,
    saved: &[Tensor],
    flags: i64,
) -> Result<Tensor> {
    let inputs: Vec<*mut C_tensor> = inputs.iter().map(|t| raw(t)).collect();
    let saved: Vec<*mut C_tensor> = saved.iter().map(raw).collect();
    let mut result: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live tensor borrowed for the duration of the call; the C++
    // side copies the handles it keeps and hands back a new owned tensor in `result`.
    check("custom autograd node", |err, err_len| unsafe {
        whale_custom_grad_apply(
            inputs.as_ptr(),
            inputs.len() as i64,
            raw(output),
            saved.as_ptr(),
            saved.len() as i64,
            trampoline::<G>,
            flags,
            &mut result,
            err,
            err_len,
        )
    })?;
    if result.is_null() {
        bail!("custom autograd node returned no tensor");
    }
    // SAFETY: `result` was allocated by `new at::Tensor` and is owned by us from here on.
    Ok(unsafe { Tensor::from_ptr(result) })
}

/// Called by the C++ node from the autograd engine. Never unwinds into C++: errors and panics
/// become a message and a non-zero return, which the node rethrows as a libtorch error.
#[allow(clippy::too_many_arguments)]
extern "C" fn trampoline<G: CustomGrad>(
    flags: i64,
    saved: *const *mut C_tensor,
    n_saved: i64,
    grad_output: *mut C_tensor,
    grads: *mut *mut C_tensor,
    n_inputs: i64,
    err: *mut c_char,
    err_len: i64,
) -> c_int {
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<Vec<Option<Tensor>>> {
        // SAFETY: the node passes `n_saved` valid tensors and a valid gradient; shallow clones
        // leave the originals owned by the node.
        let saved: Vec<Tensor> = (0..n_saved as usize)
            .map(|i| unsafe { Tensor::clone_from_ptr(*saved.add(i)) })
            .collect();
        let grad = unsafe { Tensor::clone_from_ptr(grad_output) };
        let out = G::backward(flags, &saved, &grad)?;
        if out.len() != n_inputs as usize {
            bail!(
                "backward returned {} gradients for {n_inputs} inputs",
                out.len()
            );
        }
        Ok(out)
    }))
    .unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into());
        Err(anyhow!("panic in backward: {msg}"))
    });
    match outcome {
        Ok(out) => {
            for (i, g) in out.into_iter().enumerate() {
                if let Some(g) = g {
                    // SAFETY: `grads` has `n_inputs` slots; the node takes ownership (and deletes).
                    unsafe { *grads.add(i) = ManuallyDrop::new(g).as_mut_ptr() };
                }
            }
            0
        }
        Err(e) => {
            let msg = format!("{e:#}");
            let n = msg.len().min(err_len.max(1) as usize - 1);
            // SAFETY: `err` has `err_len` bytes; we write `n < err_len` bytes and a NUL.
            unsafe {
                std::ptr::copy_nonoverlapping(msg.as_ptr() as *const c_char, err, n);
                *err.add(n) = 0;
            }
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// y = x (identity) whose backward returns 3·g, or fails when flags say so.
    struct Triple;
    impl CustomGrad for Triple {
        fn backward(flags: i64, saved: &[Tensor], g: &Tensor) -> Result<Vec<Option<Tensor>>> {
            if flags == 1 {
                bail!("asked to fail");
            }
            Ok(vec![Some(g * &saved[0])])
        }
    }

    #[test]
    fn backward_runs_rust_code_inside_one_backward_call() {
        let x = Tensor::randn([3, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let y = tch::no_grad(|| &x * 1.0);
        let three = Tensor::from(3.0f32);
        let y = apply::<Triple>(&[&x], &y, &[three], 0).unwrap();
        ((&y * 2.0).sum(Kind::Float) + x.sum(Kind::Float)).backward();
        let want = Tensor::full([3, 4], 7.0, (Kind::Float, Device::Cpu));
        assert!(x.grad().allclose(&want, 0.0, 0.0, false));
    }

    #[test]
    fn grad_mode_is_read_without_changing_it() {
        assert!(grad_enabled());
        tch::no_grad(|| {
            assert!(!grad_enabled());
            assert!(!grad_enabled(), "reading it left it off");
            tch::with_grad(|| assert!(grad_enabled()));
        });
        assert!(grad_enabled());
    }

    #[test]
    fn backward_errors_surface_as_errors() {
        let x = Tensor::randn([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let y = tch::no_grad(|| x.copy());
        let y = apply::<Triple>(&[&x], &y, &[Tensor::from(1.0f32)], 1).unwrap();
        let err = y.sum(Kind::Float).f_backward().unwrap_err();
        assert!(err.to_string().contains("asked to fail"), "{err}");
    }
}
