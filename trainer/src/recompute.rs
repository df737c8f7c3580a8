//! Activation recomputation, as `torch.utils.checkpoint` does it: a part of a block keeps only its
//! input for the backward and is computed again there. `Recompute::Attention` takes the attention
//! sub-layer (RMSNorm, the MLA down- and up-projections or GQA's projections, RoPE, attention, the
//! output projection): DeepSeek-V3 (§3.3.2) recomputes RMSNorm and the MLA up-projections for the
//! same reason, their outputs being a few times the hidden size per token in every layer.
//! `Recompute::Block` takes the whole block, the FFN too, whose routed experts' intermediate
//! activations dominate an MoE layer (torchtitan's and Megatron's "full" recomputation). The cost
//! is a second forward of what is recomputed.
//!
//! Each recomputed part is one `custom_grad` node whose forward runs without autograd. Its backward
//! runs the part again with autograd (under the autocast of the forward) from the saved input and
//! back-propagates the incoming gradient through it, inside the outer backward (re-entrant, as the
//! reentrant `torch.utils.checkpoint`): the parameters' gradients accumulate as usual, and the
//! node returns the input's. A node has one output, so a block's is its hidden state with the MoE
//! balance losses appended, split again after the node. With expert parallelism the recomputed
//! MoE exchanges its tokens again: every rank of the EP group recomputes the same layers in the
//! same order, as its backward walks the same graph.

use anyhow::{Context, Result};
use tch::{Kind, Tensor};

use crate::block::Block;
use crate::custom_grad::{self, CustomGrad};
use crate::moe::MoeStats;
use crate::rope::Rope;

/// The addresses of `block` and `rope`, for a node's backward to find them: both belong to the
/// model, which neither moves nor drops during a step, and a step's graph is gone when it ends.
fn addresses(block: &Block, rope: &Rope) -> Tensor {
    Tensor::from_slice(&[block as *const Block as i64, rope as *const Rope as i64])
}

/// The block and RoPE tables `addresses` saved.
///
/// # Safety
/// `saved` must be what `addresses` made during the running step.
unsafe fn resolve<'a>(saved: &Tensor) -> Result<(&'a Block, &'a Rope)> {
    let a = Vec::<i64>::try_from(saved)?;
    Ok((&*(a[0] as *const Block), &*(a[1] as *const Rope)))
}

/// Runs `part` from `x` with autograd under the forward's autocast, and back-propagates `grad`
/// through the returned tensors (each with its gradient); returns `x`'s gradient.
fn again(
    x: &Tensor,
    autocast: bool,
    part: impl FnOnce(&Tensor) -> Vec<(Tensor, Tensor)>,
) -> Result<Tensor> {
    let x = x.detach().set_requires_grad(true);
    tch::with_grad(|| -> Result<()> {
        let outputs = crate::autocast::bf16(x.device(), autocast, || part(&x));
        // d(Σ output · grad)/d output = grad: the incoming gradients, back-propagated.
        outputs
            .into_iter()
            .map(|(output, grad)| (output.to_kind(Kind::Float) * grad.detach()).sum(Kind::Float))
            .reduce(|a, b| a + b)
            .context("nothing recomputed")?
            .f_backward()
            .context("recomputed activations")
    })?;
    Ok(x.grad())
}

/// `block.attention(x, rope)` as one node that saves only `x`.
pub fn attention(block: &Block, x: &Tensor, rope: &Rope) -> Tensor {
    let output = tch::no_grad(|| block.attention(x, rope));
    let autocast = crate::autocast::enabled(x.device());
    let saved = [x.detach(), addresses(block, rope)];
    custom_grad::apply::<AttentionAgain>(&[x], &output, &saved, autocast as i64)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

struct AttentionAgain;

impl CustomGrad for AttentionAgain {
    fn backward(autocast: i64, saved: &[Tensor], grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        // SAFETY: saved by `attention` in this step.
        let (block, rope) = unsafe { resolve(&saved[1])? };
        let grad_x = again(&saved[0], autocast != 0, |x| {
            vec![(block.attention(x, rope), grad.shallow_clone())]
        })?;
        Ok(vec![Some(grad_x)])
    }
}

/// `block.forward_kept(x, rope, exempt)` as one node that saves only `x` (and `exempt`).
pub fn block(
    block: &Block,
    x: &Tensor,
    rope: &Rope,
    exempt: Option<&Tensor>,
) -> (Tensor, Option<MoeStats>) {
    let (y, stats) = tch::no_grad(|| block.forward_kept(x, rope, exempt));
    let packed = tch::no_grad(|| pack(&y, stats.as_ref()));
    let flags = crate::autocast::enabled(x.device()) as i64 | (exempt.is_some() as i64) << 1;
    let mut saved = vec![x.detach(), addresses(block, rope)];
    saved.extend(exempt.map(Tensor::shallow_clone));
    let packed = custom_grad::apply::<BlockAgain>(&[x], &packed, &saved, flags)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let n = y.numel() as i64;
    let hidden = packed
        .narrow(0, 0, n)
        .view(y.size().as_slice())
        .to_kind(y.kind());
    let stats = stats.map(|s| MoeStats {
        balance_loss: packed.select(0, n),
        device_comm_loss: packed.select(0, n + 1),
        ..s
    });
    (hidden, stats)
}

/// A block's output as one flat FP32 tensor: the hidden state (exactly, whatever its dtype), then
/// (MoE) the two balance losses, which a BF16 hidden state's dtype would round.
fn pack(y: &Tensor, stats: Option<&MoeStats>) -> Tensor {
    let mut parts = vec![y.to_kind(Kind::Float).view(-1)];
    if let Some(s) = stats {
        parts.push(s.balance_loss.to_kind(Kind::Float).view(1));
        parts.push(s.device_comm_loss.to_kind(Kind::Float).view(1));
    }
    Tensor::cat(&parts, 0)
}

struct BlockAgain;

impl CustomGrad for BlockAgain {
    fn backward(flags: i64, saved: &[Tensor], grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        // SAFETY: saved by `block` in this step.
        let (block, rope) = unsafe { resolve(&saved[1])? };
        let exempt = (flags & 2 != 0).then(|| &saved[2]);
        let grad_x = again(&saved[0], flags & 1 != 0, |x| {
            let (y, stats) = block.forward_kept(x, rope, exempt);
            let n = y.numel() as i64;
            let mut outputs = vec![(
                y.shallow_clone(),
                grad.narrow(0, 0, n).view(y.size().as_slice()),
            )];
            if let Some(s) = stats {
                outputs.push((s.balance_loss, grad.select(0, n)));
                outputs.push((s.device_comm_loss, grad.select(0, n + 1)));
            }
            outputs
        })?;
        Ok(vec![Some(grad_x)])
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

    /// Recomputing the attention sub-layers or whole blocks changes no loss and no gradient: MLA
    /// with MoE and MTP (`tiny`), DeepSeek-V2's routing and its device and communication balance
    /// losses (`tiny-v2`) and GQA (`tiny-dense`), in FP32 and under BF16 autocast (which the
    /// backward must enter again). One model and batch per case, so that nothing depends on the
    /// global random generator that parallel tests share.
    #[test]
    fn recomputation_gives_the_same_gradients() {
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
                    let values = [&losses.total, &losses.balance, &losses.device_comm]
                        .map(|t| t.double_value(&[]));
                    (values, grads)
                };
                let (loss, kept) = backward(Recompute::None);
                for recompute in [Recompute::Attention, Recompute::Block] {
                    let (again, recomputed) = backward(recompute);
                    let case = format!("{name} bf16 {bf16} {recompute:?}");
                    assert_eq!(loss, again, "{case}: the forward is the same");
                    for (((n, _), a), b) in params.iter().zip(&kept).zip(&recomputed) {
                        assert!(a.defined() && b.defined(), "{case} {n}");
                        let diff = (a - b).abs().max().double_value(&[]);
                        let scale = a.abs().max().double_value(&[]).max(1e-12);
                        // BF16 GEMMs round differently when another test changes libtorch's thread
                        // count in between: BF16's rounding, not recomputation, bounds them there.
                        let tolerance = if bf16 { 2e-2 } else { 1e-6 };
                        assert!(
                            diff <= tolerance * scale,
                            "{case} {n}: differs by {diff} of {scale}"
                        );
                    }
                }
            }
        }
    }
}
