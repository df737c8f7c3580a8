//! The routed experts of an MoE layer. Each token's k choices are copied and sorted by expert
//! ([`Dispatch`]), so every expert sees one contiguous slice of rows; then either one SwiGLU per
//! expert runs in a loop ([`ExpertsPath::Loop`]: any device, any precision, one GEMM chain per
//! expert) or all experts run as three grouped GEMMs ([`ExpertsPath::Grouped`]: `_grouped_mm` over
//! the stacked weights in BF16 on CUDA, as torchtitan does; no host sync for the expert counts).
//! Both share the dispatch and the weighted scatter back, so they compute the same function.

use std::str::FromStr;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::linear::{Linear, Precision};
use crate::mlp::Mlp;

/// How the routed experts run (`whale train --experts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExpertsPath {
    /// Grouped on CUDA when the experts run in BF16 (what `_grouped_mm` computes in), else the
    /// loop: FP32 stays FP32 and FP8 keeps its recipe.
    #[default]
    Auto,
    Loop,
    Grouped,
}

impl FromStr for ExpertsPath {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "loop" => Ok(Self::Loop),
            "grouped" => Ok(Self::Grouped),
            _ => bail!("unknown experts path {s:?} (expected auto, loop or grouped)"),
        }
    }
}

impl ExpertsPath {
    /// The path that runs experts of `precision` on `device` (never `Auto`). The loop stays the
    /// CPU default: the backward of libtorch 2.11's CPU `_grouped_mm` fails on broadcast
    /// (stride-0) output gradients, which the loop's GEMMs take.
    pub fn resolve(self, device: Device, precision: &Precision) -> Self {
        match self {
            Self::Auto if device.is_cuda() && *precision == Precision::Bf16 => Self::Grouped,
            Self::Auto => Self::Loop,
            chosen => chosen,
        }
    }
}

/// The token copies of a batch sorted by expert.
#[derive(Debug)]
pub struct Dispatch {
    /// For each sorted copy, its index in the flattened `[N·k]` choices.
    order: Tensor,
    /// For each sorted copy, the token (row of the input) it copies.
    pub token_of: Tensor,
    /// Copies per expert that are computed `[n_experts]` (int64).
    pub load: Tensor,
}

/// How many of `ids` (int64 in `0..n`) equal each of `0..n` (int64 `[n]`), as `bincount` with
/// `minlength = n` counts them but without its host syncs: on CUDA `bincount` reads the ids'
/// minimum and maximum back to size its output, two stalls per MoE layer and pass.
pub fn tally(ids: &Tensor, n: i64) -> Tensor {
    Tensor::zeros([n], (Kind::Int64, ids.device())).scatter_add(0, ids, &ids.ones_like())
}

impl Dispatch {
    /// Sorts the choices `indices` `[N, k]` (expert ids) by expert, stably (token order within
    /// an expert): all of them, or only those of `kept` (positions in the flattened `[N·k]`
    /// choices: what a capacity factor leaves).
    pub fn new(indices: &Tensor, n_experts: i64, kept: Option<&Tensor>) -> Self {
        let top_k = indices.size()[1];
        let all = indices.view([-1]);
        let expert_of = match kept {
            Some(kept) => all.index_select(0, kept),
            None => all,
        };
        let (_, by_expert) = expert_of.sort_stable(true, 0, false);
        let order = match kept {
            Some(kept) => kept.index_select(0, &by_expert),
            None => by_expert,
        };
        Self {
            token_of: order.floor_divide_scalar(top_k),
            load: tally(&expert_of, n_experts),
            order,
        }
    }

    /// The rows of `flat` `[N, d]` each sorted copy takes.
    pub fn gather(&self, flat: &Tensor) -> Tensor {
        flat.index_select(0, &self.token_of)
    }

    /// Copies per expert on the host (a device sync on CUDA).
    pub fn counts(&self) -> Vec<i64> {
        Vec::<i64>::try_from(&self.load).expect("expert counts")
    }

    /// Sums each token's expert outputs `routed` (sorted copies, `[N·k, d]`) weighted by
    /// `weights` `[N, k]` into `[N, d]`, in `routed`'s dtype.
    pub fn combine(&self, routed: &Tensor, weights: &Tensor, tokens: i64) -> Tensor {
        let w = weights
            .view([-1])
            .index_select(0, &self.order)
            .unsqueeze(-1);
        let d = routed.size()[1];
        let weighted = routed * w.to_kind(routed.kind());
        Tensor::zeros([tokens, d], (routed.kind(), routed.device())).index_add(
            0,
            &self.token_of,
            &weighted,
        )
    }
}

/// Runs `experts` on the rows `x` `[M, d]`, sorted by expert with `load[e]` rows for expert `e`
/// (int64 on `x`'s device), along `path` (resolved, not `Auto`).
pub fn forward(path: ExpertsPath, experts: &[Mlp], x: &Tensor, load: &Tensor) -> Tensor {
    match path {
        // Where each expert's rows end: `_grouped_mm`'s int32 `offs`, no host sync.
        ExpertsPath::Grouped => grouped(experts, x, &load.cumsum(0, Kind::Int)),
        _ => looped(
            experts,
            x,
            &Vec::<i64>::try_from(load).expect("expert counts"),
        ),
    }
}

/// One SwiGLU per expert with tokens, on its slice (`x` itself, with no rows, when none has).
fn looped(experts: &[Mlp], x: &Tensor, counts: &[i64]) -> Tensor {
    // One split rather than a `narrow` per expert: the backward of a split is one `cat`, while
    // each narrow's backward would write a zero tensor the size of all inputs.
    let inputs = x.split_with_sizes(counts, 0);
    let outputs: Vec<Tensor> = experts
        .iter()
        .zip(&inputs)
        .zip(counts)
        .filter(|(_, &count)| count > 0)
        .map(|((expert, x), _)| expert.forward(x))
        .collect();
    match outputs.is_empty() {
        true => x.shallow_clone(),
        false => Tensor::cat(&outputs, 0),
    }
}

/// The three projections of all experts as grouped GEMMs over weights stacked to `[E, out, in]`
/// (the stack's backward hands each expert its own gradient, so checkpoints keep per-expert
/// tensors). BF16 on CUDA (what its fast sm90 kernel takes), the input's dtype on CPU.
fn grouped(experts: &[Mlp], x: &Tensor, offsets: &Tensor) -> Tensor {
    let kind = if x.device().is_cuda() {
        Kind::BFloat16
    } else {
        x.kind()
    };
    // Stacked, then cast once: a cast per expert would be E kernels forward and E backward per
    // projection (hundreds of launches a step with fine-grained experts), one cast is one each.
    let stacked = |proj: fn(&Mlp) -> &Linear| {
        let ws: Vec<&Tensor> = experts.iter().map(|e| &proj(e).weight).collect();
        Tensor::stack(&ws, 0).to_kind(kind)
    };
    // x `[M, in]` times each expert's `Wᵀ`: the `[E, in, out]` view torchtitan passes.
    let mm = |a: &Tensor, w: &Tensor| {
        a.internal_grouped_mm(&w.transpose(-2, -1), Some(offsets), None::<&Tensor>, None)
    };
    let x = x.to_kind(kind);
    let hidden = mm(&x, &stacked(|e| &e.gate_proj)).silu() * mm(&x, &stacked(|e| &e.up_proj));
    mm(&hidden, &stacked(|e| &e.down_proj))
}

#[cfg(test)]
mod tests {
    use tch::nn;

    use super::*;
    use crate::device_check::experts_pass;

    #[test]
    fn tally_counts_as_bincount_does() {
        tch::manual_seed(3);
        // Routing-like ids over 64 experts, some never chosen; and no ids at all.
        let ids = Tensor::randint(48, [4096], (Kind::Int64, Device::Cpu));
        let got = Vec::<i64>::try_from(&tally(&ids, 64)).unwrap();
        let want = Vec::<i64>::try_from(&ids.bincount::<Tensor>(None, 64)).unwrap();
        assert_eq!(got, want);
        assert!(got[48..].iter().all(|&n| n == 0) && got.iter().sum::<i64>() == 4096);
        let none = Tensor::zeros([0], (Kind::Int64, Device::Cpu));
        assert_eq!(Vec::<i64>::try_from(&tally(&none, 3)).unwrap(), [0, 0, 0]);
    }

    #[test]
    fn dispatch_sorts_copies_by_expert_with_offsets_and_loads() {
        // 3 tokens, top-2 of 4 experts; expert 2 gets nothing.
        let indices = Tensor::from_slice(&[1i64, 0, 3, 1, 0, 3]).view([3, 2]);
        let d = Dispatch::new(&indices, 4, None);
        assert_eq!(
            Vec::<i64>::try_from(&d.token_of).unwrap(),
            [0, 2, 0, 1, 1, 2]
        );
        assert_eq!(d.counts(), [2, 2, 0, 2]);
        // Weighted sum back: copy j of token t carries 10·t + j.
        let routed = d.gather(&Tensor::from_slice(&[1f32, 2., 3.]).view([3, 1]));
        let weights = Tensor::from_slice(&[1f32, 10., 1., 10., 1., 10.]).view([3, 2]);
        let y = d.combine(&routed, &weights, 3);
        assert_eq!(
            Vec::<f32>::try_from(&y.view([-1])).unwrap(),
            [11., 22., 33.]
        );
    }

    #[test]
    fn auto_is_grouped_on_cuda_in_bf16_only() {
        let fp8 = Precision::Fp8(crate::fp8::Recipe::default());
        let cuda = Device::Cuda(0);
        let auto = ExpertsPath::Auto;
        assert_eq!(auto.resolve(cuda, &Precision::Bf16), ExpertsPath::Grouped);
        assert_eq!(auto.resolve(cuda, &fp8), ExpertsPath::Loop);
        assert_eq!(auto.resolve(cuda, &Precision::Fp32), ExpertsPath::Loop);
        assert_eq!(
            auto.resolve(Device::Cpu, &Precision::Fp32),
            ExpertsPath::Loop
        );
        assert_eq!(
            ExpertsPath::Grouped.resolve(Device::Cpu, &Precision::Fp32),
            ExpertsPath::Grouped
        );
        assert!("fast".parse::<ExpertsPath>().is_err());
    }

    /// The grouped GEMMs (libtorch's CPU kernel, FP32) equal the per-expert loop in
    /// outputs and in the gradients of the inputs and of every expert weight, an idle expert too.
    #[test]
    fn grouped_equals_the_loop_with_gradients() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let experts: Vec<Mlp> = (0..4)
            .map(|i| Mlp::new(vs.root() / i, 16, 8, 0.2, &Precision::Fp32))
            .collect();
        let indices = Tensor::from_slice(&[1i64, 0, 3, 1, 0, 3, 1, 3, 0, 1]).view([5, 2]);
        let dispatch = Dispatch::new(&indices, 4, None);
        let x0 = Tensor::randn([5, 16], (Kind::Float, Device::Cpu));
        let probe = Tensor::randn([10, 16], (Kind::Float, Device::Cpu));
        let pass = |path| experts_pass(path, &experts, &x0, &dispatch, &probe, false);
        let ((y_loop, g_loop), (y_grouped, g_grouped)) =
            (pass(ExpertsPath::Loop), pass(ExpertsPath::Grouped));
        let diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        assert!(diff(&y_loop, &y_grouped) < 1e-5);
        assert!(diff(&g_loop, &g_grouped) < 1e-5);
        // The input's 5·16 gradients, then 3·16·8 per expert: expert 2 is idle.
        let idle = g_grouped.narrow(0, 5 * 16 + 2 * 384, 384);
        assert_eq!(idle.abs().max().double_value(&[]), 0.0);
        assert!(g_grouped.abs().max().double_value(&[]) > 0.0);
    }
}
