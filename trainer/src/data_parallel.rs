//! The data-parallel plan of the training loop (as torchtitan keeps parallelism beside its loop,
//! not in the model): every rank holds the whole model, reads its own slice of each global batch,
//! and the ranks meet once per optimizer step, after the last micro-batch's backward:
//!
//! 1. one small all-reduce of the step's statistics (losses, expert loads summed over micro-batches
//!    and ranks for the bias update, and which parameters got a gradient anywhere), so every rank
//!    takes the same decisions (non-finite loss, bias update, which parameters the step updates);
//! 2. the gradients, summed in buckets of [`BUCKET_BYTES`] (each rank's loss is pre-divided by the
//!    world size, so the sum is the mean), all buckets in flight before the first is waited on.
//!
//! The optimizer then takes the same step from the same gradients on every rank, so the weights
//! stay identical without being sent again.
//!
//! With ZeRO-1 (`[distributed] zero = 1`, as DeepSeek-V2 trained) the optimizer state is sharded
//! instead: the parameters, flattened in name order and padded to a multiple of the world size,
//! are cut into one contiguous shard per rank. Step 2 becomes a reduce-scatter (each rank receives
//! the summed gradient of its shard), each rank updates its shard with its share of the moments,
//! and an all-gather hands every rank the whole updated model. Checkpoints gather the moments
//! back into whole parameters, so any world size, with or without ZeRO, resumes them.

use std::collections::BTreeMap;
use std::ffi::c_char;

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};
use torch_sys::C_tensor;

use crate::cpp::{check, raw};
use crate::dist::{ProcessGroup, ReduceOp, Work};
use crate::optim::{release_grads, AdamW, OptimConfig, Slot};

/// How ranks share the work, from the `[distributed]` table of the train config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedConfig {
    /// ZeRO stage: 0 (every rank holds the whole optimizer state) or 1 (sharded across ranks).
    #[serde(default)]
    pub zero: u8,
}

/// Gradient bytes per all-reduce: large enough to amortize each collective's latency, small enough
/// that flattening a bucket stays cheap (DDP's default `bucket_cap_mb` is 25 MiB too).
pub const BUCKET_BYTES: usize = 25 << 20;

extern "C" {
    fn whale_dist_zero_missing_grads(
        tensors: *const *mut C_tensor,
        n: i64,
        err: *mut c_char,
        err_len: i64,
    ) -> i32;
}

/// A step's numbers that every rank must agree on, before and after the all-reduce.
pub struct StepStats {
    /// Loss terms, each the mean over this rank's micro-batches (after: over all ranks).
    pub means: Vec<f64>,
    /// Tokens routed to each expert, per MoE layer, summed over micro-batches (after: and ranks).
    pub loads: Vec<Tensor>,
}

/// One rank of a data-parallel job.
pub struct DataParallel {
    pub group: ProcessGroup,
    /// Trainable parameters in name order, the same on every rank.
    params: Vec<Tensor>,
    names: Vec<String>,
    zero: Option<Zero1>,
}

/// This rank's part of the ZeRO-1 layout.
struct Zero1 {
    /// Elements of each rank's shard of the flat parameter vector.
    shard: i64,
    /// The pieces of parameters inside this rank's shard, in name order (at most one per
    /// parameter): (parameter index, start in the parameter, start in the shard, length).
    pieces: Vec<(usize, i64, i64, i64)>,
}

impl Zero1 {
    /// Cuts `numels` (in order) into `world` equal contiguous shards and keeps `rank`'s pieces.
    fn new(numels: &[i64], rank: usize, world: usize) -> Self {
        let total: i64 = numels.iter().sum();
        let shard = (total + world as i64 - 1) / world as i64;
        let (lo, hi) = (rank as i64 * shard, (rank as i64 + 1) * shard);
        let mut pieces = Vec::new();
        let mut offset = 0;
        for (i, &n) in numels.iter().enumerate() {
            let (a, b) = (offset.max(lo), (offset + n).min(hi));
            if a < b {
                pieces.push((i, a - offset, a - lo, b - a));
            }
            offset += n;
        }
        Self { shard, pieces }
    }
}

/// The concatenation of the flat `parts` (`total` elements), zero-padded to `len`.
fn padded(mut parts: Vec<Tensor>, total: i64, len: i64) -> Tensor {
    if len > total {
        let like = &parts[0];
        parts.push(Tensor::zeros([len - total], (like.kind(), like.device())));
    }
    Tensor::cat(&parts, 0)
}

impl DataParallel {
    /// Makes every rank start from rank 0's variables (weights and balancing biases, fresh or
    /// restored), then plans over the trainable ones.
    pub fn new(group: ProcessGroup, vs: &nn::VarStore, cfg: &DistributedConfig) -> Result<Self> {
        if cfg.zero > 1 {
            bail!(
                "[distributed] zero = {} in the train config: only 0 and 1 exist",
                cfg.zero
            );
        }
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        tch::no_grad(|| -> Result<()> {
            let works = named
                .iter()
                .map(|(_, t)| group.broadcast(t, 0))
                .collect::<Result<Vec<Work>>>()?;
            works.into_iter().try_for_each(Work::wait)
        })?;
        let (names, params): (Vec<String>, Vec<Tensor>) =
            named.into_iter().filter(|(_, t)| t.requires_grad()).unzip();
        let zero = (cfg.zero == 1).then(|| {
            let numels: Vec<i64> = params.iter().map(|p| p.numel() as i64).collect();
            Zero1::new(&numels, group.rank, group.world_size)
        });
        if zero.is_some() {
            ensure!(
                params.iter().all(|p| p.kind() == Kind::Float),
                "ZeRO-1 shards FP32 master weights; this model has parameters of another dtype"
            );
        }
        Ok(Self {
            group,
            params,
            names,
            zero,
        })
    }

    /// With ZeRO-1, the optimizer this rank steps instead of `full`: one over the pieces of its
    /// shard, its moments taken from `full` (fresh or restored from a checkpoint).
    pub fn shard_optimizer(&self, full: &AdamW, cfg: &OptimConfig) -> Result<Option<AdamW>> {
        let Some(zero) = &self.zero else {
            return Ok(None);
        };
        let slots = tch::no_grad(|| {
            zero.pieces
                .iter()
                .map(|&(i, start, _, len)| Slot {
                    name: self.names[i].clone(),
                    tensor: self.params[i].view([-1]).narrow(0, start, len),
                    decay: self.params[i].dim() >= 2,
                    offset: Some(start),
                })
                .collect()
        });
        let mut sharded = AdamW::with_slots(slots, cfg.clone());
        let moments: BTreeMap<String, Tensor> = full.state_tensors().into_iter().collect();
        sharded.load_state_tensors(&moments, full.steps)?;
        Ok(Some(sharded))
    }

    /// The moments of whole parameters, for a checkpoint: with ZeRO-1 gathered from every rank's
    /// shard (every rank must call this), otherwise `optimizer`'s own.
    pub fn moments(&self, optimizer: &AdamW, kind: Kind) -> Result<Vec<(String, Tensor)>> {
        let Some(zero) = &self.zero else {
            return Ok(optimizer.state_tensors());
        };
        let mine: BTreeMap<String, Tensor> = optimizer.state_tensors().into_iter().collect();
        let total: i64 = self.params.iter().map(|p| p.numel() as i64).sum();
        let world = self.world_size() as i64;
        let mut out = Vec::new();
        for suffix in ["exp_avg", "exp_avg_sq"] {
            let shard = Tensor::zeros([zero.shard], (Kind::Float, self.params[0].device()));
            for &(i, _, at, len) in &zero.pieces {
                let m = &mine[&format!("{}.{suffix}", self.names[i])];
                shard.narrow(0, at, len).copy_(&m.to_kind(Kind::Float));
            }
            let full = shard.new_zeros([zero.shard * world], (Kind::Float, shard.device()));
            self.group.all_gather(&full, &shard)?.wait()?;
            let mut offset = 0;
            for (name, p) in self.names.iter().zip(&self.params) {
                let n = p.numel() as i64;
                let m = full
                    .narrow(0, offset, n)
                    .view(p.size().as_slice())
                    .to_kind(kind);
                out.push((format!("{name}.{suffix}"), m));
                offset += n;
            }
            debug_assert_eq!(offset, total);
        }
        Ok(out)
    }

    pub fn world_size(&self) -> u64 {
        self.group.world_size as u64
    }

    /// Whether this rank writes metrics, logs and checkpoints.
    pub fn is_leader(&self) -> bool {
        self.group.rank == 0
    }

    /// Combines the step's statistics over ranks and readies the gradients for
    /// [`reduce_gradients`](Self::reduce_gradients): returns which parameters got a gradient on
    /// some rank, after giving those without one here a zero gradient.
    pub fn reduce_stats(&self, stats: &mut StepStats) -> Result<Vec<bool>> {
        let n_means = stats.means.len();
        let flags: Vec<f64> = self
            .params
            .iter()
            .map(|p| p.grad().defined() as u8 as f64)
            .collect();
        // On the parameters' device: NCCL moves CUDA tensors only.
        let device = self.params[0].device();
        let mut parts = vec![
            Tensor::from_slice(&stats.means).to_device(device),
            Tensor::from_slice(&flags).to_device(device),
        ];
        parts.extend(
            stats
                .loads
                .iter()
                .map(|l| l.to_kind(Kind::Double).to_device(device).view([-1])),
        );
        let all = Tensor::cat(&parts, 0);
        self.group.all_reduce(&all, ReduceOp::Sum)?.wait()?;
        let all = Vec::<f64>::try_from(&all)?;
        let world = self.world_size() as f64;
        for (mean, sum) in stats.means.iter_mut().zip(&all) {
            *mean = sum / world;
        }
        let anywhere: Vec<bool> = all[n_means..n_means + flags.len()]
            .iter()
            .map(|&n| n > 0.0)
            .collect();
        let mut offset = n_means + flags.len();
        for load in stats.loads.iter_mut() {
            let n = load.numel();
            *load = Tensor::from_slice(&all[offset..offset + n])
                .view(load.size().as_slice())
                .to_kind(load.kind())
                .to_device(load.device());
            offset += n;
        }
        let missing: Vec<*mut C_tensor> = self
            .params
            .iter()
            .zip(&anywhere)
            .filter(|(p, &any)| any && !p.grad().defined())
            .map(|(p, _)| raw(p))
            .collect();
        check(
            "zero gradients of unreached parameters",
            |err, len| unsafe {
                // SAFETY: the pointers refer to live parameters; only their `.grad` is set.
                whale_dist_zero_missing_grads(missing.as_ptr(), missing.len() as i64, err, len)
            },
        )?;
        Ok(anywhere)
    }

    /// The optimizer step: all-reduced gradients and `optimizer.step`, or with ZeRO-1 the
    /// reduce-scatter, this rank's shard update and the all-gather of the parameters. Only
    /// parameters flagged in `anywhere` (see `reduce_stats`) are updated. Returns the global
    /// gradient norm before clipping.
    pub fn step(&self, optimizer: &mut AdamW, lr: f64, anywhere: &[bool]) -> Result<f64> {
        let Some(zero) = &self.zero else {
            self.reduce_gradients(anywhere)?;
            return Ok(optimizer.step(lr));
        };
        tch::no_grad(|| {
            let world = self.world_size() as i64;
            let total: i64 = self.params.iter().map(|p| p.numel() as i64).sum();
            let grads: Vec<Tensor> = self
                .params
                .iter()
                .zip(anywhere)
                .map(|(p, &any)| match any {
                    true => p.grad().view([-1]),
                    false => p.zeros_like().view([-1]),
                })
                .collect();
            let flat = padded(grads, total, zero.shard * world);
            let flat_device = flat.device();
            let shard = flat.new_zeros([zero.shard], (flat.kind(), flat_device));
            self.group.reduce_scatter(&shard, &flat)?.wait()?;
            drop(flat);
            release_grads(&self.params);
            let grads: Vec<Tensor> = zero
                .pieces
                .iter()
                .map(|&(i, _, at, len)| match anywhere[i] {
                    true => shard.narrow(0, at, len),
                    false => Tensor::new(),
                })
                .collect();
            let squares: f64 = grads
                .iter()
                .filter(|g| g.defined())
                .map(|g| g.norm().double_value(&[]).powi(2))
                .sum();
            let squares = Tensor::from_slice(&[squares]).to_device(flat_device);
            self.group.all_reduce(&squares, ReduceOp::Sum)?.wait()?;
            let norm = squares.double_value(&[0]).sqrt();
            optimizer.update(lr, &grads, norm);
            let views: Vec<Tensor> = self.params.iter().map(|p| p.view([-1])).collect();
            let flat = padded(views, total, zero.shard * world);
            let mine = flat.narrow(0, self.group.rank as i64 * zero.shard, zero.shard);
            let full = flat.empty_like();
            self.group.all_gather(&full, &mine.contiguous())?.wait()?;
            let mut offset = 0;
            for p in &self.params {
                let n = p.numel() as i64;
                p.view([-1]).copy_(&full.narrow(0, offset, n));
                offset += n;
            }
            Ok(norm)
        })
    }

    /// Sums the gradients of the parameters flagged in `anywhere` over ranks, in buckets.
    fn reduce_gradients(&self, anywhere: &[bool]) -> Result<()> {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .zip(anywhere)
            .filter(|(_, &any)| any)
            .map(|(p, _)| p.grad())
            .collect();
        ensure!(
            grads.iter().all(Tensor::defined),
            "a flagged gradient is missing"
        );
        tch::no_grad(|| {
            let mut in_flight = Vec::new();
            for bucket in buckets(&grads, BUCKET_BYTES) {
                let flat = match bucket {
                    [g] if g.is_contiguous() => g.view([-1]),
                    _ => Tensor::cat(&bucket.iter().map(|g| g.view([-1])).collect::<Vec<_>>(), 0),
                };
                let work = self.group.all_reduce(&flat, ReduceOp::Sum)?;
                in_flight.push((bucket, flat, work));
            }
            for (bucket, flat, work) in in_flight {
                work.wait()?;
                if !matches!(bucket, [g] if g.is_contiguous()) {
                    let mut offset = 0;
                    for g in bucket {
                        let n = g.numel() as i64;
                        g.shallow_clone()
                            .copy_(&flat.narrow(0, offset, n).view(g.size().as_slice()));
                        offset += n;
                    }
                }
            }
            Ok(())
        })
    }
}

/// Consecutive runs of `grads` holding at most `cap` bytes each (a larger tensor alone).
fn buckets(grads: &[Tensor], cap: usize) -> Vec<&[Tensor]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, g) in grads.iter().enumerate() {
        let size = g.numel() * g.kind().elt_size_in_bytes();
        if i > start && bytes + size > cap {
            out.push(&grads[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < grads.len() {
        out.push(&grads[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;

    /// 3 + 5 + 2 = 10 elements over 3 ranks: shards of 4 (the last padded by 2), and every
    /// element in exactly one piece.
    #[test]
    fn zero1_cuts_the_flat_parameters_into_equal_shards() {
        let pieces: Vec<_> = (0..3).map(|r| Zero1::new(&[3, 5, 2], r, 3)).collect();
        assert!(pieces.iter().all(|z| z.shard == 4));
        assert_eq!(pieces[0].pieces, vec![(0, 0, 0, 3), (1, 0, 3, 1)]);
        assert_eq!(pieces[1].pieces, vec![(1, 1, 0, 4)]);
        assert_eq!(pieces[2].pieces, vec![(2, 0, 0, 2)]);
    }

    #[test]
    fn buckets_cap_bytes_and_keep_order() {
        let t = |n: i64| Tensor::zeros([n], (Kind::Float, Device::Cpu));
        let grads = [t(4), t(4), t(10), t(1), t(1)];
        let sizes: Vec<Vec<i64>> = buckets(&grads, 32)
            .iter()
            .map(|b| b.iter().map(|g| g.numel() as i64).collect())
            .collect();
        assert_eq!(sizes, vec![vec![4, 4], vec![10], vec![1, 1]]);
        assert!(buckets(&[], 32).is_empty());
    }
}
