//! The output head and its cross-entropy as one autograd node: `mean CE(h Wᵀ, target)` over the
//! targets that are not ignored, with the gradient written out by hand.
//!
//! With a large vocabulary the `[tokens, vocab]` logits dominate the memory traffic of a CPU step,
//! and the exponentials on them dominate its arithmetic besides the GEMMs. Autograd's
//! `log_softmax` + `nll_loss` takes an exponential per logit in the forward and again in the
//! backward, and the backward also fills a dense zero gradient of the logits' size. Here the
//! forward computes the softmax once and keeps it; the backward turns it into the logits' gradient
//! `softmax − onehot(target)` in place, and folds the per-token scale into the small `[tokens, d]`
//! operands of the two backward GEMMs instead of making another pass over the logits.

use anyhow::Result;
use tch::{Kind, Tensor};

use crate::custom_grad::{self, CustomGrad};

/// Target id that contributes nothing to the loss.
pub const IGNORE: i64 = -100;

struct HeadCrossEntropy;

impl CustomGrad for HeadCrossEntropy {
    /// saved: softmax `[n, V]`, hidden `[n, d]`, weight `[V, d]`, target `[n, 1]` (ignored → 0),
    /// scale `[n, 1]` (1/count for counted targets, 0 for ignored ones).
    fn backward(_flags: i64, saved: &[Tensor], grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let [probs, hidden, weight, target, scale] = saved else {
            anyhow::bail!(
                "head cross-entropy saved {} tensors, expected 5",
                saved.len()
            );
        };
        tch::no_grad(|| {
            // d loss / d logits = scale · (softmax − onehot(target)), built in the saved softmax
            // (the node runs its backward once).
            let minus_one =
                Tensor::full([target.size()[0], 1], -1.0, (Kind::Float, probs.device()));
            let dlogits = probs
                .shallow_clone()
                .f_scatter_add_(1, target, &minus_one)?;
            let scale = scale * grad;
            let grad_hidden = dlogits.f_mm(weight)? * &scale;
            let grad_weight = dlogits.f_tr()?.f_mm(&(hidden * &scale))?;
            Ok(vec![Some(grad_hidden), Some(grad_weight)])
        })
    }
}

/// Mean cross-entropy of `hidden Wᵀ` (`hidden` `[n, d]`, `weight` `[V, d]`) against `target` `[n]`
/// over the targets that are not [`IGNORE`] (0 when all are).
pub fn head_cross_entropy(hidden: &Tensor, weight: &Tensor, target: &Tensor) -> Result<Tensor> {
    let (target, scale, loss, probs) = tch::no_grad(|| -> Result<_> {
        let valid = target.f_ne(IGNORE)?;
        let count = valid.f_sum(Kind::Float)?.f_clamp_min(1.0)?;
        let scale = valid
            .f_to_kind(Kind::Float)?
            .f_div(&count)?
            .f_unsqueeze(1)?;
        let target = target.f_clamp_min(0)?.f_unsqueeze(1)?;
        let logits = hidden.f_linear::<Tensor>(weight, None)?;
        let target_logit = logits.f_gather(1, &target, false)?;
        // logsumexp = top logit − log(top softmax), read off the softmax without another
        // exponential; the top softmax is ≥ 1/V, so its log is exact to float rounding.
        let top_logit = logits.f_amax([-1], true)?;
        let probs = logits.f_softmax(-1, Kind::Float)?;
        let lse = top_logit - probs.f_amax([-1], true)?.f_log()?;
        let loss = ((lse - target_logit) * &scale).f_sum(Kind::Float)?;
        Ok((target, scale, loss, probs))
    })?;
    custom_grad::apply::<HeadCrossEntropy>(
        &[hidden, weight],
        &loss,
        &[probs, hidden.detach(), weight.detach(), target, scale],
        0,
    )
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
