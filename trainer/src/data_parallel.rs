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

use std::ffi::c_char;

use anyhow::{ensure, Result};
use tch::{nn, Kind, Tensor};
use torch_sys::C_tensor;

use crate::cpp::{check, raw};
use crate::dist::{ProcessGroup, ReduceOp, Work};

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
}

impl DataParallel {
    /// Makes every rank start from rank 0's variables (weights and balancing biases, fresh or
    /// restored), then plans over the trainable ones.
    pub fn new(group: ProcessGroup, vs: &nn::VarStore) -> Result<Self> {
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        tch::no_grad(|| -> Result<()> {
            let works = named
                .iter()
                .map(|(_, t)| group.broadcast(t, 0))
                .collect::<Result<Vec<Work>>>()?;
            works.into_iter().try_for_each(Work::wait)
        })?;
        let params = named
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(_, t)| t)
            .collect();
        Ok(Self { group, params })
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
        let mut parts = vec![Tensor::from_slice(&stats.means), Tensor::from_slice(&flags)];
        parts.extend(
            stats
                .loads
                .iter()
                .map(|l| l.to_kind(Kind::Double).view([-1])),
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

    /// Sums the gradients of the parameters flagged in `anywhere` over ranks, in buckets.
    pub fn reduce_gradients(&self, anywhere: &[bool]) -> Result<()> {
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
