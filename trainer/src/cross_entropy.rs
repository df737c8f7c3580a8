//! The output head and its cross-entropy as one autograd node: `mean CE(h Wᵀ, target)` over the
//! targets that are not ignored, with the gradient written out by hand (a "fused linear
//! cross-entropy", as in Liger-Kernel).
//!
//! With a large vocabulary the `[tokens, vocab]` logits dominate both the memory of a step and,
//! besides the GEMMs, its time: autograd's `linear` + `log_softmax` + `nll_loss` writes the logits,
//! keeps the log-softmax for the backward, exponentiates every logit twice and fills a dense zero
//! gradient of the logits' size, all passes over a tensor far larger than the caches. Here the
//! tokens are processed in chunks whose logits stay in cache: each chunk's softmax becomes
//! `softmax − onehot(target)` in place and its two gradient GEMMs run right away, so the logits
//! are never materialized for the whole batch nor kept for the backward. The gradients are computed in the forward, because the loss is a scalar: the
//! backward only scales them by the incoming gradient. The per-token scale (1/count, 0 for an
//! ignored target) is folded into the small `[tokens, d]` operands of the GEMMs.

use anyhow::Result;
use tch::{Kind, Tensor};

use crate::custom_grad::{self, CustomGrad};

/// Target id that contributes nothing to the loss.
pub const IGNORE: i64 = -100;

/// Logit elements per chunk: 8 MB of FP32 (256 tokens of an 8K vocabulary), the fastest size
/// measured on a 2-core box; whole-batch logits are ~40% slower there.
const CHUNK_LOGITS: i64 = 1 << 21;
/// Fewest tokens per chunk, so that the GEMMs keep a useful size with a huge vocabulary.
const MIN_CHUNK_TOKENS: i64 = 32;

struct HeadCrossEntropy;

impl CustomGrad for HeadCrossEntropy {
    /// saved: the loss's gradients for hidden `[n, d]` and weight `[V, d]`.
    fn backward(_flags: i64, saved: &[Tensor], grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        tch::no_grad(|| saved.iter().map(|g| Ok(Some(g.f_mul(grad)?))).collect())
    }
}

/// Mean cross-entropy of `hidden Wᵀ` (`hidden` `[n, d]`, `weight` `[V, d]`, FP32) against
/// `target` `[n]` over the targets that are not [`IGNORE`] (0 when all are).
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
        let scale = valid
            .f_to_kind(Kind::Float)?
            .f_div(&count)?
            .f_unsqueeze(1)?;
        let target = target.f_clamp_min(0)?.f_unsqueeze(1)?;
        let weight_t = weight.f_tr()?;
        let mut losses = Vec::new();
        let grad_hidden = hidden.f_empty_like()?;
        let mut grad_weight = weight.f_zeros_like()?;
        for start in (0..n).step_by(chunk as usize) {
            let len = chunk.min(n - start);
            let h = hidden.f_narrow(0, start, len)?;
            let t = target.f_narrow(0, start, len)?;
            let sc = scale.f_narrow(0, start, len)?;
            let logits = h.f_mm(&weight_t)?;
            let target_logit = logits.f_gather(1, &t, false)?;
            let mut probs = logits.f_softmax(-1, Kind::Float)?;
            // logsumexp = top logit − log(top softmax), read off the softmax without another
            // exponential (libtorch's logsumexp costs twice a softmax) nor another pass over the
            // logits (the top softmax sits where the top logit does); the top softmax is ≥ 1/V,
            // so its log is exact to float rounding.
            let (top_prob, top_at) = probs.f_max_dim(-1, true)?;
            let top_logit = logits.f_gather(1, &top_at, false)?;
            drop(logits);
            let lse = top_logit - top_prob.f_log()?;
            losses.push(((lse - target_logit) * &sc).f_sum(Kind::Float)?);
            if need_grad {
                // d loss / d logits = scale · (softmax − onehot(target)), built in place.
                let minus_one = Tensor::f_full([len, 1], -1.0, (Kind::Float, h.device()))?;
                let _ = probs.f_scatter_add_(1, &t, &minus_one)?;
                grad_hidden
                    .f_narrow(0, start, len)?
                    .f_copy_(&(probs.f_mm(weight)? * &sc))?;
                let _ = grad_weight.f_addmm_(&probs.f_tr()?, &(&h * &sc))?;
            }
        }
        let loss = Tensor::f_stack(&losses, 0)?.f_sum(Kind::Float)?;
        Ok((loss, [grad_hidden, grad_weight]))
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

    /// Loss and both gradients equal autograd's `linear` + `cross_entropy_loss`, with ignored
    /// targets, a non-unit output gradient and logits far apart.
    #[test]
    fn matches_autograd_cross_entropy() {
        tch::manual_seed(0);
        let opts = (Kind::Float, Device::Cpu);
        let hidden = (Tensor::randn([12, 16], opts) * 3.0).set_requires_grad(true);
        let weight = Tensor::randn([50, 16], opts).set_requires_grad(true);
        let target = Tensor::randint(50, [12], (Kind::Int64, Device::Cpu));
        let _ = target.narrow(0, 3, 2).fill_(IGNORE);

        let logits = hidden.linear::<Tensor>(&weight, None);
        let reference =
            logits.cross_entropy_loss::<Tensor>(&target, None, Reduction::Mean, IGNORE, 0.0);
        let ref_grads =
            Tensor::run_backward(&[&reference * 2.5], &[&hidden, &weight], false, false);

        let fused = head_cross_entropy(&hidden, &weight, &target).unwrap();
        let grads = Tensor::run_backward(&[&fused * 2.5], &[&hidden, &weight], false, false);

        let diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        assert!(
            diff(&fused, &reference) < 1e-5,
            "loss {fused} vs {reference}"
        );
        assert!(diff(&grads[0], &ref_grads[0]) < 1e-5);
        assert!(diff(&grads[1], &ref_grads[1]) < 1e-5);
        assert!(ref_grads[0].narrow(0, 3, 2).abs().max().double_value(&[]) == 0.0);
        assert!(grads[0].narrow(0, 3, 2).abs().max().double_value(&[]) == 0.0);
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
}
