//! Activation recomputation: a block's attention sub-layer (RMSNorm, the MLA down- and
//! up-projections or GQA's projections, RoPE, attention, the output projection) keeps only its
//! input for the backward and computes the rest again there, as `torch.utils.checkpoint` does.
//! DeepSeek-V3 (§3.3.2) recomputes RMSNorm and the MLA up-projections for the same reason: their
//! outputs, a few times the hidden size per token in every layer, are what limits the micro-batch.
//! The cost is a second forward of the sub-layer.
//!
//! The sub-layer is one `custom_grad` node whose forward runs without autograd. Its backward runs
//! the sub-layer again with autograd (under the autocast of the forward) from the saved input and
//! back-propagates the incoming gradient through it, inside the outer backward (re-entrant, as the
//! reentrant `torch.utils.checkpoint`): the parameters' gradients accumulate as usual, and the
//! node returns the input's.

use anyhow::{Context, Result};
use tch::{Kind, Tensor};

use crate::block::Block;
use crate::custom_grad::{self, CustomGrad};
use crate::rope::Rope;

/// `block.attention(x, rope)` as one node that saves only `x`.
pub fn attention(block: &Block, x: &Tensor, rope: &Rope) -> Tensor {
    let output = tch::no_grad(|| block.attention(x, rope));
    // The node's backward finds the block and the RoPE tables by address: both belong to the model,
    // which neither moves nor drops during a step, and a step's graph is gone when it ends.
    let addresses = Tensor::from_slice(&[block as *const Block as i64, rope as *const Rope as i64]);
    let autocast = crate::autocast::enabled(x.device());
    custom_grad::apply::<Recompute>(&[x], &output, &[x.detach(), addresses], autocast as i64)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

struct Recompute;

impl CustomGrad for Recompute {
    fn backward(autocast: i64, saved: &[Tensor], grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = saved[0].detach().set_requires_grad(true);
        let addresses = Vec::<i64>::try_from(&saved[1])?;
        // SAFETY: the addresses of a block and the RoPE tables of the model whose step is running
        // (see `attention`).
        let (block, rope) = unsafe {
            (
                &*(addresses[0] as *const Block),
                &*(addresses[1] as *const Rope),
            )
        };
        tch::with_grad(|| -> Result<()> {
            let output =
                crate::autocast::bf16(x.device(), autocast != 0, || block.attention(&x, rope));
            // d(Σ output · grad)/d output = grad: the incoming gradient, back-propagated.
            (output * grad.detach())
                .sum(Kind::Float)
                .f_backward()
                .context("recomputed attention")?;
            Ok(())
        })?;
        Ok(vec![Some(x.grad())])
    }
}

#[cfg(test)]
mod tests {
    use tch::{nn, Device, Kind, Tensor};

    use crate::linear::Precision;
    use crate::model::{LossWeights, Model};
    use crate::optim::release_grads;
    use crate::testing::repo_config;
    use crate::train::Recompute;

    /// Recomputing the attention sub-layers changes no gradient: MLA with MoE and MTP (`tiny`),
    /// DeepSeek-V2's routing (`tiny-v2`) and GQA (`tiny-dense`), in FP32 and under BF16 autocast
    /// (which the backward must enter again). One model and batch per case, so that nothing
    /// depends on the global random generator that parallel tests share.
    #[test]
    fn recomputed_attention_gives_the_same_gradients() {
        for name in ["tiny", "tiny-v2", "tiny-dense"] {
            let cfg = repo_config(name);
            let vs = nn::VarStore::new(Device::Cpu);
            let mut model = Model::new(&vs.root(), &cfg, &Precision::Fp32);
            model.autograd_head = true;
            let params: Vec<(String, Tensor)> = vs
                .variables()
                .into_iter()
                .filter(|(_, t)| t.requires_grad())
                .collect();
            let tokens = (Tensor::arange(2 * 34, (Kind::Int64, Device::Cpu)) * 7919)
                .remainder(cfg.vocab_size)
                .view([2, 34]);
            let doc_start = Tensor::zeros([2, 34], (Kind::Bool, Device::Cpu));
            let weights = LossWeights {
                mtp_lambda: 0.3,
                balance_alpha: 1e-4,
                drop_tokens: false,
            };
            for bf16 in [false, true] {
                let mut backward = |recompute: Recompute| {
                    model.set_recompute(recompute);
                    let losses = crate::autocast::bf16(Device::Cpu, bf16, || {
                        model.losses(&tokens, &doc_start, weights)
                    });
                    losses.total.backward();
                    let grads: Vec<Tensor> = params.iter().map(|(_, t)| t.grad().copy()).collect();
                    release_grads(params.iter().map(|(_, t)| t));
                    (losses.total.double_value(&[]), grads)
                };
                let (loss, kept) = backward(Recompute::None);
                let (again, recomputed) = backward(Recompute::Attention);
                assert_eq!(loss, again, "{name} bf16 {bf16}: the forward is the same");
                for (((n, _), a), b) in params.iter().zip(&kept).zip(&recomputed) {
                    assert!(a.defined() && b.defined(), "{name} {n}");
                    let diff = (a - b).abs().max().double_value(&[]);
                    let scale = a.abs().max().double_value(&[]).max(1e-12);
                    // BF16 GEMMs round differently when another test changes libtorch's thread
                    // count in between: BF16's rounding, not recomputation, bounds them there.
                    let tolerance = if bf16 { 2e-2 } else { 1e-6 };
                    assert!(
                        diff <= tolerance * scale,
                        "{name} bf16 {bf16} {n}: differs by {diff} of {scale}"
                    );
                }
            }
        }
    }
}
