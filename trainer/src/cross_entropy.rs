//! The output head and its cross-entropy as one autograd node: `mean CE(h Wᵀ, target)` over the
//! targets that are not ignored, with the gradient written out by hand (a "fused linear
//! cross-entropy", as in Liger-Kernel).
//!
//! With a large vocabulary the `[tokens, vocab]` logits dominate both the memory of a step and,
//! besides the GEMMs, its time: autograd's `linear` + `log_softmax` + `nll_loss` writes the logits,
//! keeps the log-softmax for the backward, exponentiates every logit twice and fills a dense zero
//! gradient of the logits' size, all passes over a tensor far larger than the caches. Here the
//! tokens are processed in chunks whose logits stay in cache: each chunk's logits become
//! `scale · (softmax − onehot(target))` in place (`head_kernels.cpp`, three passes per row while
//! it sits in L1) and its two gradient GEMMs run right away, so the logits are never materialized
//! for the whole batch nor kept for the backward. The gradients are computed in the forward,
//! because the loss is a scalar: the backward only scales them by the incoming gradient. The
//! per-token scale (1/count, 0 for an ignored target) is folded into the chunk's gradient.

use std::ffi::{c_char, c_int};

use anyhow::Result;
use tch::{Kind, Tensor};
use torch_sys::C_tensor;

use crate::cpp::{check, raw};
use crate::custom_grad::{self, CustomGrad};

/// Target id that contributes nothing to the loss.
pub const IGNORE: i64 = -100;

/// Logit elements per chunk: 8 MB of FP32 (256 tokens of an 8K vocabulary), the fastest size
/// measured on a 2-core box; whole-batch logits are ~40% slower there, smaller chunks too.
const CHUNK_LOGITS: i64 = 1 << 21;
/// Fewest tokens per chunk, so that the GEMMs keep a useful size with a huge vocabulary.
const MIN_CHUNK_TOKENS: i64 = 32;
/// Vocabulary rows per logits GEMM (see `head_kernels.cpp`): 512 was the fastest of 256–2048
/// with d = 64, V = 8192 on a 2-core box.
const VOCAB_BLOCK: i64 = 512;

extern "C" {
    fn whale_head_logits(
        out: *mut C_tensor,
        hidden: *mut C_tensor,
        weight: *mut C_tensor,
        block: i64,
        err: *mut c_char,
        err_len: i64,
    ) -> c_int;
    fn whale_softmax_xent_(
        logits: *mut C_tensor,
        target: *mut C_tensor,
        scale: *mut C_tensor,
        loss: *mut C_tensor,
        grad: c_int,
        err: *mut c_char,
        err_len: i64,
    ) -> c_int;
}

/// `out = hidden · weightᵀ` (`out` `[n, V]`), by [`VOCAB_BLOCK`] columns on libtorch's threads.
fn logits_into(out: &Tensor, hidden: &Tensor, weight: &Tensor) -> Result<()> {
    // SAFETY: the three tensors are live for the call; the kernel writes only `out` (through
    // libtorch's checked `mm_out`) and keeps no reference.
    check("head logits", |err, len| unsafe {
        whale_head_logits(raw(out), raw(hidden), raw(weight), VOCAB_BLOCK, err, len)
    })
}

/// In place over `logits` `[n, V]` (FP32, contiguous): writes `loss[i] = scale[i]·(logsumexp(row
/// i) − row_i[target[i]])` and, with `grad`, turns row i into `scale[i]·(softmax − onehot)`.
fn softmax_xent_(
    logits: &Tensor,
    target: &Tensor,
    scale: &Tensor,
    loss: &Tensor,
    grad: bool,
) -> Result<()> {
    // SAFETY: the four tensors are live for the call; the kernel checks their shapes, dtypes and
    // layout before touching their data, writes only `logits` and `loss`, and keeps no reference.
    check("softmax cross-entropy", |err, len| unsafe {
        whale_softmax_xent_(
            raw(logits),
            raw(target),
            raw(scale),
            raw(loss),
            c_int::from(grad),
            err,
            len,
        )
    })
}

struct HeadCrossEntropy;

impl CustomGrad for HeadCrossEntropy {
    /// saved: the loss's gradients for hidden `[n, d]` and weight `[V, d]`, scaled in place (a
    /// new `[V, d]` tensor would cost an allocation and a pass more): the node runs its backward
    /// once, and a second backward through a retained graph would fail on the bumped version
    /// counter rather than scale them twice.
    fn backward(_flags: i64, saved: &[Tensor], grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        tch::no_grad(|| {
            saved
                .iter()
                .map(|g| {
                    let mut g = g.shallow_clone();
                    let _ = g.f_mul_(grad)?;
                    Ok(Some(g))
                })
                .collect()
        })
    }
}

/// Mean cross-entropy of `hidden Wᵀ` (`hidden` `[n, d]`, `weight` `[V, d]`, FP32 on the CPU)
/// against `target` `[n]` over the targets that are not [`IGNORE`] (0 when all are).
pub fn head_cross_entropy(hidden: &Tensor, weight: &Tensor, target: &Tensor) -> Result<Tensor> {
    let chunk = (CHUNK_LOGITS / weight.size()[0]).max(MIN_CHUNK_TOKENS);
    chunked(hidden, weight, target, chunk)
}

/// [`head_cross_entropy`] over chunks of `chunk` tokens.
fn chunked(hidden: &Tensor, weight: &Tensor, target: &Tensor, chunk: i64) -> Result<Tensor> {
    let need_grad = hidden.requires_grad() || weight.requires_grad();
    let n = hidden.size()[0];
    let (loss, grads) = tch::no_grad(|| -> Result<_> {
        let valid = target.f_ne(IGNORE)?;
        let count = valid.f_sum(Kind::Float)?.f_clamp_min(1.0)?;
        let scale = valid.f_to_kind(Kind::Float)?.f_div(&count)?;
        let target = target.f_clamp_min(0)?.f_contiguous()?;
        let row_loss = scale.f_empty_like()?;
        let grad_hidden = hidden.f_empty_like()?;
        // One logits buffer for all chunks (the last one may use a part of it).
        let buffer = Tensor::f_empty(
            [chunk.min(n), weight.size()[0]],
            (Kind::Float, hidden.device()),
        )?;
        // Written by the first chunk's GEMM and accumulated into by the others: zero-filling a
        // `[V, d]` buffer first would be one more pass over the largest gradient.
        let mut grad_weight = match n {
            0 => weight.f_zeros_like()?,
            _ => weight.f_empty_like()?,
        };
        for start in (0..n).step_by(chunk as usize) {
            let len = chunk.min(n - start);
            let h = hidden.f_narrow(0, start, len)?;
            let logits = buffer.f_narrow(0, 0, len)?;
            logits_into(&logits, &h, weight)?;
            softmax_xent_(
                &logits,
                &target.f_narrow(0, start, len)?,
                &scale.f_narrow(0, start, len)?,
                &row_loss.f_narrow(0, start, len)?,
                need_grad,
            )?;
            if need_grad {
                // `logits` now holds d loss / d logits.
                let _ = logits.f_mm_out(&grad_hidden.f_narrow(0, start, len)?, weight)?;
                let _ = match start {
                    0 => logits.f_tr()?.f_mm_out(&grad_weight, &h)?,
                    _ => grad_weight.f_addmm_(&logits.f_tr()?, &h)?,
                };
            }
        }
        Ok((row_loss.f_sum(Kind::Float)?, [grad_hidden, grad_weight]))
    })?;
    if !need_grad {
        return Ok(loss);
    }
    custom_grad::apply::<HeadCrossEntropy>(&[hidden, weight], &loss, &grads, 0)
}

#[cfg(test)]
mod tests {
    use tch::{Device, Reduction};

    use super::*;

    /// Loss and both gradients of [`chunked`] equal autograd's `linear` + `cross_entropy_loss`,
    /// with ignored targets, a non-unit output gradient and logits `spread` apart.
    fn assert_matches_autograd(n: i64, d: i64, vocab: i64, spread: f64, chunk: i64) {
        tch::manual_seed(0);
        let opts = (Kind::Float, Device::Cpu);
        let hidden = (Tensor::randn([n, d], opts) * spread).set_requires_grad(true);
        let weight = Tensor::randn([vocab, d], opts).set_requires_grad(true);
        let target = Tensor::randint(vocab, [n], (Kind::Int64, Device::Cpu));
        let _ = target.narrow(0, 3, 2).fill_(IGNORE);

        let logits = hidden.linear::<Tensor>(&weight, None);
        let reference =
            logits.cross_entropy_loss::<Tensor>(&target, None, Reduction::Mean, IGNORE, 0.0);
        let ref_grads =
            Tensor::run_backward(&[&reference * 2.5], &[&hidden, &weight], false, false);

        let fused = chunked(&hidden, &weight, &target, chunk).unwrap();
        let grads = Tensor::run_backward(&[&fused * 2.5], &[&hidden, &weight], false, false);

        let diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        let scale = reference.double_value(&[]).abs().max(1.0);
        assert!(
            diff(&fused, &reference) < 1e-5 * scale,
            "loss {fused} vs {reference}"
        );
        assert!(diff(&grads[0], &ref_grads[0]) < 1e-5 * spread);
        assert!(diff(&grads[1], &ref_grads[1]) < 1e-5 * spread);
        assert!(ref_grads[0].narrow(0, 3, 2).abs().max().double_value(&[]) == 0.0);
        assert!(grads[0].narrow(0, 3, 2).abs().max().double_value(&[]) == 0.0);
    }

    #[test]
    fn matches_autograd_cross_entropy() {
        assert_matches_autograd(12, 16, 50, 3.0, 12);
    }

    /// Several token chunks (the last one short), a vocabulary that is a multiple neither of the
    /// logits GEMM's column block nor of the kernel's 16 lanes, and logits hundreds apart (most
    /// exponentials underflow to 0).
    #[test]
    fn chunks_and_vocabulary_blocks_match_autograd() {
        assert_matches_autograd(23, 8, VOCAB_BLOCK * 2 + 13, 1.0, 5);
        assert_matches_autograd(23, 8, VOCAB_BLOCK * 2 + 13, 40.0, 5);
    }

    #[test]
    fn target_outside_the_vocabulary_is_an_error() {
        let opts = (Kind::Float, Device::Cpu);
        let hidden = Tensor::randn([4, 8], opts);
        let weight = Tensor::randn([10, 8], opts);
        let target = Tensor::from_slice(&[1i64, 2, 10, 3]);
        let err = head_cross_entropy(&hidden, &weight, &target).unwrap_err();
        assert!(
            format!("{err:#}").contains("target 10 of row 2 is outside the vocabulary of 10"),
            "{err:#}"
        );
    }

    #[test]
    fn all_targets_ignored_gives_zero_loss_and_gradients() {
        let opts = (Kind::Float, Device::Cpu);
        let hidden = Tensor::randn([4, 8], opts).set_requires_grad(true);
        let weight = Tensor::randn([10, 8], opts).set_requires_grad(true);
        let target = Tensor::full([4], IGNORE, (Kind::Int64, Device::Cpu));
        let loss = head_cross_entropy(&hidden, &weight, &target).unwrap();
        assert_eq!(loss.double_value(&[]), 0.0);
        let grads = Tensor::run_backward(&[&loss], &[&hidden, &weight], false, false);
        assert_eq!(grads[0].abs().max().double_value(&[]), 0.0);
        assert_eq!(grads[1].abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn a_second_backward_fails_rather_than_scaling_twice() {
        let opts = (Kind::Float, Device::Cpu);
        let hidden = Tensor::randn([6, 8], opts).set_requires_grad(true);
        let weight = Tensor::randn([10, 8], opts).set_requires_grad(true);
        let target = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6]);
        let loss = head_cross_entropy(&hidden, &weight, &target).unwrap() * 3.0;
        let first = Tensor::run_backward(&[&loss], &[&hidden, &weight], true, false);
        let again = Tensor::f_run_backward(&[&loss], &[&hidden, &weight], false, false);
        let err = again
            .expect_err("the saved gradients were scaled in place")
            .to_string();
        assert!(err.contains("modified by an inplace operation"), "{err}");
        // The first backward's gradients are the loss's: 3 × those of an unscaled loss.
        let plain = head_cross_entropy(&hidden, &weight, &target).unwrap();
        let unscaled = Tensor::run_backward(&[&plain], &[&hidden, &weight], false, false);
        for (a, b) in first.iter().zip(&unscaled) {
            assert!((a - b * 3.0).abs().max().double_value(&[]) < 1e-6);
        }
    }
}
